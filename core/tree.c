/* SPDX-License-Identifier: MIT */
/*
 * core/tree.c - the range structure: a copy-on-write radix tree over block
 * indices whose slots adapt to the state below them.
 *
 * Theory
 *
 * Shape. A slot covers an aligned span of blocks: 2^12 at level 0 and 64
 * times more per level up (2^(12 + 6L)). The root slot sits at the lowest
 * level whose span covers the region. A slot's value is one word:
 *
 *   EMPTY (0)           every block of the span discarded
 *   FULL (3)            every block populated
 *   ptr | 2  extent     sorted, disjoint, non-adjacent [start, end) pairs of
 *                       absolute block indices, at most EXT_MAX = 31 of them
 *   ptr | 1  bitmap     level 0 only: 4096 bits, 512 bytes, 64-byte aligned
 *   ptr | 0  inner      level > 0 only: 64 child slots, 512 bytes (a root
 *                       node: root_fan slots, flagged SMALL_ROOT if < 64)
 *
 * The representation is canonical (invariant 2), a function of the state
 * alone: a span with no populated block is EMPTY, with all populated FULL,
 * with 1..31 maximal runs an extent leaf, and with more runs a bitmap (level
 * 0) or an inner node. So sparse state is a handful of extent leaves whatever
 * the region size, and dense fragmented state is bitmaps under a thin index.
 *
 * Copy on write. A change [s, e) never modifies a published node. It walks
 * down the (at most two per level) slots that the range covers partly, copies
 * each touched inner node into a local array, recomputes its children (a
 * slot the range covers wholly becomes FULL or EMPTY outright, dropping its
 * whole old subtree), re-canonicalises bottom up (collapsing an inner node
 * whose subtree now has <= 31 runs into one extent leaf; splitting an extent
 * leaf that would exceed 31 runs into an inner node) and ends with a new root
 * slot. Publishing is one release store of the root: a reader that loaded the
 * root once sees one complete version, before or after the whole change. The
 * replaced nodes are handed to call_rcu in one batch per change and freed
 * after a grace period; a writer applying a batch of changes (the IOMMU
 * worker) may keep them across its changes (rdm_tree_retire_later) and hand
 * them on in one call_rcu later (rdm_tree_retire_flush).
 *
 * Retire groups. A writer that keeps them hands them on once
 * RDM_TREE_RETIRE_GROUP entries are kept, or at the end of the change that
 * retired a whole subtree (rdm_tree_retire_due()), not after every change or
 * batch. Why: liburcu's call_rcu thread, once woken, sleeps 10 ms before it
 * waits for a grace period, so nothing comes back to the pool for 10-20 ms
 * after a hand-on; a burst of changes in that window allocates fresh memory,
 * and its first touch is a page fault. Each hand-on needs a retire batch
 * (48 B + 8 B per entry, 560 B for a batch of 64), so per-batch hand-ons
 * allocated one per batch. Measured (rdm-replay, trace A, rdm-block, two
 * CPUs, `perf record -e page-faults -c 1`): 38 of the worker thread's ~200
 * page faults were the memcpy into a fresh retire batch, and a fault costs
 * 1.6-1.8 us in this VM (MADV_POPULATE_WRITE: 1.4 us a page, no cheaper).
 * They hit about one unplug in six - requests that otherwise take 0.7-1.5
 * us - and the replay's p50 sits among those. Grouped, none is left (the
 * rest are the layouts' arrays growing, in plugs). The bound: between
 * changes (an applier's: between batches) fewer than RDM_TREE_RETIRE_GROUP
 * entries are kept per tree, each a single node (an inner copy or a leaf,
 * <= 512 B), since a subtree is handed on at once; they wait until the group
 * fills, the writer flushes (rdm_tree_retire_flush(): an applier that
 * leaves, a load) or fini.
 *
 * Working version. Several prepares may precede one publish. The first
 * opens a working version (new_root, starting at the published root); each
 * prepare is a step that applies its change on top of it, against the
 * working state. A published node is copied (copy on write, as above); a
 * node an earlier step of the same working version made is written in place
 * when it is still in the hot set (a direct-mapped set of RDM_TREE_HOT
 * slots holding the nodes made last, emptied when a version opens): such a
 * node is reachable only from the unpublished working root, through parents
 * made in this version too, so no reader can see the write. So a batch of
 * changes to one fragmented leaf copies the leaf and its path once, then
 * sets bits (a worker's populate step: ~965 instructions as copies, ~610 in
 * place, callgrind, bench pipeline). rdm_tree_keep_working() empties the
 * hot set, for a writer that reads the current working version after later
 * steps (a discard tells its listeners from the state before it). Every
 * word a step overwrites in place is logged first (t->undo), so a step that
 * fails for memory restores those words, drops what it made itself -
 * step_undo() - and the working version is exactly as before the step. The
 * nodes a step replaces are retired like those of a published change (freed
 * after a grace period even if no reader ever saw them, which is merely
 * late), and the made nodes are listed in `fresh` until the publish, so
 * rdm_tree_abort() drops every step since the last publish.
 * rdm_tree_publish() stores the root of all the steps at once (one version)
 * and counts it (`versions`).
 *
 * Node pool. A node no reader can reach any more is kept for reuse: one the
 * writer made and dropped before publishing (a failed step, an abort) at
 * once; a retired one after its grace period, handed back by the call_rcu
 * callback, which chains the batch's nodes through their first word, one
 * chain per size class (RDM_TREE_POOL_CLASSES), and pushes each chain with
 * one release CAS onto that class's stack t->returned[k], and the emptied
 * retire batch onto t->returned_batches. The writer allocates from its
 * private free list of the class, and when that is empty takes the class's
 * whole stack with one acquire exchange as its new free list: no node is
 * read before it is reused. (Taking one list of all classes and sorting
 * it into the lists node by node missed the cache on each node twice, once
 * there and once at reuse: 13% of a synchronous change's time, perf.) The
 * retire batch of the next flush is a handed-back one when one is large
 * enough. Synchronising edges: retire_cb()'s release CAS on returned[k]
 * (and returned_batches) -> the acquire exchange in pool_get() (and
 * take_batch(), rdm_tree_barrier_done()); the grace period before that is
 * retire_cb()'s as before. Neither end waits for the other: the callback
 * retries a CAS only against another callback's push, and the writer's
 * exchange always succeeds; a single consumer that takes everything has no
 * ABA problem. Bounds: the pool, stacks included, holds about POOL_MAX =
 * 4 MiB of nodes at most - the callback frees a chain that would pass it,
 * the writer a node it would put past it; both read pool_bytes, which is
 * behind by at most the writer's open version (pool_settle()) - and
 * SPARES_MAX = 8 batches. The pool and the stacks are freed by
 * rdm_tree_barrier_done() (after rcu_barrier(), at destroy). Pooled and
 * handed-back bytes are not counted as allocated in rdm_mem (they are not
 * state); the quarantine test hook bypasses the pool. So a steady state of
 * changes allocates no node and no retire batch.
 *
 * Why these sizes (measured, see bench_state.c and tests/core):
 *  - 4096-block bitmap leaves (512 B) and 64-way inner nodes (512 B) keep a
 *    change in the fragmented 2^20-block state to one leaf + two inner copies
 *    (~1.5 KiB); larger leaves would cut the index overhead but multiply the
 *    copy per change. The root inner node holds only the slots the region
 *    reaches (root_fan; 4 slots = 32 B for 2^20 blocks), so a change there
 *    copies ~1 KiB. Retired nodes go to call_rcu per group (above); the bytes
 *    waiting for a grace period are counted (backlog), and past
 *    RETIRE_BACKLOG_MAX = 8 MiB the writer waits for a grace period itself
 *    (synchronize_rcu) and frees its change's nodes at once. Measured on a
 *    loaded 2-core machine: peak minus steady 4.5-9 MiB in every writer case
 *    (was 11-28 MiB; 5.3-8.7 MiB after the hand-back by size class). The
 *    writer held 500k changes/s beside a reader in every run since, and
 *    reached 873-929k flat out in the sparse state, 483-594k in the
 *    fragmented one (idle 2-core VM; 170-490k before, on a loaded one).
 *  - Fully fragmented 1 TiB at 4 KiB blocks (2^28 blocks, alternating):
 *    2^16 bitmap leaves = 32 MiB, exactly the plain bitmap, plus 1024 + 16 + 1
 *    inner nodes = 520.5 KiB: 1.59% MORE than the bitmap. The goal "no more
 *    than the bitmap" is missed by that index overhead.
 *  - Sparse: an extent costs 16 B in its leaf plus 8 B of leaf header shared
 *    by up to 31; ~1,000 random extents in 2^20 blocks measure 21-22 B per
 *    extent; a few extents in a 1 TiB region are one extent leaf (24 B + 16 B
 *    per extent). The worst sparse case is 32 runs crammed into one 4096-block
 *    span of a huge region: one bitmap plus one inner node per level above it
 *    (2 KiB for 32 runs at 1 TiB/4 KiB, 64 B per extent; more in larger
 *    regions), since inner nodes are not compressed.
 *  - Lookups descend one slot per level (at most 8 for 2^52 blocks, 3 for
 *    1 TiB at 4 KiB) without a search; only an extent leaf is searched
 *    (a branch-free linear count up to 8 runs, the usual sparse leaf, a
 *    branch-free binary search over <= 31 pairs above that), so lookups are
 *    O(log n). The descent (tree.h, inline in every query) indexes each
 *    node with 6 bits of the absolute block index, so it carries no span
 *    base, and a query that stays inside one child never leaves the inline
 *    loop; only ranges that straddle children take the out-of-line walk.
 *    The tree's first cache line holds what a query reads (the root, the
 *    root's child shift); the writer's state lies on later lines.
 *
 * Invariants
 *  1. A published node is never written again while a reader may reach
 *     it: it is freed or handed back to the pool (and only then reused
 *     and written) by the call_rcu callback of the flush that handed on
 *     the change that replaced it, by the writer after synchronize_rcu()
 *     (backlog over RETIRE_BACKLOG_MAX, or no memory for the batch), or by
 *     fini (also when it is still kept for a flush). A node of an open
 *     working version is not published; a later step of that version may
 *     write it in place (hot set, undo log: "Working version").
 *  2. Every slot is canonical: EMPTY iff no block of its span is populated,
 *     FULL iff all are, an extent leaf iff it has 1..EXT_MAX maximal runs and
 *     is not FULL, otherwise a bitmap (level 0) or an inner node (level > 0).
 *  3. Blocks at or beyond nblocks are never populated.
 *  4. Extent leaves hold disjoint, non-adjacent, ascending runs inside their
 *     slot's span.
 *  5. Every node reachable from the published root is reachable through
 *     exactly one slot of that version; a change retires exactly the nodes
 *     the new version no longer reaches, each once.
 */
