/* test_fastpath.c - the planner's fast path (every policy's single-unit pieces) makes exactly the calls of the general path (planner.c, "Fast path"). */
/*
 * Two worlds replay the same random changes: in one the planner may take its
 * fast path, in the other it never does (general_only). Each world's
 * backends are logging wrappers around a sim that record every MAP and UNMAP
 * (arguments and result); the region's release callback records every
 * release. After every change both worlds must have returned the same
 * result, logged the same calls and releases, and hold the same mappings;
 * and, the oracle, every populated block of each world is mapped exactly
 * (one mapping per unit at the block's own host address) and every
 * discarded block is unmapped. Failures are injected alike in both worlds
 * (a MAP, an UNMAP once - retried -, an UNMAP twice - the backend is marked
 * failed), and some runs use a mapping limit, two backends, a discard unit
 * of several blocks, or a region ending at 2^64. Each seed picks a policy:
 * block; coalesce (with windows); defer with a deferral budget of none, a
 * unit or a few, the default or more, sometimes with a defer_limit and
 * windows; and some regions have blocks of 64 MiB, where the chunk is one
 * discard unit. Besides calls and mappings, the worlds must agree on the
 * worker's stats and the planner's accounts (the layout with its flags,
 * live counts and ages, fine mappings, exposure, deferred blocks, the
 * learned cut and its history).
 *
 * RDM_TEST_SEED=N replays one seed; RDM_TEST_ROUNDS=N sets the rounds.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <rdm/rdm.h>
#include <rdm/region.h>
#include <rdm/worker.h>

#include "core/region_internal.h"
#include "iommu/backend.h"
#include "iommu/worker_internal.h"
#include "tests/check.h"
#include "tests/rng.h"

#define BS g_bs
#define NBLOCKS 192u
#define MAX_LOG 200000u
#define NWORLDS 2
#define MAX_BE 2

static uint64_t g_bs = 64ull << 10;

enum { EV_MAP = 1, EV_UNMAP = 2, EV_RELEASE = 3, EV_RESULT = 4 };

struct event {
	int kind;
	int be;         /* backend index; -1 for releases and results */
	uint64_t a, b, c;
	int err;
};

struct log {
	struct event *v;
	size_t n;
};

static void log_add(struct log *l, struct event e)
{
	REQUIRE(l->n < MAX_LOG);
	l->v[l->n++] = e;
}

/* ---------------------------------------------------- a logging backend */

struct logbe {
	struct rdm_backend base;
	struct rdm_backend *inner; /* a sim */
	struct log *log;
	int index;
	/* Injection, armed by the test thread between changes (the change's
	 * submission orders it before the worker's calls): the map_at-th MAP
	 * from now fails with map_err; the next UNMAP fails unmap_fails times. */
	uint64_t map_at;
	int map_err;
	int unmap_fails;
};

static int lb_map(struct rdm_backend *b, uint64_t iova, uint64_t size, uint64_t vaddr)
{
	struct logbe *l = (struct logbe *)b;
	int err;

	if (l->map_at && --l->map_at == 0)
		err = l->map_err;
	else
		err = l->inner->ops->map(l->inner, iova, size, vaddr);
	log_add(l->log, (struct event){ EV_MAP, l->index, iova, size, vaddr, err });
	return err;
}

static int lb_unmap(struct rdm_backend *b, uint64_t iova, uint64_t size, struct rdm_unmap_result *res)
{
	struct logbe *l = (struct logbe *)b;
	int err;

	if (l->unmap_fails > 0) {
		l->unmap_fails--;
		err = -EFAULT;
	} else {
		err = l->inner->ops->unmap(l->inner, iova, size, res);
	}
	log_add(l->log, (struct event){ EV_UNMAP, l->index, iova, size, 0, err });
	return err;
}

static int lb_dma_avail(struct rdm_backend *b, uint64_t *avail)
{
	struct logbe *l = (struct logbe *)b;

	return l->inner->ops->dma_avail(l->inner, avail);
}

static void lb_destroy(struct rdm_backend *b)
{
	struct logbe *l = (struct logbe *)b;

	rdm_backend_destroy(l->inner);
	free(l);
}

static const struct rdm_backend_ops lb_ops = {
	.name = "logging-sim",
	.map = lb_map,
	.unmap = lb_unmap,
	.dma_avail = lb_dma_avail,
	.destroy = lb_destroy,
};

