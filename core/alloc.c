/* SPDX-License-Identifier: MIT */
/* core/alloc.c - the counted allocator (see alloc.h). */
#include "core/alloc.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/jemalloc.h"

void rdm_mem_init(struct rdm_mem *m)
{
	atomic_init(&m->cur, 0);
	atomic_init(&m->peak, 0);
	atomic_init(&m->allocs, 0);
	m->arena = 0;
}

void rdm_mem_set_arena(struct rdm_mem *m, unsigned arena)
{
	m->arena = arena;
}

/* arena: rdm_mem.arena (0: malloc). An arena's memory bypasses the thread
 * cache, which may hold other arenas' objects (core/numa.c). */
static void *raw_alloc(unsigned arena, size_t size, size_t align)
{
#ifdef RDM_HAVE_JEMALLOC
	if (arena)
		return mallocx(size, MALLOCX_ALIGN(align) | MALLOCX_ARENA(arena - 1) | MALLOCX_TCACHE_NONE);
#endif
	void *p = NULL;

	(void)arena;
	if (align < sizeof(void *))
		align = sizeof(void *);
	return posix_memalign(&p, align, size) == 0 ? p : NULL;
}

static void raw_free(unsigned arena, void *p, size_t size, size_t align)
{
#ifdef RDM_HAVE_JEMALLOC
	if (arena) {
		sdallocx(p, size, MALLOCX_ALIGN(align) | MALLOCX_TCACHE_NONE);
		return;
	}
#endif
	(void)arena;
	(void)size;
	(void)align;
	free(p);
}

/* Injection state (see alloc.h). Relaxed: each attempt needs a unique
 * number, and the test that arms the hook does so while it alone runs rdm
 * calls, or accepts whichever thread's attempt draws the number. */
static atomic_ulong inject_at;     /* 0: off */
static atomic_bool inject_sticky;
static atomic_ulong attempts;
static atomic_ulong injected;

void rdm_alloc_inject(unsigned long k, bool sticky)
{
	atomic_store_explicit(&inject_at, 0, memory_order_relaxed);
	atomic_store_explicit(&attempts, 0, memory_order_relaxed);
	atomic_store_explicit(&injected, 0, memory_order_relaxed);
	atomic_store_explicit(&inject_sticky, sticky, memory_order_relaxed);
	atomic_store_explicit(&inject_at, k, memory_order_relaxed);
}

unsigned long rdm_alloc_attempts(void)
{
	return atomic_load_explicit(&attempts, memory_order_relaxed);
}

unsigned long rdm_alloc_injected(void)
{
	return atomic_load_explicit(&injected, memory_order_relaxed);
}

bool rdm_alloc_should_fail(void)
{
	unsigned long k = atomic_load_explicit(&inject_at, memory_order_relaxed);
	unsigned long n;

	if (k == 0)
		return false;
	n = atomic_fetch_add_explicit(&attempts, 1, memory_order_relaxed) + 1;
	if (n == k || (n > k && atomic_load_explicit(&inject_sticky, memory_order_relaxed))) {
		atomic_fetch_add_explicit(&injected, 1, memory_order_relaxed);
		return true;
	}
	return false;
}

void *rdm_malloc(size_t size)
{
	return rdm_alloc_should_fail() ? NULL : malloc(size);
}

void *rdm_calloc(size_t n, size_t size)
{
	return rdm_alloc_should_fail() ? NULL : calloc(n, size);
}

void *rdm_aligned_alloc(size_t align, size_t size)
{
	/* aligned_alloc wants a size that is a multiple of align. */
	size = (size + align - 1) & ~(align - 1);
	return rdm_alloc_should_fail() ? NULL : aligned_alloc(align, size);
}

void *rdm_aligned_zalloc(size_t align, size_t size)
{
	void *p = rdm_aligned_alloc(align, size);

	if (p)
		memset(p, 0, size);
	return p;
}

void *rdm_reallocarray(void *p, size_t n, size_t size)
{
	if (size != 0 && n > SIZE_MAX / size)
		return NULL;
	return rdm_alloc_should_fail() ? NULL : realloc(p, n * size);
}

void rdm_free(void *p)
{
	free(p);
}

void *rdm_arena_alloc(unsigned arena, size_t size, size_t align)
{
	return rdm_alloc_should_fail() ? NULL : raw_alloc(arena, size, align);
}

