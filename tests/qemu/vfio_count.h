/* tests/qemu/vfio_count.h - the counters vfio_count.so keeps in a shared file. */
#ifndef RDM_TESTS_QEMU_VFIO_COUNT_H
#define RDM_TESTS_QEMU_VFIO_COUNT_H

#include <stdatomic.h>
#include <stdint.h>

struct vfio_counts {
	_Atomic uint64_t map;    /* VFIO_IOMMU_MAP_DMA calls that succeeded */
	_Atomic uint64_t unmap;  /* VFIO_IOMMU_UNMAP_DMA calls that succeeded */
	_Atomic uint64_t failed; /* either, rejected by the kernel */
	/* Successful MAP_DMA calls: pages of 4 KiB and nanoseconds inside the ioctl, summed. */
	_Atomic uint64_t map_pages, map_ns;
};

#endif
