/* test_flat.c - the flat view of small regions: prepares before one publish, the size threshold, allocation failures, readers against an oracle of published states, destroy with readers in flight. */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <rdm/error.h>
#include <rdm/region.h>

#include "core/alloc.h"
#include "core/flat.h"
#include "core/region_internal.h"
#include "tests/check.h"
#include "tests/core/oracle.h"

#define BS UINT64_C(4096)

static void sleep_us(long us)
{
	struct timespec ts = { us / 1000000, (us % 1000000) * 1000 };

	nanosleep(&ts, NULL);
}

/* ---- the module alone: several prepares before one publish, abort ---- */

static bool bit_of(const struct rdm_flat *f, uint64_t b)
{
	return rdm_flat_all(f, b, b + 1, true) == 1;
}

static void load_alt(void *opaque, uint64_t first, uint64_t *words)
{
	(void)opaque;
	(void)first;
	for (unsigned i = 0; i < 64; i++)
		words[i] = UINT64_C(0x5555555555555555);
}

static void test_module(void)
{
	struct rdm_mem mem;
	struct rdm_flat *f;

	rdm_mem_init(&mem);
	REQUIRE(rdm_flat_create(200, &mem, &f) == 0);
	/* Three prepares, nothing visible until the publish. */
	CHECK(rdm_flat_note(f, 10, 100, true) == 0);
	CHECK(rdm_flat_note(f, 50, 60, false) == 0);
	CHECK(rdm_flat_note(f, 150, 200, true) == 0);
	CHECK(rdm_flat_all(f, 0, 200, false) == 1);
	rdm_flat_publish_begin(f);
	rdm_flat_publish_end(f);
	CHECK(rdm_flat_all(f, 10, 50, true) == 1);
	CHECK(rdm_flat_all(f, 50, 60, false) == 1);
	CHECK(rdm_flat_all(f, 60, 100, true) == 1);
	CHECK(rdm_flat_all(f, 150, 200, true) == 1);
	CHECK(rdm_flat_all(f, 100, 150, false) == 1);
	CHECK(rdm_flat_count(f, 0, 200) == 40 + 40 + 50);

	/* More prepares than the inline list holds, then abort: the view stays
	 * at the last publish. */
	for (uint64_t b = 0; b < 3 * RDM_FLAT_PEND_INLINE; b++)
		CHECK(rdm_flat_note(f, 100 + b, 101 + b, true) == 0);
	rdm_flat_abort(f);
	rdm_flat_publish_begin(f);
	rdm_flat_publish_end(f);
	CHECK(rdm_flat_all(f, 100, 150, false) == 1);

	/* The grown list is kept for the next batch (no realloc per publish). */
	CHECK(f->cap >= 3 * RDM_FLAT_PEND_INLINE && f->pend != f->pend_inline && f->npend == 0);

	/* The list's growth fails: that note is refused, the earlier ones are
	 * kept and published. */
	size_t full = f->cap;

	for (uint64_t b = 0; b < full; b++)
		CHECK(rdm_flat_note(f, 100 + b, 101 + b, true) == 0);
	rdm_alloc_inject(1, false);
	CHECK(rdm_flat_note(f, 140, 141, true) == -ENOMEM);
	rdm_alloc_inject(0, false);
	CHECK(f->cap == full && f->npend == full);
	rdm_flat_publish_begin(f);
	rdm_flat_publish_end(f);
	CHECK(rdm_flat_all(f, 100, 100 + full, true) == 1);
	CHECK(!bit_of(f, 140));
	CHECK(rdm_flat_note(f, 100, 100 + full, false) == 0);
	rdm_flat_publish_begin(f);
	rdm_flat_publish_end(f);
	CHECK(rdm_flat_all(f, 100, 150, false) == 1);

	/* A list grown past RDM_FLAT_PEND_KEEP entries goes back to the
	 * inline one at the publish. */
	for (uint64_t b = 0; b <= RDM_FLAT_PEND_KEEP; b++)
		CHECK(rdm_flat_note(f, 100 + b % 50, 101 + b % 50, b % 2 == 0) == 0);
	CHECK(f->cap > RDM_FLAT_PEND_KEEP);
	rdm_flat_abort(f);
	CHECK(f->pend == f->pend_inline && f->cap == RDM_FLAT_PEND_INLINE && f->npend == 0);

	/* A load replaces what was noted before it; changes after it apply. */
	CHECK(rdm_flat_note(f, 0, 200, true) == 0);
	CHECK(rdm_flat_note_load(f, load_alt, NULL) == 0);
	CHECK(rdm_flat_note(f, 1, 2, false) == 0);
	CHECK(bit_of(f, 10) && !bit_of(f, 0)); /* still the old state */
	rdm_flat_publish_begin(f);
	rdm_flat_publish_end(f);
	CHECK(bit_of(f, 0) && !bit_of(f, 1) && bit_of(f, 2) && !bit_of(f, 3) && bit_of(f, 198));
	CHECK(rdm_flat_count(f, 0, 200) == 100);
	rdm_alloc_inject(1, false);
	CHECK(rdm_flat_note_load(f, load_alt, NULL) == -ENOMEM);
	rdm_alloc_inject(0, false);
	rdm_flat_destroy(f);
	CHECK(rdm_mem_current(&mem) == 0);
}

