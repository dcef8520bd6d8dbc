/* test_caller_runs.c - RDM_WORKER_CALLER_RUNS: a synchronous change that finds the worker asleep runs the worker's pass on the calling thread; results and mappings against an oracle, callbacks' threads, the doorbell handed back (no lost wake-up), rdm_worker_get_thread(); rdm_worker_create all-or-nothing when an allocation fails. */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <rdm/rdm.h>
#include <rdm/region.h>
#include <rdm/worker.h>

#include "core/alloc.h"
#include "iommu/worker_internal.h"
#include "tests/check.h"
#include "tests/iommu/strict_oracle.h"

#define MiB (1ull << 20)
#define BS (2 * MiB)
#define NB 64u
#define REGION (NB * BS)

/* A wake-up lost by the doorbell's hand-back leaves a poller waiting for
 * ever: the watchdog turns that hang into a failure that says so. */
static void on_alarm(int sig)
{
	static const char msg[] = "test_caller_runs: watchdog: a test ran for 240 s (a lost wake-up?)\n";

	(void)sig;
	(void)!write(2, msg, sizeof(msg) - 1);
	_exit(1);
}

struct rng {
	uint64_t s;
};

static uint64_t next_rand(struct rng *r)
{
	r->s ^= r->s << 13;
	r->s ^= r->s >> 7;
	r->s ^= r->s << 17;
	return r->s;
}

/* Where on_batch ran: on the worker thread, or elsewhere. */
struct where {
	pthread_t worker;
	_Atomic bool known;
	_Atomic uint64_t on_worker, elsewhere;
};

static void on_batch(void *opaque, uint64_t batch_no, uint32_t changes)
{
	struct where *wh = opaque;

	(void)batch_no;
	(void)changes;
	/* Acquire: pairs with the release store of known after worker is set
	 * (batches run only after the first attach, which follows it). */
	if (!atomic_load_explicit(&wh->known, memory_order_acquire))
		return;
	if (pthread_equal(pthread_self(), wh->worker))
		atomic_fetch_add_explicit(&wh->on_worker, 1, memory_order_relaxed);
	else
		atomic_fetch_add_explicit(&wh->elsewhere, 1, memory_order_relaxed);
}

static struct rdm_worker *make_worker(uint32_t flags, struct where *wh)
{
	struct rdm_worker_config wc = {
		.struct_size = sizeof(wc), .flags = flags, .on_batch = on_batch, .on_batch_opaque = wh};
	struct rdm_worker *w;

	REQUIRE(rdm_worker_create(&wc, &w) == 0);
	REQUIRE(rdm_worker_get_thread(w, &wh->worker) == 0);
	atomic_store_explicit(&wh->known, true, memory_order_release);
	return w;
}

/* A strict region of NB blocks (block policy), attached to w through sim. */
static struct rdm_region *strict_region(struct rdm_worker *w, struct rdm_backend *sim, uint64_t iova)
{
	struct rdm_region_config rc = {
		.struct_size = sizeof(rc),
		.flags = RDM_REGION_STRICT,
		.iova = iova,
		.size = REGION,
		.block_size = BS,
		.host_addr = (void *)(uintptr_t)(iova << 8),
	};
	struct rdm_region *r;

	REQUIRE(rdm_region_create(&rc, &r) == 0);
	REQUIRE(rdm_worker_attach(w, r, sim) == 0);
	return r;
}

/* The backend maps exactly the populated blocks (block policy: one mapping
 * per block), at the region's addresses. */
static void check_mappings(struct rdm_region *r, struct rdm_backend *sim, const bool *pop, const char *what)
{
	struct rdm_mapping maps[NB];
	bool mapped[NB] = {false};
	size_t n = 0;

	REQUIRE(rdm_region_get_mappings(r, sim, maps, NB, &n) == 0);
	for (size_t i = 0; i < n; i++) {
		CHECK(maps[i].length == BS && maps[i].offset % BS == 0 && maps[i].offset < REGION);
		if (maps[i].offset < REGION)
			mapped[maps[i].offset / BS] = true;
	}
	for (unsigned k = 0; k < NB; k++)
		if (mapped[k] != pop[k]) {
			CHECK(mapped[k] == pop[k]);
			fprintf(stderr, "%s: block %u is %smapped, %spopulated\n", what, k, mapped[k] ? "" : "not ",
				pop[k] ? "" : "not ");
			return;
		}
}

