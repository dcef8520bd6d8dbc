/* test_tree.c - the range tree's working version: steps written in place, undone when one fails, against a bitmap oracle. */
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <urcu-bp.h>

#include "core/alloc.h"
#include "core/flat.h"
#include "core/tree.h"
#include "tests/check.h"
#include "tests/rng.h"

#define LEAF 4096u

/* ---- the oracle: one bool per block ---- */

static bool state_is(const struct rdm_tree *t, uintptr_t root, const bool *o, uint64_t n, const char *what)
{
	uint64_t count = 0;

	for (uint64_t b = 0; b < n; b++) {
		if (rdm_tree_all(t, root, b, b + 1, true) != o[b]) {
			fprintf(stderr, "%s: block %" PRIu64 ": tree %d, oracle %d\n", what, b, !o[b], o[b]);
			return false;
		}
		count += o[b];
	}
	if (rdm_tree_count(t, root, 0, n) != count) {
		fprintf(stderr, "%s: count %" PRIu64 ", oracle %" PRIu64 "\n", what, rdm_tree_count(t, root, 0, n),
			count);
		return false;
	}
	return true;
}

static void oracle_set(bool *o, uint64_t s, uint64_t e, bool val)
{
	for (uint64_t b = s; b < e; b++)
		o[b] = val;
}

static void tree_open(struct rdm_tree *t, struct rdm_mem *m, uint64_t n)
{
	rdm_mem_init(m);
	rdm_tree_init(t, n, m);
}

static void tree_close(struct rdm_tree *t)
{
	rdm_tree_fini(t);
	rcu_barrier();
	rdm_tree_barrier_done(t);
}

/* Close a tree whose nodes were quarantined (never pooled): every byte of
 * its allocator must be back once the quarantine is drained. */
static void tree_close_quarantined(struct rdm_tree *t, struct rdm_mem *m)
{
	tree_close(t);
	rdm_mem_set_quarantine(false);
	rdm_mem_quarantine_drain();
	CHECK(rdm_mem_current(m) == 0);
}

/* Publish the working version and hand its superseded nodes on. */
static void publish(struct rdm_tree *t)
{
	rdm_tree_publish(t);
	rdm_tree_retire(t);
}

/*
 * The node pool (tree.c, "Node pool"): what a grace period returns comes
 * back by size class, so a steady state of changes allocates no node; and
 * a hand-back that would take the pool past RDM_TREE_POOL_MAX is freed.
 */
static void load_alternating(void *opaque, uint64_t first, uint64_t *words)
{
	(void)opaque;
	(void)first;
	for (unsigned i = 0; i < LEAF / 64; i++)
		words[i] = UINT64_C(0x5555555555555555);
}

/* 200 ranges of 1..63 blocks spread over the region, each populated and
 * discarded again, one version per change; the superseded nodes kept
 * (rdm_tree_retire_later) and handed on once at the end, so that the pass
 * allocates one retire batch at most and reuses none of its own nodes. */
static void toggle_pass(struct rdm_tree *t, uint64_t n, const bool *o)
{
	for (uint64_t i = 0; i < 200; i++) {
		/* Inside the gap of a 1024-block slot (blocks 200..1023). */
		uint64_t s = (i * 7919) % (n / 1024) * 1024 + 200 + i * 37 % 700, e = s + 1 + i % 63;

		REQUIRE(rdm_tree_prepare(t, s, e, true) == 0);
		rdm_tree_publish(t);
		rdm_tree_retire_later(t);
		REQUIRE(rdm_tree_prepare(t, s, e, false) == 0);
		rdm_tree_publish(t);
		rdm_tree_retire_later(t);
	}
	rdm_tree_retire_flush(t);
	CHECK(state_is(t, rdm_tree_snapshot(t), o, n, "after a toggle pass"));
}

