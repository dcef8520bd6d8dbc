/* SPDX-License-Identifier: MIT */
/*
 * iommu/planner.c - map policies: how populated ranges are cut into IOMMU
 * mappings, and what a discard costs.
 *
 * Theory.
 *
 * The kernel (type1v2) never merges adjacent mappings, rejects a MAP that
 * overlaps a mapping and an UNMAP that bisects one, but accepts one UNMAP
 * over any number of whole mappings and holes. So the cut made at populate
 * time decides everything later: a discard that covers whole mappings is one
 * call; a discard inside a mapping either waits (defer), opens a DMA window
 * (coalesce: unmap the mapping, remap the survivors), or needs a
 * split-capable kernel. One mapping per discard unit (block policy, QEMU's
 * way) never needs any of that but costs one MAP per block.
 *
 * The traces of real Linux guests (data/traces) show the shape rdm plans for:
 * the virtio-mem driver plugs one 128 MiB memory block per request, unplugs
 * whole memory blocks when it can and falls back to 2 MiB subblocks from the
 * top of a block downwards; a guest_memfd conversion storm converts
 * size-aligned power-of-two ranges and converts back whole ones or aligned
 * pieces of them. Hence, for coalesce and defer:
 *
 *  - A populate's runs of blocks not already mapped become new mappings,
 *    never crossing a multiple of the region's chunk (128 MiB, or the
 *    discard unit if larger), so a whole-block unplug never bisects one.
 *    coalesce maps each such run whole; defer cuts it as its deferral
 *    budget allows (below).
 *  - defer: a discard inside a mapping still partly populated unmaps nothing
 *    and releases nothing; its blocks are "deferred". They are released when
 *    the last populated block of that mapping is discarded (one UNMAP of the
 *    whole mapping), or never if they are populated again first (the mapping
 *    still points at their memory, so no call at all). With defer_limit set
 *    and RDM_REGION_ALLOW_WINDOWS, the oldest deferred mappings are split
 *    (unmap, remap the populated runs, counted as remapped bytes) until the
 *    deferred bytes are under the limit; without windows an exceeded limit
 *    is only counted.
 *  - coalesce: a bisecting discard unmaps the mapping and remaps the
 *    survivors (a window, counted; a remap is retried once, and a second
 *    failure marks that backend failed), or, on a split-capable kernel,
 *    one UNMAP of exactly the discarded part (no window).
 *
 * Deferral budget (defer). Deferred memory is memory the guest gave back
 * and the host cannot have; without windows nothing can shrink it but the
 * guest (type1 cannot unmap part of a mapping, iommufd cannot split an
 * area), so the only lever is the cut made when a run is mapped: finer cuts
 * cost MAP calls (one per piece; the UNMAPs of adjacent whole pieces merge
 * into one call), coarser ones risk deferral. The region's defer_budget
 * (default 2% of the region) is the deferral the policy aims never to pass.
 * No online policy can both map exact guests at the lower bound from their
 * first plug and stay within a budget on guests whose unplugs leave islands:
 * up to their first unplug the two send the same requests (a 4 GiB plug of
 * fresh memory, say), and a coarse cut of it is pinned for good on the
 * second kind (measured: 6 of 8 GiB on the kernel-zone workload), a fine one
 * costs the first kind a MAP per block once. rdm takes the budget's side:
 *  1. Before the region has seen a discard, pieces are as coarse as the
 *     budget's room allows: each piece of L units could defer L - 1 of them
 *     (its "exposure"); the exposure of live mappings cut so, plus what is
 *     deferred, stays within the budget. So nothing mapped before the first
 *     discard can take the region past its budget.
 *  2. From the first discard on, the cut is learned. For every discard the
 *     planner works out what each cut level (pieces of 2^e units, aligned
 *     inside the chunk) would have deferred: an edge of the discard inside
 *     a piece that keeps a populated block defers the discarded part of
 *     that piece; an edge piece left empty releases what it held (two
 *     lookups in the region state per level, each level widening the last).
 *     Two estimates per level come of it, over the last region's worth of
 *     discarded blocks (halved past it: bounded state, old behaviour fades):
 *     the blocks it would have deferred (a rate) and those it would still
 *     hold (a level: deferrals less what later discards released), with the
 *     most the latter has been (halved with the rest). The cut is the
 *     coarsest level whose held peak stays within half the budget and whose
 *     deferring share stays within four times the budget's share of the
 *     region (a transient edge, released by the next discard, is not held;
 *     a permanent one is). The peak, not the level now: the budget bounds
 *     the peak, and a guest that walked its memory down a block at a time
 *     and then gave back the last block (or was reset) holds nothing at the
 *     end, but the next walk would hold as much again (sbm and reset with
 *     other seeds and busy shares: deferred peaks of 366-810 MiB on a 328
 *     MiB budget judged by the level now, 194-262 MiB by the peak; calls
 *     rose 0-27% where that happened, none on the shipped traces). A guest
 *     that unplugs whole memory blocks gets whole-block mappings again; one
 *     whose unplugs leave islands everywhere gets single units; conversions
 *     of aligned ranges get their size. As deferred memory fills the budget
 *     the learned cut shrinks, a level per halving of the budget's free
 *     share (none left: single units). When the cut grows, mappings of step
 *     1 at a level it allows stop counting as exposure.
 *  3. Every piece stays within the budget's room (budget - deferred -
 *     exposure): when deferred memory passes the budget anyway (a learned
 *     cut that the guest's next unplugs prove wrong), new mappings are single
 *     units until it is back under; the crossing is logged and counted
 *     (defer_budget_exceeded).
 *  4. The mapping limit comes first. If a backend could not hold the whole
 *     region a unit per mapping, fine cuts may add at most a sixteenth of
 *     its mapping budget (the rest stays for runs still to come, one
 *     mapping each at least); and a populate whose cut would not fit under
 *     the limit is planned again with whole runs. So the policy never makes
 *     a populate fail that whole runs would fit, and on a region too large
 *     to cut finely (a 1 TiB listener registration) step 1 yields to it.
 * The state is a few counters per cut level (at most RDM_PLANNER_LEVELS)
 * and a flag per mapping. rdm-replay --sweep shows the calls-vs-deferral
 * frontier this gives, per workload, against fixed cuts, QEMU's strategy
 * and the offline lower bound (README, "The frontier").
 *
 * Every call goes to every backend the region is attached to, so all of them
 * hold the same layout. Unmaps of whole mappings are queued during a batch
 * (the dead list) and flushed, merged into the fewest calls (adjacent whole
 * mappings and the holes between them inside the region, which hold no
 * other mapping), before any MAP and at the end of the batch; the releases
 * of their blocks follow the flush. Blocks that no mapping holds are
 * released at once.
 *
 * Flush. Whether a hole between two dead mappings holds a mapping is a
 * lookup, unless the dead mapping before it knows one started inside the
 * hole when it died (next_start: a fast-path discard of one mapping gets
 * its successor from the descent that unlinked it; ~1/15 of the worker's
 * time in bench pipeline, where every hole holds a live block, went to
 * those lookups). Not merging across a hole is always allowed - two calls
 * where one would do - so that answer may be stale without harm; a merge
 * still takes the lookup. Nor is it stale in fact: until the flush,
 * mappings leave the layout only to the dead list (a populate, a split, a
 * window's remap, attach, detach and compaction flush first), and one that
 * left a hole would sit in the list between the two.
 * tests/iommu/test_fastpath.c checks the calls against the general path,
 * which always looks up.
 *
 * Allocation. The planner allocates in two places only: its populate
 * scratch list (pieces) and the layout's nodes (rdm_maptree_reserve). The
 * rules that keep ENOMEM from breaking I1 or I2:
 *  - populate and attach (which may fail) reserve everything first: the
 *    pieces, then a node per piece. Only then do they flush and map, and
 *    they commit with calls that cannot fail. An ENOMEM returns before
 *    anything changed: no mapping, no accounting.
 *  - discard, flush, detach and teardown (which cannot fail) need no
 *    allocation: a mapping taken out of the layout is queued for its unmap
 *    in its own node (the dead list), releases are made from the dead list
 *    or at once, runs of the region state are read one at a time (no list),
 *    and leaving a mapping as it is (deferring its discarded blocks) is
 *    always correct. A split - coalesce's bisecting discard, defer's limit -
 *    is an optimisation: it reserves its nodes first and, if it cannot, the
 *    discard defers instead (counted like a split the mapping limit stops).
 *  - the region's pins (blocks a failed backend may still map; rdm_region_pin
 *    in core/region_internal.h) grow only on a backend failure; if they
 *    cannot grow, the region stops releasing anything (memory lost, never
 *    memory still mapped released).
 *  - a populate that reaches the planner as several runs and fails on a
 *    later one is rolled back by discards of the earlier runs; between
 *    rdm_planner_populate_begin() and _end() such a discard restores the
 *    layout exactly (the reused blocks deferred again, no split), so a
 *    refused populate leaves the mappings as they were (region.h).
 *
 * Fast path. One mapping per unit makes the general code pay per block
 * what it is built to pay per mapping: a scratch list entry and a cut per
 * piece, and at discard a tree walk, an unlink and a dead-list entry per
 * mapping, then a lookup per dead mapping at the flush (~32k instructions
 * per 128 MiB request of 2 MiB blocks, against ~14k for QEMU's direct path
 * making the same sim calls). The block policy always cuts so; the others
 * do where their cut gives single units. Two shortcuts take those cases
 * with the same calls, in the same order, the same layout (flags, live
 * counts, ages) and the same accounts:
 *  - populate of a range no mapping reaches, whose pieces are the units it
 *    touches (under the block policy no lookup asks: a mapping there is
 *    one unit, unit-aligned, and lives exactly as long as its blocks are
 *    populated - a discard takes it out of the tree at once, to the dead
 *    list - and a populate's blocks are all unpopulated, region.h; should
 *    that ever break, the backend's MAP refuses the overlap and the
 *    populate fails whole): counted, reserved, checked against the limit, flushed,
 *    mapped and rolled back exactly as map_pieces() would, and inserted in
 *    one rdm_maptree_insert_run() per run of like pieces. That the pieces
 *    are single units is cut_run's rule for the block policy; for the
 *    others cuts_to_units() proves it, for unit-aligned ranges (every
 *    change is: region.c refuses one that breaks a discard unit; the chunk
 *    is a power-of-two multiple of the unit, so unit-aligned pieces never
 *    straddle a chunk):
 *      a single unit is one piece under any policy (it lies in one chunk;
 *      a cut or a room of one unit or more keeps it whole);
 *      coalesce cuts at chunks only: units when the chunk is one unit;
 *      defer, when no backend is full for n pieces (else the general path
 *      plans again with whole runs) and n <= spare_fine() (then the cut is
 *      never coarsened for the mapping limit, and the room's clamp always
 *      applies): units when the chunk is one unit (max_cut 0), when the
 *      room is one unit (budget_room(p, 0) == 1: single-unit pieces add
 *      nothing to `planned`, so it stays one), or when the cut is 0 - the
 *      learned one scaled by the free share of the budget, or max_cut
 *      before any discard. Its pieces are RDM_LAYOUT_FINE except the first
 *      of each chunk segment (fine_mappings counts them); none is EXPOSED
 *      (only pieces longer than a unit are); nothing is reused (no mapping
 *      reaches the range), so the deferred count does not move.
 *  - discard of a range whose first mapping starts at its start and whose
 *    last one ends at its end: every block of the range is populated (the
 *    caller's contract), so by invariant 1 the mappings tile it and every
 *    one dies whole, with live == len: the general path's per-mapping step
 *    is kill_mapping() and a zero update of the deferred count (a no-op).
 *    Under the block policy any such mappings qualify; under the others
 *    only if every one is a single unit and not EXPOSED (checked during the
 *    removal, which otherwise leaves the tree as it was), so that leave()
 *    only drops RDM_LAYOUT_FINE: fine_mappings loses the count of them.
 *    The first one leaves the tree in the descent that finds it
 *    (rdm_maptree_unlink_start: a block's discard is one descent, where a
 *    lookup and an unlink made two, ~1/5 of the worker's time in bench
 *    pipeline, each descent of a tree larger than L2 missing the cache a
 *    few levels deep) and goes back if the range does not qualify; the
 *    others leave in one split and join
 *    (rdm_maptree_remove_starts_in_if); the first one's node, widened to
 *    the whole range, is the one dead-list entry. The flush merges adjacent
 *    dead mappings into one UNMAP and one release anyway, so one entry for
 *    k adjacent ones makes the same calls. Then, as in the general path,
 *    defer learns from the discard and enforces its limit (not during a
 *    populate's rollback).
 * Under the block policy the layout itself is in dense mode (maptree.h,
 * rdm_planner_init()): the same calls answer from an index by unit, with
 * no descent at all, where the treap's insert and unlink cost ~40 ns a
 * change in bench pipeline (two descents of ~20 unpredictable branches).
 * Anything else (an edge inside a mapping, mappings already there, coarser
 * cuts) takes the general path. tests/iommu/test_fastpath.c replays random
 * changes under every policy with and without the fast path (general_only)
 * and compares every backend call, release and mapping, the worker's
 * stats and the planner's accounts.
 *
 * Compaction (rdm_planner_compact, at the end of this file) is the escape
 * from deferral when the caller guarantees no DMA: see its own block there.
 *
 * Invariants (after every flush):
 *  1. Every populated block is inside exactly one mapping of the layout, and
 *     each mapping is mapped in every attached, non-failed backend to the
 *     region's host memory (I1).
 *  2. A released block is in no mapping of any backend (I2); blocks whose
 *     unmap failed are pinned in the region (rdm_region_pin) and never
 *     released, by this planner or by anyone applying the region later.
 *  3. No call bisects a mapping unless every backend can split; no MAP
 *     overlaps a mapping (I4); each backend's `used` never exceeds `budget`.
 *  4. deferred_blocks = sum over mappings of (len - live).
 *  5. Within a batch, every backend holds exactly the layout plus the dead
 *     list; no dead mapping holds a populated block.
 */
