/* test_lifecycle.c - regression tests for misuse, lifecycle and contract defects (issue list in the README). */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <urcu-bp.h>

#include <rdm/rdm.h>

#include "core/alloc.h"
#include "core/region_internal.h"
#include "tests/check.h"

#define MiB (1ull << 20)
#define BS (2 * MiB)
#define REGION (64 * MiB)
#define NB (REGION / BS)

static char *host;

static struct rdm_region *region(uint32_t flags, uint32_t policy, rdm_release_fn rel, void *opaque)
{
	struct rdm_region_config rc = {.struct_size = sizeof(rc), .flags = flags, .iova = 1ull << 32,
				       .size = REGION, .block_size = BS, .host_addr = host,
				       .release = rel, .release_opaque = opaque, .policy = policy,
				       .defer_budget = RDM_DEFER_BUDGET_NONE};
	struct rdm_region *r;

	REQUIRE(rdm_region_create(&rc, &r) == 0);
	return r;
}

static struct rdm_backend *sim(uint64_t limit)
{
	struct rdm_sim_config sc = {.struct_size = sizeof(sc), .semantics = RDM_SEM_TYPE1V2, .limit = limit,
				    .call_ns = 1};
	struct rdm_backend *b;

	REQUIRE(rdm_backend_sim_create(&sc, &b) == 0);
	return b;
}

static struct rdm_worker *worker(const struct rdm_worker_config *wc)
{
	struct rdm_worker *w;

	REQUIRE(rdm_worker_create(wc, &w) == 0);
	return w;
}

/* Release oracle per block. */
struct rel {
	unsigned n[NB];
};

static void on_release(void *opaque, uint64_t off, uint64_t len)
{
	struct rel *r = opaque;

	for (uint64_t b = off / BS; b < (off + len) / BS; b++)
		r->n[b]++;
}

/* 1. A producer that used two workers, one of them destroyed, submits to
 * the other (the burst used to kick every link, reading the destroyed
 * worker's pointer: SIGSEGV). */
static void test_producer_after_worker_destroyed(void)
{
	struct rdm_worker *wa = worker(NULL), *wb = worker(NULL);
	struct rdm_backend *ba = sim(0), *bb = sim(0);
	struct rdm_region *ra = region(0, RDM_POLICY_BLOCK, NULL, NULL), *rb = region(0, RDM_POLICY_BLOCK, NULL, NULL);
	struct rdm_producer *p;
	uint64_t t;
	int res = 1;

	REQUIRE(rdm_producer_create(&p) == 0);
	CHECK(rdm_worker_add_backend(wa, ba, 0) == 0);
	CHECK(rdm_worker_add_backend(wb, bb, 0) == 0);
	CHECK(rdm_worker_attach(wa, ra, ba) == 0);
	CHECK(rdm_worker_attach(wb, rb, bb) == 0);
	CHECK(rdm_producer_populate(p, ra, 0, BS, &t) == 0 && rdm_producer_wait(p, t, &res) == 0 && res == 0);
	CHECK(rdm_producer_populate(p, rb, 0, BS, &t) == 0 && rdm_producer_wait(p, t, &res) == 0 && res == 0);
	CHECK(rdm_worker_destroy(wa) == -EBUSY); /* ra is still served by wa */
	CHECK(rdm_region_destroy(ra) == 0);
	CHECK(rdm_worker_destroy(wa) == 0);
	for (int i = 1; i < 8; i++) {
		CHECK(rdm_producer_populate(p, rb, (uint64_t)i * BS, BS, &t) == 0);
		CHECK(rdm_producer_wait(p, t, &res) == 0 && res == 0);
	}
	CHECK(rdm_populated_bytes(rb, 0, REGION) == 8 * BS);
	rdm_producer_destroy(p);
	CHECK(rdm_region_destroy(rb) == 0);
	CHECK(rdm_worker_destroy(wb) == 0);
	rdm_backend_destroy(ba);
	rdm_backend_destroy(bb);
}

/* A region that no worker serves applies changes itself: what a failed
 * first attach must leave behind. */
static void check_unserved(struct rdm_region *r, struct rdm_worker *w)
{
	size_t n = 99;

	CHECK(rdm_region_get_applier_ops(r) == NULL);
	CHECK(rdm_region_get_deferred(r, NULL, 0, &n, NULL) == -ENOENT);
	/* A changes works on the calling thread, and the worker does not
	 * consider the region its own. */
	CHECK(rdm_populate(r, REGION - BS, BS) == 0);
	CHECK(rdm_discard(r, REGION - BS, BS) == 0);
	(void)w;
}