#include "core/tree.h"

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <urcu-bp.h>

#include "core/flat.h"
#include "core/tsan.h"

#define LEAF_SHIFT RDM_TREE_LEAF_SHIFT
#define LEAF_BITS (1u << LEAF_SHIFT)
#define LEAF_WORDS (LEAF_BITS / 64)
#define FAN_SHIFT RDM_TREE_FAN_SHIFT
#define FAN (1u << FAN_SHIFT)
#define EXT_MAX 31
#define NODE_BYTES 512
#define NODE_ALIGN 64

#define EMPTY RDM_TREE_EMPTY
#define FULL RDM_TREE_FULL
#define T_INNER 0u
#define T_BITMAP 1u
#define T_EXT RDM_TREE_T_EXT
/* In a retire list: free this inner node only, not its children. */
#define RETIRE_NODE_ONLY ((uintptr_t)4)
/* On an inner node: a root node sized to the region's fan-out (root_fan
 * slots instead of FAN). Readers ignore it (ptr_of masks it off). */
#define SMALL_ROOT ((uintptr_t)8)
/* Bytes of retired nodes that may wait for a grace period (handed to
 * call_rcu and not yet freed). Past it the writer waits for a grace period
 * itself and frees its change's nodes at once: the backlog stays bounded
 * even when the call_rcu thread lags (it sleeps 10 ms between batches and
 * competes for the CPUs with the readers and the writer). */
#define RETIRE_BACKLOG_MAX ((size_t)8 << 20)

/* Retired nodes of one or more published changes, freed together by one
 * call_rcu callback. */
struct rdm_retire_batch {
	struct rcu_head head;
	struct rdm_tree *t;
	struct rdm_retire_batch *next; /* in a spare list */
	size_t n, cap;
	size_t bytes; /* node bytes counted in the tree's backlog */
	uintptr_t v[];
};

#define POOL_MAX RDM_TREE_POOL_MAX
/* Emptied retire batches the writer keeps for reuse. */
#define SPARES_MAX 8u

static inline size_t batch_bytes(size_t n)
{
	return sizeof(struct rdm_retire_batch) + n * sizeof(uintptr_t);
}

static inline unsigned tag_of(uintptr_t v)
{
	return (unsigned)(v & 3);
}

static inline bool is_node(uintptr_t v)
{
	return v != EMPTY && v != FULL;
}

static inline bool is_inner(uintptr_t v)
{
	return v != EMPTY && tag_of(v) == T_INNER;
}

static inline void *ptr_of(uintptr_t v)
{
	return (void *)(v & ~(uintptr_t)15);
}

static inline unsigned span_shift(unsigned level)
{
	return LEAF_SHIFT + FAN_SHIFT * level;
}

static inline size_t ext_bytes(uint32_t n)
{
	return sizeof(struct rdm_tree_ext) + 16 * (size_t)n;
}

static inline uint64_t min64(uint64_t a, uint64_t b)
{
	return a < b ? a : b;
}

static inline uint64_t max64(uint64_t a, uint64_t b)
{
	return a > b ? a : b;
}

/* ---- freeing ---- */

/* Slots of an inner node at level (root_fan at the root level). */
static inline unsigned fan_at(const struct rdm_tree *t, unsigned level)
{
	return level == t->root_level ? t->root_fan : FAN;
}

/* Bytes of an inner node of fan slots (a root may be smaller than FAN). */
static inline size_t inner_bytes(unsigned fan)
{
	return (size_t)fan * sizeof(uintptr_t);
}

static inline unsigned fan_of(const struct rdm_tree *t, uintptr_t v)
{
	return (v & SMALL_ROOT) ? t->root_fan : FAN;
}

static size_t node_bytes(const struct rdm_tree *t, uintptr_t v)
{
	switch (tag_of(v)) {
	case T_EXT:
		return ext_bytes(((const struct rdm_tree_ext *)ptr_of(v))->n);
	case T_BITMAP:
		return NODE_BYTES;
	default:
		return inner_bytes(fan_of(t, v));
	}
}

static void free_node(const struct rdm_tree *t, uintptr_t v)
{
	rdm_mem_free(t->mem, ptr_of(v), node_bytes(t, v), tag_of(v) == T_EXT ? 16 : NODE_ALIGN);
}

static void free_subtree(const struct rdm_tree *t, uintptr_t v)
{
	if (!is_node(v))
		return;
	if (is_inner(v)) {
		const uintptr_t *ch = ptr_of(v);
		unsigned fan = fan_of(t, v);

		for (unsigned i = 0; i < fan; i++)
			free_subtree(t, ch[i]);
	}
	free_node(t, v);
}

/* Free one retire-list entry (after its grace period). */
static void free_retired(const struct rdm_tree *t, uintptr_t v)
{
	if (v & RETIRE_NODE_ONLY)
		free_node(t, v & ~RETIRE_NODE_ONLY);
	else
		free_subtree(t, v);
}

/* ---- the node pool ---- */

static inline unsigned pool_class(size_t size, size_t align)
{
	return (unsigned)(size / 8) + (align == NODE_ALIGN ? 65u : 0u);
}

/* The node size and alignment of class k (pool_class()'s inverse). */
static inline size_t class_size(unsigned k)
{
	return (size_t)(k % 65) * 8;
}

static inline size_t class_align(unsigned k)
{
	return k >= 65 ? NODE_ALIGN : 16;
}

static inline size_t node_align(uintptr_t v)
{
	return tag_of(v) == T_EXT ? 16 : NODE_ALIGN;
}

/* The node's bytes count as allocated again (rdm_mem: taken from the pool). */
static void mem_count(struct rdm_mem *m, size_t size)
{
	/* Relaxed: statistics only, as in rdm_mem_alloc(). */
	size_t cur = atomic_fetch_add_explicit(&m->cur, size, memory_order_relaxed) + size;
	size_t peak = atomic_load_explicit(&m->peak, memory_order_relaxed);

	while (cur > peak && !atomic_compare_exchange_weak_explicit(&m->peak, &peak, cur, memory_order_relaxed,
								     memory_order_relaxed))
		;
}

/* Writer: keep a node no reader can reach for reuse, or free it when the
 * pool is full (or the quarantine test hook is on). `counted`: its bytes
 * still count as allocated in rdm_mem (pooled and handed-back bytes do
 * not: they are not state). */
static void pool_keep(struct rdm_tree *t, void *p, size_t size, size_t align, bool counted)
{
	void **n = p;
	unsigned k = pool_class(size, align);

	/* Relaxed: a bound only (pool_bytes). */
	if (atomic_load_explicit(&t->pool_bytes, memory_order_relaxed) + (size_t)t->pool_bytes_delta + size >
		    POOL_MAX ||
	    rdm_mem_quarantine_enabled()) {
		if (!counted)
			mem_count(t->mem, size);
		rdm_mem_free(t->mem, p, size, align);
		return;
	}
	n[0] = t->pool[k];
	t->pool[k] = n;
	t->pool_bytes_delta += (int64_t)size;
	if (counted)
		t->pool_delta -= (int64_t)size;
}

/*
 * The writer's pool traffic reaches the rdm_mem count here, once per
 * published (or dropped) version, not per node: the count is shared with
 * the call_rcu thread, so each node taken or put was an atomic RMW (and
 * the peak's CAS) on a line that thread writes too, and the RMW waited
 * for the miss on the pooled node's first word just before it. A
 * synchronous change of 1..64 blocks took 3 nodes, and node_alloc() was
 * ~11% of its time (perf, `rdm_populate`/`rdm_discard` toggles on a
 * sparse 2^20-block region). The count, and so the peak, is exact at
 * every publish and abort, and behind by at most the open version's nodes
 * in between (statistics: no decision reads it).
 */
static void pool_settle(struct rdm_tree *t)
{
	int64_t d = t->pool_delta, pb = t->pool_bytes_delta;

	t->pool_delta = t->pool_bytes_delta = 0;
	if (d > 0)
		mem_count(t->mem, (size_t)d);
	else if (d < 0)
		/* Relaxed: statistics only, as in rdm_mem_free(). */
		atomic_fetch_sub_explicit(&t->mem->cur, (size_t)-d, memory_order_relaxed);
	/* Relaxed: a bound only (pool_bytes); a wrap of the unsigned add is
	 * the subtraction. */
	if (pb != 0)
		atomic_fetch_add_explicit(&t->pool_bytes, (size_t)pb, memory_order_relaxed);
}

static void pool_put(struct rdm_tree *t, void *p, size_t size, size_t align)
{
	pool_keep(t, p, size, align, true);
}

/* Writer: a pooled node of this size and alignment, or NULL. */
static void *pool_get(struct rdm_tree *t, size_t size, size_t align)
{
	unsigned k = pool_class(size, align);
	void **n = t->pool[k];

	if (n == NULL) {
		/* Relaxed first: the common case is an empty stack and no RMW. */
		if (atomic_load_explicit(&t->returned[k], memory_order_relaxed) == 0)
			return NULL;
		/* Acquire: pairs with the release CAS in retire_cb(); the chain
		 * links it wrote (and the grace period it followed) happen
		 * before this thread reuses the nodes. */
		n = (void **)atomic_exchange_explicit(&t->returned[k], 0, memory_order_acquire);
		if (n == NULL)
			return NULL;
	}
	t->pool[k] = n[0];
	t->pool_bytes_delta -= (int64_t)size;
	t->pool_delta += (int64_t)size;
	/* The next node of this class is read (its first word) and written
	 * at the next take: start fetching it now. */
	if (t->pool[k] != NULL)
		__builtin_prefetch(t->pool[k], 1);
	return n;
}

/* Writer, no reader can reach v's nodes: put them into the pool, children
 * first (putting a node overwrites its first slot). */
