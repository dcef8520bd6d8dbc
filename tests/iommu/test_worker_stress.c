/* test_worker_stress.c - several producers, regions and policies through one worker; I1-I6 after every batch. */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <time.h>

#include <rdm/rdm.h>

#include "tests/check.h"

#define NREG 3
#define NPROD 3
#define BS (64u << 10)
#define NB 1536u /* blocks per region; each producer owns NB / NPROD */
#define MAXLEN 24u

#if defined(RDM_TSAN) || defined(__SANITIZE_ADDRESS__)
#define DEFAULT_OPS 3000
#else
#define DEFAULT_OPS 40000
#endif

struct rstate {
	struct rdm_region *r;
	uint64_t iova;
	bool strict;
	/* Worker-thread-only bookkeeping (listener and release callbacks). */
	unsigned char seen_pop[NB]; /* populated at a batch end, not released since */
	unsigned char listener_pop[NB];
	atomic_bool attached; /* set once the worker serves the region */
	struct rdm_listener l;
};

static struct rstate R[NREG];
static struct rdm_backend *sim;
static struct rdm_worker *worker;
static uint32_t policy;
static atomic_bool faults;
static uint64_t seed;
static unsigned ops_per_producer;
static char *host;
static atomic_uint invariant_failures;
static atomic_ullong batches;
static uint64_t inject_rng;

