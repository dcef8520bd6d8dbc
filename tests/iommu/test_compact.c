/* test_compact.c - rdm_region_compact(): deferred memory released, populated memory mapped as a populate would map it, refused without RDM_ATTACH_QUIESCE_OK, all or nothing under allocation and backend failures, a randomized sequence against an oracle. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <rdm/rdm.h>

#include "core/alloc.h"
#include "tests/check.h"

#define KiB (1ull << 10)
#define MiB (1ull << 20)
#define IOVA0 (1ull << 36)
#define MAXNB 4096u
#define MAXMAPS 4096u
#define NSIM 2

static char *host; /* fake host memory: only addresses are used */

/* One test's world. Release callbacks run on the worker thread; the test
 * thread reads what they wrote after a synchronous call returned. */
static struct world {
	struct rdm_backend *sim[NSIM];
	struct rdm_worker *w;
	struct rdm_region *r;
	uint64_t bs, nb;
	unsigned released[MAXNB]; /* release callbacks per block */
	unsigned violations;      /* released while mapped or populated */
} W;

static bool compact_in_callback; /* try rdm_region_compact() from the release callback */
static int compact_in_callback_rc;

static void on_release(void *opaque, uint64_t off, uint64_t len)
{
	(void)opaque;
	if (compact_in_callback) {
		compact_in_callback_rc = rdm_region_compact(W.r, NULL);
		compact_in_callback = false;
	}
	for (int i = 0; i < NSIM; i++)
		if (W.sim[i] && !rdm_sim_is_unmapped(W.sim[i], IOVA0 + off, len))
			W.violations++; /* I2 */
	if (rdm_populated_bytes(W.r, off, len) != 0)
		W.violations++;
	for (uint64_t b = off / W.bs; b < (off + len) / W.bs; b++)
		W.released[b]++;
}

static void world_init(uint64_t bs, uint64_t nb, uint32_t policy, uint32_t rflags, int nsim, bool can_split)
{
	struct rdm_sim_config simc = { .struct_size = sizeof(simc), .semantics = RDM_SEM_TYPE1V2,
				       .call_ns = 1, .page_ns = 0, .can_split = can_split };
	struct rdm_region_config rc = { .struct_size = sizeof(rc) };

	memset(&W, 0, sizeof(W));
	W.bs = bs;
	W.nb = nb;
	REQUIRE(nb <= MAXNB);
	REQUIRE(rdm_worker_create(NULL, &W.w) == 0);
	for (int i = 0; i < nsim; i++) {
		REQUIRE(rdm_backend_sim_create(&simc, &W.sim[i]) == 0);
		REQUIRE(rdm_worker_add_backend(W.w, W.sim[i], 0) == 0);
	}
	rc.flags = rflags;
	rc.iova = IOVA0;
	rc.size = nb * bs;
	rc.block_size = bs;
	rc.host_addr = host;
	rc.release = on_release;
	rc.policy = policy;
	rc.defer_budget = RDM_DEFER_BUDGET_NONE; /* layouts without the budget's cuts */
	REQUIRE(rdm_region_create(&rc, &W.r) == 0);
}

static void world_fini(void)
{
	CHECK(rdm_region_destroy(W.r) == 0);
	CHECK(rdm_worker_destroy(W.w) == 0);
	for (int i = 0; i < NSIM; i++)
		if (W.sim[i])
			rdm_backend_destroy(W.sim[i]);
	CHECK(W.violations == 0);
}

/* ------------------------------------------------------- observations */

/* What a test compares before and after a call. */
struct snap {
	struct rdm_mapping maps[MAXMAPS];
	size_t nmaps;
	struct rdm_deferred def[MAXMAPS];
	size_t ndef;
	uint64_t def_bytes;
	unsigned released[MAXNB];
	struct rdm_backend_stats bst[NSIM];
};

static void take(struct snap *s, struct rdm_backend *b)
{
	REQUIRE(rdm_region_get_mappings(W.r, b, s->maps, MAXMAPS, &s->nmaps) == 0);
	REQUIRE(s->nmaps <= MAXMAPS);
	REQUIRE(rdm_region_get_deferred(W.r, s->def, MAXMAPS, &s->ndef, &s->def_bytes) == 0);
	REQUIRE(s->ndef <= MAXMAPS);
	memcpy(s->released, W.released, sizeof(s->released));
	for (int i = 0; i < NSIM; i++)
		if (W.sim[i])
			rdm_backend_get_stats(W.sim[i], &s->bst[i]);
}

