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
 *  - A populate is mapped as few mappings as possible: each run of blocks not
 *    already mapped becomes one mapping, cut at multiples of the region's
 *    chunk (128 MiB, or the discard unit if larger), so no mapping crosses a
 *    guest memory block and a whole-block unplug is always one exact UNMAP.
 *  - defer also halves each such piece at its most aligned inner boundary
 *    (a size-aligned run's midpoint) while every backend has at least half
 *    of its mapping budget to spare: a discard of either half is then one
 *    exact UNMAP, and a discard inside a half defers at most that half. On
 *    the shipped traces this halves the worst deferral (a 128 MiB block
 *    unplugged top-down defers at most 62 MiB) for one more MAP per plug;
 *    on the 4 KiB conversion storm it brings the peak deferred memory from
 *    2.1% to 1.6% of the guest. When mappings are scarce the spare budget
 *    goes first, so no populate is refused for the halving's sake.
 *  - defer: a discard inside a mapping still partly populated unmaps nothing
 *    and releases nothing; its blocks are "deferred". They are released when
 *    the last populated block of that mapping is discarded (one UNMAP of the
 *    whole mapping), or never if they are populated again first (the mapping
 *    still points at their memory, so no call at all). With defer_limit set and RDM_REGION_ALLOW_WINDOWS,
 *    the oldest deferred mappings are split (unmap, remap the populated runs,
 *    counted as remapped bytes) until the deferred bytes are under the limit;
 *    without windows an exceeded limit is only counted.
 *  - coalesce: a bisecting discard unmaps the mapping and remaps the
 *    survivors (a window, counted), or, on a split-capable kernel, one UNMAP
 *    of exactly the discarded part (no window).
 *
 * Every call goes to every backend the region is attached to, so all of them
 * hold the same layout. Unmaps are queued during a batch and flushed, merged
 * into the fewest calls (adjacent whole mappings and the holes between them
 * inside the region, which hold no other mapping), before any MAP and at the
 * end of the batch; releases follow the flush.
 *
 * Invariants (after every flush):
 *  1. Every populated block is inside exactly one mapping of the mapset, and
 *     each mapping is mapped in every attached, non-failed backend to the
 *     region's host memory (I1).
 *  2. A released block is in no mapping of any backend (I2); blocks whose
 *     unmap failed are in `leaked` and never released.
 *  3. No call bisects a mapping unless every backend can split; no MAP
 *     overlaps a mapping (I4); each backend's `used` never exceeds `budget`.
 *  4. deferred_blocks = sum over mappings of (len - live).
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
	v->n++;
	return 0;
}

static void vec_free(struct rdm_range_vec *v)
{
	rdm_free(v->v);
	memset(v, 0, sizeof(*v));
}

static int cmp_range(const void *a, const void *b)
{
	const struct rdm_range *x = a, *y = b;

	return x->start < y->start ? -1 : x->start > y->start;
}

/* Sort a range list by start; a batch's discards usually arrive ascending,
 * and then there is nothing to sort. */
static void sort_ranges(struct rdm_range_vec *v)
{
	for (uint32_t i = 1; i < v->n; i++) {
		if (v->v[i - 1].start > v->v[i].start) {
			qsort(v->v, v->n, sizeof(v->v[0]), cmp_range);
			return;
		}
	}
}

int rdm_planner_init(struct rdm_planner *p, struct rdm_region *r)
{
	const struct rdm_region_config *cfg = rdm_region_get_config(r);

	memset(p, 0, sizeof(*p));
	p->region = r;
	rdm_mapset_init(&p->maps);
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
	return 0;
}

void rdm_planner_fini(struct rdm_planner *p)
{
	rdm_mapset_clear(&p->maps);
	vec_free(&p->pending_unmap);
	vec_free(&p->pending_release);
	vec_free(&p->leaked);
	vec_free(&p->pieces);
}

static bool all_can_split(const struct rdm_planner *p)
{
	for (uint32_t i = 0; i < p->nbe; i++)
		if (!p->be[i]->caps.can_split)
			return false;
	return p->nbe > 0;
}

