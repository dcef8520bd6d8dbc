/* SPDX-License-Identifier: MIT */
/*
 * tools/replay/gen.c - the built-in workload generators.
 *
 * sbm       virtio-mem, Linux guest, Sub Block Mode, as the Linux 6.1 driver
 *           behaves in the shipped traces: the guest's target size changes
 *           `steps` times; a plug first fills each hole of a partially
 *           plugged 128 MiB memory block (one request per hole, ascending),
 *           then takes whole memory blocks ascending (one request each, the
 *           last one possibly partial); an unplug goes from the top memory
 *           block down: a fully plugged block whose pages move (probability
 *           `movable`%) goes as one request, otherwise its plugged 2 MiB
 *           subblocks go one request each, top down, skipping busy ones
 *           (probability `busy`%). No request crosses a memory block.
 * bbm       Big Block Mode: every request one big block; plugs ascending,
 *           unplugs descending, skipping busy big blocks.
 * reset     sbm steps, then unplug_all (QEMU discards everything at reset),
 *           then sbm steps again.
 * register  listener registration on a mostly plugged device (1 TiB): one
 *           populate per maximal populated run, ascending (what registering
 *           a listener replays), then the unregistration's discard of all.
 * storm     guest_memfd conversion storm: 4 KiB blocks; each step converts a
 *           private range to shared (populate, probability `share`%) or a
 *           shared one back (discard). A shared conversion's size is
 *           log-uniform over min..max (powers of two) and aligned to its
 *           size; a conversion back picks an earlier conversion that is still
 *           wholly shared and covers, with probability `sub`%, a strict
 *           aligned sub-range of it, else all of it.
 * frag      random fragmentation: the region is populated (128 MiB requests),
 *           then `steps` random runs of 1..`run` blocks are discarded while
 *           the populated share is above `density`% and populated below it
 *           (one request per maximal run that changes).
 * kzone     virtio-mem Sub Block Mode with the hotplugged memory onlined to the
 *           kernel zone (ZONE_NORMAL), where unmovable kernel allocations pin
 *           subblocks. Memory blocks of `memblock`, subblocks of `block`. Each
 *           of `steps` operator steps picks a target size (half of them a
 *           small change of up to two memory blocks either way, the others a
 *           uniform target in 0..region) and, in this order: releases each
 *           unmovable subblock with probability `recover`%; plugs as sbm does
 *           (holes of partially plugged memory blocks first, ascending, one
 *           request per hole; then whole memory blocks upwards) or unplugs;
 *           then pins clusters in plugged movable subblocks until `unmovable`%
 *           of the plugged subblocks are unmovable (a cluster starts at a
 *           random plugged movable subblock and runs upwards inside its memory
 *           block, a geometric length of mean `cluster`; 1 = scattered).
 *           An unplug walks memory blocks from the top: a fully plugged one
 *           with no unmovable subblock goes whole when the remaining amount is
 *           at least a memory block; otherwise its plugged movable subblocks
 *           go from the top, skipping unmovable ones, one request per maximal
 *           run of consecutively unplugged subblocks (`merge`=1; `merge`=0:
 *           one per subblock, as Linux 6.1's virtio_mem_sbm_unplug_any_sb_online
 *           falls back to). An unplug the pins cannot satisfy stops short.
 *           Not modelled: page migration inside the guest (a movable subblock
 *           always unplugs, an unmovable one never), transient busy pages,
 *           offline memory blocks and their removal, onlining delays, the
 *           guest's own memory below the device, times between requests.
 */
#include "tools/replay/gen.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tools/replay/util.h"

#define MiB (UINT64_C(1) << 20)
#define GiB (UINT64_C(1) << 30)

static bool pow2(uint64_t v)
{
	return v && !(v & (v - 1));
}

/* ------------------------------------------------------------ SBM machine */

struct sbm {
	struct replay_trace *t;
	struct replay_rng *rng;
	uint64_t bs, mb, nblocks, per_mb, nmb;
	uint64_t *plugged;  /* per device block */
	uint64_t *count;    /* plugged blocks per memory block */
	uint64_t total;     /* plugged blocks */
	uint64_t movable, busy;
};

