/* SPDX-License-Identifier: MIT */
/*
 * rdm/backend.h - where IOMMU mappings go.
 *
 * A backend is one IOMMU address space: a VFIO type1 container, an iommufd
 * IOAS, or the sim (an exact software model of the kernel's rules). The IOMMU
 * worker (rdm/worker.h) is the only caller of a backend's map and unmap once
 * the backend is added to a worker; before that, and in tests and tools, a
 * backend may be driven directly through rdm_backend_map()/unmap().
 *
 * A backend is not thread-safe: one thread at a time (the worker's, once it
 * is added to one; handing it to another thread needs the caller's own
 * synchronisation). Stats and caps may be read from any thread at any time:
 * each counter is read untorn, but a snapshot may straddle one call.
 *
 * Concurrency:
 *   map / unmap / dma_avail / destroy / rdm_sim_inject / clear_injections
 *                      the owning thread only, one at a time
 *   get_stats / get_caps / name
 *                      any thread, concurrently with the above (not with destroy)
 *   rdm_sim_is_mapped / is_unmapped / for_each_mapping
 *                      the owning thread, or any thread while the owner is idle
 *
 * Argument checks common to every backend (NULL handle, zero size, iova +
 * size or vaddr + size beyond 2^64 (a range may end exactly at 2^64), iova/size/vaddr not aligned to
 * caps.page_size, a map outside [caps.iova_min, caps.iova_max]) fail with
 * -EINVAL before anything reaches the kernel; such calls are not counted in
 * the stats. Every failure sets the thread's rdm_last_error() message.
 */
#ifndef RDM_BACKEND_H
#define RDM_BACKEND_H

#include <stdbool.h>
#include <stdint.h>

#include <rdm/common.h>

