/* SPDX-License-Identifier: MIT */
/*
 * iommu/planner.h - turns one region's populates and discards into the
 * fewest map/unmap calls its backends' rules allow, under its map policy.
 *
 * One planner per region (worker-side). All backends the region is attached
 * to hold the same layout of mappings (the planner's mapset); every call is
 * executed on each of them. Only the worker thread calls these functions.
 */
#ifndef RDM_IOMMU_PLANNER_H
#define RDM_IOMMU_PLANNER_H

#include <stdbool.h>
#include <stdint.h>

#include <rdm/backend.h>
#include <rdm/worker.h>

#include "iommu/mapset.h"

#define RDM_PLANNER_MAX_BACKENDS 8

/* A backend as the worker sees it: shared by every region attached to it. */
struct rdm_wbackend {
	struct rdm_backend *b;
	struct rdm_backend_caps caps;
	uint64_t budget;   /* most mappings rdm may hold in it */
	uint64_t used;     /* mappings rdm holds in it (all regions) */
	bool failed;       /* sticky: an unmap failed twice */
	char failed_why[160];
};

struct rdm_range {
	uint64_t start, len; /* blocks */
};

struct rdm_range_vec {
	struct rdm_range *v;
	uint32_t n, cap;
};

struct rdm_planner {
	struct rdm_region *region;
	struct rdm_mapset maps;
	uint64_t block_size;
	uint64_t nblocks;
	uint64_t unit;        /* blocks per discard unit */
	uint64_t chunk;       /* blocks: no mapping crosses a multiple of this */
	uint64_t iova, vaddr;
	uint32_t policy;
	bool allow_windows;
	uint64_t defer_limit_blocks; /* 0 = none */
	uint64_t defer_stamp;        /* age counter for deferred mappings */

	struct rdm_wbackend *be[RDM_PLANNER_MAX_BACKENDS];
	uint32_t nbe;

	/* Within the current batch: whole mappings to unmap, and block ranges
	 * to release once they are unmapped. Flushed before any map call and
	 * at the end of every batch. */
	struct rdm_range_vec pending_unmap;
	struct rdm_range_vec pending_release;
	/* Blocks a failed backend may still pin: never released. */
	struct rdm_range_vec leaked;
	/* rdm_planner_populate()'s scratch list of new mapping pieces. */
	struct rdm_range_vec pieces;

	/* Accounting, shared with the worker's stats. */
	uint64_t deferred_blocks;
	uint64_t *stat_remapped_bytes;
	uint64_t *stat_deferred_bytes;
	uint64_t *stat_deferred_peak;
	uint64_t *stat_defer_exceeded;
	uint64_t *stat_enospc;
	uint64_t *stat_failed_backends;
};

int rdm_planner_init(struct rdm_planner *p, struct rdm_region *r);
void rdm_planner_fini(struct rdm_planner *p);

/* Would the policy work with this backend added? 0 or -EINVAL with message. */
int rdm_planner_check_backend(const struct rdm_planner *p, const struct rdm_wbackend *wb);

/* Populate blocks [start, start+len) (all of them change to populated). */
int rdm_planner_populate(struct rdm_planner *p, uint64_t start, uint64_t len);
/* Discard blocks [start, start+len) (all of them were populated). Never fails. */
void rdm_planner_discard(struct rdm_planner *p, uint64_t start, uint64_t len);
/* Execute pending unmaps, then release what may be released. */
void rdm_planner_flush(struct rdm_planner *p);

/* Attach: map the current populated state into wb. Detach: unmap all from wb. */
int rdm_planner_attach(struct rdm_planner *p, struct rdm_wbackend *wb);
int rdm_planner_detach(struct rdm_planner *p, struct rdm_wbackend *wb);
/* Destroy: unmap everything from every backend, release deferred blocks. */
void rdm_planner_teardown(struct rdm_planner *p);

#endif /* RDM_IOMMU_PLANNER_H */