static struct logbe *new_logbe(struct log *log, int index)
{
	struct rdm_sim_config sc = { .struct_size = sizeof(sc), .semantics = RDM_SEM_TYPE1V2, .call_ns = 1 };
	struct logbe *l = calloc(1, sizeof(*l));

	REQUIRE(l != NULL);
	REQUIRE(rdm_backend_sim_create(&sc, &l->inner) == 0);
	rdm_backend_init(&l->base, &lb_ops);
	l->base.caps = l->inner->caps;
	l->log = log;
	l->index = index;
	return l;
}

/* --------------------------------------------------------------- worlds */

struct world {
	struct log log;
	struct rdm_worker *w;
	struct logbe *be[MAX_BE];
	int nbe;
	struct rdm_region *r;
	bool populated[NBLOCKS]; /* the oracle's model (equal in both worlds) */
};

struct geometry {
	uint64_t iova, unit; /* unit: blocks per discard unit */
	int nbe;
	uint64_t budget;     /* 0: the backend's own limit */
	uint32_t policy;
	uint64_t defer_budget, defer_limit; /* bytes; 0: the default / none */
	bool windows;
};

static void on_release(void *opaque, uint64_t offset, uint64_t length)
{
	struct world *wd = opaque;

	log_add(&wd->log, (struct event){ EV_RELEASE, -1, offset, length, 0, 0 });
}

static void world_init(struct world *wd, const struct geometry *g, bool general_only)
{
	static char host_base[1]; /* only addresses are used */
	struct rdm_region_config rc = { .struct_size = sizeof(rc) };

	memset(wd, 0, sizeof(*wd));
	wd->log.v = calloc(MAX_LOG, sizeof(struct event));
	REQUIRE(wd->log.v != NULL);
	REQUIRE(rdm_worker_create(NULL, &wd->w) == 0);
	wd->nbe = g->nbe;
	for (int i = 0; i < g->nbe; i++) {
		wd->be[i] = new_logbe(&wd->log, i);
		REQUIRE(rdm_worker_add_backend(wd->w, &wd->be[i]->base, g->budget) == 0);
	}
	rc.iova = g->iova;
	rc.size = NBLOCKS * BS;
	rc.block_size = BS;
	rc.discard_unit = g->unit * BS;
	/* Page aligned, never dereferenced (no release touches memory). */
	rc.host_addr = (void *)(((uintptr_t)host_base + (1u << 20)) & ~(uintptr_t)0xfffff);
	rc.policy = g->policy;
	rc.defer_budget = g->defer_budget;
	rc.defer_limit = g->defer_limit;
	if (g->windows)
		rc.flags |= RDM_REGION_ALLOW_WINDOWS;
	rc.release = on_release;
	rc.release_opaque = wd;
	if (rdm_region_create(&rc, &wd->r) != 0)
		fprintf(stderr, "region create: %s\n", rdm_last_error());
	REQUIRE(wd->r != NULL);
	for (int i = 0; i < g->nbe; i++)
		REQUIRE(rdm_worker_attach(wd->w, wd->r, &wd->be[i]->base) == 0);
	/* Attach returned: the worker is done with the planner until the next
	 * change, whose submission publishes this store. */
	((struct rdm_wregion *)rdm_region_get_applier_ctx(wd->r))->planner.general_only = general_only;
}

static void world_fini(struct world *wd)
{
	rdm_worker_destroy(wd->w);
	for (int i = 0; i < wd->nbe; i++)
		rdm_backend_destroy(&wd->be[i]->base);
	free(wd->log.v);
}

struct mapping {
	uint64_t iova, size, vaddr;
};

struct mapping_list {
	struct mapping v[NBLOCKS + 1];
	size_t n;
};

static int collect(void *opaque, uint64_t iova, uint64_t size, uint64_t vaddr)
{
	struct mapping_list *ml = opaque;

	if (ml->n == sizeof(ml->v) / sizeof(ml->v[0]))
		return -1;
	ml->v[ml->n++] = (struct mapping){ iova, size, vaddr };
	return 0;
}

/* The oracle for one world: populated blocks mapped, one mapping per unit at
 * their own host address; discarded ones unmapped (unless a backend failed:
 * then it may still hold them). */
