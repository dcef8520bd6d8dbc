/* test_diff.c - randomized differential test of region state and listeners against a plain bitmap oracle. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <rdm/error.h>
#include <rdm/region.h>

#include "core/region_internal.h"
#include "tests/check.h"
#include "tests/core/oracle.h"

#define NLISTENERS 3
#define REFUSAL -EBUSY

/*
 * The oracle covers a window of wn blocks starting at block wb of the region
 * (so a 1 TiB region keeps a small oracle); every change stays inside it and
 * everything outside it must stay discarded.
 */
struct world {
	struct rdm_region *r;
	uint64_t bs, nblocks, wb, wn;
	bool strict;
	struct oracle o;
	struct rng rng;
	unsigned refuse_permille;
	bool refused;        /* a listener refused during the current call */
	uint64_t released;   /* blocks passed to the release callback */
	bool release_bad;
};

struct tlistener {
	struct rdm_listener l;
	struct world *w;
	struct oracle seen;  /* what this listener was told, window-relative */
	bool registered;
	bool bad;
};

static struct tlistener tls[NLISTENERS];

static bool in_window(const struct world *w, uint64_t off, uint64_t len)
{
	uint64_t s = off / w->bs, e = (off + len) / w->bs;

	return off % w->bs == 0 && len % w->bs == 0 && s >= w->wb && e <= w->wb + w->wn && s < e;
}

static int l_populate(struct rdm_listener *l, uint64_t off, uint64_t len)
{
	struct tlistener *t = (struct tlistener *)l;
	struct world *w = t->w;
	uint64_t s, e;

	if (!in_window(w, off, len) || off < l->offset || off + len > l->offset + l->length) {
		t->bad = true;
		return 0;
	}
	s = off / w->bs - w->wb;
	e = (off + len) / w->bs - w->wb;
	/* Told only of blocks that change: none may already be populated. */
	if (oracle_count(&t->seen, s, e) != 0)
		t->bad = true;
	if (w->refuse_permille != 0 && rng_below(&w->rng, 1000) < w->refuse_permille) {
		w->refused = true;
		return REFUSAL;
	}
	oracle_set(&t->seen, s, e, true);
	return 0;
}

static void l_discard(struct rdm_listener *l, uint64_t off, uint64_t len)
{
	struct tlistener *t = (struct tlistener *)l;
	struct world *w = t->w;

	if (!in_window(w, off, len) || off < l->offset || off + len > l->offset + l->length) {
		t->bad = true;
		return;
	}
	oracle_set(&t->seen, off / w->bs - w->wb, (off + len) / w->bs - w->wb, false);
}

static const struct rdm_listener_ops lops = { l_populate, l_discard };

static void on_release(void *opaque, uint64_t off, uint64_t len)
{
	struct world *w = opaque;

	if (!in_window(w, off, len))
		w->release_bad = true;
	else
		w->released += len / w->bs;
}

/* Check a listener's view against the oracle on window blocks [s, e). */
static void check_listener(struct world *w, struct tlistener *t, uint64_t s, uint64_t e)
{
	uint64_t ls = t->l.offset / w->bs - w->wb, le = (t->l.offset + t->l.length) / w->bs - w->wb;

	CHECK(!t->bad);
	if (!t->registered) {
		CHECK(oracle_count(&t->seen, s, e) == 0);
		return;
	}
	if (s < ls)
		s = ls;
	if (e > le)
		e = le;
	if (s < e && oracle_diff(&t->seen, &w->o, s, e) != 0) {
		fprintf(stderr, "listener %td differs from the oracle in [%" PRIu64 ", %" PRIu64 ")\n",
			t - tls, s, e);
		check_failures++;
	}
}

static void random_subrange(struct world *w, uint64_t *off, uint64_t *len)
{
	uint64_t s = rng_below(&w->rng, w->wn), n = 1 + rng_below(&w->rng, w->wn - s);

	*off = (w->wb + s) * w->bs;
	*len = n * w->bs;
}

static void listener_reregister(struct world *w, struct tlistener *t)
{
	int ret;

	if (t->registered) {
		CHECK(rdm_listener_unregister(w->r, &t->l) == 0);
		t->registered = false;
		CHECK(oracle_count(&t->seen, 0, w->wn) == 0);
	}
	memset(t->seen.w, 0, (w->wn + 63) / 64 * 8);
	random_subrange(w, &t->l.offset, &t->l.length);
	w->refused = false;
	ret = rdm_listener_register(w->r, &t->l);
	CHECK(ret == (w->refused ? REFUSAL : 0));
	t->registered = ret == 0;
	check_listener(w, t, 0, w->wn);
}

