/* SPDX-License-Identifier: MIT */
/*
 * iommu/planner.h - turns one region's populates and discards into the
 * fewest map/unmap calls its backends' rules allow, under its map policy.
 *
 * One planner per region (worker-side). All backends the region is attached
 * to hold the same layout of mappings (the planner's maptree); every call is
 * executed on each of them. Only the worker thread calls these functions.
 *
 * Failure: every entry point is all-or-nothing. rdm_planner_populate() and
 * rdm_planner_attach() may fail (-ENOMEM, -ENOSPC, -EIO, a backend's error)
 * and then changed nothing (so may rdm_planner_compact(), see there);
 * rdm_planner_discard(), rdm_planner_flush(),
 * rdm_planner_detach() and rdm_planner_teardown() cannot fail and need no
 * allocation to stay correct (planner.c, "Allocation").
 */
#ifndef RDM_IOMMU_PLANNER_H
#define RDM_IOMMU_PLANNER_H

#include <stdbool.h>
#include <stdint.h>

#include <rdm/backend.h>
#include <rdm/worker.h>

#include "iommu/maptree.h"
#include "iommu/wbackend.h"

#define RDM_PLANNER_MAX_BACKENDS 8

struct rdm_range {
	uint64_t start, len; /* blocks */
	uint32_t flags;      /* populate pieces: RDM_LAYOUT_* of the new mapping */
};

struct rdm_range_vec {
	struct rdm_range *v;
	uint32_t n, cap;
};

/*
 * The payload of a layout mapping (the maptree's nodes are keyed in blocks
 * of the region). len - live blocks of it are discarded but still mapped
 * (deferred, or about to be unmapped within the current batch).
 */
struct rdm_layout {
	uint64_t live;  /* populated blocks in the mapping */
	uint64_t stamp; /* when its first block was deferred (defer policy);
			 * once the mapping is dead (in the dead list), the
			 * handle of the next dead mapping */
	uint32_t flags; /* RDM_LAYOUT_* (defer policy's learning) */
	/* Dead mappings only: the start of the layout's next mapping when
	 * this one died, or UINT64_MAX if none or not known (the flush's
	 * hole check, planner.c "Flush"). */
	uint64_t next_start;
};

enum {
	RDM_LAYOUT_EXPOSED = 1u << 1, /* cut coarse before any discard: counted in exposure_blocks */
	RDM_LAYOUT_FINE = 1u << 2,    /* a piece beyond the first of a cut run: counted in fine_mappings */
};

/* Cut levels the defer policy weighs: pieces of 2^0 .. 2^(N-1) units. */
#define RDM_PLANNER_LEVELS 24u

struct rdm_planner {
	struct rdm_region *region;
	struct rdm_maptree maps; /* the layout; payload struct rdm_layout */
	uint64_t block_size;
	uint64_t nblocks;
	uint64_t unit;        /* blocks per discard unit */
	uint64_t chunk;       /* blocks: no mapping crosses a multiple of this */
	/* log2 of block_size, unit and chunk (all powers of two): the hot
	 * paths shift where a 64-bit division costs ~4 ns. */
	unsigned block_shift, unit_shift, chunk_shift;
	uint64_t iova, vaddr;
	uint32_t policy;
	bool allow_windows;
	uint64_t defer_limit_blocks; /* 0 = none */
	uint64_t defer_stamp;        /* age counter for deferred mappings */

	/* Deferral budget (defer policy; planner.c, "Deferral budget"). */
	uint64_t budget_blocks;      /* UINT64_MAX: unbounded */
	bool over_budget;            /* deferred_blocks > budget_blocks now */
	unsigned max_cut;            /* log2 units of the chunk (< RDM_PLANNER_LEVELS) */
	unsigned cut;                /* log2 units: the cut the discards seen allow */
	bool evidence;               /* a discard has been seen */
	bool coarse_only;            /* planning a populate again, whole runs: the cut did not fit */
	uint64_t fine_mappings;      /* live RDM_LAYOUT_FINE mappings */
	uint64_t exposure_blocks;    /* what the live RDM_LAYOUT_EXPOSED mappings
				      * could defer at most (len - unit each) */
	/* Discard history, halved whenever seen_blocks passes window_blocks:
	 * the blocks discarded, and per cut level what it would have deferred
	 * and would still hold. */
	uint64_t window_blocks, seen_blocks;
	uint64_t would_defer[RDM_PLANNER_LEVELS]; /* blocks each discard would have deferred */
	uint64_t would_hold[RDM_PLANNER_LEVELS];  /* the same, less what later discards would have released */
	uint64_t would_peak[RDM_PLANNER_LEVELS];  /* the most would_hold has been (halved with the rest) */

	struct rdm_wbackend *be[RDM_PLANNER_MAX_BACKENDS];
	uint32_t nbe;

	/* Within the current batch: mappings whose every block was discarded,
	 * taken out of the layout but not yet unmapped (unlinked maptree
	 * nodes, listed through their stamp; 0 ends the list). Flushed -
	 * unmapped, then released - before any map call and at the end of
	 * every batch. */
	uint32_t dead_head, dead_tail;
	/* Set while a populate change is applied (rdm_planner_populate_begin):
	 * a discard told meanwhile is that change's rollback. */
	bool in_populate;
	/* rdm_planner_populate()'s scratch list of new mapping pieces. */
	struct rdm_range_vec pieces;
	/* Tests only: never take the fast path (planner.c,
	 * "Fast path"), so that both paths can be compared call by call.
	 * Set before the region's first change reaches the planner. */
	bool general_only;