static void test_pool(void)
{
	const uint64_t n = UINT64_C(1) << 20;
	struct rdm_tree t;
	struct rdm_mem m;
	bool *o = calloc(n, 1);
	size_t allocs;

	REQUIRE(o);
	tree_open(&t, &m, n);
	/* A sparse state to change: every 1024-block slot's first 100 blocks. */
	for (uint64_t b = 0; b < n; b += 1024) {
		REQUIRE(rdm_tree_prepare(&t, b, b + 100, true) == 0);
		oracle_set(o, b, b + 100, true);
	}
	publish(&t);
	toggle_pass(&t, n, o);
	/* Every node the pass retired back in the pool (the callbacks ran). */
	rcu_barrier();
	allocs = atomic_load(&m.allocs);
	toggle_pass(&t, n, o);
	CHECK(atomic_load(&m.allocs) == allocs);
	if (atomic_load(&m.allocs) != allocs)
		fprintf(stderr, "pool: the second pass allocated %zu nodes\n", atomic_load(&m.allocs) - allocs);
	CHECK(atomic_load(&t.pool_bytes) <= RDM_TREE_POOL_MAX);
	tree_close(&t);
	CHECK(rdm_mem_current(&m) == 0);

	/* Past the bound: one retired subtree of more than RDM_TREE_POOL_MAX
	 * (2^25 + 2^13 blocks alternating: 8194 bitmap leaves of 512 B, and
	 * their inner nodes), discarded whole: freed, not pooled. */
	const uint64_t big = (UINT64_C(1) << 25) + 2 * LEAF;

	tree_open(&t, &m, big);
	REQUIRE(rdm_tree_prepare_load(&t, load_alternating, NULL) == 0);
	publish(&t);
	CHECK(rdm_mem_current(&m) > RDM_TREE_POOL_MAX);
	REQUIRE(rdm_tree_prepare(&t, 0, big, false) == 0);
	publish(&t);
	rdm_tree_retire_flush(&t);
	rcu_barrier();
	CHECK(atomic_load(&t.pool_bytes) <= RDM_TREE_POOL_MAX);
	tree_close(&t);
	CHECK(rdm_mem_current(&m) == 0);
	free(o);
}

/*
 * Directed: two fragmented bitmap leaves, published. Step 1 copies leaf 0
 * (now a node of the working version). Step 2 covers the end of leaf 0 and
 * the start of leaf 1: leaf 0 is written in place, then leaf 1's copy fails
 * for memory. The working version must be as after step 1 (leaf 0's words
 * restored), the published one untouched, and a retry must work. Then a
 * working version kept (rdm_tree_keep_working) must read the same after a
 * later step.
 */
static void test_undo_in_place(void)
{
	const uint64_t n = 2 * LEAF;
	struct rdm_tree t;
	struct rdm_mem m;
	bool *pub = calloc(n, 1), *work = calloc(n, 1);

	REQUIRE(pub && work);
	tree_open(&t, &m, n);
	/* Every even block populated: 2048 runs per leaf, bitmaps. */
	for (uint64_t b = 0; b < n; b += 2) {
		REQUIRE(rdm_tree_prepare(&t, b, b + 1, true) == 0);
		pub[b] = true;
	}
	publish(&t);
	memcpy(work, pub, n);
	REQUIRE(state_is(&t, rdm_tree_snapshot(&t), pub, n, "published"));

	REQUIRE(rdm_tree_prepare(&t, 101, 102, true) == 0); /* step 1: leaf 0 copied */
	work[101] = true;
	/* Step 2: blocks LEAF-64 .. LEAF+64, all populated: leaf 0's last
	 * word in place, then leaf 1 needs a new node, which fails. */
	rdm_mem_set_quarantine(true); /* no pooled node: the copy allocates */
	rdm_alloc_inject(1, true);
	int err = rdm_tree_prepare(&t, LEAF - 64, LEAF + 64, true);
	rdm_alloc_inject(0, false);
	CHECK(err == -ENOMEM);
	CHECK(state_is(&t, rdm_tree_working(&t), work, n, "working after the failed step"));
	CHECK(state_is(&t, rdm_tree_snapshot(&t), pub, n, "published after the failed step"));
	/* The retry works and only the working version changes. */
	CHECK(rdm_tree_prepare(&t, LEAF - 64, LEAF + 64, true) == 0);
	oracle_set(work, LEAF - 64, LEAF + 64, true);
	CHECK(state_is(&t, rdm_tree_working(&t), work, n, "working after the retry"));
	CHECK(state_is(&t, rdm_tree_snapshot(&t), pub, n, "published before the publish"));
	/* A kept working version stays readable as it was across a later step
	 * (the region tells a discard's listeners from the state before it). */
	uintptr_t kept = rdm_tree_working(&t);
	bool *before = malloc(n);

	REQUIRE(before);
	memcpy(before, work, n);
	rdm_tree_keep_working(&t);
	CHECK(rdm_tree_prepare(&t, 203, 204, true) == 0); /* odd: a change */
	work[203] = true;
	CHECK(state_is(&t, kept, before, n, "kept working version after a step"));
	CHECK(state_is(&t, rdm_tree_working(&t), work, n, "working after the kept step"));
	free(before);
	publish(&t);
	CHECK(state_is(&t, rdm_tree_snapshot(&t), work, n, "published after the publish"));
	rdm_mem_set_quarantine(false);
	tree_close(&t);
	rdm_mem_quarantine_drain();
	CHECK(rdm_mem_current(&m) == 0);
	free(pub);
	free(work);
}