static bool same_layout(const struct snap *a, const struct snap *b)
{
	if (a->nmaps != b->nmaps || a->ndef != b->ndef || a->def_bytes != b->def_bytes)
		return false;
	for (size_t i = 0; i < a->nmaps; i++)
		if (a->maps[i].offset != b->maps[i].offset || a->maps[i].length != b->maps[i].length ||
		    a->maps[i].host_addr != b->maps[i].host_addr ||
		    a->maps[i].deferred_bytes != b->maps[i].deferred_bytes)
			return false;
	for (size_t i = 0; i < a->ndef; i++)
		if (a->def[i].offset != b->def[i].offset || a->def[i].length != b->def[i].length)
			return false;
	return memcmp(a->released, b->released, sizeof(a->released)) == 0;
}

struct sim_cmp {
	const struct snap *s;
	size_t k;
	unsigned mismatches;
};

static int sim_cb(void *opaque, uint64_t iova, uint64_t len, uint64_t va)
{
	struct sim_cmp *c = opaque;

	if (c->k >= c->s->nmaps || c->s->maps[c->k].iova != iova || c->s->maps[c->k].length != len ||
	    c->s->maps[c->k].host_addr != va)
		c->mismatches++;
	c->k++;
	return 0;
}

/* The sim holds exactly the mappings rdm reports (its own view). */
static bool sim_matches(struct rdm_backend *b, const struct snap *s)
{
	struct sim_cmp c = { .s = s };

	rdm_sim_for_each_mapping(b, sim_cb, &c);
	return c.mismatches == 0 && c.k == s->nmaps;
}

/* I1 over the whole region: every populated block mapped to its memory. */
static unsigned unmapped_populated(struct rdm_backend *b)
{
	unsigned bad = 0;

	for (uint64_t k = 0; k < W.nb; k++)
		if (rdm_is_populated(W.r, k * W.bs, W.bs) &&
		    !rdm_sim_is_mapped(b, IOVA0 + k * W.bs, W.bs, true, (uint64_t)(uintptr_t)host + k * W.bs))
			bad++;
	return bad;
}

/* ----------------------------------------------------- the main check */

/* The layout a populate of exactly these runs makes in a fresh region of
 * the same configuration: what compaction must produce for the runs of the
 * mappings it re-cuts. */
static size_t fresh_cut(uint32_t policy, const uint64_t (*runs)[2], size_t nruns, struct rdm_mapping *out, size_t cap)
{
	struct rdm_sim_config simc = { .struct_size = sizeof(simc), .semantics = RDM_SEM_TYPE1V2, .call_ns = 1 };
	struct rdm_region_config rc = { .struct_size = sizeof(rc) };
	struct rdm_backend *sim;
	struct rdm_worker *w;
	struct rdm_region *r;
	size_t n = 0;

	REQUIRE(rdm_worker_create(NULL, &w) == 0);
	REQUIRE(rdm_backend_sim_create(&simc, &sim) == 0);
	REQUIRE(rdm_worker_add_backend(w, sim, 0) == 0);
	rc.iova = IOVA0;
	rc.size = W.nb * W.bs;
	rc.block_size = W.bs;
	rc.host_addr = host;
	rc.policy = policy;
	rc.defer_budget = RDM_DEFER_BUDGET_NONE; /* layouts without the budget's cuts */
	REQUIRE(rdm_region_create(&rc, &r) == 0);
	REQUIRE(rdm_worker_attach(w, r, sim) == 0);
	for (size_t i = 0; i < nruns; i++)
		REQUIRE(rdm_populate(r, runs[i][0], runs[i][1]) == 0);
	REQUIRE(rdm_region_get_mappings(r, sim, out, cap, &n) == 0);
	REQUIRE(rdm_region_destroy(r) == 0);
	REQUIRE(rdm_worker_destroy(w) == 0);
	rdm_backend_destroy(sim);
	return n;
}

static struct snap before, after;

