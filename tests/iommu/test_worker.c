/* test_worker.c - the IOMMU worker: policies, limits, failures, tickets, destroy. */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <rdm/rdm.h>
#include <rdm/region.h>
#include <rdm/worker.h>

#include "core/error.h"
#include "core/region_internal.h"
#include "iommu/worker_internal.h"
#include "tests/check.h"

#define MiB (1ull << 20)
#define BS (2 * MiB)
#define REGION (1024 * MiB)
#define NB (REGION / BS)

static char *host; /* fake host memory: only addresses are used */

/* Release oracle: how often each block was released. */
static unsigned released[NB];

static void on_release(void *opaque, uint64_t off, uint64_t len)
{
	(void)opaque;
	for (uint64_t b = off / BS; b < (off + len) / BS; b++)
		released[b]++;
}

static uint64_t nreleased(uint64_t off, uint64_t len)
{
	uint64_t n = 0;

	for (uint64_t b = off / BS; b < (off + len) / BS; b++)
		n += released[b];
	return n;
}

struct fixture {
	struct rdm_backend *sim;
	struct rdm_worker *w;
	struct rdm_region *r;
};

static void setup(struct fixture *f, uint32_t policy, uint32_t flags, const struct rdm_sim_config *sc_in,
		  uint64_t defer_limit)
{
	struct rdm_sim_config sc = {.struct_size = sizeof(sc), .semantics = RDM_SEM_TYPE1V2, .call_ns = 1};
	struct rdm_region_config rc = {.struct_size = sizeof(rc)};

	if (sc_in)
		sc = *sc_in;
	memset(released, 0, sizeof(released));
	REQUIRE(rdm_backend_sim_create(&sc, &f->sim) == 0);
	REQUIRE(rdm_worker_create(NULL, &f->w) == 0);
	REQUIRE(rdm_worker_add_backend(f->w, f->sim, 0) == 0);
	rc.flags = flags;
	rc.iova = 1ull << 32;
	rc.size = REGION;
	rc.block_size = BS;
	rc.host_addr = host;
	rc.release = on_release;
	rc.policy = policy;
	rc.defer_limit = defer_limit;
	rc.defer_budget = RDM_DEFER_BUDGET_NONE; /* the deferral mechanics; test_budget.c has the budget */
	REQUIRE(rdm_region_create(&rc, &f->r) == 0);
	REQUIRE(rdm_worker_attach(f->w, f->r, f->sim) == 0);
}

static void teardown(struct fixture *f)
{
	CHECK(rdm_region_destroy(f->r) == 0);
	CHECK(rdm_worker_destroy(f->w) == 0);
	rdm_backend_destroy(f->sim);
}

static struct rdm_backend_stats stats(struct fixture *f)
{
	struct rdm_backend_stats st;

	rdm_backend_get_stats(f->sim, &st);
	return st;
}

static uint64_t IOVA(uint64_t off)
{
	return (1ull << 32) + off;
}

static uint64_t VA(uint64_t off)
{
	return (uint64_t)(uintptr_t)host + off;
}

static void test_block_policy(void)
{
	struct fixture f;

	setup(&f, RDM_POLICY_BLOCK, 0, NULL, 0);
	CHECK(rdm_populate(f.r, 0, 8 * MiB) == 0);
	CHECK(stats(&f).map_calls == 4 && stats(&f).mappings == 4);
	CHECK(rdm_sim_is_mapped(f.sim, IOVA(0), 8 * MiB, true, VA(0)));
	CHECK(rdm_is_populated(f.r, 0, 8 * MiB));
	/* Two adjacent whole mappings: one unmap call; released before completion. */
	CHECK(rdm_discard(f.r, 2 * MiB, 4 * MiB) == 0);
	CHECK(stats(&f).unmap_calls == 1 && stats(&f).mappings == 2);
	CHECK(rdm_sim_is_unmapped(f.sim, IOVA(2 * MiB), 4 * MiB));
	CHECK(nreleased(2 * MiB, 4 * MiB) == 2 && nreleased(0, 2 * MiB) == 0);
	/* discard_all: the rest, one call over the two mappings and the hole. */
	CHECK(rdm_discard_all(f.r) == 0);
	CHECK(stats(&f).unmap_calls == 2 && stats(&f).mappings == 0);
	CHECK(nreleased(0, 8 * MiB) == 4);
	teardown(&f);
}

static void test_discard_unit(void)
{
	struct rdm_backend *sim;
	struct rdm_worker *w;
	struct rdm_region *r;
	struct rdm_backend_stats st;
	struct rdm_region_config rc = {.struct_size = sizeof(rc), .iova = 1ull << 32, .size = REGION,
				       .block_size = BS, .discard_unit = 8 * MiB};

	rc.host_addr = host;
	REQUIRE(rdm_backend_sim_create(NULL, &sim) == 0);
	REQUIRE(rdm_worker_create(NULL, &w) == 0);
	REQUIRE(rdm_worker_add_backend(w, sim, 0) == 0);
	REQUIRE(rdm_region_create(&rc, &r) == 0);
	REQUIRE(rdm_worker_attach(w, r, sim) == 0);
	/* One mapping per unit; a change that breaks a unit is refused. */
	CHECK(rdm_populate(r, 0, 16 * MiB) == 0);
	rdm_backend_get_stats(sim, &st);
	CHECK(st.map_calls == 2 && st.mappings == 2);
	CHECK(rdm_discard(r, 2 * MiB, 2 * MiB) == -EINVAL);
	CHECK(strstr(rdm_last_error(), "discard unit") != NULL);
	CHECK(rdm_populate(r, 16 * MiB, 4 * MiB) == -EINVAL);
	CHECK(rdm_is_populated(r, 0, 16 * MiB));
	CHECK(rdm_discard(r, 8 * MiB, 8 * MiB) == 0);
	rdm_backend_get_stats(sim, &st);
	CHECK(st.unmap_calls == 1 && st.mappings == 1);
	CHECK(rdm_region_destroy(r) == 0);
	CHECK(rdm_worker_destroy(w) == 0);
	rdm_backend_destroy(sim);
}

