/* test_alloc_sweep.c - every allocation the worker and planner make (compaction included), failed in turn: each call succeeds or fails with -ENOMEM and changes nothing, I1 and I2 hold, destroy works. */
#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <rdm/rdm.h>
#include <rdm/region.h>
#include <rdm/worker.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/region_internal.h"
#include "iommu/worker_internal.h"
#include "tests/check.h"

#define KiB (1ull << 10)
#define BS (64 * KiB)
#define NB 256u
#define REGION (NB * BS)
#define IOVA0 (1ull << 36)
#define NSIM 2

static char *host; /* fake host memory: only addresses are used */

struct scenario {
	const char *name;
	uint32_t policy, flags;
	uint64_t defer_limit;
	bool can_split;
};

/* One run's world. The release callback runs on the worker thread; the
 * test thread reads what it wrote only after a synchronous call returned
 * (the ticket's completion orders it). */
static struct run {
	struct rdm_backend *sim[NSIM];
	bool attached[NSIM];
	struct rdm_worker *w;
	struct rdm_region *r;
	bool want[NB];            /* the oracle: populated after every call that returned 0 */
	unsigned released[NB];    /* release callbacks per block */
	unsigned violations;      /* released while mapped or populated */
	unsigned bad_results;     /* a result other than 0 / -ENOMEM, or a message not naming memory */
	unsigned failed;          /* calls that failed with -ENOMEM */
} R;

static void on_release(void *opaque, uint64_t off, uint64_t len)
{
	(void)opaque;
	/* I2: released memory is mapped nowhere (every sim, attached or not:
	 * only this region maps into them) and is not populated. */
	for (int i = 0; i < NSIM; i++)
		if (!rdm_sim_is_unmapped(R.sim[i], IOVA0 + off, len))
			R.violations++;
	if (rdm_populated_bytes(R.r, off, len) != 0)
		R.violations++;
	for (uint64_t b = off / BS; b < (off + len) / BS; b++)
		R.released[b]++;
}

/* The distinct messages of refused calls, for the summary. */
#define MAX_MSGS 64
static char msgs[MAX_MSGS][128];
static unsigned msg_count[MAX_MSGS], nmsgs;

static void note_message(const char *m)
{
	unsigned i;

	for (i = 0; i < nmsgs && strcmp(msgs[i], m) != 0; i++)
		;
	if (i == nmsgs && nmsgs < MAX_MSGS)
		snprintf(msgs[nmsgs++], sizeof(msgs[0]), "%s", m);
	if (i < MAX_MSGS)
		msg_count[i]++;
}

/* A call's result: 0 or -ENOMEM naming the memory shortage. The ring's
 * mmap failure says "cannot map" (ring/ring.c), not "out of memory". */
static bool result_ok(int rc, const char *what)
{
	if (rc == 0)
		return true;
	if (rc == -ENOMEM && (strstr(rdm_last_error(), "out of memory") != NULL ||
			      strstr(rdm_last_error(), "ring: cannot map") != NULL)) {
		R.failed++;
		note_message(rdm_last_error());
		return false;
	}
	fprintf(stderr, "%s: %d (%s)\n", what, rc, rdm_last_error());
	R.bad_results++;
	return false;
}

static struct rdm_planner *planner(void)
{
	if (rdm_region_get_applier_ops(R.r) != &rdm_worker_applier_ops)
		return NULL;
	return &((struct rdm_wregion *)rdm_region_get_applier_ctx(R.r))->planner;
}

struct cmp_ctx {
	const struct rdm_planner *p;
	uint64_t iova[NB + 1], len[NB + 1], va[NB + 1];
	unsigned n, k, mismatches;
};

static int layout_cb(void *opaque, uint64_t iova, uint64_t len, uint64_t va)
{
	struct cmp_ctx *c = opaque;

	if (c->n <= NB) {
		c->iova[c->n] = iova;
		c->len[c->n] = len;
		c->va[c->n] = va;
	}
	c->n++;
	return 0;
}