/* 2. A failed first attach is not half-applied: the region keeps applying
 * its own changes, the worker can be destroyed, another attach works. */
static void test_failed_attach(void)
{
	struct rel rel = {0};
	struct rdm_region *r = region(RDM_REGION_STRICT, RDM_POLICY_BLOCK, on_release, &rel);
	struct rdm_backend *small = sim(4), *big = sim(0);
	struct rdm_worker *w = worker(NULL);
	struct rdm_mapping maps[8];
	size_t n = 0;

	CHECK(rdm_populate(r, 0, 8 * BS) == 0); /* 8 mappings under the block policy */
	CHECK(rdm_worker_add_backend(w, small, 0) == 0);
	CHECK(rdm_worker_add_backend(w, big, 0) == 0);
	CHECK(rdm_worker_attach(w, r, small) == -ENOSPC);
	CHECK(strstr(rdm_last_error(), "limit") != NULL);
	check_unserved(r, w);
	CHECK(rdm_sim_is_unmapped(small, 1ull << 32, REGION));
	CHECK(rdm_worker_destroy(w) == 0); /* used to be -EBUSY forever */

	w = worker(NULL);
	CHECK(rdm_worker_add_backend(w, big, 0) == 0);
	CHECK(rdm_worker_attach(w, r, big) == 0);
	CHECK(rdm_region_get_mappings(r, big, maps, 8, &n) == 0 && n == 8);
	CHECK(n == 8 && maps[7].offset == 7 * BS && maps[7].length == BS && maps[7].iova == (1ull << 32) + 7 * BS);
	CHECK(rdm_sim_is_mapped(big, 1ull << 32, 8 * BS, true, (uint64_t)(uintptr_t)host));
	CHECK(rdm_region_destroy(r) == 0);
	CHECK(rdm_sim_is_unmapped(big, 1ull << 32, REGION));
	CHECK(rdm_worker_destroy(w) == 0);
	rdm_backend_destroy(small);
	rdm_backend_destroy(big);
}

/* 2b. Every allocation a first attach makes, failed in turn: the attach
 * fails with -ENOMEM and leaves nothing behind (ASan's leak check), or
 * succeeds. */
static void test_attach_alloc_failures(void)
{
	unsigned long k, sites = 0;

	for (k = 1;; k++) {
		struct rdm_region *r = region(0, RDM_POLICY_DEFER, NULL, NULL);
		struct rdm_backend *b = sim(0);
		struct rdm_worker *w = worker(NULL);
		unsigned long hit;
		int err;

		CHECK(rdm_populate(r, 0, 4 * BS) == 0);
		CHECK(rdm_worker_add_backend(w, b, 0) == 0);
		rdm_alloc_inject(k, false);
		err = rdm_worker_attach(w, r, b);
		hit = rdm_alloc_injected(); /* before disarming: that resets it */
		rdm_alloc_inject(0, false);
		if (hit == 0) {
			/* Attempt k was never made: every allocation was failed once. */
			CHECK(err == 0);
			CHECK(rdm_sim_is_mapped(b, 1ull << 32, 4 * BS, true, (uint64_t)(uintptr_t)host));
			CHECK(rdm_region_destroy(r) == 0);
			CHECK(rdm_worker_destroy(w) == 0);
			rdm_backend_destroy(b);
			break;
		}
		if (err == 0) {
			/* The failed allocation was one the attach could retry or
			 * do without (e.g. on the worker thread's own side). */
			CHECK(rdm_sim_is_mapped(b, 1ull << 32, 4 * BS, true, (uint64_t)(uintptr_t)host));
		} else {
			sites++;
			CHECK(err == -ENOMEM);
			if (!strstr(rdm_last_error(), "memory"))
				fprintf(stderr, "k=%lu err=%d: %s\n", k, err, rdm_last_error());
			CHECK(strstr(rdm_last_error(), "memory") != NULL);
			CHECK(rdm_sim_is_unmapped(b, 1ull << 32, REGION));
			check_unserved(r, w);
		}
		CHECK(rdm_populated_bytes(r, 0, REGION) == 4 * BS);
		CHECK(rdm_region_destroy(r) == 0);
		CHECK(rdm_worker_destroy(w) == 0);
		CHECK(rdm_sim_is_unmapped(b, 1ull << 32, REGION));
		rdm_backend_destroy(b);
		REQUIRE(k < 1000);
	}
	printf("attach: %lu allocation attempts, %lu failed the attach cleanly\n", k - 1, sites);
	CHECK(sites > 0);
}

