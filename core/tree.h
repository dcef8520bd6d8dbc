/* SPDX-License-Identifier: MIT */
/*
 * core/tree.h - the RCU-protected range structure of one region: which of
 * its blocks are populated. Keys are block indices; see tree.c's theory.
 *
 * Readers: inside rcu_read_lock(), take rdm_tree_snapshot() once and pass it
 * to the query functions; every answer then comes from that one version, and
 * the version stays valid until rcu_read_unlock(). End the section with
 * rdm_tree_read_done() (a TSan annotation; a no-op otherwise).
 *
 * Writer (one at a time, serialised by the caller): rdm_tree_prepare() builds
 * the new version beside the current one (nothing visible yet). Several
 * prepares may follow each other before one publish: the first opens a
 * private working version, each later one applies its change on top of it
 * (a step; a step that fails with -ENOMEM leaves the working version as it
 * was before that step). Then either rdm_tree_abort() (back to the last
 * published version: every step since is dropped) or rdm_tree_publish() (one
 * release store of the new root; every reader that loads the root afterwards
 * sees every step at once) followed, once the writer no longer reads the old
 * version, by
 * rdm_tree_retire() (the superseded nodes are freed after a grace period),
 * or rdm_tree_retire_later() to gather a batch of changes' superseded nodes
 * for one rdm_tree_retire_flush().
 * Between publish and retire the writer may still query the old version.
 *
 *   call                       may run concurrently with
 *   -------------------------  ------------------------------------------
 *   snapshot / queries         everything
 *   prepare/publish/abort/     queries only (one writer at a time)
 *   retire/retire_later/flush
 *   fini                       nothing (no reader may hold a snapshot)
 */
#ifndef RDM_CORE_TREE_H
#define RDM_CORE_TREE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/alloc.h"
#include "core/tsan.h"

#define RDM_TREE_VEC_INLINE 48
/* Nodes of the open working version a later step may write in place. */
#define RDM_TREE_HOT 16
#define RDM_TREE_UNDO_INLINE 32

/* One word a step overwrote in place, to restore if the step fails. */
struct rdm_tree_undo {
	void *addr;   /* a bitmap word (uint64_t) or an inner slot (uintptr_t) */
	uint64_t old;
	bool slot;
};

/* A writer's scratch list of node references (inline first, then heap). */
struct rdm_tree_vec {
	uintptr_t *v;
	size_t n, cap;
	uintptr_t inline_v[RDM_TREE_VEC_INLINE];
};

struct rdm_retire_batch;
struct rdm_flat;

/* Node size classes: size / 8 (<= 64) for 16-aligned extent leaves, and
 * 65 + size / 8 for 64-aligned inner and bitmap nodes. */
#define RDM_TREE_POOL_CLASSES 130
/* Bytes of nodes the writer's pool may keep, its hand-back stacks included
 * (tree.c, "Node pool"). */
#define RDM_TREE_POOL_MAX ((size_t)4 << 20)