/* A random byte range for queries: mostly inside the window, sometimes
 * unaligned, sometimes reaching outside the region. */
static void random_query(struct world *w, uint64_t *off, uint64_t *len)
{
	uint64_t s = w->wb + rng_below(&w->rng, w->wn);
	uint64_t n = 1 + rng_below(&w->rng, rng_below(&w->rng, 32) == 0 ? w->wn : 64);

	*off = s * w->bs;
	*len = n * w->bs;
	if (rng_below(&w->rng, 4) == 0) {
		*off += rng_below(&w->rng, w->bs);
		*len = 1 + rng_below(&w->rng, *len);
	}
	if (rng_below(&w->rng, 64) == 0)
		*len = UINT64_MAX - rng_below(&w->rng, 1000);
}

/* Oracle answers for a byte range, clipped to the region and rounded out. */
static bool oracle_range(const struct world *w, uint64_t off, uint64_t len, uint64_t *s,
			 uint64_t *e)
{
	uint64_t size = w->nblocks * w->bs, end;

	if (len == 0 || off >= size)
		return false;
	end = len > size - off ? size : off + len;
	*s = off / w->bs;
	*e = (end - 1) / w->bs + 1;
	return true;
}

/* Region block range [s, e) -> window-relative, counting populated. */
static uint64_t oracle_pop(const struct world *w, uint64_t s, uint64_t e)
{
	uint64_t a = s > w->wb ? s - w->wb : 0, b = e > w->wb ? e - w->wb : 0;

	if (a > w->wn)
		a = w->wn;
	if (b > w->wn)
		b = w->wn;
	return a < b ? oracle_count(&w->o, a, b) : 0;
}

struct runs {
	uint64_t v[2 * 64];
	unsigned n, stop_after;
};

static int collect(void *opaque, uint64_t off, uint64_t len)
{
	struct runs *r = opaque;

	if (r->n < 64) {
		r->v[2 * r->n] = off;
		r->v[2 * r->n + 1] = off + len;
	}
	r->n++;
	return r->n == r->stop_after ? -42 : 0;
}

/* The oracle's value at region block b (outside the window: discarded). */
static bool world_get(const struct world *w, uint64_t b)
{
	return b >= w->wb && b < w->wb + w->wn && oracle_get(&w->o, b - w->wb);
}

/* The end of the run of equal values starting at region block b, below e. */
static uint64_t world_run_end(const struct world *w, uint64_t b, uint64_t e)
{
	if (b < w->wb)
		return w->wb < e ? w->wb : e;
	if (b >= w->wb + w->wn)
		return e;
	{
		uint64_t we = e < w->wb + w->wn ? e : w->wb + w->wn;

		return w->wb + oracle_find(&w->o, b - w->wb, we - w->wb, !world_get(w, b));
	}
}

static void check_replay(struct world *w, bool populated)
{
	uint64_t off, len, s, e, b, want[2 * 64];
	struct runs got = { .stop_after = 0 };
	unsigned want_n = 0;
	int ret;

	random_query(w, &off, &len);
	if (rng_below(&w->rng, 4) == 0)
		got.stop_after = 1 + (unsigned)rng_below(&w->rng, 4);
	ret = populated ? rdm_replay_populated(w->r, off, len, collect, &got)
			: rdm_replay_discarded(w->r, off, len, collect, &got);
	if (!oracle_range(w, off, len, &s, &e)) {
		CHECK(ret == 0 && got.n == 0);
		return;
	}
	for (b = s; b < e;) {
		uint64_t c = world_run_end(w, b, e);

		/* Runs continue across the window's edges. */
		while (c < e && world_get(w, c) == world_get(w, b))
			c = world_run_end(w, c, e);
		if (world_get(w, b) == populated) {
			if (want_n < 64) {
				want[2 * want_n] = b * w->bs;
				want[2 * want_n + 1] = c * w->bs;
			}
			want_n++;
		}
		b = c;
	}
	if (got.stop_after != 0 && want_n >= got.stop_after) {
		CHECK(ret == -42 && got.n == got.stop_after);
	} else {
		CHECK(ret == 0);
		CHECK(got.n == want_n);
	}
	for (unsigned i = 0; i < got.n && i < want_n && i < 64; i++) {
		if (got.v[2 * i] != want[2 * i] || got.v[2 * i + 1] != want[2 * i + 1]) {
			fprintf(stderr, "replay run %u: got [%#" PRIx64 ", %#" PRIx64 ") want [%#" PRIx64
				", %#" PRIx64 ")\n",
				i, got.v[2 * i], got.v[2 * i + 1], want[2 * i], want[2 * i + 1]);
			check_failures++;
			return;
		}
	}
}

