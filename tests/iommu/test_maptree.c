/* test_maptree.c - the maptree's bulk operations against its one-at-a-time ones and a bitmap of keys;
 * its trim against the same bitmap (trim_seed()); its dense mode against the treap (dense_seed()). */
/*
 * Two trees take the same random operations: in one, a run of n adjacent
 * intervals goes in by rdm_maptree_insert_run() and a key range out by
 * rdm_maptree_remove_starts_in_if(); in the other, by n calls of
 * rdm_maptree_insert() and by rdm_maptree_remove_starts_in() (after the
 * same visit decided whether to remove). Node handles are allocated in the
 * same order and a treap's shape depends only on keys and priorities, so
 * both pools must be byte for byte the same after every operation, and a
 * refused removal must leave the tree exactly as it was. The oracle is a
 * bitmap of the keys covered; in-order traversal must give the intervals
 * ascending, disjoint, covering exactly the bitmap, with their payloads.
 * Keys sit near 2^64 in some rounds (an interval may end exactly there).
 * rdm_maptree_unlink_start() is checked the same way against a lookup and
 * rdm_maptree_remove(), and, linked back, against the untouched tree; the
 * successor it reports against the bitmap's next interval start.
 *
 * RDM_TEST_SEED=N replays one seed; RDM_TEST_ROUNDS=N sets the rounds.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "iommu/maptree.h"
#include "tests/check.h"
#include "tests/rng.h"

#define KEYS 2048u

struct pay {
	uint64_t tag;
	uint32_t flags;
};

struct model {
	uint64_t base;
	uint64_t tag[KEYS]; /* 0: not covered; else the tag of its interval */
	uint64_t first[KEYS]; /* the interval's start key (offset) */
};

struct walk {
	const struct model *m;
	uint64_t next; /* offset the next interval may start at */
	uint64_t covered;
	bool ok;
};

static int check_node(void *opaque, const struct rdm_maptree *t, uint32_t h)
{
	struct walk *w = opaque;
	const struct rdm_maptree_node *n = rdm_maptree_node(t, h);
	const struct pay *p = rdm_maptree_payload(t, h);
	uint64_t off = n->start - w->m->base;

	if (off < w->next || n->len == 0 || off + n->len > KEYS) {
		w->ok = false;
		return 1;
	}
	for (uint64_t k = off; k < off + n->len; k++)
		if (w->m->tag[k] != p->tag || w->m->first[k] != off) {
			w->ok = false;
			return 1;
		}
	w->next = off + n->len;
	w->covered += n->len;
	return 0;
}

static bool matches(const struct rdm_maptree *t, const struct model *m)
{
	struct walk w = { m, 0, 0, true };
	uint64_t covered = 0;

	rdm_maptree_for_each(t, check_node, &w);
	for (uint64_t k = 0; k < KEYS; k++)
		covered += m->tag[k] != 0;
	return w.ok && w.covered == covered;
}

static bool same_pool(const struct rdm_maptree *a, const struct rdm_maptree *b)
{
	if (!a->pool || !b->pool)
		return a->pool == b->pool && a->root == b->root;
	return a->root == b->root && a->used == b->used && a->count == b->count && a->nfree == b->nfree &&
	       a->free_head == b->free_head &&
	       memcmp(a->pool, b->pool, ((size_t)a->used + 1) << a->shift) == 0;
}

/* The visitor: refuse an interval whose tag has `bad` in its low bits. */
struct refuse_ctx {
	uint64_t bad, seen;
};

static int refuse(void *opaque, const struct rdm_maptree *t, uint32_t h)
{
	struct refuse_ctx *c = opaque;
	const struct pay *p = rdm_maptree_payload(t, h);

	c->seen++;
	return (p->tag & 7) == c->bad;
}