/* ---- the threshold: just below and just above agree with an oracle ---- */

static void test_threshold(uint64_t seed)
{
	const uint64_t nb[2] = { RDM_FLAT_MAX_BLOCKS, RDM_FLAT_MAX_BLOCKS + 1 };
	struct rdm_region *r[2];
	struct rng rng = { .s = seed };
	uint64_t *bm = calloc(RDM_FLAT_MAX_BLOCKS / 64 + 1, sizeof(uint64_t));

	REQUIRE(bm != NULL);
	/* The first region of a node also creates the node's allocator arena
	 * (one more attempt, once per process): make it exist first. */
	{
		struct rdm_region_config cfg = { .struct_size = sizeof(cfg), .size = BS, .block_size = BS };

		REQUIRE(rdm_region_create(&cfg, &r[0]) == 0);
		REQUIRE(rdm_region_destroy(r[0]) == 0);
	}
	for (int i = 0; i < 2; i++) {
		struct rdm_region_config cfg = { .struct_size = sizeof(cfg), .size = nb[i] * BS,
						 .block_size = BS };

		/* The region, then (below the threshold only) its view: armed
		 * to fail at an attempt never reached, to count them. */
		rdm_alloc_inject(ULONG_MAX, false);
		REQUIRE(rdm_region_create(&cfg, &r[i]) == 0);
		CHECK(rdm_alloc_attempts() == (i == 0 ? 2u : 1u));
		rdm_alloc_inject(0, false);
	}
	for (int it = 0; it < 3000; it++) {
		/* Changes near the end (where the regions differ) and anywhere. */
		uint64_t base = rng_below(&rng, 2) ? RDM_FLAT_MAX_BLOCKS - 9000 : 0;
		uint64_t s = base + rng_below(&rng, 9000 - 1);
		uint64_t len = 1 + rng_below(&rng, rng_below(&rng, 8) == 0 ? 9000 - 1 : 70);
		bool v = rng_below(&rng, 2);

		if (s + len > RDM_FLAT_MAX_BLOCKS)
			len = RDM_FLAT_MAX_BLOCKS - s;
		for (int i = 0; i < 2; i++)
			CHECK((v ? rdm_populate(r[i], s * BS, len * BS)
				 : rdm_discard(r[i], s * BS, len * BS)) == 0);
		for (uint64_t b = s; b < s + len; b++) {
			if (v)
				bm[b / 64] |= UINT64_C(1) << (b % 64);
			else
				bm[b / 64] &= ~(UINT64_C(1) << (b % 64));
		}
		for (int q = 0; q < 8; q++) {
			uint64_t qb = rng_below(&rng, 2) ? RDM_FLAT_MAX_BLOCKS - 9000 : 0;
			uint64_t qs = qb + rng_below(&rng, 9000);
			uint64_t ql = 1 + rng_below(&rng, rng_below(&rng, 4) == 0 ? 6000 : 70);
			uint64_t ones = 0, end = qs + ql;
			bool all1, all0;

			if (end > RDM_FLAT_MAX_BLOCKS)
				end = RDM_FLAT_MAX_BLOCKS;
			for (uint64_t b = qs; b < end; b++)
				ones += (bm[b / 64] >> (b % 64)) & 1;
			all1 = ones == end - qs;
			all0 = ones == 0;
			for (int i = 0; i < 2; i++) {
				CHECK(rdm_is_populated(r[i], qs * BS, (end - qs) * BS) == all1);
				CHECK(rdm_is_discarded(r[i], qs * BS, (end - qs) * BS) == all0);
				CHECK(rdm_populated_bytes(r[i], qs * BS, (end - qs) * BS) == ones * BS);
			}
		}
	}
	/* The extra block of the larger region, and ranges past each end. */
	CHECK(rdm_populate(r[1], RDM_FLAT_MAX_BLOCKS * BS, BS) == 0);
	CHECK(rdm_is_populated(r[1], RDM_FLAT_MAX_BLOCKS * BS, BS));
	CHECK(!rdm_is_populated(r[0], RDM_FLAT_MAX_BLOCKS * BS, BS));
	CHECK(!rdm_is_discarded(r[0], (RDM_FLAT_MAX_BLOCKS - 1) * BS, 2 * BS));
	for (int i = 0; i < 2; i++)
		CHECK(rdm_region_destroy(r[i]) == 0);
	free(bm);
}

