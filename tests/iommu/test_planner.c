/* test_planner.c - planner regressions (a region ending at 2^64, a refused populate leaving the mappings as they were) and its observability hooks. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <urcu-bp.h>

#include <linux/vfio.h>
#include <rdm/rdm.h>
#include <rdm/region.h>
#include <rdm/worker.h>

#include "core/alloc.h"
#include "core/region_internal.h"
#include "iommu/worker_internal.h"
#include "tests/check.h"
#include "tests/iommu/fake_kernel.h"

#define KiB (1ull << 10)
#define MiB (1ull << 20)
#define BS (2 * MiB)

static char *host; /* fake host memory: only addresses are used */

static struct rdm_region *new_region(uint64_t iova, uint64_t size, uint32_t policy, uint32_t flags)
{
	struct rdm_region_config rc = { .struct_size = sizeof(rc) };
	struct rdm_region *r;

	rc.iova = iova;
	rc.size = size;
	rc.block_size = BS;
	rc.host_addr = host;
	rc.policy = policy;
	rc.defer_budget = RDM_DEFER_BUDGET_NONE; /* the layout tests: no budget cuts */
	rc.flags = flags;
	REQUIRE(rdm_region_create(&rc, &r) == 0);
	return r;
}

static struct rdm_backend *new_sim(bool can_split)
{
	struct rdm_sim_config sc = { .struct_size = sizeof(sc), .semantics = RDM_SEM_TYPE1V2, .call_ns = 1,
				     .can_split = can_split };
	struct rdm_backend *b;

	REQUIRE(rdm_backend_sim_create(&sc, &b) == 0);
	return b;
}

static struct rdm_backend_stats stats(const struct rdm_backend *b)
{
	struct rdm_backend_stats st;

	rdm_backend_get_stats(b, &st);
	return st;
}

static struct rdm_planner *planner_of(struct rdm_region *r)
{
	return &((struct rdm_wregion *)rdm_region_get_applier_ctx(r))->planner;
}

/* The next unmap fails, and so does its retry: the backend is marked failed. */
static void arm_unmap_failure(struct rdm_backend *b)
{
	REQUIRE(rdm_sim_inject(b, RDM_SIM_CALL_UNMAP, 1, -EIO) == 0);
	REQUIRE(rdm_sim_inject(b, RDM_SIM_CALL_UNMAP, 2, -EIO) == 0);
}

/* A sim (split-capable or not) behind a worker, and a region made from rc
 * (released blocks counted by on_release when rc names it) attached to it. */
struct rig {
	struct rdm_backend *b;
	struct rdm_worker *w;
	struct rdm_region *r;
};

static struct rig rig_up(const struct rdm_region_config *rc, bool can_split)
{
	struct rig g = { .b = new_sim(can_split) };

	REQUIRE(rdm_worker_create(NULL, &g.w) == 0);
	REQUIRE(rdm_worker_add_backend(g.w, g.b, 0) == 0);
	REQUIRE(rdm_region_create(rc, &g.r) == 0);
	REQUIRE(rdm_worker_attach(g.w, g.r, g.b) == 0);
	return g;
}

static void rig_down(struct rig *g)
{
	CHECK(rdm_region_destroy(g->r) == 0);
	CHECK(rdm_worker_destroy(g->w) == 0);
	rdm_backend_destroy(g->b);
}

/* The backend calls accept a range that ends exactly at 2^64, in the sim
 * (also splitting there) and in the real backends' shadows. */
static void test_backend_end_of_space(void)
{
	const uint64_t top = 0ull - 8 * KiB; /* [top, 2^64) */
	struct rdm_backend *b = new_sim(false);
	uint64_t done = 0;

	CHECK(rdm_backend_map(b, top, 8 * KiB, 0x10000) == 0);
	CHECK(rdm_sim_is_mapped(b, top, 8 * KiB, true, 0x10000));
	CHECK(rdm_sim_is_mapped(b, top + 4 * KiB, 4 * KiB, true, 0x11000));
	CHECK(!rdm_sim_is_unmapped(b, top + 4 * KiB, 4 * KiB));
	CHECK(rdm_backend_map(b, top + 4 * KiB, 4 * KiB, 0) == -EEXIST);
	/* Bisecting at the top is refused like anywhere else. */
	CHECK(rdm_backend_unmap(b, top + 4 * KiB, 4 * KiB, &done) == -EINVAL);
	CHECK(rdm_backend_unmap(b, top - 4 * KiB, 12 * KiB, &done) == 0 && done == 8 * KiB);
	CHECK(rdm_sim_is_unmapped(b, top, 8 * KiB) && stats(b).mappings == 0);
	/* Past 2^64 is still refused. */
	CHECK(rdm_backend_map(b, top, 12 * KiB, 0) == -EINVAL);
	rdm_backend_destroy(b);

	b = new_sim(true);
	CHECK(rdm_backend_map(b, top - 8 * KiB, 16 * KiB, 0x10000) == 0);
	CHECK(rdm_backend_unmap(b, top - 4 * KiB, 4 * KiB, &done) == 0 && done == 4 * KiB);
	/* The survivor above the hole ends at 2^64, at its own host address. */
	CHECK(rdm_sim_is_mapped(b, top, 8 * KiB, true, 0x12000) && stats(b).mappings == 2);
	CHECK(rdm_backend_unmap(b, top, 8 * KiB, &done) == 0 && done == 8 * KiB && stats(b).mappings == 1);
	rdm_backend_destroy(b);

	/* vfio-type1 on the fake kernel: the shadow forgets the mapping. */
	struct fake_kernel fk;
	struct fake_kernel_config cfg = { .mode = FAKE_TYPE1, .fd = 42 };

	REQUIRE(fake_kernel_init(&fk, &cfg) == 0);
	REQUIRE(rdm_backend_vfio_type1_create(42, fake_kernel_ioctl, &fk, &b) == 0);
	CHECK(rdm_backend_map(b, top, 8 * KiB, 0x10000) == 0 && stats(b).mappings == 1);
	CHECK(rdm_backend_unmap(b, top, 8 * KiB, &done) == 0 && stats(b).mappings == 0);
	CHECK(fk.violations == 0);
	rdm_backend_destroy(b);
	fake_kernel_fini(&fk);
}

