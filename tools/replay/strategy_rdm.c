/* SPDX-License-Identifier: MIT */
/*
 * tools/replay/strategy_rdm.c - rdm's own map policies as replay strategies.
 *
 * Each entry drives the rdm library itself: create() makes an IOMMU worker
 * serving the given backend and an rdm region (the geometry, strict when the
 * workload is, the policy) attached to it; apply() submits the request
 * synchronously (rdm_populate / rdm_discard / rdm_discard_all), which returns
 * once the worker applied it, mapped or unmapped what it needs and released
 * what it may; stats() reports rdm's remapped and deferred bytes;
 * run_async() runs a workload with several producers submitting
 * asynchronously (the conversion storm's second run).
 *
 * Every region gets the run's defer budget (replay_geometry.defer_budget,
 * --defer-budget; 0 = the library's default): only rdm-defer acts on it.
 *
 * rdm-coalesce sets RDM_REGION_ALLOW_WINDOWS, so every window it opens is
 * counted as remapped bytes (on a split-capable kernel it opens none).
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <rdm/rdm.h>

#include "tools/replay/run.h"
#include "tools/replay/strategy.h"
#include "tools/replay/util.h"

struct rdm_state {
	struct rdm_worker *w;
	struct rdm_region *r;
	/* The worker thread's CPU clock (rdm_worker_get_thread()). */
	clockid_t wclk;
	/* The polling bound the worker reports (rdm_worker_get_config()),
	 * read once at create: it never changes, and stats() runs between
	 * requests. */
	uint32_t spin_us;
};

static int make(const struct replay_geometry *g, struct rdm_backend *b, uint32_t policy, uint32_t wflags,
		struct rdm_state *st)
{
	struct rdm_region_config rc = {.struct_size = sizeof(rc)};
	struct rdm_worker_config wc = {.struct_size = sizeof(wc), .spin_us = g->spin_us, .flags = wflags};
	pthread_t th;
	int err;

	rc.flags = (g->strict ? RDM_REGION_STRICT : 0) |
		   (policy == RDM_POLICY_COALESCE ? RDM_REGION_ALLOW_WINDOWS : 0);
	rc.iova = g->iova;
	rc.size = g->size;
	rc.block_size = g->block_size;
	rc.host_addr = (void *)(uintptr_t)g->host_addr;
	rc.policy = policy;
	rc.defer_budget = g->defer_budget; /* 0: the library's default */
	err = rdm_worker_create(&wc, &st->w);
	if (err)
		return err;
	struct rdm_worker_config used = {.struct_size = sizeof(used)};

	err = rdm_worker_get_thread(st->w, &th);
	if (!err && pthread_getcpuclockid(th, &st->wclk) != 0)
		err = -ESRCH;
	if (!err)
		err = rdm_worker_get_config(st->w, &used);
	st->spin_us = used.spin_us;
	if (err) {
		rdm_worker_destroy(st->w);
		return err;
	}
	err = rdm_worker_add_backend(st->w, b, 0);
	if (!err)
		err = rdm_region_create(&rc, &st->r);
	if (err) {
		rdm_worker_destroy(st->w);
		return err;
	}
	err = rdm_worker_attach(st->w, st->r, b);
	if (err) {
		rdm_region_destroy(st->r);
		rdm_worker_destroy(st->w);
		return err;
	}
	return 0;
}

static void unmake(struct rdm_state *st)
{
	rdm_region_destroy(st->r);
	rdm_worker_destroy(st->w);
}

static int create_policy(const struct replay_geometry *g, struct rdm_backend *b, void **state, uint32_t policy,
			 uint32_t wflags)
{
	struct rdm_state *st = calloc(1, sizeof(*st));
	int err;

	if (!st)
		return -ENOMEM;
	err = make(g, b, policy, wflags, st);
	if (err) {
		free(st);
		return err;
	}
	*state = st;
	return 0;
}

static int create_block(const struct replay_geometry *g, struct rdm_backend *b, void **state)
{
	return create_policy(g, b, state, RDM_POLICY_BLOCK, 0);
}

static int create_coalesce(const struct replay_geometry *g, struct rdm_backend *b, void **state)
{
	return create_policy(g, b, state, RDM_POLICY_COALESCE, 0);
}

static int create_defer(const struct replay_geometry *g, struct rdm_backend *b, void **state)
{
	return create_policy(g, b, state, RDM_POLICY_DEFER, 0);
}

/* The same policies with RDM_WORKER_CALLER_RUNS: a request that finds the
 * worker asleep runs the worker's pass on the replaying thread. */
static int create_block_cr(const struct replay_geometry *g, struct rdm_backend *b, void **state)
{
	return create_policy(g, b, state, RDM_POLICY_BLOCK, RDM_WORKER_CALLER_RUNS);
}

