/* SPDX-License-Identifier: MIT */
/*
 * tools/replay/strategy_cut.c - the fixed-cut references: what a fixed cut
 * size gives, calls against deferred memory, with zero DMA windows.
 *
 * cut-<C> maps each populate's not-yet-mapped blocks as maximal runs cut at
 * every multiple of C (a mapping never crosses one; a mapping is at least
 * one block, so C below the block size means one block per mapping). A
 * discard unmaps every mapping it leaves without a populated block (released
 * mappings with no other mapping between them go in one call, as type1
 * allows: the range covers whole mappings and holes); a mapping that keeps a
 * populated block stays mapped and its discarded blocks are deferred until
 * its last populated block is discarded. Populating a deferred block again
 * costs no call (it is still mapped). unplug_all releases everything.
 *
 * State: three bits per block - populated, mapped, and "first block of a
 * mapping" - so a mapping is the run from a start bit to the next start
 * bit, unmapped block or cut boundary. Invariant: populated implies mapped;
 * deferred = mapped and not populated.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "tools/replay/strategy.h"
#include "tools/replay/util.h"

struct cut {
	struct replay_geometry g;
	struct rdm_backend *b;
	uint64_t nblocks;
	uint64_t chunk;     /* blocks between cut points (>= 1) */
	uint64_t *pop, *map, *start;
	uint64_t deferred;  /* blocks */
	uint64_t deferred_peak;
	uint64_t failed;
};

/* First i in [from, end) whose bit is v, or end. Word at a time. */
static uint64_t bm_next(const uint64_t *w, uint64_t from, uint64_t end, bool v)
{
	uint64_t i = from;

	while (i < end) {
		uint64_t word = v ? w[i / 64] : ~w[i / 64];

		word &= UINT64_MAX << (i % 64);
		if (word) {
			uint64_t j = i / 64 * 64 + (uint64_t)__builtin_ctzll(word);
			return j < end ? j : end;
		}
		i = (i / 64 + 1) * 64;
	}
	return end;
}

/*
 * Last i <= from whose bit is set; one must exist (a mapped block's mapping
 * has its start bit at or before it). Word at a time.
 */
static uint64_t bm_prev_set(const uint64_t *w, uint64_t from)
{
	uint64_t wi = from / 64;
	uint64_t word = w[wi] & (UINT64_MAX >> (63 - from % 64));

	while (!word)
		word = w[--wi];
	return wi * 64 + 63 - (uint64_t)__builtin_clzll(word);
}

static uint64_t chunk_end(const struct cut *s, uint64_t blk)
{
	uint64_t e = (blk / s->chunk + 1) * s->chunk;

	return e < s->nblocks ? e : s->nblocks;
}

/* The mapping that contains mapped block blk: [*ms, *me). */
static void mapping_of(const struct cut *s, uint64_t blk, uint64_t *ms, uint64_t *me)
{
	uint64_t i = bm_prev_set(s->start, blk);

	*ms = i;
	uint64_t e = chunk_end(s, i);
	e = bm_next(s->map, i + 1, e, false);
	*me = bm_next(s->start, i + 1, e, true);
}

/*
 * The k-th piece a populate of [first, first + n) maps: maximal runs of
 * unmapped blocks, cut at chunk boundaries. *pos walks the range; returns
 * false when there is no further piece.
 */
static bool next_piece(const struct cut *s, uint64_t *pos, uint64_t end, uint64_t *ps, uint64_t *pe)
{
	uint64_t a = bm_next(s->map, *pos, end, false);
	uint64_t ce;

	if (a >= end)
		return false;
	ce = chunk_end(s, a);
	*ps = a;
	*pe = bm_next(s->map, a, ce < end ? ce : end, true);
	*pos = *pe;
	return true;
}

static int do_map(struct cut *s, uint64_t a, uint64_t e)
{
	uint64_t bs = s->g.block_size;

	return rdm_backend_map(s->b, s->g.iova + a * bs, (e - a) * bs, s->g.host_addr + a * bs);
}

static int do_unmap(struct cut *s, uint64_t a, uint64_t e)
{
	uint64_t bs = s->g.block_size;

	return rdm_backend_unmap(s->b, s->g.iova + a * bs, (e - a) * bs, NULL);
}

static int cut_populate(struct cut *s, uint64_t first, uint64_t n)
{
	uint64_t end = first + n, pos = first, a, e, mapped = 0;
	int rc = 0;

	/* Map first, change the bits after: a failure unmaps the pieces mapped so far. */
	while (next_piece(s, &pos, end, &a, &e)) {
		rc = do_map(s, a, e);
		if (rc < 0)
			break;
		mapped++;
	}
	if (rc < 0) {
		pos = first;
		for (uint64_t k = 0; k < mapped && next_piece(s, &pos, end, &a, &e); k++)
			(void)do_unmap(s, a, e);
		return rc;
	}
	/* Deferred blocks populated again: still mapped, no call. */
	for (uint64_t i = first; i < end; i++)
		if (!bm_test(s->pop, i) && bm_test(s->map, i))
			s->deferred--;
	pos = first;
	while (next_piece(s, &pos, end, &a, &e)) {
		for (uint64_t i = a; i < e; i++)
			bm_set(s->map, i, true);
		bm_set(s->start, a, true);
	}
	for (uint64_t i = first; i < end; i++)
		bm_set(s->pop, i, true);
	return 0;
}