/* 4. Async submits race a destroy: each either completes or gets
 * -ECANCELED; nothing is read after the region is freed (ASan, TSan). The
 * racer's calls must all happen before the destroy returns (a handle is not
 * used after its destroy): a listener's discard, which the destroy calls
 * after refusing new calls, waits until the racer has seen -ECANCELED. */
struct racer {
	struct rdm_listener l;
	struct rdm_region *r;
	_Atomic int go, finished;
	int canceled, ok, other;
	pthread_t destroyer;
};

static void *race_submit(void *arg)
{
	struct racer *x = arg;
	struct rdm_producer *p;
	uint64_t t;
	int res;

	REQUIRE(rdm_producer_create(&p) == 0);
	/* Acquire: pairs with the main thread's release store of go. */
	while (!atomic_load_explicit(&x->go, memory_order_acquire))
		;
	for (int i = 0; i < 100000; i++) {
		int err = i & 1 ? rdm_producer_discard(p, x->r, (uint64_t)(i % NB) * BS, BS, &t)
				: rdm_producer_populate(p, x->r, (uint64_t)(i % NB) * BS, BS, &t);

		if (err == -ECANCELED) {
			x->canceled++;
			break;
		}
		if (err) {
			x->other++;
			break;
		}
		CHECK(rdm_producer_wait(p, t, &res) == 0);
		CHECK(res == 0 || res == -EEXIST || res == -ENOENT);
		x->ok++;
	}
	rdm_producer_destroy(p);
	/* Release: pairs with the acquire load in race_discard(). */
	atomic_store_explicit(&x->finished, 1, memory_order_release);
	return NULL;
}

static int race_populate(struct rdm_listener *l, uint64_t off, uint64_t len)
{
	(void)l;
	(void)off;
	(void)len;
	return 0;
}

static void race_discard(struct rdm_listener *l, uint64_t off, uint64_t len)
{
	struct racer *x = (struct racer *)l;

	(void)off;
	(void)len;
	/* Only the destroy's own discard, on the destroying thread; the
	 * racer's discards are told on the worker thread. */
	if (!pthread_equal(pthread_self(), x->destroyer))
		return;
	while (!atomic_load_explicit(&x->finished, memory_order_acquire))
		sched_yield();
}

static const struct rdm_listener_ops race_ops = {race_populate, race_discard};

static void test_async_vs_destroy(void)
{
	for (int round = 0; round < 20; round++) {
		struct racer x = {.l = {.ops = &race_ops, .offset = 0, .length = REGION},
				  .r = region(RDM_REGION_STRICT, RDM_POLICY_BLOCK, NULL, NULL),
				  .destroyer = pthread_self()};
		struct rdm_backend *b = sim(0);
		struct rdm_worker *w = worker(NULL);
		pthread_t th;

		CHECK(rdm_worker_add_backend(w, b, 0) == 0);
		CHECK(rdm_worker_attach(w, x.r, b) == 0);
		CHECK(rdm_listener_register(x.r, &x.l) == 0);
		CHECK(rdm_populate(x.r, REGION - BS, BS) == 0); /* so the destroy tells x a discard */
		REQUIRE(pthread_create(&th, NULL, race_submit, &x) == 0);
		/* Release: pairs with the racer's acquire load. */
		atomic_store_explicit(&x.go, 1, memory_order_release);
		for (int i = 0; i < round * 50; i++)
			sched_yield();
		CHECK(rdm_region_destroy(x.r) == 0);
		pthread_join(th, NULL);
		CHECK(x.other == 0);
		CHECK(x.canceled == 1 || x.ok == 100000);
		CHECK(rdm_sim_is_unmapped(b, 1ull << 32, REGION));
		CHECK(rdm_worker_destroy(w) == 0);
		rdm_backend_destroy(b);
	}
}

/* 7. ticket_slots is validated and enforced; a producer uses any number
 * of workers (it used to stop at 8 with -ENOSPC, the mapping limit's errno). */
