/* SPDX-License-Identifier: MIT */
/*
 * core/alloc.h - the counted allocator behind every region's state structure.
 *
 * Every byte the range structure allocates (nodes, retire batches) is counted
 * in the region's struct rdm_mem: current and peak. Memory retired but still
 * waiting for an RCU grace period stays counted until it is actually freed,
 * so "peak - steady" shows what reclamation lags behind.
 *
 * With RDM_HAVE_JEMALLOC the memory comes from jemalloc (mallocx/sdallocx);
 * otherwise (and in sanitizer builds) from malloc/free.
 *
 * Counters are updated from the writer (allocation) and from the call_rcu
 * thread (free); each is a relaxed atomic: they are statistics, nothing is
 * ordered by them.
 */
#ifndef RDM_CORE_ALLOC_H
#define RDM_CORE_ALLOC_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

struct rdm_mem {
	atomic_size_t cur;   /* bytes allocated and not yet freed */
	atomic_size_t peak;  /* highest cur since init or the last reset */
	atomic_size_t allocs; /* allocation calls, for tests and benchmarks */
};

void rdm_mem_init(struct rdm_mem *m);

/* size bytes aligned to align (a power of two <= 4096); NULL on failure. */
void *rdm_mem_alloc(struct rdm_mem *m, size_t size, size_t align);
/* Free what rdm_mem_alloc returned, with the same size and align. */
void rdm_mem_free(struct rdm_mem *m, void *p, size_t size, size_t align);

size_t rdm_mem_current(const struct rdm_mem *m);
size_t rdm_mem_peak(const struct rdm_mem *m);
/* Start a new peak measurement at the current value. */
void rdm_mem_reset_peak(struct rdm_mem *m);

/*
 * Test hook (process-wide): while enabled, freed memory is overwritten with
 * RDM_MEM_POISON bytes and kept in a quarantine (the most recent 64 MiB)
 * instead of being returned, so a reader that dereferences reclaimed memory
 * reads poison rather than reused memory.
 * rdm_mem_quarantine_drain() returns the quarantined memory (call it once no
 * thread can touch any of it).
 */
#define RDM_MEM_POISON 0x5a
void rdm_mem_set_quarantine(bool on);
void rdm_mem_quarantine_drain(void);

#endif /* RDM_CORE_ALLOC_H */
