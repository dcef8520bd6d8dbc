/* SPDX-License-Identifier: MIT */
/*
 * tests/iommu/test_budget.c - the defer policy's deferral budget
 * (iommu/planner.c, "Deferral budget"), on the sim.
 *
 * What each check catches:
 *  - exposure: before any discard, the mappings cut coarser than a unit
 *    could together defer at most the budget (a cut that ignores the room,
 *    or takes it once per run instead of per piece, fails it);
 *  - unbounded: RDM_DEFER_BUDGET_NONE maps a run whole (no cut at all);
 *  - learned coarse: after exact whole-chunk discards, a plug is one MAP and
 *    its exact unplug one UNMAP (the lower bound's calls);
 *  - learned fine: after discards that leave islands, fresh plugs are cut
 *    into single units and nothing is deferred;
 *  - scaled: with half the budget deferred, fresh pieces are one level
 *    finer than the learned cut (64 MiB pieces; a linear scale of the
 *    level, 6 * 1/2 = 3, cuts 16 MiB ones; no scale at all, one 128 MiB
 *    mapping, which the room left still allows);
 *  - held peak: a level that would have held more than half the budget
 *    stays out of the cut after the guest released it all (judging by what
 *    it holds now, a fresh plug is one whole-chunk mapping again);
 *  - exceeded: a learned coarse cut that the guest then bisects takes the
 *    region past its budget: counted once per crossing, logged, and new
 *    mappings are single units until it is back under;
 *  - mapping limit: fine cuts never make a populate fail for the backend's
 *    mapping budget; when the cut's pieces would not fit but the populate's
 *    whole runs do, the populate is planned again with whole runs;
 *  - the default: 2% of the region, rounded up to the discard unit.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <rdm/rdm.h>

#include "tests/check.h"

#define MiB (UINT64_C(1) << 20)
#define BS (2 * MiB)
#define CHUNK (128 * MiB)
#define IOVA0 (UINT64_C(1) << 32)

static char *host;

struct world {
	struct rdm_worker *w;
	struct rdm_backend *sim;
	struct rdm_region *r;
	uint64_t size, budget;
};

static void world_init(struct world *x, uint64_t size, uint64_t budget, uint64_t sim_budget)
{
	struct rdm_sim_config sc = {.struct_size = sizeof(sc), .semantics = RDM_SEM_TYPE1V2, .call_ns = 1};
	struct rdm_region_config rc = {.struct_size = sizeof(rc)};

	memset(x, 0, sizeof(*x));
	x->size = size;
	rc.iova = IOVA0;
	rc.size = size;
	rc.block_size = BS;
	rc.host_addr = host;
	rc.policy = RDM_POLICY_DEFER;
	rc.defer_budget = budget;
	REQUIRE(rdm_backend_sim_create(&sc, &x->sim) == 0);
	REQUIRE(rdm_worker_create(NULL, &x->w) == 0);
	REQUIRE(rdm_worker_add_backend(x->w, x->sim, sim_budget) == 0);
	REQUIRE(rdm_region_create(&rc, &x->r) == 0);
	REQUIRE(rdm_worker_attach(x->w, x->r, x->sim) == 0);
	x->budget = budget;
}

static void world_fini(struct world *x)
{
	CHECK(rdm_region_destroy(x->r) == 0);
	CHECK(rdm_worker_destroy(x->w) == 0);
	rdm_backend_destroy(x->sim);
}

static struct rdm_backend_stats bstats(struct world *x)
{
	struct rdm_backend_stats st;

	rdm_backend_get_stats(x->sim, &st);
	return st;
}

static uint64_t deferred(struct world *x)
{
	uint64_t bytes = 0;
	size_t n = 0;

	REQUIRE(rdm_region_get_deferred(x->r, NULL, 0, &n, &bytes) == 0);
	return bytes;
}

/* Mappings of [off, off + len): count, and their blocks beyond the first. */
static void mappings_in(struct world *x, uint64_t off, uint64_t len, size_t *count, uint64_t *exposure)
{
	static struct rdm_mapping m[8192];
	size_t n = 0;

	REQUIRE(rdm_region_get_mappings(x->r, x->sim, m, 8192, &n) == 0);
	REQUIRE(n <= 8192);
	*count = 0;
	*exposure = 0;
	for (size_t i = 0; i < n; i++) {
		if (m[i].offset < off || m[i].offset >= off + len)
			continue;
		(*count)++;
		*exposure += m[i].length - BS;
	}
}