void rdm_arena_free(unsigned arena, void *p, size_t size, size_t align)
{
	if (p != NULL)
		raw_free(arena, p, size, align);
}

void *rdm_mem_alloc(struct rdm_mem *m, size_t size, size_t align)
{
	void *p = rdm_alloc_should_fail() ? NULL : raw_alloc(m->arena, size, align);
	size_t cur, peak;

	if (p == NULL)
		return NULL;
	/* Relaxed: statistics only (see alloc.h). */
	cur = atomic_fetch_add_explicit(&m->cur, size, memory_order_relaxed) + size;
	atomic_fetch_add_explicit(&m->allocs, 1, memory_order_relaxed);
	peak = atomic_load_explicit(&m->peak, memory_order_relaxed);
	while (cur > peak &&
	       !atomic_compare_exchange_weak_explicit(&m->peak, &peak, cur, memory_order_relaxed,
						      memory_order_relaxed))
		;
	return p;
}

/* The quarantine: a list of poisoned blocks, kept apart from the blocks. */
struct quarantined {
	struct quarantined *next;
	void *p;
	size_t size, align;
	unsigned arena;
};

/* Bounded: past this many bytes the oldest quarantined blocks are freed
 * (reads long after a grace period are not the bugs the poison looks for,
 * and AddressSanitizer builds catch those too). */
#define QUARANTINE_MAX_BYTES (64u << 20)

static atomic_bool quarantine_on;

bool rdm_mem_quarantine_enabled(void)
{
	/* Relaxed: a test switches the hook while no state exists. */
	return atomic_load_explicit(&quarantine_on, memory_order_relaxed);
}
static pthread_mutex_t quarantine_lock = PTHREAD_MUTEX_INITIALIZER;
static struct quarantined *quarantine, *quarantine_tail; /* oldest first */
static size_t quarantine_bytes;

void rdm_mem_free(struct rdm_mem *m, void *p, size_t size, size_t align)
{
	if (p == NULL)
		return;
	atomic_fetch_sub_explicit(&m->cur, size, memory_order_relaxed);
	/* Relaxed: a test switches the hook while no state exists. */
	if (atomic_load_explicit(&quarantine_on, memory_order_relaxed)) {
		struct quarantined *q = malloc(sizeof(*q));

		memset(p, RDM_MEM_POISON, size);
		if (q != NULL) {
			q->p = p;
			q->size = size;
			q->align = align;
			q->arena = m->arena;
			struct quarantined *old = NULL;

			q->next = NULL;
			pthread_mutex_lock(&quarantine_lock);
			if (quarantine_tail != NULL)
				quarantine_tail->next = q;
			else
				quarantine = q;
			quarantine_tail = q;
			quarantine_bytes += size;
			if (quarantine_bytes > QUARANTINE_MAX_BYTES) {
				old = quarantine;
				quarantine = old->next;
				if (quarantine == NULL)
					quarantine_tail = NULL;
				quarantine_bytes -= old->size;
			}
			pthread_mutex_unlock(&quarantine_lock);
			if (old != NULL) {
				raw_free(old->arena, old->p, old->size, old->align);
				free(old);
			}
			return;
		}
	}
	raw_free(m->arena, p, size, align);
}

size_t rdm_mem_current(const struct rdm_mem *m)
{
	return atomic_load_explicit(&m->cur, memory_order_relaxed);
}

size_t rdm_mem_peak(const struct rdm_mem *m)
{
	return atomic_load_explicit(&m->peak, memory_order_relaxed);
}

void rdm_mem_reset_peak(struct rdm_mem *m)
{
	atomic_store_explicit(&m->peak, atomic_load_explicit(&m->cur, memory_order_relaxed),
			      memory_order_relaxed);
}

void rdm_mem_set_quarantine(bool on)
{
	atomic_store_explicit(&quarantine_on, on, memory_order_relaxed);
}

void rdm_mem_quarantine_drain(void)
{
	struct quarantined *q;

	pthread_mutex_lock(&quarantine_lock);
	q = quarantine;
	quarantine = quarantine_tail = NULL;
	quarantine_bytes = 0;
	pthread_mutex_unlock(&quarantine_lock);
	while (q != NULL) {
		struct quarantined *next = q->next;

		raw_free(q->arena, q->p, q->size, q->align);
		free(q);
		q = next;
	}
}
