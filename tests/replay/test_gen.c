/* test_gen.c - rdm-replay's workload generators: strictness against a bitmap oracle and each one's invariants. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/check.h"
#include "tools/replay/gen.h"
#include "tools/replay/util.h"

#define MiB (UINT64_C(1) << 20)

static uint64_t seed = 1;

static void gen(const char *spec, struct replay_trace *t)
{
	char err[REPLAY_ERR_LEN];

	if (replay_generate(spec, seed, t, err, sizeof(err)) < 0) {
		fprintf(stderr, "%s: %s\n", spec, err);
		exit(1);
	}
	REQUIRE(replay_trace_validate(t, err, sizeof(err)) == 0);
}

/* Replay against a bitmap: populate only of discarded blocks, discard only of populated ones. Returns populated blocks at the end. */
static uint64_t oracle(const struct replay_trace *t)
{
	uint64_t nb = t->region_size / t->block_size, *bits = bm_alloc(nb), pop = 0;

	REQUIRE(bits);
	for (size_t i = 0; i < t->n; i++) {
		const struct replay_req *r = &t->reqs[i];
		uint64_t f = r->offset / t->block_size, n = r->length / t->block_size;

		switch (r->op) {
		case REPLAY_POPULATE:
			if (!bm_all(bits, f, n, false)) {
				fprintf(stderr, "%s: request %zu populates a populated block\n", t->name, i);
				check_failures++;
			}
			for (uint64_t x = f; x < f + n; x++)
				bm_set(bits, x, true);
			break;
		case REPLAY_DISCARD:
			if (!bm_all(bits, f, n, true)) {
				fprintf(stderr, "%s: request %zu discards a discarded block\n", t->name, i);
				check_failures++;
			}
			for (uint64_t x = f; x < f + n; x++)
				bm_set(bits, x, false);
			break;
		case REPLAY_DISCARD_ALL:
			memset(bits, 0, (size_t)(nb + 63) / 64 * 8);
			break;
		}
	}
	for (uint64_t x = 0; x < nb; x++)
		pop += bm_test(bits, x);
	free(bits);
	return pop;
}

/* steps: the spec's number of requested-size changes (sbm's default is 24). */
static void test_sbm(const char *spec, size_t steps)
{
	struct replay_trace t;
	size_t whole = 0, sub = 0, plugs = 0, descents = 0, ascents = 0;

	gen(spec, &t);
	CHECK(t.block_size == 2 * MiB);
	CHECK(t.n > 100);
	oracle(&t);
	for (size_t i = 0; i < t.n; i++) {
		const struct replay_req *r = &t.reqs[i];

		if (r->op == REPLAY_DISCARD_ALL)
			continue;
		/* No request crosses a 128 MiB memory block. */
		CHECK(r->offset / (128 * MiB) == (r->offset + r->length - 1) / (128 * MiB));
		if (r->op == REPLAY_DISCARD) {
			CHECK(r->length == 2 * MiB || (r->length == 128 * MiB && r->offset % (128 * MiB) == 0));
			if (r->length == 2 * MiB)
				sub++;
			else
				whole++;
		} else {
			plugs++;
		}
		/* Unplug walks each memory block's subblocks from the top: two
		 * consecutive unplugs in one memory block descend, unless a new
		 * unplug step (the trace does not mark steps) restarts at the top,
		 * which happens at most once per step. */
		if (i && t.reqs[i - 1].op == r->op && r->op == REPLAY_DISCARD &&
		    t.reqs[i - 1].offset / (128 * MiB) == r->offset / (128 * MiB)) {
			if (r->offset < t.reqs[i - 1].offset)
				descents++;
			else
				ascents++;
		}
	}
	CHECK(ascents < steps);
	CHECK(descents > 10 * ascents);
	CHECK(whole > 0 && sub > 0 && plugs > 0);
	printf("%s: %zu requests, %zu plugs, %zu whole-block unplugs, %zu subblock unplugs\n", t.name, t.n, plugs,
	       whole, sub);
	replay_trace_free(&t);
}