#include "core/alloc.h"
#include "iommu/planner.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "iommu/backend.h"
#include "core/region_internal.h"


#define CHUNK_BYTES (128ull << 20)
/* Entries of the populate scratch list kept between populates, at most. */
#define PIECES_KEEP 256u

static int vec_push(struct rdm_range_vec *v, uint64_t start, uint64_t len)
{
	if (v->n == v->cap) {
		uint32_t cap = v->cap ? v->cap * 2 : 16;
		struct rdm_range *nv = rdm_reallocarray(v->v, cap, sizeof(*nv));

		if (!nv)
			return -ENOMEM;
		v->v = nv;
		v->cap = cap;
	}
	v->v[v->n].start = start;
	v->v[v->n].len = len;
	v->v[v->n].flags = 0;
	v->n++;
	return 0;
}

static void vec_free(struct rdm_range_vec *v)
{
	rdm_free(v->v);
	memset(v, 0, sizeof(*v));
}

static unsigned log2_floor(uint64_t v)
{
	return 63u - (unsigned)__builtin_clzll(v);
}

static struct rdm_maptree_node *node(const struct rdm_planner *p, uint32_t h)
{
	return rdm_maptree_node(&p->maps, h);
}

static struct rdm_layout *layout(const struct rdm_planner *p, uint32_t h)
{
	return rdm_maptree_payload(&p->maps, h);
}

static uint64_t end_of(const struct rdm_planner *p, uint32_t h)
{
	return node(p, h)->start + node(p, h)->len; /* blocks: never wraps */
}

int rdm_planner_init(struct rdm_planner *p, struct rdm_region *r)
{
	const struct rdm_region_config *cfg = rdm_region_cfg(r);

	memset(p, 0, sizeof(*p));
	p->region = r;
	rdm_maptree_init(&p->maps, sizeof(struct rdm_layout));
	p->block_size = cfg->block_size;
	p->nblocks = cfg->size / cfg->block_size;
	p->unit = cfg->discard_unit ? cfg->discard_unit / cfg->block_size : 1;
	p->chunk = CHUNK_BYTES / cfg->block_size;
	if (p->chunk < p->unit)
		p->chunk = p->unit;
	if (p->chunk == 0)
		p->chunk = 1;
	p->iova = cfg->iova;
	p->vaddr = (uint64_t)(uintptr_t)cfg->host_addr;
	p->policy = cfg->policy;
	p->allow_windows = (cfg->flags & RDM_REGION_ALLOW_WINDOWS) != 0;
	p->defer_limit_blocks = cfg->defer_limit ? (cfg->defer_limit + cfg->block_size - 1) / cfg->block_size : 0;
	p->budget_blocks = cfg->defer_budget == RDM_DEFER_BUDGET_NONE ? UINT64_MAX : cfg->defer_budget / cfg->block_size;
	p->block_shift = log2_floor(p->block_size);
	p->unit_shift = log2_floor(p->unit);
	p->chunk_shift = log2_floor(p->chunk);
	p->max_cut = log2_floor(p->chunk / p->unit);
	if (p->max_cut >= RDM_PLANNER_LEVELS)
		p->max_cut = RDM_PLANNER_LEVELS - 1;
	p->cut = 0; /* nothing learned: cut_run goes by the exposure room */
	/* The block policy's layout is one mapping per unit: indexed by unit
	 * instead of searched (maptree.h, dense mode). Without the memory, or
	 * past RDM_MAPTREE_DENSE_MAX units, it stays a treap (the same
	 * answers, slower). */
	if (p->policy == RDM_POLICY_BLOCK)
		(void)rdm_maptree_make_dense(&p->maps, p->unit_shift, (p->nblocks + p->unit - 1) >> p->unit_shift);
	p->window_blocks = p->nblocks > p->chunk ? p->nblocks : p->chunk;
	return 0;
}

void rdm_planner_fini(struct rdm_planner *p)
{
	rdm_maptree_fini(&p->maps);
	p->dead_head = p->dead_tail = 0;
	vec_free(&p->pieces);
}

static bool all_can_split(const struct rdm_planner *p)
{
	for (uint32_t i = 0; i < p->nbe; i++)
		if (!p->be[i]->caps.can_split)
			return false;
	return p->nbe > 0;
}

static int check_backend(uint32_t policy, bool allow_windows, uint32_t nbe, const struct rdm_wbackend *wb)
{
	if (policy == RDM_POLICY_COALESCE && !allow_windows && !wb->caps.can_split)
		return rdm_fail(-EINVAL,
				"policy coalesce needs RDM_REGION_ALLOW_WINDOWS or a split-capable backend; %s cannot split",
				rdm_backend_name(wb->b));
	if (nbe == RDM_PLANNER_MAX_BACKENDS)
		return rdm_fail(-EINVAL, "a region can be attached to at most %d backends",
				RDM_PLANNER_MAX_BACKENDS);
	return 0;
}

int rdm_planner_check_backend(const struct rdm_planner *p, const struct rdm_wbackend *wb)
{
	return check_backend(p->policy, p->allow_windows, p->nbe, wb);
}

int rdm_planner_check_first_backend(struct rdm_region *r, const struct rdm_wbackend *wb)
{
	const struct rdm_region_config *cfg = rdm_region_cfg(r);

	return check_backend(cfg->policy, (cfg->flags & RDM_REGION_ALLOW_WINDOWS) != 0, 0, wb);
}

static void update_deferred_stats(struct rdm_planner *p, int64_t delta_blocks)
{
	p->deferred_blocks = (uint64_t)((int64_t)p->deferred_blocks + delta_blocks);
	for (uint32_t i = 0; i < p->nbe && delta_blocks; i++)
		rdm_backend_note_deferred(p->be[i]->b, delta_blocks * (int64_t)p->block_size);
	*p->stat_deferred_bytes = (uint64_t)((int64_t)*p->stat_deferred_bytes + delta_blocks * (int64_t)p->block_size);
	if (*p->stat_deferred_bytes > *p->stat_deferred_peak)
		*p->stat_deferred_peak = *p->stat_deferred_bytes;
	if (p->budget_blocks == UINT64_MAX || (p->deferred_blocks > p->budget_blocks) == p->over_budget)
		return;
	p->over_budget = !p->over_budget;
	if (p->over_budget) {
		(*p->stat_budget_exceeded)++;
		rdm_log(RDM_LOG_WARNING,
			"region at iova 0x%" PRIx64 ": deferred memory 0x%" PRIx64 " passed its budget of 0x%" PRIx64
			" bytes; new mappings are cut to single discard units until it is back under",
			p->iova, p->deferred_blocks * p->block_size, p->budget_blocks * p->block_size);
	}
}

static uint64_t iova_of(const struct rdm_planner *p, uint64_t blk)
{
	return p->iova + blk * p->block_size;
}

static uint64_t vaddr_of(const struct rdm_planner *p, uint64_t blk)
{
	return p->vaddr + blk * p->block_size;
}

static void mark_failed(struct rdm_planner *p, struct rdm_wbackend *wb, int err, uint64_t start, uint64_t len)
{
	if (!wb->failed) {
		wb->failed = true;
		(*p->stat_failed_backends)++;
		snprintf(wb->failed_why, sizeof(wb->failed_why),
			 "unmap of iova 0x%" PRIx64 "+0x%" PRIx64 " failed twice (%s)", iova_of(p, start),
			 len * p->block_size, strerror(-err));
		rdm_log(RDM_LOG_ERROR, "backend %s marked failed: %s", rdm_backend_name(wb->b), wb->failed_why);
	}
}