static void check_queries(struct world *w)
{
	for (int q = 0; q < 3; q++) {
		uint64_t off, len, s, e, pop;
		bool inside;

		random_query(w, &off, &len);
		inside = len != 0 && off < w->nblocks * w->bs && len <= w->nblocks * w->bs - off;
		if (!oracle_range(w, off, len, &s, &e)) {
			CHECK(rdm_populated_bytes(w->r, off, len) == 0);
			CHECK(!rdm_is_populated(w->r, off, len));
			continue;
		}
		pop = oracle_pop(w, s, e);
		CHECK(rdm_populated_bytes(w->r, off, len) == pop * w->bs);
		CHECK(rdm_is_populated(w->r, off, len) == (inside && pop == e - s));
		CHECK(rdm_is_discarded(w->r, off, len) == (inside && pop == 0));
	}
}

static uint64_t run_world(uint64_t bs, uint64_t size, uint64_t wn, bool strict, uint64_t seed,
			  uint64_t ops)
{
	struct world w = { 0 };
	struct rdm_region_config cfg = { .struct_size = sizeof(cfg) };
	uint64_t done = 0;

	w.bs = bs;
	w.nblocks = size / bs;
	w.strict = strict;
	w.rng.s = seed;
	w.wn = wn < w.nblocks ? wn : w.nblocks;
	/* Windows at the start, the end, or straddling arbitrary internal
	 * boundaries. */
	switch (rng_below(&w.rng, 3)) {
	case 0:
		w.wb = 0;
		break;
	case 1:
		w.wb = w.nblocks - w.wn;
		break;
	default:
		w.wb = rng_below(&w.rng, w.nblocks - w.wn + 1);
		break;
	}
	oracle_init(&w.o, w.wn);
	cfg.size = size;
	cfg.block_size = bs;
	cfg.flags = strict ? RDM_REGION_STRICT : 0;
	cfg.release = on_release;
	cfg.release_opaque = &w;
	REQUIRE(rdm_region_create(&cfg, &w.r) == 0);
	w.refuse_permille = 20;
	for (int i = 0; i < NLISTENERS; i++) {
		memset(&tls[i], 0, sizeof(tls[i]));
		tls[i].l.ops = &lops;
		tls[i].w = &w;
		oracle_init(&tls[i].seen, w.wn);
		listener_reregister(&w, &tls[i]);
	}

	for (done = 0; done < ops && check_failures == 0; done++) {
		uint64_t k = rng_below(&w.rng, 1000), s, n, off, len, before;
		int ret, want;
		bool pop;

		if (k < 2) {
			/* discard_all */
			before = oracle_count(&w.o, 0, w.wn);
			w.released = 0;
			CHECK(rdm_discard_all(w.r) == 0);
			CHECK(w.released == before && !w.release_bad);
			oracle_set(&w.o, 0, w.wn, false);
			for (int i = 0; i < NLISTENERS; i++)
				check_listener(&w, &tls[i], 0, w.wn);
			continue;
		}
		if (k < 6) {
			listener_reregister(&w, &tls[rng_below(&w.rng, NLISTENERS)]);
			continue;
		}
		/* Lengths: mostly short, sometimes up to the window (whole
		 * internal slots). Strict mode prefers ranges that succeed. */
		s = rng_below(&w.rng, w.wn);
		n = 1 + rng_below(&w.rng, rng_below(&w.rng, 16) == 0 ? w.wn - s
				  : (w.wn - s < 256 ? w.wn - s : 256));
		pop = rng_below(&w.rng, 2) == 0;
		off = (w.wb + s) * bs;
		len = n * bs;
		before = oracle_count(&w.o, s, s + n);
		want = 0;
		if (strict && pop && before != 0)
			want = -EEXIST;
		if (strict && !pop && before != n)
			want = -ENOENT;
		w.refused = false;
		w.released = 0;
		ret = pop ? rdm_populate(w.r, off, len) : rdm_discard(w.r, off, len);
		if (want == 0 && w.refused)
			want = REFUSAL;
		if (ret != want) {
			fprintf(stderr, "op %" PRIu64 ": %s [%" PRIu64 ", +%" PRIu64 ") = %d, want %d\n",
				done, pop ? "populate" : "discard", s, n, ret, want);
			check_failures++;
			break;
		}
		if (ret != 0)
			CHECK(rdm_last_error()[0] != '\0');
		if (ret == 0)
			oracle_set(&w.o, s, s + n, pop);
		CHECK(!w.release_bad);
		CHECK(w.released == (ret == 0 && !pop ? before : 0));
		CHECK(rdm_populated_bytes(w.r, off, len) == oracle_count(&w.o, s, s + n) * bs);
		for (int i = 0; i < NLISTENERS; i++)
			check_listener(&w, &tls[i], s, s + n);
		check_queries(&w);
		if (rng_below(&w.rng, 8) == 0)
			check_replay(&w, rng_below(&w.rng, 2) == 0);
		if (done % 4096 == 0) {
			CHECK(rdm_populated_bytes(w.r, 0, UINT64_MAX) ==
			      oracle_count(&w.o, 0, w.wn) * bs);
			for (int i = 0; i < NLISTENERS; i++)
				check_listener(&w, &tls[i], 0, w.wn);
		}
	}
	CHECK(rdm_populated_bytes(w.r, 0, UINT64_MAX) == oracle_count(&w.o, 0, w.wn) * bs);
	for (int i = 0; i < NLISTENERS; i++)
		check_listener(&w, &tls[i], 0, w.wn);
	/* Destroy tells the remaining listeners a discard of everything. */
	CHECK(rdm_region_destroy(w.r) == 0);
	for (int i = 0; i < NLISTENERS; i++) {
		CHECK(oracle_count(&tls[i].seen, 0, w.wn) == 0);
		oracle_fini(&tls[i].seen);
	}
	oracle_fini(&w.o);
	return done;
}

