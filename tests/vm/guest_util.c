/* tests/vm/guest_util.c - helpers for guest test programs: TAP, VFIO type1, edu DMA, kernel log. */
#include "guest_util.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/pci_regs.h>
#include <linux/vfio.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

/* ---- TAP ---- */

static unsigned tap_count;
static unsigned tap_failed;

void gu_tap_init(const char *program)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	setvbuf(stderr, NULL, _IOLBF, 0);
	printf("# %s: group %s, device %s, dma_entry_limit %s\n", program,
	       getenv("RDM_VM_GROUP") ? getenv("RDM_VM_GROUP") : "?",
	       getenv("RDM_VM_BDF") ? getenv("RDM_VM_BDF") : "?",
	       getenv("RDM_VM_LIMIT") ? getenv("RDM_VM_LIMIT") : "?");
}

bool gu_tap_ok(bool ok, const char *fmt, ...)
{
	va_list ap;

	tap_count++;
	if (!ok)
		tap_failed++;
	printf("%sok %u - ", ok ? "" : "not ", tap_count);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	return ok;
}

void gu_tap_skip(const char *why, const char *fmt, ...)
{
	va_list ap;

	tap_count++;
	printf("ok %u - ", tap_count);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf(" # SKIP %s\n", why);
}

void gu_tap_diag(const char *fmt, ...)
{
	va_list ap;

	fputs("# ", stdout);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
}

int gu_tap_done(void)
{
	printf("1..%u\n", tap_count);
	fflush(stdout);
	return tap_failed ? 1 : 0;
}

unsigned gu_tap_failures(void)
{
	return tap_failed;
}

/* ---- environment ---- */

uint64_t gu_env_u64(const char *name, uint64_t def)
{
	const char *s = getenv(name);
	char *end;
	unsigned long long v;

	if (!s || !*s)
		return def;
	errno = 0;
	v = strtoull(s, &end, 0);
	if (errno || *end)
		return def;
	return v;
}

/* ---- VFIO type1 ---- */

static int fail_errno(const char *what)
{
	int err = errno ? errno : EIO;

	gu_tap_diag("%s: %s", what, strerror(err));
	return -err;
}

int gu_vfio_open(struct gu_vfio *v)
{
	struct vfio_group_status status = { .argsz = sizeof(status) };
	const char *group = getenv("RDM_VM_GROUP");
	const char *bdf = getenv("RDM_VM_BDF");
	char path[64];
	int ret;

	memset(v, 0, sizeof(*v));
	v->container = v->group = v->device = -1;
	if (!group || !bdf) {
		gu_tap_diag("RDM_VM_GROUP / RDM_VM_BDF not set: not running under tests/vm's /init?");
		return -ENODEV;
	}
	v->group_id = (unsigned)strtoul(group, NULL, 10);
	snprintf(v->bdf, sizeof(v->bdf), "%s", bdf);

	v->container = open("/dev/vfio/vfio", O_RDWR | O_CLOEXEC);
	if (v->container < 0)
		return fail_errno("open /dev/vfio/vfio");
	if (ioctl(v->container, VFIO_GET_API_VERSION) != VFIO_API_VERSION) {
		gu_tap_diag("VFIO_GET_API_VERSION: not %d", VFIO_API_VERSION);
		ret = -EINVAL;
		goto fail;
	}
	if (ioctl(v->container, VFIO_CHECK_EXTENSION, VFIO_TYPE1v2_IOMMU) != 1) {
		gu_tap_diag("VFIO_CHECK_EXTENSION: no VFIO_TYPE1v2_IOMMU");
		ret = -ENOTSUP;
		goto fail;
	}
	snprintf(path, sizeof(path), "/dev/vfio/%u", v->group_id);
	v->group = open(path, O_RDWR | O_CLOEXEC);
	if (v->group < 0) {
		ret = fail_errno(path);
		goto fail;
	}
	if (ioctl(v->group, VFIO_GROUP_GET_STATUS, &status)) {
		ret = fail_errno("VFIO_GROUP_GET_STATUS");
		goto fail;
	}
	if (!(status.flags & VFIO_GROUP_FLAGS_VIABLE)) {
		gu_tap_diag("group %u not viable (a device of it is not bound to vfio)", v->group_id);
		ret = -EBUSY;
		goto fail;
	}
	if (ioctl(v->group, VFIO_GROUP_SET_CONTAINER, &v->container)) {
		ret = fail_errno("VFIO_GROUP_SET_CONTAINER");
		goto fail;
	}
	if (ioctl(v->container, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU)) {
		ret = fail_errno("VFIO_SET_IOMMU type1v2");
		goto fail;
	}
	v->device = ioctl(v->group, VFIO_GROUP_GET_DEVICE_FD, v->bdf);
	if (v->device < 0) {
		ret = fail_errno("VFIO_GROUP_GET_DEVICE_FD");
		goto fail;
	}
	return 0;
fail:
	gu_vfio_close(v);
	return ret;
}

