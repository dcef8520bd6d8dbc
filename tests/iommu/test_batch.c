/* test_batch.c - batched application on the worker (DESIGN.md "The change
 * model"): random mixed batches against a one-change-at-a-time oracle
 * (results, listener calls, state, the versions published), readers that
 * must only see the oracle's states in order, and allocation failures in
 * the middle of a batch. */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <urcu-bp.h>

#include <rdm/rdm.h>
#include <rdm/region.h>
#include <rdm/worker.h>

#include "core/alloc.h"
#include "core/region_internal.h"
#include "tests/check.h"

#define MiB (1ull << 20)
#define BS (2 * MiB)
#define NB 64 /* blocks: a state is one uint64_t */
#define REGION (NB * BS)
#define MAXB 64 /* changes per batch (one rdm_producer_submit) */
#define MAXP 5  /* producers sharing the region (test_random's split batches) */
#define HIST (1u << 18)
#define REFUSE_ERR (-EPERM)

static char *host;

/* ---- listener call logs: the worker's and the oracle's ---- */

struct call {
	char who, what; /* 'a'/'b', 'p'/'d' */
	uint8_t s, e;   /* blocks */
};

#define MAXCALLS 4096
struct log {
	struct call c[MAXCALLS];
	unsigned n;
};

static struct log real_log, model_log;
static uint32_t salt; /* the refusal decision's seed, per batch */

/* Listener `who` refuses a populate of [s, e) when this says so: a
 * function of the call only, so the worker and the oracle agree. */
static bool refuses(char who, uint64_t s, uint64_t e)
{
	uint32_t h = (uint32_t)(s * 2654435761u) ^ (uint32_t)(e * 40503u) ^ salt ^ (uint32_t)who;

	h ^= h >> 13;
	h *= 0x5bd1e995u;
	h ^= h >> 15;
	return salt != 0 && h % 6 == 0;
}

static void log_call(struct log *lg, char who, char what, uint64_t s, uint64_t e)
{
	REQUIRE(lg->n < MAXCALLS);
	lg->c[lg->n++] = (struct call){ .who = who, .what = what, .s = (uint8_t)s, .e = (uint8_t)e };
}

struct tl {
	struct rdm_listener l;
	char who;
};

static int tl_populate(struct rdm_listener *l, uint64_t off, uint64_t len)
{
	struct tl *t = (struct tl *)l;

	log_call(&real_log, t->who, 'p', off / BS, (off + len) / BS);
	if (!refuses(t->who, off / BS, (off + len) / BS))
		return 0;
	/* Linger, so that a reader would catch a refused populate made
	 * visible too early. */
	for (int i = 0; i < 20; i++)
		sched_yield();
	return REFUSE_ERR;
}

static void tl_discard(struct rdm_listener *l, uint64_t off, uint64_t len)
{
	struct tl *t = (struct tl *)l;

	log_call(&real_log, t->who, 'd', off / BS, (off + len) / BS);
}

static const struct rdm_listener_ops tl_ops = { .populate = tl_populate, .discard = tl_discard };

/* ---- the oracle: one change at a time on a bitmap ---- */

static uint64_t mask(uint64_t s, uint64_t e)
{
	return (e - s == 64 ? ~0ull : ((1ull << (e - s)) - 1)) << s;
}

/* The runs of `val` blocks of state st inside [s, e), told to who. Returns
 * the block a refusal happened at (e if none). */
static uint64_t tell(char who, char what, uint64_t st, bool val, uint64_t s, uint64_t e, bool may_refuse)
{
	uint64_t b = s;

	while (b < e) {
		uint64_t rs = b, re;

		while (rs < e && (((st >> rs) & 1) != 0) != val)
			rs++;
		if (rs == e)
			break;
		re = rs;
		while (re < e && (((st >> re) & 1) != 0) == val)
			re++;
		log_call(&model_log, who, what, rs, re);
		if (may_refuse && refuses(who, rs, re))
			return rs;
		b = re;
	}
	return e;
}

/* Tell `who` a discard of the `val` runs of st inside [s, stop). */
static void untell(char who, uint64_t st, bool val, uint64_t s, uint64_t stop)
{
	if (stop > s)
		tell(who, 'd', st, val, s, stop, false);
}

struct chg {
	uint32_t kind;
	uint64_t s, e;
};

/* One change; returns its result and updates *st and the counts of
 * versions that the batch rule publishes (*pending: populates accepted since
 * the last version). */