/* A region whose last block ends at 2^64: mapped, unmapped, destroyed
 * without marking the backend failed, which then serves other regions. */
static void test_region_end_of_space(void)
{
	const uint64_t size = 64 * MiB, iova = 0ull - size;
	struct rdm_backend *b = new_sim(false);
	struct rdm_worker *w;
	struct rdm_worker_stats ws;

	REQUIRE(rdm_worker_create(NULL, &w) == 0);
	REQUIRE(rdm_worker_add_backend(w, b, 0) == 0);
	struct rdm_region *r = new_region(iova, size, RDM_POLICY_BLOCK, 0);

	REQUIRE(rdm_worker_attach(w, r, b) == 0);
	CHECK(rdm_populate(r, size - BS, BS) == 0);
	CHECK(rdm_sim_is_mapped(b, iova + size - BS, BS, true, (uint64_t)(uintptr_t)host + size - BS));
	CHECK(rdm_discard(r, size - BS, BS) == 0);
	CHECK(rdm_sim_is_unmapped(b, iova + size - BS, BS));
	CHECK(rdm_populate(r, 0, size) == 0 && stats(b).mappings == size / BS);
	CHECK(rdm_region_destroy(r) == 0);
	rdm_worker_get_stats(w, &ws);
	CHECK(ws.failed_backends == 0 && stats(b).mappings == 0);

	/* The same backend still serves another region. */
	r = new_region(1ull << 32, size, RDM_POLICY_COALESCE, RDM_REGION_ALLOW_WINDOWS);
	REQUIRE(rdm_worker_attach(w, r, b) == 0);
	CHECK(rdm_populate(r, 0, size) == 0);
	CHECK(rdm_region_destroy(r) == 0);
	CHECK(rdm_worker_destroy(w) == 0);
	rdm_backend_destroy(b);
}

struct snap {
	uint64_t v[64][3];
	unsigned n;
};

static int snap_cb(void *opaque, uint64_t iova, uint64_t len, uint64_t va)
{
	struct snap *s = opaque;

	if (s->n < 64) {
		s->v[s->n][0] = iova;
		s->v[s->n][1] = len;
		s->v[s->n][2] = va;
	}
	s->n++;
	return 0;
}

static bool same(const struct snap *a, const struct snap *b)
{
	return a->n == b->n && memcmp(a->v, b->v, sizeof(a->v[0]) * (a->n < 64 ? a->n : 64)) == 0;
}

/*
 * coalesce with windows: a lenient populate reaches the planner as several
 * runs; the first reuses a deferred block, a later one hits the mapping
 * limit. The populate fails with -ENOSPC and the mappings are as before:
 * the rollback of the first run must not split the mapping it reused.
 */
static void test_refused_populate_keeps_mappings(void)
{
	const uint64_t io1 = 1ull << 32, io2 = 1ull << 36, size = 256 * MiB;
	struct rdm_backend *b = new_sim(false);
	struct rdm_worker *w;
	struct rdm_worker_stats ws;
	struct snap before = { .n = 0 }, after = { .n = 0 };

	REQUIRE(rdm_worker_create(NULL, &w) == 0);
	REQUIRE(rdm_worker_add_backend(w, b, 6) == 0); /* budget: 6 mappings */
	struct rdm_region *r = new_region(io1, size, RDM_POLICY_COALESCE, RDM_REGION_ALLOW_WINDOWS);
	struct rdm_region *fill = new_region(io2, size, RDM_POLICY_BLOCK, 0);

	REQUIRE(rdm_worker_attach(w, r, b) == 0);
	REQUIRE(rdm_worker_attach(w, fill, b) == 0);
	CHECK(rdm_populate(r, 0, 8 * BS) == 0);          /* [0, 8) */
	CHECK(rdm_populate(r, 16 * BS, BS) == 0);        /* [16] */
	CHECK(rdm_populate(r, 20 * BS, BS) == 0);        /* [20] */
	CHECK(rdm_populate(fill, 0, 3 * BS) == 0);       /* the budget is full */
	/* No room for a split: block 3 is deferred inside [0, 8). */
	CHECK(rdm_discard(r, 3 * BS, BS) == 0);
	rdm_worker_get_stats(w, &ws);
	CHECK(ws.deferred_bytes == BS && ws.defer_limit_exceeded == 1);
	/* Room for a split again, and for a populate reusing blocks (it keeps
	 * two mappings of headroom), but not for one needing a mapping. */
	CHECK(rdm_discard(fill, 0, 2 * BS) == 0);
	rdm_sim_for_each_mapping(b, snap_cb, &before); /* r's 3, fill's 1 */
	CHECK(before.n == 4);

	struct rdm_backend_stats st0 = stats(b);

	/* Runs [3], [8, 16), [17, 20), [21, 31): [3] reuses [0, 8), [8, 16)
	 * would need a mapping past the limit. */
	CHECK(rdm_populate(r, 3 * BS, 28 * BS) == -ENOSPC);
	CHECK(strstr(rdm_last_error(), "mapping limit") != NULL);
	rdm_sim_for_each_mapping(b, snap_cb, &after);
	CHECK(same(&before, &after));
	struct rdm_backend_stats st1 = stats(b);

	CHECK(st1.map_calls == st0.map_calls && st1.unmap_calls == st0.unmap_calls);
	CHECK(st1.remapped_bytes == st0.remapped_bytes && st1.mappings == st0.mappings);
	CHECK(rdm_sim_is_mapped(b, io1, 8 * BS, true, (uint64_t)(uintptr_t)host));
	CHECK(rdm_is_discarded(r, 3 * BS, BS) && rdm_is_populated(r, 4 * BS, 4 * BS));
	rdm_worker_get_stats(w, &ws);
	CHECK(ws.deferred_bytes == BS && ws.remapped_bytes == 0 && ws.defer_limit_exceeded == 1);
	CHECK(rdm_planner_deferred_bytes(planner_of(r)) == BS);

	CHECK(rdm_region_destroy(fill) == 0);
	CHECK(rdm_region_destroy(r) == 0);
	CHECK(rdm_worker_destroy(w) == 0);
	rdm_backend_destroy(b);
}