static void pool_put_subtree(struct rdm_tree *t, uintptr_t v, bool node_only)
{
	if (!is_node(v))
		return;
	if (is_inner(v) && !node_only) {
		const uintptr_t *ch = ptr_of(v);
		unsigned fan = fan_of(t, v);

		for (unsigned i = 0; i < fan; i++)
			pool_put_subtree(t, ch[i], false);
	}
	pool_put(t, ptr_of(v), node_bytes(t, v), node_align(v));
}

/* retire_cb's chains, one per size class met (at most CHAINS_MAX at a time:
 * a batch holds inner nodes, bitmaps and extent leaves of a few sizes). */
#define CHAINS_MAX 8

struct chains {
	struct rdm_tree *t;
	unsigned n;
	struct {
		unsigned k;
		size_t bytes;
		uintptr_t *head, *tail;
	} c[CHAINS_MAX];
};

/* Push every chain onto its class's stack, or free it where the pool would
 * pass POOL_MAX; the table is empty after. */
static void chains_push(struct chains *cs)
{
	struct rdm_tree *t = cs->t;

	for (unsigned i = 0; i < cs->n; i++) {
		unsigned k = cs->c[i].k;
		size_t size = class_size(k), align = class_align(k);
		uintptr_t old;

		/* Relaxed: a bound only (pool_bytes). */
		if (atomic_load_explicit(&t->pool_bytes, memory_order_relaxed) + cs->c[i].bytes > POOL_MAX) {
			for (uintptr_t *n = cs->c[i].head, *next; n != NULL; n = next) {
				next = (uintptr_t *)n[0];
				rdm_mem_free(t->mem, n, size, align);
			}
			continue;
		}
		/* Both before the push, so that the writer never settles the
		 * take of bytes not yet added (pool_settle()). Relaxed:
		 * statistics only, handed-back bytes are not state; and a
		 * bound only (pool_bytes). */
		atomic_fetch_sub_explicit(&t->mem->cur, cs->c[i].bytes, memory_order_relaxed);
		atomic_fetch_add_explicit(&t->pool_bytes, cs->c[i].bytes, memory_order_relaxed);
		old = atomic_load_explicit(&t->returned[k], memory_order_relaxed);
		do
			cs->c[i].tail[0] = old;
		/* Release: pairs with the acquire exchange in pool_get() and
		 * rdm_tree_barrier_done(): the links written here happen
		 * before the writer reads them. */
		while (!atomic_compare_exchange_weak_explicit(&t->returned[k], &old, (uintptr_t)cs->c[i].head,
							      memory_order_release, memory_order_relaxed));
	}
	cs->n = 0;
}

/* retire_cb: chain the nodes of one retire entry through their first word
 * into the chain of their size class, children first. */
static void chain_subtree(struct chains *cs, uintptr_t v, bool node_only)
{
	const struct rdm_tree *t = cs->t;
	uintptr_t *n;
	size_t size;
	unsigned k, i;

	if (!is_node(v))
		return;
	if (is_inner(v) && !node_only) {
		const uintptr_t *ch = ptr_of(v);
		unsigned fan = fan_of(t, v);

		for (unsigned j = 0; j < fan; j++)
			chain_subtree(cs, ch[j], false);
	}
	n = ptr_of(v);
	size = node_bytes(t, v);
	k = pool_class(size, node_align(v));
	for (i = 0; i < cs->n && cs->c[i].k != k; i++)
		;
	if (i == cs->n) {
		if (cs->n == CHAINS_MAX) {
			chains_push(cs);
			i = 0;
		}
		cs->c[i].k = k;
		cs->c[i].bytes = 0;
		cs->c[i].head = cs->c[i].tail = NULL;
		cs->n = i + 1;
	}
	n[0] = (uintptr_t)cs->c[i].head;
	cs->c[i].head = n;
	if (cs->c[i].tail == NULL)
		cs->c[i].tail = n;
	cs->c[i].bytes += size;
}

/* Free a handed-back or spare retire batch (not counted: see retire_cb()). */
static void free_batch(struct rdm_tree *t, struct rdm_retire_batch *b)
{
	mem_count(t->mem, batch_bytes(b->cap));
	rdm_mem_free(t->mem, b, batch_bytes(b->cap), 16);
}

/* ---- the writer's scratch lists ---- */

static void vec_reset(struct rdm_tree *t, struct rdm_tree_vec *v)
{
	if (v->v != v->inline_v)
		rdm_mem_free(t->mem, v->v, v->cap * sizeof(uintptr_t), 8);
	v->v = v->inline_v;
	v->cap = RDM_TREE_VEC_INLINE;
	v->n = 0;
}

/* Double a full scratch array of n elements of `size` bytes (its first
 * storage inline_v, never freed); *arr and *cap change only on success.
 * 0 or -ENOMEM. */
static int grow(struct rdm_tree *t, void **arr, const void *inline_v, size_t n, size_t *cap, size_t size)
{
	void *na = rdm_mem_alloc(t->mem, *cap * 2 * size, 8);

	if (na == NULL)
		return -ENOMEM;
	memcpy(na, *arr, n * size);
	if (*arr != inline_v)
		rdm_mem_free(t->mem, *arr, *cap * size, 8);
	*arr = na;
	*cap *= 2;
	return 0;
}

static int vec_push(struct rdm_tree *t, struct rdm_tree_vec *v, uintptr_t x)
{
	void *arr = v->v;

	if (v->n == v->cap) {
		if (grow(t, &arr, v->inline_v, v->n, &v->cap, sizeof(uintptr_t)) != 0)
			return -ENOMEM;
		v->v = arr;
	}
	v->v[v->n++] = x;
	return 0;
}

/* ---- init / fini / reading the root ---- */

void rdm_tree_init(struct rdm_tree *t, uint64_t nblocks, struct rdm_mem *mem)
{
	unsigned level = 0;

	while (span_shift(level) < 64 && (UINT64_C(1) << span_shift(level)) < nblocks)
		level++;
	atomic_init(&t->root, EMPTY);
	t->nblocks = nblocks;
	t->root_level = level;
	t->root_fan = FAN;
	if (level > 0) {
		unsigned cs = span_shift(level - 1);
		uint64_t fan = (nblocks >> cs) + ((nblocks & ((UINT64_C(1) << cs) - 1)) != 0);

		t->root_fan = fan == 0 ? 1 : fan < FAN ? (unsigned)fan : FAN;
		t->root_cshift = cs;
	} else {
		t->root_cshift = 0;
	}
	t->mem = mem;
	atomic_init(&t->backlog, 0);
	atomic_init(&t->versions, 0);
	memset(t->pool, 0, sizeof(t->pool));
	atomic_init(&t->pool_bytes, 0);
	t->pool_delta = t->pool_bytes_delta = 0;
	for (unsigned k = 0; k < RDM_TREE_POOL_CLASSES; k++)
		atomic_init(&t->returned[k], 0);
	t->spares = NULL;
	t->nspares = 0;
	atomic_init(&t->returned_batches, NULL);
	t->open = false;
	t->leaf_words = NULL;
	t->old_root = t->new_root = EMPTY;
	t->fresh.v = t->fresh.inline_v;
	t->fresh.cap = RDM_TREE_VEC_INLINE;
	t->fresh.n = 0;
	t->retired.v = t->retired.inline_v;
	t->retired.cap = RDM_TREE_VEC_INLINE;
	t->retired.n = 0;
	t->retired_kept = 0;
	t->retired_subtree = false;
	memset(t->hot, 0, sizeof(t->hot));
	t->undo = t->undo_inline;
	t->undo_cap = RDM_TREE_UNDO_INLINE;
	t->nundo = 0;
	t->flat = NULL;
}

void rdm_tree_fini(struct rdm_tree *t)
{
	/* Pairs with every reader's rdm_tree_read_done(); the caller waited for
	 * a grace period, which TSan cannot see. */
	rdm_tsan_acquire(&t->gp);
	/* An unpublished working version (a batch cut short) is dropped. */
	rdm_tree_abort(t);
	/* Relaxed: no reader or writer runs any more. */
	free_subtree(t, atomic_load_explicit(&t->root, memory_order_relaxed));
	atomic_store_explicit(&t->root, EMPTY, memory_order_relaxed);
	/* Superseded nodes still kept for a flush: no reader can reach them
	 * either. */
	for (size_t i = 0; i < t->retired_kept; i++)
		free_retired(t, t->retired.v[i]);
	t->retired_kept = 0;
	t->retired_subtree = false;
	vec_reset(t, &t->fresh);
	vec_reset(t, &t->retired);
	if (t->undo != t->undo_inline)
		rdm_mem_free(t->mem, t->undo, t->undo_cap * sizeof(*t->undo), 8);
	t->undo = t->undo_inline;
	t->undo_cap = RDM_TREE_UNDO_INLINE;
	t->nundo = 0;
	pool_settle(t);
	/* The pool and spare batches are freed by rdm_tree_barrier_done(),
	 * once no retire callback can hand anything back. */
}

static inline unsigned popcount64(uint64_t x)
{
#ifdef __POPCNT__
	return (unsigned)__builtin_popcountll(x);
#else
	/* Without the instruction the builtin is a slow library call. */
	x = x - ((x >> 1) & UINT64_C(0x5555555555555555));
	x = (x & UINT64_C(0x3333333333333333)) + ((x >> 2) & UINT64_C(0x3333333333333333));
	x = (x + (x >> 4)) & UINT64_C(0x0f0f0f0f0f0f0f0f);
	return (unsigned)((x * UINT64_C(0x0101010101010101)) >> 56);
#endif
}

/* ---- bitmap helpers (bit i of a leaf = block base + i) ---- */

static uint64_t bm_count(const uint64_t *w, unsigned a, unsigned b)
{
	unsigned i0 = a >> 6, i1 = (b - 1) >> 6;
	uint64_t n = 0;

	for (unsigned i = i0; i <= i1; i++) {
		uint64_t m = ~UINT64_C(0);

		if (i == i0)
			m &= ~UINT64_C(0) << (a & 63);
		if (i == i1 && (b & 63) != 0)
			m &= ~UINT64_C(0) >> (64 - (b & 63));
		n += popcount64(w[i] & m);
	}
	return n;
}

