/* SPDX-License-Identifier: MIT */
/* tools/replay/lower_bound.h - the offline lower bound on IOMMU calls for a workload. */
#ifndef RDM_REPLAY_LOWER_BOUND_H
#define RDM_REPLAY_LOWER_BOUND_H

#include <stdint.h>

#include "tools/replay/trace.h"

struct replay_lower_bound {
	uint64_t maps;
	uint64_t unmaps;
	uint64_t calls;          /* maps + unmaps */
	uint64_t peak_mappings;  /* of the optimal cut plan */
	uint64_t bytes_mapped;   /* every populated byte is mapped once */
	uint64_t bytes_unmapped; /* and unmapped once when discarded */
};

/*
 * The fewest map + unmap calls any strategy needs for the trace on a kernel
 * that cannot split a mapping (type1), with zero DMA windows (a populated
 * block is never unmapped) and no deferred reclaim (a discarded block is
 * unmapped before its discard completes), given the whole trace in advance.
 * Returns 0 or -ENOMEM.
 */
int replay_lower_bound(const struct replay_trace *t, struct replay_lower_bound *out);

#endif