/* Remember blocks a failed backend may still pin, in the region: the record
 * outlives this planner (a first attach undone, a later applier). */
static void note_leaked(struct rdm_planner *p, uint64_t start, uint64_t len)
{
	rdm_region_pin(p->region, start * p->block_size, len * p->block_size);
}

/* One UNMAP of blocks [start, start+len) from one backend, retried once; on
 * a second failure mark the backend failed and pin [ms, me), which it may
 * still map. */
static int unmap_call(struct rdm_planner *p, struct rdm_wbackend *wb, uint64_t start, uint64_t len, uint64_t ms,
		      uint64_t me)
{
	uint64_t done = 0;
	int err;

	/* Readers see a discard before its unmap (DESIGN.md "Visibility"). */
	rdm_region_publish_discards(p->region);
	err = rdm_backend_unmap(wb->b, iova_of(p, start), len * p->block_size, &done);

	if (err)
		err = rdm_backend_unmap(wb->b, iova_of(p, start), len * p->block_size, &done);
	if (err) {
		mark_failed(p, wb, err, start, len);
		note_leaked(p, ms, me - ms);
	}
	return err;
}

/*
 * Unmap blocks [start, start+len), part of the layout's mapping [ms, me),
 * from one backend. When that fails, the backend still maps all of
 * [ms, me): a failed unmap of a middle piece (a split) leaves the whole
 * mapping there while the layout goes on with the pieces, so the pin
 * covers the mapping, not the piece.
 *
 * A failed backend's mappings are therefore the layout's outside the
 * pinned ranges (or fewer, where a window's remap failed), and unknown
 * inside them. A split-capable failed backend gets no unmap inside a
 * pinned range: one of a piece would bisect the mapping it really holds
 * there and add a mapping (rdm/worker.h "Failed backends": no call that
 * could add one goes to it); what it keeps mapped there is pinned, never
 * released. The parts of the range outside the
 * pins are whole mappings there and are unmapped as usual (their blocks
 * are released after). Other backends are not affected: without splits an
 * unmap never adds a mapping.
 */
static int unmap_piece(struct rdm_planner *p, struct rdm_wbackend *wb, uint64_t start, uint64_t len, uint64_t ms,
		       uint64_t me)
{
	uint64_t bs = p->block_size, off = start * bs, end = (start + len) * bs, a, z;
	int err = 0;

	if (!wb->failed || !wb->caps.can_split || !rdm_region_any_pinned(p->region))
		return unmap_call(p, wb, start, len, ms, me);
	for (; rdm_region_next_unpinned(p->region, off, end, &a, &z); off = z) {
		int e = unmap_call(p, wb, a / bs, (z - a) / bs, a / bs, z / bs);

		if (!err)
			err = e;
	}
	return err;
}

/* The same for an unmap of whole mappings of the layout. */
static int unmap_one(struct rdm_planner *p, struct rdm_wbackend *wb, uint64_t start, uint64_t len)
{
	return unmap_piece(p, wb, start, len, start, start + len);
}

static void unmap_all_backends(struct rdm_planner *p, uint64_t start, uint64_t len)
{
	for (uint32_t i = 0; i < p->nbe; i++)
		unmap_one(p, p->be[i], start, len);
}

/* Does any mapping of the layout intersect [a, b)? */
static bool has_mapping_in(const struct rdm_planner *p, uint64_t a, uint64_t b)
{
	uint32_t m = rdm_maptree_first_ending_after(&p->maps, a);

	return m && node(p, m)->start < b;
}

/* Release blocks that are discarded and unmapped from every backend (never
 * a pinned one: rdm_region_release skips those). */
static void release_range(struct rdm_planner *p, uint64_t start, uint64_t len)
{
	rdm_region_release(p->region, start * p->block_size, len * p->block_size);
}

/* The first run of blocks in `populated` state inside [a, b), read from the
 * region state (the applier's view) one run at a time: no list, and no
 * backend call or release inside the region's read-side section. */
struct run_ctx {
	uint64_t off, len;
};

static int first_run_cb(void *opaque, uint64_t offset, uint64_t length)
{
	struct run_ctx *c = opaque;

	c->off = offset;
	c->len = length;
	return -ECANCELED; /* stop: a negative return ends the walk */
}

static bool next_run(const struct rdm_planner *p, uint64_t a, uint64_t b, bool populated, uint64_t *rs,
		     uint64_t *re)
{
	struct run_ctx c = { 0, 0 };

	if (a >= b)
		return false;
	rdm_region_applier_runs(p->region, a * p->block_size, (b - a) * p->block_size, populated, first_run_cb, &c);
	if (c.len == 0)
		return false;
	*rs = c.off / p->block_size;
	*re = *rs + c.len / p->block_size;
	return true;
}

static int count_run(void *opaque, uint64_t offset, uint64_t length)
{
	(void)offset;
	*(uint64_t *)opaque += length;
	return 0;
}

/* Populated blocks inside [a, b). */
static uint64_t populated_blocks(struct rdm_planner *p, uint64_t a, uint64_t b)
{
	uint64_t bytes = 0;

	rdm_region_applier_runs(p->region, a * p->block_size, (b - a) * p->block_size, true, count_run, &bytes);
	return bytes / p->block_size;
}

/* ---------------------------------------------------------------- flush */

/* Sort the dead list by start (merge sort of a list: no allocation). A
 * batch's discards usually arrive ascending, and then it is one pass. */
static uint32_t dead_next(const struct rdm_planner *p, uint32_t h)
{
	return (uint32_t)layout(p, h)->stamp;
}

static void set_dead_next(struct rdm_planner *p, uint32_t h, uint32_t next)
{
	layout(p, h)->stamp = next;
}

/* Dead lists up to this long are sorted in an array on the stack (two of
 * 8 KiB: the keys and the merge's other half) instead of as a list. */
#define SORT_DEAD_ARRAY 512u

struct dead_key {
	uint64_t start;
	uint32_t h;
};

/* Insertion-sorted chunks of the array sort, before they are merged. */
#define SORT_DEAD_CHUNK 32u

/* v[0..n) by start: binary insertion into place. */
static void insert_sort_keys(struct dead_key *v, uint32_t n)
{
	for (uint32_t i = 1; i < n; i++) {
		struct dead_key k = v[i];
		uint32_t lo = 0, hi = i;

		while (lo < hi) {
			uint32_t mid = (lo + hi) / 2;

			if (v[mid].start < k.start)
				lo = mid + 1;
			else
				hi = mid;
		}
		memmove(&v[lo + 1], &v[lo], (i - lo) * sizeof(v[0]));
		v[lo] = k;
	}
}

/*
 * An unsorted list of at most SORT_DEAD_ARRAY (a batch of discards in
 * scattered order; sort_dead() has counted it) is read once into an array
 * of (start, handle), sorted there and linked again: each node is touched
 * twice, where the merge sort below walks its list again at every level
 * (~530 instructions per discard in bench pipeline-scattered, nodes missing
 * the cache). Longer lists use that merge sort, which needs no memory.
 * The array is sorted by binary insertion in chunks of SORT_DEAD_CHUNK,
 * then merged: a batch's dead list is one producer's discards (in any
 * order, mostly a few dozen: the insertion alone) or several producers'
 * interleaved (~280 at 4 producers, where insertion alone moved O(n^2)
 * keys). rdm-bench pipeline/rdm/producers:4 under callgrind: sort_dead
 * 46.5M instructions with insertion alone, 37.0M now; the scattered order
 * with one producer (lists of ~16-32) 12.29M and 12.33M.
 */
static uint32_t sort_dead_array(struct rdm_planner *p, uint32_t head, uint32_t n)
{
	struct dead_key v[SORT_DEAD_ARRAY], tmp[SORT_DEAD_ARRAY], *src = v, *dst = tmp;
	uint32_t i = 0;

	for (uint32_t h = head; h; h = dead_next(p, h))
		v[i++] = (struct dead_key){ node(p, h)->start, h };
	for (i = 0; i < n; i += SORT_DEAD_CHUNK)
		insert_sort_keys(&v[i], n - i < SORT_DEAD_CHUNK ? n - i : SORT_DEAD_CHUNK);
	for (uint32_t w = SORT_DEAD_CHUNK; w < n; w *= 2) {
		for (uint32_t lo = 0; lo < n; lo += 2 * w) {
			uint32_t a = lo, am = lo + w < n ? lo + w : n, b = am, bm = lo + 2 * w < n ? lo + 2 * w : n;
			uint32_t o = lo;

			while (a < am && b < bm)
				dst[o++] = src[b].start < src[a].start ? src[b++] : src[a++];
			while (a < am)
				dst[o++] = src[a++];
			while (b < bm)
				dst[o++] = src[b++];
		}
		struct dead_key *t = src;

		src = dst;
		dst = t;
	}
	for (i = 0; i + 1 < n; i++)
		set_dead_next(p, src[i].h, src[i + 1].h);
	set_dead_next(p, src[n - 1].h, 0);
	return src[0].h;
}

static uint32_t sort_dead(struct rdm_planner *p, uint32_t head)
{
	bool sorted = true;
	uint32_t n = head != 0;

	/* One walk: whether it is sorted, and its length. */
	for (uint32_t h = head; h && dead_next(p, h); h = dead_next(p, h), n++)
		sorted &= node(p, h)->start < node(p, dead_next(p, h))->start;
	if (sorted)
		return head;
	if (n <= SORT_DEAD_ARRAY)
		return sort_dead_array(p, head, n);
	/* Split in halves, sort each, merge. */
	uint32_t mid = head;

	for (uint32_t i = 1; i < n / 2; i++)
		mid = dead_next(p, mid);
	uint32_t b = dead_next(p, mid);

	set_dead_next(p, mid, 0);
	uint32_t a = sort_dead(p, head);

	b = sort_dead(p, b);
	uint32_t out = 0, tail = 0;

	while (a || b) {
		uint32_t take;

		if (!b || (a && node(p, a)->start < node(p, b)->start)) {
			take = a;
			a = dead_next(p, a);
		} else {
			take = b;
			b = dead_next(p, b);
		}
		if (tail)
			set_dead_next(p, tail, take);
		else
			out = take;
		tail = take;
	}
	set_dead_next(p, tail, 0);
	return out;
}

