/* SPDX-License-Identifier: MIT */
/*
 * iommu/maptree.c - a treap of disjoint intervals in a pooled array.
 *
 * Theory. Intervals never overlap, so ordering them by start orders them by
 * end too, and every question the sim and the planner ask reduces to "the
 * interval with the greatest start <= x" plus a walk to the right. A treap
 * answers that in expected O(log n) with the simplest code that also splits
 * and joins whole key ranges in O(log n): an UNMAP over k mappings descends
 * to the subtree that holds its range, splits it at both ends, frees the k
 * nodes in the middle and merges the rest back in its place. Split, merge
 * and insert are loops over the links they rewrite, not recursions.
 * A run of n adjacent new intervals (the planner's single-unit mappings of
 * one populate) is built as its own treap - each node hangs from the right
 * spine of the ones before it - and joined in with one split and two
 * merges: O(n + log count) instead of n descents. Since a treap's shape
 * is a function of its keys and priorities, that is the tree n inserts
 * make, and a removal that its owner refuses after looking at the nodes
 * (rdm_maptree_remove_starts_in_if) merges them back into the same tree.
 *
 * Nodes (start, len, two 32-bit child indices, then the owner's payload)
 * live in one array of power-of-two sized slots that grows by doubling;
 * index 0 is nil. Growing is the only allocation an operation makes and
 * happens only in rdm_maptree_reserve(), so an owner can reserve what an
 * operation needs and then commit it with calls that cannot fail. Between
 * operations, rdm_maptree_trim() moves the intervals into a smaller array
 * once they fill at most a quarter of an array above trim_above nodes
 * (to half of the new one; smaller arrays are not worth it), so a
 * layout that was large once - a fragmented guest, a 1 TiB region mapped
 * a block at a time - does not keep its peak memory for the life of the
 * VM; moving costs O(n log n) expected and needs at least 3/4 of the
 * array's nodes removed since the last resize, so it is amortised over
 * them. The heap priority of node i is i times 2^32 / golden ratio
 * (Fibonacci hashing): it costs no memory and one multiply per level (a
 * mixing hash cost ~1/3 of an insert), and successive indices get
 * priorities spread as evenly as a sequence can be, so a tree built in index order is better balanced than with random
 * priorities (4M ascending inserts: average depth 24.3, max 38, against
 * 28.2 and 55 with a mixing hash; 1M random keys: 25.6 and 51 against 26.3
 * and 50). Baselines with one 4 KiB mapping per block on a 64 GiB guest
 * hold ~16M mappings: 512 MiB of 32-byte nodes, average depth ~26. Measured through the sim (normal build, shared 2-core
 * machine): ascending 4 KiB maps ~150-240 ns each up to 16M mappings; an
 * UNMAP at a random place ~1.6 us at 100k mappings, ~3.8 us at 16M, bound
 * by one cache miss per level. Local access (virtio-mem's ascending plugs,
 * descending unplugs) stays near the map figure.
 *
 * Ends: an interval may end exactly at 2^64, so no code computes
 * start + len; "x inside n" is x - n.start < n.len, and n's last element
 * is n.start + n.len - 1.
 *
 * Invariants:
 *  1. In-order traversal gives strictly ascending start, and for neighbours
 *     a, b: a.start + a.len - 1 < b.start (no overlap; the owner checks
 *     before inserting).
 *  2. prio(parent) >= prio(child) for every edge (correctness never depends
 *     on priorities, only depth does).
 *  3. count equals the number of nodes reachable from root; every index in
 *     1..used is reachable, on the free list (nfree of them, linked through
 *     .left), or unlinked and owned by the caller.
 *  4. cap - 1 - used + nfree nodes can be inserted without allocating.
 */
#include "core/alloc.h"
#include "iommu/maptree.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

_Static_assert(sizeof(struct rdm_maptree_node) == 24, "a node head is 24 bytes");

#define N(t, i) rdm_maptree_node((t), (i))

static inline uint32_t prio(uint32_t i)
{
	return i * 0x9e3779b1u;
}