static void bm_set(uint64_t *w, unsigned a, unsigned b, bool val)
{
	unsigned i0 = a >> 6, i1 = (b - 1) >> 6;

	for (unsigned i = i0; i <= i1; i++) {
		uint64_t m = ~UINT64_C(0);

		if (i == i0)
			m &= ~UINT64_C(0) << (a & 63);
		if (i == i1 && (b & 63) != 0)
			m &= ~UINT64_C(0) >> (64 - (b & 63));
		if (val)
			w[i] |= m;
		else
			w[i] &= ~m;
	}
}

/* First bit >= from and < end equal to val, or end. */
static unsigned bm_find(const uint64_t *w, unsigned from, unsigned end, bool val)
{
	while (from < end) {
		unsigned i = from >> 6;
		uint64_t x = (val ? w[i] : ~w[i]) & (~UINT64_C(0) << (from & 63));

		if (x != 0) {
			unsigned b = (i << 6) + (unsigned)__builtin_ctzll(x);

			return b < end ? b : end;
		}
		from = (i + 1) << 6;
	}
	return end;
}

/* Runs of the bitmap that start in word i (a run starts at a set bit whose
 * lower neighbour is clear), so the words may be counted in any order. */
static inline unsigned bm_word_runs(const uint64_t *w, unsigned i)
{
	uint64_t carry = i > 0 ? w[i - 1] >> 63 : 0;

	return popcount64(w[i] & ~((w[i] << 1) | carry));
}

/* The bitmap's runs, counted outwards from word `first`, alternately up and
 * down, until the count passes `cap` (then some number above cap) or every
 * word is counted (then exactly): after a small change to a fragmented
 * leaf, the words around the change are the fragmented ones, wherever in
 * the leaf they are. */
static unsigned bm_runs_upto(const uint64_t *w, unsigned cap, unsigned first)
{
	unsigned runs = bm_word_runs(w, first), up = first + 1, down = first;

	while (runs <= cap && (up < LEAF_WORDS || down > 0)) {
		if (up < LEAF_WORDS)
			runs += bm_word_runs(w, up++);
		if (down > 0)
			runs += bm_word_runs(w, --down);
	}
	return runs;
}

/* Does the bitmap hold more than `limit` runs? */
static bool bm_runs_exceed(const uint64_t *w, unsigned limit, unsigned first)
{
	return bm_runs_upto(w, limit, first) > limit;
}

/* ---- extent-leaf helpers ---- */

/* Apply "set [s,e) to val" to a canonical run list; returns the new count. */
static size_t runs_apply(const uint64_t *in, size_t n, uint64_t s, uint64_t e, bool val,
			 uint64_t *out)
{
	size_t m = 0, i = 0;

	if (val) {
		uint64_t ns = s, ne = e;

		for (; i < n && in[2 * i + 1] < s; i++, m++) {
			out[2 * m] = in[2 * i];
			out[2 * m + 1] = in[2 * i + 1];
		}
		for (; i < n && in[2 * i] <= e; i++) {
			ns = min64(ns, in[2 * i]);
			ne = max64(ne, in[2 * i + 1]);
		}
		out[2 * m] = ns;
		out[2 * m + 1] = ne;
		m++;
		for (; i < n; i++, m++) {
			out[2 * m] = in[2 * i];
			out[2 * m + 1] = in[2 * i + 1];
		}
		return m;
	}
	for (; i < n; i++) {
		uint64_t rs = in[2 * i], re = in[2 * i + 1];

		if (re <= s || rs >= e) {
			out[2 * m] = rs;
			out[2 * m + 1] = re;
			m++;
			continue;
		}
		if (rs < s) {
			out[2 * m] = rs;
			out[2 * m + 1] = s;
			m++;
		}
		if (re > e) {
			out[2 * m] = e;
			out[2 * m + 1] = re;
			m++;
		}
	}
	return m;
}

/* ---- readers ---- */

static bool all_rec(uintptr_t v, unsigned level, uint64_t base, uint64_t s, uint64_t e, bool val)
{
	if (v == EMPTY)
		return !val;
	if (v == FULL)
		return val;
	switch (tag_of(v)) {
	case T_BITMAP:
		return rdm_tree_bm_all(ptr_of(v), (unsigned)(s - base), (unsigned)(e - base), val);
	case T_EXT:
		return rdm_tree_ext_all(ptr_of(v), s, e, val);
	default: {
		const uintptr_t *ch = ptr_of(v);
		unsigned cs = span_shift(level - 1);
		uint64_t i0 = (s - base) >> cs, i1 = (e - 1 - base) >> cs;

		for (uint64_t i = i0; i <= i1; i++) {
			uint64_t cb = base + (i << cs);

			if (!all_rec(ch[i], level - 1, cb, max64(s, cb),
				     min64(e, cb + (UINT64_C(1) << cs)), val))
				return false;
		}
		return true;
	}
	}
}

bool rdm_tree_all_span(uintptr_t v, unsigned cs, uint64_t s, uint64_t e, bool val)
{
	unsigned level = (cs - LEAF_SHIFT) / FAN_SHIFT + 1;
	unsigned ps = cs + FAN_SHIFT;
	uint64_t base = ps >= 64 ? 0 : s & ~((UINT64_C(1) << ps) - 1);

	return all_rec(v, level, base, s, e, val);
}

static uint64_t count_rec(uintptr_t v, unsigned level, uint64_t base, uint64_t s, uint64_t e)
{
	if (v == EMPTY)
		return 0;
	if (v == FULL)
		return e - s;
	switch (tag_of(v)) {
	case T_BITMAP:
		return bm_count(ptr_of(v), (unsigned)(s - base), (unsigned)(e - base));
	case T_EXT: {
		const struct rdm_tree_ext *x = ptr_of(v);
		uint64_t n = 0;

		for (uint32_t i = rdm_tree_ext_search(x, s); i < x->n && x->r[2 * i] < e; i++)
			n += min64(e, x->r[2 * i + 1]) - max64(s, x->r[2 * i]);
		return n;
	}
	default: {
		const uintptr_t *ch = ptr_of(v);
		unsigned cs = span_shift(level - 1);
		uint64_t i0 = (s - base) >> cs, i1 = (e - 1 - base) >> cs, n = 0;

		for (uint64_t i = i0; i <= i1; i++) {
			uint64_t cb = base + (i << cs);

			n += count_rec(ch[i], level - 1, cb, max64(s, cb),
				       min64(e, cb + (UINT64_C(1) << cs)));
		}
		return n;
	}
	}
}

uint64_t rdm_tree_count(const struct rdm_tree *t, uintptr_t root, uint64_t s, uint64_t e)
{
	return count_rec(root, t->root_level, 0, s, e);
}

struct run_acc {
	rdm_tree_run_fn fn;
	void *opaque;
	uint64_t rs, re;
	bool have;
	bool val;
	int err;
};

static void emit(struct run_acc *a, uint64_t s, uint64_t e)
{
	if (a->err != 0 || s >= e)
		return;
	if (a->have && a->re == s) {
		a->re = e;
		return;
	}
	if (a->have)
		a->err = a->fn(a->opaque, a->rs, a->re);
	a->rs = s;
	a->re = e;
	a->have = true;
}

static void runs_rec(struct run_acc *a, uintptr_t v, unsigned level, uint64_t base, uint64_t s,
		     uint64_t e)
{
	if (a->err != 0)
		return;
	if (v == EMPTY || v == FULL) {
		if ((v == FULL) == a->val)
			emit(a, s, e);
		return;
	}
	switch (tag_of(v)) {
	case T_BITMAP: {
		const uint64_t *w = ptr_of(v);
		unsigned b = (unsigned)(s - base), end = (unsigned)(e - base);

		while (b < end && a->err == 0) {
			unsigned rs = bm_find(w, b, end, a->val);
			unsigned re = bm_find(w, rs, end, !a->val);

			if (rs < re)
				emit(a, base + rs, base + re);
			b = re;
		}
		return;
	}
	case T_EXT: {
		const struct rdm_tree_ext *x = ptr_of(v);
		uint64_t cur = s;

		for (uint32_t i = rdm_tree_ext_search(x, s); i < x->n && x->r[2 * i] < e; i++) {
			uint64_t rs = max64(s, x->r[2 * i]), re = min64(e, x->r[2 * i + 1]);

			if (a->val)
				emit(a, rs, re);
			else
				emit(a, cur, rs);
			cur = re;
		}
		if (!a->val)
			emit(a, cur, e);
		return;
	}
	default: {
		const uintptr_t *ch = ptr_of(v);
		unsigned cs = span_shift(level - 1);
		uint64_t i0 = (s - base) >> cs, i1 = (e - 1 - base) >> cs;

		for (uint64_t i = i0; i <= i1 && a->err == 0; i++) {
			uint64_t cb = base + (i << cs);

			runs_rec(a, ch[i], level - 1, cb, max64(s, cb),
				 min64(e, cb + (UINT64_C(1) << cs)));
		}
		return;
	}
	}
}

int rdm_tree_runs_spliced(const struct rdm_tree *t, const struct rdm_tree_seg *seg, unsigned n,
			  bool populated, rdm_tree_run_fn fn, void *opaque)
{
	struct run_acc a = { .fn = fn, .opaque = opaque, .val = populated };

	/* One accumulator across the segments: a run that crosses from one
	 * segment into the next is given once. */
	for (unsigned i = 0; i < n && a.err == 0; i++)
		if (seg[i].s < seg[i].e)
			runs_rec(&a, seg[i].root, t->root_level, 0, seg[i].s, seg[i].e);
	if (a.err == 0 && a.have)
		a.err = fn(opaque, a.rs, a.re);
	return a.err;
}

int rdm_tree_runs(const struct rdm_tree *t, uintptr_t root, uint64_t s, uint64_t e, bool populated,
		  rdm_tree_run_fn fn, void *opaque)
{
	const struct rdm_tree_seg seg = { .root = root, .s = s, .e = e };

	return rdm_tree_runs_spliced(t, &seg, 1, populated, fn, opaque);
}

/* ---- writer ---- */

struct wctx {
	struct rdm_tree *t;
	int err;
};

/* The hot set is direct-mapped: a node made later evicts one made earlier
 * in its slot (that one is then copied again if a step changes it). Nodes
 * are at least 16-aligned and mostly 64-aligned 512-byte blocks. */
