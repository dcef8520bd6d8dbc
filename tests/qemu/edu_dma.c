/* tests/qemu/edu_dma.c - edu DMA from the L2 guest, where edu is passed through by the L2 QEMU.
 *
 *   edu_dma find START END   lock pages until two lie at physical addresses in [START, END)
 *                            (hotplugged memory), have edu copy the first into its buffer and
 *                            from there into the second, compare; print
 *                            "@@L2 DMA ok paddr=0x..." or "@@L2 DMA fail <why>"
 *   edu_dma write PADDR      have edu write its buffer to PADDR (memory the guest no longer has);
 *                            print "@@L2 DMAW done" (L1's IOMMU reports the fault, not L2)
 *
 * L2 has no IOMMU: the DMA addresses are guest-physical, which the L2 QEMU maps as IOVAs in L1's
 * container. Physical addresses come from /proc/self/pagemap (root only).
 */
#include "guest_util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

enum {
	PAGE = 4096,
	MAX_PAGES = 65536, /* 256 MiB of tries */
	EDU_BITS = 40,     /* edu's dma_mask on L1's QEMU (tests/vm/run-vm.py) */
};

/* guest_util's edu DMA with BAR0 mapped from sysfs instead of through VFIO. */
static struct gu_edu edu = { .device = -1, .container = -1, .iova_limit = UINT64_C(1) << EDU_BITS };

/* Find edu (1234:11e8), turn on memory decoding and bus mastering, map BAR0. */
static int edu_open(void)
{
	char path[512], buf[16];
	struct dirent *d;
	DIR *dir = opendir("/sys/bus/pci/devices");
	int found = 0;

	while (dir && !found && (d = readdir(dir))) {
		unsigned vendor = 0, device = 0;
		FILE *f;

		snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/vendor", d->d_name);
		if ((f = fopen(path, "r"))) {
			found = fscanf(f, "%x", &vendor) == 1;
			fclose(f);
		}
		snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/device", d->d_name);
		if (found && (f = fopen(path, "r"))) {
			found = fscanf(f, "%x", &device) == 1;
			fclose(f);
		}
		found = found && vendor == 0x1234 && device == 0x11e8;
		if (found)
			snprintf(buf, sizeof(buf), "%.15s", d->d_name);
	}
	if (dir)
		closedir(dir);
	if (!found) {
		printf("@@L2 DMA fail no edu (1234:11e8) on the PCI bus\n");
		return -1;
	}
	snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/config", buf);
	int fd = open(path, O_RDWR);
	uint16_t cmd = 0;
	if (fd < 0 || pread(fd, &cmd, 2, 4) != 2) {
		printf("@@L2 DMA fail read %s: %s\n", path, strerror(errno));
		return -1;
	}
	cmd |= 0x6; /* memory space, bus master */
	if (pwrite(fd, &cmd, 2, 4) != 2) {
		printf("@@L2 DMA fail write %s: %s\n", path, strerror(errno));
		return -1;
	}
	close(fd);
	snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/resource0", buf);
	fd = open(path, O_RDWR | O_SYNC);
	void *bar0 = fd < 0 ? MAP_FAILED : mmap(NULL, 1 << 20, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (bar0 == MAP_FAILED) {
		printf("@@L2 DMA fail map %s: %s\n", path, strerror(errno));
		return -1;
	}
	close(fd);
	edu.bar0 = bar0;
	edu.bar0_size = 1 << 20;
	/* edu answers 4-byte reads only below 0x80 (all ones otherwise). */
	uint32_t ident = *(volatile uint32_t *)bar0;
	if (ident != 0x010000ed) {
		printf("@@L2 DMA fail %s: identification 0x%08x is not edu's\n", buf, ident);
		return -1;
	}
	return 0;
}

static uint64_t paddr(int pagemap, const void *p)
{
	uint64_t e = 0;

	if (pread(pagemap, &e, 8, (off_t)((uintptr_t)p / PAGE * 8)) != 8 || !(e & (UINT64_C(1) << 63)))
		return 0;
	return (e & ((UINT64_C(1) << 55) - 1)) * PAGE;
}

static int find(uint64_t start, uint64_t end)
{
	uint8_t *mem = mmap(NULL, (size_t)MAX_PAGES * PAGE, PROT_READ | PROT_WRITE,
			    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	int pagemap = open("/proc/self/pagemap", O_RDONLY);
	uint8_t *hit[2] = { NULL, NULL };
	uint64_t pa[2] = { 0, 0 };
	int n = 0;

	if (mem == MAP_FAILED || pagemap < 0) {
		printf("@@L2 DMA fail mmap/pagemap: %s\n", strerror(errno));
		return 1;
	}
	/* Lock page by page (the physical address of a locked page stays) until two are in range. */
	for (size_t i = 0; i < MAX_PAGES && n < 2; i++) {
		uint8_t *p = mem + i * PAGE;
		if (mlock(p, PAGE)) {
			printf("@@L2 DMA fail mlock: %s\n", strerror(errno));
			return 1;
		}
		uint64_t a = paddr(pagemap, p);
		if (a >= start && a < end) {
			hit[n] = p;
			pa[n++] = a;
		}
	}
	if (n < 2) {
		printf("@@L2 DMA fail no locked page in [0x%" PRIx64 ", 0x%" PRIx64 ")\n", start, end);
		return 1;
	}
	gu_pattern_fill(hit[0], GU_EDU_DMA_MAX, 11);
	memset(hit[1], 0, PAGE);
	if (gu_edu_dma_from_ram(&edu, pa[0], 0, GU_EDU_DMA_MAX) || gu_edu_dma_to_ram(&edu, 0, pa[1], GU_EDU_DMA_MAX)) {
		printf("@@L2 DMA fail edu did not run\n");
		return 1;
	}
	long bad = gu_pattern_check(hit[1], GU_EDU_DMA_MAX, 11);
	if (bad >= 0) {
		printf("@@L2 DMA fail 0x%" PRIx64 " -> edu -> 0x%" PRIx64 ": byte %ld differs\n", pa[0], pa[1],
		       bad);
		return 1;
	}
	printf("@@L2 DMA ok paddr=0x%" PRIx64 " paddr2=0x%" PRIx64 "\n", pa[0], pa[1]);
	return 0;
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc < 3 || edu_open())
		return argc < 3 ? 2 : 1;
	if (!strcmp(argv[1], "find") && argc == 4)
		return find(strtoull(argv[2], NULL, 0), strtoull(argv[3], NULL, 0));
	if (!strcmp(argv[1], "write")) {
		int ret = gu_edu_dma_to_ram(&edu, 0, strtoull(argv[2], NULL, 0), GU_EDU_DMA_MAX);
		printf("@@L2 DMAW %s\n", ret ? "fail" : "done");
		return ret ? 1 : 0;
	}
	return 2;
}