/* Wait until the worker thread is idle on its doorbell: `sleeping` is set
 * and nobody holds the pass token (idle() sets it with the token, drops
 * the token, then sleeps; a caller's pass that handed the doorbell back
 * leaves the thread asleep where it was). */
static void wait_worker_asleep(struct rdm_worker *w)
{
	for (;;) {
		if (atomic_load_explicit(&w->in.sleeping, memory_order_relaxed) &&
		    pthread_mutex_trylock(&w->run) == 0) {
			bool still = atomic_load_explicit(&w->in.sleeping, memory_order_relaxed);

			pthread_mutex_unlock(&w->run);
			if (still)
				return;
		}
		usleep(200);
	}
}

/*
 * One thread, synchronous changes, the worker asleep before each: with the
 * flag the changes run their passes here (assists, on_batch on this
 * thread), without it never; results, the region's state and the backend's
 * mappings match the oracle either way.
 */
static void test_one_thread(uint32_t flags)
{
	const bool cr = flags & RDM_WORKER_CALLER_RUNS;
	struct rdm_sim_config sc = {.struct_size = sizeof(sc), .semantics = RDM_SEM_TYPE1V2, .call_ns = 1};
	struct where wh = {0};
	struct rdm_backend *sim;
	struct rdm_worker *w;
	struct rdm_region *r;
	struct rng rng = {0x9e3779b97f4a7c15ull};
	bool pop[NB] = {false};

	REQUIRE(rdm_backend_sim_create(&sc, &sim) == 0);
	w = make_worker(flags, &wh);
	REQUIRE(rdm_worker_add_backend(w, sim, 0) == 0);
	r = strict_region(w, sim, 1ull << 32);
	for (unsigned i = 0; i < 200; i++) {
		unsigned b = (unsigned)(next_rand(&rng) % NB);
		unsigned n = 1 + (unsigned)(next_rand(&rng) % (NB - b < 4 ? NB - b : 4));
		bool populate = next_rand(&rng) % 2;
		int want = expect(pop, b, n, populate);

		if (i % 4 == 0)
			wait_worker_asleep(w);
		int got = populate ? rdm_populate(r, b * BS, n * BS) : rdm_discard(r, b * BS, n * BS);

		CHECK(got == want);
		for (unsigned k = b; k < b + n; k++)
			CHECK(rdm_is_populated(r, k * BS, BS) == pop[k]);
		if (got != want) {
			fprintf(stderr, "change %u: %s blocks %u+%u: got %d, want %d\n", i,
				populate ? "populate" : "discard", b, n, got, want);
			break;
		}
		if (i % 16 == 0)
			check_mappings(r, sim, pop, cr ? "caller runs" : "worker runs");
	}
	check_mappings(r, sim, pop, cr ? "caller runs, end" : "worker runs, end");
	uint64_t assists = atomic_load_explicit(&w->assists, memory_order_relaxed);
	uint64_t here = atomic_load_explicit(&wh.elsewhere, memory_order_relaxed);
	uint64_t there = atomic_load_explicit(&wh.on_worker, memory_order_relaxed);

	fprintf(stderr, "%s: %llu pass(es) run by the caller; on_batch %llu time(s) here, %llu on the worker\n",
		cr ? "caller runs" : "worker runs", (unsigned long long)assists, (unsigned long long)here,
		(unsigned long long)there);
	if (cr) {
		/* 50 changes found the worker asleep: each ran its pass here,
		 * unless the worker woke on its own in between (rare). */
		CHECK(assists >= 25);
		CHECK(here >= 25);
	} else {
		CHECK(assists == 0);
		CHECK(here == 0);
		CHECK(there > 0);
	}
	CHECK(rdm_region_destroy(r) == 0);
	CHECK(rdm_worker_destroy(w) == 0);
	rdm_backend_destroy(sim);
}