static void test_defer_policy(void)
{
	struct fixture f;
	struct rdm_worker_stats ws;

	setup(&f, RDM_POLICY_DEFER, 0, NULL, 0);
	/* One mapping: the populate's run, whole. */
	CHECK(rdm_populate(f.r, 0, 128 * MiB) == 0);
	CHECK(stats(&f).map_calls == 1 && stats(&f).mappings == 1);
	/* Top-down 2 MiB unplugs: no call, deferred, not released. */
	CHECK(rdm_discard(f.r, 126 * MiB, 2 * MiB) == 0);
	CHECK(rdm_discard(f.r, 124 * MiB, 2 * MiB) == 0);
	CHECK(stats(&f).unmap_calls == 0);
	CHECK(nreleased(0, 128 * MiB) == 0);
	rdm_worker_get_stats(f.w, &ws);
	CHECK(ws.deferred_bytes == 4 * MiB && ws.deferred_peak_bytes == 4 * MiB);
	CHECK(!rdm_is_populated(f.r, 124 * MiB, 4 * MiB));
	/* Populated again first: reuses the mapping, no call, never released. */
	CHECK(rdm_populate(f.r, 126 * MiB, 2 * MiB) == 0);
	CHECK(stats(&f).map_calls == 1);
	rdm_worker_get_stats(f.w, &ws);
	CHECK(ws.deferred_bytes == 2 * MiB);
	/* The rest goes: one unmap of the whole mapping, everything discarded
	 * is released once, after the unmap. */
	/* 126..128 stays populated: 0..126 is deferred, nothing released. */
	CHECK(rdm_discard(f.r, 0, 124 * MiB) == 0);
	CHECK(stats(&f).unmap_calls == 0 && stats(&f).mappings == 1);
	CHECK(nreleased(0, 128 * MiB) == 0);
	CHECK(rdm_discard(f.r, 126 * MiB, 2 * MiB) == 0);
	CHECK(stats(&f).unmap_calls == 1 && stats(&f).mappings == 0);
	CHECK(nreleased(0, 128 * MiB) == 64);
	rdm_worker_get_stats(f.w, &ws);
	CHECK(ws.deferred_bytes == 0 && ws.deferred_peak_bytes == 126 * MiB);
	/* No mapping crosses a 128 MiB chunk. */
	CHECK(rdm_populate(f.r, 64 * MiB, 256 * MiB) == 0);
	CHECK(stats(&f).map_calls == 1 + 3);
	CHECK(rdm_sim_is_mapped(f.sim, IOVA(64 * MiB), 256 * MiB, true, VA(64 * MiB)));
	teardown(&f);
}

static void test_defer_limit_windows(void)
{
	struct fixture f;
	struct rdm_worker_stats ws;

	setup(&f, RDM_POLICY_DEFER, RDM_REGION_ALLOW_WINDOWS, NULL, 4 * MiB);
	CHECK(rdm_populate(f.r, 0, 128 * MiB) == 0);
	CHECK(rdm_discard(f.r, 126 * MiB, 2 * MiB) == 0);
	CHECK(rdm_discard(f.r, 124 * MiB, 2 * MiB) == 0);
	CHECK(stats(&f).unmap_calls == 0);
	/* Past the limit: the oldest deferred mapping (the only one) is
	 * split, counted. */
	CHECK(rdm_discard(f.r, 122 * MiB, 2 * MiB) == 0);
	rdm_worker_get_stats(f.w, &ws);
	CHECK(ws.deferred_bytes == 0);
	CHECK(ws.remapped_bytes == 122 * MiB);
	CHECK(stats(&f).unmap_calls == 1 && stats(&f).map_calls == 2);
	CHECK(rdm_sim_is_mapped(f.sim, IOVA(0), 122 * MiB, true, VA(0)));
	CHECK(rdm_sim_is_unmapped(f.sim, IOVA(122 * MiB), 6 * MiB));
	CHECK(nreleased(122 * MiB, 6 * MiB) == 3);
	teardown(&f);

	/* Without windows the limit is only counted. */
	setup(&f, RDM_POLICY_DEFER, 0, NULL, 2 * MiB);
	CHECK(rdm_populate(f.r, 0, 128 * MiB) == 0);
	CHECK(rdm_discard(f.r, 126 * MiB, 2 * MiB) == 0);
	CHECK(rdm_discard(f.r, 124 * MiB, 2 * MiB) == 0);
	rdm_worker_get_stats(f.w, &ws);
	CHECK(ws.defer_limit_exceeded == 1 && ws.remapped_bytes == 0 && ws.deferred_bytes == 4 * MiB);
	teardown(&f);
}