struct rdm_tree {
	/* Read by every query, written once per change (root) or never: the
	 * first cache line of the tree. The published root slot: release store
	 * in rdm_tree_publish(), acquire load in rdm_tree_snapshot(). */
	_Atomic uintptr_t root;
	uint64_t nblocks;
	unsigned root_level;
	unsigned root_fan; /* slots of a root inner node (<= 64) */
	/* Block-index shift of one root slot's span (level root_level - 1);
	 * unused when root_level is 0. */
	unsigned root_cshift;
	struct rdm_mem *mem;
	/* Writer-only state of the change in progress, on its own cache lines
	 * so that a writer's stores do not evict the readers' line above. */
	_Alignas(64) uintptr_t old_root;
	uintptr_t new_root;
	struct rdm_tree_vec fresh, retired;
	/* The first retired_kept entries of `retired` belong to earlier,
	 * published changes (rdm_tree_retire_later()); the change in progress
	 * appends after them. */
	size_t retired_kept;
	/* A kept or pending entry is a whole replaced subtree (its size is
	 * not bounded by a node's): rdm_tree_retire_due() says hand on now.
	 * Cleared when everything is handed on; a step undone after setting
	 * it leaves it set, which only hands on early. */
	bool retired_subtree;
	/* A working version is open: prepared steps not yet published. */
	bool open;
	/* Nodes made since the working version opened (tree.c "Working
	 * version"), untagged, direct-mapped; 0 = none. Only these are written
	 * in place, each overwritten word logged in `undo` first. */
	uintptr_t hot[RDM_TREE_HOT];
	/* For a hot bitmap leaf in hot[i]: a lower bound of its runs (tree.c,
	 * set_hot_bits()). */
	uint32_t hot_runs[RDM_TREE_HOT];
	/* The leaf cache (tree.c, prepare_in_hot_leaf()): the words of the
	 * bitmap leaf the last in-place step wrote and its leaf index (block
	 * >> RDM_TREE_LEAF_SHIFT), or NULL; while set, that leaf of
	 * rdm_tree_working()'s version. Writer only. */
	uint64_t *leaf_words;
	uint64_t leaf_index;
	struct rdm_tree_undo *undo; /* the step in progress's log */
	size_t nundo, undo_cap;
	struct rdm_tree_undo undo_inline[RDM_TREE_UNDO_INLINE];
	/* Versions published (rdm_tree_publish() calls that stored a root);
	 * written by the writer only, read relaxed by tests and stats. */
	_Atomic uint64_t versions;
	/* The flat view kept beside the tree for a small region (core/flat.h),
	 * or NULL; set by the owner after rdm_tree_init(). Every prepare,
	 * abort and publish is passed on to it. */
	struct rdm_flat *flat;
	/* Node bytes handed to call_rcu and not yet freed (relaxed: a bound
	 * only, see rdm_tree_retire()). */
	atomic_size_t backlog;
	/* The node pool (tree.c "Node pool"): writer-private free lists by
	 * size class, and what the call_rcu thread hands back. */
	void *pool[RDM_TREE_POOL_CLASSES];
	/* Bytes in the pool, the hand-back stacks included: retire_cb() adds
	 * what it hands back, the writer its own puts and takes at
	 * pool_settle() (relaxed: a bound only, POOL_MAX). */
	atomic_size_t pool_bytes;
	/* Writer-private, until pool_settle(): bytes taken from the pool less
	 * bytes put back into it counted (the rdm_mem count's change), and
	 * the change of pool_bytes. */
	int64_t pool_delta, pool_bytes_delta;
	struct rdm_retire_batch *spares; /* writer-private, at most SPARES_MAX */
	unsigned nspares;
	/* Lock-free hand-back from retire_cb (push: release CAS) to the
	 * writer (take all: acquire exchange): reclaimed nodes, one stack per
	 * size class chained through their first word, and emptied retire
	 * batches. */
	_Atomic(uintptr_t) returned[RDM_TREE_POOL_CLASSES];
	_Atomic(struct rdm_retire_batch *) returned_batches;
	/* TSan sync objects (core/tsan.h): gp for the reader -> reclaim edge;
	 * reclaimed for the edge from a finished retire callback to whoever frees
	 * the tree after rcu_barrier(). */
	char gp;
	char reclaimed;
};

void rdm_tree_init(struct rdm_tree *t, uint64_t nblocks, struct rdm_mem *mem);
/* Free every node now. No reader may hold a snapshot; call after
 * synchronize_rcu() and before rcu_barrier() + rdm_tree_barrier_done() +
 * freeing the tree and mem. */
void rdm_tree_fini(struct rdm_tree *t);
void rdm_tree_barrier_done(struct rdm_tree *t);

static inline uintptr_t rdm_tree_snapshot(const struct rdm_tree *t)
{
	/* Acquire: pairs with the release store in rdm_tree_publish(); the nodes
	 * of the version are complete before the reader follows the root. */
	return atomic_load_explicit(&t->root, memory_order_acquire);
}