static int model_apply(uint64_t *st, const struct chg *c, bool strict, uint64_t *versions, bool *pending)
{
	uint64_t s = c->s, e = c->e, m = mask(s, e);

	if (c->kind == RDM_CHANGE_POPULATE) {
		uint64_t stop;

		if (strict && (*st & m) != 0)
			return -EEXIST;
		if ((*st & m) == m)
			return 0;
		stop = tell('a', 'p', *st, false, s, e, true);
		if (stop < e) {
			untell('a', *st, false, s, stop);
			return REFUSE_ERR;
		}
		stop = tell('b', 'p', *st, false, s, e, true);
		if (stop < e) {
			untell('b', *st, false, s, stop);
			untell('a', *st, false, s, e);
			return REFUSE_ERR;
		}
		*st |= m;
		*pending = true;
		return 0;
	}
	if (c->kind == RDM_CHANGE_DISCARD_ALL) {
		s = 0;
		e = NB;
		m = ~0ull;
	} else if (strict && (*st & m) != m) {
		return -ENOENT;
	}
	if ((*st & m) == 0)
		return 0;
	tell('a', 'd', *st, true, s, e, false);
	tell('b', 'd', *st, true, s, e, false);
	*st &= ~m;
	(*versions)++;
	*pending = false;
	return 0;
}

/* The worker's superseding rule (iommu/worker.c find_cancelling_discard):
 * a populate whose exact range a later discard of the batch removes, with
 * nothing overlapping in between and all its blocks discarded when it is
 * reached. */
static bool overlap(const struct chg *a, const struct chg *b)
{
	if (a->kind == RDM_CHANGE_DISCARD_ALL || b->kind == RDM_CHANGE_DISCARD_ALL)
		return true;
	return a->s < b->e && b->s < a->e;
}

/* ---- readers: every state seen must be an oracle state, in order ---- */

static uint64_t hist[HIST];
static atomic_uint hist_n;
static atomic_bool stop_readers;
static struct rdm_region *reader_region;
static atomic_uint reader_errors;
static atomic_ulong reader_reads;

static int note_run(void *opaque, uint64_t off, uint64_t len)
{
	*(uint64_t *)opaque |= mask(off / BS, (off + len) / BS);
	return 0;
}

static void *reader(void *arg)
{
	unsigned at = 0;

	(void)arg;
	/* Relaxed: a stop flag only. */
	while (!atomic_load_explicit(&stop_readers, memory_order_relaxed)) {
		uint64_t st = 0;
		unsigned n;

		/* One replay answers from one version (DESIGN.md). */
		if (rdm_replay_populated(reader_region, 0, REGION, note_run, &st) != 0)
			break;
		/* Acquire: pairs with the release in push_hist(); the states up to
		 * n are written. Loaded after the read, so the version read is one
		 * of them. */
		n = atomic_load_explicit(&hist_n, memory_order_acquire);
		while (at < n && hist[at] != st)
			at++;
		if (at == n) {
			fprintf(stderr, "reader: state %#llx is no oracle state after index %u\n",
				(unsigned long long)st, n);
			atomic_fetch_add(&reader_errors, 1);
			break;
		}
		atomic_fetch_add_explicit(&reader_reads, 1, memory_order_relaxed);
	}
	return NULL;
}

static void push_hist(uint64_t st)
{
	unsigned n = atomic_load_explicit(&hist_n, memory_order_relaxed);

	REQUIRE(n < HIST);
	hist[n] = st;
	/* Release: pairs with the acquire in reader(). */
	atomic_store_explicit(&hist_n, n + 1, memory_order_release);
}

/* ---- the fixture ---- */

struct fixture {
	struct rdm_backend *sim;
	struct rdm_worker *w;
	struct rdm_region *r;
	struct rdm_producer *p;
	struct tl a, b;
	bool destroying; /* a destroy releases what is still populated */
};

/* Without listeners of its own the region has only the worker's tail, and a
 * batched discard is published at its first unmap or release, or at the
 * batch's end (core/region.c "Versions per batch"). */
static bool no_listeners;
static atomic_uint early_releases; /* releases of blocks readers saw populated */

/* The region's release callback (on the worker thread): readers must see
 * every released block discarded already (DESIGN.md "Visibility"). */
static void check_release(void *opaque, uint64_t off, uint64_t len)
{
	struct fixture *f = opaque;

	if (!f->destroying && !rdm_is_discarded(f->r, off, len))
		atomic_fetch_add(&early_releases, 1);
}

#define IOVA (1ull << 32)

/* The workers' configuration (NULL: the defaults). */
static const struct rdm_worker_config *worker_cfg;

/* A block-policy region of `size` bytes in blocks of bs at iova over host,
 * attached to the fixture's worker and sim. */