/* ---------------------------------------------------------- concurrency */

struct sync_arg {
	struct rdm_region *r;
	unsigned lo, hi; /* this thread's blocks */
	unsigned changes;
	uint64_t seed;
	bool pop[NB];
	int failed;
};

/* Synchronous changes to the blocks [lo, hi), pausing now and then so the
 * worker falls asleep (and the next change runs its pass here). */
static void *sync_main(void *arg)
{
	struct sync_arg *a = arg;
	struct rng rng = {a->seed};

	for (unsigned i = 0; i < a->changes && !a->failed; i++) {
		unsigned b = a->lo + (unsigned)(next_rand(&rng) % (a->hi - a->lo));
		unsigned n = 1 + (unsigned)(next_rand(&rng) % (a->hi - b < 3 ? a->hi - b : 3));
		bool populate = next_rand(&rng) % 2;
		int want = expect(a->pop, b, n, populate);
		int got = populate ? rdm_populate(a->r, b * BS, n * BS) : rdm_discard(a->r, b * BS, n * BS);

		bool same = true;

		for (unsigned k = b; k < b + n; k++)
			same = same && rdm_is_populated(a->r, k * BS, BS) == a->pop[k];
		if (got != want || !same) {
			fprintf(stderr, "sync thread, change %u: %s blocks %u+%u: got %d, want %d%s\n", i,
				populate ? "populate" : "discard", b, n, got, want,
				same ? "" : "; the region's state differs");
			a->failed = 1;
		}
		if (next_rand(&rng) % 32 == 0)
			usleep(300);
	}
	return NULL;
}

struct async_arg {
	struct rdm_region *r;
	unsigned changes;
	bool pop[NB];
	int failed;
};

/*
 * Asynchronous changes to a second region, up to 8 in flight, completed by
 * polling only: a poller never runs a pass and never wakes the worker, so
 * its changes complete only if whoever drains keeps the doorbell's promise
 * (a pass that cleared `sleeping` and did not hand it back hangs here).
 */
static void *async_main(void *arg)
{
	struct async_arg *a = arg;
	struct rng rng = {0x2545f4914f6cdd1dull};
	struct rdm_producer *p;
	uint64_t tickets[8];
	int wants[8];
	unsigned blocks[8];
	bool pops[8];

	REQUIRE(rdm_producer_create(&p) == 0);
	for (unsigned i = 0; i < a->changes && !a->failed;) {
		unsigned k = 1 + (unsigned)(next_rand(&rng) % 8), sent = 0;

		for (; sent < k && i < a->changes; sent++, i++) {
			unsigned b = (unsigned)(next_rand(&rng) % NB);
			bool populate = next_rand(&rng) % 2;

			blocks[sent] = b;
			pops[sent] = populate;
			wants[sent] = expect(a->pop, b, 1, populate);
			REQUIRE((populate ? rdm_producer_populate(p, a->r, b * BS, BS, &tickets[sent])
					  : rdm_producer_discard(p, a->r, b * BS, BS, &tickets[sent])) == 0);
		}
		for (unsigned j = 0; j < sent; j++) {
			int got = 0, e;

			while ((e = rdm_producer_poll(p, tickets[j], &got)) == -EINPROGRESS)
				usleep(50);
			REQUIRE(e == 0);
			if (got != wants[j]) {
				fprintf(stderr, "async: %s block %u: got %d, want %d\n",
					pops[j] ? "populate" : "discard", blocks[j], got, wants[j]);
				a->failed = 1;
			}
		}
		if (next_rand(&rng) % 8 == 0)
			usleep(300);
	}
	rdm_producer_destroy(p);
	return NULL;
}