static void test_coalesce_policy(void)
{
	struct fixture f;
	struct rdm_worker_stats ws;
	struct rdm_sim_config split = {.struct_size = sizeof(split), .semantics = RDM_SEM_TYPE1V2, .can_split = true};
	struct rdm_backend *sim;
	struct rdm_worker *w;
	struct rdm_region *r;
	struct rdm_region_config rc = {.struct_size = sizeof(rc), .size = REGION, .block_size = BS,
				       .policy = RDM_POLICY_COALESCE};

	/* Not usable on a kernel that cannot split, without windows. */
	REQUIRE(rdm_backend_sim_create(NULL, &sim) == 0);
	REQUIRE(rdm_worker_create(NULL, &w) == 0);
	REQUIRE(rdm_worker_add_backend(w, sim, 0) == 0);
	REQUIRE(rdm_region_create(&rc, &r) == 0);
	CHECK(rdm_worker_attach(w, r, sim) == -EINVAL);
	CHECK(strstr(rdm_last_error(), "coalesce") != NULL);
	CHECK(rdm_region_destroy(r) == 0);
	CHECK(rdm_worker_destroy(w) == 0);
	rdm_backend_destroy(sim);

	/* With windows: unmap and remap the survivors, counted. */
	setup(&f, RDM_POLICY_COALESCE, RDM_REGION_ALLOW_WINDOWS, NULL, 0);
	CHECK(rdm_populate(f.r, 0, 128 * MiB) == 0);
	CHECK(rdm_discard(f.r, 64 * MiB, 2 * MiB) == 0);
	CHECK(stats(&f).map_calls == 3 && stats(&f).unmap_calls == 1 && stats(&f).mappings == 2);
	rdm_worker_get_stats(f.w, &ws);
	CHECK(ws.remapped_bytes == 126 * MiB);
	CHECK(nreleased(64 * MiB, 2 * MiB) == 1);
	teardown(&f);

	/* Split-capable kernel: one unmap, no window. */
	setup(&f, RDM_POLICY_COALESCE, 0, &split, 0);
	CHECK(rdm_populate(f.r, 0, 128 * MiB) == 0);
	CHECK(rdm_discard(f.r, 64 * MiB, 2 * MiB) == 0);
	CHECK(stats(&f).map_calls == 1 && stats(&f).unmap_calls == 1 && stats(&f).mappings == 2);
	rdm_worker_get_stats(f.w, &ws);
	CHECK(ws.remapped_bytes == 0);
	CHECK(rdm_sim_is_mapped(f.sim, IOVA(0), 64 * MiB, true, VA(0)));
	CHECK(rdm_sim_is_mapped(f.sim, IOVA(66 * MiB), 62 * MiB, true, VA(66 * MiB)));
	teardown(&f);
}

static void test_limit(void)
{
	struct fixture f;
	struct rdm_sim_config sc = {.struct_size = sizeof(sc), .semantics = RDM_SEM_TYPE1V2, .limit = 10};

	setup(&f, RDM_POLICY_BLOCK, 0, &sc, 0);
	CHECK(rdm_populate(f.r, 0, 16 * MiB) == 0);
	CHECK(rdm_populate(f.r, 16 * MiB, 6 * MiB) == -ENOSPC);
	CHECK(strstr(rdm_last_error(), "limit") != NULL);
	CHECK(stats(&f).mappings == 8 && stats(&f).failed_calls == 0);
	CHECK(rdm_is_discarded(f.r, 16 * MiB, 6 * MiB));
	CHECK(rdm_populate(f.r, 16 * MiB, 4 * MiB) == 0);
	CHECK(stats(&f).mappings == 10);
	teardown(&f);
}

/* A listener that records what it was told. */
static int told_populate, told_discard;
static int lpop(struct rdm_listener *l, uint64_t o, uint64_t n)
{
	(void)l, (void)o, (void)n;
	told_populate++;
	return 0;
}
static void ldisc(struct rdm_listener *l, uint64_t o, uint64_t n)
{
	(void)l, (void)o, (void)n;
	told_discard++;
}
static const struct rdm_listener_ops lops = {lpop, ldisc};

static void test_map_failure_rolls_back(void)
{
	struct fixture f;
	struct rdm_listener l = {.ops = &lops, .offset = 0, .length = REGION};

	setup(&f, RDM_POLICY_BLOCK, 0, NULL, 0);
	CHECK(rdm_listener_register(f.r, &l) == 0);
	told_populate = told_discard = 0;
	CHECK(rdm_sim_inject(f.sim, RDM_SIM_CALL_MAP, 3, -ENOMEM) == 0);
	CHECK(rdm_populate(f.r, 0, 8 * MiB) == -ENOMEM);
	CHECK(stats(&f).mappings == 0);
	CHECK(rdm_is_discarded(f.r, 0, 8 * MiB));
	CHECK(told_populate == 1 && told_discard == 1); /* rolled back */
	CHECK(nreleased(0, REGION) == 0);
	CHECK(rdm_populate(f.r, 0, 8 * MiB) == 0);
	CHECK(stats(&f).mappings == 4);
	CHECK(rdm_listener_unregister(f.r, &l) == 0);
	teardown(&f);
}

static void test_unmap_failure_marks_backend(void)
{
	struct fixture f;
	struct rdm_worker_stats ws;

	setup(&f, RDM_POLICY_BLOCK, 0, NULL, 0);
	CHECK(rdm_populate(f.r, 0, 4 * MiB) == 0);
	/* Fails once: retried, fine. */
	CHECK(rdm_sim_inject(f.sim, RDM_SIM_CALL_UNMAP, 1, -EFAULT) == 0);
	CHECK(rdm_discard(f.r, 0, 2 * MiB) == 0);
	CHECK(nreleased(0, 2 * MiB) == 1);
	rdm_worker_get_stats(f.w, &ws);
	CHECK(ws.failed_backends == 0);
	/* Fails twice: the discard completes, its blocks are not released,
	 * the backend is failed and later populates get -EIO. */
	CHECK(rdm_sim_inject(f.sim, RDM_SIM_CALL_UNMAP, 1, -EFAULT) == 0);
	CHECK(rdm_sim_inject(f.sim, RDM_SIM_CALL_UNMAP, 2, -EFAULT) == 0);
	CHECK(rdm_discard(f.r, 2 * MiB, 2 * MiB) == 0);
	CHECK(rdm_is_discarded(f.r, 2 * MiB, 2 * MiB));
	CHECK(nreleased(2 * MiB, 2 * MiB) == 0);
	rdm_worker_get_stats(f.w, &ws);
	CHECK(ws.failed_backends == 1);
	CHECK(rdm_populate(f.r, 8 * MiB, 2 * MiB) == -EIO);
	CHECK(strstr(rdm_last_error(), "failed") != NULL);
	teardown(&f);
	/* Destroy did not release what the failed backend may pin. */
	CHECK(nreleased(2 * MiB, 2 * MiB) == 0);
}

