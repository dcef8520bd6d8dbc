/* test_lower_bound.c - the offline lower bound on hand-checked traces, and against brute force on small random ones. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/check.h"
#include "tools/replay/lower_bound.h"
#include "tools/replay/util.h"

#define P REPLAY_POPULATE
#define D REPLAY_DISCARD
#define A REPLAY_DISCARD_ALL

struct step {
	uint32_t op;
	uint64_t first, n; /* blocks */
};

static struct replay_lower_bound lb_of(const struct step *s, size_t n, uint64_t blocks)
{
	struct replay_trace t = { .block_size = 4096, .region_size = blocks * 4096 };
	struct replay_lower_bound lb;

	for (size_t i = 0; i < n; i++)
		replay_trace_push(&t, s[i].op, s[i].op == A ? 0 : s[i].first * 4096,
				  s[i].op == A ? t.region_size : s[i].n * 4096);
	REQUIRE(replay_lower_bound(&t, &lb) == 0);
	replay_trace_free(&t);
	return lb;
}

#define LB(steps, blocks) lb_of(steps, sizeof(steps) / sizeof(steps[0]), blocks)

static void hand_checked(void)
{
	struct replay_lower_bound lb;

	/* One populate, discarded in three pieces: 3 maps (cut at 2 and 4), 3 unmaps. */
	static const struct step s1[] = { { P, 0, 8 }, { D, 2, 2 }, { D, 0, 2 }, { D, 4, 4 } };
	lb = LB(s1, 8);
	CHECK(lb.maps == 3 && lb.unmaps == 3 && lb.calls == 6 && lb.peak_mappings == 3);

	/* Populate then discard_all: one map, one unmap. */
	static const struct step s2[] = { { P, 0, 8 }, { A, 0, 0 } };
	lb = LB(s2, 8);
	CHECK(lb.maps == 1 && lb.unmaps == 1 && lb.peak_mappings == 1);

	/* A hole, then discard_all takes two separate pieces in one unmap. */
	static const struct step s3[] = { { P, 0, 8 }, { D, 2, 2 }, { A, 0, 0 } };
	lb = LB(s3, 8);
	CHECK(lb.maps == 3 && lb.unmaps == 2);

	/* Two populates discarded together: one map each, one unmap over both (adjacent whole mappings). */
	static const struct step s4[] = { { P, 0, 4 }, { P, 4, 4 }, { D, 0, 8 } };
	lb = LB(s4, 8);
	CHECK(lb.maps == 2 && lb.unmaps == 1 && lb.calls == 3 && lb.peak_mappings == 2);

	/* Re-populate after discard: the memory was released, so it maps anew. Never discarded: still one map. */
	static const struct step s5[] = { { P, 0, 4 }, { D, 0, 4 }, { P, 0, 4 } };
	lb = LB(s5, 4);
	CHECK(lb.maps == 2 && lb.unmaps == 1 && lb.peak_mappings == 1);

	/* Two single-block discards inside one populate: 4 pieces ([0,1) [1,2) [2,3) [3,4)), 2 unmaps. */
	static const struct step s6[] = { { P, 0, 4 }, { D, 1, 1 }, { D, 2, 1 } };
	lb = LB(s6, 4);
	CHECK(lb.maps == 4 && lb.unmaps == 2 && lb.peak_mappings == 4);

	/* A discard spanning two populates (trace A's "spans two plugs"): 2 pieces, 1 unmap. */
	static const struct step s7[] = { { P, 0, 4 }, { P, 4, 4 }, { D, 2, 4 }, { D, 0, 2 }, { D, 6, 2 } };
	lb = LB(s7, 8);
	CHECK(lb.maps == 4 && lb.unmaps == 3);

	/* Lenient: a populate over populated blocks maps only the new ones; discard_all of nothing costs nothing. */
	static const struct step s8[] = { { A, 0, 0 }, { P, 2, 2 }, { P, 0, 8 }, { A, 0, 0 } };
	lb = LB(s8, 8);
	CHECK(lb.maps == 3 && lb.unmaps == 1);

	/* Empty trace. */
	lb = lb_of(NULL, 0, 8);
	CHECK(lb.calls == 0 && lb.peak_mappings == 0);

	/* Peak: mappings alive at once across requests. */
	static const struct step s9[] = { { P, 0, 2 }, { P, 2, 2 }, { D, 0, 2 }, { P, 4, 2 }, { P, 6, 2 } };
	lb = LB(s9, 8);
	CHECK(lb.maps == 4 && lb.unmaps == 1 && lb.peak_mappings == 3);
}

