/* tests/vm/guest_util.h - helpers for guest test programs: TAP, VFIO type1, edu DMA, kernel log. */
#ifndef RDM_TESTS_VM_GUEST_UTIL_H
#define RDM_TESTS_VM_GUEST_UTIL_H

/*
 * Guest test programs run inside the Linux guest that tests/vm/run-vm.py boots. The guest's
 * /init has loaded the vfio modules, bound QEMU's edu device to vfio-pci and exported:
 *   RDM_VM_BDF     the edu device's PCI address ("0000:00:03.0")
 *   RDM_VM_GROUP   its IOMMU group number
 *   RDM_VM_LIMIT   vfio_iommu_type1's dma_entry_limit as the module reports it
 * plus every key=value word of the kernel command line (run-vm.py --param).
 *
 * Output is TAP on stdout (gu_tap_*); the host prefixes each line with the program's name and
 * renumbers it. Anything else a program prints should be a "# " diagnostic.
 *
 * Functions returning int give 0 or a negative errno; on failure they also print one "# "
 * diagnostic line naming the call that failed.
 */

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- TAP ---- */

/* Line-buffer stdout and stderr (the console may be the only record) and print a header. */
void gu_tap_init(const char *program);
/* One check: "ok N - what" or "not ok N - what". Returns ok. */
bool gu_tap_ok(bool ok, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A check that could not run here: "ok N - what # SKIP why". */
void gu_tap_skip(const char *why, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A diagnostic line: "# ...". */
void gu_tap_diag(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Print the plan "1..N"; returns the process exit code (0 when every check passed). */
int gu_tap_done(void);
/* Checks failed so far. */
unsigned gu_tap_failures(void);

/* ---- environment ---- */

/* Unsigned number from the environment (decimal, 0x hex), or def when unset or malformed. */
uint64_t gu_env_u64(const char *name, uint64_t def);

/* ---- VFIO type1 ---- */

struct gu_vfio {
	int container; /* /dev/vfio/vfio, type1v2 set */
	int group;     /* /dev/vfio/<group> */
	int device;    /* the device fd, or -1 */
	unsigned group_id;
	char bdf[32];
};

/*
 * Open the group of RDM_VM_GROUP in a fresh type1v2 container and the device RDM_VM_BDF.
 * A group belongs to one container at a time: gu_vfio_close() before opening again (a fresh
 * container starts with DMA_AVAIL == dma_entry_limit and no mappings).
 */
int gu_vfio_open(struct gu_vfio *v);
/* Close device, group and container (the kernel drops every mapping of the container). */
void gu_vfio_close(struct gu_vfio *v);

/* VFIO_IOMMU_MAP_DMA, read and write. Returns 0 or -errno. */
int gu_dma_map(int container, uint64_t iova, const void *vaddr, uint64_t size);
/* VFIO_IOMMU_UNMAP_DMA. Returns 0 or -errno; *size_out (may be NULL) gets the struct's size
 * field after the call: the bytes unmapped on success, and on failure whatever the kernel left. */
int gu_dma_unmap(int container, uint64_t iova, uint64_t size, uint64_t *size_out);
/* VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL from VFIO_IOMMU_GET_INFO's capability chain: the mappings the
 * container may still create (>= 0), or -errno (-ENOENT when the kernel has no such capability). */
int64_t gu_dma_avail(int container);

/* ---- edu (QEMU's educational PCI device) through vfio-pci ---- */

/* edu's DMA engine sees 28 address bits by default (QEMU's dma_mask property): IOVAs used with
 * edu must lie below this. run-vm.py widens the mask (-device edu,dma_mask=...) and says by how
 * much on the kernel command line (RDM_VM_EDU_DMA_BITS, read by gu_edu_init): struct gu_edu's
 * iova_limit is what the device reaches in this boot. */
#define GU_EDU_IOVA_LIMIT (UINT64_C(1) << 28)
/* Its internal buffer is 4096 bytes, but QEMU 7.2 aborts on a transfer that ends exactly at the
 * buffer's end: transfers are 1..GU_EDU_DMA_MAX bytes at device offsets with off+len < 4096. */
#define GU_EDU_BUF_SIZE 4096u
#define GU_EDU_DMA_MAX (GU_EDU_BUF_SIZE - 1)
/* One page the unmapped-DMA check maps for a moment (to load and read back edu's buffer).
 * Tests must not map this IOVA themselves while they call gu_edu_check_unmapped(). */
#define GU_EDU_SCRATCH_IOVA (GU_EDU_IOVA_LIMIT - 4096)

struct gu_edu {
	int device;       /* vfio device fd (borrowed) */
	int container;    /* for the scratch mapping (borrowed) */
	uint8_t *bar0;    /* BAR0 mmap */
	size_t bar0_size;
	uint64_t cfg_offset; /* config region offset in the device fd */
	uint32_t dma_count;  /* DMAs issued */
	uint64_t iova_limit; /* IOVAs edu reaches: 1 << RDM_VM_EDU_DMA_BITS (default 28) */
};

/* mmap BAR0 (VFIO_DEVICE_GET_REGION_INFO), check edu's identity register, enable memory and
 * bus mastering in PCI_COMMAND through the config region; iova_limit from RDM_VM_EDU_DMA_BITS. */
int gu_edu_init(struct gu_edu *e, const struct gu_vfio *v);
void gu_edu_fini(struct gu_edu *e);
/* RAM -> device: copy len bytes at iova into edu's buffer at devoff; wait until done.
 * -EINVAL for a range reaching e->iova_limit or a range outside the buffer, -ETIMEDOUT when the
 * engine stays busy for 10 s. A fault is not visible here (see gu_kmsg_*). */
int gu_edu_dma_from_ram(struct gu_edu *e, uint64_t iova, uint32_t devoff, uint32_t len);
/* device -> RAM: copy len bytes of edu's buffer at devoff to iova; wait until done. */
int gu_edu_dma_to_ram(struct gu_edu *e, uint32_t devoff, uint64_t iova, uint32_t len);

/*
 * I1 with the device: [iova, iova+len) is mapped to host. edu reads a fresh pattern from it and
 * writes it back over a second pattern; true when host memory then holds the first one. Host
 * memory is restored afterwards. len <= GU_EDU_DMA_MAX. On false, why says which direction failed.
 */
bool gu_edu_check_mapped(struct gu_edu *e, uint64_t iova, void *host, uint32_t len, char *why,
			 size_t whylen);
/*
 * I2 with the device: [iova, iova+len) is NOT mapped (host is the memory that used to be).
 * edu's buffer is loaded with a pattern through GU_EDU_SCRATCH_IOVA, then written to iova: true
 * when host memory is untouched and, if want_fault, the kernel logged a DMAR write fault for
 * iova's page within timeout_ms. Goes through gu_dmar_fault_pace(want_fault): a fault check may
 * wait up to 5 s for the kernel's rate limit, so most checks should pass want_fault=false.
 * When memory is untouched but no fault was logged, it tries once more after
 * gu_dmar_fault_restart() (the window may have opened later than the pacing reckons).
 */
bool gu_edu_check_unmapped(struct gu_edu *e, uint64_t iova, void *host, uint32_t len,
			   bool want_fault, int timeout_ms, char *why, size_t whylen);

/* ---- kernel log (/dev/kmsg) ---- */

/* Open /dev/kmsg positioned at its end: later gu_kmsg_find() calls see only newer records. */
int gu_kmsg_mark(void);
/* Read records after the mark until one contains every needle (NULL-terminated list) or
 * timeout_ms passes. Copies the matching record's text into line. */
bool gu_kmsg_find(int fd, const char *const *needles, int timeout_ms, char *line, size_t linelen);
/* A DMAR fault for the page of iova (write: "DMA Write", else "DMA Read") after the mark. */
bool gu_dmar_fault_seen(int fd, uint64_t iova, bool write, int timeout_ms);
/*
 * The kernel logs DMAR faults through a rate limit (measured in the 6.1 guest: 3 faults logged,
 * then none until 5 s after the first). Call this just before every DMA that will fault; with
 * must_log it sleeps until the fault will be logged. Faults the caller does not announce here
 * make a later must_log fault go unlogged. The count survives the program (a file on the guest's
 * /tmp): faults of an earlier program in the same boot are counted too.
 */
void gu_dmar_fault_pace(bool must_log);
/* Sleep a whole window from now: the kernel's current one, whenever it began, has then ended;
 * the next fault opens a new one. */
void gu_dmar_fault_restart(void);
/* Seconds this program slept in gu_dmar_fault_pace() and gu_dmar_fault_restart(). */
double gu_dmar_fault_waited_s(void);
/* Print every record after the mark as "# dmesg: ..." diagnostics. */
void gu_kmsg_dump(int fd);

/* ---- memory ---- */

/* Anonymous, populated, page-aligned memory (munmap to free). NULL on failure. */
void *gu_alloc_pages(size_t bytes);
/* Deterministic fill from a seed; gu_pattern_check returns the first differing offset or -1. */
void gu_pattern_fill(void *p, size_t len, uint32_t seed);
long gu_pattern_check(const void *p, size_t len, uint32_t seed);

#endif