static inline uint64_t last_of(const struct rdm_maptree_node *n)
{
	return n->start + (n->len - 1);
}

/* ------------------------------------------------------------ dense mode */
/*
 * Dense mode (maptree.h). slot[k] is the handle of the interval at slot k
 * (0: none), bits has bit k set exactly when slot[k] != 0, and sum has bit
 * w set exactly when word w of bits is not zero; bits past nslots are
 * never set, so no scan masks its last word. In dense mode a node's left
 * and right links are unused (a free node's left still chains the free
 * list), and the treap fields root stays 0. Leaving it (to_treap()) hangs
 * the intervals in key order from the right spine, as rdm_maptree_trim()
 * rebuilds: the treap n inserts would have built.
 */
#define NONE UINT64_MAX
/* Every public call asks this first: expected false (the sim's trees and
 * the other policies' layouts), so the treap's code is laid out as if
 * dense mode did not exist, and the dense code sits in functions of its
 * own. */
#define DENSE(t) __builtin_expect((t)->slot != NULL, 0)

static inline uint64_t nwords(const struct rdm_maptree *t)
{
	return (t->nslots + 63) / 64;
}

static inline bool slot_set(const struct rdm_maptree *t, uint64_t k)
{
	return (t->bits[k / 64] >> (k % 64)) & 1;
}

static inline void slot_fill(struct rdm_maptree *t, uint64_t k, uint32_t h)
{
	assert(k < t->nslots && !slot_set(t, k));
	t->slot[k] = h;
	t->bits[k / 64] |= 1ull << (k % 64);
	t->sum[k / 4096] |= 1ull << (k / 64 % 64);
}

static inline void slot_empty(struct rdm_maptree *t, uint64_t k)
{
	assert(k < t->nslots && slot_set(t, k));
	t->slot[k] = 0;
	t->bits[k / 64] &= ~(1ull << (k % 64));
	if (!t->bits[k / 64])
		t->sum[k / 4096] &= ~(1ull << (k / 64 % 64));
}

/* The first slot >= k that holds an interval, or NONE. */
static uint64_t next_set(const struct rdm_maptree *t, uint64_t k)
{
	uint64_t nw = nwords(t), w, m, s;

	if (k >= t->nslots)
		return NONE;
	w = k / 64;
	m = t->bits[w] & (~0ull << (k % 64));
	if (m)
		return w * 64 + (uint64_t)__builtin_ctzll(m);
	if (++w >= nw)
		return NONE;
	s = w / 64;
	m = t->sum[s] & (~0ull << (w % 64));
	while (!m) {
		if (++s >= (nw + 63) / 64)
			return NONE;
		m = t->sum[s];
	}
	w = s * 64 + (uint64_t)__builtin_ctzll(m);
	return w * 64 + (uint64_t)__builtin_ctzll(t->bits[w]);
}

/* The last slot <= k (k < nslots) that holds an interval, or NONE. */
static uint64_t prev_set(const struct rdm_maptree *t, uint64_t k)
{
	uint64_t w = k / 64, m, s;

	m = t->bits[w] & (~0ull >> (63 - k % 64));
	if (m)
		return w * 64 + 63 - (uint64_t)__builtin_clzll(m);
	if (w == 0)
		return NONE;
	w--;
	s = w / 64;
	m = t->sum[s] & (~0ull >> (63 - w % 64));
	while (!m) {
		if (s == 0)
			return NONE;
		m = t->sum[--s];
	}
	w = s * 64 + 63 - (uint64_t)__builtin_clzll(m);
	return w * 64 + 63 - (uint64_t)__builtin_clzll(t->bits[w]);
}

static inline uint32_t handle_at(const struct rdm_maptree *t, uint64_t k)
{
	return k == NONE ? 0 : t->slot[k];
}

/* Is [start, start + len) exactly one slot of the index? */
static inline bool fits_slot(const struct rdm_maptree *t, uint64_t start, uint64_t len)
{
	return len == 1ull << t->gshift && (start & (len - 1)) == 0 && (start >> t->gshift) < t->nslots;
}