/*
 * Directed: the in-place path of a step inside a leaf that this working
 * version already made a bitmap (prepare_in_hot_leaf(), core/tree.c).
 * (a) Such a step whose last part fails (the flat view's note, whose list
 * must grow) leaves the working version as before it: the words it set are
 * logged and put back. (b) A step that brings the hot bitmap down to
 * EXT_MAX runs is the general path's (a new extent leaf); when that node's
 * allocation fails, the words are as before the step, not as the in-place
 * attempt left them.
 */
static void test_hot_leaf_steps(void)
{
	const uint64_t n = 2 * LEAF;
	struct rdm_tree t;
	struct rdm_mem m;
	bool *pub = calloc(n, 1), *work = calloc(n, 1);

	REQUIRE(pub && work);
	tree_open(&t, &m, n);
	REQUIRE(rdm_flat_create(n, &m, &t.flat) == 0);
	/* Leaf 0 holds 32 runs (blocks 0, 2, ... 62): one more than an extent
	 * leaf holds, so a bitmap. */
	for (uint64_t b = 0; b < 64; b += 2) {
		REQUIRE(rdm_tree_prepare(&t, b, b + 1, true) == 0);
		pub[b] = true;
	}
	publish(&t);
	memcpy(work, pub, n);
	/* Step 1 copies leaf 0, hot from now on; then steps in place until the
	 * flat view's list of noted changes is full. 34 runs. */
	REQUIRE(rdm_tree_prepare(&t, 200, 201, true) == 0);
	work[200] = true;
	do
		REQUIRE(rdm_tree_prepare(&t, 300, 301, true) == 0);
	while (t.flat->npend < t.flat->cap);
	work[300] = true;
	CHECK(state_is(&t, rdm_tree_working(&t), work, n, "working after the steps in place"));

	/* (a) */
	rdm_mem_set_quarantine(true); /* no pooled node: (b)'s leaf allocates */
	rdm_alloc_inject(1, false);
	CHECK(rdm_tree_prepare(&t, 400, 401, true) == -ENOMEM);
	rdm_alloc_inject(0, false);
	CHECK(state_is(&t, rdm_tree_working(&t), work, n, "working after a failed step in place"));

	/* (b) Back to 32 runs, then block 1 joins blocks 0 and 2: 31. */
	CHECK(rdm_tree_prepare(&t, 300, 301, false) == 0);
	CHECK(rdm_tree_prepare(&t, 200, 201, false) == 0);
	work[300] = work[200] = false;
	rdm_alloc_inject(1, false);
	CHECK(rdm_tree_prepare(&t, 1, 2, true) == -ENOMEM);
	rdm_alloc_inject(0, false);
	CHECK(state_is(&t, rdm_tree_working(&t), work, n, "working after a failed step out of a bitmap"));
	CHECK(rdm_tree_prepare(&t, 1, 2, true) == 0);
	work[1] = true;
	CHECK(state_is(&t, rdm_tree_working(&t), work, n, "working after the retry"));
	CHECK(state_is(&t, rdm_tree_snapshot(&t), pub, n, "published before the publish"));
	publish(&t);
	CHECK(state_is(&t, rdm_tree_snapshot(&t), work, n, "published after the publish"));
	for (uint64_t b = 0; b < n; b++)
		if (rdm_flat_all(t.flat, b, b + 1, true) != (int)work[b]) {
			CHECK(!"the flat view agrees with the tree");
			break;
		}
	rdm_mem_set_quarantine(false);
	rdm_flat_destroy(t.flat);
	t.flat = NULL;
	tree_close(&t);
	rdm_mem_quarantine_drain();
	CHECK(rdm_mem_current(&m) == 0);
	free(pub);
	free(work);
}

/* A random range: mostly a few blocks in a busy window around one of the
 * leaf boundaries (fragmenting the leaves there into bitmaps, and crossing
 * from one leaf into the next), sometimes a long one (covering leaves and
 * whole spans). */
