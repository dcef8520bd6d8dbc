/* SPDX-License-Identifier: MIT */
/*
 * bench/bench_state.c - region state: rdm's lock-free is_populated against a
 * QEMU-style bitmap under a pthread mutex and under a pthread rwlock.
 *
 * States (2^20 blocks): sparse (~1,000 extents) and frag (~100,000 extents).
 * The reader (pinned to one CPU) queries random ranges of 1..64 blocks; a
 * writer (pinned to another CPU) runs toggle pairs: populate or discard 1..64
 * blocks inside one extent or gap, then undo it, so the state keeps its
 * shape. Cases: single (no writer), writer100k / writer500k (writer throttled
 * to that many changes per second for every contender), writermax (flat
 * out). Memory is what rdm's counted allocator reports for the region's
 * state: steady (before the writer starts, nothing waiting for RCU) and peak
 * (during the case, so memory waiting for a grace period shows). frag1t
 * builds the worst state (1 TiB at 4 KiB blocks, alternating) for memory only.
 *
 * One SUMMARY line per case and state, printed after all cases ran:
 * SUMMARY state case=<name> state=<sparse|frag> rdm_mops=<x> bitmap_mutex_mops=<y>
 *   rwlock_mops=<z> rdm_writer_kcps=<w> rdm_bytes=<a> rdm_peak_bytes=<p> bitmap_bytes=<b>
 */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <urcu-bp.h>

#include <rdm/region.h>

#include "core/alloc.h"
#include "core/region_internal.h"
#include "shim.h"

#define BS UINT64_C(4096)
#define QUERIES (1u << 16)
#define BATCH 64

enum { C_RDM, C_MUTEX, C_RWLOCK, NCONT };
enum { S_SPARSE, S_FRAG, NSTATE };
enum { K_SINGLE, K_W100K, K_W500K, K_WMAX, K_FRAG1T, NCASE };

static const char *const cont_names[NCONT] = { "rdm", "bitmap_mutex", "bitmap_rwlock" };
static const char *const state_names[NSTATE] = { "sparse", "frag" };
static const char *const case_names[NCASE] = { "single", "writer100k", "writer500k", "writermax",
					       "frag1t" };
static const double case_rates[NCASE] = { 0, 100e3, 500e3, -1, 0 };

/* Kept opaque to the compiler: its address escapes to rdm_bench_keep() at
 * registration, so no size below is a compile-time constant. */
static uint64_t nblocks_opaque = UINT64_C(1) << 20;

struct run {
	uint64_t s, e;
	bool populated;
};

struct state {
	uint64_t nblocks;
	uint64_t *bm;
	pthread_mutex_t mu;
	pthread_rwlock_t rw;
	struct rdm_region *r;
	struct run *runs;
	size_t nruns, extents;
	uint32_t qs[QUERIES], ql[QUERIES];
	size_t rdm_steady;
};

static struct state *states[NSTATE];

struct result {
	bool ran;
	double mops, writer_kcps;
	size_t bytes, peak;
};

static struct result results[NCASE][NSTATE][NCONT];

struct bench_arg {
	int kase, state, cont;
};

static struct bench_arg args[NCASE][NSTATE][NCONT];