static bool run_seed(uint64_t seed)
{
	static struct model m;
	struct rdm_maptree a, b; /* a: bulk calls, b: one at a time */
	uint64_t next_tag = 1;
	bool ok = true;

	rng_state = seed * 0x9e3779b97f4a7c15ull + 1;
	memset(&m, 0, sizeof(m));
	m.base = below(3) == 0 ? 0ull - KEYS : below(1u << 20);
	rdm_maptree_init(&a, below(2) ? sizeof(struct pay) : 40);
	rdm_maptree_init(&b, a.shift == 5 ? sizeof(struct pay) : 40);
	for (int step = 0; step < 600 && ok; step++) {
		uint64_t op = below(4);

		if (op == 3) {
			/* rdm_maptree_unlink_start() against a lookup and
			 * rdm_maptree_remove() on b; half of the nodes it takes
			 * out are linked back, and a must then equal b, which
			 * did nothing (same_pool() below). */
			uint64_t k = below(KEYS);
			bool starts = m.tag[k] && m.first[k] == k;
			uint64_t nx_start = 0;
			uint32_t nx = UINT32_MAX,
				 h = rdm_maptree_unlink_start(&a, m.base + k, below(4) ? &nx : NULL, &nx_start);
			/* The successor: the next key that starts an interval. */
			uint64_t want = k + 1;

			while (want < KEYS && !(m.tag[want] && m.first[want] == want))
				want++;
			if ((h != 0) != starts || (h && rdm_maptree_node(&a, h)->start != m.base + k)) {
				fprintf(stderr, "seed %" PRIu64 " step %d: unlink_start(%" PRIu64 ") gave %" PRIu32
					", expected %s\n", seed, step, k, h, starts ? "its node" : "none");
				ok = false;
				break;
			}
			/* Asked for (nx was overwritten), the successor's start
			 * must be the model's; none (0) when nothing was unlinked
			 * or no interval starts after k. */
			uint64_t want_start = h && want < KEYS ? m.base + want : UINT64_MAX;
			bool asked = nx != UINT32_MAX;
			uint64_t got_start = asked && nx ? rdm_maptree_node(&a, nx)->start : UINT64_MAX;

			/* The successor's start as unlink_start() reports it,
			 * without its node, must be the same. */
			if (asked && (got_start != want_start || nx_start != want_start)) {
				fprintf(stderr, "seed %" PRIu64 " step %d: unlink_start(%" PRIu64 ") gave successor %" PRIu32
					" (start %" PRIu64 ", reported %" PRIu64 "), expected start %" PRIu64
					" (UINT64_MAX: none)\n", seed, step, k, nx, got_start, nx_start, want_start);
				ok = false;
				break;
			}
			if (h && below(2)) {
				rdm_maptree_link(&a, h);
			} else if (h) {
				rdm_maptree_free(&a, h);
				rdm_maptree_remove(&b, rdm_maptree_find(&b, m.base + k));
				for (uint64_t x = k; x < KEYS && m.tag[x] && m.first[x] == k; x++)
					m.tag[x] = 0;
			}
		} else if (op < 2) {
			/* A run of n intervals of len keys each in a free stretch. */
			uint64_t len = 1 + below(below(4) ? 2 : 9), n = 1 + below(below(4) ? 8 : 200);
			uint64_t off = below(KEYS), end = off;

			while (end < KEYS && end - off < len * n && m.tag[end] == 0)
				end++;
			n = (end - off) / len;
			if (n == 0)
				continue;
			struct pay tmpl;

			memset(&tmpl, 0, sizeof(tmpl)); /* padding too: pools are compared bytewise */
			tmpl.tag = next_tag;
			tmpl.flags = (uint32_t)below(16);

			REQUIRE(rdm_maptree_reserve(&a, (uint32_t)n) == 0);
			REQUIRE(rdm_maptree_reserve(&b, (uint32_t)n) == 0);
			rdm_maptree_insert_run(&a, m.base + off, len, (uint32_t)n, &tmpl, sizeof(tmpl));
			for (uint64_t k = 0; k < n; k++) {
				uint32_t h = rdm_maptree_insert(&b, m.base + off + k * len, len);

				memcpy(rdm_maptree_payload(&b, h), &tmpl, sizeof(tmpl));
				for (uint64_t x = 0; x < len; x++) {
					m.tag[off + k * len + x] = next_tag;
					m.first[off + k * len + x] = off + k * len;
				}
			}
			next_tag++;
		} else {
			uint64_t lo = below(KEYS), last = lo + below(KEYS - lo);
			struct refuse_ctx ca = { below(8), 0 };
			uint64_t count = 0, sum = 0, count_b = 0, sum_b = 0;
			bool refused = false;
			static unsigned char before[(size_t)(4 * KEYS + 2) << 6];
			size_t bytes = ((size_t)a.used + 1) << a.shift;
			uint32_t root = a.root;

			if (a.pool)
				memcpy(before, a.pool, bytes);
			/* The oracle's answer: refused iff some interval starting
			 * in [lo, last] has a bad tag. */
			for (uint64_t k = lo; k <= last; k++)
				refused |= m.tag[k] && m.first[k] == k && (m.tag[k] & 7) == ca.bad;
			bool removed = rdm_maptree_remove_starts_in_if(&a, m.base + lo, m.base + last, refuse, &ca, &count,
								      &sum);
			if (removed == refused) {
				fprintf(stderr, "seed %" PRIu64 " step %d: removal %s, expected the opposite\n", seed,
					step, removed ? "done" : "refused");
				ok = false;
				break;
			}
			if (!removed) {
				if (a.root != root || (a.pool && memcmp(before, a.pool, bytes))) {
					fprintf(stderr, "seed %" PRIu64 " step %d: a refused removal changed the tree\n",
						seed, step);
					ok = false;
				}
				continue;
			}
			rdm_maptree_remove_starts_in(&b, m.base + lo, m.base + last, &count_b, &sum_b);
			if (count != count_b || sum != sum_b) {
				fprintf(stderr, "seed %" PRIu64 " step %d: removed %" PRIu64 "/%" PRIu64 " against %" PRIu64
					"/%" PRIu64 "\n", seed, step, count, sum, count_b, sum_b);
				ok = false;
			}
			/* The oracle: every interval starting in [lo, last] goes. */
			for (uint64_t k = lo; k <= last; k++)
				if (m.tag[k] && m.first[k] == k)
					for (uint64_t x = k; x < KEYS && m.tag[x] && m.first[x] == k; x++)
						m.tag[x] = 0;
		}
		if (!matches(&a, &m) || !matches(&b, &m) || !same_pool(&a, &b)) {
			fprintf(stderr, "seed %" PRIu64 " step %d (op %" PRIu64 "): the trees differ from the model or each other\n",
				seed, step, op);
			ok = false;
		}
	}
	rdm_maptree_fini(&a);
	rdm_maptree_fini(&b);
	return ok;
}