struct ranges {
	uint64_t off[16], len[16];
	unsigned n;
};

static int range_cb(void *opaque, uint64_t off, uint64_t len)
{
	struct ranges *r = opaque;

	if (r->n < 16) {
		r->off[r->n] = off;
		r->len[r->n] = len;
	}
	r->n++;
	return 0;
}

static int stop_cb(void *opaque, uint64_t a, uint64_t b, uint64_t c)
{
	(void)a;
	(void)b;
	(void)c;
	return ++*(int *)opaque == 2 ? 7 : 0;
}

/* The hooks: one layout for every backend, deferred runs with totals. */
static void test_hooks(void)
{
	const uint64_t io = 1ull << 32, size = 256 * MiB;
	struct rdm_backend *b1 = new_sim(false), *b2 = new_sim(false);
	struct rdm_worker *w;

	REQUIRE(rdm_worker_create(NULL, &w) == 0);
	REQUIRE(rdm_worker_add_backend(w, b1, 0) == 0);
	REQUIRE(rdm_worker_add_backend(w, b2, 0) == 0);
	struct rdm_region *r = new_region(io, size, RDM_POLICY_DEFER, 0);
	struct rdm_planner *p;
	struct snap s = { .n = 0 };
	struct ranges d = { .n = 0 };
	int calls = 0;

	REQUIRE(rdm_worker_attach(w, r, b1) == 0);
	p = planner_of(r);
	CHECK(rdm_populate(r, 0, 32 * BS) == 0);
	CHECK(rdm_populate(r, 32 * BS, 32 * BS) == 0);
	REQUIRE(rdm_worker_attach(w, r, b2) == 0);
	/* defer maps each populate's run whole: two mappings, in both backends. */
	rdm_planner_for_each_mapping(p, snap_cb, &s);
	CHECK(s.n == 2);
	CHECK(s.v[0][0] == io && s.v[0][1] == 32 * BS && s.v[0][2] == (uint64_t)(uintptr_t)host);
	CHECK(s.v[1][0] == io + 32 * BS && s.v[1][1] == 32 * BS);
	CHECK(stats(b1).mappings == 2 && stats(b2).mappings == 2);
	/* Discards inside the first half are deferred; two runs in it. */
	CHECK(rdm_discard(r, 2 * BS, 2 * BS) == 0);
	CHECK(rdm_discard(r, 10 * BS, BS) == 0);
	CHECK(rdm_planner_for_each_deferred(p, range_cb, &d) == 0);
	CHECK(d.n == 2 && d.off[0] == 2 * BS && d.len[0] == 2 * BS && d.off[1] == 10 * BS && d.len[1] == BS);
	CHECK(rdm_planner_deferred_bytes(p) == 3 * BS);
	CHECK(rdm_sim_is_mapped(b2, io + 2 * BS, 2 * BS, true, (uint64_t)(uintptr_t)host + 2 * BS));
	/* A callback's non-zero return stops the walk and is returned. */
	CHECK(rdm_planner_for_each_mapping(p, stop_cb, &calls) == 7 && calls == 2);
	/* The second half goes whole: one mapping left, nothing new deferred. */
	CHECK(rdm_discard(r, 32 * BS, 32 * BS) == 0);
	s.n = 0;
	rdm_planner_for_each_mapping(p, snap_cb, &s);
	CHECK(s.n == 1 && rdm_planner_deferred_bytes(p) == 3 * BS);
	CHECK(rdm_region_destroy(r) == 0);
	CHECK(rdm_worker_destroy(w) == 0);
	rdm_backend_destroy(b1);
	rdm_backend_destroy(b2);
}

/* Release oracle for the split test. */
static unsigned released_blocks[256];

static void on_release(void *opaque, uint64_t off, uint64_t len)
{
	(void)opaque;
	for (uint64_t b = off / BS; b < (off + len) / BS; b++)
		released_blocks[b]++;
}

/*
 * coalesce with windows: a bisecting discard whose split cannot reserve the
 * node for the second survivor (the layout's node pool is full and the
 * allocation fails) defers instead: it succeeds, keeps the mapping, releases
 * nothing of it, and counts the deferral. The later discard of the rest
 * unmaps the whole mapping and releases every block of it.
 */
static void test_split_without_memory_defers(void)
{
	const uint64_t io = 1ull << 32, size = 256 * BS, victim = 4 * 10;
	bool seen = false;

	for (unsigned long k = 1; k < 200 && !seen; k++) {
		struct rdm_region_config rc = { .struct_size = sizeof(rc), .iova = io, .size = size, .block_size = BS,
						.host_addr = host, .release = on_release,
						.policy = RDM_POLICY_COALESCE, .flags = RDM_REGION_ALLOW_WINDOWS };
		struct rdm_worker_stats ws;

		memset(released_blocks, 0, sizeof(released_blocks));
		struct rig g = rig_up(&rc, false);
		/* 63 mappings of 3 blocks: the layout's first pool (63 nodes) is full. */
		for (uint64_t i = 0; i < 63; i++)
			REQUIRE(rdm_populate(g.r, 4 * i * BS, 3 * BS) == 0);
		/* Every retired tree node back in the tree's node pool first, so
		 * the discard's own node comes from there whatever the call_rcu
		 * thread's timing, and the allocation numbers do not shift. */
		rcu_barrier();
		rdm_alloc_inject(k, false);
		int rc1 = rdm_discard(g.r, (victim + 1) * BS, BS);
		unsigned long hit = rdm_alloc_injected();

		rdm_alloc_inject(0, false);
		rdm_worker_get_stats(g.w, &ws);
		if (rc1 == 0 && hit && ws.defer_limit_exceeded == 1) {
			/* The split's node could not be had: deferred, not split. */
			seen = true;
			CHECK(ws.remapped_bytes == 0 && ws.deferred_bytes == BS);
			CHECK(rdm_sim_is_mapped(g.b, io + victim * BS, 3 * BS, true,
						(uint64_t)(uintptr_t)host + victim * BS));
			CHECK(stats(g.b).mappings == 63 && released_blocks[victim + 1] == 0);
			CHECK(rdm_planner_deferred_bytes(planner_of(g.r)) == BS);
			CHECK(rdm_discard(g.r, victim * BS, 3 * BS) == 0);
			CHECK(rdm_sim_is_unmapped(g.b, io + victim * BS, 3 * BS) && stats(g.b).mappings == 62);
			CHECK(released_blocks[victim] == 1 && released_blocks[victim + 1] == 1 &&
			      released_blocks[victim + 2] == 1);
			rdm_worker_get_stats(g.w, &ws);
			CHECK(ws.deferred_bytes == 0);
		} else if (rc1 == 0) {
			/* The failure hit elsewhere (or nowhere): a split or a
			 * clean deferral, never a lost mapping. */
			CHECK(rdm_sim_is_mapped(g.b, io + victim * BS, BS, true, (uint64_t)(uintptr_t)host + victim * BS));
			CHECK(rdm_sim_is_mapped(g.b, io + (victim + 2) * BS, BS, true,
						(uint64_t)(uintptr_t)host + (victim + 2) * BS));
		} else {
			CHECK(rc1 == -ENOMEM && rdm_is_populated(g.r, (victim + 1) * BS, BS));
		}
		rig_down(&g);
	}
	CHECK(seen);
}

