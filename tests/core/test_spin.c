/*
 * test_spin.c - the spin-or-sleep rule of core/wait.h (worker.c "Handoff",
 * H3) against a model of the handoff between a waiting caller and the
 * worker on two CPUs.
 *
 * The model, one request at a time: the caller submits at S; the worker,
 * idle since its last batch ended at E with the budget it took then,
 * catches the record spinning if S - E is within it, else it slept and runs
 * W_worker after the doorbell; it works `work` ns and completes at D; the
 * caller, spinning for its own budget from S, sees D if D - S is within it,
 * else it slept and runs W_caller after the worker's wake; it thinks
 * `think` ns and submits again. Both sides note their waits and wake-ups
 * as the library does: a wait up to the other side's act (S - E, D - S), a
 * wake-up as W.
 *
 * Checks, swept over wake-up costs, work and think times:
 *  1. From the state where both sides sleep after every handoff (their
 *     averages as measured there), and from the initial state, the pair
 *     ends up never sleeping whenever work and think are shorter than a
 *     wake-up (then spinning is cheaper): the lock-in is left. With the
 *     old default cap (50 us) or the old rule (no spin once the average
 *     exceeds the cap) this fails for the wake-ups measured on VMs.
 *  2. When the waits are much longer than a wake-up, a side spins about
 *     one wake-up per wait before it sleeps (CPU bounded by the wake-up
 *     cost, not by the cap). The old rule spun through them.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <rdm/worker.h>

#include "core/wait.h"
#include "tests/check.h"

#define US 1000u

struct model {
	uint64_t w_worker, w_caller, work, think;
	struct rdm_spin worker, caller;
	uint64_t now, idle_since;
	/* Per run of `model_run`: */
	uint64_t worker_sleeps, caller_sleeps, caller_spin_ns, worker_spin_ns, waits;
};

static void model_init(struct model *m, uint64_t cap, uint64_t w_worker, uint64_t w_caller, uint64_t work,
		       uint64_t think)
{
	*m = (struct model){.w_worker = w_worker, .w_caller = w_caller, .work = work, .think = think};
	rdm_spin_init(&m->worker, cap);
	rdm_spin_init(&m->caller, cap);
}

/* The averages of the state in which both sides sleep after every handoff:
 * the caller's wait is the worker's wake-up plus the work, the worker's gap
 * the caller's wake-up plus the think time. */
static void model_locked(struct model *m)
{
	m->caller.wait_avg = m->w_worker + m->work;
	m->caller.wake_avg = m->w_caller;
	m->worker.wait_avg = m->w_caller + m->think;
	m->worker.wake_avg = m->w_worker;
}

static void model_run(struct model *m, unsigned requests)
{
	m->worker_sleeps = m->caller_sleeps = m->caller_spin_ns = m->worker_spin_ns = m->waits = 0;
	for (unsigned i = 0; i < requests; i++) {
		uint64_t submit = m->now, start, done;
		/* The worker took its budget when its last batch ended. */
		uint64_t wb = rdm_spin_budget(&m->worker), cb = rdm_spin_budget(&m->caller);
		uint64_t gap = submit - m->idle_since;

		rdm_spin_note(&m->worker, gap);
		if (gap <= wb) {
			start = submit;
			m->worker_spin_ns += gap;
		} else {
			start = submit + m->w_worker;
			rdm_spin_note_wake(&m->worker, m->w_worker);
			m->worker_sleeps++;
			m->worker_spin_ns += wb;
		}
		done = start + m->work;
		rdm_spin_note(&m->caller, done - submit);
		m->waits++;
		if (done - submit <= cb) {
			m->now = done;
			m->caller_spin_ns += done - submit;
		} else {
			m->now = done + m->w_caller;
			rdm_spin_note_wake(&m->caller, m->w_caller);
			m->caller_sleeps++;
			m->caller_spin_ns += cb;
		}
		m->idle_since = done;
		m->now += m->think;
	}
}

static const uint64_t wakes[] = {2 * US, 10 * US, 50 * US, 100 * US, 250 * US};
static const uint64_t works[] = {US / 2, 3 * US, 20 * US, 80 * US};
static const uint64_t thinks[] = {US / 3, 2 * US, 15 * US};

/* 1. Leaving the lock-in (and starting) when spinning is the cheaper choice. */
static void check_recovery(uint64_t cap)
{
	unsigned cases = 0;

	for (size_t a = 0; a < sizeof(wakes) / sizeof(wakes[0]); a++)
		for (size_t b = 0; b < sizeof(wakes) / sizeof(wakes[0]); b++)
			for (size_t c = 0; c < sizeof(works) / sizeof(works[0]); c++)
				for (size_t d = 0; d < sizeof(thinks) / sizeof(thinks[0]); d++) {
					uint64_t ww = wakes[a], wc = wakes[b], work = works[c], think = thinks[d];

					/* Spinning is the better choice only when each side's wait
					 * is shorter than its own wake-up. */
					if (work >= wc || think >= ww)
						continue;
					for (int locked = 0; locked < 2; locked++) {
						struct model m;

						model_init(&m, cap, ww, wc, work, think);
						if (locked)
							model_locked(&m);
						model_run(&m, 200);
						model_run(&m, 100);
						cases++;
						if (m.worker_sleeps || m.caller_sleeps) {
							fprintf(stderr,
								"recovery: wake worker %" PRIu64 " caller %" PRIu64
								" ns, work %" PRIu64 " think %" PRIu64
								" ns, from %s: %" PRIu64 " worker and %" PRIu64
								" caller sleeps in the last 100 handoffs\n",
								ww, wc, work, think, locked ? "lock-in" : "start",
								m.worker_sleeps, m.caller_sleeps);
							CHECK(!"the handoff stays in sleeping");
						}
					}
				}
	CHECK(cases > 50);
}