/* The default budget, and the exposure bound before any discard. */
static void test_exposure(void)
{
	struct world x;
	size_t n;
	uint64_t exp;

	/* 1 GiB: 2% = 20.48 MiB, rounded up to the block: 22 MiB. */
	world_init(&x, 1024 * MiB, 0, 0);
	CHECK(rdm_populate(x.r, 0, 4 * CHUNK) == 0);
	mappings_in(&x, 0, x.size, &n, &exp);
	printf("exposure: 512 MiB populated in %zu mappings, exposure %" PRIu64 " MiB (budget 22 MiB)\n", n,
	       exp / MiB);
	CHECK(exp <= 22 * MiB);
	CHECK(exp >= 16 * MiB); /* it does use the room: a first piece of 16 MiB */
	CHECK(n > 4 && n < 256);
	/* Whatever the guest now discards, nothing mapped so far can defer
	 * more than the budget: discard every other block. */
	for (uint64_t b = 0; b < 4 * CHUNK / BS; b += 2)
		CHECK(rdm_discard(x.r, b * BS, BS) == 0);
	CHECK(deferred(&x) <= 22 * MiB);
	world_fini(&x);

	/* Unbounded: the run is one mapping per chunk. */
	world_init(&x, 1024 * MiB, RDM_DEFER_BUDGET_NONE, 0);
	CHECK(rdm_populate(x.r, 0, 4 * CHUNK) == 0);
	mappings_in(&x, 0, x.size, &n, &exp);
	CHECK(n == 4);
	world_fini(&x);
}

/* Exact unplugs teach coarse cuts: then every plug is one MAP and every
 * unplug one UNMAP, the lower bound's calls. */
static void test_learned_coarse(void)
{
	struct world x;
	struct rdm_backend_stats s0, s1;
	size_t n;
	uint64_t exp;
	unsigned seed = 7;

	world_init(&x, 4096 * MiB, 0, 0);
	/* The first plug of fresh memory: cut as the room allows. */
	CHECK(rdm_populate(x.r, 0, CHUNK) == 0);
	CHECK(rdm_discard(x.r, 0, CHUNK) == 0); /* exact */
	s0 = bstats(&x);
	/* Now exact plug/unplug pairs of random whole runs inside chunks. */
	uint64_t plugs = 0, unplugs = 0;

	for (int i = 0; i < 200; i++) {
		uint64_t c = (uint64_t)(rand_r(&seed) % 32) * CHUNK;
		uint64_t len = (1 + (uint64_t)(rand_r(&seed) % 40)) * BS; /* within the room: 82 MiB */
		uint64_t off = c + (uint64_t)(rand_r(&seed) % (CHUNK / BS - len / BS + 1)) * BS;

		CHECK(rdm_populate(x.r, off, len) == 0);
		plugs++;
		mappings_in(&x, off, len, &n, &exp);
		CHECK(n == 1);
		CHECK(rdm_discard(x.r, off, len) == 0);
		unplugs++;
	}
	s1 = bstats(&x);
	printf("learned coarse: %" PRIu64 " maps, %" PRIu64 " unmaps for %" PRIu64 " exact plug/unplug pairs\n",
	       s1.map_calls - s0.map_calls, s1.unmap_calls - s0.unmap_calls, plugs);
	CHECK(s1.map_calls - s0.map_calls == plugs);
	CHECK(s1.unmap_calls - s0.unmap_calls == unplugs);
	CHECK(deferred(&x) == 0);
	world_fini(&x);
}

