/* test_baselines.c - the qemu, cloud-hypervisor and naive strategies' call counts on small traces, on the sim. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "tests/check.h"
#include "tools/replay/run.h"
#include "tools/replay/strategy.h"

#define MiB (UINT64_C(1) << 20)

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

/* 2 MiB blocks in a 64 MiB region: plug 16 MiB (8 blocks), unplug 2 MiB, unplug 4 MiB, plug 2 MiB, unplug_all. */
static void small_trace(struct replay_trace *t)
{
	memset(t, 0, sizeof(*t));
	snprintf(t->name, sizeof(t->name), "small");
	t->block_size = 2 * MiB;
	t->region_size = 64 * MiB;
	replay_trace_push(t, REPLAY_POPULATE, 0, 16 * MiB);
	replay_trace_push(t, REPLAY_DISCARD, 14 * MiB, 2 * MiB);
	replay_trace_push(t, REPLAY_DISCARD, 4 * MiB, 4 * MiB);
	replay_trace_push(t, REPLAY_POPULATE, 32 * MiB, 2 * MiB);
	replay_trace_push(t, REPLAY_DISCARD_ALL, 0, 64 * MiB);
	replay_trace_push(t, REPLAY_DISCARD_ALL, 0, 64 * MiB); /* nothing populated: no call */
}

static void test_counts(void)
{
	struct replay_trace t;
	struct replay_result r;

	small_trace(&t);
	/* qemu: 8 + 1 maps; one unmap per discard notification (2) + one for the first unplug_all. */
	r = run(&replay_strategy_qemu, &t);
	CHECK(r.map_calls == 9 && r.unmap_calls == 3 && r.calls == 12);
	CHECK(r.peak_mappings == 8 && r.limit_exceeded == 0 && r.failed_requests == 0);
	CHECK(r.remapped_bytes == 0 && r.deferred_peak_bytes == 0);
	CHECK(r.model_ns > 0 && r.requests == 6);
	/* cloud-hypervisor: the same calls on a trace with no failure. */
	r = run(&replay_strategy_cloud_hypervisor, &t);
	CHECK(r.map_calls == 9 && r.unmap_calls == 3 && r.failed_requests == 0);
	/* naive: a call per block both ways: unmaps 1 + 2 + (8 - 3 + 1) at unplug_all. */
	r = run(&replay_strategy_naive, &t);
	CHECK(r.map_calls == 9 && r.unmap_calls == 9 && r.calls == 18 && r.failed_requests == 0);
	replay_trace_free(&t);
}

static void test_limit_exceeded(void)
{
	struct replay_trace t = { .block_size = 4096, .region_size = 512 * MiB };
	struct replay_result r;

	snprintf(t.name, sizeof(t.name), "big");
	/* 131072 one-page blocks populated at once: 65537 past the default limit. */
	replay_trace_push(&t, REPLAY_POPULATE, 0, 512 * MiB);
	replay_trace_push(&t, REPLAY_DISCARD, 0, 512 * MiB);
	r = run(&replay_strategy_qemu, &t);
	CHECK(r.map_calls == 131072 && r.unmap_calls == 1);
	CHECK(r.peak_mappings == 131072 && r.limit_exceeded == 131072 - 65535);
	CHECK(r.failed_requests == 0);
	replay_trace_free(&t);
}

/* A non-baseline strategy gets the default-limit sim; a failing populate is counted, not fatal. */
static void test_limited_sim(void)
{
	struct replay_strategy limited = replay_strategy_qemu;
	struct replay_trace t = { .block_size = 4096, .region_size = 512 * MiB };
	struct replay_result r;

	limited.name = "qemu-on-limited-sim";
	limited.baseline = false;
	snprintf(t.name, sizeof(t.name), "big");
	replay_trace_push(&t, REPLAY_POPULATE, 0, 256 * MiB);       /* 65536 blocks: the last map is refused */
	replay_trace_push(&t, REPLAY_POPULATE, 256 * MiB, 4096);    /* fits again after the rollback */
	r = run(&limited, &t);
	CHECK(r.failed_requests == 1);
	CHECK(r.peak_mappings == 65535);
	CHECK(r.map_calls == 65536 + 1 && r.unmap_calls == 1);
	replay_trace_free(&t);
}

/* The run_async hook: called on a fresh backend with the workload and the producer count. */
static int fake_async(const struct replay_geometry *g, struct rdm_backend *b, const struct replay_trace *t,
		      unsigned producers, struct replay_async_result *out)
{
	struct rdm_backend_stats st;

	rdm_backend_get_stats(b, &st);
	if (st.map_calls || g->size != t->region_size || g->block_size != t->block_size)
		return -EINVAL;
	out->producers = producers;
	out->requests = t->n;
	return 0;
}

static void test_async_hook(void)
{
	struct replay_strategy s = replay_strategy_qemu;
	struct replay_backend_spec be = { .kind = REPLAY_BACKEND_SIM, .container_fd = -1, .group_fd = -1 };
	struct replay_trace t;
	struct replay_result r;
	char err[REPLAY_ERR_LEN];

	s.name = "rdm-fake";
	s.baseline = false;
	s.run_async = fake_async;
	small_trace(&t);
	REQUIRE(replay_run_strategy(&t, &s, &be, &r, err, sizeof(err)) == 0);
	CHECK(!r.has_async);
	CHECK(replay_run_async(&t, &s, &be, 4, &r, err, sizeof(err)) == 0);
	CHECK(r.has_async && r.async.producers == 4 && r.async.requests == t.n);
	CHECK(r.calls == 12); /* the synchronous counts stay */
	replay_trace_free(&t);
}

int main(void)
{
	test_counts();
	test_limit_exceeded();
	test_limited_sim();
	test_async_hook();
	return check_exit();
}
