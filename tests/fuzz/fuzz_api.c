/* SPDX-License-Identifier: MIT */
/*
 * fuzz_api - the public API driven by the input and checked against a model.
 *
 * The input is a byte stream (zeros once it runs out) read as a sequence of
 * calls on up to 3 regions (random geometry, flags, policy, discard unit),
 * 3 listeners each (refusing populates that touch their "poisoned" blocks),
 * 2 workers, 2 sim backends (random semantics, split capability and mapping
 * limit, with injected map/unmap failures), one explicit producer with
 * asynchronous submits (tickets and callbacks), polls and waits, attach,
 * detach, queries, allocation failures, and destroys in any order. Only the
 * main thread and the workers' threads run.
 *
 * The model: a bitmap of populated blocks per region. A call that returns 0
 * changes it as DESIGN.md's contract says; a failing call changes nothing.
 * Results are predicted where the contract fixes them (argument errors,
 * strict mode, a refusing listener, worker destroy); where the IOMMU may
 * refuse (limit, injected failures, a failed backend) the error must be one
 * it can give. After every call, once every outstanding ticket is consumed:
 *  - rdm_is_populated/is_discarded/populated_bytes/replay_* match the model;
 *  - each registered listener's view (built only from its callbacks) equals
 *    the model on its sub-range, and it was never told a populate of a block
 *    it already had; an unregistered listener's view is empty;
 *  - every populated block is mapped to its host address in every backend the
 *    region is attached to (I1); under the block policy, with no backend
 *    failure, the mappings are exactly the populated discard units; a
 *    detached or destroyed region has no mapping;
 *  - released ranges are discarded and unmapped from the region's backends
 *    when released (I2), never released twice, and without defer a
 *    completed discard has released its blocks.
 *
 * Two outcomes the contract allows and the checks take into account: a
 * backend marked failed (its survivors of a failed window remap may stay
 * unmapped: I1 is not promised there), and a second release of blocks a
 * refused populate had mapped (the map faulted their memory in again).
 * Library defects this fuzzer found (destroy without releases, a
 * half-applied failed attach, the two above before they were defined, a
 * failed first attach whose undo left mappings in a failed backend while
 * the region, without a worker again, released their blocks, a populate
 * mapping over a dead mapping whose queued unmap had just failed, unmaps
 * of a failed split's pieces bisecting the mapping the failed backend
 * still held, past its budget) have regression inputs in
 * corpus/api/regress-*.
 */
#include <rdm/rdm.h>

#include "core/alloc.h"

#include <errno.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);


#define NREG 3
#define NLIS 3
#define NSIM 2
#define NWORK 2
#define MAXB 64
#define MAXPEND 64
#define PAGE 4096ull