static void dense_free_index(struct rdm_maptree *t)
{
	rdm_free(t->slot);
	rdm_free(t->bits);
	rdm_free(t->sum);
	t->slot = NULL;
	t->bits = t->sum = NULL;
	t->nslots = 0;
	t->gshift = 0;
}

int rdm_maptree_make_dense(struct rdm_maptree *t, uint32_t gshift, uint64_t nslots)
{
	if (t->count || t->slot || nslots == 0 || nslots > RDM_MAPTREE_DENSE_MAX || gshift > 63)
		return -EINVAL;
	t->slot = rdm_calloc(nslots, sizeof(*t->slot));
	t->bits = rdm_calloc((nslots + 63) / 64, sizeof(*t->bits));
	t->sum = rdm_calloc((nslots + 4095) / 4096, sizeof(*t->sum));
	t->nslots = nslots;
	t->gshift = gshift;
	if (!t->slot || !t->bits || !t->sum) {
		dense_free_index(t);
		return -ENOMEM;
	}
	return 0;
}

static void hang_right(const struct rdm_maptree *t, uint32_t *root, uint32_t h);

/* Leave dense mode for good: the same intervals as a treap. Allocates
 * nothing, so it cannot fail; O(count log count) expected. */
static void to_treap(struct rdm_maptree *t)
{
	uint32_t root = 0;

	for (uint64_t k = next_set(t, 0); k != NONE; k = next_set(t, k + 1)) {
		uint32_t h = t->slot[k];

		N(t, h)->right = 0;
		hang_right(t, &root, h);
	}
	dense_free_index(t);
	t->root = root;
}

/* ------------------------------------------------------------ both modes */

void rdm_maptree_init(struct rdm_maptree *t, size_t payload_size)
{
	assert(payload_size <= RDM_MAPTREE_MAX_PAYLOAD);
	*t = (struct rdm_maptree){ 0 };
	t->shift = sizeof(struct rdm_maptree_node) + payload_size <= 32 ? 5 : 6;
	t->trim_above = RDM_MAPTREE_TRIM_ABOVE;
}

void rdm_maptree_fini(struct rdm_maptree *t)
{
	uint32_t shift = t->shift, trim_above = t->trim_above;

	rdm_free(t->pool);
	dense_free_index(t);
	*t = (struct rdm_maptree){ 0 };
	t->shift = shift;
	t->trim_above = trim_above;
}

uint32_t rdm_maptree_spare(const struct rdm_maptree *t)
{
	return t->cap ? t->cap - 1 - t->used + t->nfree : 0;
}

int rdm_maptree_reserve(struct rdm_maptree *t, uint32_t n)
{
	uint64_t need = (uint64_t)t->used + 1 + n; /* +1: nil */

	if (t->nfree >= n)
		return 0;
	need -= t->nfree;
	if (need <= t->cap)
		return 0;
	if (need > UINT32_MAX)
		return -ENOMEM;
	uint64_t cap = t->cap ? t->cap : 64;
	while (cap < need)
		cap *= 2;
	if (cap > UINT32_MAX)
		cap = UINT32_MAX;
	unsigned char *p = rdm_reallocarray(t->pool, cap, (size_t)1 << t->shift);
	if (p == NULL)
		return -ENOMEM;
	if (t->pool == NULL)
		memset(p, 0, (size_t)1 << t->shift); /* nil */
	t->pool = p;
	t->cap = (uint32_t)cap;
	return 0;
}

/* Inlined: the hot step of both inserts, now that it has two callers (the
 * sim inserts one node at a time, and a call would cost each of them). */
static inline __attribute__((always_inline)) uint32_t node_alloc(struct rdm_maptree *t)
{
	uint32_t i;

	assert(rdm_maptree_spare(t) > 0);
	if (t->nfree) {
		i = t->free_head;
		t->free_head = N(t, i)->left;
		t->nfree--;
	} else {
		i = ++t->used;
	}
	return i;
}

void rdm_maptree_free(struct rdm_maptree *t, uint32_t i)
{
	N(t, i)->left = t->free_head;
	t->free_head = i;
	t->nfree++;
}