/*
 * Compact and check everything against `before` (taken just before): the
 * deferred ranges and nothing else released, once; nothing deferred; every
 * populated block mapped in every sim and the sims hold exactly rdm's
 * mappings; mappings without deferred blocks untouched; the re-cut ones cut
 * as a fresh populate of their runs; the result and stats add up.
 */
static void compact_and_check(uint32_t policy, int nsim)
{
	struct rdm_compact_result res;
	struct rdm_worker_stats st0, st1;
	static uint64_t runs[MAXMAPS][2];
	static struct rdm_mapping fresh[MAXMAPS];
	size_t nruns = 0, nfresh, k = 0;
	uint64_t recut = 0, remapped = 0;

	rdm_worker_get_stats(W.w, &st0);
	CHECK(rdm_region_compact(W.r, &res) == 0);
	take(&after, W.sim[0]);
	rdm_worker_get_stats(W.w, &st1);

	/* Released: exactly the deferred blocks, once each. */
	for (uint64_t b = 0; b < W.nb; b++) {
		bool deferred = false;

		for (size_t i = 0; i < before.ndef; i++)
			deferred |= b * W.bs >= before.def[i].offset &&
				    b * W.bs < before.def[i].offset + before.def[i].length;
		CHECK(after.released[b] - before.released[b] == (deferred ? 1u : 0u));
	}
	CHECK(after.ndef == 0 && after.def_bytes == 0);
	CHECK(res.released_bytes == before.def_bytes);
	for (int i = 0; i < nsim; i++) {
		struct snap s;

		take(&s, W.sim[i]);
		CHECK(sim_matches(W.sim[i], &s));
		CHECK(unmapped_populated(W.sim[i]) == 0);
	}
	/* Every mapping is wholly populated. */
	for (size_t i = 0; i < after.nmaps; i++) {
		CHECK(after.maps[i].deferred_bytes == 0);
		CHECK(rdm_is_populated(W.r, after.maps[i].offset, after.maps[i].length));
	}
	/* Mappings without deferred blocks are as they were; those with some
	 * give their populated runs (to the fresh oracle). */
	for (size_t i = 0; i < before.nmaps; i++) {
		const struct rdm_mapping *m = &before.maps[i];

		if (m->deferred_bytes == 0) {
			bool found = false;

			for (size_t j = 0; j < after.nmaps; j++)
				found |= after.maps[j].offset == m->offset && after.maps[j].length == m->length;
			CHECK(found);
			continue;
		}
		recut++;
		for (uint64_t b = m->offset / W.bs; b < (m->offset + m->length) / W.bs;) {
			uint64_t e = b;

			if (!rdm_is_populated(W.r, b * W.bs, W.bs)) {
				b++;
				continue;
			}
			while (e < (m->offset + m->length) / W.bs && rdm_is_populated(W.r, e * W.bs, W.bs))
				e++;
			REQUIRE(nruns < MAXMAPS);
			runs[nruns][0] = b * W.bs;
			runs[nruns][1] = (e - b) * W.bs;
			remapped += (e - b) * W.bs;
			nruns++;
			b = e;
		}
	}
	nfresh = fresh_cut(policy, runs, nruns, fresh, MAXMAPS);
	/* The fresh layout's mappings, in order, are among the new ones. */
	for (size_t i = 0; i < after.nmaps && k < nfresh; i++)
		if (after.maps[i].offset == fresh[k].offset && after.maps[i].length == fresh[k].length)
			k++;
	CHECK(k == nfresh);
	CHECK(res.mappings == recut);
	CHECK(res.new_mappings == nfresh);
	CHECK(after.nmaps == before.nmaps - recut + nfresh);
	CHECK(res.remapped_bytes == remapped);
	CHECK(res.unmap_calls == recut * (uint64_t)nsim);
	CHECK(res.map_calls == nfresh * (uint64_t)nsim);
	for (int i = 0; i < nsim; i++) {
		struct rdm_backend_stats bs;

		rdm_backend_get_stats(W.sim[i], &bs);
		CHECK(bs.mappings == after.nmaps);
		CHECK(bs.map_calls - before.bst[i].map_calls == nfresh);
		CHECK(bs.unmap_calls - before.bst[i].unmap_calls == recut);
	}
	CHECK(st1.compactions == st0.compactions + 1);
	CHECK(st1.compact_released_bytes - st0.compact_released_bytes == before.def_bytes);
	CHECK(st1.compact_remapped_bytes - st0.compact_remapped_bytes == remapped);
	CHECK(st1.remapped_bytes == st0.remapped_bytes); /* not DMA windows */
	CHECK(st1.deferred_bytes == 0);
	CHECK(W.violations == 0);
}