static int sbm_init(struct sbm *s, const char *name, struct replay_trace *t, struct replay_rng *rng, uint64_t region,
		    uint64_t bs, uint64_t mb, uint64_t movable, uint64_t busy, char *err, size_t errlen)
{
	if (!pow2(bs) || bs < 4096 || !pow2(mb) || mb < bs || region == 0 || region % mb)
		return replay_errf(err, errlen,
			     "%s: need power-of-two block >= 4K, memory block >= block, region a multiple of the memory block",
			     name);
	memset(s, 0, sizeof(*s));
	s->t = t;
	s->rng = rng;
	s->bs = bs;
	s->mb = mb;
	s->nblocks = region / bs;
	s->per_mb = mb / bs;
	s->nmb = region / mb;
	s->movable = movable;
	s->busy = busy;
	s->plugged = bm_alloc(s->nblocks);
	s->count = calloc((size_t)s->nmb, sizeof(uint64_t));
	if (!s->plugged || !s->count) {
		free(s->plugged);
		free(s->count);
		return replay_errf(err, errlen, "%s: out of memory", name);
	}
	t->block_size = bs;
	t->region_size = region;
	return 0;
}

static void sbm_free(struct sbm *s)
{
	free(s->plugged);
	free(s->count);
}

static void sbm_mark(struct sbm *s, uint64_t first, uint64_t n, bool v)
{
	for (uint64_t i = first; i < first + n; i++) {
		bm_set(s->plugged, i, v);
		if (v)
			s->count[i / s->per_mb]++;
		else
			s->count[i / s->per_mb]--;
	}
	if (v)
		s->total += n;
	else
		s->total -= n;
}

static void sbm_req(struct sbm *s, uint32_t op, uint64_t first, uint64_t n)
{
	replay_trace_push(s->t, op, first * s->bs, n * s->bs);
	sbm_mark(s, first, n, op == REPLAY_POPULATE);
}

/* Plug `want` blocks. */
static void sbm_plug(struct sbm *s, uint64_t want)
{
	/* Holes of partially plugged memory blocks first, ascending. */
	for (uint64_t m = 0; m < s->nmb && want; m++) {
		if (s->count[m] == 0 || s->count[m] == s->per_mb)
			continue;
		uint64_t b = m * s->per_mb, e = b + s->per_mb;
		for (uint64_t i = b; i < e && want;) {
			if (bm_test(s->plugged, i)) {
				i++;
				continue;
			}
			uint64_t j = i;
			while (j < e && !bm_test(s->plugged, j) && j - i < want)
				j++;
			sbm_req(s, REPLAY_POPULATE, i, j - i);
			want -= j - i;
			i = j;
		}
	}
	/* Then whole memory blocks, ascending. */
	for (uint64_t m = 0; m < s->nmb && want; m++) {
		if (s->count[m])
			continue;
		uint64_t n = want < s->per_mb ? want : s->per_mb;
		sbm_req(s, REPLAY_POPULATE, m * s->per_mb, n);
		want -= n;
	}
}

/* Unplug up to `want` blocks. */
static void sbm_unplug(struct sbm *s, uint64_t want)
{
	for (uint64_t m = s->nmb; m-- > 0 && want;) {
		if (s->count[m] == 0)
			continue;
		uint64_t b = m * s->per_mb;
		if (s->count[m] == s->per_mb && want >= s->per_mb && replay_rng_pct(s->rng, s->movable)) {
			sbm_req(s, REPLAY_DISCARD, b, s->per_mb);
			want -= s->per_mb;
			continue;
		}
		for (uint64_t i = b + s->per_mb; i-- > b && want;) {
			if (!bm_test(s->plugged, i) || replay_rng_pct(s->rng, s->busy))
				continue;
			sbm_req(s, REPLAY_DISCARD, i, 1);
			want--;
		}
	}
}

/* Move the plugged size to a random target, `steps` times. */
static void sbm_steps(struct sbm *s, uint64_t steps)
{
	for (uint64_t k = 0; k < steps; k++) {
		uint64_t target = replay_rng_below(s->rng, s->nblocks + 1);

		if (target > s->total)
			sbm_plug(s, target - s->total);
		else
			sbm_unplug(s, s->total - target);
	}
}