static inline void rdm_tree_read_done(const struct rdm_tree *t)
{
	/* Release: pairs with the acquire in retire_cb() / rdm_tree_fini(), the
	 * edge that the grace period provides but TSan cannot see. */
	rdm_tsan_release(&t->gp);
	(void)t;
}

/* ---- the read fast path, inline: it is the whole cost of a query ----
 * Slot encoding and leaf layouts: see tree.c's theory. */
#define RDM_TREE_LEAF_SHIFT 12
#define RDM_TREE_FAN_SHIFT 6
#define RDM_TREE_EMPTY ((uintptr_t)0)
#define RDM_TREE_FULL ((uintptr_t)3)
#define RDM_TREE_T_EXT 2u
/* Extent leaves up to this many runs are scanned linearly. */
#define RDM_TREE_EXT_LINEAR 8

struct rdm_tree_ext {
	uint32_t n;
	uint32_t pad;
	uint64_t r[]; /* r[2i] start, r[2i+1] end */
};

static inline const void *rdm_tree_ptr(uintptr_t v)
{
	return (const void *)(v & ~(uintptr_t)15);
}

/* Whether bits [a, b) of a bitmap leaf all equal val; a < b. */
static inline bool rdm_tree_bm_all(const uint64_t *w, unsigned a, unsigned b, bool val)
{
	unsigned i = a >> 6, i1 = (b - 1) >> 6;
	uint64_t flip = val ? ~UINT64_C(0) : 0, m = ~UINT64_C(0) << (a & 63);

	for (; i < i1; i++, m = ~UINT64_C(0)) {
		if (((w[i] ^ flip) & m) != 0)
			return false;
	}
	m &= ~UINT64_C(0) >> (63 - ((b - 1) & 63));
	return ((w[i] ^ flip) & m) == 0;
}

/* Index of the first run whose end is > s (n if none). Up to
 * RDM_TREE_EXT_LINEAR runs (the usual sparse leaf) a branch-free count of
 * the runs that end at or before s: the ends ascend, so that count is the
 * index, and no data-dependent branch can mispredict. Larger leaves use a
 * branch-free binary search (the halving step compiles to a conditional
 * move). */
static inline uint32_t rdm_tree_ext_search(const struct rdm_tree_ext *x, uint64_t s)
{
	uint32_t base = 0, len = x->n;

	if (len <= RDM_TREE_EXT_LINEAR) {
		for (uint32_t k = 0; k < len; k++)
			base += x->r[2 * k + 1] <= s;
		return base;
	}
	while (len > 1) {
		uint32_t half = len / 2;

		base = x->r[2 * (base + half - 1) + 1] <= s ? base + half : base;
		len -= half;
	}
	return base + (x->r[2 * base + 1] <= s);
}

static inline bool rdm_tree_ext_all(const struct rdm_tree_ext *x, uint64_t s, uint64_t e, bool val)
{
	uint32_t i = rdm_tree_ext_search(x, s);

	if (val)
		return i < x->n && x->r[2 * i] <= s && x->r[2 * i + 1] >= e;
	return i == x->n || x->r[2 * i] >= e;
}

/* The out-of-line part of rdm_tree_all(): v an inner node whose children of
 * span 2^cs blocks [s, e) spans more than one of. */
bool rdm_tree_all_span(uintptr_t v, unsigned cs, uint64_t s, uint64_t e, bool val);

/* Queries on a snapshot; block range [s, e), s < e <= nblocks.
 * rdm_tree_all: whether every block of [s, e) is populated (or discarded);
 * always inlined, since GCC would otherwise keep one out-of-line copy. */
