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

static void test_sbm(const char *spec)
{
	struct replay_trace t;
	size_t whole = 0, sub = 0, plugs = 0;

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
		/* Consecutive unplugs descend within one unplug step, plugs ascend within one plug step. */
		if (i && t.reqs[i - 1].op == r->op && r->op == REPLAY_DISCARD &&
		    t.reqs[i - 1].offset / (128 * MiB) == r->offset / (128 * MiB))
			CHECK(r->offset < t.reqs[i - 1].offset);
	}
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
	test_sbm("sbm");
	test_sbm("sbm:region=8G,movable=50,busy=30,steps=40");
	test_bbm();
	test_reset();
	test_register();
	test_storm();
	test_frag();
	test_determinism_and_errors();
	return check_exit();
}