/* params: region, block, memblock, steps, movable, busy */
static int gen_sbm(const uint64_t *v, uint64_t seed, struct replay_trace *t, char *err, size_t errlen)
{
	struct replay_rng rng;
	struct sbm s;

	replay_rng_seed(&rng, seed);
	if (sbm_init(&s, "sbm", t, &rng, v[0], v[1], v[2], v[4], v[5], err, errlen) < 0)
		return -1;
	sbm_steps(&s, v[3]);
	sbm_free(&s);
	return 0;
}

/* params: region, block, memblock, steps, movable, busy */
static int gen_reset(const uint64_t *v, uint64_t seed, struct replay_trace *t, char *err, size_t errlen)
{
	struct replay_rng rng;
	struct sbm s;

	replay_rng_seed(&rng, seed);
	if (sbm_init(&s, "reset", t, &rng, v[0], v[1], v[2], v[4], v[5], err, errlen) < 0)
		return -1;
	sbm_steps(&s, v[3]);
	if (s.total == 0)
		sbm_plug(&s, s.nblocks / 2);
	replay_trace_push(t, REPLAY_DISCARD_ALL, 0, v[0]);
	for (uint64_t i = 0; i < s.nblocks; i++)
		if (bm_test(s.plugged, i))
			sbm_mark(&s, i, 1, false);
	sbm_steps(&s, v[3]);
	sbm_free(&s);
	return 0;
}

/* params: region, bigblock, steps, busy */
static int gen_bbm(const uint64_t *v, uint64_t seed, struct replay_trace *t, char *err, size_t errlen)
{
	struct replay_rng rng;
	uint64_t region = v[0], bb = v[1], n;
	uint64_t *plugged, total = 0;

	if (!pow2(bb) || bb < 4096 || region == 0 || region % bb)
		return replay_errf(err, errlen, "bbm: need a power-of-two big block >= 4K dividing the region");
	n = region / bb;
	plugged = bm_alloc(n);
	if (!plugged)
		return replay_errf(err, errlen, "bbm: out of memory");
	t->block_size = bb;
	t->region_size = region;
	replay_rng_seed(&rng, seed);
	for (uint64_t k = 0; k < v[2]; k++) {
		uint64_t target = replay_rng_below(&rng, n + 1);

		for (uint64_t i = 0; i < n && total < target; i++) {
			if (bm_test(plugged, i))
				continue;
			replay_trace_push(t, REPLAY_POPULATE, i * bb, bb);
			bm_set(plugged, i, true);
			total++;
		}
		for (uint64_t i = n; i-- > 0 && total > target;) {
			if (!bm_test(plugged, i) || replay_rng_pct(&rng, v[3]))
				continue;
			replay_trace_push(t, REPLAY_DISCARD, i * bb, bb);
			bm_set(plugged, i, false);
			total--;
		}
	}
	free(plugged);
	return 0;
}

/* params: region, block, memblock, plugged, partial */
static int gen_register(const uint64_t *v, uint64_t seed, struct replay_trace *t, char *err, size_t errlen)
{
	struct replay_rng rng;
	uint64_t region = v[0], bs = v[1], mb = v[2];
	uint64_t *plugged, nblocks, per_mb;

	if (!pow2(bs) || bs < 4096 || !pow2(mb) || mb < bs || region == 0 || region % mb)
		return replay_errf(err, errlen, "register: need power-of-two block >= 4K, memory block >= block dividing the region");
	if (v[3] + v[4] > 100)
		return replay_errf(err, errlen, "register: plugged + partial must be at most 100 (percent)");
	nblocks = region / bs;
	per_mb = mb / bs;
	plugged = bm_alloc(nblocks);
	if (!plugged)
		return replay_errf(err, errlen, "register: out of memory");
	t->block_size = bs;
	t->region_size = region;
	replay_rng_seed(&rng, seed);
	for (uint64_t m = 0; m < region / mb; m++) {
		uint64_t r = replay_rng_below(&rng, 100);
		for (uint64_t i = m * per_mb; i < (m + 1) * per_mb; i++) {
			bool on = r < v[3] || (r < v[3] + v[4] && replay_rng_pct(&rng, 50));
			bm_set(plugged, i, on);
		}
	}
	for (uint64_t i = 0; i < nblocks;) {
		if (!bm_test(plugged, i)) {
			i++;
			continue;
		}
		uint64_t j = i;
		while (j < nblocks && bm_test(plugged, j))
			j++;
		replay_trace_push(t, REPLAY_POPULATE, i * bs, (j - i) * bs);
		i = j;
	}
	replay_trace_push(t, REPLAY_DISCARD_ALL, 0, region);
	free(plugged);
	return 0;
}