/* Invariant 2 (heap order of the index priorities) over subtree i. */
static bool heap_ok(const struct rdm_maptree *t, uint32_t i, unsigned depth)
{
	const struct rdm_maptree_node *n;

	if (!i)
		return true;
	if (depth > 200)
		return false; /* a cycle, or a degenerate tree */
	n = rdm_maptree_node(t, i);
	for (int c = 0; c < 2; c++) {
		uint32_t ch = c ? n->right : n->left;

		if (ch && (uint32_t)(ch * 0x9e3779b1u) > (uint32_t)(i * 0x9e3779b1u))
			return false;
		if (!heap_ok(t, ch, depth + 1))
			return false;
	}
	return true;
}

/* A single-key interval at offset k, tagged, in the tree and the model. */
static void insert_key(struct rdm_maptree *t, struct model *m, uint64_t k, uint64_t tag)
{
	struct pay tmpl;

	memset(&tmpl, 0, sizeof(tmpl));
	tmpl.tag = tag;
	REQUIRE(rdm_maptree_reserve(t, 1) == 0);
	rdm_maptree_insert_run(t, m->base + k, 1, 1, &tmpl, sizeof(tmpl));
	m->tag[k] = tag;
	m->first[k] = k;
}

/*
 * rdm_maptree_trim() against the model: single-key intervals fill most of
 * the keys, then random removals (and a few inserts) each followed by a
 * trim. After every step the tree holds exactly the model's intervals in
 * heap order; a trim that moves them leaves a pool of at most twice their
 * number (a power of two, at least RDM_MAPTREE_TRIM_MIN) with no free
 * nodes; one whose allocation is made to fail changes nothing; at the end,
 * with a few intervals left, the pool is back at RDM_MAPTREE_TRIM_MIN.
 */
