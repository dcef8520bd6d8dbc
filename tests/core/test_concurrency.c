/* test_concurrency.c - one writer, several lock-free readers: atomicity, reclamation (poison) and replay snapshots. */
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <rdm/region.h>

#include "core/alloc.h"
#include "core/region_internal.h"
#include "tests/check.h"
#include "tests/core/oracle.h"

#define BS 4096u
#define NBLOCKS (UINT64_C(1) << 20)
#define L1 (UINT64_C(1) << 18) /* span of a level-1 node (4096-block leaves) */
#define NREADERS 3
#define HIST (1u << 20)

/*
 * Probes: block ranges the writer only ever populates or discards whole.
 * They straddle the structure's internal boundaries: bitmap words, leaves,
 * level-1 nodes, the region's end. Around them the writer churns background
 * blocks so leaves keep changing shape (bitmap <-> extents <-> full).
 */
static const uint64_t probes[][2] = {
	{ 4096 - 37, 4096 + 50 },
	{ 2 * 4096 - 1, 2 * 4096 + 1 },
	{ L1 - 100, L1 + 5000 },
	{ 3 * 4096, 4 * 4096 },
	{ 5 * 4096 + 63, 5 * 4096 + 65 },
	{ 10 * 4096 + 10, 10 * 4096 + 20 },
	{ 2 * L1 - 3 * 4096 - 7, 2 * L1 + 2 * 4096 + 9 },
	{ 3 * L1 + 1, 3 * L1 + 2 },
	{ NBLOCKS - 4096 - 5, NBLOCKS },
	{ 6 * 4096 + 1000, 8 * 4096 + 3000 },
	{ L1 + 6000, L1 + 6000 + 64 },
	{ 0, 3 },
};
#define NPROBES (sizeof(probes) / sizeof(probes[0]))

/* Background zones the writer churns (probe blocks excluded). */
static const uint64_t zones[][2] = {
	{ 0, 12 * 4096 },
	{ L1 - 16384, L1 + 16384 },
	{ 2 * L1 - 16384, 2 * L1 + 16384 },
	{ NBLOCKS - 8192, NBLOCKS },
};

static struct rdm_region *region;
static atomic_bool done;
/* Probe masks by version: hist[v % HIST] is the mask of version v. The writer
 * stores hist[v] before publishing version v, and `version` after. */
static _Atomic uint32_t hist[HIST];
static _Atomic uint64_t version;
static atomic_uint_fast64_t reads, replays_checked;

static bool overlaps_probe(uint64_t s, uint64_t e)
{
	for (unsigned i = 0; i < NPROBES; i++) {
		if (s < probes[i][1] && probes[i][0] < e)
			return true;
	}
	return false;
}

static void *reader(void *arg)
{
	struct rng rng = { .s = (uint64_t)(uintptr_t)arg };
	uint64_t n = 0;

	while (!atomic_load_explicit(&done, memory_order_relaxed)) {
		unsigned i = (unsigned)rng_below(&rng, NPROBES);
		uint64_t s = probes[i][0], e = probes[i][1];
		uint64_t pb = rdm_populated_bytes(region, s * BS, (e - s) * BS);

		if (pb != 0 && pb != (e - s) * BS) {
			fprintf(stderr, "probe %u: populated_bytes %" PRIu64 " of %" PRIu64 "\n", i,
				pb / BS, e - s);
			check_failures++;
			break;
		}
		/* A sub-range of a probe is in the probe's state too, but only per
		 * query; check it is all or nothing as well. */
		if (e - s > 2) {
			uint64_t a = s + rng_below(&rng, e - s - 1), b = a + 2;

			pb = rdm_populated_bytes(region, a * BS, (b - a) * BS);
			if (pb != 0 && pb != 2 * BS) {
				fprintf(stderr, "probe %u: torn pair\n", i);
				check_failures++;
				break;
			}
		}
		n++;
	}
	atomic_fetch_add_explicit(&reads, n, memory_order_relaxed);
	return NULL;
}

struct replay_state {
	uint64_t covered[NPROBES];
	unsigned calls;
};

static int replay_cb(void *opaque, uint64_t off, uint64_t len)
{
	struct replay_state *st = opaque;
	uint64_t s = off / BS, e = (off + len) / BS;

	/* Block inside the replay: the writer goes on meanwhile. */
	if (st->calls++ % 16 == 0) {
		struct timespec ts = { 0, 200000 };

		nanosleep(&ts, NULL);
	}
	for (unsigned i = 0; i < NPROBES; i++) {
		uint64_t a = s > probes[i][0] ? s : probes[i][0];
		uint64_t b = e < probes[i][1] ? e : probes[i][1];

		if (a < b)
			st->covered[i] += b - a;
	}
	return 0;
}

