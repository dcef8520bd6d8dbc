/* SPDX-License-Identifier: MIT */
/*
 * core/wait.h - the waiting primitives the worker and the producers share:
 * a private futex on a 32-bit atomic word, a monotonic clock, a pause.
 */
#ifndef RDM_CORE_WAIT_H
#define RDM_CORE_WAIT_H

#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* futex(2) on a 32-bit atomic word (private to this process). */
static inline long rdm_futex(_Atomic uint32_t *addr, int op, uint32_t val)
{
	return syscall(SYS_futex, addr, op, val, NULL, NULL, 0);
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
 * Adaptive spinning (worker.c, "Handoff"). avg is a moving average (1/8
 * weight) of how long past waits took, each clipped to 4 x cap. The budget
 * is twice that average - enough to catch the usual wait and its spread -
 * up to cap; when the average is above cap, waits are long enough that a
 * futex sleep and wake (a few microseconds) costs less than spinning: 0.
 */
static inline uint64_t rdm_spin_budget(uint64_t avg, uint64_t cap)
{
	if (avg > cap)
		return 0;
	return 2 * avg < cap ? 2 * avg : cap;
}

static inline void rdm_spin_note(uint64_t *avg, uint64_t waited, uint64_t cap)
{
	if (waited > 4 * cap)
		waited = 4 * cap;
	*avg = *avg - *avg / 8 + waited / 8;
}

/* The CPU the calling thread runs on, or -1 (glibc reads rseq's cpu_id:
 * no system call). */
static inline int32_t rdm_this_cpu(void)
{
	return (int32_t)sched_getcpu();
}

#endif /* RDM_CORE_WAIT_H */