/*
 * A lenient discard that reaches the tail as two runs inside one mapping,
 * the first of which pushes defer past its limit: the split that enforces
 * the limit (a window over the survivors) must see the second run still
 * populated - the tail has not been told of it yet - so the window keeps
 * it and the second run is then handled like any discard, not released by
 * the split and again as "in no mapping" (core/region.c "The tail's view";
 * found by fuzzing as a double release).
 */
static void test_split_sees_told_runs(void)
{
	const uint64_t io = 1ull << 32;
	struct rdm_region_config rc = { .struct_size = sizeof(rc), .iova = io, .size = 16 * BS, .block_size = BS,
					.host_addr = host, .release = on_release, .policy = RDM_POLICY_DEFER,
					.flags = RDM_REGION_ALLOW_WINDOWS, .defer_limit = 4 * BS,
					.defer_budget = RDM_DEFER_BUDGET_NONE };
	struct rdm_worker_stats ws;

	memset(released_blocks, 0, sizeof(released_blocks));
	struct rig g = rig_up(&rc, false);
	REQUIRE(rdm_populate(g.r, 0, 16 * BS) == 0);
	CHECK(stats(g.b).mappings == 1);
	/* Deferred: 2 blocks, under the limit of 4. */
	CHECK(rdm_discard(g.r, 6 * BS, 2 * BS) == 0);
	CHECK(released_blocks[6] == 0 && rdm_sim_is_mapped(g.b, io, 16 * BS, true, (uint64_t)(uintptr_t)host));
	/* Runs [2, 6) and [8, 12): after the first, 6 blocks are deferred. */
	CHECK(rdm_discard(g.r, 2 * BS, 10 * BS) == 0);
	rdm_worker_get_stats(g.w, &ws);
	CHECK(ws.remapped_bytes > 0);
	/* The window kept [0, 2) and [8, 16), whose [8, 12) the second run
	 * then deferred (4 blocks, at the limit); [2, 8) released once. */
	for (unsigned k = 0; k < 16; k++)
		CHECK(released_blocks[k] == (k >= 2 && k < 8 ? 1u : 0u));
	CHECK(stats(g.b).mappings == 2 && rdm_sim_is_unmapped(g.b, io + 2 * BS, 6 * BS));
	CHECK(rdm_sim_is_mapped(g.b, io, 2 * BS, true, (uint64_t)(uintptr_t)host));
	CHECK(rdm_sim_is_mapped(g.b, io + 8 * BS, 8 * BS, true, (uint64_t)(uintptr_t)host + 8 * BS));
	/* The rest of that mapping goes: [8, 16) released once, with it. */
	CHECK(rdm_discard(g.r, 12 * BS, 4 * BS) == 0);
	for (unsigned k = 0; k < 16; k++)
		CHECK(released_blocks[k] == (k >= 2 ? 1u : 0u));
	CHECK(stats(g.b).mappings == 1 && rdm_sim_is_unmapped(g.b, io + 2 * BS, 14 * BS));
	rig_down(&g);
}

/*
 * An unmap that fails twice marks the backend failed and its blocks leaked
 * (never released). When even the record of the leaked range cannot be
 * allocated, the region stops releasing anything: memory lost, never
 * memory still mapped released (I2).
 */
static void test_leak_without_memory_releases_nothing(void)
{
	const uint64_t io = 1ull << 32, size = 64 * BS;
	bool seen = false;

	for (unsigned long k = 1; k < 200 && !seen; k++) {
		struct rdm_region_config rc = { .struct_size = sizeof(rc), .iova = io, .size = size, .block_size = BS,
						.host_addr = host, .release = on_release };

		memset(released_blocks, 0, sizeof(released_blocks));
		struct rig g = rig_up(&rc, false);
		REQUIRE(rdm_populate(g.r, 0, 4 * BS) == 0);
		arm_unmap_failure(g.b);
		rdm_alloc_inject(k, false);
		int rc1 = rdm_discard(g.r, 0, BS);

		rdm_alloc_inject(0, false);
		rdm_sim_clear_injections(g.b);
		if (rc1 == 0 && rdm_region_pins_all(g.r)) {
			seen = true;
			/* Still mapped in the failed backend: not released. */
			CHECK(rdm_sim_is_mapped(g.b, io, BS, true, (uint64_t)(uintptr_t)host));
			CHECK(released_blocks[0] == 0);
			/* Nothing else of the region is released any more. */
			CHECK(rdm_discard(g.r, BS, BS) == 0);
			CHECK(rdm_sim_is_unmapped(g.b, io + BS, BS) && released_blocks[1] == 0);
		} else if (rc1 == 0) {
			CHECK(released_blocks[0] == 0 && rdm_sim_is_mapped(g.b, io, BS, false, 0));
		}
		rig_down(&g);
	}
	CHECK(seen);
}

