/* SPDX-License-Identifier: MIT */
/*
 * iommu/backend.h - the internal interface every IOMMU backend implements.
 *
 * The public calls of rdm/backend.h (iommu/backend.c) validate arguments,
 * call one of the ops below and keep the counters, so a backend only does the
 * work: issue the call (or model it) and say what happened. A backend embeds
 * struct rdm_backend as its first member and is reached from it by a cast.
 *
 * Ops contract (all ops are called by the one thread that drives the backend):
 *   map        arguments already checked (non-zero, page aligned, no overflow,
 *              inside caps.iova_min..iova_max). Returns 0 or the kernel's
 *              negative errno, with an rdm_fail() message. On failure nothing
 *              changed.
 *   unmap      likewise; on success fills *res: bytes the kernel reported
 *              unmapped, and how many of rdm's mappings went away (removed)
 *              and came into being (added: survivors of a split). On failure
 *              *res is left zero and nothing changed.
 *   dma_avail  remaining mappings, UINT64_MAX if unlimited or unknown.
 *   destroy    frees the backend (never unmaps, never closes fds).
 */
#ifndef RDM_IOMMU_BACKEND_H
#define RDM_IOMMU_BACKEND_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <rdm/backend.h>

struct rdm_unmap_result {
	uint64_t bytes;   /* unmapped bytes as the kernel reports them */
	uint64_t removed; /* mappings that went away */
	uint64_t added;   /* mappings that appeared (split survivors) */
};

struct rdm_backend_ops {
	const char *name; /* "sim", "vfio-type1", "iommufd" */
	int (*map)(struct rdm_backend *b, uint64_t iova, uint64_t size, uint64_t vaddr);
	int (*unmap)(struct rdm_backend *b, uint64_t iova, uint64_t size, struct rdm_unmap_result *res);
	int (*dma_avail)(struct rdm_backend *b, uint64_t *avail);
	void (*destroy)(struct rdm_backend *b);
};

/*
 * The counters behind struct rdm_backend_stats. Written only by the thread
 * that drives the backend, read by any thread: every access is relaxed
 * because each counter is a value on its own (no reader dereferences
 * anything because of it, nothing is published through it); the atomics only
 * make a concurrent read untorn and race-free. A snapshot taken by
 * rdm_backend_get_stats() may therefore mix counters from before and after
 * one call. Single writer: updates are relaxed load + store, not
 * read-modify-write.
 */
struct rdm_backend_counters {
	_Atomic uint64_t map_calls;
	_Atomic uint64_t unmap_calls;
	_Atomic uint64_t failed_calls;
	_Atomic uint64_t mappings;
	_Atomic uint64_t peak_mappings;
	_Atomic uint64_t mapped_bytes;
	_Atomic uint64_t peak_mapped_bytes;
	_Atomic uint64_t bytes_mapped;
	_Atomic uint64_t bytes_unmapped;
	_Atomic uint64_t model_ns;
	_Atomic uint64_t remapped_bytes;
	_Atomic uint64_t deferred_bytes;
	_Atomic uint64_t peak_deferred_bytes;
};

struct rdm_backend {
	const struct rdm_backend_ops *ops;
	struct rdm_backend_caps caps; /* immutable after creation */
	struct rdm_backend_counters ctr;
};

/* Fill the common part; caps default to type1v2, 4 KiB pages, full IOVA space. */
void rdm_backend_init(struct rdm_backend *b, const struct rdm_backend_ops *ops);

/* Single-writer counter helpers (see struct rdm_backend_counters). */
static inline void rdm_ctr_add(_Atomic uint64_t *c, uint64_t v)
{
	/* Relaxed: single writer, value-only counter (see above). */
	atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + v,
			      memory_order_relaxed);
}

static inline void rdm_ctr_sub(_Atomic uint64_t *c, uint64_t v)
{
	/* Relaxed: single writer, value-only counter (see above). */
	atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) - v,
			      memory_order_relaxed);
}

static inline void rdm_ctr_peak(_Atomic uint64_t *peak, uint64_t v)
{
	/* Relaxed: single writer, value-only counter (see above). */
	if (v > atomic_load_explicit(peak, memory_order_relaxed))
		atomic_store_explicit(peak, v, memory_order_relaxed);
}

/*
 * Policy-level counts the worker records in the backend's stats (they are
 * the worker's, not the kernel's): bytes unmapped and mapped again to split
 * a mapping, and bytes discarded but kept mapped (deferred), current and peak.
 * Same thread rules as map/unmap.
 */
void rdm_backend_note_remapped(struct rdm_backend *b, uint64_t bytes);
/* worker.c: is b added to a worker (rdm_backend_destroy refuses then)? */
bool rdm_worker_serves_backend(const struct rdm_backend *b);
void rdm_backend_note_deferred(struct rdm_backend *b, int64_t delta);

/* The default rdm_ioctl_fn: ioctl(2), returning its non-negative result or -errno. */
int rdm_default_ioctl(void *opaque, int fd, unsigned long request, void *arg);

#endif /* RDM_IOMMU_BACKEND_H */