static void random_range(uint64_t n, bool comb, uint64_t *s, uint64_t *e)
{
	if (comb) {
		/* One block of a 128-block window inside leaf 1: random bits
		 * there hold ~32 runs, so the leaf keeps crossing EXT_MAX, from
		 * an extent leaf to a bitmap and, mostly by steps in place on a
		 * bitmap this version made, back. */
		*s = LEAF + 1000 + below(128);
		*e = *s + 1;
		return;
	}
	uint64_t len, centre = LEAF * (1 + below(n / LEAF));

	switch (below(16)) {
	case 0:
		len = 1 + below(n);
		*s = below(n - len + 1);
		break;
	case 1:
		len = 1 + below(2 * LEAF);
		*s = below(n - len + 1);
		break;
	case 2:
	case 3:
		/* Across the boundary. */
		len = 2 + below(16);
		*s = centre - 1 - below(len - 1);
		break;
	default:
		len = 1 + below(4);
		*s = centre - 512 + below(1024);
	}
	if (*s + len > n)
		len = n - *s;
	*e = *s + len;
}

/* The canonical form: a tree built from scratch (rdm_tree_prepare_load,
 * bottom up from the bitmap) has the same nodes, kind for kind, as the
 * published version that many steps made. Catches a leaf kept as a bitmap
 * with too few runs, or an inner node over a span one slot could hold. */
struct oracle_src {
	const bool *o;
	uint64_t n;
};

static void oracle_get(void *opaque, uint64_t first, uint64_t *words)
{
	const struct oracle_src *src = opaque;

	for (uint64_t i = 0; i < 4096 && first + i < src->n; i++)
		if (src->o[first + i])
			words[i / 64] |= UINT64_C(1) << (i % 64);
}

static bool canonical(const struct rdm_tree *t, const bool *pub, uint64_t n)
{
	struct rdm_tree f;
	struct rdm_mem m;
	struct oracle_src src = { pub, n };
	struct rdm_tree_stats a, b;

	tree_open(&f, &m, n);
	REQUIRE(rdm_tree_prepare_load(&f, oracle_get, &src) == 0);
	publish(&f);
	rdm_tree_stats(t, &a);
	rdm_tree_stats(&f, &b);
	tree_close(&f);
	if (a.inner == b.inner && a.bitmap == b.bitmap && a.ext == b.ext && a.extents == b.extents)
		return true;
	fprintf(stderr, "not canonical: inner %" PRIu64 " bitmap %" PRIu64 " ext %" PRIu64 " extents %" PRIu64
		", built from scratch: %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64 "\n", a.inner, a.bitmap, a.ext,
		a.extents, b.inner, b.bitmap, b.ext, b.extents);
	return false;
}

/* The writer's query of the working version (rdm_tree_working_all(): the
 * leaf cache, or the walk) against the oracle, on [s, e) and on one block
 * and a short range of the same leaf: the ranges a cached leaf answers. */
static bool working_all_agrees(const struct rdm_tree *t, const bool *o, uint64_t n, uint64_t s, uint64_t e)
{
	uint64_t leaf = s / LEAF * LEAF, end = leaf + LEAF < n ? leaf + LEAF : n;
	uint64_t b = leaf + below(end - leaf), q[3][2] = { { s, e }, { b, b + 1 }, { b, b + 1 + below(end - b) } };

	for (int i = 0; i < 3; i++)
		for (int val = 0; val < 2; val++) {
			bool want = true;

			for (uint64_t k = q[i][0]; k < q[i][1]; k++)
				want &= o[k] == (val != 0);
			if (rdm_tree_working_all(t, q[i][0], q[i][1], val != 0) != want) {
				fprintf(stderr, "working_all [%" PRIu64 ", %" PRIu64 ") %s: %d, oracle %d\n", q[i][0],
					q[i][1], val ? "populated" : "discarded", !want, want);
				return false;
			}
		}
	return true;
}

/*
 * Directed: the leaf cache (tree.c, prepare_in_hot_leaf(); tree.h,
 * rdm_tree_working_all()). Leaf 1 holds 64 runs (a bitmap), published. In
 * each case a version warms the cache - a step copies leaf 1, a second one
 * writes it in place and caches it (checked: else the case tests nothing) -
 * then something that must empty the cache happens, then a one-block step
 * of leaf 1 and the checks: the working version, the published one and a
 * version kept before the step against their oracles, and
 * rdm_tree_working_all(). A cache left behind would write the step into a
 * replaced, freed or published leaf, or into the kept version.
 */