/* params: region, block, conversions, share, sub, min, max */
static int gen_storm(const uint64_t *v, uint64_t seed, struct replay_trace *t, char *err, size_t errlen)
{
	struct replay_rng rng;
	uint64_t region = v[0], bs = v[1], steps = v[2], share = v[3], sub = v[4], min = v[5], max = v[6];
	uint64_t nblocks, *shared;
	unsigned lmin = 0, lmax = 0;
	struct conv { uint64_t first, n; } *live;
	size_t nlive = 0;

	if (!pow2(bs) || bs < 4096 || !pow2(min) || !pow2(max) || min < bs || max < min || region % max ||
	    share > 100 || sub > 100)
		return replay_errf(err, errlen,
			     "storm: need power-of-two block <= min <= max, max dividing the region, share and sub in 0..100");
	nblocks = region / bs;
	while ((bs << lmin) < min)
		lmin++;
	while ((bs << lmax) < max)
		lmax++;
	shared = bm_alloc(nblocks);
	live = malloc((size_t)(steps + 1) * sizeof(*live));
	if (!shared || !live) {
		free(shared);
		free(live);
		return replay_errf(err, errlen, "storm: out of memory");
	}
	t->block_size = bs;
	t->region_size = region;
	replay_rng_seed(&rng, seed);
	for (uint64_t k = 0; k < steps; k++) {
		bool to_shared = replay_rng_pct(&rng, share) || nlive == 0;

		if (to_shared) {
			/* Log-uniform size, aligned to itself, wholly private. */
			unsigned l = lmin + (unsigned)replay_rng_below(&rng, lmax - lmin + 1);
			uint64_t n = UINT64_C(1) << l, first = 0;
			bool found = false;

			for (;;) {
				for (int tries = 0; tries < 64 && !found; tries++) {
					first = replay_rng_below(&rng, nblocks / n) * n;
					found = bm_all(shared, first, n, false);
				}
				if (found || l == lmin)
					break;
				l--; /* the guest is nearly all shared: take a smaller range */
				n >>= 1;
			}
			if (!found)
				continue;
			for (uint64_t i = first; i < first + n; i++)
				bm_set(shared, i, true);
			replay_trace_push(t, REPLAY_POPULATE, first * bs, n * bs);
			live[nlive++] = (struct conv){ first, n };
		} else {
			size_t pick = (size_t)replay_rng_below(&rng, nlive);
			struct conv c = live[pick];
			uint64_t first = c.first, n = c.n;

			live[pick] = live[--nlive];
			if (c.n > 1 && replay_rng_pct(&rng, sub)) {
				/* A strict aligned sub-range: 1/2 .. 1/n of it. */
				unsigned lc = 0;
				while ((UINT64_C(1) << lc) < c.n)
					lc++;
				n = UINT64_C(1) << replay_rng_below(&rng, lc);
				first = c.first + replay_rng_below(&rng, c.n / n) * n;
			}
			for (uint64_t i = first; i < first + n; i++)
				bm_set(shared, i, false);
			replay_trace_push(t, REPLAY_DISCARD, first * bs, n * bs);
		}
	}
	free(shared);
	free(live);
	return 0;
}