static int cb_calls, cb_last;
static void on_done(void *opaque, int result)
{
	(void)opaque;
	cb_calls++;
	cb_last = result;
}

static void test_tickets(void)
{
	struct fixture f;
	struct rdm_producer *p;
	uint64_t t, t2;
	int res = 1;

	setup(&f, RDM_POLICY_BLOCK, RDM_REGION_STRICT, NULL, 0);
	REQUIRE(rdm_producer_create(&p) == 0);
	CHECK(rdm_producer_populate(p, f.r, 0, 2 * MiB, &t) == 0);
	CHECK(rdm_producer_wait(p, t, &res) == 0 && res == 0);
	CHECK(rdm_producer_wait(p, t, &res) == -EINVAL); /* consumed */
	/* Strict mode errors come at application, through the ticket. */
	CHECK(rdm_producer_populate(p, f.r, 0, 2 * MiB, &t) == 0);
	CHECK(rdm_producer_wait(p, t, &res) == 0 && res == -EEXIST);
	CHECK(rdm_producer_discard(p, f.r, 4 * MiB, 2 * MiB, &t) == 0);
	do
		res = 1;
	while (rdm_producer_poll(p, t, &res) == -EINPROGRESS);
	CHECK(res == -ENOENT);
	/* Argument errors at submission. */
	CHECK(rdm_producer_populate(p, f.r, 1, 2 * MiB, &t) == -EINVAL);
	CHECK(rdm_producer_populate(p, f.r, REGION, 2 * MiB, &t) == -ERANGE);
	CHECK(rdm_producer_populate(p, NULL, 0, 2 * MiB, &t) == -EINVAL);
	CHECK(rdm_producer_populate(p, f.r, 0, 2 * MiB, NULL) == -EINVAL);
	struct rdm_change bad = {.region = f.r, .kind = 99, .offset = 0, .length = BS};
	CHECK(rdm_producer_submit(p, &bad, 1, &t) == -EINVAL);
	/* Callbacks. */
	struct rdm_change c[2] = {
		{.region = f.r, .kind = RDM_CHANGE_POPULATE, .offset = 8 * MiB, .length = BS, .done = on_done},
		{.region = f.r, .kind = RDM_CHANGE_DISCARD, .offset = 0, .length = BS, .done = on_done},
	};
	CHECK(rdm_producer_submit(p, c, 2, NULL) == 0);
	/* Tickets of a second change keep flowing while callbacks run. */
	CHECK(rdm_producer_populate(p, f.r, 10 * MiB, BS, &t2) == 0);
	CHECK(rdm_producer_wait(p, t2, &res) == 0 && res == 0);
	/* Every slot held: -EAGAIN. */
	uint64_t *held = calloc(1024, sizeof(*held));
	unsigned n;

	for (n = 0; n < 1024;) {
		int e = rdm_producer_populate(p, f.r, (100 + n % 100) * BS, BS, &held[n]);

		if (e == 0) {
			n++;
			continue;
		}
		/* A full ring is also -EAGAIN; only the slots are under test. */
		REQUIRE(e == -EAGAIN && strstr(rdm_last_error(), "ring") != NULL);
		sched_yield();
	}
	CHECK(rdm_producer_populate(p, f.r, 0, BS, &t) == -EAGAIN);
	CHECK(strstr(rdm_last_error(), "ticket slots") != NULL);
	for (unsigned i = 0; i < n; i++)
		CHECK(rdm_producer_wait(p, held[i], &res) == 0);
	free(held);
	rdm_producer_destroy(p);
	CHECK(cb_calls == 2 && cb_last == 0);
	teardown(&f);
}

/*
 * A producer's link to a destroyed worker stays while a slot still names it
 * (a ticket not yet consumed, a callback's slot not yet taken back): linking
 * to a new worker prunes only the links nothing names any more. Found by
 * fuzzing as a use after free (ASan) in rdm_producer_destroy().
 */
static void test_link_outlives_worker(void)
{
	struct fixture f, g;
	struct rdm_producer *p;
	uint64_t t, t2;
	int res = 1, calls = cb_calls;

	setup(&f, RDM_POLICY_BLOCK, 0, NULL, 0);
	REQUIRE(rdm_producer_create(&p) == 0);
	struct rdm_change c = {.region = f.r, .kind = RDM_CHANGE_POPULATE, .offset = 0, .length = BS, .done = on_done};

	CHECK(rdm_producer_submit(p, &c, 1, NULL) == 0);
	CHECK(rdm_producer_populate(p, f.r, 2 * BS, BS, &t) == 0);
	teardown(&f); /* both applied; the ticket is not consumed yet */
	CHECK(cb_calls == calls + 1);
	setup(&g, RDM_POLICY_BLOCK, 0, NULL, 0);
	CHECK(rdm_producer_populate(p, g.r, 0, BS, &t2) == 0); /* a new link */
	CHECK(rdm_producer_wait(p, t2, &res) == 0 && res == 0);
	CHECK(rdm_producer_wait(p, t, &res) == 0 && res == 0);
	rdm_producer_destroy(p);
	teardown(&g);
}

