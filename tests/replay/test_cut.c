/* test_cut.c - the fixed-cut reference strategies: calls and deferred bytes on hand-computed traces, on the sim. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "tests/check.h"
#include "tools/replay/run.h"
#include "tools/replay/strategy.h"

#define MiB (UINT64_C(1) << 20)

static const struct replay_strategy *cut(const char *name)
{
	for (size_t i = 0; i < REPLAY_NCUTS; i++)
		if (strcmp(replay_cut_strategies[i]->name, name) == 0)
			return replay_cut_strategies[i];
	REQUIRE(!"no such cut strategy");
	return NULL;
}

static struct replay_result run(const struct replay_strategy *s, const struct replay_trace *t)
{
	struct replay_backend_spec be = { .kind = REPLAY_BACKEND_SIM, .container_fd = -1, .group_fd = -1 };
	struct replay_result r;
	char err[REPLAY_ERR_LEN];

	if (replay_run_strategy(t, s, &be, &r, err, sizeof(err)) < 0) {
		fprintf(stderr, "%s: %s\n", s->name, err);
		check_failures++;
	}
	return r;
}

/*
 * 2 MiB blocks, 64 MiB region, cut-8M. After each request: calls so far
 * (maps, unmaps) and deferred MiB.
 *   P [0,16)    maps [0,8) [8,16)                          2,0  def 0
 *   D [2,4)     inside [0,8), which stays populated         2,0  def 2
 *   P [2,4)     a deferred block again: no call              2,0  def 0
 *   D [0,6)                                                  2,0  def 6 (peak)
 *   D [6,8)     [0,8) has nothing populated: unmapped        2,1  def 0
 *   P [6,8)     one new mapping [6,8)                        3,1  def 0
 *   D [8,10)    inside [8,16)                                3,1  def 2
 *   P [24,40)   cut at 32: [24,32) [32,40)                   5,1  def 2
 *   D [6,8)     [6,8) unmapped; [8,16) keeps its deferred    5,2  def 2
 *   unplug_all  [8,16), hole, [24,32), [32,40): one unmap    5,3  def 0
 * Integrated: 2 + 6 + 2 + 2 + 2 = 14 MiB-requests.
 */
static void test_cut8(void)
{
	struct replay_trace t = { .block_size = 2 * MiB, .region_size = 64 * MiB };
	struct replay_result r;

	snprintf(t.name, sizeof(t.name), "cut8");
	replay_trace_push(&t, REPLAY_POPULATE, 0, 16 * MiB);
	replay_trace_push(&t, REPLAY_DISCARD, 2 * MiB, 2 * MiB);
	replay_trace_push(&t, REPLAY_POPULATE, 2 * MiB, 2 * MiB);
	replay_trace_push(&t, REPLAY_DISCARD, 0, 6 * MiB);
	replay_trace_push(&t, REPLAY_DISCARD, 6 * MiB, 2 * MiB);
	replay_trace_push(&t, REPLAY_POPULATE, 6 * MiB, 2 * MiB);
	replay_trace_push(&t, REPLAY_DISCARD, 8 * MiB, 2 * MiB);
	replay_trace_push(&t, REPLAY_POPULATE, 24 * MiB, 16 * MiB);
	replay_trace_push(&t, REPLAY_DISCARD, 6 * MiB, 2 * MiB);
	replay_trace_push(&t, REPLAY_DISCARD_ALL, 0, 64 * MiB);
	r = run(cut("cut-8M"), &t);
	CHECK(r.map_calls == 5 && r.unmap_calls == 3 && r.calls == 8);
	CHECK(r.deferred_peak_bytes == 6 * MiB);
	CHECK(r.deferred_end_bytes == 0);
	CHECK(r.deferred_integrated == 14 * MiB);
	CHECK(r.peak_mappings == 4 && r.failed_requests == 0 && r.remapped_bytes == 0);

	/* Stop before unplug_all: [8,16) still holds its deferred block. */
	t.n -= 1;
	r = run(cut("cut-8M"), &t);
	CHECK(r.map_calls == 5 && r.unmap_calls == 2);
	CHECK(r.deferred_end_bytes == 2 * MiB && r.deferred_integrated == 14 * MiB);

	/* cut-4M: P [0,16) is 4 maps; D [2,4) leaves [0,4) partly populated, deferred 2 MiB. */
	t.n = 2;
	r = run(cut("cut-4M"), &t);
	CHECK(r.map_calls == 4 && r.unmap_calls == 0 && r.deferred_end_bytes == 2 * MiB);
	replay_trace_free(&t);
}

/* A cut below the block size: one block per mapping, nothing is ever deferred (QEMU's maps). */
static void test_cut_below_block(void)
{
	struct replay_trace t = { .block_size = 8 * MiB, .region_size = 64 * MiB };
	struct replay_result r;

	snprintf(t.name, sizeof(t.name), "big-blocks");
	replay_trace_push(&t, REPLAY_POPULATE, 0, 32 * MiB);
	replay_trace_push(&t, REPLAY_DISCARD, 8 * MiB, 16 * MiB); /* two whole mappings, adjacent: one call */
	replay_trace_push(&t, REPLAY_DISCARD, 0, 8 * MiB);
	r = run(cut("cut-4M"), &t);
	CHECK(r.map_calls == 4 && r.unmap_calls == 2);
	CHECK(r.deferred_peak_bytes == 0 && r.deferred_integrated == 0);
	replay_trace_free(&t);
}

int main(void)
{
	test_cut8();
	test_cut_below_block();
	return check_exit();
}