	/* Accounting, shared with the worker's stats. */
	uint64_t deferred_blocks;
	uint64_t *stat_remapped_bytes;
	uint64_t *stat_deferred_bytes;
	uint64_t *stat_deferred_peak;
	uint64_t *stat_defer_exceeded;
	uint64_t *stat_budget_exceeded;
	uint64_t *stat_enospc;
	uint64_t *stat_failed_backends;
};

int rdm_planner_init(struct rdm_planner *p, struct rdm_region *r);
void rdm_planner_fini(struct rdm_planner *p);

/* Would the policy work with this backend added? 0 or -EINVAL with message. */
int rdm_planner_check_backend(const struct rdm_planner *p, const struct rdm_wbackend *wb);
/* The same for a region's first backend, before it has a planner: an
 * attach checks first, so a refusal builds (and frees) nothing. */
int rdm_planner_check_first_backend(struct rdm_region *r, const struct rdm_wbackend *wb);

/*
 * Populate blocks [start, start+len) (all of them change to populated).
 * 0, or an error with nothing changed: -ENOMEM (the planner's own memory,
 * message "out of memory ..."), -ENOSPC (the mapping limit), -EIO (a
 * backend is marked failed) or the error of a backend's MAP.
 */
int rdm_planner_populate(struct rdm_planner *p, uint64_t start, uint64_t len);
/* Discard blocks [start, start+len) (all of them were populated). Never
 * fails, needs no allocation. */
void rdm_planner_discard(struct rdm_planner *p, uint64_t start, uint64_t len);
/* Execute pending unmaps, then release what may be released. Never fails,
 * needs no allocation. */
void rdm_planner_flush(struct rdm_planner *p);
/* Between batches (after a flush, no handle held): give the layout's
 * memory back when it shrank to a quarter of its pool (rdm_maptree_trim()).
 * Never fails; without memory for the smaller pool it keeps the old one. */
void rdm_planner_trim(struct rdm_planner *p);

/*
 * Bracket the application of one populate change (rdm_region_apply of a
 * populate). A populate may reach the planner as several runs; when the
 * planner refuses a later run, the region tells it a discard of the runs it
 * accepted, and between begin and end every discard is such a rollback: it
 * puts the layout back exactly as it was (no split, no window, no ageing).
 */
void rdm_planner_populate_begin(struct rdm_planner *p);
void rdm_planner_populate_end(struct rdm_planner *p);

/* Attach: map the current populated state into wb; 0 or an error with
 * nothing changed (-EINVAL, -EIO, -ENOSPC, -ENOMEM, a backend's error).
 * Detach: unmap all from wb (-ENOENT if not attached; cannot fail otherwise). */
int rdm_planner_attach(struct rdm_planner *p, struct rdm_wbackend *wb);
int rdm_planner_detach(struct rdm_planner *p, struct rdm_wbackend *wb);
/* Destroy: unmap everything from every backend, release deferred blocks.
 * Never fails, needs no allocation. */
void rdm_planner_teardown(struct rdm_planner *p);

/*
 * Observability (worker thread only, like everything here; between batches
 * the layout is settled, within one the dead mappings are not shown).
 *
 * rdm_planner_for_each_mapping: the region's current mappings in ascending
 * IOVA order - one layout, the same in every backend the region is attached
 * to (none when it is attached to none): IOVA, length and host address, in
 * bytes. Stops at and returns the first non-zero return.
 *
 * rdm_planner_for_each_deferred: the deferred ranges - discarded blocks
 * still inside a mapping (not released: a device may still reach them) -
 * as maximal runs inside each mapping, ascending, as offset into the region
 * and length in bytes. Stops at and returns the first non-zero return.
 * rdm_planner_deferred_bytes: their total.
 */
typedef int (*rdm_planner_mapping_fn)(void *opaque, uint64_t iova, uint64_t length, uint64_t host_addr);
typedef int (*rdm_planner_range_fn)(void *opaque, uint64_t offset, uint64_t length);
int rdm_planner_for_each_mapping(const struct rdm_planner *p, rdm_planner_mapping_fn fn, void *opaque);
int rdm_planner_for_each_deferred(const struct rdm_planner *p, rdm_planner_range_fn fn, void *opaque);
uint64_t rdm_planner_deferred_bytes(const struct rdm_planner *p);

/*
 * Compaction (the caller guarantees that no device does DMA into the region):
 * every mapping holding deferred blocks is unmapped and its populated runs
 * mapped again, cut as a populate would cut them, in every backend; its
 * deferred blocks are released. Afterwards nothing is deferred.
 * 0 (also with nothing to do), or an error with nothing changed: -EIO (a
 * backend is marked failed, or an UNMAP failed twice and marked it), -ENOMEM,
 * -ENOSPC (the re-cut would exceed a backend's budget), or a backend's MAP
 * error (rolled back: the re-cut mappings are mapped whole again; a backend
 * where even that fails is marked failed). See planner.c, "Compaction".
 */
struct rdm_planner_compact_result {
	uint64_t mappings;       /* layout mappings re-cut */
	uint64_t new_mappings;   /* layout mappings that replaced them */
	uint64_t map_calls;      /* MAP calls issued, all backends */
	uint64_t unmap_calls;    /* UNMAP calls issued, all backends */
	uint64_t released_bytes; /* deferred bytes released */
	uint64_t remapped_bytes; /* populated bytes mapped again (per layout) */
};
int rdm_planner_compact(struct rdm_planner *p, struct rdm_planner_compact_result *res);

#endif /* RDM_IOMMU_PLANNER_H */
