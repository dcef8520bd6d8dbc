/* SPDX-License-Identifier: MIT */
/*
 * iommu/mapset.h - the ordered set of one region's IOMMU mappings.
 *
 * Keys are block indices within the region. Every mapping covers the blocks
 * [start, start + len); mappings never overlap. `live` counts the blocks of
 * the mapping that are populated; len - live blocks are discarded but still
 * mapped (deferred, or about to be unmapped within the current batch).
 * Only the region's applier (the worker thread) touches a mapset.
 */
#ifndef RDM_IOMMU_MAPSET_H
#define RDM_IOMMU_MAPSET_H

#include <stdint.h>

struct rdm_layout_map {
	uint64_t start;
	uint64_t len;
	uint64_t live;
	uint64_t stamp; /* when its first block was deferred (defer policy) */
	/* treap links, private */
	struct rdm_layout_map *left, *right;
	uint32_t prio;
};

struct rdm_mapset {
	struct rdm_layout_map *root;
	uint64_t count;
	uint32_t rng;
	/* Removed nodes kept for the next inserts, private. */
	struct rdm_layout_map *spare;
	uint32_t nspare;
};

void rdm_mapset_init(struct rdm_mapset *s);
void rdm_mapset_clear(struct rdm_mapset *s);

/* Insert [start, start+len) (must not overlap another). NULL on ENOMEM. */
struct rdm_layout_map *rdm_mapset_insert(struct rdm_mapset *s, uint64_t start, uint64_t len, uint64_t live);
/* Remove and free m. */
void rdm_mapset_remove(struct rdm_mapset *s, struct rdm_layout_map *m);
/* The mapping containing block b, or NULL. */
struct rdm_layout_map *rdm_mapset_find(const struct rdm_mapset *s, uint64_t b);
/* The first mapping whose end is > b (it may contain b or start after it), or NULL. */
struct rdm_layout_map *rdm_mapset_first_ending_after(const struct rdm_mapset *s, uint64_t b);
/* The mapping following m in order, or NULL. */
struct rdm_layout_map *rdm_mapset_next(const struct rdm_mapset *s, const struct rdm_layout_map *m);

#endif /* RDM_IOMMU_MAPSET_H */