void gu_vfio_close(struct gu_vfio *v)
{
	if (v->device >= 0)
		close(v->device);
	if (v->group >= 0)
		close(v->group);
	if (v->container >= 0)
		close(v->container);
	v->device = v->group = v->container = -1;
}

int gu_dma_map(int container, uint64_t iova, const void *vaddr, uint64_t size)
{
	struct vfio_iommu_type1_dma_map map = {
		.argsz = sizeof(map),
		.flags = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE,
		.vaddr = (uint64_t)(uintptr_t)vaddr,
		.iova = iova,
		.size = size,
	};

	return ioctl(container, VFIO_IOMMU_MAP_DMA, &map) ? -errno : 0;
}

int gu_dma_unmap(int container, uint64_t iova, uint64_t size, uint64_t *size_out)
{
	struct vfio_iommu_type1_dma_unmap unmap = {
		.argsz = sizeof(unmap),
		.iova = iova,
		.size = size,
	};
	int ret = ioctl(container, VFIO_IOMMU_UNMAP_DMA, &unmap) ? -errno : 0;

	if (size_out)
		*size_out = unmap.size;
	return ret;
}

int64_t gu_dma_avail(int container)
{
	struct vfio_iommu_type1_info probe = { .argsz = sizeof(probe) };
	struct vfio_iommu_type1_info *info;
	int64_t ret = -ENOENT;
	uint32_t off;

	if (ioctl(container, VFIO_IOMMU_GET_INFO, &probe))
		return -errno;
	if (!(probe.flags & VFIO_IOMMU_INFO_CAPS) || probe.argsz <= sizeof(probe))
		return -ENOENT;
	info = calloc(1, probe.argsz);
	if (!info)
		return -ENOMEM;
	info->argsz = probe.argsz;
	if (ioctl(container, VFIO_IOMMU_GET_INFO, info)) {
		ret = -errno;
		goto out;
	}
	for (off = info->cap_offset; off && off + sizeof(struct vfio_info_cap_header) <= info->argsz;) {
		const struct vfio_info_cap_header *h =
			(const struct vfio_info_cap_header *)((const char *)info + off);

		if (h->id == VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL) {
			const struct vfio_iommu_type1_info_dma_avail *a =
				(const struct vfio_iommu_type1_info_dma_avail *)h;

			ret = a->avail;
			break;
		}
		if (h->next <= off) /* the chain only moves forward */
			break;
		off = h->next;
	}
out:
	free(info);
	return ret;
}

/* ---- edu ---- */

enum {
	EDU_IDENT = 0x00,
	EDU_DMA_SRC = 0x80,
	EDU_DMA_DST = 0x88,
	EDU_DMA_COUNT = 0x90,
	EDU_DMA_CMD = 0x98,
	EDU_CMD_START = 0x1,
	EDU_CMD_TO_RAM = 0x2,
	EDU_BUF_BASE = 0x40000,
};

/* Device registers: volatile is what MMIO needs (every access happens, in order, at its
 * width); it is not used for synchronisation between threads. */