/* A defer region: 128 MiB populated, pieces discarded inside mappings. */
static void test_defer_basic(int nsim)
{
	const uint64_t bs = 2 * MiB;
	struct rdm_compact_result res;

	world_init(bs, 128, RDM_POLICY_DEFER, 0, nsim, false);
	for (int i = 0; i < nsim; i++)
		REQUIRE(rdm_worker_attach_flags(W.w, W.r, W.sim[i], RDM_ATTACH_QUIESCE_OK) == 0);
	for (uint64_t b = 0; b < 128; b += 32) /* four mappings of 32 blocks */
		REQUIRE(rdm_populate(W.r, b * bs, 32 * bs) == 0);
	REQUIRE(rdm_discard(W.r, 3 * bs, bs) == 0);
	REQUIRE(rdm_discard(W.r, 10 * bs, 3 * bs) == 0);
	REQUIRE(rdm_discard(W.r, 31 * bs, bs) == 0);
	REQUIRE(rdm_discard(W.r, 40 * bs, 2 * bs) == 0);
	REQUIRE(rdm_discard(W.r, 70 * bs, bs) == 0);
	REQUIRE(rdm_discard(W.r, 96 * bs, 32 * bs) == 0); /* a whole mapping: released at once */
	take(&before, W.sim[0]);
	CHECK(before.def_bytes == 8 * bs);
	CHECK(W.released[100] == 1);
	compact_and_check(RDM_POLICY_DEFER, nsim);

	/* Nothing left to do: 0, no call. */
	take(&before, W.sim[0]);
	CHECK(rdm_region_compact(W.r, &res) == 0);
	CHECK(res.mappings == 0 && res.map_calls == 0 && res.unmap_calls == 0 && res.released_bytes == 0);
	take(&after, W.sim[0]);
	CHECK(same_layout(&before, &after));

	/* The region goes on as usual: a released block populated again is
	 * mapped anew, a discard inside a new mapping defers again. */
	REQUIRE(rdm_populate(W.r, 10 * bs, 3 * bs) == 0);
	REQUIRE(rdm_discard(W.r, 50 * bs, bs) == 0);
	take(&before, W.sim[0]);
	CHECK(unmapped_populated(W.sim[0]) == 0);
	compact_and_check(RDM_POLICY_DEFER, nsim);
	world_fini();
}

/* Other policies: whatever is deferred is compacted; nothing is an error. */
static void test_other_policies(void)
{
	const uint64_t bs = 2 * MiB;
	struct rdm_compact_result res;

	/* block: nothing is ever deferred. */
	world_init(bs, 64, RDM_POLICY_BLOCK, 0, 1, false);
	REQUIRE(rdm_worker_attach_flags(W.w, W.r, W.sim[0], RDM_ATTACH_QUIESCE_OK) == 0);
	REQUIRE(rdm_populate(W.r, 0, 64 * bs) == 0);
	REQUIRE(rdm_discard(W.r, 5 * bs, bs) == 0);
	take(&before, W.sim[0]);
	CHECK(rdm_region_compact(W.r, &res) == 0);
	CHECK(res.mappings == 0 && res.map_calls == 0);
	take(&after, W.sim[0]);
	CHECK(same_layout(&before, &after));
	world_fini();

	/* coalesce with windows: a bisecting discard splits at once, nothing
	 * is deferred, compaction finds nothing to do. */
	world_init(bs, 64, RDM_POLICY_COALESCE, RDM_REGION_ALLOW_WINDOWS, 1, false);
	REQUIRE(rdm_worker_attach_flags(W.w, W.r, W.sim[0], RDM_ATTACH_QUIESCE_OK) == 0);
	REQUIRE(rdm_populate(W.r, 0, 64 * bs) == 0);
	REQUIRE(rdm_discard(W.r, 7 * bs, bs) == 0); /* split with a window */
	take(&before, W.sim[0]);
	CHECK(before.def_bytes == 0);
	CHECK(rdm_region_compact(W.r, &res) == 0 && res.mappings == 0);
	world_fini();
}