static void *replayer(void *arg)
{
	(void)arg;
	while (!atomic_load_explicit(&done, memory_order_relaxed)) {
		struct replay_state st;
		uint64_t vb, va;
		uint32_t mask = 0;
		bool found = false;

		memset(&st, 0, sizeof(st));
		/* Acquire: pairs with the writer's release store of version. */
		vb = atomic_load_explicit(&version, memory_order_acquire);
		CHECK(rdm_replay_populated(region, 0, UINT64_MAX, replay_cb, &st) == 0);
		va = atomic_load_explicit(&version, memory_order_acquire);
		for (unsigned i = 0; i < NPROBES; i++) {
			uint64_t len = probes[i][1] - probes[i][0];

			if (st.covered[i] == len)
				mask |= 1u << i;
			else if (st.covered[i] != 0) {
				fprintf(stderr, "replay: probe %u torn (%" PRIu64 " of %" PRIu64 ")\n", i,
					st.covered[i], len);
				check_failures++;
			}
		}
		if (va + 1 - vb >= HIST)
			continue;
		/* The snapshot is some version in [vb, va + 1]. */
		for (uint64_t v = vb; v <= va + 1 && !found; v++)
			found = atomic_load_explicit(&hist[v % HIST], memory_order_relaxed) == mask;
		if (!found) {
			fprintf(stderr, "replay: mask %#x matches no version in [%" PRIu64 ", %" PRIu64
				"]\n", mask, vb, va + 1);
			check_failures++;
		}
		atomic_fetch_add_explicit(&replays_checked, 1, memory_order_relaxed);
	}
	return NULL;
}

int main(int argc, char **argv)
{
	struct rdm_region_config cfg = { .struct_size = sizeof(cfg), .size = NBLOCKS * BS,
					 .block_size = BS };
	uint64_t seed = env_u64("RDM_SEED", 0), iters = env_u64("RDM_ITERS", 0);
	pthread_t th[NREADERS + 1];
	struct rng rng;
	uint32_t mask = 0;
	unsigned next = 0;
	bool filling = true;

	if (argc > 1)
		seed = strtoull(argv[1], NULL, 0);
	if (argc > 2)
		iters = strtoull(argv[2], NULL, 0);
	if (seed == 0) {
		struct timespec ts;

		clock_gettime(CLOCK_REALTIME, &ts);
		seed = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20);
	}
	if (iters == 0)
		iters = TEST_SANITIZED ? 20000 : 600000;
	printf("test_concurrency: seed %#" PRIx64 " writer changes %" PRIu64
	       " (rerun: RDM_SEED=%#" PRIx64 " RDM_ITERS=%" PRIu64 ")\n",
	       seed, iters, seed, iters);
	fflush(stdout);
	rng.s = seed;

	rdm_mem_set_quarantine(true);
	REQUIRE(rdm_region_create(&cfg, &region) == 0);
	/* Fragment the zones: alternating blocks make bitmap leaves. */
	for (unsigned z = 0; z < sizeof(zones) / sizeof(zones[0]); z++) {
		for (uint64_t b = zones[z][0]; b < zones[z][1]; b += 2) {
			if (!overlaps_probe(b, b + 1))
				CHECK(rdm_populate(region, b * BS, BS) == 0);
		}
	}
	atomic_store_explicit(&hist[0], 0, memory_order_relaxed);

	for (uintptr_t i = 0; i < NREADERS; i++)
		REQUIRE(pthread_create(&th[i], NULL, reader, (void *)(seed + i + 1)) == 0);
	REQUIRE(pthread_create(&th[NREADERS], NULL, replayer, NULL) == 0);

	for (uint64_t it = 0; it < iters && check_failures == 0; it++) {
		if (rng_below(&rng, 3) == 0) {
			/* A probe change: fill in order, then empty in order. */
			uint64_t s = probes[next][0], e = probes[next][1], v;

			mask = filling ? mask | (1u << next) : mask & ~(1u << next);
			/* Relaxed: version (release) below publishes it. */
			v = atomic_load_explicit(&version, memory_order_relaxed) + 1;
			atomic_store_explicit(&hist[v % HIST], mask, memory_order_relaxed);
			/* The entry must be visible to a reader that sees the new
			 * root: the root's release store in publish orders it. */
			CHECK((filling ? rdm_populate(region, s * BS, (e - s) * BS)
				       : rdm_discard(region, s * BS, (e - s) * BS)) == 0);
			/* Release: pairs with the replayer's acquire loads. */
			atomic_store_explicit(&version, v, memory_order_release);
			if (++next == NPROBES) {
				next = 0;
				filling = !filling;
			}
		} else {
			/* Background churn inside a zone, never touching a probe. */
			unsigned z = (unsigned)rng_below(&rng, sizeof(zones) / sizeof(zones[0]));
			uint64_t s = zones[z][0] + rng_below(&rng, zones[z][1] - zones[z][0]);
			uint64_t e = s + 1 + rng_below(&rng, rng_below(&rng, 8) == 0 ? 5000 : 64);

			if (e > zones[z][1])
				e = zones[z][1];
			if (overlaps_probe(s, e))
				continue;
			CHECK((rng_below(&rng, 2) ? rdm_populate(region, s * BS, (e - s) * BS)
						  : rdm_discard(region, s * BS, (e - s) * BS)) == 0);
		}
	}
	atomic_store_explicit(&done, true, memory_order_relaxed);
	for (unsigned i = 0; i <= NREADERS; i++)
		pthread_join(th[i], NULL);
	printf("test_concurrency: %" PRIu64 " reads, %" PRIu64 " replays checked\n",
	       atomic_load(&reads), atomic_load(&replays_checked));
	CHECK(atomic_load(&replays_checked) > 0);
	CHECK(rdm_region_destroy(region) == 0);
	rdm_mem_set_quarantine(false);
	rdm_mem_quarantine_drain();
	return check_exit();
}