static inline unsigned hot_slot(uintptr_t p)
{
	return (unsigned)((p >> 6) ^ (p >> 12)) % RDM_TREE_HOT;
}

static void *node_alloc(struct wctx *c, size_t size, size_t align, unsigned tag)
{
	void *p = pool_get(c->t, size, align);

	if (p == NULL)
		p = rdm_mem_alloc(c->t->mem, size, align);
	if (p == NULL) {
		c->err = -ENOMEM;
		return NULL;
	}
	if (vec_push(c->t, &c->t->fresh, (uintptr_t)p | tag) != 0) {
		pool_put(c->t, p, size, align);
		c->err = -ENOMEM;
		return NULL;
	}
	c->t->hot[hot_slot((uintptr_t)p)] = (uintptr_t)p;
	/* A bitmap leaf holds more than EXT_MAX runs (the canonical form);
	 * meaningless for other nodes, which set_hot_bits() never sees. */
	c->t->hot_runs[hot_slot((uintptr_t)p)] = EXT_MAX + 1;
	return p;
}

/* Empty the hot set: no node is written in place until made again. */
static void hot_clear(struct rdm_tree *t)
{
	memset(t->hot, 0, sizeof(t->hot));
	t->leaf_words = NULL;
}

/* Was node v made since the working version opened (and is it still in the
 * hot set)? Only such a node may be written in place: no reader can reach
 * it (its parents in the working version were made in it too, and the
 * version is not published), and nothing published points to it. */
static bool is_hot(const struct rdm_tree *t, uintptr_t v)
{
	uintptr_t p = (uintptr_t)ptr_of(v);

	return is_node(v) && t->hot[hot_slot(p)] == p;
}

/* undo_note() when the log is full: grow it. False (c->err set) without
 * memory. */
static __attribute__((noinline)) bool undo_grow(struct wctx *c)
{
	struct rdm_tree *t = c->t;
	void *arr = t->undo;

	if (grow(t, &arr, t->undo_inline, t->nundo, &t->undo_cap, sizeof(*t->undo)) != 0) {
		c->err = -ENOMEM;
		return false;
	}
	t->undo = arr;
	return true;
}

/* Log the word at addr before a step overwrites it in place, so that
 * step_undo() can restore it. False (c->err set) without memory. Inline:
 * every in-place step logs one or two words. */
static inline bool undo_note(struct wctx *c, void *addr, uint64_t old, bool slot)
{
	struct rdm_tree *t = c->t;

	if (t->nundo == t->undo_cap && !undo_grow(c))
		return false;
	t->undo[t->nundo++] = (struct rdm_tree_undo){ .addr = addr, .old = old, .slot = slot };
	return true;
}

/* Write an inner node's slot in place (the node is hot), logged. */
static bool slot_write(struct wctx *c, uintptr_t *slot, uintptr_t nv)
{
	if (!undo_note(c, slot, (uint64_t)*slot, true))
		return false;
	*slot = nv;
	return true;
}

static void retire(struct wctx *c, uintptr_t v, bool node_only)
{
	if (!is_node(v) || c->err != 0)
		return;
	if (vec_push(c->t, &c->t->retired, node_only && is_inner(v) ? v | RETIRE_NODE_ONLY : v) != 0)
		c->err = -ENOMEM;
	else if (!node_only && is_inner(v))
		c->t->retired_subtree = true; /* "Retire groups" */
}

/* A slot at `level` holding the canonical form of m runs (all inside the
 * span [base, base + 2^span_shift(level))). */
static uintptr_t build(struct wctx *c, unsigned level, uint64_t base, const uint64_t *r, size_t m)
{
	unsigned sh = span_shift(level);

	if (m == 0)
		return EMPTY;
	if (m == 1 && r[0] == base && sh < 64 && r[1] - base == UINT64_C(1) << sh)
		return FULL;
	if (m <= EXT_MAX) {
		struct rdm_tree_ext *x = node_alloc(c, ext_bytes((uint32_t)m), 16, T_EXT);

		if (x == NULL)
			return EMPTY;
		x->n = (uint32_t)m;
		x->pad = 0;
		memcpy(x->r, r, 16 * m);
		return (uintptr_t)x | T_EXT;
	}
	if (level == 0) {
		uint64_t *w = node_alloc(c, NODE_BYTES, NODE_ALIGN, T_BITMAP);

		if (w == NULL)
			return EMPTY;
		memset(w, 0, NODE_BYTES);
		for (size_t i = 0; i < m; i++)
			bm_set(w, (unsigned)(r[2 * i] - base), (unsigned)(r[2 * i + 1] - base), true);
		return (uintptr_t)w | T_BITMAP;
	}
	{
		unsigned fan = fan_at(c->t, level);
		uintptr_t *ch = node_alloc(c, inner_bytes(fan), NODE_ALIGN,
					   T_INNER | (fan < FAN ? SMALL_ROOT : 0));
		unsigned cs = span_shift(level - 1);
		uint64_t sub[2 * (EXT_MAX + 1)];
		size_t j = 0;

		if (ch == NULL)
			return EMPTY;
		/* Slots past fan (beyond the region) would all be EMPTY. */
		for (unsigned i = 0; i < fan; i++) {
			uint64_t cb = base + ((uint64_t)i << cs), ce = cb + (UINT64_C(1) << cs);
			size_t k = 0;

			while (j < m && r[2 * j + 1] <= cb)
				j++;
			for (size_t q = j; q < m && r[2 * q] < ce; q++) {
				sub[2 * k] = max64(cb, r[2 * q]);
				sub[2 * k + 1] = min64(ce, r[2 * q + 1]);
				k++;
			}
			ch[i] = build(c, level - 1, cb, sub, k);
			if (c->err != 0)
				return EMPTY;
		}
		return (uintptr_t)ch | T_INNER | (fan < FAN ? SMALL_ROOT : 0);
	}
}

/* The runs of a leaf slot (EMPTY, FULL or extent) as a list; returns count. */
static size_t slot_runs(uintptr_t v, unsigned level, uint64_t base, uint64_t *r)
{
	if (v == EMPTY)
		return 0;
	if (v == FULL) {
		r[0] = base;
		r[1] = base + (UINT64_C(1) << span_shift(level));
		return 1;
	}
	{
		const struct rdm_tree_ext *x = ptr_of(v);

		memcpy(r, x->r, 16 * (size_t)x->n);
		return x->n;
	}
}

static uintptr_t write_rec(struct wctx *c, uintptr_t v, unsigned level, uint64_t base, uint64_t s,
			   uint64_t e, bool val);
static uintptr_t write_runs(struct wctx *c, uintptr_t v, unsigned level, uint64_t base, uint64_t s,
			    uint64_t e, bool val);

/*
 * The canonical leaf slot for the blocks [base, base + LEAF_BITS) given as a
 * bitmap: a bitmap leaf when it holds more runs than an extent leaf can,
 * else an extent leaf (or EMPTY/FULL). `first` is the word where a change
 * happened, where the run count starts (bm_runs_exceed). On failure c->err
 * is set and the return value is meaningless.
 */
static uintptr_t leaf_from_runs(struct wctx *c, const uint64_t *w, uint64_t base);

static uintptr_t leaf_from_bitmap(struct wctx *c, const uint64_t *w, uint64_t base, unsigned first)
{
	if (bm_runs_exceed(w, EXT_MAX, first)) {
		uint64_t *nw = node_alloc(c, NODE_BYTES, NODE_ALIGN, T_BITMAP);

		if (nw == NULL)
			return EMPTY;
		memcpy(nw, w, LEAF_WORDS * sizeof(*w));
		return (uintptr_t)nw | T_BITMAP;
	}
	return leaf_from_runs(c, w, base);
}

/* The same for a bitmap known to hold at most EXT_MAX runs. */
static uintptr_t leaf_from_runs(struct wctx *c, const uint64_t *w, uint64_t base)
{
	uint64_t r[2 * EXT_MAX];
	size_t m = 0;
	unsigned b = 0;

	while (b < LEAF_BITS) {
		unsigned rs = bm_find(w, b, LEAF_BITS, true);
		unsigned re = bm_find(w, rs, LEAF_BITS, false);

		if (rs < re) {
			r[2 * m] = base + rs;
			r[2 * m + 1] = base + re;
			m++;
		}
		b = re;
	}
	return build(c, 0, base, r, m);
}

/*
 * How setting bit a of a leaf's bitmap to val changes its number of runs
 * (counted inside the leaf, as bm_word_runs() does: a bit outside it is
 * clear): setting a clear bit whose neighbours are both clear makes a run
 * (000 below, low bit first: +1), between two set ones joins two (101:
 * -1); clearing a set bit between two clear ones removes a run (010: -1),
 * between two set ones splits one (111: +1); anything else, or a bit that
 * does not change, leaves the count.
 */
static inline int runs_delta(const uint64_t *w, unsigned a, bool val)
{
	unsigned o = a & 63;
	uint64_t x; /* bit 0: block a - 1, bit 1: a, bit 2: a + 1 */

	if (o != 0 && o != 63) {
		x = (w[a >> 6] >> (o - 1)) & 7;
	} else {
		x = (uint64_t)((w[a >> 6] >> o) & 1) << 1;
		if (a > 0)
			x |= (w[(a - 1) >> 6] >> ((a - 1) & 63)) & 1;
		if (a + 1 < LEAF_BITS)
			x |= ((w[(a + 1) >> 6] >> ((a + 1) & 63)) & 1) << 2;
	}
	if (val)
		return x == 0 ? 1 : x == 5 ? -1 : 0;
	return x == 2 ? -1 : x == 7 ? 1 : 0;
}

/* Recounts of a hot leaf's runs stop past this many (bm_runs_upto()): the
 * bound they give then lasts that many joins before the next count. */
#define HOT_RUNS_CAP (4 * (EXT_MAX + 1))