static __attribute__((noinline)) uint32_t dense_find_le(const struct rdm_maptree *t, uint64_t x)
{
	uint64_t k = x >> t->gshift;

	return handle_at(t, prev_set(t, k < t->nslots ? k : t->nslots - 1));
}

static inline uint32_t treap_find_le(const struct rdm_maptree *t, uint64_t x)
{
	uint32_t i = t->root, best = 0;

	while (i) {
		const struct rdm_maptree_node *n = N(t, i);

		if (n->start <= x) {
			best = i;
			i = n->right;
		} else {
			i = n->left;
		}
	}
	return best;
}

uint32_t rdm_maptree_find_le(const struct rdm_maptree *t, uint64_t x)
{
	return DENSE(t) ? dense_find_le(t, x) : treap_find_le(t, x);
}

static __attribute__((noinline)) uint32_t dense_find_ge(const struct rdm_maptree *t, uint64_t x)
{
	return handle_at(t, next_set(t, (x >> t->gshift) + ((x & ((1ull << t->gshift) - 1)) != 0)));
}

uint32_t rdm_maptree_find_ge(const struct rdm_maptree *t, uint64_t x)
{
	uint32_t i = t->root, best = 0;

	if (DENSE(t))
		return dense_find_ge(t, x);

	while (i) {
		const struct rdm_maptree_node *n = N(t, i);

		if (n->start >= x) {
			best = i;
			i = n->left;
		} else {
			i = n->right;
		}
	}
	return best;
}

uint32_t rdm_maptree_find(const struct rdm_maptree *t, uint64_t x)
{
	uint32_t h = rdm_maptree_find_le(t, x);

	return h && rdm_maptree_contains(t, h, x) ? h : 0;
}

uint32_t rdm_maptree_first_ending_after(const struct rdm_maptree *t, uint64_t x)
{
	/* One descent finds both the last interval starting at or before x
	 * and the first starting after it. */
	uint32_t i = t->root, floor = 0, above = 0;

	if (DENSE(t)) {
		uint64_t k = x >> t->gshift;

		/* Slot k's interval holds x; any other starts after it. */
		return k >= t->nslots ? 0 : slot_set(t, k) ? t->slot[k] : handle_at(t, next_set(t, k + 1));
	}

	while (i) {
		const struct rdm_maptree_node *n = N(t, i);

		if (n->start <= x) {
			floor = i;
			i = n->right;
		} else {
			above = i;
			i = n->left;
		}
	}
	return floor && rdm_maptree_contains(t, floor, x) ? floor : above;
}

uint32_t rdm_maptree_next(const struct rdm_maptree *t, uint32_t h)
{
	uint64_t s = N(t, h)->start;

	if (DENSE(t))
		return handle_at(t, next_set(t, (s >> t->gshift) + 1));
	/* The first start above h's; none if h ends at 2^64. */
	return last_of(N(t, h)) == UINT64_MAX ? 0 : rdm_maptree_find_ge(t, s + 1);
}

bool rdm_maptree_intersects(const struct rdm_maptree *t, uint64_t start, uint64_t len)
{
	/* Only the last interval starting at or before the range's last
	 * element can reach into the range: every earlier one ends before
	 * that one starts (invariant 1). */
	if (DENSE(t)) {
		uint64_t k = next_set(t, start >> t->gshift);

		return k != NONE && k <= (start + (len - 1)) >> t->gshift;
	}
	uint32_t h = treap_find_le(t, start + (len - 1));

	return h && last_of(N(t, h)) >= start;
}

/* Split subtree i into keys < key (*l) and keys >= key (*r). Iterative:
 * l and r are the links the next nodes of each side hang from. */
static void split(const struct rdm_maptree *t, uint32_t i, uint64_t key, uint32_t *l, uint32_t *r)
{
	while (i) {
		struct rdm_maptree_node *n = N(t, i);

		if (n->start < key) {
			*l = i;
			l = &n->right;
			i = n->right;
		} else {
			*r = i;
			r = &n->left;
			i = n->left;
		}
	}
	*l = *r = 0;
}