static struct rdm_region *attached_region(struct fixture *f, uint64_t iova, uint64_t size, uint64_t bs,
					  uint32_t flags, rdm_release_fn release)
{
	struct rdm_region_config rc = { .struct_size = sizeof(rc), .flags = flags, .iova = iova, .size = size,
					.block_size = bs, .host_addr = host, .policy = RDM_POLICY_BLOCK,
					.release = release, .release_opaque = f };
	struct rdm_region *r;

	REQUIRE(rdm_region_create(&rc, &r) == 0);
	REQUIRE(rdm_worker_attach(f->w, r, f->sim) == 0);
	return r;
}

/* A region of `size` bytes in blocks of bs at IOVA, block policy, attached
 * to a sim through a worker; listeners a and b unless no_listeners. */
static void setup_sized(struct fixture *f, bool strict, uint64_t bs, uint64_t size)
{
	*f = (struct fixture){ 0 };
	struct rdm_sim_config sc = { .struct_size = sizeof(sc), .semantics = RDM_SEM_TYPE1V2, .call_ns = 1 };

	REQUIRE(rdm_backend_sim_create(&sc, &f->sim) == 0);
	REQUIRE(rdm_worker_create(worker_cfg, &f->w) == 0);
	REQUIRE(rdm_worker_add_backend(f->w, f->sim, 0) == 0);
	f->r = attached_region(f, IOVA, size, bs, strict ? RDM_REGION_STRICT : 0, check_release);
	f->a = (struct tl){ .l = { .ops = &tl_ops, .offset = 0, .length = size }, .who = 'a' };
	f->b = (struct tl){ .l = { .ops = &tl_ops, .offset = 0, .length = size }, .who = 'b' };
	salt = 0;
	if (!no_listeners) {
		REQUIRE(rdm_listener_register(f->r, &f->a.l) == 0);
		REQUIRE(rdm_listener_register(f->r, &f->b.l) == 0);
	}
	REQUIRE(rdm_producer_create(&f->p) == 0);
}

static void setup(struct fixture *f, bool strict)
{
	setup_sized(f, strict, BS, REGION);
}

static void teardown(struct fixture *f)
{
	rdm_producer_destroy(f->p);
	CHECK(atomic_exchange(&early_releases, 0) == 0);
	f->destroying = true;
	CHECK(rdm_region_destroy(f->r) == 0);
	CHECK(rdm_worker_destroy(f->w) == 0);
	rdm_backend_destroy(f->sim);
}

static void random_batch(struct chg *c, unsigned n, uint64_t st, unsigned mix)
{
	for (unsigned i = 0; i < n; i++) {
		uint64_t s = (uint64_t)rand() % NB, len = 1 + (uint64_t)rand() % 6;
		unsigned k = (unsigned)rand() % 100;

		if (s + len > NB)
			len = NB - s;
		/* mix 0: mixed; 1: populates only; 2: discards only. */
		c[i].kind = mix == 1 ? RDM_CHANGE_POPULATE
			    : mix == 2 ? (k < 3 ? RDM_CHANGE_DISCARD_ALL : RDM_CHANGE_DISCARD)
			    : k < 2 ? RDM_CHANGE_DISCARD_ALL
			    : k < 55 ? RDM_CHANGE_POPULATE : RDM_CHANGE_DISCARD;
		c[i].s = s;
		c[i].e = s + len;
		/* Sometimes a discard of exactly an earlier populate's range, and
		 * sometimes a block of the current state, to hit superseding and
		 * strict successes. */
		if (c[i].kind == RDM_CHANGE_DISCARD && i > 0 && k % 4 == 0 &&
		    c[i - 1].kind == RDM_CHANGE_POPULATE) {
			c[i].s = c[i - 1].s;
			c[i].e = c[i - 1].e;
		} else if (c[i].kind == RDM_CHANGE_DISCARD && st != 0 && k % 3 == 0) {
			c[i].s = (uint64_t)__builtin_ctzll(st);
			c[i].e = c[i].s + 1;
		}
	}
}

/* Submit one batch through the producer (one ring publish: the worker
 * drains it whole) and wait for every ticket. */
static void run_real(struct fixture *f, const struct chg *c, unsigned n, int *res)
{
	struct rdm_change ch[MAXB] = { { 0 } };
	uint64_t t[MAXB];

	REQUIRE(n >= 1 && n <= MAXB);
	for (unsigned i = 0; i < n; i++)
		ch[i] = (struct rdm_change){ .region = f->r, .kind = c[i].kind, .offset = c[i].s * BS,
					     .length = (c[i].e - c[i].s) * BS };
	REQUIRE(rdm_producer_submit(f->p, ch, n, t) == 0);
	for (unsigned i = 0; i < n; i++)
		REQUIRE(rdm_producer_wait(f->p, t[i], &res[i]) == 0);
}