int rdm_planner_check_backend(const struct rdm_planner *p, const struct rdm_wbackend *wb)
{
	if (p->policy == RDM_POLICY_COALESCE && !p->allow_windows && !wb->caps.can_split)
		return rdm_fail(-EINVAL,
				"policy coalesce needs RDM_REGION_ALLOW_WINDOWS or a split-capable backend; %s cannot split",
				rdm_backend_name(wb->b));
	if (p->nbe == RDM_PLANNER_MAX_BACKENDS)
		return rdm_fail(-EINVAL, "a region can be attached to at most %d backends",
				RDM_PLANNER_MAX_BACKENDS);
	return 0;
}

static void update_deferred_stats(struct rdm_planner *p, int64_t delta_blocks)
{
	p->deferred_blocks = (uint64_t)((int64_t)p->deferred_blocks + delta_blocks);
	for (uint32_t i = 0; i < p->nbe && delta_blocks; i++)
		rdm_backend_note_deferred(p->be[i]->b, delta_blocks * (int64_t)p->block_size);
	*p->stat_deferred_bytes = (uint64_t)((int64_t)*p->stat_deferred_bytes + delta_blocks * (int64_t)p->block_size);
	if (*p->stat_deferred_bytes > *p->stat_deferred_peak)
		*p->stat_deferred_peak = *p->stat_deferred_bytes;
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

/* Unmap blocks [start, start+len) from one backend; retry once; on a second
 * failure mark the backend failed and remember the range as leaked. */
static int unmap_one(struct rdm_planner *p, struct rdm_wbackend *wb, uint64_t start, uint64_t len)
{
	uint64_t done = 0;
	int err = rdm_backend_unmap(wb->b, iova_of(p, start), len * p->block_size, &done);

	if (err)
		err = rdm_backend_unmap(wb->b, iova_of(p, start), len * p->block_size, &done);
	if (err) {
		mark_failed(p, wb, err, start, len);
		vec_push(&p->leaked, start, len);
	}
	return err;
}

static void unmap_all_backends(struct rdm_planner *p, uint64_t start, uint64_t len)
{
	for (uint32_t i = 0; i < p->nbe; i++)
		unmap_one(p, p->be[i], start, len);
}

/* Does any mapping of the mapset intersect [a, b)? */
static bool has_mapping_in(const struct rdm_planner *p, uint64_t a, uint64_t b)
{
	struct rdm_layout_map *m = rdm_mapset_first_ending_after(&p->maps, a);

	return m && m->start < b;
}

static bool is_leaked(const struct rdm_planner *p, uint64_t start, uint64_t len)
{
	for (uint32_t i = 0; i < p->leaked.n; i++) {
		const struct rdm_range *l = &p->leaked.v[i];

		if (l->start < start + len && start < l->start + l->len)
			return true;
	}
	return false;
}

static void release_range(struct rdm_planner *p, uint64_t start, uint64_t len)
{
	if (p->leaked.n == 0) {
		rdm_region_release(p->region, start * p->block_size, len * p->block_size);
		return;
	}
	/* Release block by block around leaked ranges (rare: a backend failed). */
	uint64_t run = start, end = start + len;

	for (uint64_t b = start; b <= end; b++) {
		if (b == end || is_leaked(p, b, 1)) {
			if (b > run)
				rdm_region_release(p->region, run * p->block_size, (b - run) * p->block_size);
			run = b + 1;
		}
	}
}

void rdm_planner_flush(struct rdm_planner *p)
{
	struct rdm_range_vec *u = &p->pending_unmap, *r = &p->pending_release;

	if (u->n) {
		sort_ranges(u);
		uint64_t cs = u->v[0].start, ce = cs + u->v[0].len;

		for (uint32_t i = 1; i <= u->n; i++) {
			if (i < u->n && !has_mapping_in(p, ce, u->v[i].start)) {
				/* Adjacent, or a hole holding no mapping: one call. */
				ce = u->v[i].start + u->v[i].len;
				continue;
			}
			unmap_all_backends(p, cs, ce - cs);
			if (i < u->n) {
				cs = u->v[i].start;
				ce = cs + u->v[i].len;
			}
		}
		u->n = 0;
	}
	if (r->n) {
		sort_ranges(r);
		uint64_t cs = r->v[0].start, ce = cs + r->v[0].len;

		for (uint32_t i = 1; i <= r->n; i++) {
			if (i < r->n && r->v[i].start == ce) {
				ce += r->v[i].len;
				continue;
			}
			release_range(p, cs, ce - cs);
			if (i < r->n) {
				cs = r->v[i].start;
				ce = cs + r->v[i].len;
			}
		}
		r->n = 0;
	}
}

/* Is at most half of every backend's budget in use (counting `planned`)? */
static bool spare_mappings(const struct rdm_planner *p, uint64_t planned)
{
	for (uint32_t i = 0; i < p->nbe; i++)
		if (p->be[i]->used + planned >= p->be[i]->budget / 2)
			return false;
	return true;
}

/* Cut the unmapped run [a, b) into mapping pieces per policy. */
static int cut_run(const struct rdm_planner *p, uint64_t a, uint64_t b, struct rdm_range_vec *out)
{
	uint64_t step = p->policy == RDM_POLICY_BLOCK ? p->unit : p->chunk;

	while (a < b) {
		uint64_t next = (a / step + 1) * step;

		if (next > b)
			next = b;
		if (p->policy == RDM_POLICY_DEFER && next - a >= 2 * p->unit && spare_mappings(p, out->n)) {
			/* Two mappings, cut at the most aligned boundary inside:
			 * for a size-aligned run its midpoint. A later discard of
			 * either half is one exact UNMAP, and a discard inside
			 * a half defers at most half of the run. Spent only while
			 * the mapping budget has room to spare. */
			uint64_t cut = 0;

			for (int t = 63; t >= 0 && !cut; t--) {
				uint64_t c = ((a >> t) + 1) << t;

				if ((a >> t) + 1 != 0 && c > a && c < next && c % p->unit == 0)
					cut = c;
			}
			if (cut && vec_push(out, a, cut - a))
				return rdm_fail(-ENOMEM, "out of memory planning mappings");
			if (cut)
				a = cut;
		}
		if (vec_push(out, a, next - a))
			return rdm_fail(-ENOMEM, "out of memory planning mappings");
		a = next;
	}
	return 0;
}

static uint64_t headroom(const struct rdm_planner *p)
{
	/* Policies that may split keep room for the split a discard may need:
	 * it bisects at most two mappings, each split adds at most one. */
	return p->policy == RDM_POLICY_BLOCK ? 0 : 2;
}

static int check_limit(struct rdm_planner *p, uint64_t extra)
{
	for (uint32_t i = 0; i < p->nbe; i++) {
		struct rdm_wbackend *wb = p->be[i];

		if (wb->used + extra + headroom(p) > wb->budget) {
			(*p->stat_enospc)++;
			return rdm_fail(-ENOSPC,
					"mapping limit: backend %s would need %" PRIu64 " more mappings (+%" PRIu64
					" headroom) but holds %" PRIu64 " of its limit of %" PRIu64,
					rdm_backend_name(wb->b), extra, headroom(p), wb->used, wb->budget);
		}
	}
	return 0;
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

static int any_failed(const struct rdm_planner *p)
{
	for (uint32_t i = 0; i < p->nbe; i++)
		if (p->be[i]->failed)
			return rdm_fail(-EIO, "backend %s is marked failed: %s", rdm_backend_name(p->be[i]->b),
					p->be[i]->failed_why);
	return 0;
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
	err = any_failed(p);
	if (err)
		return err;
	rdm_planner_flush(p);

	/* Pass 1: blocks inside existing mappings (deferred) are reused; the
	 * runs between them become new pieces. */
	for (struct rdm_layout_map *m = rdm_mapset_first_ending_after(&p->maps, start); m && m->start < end;
	     m = rdm_mapset_next(&p->maps, m)) {
		overlapping++;
		if (m->start > pos) {
			err = cut_run(p, pos, m->start, &pieces);
			if (err)
				goto out;
		}
		pos = m->start + m->len;
	}
	if (pos < end) {
		err = cut_run(p, pos, end, &pieces);
		if (err)
			goto out;
	}
	err = check_limit(p, pieces.n);
	if (err)
		goto out;
	err = map_pieces(p, &pieces, p->be, p->nbe);
	if (err)
		goto out;

	/* Pass 2: commit (the lookup again only if pass 1 found mappings). */
	for (struct rdm_layout_map *m = overlapping ? rdm_mapset_first_ending_after(&p->maps, start) : NULL;
	     m && m->start < end; m = rdm_mapset_next(&p->maps, m)) {
		uint64_t a = m->start > start ? m->start : start;
		uint64_t b = m->start + m->len < end ? m->start + m->len : end;

		m->live += b - a;
		reused += b - a;
	}
	if (reused)
		update_deferred_stats(p, -(int64_t)reused);
	for (uint32_t i = 0; i < pieces.n; i++) {
		if (!rdm_mapset_insert(&p->maps, pieces.v[i].start, pieces.v[i].len, pieces.v[i].len)) {
			err = rdm_fail(-ENOMEM, "out of memory recording a mapping");
			/* Keep the layout truthful: unmap what has no record. */
			for (uint32_t k = i; k < pieces.n; k++)
				for (uint32_t j = 0; j < p->nbe; j++) {
					unmap_one(p, p->be[j], pieces.v[k].start, pieces.v[k].len);
					p->be[j]->used--;
				}
			goto out;
		}
	}
out:
	/* Keep a small list for the next populate, not a huge one. */
	if (pieces.cap > PIECES_KEEP)
		vec_free(&pieces);
	pieces.n = 0;
	p->pieces = pieces;
	return err;
}

/* Populated runs inside [a, b), from the region state (the applier's view). */
struct runs_ctx {
	struct rdm_range_vec *v;
	uint64_t bs;
};

static int collect_run(void *opaque, uint64_t offset, uint64_t length)
{
	struct runs_ctx *c = opaque;

	return vec_push(c->v, offset / c->bs, length / c->bs);
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

static int populated_runs(struct rdm_planner *p, uint64_t a, uint64_t b, struct rdm_range_vec *out)
{
	struct runs_ctx c = {out, p->block_size};

	return rdm_region_applier_runs(p->region, a * p->block_size, (b - a) * p->block_size, true, collect_run, &c);
}

/*
 * Replace mapping m by mappings of its populated runs: unmap it whole, map
 * the runs (a DMA window over them, counted as remapped bytes), release its
 * discarded blocks. Used by coalesce without a split-capable kernel and by
 * defer past its limit.
 */
static void split_with_window(struct rdm_planner *p, struct rdm_layout_map *m)
{
	struct rdm_range_vec runs = {0};
	uint64_t ms = m->start, ml = m->len, mlive = m->live;

	populated_runs(p, ms, ms + ml, &runs);
	rdm_planner_flush(p);
	unmap_all_backends(p, ms, ml);
	update_deferred_stats(p, -(int64_t)(ml - mlive));
	rdm_mapset_remove(&p->maps, m);
	for (uint32_t i = 0; i < p->nbe; i++)
		p->be[i]->used--;
	for (uint32_t i = 0; i < runs.n; i++) {
		const struct rdm_range *rr = &runs.v[i];

		for (uint32_t j = 0; j < p->nbe; j++) {
			int err = rdm_backend_map(p->be[j]->b, iova_of(p, rr->start), rr->len * p->block_size,
						  vaddr_of(p, rr->start));
			if (err) {
				/* Populated memory the device can no longer reach:
				 * nothing rdm can retry safely; the backend is failed. */
				mark_failed(p, p->be[j], err, rr->start, rr->len);
				continue;
			}
			p->be[j]->used++;
		}
		rdm_mapset_insert(&p->maps, rr->start, rr->len, rr->len);
		*p->stat_remapped_bytes += rr->len * p->block_size;
		for (uint32_t j = 0; j < p->nbe; j++)
			rdm_backend_note_remapped(p->be[j]->b, rr->len * p->block_size);
	}
	/* Everything of m that is not in a run is discarded: release it. */
	uint64_t pos = ms;

	for (uint32_t i = 0; i <= runs.n; i++) {
		uint64_t next = i < runs.n ? runs.v[i].start : ms + ml;

		if (next > pos)
			vec_push(&p->pending_release, pos, next - pos);
		if (i < runs.n)
			pos = runs.v[i].start + runs.v[i].len;
	}
	vec_free(&runs);
}

/* A split adds at most one mapping in every backend: is there room? */
static bool split_room(const struct rdm_planner *p)
{
	for (uint32_t i = 0; i < p->nbe; i++)
		if (p->be[i]->used + 1 > p->be[i]->budget)
			return false;
	return true;
}

/* Split-capable kernels: one UNMAP of exactly [a, b) inside m; the kernel
 * keeps the survivors mapped, no window. */
static void split_exact(struct rdm_planner *p, struct rdm_layout_map *m, uint64_t a, uint64_t b)
{
	uint64_t ms = m->start, me = m->start + m->len;

	rdm_planner_flush(p);
	unmap_all_backends(p, a, b - a);
	vec_push(&p->pending_release, a, b - a);
	rdm_mapset_remove(&p->maps, m);
	for (uint32_t i = 0; i < p->nbe; i++)
		p->be[i]->used--;
	if (a > ms) {
		rdm_mapset_insert(&p->maps, ms, a - ms, populated_blocks(p, ms, a));
		for (uint32_t i = 0; i < p->nbe; i++)
			p->be[i]->used++;
	}
	if (me > b) {
		rdm_mapset_insert(&p->maps, b, me - b, populated_blocks(p, b, me));
		for (uint32_t i = 0; i < p->nbe; i++)
			p->be[i]->used++;
	}
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
		 * with deferred blocks (stamp kept in the high bits of prio is
		 * not possible; a linear scan is fine on this rare path). */
		struct rdm_layout_map *oldest = NULL;

		for (struct rdm_layout_map *m = rdm_mapset_first_ending_after(&p->maps, 0); m;
		     m = rdm_mapset_next(&p->maps, m))
			if (m->live < m->len && (!oldest || m->stamp < oldest->stamp))
				oldest = m;
		if (!oldest)
			break;
		split_with_window(p, oldest);
	}
}

void rdm_planner_discard(struct rdm_planner *p, uint64_t start, uint64_t len)
{
	uint64_t end = start + len, pos = start;
	struct rdm_layout_map *m, *next;

	for (m = rdm_mapset_first_ending_after(&p->maps, start); m && m->start < end; m = next) {
		uint64_t a = m->start > start ? m->start : start;
		uint64_t b = m->start + m->len < end ? m->start + m->len : end;
		uint64_t ov = b - a;

		/* A mapping after m starts at or past m's end: only if that is
		 * inside the range can the loop need it. */
		next = m->start + m->len < end ? rdm_mapset_next(&p->maps, m) : NULL;
		if (a > pos)
			vec_push(&p->pending_release, pos, a - pos);
		pos = b;
		m->live -= ov;
		if (m->live == 0) {
			/* The whole mapping can go: one UNMAP, and every block of it
			 * (earlier deferred ones included) is released after it. */
			update_deferred_stats(p, -(int64_t)(m->len - ov));
			vec_push(&p->pending_unmap, m->start, m->len);
			vec_push(&p->pending_release, m->start, m->len);
			for (uint32_t i = 0; i < p->nbe; i++)
				p->be[i]->used--;
			rdm_mapset_remove(&p->maps, m);
			continue;
		}
		/* A discard inside a mapping that stays partly populated. */
		if (m->live + ov == m->len)
			m->stamp = ++p->defer_stamp;
		if (p->policy == RDM_POLICY_COALESCE && split_room(p)) {
			if (all_can_split(p)) {
				split_exact(p, m, a, b);
				continue;
			}
			if (p->allow_windows) {
				/* split_with_window() takes len - live as the
				 * deferred blocks already counted: these are not. */
				m->live += ov;
				split_with_window(p, m);
				continue;
			}
		}
		/* Deferred: defer's way, or coalesce past the limit (counted). */
		if (p->policy == RDM_POLICY_COALESCE)
			(*p->stat_defer_exceeded)++;
		update_deferred_stats(p, (int64_t)ov);
	}
	if (pos < end)
		vec_push(&p->pending_release, pos, end - pos);
	if (p->policy == RDM_POLICY_DEFER)
		enforce_defer_limit(p);
}

static int map_layout_into(struct rdm_planner *p, struct rdm_wbackend *wb)
{
	struct rdm_range_vec pieces = {0};
	int err = 0;

	for (struct rdm_layout_map *m = rdm_mapset_first_ending_after(&p->maps, 0); m; m = rdm_mapset_next(&p->maps, m))
		if (vec_push(&pieces, m->start, m->len)) {
			vec_free(&pieces);
			return rdm_fail(-ENOMEM, "out of memory attaching a backend");
		}
	if (wb->used + pieces.n + headroom(p) > wb->budget) {
		(*p->stat_enospc)++;
		err = rdm_fail(-ENOSPC,
			       "mapping limit: attaching needs %" PRIu32 " mappings but backend %s holds %" PRIu64
			       " of its limit of %" PRIu64,
			       pieces.n, rdm_backend_name(wb->b), wb->used, wb->budget);
	} else {
		err = map_pieces(p, &pieces, &wb, 1);
	}
	vec_free(&pieces);
	return err;
}

int rdm_planner_attach(struct rdm_planner *p, struct rdm_wbackend *wb)
{
	int err = rdm_planner_check_backend(p, wb);

	if (err)
		return err;
	if (wb->failed)
		return rdm_fail(-EIO, "backend %s is marked failed: %s", rdm_backend_name(wb->b), wb->failed_why);
	rdm_planner_flush(p);
	if (p->nbe == 0) {
		/* First backend: lay out the populated state. */
		struct rdm_range_vec runs = {0}, pieces = {0};

		err = populated_runs(p, 0, p->nblocks, &runs);
		for (uint32_t i = 0; !err && i < runs.n; i++)
			err = cut_run(p, runs.v[i].start, runs.v[i].start + runs.v[i].len, &pieces);
		vec_free(&runs);
		for (uint32_t i = 0; !err && i < pieces.n; i++)
			if (!rdm_mapset_insert(&p->maps, pieces.v[i].start, pieces.v[i].len, pieces.v[i].len))
				err = rdm_fail(-ENOMEM, "out of memory recording a mapping");
		vec_free(&pieces);
		if (!err)
			err = map_layout_into(p, wb);
		if (err) {
			rdm_mapset_clear(&p->maps);
			return err;
		}
	} else {
		err = map_layout_into(p, wb);
		if (err)
			return err;
	}
	p->be[p->nbe++] = wb;
	return 0;
}

/* Release the discarded blocks still inside mappings (deferred ones). */
static void release_deferred(struct rdm_planner *p)
{
	for (struct rdm_layout_map *m = rdm_mapset_first_ending_after(&p->maps, 0); m; m = rdm_mapset_next(&p->maps, m)) {
		if (m->live == m->len)
			continue;
		struct rdm_range_vec runs = {0};
		uint64_t pos = m->start;

		populated_runs(p, m->start, m->start + m->len, &runs);
		for (uint32_t i = 0; i <= runs.n; i++) {
			uint64_t next = i < runs.n ? runs.v[i].start : m->start + m->len;

			if (next > pos)
				vec_push(&p->pending_release, pos, next - pos);
			if (i < runs.n)
				pos = runs.v[i].start + runs.v[i].len;
		}
		vec_free(&runs);
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
		rdm_mapset_clear(&p->maps);
		rdm_planner_flush(p);
	}
	return 0;
}

void rdm_planner_teardown(struct rdm_planner *p)
{
	while (p->nbe)
		rdm_planner_detach(p, p->be[p->nbe - 1]);
	rdm_planner_flush(p);
}