/*
 * A first attach that fails (a MAP refused) is undone; when the undo's UNMAP
 * fails twice too, the backend is marked failed and keeps that mapping. The
 * region has no worker again and applies its own changes - and must still
 * never release the blocks the failed backend maps (I2): not on a discard,
 * not at destroy, and not through a later worker either. Every other block
 * is released as usual.
 */
static void test_failed_first_attach_pins(void)
{
	const uint64_t io = 1ull << 32, size = 8 * BS;
	struct rdm_region_config rc = { .struct_size = sizeof(rc), .iova = io, .size = size, .block_size = BS,
					.host_addr = host, .release = on_release };
	struct rdm_backend *b = new_sim(false), *b2 = new_sim(false);
	struct rdm_worker *w, *w2;
	struct rdm_worker_stats ws;
	struct rdm_region *r;

	memset(released_blocks, 0, sizeof(released_blocks));
	REQUIRE(rdm_worker_create(NULL, &w) == 0);
	REQUIRE(rdm_worker_add_backend(w, b, 0) == 0);
	REQUIRE(rdm_region_create(&rc, &r) == 0);
	REQUIRE(rdm_populate(r, 0, 4 * BS) == 0);
	/* Blocks 0 and 1 mapped (one mapping each), block 2's MAP refused;
	 * the undo's one UNMAP over [0, 2) (ANY call 4) and its retry fail. */
	REQUIRE(rdm_sim_inject(b, RDM_SIM_CALL_MAP, 3, -ENOMEM) == 0);
	REQUIRE(rdm_sim_inject(b, RDM_SIM_CALL_ANY, 4, -EIO) == 0);
	REQUIRE(rdm_sim_inject(b, RDM_SIM_CALL_ANY, 5, -EIO) == 0);
	CHECK(rdm_worker_attach(w, r, b) == -ENOMEM);
	rdm_sim_clear_injections(b);
	rdm_worker_get_stats(w, &ws);
	CHECK(ws.failed_backends == 1);
	CHECK(rdm_region_get_applier_ops(r) == NULL);
	CHECK(rdm_region_any_pinned(r) && !rdm_region_pins_all(r));
	CHECK(rdm_sim_is_mapped(b, io, 2 * BS, true, (uint64_t)(uintptr_t)host));
	CHECK(rdm_sim_is_unmapped(b, io + 2 * BS, size - 2 * BS));

	/* The region applies its own discards: blocks 0 and 1 stay pinned,
	 * the others are released as usual. */
	CHECK(rdm_discard(r, BS, 2 * BS) == 0);
	CHECK(released_blocks[1] == 0 && released_blocks[2] == 1);
	CHECK(rdm_populate(r, BS, 2 * BS) == 0);
	CHECK(rdm_discard_all(r) == 0);
	CHECK(released_blocks[0] == 0 && released_blocks[1] == 0);
	CHECK(released_blocks[2] == 2 && released_blocks[3] == 1);

	/* A later worker honours the pins too. */
	REQUIRE(rdm_worker_create(NULL, &w2) == 0);
	REQUIRE(rdm_worker_add_backend(w2, b2, 0) == 0);
	CHECK(rdm_worker_attach(w2, r, b2) == 0);
	CHECK(rdm_populate(r, 0, 3 * BS) == 0);
	CHECK(rdm_discard(r, 0, 3 * BS) == 0);
	CHECK(released_blocks[0] == 0 && released_blocks[1] == 0 && released_blocks[2] == 3);
	CHECK(rdm_sim_is_unmapped(b2, io, size));

	/* Destroy releases nothing of a region with pinned blocks (the
	 * worker's rule, contract 3). */
	CHECK(rdm_populate(r, 0, 4 * BS) == 0);
	CHECK(rdm_region_destroy(r) == 0);
	CHECK(released_blocks[0] == 0 && released_blocks[1] == 0);
	CHECK(released_blocks[2] == 3 && released_blocks[3] == 1);
	CHECK(rdm_sim_is_mapped(b, io, 2 * BS, true, (uint64_t)(uintptr_t)host));
	CHECK(rdm_sim_is_unmapped(b2, io, size));
	CHECK(rdm_worker_destroy(w2) == 0);
	CHECK(rdm_worker_destroy(w) == 0);
	rdm_backend_destroy(b2);
	rdm_backend_destroy(b);
}

/*
 * A discard queues its mapping's unmap until the batch's next map or its
 * end. When that unmap fails twice, the backend is marked failed and still
 * holds the mapping: a populate later in the same batch must then fail with
 * -EIO (as on any failed backend), not map over it, and the block stays
 * pinned.
 */
static void test_failed_flush_stops_populate(void)
{
	const uint64_t io = 1ull << 32, size = 8 * BS;
	struct rdm_region_config rc = { .struct_size = sizeof(rc), .iova = io, .size = size, .block_size = BS,
					.host_addr = host, .release = on_release };
	struct rdm_worker_stats before, after;
	struct rdm_producer *prod;
	uint64_t t[2];
	int res[2];

	memset(released_blocks, 0, sizeof(released_blocks));
	struct rig g = rig_up(&rc, false);
	REQUIRE(rdm_populate(g.r, 0, 2 * BS) == 0);
	REQUIRE(rdm_producer_create(&prod) == 0);
	arm_unmap_failure(g.b);
	struct rdm_change ch[2] = {
		{ .region = g.r, .kind = RDM_CHANGE_DISCARD, .offset = 0, .length = BS },
		{ .region = g.r, .kind = RDM_CHANGE_POPULATE, .offset = 0, .length = BS },
	};
	rdm_worker_get_stats(g.w, &before);
	/* One ring publish: the worker takes both in one batch. */
	REQUIRE(rdm_producer_submit(prod, ch, 2, t) == 0);
	CHECK(rdm_producer_wait(prod, t[0], &res[0]) == 0 && res[0] == 0);
	CHECK(rdm_producer_wait(prod, t[1], &res[1]) == 0);
	rdm_worker_get_stats(g.w, &after);
	REQUIRE(after.batches == before.batches + 1);
	CHECK(res[1] == -EIO);
	CHECK(after.failed_backends == 1);
	CHECK(!rdm_is_populated(g.r, 0, BS) && rdm_is_populated(g.r, BS, BS));
	CHECK(released_blocks[0] == 0 && rdm_region_any_pinned(g.r));
	CHECK(rdm_sim_is_mapped(g.b, io, 2 * BS, true, (uint64_t)(uintptr_t)host));
	rdm_sim_clear_injections(g.b);
	rdm_producer_destroy(prod);
	CHECK(rdm_region_destroy(g.r) == 0);
	CHECK(released_blocks[0] == 0);
	CHECK(rdm_worker_destroy(g.w) == 0);
	rdm_backend_destroy(g.b);
}