static void test_ticket_slots_and_many_workers(void)
{
	struct rdm_worker_config wc = {.struct_size = sizeof(wc), .ticket_slots = 3};
	struct rdm_worker *w;
	struct rdm_backend *b = sim(0);
	struct rdm_region *r = region(0, RDM_POLICY_BLOCK, NULL, NULL);
	struct rdm_producer *p;
	uint64_t t[3];
	int res;

	CHECK(rdm_worker_create(&wc, &w) == -EINVAL);
	CHECK(strstr(rdm_last_error(), "ticket_slots") != NULL);
	wc.ticket_slots = 2048;
	CHECK(rdm_worker_create(&wc, &w) == -EINVAL);
	wc.ticket_slots = 2;
	w = worker(&wc);
	REQUIRE(rdm_producer_create(&p) == 0);
	CHECK(rdm_worker_add_backend(w, b, 0) == 0);
	CHECK(rdm_worker_attach(w, r, b) == 0);
	CHECK(rdm_producer_populate(p, r, 0, BS, &t[0]) == 0);
	CHECK(rdm_producer_populate(p, r, BS, BS, &t[1]) == 0);
	CHECK(rdm_producer_populate(p, r, 2 * BS, BS, &t[2]) == -EAGAIN);
	CHECK(strstr(rdm_last_error(), "ticket_slots") != NULL);
	CHECK(rdm_producer_wait(p, t[0], &res) == 0 && res == 0);
	CHECK(rdm_producer_populate(p, r, 2 * BS, BS, &t[2]) == 0);
	CHECK(rdm_producer_wait(p, t[1], &res) == 0 && res == 0);
	CHECK(rdm_producer_wait(p, t[2], &res) == 0 && res == 0);
	CHECK(rdm_populated_bytes(r, 0, REGION) == 3 * BS);
	CHECK(rdm_region_destroy(r) == 0);
	CHECK(rdm_worker_destroy(w) == 0);
	rdm_backend_destroy(b);

	/* Twelve workers, one producer. */
	enum { NW = 12 };
	struct rdm_worker *ws[NW];
	struct rdm_backend *bs[NW];
	struct rdm_region *rs[NW];

	for (int i = 0; i < NW; i++) {
		ws[i] = worker(NULL);
		bs[i] = sim(0);
		rs[i] = region(0, RDM_POLICY_BLOCK, NULL, NULL);
		CHECK(rdm_worker_add_backend(ws[i], bs[i], 0) == 0);
		CHECK(rdm_worker_attach(ws[i], rs[i], bs[i]) == 0);
		CHECK(rdm_producer_populate(p, rs[i], 0, BS, &t[0]) == 0);
		CHECK(rdm_producer_wait(p, t[0], &res) == 0 && res == 0);
		CHECK(rdm_populate(rs[i], BS, BS) == 0); /* the implicit producer too */
	}
	/* A burst to two workers needs the producer's slots for all of it,
	 * though each worker's share fits: 990 tickets held, 34 slots free,
	 * 32 + 32 changes. Refused whole (it used to overrun the free list). */
	static uint64_t held[990];
	struct rdm_change burst[64];
	uint64_t bt[64];

	for (int i = 0; i < 990; i++)
		CHECK(rdm_producer_populate(p, rs[0], 0, BS, &held[i]) == 0);
	for (int i = 0; i < 64; i++)
		burst[i] = (struct rdm_change){.region = rs[i & 1], .kind = RDM_CHANGE_POPULATE,
					       .offset = 2 * BS, .length = BS};
	CHECK(rdm_producer_submit(p, burst, 64, bt) == -EAGAIN);
	CHECK(strstr(rdm_last_error(), "ticket slots") != NULL);
	CHECK(rdm_producer_submit(p, burst, 34, bt) == 0);
	for (int i = 0; i < 990; i++)
		CHECK(rdm_producer_wait(p, held[i], &res) == 0 && res == 0);
	for (int i = 0; i < 34; i++)
		CHECK(rdm_producer_wait(p, bt[i], &res) == 0 && res == 0);
	for (int i = 0; i < NW; i++) {
		CHECK(rdm_sim_is_mapped(bs[i], 1ull << 32, 2 * BS, true, (uint64_t)(uintptr_t)host));
		CHECK(rdm_region_destroy(rs[i]) == 0);
		CHECK(rdm_worker_destroy(ws[i]) == 0);
		rdm_backend_destroy(bs[i]);
	}
	rdm_producer_destroy(p);
}