static int cut_discard(struct cut *s, uint64_t first, uint64_t n)
{
	uint64_t end = first + n, us = 0, ue = 0;
	bool run = false;
	int rc = 0;

	for (uint64_t i = first; i < end; i++) {
		if (bm_test(s->pop, i)) {
			bm_set(s->pop, i, false);
			s->deferred++; /* mapped (populated implies mapped) */
		}
	}
	/* Every mapping that meets the range: released if nothing in it is populated. */
	uint64_t p = bm_next(s->map, first, end, true);
	while (p < end) {
		uint64_t ms, me;

		mapping_of(s, p, &ms, &me);
		if (bm_all(s->pop, ms, me - ms, false)) {
			for (uint64_t i = ms; i < me; i++)
				bm_set(s->map, i, false);
			bm_set(s->start, ms, false);
			s->deferred -= me - ms;
			/* Merge with the pending unmap if only holes lie between them. */
			if (run && bm_all(s->map, ue, ms - ue, false)) {
				ue = me;
			} else {
				if (run) {
					int r = do_unmap(s, us, ue);
					if (r < 0 && rc == 0)
						rc = r;
				}
				us = ms;
				ue = me;
				run = true;
			}
		}
		p = bm_next(s->map, me, end, true);
	}
	if (run) {
		int r = do_unmap(s, us, ue);
		if (r < 0 && rc == 0)
			rc = r;
	}
	/* The peak as the request leaves it (what a completed discard leaves mapped). */
	if (s->deferred > s->deferred_peak)
		s->deferred_peak = s->deferred;
	/* A discard cannot be refused: the state changed whatever the backend said. */
	return rc;
}

static int cut_apply(void *state, const struct replay_req *req)
{
	struct cut *s = state;
	uint64_t first = req->offset / s->g.block_size, n = req->length / s->g.block_size;
	int rc;

	switch (req->op) {
	case REPLAY_POPULATE: rc = cut_populate(s, first, n); break;
	case REPLAY_DISCARD: rc = cut_discard(s, first, n); break;
	case REPLAY_DISCARD_ALL: rc = cut_discard(s, 0, s->nblocks); break;
	default: rc = -EINVAL; break;
	}
	if (rc < 0)
		s->failed++;
	return rc;
}

static void cut_stats(void *state, struct replay_strategy_stats *st)
{
	const struct cut *s = state;

	st->deferred_bytes = s->deferred * s->g.block_size;
	st->deferred_peak_bytes = s->deferred_peak * s->g.block_size;
	st->failed_requests = s->failed;
}

static void cut_destroy(void *state)
{
	struct cut *s = state;

	if (s) {
		free(s->pop);
		free(s->map);
		free(s->start);
		free(s);
	}
}

static int cut_create(uint64_t cut, const struct replay_geometry *g, struct rdm_backend *b, void **state)
{
	struct cut *s = calloc(1, sizeof(*s));

	if (!s)
		return -ENOMEM;
	s->g = *g;
	s->b = b;
	s->nblocks = g->size / g->block_size;
	s->chunk = cut > g->block_size ? cut / g->block_size : 1;
	s->pop = bm_alloc(s->nblocks);
	s->map = bm_alloc(s->nblocks);
	s->start = bm_alloc(s->nblocks);
	if (!s->pop || !s->map || !s->start) {
		cut_destroy(s);
		return -ENOMEM;
	}
	*state = s;
	return 0;
}

#define MiB (UINT64_C(1) << 20)
#define CUT(mib)                                                                                        \
	static int create_##mib(const struct replay_geometry *g, struct rdm_backend *b, void **state)   \
	{                                                                                               \
		return cut_create((mib) * MiB, g, b, state);                                            \
	}                                                                                               \
	static const struct replay_strategy cut_##mib = {                                               \
		.name = "cut-" #mib "M",                                                                \
		.help = "reference: mappings cut at every " #mib " MiB; partly discarded ones deferred", \
		.baseline = true,                                                                       \
		.create = create_##mib,                                                                 \
		.apply = cut_apply,                                                                     \
		.stats = cut_stats,                                                                     \
		.defers = true,                                                                         \
		.destroy = cut_destroy,                                                                 \
	};

CUT(4)
CUT(8)
CUT(16)
CUT(32)
CUT(64)
CUT(128)

const struct replay_strategy *const replay_cut_strategies[REPLAY_NCUTS] = {
	&cut_4, &cut_8, &cut_16, &cut_32, &cut_64, &cut_128,
};