/*
 * Set the blocks [a, b) of a hot bitmap leaf (made by this working
 * version, see is_hot()) to val in place, logging each word first so that
 * step_undo() can put it back. 1: the leaf is still a bitmap; 0: it now
 * holds EXT_MAX runs or fewer, and the caller makes the canonical slot;
 * -1: no memory for the log (c->err set), nothing set.
 *
 * Whether it is still a bitmap needs its number of runs, and counting them
 * (bm_runs_upto(), ~100 instructions for two words) at every step was a
 * third of a step in bench pipeline, whose populates each join two runs.
 * The hot set keeps a lower bound of each hot leaf's runs instead
 * (hot_runs: EXT_MAX + 1 when the leaf is made, the canonical form's
 * least), moved by a one-block step's exact change (runs_delta()): while it
 * stays above EXT_MAX nothing is counted. Where it would not, and after a
 * wider step, the runs are counted up to HOT_RUNS_CAP, and the count is the
 * new bound. It is stored only when the step has set its bits, and needs no
 * undo log: a failed step empties the hot set (step_undo()), and the one
 * partial undo, prepare_in_hot_leaf()'s after a 0 here, restores a leaf
 * that held more runs than the count just stored - still a lower bound.
 * Inline: it runs once per one-block change of a hot leaf, where a call's
 * saves and restores were ~20 of its ~90 instructions.
 */
static inline __attribute__((always_inline)) int set_hot_bits(struct wctx *c, uint64_t *hw, unsigned a, unsigned b,
							      bool val)
{
	uint32_t *bound = &c->t->hot_runs[hot_slot((uintptr_t)hw)];
	unsigned runs = 0;

	if (b - a == 1) {
		/* One block (the usual change): one word, and mostly no count. */
		uint64_t *word = &hw[a >> 6], bit = UINT64_C(1) << (a & 63);
		int64_t r = (int64_t)*bound + runs_delta(hw, a, val);

		runs = r > EXT_MAX ? (unsigned)r : 0;
		if (!undo_note(c, word, *word, false))
			return -1;
		*word = val ? *word | bit : *word & ~bit;
	} else {
		for (unsigned i = a >> 6; i <= (b - 1) >> 6; i++)
			if (!undo_note(c, &hw[i], hw[i], false))
				return -1;
		bm_set(hw, a, b, val);
	}
	if (runs <= EXT_MAX)
		runs = bm_runs_upto(hw, HOT_RUNS_CAP, a >> 6);
	*bound = runs;
	return runs > EXT_MAX;
}

/*
 * A leaf that is not a bitmap (EMPTY, FULL, an extent leaf) changes as a run
 * list: runs_apply() keeps runs maximal and build() makes the canonical slot
 * (extent, EMPTY, FULL, or a bitmap past EXT_MAX runs), what the bitmap round
 * trip below gives, without writing, scanning and searching LEAF_WORDS words
 * (a 2 MiB-block region of 8 GiB is one leaf: ~3,600 instructions per change
 * that way, callgrind, against ~200 as runs).
 */
static uintptr_t write_leaf(struct wctx *c, uintptr_t v, uint64_t base, uint64_t s, uint64_t e,
			    bool val)
{
	uint64_t w[LEAF_WORDS];
	uintptr_t nv;

	if (!is_node(v) || tag_of(v) == T_EXT)
		return write_runs(c, v, 0, base, s, e, val);
	if (is_hot(c->t, v)) {
		/* Made by an earlier step of this working version: set the bits
		 * in place, logging each word first; a new node only if the leaf
		 * stops being a bitmap. */
		uint64_t *hw = ptr_of(v);
		unsigned a = (unsigned)(s - base), b = (unsigned)(e - base);

		if (set_hot_bits(c, hw, a, b, val) != 0)
			return v; /* still a bitmap, or c->err */
		nv = leaf_from_runs(c, hw, base);
		if (c->err != 0)
			return v;
		retire(c, v, false);
		return nv;
	}
	memcpy(w, ptr_of(v), sizeof(w));
	bm_set(w, (unsigned)(s - base), (unsigned)(e - base), val);

	nv = leaf_from_bitmap(c, w, base, (unsigned)(s - base) >> 6);
	if (c->err != 0)
		return v;
	retire(c, v, false);
	return nv;
}

static uintptr_t write_runs(struct wctx *c, uintptr_t v, unsigned level, uint64_t base, uint64_t s,
			    uint64_t e, bool val)
{
	uint64_t in[2 * EXT_MAX], out[2 * (EXT_MAX + 1)];
	size_t n = slot_runs(v, level, base, in);
	size_t m = runs_apply(in, n, s, e, val, out);
	uintptr_t nv = build(c, level, base, out, m);

	if (c->err != 0)
		return v;
	retire(c, v, false);
	return nv;
}

/* A new inner node at `level` holding the children ch (fan_at(level) of
 * them). */
static uintptr_t inner_copy(struct wctx *c, const uintptr_t *ch, unsigned level)
{
	unsigned fan = fan_at(c->t, level);
	uintptr_t tag = T_INNER | (fan < FAN ? SMALL_ROOT : 0);
	uintptr_t *n = node_alloc(c, inner_bytes(fan), NODE_ALIGN, (unsigned)tag);

	if (n == NULL)
		return EMPTY;
	memcpy(n, ch, inner_bytes(fan));
	return (uintptr_t)n | tag;
}

/* Canonical slot for an inner node's new children (invariant 2). Only the
 * node's fan_at(level) slots are read: those past it (a small root's) lie
 * beyond the region, EMPTY, so such a node is never FULL. */
static uintptr_t normalize(struct wctx *c, const uintptr_t *ch, unsigned level, uint64_t base, uintptr_t self)
{
	unsigned fan = fan_at(c->t, level), cs = span_shift(level - 1);
	bool all_empty = true, all_full = fan == FAN, small = true;
	/* Runs the children hold, and how many of them the merge below joins
	 * (one at a boundary where a child's last run ends and the next
	 * one's first begins): the merge gives exactly total - joins runs.
	 * prev_end: where the previous child's last run ends (UINT64_MAX: it
	 * had none; no child boundary is UINT64_MAX). */
	size_t total = 0, joins = 0;
	uint64_t prev_end = UINT64_MAX;

	for (unsigned i = 0; i < fan; i++) {
		uintptr_t v = ch[i];
		uint64_t cb = base + ((uint64_t)i << cs);

		all_empty &= v == EMPTY;
		all_full &= v == FULL;
		if (v == FULL) {
			total++;
			joins += prev_end == cb;
			prev_end = cb + (UINT64_C(1) << cs);
		} else if (is_node(v) && tag_of(v) == T_EXT) {
			const struct rdm_tree_ext *x = ptr_of(v);

			total += x->n;
			joins += x->n > 0 && prev_end == cb && x->r[0] == cb;
			prev_end = x->n > 0 ? x->r[2 * x->n - 1] : UINT64_MAX;
		} else if (is_node(v)) {
			small = false;
		} else {
			prev_end = UINT64_MAX;
		}
		/* Decided, as the whole scan would: neither EMPTY nor FULL
		 * (both only turn false), and no collapse: `small` only turns
		 * false, and total - joins only grows (a later child adds its
		 * runs and joins at most one of them). The other children are
		 * not read: a synchronous change's copy of an inner node over
		 * extent leaves read all 64 headers here, ~30% of the change's
		 * instructions. */
		if (!all_empty && !all_full && (!small || total - joins > EXT_MAX))
			return self != 0 ? self : inner_copy(c, ch, level);
	}
	if (all_empty)
		return EMPTY;
	if (all_full)
		return FULL;
	if (small) {
		/* Merge runs across child boundaries into one extent leaf: the
		 * scan above left total - joins <= EXT_MAX (the merge's m). */
		uint64_t r[2 * (EXT_MAX + FAN)];
		size_t m = 0;

		for (unsigned i = 0; i < fan; i++) {
			uint64_t tmp[2 * EXT_MAX];
			size_t k = slot_runs(ch[i], level - 1, base + ((uint64_t)i << cs), tmp);

			for (size_t q = 0; q < k; q++) {
				if (m > 0 && r[2 * m - 1] == tmp[2 * q]) {
					r[2 * m - 1] = tmp[2 * q + 1];
				} else {
					r[2 * m] = tmp[2 * q];
					r[2 * m + 1] = tmp[2 * q + 1];
					m++;
				}
			}
		}
		if (m <= EXT_MAX) {
			uintptr_t nv = build(c, level, base, r, m);

			if (c->err != 0)
				return EMPTY;
			for (unsigned i = 0; i < fan; i++)
				retire(c, ch[i], false);
			return nv;
		}
	}
	/* A hot node whose slots ch are: it stays, as it is. */
	return self != 0 ? self : inner_copy(c, ch, level);
}

static uintptr_t write_inner(struct wctx *c, uintptr_t v, unsigned level, uint64_t base,
			     uint64_t s, uint64_t e, bool val)
{
	uintptr_t buf[FAN], *ch, nv;
	unsigned cs = span_shift(level - 1);
	uint64_t i0 = (s - base) >> cs, i1 = (e - 1 - base) >> cs;
	bool keep = false, changed = false, hot = is_hot(c->t, v);

	/* A hot node (made by an earlier step of this working version) has its
	 * slots written in place, each logged first; any other is copied, its
	 * slots changed in the copy. Slots past fan_of(v) (a small root's) are
	 * never read. */
	if (hot) {
		ch = ptr_of(v);
	} else {
		ch = buf;
		memcpy(ch, ptr_of(v), inner_bytes(fan_of(c->t, v)));
	}
	for (uint64_t i = i0; i <= i1; i++) {
		uint64_t cb = base + (i << cs);
		uintptr_t nc = write_rec(c, ch[i], level - 1, cb, max64(s, cb),
					 min64(e, cb + (UINT64_C(1) << cs)), val);

		if (c->err != 0)
			return v;
		if (nc != ch[i]) {
			if (hot && !slot_write(c, &ch[i], nc))
				return v;
			ch[i] = nc;
			changed = true;
		}
		/* A bitmap or inner child has more than EXT_MAX runs in its own
		 * span, so this span has too: normalize() would keep an inner
		 * node, and needs not scan the other children to say so. */
		keep |= is_node(ch[i]) && tag_of(ch[i]) != T_EXT;
	}
	/* No slot changed: every child is as it was or changed in place (a
	 * hot child keeps its form: bitmap or inner), so v stays canonical. */
	if (!changed || (hot && keep))
		return v;
	nv = keep ? inner_copy(c, ch, level) : normalize(c, ch, level, base, hot ? v : 0);
	if (c->err != 0 || nv == v)
		return v;
	retire(c, v, true);
	return nv;
}

/* The new value of slot v (span at `level` from base) after setting the
 * blocks [s, e) (inside the span) to val. On failure c->err is set. */