static int sim_cb(void *opaque, uint64_t iova, uint64_t len, uint64_t va)
{
	struct cmp_ctx *c = opaque;

	if (c->k >= c->n || c->iova[c->k] != iova || c->len[c->k] != len || c->va[c->k] != va)
		c->mismatches++;
	c->k++;
	return 0;
}

static int deferred_cb(void *opaque, uint64_t off, uint64_t len)
{
	uint64_t *sum = opaque;

	(void)off;
	*sum += len;
	return 0;
}

/* After every call (the worker is idle): the region is the oracle's state,
 * and the sims hold what that state requires under the policy. */
static void check_state(const struct scenario *sc, const char *step)
{
	struct rdm_planner *p = planner();
	struct cmp_ctx c = { .p = p };
	unsigned before = (unsigned)check_failures;
	uint64_t deferred_blocks = 0;

	for (uint64_t b = 0; b < NB; b++)
		CHECK(rdm_is_populated(R.r, b * BS, BS) == R.want[b]);
	if (p)
		rdm_planner_for_each_mapping(p, layout_cb, &c);
	for (int i = 0; i < NSIM; i++) {
		if (!R.attached[i]) {
			CHECK(rdm_sim_is_unmapped(R.sim[i], IOVA0, REGION));
			continue;
		}
		/* The sim holds exactly the planner's layout. */
		c.k = 0;
		c.mismatches = 0;
		rdm_sim_for_each_mapping(R.sim[i], sim_cb, &c);
		CHECK(c.mismatches == 0 && c.k == c.n);
		for (uint64_t b = 0; b < NB; b++) {
			bool mapped = rdm_sim_is_mapped(R.sim[i], IOVA0 + b * BS, BS, true,
							(uint64_t)(uintptr_t)host + b * BS);

			/* I1: every populated block mapped to its memory. */
			if (R.want[b])
				CHECK(mapped);
			else if (mapped && i == 0)
				deferred_blocks++;
			/* block: nothing but populated blocks is mapped. */
			if (sc->policy == RDM_POLICY_BLOCK)
				CHECK(mapped == R.want[b]);
		}
	}
	/* Whatever is mapped but not populated is deferred, and counted so. */
	if (p && (R.attached[0] || R.attached[1])) {
		uint64_t sum = 0;

		if (!R.attached[0])
			for (uint64_t b = 0; b < NB; b++)
				deferred_blocks += !R.want[b] && rdm_sim_is_mapped(R.sim[1], IOVA0 + b * BS, BS, false, 0);
		rdm_planner_for_each_deferred(p, deferred_cb, &sum);
		CHECK(sum == deferred_blocks * BS);
		CHECK(rdm_planner_deferred_bytes(p) == sum);
	}
	CHECK(R.violations == 0);
	if ((unsigned)check_failures != before)
		fprintf(stderr, "  after %s (%s)\n", step, sc->name);
}

static void want(uint64_t first, uint64_t n, bool v)
{
	for (uint64_t b = first; b < first + n; b++)
		R.want[b] = v;
}

static void populate(const struct scenario *sc, uint64_t first, uint64_t n)
{
	if (result_ok(rdm_populate(R.r, first * BS, n * BS), "populate"))
		want(first, n, true);
	check_state(sc, "populate");
}

static void discard(const struct scenario *sc, uint64_t first, uint64_t n)
{
	if (result_ok(rdm_discard(R.r, first * BS, n * BS), "discard"))
		want(first, n, false);
	check_state(sc, "discard");
}

static void attach(const struct scenario *sc, int i)
{
	if (result_ok(rdm_worker_attach_flags(R.w, R.r, R.sim[i], RDM_ATTACH_QUIESCE_OK), "attach"))
		R.attached[i] = true;
	check_state(sc, "attach");
}

static void detach(const struct scenario *sc, int i)
{
	if (!R.attached[i])
		return;
	if (result_ok(rdm_worker_detach(R.w, R.r, R.sim[i]), "detach"))
		R.attached[i] = false;
	check_state(sc, "detach");
}