void rdm_planner_flush(struct rdm_planner *p)
{
	uint32_t head = p->dead_head;

	if (!head)
		return;
	p->dead_head = p->dead_tail = 0;
	head = sort_dead(p, head);

	/* Unmap: adjacent dead mappings, and those with a hole holding no
	 * mapping between them, in one call. `after`: the next_start of the
	 * dead mapping that ends at ce. */
	uint64_t cs = node(p, head)->start, ce = end_of(p, head), after = layout(p, head)->next_start;

	for (uint32_t h = dead_next(p, head);; h = dead_next(p, h)) {
		/* Adjacent: no hole to look into. A mapping that started in the
		 * hole when the last one died: no lookup either. */
		if (h && (node(p, h)->start == ce ||
			  (after >= node(p, h)->start && !has_mapping_in(p, ce, node(p, h)->start)))) {
			ce = end_of(p, h);
			after = layout(p, h)->next_start;
			continue;
		}
		unmap_all_backends(p, cs, ce - cs);
		if (!h)
			break;
		cs = node(p, h)->start;
		ce = end_of(p, h);
		after = layout(p, h)->next_start;
	}
	/* Release: every block of a dead mapping is discarded. */
	cs = node(p, head)->start;
	ce = cs;
	for (uint32_t h = head, next; h; h = next) {
		next = dead_next(p, h);
		if (node(p, h)->start != ce) {
			if (ce > cs)
				release_range(p, cs, ce - cs);
			cs = node(p, h)->start;
		}
		ce = end_of(p, h);
		rdm_maptree_free(&p->maps, h);
	}
	if (ce > cs)
		release_range(p, cs, ce - cs);
}

void rdm_planner_trim(struct rdm_planner *p)
{
	/* Dead mappings are unlinked nodes listed by handle: only once they
	 * are flushed may the nodes move. */
	if (!p->dead_head)
		rdm_maptree_trim(&p->maps);
}

/* What mapping m could defer is no longer exposure. */
static void unexpose(struct rdm_planner *p, uint32_t m)
{
	if (layout(p, m)->flags & RDM_LAYOUT_EXPOSED) {
		layout(p, m)->flags &= ~(uint32_t)RDM_LAYOUT_EXPOSED;
		p->exposure_blocks -= node(p, m)->len - p->unit;
	}
}

/* Mapping m leaves the layout (dies, or is split): out of the policy's
 * accounts. */
static void leave(struct rdm_planner *p, uint32_t m)
{
	unexpose(p, m);
	if (layout(p, m)->flags & RDM_LAYOUT_FINE) {
		layout(p, m)->flags &= ~(uint32_t)RDM_LAYOUT_FINE;
		p->fine_mappings--;
	}
}

/* Take mapping m, whose every block is now discarded, out of the layout; it
 * is unmapped and released at the next flush. */
static void kill_mapping(struct rdm_planner *p, uint32_t m)
{
	leave(p, m);
	rdm_maptree_unlink(&p->maps, m);
	layout(p, m)->next_start = UINT64_MAX;
	set_dead_next(p, m, 0);
	if (p->dead_tail)
		set_dead_next(p, p->dead_tail, m);
	else
		p->dead_head = m;
	p->dead_tail = m;
	for (uint32_t i = 0; i < p->nbe; i++)
		p->be[i]->used--;
}

/* ------------------------------------------------------------- populate */

/* The longest piece the budget's room allows now, in units: a new mapping
 * never risks more than what is left of the budget (minus what mappings
 * made before any evidence could still defer, and `planned`, the same for
 * the pieces of this populate so far); past it, one unit (a mapping of one
 * unit can defer nothing). */
static uint64_t budget_room(const struct rdm_planner *p, uint64_t planned)
{
	uint64_t used = p->deferred_blocks + p->exposure_blocks + planned;

	if (p->budget_blocks == UINT64_MAX)
		return UINT64_MAX;
	if (used >= p->budget_blocks)
		return 1;
	return (p->budget_blocks - used) / p->unit > 1 ? (p->budget_blocks - used) / p->unit : 1;
}

static uint64_t headroom(const struct rdm_planner *p);

/* The learned cut as the budget fills: pieces half as long for every
 * halving of the budget's free share (a piece's expected deferral grows
 * with its length, so the length follows what is left to defer into); none
 * left, single units. A linear scale of the level instead (level * free
 * share) threw away a level at a third of the budget used and cost 2-17%
 * more calls on sbm, reset, storm and kzone at the same peaks. */
static unsigned learned_cut(const struct rdm_planner *p)
{
	uint64_t free;
	unsigned cut = p->cut;

	if (p->budget_blocks == UINT64_MAX)
		return cut;
	if (p->deferred_blocks >= p->budget_blocks)
		return 0;
	free = p->budget_blocks - p->deferred_blocks;
	while (cut > 0 && free * 2 <= p->budget_blocks) {
		cut--;
		free *= 2;
	}
	return cut;
}

/* Extra mappings (pieces beyond one per run) this populate may add before
 * the policy must cut coarser. A backend that could hold the whole region a
 * unit per mapping besides what it holds sets no bound; otherwise the
 * region's extra mappings stay within a sixteenth of its mapping budget and
 * never take it past half, so the rest stays for the runs still to come
 * (one mapping each at the least) and no populate is refused for the
 * policy's sake. */
static uint64_t spare_fine(const struct rdm_planner *p)
{
	uint64_t spare = UINT64_MAX;

	for (uint32_t i = 0; i < p->nbe; i++) {
		const struct rdm_wbackend *wb = p->be[i];
		uint64_t sixteenth = wb->budget / 16, half = wb->budget / 2, left;

		if (wb->used + p->nblocks / p->unit + headroom(p) <= wb->budget)
			continue;
		left = sixteenth > p->fine_mappings ? sixteenth - p->fine_mappings : 0;
		if (half < wb->used + left)
			left = half > wb->used ? half - wb->used : 0;
		if (left < spare)
			spare = left;
	}
	return spare;
}

/* Cut the unmapped run [a, b) into mapping pieces per policy. */
/* What a plan's pieces so far add up to (cut_run() keeps it with the
 * pieces: summing them again for every run made a plan of n runs cost n^2,
 * seconds for an attach to a fragmented region). Zero it with pieces.n. */
struct cut_acc {
	uint64_t planned; /* blocks the pieces map beyond one unit each */
	uint64_t fine;    /* pieces beyond their run's first */
};

static int cut_run(const struct rdm_planner *p, uint64_t a, uint64_t b, struct rdm_range_vec *out,
		   struct cut_acc *acc)
{
	uint64_t step = p->policy == RDM_POLICY_BLOCK ? p->unit : p->chunk;
	uint64_t planned = acc->planned, fine = acc->fine;
	/* Fixed while a populate is planned: the layout does not change. */
	uint64_t spare = p->policy == RDM_POLICY_DEFER && !p->coarse_only ? spare_fine(p) : 0;
	uint32_t n0 = out->n;
	int err = 0;

	while (a < b) {
		uint64_t next = (a / step + 1) * step, seg = a;

		if (next > b)
			next = b;
		if (p->policy != RDM_POLICY_DEFER || p->coarse_only) {
			if (vec_push(out, a, next - a)) {
				err = -ENOMEM;
				break;
			}
			a = next;
			continue;
		}
		/* Deferral budget: the learned cut, never past the budget's
		 * room; before any discard, only as coarse as the room for what
		 * it could defer. Decided piece by piece: each one takes from
		 * the room. */
		while (a < next) {
			/* The learned cut: pieces aligned to 2^cut units. */
			unsigned cut = p->evidence ? p->cut : p->max_cut;
			uint64_t g, e, room;

			if (p->evidence)
				cut = learned_cut(p);
			/* Never so fine that the backends run out of mappings. */
			while (cut < p->max_cut && fine + (next - a) / (p->unit << cut) > spare)
				cut++;
			g = p->unit << cut;
			e = (a / g + 1) * g;
			if (e > next)
				e = next;
			/* The budget's room: a length, not an alignment. */
			room = budget_room(p, p->evidence ? 0 : planned);
			if (room != UINT64_MAX && (e - a) / p->unit > room && fine + (next - a) / p->unit <= spare)
				e = a + room * p->unit;
			if (vec_push(out, a, e - a)) {
				err = -ENOMEM;
				break;
			}
			if (a > seg) { /* a piece beyond the run's first: an extra mapping */
				out->v[out->n - 1].flags = RDM_LAYOUT_FINE;
				fine++;
			}
			planned += e - a - p->unit;
			a = e;
		}
		if (err)
			break;
	}
	/* The pieces this call pushed, counted once (all policies). */
	for (uint32_t i = n0; i < out->n; i++) {
		acc->planned += out->v[i].len - p->unit;
		acc->fine += (out->v[i].flags & RDM_LAYOUT_FINE) != 0;
	}
	return err;
}

static uint64_t headroom(const struct rdm_planner *p)
{
	/* Policies that may split keep room for the split a discard may need:
	 * it bisects at most two mappings, each split adds at most one. */
	return p->policy == RDM_POLICY_BLOCK ? 0 : 2;
}

/* The first backend that cannot take `extra` more mappings, or NULL. */
static struct rdm_wbackend *full_backend(const struct rdm_planner *p, uint64_t extra)
{
	for (uint32_t i = 0; i < p->nbe; i++)
		if (p->be[i]->used + extra + headroom(p) > p->be[i]->budget)
			return p->be[i];
	return NULL;
}

static __attribute__((noinline, cold)) int limit_fail(struct rdm_planner *p, struct rdm_wbackend *wb, uint64_t extra)
{
	(*p->stat_enospc)++;
	return rdm_fail(-ENOSPC,
			"mapping limit: backend %s would need %" PRIu64 " more mappings (+%" PRIu64
			" headroom) but holds %" PRIu64 " of its limit of %" PRIu64,
			rdm_backend_name(wb->b), extra, headroom(p), wb->used, wb->budget);
}

/* Asked before every map (each populate): the check inline, the message
 * out of line. */
static inline int check_limit(struct rdm_planner *p, uint64_t extra)
{
	struct rdm_wbackend *wb = full_backend(p, extra);

	return wb ? limit_fail(p, wb, extra) : 0;
}

/* Map pieces into every backend; on failure undo and return the error. */
static int map_pieces(struct rdm_planner *p, const struct rdm_range_vec *pieces, struct rdm_wbackend *const *bes,
		      uint32_t nbe)
{
	for (uint32_t i = 0; i < pieces->n; i++) {
		const struct rdm_range *pc = &pieces->v[i];

		for (uint32_t j = 0; j < nbe; j++) {
			int err = rdm_backend_map(bes[j]->b, iova_of(p, pc->start), pc->len * p->block_size,
						  vaddr_of(p, pc->start));
			if (err == 0) {
				bes[j]->used++;
				continue;
			}
			/* Roll back: piece i from backends 0..j-1, pieces 0..i-1 from all. */
			for (uint32_t k = 0; k < j; k++) {
				unmap_one(p, bes[k], pc->start, pc->len);
				bes[k]->used--;
			}
			if (i > 0) {
				uint64_t s = pieces->v[0].start;
				uint64_t e = pieces->v[i - 1].start + pieces->v[i - 1].len;

				/* Pieces are ascending and fresh: one call covers them
				 * and the holes between, which hold nothing of ours. */
				for (uint32_t k = 0; k < nbe; k++) {
					unmap_one(p, bes[k], s, e - s);
					bes[k]->used -= i;
				}
			}
			return err;
		}
	}
	return 0;
}