/* ---- allocation failure at create, and at a change, with the view ---- */

static void test_alloc_failure(void)
{
	struct rdm_region_config cfg = { .struct_size = sizeof(cfg), .size = 1024 * BS,
					 .block_size = BS };
	struct rdm_region *r;
	unsigned long k;

	for (k = 1;; k++) {
		int ret;

		rdm_alloc_inject(k, false);
		ret = rdm_region_create(&cfg, &r);
		if (ret == 0)
			break;
		CHECK(ret == -ENOMEM);
		CHECK(strstr(rdm_last_error(), "out of memory") != NULL);
	}
	rdm_alloc_inject(0, false);
	CHECK(k == 3); /* the region and its view failed in turn */
	CHECK(rdm_is_discarded(r, 0, 1024 * BS));
	CHECK(rdm_populate(r, 0, 8 * BS) == 0);
	/* A failed change leaves the view at the last published state. */
	for (k = 1; k < 50; k++) {
		int ret;

		rdm_alloc_inject(k, false);
		ret = rdm_populate(r, 100 * BS, 300 * BS);
		rdm_alloc_inject(0, false);
		if (ret == 0)
			break;
		CHECK(ret == -ENOMEM);
		CHECK(rdm_is_discarded(r, 100 * BS, 300 * BS));
		CHECK(rdm_populated_bytes(r, 0, 1024 * BS) == 8 * BS);
	}
	CHECK(rdm_is_populated(r, 100 * BS, 300 * BS));
	CHECK(rdm_region_destroy(r) == 0);
}

/* ---- a refused populate is never visible, the next change is ---- */

static int refuse(struct rdm_listener *l, uint64_t off, uint64_t len)
{
	(void)l;
	(void)off;
	(void)len;
	return -EPERM;
}

static void ignore(struct rdm_listener *l, uint64_t off, uint64_t len)
{
	(void)l;
	(void)off;
	(void)len;
}