/* params: region, block, density, steps, run */
static int gen_frag(const uint64_t *v, uint64_t seed, struct replay_trace *t, char *err, size_t errlen)
{
	struct replay_rng rng;
	uint64_t region = v[0], bs = v[1], density = v[2], steps = v[3], run = v[4];
	uint64_t nblocks, *pop, total, chunk;

	if (!pow2(bs) || bs < 4096 || region == 0 || region % bs || density > 100 || run == 0)
		return replay_errf(err, errlen, "frag: need a power-of-two block >= 4K dividing the region, density 0..100, run >= 1");
	nblocks = region / bs;
	pop = bm_alloc(nblocks);
	if (!pop)
		return replay_errf(err, errlen, "frag: out of memory");
	t->block_size = bs;
	t->region_size = region;
	replay_rng_seed(&rng, seed);
	chunk = 128 * MiB > bs ? 128 * MiB / bs : 1;
	for (uint64_t i = 0; i < nblocks; i += chunk) {
		uint64_t n = nblocks - i < chunk ? nblocks - i : chunk;
		replay_trace_push(t, REPLAY_POPULATE, i * bs, n * bs);
		for (uint64_t j = i; j < i + n; j++)
			bm_set(pop, j, true);
	}
	total = nblocks;
	for (uint64_t k = 0; k < steps; k++) {
		uint64_t len = 1 + replay_rng_below(&rng, run);
		if (len > nblocks)
			len = nblocks;
		uint64_t first = replay_rng_below(&rng, nblocks - len + 1);
		bool populate = total * 100 < density * nblocks;

		for (uint64_t i = first; i < first + len;) {
			if (bm_test(pop, i) == populate) {
				i++;
				continue;
			}
			uint64_t j = i;
			while (j < first + len && bm_test(pop, j) != populate)
				j++;
			replay_trace_push(t, populate ? REPLAY_POPULATE : REPLAY_DISCARD, i * bs, (j - i) * bs);
			for (uint64_t x = i; x < j; x++)
				bm_set(pop, x, populate);
			if (populate)
				total += j - i;
			else
				total -= j - i;
			i = j;
		}
	}
	free(pop);
	return 0;
}

/* ------------------------------------------------------------ kernel zone */

struct replay_kzone_hook replay_kzone_hook;

#define KZ_PPM 1000000u /* probabilities in parts per million */

struct kzone {
	struct sbm s;      /* plugged state, the plug and the request helpers */
	uint64_t *unmov;   /* per device block: unmovable (plugged, pinned by the kernel) */
	uint64_t *nunmov;  /* unmovable blocks per memory block */
	uint64_t total_unmov;
	uint64_t unmovable, cluster, recover;
	bool merge;
};

static void kz_pin(struct kzone *k, uint64_t i, bool v)
{
	bm_set(k->unmov, i, v);
	if (v) {
		k->nunmov[i / k->s.per_mb]++;
		k->total_unmov++;
	} else {
		k->nunmov[i / k->s.per_mb]--;
		k->total_unmov--;
	}
	if (replay_kzone_hook.mark)
		replay_kzone_hook.mark(replay_kzone_hook.opaque, i, v, k->s.t->n);
}

/* Each unmovable block becomes movable again with probability `recover`%. */
static void kz_recover(struct kzone *k)
{
	if (!k->recover || !k->total_unmov)
		return;
	for (uint64_t i = 0; i < k->s.nblocks; i++)
		if (bm_test(k->unmov, i) && replay_rng_pct(k->s.rng, k->recover))
			kz_pin(k, i, false);
}

/*
 * Kernel allocations land in plugged movable memory until `unmovable`% of the
 * plugged blocks are unmovable: each cluster starts at a random plugged movable
 * block and runs upwards over plugged movable blocks of its memory block, a
 * geometric length of mean `cluster`.
 */
static void kz_pin_up(struct kzone *k)
{
	struct sbm *s = &k->s;
	uint64_t top = 0, cont = KZ_PPM - KZ_PPM / k->cluster;

	for (uint64_t i = s->nblocks; i-- > 0;)
		if (bm_test(s->plugged, i)) {
			top = i + 1;
			break;
		}
	while (top && k->total_unmov * 100 < k->unmovable * s->total) {
		uint64_t i = 0;
		bool found = false;

		for (int tries = 0; tries < 256 && !found; tries++) {
			i = replay_rng_below(s->rng, top);
			found = bm_test(s->plugged, i) && !bm_test(k->unmov, i);
		}
		for (uint64_t j = 0; j < top && !found; j++) /* nearly all pinned: the first free one */
			if (bm_test(s->plugged, j) && !bm_test(k->unmov, j)) {
				i = j;
				found = true;
			}
		if (!found)
			return;
		uint64_t end = (i / s->per_mb + 1) * s->per_mb;
		do {
			kz_pin(k, i++, true);
		} while (i < end && bm_test(s->plugged, i) && !bm_test(k->unmov, i) &&
			 k->total_unmov * 100 < k->unmovable * s->total && replay_rng_below(s->rng, KZ_PPM) < cont);
	}
}