static void test_superseded_in_batch(void)
{
	struct fixture f;
	struct rdm_producer *p;
	struct rdm_worker_stats ws;
	uint64_t t[2];
	int res;

	setup(&f, RDM_POLICY_BLOCK, 0, NULL, 0);
	REQUIRE(rdm_producer_create(&p) == 0);
	struct rdm_change c[2] = {
		{.region = f.r, .kind = RDM_CHANGE_POPULATE, .offset = 0, .length = 8 * MiB},
		{.region = f.r, .kind = RDM_CHANGE_DISCARD, .offset = 0, .length = 8 * MiB},
	};
	CHECK(rdm_producer_submit(p, c, 2, t) == 0);
	CHECK(rdm_producer_wait(p, t[0], &res) == 0 && res == 0);
	CHECK(rdm_producer_wait(p, t[1], &res) == 0 && res == 0);
	rdm_worker_get_stats(f.w, &ws);
	CHECK(ws.superseded == 2);
	CHECK(stats(&f).map_calls == 0 && stats(&f).unmap_calls == 0);
	CHECK(rdm_is_discarded(f.r, 0, 8 * MiB));
	rdm_producer_destroy(p);
	teardown(&f);
}

static void test_two_backends(void)
{
	struct fixture f;
	struct rdm_backend *sim2;
	struct rdm_backend_stats s2;

	setup(&f, RDM_POLICY_DEFER, 0, NULL, 0);
	REQUIRE(rdm_backend_sim_create(NULL, &sim2) == 0);
	REQUIRE(rdm_worker_add_backend(f.w, sim2, 0) == 0);
	CHECK(rdm_populate(f.r, 0, 8 * MiB) == 0);
	/* Attach replays the layout into the new backend. */
	CHECK(rdm_worker_attach(f.w, f.r, sim2) == 0);
	CHECK(rdm_worker_attach(f.w, f.r, sim2) == -EEXIST);
	CHECK(rdm_sim_is_mapped(sim2, IOVA(0), 8 * MiB, true, VA(0)));
	/* A failed map in the second backend rolls back the first. */
	CHECK(rdm_sim_inject(sim2, RDM_SIM_CALL_MAP, 1, -EFAULT) == 0);
	CHECK(rdm_populate(f.r, 256 * MiB, 8 * MiB) == -EFAULT);
	CHECK(rdm_sim_is_unmapped(f.sim, IOVA(256 * MiB), 8 * MiB));
	CHECK(rdm_sim_is_unmapped(sim2, IOVA(256 * MiB), 8 * MiB));
	CHECK(rdm_discard(f.r, 0, 8 * MiB) == 0);
	CHECK(rdm_sim_is_unmapped(sim2, IOVA(0), 8 * MiB) && rdm_sim_is_unmapped(f.sim, IOVA(0), 8 * MiB));
	CHECK(rdm_populate(f.r, 0, 4 * MiB) == 0);
	CHECK(rdm_worker_detach(f.w, f.r, sim2) == 0);
	CHECK(rdm_worker_detach(f.w, f.r, sim2) == -ENOENT);
	rdm_backend_get_stats(sim2, &s2);
	CHECK(s2.mappings == 0);
	teardown(&f);
	rdm_backend_destroy(sim2);
}

static void test_destroy_in_flight(void)
{
	struct fixture f;
	struct rdm_producer *p;
	uint64_t t[200];
	int res;

	setup(&f, RDM_POLICY_BLOCK, 0, NULL, 0);
	REQUIRE(rdm_producer_create(&p) == 0);
	for (int i = 0; i < 200; i++)
		CHECK(rdm_producer_populate(p, f.r, (uint64_t)(i % NB) * BS, BS, &t[i]) == 0);
	CHECK(rdm_region_destroy(f.r) == 0);
	/* Every accepted change was applied before the region went. */
	for (int i = 0; i < 200; i++)
		CHECK(rdm_producer_wait(p, t[i], &res) == 0 && res == 0);
	CHECK(stats(&f).mappings == 0); /* destroy unmapped rdm's mappings */
	rdm_producer_destroy(p);
	CHECK(rdm_worker_destroy(f.w) == 0);
	rdm_backend_destroy(f.sim);
}

/* Records that bypass the submission checks (as a buggy or hostile
 * producer's would) are refused by the worker, which changes nothing. */
static void test_bad_records(void)
{
	struct fixture f;
	struct rdm_producer *p;
	struct rdm_wregion *wr;
	uint64_t t;
	int res;

	setup(&f, RDM_POLICY_BLOCK, 0, NULL, 0);
	REQUIRE(rdm_producer_create(&p) == 0);
	wr = rdm_region_get_applier_ctx(f.r);
	REQUIRE(wr != NULL);
	CHECK(rdm_producer_submit_one(p, &wr->sub, RDM_OP_POPULATE, REGION, BS, NULL, false, NULL, NULL, &t) == 0);
	CHECK(rdm_producer_wait(p, t, &res) == 0 && res == -ERANGE);
	CHECK(rdm_producer_submit_one(p, &wr->sub, RDM_OP_POPULATE, 1, BS, NULL, false, NULL, NULL, &t) == 0);
	CHECK(rdm_producer_wait(p, t, &res) == 0 && res == -EINVAL);
	CHECK(rdm_producer_submit_one(p, &wr->sub, 99, 0, BS, NULL, false, NULL, NULL, &t) == 0);
	CHECK(rdm_producer_wait(p, t, &res) == 0 && res == -EINVAL);
	CHECK(strstr(rdm_last_error(), "unknown") != NULL);
	CHECK(stats(&f).map_calls == 0 && rdm_is_discarded(f.r, 0, REGION));
	/* The region still works. */
	CHECK(rdm_populate(f.r, 0, BS) == 0);
	rdm_producer_destroy(p);
	teardown(&f);
}