/*
 * The same batch from several producers sharing the region, change i from
 * producer i % k, all in one worker batch: each producer's changes are one
 * run in the region's numbering, drained one link after another, so the
 * worker must merge k runs into the order the numbers give (worker.c,
 * order_batch()). One batch for certain: the worker is held in its on_batch
 * hook, at the end of a batch of one change to a second region (the gate),
 * until every change is in the rings; the hook then checks that the next
 * batch holds all n.
 */
static atomic_int gate;            /* 1 armed, 2 worker held, 3 released */
static atomic_uint gate_batch_changes; /* changes of the batch after the gate */
static atomic_bool gate_next;

static void gate_hook(void *opaque, uint64_t batch_no, uint32_t changes)
{
	(void)opaque;
	(void)batch_no;
	/* The batch after the gate: its size, then the flag the test waits
	 * for, and nothing more. Once the flag is down the test may arm the
	 * next gate, and this call, still running, must not take this batch
	 * for the gate's (found under ASan: that batch then held the next
	 * gate's change and all n, and the split test saw n + 1). */
	if (atomic_load(&gate_next)) {
		atomic_store(&gate_batch_changes, changes);
		atomic_store(&gate_next, false);
		return;
	}
	if (atomic_load(&gate) != 1)
		return;
	atomic_store(&gate_next, true);
	atomic_store(&gate, 2);
	while (atomic_load(&gate) != 3)
		sched_yield();
}

struct gated {
	struct rdm_region *g;
	struct rdm_producer *gp, *p[MAXP];
	bool gate_on;
};

/* Returns whether the worker drained the n changes as one batch. */
static bool run_real_split(struct fixture *f, struct gated *gt, unsigned k, const struct chg *c, unsigned n,
			   int *res)
{
	uint64_t t[MAXB], gt_t;
	int gres;

	REQUIRE(n >= 1 && n <= MAXB && k >= 1 && k <= MAXP);
	atomic_store(&gate, 1);
	gt->gate_on = !gt->gate_on;
	REQUIRE((gt->gate_on ? rdm_producer_populate(gt->gp, gt->g, 0, BS, &gt_t)
			     : rdm_producer_discard(gt->gp, gt->g, 0, BS, &gt_t)) == 0);
	while (atomic_load(&gate) != 2)
		sched_yield();
	for (unsigned i = 0; i < n; i++) {
		struct rdm_change ch = { .region = f->r, .kind = c[i].kind, .offset = c[i].s * BS,
					 .length = (c[i].e - c[i].s) * BS };

		REQUIRE(rdm_producer_submit(gt->p[i % k], &ch, 1, &t[i]) == 0);
	}
	atomic_store(&gate, 3);
	REQUIRE(rdm_producer_wait(gt->gp, gt_t, &gres) == 0 && gres == 0);
	/* The hook of the next batch runs once its tickets are complete: wait
	 * for it (it then cannot take the next gate either). If it drained all
	 * n, every ticket is complete now; one still pending is a change the
	 * worker kept for a missing number, i.e. a batch it did not order. */
	while (atomic_load(&gate_next))
		sched_yield();
	bool whole = atomic_load(&gate_batch_changes) == n;

	for (unsigned i = 0; i < n; i++) {
		int err = whole ? rdm_producer_poll(gt->p[i % k], t[i], &res[i])
				: rdm_producer_wait(gt->p[i % k], t[i], &res[i]);

		if (err == -EINPROGRESS)
			fprintf(stderr, "split batch: change %u of %u (producer %u of %u) not complete after its "
				"batch\n", i, n, i % k, k);
		REQUIRE(err == 0);
	}
	return whole;
}

/* The oracle for a batch: superseding first (on the oracle's state as each
 * populate is reached), then one change at a time. */
static void run_model(uint64_t *st, const struct chg *c, unsigned n, bool strict, int *res,
		      uint64_t *versions, bool track_hist, const bool *skip)
{
	bool sup[MAXB] = { false }, pending = false;

	for (unsigned i = 0; i < n; i++) {
		if (skip != NULL && skip[i]) {
			res[i] = -ENOMEM;
			continue;
		}
		if (sup[i]) {
			res[i] = 0;
			continue;
		}
		if (c[i].kind == RDM_CHANGE_POPULATE && (*st & mask(c[i].s, c[i].e)) == 0) {
			for (unsigned j = i + 1; j < n; j++) {
				if (c[j].kind == RDM_CHANGE_DISCARD && c[j].s == c[i].s && c[j].e == c[i].e) {
					sup[i] = sup[j] = true;
					break;
				}
				if (overlap(&c[i], &c[j]) && (skip == NULL || !skip[j]))
					break;
			}
			if (sup[i]) {
				res[i] = 0;
				continue;
			}
		}
		res[i] = model_apply(st, &c[i], strict, versions, &pending);
		if (track_hist)
			push_hist(*st);
	}
	if (pending)
		(*versions)++;
}