static void test_refused(void)
{
	static const struct rdm_listener_ops ops = { refuse, ignore };
	struct rdm_region_config cfg = { .struct_size = sizeof(cfg), .size = 256 * BS,
					 .block_size = BS };
	struct rdm_listener l = { .ops = &ops, .offset = 64 * BS, .length = 64 * BS };
	struct rdm_region *r;

	REQUIRE(rdm_region_create(&cfg, &r) == 0);
	CHECK(rdm_listener_register(r, &l) == 0);
	CHECK(rdm_populate(r, 60 * BS, 10 * BS) == -EPERM);
	CHECK(rdm_is_discarded(r, 0, 256 * BS));
	CHECK(rdm_populate(r, 0, 10 * BS) == 0); /* outside the listener */
	CHECK(rdm_is_discarded(r, 10 * BS, 246 * BS));
	CHECK(rdm_is_populated(r, 0, 10 * BS));
	CHECK(rdm_populated_bytes(r, 0, 256 * BS) == 10 * BS);
	CHECK(rdm_region_destroy(r) == 0);
}

/* ---- destroy waits for a reader already inside ---- */

static struct rdm_region *dreg;
static atomic_bool destroy_returned;

static void *destroyer(void *arg)
{
	(void)arg;
	CHECK(rdm_region_destroy(dreg) == 0);
	atomic_store_explicit(&destroy_returned, true, memory_order_release);
	return NULL;
}

static void test_destroy_inside(void)
{
	struct rdm_region_config cfg = { .struct_size = sizeof(cfg), .size = 64 * BS,
					 .block_size = BS };
	struct rdm_reader *rd;
	pthread_t t;

	REQUIRE(rdm_region_create(&cfg, &dreg) == 0);
	/* This thread is a reader inside the region (as query_all() is while
	 * it reads the view). */
	rd = rdm_reader_enter(dreg);
	REQUIRE(rd != NULL);
	atomic_init(&destroy_returned, false);
	REQUIRE(pthread_create(&t, NULL, destroyer, NULL) == 0);
	/* Destroy has begun once a change is refused. */
	while (rdm_region_enter(dreg) == 0) {
		rdm_region_leave(dreg);
		sleep_us(100);
	}
	/* Now give a destroy that did not wait every chance to finish. */
	for (int i = 0; i < 100; i++)
		sleep_us(1000);
	CHECK(!atomic_load_explicit(&destroy_returned, memory_order_acquire));
	rdm_reader_leave(rd);
	pthread_join(t, NULL);
	CHECK(atomic_load_explicit(&destroy_returned, memory_order_acquire));
}

/* ---- destroy with readers hammering: calls during destroy answer false ---- */

#define NREADERS 3

static _Atomic(struct rdm_region *) cur;
static atomic_bool gate_open, stop_readers, dying_seen, late_phase;
static atomic_uint active;
static atomic_uint_fast64_t true_reads, false_reads;

static int l_populate(struct rdm_listener *l, uint64_t off, uint64_t len)
{
	(void)l;
	(void)off;
	(void)len;
	return 0;
}

/* Told during destroy, after readers in flight were waited for: every call
 * from now on must answer false. Let readers make such calls, then shut the
 * gate and wait for the calls inside to return before destroy frees. */
static void l_discard(struct rdm_listener *l, uint64_t off, uint64_t len)
{
	(void)l;
	(void)off;
	(void)len;
	atomic_store_explicit(&late_phase, true, memory_order_seq_cst);
	sleep_us(2000);
	atomic_store_explicit(&gate_open, false, memory_order_seq_cst);
	while (atomic_load_explicit(&active, memory_order_seq_cst) != 0)
		sleep_us(10);
}

static const struct rdm_listener_ops lops = { l_populate, l_discard };