static void test_bbm(void)
{
	struct replay_trace t;

	gen("bbm:region=16G,bigblock=128M", &t);
	CHECK(t.block_size == 128 * MiB && t.n > 10);
	oracle(&t);
	for (size_t i = 0; i < t.n; i++)
		CHECK(t.reqs[i].length == 128 * MiB && t.reqs[i].offset % (128 * MiB) == 0 &&
		      t.reqs[i].op != REPLAY_DISCARD_ALL);
	replay_trace_free(&t);
}

static void test_reset(void)
{
	struct replay_trace t;
	size_t alls = 0;

	gen("reset:region=4G,steps=6", &t);
	oracle(&t);
	for (size_t i = 0; i < t.n; i++) {
		if (t.reqs[i].op == REPLAY_DISCARD_ALL) {
			alls++;
			CHECK(t.reqs[i].offset == 0 && t.reqs[i].length == t.region_size);
			CHECK(i > 0);
		}
	}
	CHECK(alls == 1);
	replay_trace_free(&t);
}

static void test_register(void)
{
	struct replay_trace t;
	uint64_t pop = 0;

	gen("register:region=64G", &t);
	REQUIRE(t.n >= 2);
	CHECK(t.reqs[t.n - 1].op == REPLAY_DISCARD_ALL);
	for (size_t i = 0; i + 1 < t.n; i++) {
		CHECK(t.reqs[i].op == REPLAY_POPULATE);
		pop += t.reqs[i].length;
		/* Maximal runs, ascending: never adjacent to the previous one. */
		if (i)
			CHECK(t.reqs[i].offset > t.reqs[i - 1].offset + t.reqs[i - 1].length);
	}
	/* Mostly plugged: 90% whole + 5% half. */
	CHECK(pop * 100 > t.region_size * 85 && pop * 100 < t.region_size * 99);
	CHECK(oracle(&t) == 0);
	replay_trace_free(&t);
}

static void test_storm(void)
{
	struct replay_trace t;
	uint64_t nb, *bits, populates = 0, subs = 0, discards = 0;
	uint32_t *conv_at; /* blocks of the live (wholly shared, not converted back) populate starting here */

	gen("storm:region=1G,conversions=20000", &t);
	CHECK(t.block_size == 4096 && t.n == 20000);
	nb = t.region_size / t.block_size;
	bits = bm_alloc(nb);
	conv_at = calloc((size_t)nb, sizeof(*conv_at));
	REQUIRE(bits && conv_at);
	oracle(&t);
	for (size_t i = 0; i < t.n; i++) {
		const struct replay_req *r = &t.reqs[i];
		uint64_t f = r->offset / 4096, n = r->length / 4096;

		/* Sizes: powers of two 4 KiB .. 2 MiB, aligned to themselves. */
		CHECK(n && !(n & (n - 1)) && r->length <= 2 * MiB && r->offset % r->length == 0);
		CHECK(r->op != REPLAY_DISCARD_ALL);
		if (r->op == REPLAY_POPULATE) {
			populates++;
			CHECK(bm_all(bits, f, n, false));
			for (uint64_t x = f; x < f + n; x++)
				bm_set(bits, x, true);
			conv_at[f] = (uint32_t)n;
			continue;
		}
		discards++;
		/* An earlier conversion, still wholly shared, covers it. */
		bool found = false;
		for (uint64_t s = n; s <= 512 && !found; s *= 2) {
			uint64_t start = f & ~(s - 1);
			if (conv_at[start] == s && bm_all(bits, start, s, true)) {
				found = true;
				conv_at[start] = 0;
				subs += s != n;
			}
		}
		CHECK(found);
		for (uint64_t x = f; x < f + n; x++)
			bm_set(bits, x, false);
	}
	/* p = 0.55 to shared and 0.3 sub-ranges (of those with a strict sub-range), loosely. */
	CHECK(populates * 100 > t.n * 50 && populates * 100 < t.n * 60);
	CHECK(subs * 100 > discards * 20 && subs * 100 < discards * 35);
	printf("storm: %" PRIu64 " to shared, %" PRIu64 " back (%" PRIu64 " sub-ranges)\n", populates, discards, subs);
	free(bits);
	free(conv_at);
	replay_trace_free(&t);
}

