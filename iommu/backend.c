/* SPDX-License-Identifier: MIT */
/*
 * iommu/backend.c - the public backend calls: argument checks, dispatch to
 * the backend's ops, counters.
 *
 * Argument errors (-EINVAL) are found here, before anything reaches a
 * kernel or the sim, and are not counted as calls: map_calls and
 * unmap_calls count calls the backend actually received (for the real
 * backends, ioctls issued), failed_calls those it rejected.
 */
#include "iommu/backend.h"

#include <errno.h>
#include <inttypes.h>
#include <stddef.h>
#include <sys/ioctl.h>

#include "core/error.h"

void rdm_backend_init(struct rdm_backend *b, const struct rdm_backend_ops *ops)
{
	b->ops = ops;
	b->caps = (struct rdm_backend_caps){
		.semantics = RDM_SEM_TYPE1V2,
		.page_size = 4096,
		.iova_min = 0,
		.iova_max = UINT64_MAX,
	};
	/* Not yet shared with any thread; the handle is published by whatever
	 * hands the pointer over. */
	atomic_init(&b->ctr.map_calls, 0);
	atomic_init(&b->ctr.unmap_calls, 0);
	atomic_init(&b->ctr.failed_calls, 0);
	atomic_init(&b->ctr.mappings, 0);
	atomic_init(&b->ctr.peak_mappings, 0);
	atomic_init(&b->ctr.mapped_bytes, 0);
	atomic_init(&b->ctr.peak_mapped_bytes, 0);
	atomic_init(&b->ctr.bytes_mapped, 0);
	atomic_init(&b->ctr.bytes_unmapped, 0);
	atomic_init(&b->ctr.model_ns, 0);
	atomic_init(&b->ctr.remapped_bytes, 0);
	atomic_init(&b->ctr.deferred_bytes, 0);
	atomic_init(&b->ctr.peak_deferred_bytes, 0);
}

int rdm_default_ioctl(void *opaque, int fd, unsigned long request, void *arg)
{
	(void)opaque;
	int rc = ioctl(fd, request, arg);
	return rc < 0 ? -errno : rc;
}

/* The checks every kernel applies to a range; name is "map" or "unmap". */
static int check_range(const struct rdm_backend *b, const char *name, uint64_t iova, uint64_t size)
{
	uint64_t pg = b->caps.page_size;

	if (size == 0)
		return rdm_fail(-EINVAL, "backend %s: zero size at iova 0x%" PRIx64, name, iova);
	/* A range may end exactly at 2^64: only its last byte must not wrap. */
	if (iova + (size - 1) < iova)
		return rdm_fail(-EINVAL, "backend %s: iova 0x%" PRIx64 " + size 0x%" PRIx64 " overflows",
				name, iova, size);
	if ((iova | size) & (pg - 1))
		return rdm_fail(-EINVAL,
				"backend %s: iova 0x%" PRIx64 " or size 0x%" PRIx64
				" not aligned to the IOMMU page size 0x%" PRIx64,
				name, iova, size, pg);
	return 0;
}

int rdm_backend_map(struct rdm_backend *b, uint64_t iova, uint64_t size, uint64_t vaddr)
{
	if (b == NULL)
		return rdm_fail(-EINVAL, "backend map: NULL backend");
	int rc = check_range(b, "map", iova, size);
	if (rc)
		return rc;
	if (vaddr & (b->caps.page_size - 1))
		return rdm_fail(-EINVAL, "backend map: vaddr 0x%" PRIx64 " not page aligned", vaddr);
	if (vaddr + (size - 1) < vaddr)
		return rdm_fail(-EINVAL, "backend map: vaddr 0x%" PRIx64 " + size 0x%" PRIx64 " overflows",
				vaddr, size);
	if (iova < b->caps.iova_min || iova + size - 1 > b->caps.iova_max)
		return rdm_fail(-EINVAL,
				"backend map: [0x%" PRIx64 ", 0x%" PRIx64
				"] outside the usable IOVA window [0x%" PRIx64 ", 0x%" PRIx64 "]",
				iova, iova + (size - 1), b->caps.iova_min, b->caps.iova_max);

	rc = b->ops->map(b, iova, size, vaddr);
	rdm_ctr_add(&b->ctr.map_calls, 1);
	if (rc) {
		rdm_ctr_add(&b->ctr.failed_calls, 1);
		return rc;
	}
	rdm_ctr_add(&b->ctr.mappings, 1);
	rdm_ctr_peak(&b->ctr.peak_mappings, atomic_load_explicit(&b->ctr.mappings, memory_order_relaxed));
	rdm_ctr_add(&b->ctr.mapped_bytes, size);
	rdm_ctr_peak(&b->ctr.peak_mapped_bytes,
		     atomic_load_explicit(&b->ctr.mapped_bytes, memory_order_relaxed));
	rdm_ctr_add(&b->ctr.bytes_mapped, size);
	return 0;
}