#define CHECK(c)                                                                          \
	do {                                                                              \
		if (!(c)) {                                                               \
			fprintf(stderr, "fuzz_api: %s:%d: check failed: %s (last error: %s)\n", \
				__FILE__, __LINE__, #c, rdm_last_error());                \
			abort();                                                          \
		}                                                                         \
	} while (0)

#define CHECK_RC(rc, want)                                                                \
	do {                                                                              \
		int rc_ = (rc), want_ = (want);                                           \
		if (rc_ != want_) {                                                       \
			fprintf(stderr, "fuzz_api: %s:%d: %s returned %d, expected %d (%s)\n", \
				__FILE__, __LINE__, #rc, rc_, want_, rdm_last_error());   \
			abort();                                                          \
		}                                                                         \
	} while (0)

struct in {
	const uint8_t *p;
	size_t n, i;
};

static uint8_t u8(struct in *in)
{
	return in->i < in->n ? in->p[in->i++] : 0;
}

static uint64_t u64(struct in *in)
{
	uint64_t v = 0;
	for (int k = 0; k < 8; k++)
		v |= (uint64_t)u8(in) << (8 * k);
	return v;
}

/* Query ranges come from here, not from the input, so that an input's bytes
 * are the calls alone (hand-written seeds stay readable). */
static uint64_t rng_state;

static uint64_t rnd(void)
{
	uint64_t x = rng_state;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return rng_state = x;
}

struct flis {
	struct rdm_listener l;
	int reg;                /* region slot */
	uint64_t bs;
	uint64_t first, last;   /* sub-range in blocks, [first, last) */
	uint8_t poison[MAXB];
	int err;
	uint8_t view[MAXB];
	bool registered;
	uint32_t order;         /* registration order */
};

struct freg {
	struct rdm_region *r;
	struct rdm_region_config cfg;
	uint64_t bs, nb, du_blocks;
	uint8_t model[MAXB];
	uint8_t everpop[MAXB];
	_Atomic uint8_t released[MAXB];
	_Atomic bool release_unknown; /* async changes: skip the release checks */
	_Atomic bool double_release;  /* a block was released twice */
	bool destroying;
	bool ever_attached;
	/* A failed first attach marked a backend failed: what its undo could
	 * not unmap stays mapped there, pinned (never released) by the region,
	 * which has no worker again (rdm/worker.h, "failed backends"). */
	bool pinned;
	int worker;             /* -1: no applier yet */
	bool attached[NSIM];
	struct flis lis[NLIS];
	uint32_t next_order;
};

#define NLEAKY 8

struct fsim {
	struct rdm_backend *b;
	struct rdm_backend_caps caps;
	int worker;             /* -1: not added */
	uint64_t budget;        /* given to rdm_worker_add_backend (0: the sim's limit) */
	uint64_t base;          /* mappings it held then (a failed backend's leftovers) */
	/* A region was destroyed or detached while a backend of its worker was
	 * failed: what that region had mapped here may stay mapped (rdm/worker.h,
	 * "failed backends"), so this sim's "nothing mapped in the region"
	 * checks skip that region's IOVA range here for the rest of the input.
	 * A later region in the same slot has IOVAs of its own
	 * (op_region_create) and is checked in full, unless its generation
	 * wrapped around onto a leaky range; a release is still checked
	 * against every sim (release_cb). More ranges than NLEAKY: every
	 * range counts as leaky (leak_all). */
	uint64_t leak_lo[NLEAKY], leak_last[NLEAKY];
	unsigned nleaky;
	bool leak_all;
	unsigned armed;         /* injections armed on it by this input */
};

struct fwork {
	struct rdm_worker *w;
	bool failed;            /* a backend of it was ever marked failed */
};

struct pend {
	int reg;
	uint32_t kind;
	uint64_t s, e;          /* blocks */
	uint64_t ticket;
	bool cb;
	_Atomic int cbdone;
	_Atomic int cbres;
	bool known;
	int result;
};

static struct state {
	struct freg reg[NREG];
	struct fsim sim[NSIM];
	struct fwork work[NWORK];
	struct rdm_producer *prod;
	struct pend pend[MAXPEND];
	unsigned npend;
	uint64_t consumed_ticket;
	bool have_consumed;
	uint32_t generation[NREG]; /* regions created per slot */
} S;

/* RDM_FUZZ_TRACE=1: print each call and result (to read a crash input). */
static int tracing = -1;
#define TRACE(...)                                                      \
	do {                                                            \
		if (tracing)                                            \
			fprintf(stderr, "fuzz_api: " __VA_ARGS__);      \
	} while (0)

static const int inject_errs[] = { -ENOMEM, -EFAULT, -ENOSPC };

/* ---------------------------------------------------------------- callbacks */

static struct flis *flis_of(struct rdm_listener *l)
{
	return (struct flis *)(void *)l;
}

static void lis_range(struct flis *f, uint64_t off, uint64_t len, uint64_t *s, uint64_t *e)
{
	CHECK(len > 0 && off % f->bs == 0 && len % f->bs == 0);
	*s = off / f->bs;
	*e = (off + len) / f->bs;
	/* Clipped to the listener's sub-range. */
	CHECK(*s >= f->first && *e <= f->last);
}

static int lis_populate(struct rdm_listener *l, uint64_t off, uint64_t len)
{
	struct flis *f = flis_of(l);
	uint64_t s, e;

	lis_range(f, off, len, &s, &e);
	for (uint64_t b = s; b < e; b++)
		CHECK(!f->view[b]); /* told a populate of a block it already has */
	for (uint64_t b = s; b < e; b++)
		if (f->poison[b])
			return f->err;
	for (uint64_t b = s; b < e; b++)
		f->view[b] = 1;
	return 0;
}

static void lis_discard(struct rdm_listener *l, uint64_t off, uint64_t len)
{
	struct flis *f = flis_of(l);
	uint64_t s, e;

	lis_range(f, off, len, &s, &e);
	for (uint64_t b = s; b < e; b++)
		f->view[b] = 0;
}

static const struct rdm_listener_ops lis_ops = { lis_populate, lis_discard };

/* Runs on the region's applier thread: the sims checked here are owned by it
 * (every other thread is idle then, see settle()). A region without a worker
 * releases on the main thread with every worker idle: then every sim is
 * checked, also one a failed first attach left mappings in (I2: a released
 * block is mapped nowhere). */
static void release_cb(void *opaque, uint64_t off, uint64_t len)
{
	struct freg *g = opaque;

	CHECK(len > 0 && off % g->bs == 0 && len % g->bs == 0 && off + len <= g->cfg.size);
	/* A destroy releases without publishing a new state first. */
	if (!g->destroying)
		CHECK(rdm_is_discarded(g->r, off, len));
	for (int s = 0; s < NSIM; s++)
		if (g->worker < 0 || S.sim[s].worker == g->worker)
			CHECK(rdm_sim_is_unmapped(S.sim[s].b, g->cfg.iova + off, len));
	TRACE("  release region %d blocks [%llu, %llu)\n", (int)(g - S.reg),
	      (unsigned long long)(off / g->bs), (unsigned long long)((off + len) / g->bs));
	bool track = !atomic_load(&g->release_unknown);
	for (uint64_t b = off / g->bs; b < (off + len) / g->bs; b++) {
		/* Never released twice without a populate in between: noted
		 * here, judged once the call returns (op_change, check_all). */
		if (atomic_exchange(&g->released[b], 1) && track)
			atomic_store(&g->double_release, true);
	}
}

static void done_cb(void *opaque, int result)
{
	struct pend *p = opaque;

	atomic_store(&p->cbres, result);
	atomic_store_explicit(&p->cbdone, 1, memory_order_release);
}

/* ---------------------------------------------------------------- model */

/* check_range() of core/region.c, from region.h's contract. */
static int expect_range(const struct freg *g, uint64_t off, uint64_t len)
{
	if (len == 0 || (off | len) % g->bs)
		return -EINVAL;
	if (off + len < off)
		return -EINVAL;
	if (off + len > g->cfg.size)
		return -ERANGE;
	if ((off | len) % (g->du_blocks * g->bs))
		return -EINVAL;
	return 0;
}

/* Was a backend of the region's worker ever marked failed (up to now)? */
static bool any_failed(const struct freg *g)
{
	if (g->pinned)
		return true;
	if (g->worker < 0)
		return false;
	struct fwork *fw = &S.work[g->worker];
	if (!fw->failed && fw->w) {
		struct rdm_worker_stats st;
		rdm_worker_get_stats(fw->w, &st);
		fw->failed = st.failed_backends != 0;
	}
	return fw->failed;
}

/* May region g's IOVA range hold a destroyed or detached region's
 * leftovers on this sim (struct fsim)? */
static bool leaky_over(const struct fsim *fs, const struct freg *g)
{
	uint64_t last = g->cfg.iova + (g->cfg.size - 1);

	if (fs->leak_all)
		return true;
	for (unsigned k = 0; k < fs->nleaky; k++)
		if (g->cfg.iova <= fs->leak_last[k] && fs->leak_lo[k] <= last)
			return true;
	return false;
}

/* The worker's count of coalesce discards deferred at the limit (0 with no
 * worker: a region without one maps nothing). */
static uint64_t coalesce_deferrals(const struct freg *g)
{
	struct rdm_worker_stats st;

	if (g->worker < 0 || !S.work[g->worker].w)
		return 0;
	rdm_worker_get_stats(S.work[g->worker].w, &st);
	return st.defer_limit_exceeded;
}

static bool is_attached(const struct freg *g)
{
	for (int s = 0; s < NSIM; s++)
		if (g->attached[s])
			return true;
	return false;
}

/* The first registered listener (in order) that refuses populating the
 * blocks of [s, e) not yet populated: its error, or 0. */
static int listener_refusal(const struct freg *g, uint64_t s, uint64_t e)
{
	const struct flis *best = NULL;

	for (int k = 0; k < NLIS; k++) {
		const struct flis *f = &g->lis[k];
		if (!f->registered || (best && best->order < f->order))
			continue;
		for (uint64_t b = s > f->first ? s : f->first; b < e && b < f->last; b++)
			if (!g->model[b] && f->poison[b]) {
				best = f;
				break;
			}
	}
	return best ? best->err : 0;
}

static bool iommu_error(int rc)
{
	return rc == -ENOSPC || rc == -EIO || rc == -ENOMEM || rc == -EFAULT;
}

/* An IOMMU error a map of g's blocks may get: also -EEXIST once a backend
 * failed with g's mappings in it. Those leftovers stay in that sim after
 * its worker is gone (pinned in the region, never released), and a later
 * worker, which knows nothing of them, maps over them: the sim refuses
 * the overlap, as the kernel would. */
static bool map_error(const struct freg *g, int rc)
{
	return iommu_error(rc) || (rc == -EEXIST && any_failed(g));
}

/* Apply a change that returned rc to the model (after checking rc is one the
 * contract allows). exact: a synchronous call, whose batch holds it alone. */
static void model_apply(struct freg *g, uint32_t kind, uint64_t s, uint64_t e, int rc, bool exact)
{
	bool strict = g->cfg.flags & RDM_REGION_STRICT;

	TRACE("  apply region %d kind %u blocks [%llu, %llu) rc %d%s\n", (int)(g - S.reg), kind,
	      (unsigned long long)s, (unsigned long long)e, rc, exact ? "" : " (async)");

	if (kind == RDM_CHANGE_DISCARD_ALL) {
		CHECK_RC(rc, 0);
		s = 0;
		e = g->nb;
	}
	if (kind == RDM_CHANGE_POPULATE) {
		bool any = false, all = true;
		for (uint64_t b = s; b < e; b++) {
			any |= g->model[b];
			all &= g->model[b];
		}
		if (strict && any) {
			CHECK_RC(rc, -EEXIST);
			return;
		}
		if (!strict && all) {
			CHECK_RC(rc, 0);
			return;
		}
		int refuse = listener_refusal(g, s, e);
		if (refuse && (exact || rc != 0)) {
			CHECK_RC(rc, refuse);
			return;
		}
		if (rc != 0) {
			/* Only the IOMMU may refuse now. */
			CHECK(is_attached(g) && map_error(g, rc));
			return;
		}
		for (uint64_t b = s; b < e; b++) {
			if (!g->model[b])
				atomic_store(&g->released[b], 0);
			g->model[b] = 1;
			g->everpop[b] = 1;
		}
		return;
	}
	/* Discard (cannot fail but for strict mode's rule). */
	if (kind == RDM_CHANGE_DISCARD && strict) {
		for (uint64_t b = s; b < e; b++)
			if (!g->model[b]) {
				CHECK_RC(rc, -ENOENT);
				return;
			}
	}
	CHECK_RC(rc, 0);
	uint8_t was[MAXB];
	memcpy(was, g->model, sizeof(was));
	for (uint64_t b = s; b < e; b++)
		g->model[b] = 0;
	/* Without defer, a completed discard has released its blocks (I2). */
	if (exact && g->cfg.policy != RDM_POLICY_DEFER && !any_failed(g) &&
	    !atomic_load(&g->release_unknown))
		for (uint64_t b = s; b < e; b++)
			if (was[b])
				CHECK(atomic_load(&g->released[b]));
}

/* Wait for every outstanding change, in submission order, and apply each to
 * the model. Afterwards every worker is idle. */
static void settle(void)
{
	/* First every result (so every change is applied and its releases
	 * done), then the model in submission order. */
	for (unsigned i = 0; i < S.npend; i++) {
		struct pend *p = &S.pend[i];
		if (!p->known) {
			if (p->cb) {
				while (!atomic_load_explicit(&p->cbdone, memory_order_acquire))
					sched_yield();
				p->result = atomic_load(&p->cbres);
			} else {
				CHECK_RC(rdm_producer_wait(S.prod, p->ticket, &p->result), 0);
				S.consumed_ticket = p->ticket;
				S.have_consumed = true;
			}
			p->known = true;
		}
	}
	for (unsigned i = 0; i < S.npend; i++) {
		struct pend *p = &S.pend[i];
		model_apply(&S.reg[p->reg], p->kind, p->s, p->e, p->result, false);
	}
	S.npend = 0;
	for (int w = 0; w < NWORK; w++)
		if (S.work[w].w) {
			struct rdm_worker_stats st;
			rdm_worker_get_stats(S.work[w].w, &st);
			if (st.failed_backends)
				S.work[w].failed = true;
		}
}

/* ---------------------------------------------------------------- checks */

struct runs {
	uint64_t off[MAXB + 1], len[MAXB + 1];
	int n, stop_after, calls;
};

static int run_cb(void *opaque, uint64_t off, uint64_t len)
{
	struct runs *rn = opaque;
	rn->calls++;
	if (rn->n <= MAXB) {
		rn->off[rn->n] = off;
		rn->len[rn->n] = len;
		rn->n++;
	}
	if (rn->stop_after && rn->calls == rn->stop_after)
		return -ECHILD;
	return 0;
}

/* The model's maximal runs of value v inside blocks [s, e). */
static int model_runs(const struct freg *g, uint8_t v, uint64_t s, uint64_t e, struct runs *rn)
{
	rn->n = 0;
	for (uint64_t b = s; b < e;) {
		if (g->model[b] != v) {
			b++;
			continue;
		}
		uint64_t c = b;
		while (c < e && g->model[c] == v)
			c++;
		rn->off[rn->n] = b * g->bs;
		rn->len[rn->n] = (c - b) * g->bs;
		rn->n++;
		b = c;
	}
	return rn->n;
}

static void check_queries(struct freg *g)
{
	struct rdm_region *r = g->r;
	uint64_t bs = g->bs, size = g->cfg.size;

	CHECK(rdm_region_granularity(r) == bs && rdm_region_size(r) == size);
	struct rdm_region_config in_force = { .struct_size = sizeof(in_force) };
	CHECK(rdm_region_get_config(r, &in_force) == 0 && in_force.iova == g->cfg.iova && in_force.size == size &&
	      in_force.block_size == bs && in_force.host_addr == g->cfg.host_addr && in_force.flags == g->cfg.flags);
	uint64_t pop = 0;
	for (uint64_t b = 0; b < g->nb; b++) {
		CHECK(rdm_is_populated(r, b * bs, bs) == (g->model[b] == 1));
		CHECK(rdm_is_discarded(r, b * bs, bs) == (g->model[b] == 0));
		pop += g->model[b];
	}
	CHECK(rdm_populated_bytes(r, 0, size) == pop * bs);

	/* A range from the input: any alignment, maybe outside. */
	uint64_t off = rnd() % 8 == 0 ? rnd() : rnd() % 160 * (bs / 2);
	uint64_t len = rnd() % 8 == 0 ? rnd() : rnd() % 320 * (bs / 4);
	uint64_t end = off + len < off ? UINT64_MAX : off + len;
	bool inside = len > 0 && off + len >= off && off + len <= size;
	bool all1 = inside, all0 = inside;
	uint64_t s = 0, e = 0, want = 0;
	if (off < size && end > off) {
		s = off / bs;
		e = ((end > size ? size : end) + bs - 1) / bs;
		for (uint64_t b = s; b < e; b++) {
			all1 &= g->model[b] == 1;
			all0 &= g->model[b] == 0;
			want += g->model[b] * bs;
		}
	}
	CHECK(rdm_is_populated(r, off, len) == all1);
	CHECK(rdm_is_discarded(r, off, len) == all0);
	CHECK(rdm_populated_bytes(r, off, len) == want);

	/* Replays of the clipped range, whole and stopped early. */
	struct runs got, exp;
	for (int v = 0; v < 2; v++) {
		memset(&got, 0, sizeof(got));
		int n = model_runs(g, (uint8_t)v, s, e, &exp);
		int rc = v ? rdm_replay_populated(r, off, len, run_cb, &got)
			   : rdm_replay_discarded(r, off, len, run_cb, &got);
		CHECK_RC(rc, 0);
		CHECK(got.n == n);
		for (int k = 0; k < n; k++)
			CHECK(got.off[k] == exp.off[k] && got.len[k] == exp.len[k]);
		if (n > 1) {
			memset(&got, 0, sizeof(got));
			got.stop_after = 1 + (int)(rnd() % (unsigned)(n - 1));
			rc = v ? rdm_replay_populated(r, off, len, run_cb, &got)
			       : rdm_replay_discarded(r, off, len, run_cb, &got);
			CHECK_RC(rc, -ECHILD);
			CHECK(got.calls == got.stop_after);
		}
	}
}

struct mapchk {
	const struct freg *g;
	int bad;
};

static int map_cb(void *opaque, uint64_t iova, uint64_t size, uint64_t vaddr)
{
	struct mapchk *m = opaque;
	const struct freg *g = m->g;
	uint64_t unit = g->du_blocks * g->bs;

	if (iova < g->cfg.iova || iova - g->cfg.iova >= g->cfg.size)
		return 0;
	uint64_t off = iova - g->cfg.iova;
	if (size != unit || off % unit || vaddr != (uint64_t)(uintptr_t)g->cfg.host_addr + off)
		m->bad++;
	return 0;
}

static void check_mappings(const struct freg *g)
{
	for (int s = 0; s < NSIM; s++) {
		const struct fsim *fs = &S.sim[s];
		uint64_t host = (uint64_t)(uintptr_t)g->cfg.host_addr;

		if (!g->attached[s]) {
			if (!any_failed(g) && !leaky_over(fs, g))
				CHECK(rdm_sim_is_unmapped(fs->b, g->cfg.iova, g->cfg.size));
			continue;
		}
		/* The contract (rdm/worker.h, "failed backends"): when the
		 * remap of a split mapping's survivors fails twice (coalesce
		 * policy, a DMA window), the backend is marked failed; the
		 * survivors stay unmapped and I1 is no longer promised for a
		 * region with a failed backend. */
		bool i1 = !any_failed(g);
		for (uint64_t b = 0; b < g->nb; b++)
			if (i1 && g->model[b])
				CHECK(rdm_sim_is_mapped(fs->b, g->cfg.iova + b * g->bs, g->bs, true,
							host + b * g->bs));
		if (g->cfg.policy != RDM_POLICY_BLOCK || any_failed(g) || leaky_over(fs, g))
			continue;
		for (uint64_t b = 0; b < g->nb; b++)
			if (!g->model[b])
				CHECK(rdm_sim_is_unmapped(fs->b, g->cfg.iova + b * g->bs, g->bs));
		struct mapchk m = { g, 0 };
		CHECK(rdm_sim_for_each_mapping(fs->b, map_cb, &m) == 0);
		CHECK(m.bad == 0);
	}
}

static void check_all(void)
{
	/* I4: never past the budget a worker was given (the sim enforces its
	 * own limit itself). Mappings a failed backend kept from before the
	 * worker took the sim (base) are not the worker's: they can only go
	 * (IOVAs are never reused, op_region_create), so with them the worker
	 * may hold at most base + budget. */
	for (int s = 0; s < NSIM; s++) {
		struct rdm_backend_stats st;
		rdm_backend_get_stats(S.sim[s].b, &st);
		if (S.sim[s].worker >= 0 && S.sim[s].budget)
			CHECK(st.mappings <= S.sim[s].base + S.sim[s].budget);
	}
	for (int i = 0; i < NREG; i++) {
		struct freg *g = &S.reg[i];
		if (!g->r)
			continue;
		CHECK(!atomic_load(&g->double_release));
		check_queries(g);
		for (int k = 0; k < NLIS; k++) {
			const struct flis *f = &g->lis[k];
			for (uint64_t b = 0; b < g->nb; b++) {
				bool in_sub = f->registered && b >= f->first && b < f->last;
				CHECK(f->view[b] == (in_sub ? g->model[b] : 0));
			}
		}
		if (g->worker >= 0)
			check_mappings(g);
	}
}

/* ---------------------------------------------------------------- operations */

static void op_region_create(struct in *in, int i)
{
	struct freg *g = &S.reg[i];
	if (g->r)
		return;
	memset(g, 0, sizeof(*g));
	g->worker = -1;
	uint8_t a = u8(in), b = u8(in), c = u8(in);
	unsigned du_shift = a % 3;
	g->bs = PAGE << (b % 3);
	g->du_blocks = 1ull << du_shift;
	g->nb = (1 + (uint64_t)(c % (MAXB >> du_shift))) << du_shift;
	struct rdm_region_config *cfg = &g->cfg;
	cfg->struct_size = sizeof(*cfg);
	cfg->flags = (a >> 2) & (RDM_REGION_STRICT | RDM_REGION_ALLOW_WINDOWS);
	/* Each region its own IOVAs (16 MiB per generation of a slot, above
	 * any region's size): a mapping a failed backend kept of an earlier
	 * region never covers a later one's. */
	cfg->iova = (((uint64_t)i + 1) << 32) + ((uint64_t)(S.generation[i]++ % 256) << 24);
	cfg->size = g->nb * g->bs;
	cfg->block_size = g->bs;
	cfg->host_addr = (void *)(uintptr_t)(((uint64_t)i + 1) << 36);
	cfg->release = release_cb;
	cfg->release_opaque = g;
	cfg->policy = (a >> 4) % 3;
	cfg->discard_unit = du_shift || (a & 0x40) ? g->du_blocks * g->bs : 0;
	cfg->defer_limit = (a & 0x80) ? (uint64_t)u8(in) * g->bs : 0;
	/* A NUMA node: none (the caller's), node 0, or a node that does not
	 * exist with preferred placement (falls back); the state behaves the
	 * same on every one. */
	switch ((b >> 2) & 3) {
	case 1: cfg->flags |= RDM_REGION_NUMA_NODE; cfg->numa_node = 0; break;
	case 2: cfg->flags |= RDM_REGION_NUMA_NODE | RDM_REGION_NUMA_PREFERRED; cfg->numa_node = 4096; break;
	case 3: cfg->flags |= RDM_REGION_NUMA_NODE | RDM_REGION_NUMA_PREFERRED; cfg->numa_node = 0; break;
	default: break;
	}

	/* Sometimes a bad config: it must be refused with -EINVAL. */
	int want = 0;
	struct rdm_region_config bad = *cfg;
	switch (b >> 4) {
	case 1: bad.block_size = g->bs * 3; want = -EINVAL; break;
	case 2: bad.size = 0; want = -EINVAL; break;
	case 3: bad.size = cfg->size + PAGE; want = g->bs == PAGE && !du_shift ? 0 : -EINVAL; break;
	case 4: bad.flags |= 1u << 7; want = -EINVAL; break;
	case 5: bad.policy = 3; want = -EINVAL; break;
	case 6: bad.iova = UINT64_MAX & ~(PAGE - 1); want = cfg->size > PAGE ? -EINVAL : 0; break;
	case 7: bad.discard_unit = g->bs * 3; want = -EINVAL; break;
	case 8: bad.struct_size = 4; want = -EINVAL; break;
	case 9: bad.flags = (bad.flags & ~(uint32_t)RDM_REGION_NUMA_PREFERRED) | RDM_REGION_NUMA_NODE;
		bad.numa_node = 4096; want = -EINVAL; break;
	case 10: bad.flags = (bad.flags & ~(uint32_t)RDM_REGION_NUMA_NODE) | RDM_REGION_NUMA_PREFERRED;
		want = -EINVAL; break;
	default: break;
	}
	if (want == 0 && ((b >> 4) == 3 || (b >> 4) == 6))
		return; /* a valid config after all; keep the model's geometry simple */
	if (want) {
		struct rdm_region *r = NULL;
		CHECK_RC(rdm_region_create(&bad, &r), want);
		CHECK(r == NULL && rdm_last_error()[0]);
		return;
	}
	bool inject = (c & 0x80) != 0;
	if (inject)
		rdm_alloc_inject(1 + u8(in) % 4, false);
	int rc = rdm_region_create(cfg, &g->r);
	TRACE("  region %d: %llu blocks of %llu, unit %llu blocks, flags %#x, policy %u -> %d\n", i,
	      (unsigned long long)g->nb, (unsigned long long)g->bs, (unsigned long long)g->du_blocks,
	      cfg->flags, cfg->policy, rc);
	if (inject)
		rdm_alloc_inject(0, false);
	if (inject && rc == -ENOMEM) {
		CHECK(g->r == NULL);
		return;
	}
	CHECK_RC(rc, 0);
	for (int k = 0; k < NLIS; k++) {
		struct flis *f = &g->lis[k];
		f->reg = i;
		f->bs = g->bs;
		/* Distinct per listener, none an IOMMU error. */
		static const int errs[NLIS] = { -EACCES, -EPERM, -EXDEV };
		f->err = errs[k];
	}
}

/* After g was destroyed or detached: with a failed backend on its worker
 * (ever, the destroy's or detach's own calls included), its mappings may
 * outlive it on that worker's sims (struct fsim). */
static void mark_leaky(const struct freg *g)
{
	if (!any_failed(g))
		return;
	for (int s = 0; s < NSIM; s++) {
		struct fsim *fs = &S.sim[s];

		if (fs->worker != g->worker || leaky_over(fs, g))
			continue;
		if (fs->nleaky == NLEAKY) {
			fs->leak_all = true;
			continue;
		}
		fs->leak_lo[fs->nleaky] = g->cfg.iova;
		fs->leak_last[fs->nleaky++] = g->cfg.iova + (g->cfg.size - 1);
	}
}

static void op_region_destroy(int i)
{
	struct freg *g = &S.reg[i];
	if (!g->r)
		return;
	g->destroying = true;
	CHECK_RC(rdm_region_destroy(g->r), 0);
	mark_leaky(g); /* after: the destroy's own unmaps may fail */
	CHECK(!atomic_load(&g->double_release));
	for (int k = 0; k < NLIS; k++)
		for (uint64_t b = 0; b < g->nb; b++)
			CHECK(g->lis[k].view[b] == 0);
	if (!any_failed(g)) {
		/* Destroy releases every populated block no failed backend may
		 * still pin, with or without a worker (region.h). */
		for (uint64_t b = 0; b < g->nb && !atomic_load(&g->release_unknown); b++)
			if (g->everpop[b])
				CHECK(atomic_load(&g->released[b]));
		for (int s = 0; s < NSIM; s++)
			if (!leaky_over(&S.sim[s], g))
				CHECK(rdm_sim_is_unmapped(S.sim[s].b, g->cfg.iova, g->cfg.size));
	}
	g->r = NULL;
}

/* A range in bytes: mostly whole units inside the region, sometimes raw. */
static void pick_range(const struct freg *g, struct in *in, uint64_t *off, uint64_t *len)
{
	uint8_t m = u8(in);
	if (m >= 0xf0) {
		*off = u64(in);
		*len = u64(in);
		return;
	}
	uint64_t units = g->nb / g->du_blocks, unit = g->du_blocks * g->bs;
	uint64_t a = u8(in) % units, n = 1 + u8(in) % (units - a);
	*off = a * unit;
	*len = n * unit;
	if (m >= 0xe0)
		*off += g->bs; /* breaks a discard unit, or walks off the end */
}

static void op_change(struct in *in, int i, uint32_t kind)
{
	struct freg *g = &S.reg[i];
	uint64_t off = 0, len = g->cfg.size;
	if (!g->r)
		return;
	if (kind != RDM_CHANGE_DISCARD_ALL)
		pick_range(g, in, &off, &len);
	int want = kind == RDM_CHANGE_DISCARD_ALL ? 0 : expect_range(g, off, len);
	/* Allocation failures only where the caller is the applier. */
	bool inject = g->worker < 0 && u8(in) % 4 == 0;
	if (inject)
		rdm_alloc_inject(1 + u8(in) % 3, false);
	uint64_t deferred_before = coalesce_deferrals(g);
	int rc = kind == RDM_CHANGE_POPULATE ? rdm_populate(g->r, off, len)
		 : kind == RDM_CHANGE_DISCARD ? rdm_discard(g->r, off, len)
					       : rdm_discard_all(g->r);
	if (inject)
		rdm_alloc_inject(0, false);
	if (rc != 0)
		CHECK(rdm_last_error()[0] != '\0');
	if (want) {
		CHECK_RC(rc, want);
		return;
	}
	/* The contract (region.h, rdm_release_fn): when the IOMMU refuses a
	 * lenient populate of several runs after mapping the first ones, the
	 * rollback unmaps those and releases them again - the map pinned (and
	 * so faulted in) their memory anew, which the VMM may free again. */
	if (kind == RDM_CHANGE_POPULATE && rc != 0 && iommu_error(rc))
		atomic_store(&g->double_release, false);
	if (inject && rc == -ENOMEM)
		return; /* nothing changed: check_all() says so */
	/* Coalesce defers a bisecting discard whose split does not fit under
	 * the mapping limit (DESIGN.md "Splits and the limit"; the headroom
	 * covers one discard's splits, so several in a row can use it up):
	 * then its blocks are released later, with the whole mapping. */
	bool deferred = coalesce_deferrals(g) != deferred_before;
	model_apply(g, kind, off / g->bs, (off + len) / g->bs, rc, kind == RDM_CHANGE_POPULATE || !deferred);
}

static void op_listener(struct in *in, int i)
{
	struct freg *g = &S.reg[i];
	if (!g->r)
		return;
	uint8_t m = u8(in);
	struct flis *f = &g->lis[m % NLIS];
	if (f->registered) {
		CHECK_RC(rdm_listener_unregister(g->r, &f->l), 0);
		f->registered = false;
		return;
	}
	if (m & 0x80) {
		/* Not registered: -ENOENT. */
		CHECK_RC(rdm_listener_unregister(g->r, &f->l), -ENOENT);
		return;
	}
	uint64_t off, len;
	pick_range(g, in, &off, &len);
	uint64_t poison = u64(in);
	memset(f->poison, 0, sizeof(f->poison));
	if (m & 0x40)
		for (uint64_t b = 0; b < g->nb; b++)
			f->poison[b] = (poison >> (b % 64)) & 1;
	memset(&f->l, 0, sizeof(f->l));
	f->l.ops = &lis_ops;
	f->l.offset = off;
	f->l.length = len;
	int want = expect_range(g, off, len);
	/* Before the call: the registration replay uses them. */
	f->first = off / g->bs;
	f->last = want ? 0 : (off + len) / g->bs;
	bool inject = !want && g->worker < 0 && (m & 0x20);
	if (inject)
		rdm_alloc_inject(1 + u8(in) % 3, false);
	int rc = rdm_listener_register(g->r, &f->l);
	if (inject)
		rdm_alloc_inject(0, false);
	if (want) {
		CHECK_RC(rc, want);
		return;
	}
	if (inject && rc == -ENOMEM) {
		CHECK(rc == -ENOMEM);
		return;
	}
	/* The replay is refused at the first populated poisoned block. */
	int refuse = 0;
	for (uint64_t b = f->first; b < f->last; b++)
		if (g->model[b] && f->poison[b])
			refuse = f->err;
	CHECK_RC(rc, refuse);
	if (rc == 0) {
		f->registered = true;
		f->order = g->next_order++;
	}
}

static void op_worker_create(struct in *in, int w)
{
	if (S.work[w].w)
		return;
	struct rdm_worker_config c = { .struct_size = sizeof(c) };
	uint8_t m = u8(in);
	c.ring_capacity = 2u << (m % 4);
	c.ticket_slots = 2u << ((m >> 2) % 4);
	c.max_batch = 1 + u8(in) % 8;
	c.spin_us = m & 0x80 ? 0 : 5;
	CHECK_RC(rdm_worker_create(&c, &S.work[w].w), 0);
	S.work[w].failed = false;
}

static void op_worker_destroy(int w)
{
	if (!S.work[w].w)
		return;
	bool busy = false;
	for (int i = 0; i < NREG; i++)
		busy |= S.reg[i].r && S.reg[i].worker == w;
	int rc = rdm_worker_destroy(S.work[w].w);
	CHECK_RC(rc, busy ? -EBUSY : 0);
	if (rc == 0) {
		S.work[w].w = NULL;
		for (int s = 0; s < NSIM; s++)
			if (S.sim[s].worker == w)
				S.sim[s].worker = -1;
	}
}

static void op_add_backend(struct in *in, int w, int s)
{
	if (!S.work[w].w || S.sim[s].worker >= 0) {
		if (S.work[w].w && S.sim[s].worker == w)
			CHECK_RC(rdm_worker_add_backend(S.work[w].w, S.sim[s].b, 0), -EEXIST);
		return;
	}
	uint64_t budget = u8(in) % 4 == 0 ? 1 + u8(in) % 16 : 0;
	struct rdm_backend_stats st;
	rdm_backend_get_stats(S.sim[s].b, &st);
	CHECK_RC(rdm_worker_add_backend(S.work[w].w, S.sim[s].b, budget), 0);
	S.sim[s].worker = w;
	S.sim[s].budget = budget;
	S.sim[s].base = st.mappings;
}

static void op_attach(int i, int w, int s, bool detach)
{
	struct freg *g = &S.reg[i];
	struct fsim *fs = &S.sim[s];
	if (!g->r || !S.work[w].w)
		return;
	if (detach) {
		int rc = rdm_worker_detach(S.work[w].w, g->r, fs->b);
		mark_leaky(g); /* after: the detach's own unmap may fail */
		bool ok = g->worker == w && fs->worker == w && g->attached[s];
		CHECK_RC(rc, ok ? 0 : -ENOENT);
		if (ok)
			g->attached[s] = false;
		return;
	}
	struct rdm_worker_stats before, after;
	rdm_worker_get_stats(S.work[w].w, &before);
	int rc = rdm_worker_attach(S.work[w].w, g->r, fs->b);
	rdm_worker_get_stats(S.work[w].w, &after);
	TRACE("  attach -> %d\n", rc);
	if (fs->worker != w || (g->worker >= 0 && g->worker != w)) {
		CHECK_RC(rc, -EINVAL);
		return;
	}
	if (g->worker < 0 && g->cfg.policy == RDM_POLICY_COALESCE &&
	    !(g->cfg.flags & RDM_REGION_ALLOW_WINDOWS) && !fs->caps.can_split) {
		CHECK_RC(rc, -EINVAL);
		return;
	}
	if (rc == -EINVAL) {
		/* Only the policy check may refuse a region already served by w. */
		CHECK(g->cfg.policy == RDM_POLICY_COALESCE && !(g->cfg.flags & RDM_REGION_ALLOW_WINDOWS) &&
		      !fs->caps.can_split);
		return;
	}
	/* Past the checks the worker is the region's applier, whatever the
	 * attach change's own result - except after a failed first attach. */
	bool first = g->worker < 0;
	g->worker = w;
	if (g->attached[s]) {
		CHECK_RC(rc, -EEXIST);
		return;
	}
	if (rc == 0) {
		g->attached[s] = true;
		g->ever_attached = true;
		return;
	}
	CHECK(map_error(g, rc));
	/* A failed first attach leaves the region as it was: it applies
	 * (and releases) on its own again, and has no worker - unless its
	 * undo failed an unmap twice: then that backend is marked failed and
	 * keeps what it could not unmap, which the region never releases. */
	if (first) {
		if (after.failed_backends != before.failed_backends) {
			g->pinned = true;
			mark_leaky(g);
		}
		g->worker = -1;
	}
}

static void op_inject(struct in *in, int s)
{
	uint8_t m = u8(in);
	enum rdm_sim_call kind = m & 1 ? RDM_SIM_CALL_UNMAP : RDM_SIM_CALL_MAP;
	if (m & 2)
		kind = RDM_SIM_CALL_ANY;
	TRACE("  inject sim %d kind %d call %d error %d\n", s, (int)kind, 1 + (m >> 2) % 6,
	      inject_errs[(m >> 5) % 3]);
	int rc = rdm_sim_inject(S.sim[s].b, kind, 1 + (m >> 2) % 6, inject_errs[(m >> 5) % 3]);
	/* At most 64 armed at a time (-ENOSPC): possible only once 64 were
	 * armed on this sim (consumed ones are not known here). */
	if (rc == -ENOSPC && S.sim[s].armed >= 64)
		return;
	CHECK_RC(rc, 0);
	S.sim[s].armed++;
}

static struct pend *new_pend(int i, uint32_t kind, uint64_t off, uint64_t len)
{
	struct pend *p = &S.pend[S.npend];
	memset(p, 0, sizeof(*p));
	p->reg = i;
	p->kind = kind;
	p->s = kind == RDM_CHANGE_DISCARD_ALL ? 0 : off / S.reg[i].bs;
	p->e = kind == RDM_CHANGE_DISCARD_ALL ? S.reg[i].nb : (off + len) / S.reg[i].bs;
	return p;
}

static void op_async(struct in *in)
{
	if (!S.prod)
		CHECK_RC(rdm_producer_create(&S.prod), 0);
	unsigned n = 1 + u8(in) % 4;
	if (S.npend + n > MAXPEND)
		return;
	struct rdm_change ch[4];
	uint64_t tickets[4];
	int want = 0;
	bool have_worker = true;
	for (unsigned k = 0; k < n; k++) {
		uint8_t m = u8(in);
		int i = m % NREG;
		struct freg *g = &S.reg[i];
		if (!g->r)
			return;
		memset(&ch[k], 0, sizeof(ch[k]));
		ch[k].region = g->r;
		ch[k].kind = 1 + (m >> 2) % 3;
		if (ch[k].kind != RDM_CHANGE_DISCARD_ALL) {
			pick_range(g, in, &ch[k].offset, &ch[k].length);
			if (!want)
				want = expect_range(g, ch[k].offset, ch[k].length);
		}
		if (m & 0x80) {
			ch[k].done = done_cb;
			ch[k].opaque = &S.pend[S.npend + k];
		}
		have_worker &= g->worker >= 0;
	}
	/* Filled before the call: a callback may run before it returns. */
	for (unsigned k = 0; k < n; k++) {
		int i = -1;
		for (int j = 0; j < NREG; j++)
			if (S.reg[j].r == ch[k].region)
				i = j;
		struct pend *p = new_pend(i, ch[k].kind, ch[k].offset, ch[k].length);
		p->cb = ch[k].done != NULL;
		S.npend++;
		/* Releases of asynchronous changes are not tracked block by
		 * block (the model learns their order only at settle()). */
		S.reg[i].release_unknown = true;
	}
	int rc = rdm_producer_submit(S.prod, ch, n, tickets);
	if (rc != 0) {
		S.npend -= n; /* all or nothing: none was submitted */
		/* A region without a worker has no asynchronous calls: any
		 * error (which one first is not specified). */
		if (want && have_worker)
			CHECK_RC(rc, want);
		else if (have_worker)
			CHECK(rc == -EAGAIN);
		CHECK(rdm_last_error()[0]);
		return;
	}
	CHECK(want == 0 && have_worker);
	for (unsigned k = 0; k < n; k++)
		S.pend[S.npend - n + k].ticket = tickets[k];
}

static void op_poll(struct in *in, bool wait)
{
	uint8_t sel = u8(in), idx = u8(in);
	if (!S.prod)
		return;
	if (S.npend == 0 || (sel & 3) == 0) {
		/* A ticket that is not outstanding: -EINVAL. */
		if (!S.have_consumed)
			return;
		for (unsigned k = 0; k < S.npend; k++)
			if (!S.pend[k].cb && S.pend[k].ticket == S.consumed_ticket)
				return;
		int res;
		CHECK_RC(wait ? rdm_producer_wait(S.prod, S.consumed_ticket, &res)
			      : rdm_producer_poll(S.prod, S.consumed_ticket, &res), -EINVAL);
		return;
	}
	struct pend *p = &S.pend[idx % S.npend];
	if (p->cb || p->known)
		return;
	int res = 0;
	int rc = wait ? rdm_producer_wait(S.prod, p->ticket, &res)
		      : rdm_producer_poll(S.prod, p->ticket, &res);
	if (!wait && rc == -EINPROGRESS)
		return;
	CHECK_RC(rc, 0);
	p->known = true;
	p->result = res;
	S.consumed_ticket = p->ticket;
	S.have_consumed = true;
}

/* NULL handles and callbacks: -EINVAL, false or 0, never a crash. */
static void op_null_handles(int i)
{
	struct rdm_listener l = { .ops = &lis_ops, .length = PAGE };
	struct rdm_region *r = S.reg[i].r;

	CHECK_RC(rdm_populate(NULL, 0, PAGE), -EINVAL);
	CHECK_RC(rdm_discard(NULL, 0, PAGE), -EINVAL);
	CHECK_RC(rdm_discard_all(NULL), -EINVAL);
	CHECK_RC(rdm_listener_register(NULL, &l), -EINVAL);
	CHECK_RC(rdm_listener_unregister(NULL, &l), -EINVAL);
	CHECK_RC(rdm_region_destroy(NULL), -EINVAL);
	CHECK(!rdm_is_populated(NULL, 0, PAGE) && !rdm_is_discarded(NULL, 0, PAGE));
	CHECK(rdm_populated_bytes(NULL, 0, PAGE) == 0);
	CHECK(rdm_region_granularity(NULL) == 0 && rdm_region_size(NULL) == 0);
	struct rdm_region_config cfg_out = { .struct_size = sizeof(cfg_out) };
	CHECK_RC(rdm_region_get_config(NULL, &cfg_out), -EINVAL);
	CHECK_RC(rdm_region_get_config(r, NULL), -EINVAL);
	CHECK_RC(rdm_replay_populated(NULL, 0, PAGE, run_cb, NULL), -EINVAL);
	CHECK_RC(rdm_worker_attach(NULL, r, S.sim[0].b), -EINVAL);
	CHECK_RC(rdm_worker_detach(NULL, r, S.sim[0].b), -EINVAL);
	CHECK_RC(rdm_worker_destroy(NULL), -EINVAL);
	if (r) {
		CHECK_RC(rdm_replay_discarded(r, 0, PAGE, NULL, NULL), -EINVAL);
		CHECK_RC(rdm_listener_register(r, NULL), -EINVAL);
		CHECK_RC(rdm_listener_unregister(r, NULL), -EINVAL);
		struct rdm_listener_ops half = { lis_populate, NULL };
		l.ops = &half;
		CHECK_RC(rdm_listener_register(r, &l), -EINVAL);
	}
	CHECK(rdm_last_error()[0] != '\0');
}

static void teardown(void)
{
	settle();
	for (int i = 0; i < NREG; i++)
		op_region_destroy(i);
	for (int w = 0; w < NWORK; w++)
		op_worker_destroy(w);
	if (S.prod)
		rdm_producer_destroy(S.prod);
	for (int s = 0; s < NSIM; s++)
		rdm_backend_destroy(S.sim[s].b);
	memset(&S, 0, sizeof(S));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct in in = { data, size, 0 };

	if (tracing < 0)
		tracing = getenv("RDM_FUZZ_TRACE") != NULL;
	memset(&S, 0, sizeof(S));
	rng_state = 0x9e3779b97f4a7c15ull ^ size;
	for (int s = 0; s < NSIM; s++) {
		uint8_t m = u8(&in);
		struct rdm_sim_config c = { .struct_size = sizeof(c) };
		c.semantics = m & 1 ? RDM_SEM_IOMMUFD : RDM_SEM_TYPE1V2;
		c.can_split = (m & 2) != 0;
		c.limit = m & 4 ? 2 + (m >> 3) % 32 : 0;
		c.call_ns = 1;
		c.page_ns = 1;
		CHECK_RC(rdm_backend_sim_create(&c, &S.sim[s].b), 0);
		rdm_backend_get_caps(S.sim[s].b, &S.sim[s].caps);
		S.sim[s].worker = -1;
	}
	for (int i = 0; i < NREG; i++)
		S.reg[i].worker = -1;

	for (int steps = 0; steps < 200 && in.i < in.n; steps++) {
		uint8_t op = u8(&in);
		uint8_t arg = u8(&in);
		int i = arg % NREG, w = (arg >> 2) % NWORK, s = (arg >> 3) % NSIM;
		bool async = op % 16 == 10;
		TRACE("step %d: op %d region %d worker %d sim %d (arg %#x)\n", steps, op % 16, i, w, s, arg);
		if (!async && op % 16 != 11)
			settle();
		switch (op % 16) {
		case 0: op_region_create(&in, i); break;
		case 1: case 2: op_change(&in, i, RDM_CHANGE_POPULATE); break;
		case 3: case 4: op_change(&in, i, RDM_CHANGE_DISCARD); break;
		case 5: op_change(&in, i, RDM_CHANGE_DISCARD_ALL); break;
		case 6: op_listener(&in, i); break;
		case 7: op_worker_create(&in, w); break;
		case 8: op_add_backend(&in, w, s); break;
		case 9: op_attach(i, w, s, arg & 0x80); break;
		case 10: op_async(&in); break;
		case 11: op_poll(&in, arg & 0x80); break;
		case 12: op_inject(&in, s); break;
		case 13: op_region_destroy(i); break;
		case 14: op_worker_destroy(w); break;
		case 15:
			if (arg & 0x80) {
				op_null_handles(i);
				break;
			}
			if (S.prod) {
				rdm_producer_destroy(S.prod);
				S.prod = NULL;
				S.have_consumed = false;
			}
			break;
		}
		if (!async && op % 16 != 11) {
			settle();
			check_all();
		}
	}
	teardown();
	return 0;
}