static int create_defer_cr(const struct replay_geometry *g, struct rdm_backend *b, void **state)
{
	return create_policy(g, b, state, RDM_POLICY_DEFER, RDM_WORKER_CALLER_RUNS);
}

static int apply(void *state, const struct replay_req *req)
{
	struct rdm_state *st = state;

	switch (req->op) {
	case REPLAY_POPULATE:
		return rdm_populate(st->r, req->offset, req->length);
	case REPLAY_DISCARD:
		return rdm_discard(st->r, req->offset, req->length);
	case REPLAY_DISCARD_ALL:
		return rdm_discard_all(st->r);
	default:
		return -EINVAL;
	}
}

static void stats(void *state, struct replay_strategy_stats *out)
{
	struct rdm_state *st = state;
	struct rdm_worker_stats ws;

	rdm_worker_get_stats(st->w, &ws);
	out->remapped_bytes = ws.remapped_bytes;
	out->deferred_bytes = ws.deferred_bytes;
	out->deferred_peak_bytes = ws.deferred_peak_bytes;
	out->spin_us = st->spin_us;
}

static int helper_cpu_ns(void *state, uint64_t *ns)
{
	struct rdm_state *st = state;

	return replay_clock_ns(st->wclk, ns);
}

static void destroy(void *state)
{
	unmake(state);
	free(state);
}

/* ---------------------------------------------- several async producers */

#define MAX_INFLIGHT 64

struct async_prod {
	pthread_t th;
	struct rdm_region *r;
	const struct replay_trace *t;
	uint64_t lo, hi;            /* the slice this producer owns */
	uint64_t *submit_ns;        /* per request of the trace (only ours used) */
	uint64_t *lat_ns;           /* filled by completions */
	_Atomic uint64_t completed; /* completions so far (worker -> producer) */
	uint64_t submitted;
	_Atomic uint64_t failed;
	int err;
};

struct async_done {
	struct async_prod *p;
	size_t i;
};

/* Runs on the worker thread. */
static void on_done(void *opaque, int result)
{
	struct async_done *d = opaque;
	struct async_prod *p = d->p;

	p->lat_ns[d->i] = replay_now_ns() - p->submit_ns[d->i];
	if (result)
		atomic_fetch_add_explicit(&p->failed, 1, memory_order_relaxed);
	/* Release: pairs with the producer's acquire; its lat_ns entry is
	 * written before the count that lets the producer read it. */
	atomic_fetch_add_explicit(&p->completed, 1, memory_order_release);
}

static void *async_main(void *arg)
{
	struct async_prod *p = arg;
	struct rdm_producer *prod;
	struct async_done *done = calloc(p->t->n, sizeof(*done));

	p->err = done ? rdm_producer_create(&prod) : -ENOMEM;
	if (p->err) {
		free(done);
		return NULL;
	}
	for (size_t i = 0; i < p->t->n; i++) {
		const struct replay_req *q = &p->t->reqs[i];
		struct rdm_change c = {.region = p->r, .offset = q->offset, .length = q->length, .done = on_done};

		if (q->op == REPLAY_DISCARD_ALL || q->offset < p->lo || q->offset >= p->hi)
			continue;
		c.kind = q->op == REPLAY_POPULATE ? RDM_CHANGE_POPULATE : RDM_CHANGE_DISCARD;
		done[i].p = p;
		done[i].i = i;
		c.opaque = &done[i];
		/* Acquire: pairs with the release in on_done(). */
		while (p->submitted - atomic_load_explicit(&p->completed, memory_order_acquire) >= MAX_INFLIGHT)
			sched_yield();
		p->submit_ns[i] = replay_now_ns();
		int err;

		while ((err = rdm_producer_submit(prod, &c, 1, NULL)) == -EAGAIN)
			sched_yield();
		if (err) {
			p->err = err;
			break;
		}
		p->submitted++;
	}
	while (atomic_load_explicit(&p->completed, memory_order_acquire) < p->submitted)
		sched_yield();
	rdm_producer_destroy(prod);
	free(done);
	return NULL;
}