/* Half the budget deferred: a level finer, where the room would allow more. */
static void test_scaled(void)
{
	struct world x;
	size_t n;
	uint64_t exp;

	world_init(&x, 4096 * MiB, 256 * MiB, 0);
	for (uint64_t c = 0; c < 8; c++) { /* teach whole chunks (level 6) */
		CHECK(rdm_populate(x.r, c * CHUNK, CHUNK) == 0);
		CHECK(rdm_discard(x.r, c * CHUNK, CHUNK) == 0);
	}
	CHECK(rdm_populate(x.r, 0, 2 * CHUNK) == 0); /* a mapping per chunk */
	mappings_in(&x, 0, 2 * CHUNK, &n, &exp);
	CHECK(n == 2);
	/* Edges inside both: 63 + 1 blocks deferred, half the budget. */
	CHECK(rdm_discard(x.r, 2 * MiB, CHUNK - 2 * MiB) == 0);
	CHECK(rdm_discard(x.r, CHUNK + 2 * MiB, 2 * MiB) == 0);
	CHECK(deferred(&x) == 128 * MiB);
	/* Level 5: two 64 MiB pieces (the room left, 128 MiB, would allow one). */
	CHECK(rdm_populate(x.r, 4 * CHUNK, CHUNK) == 0);
	mappings_in(&x, 4 * CHUNK, CHUNK, &n, &exp);
	printf("scaled: 128 MiB in %zu mappings with half the budget deferred\n", n);
	CHECK(n == 2);
	world_fini(&x);
}

/* Plug the first 8 chunks. */
static void plug_chunks(struct world *x)
{
	for (uint64_t c = 0; c < 8; c++)
		CHECK(rdm_populate(x->r, c * CHUNK, CHUNK) == 0);
}

/* Unplug, top down and one request per block, the blocks of the first 8
 * chunks that are islands (every 8th block: what the kernel pinned) or,
 * with islands false, every other one. */
static void unplug_blocks(struct world *x, bool islands)
{
	for (uint64_t b = 8 * CHUNK / BS; b-- > 0;)
		if ((b % 8 == 0) == islands)
			CHECK(rdm_discard(x->r, b * BS, BS) == 0);
}

/* Discards that leave islands teach single units: nothing deferred. */
static void test_learned_fine(void)
{
	struct world x;
	size_t n;
	uint64_t exp;

	world_init(&x, 4096 * MiB, 0, 0);
	/* Plug 8 chunks; the guest unplugs every block but every 8th (islands
	 * the kernel pinned), top down, one request per run. */
	plug_chunks(&x);
	unplug_blocks(&x, false);
	uint64_t d0 = deferred(&x);

	printf("learned fine: deferred after the first unplug %" PRIu64 " MiB (budget 82 MiB)\n", d0 / MiB);
	CHECK(d0 <= 82 * MiB);
	/* The islands go too: nothing deferred, the whole budget is room
	 * again. Fresh memory is still mapped a unit at a time (what the
	 * discards taught, not the room), and the same unplug pattern there
	 * defers nothing. */
	unplug_blocks(&x, true);
	CHECK(deferred(&x) == 0);
	CHECK(rdm_populate(x.r, 16 * CHUNK, CHUNK) == 0);
	mappings_in(&x, 16 * CHUNK, CHUNK, &n, &exp);
	CHECK(n == CHUNK / BS && exp == 0);
	for (uint64_t b = 17 * CHUNK / BS; b-- > 16 * CHUNK / BS;)
		if (b % 8)
			CHECK(rdm_discard(x.r, b * BS, BS) == 0);
	CHECK(deferred(&x) == 0);
	world_fini(&x);
}

/*
 * A cut is judged by the most it would have held, not by what it holds now:
 * after many exact whole-chunk discards (cut: whole chunks), the guest walks
 * one chunk down a block at a time and keeps its lowest block - 63 blocks a
 * whole-chunk mapping would hold, past half the budget (41 of 82 blocks) -
 * then gives that block back too, which releases them all. Judged by what
 * level 6 holds now (nothing), the next plug would be one 128 MiB mapping
 * again, ready to defer 126 MiB at the next such walk. Judged by the most
 * each level held (level 5: 31 blocks), it is cut into 64 MiB pieces.
 */
