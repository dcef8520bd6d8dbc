/* SPDX-License-Identifier: MIT */
/*
 * core/tsan.h - ThreadSanitizer annotations of rdm's own synchronising edges.
 *
 * TSan cannot see liburcu's grace periods (sys_membarrier or signals) nor the
 * hand-off of a callback to the call_rcu thread (liburcu's own atomics are
 * inline assembly). rdm therefore tells TSan about the two edges it relies on:
 *
 *   reader side:  every read-side critical section that dereferenced the
 *                 state ends with rdm_tsan_release(&tree->gp);
 *   reclaim side: code that frees state after a grace period (the call_rcu
 *                 callback, destroy after synchronize_rcu) first does
 *                 rdm_tsan_acquire(&tree->gp).
 *
 * TSan's release merges the thread's clock into the sync object, so many
 * readers may release into one address. The annotation is sound: a reader
 * still inside its section when the memory is freed has not released yet, so
 * a grace-period bug is still reported. Outside TSan builds these are no-ops.
 */
#ifndef RDM_CORE_TSAN_H
#define RDM_CORE_TSAN_H

#ifdef RDM_TSAN
#include <stdint.h>
void __tsan_acquire(void *addr); /* NOLINT: TSan's interface names */
void __tsan_release(void *addr);
/* TSan only uses the address as a key; going through uintptr_t drops a
 * const without a qualifier-discarding cast. */
#define rdm_tsan_acquire(addr) __tsan_acquire((void *)(uintptr_t)(addr))
#define rdm_tsan_release(addr) __tsan_release((void *)(uintptr_t)(addr))
#else
#define rdm_tsan_acquire(addr) ((void)(addr))
#define rdm_tsan_release(addr) ((void)(addr))
#endif

#endif /* RDM_CORE_TSAN_H */