static void *hammer(void *arg)
{
	struct rng rng = { .s = (uint64_t)(uintptr_t)arg };

	while (!atomic_load_explicit(&stop_readers, memory_order_relaxed)) {
		struct rdm_region *r;
		uint64_t n, s, len;
		bool late, v;

		atomic_fetch_add_explicit(&active, 1, memory_order_seq_cst);
		if (!atomic_load_explicit(&gate_open, memory_order_seq_cst)) {
			atomic_fetch_sub_explicit(&active, 1, memory_order_seq_cst);
			sleep_us(50);
			continue;
		}
		r = atomic_load_explicit(&cur, memory_order_acquire);
		n = rdm_region_size(r) / BS;
		len = 1 + rng_below(&rng, 64);
		s = rng_below(&rng, n - len + 1);
		late = atomic_load_explicit(&late_phase, memory_order_seq_cst);
		v = rdm_is_populated(r, s * BS, len * BS);
		if (v && late) {
			fprintf(stderr, "a call made during destroy answered true\n");
			check_failures++;
		}
		if (!v && !atomic_load_explicit(&dying_seen, memory_order_seq_cst)) {
			fprintf(stderr, "a populated range answered false before destroy\n");
			check_failures++;
		}
		atomic_fetch_add_explicit(v ? &true_reads : &false_reads, 1, memory_order_relaxed);
		atomic_fetch_sub_explicit(&active, 1, memory_order_seq_cst);
	}
	return NULL;
}

static void test_destroy_hammer(unsigned cycles)
{
	pthread_t th[NREADERS];

	rdm_mem_set_quarantine(true);
	for (uintptr_t i = 0; i < NREADERS; i++)
		REQUIRE(pthread_create(&th[i], NULL, hammer, (void *)(i + 1)) == 0);
	for (unsigned c = 0; c < cycles && check_failures == 0; c++) {
		/* Alternately a region with the flat view and one without. */
		uint64_t nb = c % 2 ? RDM_FLAT_MAX_BLOCKS + 64 : 1024;
		struct rdm_region_config cfg = { .struct_size = sizeof(cfg), .size = nb * BS,
						 .block_size = BS };
		struct rdm_listener l = { .ops = &lops, .offset = 0, .length = nb * BS };
		struct rdm_region *r;

		REQUIRE(rdm_region_create(&cfg, &r) == 0);
		CHECK(rdm_populate(r, 0, nb * BS) == 0);
		CHECK(rdm_listener_register(r, &l) == 0);
		atomic_store_explicit(&late_phase, false, memory_order_seq_cst);
		atomic_store_explicit(&dying_seen, false, memory_order_seq_cst);
		atomic_store_explicit(&cur, r, memory_order_release);
		atomic_store_explicit(&gate_open, true, memory_order_seq_cst);
		sleep_us(1000);
		atomic_store_explicit(&dying_seen, true, memory_order_seq_cst);
		CHECK(rdm_region_destroy(r) == 0);
		CHECK(!atomic_load_explicit(&gate_open, memory_order_seq_cst));
	}
	atomic_store_explicit(&stop_readers, true, memory_order_relaxed);
	for (unsigned i = 0; i < NREADERS; i++)
		pthread_join(th[i], NULL);
	printf("test_flat: destroy hammer: %" PRIu64 " true, %" PRIu64 " false answers\n",
	       (uint64_t)atomic_load(&true_reads), (uint64_t)atomic_load(&false_reads));
	CHECK(atomic_load(&false_reads) > 0 && atomic_load(&true_reads) > 0);
	rdm_mem_set_quarantine(false);
	rdm_mem_quarantine_drain();
}

/* ---- concurrent readers against the published states ---- */

#define CN 4096u /* blocks: 64 words per state */
#define CW (CN / 64)
#define HIST 512u

/* hist[v % HIST] is the state after change v: the writer stores it before
 * the change and `version` (release) after. */
static _Atomic uint64_t hist[HIST][CW];
static _Atomic uint64_t version;
static struct rdm_region *creg;
static atomic_bool cdone;
static atomic_uint_fast64_t checked, inconclusive;