static int corrupt_logged;
static void count_corrupt(void *opaque, enum rdm_log_level level, const char *msg)
{
	(void)opaque;
	if (level == RDM_LOG_ERROR && strstr(msg, "corrupt"))
		corrupt_logged++;
}

/* A producer ring whose index is garbage is ignored; other rings go on. */
static void test_corrupt_ring(void)
{
	struct fixture f;
	struct rdm_producer *p;
	uint64_t t;
	int res;

	setup(&f, RDM_POLICY_BLOCK, 0, NULL, 0);
	rdm_set_log_handler(count_corrupt, NULL, RDM_LOG_ERROR);
	REQUIRE(rdm_producer_create(&p) == 0);
	CHECK(rdm_producer_populate(p, f.r, 0, BS, &t) == 0);
	CHECK(rdm_producer_wait(p, t, &res) == 0 && res == 0);
	REQUIRE(p->nlinks == 1);
	struct rdm_ring *ring = p->links[0]->ring;

	/* The published tail jumps past anything the ring can hold. */
	atomic_store(&ring->prod.sh->tail, ring->prod.tail + ring->prod.capacity + 5);
	/* Another producer (this thread's implicit one) is served, and the
	 * corrupt ring's "records" changed nothing. */
	CHECK(rdm_populate(f.r, 2 * BS, BS) == 0);
	CHECK(rdm_is_populated(f.r, 0, BS) && rdm_is_discarded(f.r, BS, BS) && rdm_is_populated(f.r, 2 * BS, BS));
	CHECK(stats(&f).map_calls == 2);
	CHECK(corrupt_logged == 1);
	rdm_set_log_handler(NULL, NULL, RDM_LOG_ERROR);
	rdm_producer_destroy(p);
	teardown(&f);
}

static void test_bad_input(void)
{
	struct rdm_worker_config bad = {.struct_size = sizeof(bad), .ring_capacity = 3};
	struct rdm_worker *w;
	struct rdm_backend *sim;
	struct rdm_region *r;
	struct rdm_region_config rc = {.struct_size = sizeof(rc), .size = REGION, .block_size = BS};

	CHECK(rdm_worker_create(&bad, &w) == -EINVAL);
	CHECK(rdm_worker_create(NULL, NULL) == -EINVAL);
	CHECK(rdm_worker_destroy(NULL) == -EINVAL);
	REQUIRE(rdm_worker_create(NULL, &w) == 0);
	REQUIRE(rdm_backend_sim_create(NULL, &sim) == 0);
	REQUIRE(rdm_region_create(&rc, &r) == 0);
	CHECK(rdm_worker_add_backend(NULL, sim, 0) == -EINVAL);
	CHECK(rdm_worker_attach(w, r, sim) == -EINVAL); /* not added */
	CHECK(rdm_worker_add_backend(w, sim, 0) == 0);
	CHECK(rdm_worker_add_backend(w, sim, 0) == -EEXIST);
	CHECK(rdm_worker_attach(NULL, r, sim) == -EINVAL);
	CHECK(rdm_worker_detach(w, r, sim) == -ENOENT);
	CHECK(rdm_worker_attach(w, r, sim) == 0);
	CHECK(rdm_worker_destroy(w) == -EBUSY);
	CHECK(rdm_populate(r, 0, 1) == -EINVAL);
	CHECK(rdm_populate(r, REGION, BS) == -ERANGE);
	CHECK(rdm_region_destroy(r) == 0);
	CHECK(rdm_worker_destroy(w) == 0);
	rdm_backend_destroy(sim);
}

/*
 * rdm_worker_get_config(): the configuration as used, defaults filled in;
 * a caller's shorter struct gets only its own bytes; bad arguments change
 * nothing and name the problem.
 */
static void on_batch_nop(void *opaque, uint64_t batch_no, uint32_t changes)
{
	(void)opaque;
	(void)batch_no;
	(void)changes;
}

static void test_get_config(void)
{
	struct rdm_worker *w, *d;
	struct rdm_worker_config given = {.struct_size = sizeof(given), .ring_capacity = 64, .max_batch = 17,
					  .ticket_slots = 32, .spin_us = 7, .on_batch = on_batch_nop,
					  .on_batch_opaque = &given, .flags = RDM_WORKER_CALLER_RUNS};
	struct rdm_worker_config got;

	REQUIRE(rdm_worker_create(&given, &w) == 0);
	REQUIRE(rdm_worker_create(NULL, &d) == 0);

	memset(&got, 0xa5, sizeof(got));
	got.struct_size = sizeof(got);
	CHECK(rdm_worker_get_config(w, &got) == 0);
	CHECK(got.struct_size == sizeof(got) && got.ring_capacity == 64 && got.max_batch == 17 &&
	      got.ticket_slots == 32 && got.spin_us == 7 && got.reserved == 0 && got.on_batch == on_batch_nop &&
	      got.on_batch_opaque == &given && got.flags == RDM_WORKER_CALLER_RUNS && got.numa_node == -1);

	/* The defaults as used. */
	memset(&got, 0xa5, sizeof(got));
	got.struct_size = sizeof(got);
	CHECK(rdm_worker_get_config(d, &got) == 0);
	CHECK(got.ring_capacity == 1024 && got.max_batch == 256 && got.ticket_slots == 1024 &&
	      got.spin_us == RDM_WORKER_DEFAULT_SPIN_US && got.on_batch == NULL && got.flags == 0 &&
	      got.numa_node == -1);

	/* A shorter struct (an older caller's): its bytes only. */
	unsigned char buf[sizeof(struct rdm_worker_config) + 16];
	size_t part = offsetof(struct rdm_worker_config, on_batch);
	struct rdm_worker_config head = {.struct_size = (uint32_t)part};

	memset(buf, 0x5a, sizeof(buf));
	memcpy(buf, &head, part);
	CHECK(rdm_worker_get_config(w, (struct rdm_worker_config *)(void *)buf) == 0);
	memcpy(&head, buf, part);
	CHECK(head.struct_size == part && head.spin_us == 7 && head.ring_capacity == 64);
	bool untouched = true;
	for (size_t i = part; i < sizeof(buf); i++)
		untouched = untouched && buf[i] == 0x5a;
	CHECK(untouched);

	/* Bad arguments: -EINVAL, a message, *out unchanged. */
	memset(&got, 0xa5, sizeof(got));
	got.struct_size = (uint32_t)part - 1;
	struct rdm_worker_config before = got;
	rdm_error_clear();
	CHECK(rdm_worker_get_config(w, &got) == -EINVAL);
	CHECK(strstr(rdm_last_error(), "struct_size") != NULL);
	CHECK(memcmp(&got, &before, sizeof(got)) == 0);
	CHECK(rdm_worker_get_config(NULL, &got) == -EINVAL);
	CHECK(strstr(rdm_last_error(), "NULL worker") != NULL);
	CHECK(rdm_worker_get_config(w, NULL) == -EINVAL);
	CHECK(strstr(rdm_last_error(), "NULL out") != NULL);
	CHECK(memcmp(&got, &before, sizeof(got)) == 0);

	CHECK(rdm_worker_destroy(d) == 0);
	CHECK(rdm_worker_destroy(w) == 0);
}