/* Refused with -EPERM unless every backend was attached with the flag;
 * argument errors. Nothing changes. */
static void test_refusals(void)
{
	const uint64_t bs = 2 * MiB;
	struct rdm_compact_result res;

	CHECK(rdm_region_compact(NULL, &res) == -EINVAL);

	world_init(bs, 64, RDM_POLICY_DEFER, 0, 2, false);
	CHECK(rdm_region_compact(W.r, &res) == -ENOENT); /* no worker */
	CHECK(rdm_worker_attach_flags(W.w, W.r, W.sim[0], 2) == -EINVAL);
	CHECK(rdm_worker_attach_flags(W.w, W.r, W.sim[0], 1u << 31) == -EINVAL);
	REQUIRE(rdm_worker_attach(W.w, W.r, W.sim[0]) == 0);
	REQUIRE(rdm_populate(W.r, 0, 32 * bs) == 0);
	REQUIRE(rdm_populate(W.r, 32 * bs, 32 * bs) == 0);
	REQUIRE(rdm_discard(W.r, 3 * bs, 2 * bs) == 0);
	take(&before, W.sim[0]);
	CHECK(before.def_bytes == 2 * bs);

	/* From a callback: -EDEADLK. */
	compact_in_callback = true;
	REQUIRE(rdm_discard(W.r, 32 * bs, 32 * bs) == 0); /* a whole mapping: released */
	CHECK(!compact_in_callback && compact_in_callback_rc == -EDEADLK);
	REQUIRE(rdm_populate(W.r, 32 * bs, 32 * bs) == 0);
	take(&before, W.sim[0]);

	/* One backend, without the flag. */
	res.mappings = 77;
	CHECK(rdm_region_compact(W.r, &res) == -EPERM);
	CHECK(strstr(rdm_last_error(), "RDM_ATTACH_QUIESCE_OK") != NULL);
	CHECK(strstr(rdm_last_error(), rdm_backend_name(W.sim[0])) != NULL);
	CHECK(res.mappings == 0);
	take(&after, W.sim[0]);
	CHECK(same_layout(&before, &after));

	/* Two backends, one with the flag. */
	REQUIRE(rdm_worker_attach_flags(W.w, W.r, W.sim[1], RDM_ATTACH_QUIESCE_OK) == 0);
	take(&before, W.sim[0]);
	CHECK(rdm_region_compact(W.r, &res) == -EPERM);
	take(&after, W.sim[0]);
	CHECK(same_layout(&before, &after));
	CHECK(sim_matches(W.sim[0], &after));

	/* The flag-less one detached: allowed. */
	REQUIRE(rdm_worker_detach(W.w, W.r, W.sim[0]) == 0);
	take(&before, W.sim[1]);
	CHECK(rdm_region_compact(W.r, &res) == 0);
	CHECK(res.released_bytes == 2 * bs);
	take(&after, W.sim[1]);
	CHECK(after.def_bytes == 0);

	/* A detach forgets the flag: attached again without it, refused. */
	REQUIRE(rdm_discard(W.r, 20 * bs, bs) == 0);
	REQUIRE(rdm_worker_detach(W.w, W.r, W.sim[1]) == 0);
	/* No backend: nothing mapped, nothing deferred, nothing to do. */
	CHECK(rdm_region_compact(W.r, &res) == 0 && res.mappings == 0);
	REQUIRE(rdm_worker_attach(W.w, W.r, W.sim[1]) == 0);
	REQUIRE(rdm_discard(W.r, 30 * bs, bs) == 0);
	CHECK(rdm_region_compact(W.r, &res) == -EPERM);
	world_fini();
}