#ifdef __cplusplus
extern "C" {
#endif

struct rdm_backend; /* opaque */

/* What a backend's kernel does with the calls in DESIGN's rules table. */
enum rdm_backend_semantics {
	RDM_SEM_TYPE1V2 = 0, /* bisecting unmap: EINVAL; empty unmap: OK, 0 bytes; entry limit */
	RDM_SEM_IOMMUFD = 1, /* bisecting unmap: ENOENT; empty unmap: ENOENT; no count limit */
};

/* Capabilities, fixed at creation (detected for the real backends). */
struct rdm_backend_caps {
	uint32_t semantics;     /* enum rdm_backend_semantics */
	bool can_split;         /* an unmap may bisect a mapping; survivors stay mapped */
	bool has_unmap_all;     /* VFIO_UNMAP_ALL (rdm never uses it on a shared container) */
	bool has_dma_avail;     /* remaining-mappings count can be read */
	uint64_t page_size;     /* smallest IOMMU page (4096 unless detected otherwise) */
	uint64_t iova_min, iova_max; /* usable IOVA window, inclusive; 0..UINT64_MAX if unknown */
};

/* Counters, monotonic unless marked "current". map_calls/unmap_calls count
 * calls the backend received (ioctls issued), failed_calls those it rejected
 * (rule, limit, injected or kernel error). mappings counts rdm's own mappings
 * (the real backends shadow what they mapped; a split's survivors count). */
struct rdm_backend_stats {
	uint64_t map_calls;
	uint64_t unmap_calls;
	uint64_t failed_calls;      /* calls the kernel (or sim) rejected, injected ones included */
	uint64_t mappings;          /* current */
	uint64_t peak_mappings;
	uint64_t mapped_bytes;      /* current; pinned bytes */
	uint64_t peak_mapped_bytes;
	uint64_t bytes_mapped;      /* total ever mapped */
	uint64_t bytes_unmapped;    /* total ever unmapped */
	uint64_t model_ns;          /* sim: modelled time of all calls (cost model) */
	/* Policy-level counts recorded by the worker (not by the kernel or sim): */
	uint64_t remapped_bytes;    /* total unmapped and mapped again to split a mapping */
	uint64_t deferred_bytes;    /* current: discarded but still mapped (defer policy) */
	uint64_t peak_deferred_bytes;
};

/*
 * Map [iova, iova + size) to host memory at vaddr, read-write, as one
 * mapping. Returns 0, -EINVAL (bad arguments, see above), or the kernel's
 * (sim's) negative errno: -EEXIST any byte already mapped, -ENOSPC mapping
 * limit reached, -ENOMEM, -EFAULT, ... On failure nothing is mapped.
 * Owning thread only.
 */
RDM_API int rdm_backend_map(struct rdm_backend *b, uint64_t iova, uint64_t size, uint64_t vaddr);

/*
 * Unmap every mapping inside [iova, iova + size) in one call; *unmapped
 * (optional) gets the bytes the kernel reports unmapped. Returns 0, -EINVAL
 * (bad arguments), or the kernel's negative errno: type1 -EINVAL for a
 * range that bisects a mapping (an empty range is OK, 0 bytes); iommufd
 * -ENOENT for bisecting or empty; a split-capable sim bisects instead
 * (survivors stay mapped) and gives -ENOSPC if a middle split would pass the
 * limit. On failure nothing is unmapped and *unmapped is not written.
 * Owning thread only.
 */
RDM_API int rdm_backend_unmap(struct rdm_backend *b, uint64_t iova, uint64_t size, uint64_t *unmapped);

/*
 * Remaining mappings the backend will accept: type1 reads
 * VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL (one GET_INFO ioctl); the sim answers
 * limit - mappings; UINT64_MAX when unlimited or unknown. Returns 0,
 * -EINVAL (NULL argument) or the kernel's negative errno. Owning thread only.
 */
RDM_API int rdm_backend_dma_avail(struct rdm_backend *b, uint64_t *avail);

/* Capabilities (immutable) and a stats snapshot; any thread; NULL arguments: no-op. */
RDM_API void rdm_backend_get_caps(const struct rdm_backend *b, struct rdm_backend_caps *caps);
RDM_API void rdm_backend_get_stats(const struct rdm_backend *b, struct rdm_backend_stats *st);
/* "sim", "vfio-type1", "iommufd"; "" for NULL. */
RDM_API const char *rdm_backend_name(const struct rdm_backend *b);

/* Destroy the handle (NULL: no-op, 0). Never unmaps anything itself; fds
 * are not closed. No other call may run on b concurrently or afterwards.
 * Returns 0, or -EBUSY while b is added to a worker (destroy the worker
 * first; nothing happens). */
RDM_API int rdm_backend_destroy(struct rdm_backend *b);

/* ------------------------------------------------------------------ sim */

/*
 * Sim creation arguments; zero-initialise, set struct_size, zero = default.
 * Cost model: model_ns += call_ns per call (rejected ones included) + page_ns
 * per page_size page (rounded up) mapped or unmapped. The defaults model
 * type1 on 4 KiB pages (a few microseconds per call, ~60 ns per page:
 * 16 GiB in 0.26 s); page_size = 2 MiB with page_ns ~ 3200 models THP
 * (16 GiB in 0.027 s). iommu/backend_sim.c says how to calibrate.
 */
struct rdm_sim_config {
	uint32_t struct_size;
	uint32_t semantics;      /* enum rdm_backend_semantics */
	bool can_split;          /* model a split-capable kernel */
	uint64_t limit;          /* mapping limit; 0 = 65535 for type1, unlimited for iommufd;
	                            RDM_SIM_UNLIMITED for none */
	uint64_t call_ns;        /* modelled cost of one call (default 2000) */
	uint64_t page_ns;        /* modelled cost per page mapped or unmapped (default 60) */
	uint64_t page_size;      /* page size for the cost model (default 4096) */
};
#define RDM_SIM_UNLIMITED UINT64_MAX

/*
 * Create a sim (cfg NULL: all defaults). Returns 0, -EINVAL (NULL out,
 * struct_size 0, unknown semantics, page_size not a power of two >= 4096) or
 * -ENOMEM. *out is written only on success. Any thread.
 */
RDM_API int rdm_backend_sim_create(const struct rdm_sim_config *cfg, struct rdm_backend **out);

enum rdm_sim_call { RDM_SIM_CALL_MAP = 1, RDM_SIM_CALL_UNMAP = 2, RDM_SIM_CALL_ANY = 3 };

/*
 * Fault injection: the nth call (counting from 1, of the given kind, from now
 * on) fails with err (negative errno, e.g. -ENOMEM, -EFAULT, -ENOSPC) and
 * changes nothing; it still counts as a failed call. Up to 64 may be armed;
 * when several hit the same call, the one armed first gives the error and
 * all of them are consumed. Only calls that pass the argument checks count.
 * Returns 0, -EINVAL (not a sim, unknown kind, nth 0, err not in
 * [-4095, -1]) or -ENOSPC (64 already armed). Owning thread only.
 */
RDM_API int rdm_sim_inject(struct rdm_backend *b, enum rdm_sim_call kind, uint64_t nth, int err);
RDM_API void rdm_sim_clear_injections(struct rdm_backend *b);

/*
 * Introspection for tests and tools: is every byte of [iova, iova+size)
 * mapped, and to vaddr + (iova' - iova) for each byte? (vaddr_check false:
 * only coverage; false for size 0, an overflowing range or a non-sim.) Is no
 * byte of it mapped? (true for size 0; false for an overflowing range or a
 * non-sim.) O(log n) per mapping the range touches.
 */
RDM_API bool rdm_sim_is_mapped(const struct rdm_backend *b, uint64_t iova, uint64_t size,
			       bool vaddr_check, uint64_t vaddr);
RDM_API bool rdm_sim_is_unmapped(const struct rdm_backend *b, uint64_t iova, uint64_t size);

/* Visit every mapping in ascending IOVA order; stop at the first non-zero
 * return and return it; 0 after the last; -EINVAL for a non-sim or NULL fn.
 * fn must not call into this backend. */
typedef int (*rdm_sim_mapping_fn)(void *opaque, uint64_t iova, uint64_t size, uint64_t vaddr);
RDM_API int rdm_sim_for_each_mapping(const struct rdm_backend *b, rdm_sim_mapping_fn fn, void *opaque);

/* ----------------------------------------------------------- real kernels */

/*
 * The one function through which the real backends issue ioctls: returns
 * the ioctl's non-negative result (VFIO_CHECK_EXTENSION answers > 0 when
 * present) or -errno. By-value arguments (CHECK_EXTENSION, SET_IOMMU) are
 * passed as (void *)(uintptr_t)value. The default calls ioctl(2). Tests
 * install a fake kernel. Called on the backend's owning thread.
 */
typedef int (*rdm_ioctl_fn)(void *opaque, int fd, unsigned long request, void *arg);

/*
 * A backend on a VFIO type1 container the VMM already set up (group attached,
 * VFIO_SET_IOMMU done). rdm does not own the fd. At creation: requires
 * type1v2 (VFIO_CHECK_EXTENSION), records UNMAP_ALL, reads GET_INFO's page
 * sizes (smallest = caps.page_size), IOVA ranges (outer bounds = the window)
 * and whether DMA_AVAIL is reported. ioctl_fn NULL = the real ioctl.
 * Returns 0, -EINVAL (NULL out, negative fd, not a type1v2 container),
 * -EPROTO (malformed capability chain), -ENOMEM, or the kernel's error.
 * *out is written only on success. Any thread.
 */
RDM_API int rdm_backend_vfio_type1_create(int container_fd, rdm_ioctl_fn ioctl_fn, void *ioctl_opaque,
					  struct rdm_backend **out);

/*
 * For tools and tests: open /dev/vfio/vfio (checking the API version and
 * type1v2 support) and the group at group_path, check the group is viable,
 * attach it, set the type1v2 IOMMU. Uses ioctl(2) directly. Returns 0 with
 * both fds (the caller closes them), or a negative errno with a message
 * naming the failing step (nothing left open). Any thread.
 */
RDM_API int rdm_vfio_open_group(const char *group_path, int *container_fd, int *group_fd);

/*
 * A backend on an iommufd and an IOAS id the VMM provides. rdm does not own
 * the fd. At creation reads IOMMU_IOAS_IOVA_RANGES: the outer bounds become
 * the window, the alignment caps.page_size. Maps with IOMMU_IOAS_MAP (fixed
 * IOVA, read-write), unmaps with IOMMU_IOAS_UNMAP. Returns 0, -EINVAL (NULL
 * out, negative fd, not an iommufd), -ENOMEM, or the kernel's error (-ENOENT:
 * no such IOAS). *out is written only on success. Any thread.
 */
RDM_API int rdm_backend_iommufd_create(int iommufd, uint32_t ioas_id, rdm_ioctl_fn ioctl_fn,
				       void *ioctl_opaque, struct rdm_backend **out);

#ifdef __cplusplus
}
#endif

#endif /* RDM_BACKEND_H */