static bool trim_seed(uint64_t seed)
{
	static struct model m;
	static unsigned char before[(size_t)(4 * KEYS + 2) << 6];
	struct rdm_maptree t;
	uint64_t next_tag = 1, trims = 0;
	bool ok = true, injected = false;

	rng_state = seed * 0x9e3779b97f4a7c15ull + 7;
	memset(&m, 0, sizeof(m));
	m.base = below(1u << 20);
	rdm_maptree_init(&t, sizeof(struct pay));
	CHECK(t.trim_above == RDM_MAPTREE_TRIM_ABOVE);
	t.trim_above = RDM_MAPTREE_TRIM_MIN; /* pools of a few thousand nodes here */
	for (uint64_t k = 0; k < KEYS; k++) {
		if (below(10) != 0)
			insert_key(&t, &m, k, next_tag++);
	}
	for (int step = 0; step < 400 && ok; step++) {
		if (below(8) == 0) {
			/* An insert into a free key. */
			uint64_t k = below(KEYS);

			if (m.tag[k])
				continue;
			insert_key(&t, &m, k, next_tag++);
		} else {
			uint64_t lo = below(KEYS), last = lo + below(step < 300 ? 16 : KEYS - lo), count = 0, sum = 0;

			if (last >= KEYS)
				last = KEYS - 1;
			rdm_maptree_remove_starts_in(&t, m.base + lo, m.base + last, &count, &sum);
			for (uint64_t k = lo; k <= last; k++)
				m.tag[k] = 0;
		}
		uint32_t cap = t.cap;
		bool due = cap > t.trim_above && t.count * 4 <= cap;

		if (due && !injected) {
			/* The smaller pool cannot be had: nothing may change. */
			struct rdm_maptree saved = t;
			size_t bytes = ((size_t)t.used + 1) << t.shift;

			memcpy(before, t.pool, bytes);
			injected = true;
			rdm_alloc_inject(1, false);
			bool moved = rdm_maptree_trim(&t);

			rdm_alloc_inject(0, false);
			if (moved || memcmp(&saved, &t, sizeof(t)) || memcmp(before, t.pool, bytes)) {
				fprintf(stderr, "trim seed %" PRIu64 " step %d: a failed trim changed the tree\n", seed, step);
				ok = false;
			}
		}
		bool moved = rdm_maptree_trim(&t);

		trims += moved;
		if (moved != due) {
			fprintf(stderr, "trim seed %" PRIu64 " step %d: trim %s with %" PRIu64 " of %" PRIu32 " nodes\n", seed,
				step, moved ? "moved" : "did not move", t.count, cap);
			ok = false;
		}
		if (moved && (t.cap >= cap || t.cap < RDM_MAPTREE_TRIM_MIN || (t.cap & (t.cap - 1)) ||
			      (t.cap > RDM_MAPTREE_TRIM_MIN && t.cap / 2 >= 2 * (t.count + 1)) || t.nfree ||
			      t.used != t.count)) {
			fprintf(stderr, "trim seed %" PRIu64 " step %d: pool of %" PRIu32 " for %" PRIu64 " intervals\n", seed,
				step, t.cap, t.count);
			ok = false;
		}
		if (!matches(&t, &m) || !heap_ok(&t, t.root, 0)) {
			fprintf(stderr, "trim seed %" PRIu64 " step %d: the tree differs from the model\n", seed, step);
			ok = false;
		}
	}
	/* All but the last few intervals go: the pool must come back down. */
	uint64_t count = 0, sum = 0;

	rdm_maptree_remove_starts_in(&t, m.base, m.base + KEYS - 9, &count, &sum);
	for (uint64_t k = 0; k <= KEYS - 9; k++)
		m.tag[k] = 0;
	trims += rdm_maptree_trim(&t);
	if (ok && (!trims || t.cap != RDM_MAPTREE_TRIM_MIN || !injected || !matches(&t, &m))) {
		fprintf(stderr, "trim seed %" PRIu64 ": %" PRIu64 " trims, pool %" PRIu32 " at the end%s\n", seed, trims,
			t.cap, injected ? "" : ", no failure injected");
		ok = false;
	}
	rdm_maptree_fini(&t);
	return ok;
}

