/* SPDX-License-Identifier: MIT */
/*
 * core/wait.h - the waiting primitives the worker and the producers share:
 * a private futex on a 32-bit atomic word, a monotonic clock, a pause.
 */
#ifndef RDM_CORE_WAIT_H
#define RDM_CORE_WAIT_H

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

#endif /* RDM_CORE_WAIT_H */
