/* SPDX-License-Identifier: MIT */
/*
 * core/alloc.h - the counted allocator behind every region's state structure.
 *
 * Every byte the range structure allocates (nodes, retire batches) is counted
 * in the region's struct rdm_mem: current and peak. Memory retired but still
 * waiting for an RCU grace period stays counted until it is actually freed,
 * so "peak - steady" shows what reclamation lags behind.
 *
 * A struct rdm_mem may name a jemalloc arena (rdm_mem_set_arena: a NUMA
 * node's, core/numa.h); its memory then comes from that arena through
 * mallocx/sdallocx. Otherwise (no arena, no jemalloc in the process, and in
 * sanitizer builds) it comes from posix_memalign/free.
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
	unsigned arena;       /* jemalloc arena + 1; 0: malloc */
};

void rdm_mem_init(struct rdm_mem *m);
/* Take m's memory from `arena` (jemalloc's index + 1; 0: malloc) from now
 * on: before its first allocation. */
void rdm_mem_set_arena(struct rdm_mem *m, unsigned arena);

/* size bytes aligned to align (a power of two <= 4096); NULL on failure. */
void *rdm_mem_alloc(struct rdm_mem *m, size_t size, size_t align);
/* Uncounted memory from arena (an rdm_mem.arena value; 0: malloc), for
 * structures that live in a struct rdm_mem's arena but outside its count
 * (the region itself). Injection applies. */
void *rdm_arena_alloc(unsigned arena, size_t size, size_t align);
void rdm_arena_free(unsigned arena, void *p, size_t size, size_t align);
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
/* Whether the quarantine is on (a node pool then frees instead of keeping:
 * reused memory would hide a late reader). */
bool rdm_mem_quarantine_enabled(void);
void rdm_mem_quarantine_drain(void);

/*
 * General-purpose allocation for everything else rdm allocates (handles,
 * worker and planner state, backends, rings). Every allocation rdm makes goes
 * through rdm_mem_alloc() or these, so that a test can make any one of them
 * fail (see the injection hook below). rdm_free(NULL) is a no-op.
 */
void *rdm_malloc(size_t size);
void *rdm_calloc(size_t n, size_t size);
void *rdm_aligned_alloc(size_t align, size_t size);
/* Zeroed, `align`-aligned (a power of two); freed with rdm_free(). */
void *rdm_aligned_zalloc(size_t align, size_t size);
/* Like realloc(), but on failure p is left as it was. n * size overflowing fails. */
void *rdm_reallocarray(void *p, size_t n, size_t size);
void rdm_free(void *p);

/*
 * Allocation-failure injection (tests only; process-wide). Every allocation
 * attempt, from any thread, takes the next number of a counter starting at 1
 * after rdm_alloc_inject(k): the attempt numbered k fails (returns NULL as if
 * the system were out of memory) and so does every later one while `sticky`.
 * k == 0 switches injection off. rdm_alloc_attempts() is the number of
 * attempts since the last rdm_alloc_inject() call; rdm_alloc_injected() the
 * number of attempts that were made to fail.
 *
 * Other resources rdm takes per call (ring memory via mmap, memfds) call
 * rdm_alloc_should_fail() first, so they count as allocation attempts too.
 *
 * The counter is a relaxed atomic: the attempt numbers need to be unique, not
 * ordered against anything else.
 */
void rdm_alloc_inject(unsigned long k, bool sticky);
unsigned long rdm_alloc_attempts(void);
unsigned long rdm_alloc_injected(void);
/* Counts one attempt; true if it is to fail. */
bool rdm_alloc_should_fail(void);

#endif /* RDM_CORE_ALLOC_H */