static bool world_matches_model(const struct world *wd, const struct geometry *g)
{
	const struct rdm_region_config *cfg = rdm_region_cfg(wd->r);
	uint64_t vaddr = (uint64_t)(uintptr_t)cfg->host_addr;

	for (int i = 0; i < wd->nbe; i++) {
		uint64_t units = 0;

		for (uint64_t u = 0; u < NBLOCKS / g->unit; u++) {
			uint64_t b0 = u * g->unit, iova = g->iova + b0 * BS;
			bool any = false, all = true;

			for (uint64_t k = 0; k < g->unit; k++) {
				any |= wd->populated[b0 + k];
				all &= wd->populated[b0 + k];
			}
			if (any != all)
				return false; /* changes are whole units */
			if (all) {
				units++;
				if (!rdm_sim_is_mapped(wd->be[i]->inner, iova, g->unit * BS, true, vaddr + b0 * BS))
					return false;
			}
		}
		if (g->policy != RDM_POLICY_BLOCK)
			continue; /* coarser mappings, and deferred blocks */
		struct mapping_list ml = { .n = 0 };

		rdm_sim_for_each_mapping(wd->be[i]->inner, collect, &ml);
		if (ml.n < units)
			return false;
		for (size_t k = 0; k < ml.n; k++)
			if (ml.v[k].size != g->unit * BS)
				return false;
	}
	return true;
}

static bool same_mappings(const struct world *a, const struct world *b)
{
	for (int i = 0; i < a->nbe; i++) {
		static struct mapping_list x, y;

		x.n = y.n = 0;
		rdm_sim_for_each_mapping(a->be[i]->inner, collect, &x);
		rdm_sim_for_each_mapping(b->be[i]->inner, collect, &y);
		if (x.n != y.n || memcmp(x.v, y.v, x.n * sizeof(x.v[0])))
			return false;
	}
	return true;
}

static struct rdm_planner *planner_of(const struct world *wd)
{
	return &((struct rdm_wregion *)rdm_region_get_applier_ctx(wd->r))->planner;
}

struct layout_list {
	struct {
		uint64_t start, len, live, stamp;
		uint32_t flags;
	} v[NBLOCKS + 1];
	size_t n;
};

static int collect_layout(void *opaque, const struct rdm_maptree *t, uint32_t h)
{
	struct layout_list *ll = opaque;
	const struct rdm_layout *l = rdm_maptree_payload(t, h);

	if (ll->n == sizeof(ll->v) / sizeof(ll->v[0]))
		return -1;
	memset(&ll->v[ll->n], 0, sizeof(ll->v[0]));
	ll->v[ll->n].start = rdm_maptree_node(t, h)->start;
	ll->v[ll->n].len = rdm_maptree_node(t, h)->len;
	ll->v[ll->n].live = l->live;
	ll->v[ll->n].stamp = l->stamp;
	ll->v[ll->n].flags = l->flags;
	ll->n++;
	return 0;
}

/* The worker's stats and the planner's accounts. Read between changes: the
 * change's completion orders the worker's writes before these reads. */
