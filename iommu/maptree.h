/* SPDX-License-Identifier: MIT */
/*
 * iommu/maptree.h - an ordered set of non-overlapping mappings.
 *
 * The sim keeps its whole model in one; the real backends keep a shadow of
 * rdm's own mappings in one (so their stats count mappings exactly). O(log n)
 * expected per lookup, insert and removal of one mapping (a treap whose
 * nodes live in one pooled array, 32 bytes per mapping, priorities derived
 * from the node index). Not thread-safe; the owner serialises.
 */
#ifndef RDM_IOMMU_MAPTREE_H
#define RDM_IOMMU_MAPTREE_H

#include <stdbool.h>
#include <stdint.h>

struct rdm_mapping {
	uint64_t iova;
	uint64_t size; /* iova + size never wraps */
	uint64_t vaddr;
};

struct rdm_maptree_node;

struct rdm_maptree {
	struct rdm_maptree_node *pool; /* pool[0] is the nil node */
	uint32_t cap;                  /* nodes allocated in pool */
	uint32_t used;                 /* high-water index */
	uint32_t free_head;            /* free list through .left */
	uint32_t nfree;
	uint32_t root;
	uint64_t count;                /* mappings held */
	uint64_t bytes;                /* bytes held */
};

void rdm_maptree_init(struct rdm_maptree *t);
void rdm_maptree_fini(struct rdm_maptree *t);

/* Make room for n more inserts, so they cannot fail. 0 or -ENOMEM. */
int rdm_maptree_reserve(struct rdm_maptree *t, uint32_t n);

/* The mapping with the greatest iova <= x / the smallest iova >= x. */
bool rdm_maptree_find_le(const struct rdm_maptree *t, uint64_t x, struct rdm_mapping *out);
bool rdm_maptree_find_ge(const struct rdm_maptree *t, uint64_t x, struct rdm_mapping *out);

/* Does any mapping intersect [iova, iova + size)? size > 0. */
bool rdm_maptree_intersects(const struct rdm_maptree *t, uint64_t iova, uint64_t size);

/* Insert; the caller checked it overlaps nothing. 0 or -ENOMEM (nothing changed). */
int rdm_maptree_insert(struct rdm_maptree *t, const struct rdm_mapping *m);

/*
 * Remove every mapping whose iova lies in [lo, hi) (hi > lo); adds how many
 * and their bytes to *count and *bytes.
 */
void rdm_maptree_remove_starts_in(struct rdm_maptree *t, uint64_t lo, uint64_t hi, uint64_t *count,
				  uint64_t *bytes);

/* Ascending visit; stops at and returns the first non-zero return. */
typedef int (*rdm_maptree_fn)(void *opaque, const struct rdm_mapping *m);
int rdm_maptree_for_each(const struct rdm_maptree *t, rdm_maptree_fn fn, void *opaque);

#endif /* RDM_IOMMU_MAPTREE_H */