static uint32_t mmio_read32(const struct gu_edu *e, size_t off)
{
	return *(const volatile uint32_t *)(const void *)(e->bar0 + off);
}

static uint64_t mmio_read64(const struct gu_edu *e, size_t off)
{
	return *(const volatile uint64_t *)(const void *)(e->bar0 + off);
}

static void mmio_write64(struct gu_edu *e, size_t off, uint64_t val)
{
	*(volatile uint64_t *)(void *)(e->bar0 + off) = val;
}

static int region_info(int device, uint32_t index, struct vfio_region_info *ri)
{
	memset(ri, 0, sizeof(*ri));
	ri->argsz = sizeof(*ri);
	ri->index = index;
	return ioctl(device, VFIO_DEVICE_GET_REGION_INFO, ri) ? fail_errno("VFIO_DEVICE_GET_REGION_INFO")
							       : 0;
}

int gu_edu_init(struct gu_edu *e, const struct gu_vfio *v)
{
	struct vfio_region_info ri;
	uint16_t cmd;
	uint32_t ident;
	int ret;

	memset(e, 0, sizeof(*e));
	e->device = v->device;
	e->container = v->container;
	e->iova_limit = UINT64_C(1) << (gu_env_u64("RDM_VM_EDU_DMA_BITS", 28) & 63);
	if (e->iova_limit < GU_EDU_IOVA_LIMIT)
		e->iova_limit = GU_EDU_IOVA_LIMIT;
	ret = region_info(e->device, VFIO_PCI_BAR0_REGION_INDEX, &ri);
	if (ret)
		return ret;
	if (!(ri.flags & VFIO_REGION_INFO_FLAG_MMAP) || ri.size < 0x100) {
		gu_tap_diag("BAR0: flags 0x%x size %llu: not mmappable", ri.flags,
			    (unsigned long long)ri.size);
		return -ENOTSUP;
	}
	e->bar0 = mmap(NULL, ri.size, PROT_READ | PROT_WRITE, MAP_SHARED, e->device, (off_t)ri.offset);
	if (e->bar0 == MAP_FAILED) {
		e->bar0 = NULL;
		return fail_errno("mmap BAR0");
	}
	e->bar0_size = ri.size;
	ident = mmio_read32(e, EDU_IDENT);
	if ((ident & 0xff) != 0xed) {
		gu_tap_diag("edu identification register 0x%08x: not edu", ident);
		gu_edu_fini(e);
		return -ENODEV;
	}

	ret = region_info(e->device, VFIO_PCI_CONFIG_REGION_INDEX, &ri);
	if (ret)
		goto fail;
	e->cfg_offset = ri.offset;
	if (pread(e->device, &cmd, sizeof(cmd), (off_t)(e->cfg_offset + PCI_COMMAND)) != sizeof(cmd)) {
		ret = fail_errno("read PCI_COMMAND");
		goto fail;
	}
	cmd |= PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER;
	if (pwrite(e->device, &cmd, sizeof(cmd), (off_t)(e->cfg_offset + PCI_COMMAND)) != sizeof(cmd)) {
		ret = fail_errno("write PCI_COMMAND");
		goto fail;
	}
	return 0;
fail:
	gu_edu_fini(e);
	return ret;
}

void gu_edu_fini(struct gu_edu *e)
{
	if (e->bar0)
		munmap(e->bar0, e->bar0_size);
	e->bar0 = NULL;
}

static int edu_dma(struct gu_edu *e, uint64_t src, uint64_t dst, uint32_t len, uint64_t cmd)
{
	struct timespec tick = { 0, 1000000 };
	int waited_ms = 0;

	mmio_write64(e, EDU_DMA_SRC, src);
	mmio_write64(e, EDU_DMA_DST, dst);
	mmio_write64(e, EDU_DMA_COUNT, len);
	mmio_write64(e, EDU_DMA_CMD, cmd | EDU_CMD_START);
	e->dma_count++;
	/* edu runs the transfer from a timer 100 ms (virtual time) after the start bit. */
	while (mmio_read64(e, EDU_DMA_CMD) & EDU_CMD_START) {
		if (waited_ms++ >= 10000) {
			gu_tap_diag("edu DMA still busy after 10 s");
			return -ETIMEDOUT;
		}
		nanosleep(&tick, NULL);
	}
	return 0;
}