/*
 * Two threads of synchronous changes on halves of one region (each its own
 * oracle) and one of polled asynchronous changes on another, against one
 * caller-runs worker: passes run on all three threads and the worker's,
 * in turn; every result, both regions' states and mappings match.
 */
static void test_concurrent(void)
{
	struct rdm_sim_config sc = {.struct_size = sizeof(sc), .semantics = RDM_SEM_TYPE1V2, .call_ns = 1};
	struct where wh = {0};
	struct rdm_backend *sim;
	struct rdm_worker *w;
	struct sync_arg s[2] = {0};
	struct async_arg as = {0};
	pthread_t th[3];
	bool pop[NB];

	REQUIRE(rdm_backend_sim_create(&sc, &sim) == 0);
	w = make_worker(RDM_WORKER_CALLER_RUNS, &wh);
	REQUIRE(rdm_worker_add_backend(w, sim, 0) == 0);
	struct rdm_region *r1 = strict_region(w, sim, 1ull << 32);

	as.r = strict_region(w, sim, 1ull << 36);
	as.changes = 3000;
	for (unsigned i = 0; i < 2; i++) {
		s[i].r = r1;
		s[i].lo = i * NB / 2;
		s[i].hi = (i + 1) * NB / 2;
		s[i].changes = 3000;
		s[i].seed = 0x9e3779b97f4a7c15ull * (i + 1);
		REQUIRE(pthread_create(&th[i], NULL, sync_main, &s[i]) == 0);
	}
	REQUIRE(pthread_create(&th[2], NULL, async_main, &as) == 0);
	for (unsigned i = 0; i < 3; i++)
		pthread_join(th[i], NULL);
	CHECK(!s[0].failed && !s[1].failed && !as.failed);
	for (unsigned k = 0; k < NB; k++) {
		pop[k] = k < NB / 2 ? s[0].pop[k] : s[1].pop[k];
		CHECK(rdm_is_populated(r1, k * BS, BS) == pop[k]);
		CHECK(rdm_is_populated(as.r, k * BS, BS) == as.pop[k]);
	}
	check_mappings(r1, sim, pop, "concurrent, region 1");
	check_mappings(as.r, sim, as.pop, "concurrent, region 2");
	fprintf(stderr, "concurrent: %llu pass(es) run by callers; on_batch %llu time(s) off the worker, %llu on it\n",
		(unsigned long long)atomic_load_explicit(&w->assists, memory_order_relaxed),
		(unsigned long long)atomic_load_explicit(&wh.elsewhere, memory_order_relaxed),
		(unsigned long long)atomic_load_explicit(&wh.on_worker, memory_order_relaxed));
	CHECK(atomic_load_explicit(&w->assists, memory_order_relaxed) > 0);
	CHECK(rdm_region_destroy(r1) == 0);
	CHECK(rdm_region_destroy(as.r) == 0);
	CHECK(rdm_worker_destroy(w) == 0);
	rdm_backend_destroy(sim);
}

/*
 * The doorbell's hand-back, made to race every round: the worker asleep,
 * one thread makes a synchronous change (its pass runs there, having
 * cleared `sleeping`); this pass's on_batch holds it after its drain until
 * this thread has published an asynchronous change to another region
 * (whose publisher finds `sleeping` clear and owes nothing), then this
 * thread only polls. Nobody else submits, so that record completes only
 * if the pass's hand-back re-check saw it and woke the worker: a pass that
 * skips the re-check or the wake, or never sets `sleeping` again, leaves
 * the poller waiting (the watchdog).
 */
struct handback {
	struct rdm_region *r;
	pthread_barrier_t start, end;
	unsigned rounds;
	/* 1: the next batch holds in on_batch; 2: a batch holds; 3: released. */
	_Atomic int phase;
	_Atomic uint64_t held_off_worker;
	pthread_t worker;
	int failed;
};

