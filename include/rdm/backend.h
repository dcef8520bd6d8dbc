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
 * is added to one). Stats may be read from any thread (relaxed counters).
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

/* Counters, monotonic unless marked "current". */
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
 * Map [iova, iova + size) to host memory at vaddr, read-write. 0 or the
 * kernel's negative errno (-EEXIST overlap, -ENOSPC limit, -ENOMEM, -EFAULT,
 * -EINVAL). On failure nothing is mapped.
 */
RDM_API int rdm_backend_map(struct rdm_backend *b, uint64_t iova, uint64_t size, uint64_t vaddr);

/*
 * Unmap [iova, iova + size); *unmapped (optional) gets the bytes the kernel
 * reports unmapped. 0 or the kernel's negative errno (type1: -EINVAL for a
 * bisecting unmap; iommufd: -ENOENT for bisecting or empty).
 */
RDM_API int rdm_backend_unmap(struct rdm_backend *b, uint64_t iova, uint64_t size, uint64_t *unmapped);

/*
 * Remaining mappings the backend will accept: type1 reads
 * VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL; UINT64_MAX when unlimited or unknown.
 * Returns 0 or a negative errno.
 */
RDM_API int rdm_backend_dma_avail(struct rdm_backend *b, uint64_t *avail);

RDM_API void rdm_backend_get_caps(const struct rdm_backend *b, struct rdm_backend_caps *caps);
RDM_API void rdm_backend_get_stats(const struct rdm_backend *b, struct rdm_backend_stats *st);
RDM_API const char *rdm_backend_name(const struct rdm_backend *b); /* "sim", "vfio-type1", "iommufd" */

/* Destroy the handle. Never unmaps anything itself; fds are not closed. */
RDM_API void rdm_backend_destroy(struct rdm_backend *b);

/* ------------------------------------------------------------------ sim */

/* Sim creation arguments; zero-initialise, set struct_size, zero = default. */
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

RDM_API int rdm_backend_sim_create(const struct rdm_sim_config *cfg, struct rdm_backend **out);

enum rdm_sim_call { RDM_SIM_CALL_MAP = 1, RDM_SIM_CALL_UNMAP = 2, RDM_SIM_CALL_ANY = 3 };

/*
 * Fault injection: the nth call (counting from 1, of the given kind, from now
 * on) fails with err (negative errno, e.g. -ENOMEM, -EFAULT, -ENOSPC) and
 * changes nothing. Several may be armed. Returns 0 or -EINVAL.
 */
RDM_API int rdm_sim_inject(struct rdm_backend *b, enum rdm_sim_call kind, uint64_t nth, int err);
RDM_API void rdm_sim_clear_injections(struct rdm_backend *b);

/*
 * Introspection for tests and tools: is every byte of [iova, iova+size)
 * mapped, and to vaddr + (iova' - iova) for each byte? (vaddr_check false:
 * only coverage.) Is no byte of it mapped?
 */
RDM_API bool rdm_sim_is_mapped(const struct rdm_backend *b, uint64_t iova, uint64_t size,
			       bool vaddr_check, uint64_t vaddr);
RDM_API bool rdm_sim_is_unmapped(const struct rdm_backend *b, uint64_t iova, uint64_t size);

/* Visit every mapping in ascending IOVA order; stop at the first non-zero return. */
typedef int (*rdm_sim_mapping_fn)(void *opaque, uint64_t iova, uint64_t size, uint64_t vaddr);
RDM_API int rdm_sim_for_each_mapping(const struct rdm_backend *b, rdm_sim_mapping_fn fn, void *opaque);

/* ----------------------------------------------------------- real kernels */

/*
 * The one function through which the real backends issue ioctls. The default
 * calls ioctl(2) and returns 0 or -errno. Tests install a fake kernel.
 */
typedef int (*rdm_ioctl_fn)(void *opaque, int fd, unsigned long request, void *arg);

/*
 * A backend on a VFIO type1 container the VMM already set up (group attached,
 * VFIO_SET_IOMMU done). rdm does not own the fd. Detects type1v2, UNMAP_ALL
 * and DMA_AVAIL at creation. ioctl_fn NULL = the real ioctl.
 * Returns 0, -EINVAL (bad fd, not a type1 container), or the kernel's error.
 */
RDM_API int rdm_backend_vfio_type1_create(int container_fd, rdm_ioctl_fn ioctl_fn, void *ioctl_opaque,
					  struct rdm_backend **out);

/*
 * For tools and tests: open /dev/vfio/vfio and the group at group_path, check
 * the group is viable, attach it, set the type1v2 IOMMU. Returns 0 with both
 * fds, or a negative errno with a message naming the failing step.
 */
RDM_API int rdm_vfio_open_group(const char *group_path, int *container_fd, int *group_fd);

/*
 * A backend on an iommufd and an IOAS id the VMM provides. rdm does not own
 * the fd. Returns 0 or a negative errno.
 */
RDM_API int rdm_backend_iommufd_create(int iommufd, uint32_t ioas_id, rdm_ioctl_fn ioctl_fn,
				       void *ioctl_opaque, struct rdm_backend **out);

#ifdef __cplusplus
}
#endif

#endif /* RDM_BACKEND_H */