/*
 * Brute force on tiny traces: the bound is the sum over populates of the
 * number of maximal runs of equal "first later discard" among their blocks,
 * plus one unmap per discard that discards anything. Computed directly from
 * that definition, per block, without the incremental bookkeeping.
 */
static uint64_t brute(const struct step *s, size_t n, uint64_t blocks)
{
	uint64_t calls = 0;
	int64_t owner[16];

	for (uint64_t x = 0; x < blocks; x++)
		owner[x] = -1;
	for (size_t i = 0; i < n; i++) {
		uint64_t f = s[i].op == A ? 0 : s[i].first, e = s[i].op == A ? blocks : s[i].first + s[i].n;

		if (s[i].op == P) {
			int64_t prev_d = -2;
			bool in_run = false;
			for (uint64_t x = f; x < e; x++) {
				if (owner[x] >= 0) {
					in_run = false;
					continue;
				}
				/* d(x): the first later request that discards x. */
				int64_t d = -1;
				for (size_t j = i + 1; j < n && d < 0; j++) {
					uint64_t jf = s[j].op == A ? 0 : s[j].first;
					uint64_t je = s[j].op == A ? blocks : s[j].first + s[j].n;
					if (s[j].op != P && x >= jf && x < je)
						d = (int64_t)j;
				}
				if (!in_run || d != prev_d)
					calls++;
				prev_d = d;
				in_run = true;
			}
			for (uint64_t x = f; x < e; x++)
				if (owner[x] < 0)
					owner[x] = (int64_t)i;
		} else {
			bool any = false;
			for (uint64_t x = f; x < e; x++) {
				any |= owner[x] >= 0;
				owner[x] = -1;
			}
			calls += any;
		}
	}
	return calls;
}

static void random_traces(uint64_t seed)
{
	struct replay_rng rng;

	replay_rng_seed(&rng, seed);
	for (int iter = 0; iter < 3000; iter++) {
		struct step s[24];
		uint64_t blocks = 1 + replay_rng_below(&rng, 16);
		size_t n = 1 + (size_t)replay_rng_below(&rng, 24);

		for (size_t i = 0; i < n; i++) {
			uint64_t r = replay_rng_below(&rng, 20);
			s[i].op = r < 10 ? P : r < 19 ? D : A;
			s[i].first = replay_rng_below(&rng, blocks);
			s[i].n = 1 + replay_rng_below(&rng, blocks - s[i].first);
		}
		struct replay_lower_bound lb = lb_of(s, n, blocks);
		uint64_t want = brute(s, n, blocks);
		if (lb.calls != want) {
			fprintf(stderr, "seed %" PRIu64 " iter %d: lower bound %" PRIu64 ", brute force %" PRIu64 "\n", seed,
				iter, lb.calls, want);
			check_failures++;
			return;
		}
	}
}

int main(int argc, char **argv)
{
	uint64_t seed = argc > 1 ? strtoull(argv[1], NULL, 0) : getenv("RDM_TEST_SEED") ? strtoull(getenv("RDM_TEST_SEED"), NULL, 0) : 1;

	printf("seed %" PRIu64 " (override: argv[1] or RDM_TEST_SEED)\n", seed);
	hand_checked();
	random_traces(seed);
	return check_exit();
}