static int run_async_policy(const struct replay_geometry *g, struct rdm_backend *b, const struct replay_trace *t,
			    unsigned producers, struct replay_async_result *out, uint32_t policy)
{
	struct rdm_state st;
	struct async_prod *ps = calloc(producers, sizeof(*ps));
	uint64_t *submit_ns = calloc(t->n, sizeof(uint64_t));
	uint64_t *lat_ns = calloc(t->n, sizeof(uint64_t));
	uint64_t slice = g->size / producers, t0, t1;
	int err = 0;

	if (!ps || !submit_ns || !lat_ns || producers == 0 || slice % g->block_size) {
		err = !producers || (slice % g->block_size) ? -EINVAL : -ENOMEM;
		goto out;
	}
	err = make(g, b, policy, 0, &st);
	if (err)
		goto out;
	t0 = replay_now_ns();
	for (unsigned i = 0; i < producers; i++) {
		ps[i].r = st.r;
		ps[i].t = t;
		ps[i].lo = i * slice;
		ps[i].hi = i + 1 == producers ? g->size : (i + 1) * slice;
		ps[i].submit_ns = submit_ns;
		ps[i].lat_ns = lat_ns;
		if (pthread_create(&ps[i].th, NULL, async_main, &ps[i])) {
			err = -EAGAIN;
			producers = i;
			break;
		}
	}
	for (unsigned i = 0; i < producers; i++)
		pthread_join(ps[i].th, NULL);
	t1 = replay_now_ns();

	struct rdm_backend_stats bs;
	struct rdm_worker_stats ws;
	size_t n = 0;

	rdm_backend_get_stats(b, &bs);
	rdm_worker_get_stats(st.w, &ws);
	out->producers = producers;
	for (unsigned i = 0; i < producers; i++) {
		out->requests += ps[i].submitted;
		out->failed += atomic_load_explicit(&ps[i].failed, memory_order_relaxed);
		if (ps[i].err && !err)
			err = ps[i].err;
	}
	/* Latencies of the requests submitted (in trace order, any slice). */
	for (size_t i = 0; i < t->n; i++)
		if (submit_ns[i])
			lat_ns[n++] = lat_ns[i];
	out->calls = bs.map_calls + bs.unmap_calls;
	out->wall_ns = t1 - t0;
	out->lat_p50_ns = replay_quantile(lat_ns, n, 0.50);
	out->lat_p99_ns = replay_quantile(lat_ns, n, 0.99);
	out->peak_mappings = bs.peak_mappings;
	out->remapped_bytes = ws.remapped_bytes;
	out->deferred_peak_bytes = ws.deferred_peak_bytes;
	unmake(&st);
out:
	free(ps);
	free(submit_ns);
	free(lat_ns);
	return err;
}

static int async_block(const struct replay_geometry *g, struct rdm_backend *b, const struct replay_trace *t,
		       unsigned producers, struct replay_async_result *out)
{
	return run_async_policy(g, b, t, producers, out, RDM_POLICY_BLOCK);
}

static int async_coalesce(const struct replay_geometry *g, struct rdm_backend *b, const struct replay_trace *t,
			  unsigned producers, struct replay_async_result *out)
{
	return run_async_policy(g, b, t, producers, out, RDM_POLICY_COALESCE);
}

static int async_defer(const struct replay_geometry *g, struct rdm_backend *b, const struct replay_trace *t,
		       unsigned producers, struct replay_async_result *out)
{
	return run_async_policy(g, b, t, producers, out, RDM_POLICY_DEFER);
}

static const struct replay_strategy rdm_block = {
	.name = "rdm-block",
	.help = "rdm, one mapping per block (or discard unit): QEMU's calls, never a window",
	.create = create_block,
	.apply = apply,
	.stats = stats,
	.helper_cpu_ns = helper_cpu_ns,
	.destroy = destroy,
	.run_async = async_block,
};

static const struct replay_strategy rdm_coalesce = {
	.name = "rdm-coalesce",
	.help = "rdm, large mappings; a bisecting discard remaps the survivors (windows counted)",
	.create = create_coalesce,
	.apply = apply,
	.stats = stats,
	.helper_cpu_ns = helper_cpu_ns,
	.destroy = destroy,
	.run_async = async_coalesce,
};

static const struct replay_strategy rdm_defer = {
	.name = "rdm-defer",
	.help = "rdm, large mappings, zero windows; bisected memory is released when its mapping goes",
	.create = create_defer,
	.apply = apply,
	.stats = stats,
	.defers = true,
	.helper_cpu_ns = helper_cpu_ns,
	.destroy = destroy,
	.run_async = async_defer,
};

/* Asynchronous producers never run passes themselves: no run_async (it
 * would repeat rdm-block's and rdm-defer's rows). */
static const struct replay_strategy rdm_block_cr = {
	.name = "rdm-block-cr",
	.help = "rdm-block, with RDM_WORKER_CALLER_RUNS: a request that finds the worker asleep runs its pass",
	.create = create_block_cr,
	.apply = apply,
	.stats = stats,
	.helper_cpu_ns = helper_cpu_ns,
	.destroy = destroy,
};

static const struct replay_strategy rdm_defer_cr = {
	.name = "rdm-defer-cr",
	.help = "rdm-defer, with RDM_WORKER_CALLER_RUNS: a request that finds the worker asleep runs its pass",
	.create = create_defer_cr,
	.apply = apply,
	.stats = stats,
	.defers = true,
	.helper_cpu_ns = helper_cpu_ns,
	.destroy = destroy,
};

const struct replay_strategy *const replay_rdm_strategies[] = {
	&rdm_block,
	&rdm_coalesce,
	&rdm_defer,
	&rdm_block_cr,
	&rdm_defer_cr,
	NULL,
};
