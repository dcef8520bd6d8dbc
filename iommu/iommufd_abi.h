/* SPDX-License-Identifier: MIT */
/*
 * iommu/iommufd_abi.h - the few iommufd ioctls rdm issues, defined from the
 * kernel's documented uapi (linux/iommufd.h, Linux >= 6.2), because the
 * build hosts' kernel headers predate iommufd. Layouts are pinned by static
 * assertions; the fake kernel of the tests decodes the same definitions.
 *
 * Every iommufd ioctl is _IO(';', command) and takes a pointer to a struct
 * whose first u32 is its size; the kernel rejects non-zero reserved fields.
 */
#ifndef RDM_IOMMU_IOMMUFD_ABI_H
#define RDM_IOMMU_IOMMUFD_ABI_H

#include <linux/ioctl.h>
#include <stddef.h>
#include <stdint.h>

#define RDM_IOMMUFD_TYPE ';'
#define RDM_IOMMUFD_CMD_IOAS_IOVA_RANGES 0x84
#define RDM_IOMMUFD_CMD_IOAS_MAP 0x85
#define RDM_IOMMUFD_CMD_IOAS_UNMAP 0x86

#define RDM_IOMMU_IOAS_IOVA_RANGES _IO(RDM_IOMMUFD_TYPE, RDM_IOMMUFD_CMD_IOAS_IOVA_RANGES)
#define RDM_IOMMU_IOAS_MAP _IO(RDM_IOMMUFD_TYPE, RDM_IOMMUFD_CMD_IOAS_MAP)
#define RDM_IOMMU_IOAS_UNMAP _IO(RDM_IOMMUFD_TYPE, RDM_IOMMUFD_CMD_IOAS_UNMAP)

/* IOAS_MAP flags */
#define RDM_IOMMU_IOAS_MAP_FIXED_IOVA (1u << 0)
#define RDM_IOMMU_IOAS_MAP_WRITEABLE (1u << 1)
#define RDM_IOMMU_IOAS_MAP_READABLE (1u << 2)

/* One allowed IOVA range, both ends inclusive. */
struct rdm_iommu_iova_range {
	uint64_t start;
	uint64_t last;
};

/* IOAS_IOVA_RANGES: fills up to num_iovas ranges at allowed_iovas; -EMSGSIZE
 * with num_iovas set to the count needed if the array is too small. */
struct rdm_iommu_ioas_iova_ranges {
	uint32_t size;
	uint32_t ioas_id;
	uint32_t num_iovas;
	uint32_t reserved;
	uint64_t allowed_iovas; /* user pointer to struct rdm_iommu_iova_range[] */
	uint64_t out_iova_alignment;
};

/* IOAS_MAP: with FIXED_IOVA maps exactly at iova; -EEXIST if anything is there. */
struct rdm_iommu_ioas_map {
	uint32_t size;
	uint32_t flags;
	uint32_t ioas_id;
	uint32_t reserved;
	uint64_t user_va;
	uint64_t length;
	uint64_t iova;
};

/* IOAS_UNMAP: unmaps every area wholly inside; length is written back with
 * the bytes unmapped; -ENOENT if an area is cut or nothing is there. */
struct rdm_iommu_ioas_unmap {
	uint32_t size;
	uint32_t ioas_id;
	uint64_t iova;
	uint64_t length;
};

_Static_assert(sizeof(struct rdm_iommu_iova_range) == 16, "iommu_iova_range size");
_Static_assert(sizeof(struct rdm_iommu_ioas_iova_ranges) == 32, "iommu_ioas_iova_ranges size");
_Static_assert(offsetof(struct rdm_iommu_ioas_iova_ranges, num_iovas) == 8, "num_iovas offset");
_Static_assert(offsetof(struct rdm_iommu_ioas_iova_ranges, allowed_iovas) == 16, "allowed_iovas offset");
_Static_assert(offsetof(struct rdm_iommu_ioas_iova_ranges, out_iova_alignment) == 24,
	       "out_iova_alignment offset");
_Static_assert(sizeof(struct rdm_iommu_ioas_map) == 40, "iommu_ioas_map size");
_Static_assert(offsetof(struct rdm_iommu_ioas_map, ioas_id) == 8, "ioas_map.ioas_id offset");
_Static_assert(offsetof(struct rdm_iommu_ioas_map, user_va) == 16, "ioas_map.user_va offset");
_Static_assert(offsetof(struct rdm_iommu_ioas_map, length) == 24, "ioas_map.length offset");
_Static_assert(offsetof(struct rdm_iommu_ioas_map, iova) == 32, "ioas_map.iova offset");
_Static_assert(sizeof(struct rdm_iommu_ioas_unmap) == 24, "iommu_ioas_unmap size");
_Static_assert(offsetof(struct rdm_iommu_ioas_unmap, iova) == 8, "ioas_unmap.iova offset");
_Static_assert(offsetof(struct rdm_iommu_ioas_unmap, length) == 16, "ioas_unmap.length offset");
/* _IO(';', 0x85) = (0x3b << 8) | 0x85: no size or direction bits. */
_Static_assert(RDM_IOMMU_IOAS_MAP == 0x3b85, "IOMMU_IOAS_MAP number");
_Static_assert(RDM_IOMMU_IOAS_UNMAP == 0x3b86, "IOMMU_IOAS_UNMAP number");
_Static_assert(RDM_IOMMU_IOAS_IOVA_RANGES == 0x3b84, "IOMMU_IOAS_IOVA_RANGES number");

#endif /* RDM_IOMMU_IOMMUFD_ABI_H */