static uint64_t rnd(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static void bad(const char *what, unsigned reg, uint64_t blk)
{
	fprintf(stderr, "invariant violated: %s (policy %u faults %d region %u block %" PRIu64 ")\n", what, policy, faults, reg, blk);
	atomic_fetch_add(&invariant_failures, 1);
}

static int lpop(struct rdm_listener *l, uint64_t off, uint64_t len)
{
	struct rstate *rs = l->opaque;

	for (uint64_t b = off / BS; b < (off + len) / BS; b++)
		rs->listener_pop[b] = 1;
	return 0;
}

static void ldisc(struct rdm_listener *l, uint64_t off, uint64_t len)
{
	struct rstate *rs = l->opaque;

	for (uint64_t b = off / BS; b < (off + len) / BS; b++)
		rs->listener_pop[b] = 0;
}

static const struct rdm_listener_ops lops = {lpop, ldisc};

static void on_release(void *opaque, uint64_t off, uint64_t len)
{
	struct rstate *rs = opaque;
	unsigned reg = (unsigned)(rs - R);

	/* I2: nothing released is mapped, or populated. */
	if (!rdm_sim_is_unmapped(sim, rs->iova + off, len))
		bad("released range still mapped", reg, off / BS);
	if (!rdm_is_discarded(rs->r, off, len))
		bad("released range populated", reg, off / BS);
	for (uint64_t b = off / BS; b < (off + len) / BS; b++)
		rs->seen_pop[b] = 0;
}

struct check_ctx {
	struct rstate *rs;
	unsigned reg;
};

static int check_populated_run(void *opaque, uint64_t off, uint64_t len)
{
	struct check_ctx *c = opaque;

	/* I1: mapped, to the region's host memory. */
	if (!rdm_sim_is_mapped(sim, c->rs->iova + off, len, true, (uint64_t)(uintptr_t)host + off))
		bad("populated range not mapped to its memory", c->reg, off / BS);
	return 0;
}

static void on_batch(void *opaque, uint64_t batch_no, uint32_t n)
{
	struct rdm_backend_stats st;
	struct rdm_worker_stats ws;

	(void)opaque, (void)batch_no, (void)n;
	atomic_fetch_add(&batches, 1);
	rdm_worker_get_stats(worker, &ws);
	rdm_backend_get_stats(sim, &st);
	/* I4: the planner never issued a call the kernel rejects. */
	if (!atomic_load(&faults) && st.failed_calls)
		bad("a call was rejected by the kernel rules", 0, 0);
	for (unsigned i = 0; i < NREG; i++) {
		struct check_ctx c = {&R[i], i};

		if (!atomic_load(&R[i].attached))
			continue;
		if (ws.failed_backends == 0)
			rdm_replay_populated(R[i].r, 0, (uint64_t)NB * BS, check_populated_run, &c);
		for (uint64_t b = 0; b < NB; b++) {
			bool pop = rdm_is_populated(R[i].r, b * BS, BS);

			/* The listener saw what readers see. */
			if (pop != (bool)R[i].listener_pop[b])
				bad("listener disagrees with the region state", i, b);
			if (pop) {
				R[i].seen_pop[b] = 1;
				continue;
			}
			if (!R[i].seen_pop[b] || ws.failed_backends)
				continue;
			/* Discarded since a batch end that saw it populated, and not
			 * released: I2 allows that only with defer, and only while
			 * the block stays mapped (deferred). */
			if (policy != RDM_POLICY_DEFER)
				bad("completed discard not released", i, b);
			else if (!rdm_sim_is_mapped(sim, R[i].iova + b * BS, BS, true,
						    (uint64_t)(uintptr_t)host + b * BS))
				bad("deferred block neither released nor mapped", i, b);
		}
	}
	/* Faults: arm a failing map now and then (the worker is the sim's only
	 * user, and this runs on it). */
	if (faults && rnd(&inject_rng) % 7 == 0) {
		static const int errs[] = {-ENOMEM, -EFAULT, -ENOSPC};

		rdm_sim_inject(sim, RDM_SIM_CALL_MAP, 1 + rnd(&inject_rng) % 3, errs[rnd(&inject_rng) % 3]);
	}
	/* And a single failing unmap now and then: the worker retries it once,
	 * so nothing may change for anyone. */
	if (faults && rnd(&inject_rng) % 11 == 0)
		rdm_sim_inject(sim, RDM_SIM_CALL_UNMAP, 1, -EFAULT);
}

struct prod_arg {
	unsigned id;
	uint64_t seed;
	unsigned char oracle[NREG][NB]; /* this producer's blocks only */
	unsigned long ok, failed;
};

struct inflight {
	uint64_t ticket;
	int expect;
	unsigned reg;
	uint64_t first, len;
	bool populate;
};

static int predict(struct prod_arg *a, unsigned reg, uint64_t first, uint64_t len, bool populate)
{
	if (!R[reg].strict)
		return 0;
	for (uint64_t b = first; b < first + len; b++)
		if (a->oracle[reg][b] == populate)
			return populate ? -EEXIST : -ENOENT;
	return 0;
}

static void settle(struct prod_arg *a, const struct inflight *f, int got)
{
	bool fault_ok = faults && f->populate &&
			(got == -ENOMEM || got == -EFAULT || got == -ENOSPC || got == -EIO);

	if (got != f->expect && !fault_ok) {
		fprintf(stderr, "producer %u: %s region %u blocks %" PRIu64 "+%" PRIu64 ": got %d, expected %d (%s)\n",
			a->id, f->populate ? "populate" : "discard", f->reg, f->first, f->len, got, f->expect,
			rdm_last_error());
		atomic_fetch_add(&invariant_failures, 1);
	}
	if (got == 0) {
		/* Without faults the oracle was updated at submission. */
		if (atomic_load(&faults))
			for (uint64_t b = f->first; b < f->first + f->len; b++)
				a->oracle[f->reg][b] = f->populate;
		a->ok++;
	} else {
		a->failed++;
	}
}

/* Wait for every change in flight, in submission order, and check each. */
static void settle_all(struct prod_arg *a, struct rdm_producer *p, struct inflight *fl, unsigned *nfl)
{
	for (unsigned k = 0; k < *nfl; k++) {
		int res;

		REQUIRE(rdm_producer_wait(p, fl[k].ticket, &res) == 0);
		settle(a, &fl[k], res);
	}
	*nfl = 0;
}

static void *producer_main(void *arg)
{
	struct prod_arg *a = arg;
	struct rdm_producer *p;
	struct inflight fl[16];
	unsigned nfl = 0;
	uint64_t s = a->seed;
	uint64_t own0 = a->id * (NB / NPROD), own = NB / NPROD;

	REQUIRE(rdm_producer_create(&p) == 0);
	for (unsigned i = 0; i < ops_per_producer; i++) {
		struct inflight f;
		unsigned mode = (unsigned)(rnd(&s) % 4);

		f.reg = (unsigned)(rnd(&s) % NREG);
		f.len = 1 + rnd(&s) % MAXLEN;
		f.first = own0 + rnd(&s) % (own - f.len);
		f.populate = rnd(&s) % 2;
		/* With faults a populate may fail unpredictably, so outstanding
		 * changes touching the same blocks are settled first; without,
		 * the producer's own order decides and the oracle predicts
		 * every result at submission. */
		if (mode != 0 && atomic_load(&faults)) {
			bool clash = false;

			for (unsigned k = 0; k < nfl; k++)
				clash |= fl[k].reg == f.reg && fl[k].first < f.first + f.len &&
					 f.first < fl[k].first + fl[k].len;
			if (clash || nfl == 16) {
				settle_all(a, p, fl, &nfl);
			}
		}
		if (mode != 0 && nfl >= 14) {
			settle_all(a, p, fl, &nfl);
		}
		f.expect = predict(a, f.reg, f.first, f.len, f.populate);
		if (mode == 1 && !atomic_load(&faults) && rnd(&s) % 4 == 0) {
			/* A populate and its exact undo in one burst: one batch, so
			 * the worker may drop both (superseded); results alike. */
			struct rdm_change c[2] = {
				{.region = R[f.reg].r, .kind = RDM_CHANGE_POPULATE, .offset = f.first * BS, .length = f.len * BS},
				{.region = R[f.reg].r, .kind = RDM_CHANGE_DISCARD, .offset = f.first * BS, .length = f.len * BS},
			};
			struct inflight g = f;
			unsigned char orig[MAXLEN];
			uint64_t t[2];

			memcpy(orig, &a->oracle[f.reg][f.first], f.len);

			f.populate = true;
			f.expect = predict(a, f.reg, f.first, f.len, true);
			if (f.expect == 0)
				for (uint64_t b = f.first; b < f.first + f.len; b++)
					a->oracle[f.reg][b] = 1;
			g.populate = false;
			g.expect = predict(a, g.reg, g.first, g.len, false);
			if (g.expect == 0)
				for (uint64_t b = g.first; b < g.first + g.len; b++)
					a->oracle[g.reg][b] = 0;
			int err = rdm_producer_submit(p, c, 2, t);

			REQUIRE(err == 0 || err == -EAGAIN);
			if (err) {
				/* Nothing was submitted: undo the predictions. */
				memcpy(&a->oracle[f.reg][f.first], orig, f.len);
			}
			if (err == 0) {
				f.ticket = t[0];
				g.ticket = t[1];
				fl[nfl++] = f;
				fl[nfl++] = g;
			}
			continue;
		}
		if (mode == 0) {
			/* Synchronous, through the region API. */
			settle_all(a, p, fl, &nfl);
			f.expect = predict(a, f.reg, f.first, f.len, f.populate);
			int got = f.populate ? rdm_populate(R[f.reg].r, f.first * BS, f.len * BS)
					     : rdm_discard(R[f.reg].r, f.first * BS, f.len * BS);
			if (!atomic_load(&faults) && f.expect == 0)
				for (uint64_t b = f.first; b < f.first + f.len; b++)
					a->oracle[f.reg][b] = f.populate;
			settle(a, &f, got);
			continue;
		}
		int err = f.populate ? rdm_producer_populate(p, R[f.reg].r, f.first * BS, f.len * BS, &f.ticket)
				     : rdm_producer_discard(p, R[f.reg].r, f.first * BS, f.len * BS, &f.ticket);
		if (err == -EAGAIN) {
			i--;
			sched_yield();
			continue;
		}
		REQUIRE(err == 0);
		if (!atomic_load(&faults) && f.expect == 0)
			for (uint64_t b = f.first; b < f.first + f.len; b++)
				a->oracle[f.reg][b] = f.populate;
		fl[nfl++] = f;
	}
	settle_all(a, p, fl, &nfl);
	rdm_producer_destroy(p);
	return NULL;
}

static int run(uint32_t pol, bool with_faults, uint32_t flags, uint64_t defer_limit)
{
	struct rdm_sim_config sc = {.struct_size = sizeof(sc), .semantics = RDM_SEM_TYPE1V2,
				    .limit = RDM_SIM_UNLIMITED, .call_ns = 1};
	struct rdm_worker_config wc = {.struct_size = sizeof(wc), .on_batch = on_batch, .max_batch = 32};
	static struct prod_arg args[NPROD];
	pthread_t th[NPROD];
	struct rdm_backend_stats st;

	policy = pol;
	faults = false; /* armed only once every region is attached */
	inject_rng = seed | 1;
	memset(R, 0, sizeof(R));
	REQUIRE(rdm_backend_sim_create(&sc, &sim) == 0);
	REQUIRE(rdm_worker_create(&wc, &worker) == 0);
	REQUIRE(rdm_worker_add_backend(worker, sim, 0) == 0);
	for (unsigned i = 0; i < NREG; i++) {
		struct rdm_region_config rc = {.struct_size = sizeof(rc)};

		R[i].iova = (uint64_t)(i + 1) << 32;
		R[i].strict = i == 0;
		rc.flags = (R[i].strict ? RDM_REGION_STRICT : 0) | flags;
		rc.iova = R[i].iova;
		rc.size = (uint64_t)NB * BS;
		rc.block_size = BS;
		rc.host_addr = host;
		rc.release = on_release;
		rc.release_opaque = &R[i];
		rc.policy = pol;
		rc.defer_limit = defer_limit;
		REQUIRE(rdm_region_create(&rc, &R[i].r) == 0);
		R[i].l.ops = &lops;
		R[i].l.offset = 0;
		R[i].l.length = rc.size;
		R[i].l.opaque = &R[i];
		REQUIRE(rdm_listener_register(R[i].r, &R[i].l) == 0);
		/* Some state before attaching: attach maps it. */
		REQUIRE(rdm_populate(R[i].r, 0, 4 * BS) == 0);
		REQUIRE(rdm_worker_attach(worker, R[i].r, sim) == 0);
		atomic_store(&R[i].attached, true);
	}
	faults = with_faults;
	for (unsigned i = 0; i < NPROD; i++) {
		memset(&args[i], 0, sizeof(args[i]));
		args[i].id = i;
		args[i].seed = seed * 7919 + i + 1;
		/* Blocks 0..3 of every region were populated above (producer 0's). */
		if (i == 0)
			for (unsigned g = 0; g < NREG; g++)
				memset(args[i].oracle[g], 1, 4);
		REQUIRE(pthread_create(&th[i], NULL, producer_main, &args[i]) == 0);
	}
	for (unsigned i = 0; i < NPROD; i++)
		pthread_join(th[i], NULL);
	/* I6 and rollback: the region state is exactly what the producers
	 * were told succeeded. */
	for (unsigned g = 0; g < NREG; g++)
		for (unsigned i = 0; i < NPROD; i++)
			for (uint64_t b = i * (NB / NPROD); b < (i + 1) * (NB / NPROD); b++)
				if (rdm_is_populated(R[g].r, b * BS, BS) != (bool)args[i].oracle[g][b]) {
					bad("final state differs from the producers' oracle", g, b);
					break;
				}
	for (unsigned g = 0; g < NREG; g++) {
		CHECK(rdm_discard_all(R[g].r) == 0);
		CHECK(rdm_listener_unregister(R[g].r, &R[g].l) == 0);
	}
	rdm_backend_get_stats(sim, &st);
	struct rdm_worker_stats ws;

	rdm_worker_get_stats(worker, &ws);
	if (ws.failed_backends == 0) {
		CHECK(st.mappings == 0);
		for (unsigned g = 0; g < NREG; g++)
			for (uint64_t b = 0; b < NB; b++)
				if (R[g].seen_pop[b]) {
					bad("discarded block never released", g, b);
					break;
				}
	}
	printf("policy %u faults %d: %" PRIu64 " batches, %" PRIu64 " changes, %" PRIu64 " superseded, "
	       "%" PRIu64 " map + %" PRIu64 " unmap calls, remapped %" PRIu64 ", deferred peak %" PRIu64 "\n",
	       pol, with_faults, ws.batches, ws.changes, ws.superseded, st.map_calls, st.unmap_calls,
	       ws.remapped_bytes, ws.deferred_peak_bytes);
	for (unsigned g = 0; g < NREG; g++) {
		/* The batch hook must stop looking at it first. */
		atomic_store(&R[g].attached, false);
		CHECK(rdm_region_destroy(R[g].r) == 0);
	}
	CHECK(rdm_worker_destroy(worker) == 0);
	rdm_backend_destroy(sim);
	return 0;
}

int main(int argc, char **argv)
{
	const char *e = getenv("RDM_STRESS_SEED");

	seed = e ? strtoull(e, NULL, 0) : (uint64_t)time(NULL);
	e = getenv("RDM_STRESS_OPS");
	ops_per_producer = e ? (unsigned)strtoul(e, NULL, 0) : DEFAULT_OPS;
	if (argc > 1)
		seed = strtoull(argv[1], NULL, 0);
	setvbuf(stdout, NULL, _IONBF, 0);
	printf("seed %" PRIu64 " (RDM_STRESS_SEED), %u ops per producer\n", seed, ops_per_producer);
	host = aligned_alloc(4096, 4096); /* only addresses matter: the sim never touches memory */
	run(RDM_POLICY_BLOCK, false, 0, 0);
	run(RDM_POLICY_COALESCE, false, RDM_REGION_ALLOW_WINDOWS, 0);
	run(RDM_POLICY_DEFER, false, 0, 0);
	run(RDM_POLICY_DEFER, false, RDM_REGION_ALLOW_WINDOWS, 8 * BS);
	run(RDM_POLICY_BLOCK, true, 0, 0);
	run(RDM_POLICY_DEFER, true, 0, 0);
	free(host);
	if (atomic_load(&invariant_failures))
		fprintf(stderr, "%u invariant failures (seed %" PRIu64 ")\n", atomic_load(&invariant_failures), seed);
	return atomic_load(&invariant_failures) ? 1 : check_exit();
}
