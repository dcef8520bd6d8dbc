/* SPDX-License-Identifier: MIT */
/*
 * core/wait.h - the waiting primitives the worker and the producers share:
 * a private futex on a 32-bit atomic word, a monotonic clock, a pause.
 */
#ifndef RDM_CORE_WAIT_H
#define RDM_CORE_WAIT_H

#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <linux/futex.h>

/*
 * Data that two threads of a handoff write go on different cache lines:
 * a group of fields written by one side starts RDM_SPLIT bytes (two 64-byte
 * lines: Intel's adjacent-line prefetcher fetches lines in pairs) away
 * from any field the other side writes; RDM_LINE separates the fields of
 * one small array element. Every line the worker and a caller share costs
 * a transfer between their cores per request (~60 ns measured here), and a
 * synchronous change crosses a few of them twice: see worker.c "Handoff".
 */
#define RDM_LINE 64
#define RDM_SPLIT 128

/* futex(2) on a 32-bit atomic word (private to this process). */
static inline long rdm_futex(_Atomic uint32_t *addr, int op, uint32_t val)
{
	return syscall(SYS_futex, addr, op, val, NULL, NULL, 0);
}

/*
 * Sleep while *addr holds `seen`. True if the thread went to sleep and a
 * wake (or a spurious wake-up) ended it; false if the word had changed
 * before the kernel queued the thread (EAGAIN) or a signal ended the wait:
 * then no wake-up was paid, and a side measuring its wake-up cost (H3)
 * must not take the time since the other side's wake as a sample of it.
 */
static inline bool rdm_futex_sleep(_Atomic uint32_t *addr, uint32_t seen)
{
	return rdm_futex(addr, FUTEX_WAIT_PRIVATE, seen) == 0;
}

/* A monotonic clock in nanoseconds (vDSO, no system call). */
static inline uint64_t rdm_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* A polite busy-wait step. */
static inline void rdm_cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#elif defined(__aarch64__)
	__asm__ __volatile__("yield" ::: "memory");
#endif
}

/*
 * Adaptive spinning (worker.c, "Handoff", H3): one side's measure of its
 * waits. wait_avg is a moving average (1/8 weight) of how long its waits
 * took until the other side had done its part (not until this side got a
 * CPU back after sleeping); wake_avg one of how long this side took to run
 * again after the other side woke it from a futex sleep (W). Samples are
 * clipped to 4 x cap. The budget is twice wait_avg - enough to catch the
 * usual wait and its spread - but never less than W; when wait_avg is
 * above 2 W, W alone; never more than cap.
 *  - The floor W: a wait shorter than a sleep and a wake is cheaper spun,
 *    and spinning W before sleeping costs at most about twice the better
 *    choice whatever the waits are (the classic competitive bound).
 *  - Long waits (above 2 W): spun for W, then slept through. No wait is
 *    spun longer than 4 W (at wait_avg = 2 W).
 *  - Why waits up to 2 W are still spun: a wait is a round trip to another
 *    thread that spins and sleeps by the same rule. Once one side sleeps,
 *    the other side's next wait includes that side's wake-up (W + the
 *    work); a budget below that makes it sleep too, and both then sleep
 *    after every handoff, each wait including a wake-up: a stable state.
 *    Measured on 2 vCPUs of a VM whose idle vCPUs halt (rdm-replay, trace
 *    A): W 80-250 us, 50-500 us per request in that state against 2-6 us
 *    spinning; the old rule (budget 0 above cap) and a budget of W alone
 *    both fell into it. Spinning 2 (W + work) catches that wait once, the
 *    next handoff finds the other side spinning, and both are out.
 */
struct rdm_spin {
	uint64_t cap, wait_avg, wake_avg;
	uint32_t waits; /* noted so far (wraps) */
};

/* Until the first wake-up is measured, a prior of cap/4 stands for it, and
 * every RDM_SPIN_PROBE-th wait sleeps at once to measure one: a side learns
 * its wake-up cost only by sleeping, and one whose prior caught every wait
 * would spin through waits up to 4 x cap/4 for ever, even where a wake-up
 * costs 2 us. Starting out spinning, not sleeping, matters too: two
 * threads that start by sleeping and waking each other tend to be kept on
 * one CPU by the scheduler (measured: rdm-replay trace A on 2 CPUs then
 * runs as on one, p50 7-8 us for rdm-block instead of 4-5). */
#define RDM_SPIN_PROBE 16u

static inline void rdm_spin_init(struct rdm_spin *s, uint64_t cap)
{
	s->cap = cap;
	s->wait_avg = s->wake_avg = 0;
	s->waits = 0;
}

/* The wake-up cost W: measured, else the prior. */
static inline uint64_t rdm_spin_wake(const struct rdm_spin *s)
{
	return s->wake_avg ? s->wake_avg : s->cap / 4;
}

static inline uint64_t rdm_spin_budget(const struct rdm_spin *s)
{
	uint64_t wake = rdm_spin_wake(s);

	if (!s->wake_avg && s->waits % RDM_SPIN_PROBE == RDM_SPIN_PROBE - 1)
		return 0;
	uint64_t b = s->wait_avg <= 2 * wake && 2 * s->wait_avg > wake ? 2 * s->wait_avg : wake;

	return b < s->cap ? b : s->cap;
}

/*
 * A spinning side gives its CPU away every RDM_SPIN_YIELD_ROUNDS rounds
 * (a few us): a thread woken onto that CPU - the other side of the handoff,
 * another producer - then waits that long at most, not a scheduler time
 * slice. Without it, when threads outnumber CPUs, spinning lengthened the
 * others' wake-ups, which raised their W and so every budget (measured:
 * rdm-bench pipeline, 4 producers on 2 CPUs, 50% more CPU per change).
 * With nothing else to run, the yield returns at once.
 */
#define RDM_SPIN_YIELD_ROUNDS 64u

static inline void rdm_spin_round(unsigned round)
{
	if (round % RDM_SPIN_YIELD_ROUNDS == 0)
		sched_yield();
	else
		rdm_cpu_relax();
}

/* A moving average (1/8 weight) of samples clipped to 4 x cap; the first
 * sample is taken whole. */
static inline void rdm_spin_avg(uint64_t *avg, uint64_t sample, uint64_t cap)
{
	if (sample > 4 * cap)
		sample = 4 * cap;
	if (!sample)
		sample = 1; /* 0 means nothing measured */
	*avg = *avg ? *avg - *avg / 8 + sample / 8 : sample;
}

/* A wait of `waited` ns ended (up to the other side's part, see above). */
static inline void rdm_spin_note(struct rdm_spin *s, uint64_t waited)
{
	rdm_spin_avg(&s->wait_avg, waited, s->cap);
	s->waits++;
}

/* This side slept and ran again `late` ns after the other side woke it. */
static inline void rdm_spin_note_wake(struct rdm_spin *s, uint64_t late)
{
	rdm_spin_avg(&s->wake_avg, late, s->cap);
}

/* The CPU the calling thread runs on, or -1 (glibc reads rseq's cpu_id:
 * no system call). */
static inline int32_t rdm_this_cpu(void)
{
	return (int32_t)sched_getcpu();
}

#endif /* RDM_CORE_WAIT_H */