static void handback_on_batch(void *opaque, uint64_t batch_no, uint32_t changes)
{
	struct handback *h = opaque;
	int armed = 1;

	(void)batch_no;
	(void)changes;
	/* Acq_rel: the acquire pairs with the test thread's release store of
	 * 1 (armed for this round); the release publishes "held" to its
	 * acquire load of phase. */
	if (!atomic_compare_exchange_strong_explicit(&h->phase, &armed, 2, memory_order_acq_rel, memory_order_relaxed))
		return;
	if (!pthread_equal(pthread_self(), h->worker))
		atomic_fetch_add_explicit(&h->held_off_worker, 1, memory_order_relaxed);
	/* Acquire: pairs with the release store of 3 after the publication. */
	while (atomic_load_explicit(&h->phase, memory_order_acquire) != 3)
		sched_yield();
}

static void *handback_sync(void *arg)
{
	struct handback *h = arg;
	bool pop = false;

	for (unsigned i = 0; i < h->rounds; i++) {
		pthread_barrier_wait(&h->start);
		int got = pop ? rdm_discard(h->r, 0, BS) : rdm_populate(h->r, 0, BS);

		if (got != 0 || rdm_is_populated(h->r, 0, BS) == pop) {
			fprintf(stderr, "hand-back, round %u: sync %s: %d\n", i, pop ? "discard" : "populate", got);
			h->failed = 1;
		}
		pop = !pop;
		pthread_barrier_wait(&h->end);
	}
	return NULL;
}

static void test_handback(void)
{
	struct rdm_sim_config sc = {.struct_size = sizeof(sc), .semantics = RDM_SEM_TYPE1V2, .call_ns = 1};
	struct handback h = {.rounds = 2000};
	struct rdm_worker_config wc = {.struct_size = sizeof(wc),
				       .flags = RDM_WORKER_CALLER_RUNS,
				       .on_batch = handback_on_batch,
				       .on_batch_opaque = &h};
	struct rdm_backend *sim;
	struct rdm_worker *w;
	struct rdm_producer *p;
	pthread_t th;
	bool pop = false;

	REQUIRE(rdm_backend_sim_create(&sc, &sim) == 0);
	REQUIRE(rdm_worker_create(&wc, &w) == 0);
	REQUIRE(rdm_worker_get_thread(w, &h.worker) == 0);
	REQUIRE(rdm_worker_add_backend(w, sim, 0) == 0);
	h.r = strict_region(w, sim, 1ull << 32);
	struct rdm_region *r2 = strict_region(w, sim, 1ull << 36);

	REQUIRE(rdm_producer_create(&p) == 0);
	REQUIRE(pthread_barrier_init(&h.start, NULL, 2) == 0 && pthread_barrier_init(&h.end, NULL, 2) == 0);
	REQUIRE(pthread_create(&th, NULL, handback_sync, &h) == 0);
	for (unsigned i = 0; i < h.rounds; i++) {
		uint64_t ticket;
		int got = 0, e;

		wait_worker_asleep(w);
		/* Release: pairs with on_batch's acquire (its CAS). */
		atomic_store_explicit(&h.phase, 1, memory_order_release);
		pthread_barrier_wait(&h.start);
		/* Acquire: pairs with on_batch's release (its CAS). */
		while (atomic_load_explicit(&h.phase, memory_order_acquire) != 2)
			sched_yield();
		REQUIRE((pop ? rdm_producer_discard(p, r2, 0, BS, &ticket) : rdm_producer_populate(p, r2, 0, BS, &ticket)) ==
			0);
		/* Release: the publication happens before the pass goes on. */
		atomic_store_explicit(&h.phase, 3, memory_order_release);
		pthread_barrier_wait(&h.end);
		while ((e = rdm_producer_poll(p, ticket, &got)) == -EINPROGRESS)
			usleep(20);
		CHECK(e == 0 && got == 0);
		pop = !pop;
		if (h.failed || e != 0 || got != 0)
			break;
	}
	pthread_join(th, NULL);
	CHECK(!h.failed);
	CHECK(rdm_is_populated(r2, 0, BS) == pop);
	uint64_t off = atomic_load_explicit(&h.held_off_worker, memory_order_relaxed);

	fprintf(stderr, "hand-back: %llu of %u rounds held a pass off the worker thread (%llu passes run by callers)\n",
		(unsigned long long)off, h.rounds,
		(unsigned long long)atomic_load_explicit(&w->assists, memory_order_relaxed));
	/* The worker was asleep before every round: its thread runs the
	 * change only when it woke on its own meanwhile (rare). */
	CHECK(off >= h.rounds / 2);
	rdm_producer_destroy(p);
	pthread_barrier_destroy(&h.start);
	pthread_barrier_destroy(&h.end);
	CHECK(rdm_region_destroy(h.r) == 0);
	CHECK(rdm_region_destroy(r2) == 0);
	CHECK(rdm_worker_destroy(w) == 0);
	rdm_backend_destroy(sim);
}