static int edu_args_ok(const struct gu_edu *e, uint64_t iova, uint32_t devoff, uint32_t len)
{
	if (len == 0 || devoff >= GU_EDU_BUF_SIZE || len >= GU_EDU_BUF_SIZE - devoff ||
	    iova >= e->iova_limit || len > e->iova_limit - iova) {
		gu_tap_diag("edu DMA iova 0x%" PRIx64 " devoff %u len %u: outside what edu can do", iova,
			    devoff, len);
		return -EINVAL;
	}
	return 0;
}

int gu_edu_dma_from_ram(struct gu_edu *e, uint64_t iova, uint32_t devoff, uint32_t len)
{
	int ret = edu_args_ok(e, iova, devoff, len);

	return ret ? ret : edu_dma(e, iova, EDU_BUF_BASE + devoff, len, 0);
}

int gu_edu_dma_to_ram(struct gu_edu *e, uint32_t devoff, uint64_t iova, uint32_t len)
{
	int ret = edu_args_ok(e, iova, devoff, len);

	return ret ? ret : edu_dma(e, EDU_BUF_BASE + devoff, iova, len, EDU_CMD_TO_RAM);
}

bool gu_edu_check_mapped(struct gu_edu *e, uint64_t iova, void *host, uint32_t len, char *why,
			 size_t whylen)
{
	uint32_t seed_a = 0x1000u + 2 * e->dma_count, seed_b = seed_a + 1;
	uint8_t *saved = malloc(len ? len : 1);
	bool ok = false;
	long bad;

	snprintf(why, whylen, "ok");
	if (!saved) {
		snprintf(why, whylen, "out of memory");
		return false;
	}
	memcpy(saved, host, len);
	gu_pattern_fill(host, len, seed_a);
	if (gu_edu_dma_from_ram(e, iova, 0, len)) {
		snprintf(why, whylen, "DMA RAM->device did not run");
		goto out;
	}
	gu_pattern_fill(host, len, seed_b);
	if (gu_edu_dma_to_ram(e, 0, iova, len)) {
		snprintf(why, whylen, "DMA device->RAM did not run");
		goto out;
	}
	bad = gu_pattern_check(host, len, seed_a);
	if (bad < 0)
		ok = true;
	else if (gu_pattern_check(host, len, seed_b) < 0)
		snprintf(why, whylen, "device->RAM wrote nothing (memory still holds the second pattern)");
	else
		snprintf(why, whylen, "data differs at byte %ld (RAM->device read wrong data?)", bad);
out:
	memcpy(host, saved, len);
	free(saved);
	return ok;
}