static __attribute__((noinline, cold)) int failed_fail(const struct rdm_wbackend *wb)
{
	return rdm_fail(-EIO, "backend %s is marked failed: %s", rdm_backend_name(wb->b), wb->failed_why);
}

static inline int any_failed(const struct rdm_planner *p)
{
	for (uint32_t i = 0; i < p->nbe; i++)
		if (p->be[i]->failed)
			return failed_fail(p->be[i]);
	return 0;
}

/* Keep a small scratch list for the next populate, not a huge one. */
static void put_pieces(struct rdm_planner *p, struct rdm_range_vec *pieces)
{
	if (pieces->cap > PIECES_KEEP)
		vec_free(pieces);
	pieces->n = 0;
	p->pieces = *pieces;
}

/* Insert the new unit mappings [start, end), unit-aligned, as
 * populate_units mapped them: live = len; under defer a piece that is not
 * the first of its chunk segment is RDM_LAYOUT_FINE (cut_run's rule). */
static void insert_units(struct rdm_planner *p, uint64_t start, uint64_t end, bool fine)
{
	struct rdm_layout plain = { .live = p->unit };

	if (!fine) {
		uint32_t n = (uint32_t)((end - start) >> p->unit_shift);

		/* One unit (a block policy's populate): the insert without
		 * insert_run's template and payload copy. */
		if (n == 1)
			layout(p, rdm_maptree_insert(&p->maps, start, p->unit))->live = p->unit;
		else
			rdm_maptree_insert_run(&p->maps, start, p->unit, n, &plain, sizeof(plain));
		return;
	}
	struct rdm_layout extra = { .live = p->unit, .flags = RDM_LAYOUT_FINE };

	while (start < end) {
		uint64_t seg = ((start >> p->chunk_shift) + 1) << p->chunk_shift;

		if (seg > end)
			seg = end;
		rdm_maptree_insert_run(&p->maps, start, p->unit, 1, &plain, sizeof(plain));
		if (seg - start > p->unit) {
			uint32_t k = (uint32_t)(((seg - start) >> p->unit_shift) - 1);

			rdm_maptree_insert_run(&p->maps, start + p->unit, p->unit, k, &extra, sizeof(extra));
			p->fine_mappings += k;
		}
		start = seg;
	}
}

/* Fast path: a populate of [start, end), where no mapping lies, whose
 * pieces are the n units it touches (the block policy; the other policies
 * when cuts_to_units() proved it). The same calls, errors and layout as
 * the general path below (planner.c, "Fast path"). */
static int populate_units(struct rdm_planner *p, uint64_t start, uint64_t end, uint32_t n)
{
	uint64_t step = p->unit, a, e;
	uint32_t i;
	int err;

	if (rdm_maptree_reserve(&p->maps, n))
		return rdm_fail(-ENOMEM, "out of memory planning the mappings of populate [0x%" PRIx64 ", +0x%" PRIx64 ")",
				start * p->block_size, (end - start) * p->block_size);
	err = check_limit(p, n);
	if (err)
		return err;
	/* map_pieces() over the units (the caller flushed the queue): [start,
	 * the first multiple of step above it), then a step at a time, the last
	 * one cut at end. */
	for (a = start, i = 0, e = ((start >> p->unit_shift) + 1) << p->unit_shift; a < end; a = e, e += step, i++) {
		if (e > end)
			e = end;
		for (uint32_t j = 0; j < p->nbe; j++) {
			err = rdm_backend_map(p->be[j]->b, iova_of(p, a), (e - a) * p->block_size, vaddr_of(p, a));
			if (err == 0) {
				p->be[j]->used++;
				continue;
			}
			for (uint32_t k = 0; k < j; k++) {
				unmap_one(p, p->be[k], a, e - a);
				p->be[k]->used--;
			}
			if (i > 0)
				for (uint32_t k = 0; k < p->nbe; k++) {
					unmap_one(p, p->be[k], start, a - start);
					p->be[k]->used -= i;
				}
			return err;
		}
	}
	if (((start | end) & (step - 1)) == 0) {
		insert_units(p, start, end, p->policy == RDM_POLICY_DEFER);
		return 0;
	}
	for (a = start, e = (start / step + 1) * step; a < end; a = e, e += step) { /* block policy only */
		if (e > end)
			e = end;
		layout(p, rdm_maptree_insert(&p->maps, a, e - a))->live = e - a; /* payload zeroed: no flags */
	}
	return 0;
}

/* Would cut_run() cut the fresh run [start, end) of a coalesce or defer
 * region into single units, all mapped in one plan (no re-plan with whole
 * runs)? Only when it provably would (planner.c, "Fast path"). */
static bool cuts_to_units(const struct rdm_planner *p, uint64_t start, uint64_t end, uint64_t n)
{
	bool one = n == 1 && start / p->chunk == (end - 1) / p->chunk;

	if (((start | end) & (p->unit - 1)) || n > UINT32_MAX)
		return false;
	if (p->policy == RDM_POLICY_COALESCE)
		return one || p->chunk == p->unit;
	if (p->policy != RDM_POLICY_DEFER || full_backend(p, n) || n > spare_fine(p))
		return false;
	if (one || p->chunk == p->unit || budget_room(p, 0) == 1)
		return true;
	if (!p->evidence)
		return p->max_cut == 0;
	return learned_cut(p) == 0;
}

int rdm_planner_populate(struct rdm_planner *p, uint64_t start, uint64_t len)
{
	/* The planner's scratch list, kept between calls: no allocation per
	 * populate once it has grown. */
	struct rdm_range_vec pieces = p->pieces;
	uint64_t end = start + len, pos = start, reused = 0, overlapping = 0;
	int err;

	if (p->nbe == 0)
		return 0;
	/* What earlier discards queued goes first (a piece may lie where a
	 * dead mapping still is), and before the check below: an unmap that
	 * fails twice there marks its backend failed, and then this populate
	 * must not map (the failed backend may still hold the dead mapping). */
	rdm_planner_flush(p);
	err = any_failed(p);
	if (err)
		return err;
	if (!p->general_only) {
		uint64_t n = ((end - 1) >> p->unit_shift) - (start >> p->unit_shift) + 1;

		/* Under the block policy no mapping reaches a range of
		 * unpopulated blocks ("Fast path"): no lookup. */
		if (p->policy == RDM_POLICY_BLOCK ? n <= UINT32_MAX
						  : !has_mapping_in(p, start, end) && cuts_to_units(p, start, end, n))
			return populate_units(p, start, end, (uint32_t)n);
	}

	/* Plan: blocks inside existing mappings (deferred) are reused; the
	 * runs between them become new pieces. If the policy's cut would not
	 * fit under the mapping limit, plan again with whole runs: a limit is
	 * the kernel's, the deferral budget only the policy's. */
	for (p->coarse_only = false;; p->coarse_only = true) {
		struct cut_acc acc = {0};

		pieces.n = 0;
		pos = start;
		overlapping = 0;
		for (uint32_t m = rdm_maptree_first_ending_after(&p->maps, start);
		     m && node(p, m)->start < end && !err; m = rdm_maptree_next(&p->maps, m)) {
			overlapping++;
			if (node(p, m)->start > pos)
				err = cut_run(p, pos, node(p, m)->start, &pieces, &acc);
			pos = end_of(p, m);
		}
		if (!err && pos < end)
			err = cut_run(p, pos, end, &pieces, &acc);
		if (err || p->coarse_only || p->policy != RDM_POLICY_DEFER || !full_backend(p, pieces.n))
			break;
	}
	p->coarse_only = false;
	/* Reserve: a layout node per piece (the scratch list already is). */
	if (!err)
		err = rdm_maptree_reserve(&p->maps, pieces.n);
	if (err) {
		err = rdm_fail(-ENOMEM, "out of memory planning the mappings of populate [0x%" PRIx64 ", +0x%" PRIx64 ")",
			       start * p->block_size, len * p->block_size);
		goto out;
	}
	err = check_limit(p, pieces.n);
	if (err)
		goto out;

	/* Execute (the queue was flushed above). */
	err = map_pieces(p, &pieces, p->be, p->nbe);
	if (err)
		goto out;

	/* Commit, with calls that cannot fail (the lookup again only if
	 * planning found mappings). */
	for (uint32_t m = overlapping ? rdm_maptree_first_ending_after(&p->maps, start) : 0;
	     m && node(p, m)->start < end; m = rdm_maptree_next(&p->maps, m)) {
		uint64_t a = node(p, m)->start > start ? node(p, m)->start : start;
		uint64_t b = end_of(p, m) < end ? end_of(p, m) : end;

		layout(p, m)->live += b - a;
		reused += b - a;
	}
	if (reused)
		update_deferred_stats(p, -(int64_t)reused);
	for (uint32_t i = 0; i < pieces.n; i++) {
		uint32_t h = rdm_maptree_insert(&p->maps, pieces.v[i].start, pieces.v[i].len);

		layout(p, h)->live = pieces.v[i].len;
		layout(p, h)->flags = pieces.v[i].flags;
		if (pieces.v[i].flags & RDM_LAYOUT_FINE)
			p->fine_mappings++;
		if (p->policy == RDM_POLICY_DEFER && !p->evidence && pieces.v[i].len > p->unit) {
			layout(p, h)->flags |= RDM_LAYOUT_EXPOSED;
			p->exposure_blocks += pieces.v[i].len - p->unit;
		}
	}
out:
	put_pieces(p, &pieces);
	return err;
}

void rdm_planner_populate_begin(struct rdm_planner *p)
{
	p->in_populate = true;
}

void rdm_planner_populate_end(struct rdm_planner *p)
{
	p->in_populate = false;
}

/* -------------------------------------------------------------- discard */

/*
 * Is there room in every backend for `extra` more mappings? Never in a
 * failed one: an unmap that failed there left mappings `used` no longer
 * counts, so a split or a window's remap there could pass its limit (I4;
 * found by fuzzing: a refused populate's undo could not unmap, then three
 * split discards took a sim of budget 7 to 8 mappings). With no room, a
 * discard inside a mapping defers its blocks (counted in
 * defer_limit_exceeded), and the mapping goes whole, with one unmap, once
 * its last block is discarded: the failed backend's count only falls.
 */
static bool room_for(const struct rdm_planner *p, uint64_t extra)
{
	for (uint32_t i = 0; i < p->nbe; i++)
		if (p->be[i]->failed || p->be[i]->used + extra > p->be[i]->budget)
			return false;
	return true;
}