static uint64_t hist_ones(uint64_t v, uint64_t s, uint64_t e)
{
	uint64_t n = 0;

	for (uint64_t b = s; b < e; b++)
		n += (atomic_load_explicit(&hist[v % HIST][b / 64], memory_order_relaxed) >> (b % 64)) & 1;
	return n;
}

static void *oracle_reader(void *arg)
{
	struct rng rng = { .s = (uint64_t)(uintptr_t)arg };

	while (!atomic_load_explicit(&cdone, memory_order_relaxed)) {
		uint64_t len = 1 + rng_below(&rng, rng_below(&rng, 4) == 0 ? CN : 130);
		uint64_t s = rng_below(&rng, CN - len + 1), e = s + len, ans, v0, v1, v2;
		unsigned kind = (unsigned)rng_below(&rng, 3);
		bool match = false;

		/* Acquire: pairs with the writer's release store of version. */
		v0 = atomic_load_explicit(&version, memory_order_acquire);
		if (kind == 0)
			ans = rdm_is_populated(creg, s * BS, len * BS);
		else if (kind == 1)
			ans = rdm_is_discarded(creg, s * BS, len * BS);
		else
			ans = rdm_populated_bytes(creg, s * BS, len * BS) / BS;
		v1 = atomic_load_explicit(&version, memory_order_acquire);
		/* Some state published between the two loads (or the one being
		 * published after v1) must give this answer. */
		for (uint64_t v = v0; v <= v1 + 1 && !match; v++) {
			uint64_t ones = hist_ones(v, s, e);

			match = kind == 0 ? ans == (ones == len)
				: kind == 1 ? ans == (ones == 0)
					    : ans == ones;
		}
		v2 = atomic_load_explicit(&version, memory_order_acquire);
		if (v2 + 2 - v0 >= HIST) {
			atomic_fetch_add_explicit(&inconclusive, 1, memory_order_relaxed);
			continue; /* the history was overwritten meanwhile */
		}
		if (!match) {
			fprintf(stderr,
				"query %u [%" PRIu64 ", %" PRIu64 ") answered %" PRIu64
				": no published state in versions %" PRIu64 "..%" PRIu64 "\n",
				kind, s, e, ans, v0, v1 + 1);
			check_failures++;
			break;
		}
		atomic_fetch_add_explicit(&checked, 1, memory_order_relaxed);
	}
	return NULL;
}

static void test_oracle(uint64_t seed, uint64_t iters)
{
	struct rdm_region_config cfg = { .struct_size = sizeof(cfg), .size = CN * BS,
					 .block_size = BS };
	struct rng rng = { .s = seed };
	pthread_t th[NREADERS];

	REQUIRE(rdm_region_create(&cfg, &creg) == 0);
	for (uintptr_t i = 0; i < NREADERS; i++)
		REQUIRE(pthread_create(&th[i], NULL, oracle_reader, (void *)(seed + 11 + i)) == 0);
	for (uint64_t it = 0; it < iters && check_failures == 0; it++) {
		/* Relaxed: only this thread stores version. */
		uint64_t v = atomic_load_explicit(&version, memory_order_relaxed) + 1;
		unsigned what = (unsigned)rng_below(&rng, 200);
		uint64_t s = rng_below(&rng, CN), len = 1 + rng_below(&rng, 100);
		bool val = rng_below(&rng, 2);

		if (what == 0) {
			s = 0;
			len = CN;
			val = false; /* discard_all */
		} else if (what < 100) {
			len = 1 + rng_below(&rng, CN); /* a long range: a longer publish */
		}
		if (s + len > CN)
			len = CN - s;
		for (unsigned w = 0; w < CW; w++) {
			uint64_t x = atomic_load_explicit(&hist[(v - 1) % HIST][w], memory_order_relaxed);
			uint64_t lo = (uint64_t)w * 64, a = s > lo ? s - lo : 0;
			uint64_t b = s + len < lo + 64 ? s + len - lo : 64, m = 0;

			if (s + len > lo && s < lo + 64)
				m = (b - a == 64 ? ~UINT64_C(0) : ((UINT64_C(1) << (b - a)) - 1)) << a;
			atomic_store_explicit(&hist[v % HIST][w], val ? x | m : x & ~m,
					      memory_order_relaxed);
		}
		/* The entry is ordered before the state change by the publish's
		 * release (the reader that sees the change acquires it). */
		if (what == 0)
			CHECK(rdm_discard_all(creg) == 0);
		else
			CHECK((val ? rdm_populate(creg, s * BS, len * BS)
				   : rdm_discard(creg, s * BS, len * BS)) == 0);
		/* Release: pairs with the readers' acquire loads. */
		atomic_store_explicit(&version, v, memory_order_release);
	}
	atomic_store_explicit(&cdone, true, memory_order_relaxed);
	for (unsigned i = 0; i < NREADERS; i++)
		pthread_join(th[i], NULL);
	printf("test_flat: oracle: %" PRIu64 " answers checked, %" PRIu64 " inconclusive\n",
	       (uint64_t)atomic_load(&checked), (uint64_t)atomic_load(&inconclusive));
	CHECK(atomic_load(&checked) > 0);
	CHECK(rdm_region_destroy(creg) == 0);
}