/* Pools up to trim_above nodes are left as they are, however empty. */
static void check_trim_above(void)
{
	struct rdm_maptree t;
	uint64_t count = 0, sum = 0;

	rdm_maptree_init(&t, 0);
	REQUIRE(rdm_maptree_reserve(&t, 3000) == 0);
	rdm_maptree_insert_run(&t, 0, 1, 3000, NULL, 0);
	rdm_maptree_remove_starts_in(&t, 10, 2999, &count, &sum);
	CHECK(count == 2990 && t.count == 10 && t.cap == 4096);
	CHECK(!rdm_maptree_trim(&t) && t.cap == 4096); /* 4096 <= RDM_MAPTREE_TRIM_ABOVE */
	t.trim_above = 4096;
	CHECK(!rdm_maptree_trim(&t) && t.cap == 4096);
	t.trim_above = 4095;
	CHECK(rdm_maptree_trim(&t) && t.cap == RDM_MAPTREE_TRIM_MIN && t.count == 10);
	rdm_maptree_fini(&t);
	CHECK(t.trim_above == 4095); /* kept for the tree's next life */
}

/* The start of node h (UINT64_MAX for none): answers of two trees compared. */
static uint64_t start_of(const struct rdm_maptree *t, uint32_t h)
{
	return h ? rdm_maptree_node(t, h)->start : UINT64_MAX;
}

/*
 * Dense mode against the treap and the model: the two trees take the same
 * random calls - runs of single-slot intervals in and out, unlinks by
 * start and by handle linked back or freed, refused and done removals,
 * every lookup at random keys, trims - and must answer alike and hold the
 * model's intervals after every step. Some slots of the key range lie
 * past nslots. In a quarter of the seeds an interval that is not one slot
 * (longer, misaligned or past nslots) goes in at a random step: the dense
 * tree must turn into a treap then (and never before) and go on answering
 * alike.
 */
static unsigned dense_conversions; /* seeds whose dense tree became a treap */