/* Join subtrees where every key of a < every key of b. */
static uint32_t merge(const struct rdm_maptree *t, uint32_t a, uint32_t b)
{
	uint32_t root = 0, *link = &root;

	while (a && b) {
		if (prio(a) >= prio(b)) {
			*link = a;
			link = &N(t, a)->right;
			a = N(t, a)->right;
		} else {
			*link = b;
			link = &N(t, b)->left;
			b = N(t, b)->left;
		}
	}
	*link = a ? a : b;
	return root;
}

/* Index node h, whose interval [start, +len) is one slot (fits_slot()). */
static inline void dense_fill(struct rdm_maptree *t, uint32_t h, uint64_t start)
{
	slot_fill(t, start >> t->gshift, h);
	t->count++;
}

/* Dense mode's link: true if done, false once the tree is a treap (h is
 * not one slot) and the treap's link must run. */
static __attribute__((noinline)) bool dense_link(struct rdm_maptree *t, uint32_t h)
{
	const struct rdm_maptree_node *n = N(t, h);

	if (!fits_slot(t, n->start, n->len)) {
		to_treap(t);
		return false;
	}
	dense_fill(t, h, n->start);
	return true;
}

void rdm_maptree_link(struct rdm_maptree *t, uint32_t h)
{
	if (DENSE(t) && dense_link(t, h))
		return;
	/* Descend while the nodes outrank h (invariant 2), then h takes that
	 * place and the subtree there splits around it. */
	uint32_t ph = prio(h), *link = &t->root, i;
	struct rdm_maptree_node *n = N(t, h);
	uint64_t key = n->start;

	while ((i = *link) != 0 && prio(i) >= ph) {
		struct rdm_maptree_node *c = N(t, i);

		link = key < c->start ? &c->left : &c->right;
	}
	split(t, i, key, &n->left, &n->right);
	*link = h;
	t->count++;
}

uint32_t rdm_maptree_insert(struct rdm_maptree *t, uint64_t start, uint64_t len)
{
	uint32_t h = node_alloc(t);
	struct rdm_maptree_node *n = N(t, h);

	/* A node is 32 or 64 bytes (rdm_maptree_init): zeroed by a few
	 * stores, where a size known only here is a library call. */
	if (t->shift == 5)
		memset(n, 0, 32);
	else
		memset(n, 0, 64);
	n->start = start;
	n->len = len;
	/* A dense index's usual insert, one slot (the block policy's
	 * populate of one unit), without the call into rdm_maptree_link(). */
	if (DENSE(t) && fits_slot(t, start, len)) {
		dense_fill(t, h, start);
		return h;
	}
	rdm_maptree_link(t, h);
	return h;
}

/* A reserved node made from insert_run's template slot, keyed [start, +len). */
static uint32_t node_from_slot(struct rdm_maptree *t, const unsigned char *slot, uint64_t start, uint64_t len)
{
	uint32_t h = node_alloc(t);
	struct rdm_maptree_node *nd = N(t, h);

	if (t->shift == 5)
		memcpy(nd, slot, 32);
	else
		memcpy(nd, slot, 64);
	nd->start = start;
	nd->len = len;
	return h;
}

/* Hang node h (its right link nil), whose key is above every key
 * of the treap at *root, from that treap's right spine: below the last
 * spine node that outranks it, the rest of the spine (smaller keys, lower
 * priority) becoming its left subtree. The spine is as short as the treap
 * is deep. t gives the node array only (a trim builds in a new one). */
static void hang_right(const struct rdm_maptree *t, uint32_t *root, uint32_t h)
{
	uint32_t ph = prio(h), *link = root, i;

	while ((i = *link) != 0 && prio(i) >= ph)
		link = &N(t, i)->right;
	N(t, h)->left = i;
	*link = h;
}