/* The flag is accepted, an unknown one is not; the thread getter's errors. */
static void test_api(void)
{
	struct rdm_worker_config wc = {.struct_size = sizeof(wc), .flags = 1u << 4};
	struct rdm_worker *w = NULL;
	pthread_t th, same;

	CHECK(rdm_worker_create(&wc, &w) == -EINVAL && w == NULL);
	wc.flags = RDM_WORKER_CALLER_RUNS;
	REQUIRE(rdm_worker_create(&wc, &w) == 0);
	CHECK(rdm_worker_get_thread(NULL, &th) == -EINVAL);
	CHECK(strstr(rdm_last_error(), "NULL worker") != NULL);
	CHECK(rdm_worker_get_thread(w, NULL) == -EINVAL);
	CHECK(rdm_worker_get_thread(w, &th) == 0);
	CHECK(pthread_equal(th, w->thread));
	CHECK(rdm_worker_get_thread(w, &same) == 0 && pthread_equal(th, same));
	CHECK(rdm_worker_destroy(w) == 0);
}

/*
 * rdm_worker_create with each of its allocations failing in turn (the pass
 * state, new with the pass token, among them), with and without the flag:
 * -ENOMEM that says so and *out untouched, or a worker that works.
 */
static void test_create_nomem(void)
{
	for (int f = 0; f < 2; f++) {
		struct rdm_worker_config wc = {.struct_size = sizeof(wc), .flags = f ? RDM_WORKER_CALLER_RUNS : 0};
		unsigned refused = 0;

		for (unsigned long k = 1; k <= 64; k++) {
			struct rdm_worker *sentinel = (struct rdm_worker *)&wc, *w = sentinel;

			rdm_alloc_inject(k, false);
			int err = rdm_worker_create(&wc, &w);
			unsigned long hit = rdm_alloc_injected();

			rdm_alloc_inject(0, false);
			if (err) {
				CHECK(err == -ENOMEM && w == sentinel);
				CHECK(strstr(rdm_last_error(), "out of memory") != NULL);
				refused++;
				continue;
			}
			/* Created: it works (a later failure, if any, was the
			 * worker thread's own, after the call returned). */
			CHECK(w != sentinel);
			CHECK(rdm_worker_flush(w) == 0);
			CHECK(rdm_worker_destroy(w) == 0);
			if (!hit)
				break;
		}
		fprintf(stderr, "create: %u allocation(s) failed in turn refused the call (flags %#x)\n", refused,
			(unsigned)wc.flags);
		CHECK(refused >= 2); /* the worker, its pass state */
	}
}

int main(void)
{
	signal(SIGALRM, on_alarm);
	/* Re-armed per test: each has 240 s. */
	alarm(240);
	test_api();
	test_create_nomem();
	test_one_thread(0);
	alarm(240);
	test_one_thread(RDM_WORKER_CALLER_RUNS);
	alarm(240);
	test_concurrent();
	alarm(240);
	test_handback();
	return check_exit();
}