static uint64_t real_state(struct rdm_region *r)
{
	uint64_t st = 0;

	REQUIRE(rdm_replay_populated(r, 0, REGION, note_run, &st) == 0);
	return st;
}

static bool logs_equal(void)
{
	if (real_log.n != model_log.n)
		return false;
	for (unsigned i = 0; i < real_log.n; i++) {
		const struct call *x = &real_log.c[i], *y = &model_log.c[i];

		if (x->who != y->who || x->what != y->what || x->s != y->s || x->e != y->e)
			return false;
	}
	return true;
}

static void dump_logs(void)
{
	for (unsigned i = 0; i < real_log.n || i < model_log.n; i++) {
		const struct call *x = &real_log.c[i], *y = &model_log.c[i];

		fprintf(stderr, "  %3u real %c%c[%u,%u)  model %c%c[%u,%u)\n", i, i < real_log.n ? x->who : '-',
			i < real_log.n ? x->what : '-', i < real_log.n ? x->s : 0, i < real_log.n ? x->e : 0,
			i < model_log.n ? y->who : '-', i < model_log.n ? y->what : '-',
			i < model_log.n ? y->s : 0, i < model_log.n ? y->e : 0);
	}
}

/* The gate region (one block, beyond the fixture's) and the producers of
 * run_real_split(). */
static void gated_setup(struct fixture *f, struct gated *gt)
{
	*gt = (struct gated){ 0 };
	gt->g = attached_region(f, IOVA + 2 * REGION, BS, BS, 0, NULL);
	REQUIRE(rdm_producer_create(&gt->gp) == 0);
	for (unsigned i = 0; i < MAXP; i++)
		REQUIRE(rdm_producer_create(&gt->p[i]) == 0);
}

static void gated_teardown(struct gated *gt)
{
	for (unsigned i = 0; i < MAXP; i++)
		rdm_producer_destroy(gt->p[i]);
	rdm_producer_destroy(gt->gp);
	CHECK(rdm_region_destroy(gt->g) == 0);
}

/* Random mixed batches against the oracle, with readers. Not split: each
 * batch from one producer in one submission; split: from 2..MAXP producers
 * sharing the region (run_real_split()). */
