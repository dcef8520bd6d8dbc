/* SPDX-License-Identifier: MIT */
/*
 * iommu/mapset.c - a treap of non-overlapping mappings keyed by start block.
 *
 * A treap keeps expected O(log n) depth with random priorities and needs
 * only split and merge, which keeps the code short. The planner looks up
 * mappings by block (find), walks the mappings overlapping a range
 * (first_ending_after, next) and inserts/removes whole mappings.
 *
 * Invariants:
 *  1. In-order traversal yields strictly ascending start; mappings are
 *     disjoint, so it also yields ascending ends.
 *  2. Every node's prio is >= its children's (max-heap on prio).
 *  3. count equals the number of nodes.
 *  4. The spare list (linked through right) holds nspare <=
 *     MAPSET_SPARE_MAX nodes that are in no tree.
 */
#include "core/alloc.h"
#include "iommu/mapset.h"

#include <stdlib.h>

/* Removed nodes kept for reuse, at most: a batch's discards feed the next
 * batch's populates without a free/malloc pair each. */
#define MAPSET_SPARE_MAX 256u

void rdm_mapset_init(struct rdm_mapset *s)
{
	s->root = NULL;
	s->count = 0;
	s->rng = 0x9e3779b9u;
	s->spare = NULL;
	s->nspare = 0;
}

static void free_tree(struct rdm_layout_map *n)
{
	while (n) {
		struct rdm_layout_map *right = n->right;

		free_tree(n->left);
		rdm_free(n);
		n = right;
	}
}

void rdm_mapset_clear(struct rdm_mapset *s)
{
	free_tree(s->root);
	s->root = NULL;
	s->count = 0;
	while (s->spare) {
		struct rdm_layout_map *n = s->spare;

		s->spare = n->right;
		rdm_free(n);
	}
	s->nspare = 0;
}

static uint32_t next_prio(struct rdm_mapset *s)
{
	uint32_t x = s->rng;

	x ^= x << 13;
	x ^= x >> 17;
	x ^= x << 5;
	s->rng = x;
	return x;
}

/* Split t into nodes with start < key (*l) and start >= key (*r). */
static void split(struct rdm_layout_map *t, uint64_t key, struct rdm_layout_map **l, struct rdm_layout_map **r)
{
	while (t) {
		if (t->start < key) {
			*l = t;
			l = &t->right;
			t = t->right;
		} else {
			*r = t;
			r = &t->left;
			t = t->left;
		}
	}
	*l = NULL;
	*r = NULL;
}

/* Merge l and r, where every key of l is below every key of r. */
static struct rdm_layout_map *merge(struct rdm_layout_map *l, struct rdm_layout_map *r)
{
	struct rdm_layout_map *root = NULL, **link = &root;

	while (l && r) {
		if (l->prio >= r->prio) {
			*link = l;
			link = &l->right;
			l = l->right;
		} else {
			*link = r;
			link = &r->left;
			r = r->left;
		}
	}
	*link = l ? l : r;
	return root;
}

static struct rdm_layout_map *node_get(struct rdm_mapset *s)
{
	struct rdm_layout_map *n = s->spare;

	if (n == NULL)
		return rdm_malloc(sizeof(*n));
	s->spare = n->right;
	s->nspare--;
	return n;
}

static void node_put(struct rdm_mapset *s, struct rdm_layout_map *n)
{
	if (s->nspare >= MAPSET_SPARE_MAX) {
		rdm_free(n);
		return;
	}
	n->right = s->spare;
	s->spare = n;
	s->nspare++;
}

struct rdm_layout_map *rdm_mapset_insert(struct rdm_mapset *s, uint64_t start, uint64_t len, uint64_t live)
{
	struct rdm_layout_map *n = node_get(s), **link = &s->root;

	if (!n)
		return NULL;
	n->start = start;
	n->len = len;
	n->live = live;
	n->stamp = 0;
	n->prio = next_prio(s);
	/* Descend while the nodes outrank n (invariant 2), then n takes that
	 * place and the subtree there splits around it. */
	while (*link && (*link)->prio > n->prio)
		link = start < (*link)->start ? &(*link)->left : &(*link)->right;
	split(*link, start, &n->left, &n->right);
	*link = n;
	s->count++;
	return n;
}

void rdm_mapset_remove(struct rdm_mapset *s, struct rdm_layout_map *m)
{
	struct rdm_layout_map **link = &s->root;

	while (*link != m)
		link = m->start < (*link)->start ? &(*link)->left : &(*link)->right;
	*link = merge(m->left, m->right);
	s->count--;
	node_put(s, m);
}

/* The last mapping with start <= b. */
static struct rdm_layout_map *floor_node(const struct rdm_mapset *s, uint64_t b)
{
	struct rdm_layout_map *t = s->root, *best = NULL;

	while (t) {
		if (t->start <= b) {
			best = t;
			t = t->right;
		} else {
			t = t->left;
		}
	}
	return best;
}

/* The first mapping with start > b. */
static struct rdm_layout_map *above_node(const struct rdm_mapset *s, uint64_t b)
{
	struct rdm_layout_map *t = s->root, *best = NULL;

	while (t) {
		if (t->start > b) {
			best = t;
			t = t->left;
		} else {
			t = t->right;
		}
	}
	return best;
}

struct rdm_layout_map *rdm_mapset_find(const struct rdm_mapset *s, uint64_t b)
{
	struct rdm_layout_map *m = floor_node(s, b);

	return m && b - m->start < m->len ? m : NULL;
}

struct rdm_layout_map *rdm_mapset_first_ending_after(const struct rdm_mapset *s, uint64_t b)
{
	/* One descent finds both the last mapping starting at or before b
	 * and the first starting after it. */
	struct rdm_layout_map *t = s->root, *floor = NULL, *above = NULL;

	while (t) {
		if (t->start <= b) {
			floor = t;
			t = t->right;
		} else {
			above = t;
			t = t->left;
		}
	}
	return floor && b - floor->start < floor->len ? floor : above;
}

struct rdm_layout_map *rdm_mapset_next(const struct rdm_mapset *s, const struct rdm_layout_map *m)
{
	return above_node(s, m->start);
}