static void test_frag(void)
{
	static const unsigned densities[] = { 10, 50, 90 };

	for (size_t k = 0; k < 3; k++) {
		struct replay_trace t;
		char spec[64];

		snprintf(spec, sizeof(spec), "frag:region=4G,density=%u,steps=5000", densities[k]);
		gen(spec, &t);
		uint64_t nb = t.region_size / t.block_size, pop = oracle(&t);
		/* Ends near its density: within one run's worth of 8 blocks plus 2%. */
		CHECK(pop * 100 + 8 * 100 + 2 * nb >= densities[k] * nb && pop * 100 <= densities[k] * nb + 8 * 100 + 2 * nb);
		CHECK(strncmp(t.name, "frag-d", 6) == 0);
		replay_trace_free(&t);
	}
}

static bool same(const struct replay_trace *a, const struct replay_trace *b)
{
	if (a->n != b->n)
		return false;
	for (size_t i = 0; i < a->n; i++)
		if (a->reqs[i].op != b->reqs[i].op || a->reqs[i].offset != b->reqs[i].offset ||
		    a->reqs[i].length != b->reqs[i].length)
			return false;
	return true;
}

/* ---- kzone: the generator's own marks through its test hook ---- */

struct kz_event {
	size_t at;      /* the request index the event precedes */
	uint64_t block; /* mark: the device block */
	uint64_t want;  /* step: blocks to plug or unplug */
	int kind;       /* 0 unmovable, 1 movable again, 2 plug step, 3 unplug step */
};

struct kz_log {
	struct kz_event *ev;
	size_t n, cap;
};

static void kz_push(struct kz_log *l, struct kz_event e)
{
	if (l->n == l->cap) {
		l->cap = l->cap ? 2 * l->cap : 1024;
		l->ev = realloc(l->ev, l->cap * sizeof(*l->ev));
		REQUIRE(l->ev);
	}
	l->ev[l->n++] = e;
}

static void kz_on_mark(void *opaque, uint64_t block, bool unmovable, size_t next_req)
{
	kz_push(opaque, (struct kz_event){ .at = next_req, .block = block, .kind = unmovable ? 0 : 1 });
}

static void kz_on_step(void *opaque, size_t next_req, bool plug, uint64_t blocks)
{
	kz_push(opaque, (struct kz_event){ .at = next_req, .want = blocks, .kind = plug ? 2 : 3 });
}

/* What a kzone trace did, replayed with the generator's marks. */
struct kz_stats {
	size_t whole, partial_of_full, discards, populates, unplug_steps;
	size_t max_island_mbs; /* most memory blocks with >= 2 plugged runs after an unplug step */
	uint64_t pinned_discards, pins, releases, pin_unplugged;
	bool crossed;
};

static size_t kz_islands(const uint64_t *plugged, uint64_t nmb, uint64_t per_mb)
{
	size_t n = 0;

	for (uint64_t m = 0; m < nmb; m++) {
		unsigned runs = 0;
		for (uint64_t i = m * per_mb; i < (m + 1) * per_mb; i++)
			runs += bm_test(plugged, i) && (i == m * per_mb || !bm_test(plugged, i - 1));
		n += runs >= 2;
	}
	return n;
}