/*
 * The refusals of a single-change submit (its own path in producer.c,
 * submit_single()) change nothing: a region not served by a worker, and a
 * full ring. The worker is held in on_batch after its first change, so the
 * ring (capacity 4) fills; each refused submit must give its ticket slot
 * back (with ticket_slots 8, ten leaked slots would turn the refusal into
 * the link's "unconsumed" one, and the later submits would fail) and its
 * ticket number (the next accepted ticket follows the last accepted one).
 */
static atomic_int hold_batches, batches_held;

static void holding_on_batch(void *opaque, uint64_t batch_no, uint32_t changes)
{
	(void)opaque;
	(void)batch_no;
	(void)changes;
	if (!atomic_load(&hold_batches))
		return;
	atomic_fetch_add(&batches_held, 1);
	while (atomic_load(&hold_batches))
		sched_yield();
}

static void test_single_submit_refusals(void)
{
	struct rdm_worker_config wc = {.struct_size = sizeof(wc), .ring_capacity = 4, .ticket_slots = 8,
				       .on_batch = holding_on_batch};
	struct rdm_region_config rc = {.struct_size = sizeof(rc), .size = REGION, .block_size = BS,
				       .iova = 1ull << 32, .host_addr = host};
	struct rdm_backend *sim;
	struct rdm_worker *w;
	struct rdm_region *r, *lone;
	struct rdm_producer *p;
	uint64_t t[8], t2;
	unsigned n = 0;
	int res;

	REQUIRE(rdm_backend_sim_create(NULL, &sim) == 0);
	REQUIRE(rdm_worker_create(&wc, &w) == 0);
	REQUIRE(rdm_worker_add_backend(w, sim, 0) == 0);
	REQUIRE(rdm_region_create(&rc, &r) == 0);
	REQUIRE(rdm_region_create(&rc, &lone) == 0);
	REQUIRE(rdm_worker_attach(w, r, sim) == 0);
	REQUIRE(rdm_producer_create(&p) == 0);

	/* Not attached: -EINVAL naming it, and no link or slot taken. */
	CHECK(rdm_producer_populate(p, lone, 0, BS, &t2) == -EINVAL);
	CHECK(strstr(rdm_last_error(), "not attached") != NULL);
	CHECK(rdm_populated_bytes(lone, 0, REGION) == 0);

	atomic_store(&hold_batches, 1);
	REQUIRE(rdm_producer_populate(p, r, 0, BS, &t[n++]) == 0);
	while (atomic_load(&batches_held) == 0)
		sched_yield();
	/* The worker is held: four records fill its ring. */
	while (n < 8) {
		int e = rdm_producer_populate(p, r, n * BS, BS, &t[n]);

		if (e != 0) {
			CHECK(e == -EAGAIN && strstr(rdm_last_error(), "ring") != NULL);
			break;
		}
		n++;
	}
	/* Held after the first change, or already before it (the attach's own
	 * batch may call on_batch late): the ring's four, plus one drained. */
	CHECK(n == 4 || n == 5);
	for (int i = 0; i < 10; i++) {
		CHECK(rdm_producer_discard(p, r, 0, BS, &t2) == -EAGAIN);
		CHECK(strstr(rdm_last_error(), "ring") != NULL);
	}
	atomic_store(&hold_batches, 0);
	for (unsigned i = 0; i < n; i++)
		CHECK(rdm_producer_wait(p, t[i], &res) == 0 && res == 0);
	CHECK(rdm_populated_bytes(r, 0, REGION) == n * BS);
	CHECK(rdm_sim_is_mapped(sim, 1ull << 32, n * BS, true, (uint64_t)(uintptr_t)host));
	/* The refused submits took no ticket number... */
	CHECK(rdm_producer_discard(p, r, 0, BS, &t2) == 0);
	CHECK(t2 >> RDM_TICKET_SHIFT == (t[n - 1] >> RDM_TICKET_SHIFT) + 1);
	CHECK(rdm_producer_wait(p, t2, &res) == 0 && res == 0);
	/* ...and kept no slot: all eight can be held again. */
	for (unsigned i = 0; i < 8; i++) {
		int e;

		while ((e = rdm_producer_populate(p, r, (16 + i) * BS, BS, &t[i])) == -EAGAIN &&
		       strstr(rdm_last_error(), "ring") != NULL)
			sched_yield();
		CHECK(e == 0);
	}
	for (unsigned i = 0; i < 8; i++)
		CHECK(rdm_producer_wait(p, t[i], &res) == 0 && res == 0);
	CHECK(rdm_populated_bytes(r, 0, REGION) == (n - 1 + 8) * BS);
	rdm_producer_destroy(p);
	CHECK(rdm_region_destroy(lone) == 0);
	CHECK(rdm_region_destroy(r) == 0);
	CHECK(rdm_worker_destroy(w) == 0);
	rdm_backend_destroy(sim);
}