enum cache_case {
	CC_COVER,      /* a step over all of leaf 1 replaces it (write_rec's way) */
	CC_UNBITMAP,   /* a step leaves leaf 1 with too few runs for a bitmap */
	CC_ACROSS,     /* a step over leaves 0 and 1 (write_rec's way; leaf 1 stays) */
	CC_KEEP,       /* rdm_tree_keep_working(): the version is read later */
	CC_FAILED,     /* a step that fails for memory */
	CC_PUBLISH,    /* the version is published */
	CC_ABORT,      /* the version is dropped */
	CC_LOAD,       /* rdm_tree_prepare_load() replaces everything */
	CC_COUNT
};

static const char *const cache_case_names[CC_COUNT] = {"cover", "unbitmap", "across", "keep",
						       "failed", "publish", "abort", "load"};

static void test_leaf_cache(void)
{
	const uint64_t n = 3 * LEAF;
	bool *pub = calloc(n, 1), *work = calloc(n, 1), *kept = calloc(n, 1);

	REQUIRE(pub && work && kept);
	for (int k = 0; k < CC_COUNT; k++) {
		const char *what = cache_case_names[k];
		struct rdm_tree t;
		struct rdm_mem m;
		uintptr_t kept_root = 0;

		rdm_mem_set_quarantine(true); /* a freed leaf is not reused */
		tree_open(&t, &m, n);
		memset(pub, 0, n);
		for (uint64_t b = LEAF; b < LEAF + 128; b += 2) {
			REQUIRE(rdm_tree_prepare(&t, b, b + 1, true) == 0);
			pub[b] = true;
		}
		publish(&t);
		memcpy(work, pub, n);
		/* Warm: a step copies leaf 1 (and the root), a second one writes
		 * it in place and caches it - unless the two copies took one slot
		 * of the direct-mapped hot set (without the node pool each node
		 * has a page here): then the version is published and copied
		 * anew. The set-up's steps may have cached the leaf in the
		 * version just published: only a cache of an open version
		 * counts. */
		for (uint64_t b = LEAF + 301; b < LEAF + 333 && !(t.open && t.leaf_words != NULL); b += 4) {
			if (b > LEAF + 301) {
				publish(&t);
				memcpy(pub, work, n);
			}
			REQUIRE(rdm_tree_prepare(&t, b, b + 1, true) == 0);
			REQUIRE(rdm_tree_prepare(&t, b + 2, b + 3, true) == 0);
			work[b] = work[b + 2] = true;
		}
		if (!(t.open && t.leaf_words != NULL && t.leaf_index == 1))
			fprintf(stderr, "%s: the warm-up did not cache leaf 1\n", what);
		CHECK(t.open && t.leaf_words != NULL && t.leaf_index == 1);
		switch (k) {
		case CC_COVER:
			REQUIRE(rdm_tree_prepare(&t, LEAF, 2 * LEAF, true) == 0);
			oracle_set(work, LEAF, 2 * LEAF, true);
			break;
		case CC_UNBITMAP:
			REQUIRE(rdm_tree_prepare(&t, LEAF, LEAF + 100, true) == 0);
			oracle_set(work, LEAF, LEAF + 100, true);
			break;
		case CC_ACROSS:
			REQUIRE(rdm_tree_prepare(&t, LEAF - 10, LEAF + 1, false) == 0);
			oracle_set(work, LEAF - 10, LEAF + 1, false);
			break;
		case CC_KEEP:
			rdm_tree_keep_working(&t);
			kept_root = rdm_tree_working(&t);
			memcpy(kept, work, n);
			break;
		case CC_FAILED:
			rdm_alloc_inject(1, false);
			CHECK(rdm_tree_prepare(&t, 2 * LEAF + 5, 2 * LEAF + 6, true) == -ENOMEM);
			rdm_alloc_inject(0, false);
			break;
		case CC_PUBLISH:
			publish(&t);
			memcpy(pub, work, n);
			break;
		case CC_ABORT:
			rdm_tree_abort(&t);
			memcpy(work, pub, n);
			break;
		case CC_LOAD:
			/* Block LEAF + 301, set by the warm-up and asked below,
			 * is discarded in the loaded state. */
			oracle_set(work, 0, n, false);
			for (uint64_t b = LEAF + 2; b < LEAF + 400; b += 3)
				work[b] = true;
			REQUIRE(rdm_tree_prepare_load(&t, oracle_get, &(struct oracle_src){ work, n }) == 0);
			break;
		}
		/* The writer's query before any further step (after an abort the
		 * working version is the published one again), then the
		 * one-block step of leaf 1, and the checks. */
		if (!working_all_agrees(&t, work, n, LEAF + 301, LEAF + 302))
			CHECK(!"the leaf cache was emptied before the next query");
		REQUIRE(rdm_tree_prepare(&t, LEAF + 33, LEAF + 34, !work[LEAF + 33]) == 0);
		work[LEAF + 33] = !work[LEAF + 33];
		if (!state_is(&t, rdm_tree_working(&t), work, n, what) ||
		    !state_is(&t, rdm_tree_snapshot(&t), pub, n, what) ||
		    (kept_root && !state_is(&t, kept_root, kept, n, what)) ||
		    !working_all_agrees(&t, work, n, LEAF + 33, LEAF + 34) ||
		    !working_all_agrees(&t, work, n, LEAF + 401, LEAF + 402))
			CHECK(!"the leaf cache was emptied where it must be");
		publish(&t);
		CHECK(state_is(&t, rdm_tree_snapshot(&t), work, n, "published at the end"));
		CHECK(canonical(&t, work, n));
		tree_close_quarantined(&t, &m);
	}
	free(pub);
	free(work);
	free(kept);
}