/* The re-cut would pass the mapping budget: -ENOSPC, nothing changed. */
static void test_budget(void)
{
	const uint64_t bs = 2 * MiB;
	struct rdm_sim_config simc = { .struct_size = sizeof(simc), .semantics = RDM_SEM_TYPE1V2, .call_ns = 1 };
	struct rdm_region_config rc = { .struct_size = sizeof(rc) };
	struct rdm_compact_result res;

	memset(&W, 0, sizeof(W));
	W.bs = bs;
	W.nb = 64;
	REQUIRE(rdm_worker_create(NULL, &W.w) == 0);
	REQUIRE(rdm_backend_sim_create(&simc, &W.sim[0]) == 0);
	REQUIRE(rdm_worker_add_backend(W.w, W.sim[0], 6) == 0); /* 2 mappings + 2 headroom fit */
	rc.iova = IOVA0;
	rc.size = 64 * bs;
	rc.block_size = bs;
	rc.host_addr = host;
	rc.release = on_release;
	rc.policy = RDM_POLICY_DEFER;
	rc.defer_budget = RDM_DEFER_BUDGET_NONE;
	REQUIRE(rdm_region_create(&rc, &W.r) == 0);
	REQUIRE(rdm_worker_attach_flags(W.w, W.r, W.sim[0], RDM_ATTACH_QUIESCE_OK) == 0);
	REQUIRE(rdm_populate(W.r, 0, 32 * bs) == 0);
	REQUIRE(rdm_populate(W.r, 32 * bs, 32 * bs) == 0);
	for (uint64_t b = 1; b < 8; b += 2)
		REQUIRE(rdm_discard(W.r, b * bs, bs) == 0);
	take(&before, W.sim[0]);
	REQUIRE(before.nmaps == 2 && before.def_bytes == 4 * bs);
	/* Five runs in [0, 32): four more mappings, two over the budget. */
	CHECK(rdm_region_compact(W.r, &res) == -ENOSPC);
	CHECK(strstr(rdm_last_error(), "mapping limit") != NULL);
	take(&after, W.sim[0]);
	CHECK(same_layout(&before, &after));
	CHECK(sim_matches(W.sim[0], &after));
	/* Three of them populated again: two more mappings fit exactly. (The
	 * cut differs from a fresh populate's with a roomy budget, so only the
	 * outcome is checked here.) */
	REQUIRE(rdm_populate(W.r, 1 * bs, bs) == 0);
	REQUIRE(rdm_populate(W.r, 3 * bs, bs) == 0);
	REQUIRE(rdm_populate(W.r, 5 * bs, bs) == 0);
	CHECK(rdm_region_compact(W.r, &res) == 0);
	CHECK(res.released_bytes == bs && res.mappings == 1);
	take(&after, W.sim[0]);
	CHECK(after.def_bytes == 0 && after.nmaps <= 4);
	CHECK(sim_matches(W.sim[0], &after));
	CHECK(unmapped_populated(W.sim[0]) == 0);
	CHECK(W.released[7] == 1);
	world_fini();
}

/* ------------------------------------------------------------- failures */

/* A fine-grained defer region with many runs inside its mappings, so that
 * the compaction's scratch list and layout nodes must grow. */
static void fragmented(int nsim)
{
	const uint64_t bs = 64 * KiB;

	world_init(bs, 2048, RDM_POLICY_DEFER, 0, nsim, false);
	for (int i = 0; i < nsim; i++)
		REQUIRE(rdm_worker_attach_flags(W.w, W.r, W.sim[i], RDM_ATTACH_QUIESCE_OK) == 0);
	REQUIRE(rdm_populate(W.r, 0, 1024 * bs) == 0); /* two mappings */
	REQUIRE(rdm_populate(W.r, 1024 * bs, 1024 * bs) == 0);
	for (uint64_t b = 1; b < 2047; b += 3)
		REQUIRE(rdm_discard(W.r, b * bs, bs) == 0);
	take(&before, W.sim[0]);
	REQUIRE(before.ndef > 600);
}