/* Take the next sequence number of r's submissions from `seq` on (a test's
 * way to make a gap, and to fill it): returns the old next number. */
static uint64_t set_next_seq(struct rdm_region *r, uint64_t seq)
{
	struct rdm_wregion *wr = rdm_region_get_applier_ctx(r);
	uint64_t old;

	pthread_mutex_lock(&wr->sub.submit_lock);
	old = wr->sub.next_seq;
	wr->sub.next_seq = seq;
	pthread_mutex_unlock(&wr->sub.submit_lock);
	return old;
}

static bool slot_completed(struct rdm_producer *p, uint64_t ticket)
{
	return atomic_load(&p->slots[rdm_ticket_slot(ticket)].done) == ticket;
}

/*
 * C1's two ways of completing (producer.c): through the link's watermark
 * only when no drained record stays incomplete. A record of region R1 whose
 * predecessor has not arrived (a gap made by skipping a sequence number)
 * waits in the worker; a later record of R2 in the same ring completes -
 * through its slot, since the watermark would also claim the waiting one.
 * Filling the gap completes both through the watermark. A failed change
 * beside a successful one in a batch carries its result in its slot.
 */
static void test_completion_watermark(void)
{
	struct fixture f;
	struct rdm_region_config rc = {.struct_size = sizeof(rc), .flags = RDM_REGION_STRICT, .size = REGION,
				       .block_size = BS, .iova = 1ull << 40, .host_addr = host};
	struct rdm_region *r2;
	struct rdm_producer *p;
	uint64_t tx, ty, tz, tb[2];
	int res = 1;

	setup(&f, RDM_POLICY_BLOCK, 0, NULL, 0);
	REQUIRE(rdm_region_create(&rc, &r2) == 0);
	REQUIRE(rdm_worker_attach(f.w, r2, f.sim) == 0);
	REQUIRE(rdm_producer_create(&p) == 0);

	uint64_t gap = set_next_seq(f.r, 0);

	set_next_seq(f.r, gap + 1); /* gap is skipped: X waits for it */
	CHECK(rdm_producer_populate(p, f.r, 4 * BS, BS, &tx) == 0);
	CHECK(rdm_producer_populate(p, r2, 0, BS, &ty) == 0);
	/* Y completes (it was drained after X, so X is drained too)... */
	CHECK(rdm_producer_wait(p, ty, &res) == 0 && res == 0);
	CHECK(slot_completed(p, ty));
	/* ...and X does not: it waits for its predecessor. */
	CHECK(rdm_producer_poll(p, tx, &res) == -EINPROGRESS);
	CHECK(rdm_is_discarded(f.r, 4 * BS, BS));
	/* Fill the gap: Z takes the skipped number; then both apply. */
	set_next_seq(f.r, gap);
	CHECK(rdm_producer_populate(p, f.r, 6 * BS, BS, &tz) == 0);
	set_next_seq(f.r, gap + 2);
	CHECK(rdm_producer_wait(p, tx, &res) == 0 && res == 0);
	CHECK(rdm_producer_wait(p, tz, &res) == 0 && res == 0);
	CHECK(!slot_completed(p, tx) && !slot_completed(p, tz)); /* the watermark's */
	CHECK(rdm_is_populated(f.r, 4 * BS, BS) && rdm_is_populated(f.r, 6 * BS, BS));
	CHECK(rdm_sim_is_mapped(f.sim, IOVA(4 * BS), BS, true, VA(4 * BS)));
	CHECK(rdm_sim_is_mapped(f.sim, IOVA(6 * BS), BS, true, VA(6 * BS)));

	/* One batch, one success and one failure (strict: already populated). */
	struct rdm_change c[2] = {
		{.region = r2, .kind = RDM_CHANGE_POPULATE, .offset = 2 * BS, .length = BS},
		{.region = r2, .kind = RDM_CHANGE_POPULATE, .offset = 0, .length = BS},
	};
	CHECK(rdm_producer_submit(p, c, 2, tb) == 0);
	CHECK(rdm_producer_wait(p, tb[1], &res) == 0 && res == -EEXIST);
	CHECK(strstr(rdm_last_error(), "not discarded (strict mode)") != NULL);
	CHECK(slot_completed(p, tb[1]));
	CHECK(rdm_producer_wait(p, tb[0], &res) == 0 && res == 0);
	CHECK(rdm_is_populated(r2, 2 * BS, BS));

	rdm_producer_destroy(p);
	CHECK(rdm_region_destroy(r2) == 0);
	teardown(&f);
}

int main(void)
{
	host = aligned_alloc(4096, 4096); /* only addresses matter: the sim never touches memory */
	test_block_policy();
	test_discard_unit();
	test_defer_policy();
	test_defer_limit_windows();
	test_coalesce_policy();
	test_limit();
	test_map_failure_rolls_back();
	test_unmap_failure_marks_backend();
	test_tickets();
	test_link_outlives_worker();
	test_superseded_in_batch();
	test_two_backends();
	test_destroy_in_flight();
	test_bad_records();
	test_corrupt_ring();
	test_bad_input();
	test_get_config();
	test_single_submit_refusals();
	test_completion_watermark();
	free(host);
	return check_exit();
}