static bool dense_seed(uint64_t seed)
{
	static struct model m;
	struct rdm_maptree d, t;
	uint64_t next_tag = 1;
	bool ok = true, converted = false;

	rng_state = seed * 0x9e3779b97f4a7c15ull + 11;
	memset(&m, 0, sizeof(m));
	uint32_t gshift = (uint32_t)below(3);
	uint64_t g = 1ull << gshift, nslots = KEYS / g - (below(2) ? 0 : 1 + below(4));
	bool convert = seed % 4 == 0;
	int convert_at = (int)below(400);

	rdm_maptree_init(&d, sizeof(struct pay));
	rdm_maptree_init(&t, sizeof(struct pay));
	REQUIRE(rdm_maptree_make_dense(&d, gshift, nslots) == 0);
	d.trim_above = t.trim_above = RDM_MAPTREE_TRIM_MIN;
	for (int step = 0; step < 600 && ok; step++) {
		uint64_t op = below(6);

		if (op < 2) {
			/* A run of single slots in a free stretch, or the one
			 * interval that is not a slot. */
			bool odd = convert && step >= convert_at && !converted;
			uint64_t k = below(KEYS / g), n = odd ? 1 : 1 + below(below(4) ? 4 : 100), len = g, off = k * g;

			if (odd) {
				switch (below(3)) {
				case 0: len = g + 1; break;                   /* longer */
				case 1: off = k * g + (g > 1 ? 1 : 0); len = g > 1 ? g - 1 : 2; break; /* misaligned */
				default: off = (nslots + below(KEYS / g - nslots + 1)) * g; break; /* past nslots */
				}
			}
			uint64_t end = off, bound = odd ? KEYS : nslots * g; /* runs of slots stay in nslots */

			while (end < bound && end - off < len * n && m.tag[end] == 0)
				end++;
			n = (end - off) / len;
			if (n == 0)
				continue;
			struct pay tmpl;

			memset(&tmpl, 0, sizeof(tmpl));
			tmpl.tag = next_tag;
			REQUIRE(rdm_maptree_reserve(&d, (uint32_t)n) == 0 && rdm_maptree_reserve(&t, (uint32_t)n) == 0);
			if (n == 1 && below(2)) {
				uint32_t hd = rdm_maptree_insert(&d, off, len), ht = rdm_maptree_insert(&t, off, len);

				memcpy(rdm_maptree_payload(&d, hd), &tmpl, sizeof(tmpl));
				memcpy(rdm_maptree_payload(&t, ht), &tmpl, sizeof(tmpl));
			} else {
				rdm_maptree_insert_run(&d, off, len, (uint32_t)n, &tmpl, sizeof(tmpl));
				rdm_maptree_insert_run(&t, off, len, (uint32_t)n, &tmpl, sizeof(tmpl));
			}
			for (uint64_t i = 0; i < n * len; i++) {
				m.tag[off + i] = next_tag;
				m.first[off + i] = off + i / len * len;
			}
			next_tag++;
			/* off + len <= KEYS: an interval past nslots, or any that
			 * is not exactly one aligned slot, leaves dense mode. */
			converted |= len != g || off % g || off / g >= nslots;
		} else if (op == 2) {
			uint64_t lo = below(KEYS), last = lo + below(below(2) ? 4 * g : KEYS - lo);
			struct refuse_ctx cd = { below(8), 0 }, ct = cd;
			uint64_t nd = 0, sd = 0, nt = 0, st = 0;
			bool rd = rdm_maptree_remove_starts_in_if(&d, lo, last, below(2) ? refuse : NULL, &cd, &nd, &sd);
			bool rt = rdm_maptree_remove_starts_in_if(&t, lo, last, cd.seen || !rd ? refuse : NULL, &ct, &nt, &st);

			if (rd != rt || nd != nt || sd != st) {
				fprintf(stderr, "dense seed %" PRIu64 " step %d: removal [%" PRIu64 ", %" PRIu64 "] %d/%" PRIu64
					" against %d/%" PRIu64 "\n", seed, step, lo, last, rd, nd, rt, nt);
				ok = false;
			}
			if (rd)
				for (uint64_t k = lo; k <= last && k < KEYS; k++)
					if (m.tag[k] && m.first[k] == k)
						for (uint64_t x = k; x < KEYS && m.tag[x] && m.first[x] == k; x++)
							m.tag[x] = 0;
		} else if (op == 3) {
			uint64_t k = below(2) ? below(KEYS / g) * g : below(KEYS);
			uint32_t nd = UINT32_MAX, nt = UINT32_MAX;
			uint64_t sd = 0, st = 0;
			uint32_t hd = rdm_maptree_unlink_start(&d, k, &nd, &sd), ht = rdm_maptree_unlink_start(&t, k, &nt, &st);

			/* The successor's reported start: its node's, in both modes. */
			if (start_of(&d, hd) != start_of(&t, ht) || start_of(&d, nd) != start_of(&t, nt) ||
			    sd != st || sd != (nd ? rdm_maptree_node(&d, nd)->start : UINT64_MAX) ||
			    (hd != 0) != (m.tag[k] && m.first[k] == k)) {
				fprintf(stderr, "dense seed %" PRIu64 " step %d: unlink_start(%" PRIu64 ") differs\n", seed,
					step, k);
				ok = false;
				break;
			}
			if (hd && below(2)) {
				rdm_maptree_link(&d, hd);
				rdm_maptree_link(&t, ht);
			} else if (hd) {
				rdm_maptree_free(&d, hd);
				rdm_maptree_free(&t, ht);
				for (uint64_t x = k; x < KEYS && m.tag[x] && m.first[x] == k; x++)
					m.tag[x] = 0;
			}
		} else if (op == 4) {
			uint64_t x = below(KEYS + 8), len = 1 + below(3 * g);
			uint32_t hd = rdm_maptree_find_le(&d, x), ht = rdm_maptree_find_le(&t, x);
			bool same = start_of(&d, hd) == start_of(&t, ht) &&
				    start_of(&d, rdm_maptree_find_ge(&d, x)) == start_of(&t, rdm_maptree_find_ge(&t, x)) &&
				    start_of(&d, rdm_maptree_find(&d, x)) == start_of(&t, rdm_maptree_find(&t, x)) &&
				    start_of(&d, rdm_maptree_first_ending_after(&d, x)) ==
					    start_of(&t, rdm_maptree_first_ending_after(&t, x)) &&
				    rdm_maptree_intersects(&d, x, len) == rdm_maptree_intersects(&t, x, len) &&
				    (!hd || start_of(&d, rdm_maptree_next(&d, hd)) == start_of(&t, rdm_maptree_next(&t, ht)));
			/* The model's answer to one of them: the interval holding x. */
			uint64_t want = x < KEYS && m.tag[x] ? m.first[x] : UINT64_MAX;

			if (!same || start_of(&d, rdm_maptree_find(&d, x)) != want) {
				fprintf(stderr, "dense seed %" PRIu64 " step %d: lookups at %" PRIu64 " differ\n", seed, step,
					x);
				ok = false;
			}
		} else if (below(4)) {
			/* Out by handle and back, as the planner does. */
			uint32_t hd = rdm_maptree_find_ge(&d, below(KEYS)), ht = hd ? rdm_maptree_find(&t, start_of(&d, hd)) : 0;

			if (hd) {
				rdm_maptree_unlink(&d, hd);
				rdm_maptree_unlink(&t, ht);
				rdm_maptree_link(&d, hd);
				rdm_maptree_link(&t, ht);
			}
		} else {
			bool md = rdm_maptree_trim(&d), mt = rdm_maptree_trim(&t);

			if (md != mt || d.cap != t.cap) {
				fprintf(stderr, "dense seed %" PRIu64 " step %d: trim %d/%" PRIu32 " against %d/%" PRIu32 "\n",
					seed, step, md, d.cap, mt, t.cap);
				ok = false;
			}
		}
		if (!matches(&d, &m) || !matches(&t, &m) || d.count != t.count || rdm_maptree_is_dense(&d) == converted) {
			fprintf(stderr, "dense seed %" PRIu64 " step %d (op %" PRIu64 "): model %d/%d, counts %" PRIu64
				"/%" PRIu64 ", %s\n", seed, step, op, matches(&d, &m), matches(&t, &m), d.count, t.count,
				rdm_maptree_is_dense(&d) ? "dense" : "a treap");
			ok = false;
		}
	}
	/* Trim: fill every free slot, empty all but the last few, and the
	 * trim must move both trees alike when their pools passed
	 * RDM_MAPTREE_TRIM_MIN (one slot per key: gshift 0). */
	for (uint64_t k = 0; ok && k < nslots; k++) {
		if (m.tag[k * g])
			continue;
		uint64_t n = 0;

		while (k + n < nslots && !m.tag[(k + n) * g])
			n++;
		REQUIRE(rdm_maptree_reserve(&d, (uint32_t)n) == 0 && rdm_maptree_reserve(&t, (uint32_t)n) == 0);
		struct pay tmpl = { .tag = next_tag };

		rdm_maptree_insert_run(&d, k * g, g, (uint32_t)n, &tmpl, sizeof(tmpl));
		rdm_maptree_insert_run(&t, k * g, g, (uint32_t)n, &tmpl, sizeof(tmpl));
		for (uint64_t i = 0; i < n * g; i++) {
			m.tag[k * g + i] = next_tag;
			m.first[k * g + i] = k * g + i / g * g;
		}
		next_tag++;
		k += n;
	}
	uint64_t cd = 0, sd = 0, ct = 0, st = 0;

	rdm_maptree_remove_starts_in(&d, 0, KEYS - 4 * g - 1, &cd, &sd);
	rdm_maptree_remove_starts_in(&t, 0, KEYS - 4 * g - 1, &ct, &st);
	for (uint64_t k = 0; k < KEYS - 4 * g; k++)
		if (m.tag[k] && m.first[k] == k)
			for (uint64_t x = k; x < KEYS && m.tag[x] && m.first[x] == k; x++)
				m.tag[x] = 0;
	bool due = t.cap > RDM_MAPTREE_TRIM_MIN, md = rdm_maptree_trim(&d), mt = rdm_maptree_trim(&t);
	uint32_t last = rdm_maptree_find_le(&d, UINT64_MAX);

	if (ok && (md != due || mt != due || cd != ct || !matches(&d, &m) || !matches(&t, &m) ||
		   rdm_maptree_is_dense(&d) == converted ||
		   start_of(&d, last) != start_of(&t, rdm_maptree_find_le(&t, UINT64_MAX)) ||
		   (last && start_of(&d, rdm_maptree_unlink_start(&d, start_of(&d, last), NULL, NULL)) != start_of(&d, last)))) {
		fprintf(stderr, "dense seed %" PRIu64 ": trim %d/%d, removed %" PRIu64 "/%" PRIu64 ", model %d/%d\n", seed,
			md, mt, cd, ct, matches(&d, &m), matches(&t, &m));
		ok = false;
	}
	dense_conversions += converted;
	rdm_maptree_fini(&d);
	rdm_maptree_fini(&t);
	return ok;
}

