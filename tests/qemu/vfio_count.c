/* tests/qemu/vfio_count.c - LD_PRELOAD wrapper counting a VMM's VFIO map and unmap ioctls.
 *
 * Loaded into the L2 QEMU by l1drive: every ioctl() goes through here to libc's. The counts live
 * in a shared file (RDM_QEMU_VFIO_COUNT names it) so l1drive reads them while QEMU runs: see
 * struct vfio_counts in vfio_count.h. A request that the kernel rejects is counted as failed.
 * Each successful MAP_DMA is also timed (CLOCK_MONOTONIC around the real ioctl) and its pages
 * counted: l1drive reports the time a plug spends inside the kernel's map calls.
 *
 * RDM_QEMU_VFIO_BREAK=skip-unmap breaks the VMM on purpose, to see the harness's checks fail:
 * every UNMAP_DMA at or above 4 GiB (virtio-mem's region; L2's boot memory lies below) is
 * reported done without reaching the kernel (a VMM that leaks what the guest unplugged).
 */
#include "vfio_count.h"

#include <dlfcn.h>
#include <fcntl.h>
#include <linux/vfio.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

typedef int (*ioctl_fn)(int, unsigned long, ...);

static ioctl_fn real_ioctl;
static struct vfio_counts *counts;
static bool skip_unmap;

__attribute__((constructor)) static void vfio_count_init(void)
{
	const char *path = getenv("RDM_QEMU_VFIO_COUNT");
	int fd;

	const char *brk = getenv("RDM_QEMU_VFIO_BREAK");

	real_ioctl = (ioctl_fn)dlsym(RTLD_NEXT, "ioctl");
	skip_unmap = brk && !strcmp(brk, "skip-unmap");
	if (!path)
		return;
	fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return;
	counts = mmap(NULL, sizeof(*counts), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (counts == MAP_FAILED)
		counts = NULL;
	close(fd);
}

int ioctl(int fd, unsigned long request, ...)
{
	va_list ap;
	void *arg;
	int ret;

	va_start(ap, request);
	arg = va_arg(ap, void *);
	va_end(ap);
	/* Only a counted MAP_DMA is timed: QEMU's other ioctls pay nothing. */
	bool timed = counts && request == VFIO_IOMMU_MAP_DMA;
	struct timespec t0, t1;

	if (timed)
		clock_gettime(CLOCK_MONOTONIC, &t0);
	if (skip_unmap && request == VFIO_IOMMU_UNMAP_DMA &&
	    ((struct vfio_iommu_type1_dma_unmap *)arg)->iova >= UINT64_C(1) << 32)
		ret = 0;
	else
		ret = real_ioctl(fd, request, arg);
	if (timed && !ret) {
		uint64_t pages = ((struct vfio_iommu_type1_dma_map *)arg)->size / 4096, ns;

		clock_gettime(CLOCK_MONOTONIC, &t1);
		ns = (uint64_t)(t1.tv_sec - t0.tv_sec) * 1000000000u + (uint64_t)t1.tv_nsec - (uint64_t)t0.tv_nsec;

		/* Relaxed, as the counts below: read between steps. */
		atomic_fetch_add_explicit(&counts->map_pages, pages, memory_order_relaxed);
		atomic_fetch_add_explicit(&counts->map_ns, ns, memory_order_relaxed);
	}
	if (counts && (request == VFIO_IOMMU_MAP_DMA || request == VFIO_IOMMU_UNMAP_DMA)) {
		/* Relaxed: l1drive reads the counts between steps, after QEMU has answered the QMP
		 * request that caused them; no other memory depends on them. */
		_Atomic uint64_t *c = request == VFIO_IOMMU_MAP_DMA ? &counts->map : &counts->unmap;
		atomic_fetch_add_explicit(ret ? &counts->failed : c, 1, memory_order_relaxed);
	}
	return ret;
}