/*
 * A failed backend never gets a call that adds a mapping: an unmap that
 * failed there may have left mappings its count no longer holds, so a
 * split there could pass its limit (I4). On a split-capable sim, a
 * coalesce mapping of 8 blocks; the unmap of its first block fails twice
 * (the backend is failed; that unmap split the mapping, so the sim still
 * maps all 8 blocks, pinned); a discard in the middle then defers instead
 * of splitting (the sim keeps one mapping, the blocks stay unreleased,
 * counted), and the discard of the rest sends the failed sim no unmap
 * inside the pinned range (test_failed_split_never_bisects): it keeps its
 * one mapping and no block is released.
 */
static void test_failed_backend_never_splits(void)
{
	const uint64_t io = 1ull << 32;
	struct rdm_region_config rc = { .struct_size = sizeof(rc), .iova = io, .size = 8 * BS, .block_size = BS,
					.host_addr = host, .release = on_release, .policy = RDM_POLICY_COALESCE };
	struct rdm_worker_stats ws;

	memset(released_blocks, 0, sizeof(released_blocks));
	struct rig g = rig_up(&rc, true);
	REQUIRE(rdm_populate(g.r, 0, 8 * BS) == 0);
	REQUIRE(stats(g.b).mappings == 1);
	arm_unmap_failure(g.b);
	CHECK(rdm_discard(g.r, 0, BS) == 0);
	rdm_sim_clear_injections(g.b);
	rdm_worker_get_stats(g.w, &ws);
	REQUIRE(ws.failed_backends == 1);
	CHECK(released_blocks[0] == 0 && ws.defer_limit_exceeded == 0);
	/* In the middle: no split on the failed backend. */
	CHECK(rdm_discard(g.r, 3 * BS, BS) == 0);
	rdm_worker_get_stats(g.w, &ws);
	CHECK(ws.defer_limit_exceeded == 1);
	CHECK(stats(g.b).mappings == 1 && rdm_sim_is_mapped(g.b, io, 8 * BS, true, (uint64_t)(uintptr_t)host));
	CHECK(released_blocks[3] == 0);
	/* The rest: the layout's mapping [1, 8) goes, but not from the failed
	 * sim, which still maps [0, 8) as one mapping. */
	CHECK(rdm_discard(g.r, BS, 7 * BS) == 0);
	CHECK(stats(g.b).mappings == 1 && rdm_sim_is_mapped(g.b, io, 8 * BS, true, (uint64_t)(uintptr_t)host));
	for (unsigned k = 0; k < 8; k++)
		CHECK(released_blocks[k] == 0);
	rig_down(&g);
	for (unsigned k = 0; k < 8; k++)
		CHECK(released_blocks[k] == 0);
}

/*
 * A split that fails leaves the whole mapping in the failed backend while
 * the layout goes on with the pieces: later unmaps of pieces there must not
 * bisect it (each would add a mapping to a failed backend, I4), and what it
 * still maps must not be released (I2). On a split-capable sim, a coalesce
 * mapping of blocks [0, 8) and one of [8, 12); the unmap that would split
 * out block 3 fails twice (the backend is failed; the layout holds [0, 3)
 * and [4, 8), the sim still [0, 8)). Discarding [4, 6) splits the layout's
 * [4, 8) on its left end, [1, 3) and then [8, 12) go whole: the sim keeps
 * [0, 8) as one mapping and unmaps [8, 12) (outside the pinned [0, 8)),
 * whose blocks alone are released.
 */
static void test_failed_split_never_bisects(void)
{
	const uint64_t io = 1ull << 32;
	struct rdm_region_config rc = { .struct_size = sizeof(rc), .iova = io, .size = 12 * BS, .block_size = BS,
					.host_addr = host, .release = on_release, .policy = RDM_POLICY_COALESCE };
	struct rdm_worker_stats ws;

	memset(released_blocks, 0, sizeof(released_blocks));
	struct rig g = rig_up(&rc, true);
	REQUIRE(rdm_populate(g.r, 0, 8 * BS) == 0);
	REQUIRE(rdm_populate(g.r, 8 * BS, 4 * BS) == 0);
	REQUIRE(stats(g.b).mappings == 2);
	arm_unmap_failure(g.b);
	CHECK(rdm_discard(g.r, 3 * BS, BS) == 0);
	rdm_sim_clear_injections(g.b);
	rdm_worker_get_stats(g.w, &ws);
	REQUIRE(ws.failed_backends == 1);
	CHECK(stats(g.b).mappings == 2 && rdm_sim_is_mapped(g.b, io, 8 * BS, true, (uint64_t)(uintptr_t)host));
	CHECK(rdm_discard(g.r, 4 * BS, 2 * BS) == 0);
	CHECK(rdm_discard(g.r, BS, 2 * BS) == 0);
	CHECK(stats(g.b).mappings == 2 && rdm_sim_is_mapped(g.b, io, 8 * BS, true, (uint64_t)(uintptr_t)host));
	CHECK(rdm_discard(g.r, 8 * BS, 4 * BS) == 0);
	CHECK(stats(g.b).mappings == 1 && rdm_sim_is_unmapped(g.b, io + 8 * BS, 4 * BS));
	for (unsigned k = 0; k < 12; k++)
		CHECK(released_blocks[k] == (k >= 8 ? 1u : 0u));
	rig_down(&g);
	for (unsigned k = 0; k < 8; k++)
		CHECK(released_blocks[k] == 0);
}

