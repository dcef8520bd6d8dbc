/* SPDX-License-Identifier: MIT */
/*
 * iommu/maptree.h - an ordered set of disjoint intervals, each with a small
 * payload of its owner's: rdm's one structure for sets of mappings.
 *
 * Users: the sim keeps its whole model in one (payload: the host address);
 * the real backends keep a shadow of rdm's own mappings in one (no payload),
 * so their stats count mappings exactly; the planner keeps each region's
 * layout in one (keys in blocks; payload: populated blocks and an age).
 *
 * Intervals are [start, start + len) with len > 0 and start + len - 1 never
 * wrapping: an interval may end exactly at 2^64. Handles are uint32_t node
 * indices (0 = none); a handle stays valid until its node is freed, a node
 * pointer (rdm_maptree_node()) only until the next rdm_maptree_reserve().
 *
 * Reserve, then commit: rdm_maptree_reserve(t, n) is the only call that
 * allocates. It makes room for n more nodes, so the next n inserts cannot
 * fail; removals never allocate. An owner whose operation must not fail
 * halfway reserves everything it may need before it changes anything.
 *
 * Dense mode (below) indexes single-slot intervals by slot instead.
 *
 * O(log n) expected per lookup, insert and removal (a treap whose nodes live
 * in one pooled array: 32 bytes per node with a payload of up to 8 bytes, 64
 * with up to 40). Not thread-safe; the owner serialises.
 */
#ifndef RDM_IOMMU_MAPTREE_H
#define RDM_IOMMU_MAPTREE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The head of every node; the owner's payload follows it. */
struct rdm_maptree_node {
	uint64_t start;
	uint64_t len;
	uint32_t left, right; /* private */
};

#define RDM_MAPTREE_MAX_PAYLOAD 40u

struct rdm_maptree {
	unsigned char *pool; /* node i at pool + (i << shift); node 0 is nil */
	uint32_t shift;      /* log2 of the node size */
	uint32_t cap;        /* nodes allocated in pool */
	uint32_t used;       /* high-water index */
	uint32_t free_head;  /* free list through .left */
	uint32_t nfree;
	uint32_t root;
	uint64_t count;      /* intervals in the tree */
	uint32_t trim_above; /* rdm_maptree_trim() acts on pools larger than this */
	/* Dense mode (rdm_maptree_make_dense()); slot == NULL: a treap. */
	uint32_t *slot;      /* the handle linked at each slot, 0 if none */
	uint64_t *bits;      /* bit k: slot k holds an interval */
	uint64_t *sum;       /* bit w: word w of bits is not zero */
	uint64_t nslots;
	uint32_t gshift;     /* a slot is 2^gshift keys */
};

/* An empty tree whose nodes carry payload_size (<= RDM_MAPTREE_MAX_PAYLOAD)
 * bytes. Allocates nothing. */
void rdm_maptree_init(struct rdm_maptree *t, size_t payload_size);
/* Free everything (linked and unlinked nodes alike). */
void rdm_maptree_fini(struct rdm_maptree *t);

/*
 * Dense mode, for an owner whose intervals are almost always single slots:
 * every interval [k << gshift, (k + 1) << gshift) with k < nslots, as the
 * planner's layout under the block policy (one mapping per discard unit).
 * The intervals are then indexed by slot (a handle per slot and a bitmap
 * with a summary word per 64 words) instead of a treap: an insert, a
 * removal and a lookup cost O(1) and a walk to the next interval
 * O(1 + nslots / 4096), with no descent. The API and its results are
 * unchanged; nodes, handles, payloads and reserve-then-commit are the
 * same. The first interval linked that is not a single slot (or lies
 * beyond nslots) turns the tree into the treap of the intervals it holds,
 * for good, without allocating: dense mode is an index, never a rule.
 * Call on an empty tree; costs 4 bytes and a bit per slot, at most ~4.1
 * MiB (RDM_MAPTREE_DENSE_MAX slots: a 2 TiB region of 2 MiB units), where
 * the treap holding every slot would take 64 bytes per slot.
 * 0, or -EINVAL (not empty, nslots 0 or above RDM_MAPTREE_DENSE_MAX,
 * gshift > 63) or -ENOMEM, and the tree stays a treap (still correct).
 */
#define RDM_MAPTREE_DENSE_MAX (1ull << 20)
int rdm_maptree_make_dense(struct rdm_maptree *t, uint32_t gshift, uint64_t nslots);
static inline bool rdm_maptree_is_dense(const struct rdm_maptree *t)
{
	return t->slot != NULL;
}

/* Make room for n more nodes, so that the next n inserts cannot fail.
 * 0 or -ENOMEM (nothing changed). */
int rdm_maptree_reserve(struct rdm_maptree *t, uint32_t n);
/* Nodes that can be inserted now without an allocation. */
uint32_t rdm_maptree_spare(const struct rdm_maptree *t);

static inline struct rdm_maptree_node *rdm_maptree_node(const struct rdm_maptree *t, uint32_t h)
{
	return (struct rdm_maptree_node *)(void *)(t->pool + ((size_t)h << t->shift));
}

static inline void *rdm_maptree_payload(const struct rdm_maptree *t, uint32_t h)
{
	return rdm_maptree_node(t, h) + 1;
}

/* Is x inside node h? */
static inline bool rdm_maptree_contains(const struct rdm_maptree *t, uint32_t h, uint64_t x)
{
	const struct rdm_maptree_node *n = rdm_maptree_node(t, h);

	return x - n->start < n->len;
}

/*
 * Insert [start, start + len), which overlaps nothing in the tree (the
 * caller checked), into a node reserved beforehand (rdm_maptree_spare() > 0):
 * cannot fail. Returns its handle; the payload is zeroed.
 */