/* 9b. One backend, two workers: the second add is refused. */
static void test_backend_two_workers(void)
{
	struct rdm_worker *w1 = worker(NULL), *w2 = worker(NULL);
	struct rdm_backend *b = sim(0);

	CHECK(rdm_worker_add_backend(w1, b, 0) == 0);
	CHECK(rdm_worker_add_backend(w1, b, 0) == -EEXIST);
	CHECK(rdm_worker_add_backend(w2, b, 0) == -EEXIST);
	CHECK(strstr(rdm_last_error(), "already added") != NULL);
	CHECK(rdm_worker_destroy(w1) == 0);
	/* Free again once its worker is gone. */
	CHECK(rdm_worker_add_backend(w2, b, 0) == 0);
	CHECK(rdm_worker_destroy(w2) == 0);
	rdm_backend_destroy(b);
}

/* 8. A listener registered on one region is refused by another, and the
 * first region goes on telling all of its listeners. */
struct cl {
	struct rdm_listener l;
	uint64_t populated;
};

static int cl_populate(struct rdm_listener *l, uint64_t off, uint64_t len)
{
	(void)off;
	((struct cl *)l)->populated += len;
	return 0;
}

static void cl_discard(struct rdm_listener *l, uint64_t off, uint64_t len)
{
	(void)off;
	((struct cl *)l)->populated -= len;
}

static const struct rdm_listener_ops cl_ops = {cl_populate, cl_discard};

static void test_listener_two_regions(void)
{
	struct rdm_region *a = region(0, RDM_POLICY_BLOCK, NULL, NULL), *b = region(0, RDM_POLICY_BLOCK, NULL, NULL);
	struct cl l1 = {.l = {.ops = &cl_ops, .offset = 0, .length = REGION}};
	struct cl l2 = {.l = {.ops = &cl_ops, .offset = 0, .length = REGION}};

	CHECK(rdm_listener_register(a, &l1.l) == 0);
	CHECK(rdm_listener_register(a, &l2.l) == 0);
	CHECK(rdm_listener_register(b, &l2.l) == -EINVAL);
	CHECK(strstr(rdm_last_error(), "another region") != NULL);
	CHECK(rdm_listener_register(a, &l2.l) == -EINVAL);
	CHECK(rdm_populate(a, 0, 4 * BS) == 0);
	CHECK(l1.populated == 4 * BS && l2.populated == 4 * BS);
	CHECK(rdm_listener_unregister(b, &l2.l) == -ENOENT);
	CHECK(rdm_listener_unregister(a, &l2.l) == 0);
	CHECK(l2.populated == 0);
	CHECK(rdm_listener_register(b, &l2.l) == 0); /* free again */
	CHECK(rdm_region_destroy(a) == 0);
	CHECK(l1.populated == 0);
	CHECK(rdm_listener_register(b, &l1.l) == 0); /* destroy gave it back */
	CHECK(rdm_region_destroy(b) == 0);
}

/* 7/9c. Changes from callbacks: refused with -EDEADLK, never a hang. */
struct reenter {
	struct rdm_listener l;
	struct rdm_region *self, *other;
	struct rdm_listener *extra;
	int populate_self, populate_other, reg, unreg, destroy, discard_all;
	bool armed;
};

static int re_populate(struct rdm_listener *l, uint64_t off, uint64_t len)
{
	struct reenter *x = (struct reenter *)l;

	(void)off;
	(void)len;
	if (!x->armed)
		return 0;
	x->armed = false;
	x->populate_self = rdm_populate(x->self, REGION - BS, BS);
	x->populate_other = rdm_populate(x->other, 0, BS);
	x->reg = rdm_listener_register(x->self, x->extra);
	x->unreg = rdm_listener_unregister(x->self, l);
	x->destroy = rdm_region_destroy(x->self);
	x->discard_all = rdm_discard_all(x->self);
	CHECK(rdm_is_populated(x->self, 0, BS) == false); /* queries answer */
	return 0;
}

static void re_discard(struct rdm_listener *l, uint64_t off, uint64_t len)
{
	(void)l;
	(void)off;
	(void)len;
}

static const struct rdm_listener_ops re_ops = {re_populate, re_discard};