/*
 * Replace mapping m by mappings of its populated runs: unmap it whole, map
 * the runs (a DMA window over them, counted as remapped bytes), release its
 * discarded blocks. Used by coalesce without a split-capable kernel and by
 * defer past its limit. `uncounted` of m's discarded blocks are not counted
 * as deferred yet (a discard being applied). false, with nothing changed, if
 * the runs would not fit under the mapping limit or their nodes cannot be
 * reserved.
 */
static bool split_with_window(struct rdm_planner *p, uint32_t m, uint64_t uncounted)
{
	uint64_t ms = node(p, m)->start, me = end_of(p, m), nruns = 0, rs, re;

	for (uint64_t pos = ms; next_run(p, pos, me, true, &rs, &re); pos = re)
		nruns++;
	/* m's node becomes the first run (m has populated blocks, or it would
	 * be dead), so the runs need nruns - 1 more nodes and mappings. */
	if (nruns == 0 || !room_for(p, nruns - 1) || rdm_maptree_reserve(&p->maps, (uint32_t)(nruns - 1)) != 0)
		return false;

	rdm_planner_flush(p);
	unmap_all_backends(p, ms, me - ms);
	update_deferred_stats(p, -(int64_t)(node(p, m)->len - layout(p, m)->live - uncounted));
	leave(p, m);
	rdm_maptree_unlink(&p->maps, m);
	for (uint32_t i = 0; i < p->nbe; i++)
		p->be[i]->used--;

	uint64_t pos = ms;
	bool reuse = true;

	while (next_run(p, pos, me, true, &rs, &re)) {
		uint32_t h;

		for (uint32_t j = 0; j < p->nbe; j++) {
			int err = rdm_backend_map(p->be[j]->b, iova_of(p, rs), (re - rs) * p->block_size,
						  vaddr_of(p, rs));
			/* Retried once, like an unmap: the range was mapped a
			 * moment ago, so only a transient failure can stop it. */
			if (err)
				err = rdm_backend_map(p->be[j]->b, iova_of(p, rs), (re - rs) * p->block_size,
						      vaddr_of(p, rs));
			if (err) {
				/* Populated memory the device can no longer reach:
				 * nothing more rdm can do; the backend is failed. */
				mark_failed(p, p->be[j], err, rs, re - rs);
				continue;
			}
			p->be[j]->used++;
		}
		if (reuse) {
			h = m;
			node(p, h)->start = rs;
			node(p, h)->len = re - rs;
			rdm_maptree_link(&p->maps, h);
			reuse = false;
		} else {
			h = rdm_maptree_insert(&p->maps, rs, re - rs); /* reserved above */
		}
		layout(p, h)->live = re - rs;
		layout(p, h)->stamp = 0;
		*p->stat_remapped_bytes += (re - rs) * p->block_size;
		for (uint32_t j = 0; j < p->nbe; j++)
			rdm_backend_note_remapped(p->be[j]->b, (re - rs) * p->block_size);
		/* Everything of m before the run is discarded and now unmapped. */
		if (rs > pos)
			release_range(p, pos, rs - pos);
		pos = re;
	}
	if (me > pos)
		release_range(p, pos, me - pos);
	return true;
}

/*
 * Split-capable kernels: one UNMAP of exactly [a, b) inside m (its blocks
 * just discarded, not counted as deferred); the kernel keeps the survivors
 * mapped, no window. false, with nothing changed, if there is no room for a
 * second mapping or its node.
 */
static bool split_exact(struct rdm_planner *p, uint32_t m, uint64_t a, uint64_t b)
{
	uint64_t ms = node(p, m)->start, me = end_of(p, m), stamp = layout(p, m)->stamp;
	bool both = a > ms && me > b;

	if (both && (!room_for(p, 1) || rdm_maptree_reserve(&p->maps, 1) != 0))
		return false;
	rdm_planner_flush(p);
	for (uint32_t i = 0; i < p->nbe; i++)
		unmap_piece(p, p->be[i], a, b - a, ms, me);
	release_range(p, a, b - a);
	leave(p, m);
	rdm_maptree_unlink(&p->maps, m);
	/* m's node keeps the left survivor, or the right one if none. */
	if (a > ms) {
		node(p, m)->len = a - ms;
		layout(p, m)->live = populated_blocks(p, ms, a);
		rdm_maptree_link(&p->maps, m);
	}
	if (me > b) {
		uint32_t h = a > ms ? rdm_maptree_insert(&p->maps, b, me - b) : m;

		node(p, h)->start = b;
		node(p, h)->len = me - b;
		layout(p, h)->live = populated_blocks(p, b, me);
		layout(p, h)->stamp = stamp;
		if (h == m)
			rdm_maptree_link(&p->maps, h);
		else
			for (uint32_t i = 0; i < p->nbe; i++)
				p->be[i]->used++;
	}
	return true;
}

static void enforce_defer_limit(struct rdm_planner *p)
{
	if (!p->defer_limit_blocks || p->deferred_blocks <= p->defer_limit_blocks)
		return;
	if (!p->allow_windows) {
		(*p->stat_defer_exceeded)++;
		return;
	}
	while (p->deferred_blocks > p->defer_limit_blocks) {
		/* The oldest deferred mapping: smallest stamp among mappings
		 * with deferred blocks (a linear scan is fine on this rare path). */
		uint32_t oldest = 0;

		for (uint32_t m = rdm_maptree_first_ending_after(&p->maps, 0); m; m = rdm_maptree_next(&p->maps, m))
			if (layout(p, m)->live < node(p, m)->len &&
			    (!oldest || layout(p, m)->stamp < layout(p, oldest)->stamp))
				oldest = m;
		if (!oldest)
			break;
		if (!split_with_window(p, oldest, 0)) {
			/* No room under the limit or no memory for the split:
			 * the limit stays exceeded, counted. */
			(*p->stat_defer_exceeded)++;
			break;
		}
	}
}

/* The discards now allow coarser cuts: mappings cut before any discard
 * at a level they allow are no longer exposure (a scan, run only when the
 * cut grows while exposure is left). */
static void prove_exposed(struct rdm_planner *p)
{
	for (uint32_t m = rdm_maptree_first_ending_after(&p->maps, 0); m; m = rdm_maptree_next(&p->maps, m))
		if (node(p, m)->len <= p->unit << p->cut)
			unexpose(p, m);
}

/* Is some block of [a, b) populated (the applier's view)? */
static bool any_populated(const struct rdm_planner *p, uint64_t a, uint64_t b)
{
	uint64_t rs, re;

	return next_run(p, a, b, true, &rs, &re);
}

/* Deferral budget: what discard [a, b) would have deferred under each cut
 * level (pieces of 2^e units aligned in the chunk): an edge of the discard
 * inside a piece that keeps a populated block defers the discarded part of
 * that piece; an edge piece left with no populated block goes, and with it
 * what earlier discards deferred in it (credited back from the held
 * estimate). Each level widens the edge pieces of the one below, so only
 * the widened parts are looked at. */
static void learn_discard(struct rdm_planner *p, uint64_t a, uint64_t b)
{
	uint64_t cs = a / p->chunk * p->chunk, ce = cs + p->chunk;
	uint64_t lo = a, hi = b; /* looked at so far: [lo, a) and [b, hi) */
	bool left = false, right = false;

	if (ce > p->nblocks)
		ce = p->nblocks;
	if (b > ce)
		b = ce; /* a discard across chunks: its first chunk stands for it */
	for (unsigned e = 0; e <= p->max_cut; e++) {
		uint64_t g = p->unit << e, pa = a / g * g, pb = (b + g - 1) / g * g;
		uint64_t d = 0, credit = 0;

		if (pa < cs)
			pa = cs;
		if (pb > ce)
			pb = ce;
		left = left || (pa < lo && any_populated(p, pa, lo));
		right = right || (pb > hi && any_populated(p, hi, pb));
		lo = pa;
		hi = pb;
		if (pa / g == (b - 1) / g) {
			/* One piece holds the whole discard. */
			if (left || right)
				d = b - a;
			else
				credit = (a - pa) + (pb - b); /* the piece goes: what it deferred too */
		} else {
			if (left)
				d += (pa + g < b ? pa + g : b) - a;
			else
				credit += a - pa;
			if (right)
				d += b - (b - 1) / g * g;
			else
				credit += pb - b;
		}
		p->would_defer[e] += d;
		p->would_hold[e] += d;
		p->would_hold[e] -= credit < p->would_hold[e] ? credit : p->would_hold[e];
		if (p->would_hold[e] > p->would_peak[e])
			p->would_peak[e] = p->would_hold[e];
	}
	p->evidence = true;
	p->seen_blocks += b - a;
	if (p->seen_blocks > p->window_blocks) {
		p->seen_blocks /= 2;
		for (unsigned e = 0; e <= p->max_cut; e++) {
			p->would_defer[e] /= 2;
			p->would_hold[e] /= 2;
			p->would_peak[e] /= 2;
		}
	}
	/* Coarsest level whose held peak is within half the budget and whose
	 * deferring share is within four times the budget's share. */
	if (p->budget_blocks == UINT64_MAX) {
		p->cut = p->max_cut;
		return;
	}
	unsigned was = p->cut;

	p->cut = 0;
	for (unsigned e = p->max_cut; e > 0; e--) {
		if (p->would_peak[e] * 2 <= p->budget_blocks &&
		    (unsigned __int128)p->would_defer[e] * p->nblocks <=
			    (unsigned __int128)p->seen_blocks * p->budget_blocks * 4) {
			p->cut = e;
			break;
		}
	}
	if (p->cut > was && p->exposure_blocks)
		prove_exposed(p);
}

/* remove_starts_in_if() visitor: refuse a mapping that is not a single
 * unit (or is exposure); count the fine ones. */
struct unit_walk {
	const struct rdm_planner *p;
	uint64_t fine;
};

static int refuse_non_unit(void *opaque, const struct rdm_maptree *t, uint32_t h)
{
	struct unit_walk *w = opaque;
	const struct rdm_layout *l = rdm_maptree_payload(t, h);

	if (rdm_maptree_node(t, h)->len != w->p->unit || (l->flags & RDM_LAYOUT_EXPOSED))
		return 1;
	w->fine += (l->flags & RDM_LAYOUT_FINE) != 0;
	return 0;
}

/* Fast path: the discard of [start, end) when mappings tile it - any
 * mappings under the block policy, single-unit ones under the others
 * (planner.c, "Fast path"); false (nothing done) otherwise. */