uint32_t rdm_maptree_insert(struct rdm_maptree *t, uint64_t start, uint64_t len);
/*
 * Insert the n adjacent intervals [start + k * len, +len), k < n, none of
 * which overlaps anything in the tree, into nodes reserved beforehand
 * (rdm_maptree_spare() >= n): cannot fail. Each payload is zeroed, then its
 * first `size` bytes are copied from `payload`. The same tree as n calls
 * of rdm_maptree_insert(), in O(n log n + log count) expected instead of
 * O(n log count): the run's own treap is built apart (each node hung from
 * its right spine), then joined by one split and two merges.
 */
void rdm_maptree_insert_run(struct rdm_maptree *t, uint64_t start, uint64_t len, uint32_t n, const void *payload,
			    size_t size);
/* Remove node h from the tree and free it. */
void rdm_maptree_remove(struct rdm_maptree *t, uint32_t h);
/* Remove node h from the tree but keep it (and its payload) allocated:
 * the owner may change start and len and rdm_maptree_link() it again, or
 * rdm_maptree_free() it. */
void rdm_maptree_unlink(struct rdm_maptree *t, uint32_t h);
void rdm_maptree_link(struct rdm_maptree *t, uint32_t h);
/* rdm_maptree_unlink() of the node starting exactly at key, found in the
 * same descent; returns its handle, or 0 (nothing changed) if no interval
 * starts at key. rdm_maptree_link() puts it back as it was (a treap's shape
 * depends only on its keys and priorities). If next is not NULL, *next is
 * the handle of the first interval after key still in the tree (0 if none),
 * found on the way: the descent passes it or the removed node's right
 * subtree holds it; and *next_start is where that interval starts
 * (UINT64_MAX if none), known without reading its node in dense mode. */
uint32_t rdm_maptree_unlink_start(struct rdm_maptree *t, uint64_t key, uint32_t *next, uint64_t *next_start);
void rdm_maptree_free(struct rdm_maptree *t, uint32_t h);
/* Remove every interval from the tree; the nodes stay reserved. Nodes
 * unlinked and not yet freed stay as they are. */
void rdm_maptree_clear(struct rdm_maptree *t);

/*
 * Give memory back after a shrink. The pool only grows (by doubling, in
 * rdm_maptree_reserve()); when at most a quarter of it holds intervals and
 * it is larger than t->trim_above nodes (RDM_MAPTREE_TRIM_ABOVE from
 * rdm_maptree_init(): 2-4 MiB, below which the memory is not worth moving
 * for - trace A's 4096-block region cycling between 0 and 3072 mappings
 * cost 12% more instructions per request when every pool above 1024 nodes
 * was trimmed and grew again), the intervals move, in order, into a new
 * pool of twice their number (a power of two, at least
 * RDM_MAPTREE_TRIM_MIN), and the old one is freed. Every handle changes, so
 * the owner may hold none: no node unlinked and kept, no handle it will use
 * again. True if the intervals moved; false, with nothing changed, when
 * there was nothing to give back or the new pool could not be allocated
 * (the tree stays as correct as before: trimming is never needed).
 * O(count log count) expected when it moves, O(1) when not; the quarter keeps a
 * tree that shrinks and grows again from moving more than once per
 * doubling.
 */
#define RDM_MAPTREE_TRIM_MIN 1024u
#define RDM_MAPTREE_TRIM_ABOVE 65536u
bool rdm_maptree_trim(struct rdm_maptree *t);

/* The interval with the greatest start <= x / the smallest start >= x, or 0. */
uint32_t rdm_maptree_find_le(const struct rdm_maptree *t, uint64_t x);
uint32_t rdm_maptree_find_ge(const struct rdm_maptree *t, uint64_t x);
/* The interval containing x, or 0. */
uint32_t rdm_maptree_find(const struct rdm_maptree *t, uint64_t x);
/* The first interval that ends after x (it contains x or starts after it), or 0. */
uint32_t rdm_maptree_first_ending_after(const struct rdm_maptree *t, uint64_t x);
/* The interval after h in order, or 0. */
uint32_t rdm_maptree_next(const struct rdm_maptree *t, uint32_t h);

/* Does any interval intersect [start, start + len)? len > 0. */
bool rdm_maptree_intersects(const struct rdm_maptree *t, uint64_t start, uint64_t len);

/* Ascending visit; stops at and returns the first non-zero return. */
typedef int (*rdm_maptree_fn)(void *opaque, const struct rdm_maptree *t, uint32_t h);
int rdm_maptree_for_each(const struct rdm_maptree *t, rdm_maptree_fn fn, void *opaque);

/*
 * Remove and free every interval whose start lies in [lo, last] (an
 * inclusive bound, so that a range may end at 2^64); adds how many and
 * their total length to *count and *len_sum.
 */
void rdm_maptree_remove_starts_in(struct rdm_maptree *t, uint64_t lo, uint64_t last, uint64_t *count,
				  uint64_t *len_sum);
/*
 * The same, but first visits those intervals (ascending) with refuse: if it
 * returns non-zero for one, nothing is removed (the tree is left exactly as
 * it was) and the result is false; otherwise all are removed, counted as
 * above, and the result is true. refuse may be NULL (never refuses).
 */
bool rdm_maptree_remove_starts_in_if(struct rdm_maptree *t, uint64_t lo, uint64_t last, rdm_maptree_fn refuse,
				     void *opaque, uint64_t *count, uint64_t *len_sum);


#endif /* RDM_IOMMU_MAPTREE_H */