__attribute__((always_inline)) static inline bool
rdm_tree_all(const struct rdm_tree *t, uintptr_t v, uint64_t s, uint64_t e, bool populated)
{
	uint64_t last = e - 1;
	unsigned cs = t->root_cshift, a;

	/* Descend while the range stays inside one child: the common query.
	 * Indices are absolute (a slot's index is 6 bits of the block index),
	 * so no span base is carried; cs is the child span's shift. Inner
	 * nodes are the non-EMPTY slots with tag 0. */
	while (v != RDM_TREE_EMPTY && (v & 3) == 0) {
		if (((s ^ last) >> cs) != 0)
			return rdm_tree_all_span(v, cs, s, e, populated);
		v = ((const uintptr_t *)rdm_tree_ptr(v))[(s >> cs) & ((1u << RDM_TREE_FAN_SHIFT) - 1)];
		cs -= RDM_TREE_FAN_SHIFT;
	}
	if (v == RDM_TREE_EMPTY)
		return !populated;
	if (v == RDM_TREE_FULL)
		return populated;
	if ((v & 3) == RDM_TREE_T_EXT)
		return rdm_tree_ext_all(rdm_tree_ptr(v), s, e, populated);
	/* A level-0 bitmap; [s, e) lies inside its span (checked above, or the
	 * region is one leaf). */
	a = (unsigned)s & ((1u << RDM_TREE_LEAF_SHIFT) - 1);
	return rdm_tree_bm_all(rdm_tree_ptr(v), a, a + (unsigned)(e - s), populated);
}

uint64_t rdm_tree_count(const struct rdm_tree *t, uintptr_t root, uint64_t s, uint64_t e);
/* Maximal runs of populated (or discarded) blocks inside [s, e), ascending,
 * merged across internal boundaries. Stops at the first non-zero return of
 * fn and returns it; 0 when all runs were passed. */
typedef int (*rdm_tree_run_fn)(void *opaque, uint64_t s, uint64_t e);
int rdm_tree_runs(const struct rdm_tree *t, uintptr_t root, uint64_t s, uint64_t e, bool populated,
		  rdm_tree_run_fn fn, void *opaque);
/* The same over consecutive segments [seg[i].s, seg[i].e) each read from
 * its own version (seg[i].e == seg[i + 1].s): runs that meet at a
 * segment boundary are given as one. Empty segments are skipped. */
struct rdm_tree_seg {
	uintptr_t root;
	uint64_t s, e;
};
int rdm_tree_runs_spliced(const struct rdm_tree *t, const struct rdm_tree_seg *seg, unsigned n,
			  bool populated, rdm_tree_run_fn fn, void *opaque);

/* Writer: see above. prepare returns 0 or -ENOMEM (then the working version
 * is as it was before the call, and no abort is needed). */
int rdm_tree_prepare(struct rdm_tree *t, uint64_t s, uint64_t e, bool populated);
void rdm_tree_abort(struct rdm_tree *t);
/* Like prepare, but the new version is built from scratch, bottom up, from a
 * bitmap: get() fills the 64 words of the 4096 blocks starting at `first`
 * (bit i of word j = block first + 64 j + i; pre-zeroed). O(blocks / 4096)
 * node builds instead of one change per run. */
typedef void (*rdm_tree_load_fn)(void *opaque, uint64_t first, uint64_t *words);
int rdm_tree_prepare_load(struct rdm_tree *t, rdm_tree_load_fn get, void *opaque);
void rdm_tree_publish(struct rdm_tree *t);
/* The writer's current state: the open working version (every prepared,
 * unpublished step applied), else the published one. Writer only. A later
 * step may write the working version's nodes in place (tree.c "Working
 * version"): to read this root after further steps, keep it first. */
static inline uintptr_t rdm_tree_working(const struct rdm_tree *t)
{
	/* Relaxed: the writer reads its own last store. Inline: the
	 * applier asks once per change. */
	return t->open ? t->new_root : atomic_load_explicit(&t->root, memory_order_relaxed);
}
/*
 * rdm_tree_all() on rdm_tree_working(t), answered from the leaf cache when
 * [s, e) lies in the leaf the last in-place step wrote: the applier's check
 * of a change's blocks then reads one word instead of walking down from the
 * root (tree.c, "Leaf cache"). Writer only: the cache is the writer's.
 */