static void test_held_peak(void)
{
	struct world x;
	size_t n;
	uint64_t exp;

	world_init(&x, 8192 * MiB, 0, 0); /* budget 164 MiB: room for a whole chunk */
	for (uint64_t c = 0; c < 24; c++) { /* whole chunks, exactly */
		CHECK(rdm_populate(x.r, c * CHUNK, CHUNK) == 0);
		CHECK(rdm_discard(x.r, c * CHUNK, CHUNK) == 0);
	}
	CHECK(rdm_populate(x.r, 0, CHUNK) == 0);
	mappings_in(&x, 0, CHUNK, &n, &exp);
	CHECK(n == 1); /* the cut learned: whole chunks */
	for (uint64_t b = CHUNK / BS; b-- > 1;)
		CHECK(rdm_discard(x.r, b * BS, BS) == 0);
	CHECK(deferred(&x) == CHUNK - BS);
	CHECK(rdm_discard(x.r, 0, BS) == 0);
	CHECK(deferred(&x) == 0);
	CHECK(rdm_populate(x.r, 8 * CHUNK, CHUNK) == 0);
	mappings_in(&x, 8 * CHUNK, CHUNK, &n, &exp);
	printf("held peak: a fresh chunk in %zu mappings after a walk that held 63 blocks\n", n);
	CHECK(n == 2);
	world_fini(&x);
}

static unsigned warnings;

static void on_log(void *opaque, enum rdm_log_level level, const char *msg)
{
	(void)opaque;
	if (level == RDM_LOG_WARNING && strstr(msg, "budget"))
		warnings++;
}

/* A learned coarse cut the guest then bisects: past the budget, counted,
 * logged, single units until back under. */
static void test_exceeded(void)
{
	struct world x;
	struct rdm_worker_stats ws;
	size_t n;
	uint64_t exp;

	REQUIRE(rdm_set_log_handler(on_log, NULL, RDM_LOG_WARNING) == 0);
	world_init(&x, 4096 * MiB, 8 * MiB, 0);
	/* Teach coarse cuts: exact unplugs of whole chunks. */
	for (uint64_t c = 0; c < 8; c++) {
		CHECK(rdm_populate(x.r, c * CHUNK, CHUNK) == 0);
		CHECK(rdm_discard(x.r, c * CHUNK, CHUNK) == 0);
	}
	/* A chunk mapped whole (the room allows 8 MiB: 4 units)... */
	CHECK(rdm_populate(x.r, 0, 8 * MiB) == 0);
	mappings_in(&x, 0, 8 * MiB, &n, &exp);
	CHECK(n == 1);
	CHECK(rdm_populate(x.r, CHUNK, 8 * MiB) == 0);
	/* ...then bisected: 6 MiB deferred in each, 12 MiB > 8 MiB. */
	CHECK(rdm_discard(x.r, 2 * MiB, 6 * MiB) == 0);
	CHECK(rdm_discard(x.r, CHUNK + 2 * MiB, 6 * MiB) == 0);
	CHECK(deferred(&x) == 12 * MiB);
	rdm_worker_get_stats(x.w, &ws);
	CHECK(ws.defer_budget_exceeded == 1);
	CHECK(warnings == 1);
	/* Over the budget: fresh memory a unit at a time. */
	CHECK(rdm_populate(x.r, 4 * CHUNK, 16 * MiB) == 0);
	mappings_in(&x, 4 * CHUNK, 16 * MiB, &n, &exp);
	CHECK(n == 8 && exp == 0);
	/* Back under (one bisected mapping goes whole): the room left (8 - 6
	 * MiB deferred) allows a unit; no new crossing. */
	CHECK(rdm_discard(x.r, 0, 2 * MiB) == 0);
	CHECK(deferred(&x) == 6 * MiB);
	CHECK(rdm_populate(x.r, 2 * CHUNK, 8 * MiB) == 0);
	mappings_in(&x, 2 * CHUNK, 8 * MiB, &n, &exp);
	CHECK(n == 4 && exp == 0);
	/* The other goes too: nothing deferred. At 4 units a piece the two
	 * bisections would have deferred 6 of the 520 blocks discarded so
	 * far, past four times the budget's share of the region (8 MiB of 4
	 * GiB); at 2 units, 2 of them: the cut learned is 2 units. */
	CHECK(rdm_discard(x.r, CHUNK, 2 * MiB) == 0);
	CHECK(deferred(&x) == 0);
	CHECK(rdm_populate(x.r, 3 * CHUNK, 8 * MiB) == 0);
	mappings_in(&x, 3 * CHUNK, 8 * MiB, &n, &exp);
	CHECK(n == 2);
	rdm_worker_get_stats(x.w, &ws);
	CHECK(ws.defer_budget_exceeded == 1 && warnings == 1);
	world_fini(&x);
	REQUIRE(rdm_set_log_handler(NULL, NULL, RDM_LOG_WARNING) == 0);
}