/*
 * Unplug up to `want` blocks: memory blocks from the top; a fully plugged one
 * without unmovable blocks goes whole if `want` allows, otherwise its movable
 * plugged blocks go from the top, one request per maximal run (or per block
 * without `merge`).
 */
static void kz_unplug(struct kzone *k, uint64_t want)
{
	struct sbm *s = &k->s;

	for (uint64_t m = s->nmb; m-- > 0 && want;) {
		uint64_t b = m * s->per_mb, run = 0;

		if (s->count[m] == k->nunmov[m])
			continue;
		if (s->count[m] == s->per_mb && k->nunmov[m] == 0 && want >= s->per_mb) {
			sbm_req(s, REPLAY_DISCARD, b, s->per_mb);
			want -= s->per_mb;
			continue;
		}
		/* [i, i + run) is the run taken so far, i its lowest block. */
		for (uint64_t i = b + s->per_mb; i-- > b;) {
			bool take = want && bm_test(s->plugged, i) && !bm_test(k->unmov, i);

			if (take && (k->merge || run == 0)) {
				run++;
				want--;
				continue;
			}
			if (run)
				sbm_req(s, REPLAY_DISCARD, i + 1, run);
			run = 0;
			if (take) {
				run = 1;
				want--;
			}
			if (!want && !run)
				break;
		}
		if (run)
			sbm_req(s, REPLAY_DISCARD, b, run);
	}
}

/*
 * The operator's target sizes: half the steps a small change (up to two memory
 * blocks either way), the others a new target anywhere in 0..region.
 */
static uint64_t kz_target(struct kzone *k)
{
	struct sbm *s = &k->s;

	if (replay_rng_pct(s->rng, 50)) {
		uint64_t d = 1 + replay_rng_below(s->rng, 2 * s->per_mb);

		if (replay_rng_pct(s->rng, 50))
			return s->total + d > s->nblocks ? s->nblocks : s->total + d;
		return s->total > d ? s->total - d : 0;
	}
	return replay_rng_below(s->rng, s->nblocks + 1);
}

/* params: region, block, memblock, steps, unmovable, cluster, recover, merge */
static int gen_kzone(const uint64_t *v, uint64_t seed, struct replay_trace *t, char *err, size_t errlen)
{
	struct replay_rng rng;
	struct kzone k;

	if (v[4] > 100 || v[5] == 0 || v[6] > 100 || v[7] > 1)
		return replay_errf(err, errlen, "kzone: need unmovable and recover in 0..100 (percent), cluster >= 1, merge 0 or 1");
	replay_rng_seed(&rng, seed);
	memset(&k, 0, sizeof(k));
	if (sbm_init(&k.s, "kzone", t, &rng, v[0], v[1], v[2], 0, 0, err, errlen) < 0)
		return -1;
	k.unmovable = v[4];
	k.cluster = v[5];
	k.recover = v[6];
	k.merge = v[7];
	k.unmov = bm_alloc(k.s.nblocks);
	k.nunmov = calloc((size_t)k.s.nmb, sizeof(uint64_t));
	if (!k.unmov || !k.nunmov) {
		free(k.unmov);
		free(k.nunmov);
		sbm_free(&k.s);
		return replay_errf(err, errlen, "kzone: out of memory");
	}
	for (uint64_t step = 0; step < v[3]; step++) {
		uint64_t target = kz_target(&k);

		kz_recover(&k);
		if (replay_kzone_hook.step)
			replay_kzone_hook.step(replay_kzone_hook.opaque, t->n, target > k.s.total,
					       target > k.s.total ? target - k.s.total : k.s.total - target);
		if (target > k.s.total)
			sbm_plug(&k.s, target - k.s.total);
		else
			kz_unplug(&k, k.s.total - target);
		kz_pin_up(&k);
	}
	free(k.unmov);
	free(k.nunmov);
	sbm_free(&k.s);
	return 0;
}