static int replay_changes(void *opaque, uint64_t off, uint64_t len)
{
	struct rdm_region *r = opaque;

	(void)off;
	(void)len;
	return rdm_populate(r, REGION - BS, BS);
}

static void test_changes_from_callbacks(bool with_worker)
{
	struct rdm_region *self = region(0, RDM_POLICY_BLOCK, NULL, NULL), *other = region(0, RDM_POLICY_BLOCK, NULL, NULL);
	struct cl extra = {.l = {.ops = &cl_ops, .offset = 0, .length = REGION}};
	struct reenter x = {.l = {.ops = &re_ops, .offset = 0, .length = REGION}, .self = self, .other = other,
			    .extra = &extra.l};
	struct rdm_worker *w = NULL;
	struct rdm_backend *b = NULL;

	if (with_worker) {
		w = worker(NULL);
		b = sim(0);
		CHECK(rdm_worker_add_backend(w, b, 0) == 0);
		CHECK(rdm_worker_attach(w, self, b) == 0);
	}
	CHECK(rdm_listener_register(self, &x.l) == 0);
	x.armed = true;
	CHECK(rdm_populate(self, 0, BS) == 0);
	CHECK(x.populate_self == -EDEADLK && x.populate_other == -EDEADLK && x.reg == -EDEADLK &&
	      x.unreg == -EDEADLK && x.destroy == -EDEADLK && x.discard_all == -EDEADLK);
	CHECK(rdm_populated_bytes(self, 0, REGION) == BS);
	CHECK(rdm_populated_bytes(other, 0, REGION) == 0);
	CHECK(extra.l.rdm_region == NULL);
	/* Replay callbacks run inside an RCU read-side section. */
	CHECK(rdm_replay_populated(self, 0, REGION, replay_changes, other) == -EDEADLK);
	CHECK(strstr(rdm_last_error(), "callback") != NULL);
	/* So does the caller's own read-side section. */
	rcu_read_lock();
	CHECK(rdm_populate(other, 0, BS) == -EDEADLK);
	CHECK(strstr(rdm_last_error(), "read-side") != NULL);
	rcu_read_unlock();
	CHECK(rdm_populate(other, 0, BS) == 0);
	CHECK(rdm_region_destroy(self) == 0);
	CHECK(rdm_region_destroy(other) == 0);
	if (with_worker) {
		CHECK(rdm_worker_destroy(w) == 0);
		rdm_backend_destroy(b);
	}
}

/* 5. rdm_fail may format the thread's own message into itself. */
static void test_fail_formats_own_message(void)
{
	struct rdm_region *r = region(0, RDM_POLICY_BLOCK, NULL, NULL);
	struct rdm_producer *p;
	struct rdm_worker *w = worker(NULL);
	struct rdm_backend *b = sim(0);
	struct rdm_change c = {.region = r, .kind = RDM_CHANGE_POPULATE, .offset = 1, .length = BS};
	uint64_t t;

	REQUIRE(rdm_producer_create(&p) == 0);
	CHECK(rdm_worker_add_backend(w, b, 0) == 0);
	CHECK(rdm_worker_attach(w, r, b) == 0);
	/* The burst's range error is "change 0: " + the range check's message. */
	CHECK(rdm_producer_submit(p, &c, 1, &t) == -EINVAL);
	CHECK(strcmp(rdm_last_error(), "change 0: change [0x1, +0x200000): not aligned to the block size 0x200000") ==
	      0);
	CHECK(strstr(rdm_last_error() + 10, "change 0:") == NULL);
	rdm_producer_destroy(p);
	CHECK(rdm_region_destroy(r) == 0);
	CHECK(rdm_worker_destroy(w) == 0);
	rdm_backend_destroy(b);
}

/* 6. The log handler's function and opaque pointer come from one call. */
static void log_a(void *opaque, enum rdm_log_level level, const char *msg)
{
	(void)level;
	(void)msg;
	CHECK(opaque == (void *)0xa);
}

static void log_b(void *opaque, enum rdm_log_level level, const char *msg)
{
	(void)level;
	(void)msg;
	CHECK(opaque == (void *)0xb);
}

static _Atomic bool log_stop;

static void *log_spam(void *arg)
{
	(void)arg;
	/* Relaxed: a stop flag, nothing is published with it. */
	while (!atomic_load_explicit(&log_stop, memory_order_relaxed))
		CHECK(rdm_populate(NULL, 0, 0) == -EINVAL); /* logs at RDM_LOG_DEBUG */
	return NULL;
}