/*
 * Randomized against the oracle: versions of 1..40 steps on a region of a
 * few leaves (a root, a partial last leaf); some steps fail for memory at a
 * random allocation (the working version must stay as before the step), some
 * versions are aborted. After every step the working version, and the
 * published one (untouched until the publish), are checked. Nodes are never
 * pooled (quarantine), so every node a step makes is an allocation that the
 * injection can fail.
 */
static void test_random(uint64_t seed, unsigned versions, bool comb)
{
	const uint64_t n = 3 * LEAF + 777;
	struct rdm_tree t;
	struct rdm_mem m;
	bool *pub = calloc(n, 1), *work = calloc(n, 1);
	unsigned failed = 0, aborted = 0, steps = 0;
	int before = check_failures; /* stop at this run's first failure */

	REQUIRE(pub && work);
	rng_state = seed;
	rdm_mem_set_quarantine(true);
	tree_open(&t, &m, n);
	for (unsigned v = 0; v < versions && check_failures == before; v++) {
		unsigned nsteps = 1 + (unsigned)below(40);

		for (unsigned k = 0; k < nsteps && check_failures == before; k++) {
			uint64_t s, e;
			bool val = below(2) == 0, inject = below(4) == 0;
			int err;

			random_range(n, comb, &s, &e);
			if (inject)
				rdm_alloc_inject(1 + below(3), false);
			err = rdm_tree_prepare(&t, s, e, val);
			if (inject)
				rdm_alloc_inject(0, false);
			steps++;
			if (err == -ENOMEM && inject) {
				failed++;
			} else {
				CHECK(err == 0);
				oracle_set(work, s, e, val);
			}
			CHECK(state_is(&t, rdm_tree_working(&t), work, n, "working"));
			CHECK(state_is(&t, rdm_tree_snapshot(&t), pub, n, "published"));
			CHECK(working_all_agrees(&t, work, n, s, e));
			/* An applier's discard keeps the working version as it is
			 * (no more writes in place): the leaf cache goes too. */
			if (below(8) == 0)
				rdm_tree_keep_working(&t);
		}
		if (below(5) == 0) {
			rdm_tree_abort(&t);
			memcpy(work, pub, n);
			aborted++;
		} else {
			publish(&t);
			memcpy(pub, work, n);
		}
		CHECK(state_is(&t, rdm_tree_snapshot(&t), pub, n, "after the version"));
		CHECK(working_all_agrees(&t, pub, n, below(n), n));
		CHECK(canonical(&t, pub, n));
	}
	printf("random%s seed %" PRIu64 ": %u versions, %u steps, %u failed for memory, %u aborted\n",
	       comb ? " comb" : "", seed, versions, steps, failed, aborted);
	CHECK(check_failures > before || (failed > 0 && aborted > 0));
	tree_close_quarantined(&t, &m);
	free(pub);
	free(work);
}

int main(int argc, char **argv)
{
	uint64_t seed = argc > 1 ? strtoull(argv[1], NULL, 0) : 1;

	test_undo_in_place();
	test_hot_leaf_steps();
	test_leaf_cache();
	test_pool();
	for (uint64_t k = 0; k < 4; k++)
		test_random(seed + k, 150, false);
	for (uint64_t k = 0; k < 4; k++)
		test_random(seed + k, 150, true);
	return check_exit();
}