static bool discard_units(struct rdm_planner *p, uint64_t start, uint64_t end)
{
	/* The mapping starting at start leaves the tree in the descent that
	 * finds it (a block's discard makes no other lookup); if the range
	 * does not qualify, it is linked back: the same tree as before. */
	uint64_t nx_start;
	uint32_t nx, first = rdm_maptree_unlink_start(&p->maps, start, &nx, &nx_start), last;
	uint64_t count = 1, blocks;
	bool block = p->policy == RDM_POLICY_BLOCK;
	struct unit_walk w = { p, 0 };

	if (!first)
		return false;
	last = end_of(p, first) >= end ? first : rdm_maptree_find_le(&p->maps, end - 1);
	if (!last || end_of(p, last) != end)
		goto refuse;
	blocks = node(p, first)->len;
	if (!block && (refuse_non_unit(&w, &p->maps, first) || node(p, last)->len != p->unit))
		goto refuse;
	if (blocks < end - start &&
	    !rdm_maptree_remove_starts_in_if(&p->maps, start + blocks, end - 1, block ? NULL : refuse_non_unit, &w,
					     &count, &blocks))
		goto refuse;
	layout(p, first)->flags = 0;
	/* first's successor follows the whole range only if first is all of it. */
	layout(p, first)->next_start = nx && first == last ? nx_start : UINT64_MAX;
	p->fine_mappings -= w.fine;
	node(p, first)->len = end - start; /* == blocks: they tile it */
	set_dead_next(p, first, 0);
	if (p->dead_tail)
		set_dead_next(p, p->dead_tail, first);
	else
		p->dead_head = first;
	p->dead_tail = first;
	for (uint32_t i = 0; i < p->nbe; i++)
		p->be[i]->used -= count;
	return true;
refuse:
	rdm_maptree_link(&p->maps, first);
	return false;
}

void rdm_planner_discard(struct rdm_planner *p, uint64_t start, uint64_t len)
{
	uint64_t end = start + len, pos = start;
	uint32_t m, next;

	if (!p->general_only && discard_units(p, start, end)) {
		if (p->policy == RDM_POLICY_DEFER && !p->in_populate) {
			learn_discard(p, start, end);
			enforce_defer_limit(p);
		}
		return;
	}

	for (m = rdm_maptree_first_ending_after(&p->maps, start); m && node(p, m)->start < end; m = next) {
		uint64_t ms = node(p, m)->start, me = end_of(p, m);
		uint64_t a = ms > start ? ms : start;
		uint64_t b = me < end ? me : end;
		uint64_t ov = b - a;
		struct rdm_layout *l = layout(p, m);

		/* A mapping after m starts at or past m's end: only if that is
		 * inside the range can the loop need it. */
		next = me < end ? rdm_maptree_next(&p->maps, m) : 0;
		if (a > pos)
			release_range(p, pos, a - pos); /* in no mapping: unmapped everywhere */
		pos = b;
		l->live -= ov;
		if (l->live == 0) {
			/* The whole mapping can go: one UNMAP, and every block of it
			 * (earlier deferred ones included) is released after it. */
			update_deferred_stats(p, -(int64_t)(me - ms - ov));
			kill_mapping(p, m);
			continue;
		}
		if (p->in_populate) {
			/* The rollback of a populate that reused these blocks:
			 * deferred again, exactly as before it. */
			update_deferred_stats(p, (int64_t)ov);
			continue;
		}
		/* A discard inside a mapping that stays partly populated. */
		if (l->live + ov == me - ms)
			l->stamp = ++p->defer_stamp;
		if (p->policy == RDM_POLICY_COALESCE) {
			if (all_can_split(p) ? split_exact(p, m, a, b) : p->allow_windows && split_with_window(p, m, ov))
				continue;
			/* Deferred: coalesce past the limit (or out of memory), counted. */
			(*p->stat_defer_exceeded)++;
		}
		update_deferred_stats(p, (int64_t)ov);
	}
	if (pos < end)
		release_range(p, pos, end - pos);
	if (p->policy == RDM_POLICY_DEFER && !p->in_populate) {
		learn_discard(p, start, end);
		enforce_defer_limit(p);
	}
}

/* --------------------------------------------------------------- attach */

/* Map the whole layout into wb (a backend joining a region that has one). */
static int map_layout_into(struct rdm_planner *p, struct rdm_wbackend *wb)
{
	uint32_t first = rdm_maptree_first_ending_after(&p->maps, 0);

	if (wb->used + p->maps.count + headroom(p) > wb->budget) {
		(*p->stat_enospc)++;
		return rdm_fail(-ENOSPC,
				"mapping limit: attaching needs %" PRIu64 " mappings but backend %s holds %" PRIu64
				" of its limit of %" PRIu64,
				p->maps.count, rdm_backend_name(wb->b), wb->used, wb->budget);
	}
	for (uint32_t m = first; m; m = rdm_maptree_next(&p->maps, m)) {
		int err = rdm_backend_map(wb->b, iova_of(p, node(p, m)->start), node(p, m)->len * p->block_size,
					  vaddr_of(p, node(p, m)->start));

		if (err == 0) {
			wb->used++;
			continue;
		}
		if (m != first) {
			/* The mappings before m, ascending, and the holes between
			 * them, which hold nothing of ours in wb: one call. */
			uint64_t s = node(p, first)->start;
			uint32_t done = 0;

			for (uint32_t k = first; k != m; k = rdm_maptree_next(&p->maps, k))
				done++;
			unmap_one(p, wb, s, node(p, m)->start - s);
			wb->used -= done;
		}
		return err;
	}
	return 0;
}

int rdm_planner_attach(struct rdm_planner *p, struct rdm_wbackend *wb)
{
	int err = rdm_planner_check_backend(p, wb);

	if (err)
		return err;
	if (wb->failed)
		return failed_fail(wb);
	rdm_planner_flush(p);
	if (p->nbe > 0) {
		err = map_layout_into(p, wb);
		if (err)
			return err;
		p->be[p->nbe++] = wb;
		return 0;
	}
	/* First backend: lay out the populated state (the layout is empty).
	 * Reserve the pieces and their nodes, map, then commit. */
	struct rdm_range_vec pieces = p->pieces;
	struct cut_acc acc = {0};
	uint64_t rs, re;

	pieces.n = 0;
	for (uint64_t pos = 0; !err && next_run(p, pos, p->nblocks, true, &rs, &re); pos = re)
		err = cut_run(p, rs, re, &pieces, &acc);
	if (!err)
		err = rdm_maptree_reserve(&p->maps, pieces.n);
	if (err) {
		err = rdm_fail(-ENOMEM, "out of memory planning the mappings of attaching backend %s",
			       rdm_backend_name(wb->b));
		goto out;
	}
	if (wb->used + pieces.n + headroom(p) > wb->budget) {
		(*p->stat_enospc)++;
		err = rdm_fail(-ENOSPC,
			       "mapping limit: attaching needs %" PRIu32 " mappings but backend %s holds %" PRIu64
			       " of its limit of %" PRIu64,
			       pieces.n, rdm_backend_name(wb->b), wb->used, wb->budget);
		goto out;
	}
	err = map_pieces(p, &pieces, &wb, 1);
	if (err)
		goto out;
	for (uint32_t i = 0; i < pieces.n; i++) {
		uint32_t h = rdm_maptree_insert(&p->maps, pieces.v[i].start, pieces.v[i].len);

		layout(p, h)->live = pieces.v[i].len;
	}
	p->be[p->nbe++] = wb;
out:
	put_pieces(p, &pieces);
	return err;
}

/* Release the discarded blocks still inside mappings (deferred ones); every
 * backend has unmapped the region. */
static void release_deferred(struct rdm_planner *p)
{
	for (uint32_t m = rdm_maptree_first_ending_after(&p->maps, 0); m; m = rdm_maptree_next(&p->maps, m)) {
		uint64_t me = end_of(p, m), rs, re;

		if (layout(p, m)->live == node(p, m)->len)
			continue;
		for (uint64_t pos = node(p, m)->start; next_run(p, pos, me, false, &rs, &re); pos = re)
			release_range(p, rs, re - rs);
	}
	update_deferred_stats(p, -(int64_t)p->deferred_blocks);
}

int rdm_planner_detach(struct rdm_planner *p, struct rdm_wbackend *wb)
{
	uint32_t i;

	for (i = 0; i < p->nbe && p->be[i] != wb; i++)
		;
	if (i == p->nbe)
		return rdm_fail(-ENOENT, "region is not attached to backend %s", rdm_backend_name(wb->b));
	rdm_planner_flush(p);
	if (p->maps.count) {
		/* All of rdm's mappings in this region: one call over the region
		 * (holes inside it hold no other mapping). */
		unmap_one(p, wb, 0, p->nblocks);
		wb->used -= p->maps.count;
	}
	memmove(&p->be[i], &p->be[i + 1], (p->nbe - i - 1) * sizeof(p->be[0]));
	p->nbe--;
	if (p->nbe == 0) {
		release_deferred(p);
		rdm_maptree_clear(&p->maps);
		p->exposure_blocks = 0;
		p->fine_mappings = 0;
	}
	return 0;
}

void rdm_planner_teardown(struct rdm_planner *p)
{
	while (p->nbe)
		rdm_planner_detach(p, p->be[p->nbe - 1]);
	rdm_planner_flush(p);
}

/* -------------------------------------------------------- observability */

int rdm_planner_for_each_mapping(const struct rdm_planner *p, rdm_planner_mapping_fn fn, void *opaque)
{
	for (uint32_t m = rdm_maptree_first_ending_after(&p->maps, 0); m; m = rdm_maptree_next(&p->maps, m)) {
		int rc = fn(opaque, iova_of(p, node(p, m)->start), node(p, m)->len * p->block_size,
			    vaddr_of(p, node(p, m)->start));

		if (rc)
			return rc;
	}
	return 0;
}

int rdm_planner_for_each_deferred(const struct rdm_planner *p, rdm_planner_range_fn fn, void *opaque)
{
	for (uint32_t m = rdm_maptree_first_ending_after(&p->maps, 0); m; m = rdm_maptree_next(&p->maps, m)) {
		uint64_t me = end_of(p, m), rs, re;

		if (layout(p, m)->live == node(p, m)->len)
			continue;
		for (uint64_t pos = node(p, m)->start; next_run(p, pos, me, false, &rs, &re); pos = re) {
			int rc = fn(opaque, rs * p->block_size, (re - rs) * p->block_size);

			if (rc)
				return rc;
		}
	}
	return 0;
}

uint64_t rdm_planner_deferred_bytes(const struct rdm_planner *p)
{
	return p->deferred_blocks * p->block_size;
}

/* ----------------------------------------------------------- compaction */