/* make_dense's refusals and its failed allocation leave a working treap. */
static void check_make_dense(void)
{
	struct rdm_maptree t;
	uint64_t count = 0, sum = 0;

	rdm_maptree_init(&t, 0);
	CHECK(rdm_maptree_make_dense(&t, 0, 0) == -EINVAL && !rdm_maptree_is_dense(&t));
	CHECK(rdm_maptree_make_dense(&t, 0, RDM_MAPTREE_DENSE_MAX + 1) == -EINVAL && !rdm_maptree_is_dense(&t));
	for (unsigned long k = 1; k <= 3; k++) {
		rdm_alloc_inject(k, false);
		CHECK(rdm_maptree_make_dense(&t, 1, 100) == -ENOMEM && !rdm_maptree_is_dense(&t));
		rdm_alloc_inject(0, false);
	}
	REQUIRE(rdm_maptree_reserve(&t, 2) == 0);
	rdm_maptree_insert_run(&t, 10, 2, 2, NULL, 0);
	CHECK(rdm_maptree_make_dense(&t, 1, 100) == -EINVAL && !rdm_maptree_is_dense(&t)); /* not empty */
	CHECK(t.count == 2 && rdm_maptree_find(&t, 13) && !rdm_maptree_find(&t, 14));
	rdm_maptree_remove_starts_in(&t, 0, UINT64_MAX, &count, &sum);
	CHECK(count == 2 && sum == 4 && t.count == 0);
	CHECK(rdm_maptree_make_dense(&t, 1, 100) == 0 && rdm_maptree_is_dense(&t));
	/* clear (a detach) in dense mode: every slot empty, the nodes spare,
	 * the index usable again. */
	REQUIRE(rdm_maptree_reserve(&t, 70) == 0);
	rdm_maptree_insert_run(&t, 0, 2, 70, NULL, 0);
	uint32_t spare = rdm_maptree_spare(&t);

	rdm_maptree_clear(&t);
	CHECK(t.count == 0 && rdm_maptree_spare(&t) == spare + 70 && rdm_maptree_is_dense(&t));
	CHECK(!rdm_maptree_find_le(&t, UINT64_MAX) && !rdm_maptree_find_ge(&t, 0) && !rdm_maptree_intersects(&t, 0, 200));
	rdm_maptree_insert_run(&t, 130, 2, 3, NULL, 0);
	CHECK(t.count == 3 && rdm_maptree_node(&t, rdm_maptree_find_ge(&t, 0))->start == 130 && rdm_maptree_is_dense(&t));
	rdm_maptree_fini(&t);
	CHECK(!rdm_maptree_is_dense(&t));
}

int main(void)
{
	check_trim_above();
	check_make_dense();
	const char *s = getenv("RDM_TEST_SEED"), *r = getenv("RDM_TEST_ROUNDS");
	int rounds = r ? atoi(r) : 100;

	if (s) {
		CHECK(run_seed(strtoull(s, NULL, 0)));
		CHECK(trim_seed(strtoull(s, NULL, 0)));
		CHECK(dense_seed(strtoull(s, NULL, 0)));
		return check_exit();
	}
	for (int i = 1; i <= rounds; i++)
		CHECK(dense_seed((uint64_t)i));
	/* A quarter of the seeds insert an interval that is not a slot: the
	 * conversion must have been tested, not just the dense mode. */
	CHECK(rounds < 8 || dense_conversions >= (unsigned)rounds / 8);
	for (int i = 1; i <= rounds; i++)
		CHECK(run_seed((uint64_t)i));
	for (int i = 1; i <= rounds; i++)
		CHECK(trim_seed((uint64_t)i));
	return check_exit();
}
