/* test_handoff.c - the worker handoff on a shared CPU: waiter and worker pinned to one CPU, results against an oracle, no lost wake-up; the idle loop's yields; the worker leaving a CPU it shares with its waiter. */
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

#include "iommu/worker_internal.h"
#include "tests/check.h"
#include "tests/iommu/strict_oracle.h"

#define MiB (1ull << 20)
#define BS (2 * MiB)
#define NB 64u
#define REGION (NB * BS)
#define ROUNDS 3000u

/* A wake-up lost by the handoff leaves a caller asleep for ever: the
 * watchdog turns that hang into a failure that says so. */
static void on_alarm(int sig)
{
	static const char msg[] = "test_handoff: watchdog: no progress for 120 s (a lost wake-up?)\n";

	(void)sig;
	(void)!write(2, msg, sizeof(msg) - 1);
	_exit(1);
}

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static uint64_t next_rand(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

/* Pin the calling thread to `cpu`. */
static void pin_to(int cpu)
{
	cpu_set_t one;

	CPU_ZERO(&one);
	CPU_SET(cpu, &one);
	REQUIRE(sched_setaffinity(0, sizeof(one), &one) == 0);
}

/* Pin the calling thread to one CPU of its affinity mask; threads it
 * creates afterwards (the worker) inherit the mask. */
static int pin_to_one_cpu(void)
{
	cpu_set_t set;

	REQUIRE(sched_getaffinity(0, sizeof(set), &set) == 0);
	for (int c = 0; c < CPU_SETSIZE; c++)
		if (CPU_ISSET(c, &set)) {
			pin_to(c);
			return c;
		}
	REQUIRE(!"an empty affinity mask");
	return -1;
}

/* A strict region of NB blocks, attached to w through sim (added to w). */
static struct rdm_region *strict_region(struct rdm_worker *w, struct rdm_backend *sim)
{
	struct rdm_region_config rc = {
		.struct_size = sizeof(rc),
		.flags = RDM_REGION_STRICT,
		.iova = 1ull << 32,
		.size = REGION,
		.block_size = BS,
		.host_addr = (void *)(uintptr_t)(1ull << 40),
	};
	struct rdm_region *r;

	REQUIRE(rdm_worker_add_backend(w, sim, 0) == 0);
	REQUIRE(rdm_region_create(&rc, &r) == 0);
	REQUIRE(rdm_worker_attach(w, r, sim) == 0);
	return r;
}

/*
 * Waiter and worker on one CPU: synchronous changes (rdm_populate and
 * rdm_discard through the implicit producer) and asynchronous ones waited
 * for (rdm_producer_wait) or polled, each result checked against a bitmap,
 * the region's state after each one too. Every change is a handoff both
 * ways on the one CPU; a lost wake-up hangs (watchdog).
 */
static void test_one_cpu(void)
{
	struct rdm_sim_config sc = {.struct_size = sizeof(sc), .semantics = RDM_SEM_TYPE1V2, .call_ns = 1};
	struct rdm_backend *sim;
	struct rdm_worker *w;
	struct rdm_region *r;
	struct rdm_producer *p;
	bool pop[NB] = {false};
	int cpu = pin_to_one_cpu();

	REQUIRE(rdm_backend_sim_create(&sc, &sim) == 0);
	REQUIRE(rdm_worker_create(NULL, &w) == 0);
	r = strict_region(w, sim);
	REQUIRE(rdm_producer_create(&p) == 0);

	for (unsigned i = 0; i < ROUNDS; i++) {
		unsigned b = (unsigned)(next_rand() % NB);
		unsigned n = 1 + (unsigned)(next_rand() % (NB - b < 4 ? NB - b : 4));
		bool populate = next_rand() % 2;
		int want = expect(pop, b, n, populate), got = 0;
		uint64_t t;

		switch (i % 3) {
		case 0: /* synchronous */
			got = populate ? rdm_populate(r, b * BS, n * BS) : rdm_discard(r, b * BS, n * BS);
			break;
		case 1: /* asynchronous, waited for */
			REQUIRE((populate ? rdm_producer_populate(p, r, b * BS, n * BS, &t)
					  : rdm_producer_discard(p, r, b * BS, n * BS, &t)) == 0);
			REQUIRE(rdm_producer_wait(p, t, &got) == 0);
			break;
		default: /* asynchronous, polled (the worker needs this CPU: yield it) */
			REQUIRE((populate ? rdm_producer_populate(p, r, b * BS, n * BS, &t)
					  : rdm_producer_discard(p, r, b * BS, n * BS, &t)) == 0);
			for (int e; (e = rdm_producer_poll(p, t, &got)) != 0; sched_yield())
				REQUIRE(e == -EINPROGRESS);
			break;
		}
		CHECK(got == want);
		for (unsigned k = b; k < b + n; k++)
			CHECK(rdm_is_populated(r, k * BS, BS) == pop[k]);
		if (got != want) {
			fprintf(stderr, "round %u: %s blocks %u+%u: got %d, want %d\n", i,
				populate ? "populate" : "discard", b, n, got, want);
			break;
		}
	}
	/* The waiter's hint is cleared once no wait runs. */
	CHECK(atomic_load_explicit(&p->wait_cpu, memory_order_relaxed) == -1);
	/* The worker saw that it shares its CPU with the waiter (the path this
	 * test is for). Whether it then found no work and slept (local_handoffs)
	 * or the woken waiter preempted it first depends on the kernel's
	 * scheduler, so that count is only bounded. */
	uint64_t lw = atomic_load_explicit(&w->local_waiters, memory_order_relaxed);
	uint64_t lh = atomic_load_explicit(&w->local_handoffs, memory_order_relaxed);

	CHECK(lw > 0);
	CHECK(lh <= lw);
	fprintf(stderr, "one cpu: %llu batch(es) completed a waiter on the worker's CPU, %llu slept at once after\n",
		(unsigned long long)lw, (unsigned long long)lh);
	CHECK(sched_getcpu() == cpu);
	/* H5: a mask of one CPU never moves the worker. */
	CHECK(atomic_load_explicit(&w->spreads, memory_order_relaxed) == 0);
	rdm_producer_destroy(p);
	CHECK(rdm_region_destroy(r) == 0);
	CHECK(rdm_worker_destroy(w) == 0);
	rdm_backend_destroy(sim);
}

/*
 * The worker's setaffinity calls, through rdm_worker_setaffinity: the
 * first `fail_restores` calls that put the whole mask back fail (EPERM, as
 * a cpuset change or a sandbox may); a narrowing call while the whole mask
 * is not back yet is an error of the worker (spread() would then take the
 * narrowed mask for its owner's).
 */
static int full_count;
static atomic_int fail_restores, restores_failed, narrow_while_narrowed;
static atomic_bool narrowed;

static int fake_setaffinity(pthread_t t, size_t size, const cpu_set_t *mask)
{
	if (CPU_COUNT_S(size, mask) == full_count) {
		if (atomic_load(&fail_restores) > 0) {
			atomic_fetch_sub(&fail_restores, 1);
			atomic_fetch_add(&restores_failed, 1);
			return EPERM;
		}
	} else if (atomic_exchange(&narrowed, true)) {
		atomic_fetch_add(&narrow_while_narrowed, 1);
	}
	int err = pthread_setaffinity_np(t, size, mask);

	if (err == 0 && CPU_COUNT_S(size, mask) == full_count)
		atomic_store(&narrowed, false);
	return err;
}

/*
 * H5: a waiter pinned to the CPU the worker runs on, whose mask has others:
 * after a run of batches that complete a waiter on its own CPU, the worker
 * leaves that CPU, and its CPU mask is the one it had. Results are checked
 * against the oracle throughout. With `fail` > 0, the first `fail` tries to
 * put the mask back fail: the worker keeps working on the narrower mask,
 * tries again after later batches, moves no more meanwhile, and ends with
 * its whole mask.
 */
static void test_spread(int fail)
{
	struct rdm_sim_config sc = {.struct_size = sizeof(sc), .semantics = RDM_SEM_TYPE1V2, .call_ns = 1};
	struct rdm_worker_placement wp = {.struct_size = sizeof(wp)};
	cpu_set_t all, wmask0, wmask1;
	struct rdm_backend *sim;
	struct rdm_worker *w;
	struct rdm_region *r;
	bool pop[NB] = {false};
	unsigned i = 0, tries = 0;

	REQUIRE(sched_getaffinity(0, sizeof(all), &all) == 0);
	if (CPU_COUNT(&all) < 2) {
		fprintf(stderr, "spread: one CPU in the mask, nothing to spread to (skipped)\n");
		return;
	}
	full_count = CPU_COUNT(&all);
	atomic_store(&fail_restores, fail);
	atomic_store(&restores_failed, 0);
	atomic_store(&narrow_while_narrowed, 0);
	atomic_store(&narrowed, false);
	rdm_worker_setaffinity = fake_setaffinity;
	REQUIRE(rdm_backend_sim_create(&sc, &sim) == 0);
	REQUIRE(rdm_worker_create(NULL, &w) == 0);
	REQUIRE(pthread_getaffinity_np(w->thread, sizeof(wmask0), &wmask0) == 0);
	REQUIRE(CPU_COUNT(&wmask0) >= 2);
	r = strict_region(w, sim);
	/* Follow the worker to its CPU until it leaves (the scheduler may move
	 * it on its own first: then follow again); with failing restores, on
	 * until it has its whole mask back. */
	while ((atomic_load_explicit(&w->spreads, memory_order_relaxed) == 0 ||
		atomic_load(&restores_failed) < fail || atomic_load(&narrowed)) &&
	       tries++ < 200) {
		REQUIRE(rdm_worker_get_placement(w, &wp) == 0);
		if (wp.cpu >= 0 && CPU_ISSET(wp.cpu, &all))
			pin_to(wp.cpu);
		for (unsigned k = 0; k < 4 * RDM_WORKER_SPREAD_AFTER; k++, i++) {
			/* While its mask is narrowed, follow the worker to its
			 * new CPU: batches there complete a waiter on its CPU
			 * again, and must not make it move (or take the narrowed
			 * mask for its own) before the whole mask is back. */
			if (atomic_load(&narrowed) && rdm_worker_get_placement(w, &wp) == 0 && wp.cpu >= 0 &&
			    CPU_ISSET(wp.cpu, &all))
				pin_to(wp.cpu);
			unsigned b = (unsigned)(next_rand() % NB);
			bool populate = next_rand() % 2;
			int want = expect(pop, b, 1, populate);
			int got = populate ? rdm_populate(r, b * BS, BS) : rdm_discard(r, b * BS, BS);

			CHECK(got == want);
			CHECK(rdm_is_populated(r, b * BS, BS) == pop[b]);
			if (got != want) {
				fprintf(stderr, "spread, change %u: %s block %u: got %d, want %d\n", i,
					populate ? "populate" : "discard", b, got, want);
				tries = 200;
				break;
			}
		}
	}
	uint64_t spreads = atomic_load_explicit(&w->spreads, memory_order_relaxed);
	uint64_t retries = atomic_load_explicit(&w->mask_retries, memory_order_relaxed);

	CHECK(spreads > 0);
	/* Each failed restore but the first (spread()'s own) was a retry, and
	 * one more retry succeeded; none without a failure. */
	CHECK(atomic_load(&restores_failed) == fail);
	CHECK(fail == 0 ? retries == 0 : retries == (uint64_t)fail);
	CHECK(atomic_load(&narrow_while_narrowed) == 0);
	CHECK(!atomic_load(&narrowed));
	REQUIRE(pthread_getaffinity_np(w->thread, sizeof(wmask1), &wmask1) == 0);
	CHECK(CPU_EQUAL(&wmask0, &wmask1));
	REQUIRE(rdm_worker_get_placement(w, &wp) == 0);
	fprintf(stderr, "spread: %llu move(s) after %u changes, %d failed restore(s), %llu retried; worker now on CPU %d, waiter on %d\n",
		(unsigned long long)spreads, i, fail, (unsigned long long)retries, wp.cpu, sched_getcpu());
	REQUIRE(sched_setaffinity(0, sizeof(all), &all) == 0);
	CHECK(rdm_region_destroy(r) == 0);
	CHECK(rdm_worker_destroy(w) == 0);
	rdm_worker_setaffinity = pthread_setaffinity_np;
	rdm_backend_destroy(sim);
}

/* With nothing to do, the worker yields RDM_WORKER_IDLE_YIELDS times
 * before each futex sleep (it used to yield once). */
static void test_idle_yields(void)
{
	struct rdm_worker *w;

	REQUIRE(rdm_worker_create(NULL, &w) == 0);
	while (atomic_load_explicit(&w->idle_sleeps, memory_order_relaxed) == 0)
		usleep(1000);
	uint64_t yields = atomic_load_explicit(&w->idle_yields, memory_order_relaxed);

	CHECK(yields >= RDM_WORKER_IDLE_YIELDS);
	if (yields < RDM_WORKER_IDLE_YIELDS)
		fprintf(stderr, "idle: %llu yield(s) before the first sleep, want %u\n", (unsigned long long)yields,
			RDM_WORKER_IDLE_YIELDS);
	CHECK(rdm_worker_destroy(w) == 0);
}

int main(void)
{
	signal(SIGALRM, on_alarm);
	alarm(120);
	test_idle_yields();
	test_spread(0);
	test_spread(40);
	test_one_cpu();
	return check_exit();
}