static uintptr_t write_rec(struct wctx *c, uintptr_t v, unsigned level, uint64_t base, uint64_t s,
			   uint64_t e, bool val)
{
	unsigned sh = span_shift(level);
	uintptr_t want = val ? FULL : EMPTY;

	if (s == base && sh < 64 && e - base == UINT64_C(1) << sh) {
		retire(c, v, false);
		return c->err != 0 ? v : want;
	}
	if (v == want)
		return v;
	if (level == 0)
		return write_leaf(c, v, base, s, e, val);
	if (is_inner(v))
		return write_inner(c, v, level, base, s, e, val);
	return write_runs(c, v, level, base, s, e, val);
}

/* Open the working version if none is: it starts as the published one. */
static void open_version(struct rdm_tree *t)
{
	if (t->open)
		return;
	/* Relaxed: only this (the single) writer stores the root. */
	t->old_root = atomic_load_explicit(&t->root, memory_order_relaxed);
	t->new_root = t->old_root;
	t->fresh.n = 0;
	t->retired.n = t->retired_kept;
	hot_clear(t);
	t->open = true;
}

/* Begin one step of the working version: remember where it starts, so
 * step_undo() can take it back. */
static uintptr_t step_begin(struct rdm_tree *t, size_t *nfresh, size_t *nretired)
{
	open_version(t);
	*nfresh = t->fresh.n;
	*nretired = t->retired.n;
	t->nundo = 0;
	return t->new_root;
}

/* Put back the words logged since the log held `n` entries, newest first,
 * and drop their entries. */
static void undo_back_to(struct rdm_tree *t, size_t n)
{
	while (t->nundo > n) {
		const struct rdm_tree_undo *u = &t->undo[--t->nundo];

		if (u->slot)
			*(uintptr_t *)u->addr = (uintptr_t)u->old;
		else
			*(uint64_t *)u->addr = u->old;
	}
}

/* Undo one failed step: free the nodes it made, forget what it retired, and
 * return the working version to what it was before the step. */
static void step_undo(struct rdm_tree *t, uintptr_t root, size_t nfresh, size_t nretired)
{
	/* The words written in place: hot nodes of earlier steps as they were
	 * before this one. */
	undo_back_to(t, 0);
	/* Nodes this step made go back to the pool: not hot any more. */
	hot_clear(t);
	for (size_t i = nfresh; i < t->fresh.n; i++)
		pool_put_subtree(t, t->fresh.v[i], true);
	t->fresh.n = nfresh;
	t->retired.n = nretired;
	t->new_root = root;
}

/*
 * The common step of a batch: [s, e) lies inside one leaf that an earlier
 * step of this working version already made a bitmap, and it stays one.
 * write_rec() would then walk down hot inner nodes whose slots do not
 * change (write_inner() returns a hot node whose hot child kept its form)
 * and set the bits in place (write_leaf(), hot case); this does the same
 * with one loop and no recursion; a one-block step sets its bit and counts
 * runs only where the leaf's bound of them says it must (set_hot_bits()).
 * In bench pipeline (callgrind, one producer) a step took ~560
 * instructions, then ~300 (the worker's whole cost per change -10%), ~270
 * with that bound.
 *
 * Leaf cache. The leaf a step wrote in place is remembered (leaf_words,
 * leaf_index), and the next step inside the same leaf skips the walk; so
 * does the applier's check of a change's blocks (rdm_tree_working_all(),
 * a bit test for one block), which walked from the root before every
 * populate and discard. While set, the cache is that leaf of the
 * writer's current version, hot while a version is open: every way it may
 * stop being so empties it first - write_rec() (which may replace the
 * leaf, or evict it from the hot set by making other nodes), the hot set
 * emptied (a version opening, rdm_tree_keep_working(), a failed step), a
 * load, an abort. A publish leaves it: the leaf is the published
 * version's then, and the next version empties it as it opens
 * (tests/core/test_tree.c, test_leaf_cache()). bench pipeline, one
 * producer, the worker's instructions per change: 1,667 -> 1,596; the
 * scattered order, whose steps change leaf, 1,815 -> 1,774; 4 producers
 * 1,689 -> 1,619.
 *
 * True if the step is
 * done (or failed: c->err, the words logged for step_undo()); false, with
 * nothing changed, where write_rec() must decide: a node on the way is not
 * hot or not inner, the leaf is not a hot bitmap, or it would stop being
 * a bitmap - then the words set are put back and their log entries
 * dropped, so that write_rec() logs them as they were before the step
 * (tests/core/test_tree.c, test_hot_leaf_steps()).
 */
static bool prepare_in_hot_leaf(struct wctx *c, uint64_t s, uint64_t e, bool val)
{
	struct rdm_tree *t = c->t;
	uint64_t li = s >> LEAF_SHIFT, base = li << LEAF_SHIFT;
	size_t logged = t->nundo;
	uint64_t *hw = t->leaf_words;

	if (e - s >= LEAF_BITS || li != (e - 1) >> LEAF_SHIFT)
		return false;
	if (hw == NULL || t->leaf_index != li) {
		uintptr_t v = t->new_root;

		for (unsigned level = t->root_level; level > 0; level--) {
			unsigned cs = span_shift(level - 1);

			if (!is_node(v) || tag_of(v) != T_INNER || !is_hot(t, v))
				return false;
			v = ((const uintptr_t *)ptr_of(v))[(s >> cs) & (FAN - 1)];
		}
		if (!is_node(v) || tag_of(v) != T_BITMAP || !is_hot(t, v))
			return false;
		hw = ptr_of(v);
	}

	unsigned a = (unsigned)(s - base), b = (unsigned)(e - base);

	if (set_hot_bits(c, hw, a, b, val) != 0) {
		/* A failed step empties the cache with the hot set. */
		t->leaf_words = hw;
		t->leaf_index = li;
		return true;
	}
	undo_back_to(t, logged);
	return false;
}

int rdm_tree_prepare(struct rdm_tree *t, uint64_t s, uint64_t e, bool populated)
{
	struct wctx c = { .t = t, .err = 0 };
	uintptr_t root;
	size_t nfresh, nretired;

	root = step_begin(t, &nfresh, &nretired);
	if (!prepare_in_hot_leaf(&c, s, e, populated)) {
		/* Nodes may be replaced, and hot ones evicted, on this way. */
		t->leaf_words = NULL;
		t->new_root = write_rec(&c, root, t->root_level, 0, s, e, populated);
	}
	/* The flat view notes the step too (core/flat.h); a step that fails
	 * notes nothing there, and step_undo() below undoes the tree's part. */
	if (c.err == 0 && t->flat != NULL)
		c.err = rdm_flat_note(t->flat, s, e, populated);
	if (c.err != 0) {
		step_undo(t, root, nfresh, nretired);
		return c.err;
	}
	return 0;
}

void rdm_tree_keep_working(struct rdm_tree *t)
{
	/* Only hot nodes are written in place. */
	hot_clear(t);
}

bool rdm_tree_is_open(const struct rdm_tree *t)
{
	return t->open;
}

uint64_t rdm_tree_versions(const struct rdm_tree *t)
{
	/* Relaxed: a counter for tests; see rdm_tree_publish(). */
	return atomic_load_explicit(&t->versions, memory_order_relaxed);
}

/* Bottom-up construction from a bitmap source (rdm_tree_prepare_load). */
static uintptr_t load_rec(struct wctx *c, unsigned level, uint64_t base, rdm_tree_load_fn get,
			  void *opaque)
{
	if (level == 0) {
		uint64_t w[LEAF_WORDS];

		memset(w, 0, sizeof(w));
		get(opaque, base, w);
		if (base + LEAF_BITS > c->t->nblocks)
			bm_set(w, (unsigned)(c->t->nblocks - base), LEAF_BITS, false);
		return leaf_from_bitmap(c, w, base, 0);
	}
	{
		uintptr_t ch[FAN];
		unsigned cs = span_shift(level - 1);

		for (unsigned i = 0; i < FAN; i++) {
			uint64_t cb = base + ((uint64_t)i << cs);

			ch[i] = cb < c->t->nblocks ? load_rec(c, level - 1, cb, get, opaque) : EMPTY;
			if (c->err != 0)
				return EMPTY;
		}
		return normalize(c, ch, level, base, 0);
	}
}

int rdm_tree_prepare_load(struct rdm_tree *t, rdm_tree_load_fn get, void *opaque)
{
	struct wctx c = { .t = t, .err = 0 };
	uintptr_t root;
	size_t nfresh, nretired;

	root = step_begin(t, &nfresh, &nretired);
	t->leaf_words = NULL;
	retire(&c, root, false);
	t->new_root = load_rec(&c, t->root_level, 0, get, opaque);
	if (c.err == 0 && t->flat != NULL)
		c.err = rdm_flat_note_load(t->flat, get, opaque);
	if (c.err != 0) {
		step_undo(t, root, nfresh, nretired);
		return c.err;
	}
	return 0;
}

void rdm_tree_abort(struct rdm_tree *t)
{
	if (!t->open) {
		pool_settle(t);
		return;
	}
	/* Every node of every step since the last publish: none is reachable
	 * from the published version, and a node made by one step and replaced
	 * by a later one is in both lists but freed here only. */
	for (size_t i = 0; i < t->fresh.n; i++)
		pool_put_subtree(t, t->fresh.v[i], true);
	t->fresh.n = 0;
	/* Earlier, published changes' kept nodes stay; the steps' entries go. */
	t->retired.n = t->retired_kept;
	t->new_root = t->old_root;
	t->open = false;
	t->leaf_words = NULL;
	if (t->flat != NULL)
		rdm_flat_abort(t->flat);
	pool_settle(t);
}

void rdm_tree_publish(struct rdm_tree *t)
{
	if (!t->open)
		return;
	/* Release: pairs with the acquire in rdm_tree_snapshot(); every node of
	 * the new version is written before a reader can reach it. */
	/* The flat view's publish brackets the root store (see flat.c). */
	if (t->flat != NULL)
		rdm_flat_publish_begin(t->flat);
	atomic_store_explicit(&t->root, t->new_root, memory_order_release);
	/* Relaxed: only this writer stores it; readers are tests and stats. */
	atomic_store_explicit(&t->versions, atomic_load_explicit(&t->versions, memory_order_relaxed) + 1,
			      memory_order_relaxed);
	if (t->flat != NULL)
		rdm_flat_publish_end(t->flat);
	/* The fresh nodes are published now: never written or freed by the
	 * writer again, only retired. */
	t->fresh.n = 0;
	t->open = false;
	pool_settle(t);
}