/*
 * Compaction.
 *
 * The caller states that no device does DMA into the region (device reset,
 * a paused VM), so a DMA window is harmless for the duration of the call:
 * each mapping that holds deferred blocks (live < len) is unmapped whole and
 * its populated runs are mapped again, cut by cut_run() as a populate of
 * those runs would be. Mappings without deferred blocks are left alone.
 *
 * All or nothing, in three phases:
 *  - plan: the pieces of every such mapping, ascending, into the populate
 *    scratch list (the pieces of mapping m are the ones starting inside m),
 *    and a layout node per extra piece (rdm_maptree_reserve), and the budget
 *    check (with the policy's split headroom). An ENOMEM or ENOSPC returns
 *    before any call.
 *  - execute, backend by backend, mapping by mapping: one UNMAP of the whole
 *    mapping, one MAP per piece. Nothing is released yet, so every deferred
 *    block still holds the memory it was mapped to, and a failure is rolled
 *    back by unmapping the pieces mapped so far (one call over the mapping's
 *    range, which holds nothing else of the region's) and mapping the whole
 *    mapping again, in every backend and mapping already done. A rollback
 *    MAP that fails twice marks that backend failed (its devices can no
 *    longer reach populated memory there; the layout still describes the
 *    other backends), as split_with_window() does. An UNMAP that fails
 *    twice marks its backend failed and records the range as leaked
 *    (unmap_one's rule), and the others are rolled back the same way.
 *  - commit, with calls that cannot fail: the layout takes the pieces (the
 *    mapping's node becomes its first piece), used grows by the extra pieces
 *    in every backend, deferred_blocks falls by the released blocks
 *    (update_deferred_stats) and the discarded blocks between the pieces are
 *    released (release_range: never a pinned block).
 *
 * The invariants above hold after a compaction as after a flush; in
 * addition deferred_blocks is 0 when it succeeds. The remaps are not counted
 * as remapped bytes (those measure DMA windows a device could hit).
 */

static bool holds_deferred(const struct rdm_planner *p, uint32_t m)
{
	return layout(p, m)->live < node(p, m)->len;
}

/* The next mapping holding deferred blocks, from h on (0: none). */
static uint32_t next_deferred(const struct rdm_planner *p, uint32_t h)
{
	while (h && !holds_deferred(p, h))
		h = rdm_maptree_next(&p->maps, h);
	return h;
}

static void compact_mark_failed(struct rdm_planner *p, struct rdm_wbackend *wb, int err, uint64_t start,
				uint64_t len)
{
	if (wb->failed)
		return;
	wb->failed = true;
	(*p->stat_failed_backends)++;
	snprintf(wb->failed_why, sizeof(wb->failed_why),
		 "map of iova 0x%" PRIx64 "+0x%" PRIx64 " restoring a mapping after a failed compaction failed twice (%s)",
		 iova_of(p, start), len * p->block_size, strerror(-err));
	rdm_log(RDM_LOG_ERROR, "backend %s marked failed: %s", rdm_backend_name(wb->b), wb->failed_why);
}

/* One UNMAP (retried once, like unmap_one), counted. */
static int compact_unmap(struct rdm_planner *p, struct rdm_wbackend *wb, uint64_t start, uint64_t len,
			 struct rdm_planner_compact_result *res)
{
	uint64_t done = 0;
	int err;

	res->unmap_calls++;
	rdm_region_publish_discards(p->region);
	err = rdm_backend_unmap(wb->b, iova_of(p, start), len * p->block_size, &done);
	if (err) {
		res->unmap_calls++;
		err = rdm_backend_unmap(wb->b, iova_of(p, start), len * p->block_size, &done);
	}
	if (err) {
		mark_failed(p, wb, err, start, len);
		note_leaked(p, start, len);
	}
	return err;
}

/* Put mapping m back whole in wb, whose pieces of m are mapped up to block
 * `mapped_end` (m's start: none) and m itself is unmapped. */
static void compact_restore(struct rdm_planner *p, struct rdm_wbackend *wb, uint32_t m, uint64_t mapped_end,
			    struct rdm_planner_compact_result *res)
{
	uint64_t ms = node(p, m)->start, len = node(p, m)->len;
	int err;

	if (mapped_end > ms && compact_unmap(p, wb, ms, mapped_end - ms, res))
		return; /* failed backend; the pieces may stay, nothing is released */
	res->map_calls++;
	err = rdm_backend_map(wb->b, iova_of(p, ms), len * p->block_size, vaddr_of(p, ms));
	if (err) {
		res->map_calls++;
		err = rdm_backend_map(wb->b, iova_of(p, ms), len * p->block_size, vaddr_of(p, ms));
	}
	if (err)
		compact_mark_failed(p, wb, err, ms, len);
}

/*
 * Roll back a compaction that failed in backend be[j] at mapping `at`:
 * be[j] holds m's pieces up to `at_end` (at's start: none; UINT64_MAX: the
 * unmap of `at` failed, it is still mapped there), every mapping before
 * `at` is re-cut in be[j], and in be[0..j) every mapping is re-cut.
 */
static void compact_rollback(struct rdm_planner *p, uint32_t j, uint32_t at, uint64_t at_end,
			     struct rdm_planner_compact_result *res)
{
	for (uint32_t i = 0; i <= j; i++) {
		for (uint32_t m = next_deferred(p, rdm_maptree_first_ending_after(&p->maps, 0)); m;
		     m = next_deferred(p, rdm_maptree_next(&p->maps, m))) {
			if (i == j && m == at) {
				if (at_end != UINT64_MAX)
					compact_restore(p, p->be[i], m, at_end, res);
				break;
			}
			compact_restore(p, p->be[i], m, end_of(p, m), res);
		}
	}
}

int rdm_planner_compact(struct rdm_planner *p, struct rdm_planner_compact_result *res)
{
	struct rdm_range_vec pieces = p->pieces;
	uint64_t nmaps = 0, extra, rs, re;
	int err = 0;

	memset(res, 0, sizeof(*res));
	if (p->nbe == 0)
		return 0; /* nothing mapped, nothing deferred (detach released it) */
	/* Whole mappings queued for their unmap go first: afterwards every
	 * mapping of the layout holds a populated block. Before the check: a
	 * failed unmap there marks its backend failed. */
	rdm_planner_flush(p);
	err = any_failed(p);
	if (err)
		return err;

	/* Plan. */
	struct cut_acc acc = {0};

	pieces.n = 0;
	for (uint32_t m = next_deferred(p, rdm_maptree_first_ending_after(&p->maps, 0)); m && !err;
	     m = next_deferred(p, rdm_maptree_next(&p->maps, m))) {
		nmaps++;
		for (uint64_t pos = node(p, m)->start; !err && next_run(p, pos, end_of(p, m), true, &rs, &re); pos = re)
			err = cut_run(p, rs, re, &pieces, &acc);
	}
	if (nmaps == 0)
		goto out;
	/* Every re-cut mapping has a populated block, so a piece: its node
	 * becomes the first one, the others need new nodes. */
	extra = err ? 0 : pieces.n - nmaps;
	if (!err)
		err = rdm_maptree_reserve(&p->maps, (uint32_t)extra);
	if (err) {
		err = rdm_fail(-ENOMEM, "out of memory planning the compaction of %" PRIu64 " mappings", nmaps);
		goto out;
	}
	for (uint32_t i = 0; i < p->nbe; i++) {
		struct rdm_wbackend *wb = p->be[i];

		if (extra && wb->used + extra + headroom(p) > wb->budget) {
			err = rdm_fail(-ENOSPC,
				       "mapping limit: compaction needs %" PRIu64 " more mappings (+%" PRIu64
				       " headroom) but backend %s holds %" PRIu64 " of its limit of %" PRIu64,
				       extra, headroom(p), rdm_backend_name(wb->b), wb->used, wb->budget);
			goto out;
		}
	}

	/* Execute. */
	for (uint32_t j = 0; j < p->nbe; j++) {
		struct rdm_wbackend *wb = p->be[j];
		uint32_t k = 0;

		for (uint32_t m = next_deferred(p, rdm_maptree_first_ending_after(&p->maps, 0)); m;
		     m = next_deferred(p, rdm_maptree_next(&p->maps, m))) {
			uint64_t ms = node(p, m)->start, me = end_of(p, m), mapped_end = ms;

			if (compact_unmap(p, wb, ms, me - ms, res)) {
				compact_rollback(p, j, m, UINT64_MAX, res);
				err = rdm_fail(-EIO,
					       "compaction rolled back: unmap of iova 0x%" PRIx64 "+0x%" PRIx64
					       " failed twice; backend %s marked failed",
					       iova_of(p, ms), (me - ms) * p->block_size, rdm_backend_name(wb->b));
				goto out;
			}
			for (; k < pieces.n && pieces.v[k].start < me; k++) {
				const struct rdm_range *pc = &pieces.v[k];

				res->map_calls++;
				err = rdm_backend_map(wb->b, iova_of(p, pc->start), pc->len * p->block_size,
						      vaddr_of(p, pc->start));
				if (err) {
					int e = err;

					compact_rollback(p, j, m, mapped_end, res);
					err = rdm_fail(e,
						       "compaction rolled back: map of iova 0x%" PRIx64 "+0x%" PRIx64
						       " failed in backend %s (%s)",
						       iova_of(p, pc->start), pc->len * p->block_size,
						       rdm_backend_name(wb->b), strerror(-e));
					goto out;
				}
				mapped_end = pc->start + pc->len;
			}
		}
	}

	/* Commit. */
	uint32_t kc = 0;

	for (uint32_t m = next_deferred(p, rdm_maptree_first_ending_after(&p->maps, 0)), next; m; m = next) {
		uint64_t ms = node(p, m)->start, me = end_of(p, m), released = me - ms - layout(p, m)->live;
		uint64_t pos = ms, n = 0;

		next = next_deferred(p, rdm_maptree_next(&p->maps, m));
		update_deferred_stats(p, -(int64_t)released);
		leave(p, m);
		rdm_maptree_unlink(&p->maps, m);
		for (; kc < pieces.n && pieces.v[kc].start < me; kc++, n++) {
			const struct rdm_range *pc = &pieces.v[kc];
			uint32_t h = m;

			if (n == 0) {
				node(p, h)->start = pc->start;
				node(p, h)->len = pc->len;
				rdm_maptree_link(&p->maps, h);
			} else {
				h = rdm_maptree_insert(&p->maps, pc->start, pc->len); /* reserved */
			}
			layout(p, h)->live = pc->len;
			layout(p, h)->stamp = 0;
			layout(p, h)->flags = pc->flags & RDM_LAYOUT_FINE;
			if (pc->flags & RDM_LAYOUT_FINE)
				p->fine_mappings++;
			if (pc->start > pos)
				release_range(p, pos, pc->start - pos);
			pos = pc->start + pc->len;
			res->remapped_bytes += pc->len * p->block_size;
		}
		if (me > pos)
			release_range(p, pos, me - pos);
		for (uint32_t i = 0; i < p->nbe; i++)
			p->be[i]->used += n - 1;
		res->mappings++;
		res->new_mappings += n;
		res->released_bytes += released * p->block_size;
	}
out:
	put_pieces(p, &pieces);
	return err;
}