static void test_log_handler_pairs(void)
{
	pthread_t th[2];

	for (int i = 0; i < 2; i++)
		REQUIRE(pthread_create(&th[i], NULL, log_spam, NULL) == 0);
	for (int i = 0; i < 200000; i++)
		CHECK(rdm_set_log_handler(i & 1 ? log_a : log_b, (void *)(uintptr_t)(i & 1 ? 0xa : 0xb),
					  RDM_LOG_DEBUG) == 0);
	atomic_store_explicit(&log_stop, true, memory_order_relaxed);
	for (int i = 0; i < 2; i++)
		pthread_join(th[i], NULL);
	CHECK(rdm_set_log_handler(NULL, NULL, RDM_LOG_DEBUG) == 0);
	rcu_barrier(); /* the replaced records are freed before the leak check */
}

/* 10. Flush and the IOMMU-state queries, against the sim and an oracle. */
static void test_flush_and_queries(void)
{
	struct rel rel = {0};
	struct rdm_region *r = region(0, RDM_POLICY_DEFER, on_release, &rel);
	struct rdm_backend *b = sim(0), *other = sim(0);
	struct rdm_worker *w = worker(NULL);
	struct rdm_producer *p;
	struct rdm_mapping maps[64];
	struct rdm_deferred d[64];
	uint64_t t, bytes = 0, mapped = 0;
	size_t n = 0, nd = 0;

	REQUIRE(rdm_producer_create(&p) == 0);
	CHECK(rdm_worker_add_backend(w, b, 0) == 0);
	CHECK(rdm_worker_add_backend(w, other, 0) == 0);
	CHECK(rdm_region_get_mappings(r, b, maps, 64, &n) == -ENOENT);
	CHECK(rdm_worker_attach(w, r, b) == 0);
	CHECK(rdm_region_get_mappings(r, other, maps, 64, &n) == -ENOENT);
	CHECK(rdm_region_get_mappings(r, b, NULL, 1, &n) == -EINVAL);
	/* One populate of everything: defer maps it in a few large mappings,
	 * so the discard of block 3 is deferred. Flush waits for both. */
	CHECK(rdm_producer_populate(p, r, 0, REGION, &t) == 0);
	CHECK(rdm_producer_discard(p, r, 3 * BS, BS, &t) == 0);
	CHECK(rdm_worker_flush(w) == 0);
	CHECK(rdm_producer_poll(p, t, NULL) == 0); /* complete after the flush */
	CHECK(rdm_region_get_mappings(r, b, maps, 0, &n) == 0);
	REQUIRE(n > 0 && n <= 64);
	CHECK(rdm_region_get_mappings(r, b, maps, 64, &n) == 0);
	for (size_t i = 0; i < n; i++) {
		CHECK(rdm_sim_is_mapped(b, maps[i].iova, maps[i].length, true,
					(uint64_t)(uintptr_t)host + maps[i].offset));
		CHECK(i == 0 || maps[i].offset >= maps[i - 1].offset + maps[i - 1].length);
		mapped += maps[i].length;
	}
	CHECK(mapped == REGION); /* defer: block 3 stays mapped */
	CHECK(rdm_region_get_deferred(r, d, 64, &nd, &bytes) == 0);
	CHECK(nd == 1 && d[0].offset == 3 * BS && d[0].length == BS && bytes == BS);
	CHECK(rel.n[3] == 0);
	rdm_producer_destroy(p);
	CHECK(rdm_region_destroy(r) == 0);
	CHECK(rel.n[3] == 1);
	CHECK(rdm_worker_destroy(w) == 0);
	rdm_backend_destroy(b);
	rdm_backend_destroy(other);
}

int main(void)
{
	host = aligned_alloc(1 << 21, REGION);
	REQUIRE(host != NULL);
	test_producer_after_worker_destroyed();
	test_failed_attach();
	test_attach_alloc_failures();
	test_async_vs_destroy();
	test_ticket_slots_and_many_workers();
	test_backend_two_workers();
	test_listener_two_regions();
	test_changes_from_callbacks(false);
	test_changes_from_callbacks(true);
	test_fail_formats_own_message();
	test_log_handler_pairs();
	test_flush_and_queries();
	free(host);
	return check_exit();
}