static void kz_run(const char *spec, struct replay_trace *t, struct kz_stats *st)
{
	struct kz_log log = { 0 };
	uint64_t nb, per_mb = 128 * MiB / (2 * MiB), nmb, *plugged, *unmov, *count, want = 0;
	size_t e = 0;
	bool unplugging = false;

	memset(st, 0, sizeof(*st));
	replay_kzone_hook = (struct replay_kzone_hook){ kz_on_mark, kz_on_step, &log };
	gen(spec, t);
	replay_kzone_hook = (struct replay_kzone_hook){ 0 };
	oracle(t);
	nb = t->region_size / t->block_size;
	nmb = nb / per_mb;
	plugged = bm_alloc(nb);
	unmov = bm_alloc(nb);
	count = calloc((size_t)nmb, sizeof(*count));
	REQUIRE(plugged && unmov && count && t->block_size == 2 * MiB);
	for (size_t i = 0; i <= t->n; i++) {
		for (; e < log.n && log.ev[e].at == i; e++) {
			const struct kz_event *ev = &log.ev[e];

			if (ev->kind >= 2) {
				if (unplugging) {
					size_t isl = kz_islands(plugged, nmb, per_mb);
					st->max_island_mbs = isl > st->max_island_mbs ? isl : st->max_island_mbs;
				}
				unplugging = ev->kind == 3;
				st->unplug_steps += unplugging;
				want = ev->want;
				continue;
			}
			/* Only plugged blocks get pinned; only pinned ones released. */
			if (ev->kind == 0) {
				st->pins++;
				st->pin_unplugged += !bm_test(plugged, ev->block) || bm_test(unmov, ev->block);
			} else {
				st->releases++;
			}
			bm_set(unmov, ev->block, ev->kind == 0);
		}
		if (i == t->n)
			break;
		const struct replay_req *r = &t->reqs[i];
		uint64_t f = r->offset / t->block_size, n = r->length / t->block_size, m = f / per_mb;

		REQUIRE(r->op != REPLAY_DISCARD_ALL);
		if ((f + n - 1) / per_mb != m)
			st->crossed = true;
		if (r->op == REPLAY_DISCARD) {
			st->discards++;
			for (uint64_t x = f; x < f + n; x++)
				st->pinned_discards += bm_test(unmov, x);
			if (count[m] == per_mb) {
				if (n == per_mb)
					st->whole++;
				else
					st->partial_of_full++;
				/* A fully plugged block without pins goes whole when the step's amount allows. */
				bool pins = !bm_all(unmov, m * per_mb, per_mb, false);
				if (!pins && want >= per_mb && n != per_mb) {
					fprintf(stderr, "%s: request %zu takes %" PRIu64 " blocks of fully plugged memory block %"
						PRIu64 " without pins, %" PRIu64 " wanted\n", t->name, i, n, m, want);
					check_failures++;
				}
			}
			want -= n < want ? n : want;
		} else {
			st->populates++;
		}
		for (uint64_t x = f; x < f + n; x++) {
			if (bm_test(plugged, x) != (r->op == REPLAY_DISCARD))
				continue; /* the oracle reports it */
			bm_set(plugged, x, r->op == REPLAY_POPULATE);
			if (r->op == REPLAY_POPULATE)
				count[x / per_mb]++;
			else
				count[x / per_mb]--;
		}
	}
	if (unplugging) {
		size_t isl = kz_islands(plugged, nmb, per_mb);
		st->max_island_mbs = isl > st->max_island_mbs ? isl : st->max_island_mbs;
	}
	free(plugged);
	free(unmov);
	free(count);
	free(log.ev);
}

static void test_kzone(void)
{
	static const char *const specs[] = {
		"kzone:unmovable=0", "kzone:unmovable=0,merge=0", "kzone:unmovable=2", "kzone:unmovable=10",
		"kzone:unmovable=30", "kzone:unmovable=10,cluster=1", "kzone:unmovable=10,recover=0",
		"kzone:unmovable=30,recover=0,merge=0,region=4G,steps=60", "kzone:unmovable=30,cluster=64,region=2G",
	};

	for (size_t k = 0; k < sizeof(specs) / sizeof(specs[0]); k++) {
		struct replay_trace t;
		struct kz_stats st;
		bool u0 = strstr(specs[k], "unmovable=0") != NULL, r0 = strstr(specs[k], "recover=0") != NULL;

		kz_run(specs[k], &t, &st);
		CHECK(!st.crossed);
		/* The generator never discards a block it marked unmovable, pins only plugged movable blocks. */
		CHECK(st.pinned_discards == 0);
		CHECK(st.pin_unplugged == 0);
		CHECK(st.unplug_steps >= 5 && st.populates > 0 && st.discards > 0);
		if (u0) {
			CHECK(st.pins == 0 && st.max_island_mbs == 0);
			CHECK(st.whole > 0);
		} else {
			/* Unplugs leave islands: memory blocks with two or more separate plugged runs. */
			CHECK(st.pins > 0 && st.max_island_mbs > 0);
			CHECK(r0 ? st.releases == 0 : st.releases > 0);
		}
		/* Moderate: a few thousand requests at most with the default size, steps and merge. */
		if (!strstr(specs[k], "merge=0"))
			CHECK(t.n < 8000);
		printf("%s: %zu requests, %zu populates, %zu discards (%zu whole, %zu partial of full blocks), %" PRIu64
		       " pins, %" PRIu64 " releases, up to %zu memory blocks with islands\n", t.name, t.n, st.populates,
		       st.discards, st.whole, st.partial_of_full, st.pins, st.releases, st.max_island_mbs);
		replay_trace_free(&t);
	}
}