static void test_alloc_failures(void)
{
	unsigned long k;
	unsigned sites = 0;

	for (k = 1; k < 1000; k++) {
		struct rdm_compact_result res;
		unsigned long hit;
		int rc;

		fragmented(1);
		rdm_alloc_inject(k, false);
		rc = rdm_region_compact(W.r, &res);
		hit = rdm_alloc_injected();
		rdm_alloc_inject(0, false);
		/* The planner's memory, or the sim's (a MAP failing: rolled back). */
		if (rc == -ENOMEM && !strstr(rdm_last_error(), "out of memory") &&
		    !strstr(rdm_last_error(), "rolled back")) {
			fprintf(stderr, "compact: -ENOMEM with \"%s\"\n", rdm_last_error());
			CHECK(0);
		}
		take(&after, W.sim[0]);
		if (rc == -ENOMEM) {
			sites++;
			CHECK(same_layout(&before, &after));
			CHECK(sim_matches(W.sim[0], &after));
			CHECK(res.mappings == 0);
		} else {
			CHECK(rc == 0);
			CHECK(after.def_bytes == 0);
			CHECK(unmapped_populated(W.sim[0]) == 0);
		}
		world_fini();
		if (!hit)
			break;
	}
	CHECK(k < 1000);
	CHECK(sites >= 2); /* the scratch list and the layout's nodes */
	printf("compact: %u allocation sites failed in turn\n", sites);
}

/* Backend failures during the re-cut. */
static void test_backend_failures(void)
{
	struct rdm_compact_result res;
	struct rdm_worker_stats st;

	/* A MAP fails (the 2nd piece): rolled back, state as before, no
	 * backend failed; the next compaction works. */
	fragmented(1);
	REQUIRE(rdm_sim_inject(W.sim[0], RDM_SIM_CALL_MAP, 2, -EFAULT) == 0);
	CHECK(rdm_region_compact(W.r, &res) == -EFAULT);
	CHECK(strstr(rdm_last_error(), "rolled back") != NULL);
	take(&after, W.sim[0]);
	CHECK(same_layout(&before, &after));
	CHECK(sim_matches(W.sim[0], &after));
	rdm_worker_get_stats(W.w, &st);
	CHECK(st.failed_backends == 0 && st.compactions == 0);
	take(&before, W.sim[0]);
	compact_and_check(RDM_POLICY_DEFER, 1);
	world_fini();

	/* Two backends: the second one's 300th MAP fails; the first, fully
	 * re-cut by then, is rolled back too. */
	fragmented(2);
	REQUIRE(rdm_sim_inject(W.sim[1], RDM_SIM_CALL_MAP, 300, -ENOMEM) == 0);
	CHECK(rdm_region_compact(W.r, &res) == -ENOMEM);
	take(&after, W.sim[0]);
	CHECK(same_layout(&before, &after));
	CHECK(sim_matches(W.sim[0], &after));
	CHECK(sim_matches(W.sim[1], &after));
	rdm_worker_get_stats(W.w, &st);
	CHECK(st.failed_backends == 0);
	take(&before, W.sim[0]);
	compact_and_check(RDM_POLICY_DEFER, 2);
	world_fini();

	/* The MAP fails and so does the rollback's MAP of the whole mapping
	 * (twice): the backend is marked failed, nothing is released, later
	 * compactions and populates get -EIO. */
	fragmented(1);
	REQUIRE(rdm_sim_inject(W.sim[0], RDM_SIM_CALL_MAP, 2, -EFAULT) == 0);
	REQUIRE(rdm_sim_inject(W.sim[0], RDM_SIM_CALL_MAP, 3, -EFAULT) == 0);
	REQUIRE(rdm_sim_inject(W.sim[0], RDM_SIM_CALL_MAP, 4, -EFAULT) == 0);
	CHECK(rdm_region_compact(W.r, &res) == -EFAULT);
	rdm_worker_get_stats(W.w, &st);
	CHECK(st.failed_backends == 1);
	CHECK(memcmp(W.released, before.released, sizeof(W.released)) == 0);
	CHECK(rdm_region_compact(W.r, &res) == -EIO);
	CHECK(rdm_populate(W.r, 1 * 64 * KiB, 64 * KiB) == -EIO);
	world_fini();

	/* An UNMAP fails twice: that backend is marked failed, the other one
	 * rolled back, nothing released. */
	fragmented(2);
	REQUIRE(rdm_sim_inject(W.sim[1], RDM_SIM_CALL_UNMAP, 2, -EFAULT) == 0);
	REQUIRE(rdm_sim_inject(W.sim[1], RDM_SIM_CALL_UNMAP, 3, -EFAULT) == 0);
	CHECK(rdm_region_compact(W.r, &res) == -EIO);
	rdm_worker_get_stats(W.w, &st);
	CHECK(st.failed_backends == 1);
	CHECK(memcmp(W.released, before.released, sizeof(W.released)) == 0);
	take(&after, W.sim[0]);
	CHECK(same_layout(&before, &after));
	CHECK(sim_matches(W.sim[0], &after));
	world_fini();
}