static uint64_t rng_next(uint64_t *s)
{
	uint64_t z = (*s += UINT64_C(0x9e3779b97f4a7c15));

	z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
	z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
	return z ^ (z >> 31);
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- the QEMU-style bitmap ---- */

static void bm_set(uint64_t *bm, uint64_t s, uint64_t e, bool v)
{
	while (s < e) {
		unsigned a = (unsigned)(s % 64);
		unsigned n = e - s < 64 - a ? (unsigned)(e - s) : 64 - a;
		uint64_t m = (n == 64 ? ~UINT64_C(0) : ((UINT64_C(1) << n) - 1)) << a;

		if (v)
			bm[s / 64] |= m;
		else
			bm[s / 64] &= ~m;
		s += n;
	}
}

/* virtio_mem_is_range_plugged(): find_next_zero_bit(bm, last + 1, first) > last */
static bool bm_all_set(const uint64_t *bm, uint64_t s, uint64_t e)
{
	while (s < e) {
		unsigned a = (unsigned)(s % 64);
		unsigned n = e - s < 64 - a ? (unsigned)(e - s) : 64 - a;
		uint64_t m = (n == 64 ? ~UINT64_C(0) : ((UINT64_C(1) << n) - 1)) << a;

		if ((~bm[s / 64] & m) != 0)
			return false;
		s += n;
	}
	return true;
}

static void load_get(void *opaque, uint64_t first, uint64_t *words)
{
	const struct state *st = opaque;

	if (first < st->nblocks)
		memcpy(words, &st->bm[first / 64], 64 * sizeof(uint64_t));
}

static struct state *build_state(int which)
{
	struct state *st = calloc(1, sizeof(*st));
	uint64_t seed = 42 + (uint64_t)which, slot, b;
	struct rdm_region_config cfg = { .struct_size = sizeof(cfg), .block_size = BS };

	st->nblocks = nblocks_opaque;
	st->bm = calloc(st->nblocks / 64, 8);
	/* sparse: one extent of 1..512 blocks per 1,048-block slot; frag: one of
	 * 1..8 blocks per 10-block slot, gaps of at least one block. */
	slot = which == S_SPARSE ? 1048 : 10;
	for (uint64_t s = 0; s + slot <= st->nblocks; s += slot) {
		uint64_t len = 1 + rng_next(&seed) % (which == S_SPARSE ? 512 : slot - 2);
		uint64_t off = 1 + rng_next(&seed) % (slot - 1 - len);

		bm_set(st->bm, s + off, s + off + len, true);
		st->extents++;
	}
	/* Every run (extents and gaps) for the writer's toggle pairs. */
	st->runs = malloc(sizeof(*st->runs) * (2 * st->extents + 2));
	for (b = 0; b < st->nblocks;) {
		bool v = bm_all_set(st->bm, b, b + 1);
		uint64_t e = b + 1;

		while (e < st->nblocks && bm_all_set(st->bm, e, e + 1) == v)
			e++;
		st->runs[st->nruns++] = (struct run){ b, e, v };
		b = e;
	}
	for (unsigned i = 0; i < QUERIES; i++) {
		uint32_t len = 1 + (uint32_t)(rng_next(&seed) % 64);

		st->ql[i] = len;
		st->qs[i] = (uint32_t)(rng_next(&seed) % (st->nblocks - len + 1));
	}
	pthread_mutex_init(&st->mu, NULL);
	pthread_rwlock_init(&st->rw, NULL);
	cfg.size = st->nblocks * BS;
	if (rdm_region_create(&cfg, &st->r) != 0 || rdm_region_load(st->r, load_get, st) != 0)
		abort();
	rcu_barrier();
	st->rdm_steady = rdm_mem_current(rdm_region_mem(st->r));
	return st;
}

/* ---- CPU placement ---- */

static int cpus[2] = { -1, -1 };

static void find_cpus(void)
{
	cpu_set_t set;
	int n = 0;

	if (cpus[0] >= 0 || sched_getaffinity(0, sizeof(set), &set) != 0)
		return;
	for (int c = 0; c < CPU_SETSIZE && n < 2; c++) {
		if (CPU_ISSET(c, &set))
			cpus[n++] = c;
	}
}

static void pin(pthread_t t, int cpu)
{
	cpu_set_t set;

	if (cpu < 0)
		return;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	pthread_setaffinity_np(t, sizeof(set), &set);
}

/* ---- the writer ---- */

struct writer {
	struct state *st;
	int cont;
	double rate; /* changes per second; < 0 flat out */
	atomic_bool stop;
	uint64_t changes;
	double elapsed;
};

static void change(struct state *st, int cont, uint64_t s, uint64_t e, bool v)
{
	switch (cont) {
	case C_RDM:
		if ((v ? rdm_populate(st->r, s * BS, (e - s) * BS)
		       : rdm_discard(st->r, s * BS, (e - s) * BS)) != 0)
			abort();
		break;
	case C_MUTEX:
		pthread_mutex_lock(&st->mu);
		bm_set(st->bm, s, e, v);
		pthread_mutex_unlock(&st->mu);
		break;
	default:
		pthread_rwlock_wrlock(&st->rw);
		bm_set(st->bm, s, e, v);
		pthread_rwlock_unlock(&st->rw);
		break;
	}
}

static void *writer_main(void *arg)
{
	struct writer *w = arg;
	struct state *st = w->st;
	uint64_t seed = 7, done = 0;
	double t0 = now_s(), t = t0;

	/* Relaxed: a stop request; the join orders everything else. */
	while (!atomic_load_explicit(&w->stop, memory_order_relaxed)) {
		const struct run *r;
		uint64_t len, n, s;

		t = now_s();
		if (w->rate > 0 && (double)done >= (t - t0) * w->rate) {
			struct timespec ts = { 0, 20000 };

			nanosleep(&ts, NULL);
			continue;
		}
		r = &st->runs[rng_next(&seed) % st->nruns];
		len = r->e - r->s;
		n = 1 + rng_next(&seed) % (len < 64 ? len : 64);
		s = r->s + rng_next(&seed) % (len - n + 1);
		change(st, w->cont, s, s + n, !r->populated);
		change(st, w->cont, s, s + n, r->populated);
		done += 2;
	}
	w->changes = done;
	w->elapsed = now_s() - t0;
	return NULL;
}

/* ---- the reader (the measured thread) ---- */

static void bench_case(struct rdm_bench *b, void *arg)
{
	const struct bench_arg *a = arg;
	struct state *st;
	struct writer w;
	pthread_t wt;
	cpu_set_t old;
	uint64_t queries = 0, hits = 0;
	unsigned qi = 0;
	double t0, t1;
	struct result *res = &results[a->kase][a->state][a->cont];
	struct rdm_mem *mem;

	if (states[a->state] == NULL)
		states[a->state] = build_state(a->state);
	st = states[a->state];
	mem = rdm_region_mem_mut(st->r);
	find_cpus();
	pthread_getaffinity_np(pthread_self(), sizeof(old), &old);
	pin(pthread_self(), cpus[0]);

	rcu_barrier();
	rdm_mem_reset_peak(mem);
	memset(&w, 0, sizeof(w));
	w.st = st;
	w.cont = a->cont;
	w.rate = case_rates[a->kase];
	atomic_init(&w.stop, false);
	if (a->kase != K_SINGLE) {
		if (pthread_create(&wt, NULL, writer_main, &w) != 0) {
			rdm_bench_fail(b, "cannot start the writer");
			return;
		}
		pin(wt, cpus[1]);
	}

	t0 = now_s();
	while (rdm_bench_running(b)) {
		for (unsigned k = 0; k < BATCH; k++, qi = (qi + 1) & (QUERIES - 1)) {
			uint64_t s = st->qs[qi], e = s + st->ql[qi];
			bool v;

			switch (a->cont) {
			case C_RDM:
				v = rdm_is_populated(st->r, s * BS, (e - s) * BS);
				break;
			case C_MUTEX:
				pthread_mutex_lock(&st->mu);
				v = bm_all_set(st->bm, s, e);
				pthread_mutex_unlock(&st->mu);
				break;
			default:
				pthread_rwlock_rdlock(&st->rw);
				v = bm_all_set(st->bm, s, e);
				pthread_rwlock_unlock(&st->rw);
				break;
			}
			hits += v;
		}
		queries += BATCH;
	}
	t1 = now_s();
	rdm_bench_keep(&hits);
	if (a->kase != K_SINGLE) {
		atomic_store_explicit(&w.stop, true, memory_order_relaxed);
		pthread_join(wt, NULL);
	}
	pthread_setaffinity_np(pthread_self(), sizeof(old), &old);

	res->ran = true;
	res->mops = (double)queries / (t1 - t0) / 1e6;
	res->writer_kcps = w.elapsed > 0 ? (double)w.changes / w.elapsed / 1e3 : 0;
	res->bytes = st->rdm_steady;
	res->peak = a->cont == C_RDM ? rdm_mem_peak(mem) : st->rdm_steady;
	rdm_bench_set_items(b, (int64_t)queries);
	rdm_bench_set_counter(b, "writer_kcps", res->writer_kcps, RDM_BENCH_COUNTER_VALUE);
	if (a->cont == C_RDM) {
		rdm_bench_set_counter(b, "bytes", (double)res->bytes, RDM_BENCH_COUNTER_VALUE);
		rdm_bench_set_counter(b, "peak_bytes", (double)res->peak, RDM_BENCH_COUNTER_VALUE);
	}
}

/* frag1t: 1 TiB at 4 KiB blocks, every other block populated; memory only. */
static const uint64_t alternating = UINT64_C(0x5555555555555555);

static void frag1t_get(void *opaque, uint64_t first, uint64_t *words)
{
	(void)opaque;
	(void)first;
	for (unsigned i = 0; i < 64; i++)
		words[i] = alternating;
}

static void bench_frag1t(struct rdm_bench *b, void *arg)
{
	struct rdm_region_config cfg = { .struct_size = sizeof(cfg), .block_size = BS };
	struct result *res = &results[K_FRAG1T][S_FRAG][C_RDM];
	struct rdm_region *r;

	(void)arg;
	cfg.size = (nblocks_opaque << 8) * BS; /* 2^28 blocks = 1 TiB */
	while (rdm_bench_running(b)) {
		if (rdm_region_create(&cfg, &r) != 0 || rdm_region_load(r, frag1t_get, NULL) != 0) {
			rdm_bench_fail(b, "cannot build the 1 TiB state");
			return;
		}
		rcu_barrier();
		res->bytes = rdm_mem_current(rdm_region_mem(r));
		res->peak = rdm_mem_peak(rdm_region_mem(r));
		if (!rdm_is_populated(r, 0, BS) || rdm_is_populated(r, BS, BS))
			rdm_bench_fail(b, "wrong state");
		rdm_region_destroy(r);
	}
	res->ran = true;
	rdm_bench_set_counter(b, "bytes", (double)res->bytes, RDM_BENCH_COUNTER_VALUE);
	rdm_bench_set_counter(b, "bitmap_bytes", (double)(cfg.size / BS / 8), RDM_BENCH_COUNTER_VALUE);
}

static void finish(void)
{
	for (int k = 0; k < NCASE; k++) {
		for (int s = 0; s < NSTATE; s++) {
			const struct result *r = results[k][s];
			uint64_t bitmap_bytes;

			if (!r[C_RDM].ran && !r[C_MUTEX].ran && !r[C_RWLOCK].ran)
				continue;
			bitmap_bytes = k == K_FRAG1T ? (nblocks_opaque << 8) / 8 : nblocks_opaque / 8;
			printf("SUMMARY state case=%s state=%s rdm_mops=%.2f bitmap_mutex_mops=%.2f "
			       "rwlock_mops=%.2f rdm_writer_kcps=%.1f rdm_bytes=%zu rdm_peak_bytes=%zu "
			       "bitmap_bytes=%llu\n",
			       case_names[k], state_names[s], r[C_RDM].mops, r[C_MUTEX].mops,
			       r[C_RWLOCK].mops, r[C_RDM].writer_kcps, r[C_RDM].bytes, r[C_RDM].peak,
			       (unsigned long long)bitmap_bytes);
			if (k != K_FRAG1T && (r[C_MUTEX].ran || r[C_RWLOCK].ran))
				printf("# state case=%s state=%s writer_kcps rdm=%.1f bitmap_mutex=%.1f "
				       "rwlock=%.1f\n",
				       case_names[k], state_names[s], r[C_RDM].writer_kcps,
				       r[C_MUTEX].writer_kcps, r[C_RWLOCK].writer_kcps);
		}
	}
	fflush(stdout);
}

void rdm_bench_register_state(void)
{
	static char names[NCASE][NSTATE][NCONT][64];

	rdm_bench_keep(&nblocks_opaque);

	for (int k = 0; k < K_FRAG1T; k++) {
		for (int s = 0; s < NSTATE; s++) {
			for (int c = 0; c < NCONT; c++) {
				struct rdm_bench_def def = { 0 };

				args[k][s][c] = (struct bench_arg){ k, s, c };
				snprintf(names[k][s][c], sizeof(names[k][s][c]), "state/%s/%s/%s",
					 case_names[k], state_names[s], cont_names[c]);
				def.name = names[k][s][c];
				def.fn = bench_case;
				def.arg = &args[k][s][c];
				def.threads = 1;
				def.real_time = true;
				def.min_time_s = 0.5;
				rdm_bench_register(&def);
			}
		}
	}
	{
		struct rdm_bench_def def = { 0 };

		def.name = "state/frag1t/frag/rdm";
		def.fn = bench_frag1t;
		def.threads = 1;
		def.real_time = true;
		def.iterations = 1;
		rdm_bench_register(&def);
	}
	rdm_bench_on_finish(finish);
}