static void test_random(bool strict, unsigned batches, bool split)
{
	static const struct rdm_worker_config gate_cfg = { .struct_size = sizeof(gate_cfg),
							   .on_batch = gate_hook };
	struct fixture f;
	struct gated gt;
	pthread_t rd[2];
	uint64_t st = 0, versions = 0, one_kind = 0, merged = 0;
	unsigned bad = 0, whole = 0;

	worker_cfg = split ? &gate_cfg : NULL;
	setup(&f, strict);
	worker_cfg = NULL;
	if (split)
		gated_setup(&f, &gt);
	atomic_store(&hist_n, 0);
	atomic_store(&stop_readers, false);
	atomic_store(&reader_errors, 0);
	push_hist(0);
	reader_region = f.r;
	for (int i = 0; i < 2; i++)
		REQUIRE(pthread_create(&rd[i], NULL, reader, NULL) == 0);
	for (unsigned b = 0; b < batches && bad < 3; b++) {
		struct chg c[MAXB];
		int res[MAXB], want[MAXB];
		unsigned n = 1 + (unsigned)rand() % MAXB, mix = b % 5 == 3 ? 1 : b % 5 == 4 ? 2 : 0;
		uint64_t v0 = rdm_region_versions(f.r), want_v = 0, st0 = st;

		random_batch(c, n, st, mix);
		salt = b % 3 == 0 || no_listeners ? 0 : (uint32_t)rand() | 1; /* listeners refuse sometimes */
		real_log.n = model_log.n = 0;
		/* The oracle first: the readers must know every state before the
		 * worker can publish it. */
		run_model(&st, c, n, strict, want, &want_v, true, NULL);
		if (split) {
			whole += run_real_split(&f, &gt, 2 + b % (MAXP - 1), c, n, res);
		} else {
			run_real(&f, c, n, res);
		}
		for (unsigned i = 0; i < n; i++) {
			if (res[i] != want[i]) {
				fprintf(stderr, "batch %u change %u (%u [%llu,%llu)): %d, oracle %d\n", b, i,
					c[i].kind, (unsigned long long)c[i].s, (unsigned long long)c[i].e, res[i],
					want[i]);
				bad++;
				break;
			}
		}
		if (!no_listeners && !logs_equal()) {
			fprintf(stderr, "batch %u: listener calls differ\n", b);
			dump_logs();
			bad++;
		}
		/* I1 and I2 with the block policy: after the batch, exactly the
		 * populated blocks are mapped (to the region's memory). */
		for (unsigned k = 0; k < NB; k++) {
			uint64_t iova = IOVA + k * BS;
			bool pop = (st >> k) & 1;

			if (pop ? !rdm_sim_is_mapped(f.sim, iova, BS, true, (uint64_t)(uintptr_t)(host + k * BS))
				: !rdm_sim_is_unmapped(f.sim, iova, BS)) {
				fprintf(stderr, "batch %u: block %u %s\n", b, k,
					pop ? "populated but not mapped" : "discarded but still mapped");
				bad++;
				break;
			}
		}
		if (real_state(f.r) != st) {
			fprintf(stderr, "batch %u: state %#llx, oracle %#llx (before %#llx)\n", b,
				(unsigned long long)real_state(f.r), (unsigned long long)st,
				(unsigned long long)st0);
			bad++;
		}
		/* Versions: one per discard that changed the state, one more if
		 * populates were accepted after the last one. Without listeners,
		 * discards wait for their first unmap or release: at most that
		 * many, at least one if the state changed, and a batch of
		 * discards alone (unmapped at its end) makes fewer. */
		uint64_t got_v = rdm_region_versions(f.r) - v0;

		if (no_listeners ? got_v > want_v || (st != st0 && got_v == 0) : got_v != want_v) {
			fprintf(stderr, "batch %u: %llu versions published, rule says %s%llu\n", b,
				(unsigned long long)got_v, no_listeners ? "at most " : "",
				(unsigned long long)want_v);
			bad++;
		}
		if (mix == 2)
			merged += got_v < want_v;
		if (mix == 1)
			one_kind += want_v == (st != st0);
		versions += want_v;
	}
	CHECK(bad == 0);
	/* Every split batch reached the worker as one batch (else the merge
	 * was not what ordered it). */
	CHECK(!split || whole == batches);
	CHECK(one_kind > 0);
	CHECK(no_listeners ? merged > 0 : merged == 0);
	atomic_store(&stop_readers, true);
	for (int i = 0; i < 2; i++)
		pthread_join(rd[i], NULL);
	CHECK(atomic_load(&reader_errors) == 0);
	CHECK(atomic_load(&reader_reads) > 0);
	salt = 0;
	if (split)
		gated_teardown(&gt);
	teardown(&f);
	printf("random %s%s%s: %u batches, %llu versions (rule with listeners), %llu batches of discards "
	       "merged, %lu reads\n", strict ? "strict" : "lenient", no_listeners ? " without listeners" : "",
	       split ? " split" : "",
	       batches, (unsigned long long)versions, (unsigned long long)merged,
	       (unsigned long)atomic_load(&reader_reads));
}

/* A batch of populates only publishes one version; each discard that
 * changes the state publishes one, with the populates before it. */
static void test_versions(void)
{
	struct fixture f;
	struct chg c[8];
	int res[8];
	uint64_t v0;

	setup(&f, false);
	for (unsigned i = 0; i < 8; i++)
		c[i] = (struct chg){ .kind = RDM_CHANGE_POPULATE, .s = 2 * i, .e = 2 * i + 1 };
	v0 = rdm_region_versions(f.r);
	run_real(&f, c, 8, res);
	CHECK(rdm_region_versions(f.r) - v0 == 1);
	CHECK(real_state(f.r) == 0x5555);
	/* populate, populate, discard, populate: two versions. */
	c[0] = (struct chg){ .kind = RDM_CHANGE_POPULATE, .s = 20, .e = 21 };
	c[1] = (struct chg){ .kind = RDM_CHANGE_POPULATE, .s = 22, .e = 23 };
	c[2] = (struct chg){ .kind = RDM_CHANGE_DISCARD, .s = 0, .e = 1 };
	c[3] = (struct chg){ .kind = RDM_CHANGE_POPULATE, .s = 24, .e = 25 };
	v0 = rdm_region_versions(f.r);
	run_real(&f, c, 4, res);
	CHECK(res[0] == 0 && res[1] == 0 && res[2] == 0 && res[3] == 0);
	CHECK(rdm_region_versions(f.r) - v0 == 2);
	/* A no-op discard publishes nothing. */
	c[0] = (struct chg){ .kind = RDM_CHANGE_DISCARD, .s = 40, .e = 41 };
	v0 = rdm_region_versions(f.r);
	run_real(&f, c, 1, res);
	CHECK(res[0] == 0 && rdm_region_versions(f.r) == v0);
	/* Without a batch (a synchronous call): one version per change. */
	v0 = rdm_region_versions(f.r);
	CHECK(rdm_populate(f.r, 50 * BS, BS) == 0);
	CHECK(rdm_region_versions(f.r) - v0 == 1);
	teardown(&f);
}

