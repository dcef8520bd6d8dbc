/* tests/vm/ioctl_record.h - record the vfio-type1 backend's ioctls on a real container; replay them against the fake kernel. */
#ifndef RDM_TESTS_VM_IOCTL_RECORD_H
#define RDM_TESTS_VM_IOCTL_RECORD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * One ioctl the backend issued and what the real kernel answered. For
 * GET_INFO only the fields rdm reads are kept (flags, page sizes, IOVA
 * ranges, DMA_AVAIL); for UNMAP_DMA the size field after the call (the
 * unmapped bytes on success, the untouched request on failure).
 */
#define IR_MAX_RANGES 12

struct ir_info {
	uint32_t flags;
	uint64_t pgsizes;
	bool has_avail;
	uint32_t avail;
	unsigned nranges; /* ranges kept, at most IR_MAX_RANGES */
	uint64_t range_start[IR_MAX_RANGES], range_last[IR_MAX_RANGES];
};

struct ir_call {
	unsigned long request;
	int fd;
	int result;             /* 0/positive or -errno, as rdm_ioctl_fn returns */
	uint32_t argsz;         /* the argsz the caller passed */
	uint32_t flags;
	uint64_t iova, size, vaddr;
	uint64_t value;         /* by-value argument (CHECK_EXTENSION) */
	uint64_t size_after;    /* UNMAP_DMA: the struct's size field after the call */
	struct ir_info info;    /* GET_INFO: decoded reply (when result == 0) */
};

struct ir_recorder {
	struct ir_call *calls;
	size_t n, cap;
	uint64_t maps, unmaps, failed; /* MAP/UNMAP issued, and those the kernel rejected */
};

/* The rdm_ioctl_fn: calls ioctl(2) and records; opaque is the struct ir_recorder. */
int ir_ioctl(void *opaque, int fd, unsigned long request, void *arg);

void ir_free(struct ir_recorder *r);

/*
 * Replay every recorded call, in order, against a fresh tests/iommu fake type1 kernel whose
 * page sizes and IOVA ranges are those the real kernel reported in its first GET_INFO and whose
 * mapping limit is `limit`. Prints one TAP check per kind of call ("the fake answers every
 * MAP_DMA as the kernel did: n calls, k rejected") and a diagnostic for each of the first few
 * mismatches; `what` names the sequence. Returns the number of mismatches.
 */
size_t ir_validate_fake(const struct ir_recorder *r, uint64_t limit, const char *what);

/* Decode a type1 GET_INFO reply of argsz bytes. */
void ir_decode_info(const void *buf, uint32_t argsz, struct ir_info *out);

#endif