__attribute__((always_inline)) static inline bool rdm_tree_working_all(const struct rdm_tree *t, uint64_t s,
									 uint64_t e, bool populated)
{
	if (t->leaf_words != NULL && s >> RDM_TREE_LEAF_SHIFT == t->leaf_index &&
	    (e - 1) >> RDM_TREE_LEAF_SHIFT == t->leaf_index) {
		unsigned a = (unsigned)s & ((1u << RDM_TREE_LEAF_SHIFT) - 1);

		if (e - s == 1) /* one block: one bit */
			return ((t->leaf_words[a >> 6] >> (a & 63)) & 1) == (unsigned)populated;
		return rdm_tree_bm_all(t->leaf_words, a, a + (unsigned)(e - s), populated);
	}
	return rdm_tree_all(t, rdm_tree_working(t), s, e, populated);
}
/* The working version as it is now stays readable, unchanged, until the
 * retire that follows its replacement's publish: later steps copy its nodes
 * instead of writing them in place. Writer only. */
void rdm_tree_keep_working(struct rdm_tree *t);
bool rdm_tree_is_open(const struct rdm_tree *t);
/* Versions published so far (any thread; a count for tests and stats). */
uint64_t rdm_tree_versions(const struct rdm_tree *t);
/* The version before the last publish (valid until rdm_tree_retire()). */
uintptr_t rdm_tree_old_root(const struct rdm_tree *t);
/* Hands the superseded nodes to call_rcu; if the bytes already waiting for
 * a grace period exceed RETIRE_BACKLOG_MAX (tree.c), waits for a grace
 * period (synchronize_rcu) and frees them at once instead. */
void rdm_tree_retire(struct rdm_tree *t);
/* Ends the change like rdm_tree_retire(), but keeps its superseded nodes
 * with those of earlier kept changes until rdm_tree_retire_flush() (or the
 * next rdm_tree_retire(), or fini) hands them all on in one batch: one
 * call_rcu per batch of changes instead of one per change. */
void rdm_tree_retire_later(struct rdm_tree *t);
/* Hands every kept superseded node to call_rcu (or frees it after
 * synchronize_rcu, as rdm_tree_retire() does); nothing if none is kept.
 * Writer only, between changes. */
void rdm_tree_retire_flush(struct rdm_tree *t);
/* Retired nodes kept by rdm_tree_retire_later() and not yet flushed. */
static inline size_t rdm_tree_retired_pending(const struct rdm_tree *t)
{
	return t->retired_kept;
}

/*
 * Kept retired entries per hand-on (tree.c "Retire groups"): a writer that
 * keeps its changes' superseded nodes (rdm_tree_retire_later()) hands them
 * on once this many are kept, or at once when one is a whole subtree.
 */
#define RDM_TREE_RETIRE_GROUP 256u

/* True when the kept entries should be handed on now (the rule above). */
static inline bool rdm_tree_retire_due(const struct rdm_tree *t)
{
	return t->retired_kept >= RDM_TREE_RETIRE_GROUP || (t->retired_kept != 0 && t->retired_subtree);
}

/* Diagnostics for tests and benchmarks (writer-side, current version). */
struct rdm_tree_stats {
	uint64_t inner, bitmap, ext, extents;
};
void rdm_tree_stats(const struct rdm_tree *t, struct rdm_tree_stats *st);
/* Every node of version `root` (a snapshot the caller holds under RCU, or
 * the writer's), with its size in bytes, until fn returns non-zero. */
typedef int (*rdm_tree_node_fn)(void *opaque, const void *node, size_t bytes);
int rdm_tree_nodes(const struct rdm_tree *t, uintptr_t root, rdm_tree_node_fn fn, void *opaque);

#endif /* RDM_CORE_TREE_H */
