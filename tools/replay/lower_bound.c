/* SPDX-License-Identifier: MIT */
/*
 * tools/replay/lower_bound.c - the offline lower bound.
 *
 * Theory. A map call can only cover blocks its request populates: the blocks
 * populated earlier are mapped already (an overlapping map is EEXIST), and
 * mapping a discarded block would pin memory the guest gave back (deferred
 * reclaim). A mapping can only be removed whole (type1 rejects a bisecting
 * unmap), and only when every block of it is discarded (otherwise populated
 * memory loses its mapping: a window) and no later than the discard that
 * discards its first block (otherwise reclaim is deferred). So every block of
 * a mapping is discarded by the same request. For a populate P, let d(x) be
 * the request that first discards block x after P (or none). The fewest maps
 * for P is the number of maximal runs of P's blocks with constant d(x): cut
 * each populated range exactly where later discards cut it. Each discard
 * that discards at least one block needs at least one unmap, and one always
 * suffices: its range holds only blocks it discards and holes, and no
 * mapping of the cut plan straddles its ends. Both minima are reached by
 * the same plan, so their sum is the bound.
 *
 * Computation: owner[block] = 1 + index of the populate that mapped it (0:
 * discarded). A discard's pieces are the maximal runs of one owner inside
 * its range; what is left at the end are the maximal runs of one owner over
 * the region. Runs of one owner are never adjacent unless they are one
 * piece: a populate's blocks are contiguous when it happens, and a discard
 * removes the blocks between any two of its survivors.
 *
 * Invariants:
 *  1. owner[x] != 0 exactly when block x is populated after the requests so far.
 *  2. maps == pieces removed so far + pieces alive; every alive piece is one
 *     maximal run of one owner.
 *  3. unmaps counts the discards that discarded at least one block.
 */
#include "tools/replay/lower_bound.h"

#include <errno.h>
#include <stdlib.h>

int replay_lower_bound(const struct replay_trace *t, struct replay_lower_bound *out)
{
	uint64_t blocks = t->region_size / t->block_size;
	uint32_t *owner = calloc((size_t)blocks, sizeof(*owner));
	int64_t *delta = calloc(t->n + 1, sizeof(*delta)); /* mappings born/dying at each request */
	struct replay_lower_bound lb = { 0 };

	if (!owner || !delta || t->n >= UINT32_MAX) {
		free(owner);
		free(delta);
		return -ENOMEM;
	}
	for (size_t i = 0; i < t->n; i++) {
		const struct replay_req *r = &t->reqs[i];
		uint64_t first = r->offset / t->block_size, end = first + r->length / t->block_size;

		if (r->op == REPLAY_DISCARD_ALL) {
			first = 0;
			end = blocks;
		}
		if (r->op == REPLAY_POPULATE) {
			for (uint64_t x = first; x < end; x++) {
				if (!owner[x]) {
					owner[x] = (uint32_t)i + 1;
					lb.bytes_mapped += t->block_size;
				}
			}
			continue;
		}
		uint64_t pieces = 0;
		uint32_t prev = 0;
		for (uint64_t x = first; x < end; x++) {
			uint32_t o = owner[x];
			if (o && o != prev) {
				pieces++;
				delta[o - 1]++;
				delta[i]--;
			}
			prev = o;
			if (o)
				lb.bytes_unmapped += t->block_size;
			owner[x] = 0;
		}
		lb.maps += pieces;
		if (pieces)
			lb.unmaps++;
	}
	uint32_t prev = 0;
	for (uint64_t x = 0; x < blocks; x++) {
		uint32_t o = owner[x];
		if (o && o != prev) {
			lb.maps++;
			delta[o - 1]++;
		}
		prev = o;
	}
	int64_t live = 0;
	for (size_t i = 0; i < t->n; i++) {
		live += delta[i];
		if (live > 0 && (uint64_t)live > lb.peak_mappings)
			lb.peak_mappings = (uint64_t)live;
	}
	lb.calls = lb.maps + lb.unmaps;
	*out = lb;
	free(owner);
	free(delta);
	return 0;
}