void rdm_maptree_insert_run(struct rdm_maptree *t, uint64_t start, uint64_t len, uint32_t n, const void *payload,
			    size_t size)
{
	uint32_t sub = 0, l, r;
	uint64_t first = start;
	/* Every node starts as this slot: a copy of a constant size (32 or
	 * 64 bytes) is a few stores, where memset and memcpy of a size only
	 * known here would be two library calls per node. */
	_Alignas(struct rdm_maptree_node) unsigned char slot[64] = { 0 };

	if (n == 0)
		return;
	assert(rdm_maptree_spare(t) >= n && sizeof(struct rdm_maptree_node) + size <= (size_t)1 << t->shift);
	if (size)
		memcpy(slot + sizeof(struct rdm_maptree_node), payload, size);
	if (DENSE(t) && fits_slot(t, start, len) && (start >> t->gshift) + n <= t->nslots) {
		for (uint32_t k = 0; k < n; k++, start += len)
			slot_fill(t, start >> t->gshift, node_from_slot(t, slot, start, len));
		t->count += n;
		return;
	}
	if (DENSE(t))
		to_treap(t);
	if (n == 1) {
		/* One node: linking it (a descent and a split below its place)
		 * gives the same treap as the split and two merges below, in
		 * about half the steps (~590 -> ~280 instructions per insert in
		 * a tree of ~12k nodes, callgrind, bench pipeline). */
		rdm_maptree_link(t, node_from_slot(t, slot, start, len));
		return;
	}
	/* Build the run's own treap, each key above all keys before it. */
	for (uint32_t k = 0; k < n; k++, start += len)
		hang_right(t, &sub, node_from_slot(t, slot, start, len));
	/* No key of the tree lies inside the run (the caller checked): it goes
	 * between the keys below it and those above. Treaps are unique for
	 * their keys and priorities, so this is the tree n inserts build. */
	split(t, t->root, first, &l, &r);
	t->root = merge(t, merge(t, l, sub), r);
	t->count += n;
}

void rdm_maptree_unlink(struct rdm_maptree *t, uint32_t h)
{
	uint32_t *link = &t->root, i;
	uint64_t key = N(t, h)->start;

	if (DENSE(t)) {
		assert(t->slot[key >> t->gshift] == h);
		slot_empty(t, key >> t->gshift);
		t->count--;
		return;
	}
	while ((i = *link) != h) {
		struct rdm_maptree_node *c = N(t, i);

		link = key < c->start ? &c->left : &c->right;
	}
	*link = merge(t, N(t, h)->left, N(t, h)->right);
	t->count--;
}

static __attribute__((noinline)) uint32_t dense_unlink_start(struct rdm_maptree *t, uint64_t key, uint32_t *next,
							      uint64_t *next_start)
{
	uint64_t k = key >> t->gshift, n;
	uint32_t h = k < t->nslots && (key & ((1ull << t->gshift) - 1)) == 0 ? t->slot[k] : 0;

	if (h) {
		slot_empty(t, k);
		t->count--;
	}
	if (next) {
		n = h ? next_set(t, k + 1) : NONE;
		*next = handle_at(t, n);
		/* A slot's interval starts at the slot (fits_slot()): no
		 * need to read its node, a cache miss where the index is
		 * scattered. */
		*next_start = n == NONE ? UINT64_MAX : n << t->gshift;
	}
	return h;
}

uint32_t rdm_maptree_unlink_start(struct rdm_maptree *t, uint64_t key, uint32_t *next, uint64_t *next_start)
{
	/* The search for key is the path unlink() would walk to the node:
	 * one descent where a lookup and an unlink make two. `above`: the
	 * last node the descent went left at, the successor unless the found
	 * node has a right subtree (then its leftmost node is). */
	uint32_t *link = &t->root, i, above = 0;

	if (DENSE(t))
		return dense_unlink_start(t, key, next, next_start);
	while ((i = *link) != 0) {
		struct rdm_maptree_node *c = N(t, i);

		if (key == c->start) {
			if (next) {
				for (uint32_t j = c->right; j; j = N(t, j)->left)
					above = j;
				*next = above;
				/* A node the descent or the walk just read. */
				*next_start = above ? N(t, above)->start : UINT64_MAX;
			}
			*link = merge(t, c->left, c->right);
			t->count--;
			return i;
		}
		if (key < c->start) {
			above = i;
			link = &c->left;
		} else {
			link = &c->right;
		}
	}
	if (next) {
		*next = 0;
		*next_start = UINT64_MAX;
	}
	return 0;
}