static bool same_accounts(const struct world *a, const struct world *b)
{
	const struct rdm_planner *x = planner_of(a), *y = planner_of(b);
	struct rdm_worker_stats sa, sb;
	static struct layout_list la, lb;

	rdm_worker_get_stats(a->w, &sa);
	rdm_worker_get_stats(b->w, &sb);
	if (memcmp(&sa, &sb, sizeof(sa))) {
		fprintf(stderr, "worker stats differ\n");
		return false;
	}
	la.n = lb.n = 0;
	rdm_maptree_for_each(&x->maps, collect_layout, &la);
	rdm_maptree_for_each(&y->maps, collect_layout, &lb);
	if (la.n != lb.n || memcmp(la.v, lb.v, la.n * sizeof(la.v[0]))) {
		fprintf(stderr, "layouts differ (%zu and %zu mappings)\n", la.n, lb.n);
		for (size_t i = 0; i < la.n || i < lb.n; i++)
			fprintf(stderr, "  %zu: %" PRIu64 "+%" PRIu64 " live %" PRIu64 " stamp %" PRIu64 " flags %u | %" PRIu64
				"+%" PRIu64 " live %" PRIu64 " stamp %" PRIu64 " flags %u\n",
				i, la.v[i].start, la.v[i].len, la.v[i].live, la.v[i].stamp, la.v[i].flags, lb.v[i].start,
				lb.v[i].len, lb.v[i].live, lb.v[i].stamp, lb.v[i].flags);
		return false;
	}
#define SAME(f)                                                                  \
	do {                                                                     \
		if (memcmp(&x->f, &y->f, sizeof(x->f))) {                        \
			fprintf(stderr, "planner field %s differs\n", #f);      \
			return false;                                            \
		}                                                                \
	} while (0)
	SAME(fine_mappings);
	SAME(exposure_blocks);
	SAME(deferred_blocks);
	SAME(over_budget);
	SAME(cut);
	SAME(evidence);
	SAME(defer_stamp);
	SAME(seen_blocks);
	SAME(would_defer);
	SAME(would_hold);
	SAME(would_peak);
	if (rdm_region_pins_all(x->region) != rdm_region_pins_all(y->region) ||
	    rdm_region_any_pinned(x->region) != rdm_region_any_pinned(y->region)) {
		fprintf(stderr, "the regions' pins differ\n");
		return false;
	}
	for (uint32_t i = 0; i < x->nbe; i++)
		if (x->be[i]->used != y->be[i]->used || x->be[i]->failed != y->be[i]->failed) {
			fprintf(stderr, "backend %u's accounts differ\n", i);
			return false;
		}
#undef SAME
	return true;
}

static void print_event(const char *who, const struct event *e)
{
	fprintf(stderr, "  %s: kind %d be %d 0x%" PRIx64 " 0x%" PRIx64 " 0x%" PRIx64 " err %d\n", who, e->kind, e->be,
		e->a, e->b, e->c, e->err);
}

static bool same_logs(const struct world *fast, const struct world *gen)
{
	size_t n = fast->log.n < gen->log.n ? fast->log.n : gen->log.n;

	for (size_t i = 0; i < n; i++)
		if (memcmp(&fast->log.v[i], &gen->log.v[i], sizeof(struct event))) {
			fprintf(stderr, "logs differ at event %zu:\n", i);
			print_event("fast   ", &fast->log.v[i]);
			print_event("general", &gen->log.v[i]);
			return false;
		}
	if (fast->log.n != gen->log.n) {
		fprintf(stderr, "logs differ in length: fast %zu, general %zu\n", fast->log.n, gen->log.n);
		return false;
	}
	return true;
}

/* One seed: a geometry and a sequence of changes. Returns false on the
 * first divergence (reported). */
static bool run_seed(uint64_t seed, int steps)
{
	struct world wd[NWORLDS]; /* 0: fast path allowed, 1: general only */
	struct geometry g = { 0 };
	bool ok = true, broken = false;
	size_t scanned = 0;

	rng_state = seed * 0x9e3779b97f4a7c15ull + 1;
	g_bs = below(6) == 0 ? 64ull << 20 : 64ull << 10; /* 64 MiB: the chunk is one unit */
	g.unit = below(4) == 0 ? 4 : 1;
	g.nbe = below(4) == 0 ? 2 : 1;
	g.iova = below(5) == 0 ? 0ull - NBLOCKS * BS : (below(1024) + 1) * (1ull << 30);
	g.budget = below(4) == 0 ? 8 + below(48) : 0;
	g.policy = (uint32_t)below(3) == 0 ? RDM_POLICY_BLOCK : below(2) ? RDM_POLICY_DEFER : RDM_POLICY_COALESCE;
	if (g.policy == RDM_POLICY_COALESCE) {
		g.windows = true; /* the sim cannot split */
	} else if (g.policy == RDM_POLICY_DEFER) {
		uint64_t k = below(4);

		g.defer_budget = k == 0 ? RDM_DEFER_BUDGET_NONE : k == 1 ? (1 + below(3)) * g.unit * BS :
				 k == 2 ? 0 : (4 + below(40)) * g.unit * BS;
		if (below(4) == 0) {
			g.windows = true;
			g.defer_limit = (1 + below(16)) * BS;
		}
	}
	for (int i = 0; i < NWORLDS; i++)
		world_init(&wd[i], &g, i == 1);

	for (int step = 0; step < steps && ok; step++) {
		uint64_t units = NBLOCKS / g.unit;
		uint64_t u0 = below(units), n;
		bool populate = below(2) == 0;
		int res[NWORLDS];

		/* Mostly short ranges (one or a few units), some long ones. */
		n = below(8) ? 1 + below(8) : 1 + below(units);
		if (u0 + n > units)
			n = units - u0;
		/* Injections, the same in both worlds. */
		uint64_t inj = below(16), map_at = 1 + below(8);
		int target = (int)below((uint64_t)g.nbe);

		if (inj == 2 && below(4))
			inj = 3; /* the backend is marked failed rarely */

		for (int i = 0; i < NWORLDS; i++) {
			struct logbe *l = wd[i].be[target];

			l->map_at = 0;
			l->unmap_fails = 0;
			if (inj == 0) {
				l->map_at = map_at;
				l->map_err = -EFAULT;
			} else if (inj == 1) {
				l->unmap_fails = 1; /* retried: no effect beyond the call */
			} else if (inj == 2) {
				l->unmap_fails = 2; /* the backend is marked failed */
			}
		}
		for (int i = 0; i < NWORLDS; i++) {
			uint64_t off = u0 * g.unit * BS, len = n * g.unit * BS;

			res[i] = populate ? rdm_populate(wd[i].r, off, len) : rdm_discard(wd[i].r, off, len);
			log_add(&wd[i].log, (struct event){ EV_RESULT, -1, off, len, populate, res[i] });
			if (res[i] == 0)
				for (uint64_t b = u0 * g.unit; b < (u0 + n) * g.unit; b++)
					wd[i].populated[b] = populate;
		}
		/* Injections not consumed do not carry over. */
		for (int i = 0; i < NWORLDS; i++) {
			wd[i].be[target]->map_at = 0;
			wd[i].be[target]->unmap_fails = 0;
		}
		if (!same_logs(&wd[0], &wd[1]) || !same_mappings(&wd[0], &wd[1]) || !same_accounts(&wd[0], &wd[1])) {
			fprintf(stderr,
				"seed %" PRIu64 " (policy %u) step %d: %s [%" PRIu64 ", +%" PRIu64 ") units: the paths differ\n",
				seed, g.policy, step, populate ? "populate" : "discard", u0, n);
			ok = false;
		}
		/* The block policy's layout is one mapping per unit on both
		 * paths, so it stays indexed by unit (maptree.h, dense mode):
		 * a mapping of another shape would make it a treap for good. */
		for (int i = 0; i < NWORLDS && ok && g.policy == RDM_POLICY_BLOCK; i++)
			if (!rdm_maptree_is_dense(&planner_of(&wd[i])->maps)) {
				fprintf(stderr, "seed %" PRIu64 " step %d: world %d's block layout is no longer dense\n",
					seed, step, i);
				ok = false;
			}
		/* An UNMAP that failed twice marks its backend failed, which may
		 * then keep what it could not unmap (by design): no model check
		 * from there on. */
		for (; scanned + 1 < wd[0].log.n; scanned++)
			broken |= wd[0].log.v[scanned].kind == EV_UNMAP && wd[0].log.v[scanned].err &&
				  wd[0].log.v[scanned + 1].kind == EV_UNMAP && wd[0].log.v[scanned + 1].err;
		for (int i = 0; i < NWORLDS && ok && !broken; i++)
			if (!world_matches_model(&wd[i], &g)) {
				fprintf(stderr, "seed %" PRIu64 " step %d: world %d does not match the model\n", seed, step, i);
				ok = false;
			}
	}
	/* Destroy unmaps and releases everything: the same calls too. */
	for (int i = 0; i < NWORLDS; i++)
		rdm_region_destroy(wd[i].r);
	if (ok && !same_logs(&wd[0], &wd[1])) {
		fprintf(stderr, "seed %" PRIu64 ": the paths differ at destroy\n", seed);
		ok = false;
	}
	for (int i = 0; i < NWORLDS; i++)
		world_fini(&wd[i]);
	return ok;
}

int main(void)
{
	const char *s = getenv("RDM_TEST_SEED"), *r = getenv("RDM_TEST_ROUNDS");
	int rounds = r ? atoi(r) : 60;

	REQUIRE(rdm_set_log_handler(NULL, NULL, RDM_LOG_ERROR) == 0);
	if (s) {
		CHECK(run_seed(strtoull(s, NULL, 0), 400));
		return check_exit();
	}
	for (int i = 1; i <= rounds; i++)
		CHECK(run_seed((uint64_t)i, 400));
	return check_exit();
}