bool gu_edu_check_unmapped(struct gu_edu *e, uint64_t iova, void *host, uint32_t len,
			   bool want_fault, int timeout_ms, char *why, size_t whylen)
{
	uint32_t seed_dev = 0x2000u + 2 * e->dma_count, seed_host = seed_dev + 1;
	uint8_t *scratch = gu_alloc_pages(4096);
	bool ok = false;
	long bad;
	int kmsg = -1, ret;

	snprintf(why, whylen, "ok");
	if (!scratch) {
		snprintf(why, whylen, "out of memory");
		return false;
	}
	/* Load edu's buffer with a pattern host memory does not hold. */
	gu_pattern_fill(scratch, len, seed_dev);
	ret = gu_dma_map(e->container, GU_EDU_SCRATCH_IOVA, scratch, 4096);
	if (ret) {
		snprintf(why, whylen, "scratch map at 0x%llx: %s",
			 (unsigned long long)GU_EDU_SCRATCH_IOVA, strerror(-ret));
		goto out;
	}
	ret = gu_edu_dma_from_ram(e, GU_EDU_SCRATCH_IOVA, 0, len);
	gu_dma_unmap(e->container, GU_EDU_SCRATCH_IOVA, 4096, NULL);
	if (ret) {
		snprintf(why, whylen, "loading edu's buffer failed");
		goto out;
	}

	gu_pattern_fill(host, len, seed_host);
	if (want_fault) {
		kmsg = gu_kmsg_mark();
		if (kmsg < 0) {
			snprintf(why, whylen, "/dev/kmsg: %s", strerror(-kmsg));
			goto out;
		}
	}
	/* A second try only when the log stayed silent: the kernel's rate-limit window may have
	 * opened later than gu_dmar_fault_pace() reckons (the fault reaches the kernel a DMA timer
	 * and an interrupt after the call; under load that is more than its slack). */
	for (int attempt = 0; attempt < (want_fault ? 2 : 1); attempt++) {
		if (attempt) {
			gu_tap_diag("no DMAR fault for 0x%llx logged in %d ms: once more in a fresh log window",
				    (unsigned long long)(iova & ~UINT64_C(0xfff)), timeout_ms);
			gu_dmar_fault_restart();
		}
		gu_dmar_fault_pace(want_fault);
		if (gu_edu_dma_to_ram(e, 0, iova, len)) {
			snprintf(why, whylen, "DMA device->RAM did not run");
			goto out;
		}
		bad = gu_pattern_check(host, len, seed_host);
		if (bad >= 0) {
			snprintf(why, whylen, "memory changed at byte %ld: the IOVA is still mapped", bad);
			goto out;
		}
		if (!want_fault || gu_dmar_fault_seen(kmsg, iova, true, timeout_ms)) {
			ok = true;
			goto out;
		}
		snprintf(why, whylen, "memory untouched but no DMAR write fault for 0x%llx logged in %d ms%s",
			 (unsigned long long)(iova & ~UINT64_C(0xfff)), timeout_ms,
			 attempt ? ", twice (the second in a fresh log window)" : "");
	}
out:
	if (kmsg >= 0)
		close(kmsg);
	munmap(scratch, 4096);
	return ok;
}

/* ---- kernel log ---- */

int gu_kmsg_mark(void)
{
	int fd = open("/dev/kmsg", O_RDONLY | O_NONBLOCK | O_CLOEXEC);

	if (fd < 0)
		return fail_errno("open /dev/kmsg");
	if (lseek(fd, 0, SEEK_END) < 0) {
		int ret = fail_errno("seek /dev/kmsg");

		close(fd);
		return ret;
	}
	return fd;
}

/* One record's text (after "prio,seq,time,flags;", first line only), or NULL when none is
 * waiting. Records the reader fell behind on (EPIPE) are skipped. */
static const char *kmsg_next(int fd, char *buf, size_t len)
{
	for (;;) {
		ssize_t n = read(fd, buf, len - 1);
		char *text, *nl;

		if (n < 0 && errno == EPIPE)
			continue;
		if (n <= 0)
			return NULL;
		buf[n] = '\0';
		text = strchr(buf, ';');
		text = text ? text + 1 : buf;
		nl = strchr(text, '\n');
		if (nl)
			*nl = '\0';
		return text;
	}
}

bool gu_kmsg_find(int fd, const char *const *needles, int timeout_ms, char *line, size_t linelen)
{
	struct timespec tick = { 0, 10000000 };
	char buf[8192];
	int waited = 0;

	for (;;) {
		const char *text;

		while ((text = kmsg_next(fd, buf, sizeof(buf)))) {
			bool all = true;

			for (const char *const *n = needles; *n; n++)
				all = all && strstr(text, *n);
			if (all) {
				if (line)
					snprintf(line, linelen, "%s", text);
				return true;
			}
		}
		if (waited >= timeout_ms)
			return false;
		nanosleep(&tick, NULL);
		waited += 10;
	}
}