void rdm_maptree_remove(struct rdm_maptree *t, uint32_t h)
{
	rdm_maptree_unlink(t, h);
	rdm_maptree_free(t, h);
}

static void free_subtree(struct rdm_maptree *t, uint32_t i, uint64_t *count, uint64_t *len_sum)
{
	while (i) {
		uint32_t r = N(t, i)->right;

		free_subtree(t, N(t, i)->left, count, len_sum);
		*count += 1;
		*len_sum += N(t, i)->len;
		rdm_maptree_free(t, i);
		i = r;
	}
}

void rdm_maptree_clear(struct rdm_maptree *t)
{
	uint64_t c = 0, l = 0;

	if (DENSE(t)) {
		rdm_maptree_remove_starts_in(t, 0, UINT64_MAX, &c, &l);
		return;
	}
	free_subtree(t, t->root, &c, &l);
	t->root = 0;
	t->count = 0;
}

bool rdm_maptree_trim(struct rdm_maptree *t)
{
	uint64_t cap = RDM_MAPTREE_TRIM_MIN;
	size_t size = (size_t)1 << t->shift;
	uint32_t k = 0, root = 0;
	unsigned char *p;

	if (t->cap <= t->trim_above || t->cap <= RDM_MAPTREE_TRIM_MIN || t->count * 4 > t->cap)
		return false;
	/* Invariant 3 with no node unlinked and kept: the owner holds none. */
	assert(t->count == (uint64_t)t->used - t->nfree);
	while (cap < 2 * (t->count + 1))
		cap *= 2;
	if (cap >= t->cap)
		return false;
	p = rdm_reallocarray(NULL, cap, size);
	if (p == NULL)
		return false;
	memset(p, 0, size); /* nil */
	/* The old tree in order without a stack (its depth is bounded only in
	 * expectation): Morris's walk threads each node's in-order predecessor
	 * to it through the predecessor's empty right link and undoes the
	 * thread on the way back, O(count) in all. Node k of the new pool is
	 * the k-th interval: ascending keys in index order, each hung from the
	 * right spine of those before it, as rdm_maptree_insert_run() builds a
	 * run (invariant 2 by the same argument; the priorities are the new
	 * indices'), a descent of the spine each: O(count log count)
	 * expected in all. */
	struct rdm_maptree nt = { .pool = p, .shift = t->shift };

	/* Dense: slot order is key order; the index takes the new handles. */
	for (uint64_t s = t->slot ? next_set(t, 0) : NONE; s != NONE; s = next_set(t, s + 1)) {
		memcpy(N(&nt, ++k), N(t, t->slot[s]), size);
		t->slot[s] = k;
	}
	for (uint32_t h = t->root; h;) {
		struct rdm_maptree_node *c = N(t, h);

		if (c->left) {
			uint32_t pre = c->left;

			while (N(t, pre)->right && N(t, pre)->right != h)
				pre = N(t, pre)->right;
			if (!N(t, pre)->right) {
				N(t, pre)->right = h; /* thread, then the left subtree */
				h = c->left;
				continue;
			}
			N(t, pre)->right = 0; /* back from the left subtree */
		}
		struct rdm_maptree_node *nd = N(&nt, ++k);

		memcpy(nd, c, size);
		nd->right = 0;
		hang_right(&nt, &root, k);
		h = c->right;
	}
	assert(k == t->count);
	rdm_free(t->pool);
	t->pool = p;
	t->cap = (uint32_t)cap;
	t->used = k;
	t->nfree = 0;
	t->free_head = 0;
	t->root = root;
	return true;
}

/* The link from which every interval starting in [lo, last] hangs: the
 * first node on the way down that is in the range (or the nil link the way
 * ends at). Only that subtree needs splitting and joining again. */