/* Compaction: 0 with nothing deferred afterwards, or -ENOMEM with nothing
 * changed (check_state compares the layout, the sims and the deferred
 * accounting either way). */
static void compact(const struct scenario *sc)
{
	uint64_t bytes = 1;
	size_t count = 1;

	if (!planner())
		return; /* not served by a worker: -ENOENT, nothing to sweep */
	int rc = rdm_region_compact(R.r, NULL);

	/* A sim's MAP out of memory is a backend error: rolled back. */
	if (rc == -ENOMEM && strstr(rdm_last_error(), "rolled back")) {
		R.failed++;
		note_message(rdm_last_error());
	} else if (result_ok(rc, "compact") &&
		   result_ok(rdm_region_get_deferred(R.r, NULL, 0, &count, &bytes), "get_deferred")) {
		CHECK(count == 0 && bytes == 0);
	}
	check_state(sc, "compact");
}

/* A populate and the discard of the same range submitted together: when
 * they land in one batch, the worker supersedes both. */
static void supersede(const struct scenario *sc, uint64_t first, uint64_t n)
{
	struct rdm_producer *pr;
	uint64_t t[2];
	int res[2];

	if (!planner())
		return; /* no worker is the region's applier: nothing to batch */
	if (!result_ok(rdm_producer_create(&pr), "producer create"))
		return;
	struct rdm_change ch[2] = {
		{ .region = R.r, .kind = RDM_CHANGE_POPULATE, .offset = first * BS, .length = n * BS },
		{ .region = R.r, .kind = RDM_CHANGE_DISCARD, .offset = first * BS, .length = n * BS },
	};
	if (result_ok(rdm_producer_submit(pr, ch, 2, t), "submit")) {
		CHECK(rdm_producer_wait(pr, t[0], &res[0]) == 0);
		CHECK(rdm_producer_wait(pr, t[1], &res[1]) == 0);
		/* The discard succeeds whatever the populate did (lenient). */
		CHECK(res[1] == 0);
		if (res[0] != 0)
			CHECK(res[0] == -ENOMEM);
		want(first, n, false);
	}
	rdm_producer_destroy(pr);
	check_state(sc, "supersede");
}

static void workload(const struct scenario *sc)
{
	attach(sc, 0);
	populate(sc, 0, 64);
	discard(sc, 8, 4);           /* bisects a mapping: split or defer */
	populate(sc, 8, 2);          /* reuses deferred blocks */
	discard(sc, 20, 1);
	discard(sc, 40, 2);
	populate(sc, 0, 64);         /* lenient: several runs to the planner */
	supersede(sc, 100, 8);
	populate(sc, 128, 32);
	discard(sc, 130, 2);
	discard(sc, 140, 4);
	compact(sc);                 /* re-cuts what is deferred (defer, coalesce past its limit) */
	attach(sc, 1);               /* the layout into a second backend */
	discard(sc, 150, 1);
	populate(sc, 150, 1);
	discard(sc, 0, 16);
	discard(sc, 152, 1);
	compact(sc);                 /* two backends */
	detach(sc, 0);
	discard(sc, 32, 8);
	populate(sc, 200, 16);
	if (result_ok(rdm_discard_all(R.r), "discard_all"))
		want(0, NB, false);
	check_state(sc, "discard_all");
	populate(sc, 64, 8);
	discard(sc, 66, 1);
	/* Fill the layout's first node pool (63 nodes) and bisect: the split
	 * must reserve a node, and defers when it cannot. */
	if (result_ok(rdm_discard_all(R.r), "discard_all"))
		want(0, NB, false);
	for (uint64_t i = 0; i < 63; i++)
		populate(sc, 4 * i, 3);
	discard(sc, 4 * 10 + 1, 1);
	discard(sc, 4 * 20 + 1, 1);
	compact(sc);                 /* the layout's node pool full: reserves */
	/* No backend left, a new state, then a first backend again: the
	 * layout is cut from the region's state. */
	detach(sc, 1);
	detach(sc, 0);
	populate(sc, 0, 100);
	attach(sc, 0);
	discard(sc, 50, 10);
}