static const struct replay_gen_param sbm_params[] = {
	{ "region", 16 * GiB, true, "device region size" },
	{ "block", 2 * MiB, true, "device block size (subblock)" },
	{ "memblock", 128 * MiB, true, "Linux memory block size" },
	{ "steps", 24, false, "requested-size changes" },
	{ "movable", 95, false, "% of fully plugged memory blocks unplugged whole" },
	{ "busy", 5, false, "% of subblock unplug attempts that fail (busy pages)" },
};
static const struct replay_gen_param bbm_params[] = {
	{ "region", 64 * GiB, true, "device region size" },
	{ "bigblock", 1 * GiB, true, "big block size (the request size)" },
	{ "steps", 24, false, "requested-size changes" },
	{ "busy", 10, false, "% of big blocks that cannot be unplugged at an attempt" },
};
static const struct replay_gen_param register_params[] = {
	{ "region", 1024 * GiB, true, "device region size" },
	{ "block", 2 * MiB, true, "device block size" },
	{ "memblock", 128 * MiB, true, "Linux memory block size" },
	{ "plugged", 90, false, "% of memory blocks fully plugged" },
	{ "partial", 5, false, "% of memory blocks half plugged at random" },
};
static const struct replay_gen_param storm_params[] = {
	{ "region", 64 * GiB, true, "guest memory size" },
	{ "block", 4096, true, "conversion granularity" },
	{ "conversions", 200000, false, "conversion requests" },
	{ "share", 55, false, "% of steps converting private to shared" },
	{ "sub", 30, false, "% of conversions back covering a strict sub-range" },
	{ "min", 4096, true, "smallest conversion" },
	{ "max", 2 * MiB, true, "largest conversion" },
};
static const struct replay_gen_param frag_params[] = {
	{ "region", 16 * GiB, true, "region size" },
	{ "block", 2 * MiB, true, "block size" },
	{ "density", 50, false, "% of blocks populated at steady state" },
	{ "steps", 20000, false, "random runs changed" },
	{ "run", 8, false, "longest run, in blocks" },
};

static const struct replay_gen_param kzone_params[] = {
	{ "region", 8 * GiB, true, "device region size" },
	{ "block", 2 * MiB, true, "device block size (subblock)" },
	{ "memblock", 128 * MiB, true, "Linux memory block size" },
	{ "steps", 40, false, "requested-size changes" },
	{ "unmovable", 10, false, "% of plugged blocks the kernel keeps unmovable" },
	{ "cluster", 4, false, "mean run of an unmovable cluster, in blocks (1 = scattered)" },
	{ "recover", 5, false, "% of unmovable blocks that become movable at each step" },
	{ "merge", 1, false, "1: an unplug's request per maximal run; 0: one per block (Linux 6.1)" },
};

#define GEN(n, k, h, p, f) { n, h, k, p, sizeof(p) / sizeof(p[0]), f }
const struct replay_generator replay_generators[] = {
	GEN("sbm", REPLAY_KIND_SBM, "virtio-mem, Linux guest, Sub Block Mode", sbm_params, gen_sbm),
	GEN("bbm", REPLAY_KIND_BBM, "virtio-mem, Big Block Mode", bbm_params, gen_bbm),
	GEN("reset", REPLAY_KIND_RESET, "Sub Block Mode with unplug_all at a guest reset, then re-plug", sbm_params,
	    gen_reset),
	GEN("register", REPLAY_KIND_REGISTER, "listener registration replay of a mostly plugged device, then unregistration",
	    register_params, gen_register),
	GEN("storm", REPLAY_KIND_STORM, "guest_memfd shared/private conversion storm", storm_params, gen_storm),
	GEN("frag", REPLAY_KIND_FRAG, "random fragmentation at a chosen density", frag_params, gen_frag),
	GEN("kzone", REPLAY_KIND_KZONE, "virtio-mem Sub Block Mode, memory in the kernel zone: unmovable islands",
	    kzone_params, gen_kzone),
};
const size_t replay_ngenerators = sizeof(replay_generators) / sizeof(replay_generators[0]);