static uint32_t *range_link(struct rdm_maptree *t, uint64_t lo, uint64_t last)
{
	uint32_t *link = &t->root;

	while (*link && (N(t, *link)->start < lo || N(t, *link)->start > last))
		link = N(t, *link)->start < lo ? &N(t, *link)->right : &N(t, *link)->left;
	return link;
}

/* Split the subtree at *link into keys below lo (*l), in [lo, last] (*mid)
 * and above last (*r). */
static void split3(const struct rdm_maptree *t, uint32_t i, uint64_t lo, uint64_t last, uint32_t *l, uint32_t *mid,
		   uint32_t *r)
{
	split(t, i, lo, l, mid);
	if (last == UINT64_MAX)
		*r = 0;
	else
		split(t, *mid, last + 1, mid, r);
}

static int visit(const struct rdm_maptree *t, uint32_t i, rdm_maptree_fn fn, void *opaque);

void rdm_maptree_remove_starts_in(struct rdm_maptree *t, uint64_t lo, uint64_t last, uint64_t *count,
				  uint64_t *len_sum)
{
	rdm_maptree_remove_starts_in_if(t, lo, last, NULL, NULL, count, len_sum);
}

bool rdm_maptree_remove_starts_in_if(struct rdm_maptree *t, uint64_t lo, uint64_t last, rdm_maptree_fn refuse,
				     void *opaque, uint64_t *count, uint64_t *len_sum)
{
	uint32_t l, mid, r, *link;
	uint64_t c = 0, s = 0;

	if (DENSE(t)) {
		uint64_t g = 1ull << t->gshift, k0 = (lo >> t->gshift) + ((lo & (g - 1)) != 0);
		uint64_t k1 = last >> t->gshift < t->nslots ? last >> t->gshift : t->nslots - 1;

		for (uint64_t k = next_set(t, k0); refuse && k != NONE && k <= k1; k = next_set(t, k + 1))
			if (refuse(opaque, t, t->slot[k]))
				return false;
		/* A word of the bitmap at a time: its slots in [k0, k1]. */
		for (uint64_t k = next_set(t, k0); k != NONE && k <= k1; k = next_set(t, k)) {
			uint64_t w = k / 64, m = t->bits[w] & (~0ull << (k % 64));

			if (k1 / 64 == w)
				m &= ~0ull >> (63 - k1 % 64);
			t->bits[w] &= ~m;
			if (!t->bits[w])
				t->sum[w / 64] &= ~(1ull << (w % 64));
			for (; m; m &= m - 1) {
				uint64_t j = w * 64 + (uint64_t)__builtin_ctzll(m);
				uint32_t h = t->slot[j];

				t->slot[j] = 0;
				c++;
				s += N(t, h)->len;
				rdm_maptree_free(t, h);
			}
			k = w * 64 + 64;
		}
		t->count -= c;
		*count += c;
		*len_sum += s;
		return true;
	}
	link = range_link(t, lo, last);
	split3(t, *link, lo, last, &l, &mid, &r);
	if (refuse && visit(t, mid, refuse, opaque)) {
		/* Joined back as it was: a treap's shape is a function of its
		 * keys and priorities (distinct: prio() is a bijection). */
		*link = merge(t, merge(t, l, mid), r);
		return false;
	}
	free_subtree(t, mid, &c, &s);
	*link = merge(t, l, r);
	t->count -= c;
	*count += c;
	*len_sum += s;
	return true;
}

static int visit(const struct rdm_maptree *t, uint32_t i, rdm_maptree_fn fn, void *opaque)
{
	while (i) {
		int rc = visit(t, N(t, i)->left, fn, opaque);

		if (rc)
			return rc;
		rc = fn(opaque, t, i);
		if (rc)
			return rc;
		i = N(t, i)->right;
	}
	return 0;
}

int rdm_maptree_for_each(const struct rdm_maptree *t, rdm_maptree_fn fn, void *opaque)
{
	if (DENSE(t)) {
		for (uint64_t k = next_set(t, 0); k != NONE; k = next_set(t, k + 1)) {
			int rc = fn(opaque, t, t->slot[k]);

			if (rc)
				return rc;
		}
		return 0;
	}
	return visit(t, t->root, fn, opaque);
}