/* Fine cuts never run the backend out of mappings. */
static void test_mapping_limit(void)
{
	struct world x;
	struct rdm_backend_stats st;

	/* 1 GiB of 2 MiB blocks (512) and room for 64 mappings. */
	world_init(&x, 1024 * MiB, 0, 64);
	CHECK(rdm_populate(x.r, 0, 1024 * MiB) == 0);
	st = bstats(&x);
	printf("mapping limit: 1 GiB in %" PRIu64 " mappings of a budget of 64\n", st.mappings);
	CHECK(st.mappings <= 64);
	world_fini(&x);
}

/*
 * The whole-run re-plan. The region first learns a fine cut (the islands
 * pattern of test_learned_fine, then the islands go too: nothing mapped).
 * Another region then holds 10 of the backend's 64 mappings. A fresh
 * 50-chunk populate cut fine makes 50 first pieces plus the fine pieces
 * the limit leaves room for (64/16 = 4): with the headroom of 2 it would
 * need 66. Whole runs (one per chunk: 50) fit, so the populate succeeds
 * with one mapping per chunk instead of failing with -ENOSPC.
 */
static void test_limit_replan(void)
{
	struct world x;
	struct rdm_region *other;
	struct rdm_region_config rc = {.struct_size = sizeof(rc)};
	size_t n;
	uint64_t exp;
	int err;

	world_init(&x, 60 * CHUNK, 0, 64);
	plug_chunks(&x);
	unplug_blocks(&x, false);
	unplug_blocks(&x, true);
	CHECK(deferred(&x) == 0 && bstats(&x).mappings == 0);

	rc.iova = IOVA0 + (UINT64_C(1) << 40);
	rc.size = 64 * MiB;
	rc.block_size = BS;
	rc.host_addr = host + (UINT64_C(1) << 40);
	rc.policy = RDM_POLICY_BLOCK;
	REQUIRE(rdm_region_create(&rc, &other) == 0);
	REQUIRE(rdm_worker_attach(x.w, other, x.sim) == 0);
	for (uint64_t b = 0; b < 20; b += 2)
		REQUIRE(rdm_populate(other, b * BS, BS) == 0);
	CHECK(bstats(&x).mappings == 10);

	err = rdm_populate(x.r, 8 * CHUNK, 50 * CHUNK);
	if (err)
		printf("limit re-plan: %s\n", rdm_last_error());
	CHECK(err == 0);
	mappings_in(&x, 8 * CHUNK, 50 * CHUNK, &n, &exp);
	printf("limit re-plan: 50 chunks in %zu mappings, backend holds %" PRIu64 " of 64\n", n,
	       bstats(&x).mappings);
	CHECK(n == 50 && bstats(&x).mappings == 60);
	CHECK(rdm_region_destroy(other) == 0);
	world_fini(&x);
}

int main(void)
{
	host = (char *)(uintptr_t)(UINT64_C(1) << 40); /* addresses only: the sim never touches memory */
	test_exposure();
	test_learned_coarse();
	test_learned_fine();
	test_scaled();
	test_held_peak();
	test_exceeded();
	test_mapping_limit();
	test_limit_replan();
	return check_exit();
}
