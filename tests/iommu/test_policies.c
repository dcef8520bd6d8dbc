/* test_policies.c - each map policy on generated virtio-mem-like sequences: call counts as promised, invariants after every change. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <rdm/rdm.h>

#include "tests/check.h"

#define MiB ((uint64_t)1 << 20)
#define BS (2 * MiB)
#define MB (128 * MiB) /* a guest memory block */
#define REGION (8192 * MiB)
#define NB (REGION / BS)
#define PER_MB (MB / BS)
#define IOVA0 (1ull << 32)

struct req {
	bool plug;
	uint64_t off, len;
};

static struct req *reqs;
static unsigned nreq, plugs, unplugs;
static unsigned char state[NB];

static void add(bool plug, uint64_t off, uint64_t len)
{
	reqs = realloc(reqs, (nreq + 1) * sizeof(*reqs));
	reqs[nreq++] = (struct req){plug, off, len};
	for (uint64_t b = off / BS; b < (off + len) / BS; b++)
		state[b] = plug;
	plug ? plugs++ : unplugs++;
}

static uint64_t rnd(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

/*
 * As the Linux virtio-mem driver in Sub Block Mode does (see
 * data/traces/README.md): requests never cross a memory block; plugs fill
 * holes of partly plugged blocks first, then whole blocks ascending; unplugs
 * take whole blocks from the top, falling back to single 2 MiB subblocks
 * top-down in a block that cannot go whole.
 */
static void plug_to(uint64_t target)
{
	uint64_t have = 0;

	for (uint64_t b = 0; b < NB; b++)
		have += state[b] * BS;
	for (uint64_t mb = 0; mb < REGION / MB && have < target; mb++) {
		uint64_t b0 = mb * PER_MB;
		unsigned n = 0;

		for (unsigned i = 0; i < PER_MB; i++)
			n += state[b0 + i];
		if (n == 0 || n == PER_MB)
			continue;
		for (unsigned i = 0; i < PER_MB && have < target;) {
			unsigned j = i;

			while (j < PER_MB && !state[b0 + j] && have + (j - i) * BS < target)
				j++;
			if (j > i) {
				add(true, (b0 + i) * BS, (j - i) * BS);
				have += (j - i) * BS;
			}
			i = j + 1;
		}
	}
	for (uint64_t mb = 0; mb < REGION / MB && have < target; mb++) {
		uint64_t b0 = mb * PER_MB;
		unsigned n = 0;

		for (unsigned i = 0; i < PER_MB; i++)
			n += state[b0 + i];
		if (n)
			continue;
		uint64_t len = target - have < MB ? target - have : MB;

		add(true, b0 * BS, len);
		have += len;
	}
}

static void unplug_to(uint64_t target, uint64_t *seed)
{
	uint64_t have = 0;

	for (uint64_t b = 0; b < NB; b++)
		have += state[b] * BS;
	for (uint64_t mb = REGION / MB; mb-- > 0 && have > target;) {
		uint64_t b0 = mb * PER_MB;
		unsigned n = 0;

		for (unsigned i = 0; i < PER_MB; i++)
			n += state[b0 + i];
		if (n == 0)
			continue;
		/* Whole blocks while the request allows; the remainder, or a
		 * block holding unmovable pages (one in eight), goes in
		 * subblocks from the top, for as long as the request asks. */
		if (n == PER_MB && have - MB >= target && rnd(seed) % 8) {
			add(false, b0 * BS, MB);
			have -= MB;
			continue;
		}
		for (unsigned i = PER_MB; i-- > 0 && have > target;)
			if (state[b0 + i]) {
				add(false, (b0 + i) * BS, BS);
				have -= BS;
			}
	}
}

/* ------------------------------------------------------------ the checks */

static struct rdm_backend *sim;
static struct rdm_region *region;
static struct rdm_worker *worker;
static char *host;
static unsigned released_blocks, violations;
static unsigned char rel_pending[NB]; /* populated and not released since */

static void on_release(void *opaque, uint64_t off, uint64_t len)
{
	(void)opaque;
	if (!rdm_sim_is_unmapped(sim, IOVA0 + off, len) || !rdm_is_discarded(region, off, len))
		violations++;
	for (uint64_t b = off / BS; b < (off + len) / BS; b++)
		rel_pending[b] = 0;
	released_blocks += (unsigned)(len / BS);
}

static int check_run(void *opaque, uint64_t off, uint64_t len)
{
	(void)opaque;
	for (uint64_t b = off / BS; b < (off + len) / BS; b++)
		rel_pending[b] = 1;
	if (!rdm_sim_is_mapped(sim, IOVA0 + off, len, true, (uint64_t)(uintptr_t)host + off))
		violations++; /* I1 */
	return 0;
}

static void check_invariants(uint32_t policy)
{
	struct rdm_backend_stats st;

	rdm_backend_get_stats(sim, &st);
	if (st.failed_calls)
		violations++; /* I4 */
	rdm_replay_populated(region, 0, REGION, check_run, NULL);
	for (uint64_t b = 0; b < NB; b++)
		if (rel_pending[b] && rdm_is_discarded(region, b * BS, BS) &&
		    (policy != RDM_POLICY_DEFER || !rdm_sim_is_mapped(sim, IOVA0 + b * BS, BS, false, 0)))
			violations++; /* I2 */
}

struct result {
	uint64_t maps, unmaps, remapped, deferred_peak, peak_mappings;
};

/* rdm_region_config.defer_budget of the next replay (0: the default). */
static uint64_t budget;

static struct result replay(uint32_t policy, uint32_t flags, bool split)
{
	struct rdm_sim_config sc = {.struct_size = sizeof(sc), .semantics = RDM_SEM_TYPE1V2,
				    .can_split = split, .limit = RDM_SIM_UNLIMITED};
	struct rdm_region_config rc = {.struct_size = sizeof(rc), .flags = flags, .iova = IOVA0, .size = REGION,
				       .block_size = BS, .release = on_release, .policy = policy};
	struct rdm_backend_stats st;
	struct rdm_worker_stats ws;
	struct result res;

	rc.host_addr = host;
	rc.defer_budget = budget;
	memset(rel_pending, 0, sizeof(rel_pending));
	released_blocks = violations = 0;
	REQUIRE(rdm_backend_sim_create(&sc, &sim) == 0);
	REQUIRE(rdm_worker_create(NULL, &worker) == 0);
	REQUIRE(rdm_worker_add_backend(worker, sim, 0) == 0);
	REQUIRE(rdm_region_create(&rc, &region) == 0);
	REQUIRE(rdm_worker_attach(worker, region, sim) == 0);
	for (unsigned i = 0; i < nreq; i++) {
		int err = reqs[i].plug ? rdm_populate(region, reqs[i].off, reqs[i].len)
				       : rdm_discard(region, reqs[i].off, reqs[i].len);
		CHECK(err == 0);
		check_invariants(policy);
	}
	rdm_backend_get_stats(sim, &st);
	rdm_worker_get_stats(worker, &ws);
	res.maps = st.map_calls;
	res.unmaps = st.unmap_calls;
	res.peak_mappings = st.peak_mappings;
	res.remapped = ws.remapped_bytes;
	res.deferred_peak = ws.deferred_peak_bytes;
	/* Reset: everything goes, everything is released. */
	CHECK(rdm_discard_all(region) == 0);
	check_invariants(policy);
	rdm_backend_get_stats(sim, &st);
	rdm_worker_get_stats(worker, &ws);
	CHECK(st.mappings == 0 && ws.deferred_bytes == 0);
	for (uint64_t b = 0; b < NB; b++)
		CHECK(!rel_pending[b] || !rdm_is_discarded(region, b * BS, BS));
	CHECK(violations == 0);
	CHECK(rdm_region_destroy(region) == 0);
	CHECK(rdm_worker_destroy(worker) == 0);
	rdm_backend_destroy(sim);
	return res;
}

int main(int argc, char **argv)
{
	uint64_t seed = argc > 1 ? strtoull(argv[1], NULL, 0) : 42;
	uint64_t s = seed | 1;
	static const uint64_t sizes[] = {4096, 1024, 6144, 512, 3072, 1236, 2220, 0};

	printf("seed %" PRIu64 "\n", seed);
	host = aligned_alloc(4096, 4096); /* only addresses matter: the sim never touches memory */
	/* Resizes like the real traces' experiment, in MiB. */
	for (unsigned i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		uint64_t have = 0, want = sizes[i] * MiB;

		for (uint64_t b = 0; b < NB; b++)
			have += state[b] * BS;
		if (want > have)
			plug_to(want);
		else
			unplug_to(want, &s);
	}
	printf("%u requests: %u plugs, %u unplugs\n", nreq, plugs, unplugs);
	/* The generator's own promise: no request crosses a memory block. */
	for (unsigned i = 0; i < nreq; i++)
		CHECK(reqs[i].off / MB == (reqs[i].off + reqs[i].len - 1) / MB);

	uint64_t blocks_plugged = 0;

	for (unsigned i = 0; i < nreq; i++)
		if (reqs[i].plug)
			blocks_plugged += reqs[i].len / BS;

	struct result blk = replay(RDM_POLICY_BLOCK, 0, false);
	struct result def = replay(RDM_POLICY_DEFER, 0, false);
	budget = RDM_DEFER_BUDGET_NONE;
	struct result unb = replay(RDM_POLICY_DEFER, 0, false);
	budget = 0;
	struct result coa = replay(RDM_POLICY_COALESCE, RDM_REGION_ALLOW_WINDOWS, false);
	struct result spl = replay(RDM_POLICY_COALESCE, 0, true);

	printf("block:    %" PRIu64 " maps %" PRIu64 " unmaps\n", blk.maps, blk.unmaps);
	printf("defer:    %" PRIu64 " maps %" PRIu64 " unmaps, deferred peak %" PRIu64 " MiB\n", def.maps, def.unmaps,
	       def.deferred_peak / MiB);
	printf("defer, unbounded: %" PRIu64 " maps %" PRIu64 " unmaps, deferred peak %" PRIu64 " MiB\n", unb.maps,
	       unb.unmaps, unb.deferred_peak / MiB);
	printf("coalesce: %" PRIu64 " maps %" PRIu64 " unmaps, remapped %" PRIu64 " MiB\n", coa.maps, coa.unmaps,
	       coa.remapped / MiB);
	printf("split:    %" PRIu64 " maps %" PRIu64 " unmaps\n", spl.maps, spl.unmaps);

	/* block: one map per block, one unmap per request, never a window. */
	CHECK(blk.maps == blocks_plugged);
	CHECK(blk.unmaps == unplugs);
	CHECK(blk.remapped == 0 && blk.deferred_peak == 0);
	/* defer with the default budget (2% of the region): the subblock
	 * unplugs teach it to cut finer; deferred memory stays within the
	 * budget, zero windows, still fewer calls than block. */
	CHECK(def.remapped == 0);
	CHECK(def.deferred_peak <= REGION / 50);
	CHECK(def.maps + def.unmaps < blk.maps + blk.unmaps);
	/* Unbounded: one map per plug (its run, whole) and at most one unmap
	 * per unplug, at least 10x fewer calls than block, and deferred memory
	 * bounded by a memory block: the driver unplugs one block's subblocks
	 * at a time. */
	CHECK(unb.maps <= plugs && unb.unmaps <= unplugs);
	CHECK(unb.remapped == 0);
	CHECK((unb.maps + unb.unmaps) * 10 <= blk.maps + blk.unmaps);
	CHECK(unb.deferred_peak <= MB);
	/* coalesce with windows: fewer calls than block; windows counted. */
	CHECK(coa.maps + coa.unmaps < blk.maps + blk.unmaps);
	CHECK(coa.remapped > 0 && coa.deferred_peak == 0);
	/* coalesce on a split-capable kernel: one map per plug, one unmap per
	 * unplug, no window, nothing deferred. */
	CHECK(spl.maps == plugs && spl.unmaps == unplugs);
	CHECK(spl.remapped == 0 && spl.deferred_peak == 0);
	free(host);
	free(reqs);
	return check_exit();
}