const char *const replay_default_workloads[] = {
	"sbm", "bbm", "reset", "register", "storm", "frag:density=10", "frag:density=50", "frag:density=90",
	"kzone:unmovable=2", "kzone:unmovable=10", "kzone:unmovable=30", NULL,
};

const struct replay_generator *replay_find_generator(const char *name)
{
	for (size_t i = 0; i < replay_ngenerators; i++)
		if (strcmp(replay_generators[i].name, name) == 0)
			return &replay_generators[i];
	return NULL;
}

int replay_generate(const char *spec, uint64_t seed, struct replay_trace *t, char *err, size_t errlen)
{
	char name[32], extra[64] = "";
	const char *colon = strchr(spec, ':');
	size_t nl = colon ? (size_t)(colon - spec) : strlen(spec);
	const struct replay_generator *g;
	uint64_t v[REPLAY_GEN_MAX_PARAMS];

	if (nl >= sizeof(name))
		return replay_errf(err, errlen, "unknown workload \"%s\"", spec);
	memcpy(name, spec, nl);
	name[nl] = '\0';
	g = replay_find_generator(name);
	if (!g)
		return replay_errf(err, errlen, "unknown workload \"%s\" (sbm, bbm, reset, register, storm, frag, kzone)", name);
	for (size_t i = 0; i < g->nparams; i++)
		v[i] = g->params[i].def;
	if (colon) {
		const char *p = colon + 1;
		while (*p) {
			const char *eq = strchr(p, '='), *comma = strchr(p, ',');
			const char *end = comma ? comma : p + strlen(p);
			size_t i;
			char val[40];

			if (!eq || eq > end)
				return replay_errf(err, errlen, "workload %s: expected KEY=VALUE, got \"%.*s\"", name,
					     (int)(end - p), p);
			for (i = 0; i < g->nparams; i++)
				if (strlen(g->params[i].name) == (size_t)(eq - p) &&
				    memcmp(g->params[i].name, p, (size_t)(eq - p)) == 0)
					break;
			if (i == g->nparams)
				return replay_errf(err, errlen, "workload %s: unknown parameter \"%.*s\"", name,
					     (int)(eq - p), p);
			if ((size_t)(end - eq - 1) >= sizeof(val))
				return replay_errf(err, errlen, "workload %s: value of %s too long", name, g->params[i].name);
			memcpy(val, eq + 1, (size_t)(end - eq - 1));
			val[end - eq - 1] = '\0';
			uint64_t x;
			int rc;
			if (g->params[i].is_size) {
				rc = replay_parse_size(val, &x);
			} else {
				char *e;
				errno = 0;
				x = strtoull(val, &e, 10);
				rc = (*val < '0' || *val > '9' || *e || errno) ? -1 : 0;
			}
			if (rc < 0)
				return replay_errf(err, errlen, "workload %s: bad value \"%s\" for %s", name, val,
					     g->params[i].name);
			v[i] = x;
			p = comma ? comma + 1 : end;
		}
	}
	memset(t, 0, sizeof(*t));
	t->kind = g->kind;
	if (g->kind == REPLAY_KIND_FRAG || g->kind == REPLAY_KIND_KZONE) {
		/* Named by their density: frag-d50, kzone-u10; other parameters appended as given. */
		size_t di = g->kind == REPLAY_KIND_FRAG ? 2 : 4;
		const char *tag = g->kind == REPLAY_KIND_FRAG ? "d" : "u";

		snprintf(t->name, sizeof(t->name), "%s-%s%" PRIu64, name, tag, v[di]);
		for (size_t i = 0; i < g->nparams; i++)
			if (i != di && v[i] != g->params[i].def) {
				snprintf(t->name, sizeof(t->name), "%s-%s%" PRIu64 ":%s", name, tag, v[di], colon + 1);
				break;
			}
	} else {
		snprintf(t->name, sizeof(t->name), "%s", name);
		for (size_t i = 0; i < g->nparams; i++)
			if (v[i] != g->params[i].def) {
				snprintf(extra, sizeof(extra), "%s", colon + 1);
				snprintf(t->name, sizeof(t->name), "%s:%s", name, extra);
				break;
			}
	}
	if (g->generate(v, seed, t, err, errlen) < 0) {
		replay_trace_free(t);
		return -1;
	}
	return 0;
}