/* Without listeners of its own (only the worker's tail), a region's batched
 * discards are published at their first unmap or release, or at the end of
 * the batch: never later, and the tail is still told each discard's
 * populated runs from the state before it. 4 KiB blocks, so that 128 fit in
 * the one leaf that the batch's populates make a bitmap (more than 31 runs)
 * and later steps write in place. */
static void test_discards_wait(void)
{
	enum { B4 = 4096, N = 128 };
	struct rdm_change ch[64];
	uint64_t t[64], v0, iova = IOVA;
	struct fixture f;
	unsigned n = 0;
	int res;

	no_listeners = true;
	setup_sized(&f, false, B4, N * B4);
	no_listeners = false;

	/* One batch: 40 populates of alternate blocks (a bitmap leaf, written
	 * in place from the second on), then a discard of [0, 8) that is not
	 * told whole (lenient, several blocks): its populated runs 0, 2, 4, 6
	 * come from the state before it. */
	for (unsigned k = 0; k < 40; k++)
		ch[n++] = (struct rdm_change){ .region = f.r, .kind = RDM_CHANGE_POPULATE,
					       .offset = 2 * k * B4, .length = B4 };
	ch[n++] = (struct rdm_change){ .region = f.r, .kind = RDM_CHANGE_DISCARD, .offset = 0, .length = 8 * B4 };
	REQUIRE(rdm_producer_submit(f.p, ch, n, t) == 0);
	for (unsigned i = 0; i < n; i++)
		CHECK(rdm_producer_wait(f.p, t[i], &res) == 0 && res == 0);
	CHECK(rdm_sim_is_unmapped(f.sim, iova, 8 * B4));
	for (unsigned k = 4; k < 40; k++)
		CHECK(rdm_sim_is_mapped(f.sim, iova + 2 * k * B4, B4, true, (uint64_t)(uintptr_t)(host + 2 * k * B4)));

	/* Eight single-block discards in one batch: one version. */
	n = 0;
	for (unsigned k = 10; k < 18; k++)
		ch[n++] = (struct rdm_change){ .region = f.r, .kind = RDM_CHANGE_DISCARD, .offset = 2 * k * B4,
					       .length = B4 };
	v0 = rdm_region_versions(f.r);
	REQUIRE(rdm_producer_submit(f.p, ch, n, t) == 0);
	for (unsigned i = 0; i < n; i++)
		CHECK(rdm_producer_wait(f.p, t[i], &res) == 0 && res == 0);
	CHECK(rdm_region_versions(f.r) - v0 == 1);
	CHECK(rdm_sim_is_unmapped(f.sim, iova + 20 * B4, 16 * B4));

	/* A discard, then a populate whose map flushes the discard's unmap
	 * (and release) first: the discard is published there, the populate
	 * at the end of the batch. */
	ch[0] = (struct rdm_change){ .region = f.r, .kind = RDM_CHANGE_DISCARD, .offset = 60 * B4, .length = B4 };
	ch[1] = (struct rdm_change){ .region = f.r, .kind = RDM_CHANGE_POPULATE, .offset = 61 * B4, .length = B4 };
	v0 = rdm_region_versions(f.r);
	REQUIRE(rdm_producer_submit(f.p, ch, 2, t) == 0);
	for (unsigned i = 0; i < 2; i++)
		CHECK(rdm_producer_wait(f.p, t[i], &res) == 0 && res == 0);
	CHECK(rdm_region_versions(f.r) - v0 == 2);
	CHECK(rdm_is_discarded(f.r, 60 * B4, B4) && rdm_is_populated(f.r, 61 * B4, B4));
	teardown(&f);
}

/* An allocation failure anywhere in a batch: every change all-or-nothing,
 * the others as the oracle says. Sweeps the failing attempt over the batch. */