/* One run with the k-th allocation failing (k = 0: none). Returns whether
 * the injected failure was hit. */
static bool run_once(const struct scenario *sc, unsigned long k)
{
	struct rdm_sim_config simc = { .struct_size = sizeof(simc), .semantics = RDM_SEM_TYPE1V2,
				       .call_ns = 1, .can_split = sc->can_split };
	struct rdm_region_config rc = { .struct_size = sizeof(rc) };
	unsigned long hit;

	memset(&R, 0, sizeof(R));
	for (int i = 0; i < NSIM; i++)
		REQUIRE(rdm_backend_sim_create(&simc, &R.sim[i]) == 0);
	REQUIRE(rdm_worker_create(NULL, &R.w) == 0);
	for (int i = 0; i < NSIM; i++)
		REQUIRE(rdm_worker_add_backend(R.w, R.sim[i], 0) == 0);
	rc.flags = sc->flags;
	rc.iova = IOVA0;
	rc.size = REGION;
	rc.block_size = BS;
	rc.host_addr = host;
	rc.release = on_release;
	rc.policy = sc->policy;
	rc.defer_limit = sc->defer_limit;
	REQUIRE(rdm_region_create(&rc, &R.r) == 0);
	/* The worker is cold: this thread's ring to it, and its list of
	 * rings, are made under the injection too (the worker must survive
	 * losing its first copy of that list: it keeps the old one and tries
	 * again, never forgetting a ring). */

	rdm_alloc_inject(k, false);
	workload(sc);
	CHECK(rdm_region_destroy(R.r) == 0);
	hit = rdm_alloc_injected();
	rdm_alloc_inject(0, false);

	/* Destroy unmapped everything rdm mapped and released nothing mapped. */
	for (int i = 0; i < NSIM; i++) {
		struct rdm_backend_stats st;

		rdm_backend_get_stats(R.sim[i], &st);
		CHECK(st.mappings == 0);
		CHECK(rdm_sim_is_unmapped(R.sim[i], IOVA0, REGION));
	}
	CHECK(R.violations == 0);
	CHECK(R.bad_results == 0);
	if (k == 0)
		CHECK(R.failed == 0);
	CHECK(rdm_worker_destroy(R.w) == 0);
	for (int i = 0; i < NSIM; i++)
		rdm_backend_destroy(R.sim[i]);
	return hit != 0;
}

int main(void)
{
	static const struct scenario scs[] = {
		{ "block", RDM_POLICY_BLOCK, 0, 0, false },
		{ "coalesce+windows", RDM_POLICY_COALESCE, RDM_REGION_ALLOW_WINDOWS, 0, false },
		{ "coalesce+split", RDM_POLICY_COALESCE, 0, 0, true },
		{ "defer", RDM_POLICY_DEFER, 0, 0, false },
		{ "defer+limit", RDM_POLICY_DEFER, RDM_REGION_ALLOW_WINDOWS, 4 * BS, false },
	};
	unsigned total = 0;

	host = (char *)(uintptr_t)(1ull << 40);
	for (size_t s = 0; s < sizeof(scs) / sizeof(scs[0]); s++) {
		unsigned sites = 0, failed_calls = 0;
		unsigned long k;

		/* The workload as it is, then with each allocation failing. */
		run_once(&scs[s], 0);
		for (k = 1; k < 100000; k++) {
			if (!run_once(&scs[s], k))
				break;
			sites++;
			failed_calls += R.failed;
		}
		CHECK(k < 100000);
		printf("%-17s %u allocation sites failed in turn (%u calls refused -ENOMEM)\n", scs[s].name, sites,
		       failed_calls);
		total += sites;
	}
	printf("refusals by message:\n");
	for (unsigned i = 0; i < nmsgs; i++)
		printf("  %4u  %s\n", msg_count[i], msgs[i]);
	printf("SUMMARY alloc_sweep sites=%u\n", total);
	return check_exit();
}