uintptr_t rdm_tree_old_root(const struct rdm_tree *t)
{
	return t->old_root;
}

static void retire_cb(struct rcu_head *head)
{
	/* Not caa_container_of: liburcu's macro casts away a const it adds
	 * itself, which clang's -Wcast-qual reports. */
	struct rdm_retire_batch *b =
		(struct rdm_retire_batch *)(void *)((char *)head - offsetof(struct rdm_retire_batch, head));
	struct rdm_tree *t;
	struct rdm_retire_batch *ob;

	/* Acquire: pairs with the release in rdm_tree_retire() (the hand-off to
	 * this thread) and with every reader's rdm_tree_read_done() (the grace
	 * period has ended). */
	rdm_tsan_acquire(b);
	t = b->t;
	rdm_tsan_acquire(&t->gp);
	if (rdm_mem_quarantine_enabled()) {
		for (size_t i = 0; i < b->n; i++)
			free_retired(t, b->v[i]);
	} else {
		/* Hand the nodes back to the writer's pool ("Node pool"). */
		struct chains cs = { .t = t };

		for (size_t i = 0; i < b->n; i++)
			chain_subtree(&cs, b->v[i] & ~RETIRE_NODE_ONLY, (b->v[i] & RETIRE_NODE_ONLY) != 0);
		chains_push(&cs);
	}
	/* Relaxed: a bound the writer reads; nothing is ordered by it. */
	atomic_fetch_sub_explicit(&t->backlog, b->bytes, memory_order_relaxed);
	/* Relaxed: statistics only; a handed-back batch is not state. */
	atomic_fetch_sub_explicit(&t->mem->cur, batch_bytes(b->cap), memory_order_relaxed);
	ob = atomic_load_explicit(&t->returned_batches, memory_order_relaxed);
	do
		b->next = ob;
	/* Release: pairs with the acquire exchange in take_batch() and
	 * rdm_tree_barrier_done(). */
	while (!atomic_compare_exchange_weak_explicit(&t->returned_batches, &ob, b, memory_order_release,
						      memory_order_relaxed));
	/* Release: pairs with the acquire in rdm_tree_barrier_done(), the edge
	 * rcu_barrier() provides but TSan cannot see. */
	rdm_tsan_release(&t->reclaimed);
}

void rdm_tree_barrier_done(struct rdm_tree *t)
{
	uintptr_t *n;
	struct rdm_retire_batch *b;

	/* Acquire: pairs with the release at the end of retire_cb(). */
	rdm_tsan_acquire(&t->reclaimed);
	/* Every retire callback has run (rcu_barrier()): free what they handed
	 * back, and the pool. Acquire: pairs with retire_cb()'s release CASes. */
	for (unsigned k = 0; k < RDM_TREE_POOL_CLASSES; k++) {
		size_t size = class_size(k), align = class_align(k);

		n = (uintptr_t *)atomic_exchange_explicit(&t->returned[k], 0, memory_order_acquire);
		while (n != NULL) {
			uintptr_t *next = (uintptr_t *)n[0];

			/* Handed-back bytes were taken out of the count. */
			mem_count(t->mem, size);
			rdm_mem_free(t->mem, n, size, align);
			n = next;
		}
	}
	for (unsigned k = 0; k < RDM_TREE_POOL_CLASSES; k++) {
		size_t size = class_size(k), align = class_align(k);

		for (void **p = t->pool[k], **next; p != NULL; p = next) {
			next = p[0];
			/* Pooled bytes were taken out of the count; free takes
			 * them out again. */
			mem_count(t->mem, size);
			rdm_mem_free(t->mem, p, size, align);
		}
		t->pool[k] = NULL;
	}
	atomic_store_explicit(&t->pool_bytes, 0, memory_order_relaxed);
	t->pool_delta = t->pool_bytes_delta = 0;
	b = atomic_exchange_explicit(&t->returned_batches, NULL, memory_order_acquire);
	while (b != NULL) {
		struct rdm_retire_batch *next = b->next;

		free_batch(t, b);
		b = next;
	}
	for (b = t->spares; b != NULL;) {
		struct rdm_retire_batch *next = b->next;

		free_batch(t, b);
		b = next;
	}
	t->spares = NULL;
	t->nspares = 0;
}

/* Writer: an emptied retire batch of at least n entries, or NULL. Takes the
 * ones retire_cb handed back, keeps up to SPARES_MAX, frees the rest. */
static struct rdm_retire_batch *take_batch(struct rdm_tree *t, size_t n)
{
	struct rdm_retire_batch **pp, *b;

	/* Relaxed first: no RMW when nothing came back. */
	if (atomic_load_explicit(&t->returned_batches, memory_order_relaxed) != NULL) {
		/* Acquire: pairs with the release CAS in retire_cb(). */
		b = atomic_exchange_explicit(&t->returned_batches, NULL, memory_order_acquire);
		while (b != NULL) {
			struct rdm_retire_batch *next = b->next;

			if (t->nspares < SPARES_MAX) {
				b->next = t->spares;
				t->spares = b;
				t->nspares++;
			} else {
				free_batch(t, b);
			}
			b = next;
		}
	}
	for (pp = &t->spares; *pp != NULL; pp = &(*pp)->next) {
		if ((*pp)->cap >= n) {
			b = *pp;
			*pp = b->next;
			t->nspares--;
			mem_count(t->mem, batch_bytes(b->cap));
			return b;
		}
	}
	return NULL;
}

/* Wait for the grace period here and free this change's nodes at once. */
static void retire_now(struct rdm_tree *t)
{
	synchronize_rcu();
	/* Pairs with every reader's rdm_tree_read_done(). */
	rdm_tsan_acquire(&t->gp);
	for (size_t i = 0; i < t->retired.n; i++)
		pool_put_subtree(t, t->retired.v[i] & ~RETIRE_NODE_ONLY, (t->retired.v[i] & RETIRE_NODE_ONLY) != 0);
	t->retired.n = 0; /* keeps its capacity (freed by fini) */
	t->retired_kept = 0;
	t->retired_subtree = false;
	pool_settle(t);
}

void rdm_tree_retire_later(struct rdm_tree *t)
{
	/* fresh keeps its capacity: a batch's lists are reused, not reallocated
	 * per change (freed by fini). */
	t->fresh.n = 0;
	t->old_root = t->new_root;
	t->retired_kept = t->retired.n;
}

void rdm_tree_retire(struct rdm_tree *t)
{
	rdm_tree_retire_later(t);
	rdm_tree_retire_flush(t);
}

void rdm_tree_retire_flush(struct rdm_tree *t)
{
	size_t n = t->retired.n, bytes = 0;
	struct rdm_retire_batch *b;

	t->retired_kept = 0;
	t->retired_subtree = false;
	if (n == 0) {
		t->retired.n = 0; /* keeps its capacity (freed by fini) */
		return;
	}
	/* A whole inner subtree is counted as its top node only: sizing it
	 * would need a walk, and such changes (ranges covering a 2^18-block
	 * span, collapses) are rare next to the small ones the bound is for. */
	for (size_t i = 0; i < n; i++)
		bytes += node_bytes(t, t->retired.v[i] & ~RETIRE_NODE_ONLY);
	/* Relaxed: see retire_cb(); a stale value only moves the wait. */
	if (atomic_load_explicit(&t->backlog, memory_order_relaxed) + bytes > RETIRE_BACKLOG_MAX) {
		retire_now(t);
		return;
	}
	b = take_batch(t, n);
	if (b == NULL) {
		size_t cap = 64;

		while (cap < n)
			cap *= 2;
		b = rdm_mem_alloc(t->mem, batch_bytes(cap), 16);
		if (b == NULL) {
			/* No memory for the batch. */
			retire_now(t);
			return;
		}
		b->cap = cap;
	}
	b->t = t;
	b->n = n;
	b->bytes = bytes;
	memcpy(b->v, t->retired.v, n * sizeof(uintptr_t));
	t->retired.n = 0; /* keeps its capacity (freed by fini) */
	/* Relaxed: see retire_cb(). */
	atomic_fetch_add_explicit(&t->backlog, bytes, memory_order_relaxed);
	/* Release: pairs with the acquire in retire_cb() on the call_rcu thread. */
	rdm_tsan_release(b);
	call_rcu(&b->head, retire_cb);
}

static void stats_rec(const struct rdm_tree *t, uintptr_t v, struct rdm_tree_stats *st)
{
	if (v == FULL) {
		st->extents++;
		return;
	}
	if (!is_node(v))
		return;
	switch (tag_of(v)) {
	case T_BITMAP:
		st->bitmap++;
		return;
	case T_EXT:
		st->ext++;
		st->extents += ((const struct rdm_tree_ext *)ptr_of(v))->n;
		return;
	default:
		st->inner++;
		for (unsigned i = 0; i < fan_of(t, v); i++)
			stats_rec(t, ((const uintptr_t *)ptr_of(v))[i], st);
	}
}

void rdm_tree_stats(const struct rdm_tree *t, struct rdm_tree_stats *st)
{
	memset(st, 0, sizeof(*st));
	/* Relaxed: writer-side diagnostics. */
	stats_rec(t, atomic_load_explicit(&t->root, memory_order_relaxed), st);
}

static int nodes_rec(const struct rdm_tree *t, uintptr_t v, rdm_tree_node_fn fn, void *opaque)
{
	int err;

	if (!is_node(v))
		return 0;
	err = fn(opaque, ptr_of(v), node_bytes(t, v));
	if (err || tag_of(v) == T_EXT || tag_of(v) == T_BITMAP)
		return err;
	for (unsigned i = 0; i < fan_of(t, v) && !err; i++)
		err = nodes_rec(t, ((const uintptr_t *)ptr_of(v))[i], fn, opaque);
	return err;
}

int rdm_tree_nodes(const struct rdm_tree *t, uintptr_t root, rdm_tree_node_fn fn, void *opaque)
{
	return nodes_rec(t, root, fn, opaque);
}