/* 2. Long waits: a bounded spin, then a sleep. */
static void check_long_waits(uint64_t cap)
{
	for (size_t a = 0; a < 3; a++) {
		uint64_t w = wakes[a];

		for (uint64_t mult = 10; mult <= 100; mult *= 10) {
			struct model m;

			model_init(&m, cap, w, w, mult * w, mult * w);
			model_run(&m, 200);
			model_run(&m, 100);
			/* Each side's budget is W; a little slack for the averages'
			 * integer steps. */
			uint64_t most = w + w / 8;

			if (m.caller_spin_ns > m.waits * most || m.worker_spin_ns > m.waits * most) {
				fprintf(stderr,
					"long waits: wake %" PRIu64 " ns, waits %" PRIu64 " ns: spun %" PRIu64
					" (caller) and %" PRIu64 " (worker) ns per wait, more than %" PRIu64 "\n",
					w, mult * w, m.caller_spin_ns / m.waits, m.worker_spin_ns / m.waits, most);
				CHECK(!"spinning through long waits");
			}
			CHECK(m.caller_sleeps == m.waits && m.worker_sleeps == m.waits);
		}
	}
}

/* The rule's own bounds, directly. */
static void check_budget(void)
{
	struct rdm_spin s;

	rdm_spin_init(&s, 1000 * US);
	s.wake_avg = 10 * US;
	s.wait_avg = 1 * US;
	CHECK(rdm_spin_budget(&s) == 10 * US); /* floor: one wake-up */
	s.wait_avg = 8 * US;
	CHECK(rdm_spin_budget(&s) == 16 * US); /* twice the waits */
	s.wait_avg = 20 * US;
	CHECK(rdm_spin_budget(&s) == 40 * US); /* waits up to 2 W: still twice */
	s.wait_avg = 21 * US;
	CHECK(rdm_spin_budget(&s) == 10 * US); /* longer: one wake-up */
	s.wait_avg = 500 * US;
	CHECK(rdm_spin_budget(&s) == 10 * US);
	s.wake_avg = 900 * US;
	CHECK(rdm_spin_budget(&s) == 1000 * US); /* never above the cap */
	/* Samples are clipped to 4 x cap. */
	rdm_spin_init(&s, 10 * US);
	for (int i = 0; i < 100; i++)
		rdm_spin_note(&s, UINT64_MAX / 2);
	CHECK(s.wait_avg <= 40 * US);
}

/*
 * rdm_futex_sleep() tells a real sleep from a wait that never slept, so
 * that only the former is noted as a wake-up sample: a word that changed
 * before the call returns false at once; a sleeper the other thread wakes
 * returns true. The waker changes the word only once the sleeper's thread
 * is seen asleep (state S in /proc), so the second case cannot race.
 */
struct sleeper {
	_Atomic uint32_t word;
	_Atomic pid_t tid;
};

static bool thread_sleeping(pid_t tid)
{
	char path[64], buf[256];
	FILE *f;
	char *p;
	bool s = false;

	snprintf(path, sizeof(path), "/proc/self/task/%d/stat", (int)tid);
	f = fopen(path, "r");
	if (!f)
		return false;
	if (fgets(buf, sizeof(buf), f) && (p = strrchr(buf, ')')) != NULL)
		s = p[1] == ' ' && p[2] == 'S';
	fclose(f);
	return s;
}

static void *waker(void *arg)
{
	struct sleeper *sl = arg;
	pid_t tid;

	while ((tid = atomic_load_explicit(&sl->tid, memory_order_acquire)) == 0)
		sched_yield();
	while (!thread_sleeping(tid))
		usleep(100);
	/* Release: pairs with nothing the sleeper reads but the word itself. */
	atomic_fetch_add_explicit(&sl->word, 1, memory_order_release);
	rdm_futex(&sl->word, FUTEX_WAKE_PRIVATE, 1);
	return NULL;
}

static void check_futex_sleep(void)
{
	struct sleeper sl = { 0, 0 };
	pthread_t th;

	/* The word moved on before the call: no sleep, no sample. */
	CHECK(!rdm_futex_sleep(&sl.word, 1));
	REQUIRE(pthread_create(&th, NULL, waker, &sl) == 0);
	/* Release: publishes the tid the waker polls. */
	atomic_store_explicit(&sl.tid, (pid_t)syscall(SYS_gettid), memory_order_release);
	bool slept = false;

	/* A spurious wake-up (true, word unchanged) just sleeps again. */
	while (atomic_load_explicit(&sl.word, memory_order_acquire) == 0)
		slept = rdm_futex_sleep(&sl.word, 0) || slept;
	CHECK(slept);
	pthread_join(th, NULL);
}

int main(void)
{
	uint64_t cap = (uint64_t)RDM_WORKER_DEFAULT_SPIN_US * US;

	check_futex_sleep();

	check_budget();
	check_recovery(cap);
	check_long_waits(cap);
	return check_exit();
}