/* A layout that shrank gives its memory back between batches (the
 * planner's trim, rdm_maptree_trim()), and keeps working afterwards: 2^17
 * single-block mappings (a pool above RDM_MAPTREE_TRIM_ABOVE), all but 8
 * discarded, then all populated again. */
static void test_layout_gives_memory_back(void)
{
	const uint64_t n = 1u << 17;
	struct rdm_sim_config sc = { .struct_size = sizeof(sc), .semantics = RDM_SEM_IOMMUFD, .call_ns = 1 };
	struct rdm_backend *b;
	struct rdm_worker *w;

	/* iommufd's semantics: no mapping limit below 2^17. */
	REQUIRE(rdm_backend_sim_create(&sc, &b) == 0);

	REQUIRE(rdm_worker_create(NULL, &w) == 0);
	REQUIRE(rdm_worker_add_backend(w, b, 0) == 0);
	struct rdm_region *r = new_region(1ull << 36, n * BS, RDM_POLICY_BLOCK, 0);

	REQUIRE(rdm_worker_attach(w, r, b) == 0);
	CHECK(rdm_populate(r, 0, n * BS) == 0);
	/* The flush's release/acquire pair makes the worker's planner state
	 * visible here (no batch runs meanwhile). */
	CHECK(rdm_worker_flush(w) == 0);
	CHECK(planner_of(r)->maps.count == n && planner_of(r)->maps.cap > n);
	CHECK(rdm_discard(r, 8 * BS, (n - 8) * BS) == 0);
	CHECK(rdm_worker_flush(w) == 0);
	CHECK(planner_of(r)->maps.count == 8 && planner_of(r)->maps.cap == RDM_MAPTREE_TRIM_MIN);
	CHECK(stats(b).mappings == 8 && rdm_sim_is_mapped(b, 1ull << 36, 8 * BS, true, (uint64_t)(uintptr_t)host));
	CHECK(rdm_sim_is_unmapped(b, (1ull << 36) + 8 * BS, (n - 8) * BS));
	CHECK(rdm_populate(r, 8 * BS, (n - 8) * BS) == 0);
	CHECK(stats(b).mappings == n && rdm_sim_is_mapped(b, 1ull << 36, n * BS, true, (uint64_t)(uintptr_t)host));
	CHECK(rdm_worker_flush(w) == 0);
	CHECK(planner_of(r)->maps.count == n);
	CHECK(rdm_region_destroy(r) == 0);
	CHECK(rdm_worker_destroy(w) == 0);
	rdm_backend_destroy(b);
}

/*
 * A batch's discards arrive in any order; the flush unmaps its dead
 * mappings in address order, so adjacent ones go in one call (type1v2
 * unmaps a range of whole mappings). Blocks [4, 12) of 16, one mapping each
 * (block policy), discarded in one batch out of order: one UNMAP,
 * the range unmapped, the rest still mapped. Each size of dead list (2..8:
 * prefixes of the order) is tried, because the flush sorts short lists in
 * an array.
 */
static void test_scattered_discards_coalesce(void)
{
	/* Each prefix of two or more is a run of blocks, none in order. */
	static const unsigned order[8] = { 8, 7, 9, 6, 10, 5, 11, 4 };
	static const unsigned lowest[9] = { 0, 8, 7, 7, 6, 6, 5, 5, 4 }; /* of each prefix */
	const uint64_t iova = 1ull << 36;
	struct rdm_region_config rc = { .struct_size = sizeof(rc), .iova = iova, .size = 16 * BS,
					.block_size = BS, .host_addr = host, .policy = RDM_POLICY_BLOCK };
	struct rig g = rig_up(&rc, false);
	struct rdm_producer *p;

	REQUIRE(rdm_producer_create(&p) == 0);
	for (unsigned n = 2; n <= 8; n++) {
		/* One batch is what this tests: a batch that the worker split
		 * (it drained the ring mid-publish) is tried again. */
		bool one_batch = false;

		for (int attempt = 0; attempt < 100 && !one_batch; attempt++) {
			struct rdm_change ch[8];
			uint64_t t[8];
			struct rdm_worker_stats w0, w1;
			struct rdm_backend_stats b0, b1;
			int res;

			CHECK(rdm_populate(g.r, 0, 16 * BS) == 0);
			REQUIRE(rdm_is_populated(g.r, 0, 16 * BS));
			REQUIRE(rdm_worker_flush(g.w) == 0);
			rdm_worker_get_stats(g.w, &w0);
			b0 = stats(g.b);
			for (unsigned i = 0; i < n; i++)
				ch[i] = (struct rdm_change){ .region = g.r, .kind = RDM_CHANGE_DISCARD,
							     .offset = order[i] * BS, .length = BS };
			REQUIRE(rdm_producer_submit(p, ch, n, t) == 0);
			for (unsigned i = 0; i < n; i++) {
				CHECK(rdm_producer_wait(p, t[i], &res) == 0);
				CHECK(res == 0);
			}
			REQUIRE(rdm_worker_flush(g.w) == 0);
			rdm_worker_get_stats(g.w, &w1);
			b1 = stats(g.b);
			one_batch = w1.batches - w0.batches == 1;
			if (!one_batch)
				continue;
			/* The prefix covers [lowest, lowest + n) in blocks. */
			uint64_t lo = lowest[n];

			CHECK(b1.unmap_calls - b0.unmap_calls == 1);
			CHECK(rdm_sim_is_unmapped(g.b, iova + lo * BS, n * BS));
			CHECK(rdm_sim_is_mapped(g.b, iova, lo * BS, true, (uint64_t)(uintptr_t)host));
			CHECK(rdm_sim_is_mapped(g.b, iova + (lo + n) * BS, (16 - lo - n) * BS, true,
						(uint64_t)(uintptr_t)host + (lo + n) * BS));
			if (b1.unmap_calls - b0.unmap_calls != 1)
				fprintf(stderr, "scattered discards, %u of them: %" PRIu64 " unmap calls, want 1\n", n,
					b1.unmap_calls - b0.unmap_calls);
		}
		CHECK(one_batch);
	}
	rdm_producer_destroy(p);
	rig_down(&g);
}

