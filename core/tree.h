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
 * the new version beside the current one (nothing visible yet), then either
 * rdm_tree_abort() (nothing changed) or rdm_tree_publish() (one release store
 * of the new root; every reader that loads the root afterwards sees the whole
 * change) followed, once the writer no longer reads the old version, by
 * rdm_tree_retire() (the superseded nodes are freed after a grace period).
 * Between publish and retire the writer may still query the old version.
 *
 *   call                       may run concurrently with
 *   -------------------------  ------------------------------------------
 *   snapshot / queries         everything
 *   prepare/publish/abort/     queries only (one writer at a time)
 *   retire
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

/* A writer's scratch list of node references (inline first, then heap). */
struct rdm_tree_vec {
	uintptr_t *v;
	size_t n, cap;
	uintptr_t inline_v[RDM_TREE_VEC_INLINE];
};

struct rdm_retire_batch;

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
	/* Node bytes handed to call_rcu and not yet freed (relaxed: a bound
	 * only, see rdm_tree_retire()). */
	atomic_size_t backlog;
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

/* Queries on a snapshot; block range [s, e), s < e <= nblocks. */
bool rdm_tree_all(const struct rdm_tree *t, uintptr_t root, uint64_t s, uint64_t e, bool populated);
uint64_t rdm_tree_count(const struct rdm_tree *t, uintptr_t root, uint64_t s, uint64_t e);
/* Maximal runs of populated (or discarded) blocks inside [s, e), ascending,
 * merged across internal boundaries. Stops at the first non-zero return of
 * fn and returns it; 0 when all runs were passed. */
typedef int (*rdm_tree_run_fn)(void *opaque, uint64_t s, uint64_t e);
int rdm_tree_runs(const struct rdm_tree *t, uintptr_t root, uint64_t s, uint64_t e, bool populated,
		  rdm_tree_run_fn fn, void *opaque);

/* Writer: see above. prepare returns 0 or -ENOMEM (then nothing changed and
 * no abort is needed). */
int rdm_tree_prepare(struct rdm_tree *t, uint64_t s, uint64_t e, bool populated);
void rdm_tree_abort(struct rdm_tree *t);
/* Like prepare, but the new version is built from scratch, bottom up, from a
 * bitmap: get() fills the 64 words of the 4096 blocks starting at `first`
 * (bit i of word j = block first + 64 j + i; pre-zeroed). O(blocks / 4096)
 * node builds instead of one change per run. */
typedef void (*rdm_tree_load_fn)(void *opaque, uint64_t first, uint64_t *words);
int rdm_tree_prepare_load(struct rdm_tree *t, rdm_tree_load_fn get, void *opaque);
void rdm_tree_publish(struct rdm_tree *t);
/* The version before the last publish (valid until rdm_tree_retire()). */
uintptr_t rdm_tree_old_root(const struct rdm_tree *t);
/* Hands the superseded nodes to call_rcu; if the bytes already waiting for
 * a grace period exceed RETIRE_BACKLOG_MAX (tree.c), waits for a grace
 * period (synchronize_rcu) and frees them at once instead. */
void rdm_tree_retire(struct rdm_tree *t);

/* Diagnostics for tests and benchmarks (writer-side, current version). */
struct rdm_tree_stats {
	uint64_t inner, bitmap, ext, extents;
};
void rdm_tree_stats(const struct rdm_tree *t, struct rdm_tree_stats *st);

#endif /* RDM_CORE_TREE_H */
