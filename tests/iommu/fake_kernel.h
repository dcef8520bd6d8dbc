/* SPDX-License-Identifier: MIT */
/*
 * tests/iommu/fake_kernel.h - a fake VFIO type1 container or iommufd IOAS
 * behind an rdm_ioctl_fn.
 *
 * It decodes every ioctl the real backends issue, checks every structure
 * field by field as the kernel does (argsz/size, flags, reserved fields,
 * alignment, overflow, IOAS id, fd), applies the kernel's mapping rules
 * through a sim backend underneath, writes back what the kernel writes back
 * (unmapped size, GET_INFO's capability chain, IOVA ranges) and returns the
 * kernel's negative errno. Anything a correct caller never sends (wrong map
 * flags, UNMAP_ALL, a too-small structure) is also recorded as a
 * "violation", so a test can tell a marshalling bug from a rule rejection.
 * Every call is recorded. No dependency on a test framework: guest tests
 * may reuse it.
 */
#ifndef RDM_TESTS_FAKE_KERNEL_H
#define RDM_TESTS_FAKE_KERNEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <rdm/backend.h>

enum fake_kernel_mode { FAKE_TYPE1 = 0, FAKE_IOMMUFD = 1 };

#define FAKE_MAX_RANGES 12

struct fake_kernel_config {
	int mode;          /* enum fake_kernel_mode */
	int fd;            /* the fd the caller must use (EBADF otherwise) */
	uint32_t ioas_id;  /* iommufd: the IOAS (ENOENT otherwise) */
	bool no_type1v2;   /* type1: CHECK_EXTENSION(TYPE1v2) answers 0 */
	bool unmap_all;    /* type1: CHECK_EXTENSION(UNMAP_ALL) answers 1 */
	bool dma_avail_cap;   /* type1: GET_INFO reports DMA_AVAIL */
	bool migration_cap;   /* type1: GET_INFO chain starts with a MIGRATION cap */
	bool bad_chain;       /* type1: the chain's last cap points backwards */
	uint32_t pad_cap;     /* type1: an unknown cap of this many bytes first (a long chain) */
	uint64_t pgsizes;  /* IOMMU page sizes (type1 bitmap; iommufd: alignment = lowest); 0 = 4096 */
	uint64_t limit;    /* mapping limit, 0 = 65535 (type1) / none (iommufd) */
	unsigned nranges;  /* allowed IOVA ranges (inclusive); 0 = no IOVA_RANGE cap / one full range */
	uint64_t range_start[FAKE_MAX_RANGES], range_last[FAKE_MAX_RANGES];
};

struct fake_call {
	unsigned long request;
	int fd;
	uint32_t argsz;  /* argsz or size field; 0 for by-value requests */
	uint32_t flags;
	uint64_t iova, size, vaddr; /* as passed (size: length for iommufd) */
	uint64_t arg_value;         /* by-value argument (CHECK_EXTENSION) */
	uint64_t written_size;      /* unmap: the size written back */
	int result;
};

struct fake_kernel {
	struct fake_kernel_config cfg;
	struct rdm_backend *model; /* sim with the kernel's rules */
	struct fake_call *calls;
	size_t ncalls, cap;
	unsigned long fail_request; /* next call with this request fails ... */
	int fail_err;               /* ... with this errno (0: none armed) */
	unsigned violations;
	char last_violation[256];
};

/* 0 or a negative errno. */
int fake_kernel_init(struct fake_kernel *fk, const struct fake_kernel_config *cfg);
void fake_kernel_fini(struct fake_kernel *fk);

/* The rdm_ioctl_fn; opaque is the struct fake_kernel. */
int fake_kernel_ioctl(void *opaque, int fd, unsigned long request, void *arg);

/* The next call with this request returns err (negative), changing nothing. */
void fake_kernel_fail_next(struct fake_kernel *fk, unsigned long request, int err);

const struct fake_call *fake_kernel_last(const struct fake_kernel *fk);

#endif