int main(int argc, char **argv)
{
	static const struct {
		uint64_t bs, size, window;
	} worlds[] = {
		{ 4096, UINT64_C(1) << 40, 1 << 18 },      /* 1 TiB at 4 KiB, window 1 GiB */
		{ 4096, UINT64_C(1) << 40, 3 << 13 },      /* small window: boundaries */
		{ 4096, UINT64_C(64) << 20, 1 << 14 },     /* the whole region */
		{ 4096, UINT64_C(1) << 30, 1 << 18 },
		{ 65536, UINT64_C(1) << 36, 1 << 16 },
		{ UINT64_C(2) << 20, UINT64_C(1) << 40, 1 << 19 }, /* whole */
		{ UINT64_C(1) << 30, UINT64_C(1) << 40, 1 << 10 }, /* whole */
		{ 8192, 8192 * 5000, 5000 },
	};
	uint64_t seed = env_u64("RDM_SEED", 0), ops = env_u64("RDM_ITERS", 0), total = 0;
	unsigned nw = sizeof(worlds) / sizeof(worlds[0]);

	if (argc > 1)
		seed = strtoull(argv[1], NULL, 0);
	if (argc > 2)
		ops = strtoull(argv[2], NULL, 0);
	if (seed == 0) {
		struct timespec ts;

		clock_gettime(CLOCK_REALTIME, &ts);
		seed = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20);
	}
	if (ops == 0)
		ops = TEST_SANITIZED ? 200000 : 10000000;
	printf("test_diff: seed %#" PRIx64 " ops %" PRIu64 " (rerun: RDM_SEED=%#" PRIx64
	       " RDM_ITERS=%" PRIu64 ")\n",
	       seed, ops, seed, ops);
	fflush(stdout);
	/* Each world runs twice (lenient, strict) with its own seed; the worlds
	 * share the operations, several rounds each so every window placement
	 * gets its turn. */
	for (unsigned round = 0; total < ops && check_failures == 0; round++) {
		for (unsigned i = 0; i < 2 * nw && total < ops && check_failures == 0; i++) {
			uint64_t wseed = seed + round * 1000 + i;
			uint64_t n = ops / (4 * 2 * nw) + 1;

			total += run_world(worlds[i / 2].bs, worlds[i / 2].size, worlds[i / 2].window,
					   i % 2 == 1, wseed, n);
			if (check_failures)
				fprintf(stderr, "failed in world %u (%s), round %u, world seed %#" PRIx64
					"\n", i / 2, i % 2 ? "strict" : "lenient", round, wseed);
		}
	}
	printf("test_diff: %" PRIu64 " operations\n", total);
	return check_exit();
}