static void test_alloc_failure(void)
{
	unsigned enomem = 0;

	for (unsigned k = 1; k < 80; k++) {
		struct fixture f;
		struct chg c[24];
		int res[24], want[24];
		bool skip[24];
		uint64_t st = 0, v = 0, warm = 0;

		setup(&f, (k & 1) != 0);
		/* A state to work on. */
		for (unsigned i = 0; i < 12; i++)
			c[i] = (struct chg){ .kind = RDM_CHANGE_POPULATE, .s = 5 * i, .e = 5 * i + 2 };
		run_real(&f, c, 12, res);
		run_model(&warm, c, 12, false, want, &v, false, NULL);
		st = warm;
		srand(k);
		random_batch(c, 24, st, 0);
		real_log.n = model_log.n = 0;
		rdm_alloc_inject(k, false);
		run_real(&f, c, 24, res);
		rdm_alloc_inject(0, false);
		/* The oracle, skipping the changes that failed for memory. */
		for (unsigned i = 0; i < 24; i++) {
			skip[i] = res[i] == -ENOMEM;
			enomem += skip[i];
		}
		run_model(&st, c, 24, (k & 1) != 0, want, &v, false, skip);
		for (unsigned i = 0; i < 24; i++) {
			if (res[i] != want[i]) {
				fprintf(stderr, "alloc %u: change %u: %d, oracle %d\n", k, i, res[i], want[i]);
				CHECK(false);
			}
		}
		(void)v;
		/* The readers' state, each listener's net view (what it was told
		 * populated and not discarded since) and the IOMMU's mappings agree
		 * with the oracle's. */
		CHECK(real_state(f.r) == st);
		for (char who = 'a'; who <= 'b'; who++) {
			uint64_t view = warm;

			for (unsigned i = 0; i < real_log.n; i++) {
				const struct call *x = &real_log.c[i];

				if (x->who != who)
					continue;
				if (x->what == 'p')
					view |= mask(x->s, x->e);
				else
					view &= ~mask(x->s, x->e);
			}
			if (view != st) {
				fprintf(stderr, "alloc %u: listener %c sees %#llx, oracle %#llx\n", k, who,
					(unsigned long long)view, (unsigned long long)st);
				CHECK(false);
			}
		}
		for (unsigned b = 0; b < NB; b++) {
			uint64_t iova = (1ull << 32) + b * BS;

			if ((st >> b) & 1)
				CHECK(rdm_sim_is_mapped(f.sim, iova, BS, true, (uint64_t)(uintptr_t)host + b * BS));
			else
				CHECK(rdm_sim_is_unmapped(f.sim, iova, BS));
		}
		teardown(&f);
	}
	CHECK(enomem > 0);
	printf("alloc failures: %u changes failed with -ENOMEM\n", enomem);
}

/* After warm-up, a steady state of populate and discard batches allocates
 * no tree node: retired nodes come back to the tree's pool. The warm-up
 * covers several retire groups (core/tree.c "Retire groups"): nodes kept
 * for a group are not yet reusable, so the pool fills over a few groups. */
#define STEADY_WARM 100u
static void test_steady_state(void)
{
	struct fixture f;
	struct chg c[32];
	int res[32];
	const struct rdm_mem *m;
	size_t allocs0 = 0;

	setup(&f, true);
	m = rdm_region_mem(f.r);
	for (unsigned round = 0; round < STEADY_WARM + 40; round++) {
		if (round == STEADY_WARM) {
			/* Warm: measure from here. */
			allocs0 = atomic_load(&m->allocs);
		}
		/* Scattered single blocks, then runs, so that extent leaves of
		 * several sizes are made and replaced. */
		for (unsigned i = 0; i < 32; i++) {
			uint64_t s = (i * 7 + round) % NB;

			c[i] = (struct chg){ .kind = RDM_CHANGE_POPULATE, .s = s, .e = s + 1 };
		}
		for (unsigned i = 0; i < 32; i++)
			for (unsigned j = 0; j < i; j++)
				if (c[j].s == c[i].s)
					c[i].s = c[i].e = 0;
		{
			unsigned n = 0;

			for (unsigned i = 0; i < 32; i++)
				if (c[i].e != 0)
					c[n++] = c[i];
			real_log.n = 0;
			run_real(&f, c, n, res);
			for (unsigned i = 0; i < n; i++) {
				CHECK(res[i] == 0);
				c[i].kind = RDM_CHANGE_DISCARD;
			}
			/* Let the reclaimed nodes come back before the next batch. */
			rcu_barrier();
			real_log.n = 0;
			run_real(&f, c, n, res);
			for (unsigned i = 0; i < n; i++)
				CHECK(res[i] == 0);
			rcu_barrier();
		}
	}
	CHECK(real_state(f.r) == 0);
	printf("steady state: %zu tree allocations in 40 rounds (%u changes)\n", atomic_load(&m->allocs) - allocs0,
	       40u * 64u);
	CHECK(atomic_load(&m->allocs) == allocs0);
	teardown(&f);
}

int main(int argc, char **argv)
{
	unsigned batches = argc > 1 ? (unsigned)atoi(argv[1]) : 150;

	host = aligned_alloc(BS, REGION);
	REQUIRE(host != NULL);
	srand(11);
	test_versions();
	test_steady_state();
	test_random(false, batches, false);
	test_random(true, batches, false);
	test_random(false, batches, true);
	test_random(true, batches, true);
	test_discards_wait();
	no_listeners = true;
	test_random(false, batches, false);
	test_random(true, batches, false);
	test_random(false, batches, true);
	no_listeners = false;
	test_alloc_failure();
	free(host);
	return check_exit();
}