int rdm_backend_unmap(struct rdm_backend *b, uint64_t iova, uint64_t size, uint64_t *unmapped)
{
	if (b == NULL)
		return rdm_fail(-EINVAL, "backend unmap: NULL backend");
	int rc = check_range(b, "unmap", iova, size);
	if (rc)
		return rc;

	struct rdm_unmap_result res = { 0 };
	rc = b->ops->unmap(b, iova, size, &res);
	rdm_ctr_add(&b->ctr.unmap_calls, 1);
	if (rc) {
		rdm_ctr_add(&b->ctr.failed_calls, 1);
		return rc;
	}
	/* Relaxed loads below: this thread is the only writer (single writer). */
	uint64_t n = atomic_load_explicit(&b->ctr.mappings, memory_order_relaxed);
	n += res.added;
	n = res.removed <= n ? n - res.removed : 0;
	atomic_store_explicit(&b->ctr.mappings, n, memory_order_relaxed);
	rdm_ctr_peak(&b->ctr.peak_mappings, n);
	uint64_t mb = atomic_load_explicit(&b->ctr.mapped_bytes, memory_order_relaxed);
	/* The kernel may report bytes of mappings rdm did not make (a VMM's own
	 * mappings in a shared container): never let the count wrap. */
	atomic_store_explicit(&b->ctr.mapped_bytes, res.bytes < mb ? mb - res.bytes : 0,
			      memory_order_relaxed);
	rdm_ctr_add(&b->ctr.bytes_unmapped, res.bytes);
	if (unmapped)
		*unmapped = res.bytes;
	return 0;
}

int rdm_backend_dma_avail(struct rdm_backend *b, uint64_t *avail)
{
	if (b == NULL || avail == NULL)
		return rdm_fail(-EINVAL, "backend dma_avail: NULL %s", b == NULL ? "backend" : "avail");
	return b->ops->dma_avail(b, avail);
}

void rdm_backend_get_caps(const struct rdm_backend *b, struct rdm_backend_caps *caps)
{
	if (b == NULL || caps == NULL)
		return;
	*caps = b->caps;
}

void rdm_backend_get_stats(const struct rdm_backend *b, struct rdm_backend_stats *st)
{
	if (b == NULL || st == NULL)
		return;
	/* Relaxed: see struct rdm_backend_counters; each value is read untorn,
	 * the snapshot as a whole may straddle one call. */
#define LD(f) atomic_load_explicit(&b->ctr.f, memory_order_relaxed)
	*st = (struct rdm_backend_stats){
		.map_calls = LD(map_calls),
		.unmap_calls = LD(unmap_calls),
		.failed_calls = LD(failed_calls),
		.mappings = LD(mappings),
		.peak_mappings = LD(peak_mappings),
		.mapped_bytes = LD(mapped_bytes),
		.peak_mapped_bytes = LD(peak_mapped_bytes),
		.bytes_mapped = LD(bytes_mapped),
		.bytes_unmapped = LD(bytes_unmapped),
		.model_ns = LD(model_ns),
		.remapped_bytes = LD(remapped_bytes),
		.deferred_bytes = LD(deferred_bytes),
		.peak_deferred_bytes = LD(peak_deferred_bytes),
	};
#undef LD
}

const char *rdm_backend_name(const struct rdm_backend *b)
{
	return b ? b->ops->name : "";
}

int rdm_backend_destroy(struct rdm_backend *b)
{
	if (!b)
		return 0;
	if (rdm_worker_serves_backend(b))
		return rdm_fail(-EBUSY, "backend %s is still added to a worker; destroy the worker first",
				rdm_backend_name(b));
	b->ops->destroy(b);
	return 0;
}

void rdm_backend_note_remapped(struct rdm_backend *b, uint64_t bytes)
{
	rdm_ctr_add(&b->ctr.remapped_bytes, bytes);
}

void rdm_backend_note_deferred(struct rdm_backend *b, int64_t delta)
{
	if (delta >= 0) {
		rdm_ctr_add(&b->ctr.deferred_bytes, (uint64_t)delta);
		rdm_ctr_peak(&b->ctr.peak_deferred_bytes,
			     atomic_load_explicit(&b->ctr.deferred_bytes, memory_order_relaxed));
	} else {
		uint64_t d = (uint64_t)-(delta + 1) + 1; /* |delta| without overflow */
		uint64_t cur = atomic_load_explicit(&b->ctr.deferred_bytes, memory_order_relaxed);
		rdm_ctr_sub(&b->ctr.deferred_bytes, d < cur ? d : cur);
	}
}