bool gu_dmar_fault_seen(int fd, uint64_t iova, bool write, int timeout_ms)
{
	char addr[48], line[512];
	const char *needles[] = { "DMAR", write ? "DMA Write" : "DMA Read", addr, NULL };

	snprintf(addr, sizeof(addr), "fault addr 0x%llx ",
		 (unsigned long long)(iova & ~UINT64_C(0xfff)));
	if (!gu_kmsg_find(fd, needles, timeout_ms, line, sizeof(line)))
		return false;
	gu_tap_diag("dmesg: %s", line);
	return true;
}

/* The kernel's window: dmar_fault() prints through one ratelimit state (DEFAULT_RATELIMIT_*:
 * 10 lines per 5 s, about three per fault). A window opens at the first fault after the last one
 * closed; a little slack covers the guest's timer granularity. */
#define FAULT_WINDOW_S 5.3
#define FAULTS_PER_WINDOW 3

static double mono_s(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* The window outlives a program: the next one in the same boot may fault within it. CLOCK_MONOTONIC
 * is the same in every process of the guest, so the state is kept in a file on /tmp (tmpfs);
 * the programs of a boot run one after another. */
#define FAULT_STATE_PATH "/tmp/rdm-vm-dmar-pace"

static void pace_load(double *window_start, int *faults)
{
	FILE *f = fopen(FAULT_STATE_PATH, "r");

	if (!f)
		return;
	if (fscanf(f, "%lf %d", window_start, faults) != 2) {
		*window_start = -1e9;
		*faults = 0;
	}
	fclose(f);
}

static void pace_save(double window_start, int faults)
{
	FILE *f = fopen(FAULT_STATE_PATH, "w");

	if (!f)
		return;
	fprintf(f, "%.6f %d\n", window_start, faults);
	fclose(f);
}

static double fault_waited_s;

void gu_dmar_fault_restart(void)
{
	struct timespec ts = { (time_t)FAULT_WINDOW_S,
			       (long)((FAULT_WINDOW_S - (double)(time_t)FAULT_WINDOW_S) * 1e9) };
	double t0 = mono_s();

	nanosleep(&ts, NULL);
	fault_waited_s += mono_s() - t0;
	pace_save(-1e9, 0);
}

double gu_dmar_fault_waited_s(void)
{
	return fault_waited_s;
}

void gu_dmar_fault_pace(bool must_log)
{
	double window_start = -1e9;
	int faults = 0;
	double now = mono_s();

	pace_load(&window_start, &faults);

	if (now - window_start >= FAULT_WINDOW_S) {
		window_start = now;
		faults = 0;
	} else if (faults >= FAULTS_PER_WINDOW && must_log) {
		double wait = window_start + FAULT_WINDOW_S - now;
		struct timespec ts = { (time_t)wait, (long)((wait - (double)(time_t)wait) * 1e9) };

		nanosleep(&ts, NULL);
		window_start = mono_s();
		fault_waited_s += window_start - now;
		faults = 0;
	}
	faults++;
	pace_save(window_start, faults);
}

void gu_kmsg_dump(int fd)
{
	char buf[8192];
	const char *text;

	while ((text = kmsg_next(fd, buf, sizeof(buf))))
		gu_tap_diag("dmesg: %s", text);
}

/* ---- memory ---- */

void *gu_alloc_pages(size_t bytes)
{
	void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE,
		       -1, 0);

	return p == MAP_FAILED ? NULL : p;
}

static uint8_t pattern_byte(uint32_t *x)
{
	/* xorshift32: cheap, and no byte sequence repeats within a page for distinct seeds. */
	*x ^= *x << 13;
	*x ^= *x >> 17;
	*x ^= *x << 5;
	return (uint8_t)(*x >> 24);
}

void gu_pattern_fill(void *p, size_t len, uint32_t seed)
{
	uint32_t x = seed * 2654435761u + 1;
	uint8_t *b = p;

	for (size_t i = 0; i < len; i++)
		b[i] = pattern_byte(&x);
}

long gu_pattern_check(const void *p, size_t len, uint32_t seed)
{
	uint32_t x = seed * 2654435761u + 1;
	const uint8_t *b = p;

	for (size_t i = 0; i < len; i++)
		if (b[i] != pattern_byte(&x))
			return (long)i;
	return -1;
}