/*
 * Long dead lists, sorted before the flush coalesces them: a planner driven
 * directly (no worker, so one flush sees every discard), every block of a
 * range mapped on its own (block policy), the range's blocks discarded one
 * by one in an order that is not the address order, then one flush: a sort
 * that leaves any two neighbours out of order costs a second unmap call.
 * Lengths around the array sort's chunks (32) and merge levels, and past
 * SORT_DEAD_ARRAY (512: the list merge sort, whose halves the array sorts);
 * orders: shuffled, descending, and k producers' ascending streams
 * interleaved (how producers sharing a region submit).
 */
static void test_long_dead_lists(void)
{
	enum { NB = 2048 };
	static const unsigned lens[] = { 2, 31, 32, 33, 64, 65, 97, 255, 256, 300, 511, 512, 513, 700, 1500 };
	struct rdm_region_config rc = { .struct_size = sizeof(rc), .iova = 1ull << 37, .size = NB * BS,
					.block_size = BS, .host_addr = host, .policy = RDM_POLICY_BLOCK };
	struct rdm_wbackend wb = { .b = new_sim(false), .budget = 65535 };
	struct rdm_planner pl;
	struct rdm_region *r;
	uint64_t st[7] = { 0 };
	static uint32_t order[NB];
	unsigned cases = 0;

	rdm_backend_get_caps(wb.b, &wb.caps);
	REQUIRE(rdm_region_create(&rc, &r) == 0);
	REQUIRE(rdm_planner_init(&pl, r) == 0);
	pl.stat_remapped_bytes = &st[0];
	pl.stat_deferred_bytes = &st[1];
	pl.stat_deferred_peak = &st[2];
	pl.stat_defer_exceeded = &st[3];
	pl.stat_budget_exceeded = &st[4];
	pl.stat_enospc = &st[5];
	pl.stat_failed_backends = &st[6];
	REQUIRE(rdm_planner_attach(&pl, &wb) == 0);
	for (uint64_t b = 0; b < NB; b++) {
		rdm_planner_populate_begin(&pl);
		REQUIRE(rdm_planner_populate(&pl, b, 1) == 0);
		rdm_planner_populate_end(&pl);
	}
	rdm_planner_flush(&pl);
	REQUIRE(stats(wb.b).mappings == NB);
	srand(5);
	for (unsigned li = 0; li < sizeof(lens) / sizeof(lens[0]); li++) {
		for (unsigned kind = 0; kind < 5; kind++) {
			unsigned n = lens[li], k = kind < 2 ? 0 : kind; /* streams: 2, 3, 4 */
			uint64_t lo = (uint64_t)(rand() % (NB - n + 1));

			if (kind == 0) { /* shuffled */
				for (unsigned i = 0; i < n; i++)
					order[i] = i;
				for (unsigned i = n - 1; i > 0; i--) {
					unsigned j = (unsigned)rand() % (i + 1), t = order[i];

					order[i] = order[j];
					order[j] = t;
				}
			} else if (kind == 1) { /* descending */
				for (unsigned i = 0; i < n; i++)
					order[i] = n - 1 - i;
			} else { /* stream s owns [s n / k, (s + 1) n / k); round robin */
				unsigned o = 0, next[4];

				for (unsigned s = 0; s < k; s++)
					next[s] = s * n / k;
				while (o < n)
					for (unsigned s = 0; s < k; s++)
						if (next[s] < (s + 1) * n / k)
							order[o++] = next[s]++;
			}
			struct rdm_backend_stats b0 = stats(wb.b), b1;

			for (unsigned i = 0; i < n; i++)
				rdm_planner_discard(&pl, lo + order[i], 1);
			rdm_planner_flush(&pl);
			b1 = stats(wb.b);
			if (b1.unmap_calls - b0.unmap_calls != 1)
				fprintf(stderr, "dead list of %u (order %u): %" PRIu64 " unmap calls, want 1\n", n, kind,
					b1.unmap_calls - b0.unmap_calls);
			CHECK(b1.unmap_calls - b0.unmap_calls == 1);
			CHECK(rdm_sim_is_unmapped(wb.b, rc.iova + lo * BS, n * BS));
			CHECK(b1.mappings == NB - n);
			CHECK(lo == 0 || rdm_sim_is_mapped(wb.b, rc.iova, lo * BS, true, (uint64_t)(uintptr_t)host));
			CHECK(lo + n == NB || rdm_sim_is_mapped(wb.b, rc.iova + (lo + n) * BS, (NB - lo - n) * BS, true,
								 (uint64_t)(uintptr_t)host + (lo + n) * BS));
			for (uint64_t b = lo; b < lo + n; b++) {
				rdm_planner_populate_begin(&pl);
				REQUIRE(rdm_planner_populate(&pl, b, 1) == 0);
				rdm_planner_populate_end(&pl);
			}
			rdm_planner_flush(&pl);
			REQUIRE(stats(wb.b).mappings == NB);
			cases++;
		}
	}
	printf("long dead lists: %u cases\n", cases);
	rdm_planner_teardown(&pl);
	rdm_planner_fini(&pl);
	CHECK(rdm_region_destroy(r) == 0);
	rdm_backend_destroy(wb.b);
}

int main(void)
{
	host = (char *)(uintptr_t)(1ull << 40);
	test_backend_end_of_space();
	test_region_end_of_space();
	test_refused_populate_keeps_mappings();
	test_hooks();
	test_split_without_memory_defers();
	test_split_sees_told_runs();
	test_leak_without_memory_releases_nothing();
	test_failed_first_attach_pins();
	test_failed_split_never_bisects();
	test_failed_flush_stops_populate();
	test_failed_backend_never_splits();
	test_layout_gives_memory_back();
	test_scattered_discards_coalesce();
	test_long_dead_lists();
	return check_exit();
}