static void test_kzone_names_and_errors(void)
{
	struct replay_trace a, b;
	char err[REPLAY_ERR_LEN];

	gen("kzone:unmovable=10,region=2G", &a);
	gen("kzone:unmovable=10,region=2G", &b);
	CHECK(same(&a, &b));
	CHECK(strcmp(a.name, "kzone-u10:unmovable=10,region=2G") == 0);
	replay_trace_free(&b);
	seed++;
	gen("kzone:unmovable=10,region=2G", &b);
	CHECK(!same(&a, &b));
	seed--;
	replay_trace_free(&a);
	replay_trace_free(&b);
	gen("kzone:unmovable=2", &a);
	CHECK(strcmp(a.name, "kzone-u2") == 0);
	replay_trace_free(&a);

	static const char *const bad[] = { "kzone:unmovable=101", "kzone:recover=101", "kzone:cluster=0", "kzone:merge=2" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		CHECK(replay_generate(bad[i], 1, &a, err, sizeof(err)) == -1 && strstr(err, "kzone: need unmovable"));
	CHECK(replay_generate("kzone:block=3M", 1, &a, err, sizeof(err)) == -1 && strstr(err, "kzone: need power-of-two"));
	CHECK(replay_generate("kzone:region=100M", 1, &a, err, sizeof(err)) == -1 && strstr(err, "kzone:"));
}

static void test_determinism_and_errors(void)
{
	struct replay_trace a, b;
	char err[REPLAY_ERR_LEN];

	gen("sbm:region=2G", &a);
	gen("sbm:region=2G", &b);
	CHECK(same(&a, &b));
	CHECK(strcmp(a.name, "sbm:region=2G") == 0);
	replay_trace_free(&b);
	seed++;
	gen("sbm:region=2G", &b);
	CHECK(!same(&a, &b));
	seed--;
	replay_trace_free(&a);
	replay_trace_free(&b);

	CHECK(replay_generate("nope", 1, &a, err, sizeof(err)) == -1 && strstr(err, "unknown workload"));
	CHECK(replay_generate("sbm:colour=3", 1, &a, err, sizeof(err)) == -1 && strstr(err, "unknown parameter \"colour\""));
	CHECK(replay_generate("sbm:region=1Q", 1, &a, err, sizeof(err)) == -1 && strstr(err, "bad value"));
	CHECK(replay_generate("sbm:region", 1, &a, err, sizeof(err)) == -1 && strstr(err, "KEY=VALUE"));
	CHECK(replay_generate("storm:max=3M", 1, &a, err, sizeof(err)) == -1);
}

int main(int argc, char **argv)
{
	const char *env = getenv("RDM_TEST_SEED");

	if (argc > 1)
		seed = strtoull(argv[1], NULL, 0);
	else if (env)
		seed = strtoull(env, NULL, 0);
	printf("seed %" PRIu64 " (override: argv[1] or RDM_TEST_SEED)\n", seed);
	test_sbm("sbm", 24);
	test_sbm("sbm:region=8G,movable=50,busy=30,steps=40", 40);
	test_bbm();
	test_reset();
	test_register();
	test_storm();
	test_frag();
	test_determinism_and_errors();
	test_kzone();
	test_kzone_names_and_errors();
	return check_exit();
}