/* -------------------------------------------------------------- random */

static uint64_t rnd(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

/*
 * Random populates, discards and compactions against an oracle: the
 * populated set, and per block whether it was discarded since it was last
 * populated or released (owed a release). After every compaction nothing is
 * deferred and every discarded block has been released; releases only ever
 * cover owed blocks.
 */
static void test_random(uint64_t seed, unsigned steps)
{
	const uint64_t bs = 64 * KiB, nb = 1024;
	static bool pop[MAXNB], owed[MAXNB];
	unsigned last_rel[MAXNB];
	unsigned compactions = 0;
	int failures0 = check_failures;

	world_init(bs, nb, RDM_POLICY_DEFER, 0, 2, false);
	REQUIRE(rdm_worker_attach_flags(W.w, W.r, W.sim[0], RDM_ATTACH_QUIESCE_OK) == 0);
	REQUIRE(rdm_worker_attach_flags(W.w, W.r, W.sim[1], RDM_ATTACH_QUIESCE_OK) == 0);
	memset(pop, 0, sizeof(pop));
	memset(owed, 0, sizeof(owed));
	memset(last_rel, 0, sizeof(last_rel));
	for (unsigned s = 0; s < steps; s++) {
		uint64_t op = rnd(&seed) % 16, a = rnd(&seed) % nb, n = 1 + rnd(&seed) % (op < 4 ? 256 : 8);

		if (a + n > nb)
			n = nb - a;
		if (op < 7) {
			REQUIRE(rdm_populate(W.r, a * bs, n * bs) == 0);
			for (uint64_t b = a; b < a + n; b++) {
				pop[b] = true;
				owed[b] = false; /* reused, or released already */
			}
		} else if (op < 15) {
			REQUIRE(rdm_discard(W.r, a * bs, n * bs) == 0);
			for (uint64_t b = a; b < a + n; b++) {
				owed[b] |= pop[b];
				pop[b] = false;
			}
		} else {
			struct rdm_compact_result res;
			uint64_t def = 0;
			size_t cnt;

			CHECK(rdm_region_compact(W.r, &res) == 0);
			CHECK(rdm_region_get_deferred(W.r, NULL, 0, &cnt, &def) == 0);
			CHECK(cnt == 0 && def == 0);
			for (uint64_t b = 0; b < nb; b++) {
				CHECK(pop[b] || !owed[b] || W.released[b] > last_rel[b]);
				if (W.released[b] > last_rel[b])
					owed[b] = false;
			}
			compactions++;
		}
		/* Releases since the last step: only of owed blocks, and then
		 * not owed any more; every populated block mapped everywhere. */
		for (uint64_t b = 0; b < nb; b++) {
			if (W.released[b] != last_rel[b]) {
				CHECK(W.released[b] == last_rel[b] + 1);
				CHECK(owed[b] || op == 15);
				CHECK(!pop[b]);
				owed[b] = false;
				last_rel[b] = W.released[b];
			}
			CHECK(rdm_is_populated(W.r, b * bs, bs) == pop[b]);
		}
		if (s % 16 == 0 || op == 15)
			for (int i = 0; i < 2; i++) {
				struct snap *sn = &after;

				take(sn, W.sim[i]);
				CHECK(sim_matches(W.sim[i], sn));
				CHECK(unmapped_populated(W.sim[i]) == 0);
			}
		if (check_failures != failures0) {
			fprintf(stderr, "random: seed-derived step %u op %" PRIu64 " [%" PRIu64 ", +%" PRIu64 ")\n", s,
				op, a, n);
			break;
		}
	}
	world_fini();
	printf("random: %u steps, %u compactions\n", steps, compactions);
}

int main(void)
{
	host = (char *)(uintptr_t)(1ull << 40);
	test_defer_basic(1);
	test_defer_basic(2);
	test_other_policies();
	test_refusals();
	test_budget();
	test_alloc_failures();
	test_backend_failures();
	test_random(0x9e3779b97f4a7c15ull, 3000);
	test_random(12345, 3000);
	return check_exit();
}