/* ---- whole-region flips: the longest publish, never seen half done ---- */

static void *torn_reader(void *arg)
{
	(void)arg;
	while (!atomic_load_explicit(&cdone, memory_order_relaxed)) {
		uint64_t n = rdm_populated_bytes(creg, 0, CN * BS) / BS;

		if (n != 0 && n != CN) {
			fprintf(stderr, "populated_bytes saw %" PRIu64 " of %u blocks: a torn publish\n",
				n, CN);
			check_failures++;
			break;
		}
	}
	return NULL;
}

static void test_torn(uint64_t iters)
{
	struct rdm_region_config cfg = { .struct_size = sizeof(cfg), .size = CN * BS,
					 .block_size = BS };
	pthread_t th[NREADERS];

	REQUIRE(rdm_region_create(&cfg, &creg) == 0);
	atomic_store_explicit(&cdone, false, memory_order_relaxed);
	for (uintptr_t i = 0; i < NREADERS; i++)
		REQUIRE(pthread_create(&th[i], NULL, torn_reader, NULL) == 0);
	for (uint64_t it = 0; it < iters && check_failures == 0; it++)
		CHECK((it % 2 ? rdm_discard_all(creg) : rdm_populate(creg, 0, CN * BS)) == 0);
	atomic_store_explicit(&cdone, true, memory_order_relaxed);
	for (unsigned i = 0; i < NREADERS; i++)
		pthread_join(th[i], NULL);
	CHECK(rdm_region_destroy(creg) == 0);
}

int main(int argc, char **argv)
{
	uint64_t seed = env_u64("RDM_SEED", 0), iters = env_u64("RDM_ITERS", 0);
	bool stress = argc > 1 && strcmp(argv[1], "stress") == 0;

	if (seed == 0) {
		struct timespec ts;

		clock_gettime(CLOCK_REALTIME, &ts);
		seed = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20);
	}
	if (iters == 0)
		iters = (stress ? 10 : 1) * (TEST_SANITIZED ? 10000 : 100000);
	printf("test_flat: seed %#" PRIx64 " writer changes %" PRIu64
	       " (rerun: RDM_SEED=%#" PRIx64 " RDM_ITERS=%" PRIu64 ")\n",
	       seed, iters, seed, iters);
	fflush(stdout);
	test_module();
	test_threshold(seed);
	test_alloc_failure();
	test_refused();
	test_destroy_inside();
	test_oracle(seed, iters);
	test_torn(iters);
	test_destroy_hammer(stress ? 200 : TEST_SANITIZED ? 6 : 20);
	return check_exit();
}
