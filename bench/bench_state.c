/* SPDX-License-Identifier: MIT */
/*
 * bench/bench_state.c - region state: rdm's lock-free is_populated against a
 * QEMU-style bitmap under a pthread mutex and under a pthread rwlock.
 *
 * States (2^20 blocks): sparse (~1,000 extents) and frag (~100,000 extents).
 * The reader (pinned to the first CPU of the process's affinity mask)
 * queries random ranges of 1..64 blocks. A writer (pinned to the second)
 * runs toggle pairs on a gap (populate 1..64 blocks of it, discard them
 * again, so the state keeps its shape), and each change makes the backend
 * call a real update makes, on a sim backend (rdm/backend.h): a map of the
 * populated range, an unmap of the discarded one.
 *  - rdm's writer is rdm_populate()/rdm_discard() on a region without an
 *    IOMMU worker: the calling thread is the applier and a listener makes
 *    the sim call, QEMU's synchronous path. A worker would add a third
 *    thread to two pinned CPUs and measure its pipeline (bench_pipeline.c
 *    does), not the read side.
 *  - The peers' writer holds its lock across the bitmap update and the same
 *    sim call, as QEMU holds the BQL while VFIO maps.
 * Cases: single (no writer), writer100k / writer500k (every writer limited
 * to that many changes per second; the achieved rate of each is printed),
 * writermax (flat out); writer_alone (the writers' cost per change with no
 * reader, see bench_writer_alone()). One benchmark per case and state runs rounds of
 * rdm, bitmap_mutex, rwlock in turn (interleaved: rdm for ROUND_QUERIES
 * queries, each peer for as long), so drift on a shared machine hits all of
 * them; --benchmark_repetitions adds rounds. The time Google Benchmark
 * reports is rdm's (the peers run with its timing paused), so compare.py
 * compares rdm's read path between two builds. Memory is what rdm's counted allocator reports for the
 * region's state, the flat view included (core/flat.h): steady (before the
 * writer starts) and peak (during the case, so memory waiting for a grace
 * period shows). frag1t builds the worst state (1 TiB at 4 KiB blocks,
 * alternating) for memory only.
 *
 * Built twice: into rdm-bench (librdm.a) and into rdm-bench-state-shared
 * (librdm.so, as a VMM links it; public API only, so no memory figures).
 *
 * One SUMMARY line per case and state, printed after all cases ran; the
 * throughputs are the median over rounds, with _min and _max beside them:
 * SUMMARY state case=<name> state=<sparse|frag> link=<static|shared> rounds=<n>
 *   rdm_mops=<x> rdm_mops_min= rdm_mops_max= bitmap_mutex_mops=<y> (_min, _max)
 *   rwlock_mops=<z> (_min, _max) rdm_vs_mutex=<x/y> rdm_writer_kcps=<achieved>
 *   bitmap_mutex_writer_kcps= rwlock_writer_kcps= rdm_bytes=<a> rdm_peak_bytes=<p>
 *   bitmap_bytes=<b>
 */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <urcu-bp.h>

#include <rdm/backend.h>
#include <rdm/region.h>

#ifndef RDM_BENCH_SHARED
#include "core/alloc.h"
#include "core/region_internal.h"
#define LINK "static"
#else
#define LINK "shared"
#endif
#include "shim.h"

#define BS UINT64_C(4096)
#define QUERIES (1u << 16)
#define BATCH 64
#define ROUNDS 5
/* rdm's share of a round: this many queries (its time is what Google
 * Benchmark reports, so compare.py compares rdm's query time), at most
 * ROUND_MAX_S; each peer then runs for as long as rdm did. */
#define ROUND_QUERIES (UINT64_C(1) << 21)
#define ROUND_MAX_S 2.0
#define MAX_SAMPLES 256
/* The sim's address for region offset 0 (any page-aligned value). */
#define VADDR UINT64_C(0x100000000000)

enum { C_RDM, C_MUTEX, C_RWLOCK, NCONT };
enum { S_SPARSE, S_FRAG, NSTATE };
enum { K_SINGLE, K_W100K, K_W500K, K_WMAX, K_FRAG1T, NCASE };

static const char *const cont_names[NCONT] = { "rdm", "bitmap_mutex", "rwlock" };
static const char *const state_names[NSTATE] = { "sparse", "frag" };
static const char *const case_names[NCASE] = { "single", "writer100k", "writer500k", "writermax",
					       "frag1t" };
static const double case_rates[NCASE] = { 0, 100e3, 500e3, -1, 0 };

/* Kept opaque to the compiler: its address escapes to rdm_bench_keep() at
 * registration, so no size below is a compile-time constant. */
static uint64_t nblocks_opaque = UINT64_C(1) << 20;

struct run {
	uint64_t s, e;
};

struct state {
	uint64_t nblocks;
	uint64_t *bm;
	pthread_mutex_t mu;
	pthread_rwlock_t rw;
	struct rdm_region *r;
	struct rdm_backend *sim;
	struct rdm_listener l;
	struct run *gaps;
	size_t ngaps, extents;
	uint32_t qs[QUERIES], ql[QUERIES];
	size_t rdm_steady;
};

static struct state *states[NSTATE];

struct result {
	unsigned n;
	double mops[MAX_SAMPLES], kcps[MAX_SAMPLES];
	size_t bytes, peak;
};

static struct result results[NCASE][NSTATE][NCONT];

struct bench_arg {
	int kase, state;
};

static struct bench_arg args[NCASE][NSTATE];

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

/*
 * The peers' query, as a VMM makes it: QEMU's ram_discard_manager_is_populated()
 * calls the manager's is_populated through its class, and virtio-mem's
 * (virtio_mem_rdm_is_populated()) widens the byte range to whole blocks,
 * checks it against the device and then searches the bitmap. A function of
 * its own, never inlined into the measuring loop, with the same range rules
 * as rdm_is_populated(): rdm's query is a call into the library, and a peer
 * folded into the loop would be measured doing less than any VMM does. A
 * direct call, not QEMU's indirect one: if anything, the peer's side is the
 * cheaper.
 */
static __attribute__((noinline)) bool peer_is_populated(const struct state *st, uint64_t offset,
							uint64_t length)
{
	uint64_t size = st->nblocks * BS;

	if (offset >= size || length - 1 >= size - offset)
		return false;
	return bm_all_set(st->bm, offset / BS, (offset + length - 1) / BS + 1);
}

/* ---- the backend call every change makes ---- */

static int sim_call(struct rdm_backend *sim, uint64_t off, uint64_t len, bool populate)
{
	uint64_t done;

	return populate ? rdm_backend_map(sim, off, len, VADDR + off)
			: rdm_backend_unmap(sim, off, len, &done);
}

static int l_populate(struct rdm_listener *l, uint64_t off, uint64_t len)
{
	return sim_call(l->opaque, off, len, true);
}

static void l_discard(struct rdm_listener *l, uint64_t off, uint64_t len)
{
	if (sim_call(l->opaque, off, len, false) != 0)
		abort();
}

static const struct rdm_listener_ops sim_listener = { l_populate, l_discard };

#ifndef RDM_BENCH_SHARED
static void load_get(void *opaque, uint64_t first, uint64_t *words)
{
	const struct state *st = opaque;

	if (first < st->nblocks)
		memcpy(words, &st->bm[first / 64], 64 * sizeof(uint64_t));
}
#endif

static void *no_op(void *arg)
{
	return arg;
}

/*
 * A VMM is multi-threaded long before it queries (vCPU threads, the IOMMU
 * worker, an I/O thread). glibc (2.34 on) takes a pthread mutex without an
 * atomic instruction while the process has never had a second thread, so
 * a single-threaded run would time a lock no VMM ever takes: start and join
 * one thread first, which leaves the process multi-threaded for good
 * (measured, static build, no writer: the mutex peer ran at ~100 Mops/s
 * before, ~50 after; rdm's query, which takes no lock, did not move).
 */
static void go_multithreaded(void)
{
	pthread_t t;

	if (pthread_create(&t, NULL, no_op, NULL) != 0 || pthread_join(t, NULL) != 0)
		abort();
}

static struct state *build_state(int which)
{
	struct state *st = calloc(1, sizeof(*st));
	uint64_t seed = 42 + (uint64_t)which, slot, b;
	struct rdm_region_config cfg = { .struct_size = sizeof(cfg), .block_size = BS };
	struct rdm_sim_config scfg = { .struct_size = sizeof(scfg), .limit = RDM_SIM_UNLIMITED };

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
	/* The gaps, for the writer's toggle pairs. */
	st->gaps = malloc(sizeof(*st->gaps) * (st->extents + 2));
	for (b = 0; b < st->nblocks;) {
		bool v = bm_all_set(st->bm, b, b + 1);
		uint64_t e = b + 1;

		while (e < st->nblocks && bm_all_set(st->bm, e, e + 1) == v)
			e++;
		if (!v)
			st->gaps[st->ngaps++] = (struct run){ b, e };
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
	if (rdm_backend_sim_create(&scfg, &st->sim) != 0 || rdm_region_create(&cfg, &st->r) != 0)
		abort();
#ifndef RDM_BENCH_SHARED
	if (rdm_region_load(st->r, load_get, st) != 0)
		abort();
#else
	for (b = 0; b < st->nblocks;) {
		uint64_t e = b;

		while (e < st->nblocks && bm_all_set(st->bm, e, e + 1))
			e++;
		if (e > b && rdm_populate(st->r, b * BS, (e - b) * BS) != 0)
			abort();
		b = e + 1;
	}
#endif
	/* The listener maps every extent now (its registration replay), as a
	 * VMM's IOMMU listener would have; the writers then map and unmap
	 * inside gaps only. */
	st->l = (struct rdm_listener){ .ops = &sim_listener, .length = cfg.size, .opaque = st->sim };
	if (rdm_listener_register(st->r, &st->l) != 0)
		abort();
	rcu_barrier();
#ifndef RDM_BENCH_SHARED
	st->rdm_steady = rdm_mem_current(rdm_region_mem(st->r));
#endif
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
		if (sim_call(st->sim, s * BS, (e - s) * BS, v) != 0)
			abort();
		pthread_mutex_unlock(&st->mu);
		break;
	default:
		pthread_rwlock_wrlock(&st->rw);
		bm_set(st->bm, s, e, v);
		if (sim_call(st->sim, s * BS, (e - s) * BS, v) != 0)
			abort();
		pthread_rwlock_unlock(&st->rw);
		break;
	}
}

/* One toggle pair: a gap, a length of 1..64 blocks inside it and a start,
 * from *seed; populate, then discard again (the state keeps its shape). */
static void toggle_pair(struct state *st, int cont, uint64_t *seed)
{
	const struct run *g = &st->gaps[rng_next(seed) % st->ngaps];
	uint64_t len = g->e - g->s, n, s;

	n = 1 + rng_next(seed) % (len < 64 ? len : 64);
	s = g->s + rng_next(seed) % (len - n + 1);
	change(st, cont, s, s + n, true);
	change(st, cont, s, s + n, false);
}

static void *writer_main(void *arg)
{
	struct writer *w = arg;
	struct state *st = w->st;
	uint64_t seed = 7, done = 0;
	double t0 = now_s(), t = t0;

	/* Relaxed: a stop request; the join orders everything else. */
	while (!atomic_load_explicit(&w->stop, memory_order_relaxed)) {
		t = now_s();
		if (w->rate > 0 && (double)done >= (t - t0) * w->rate) {
			struct timespec ts = { 0, 20000 };

			nanosleep(&ts, NULL);
			continue;
		}
		toggle_pair(st, w->cont, &seed);
		done += 2;
	}
	w->changes = done;
	w->elapsed = now_s() - t0;
	return NULL;
}

/* ---- the reader (the measured thread): one contender, one window ---- */

/* Runs until max_q queries or max_s seconds; returns the seconds taken. */
static double measure(struct state *st, int kase, int cont, struct result *res, uint64_t max_q,
		      double max_s)
{
	struct writer w;
	pthread_t wt;
	uint64_t queries = 0, hits = 0;
	unsigned qi = 0;
	double t0, t1, end;

	memset(&w, 0, sizeof(w));
	w.st = st;
	w.cont = cont;
	w.rate = case_rates[kase];
	atomic_init(&w.stop, false);
	if (kase != K_SINGLE) {
		if (pthread_create(&wt, NULL, writer_main, &w) != 0)
			abort();
		pin(wt, cpus[1]);
	}
	t0 = now_s();
	end = t0 + max_s;
	do {
		for (unsigned k = 0; k < BATCH; k++, qi = (qi + 1) & (QUERIES - 1)) {
			uint64_t s = st->qs[qi], e = s + st->ql[qi];
			bool v;

			switch (cont) {
			case C_RDM:
				v = rdm_is_populated(st->r, s * BS, (e - s) * BS);
				break;
			case C_MUTEX:
				pthread_mutex_lock(&st->mu);
				v = peer_is_populated(st, s * BS, (e - s) * BS);
				pthread_mutex_unlock(&st->mu);
				break;
			default:
				pthread_rwlock_rdlock(&st->rw);
				v = peer_is_populated(st, s * BS, (e - s) * BS);
				pthread_rwlock_unlock(&st->rw);
				break;
			}
			hits += v;
		}
		queries += BATCH;
		t1 = now_s();
	} while (t1 < end && queries < max_q);
	rdm_bench_keep(&hits);
	if (kase != K_SINGLE) {
		atomic_store_explicit(&w.stop, true, memory_order_relaxed);
		pthread_join(wt, NULL);
	}
	if (res->n < MAX_SAMPLES) {
		res->mops[res->n] = (double)queries / (t1 - t0) / 1e6;
		res->kcps[res->n] = w.elapsed > 0 ? (double)w.changes / w.elapsed / 1e3 : 0;
		res->n++;
	}
	return t1 - t0;
}

/* One iteration = one round: rdm for ROUND_QUERIES queries (the timed
 * part), then bitmap_mutex and rwlock each for as long (timing paused). */
static void bench_case(struct rdm_bench *b, void *arg)
{
	const struct bench_arg *a = arg;
	struct result *res = results[a->kase][a->state];
	struct state *st;
	uint64_t queries = 0;
	cpu_set_t old;

	go_multithreaded();
	if (states[a->state] == NULL)
		states[a->state] = build_state(a->state);
	st = states[a->state];
	find_cpus();
	pthread_getaffinity_np(pthread_self(), sizeof(old), &old);
	pin(pthread_self(), cpus[0]);
	while (rdm_bench_running(b)) {
		double window;
#ifndef RDM_BENCH_SHARED
		struct rdm_mem *mem = rdm_region_mem_mut(st->r);

		rdm_bench_pause(b);
		rcu_barrier();
		rdm_mem_reset_peak(mem);
		rdm_bench_resume(b);
#endif
		window = measure(st, a->kase, C_RDM, &res[C_RDM], ROUND_QUERIES, ROUND_MAX_S);
		rdm_bench_pause(b);
#ifndef RDM_BENCH_SHARED
		if (rdm_mem_peak(mem) > res[C_RDM].peak)
			res[C_RDM].peak = rdm_mem_peak(mem);
#endif
		for (int c = C_MUTEX; c < NCONT; c++)
			measure(st, a->kase, c, &res[c], UINT64_MAX, window);
		rdm_bench_resume(b);
		queries += ROUND_QUERIES;
	}
	pthread_setaffinity_np(pthread_self(), sizeof(old), &old);
	res[C_RDM].bytes = st->rdm_steady;
	rdm_bench_set_items(b, (int64_t)queries);
	rdm_bench_set_counter(b, "rdm_mops", res[C_RDM].mops[res[C_RDM].n - 1], RDM_BENCH_COUNTER_VALUE);
	rdm_bench_set_counter(b, "mutex_mops", res[C_MUTEX].mops[res[C_MUTEX].n - 1],
			      RDM_BENCH_COUNTER_VALUE);
}

/*
 * writer_alone: the cost of one change itself, with no reader: the writer
 * of each contender on the first CPU, the same toggle pairs (the writer
 * thread's choice of gaps and lengths, from the same seed) for rdm and for
 * the mutex peer in turn, WA_PAIRS pairs per round, each round one
 * iteration. rdm's change is rdm_populate()/rdm_discard() on the region
 * without a worker (its listener makes the sim call); the peer's locks,
 * sets the bitmap and makes the same sim call. Prints ns per change, the
 * median over rounds with min and max, and the ratio:
 * SUMMARY state-writer state=<s> link=<l> rounds=<n> rdm_ns_per_change= (_min, _max)
 *   bitmap_mutex_ns_per_change= (_min, _max) rdm_vs_mutex=<rdm ns / peer ns>
 */
#define WA_PAIRS 20000u

static double wa_ns[NSTATE][2][MAX_SAMPLES];
static unsigned wa_n[NSTATE];
static int wa_args[NSTATE];

/* WA_PAIRS toggle pairs from seed 7 (toggle_pair(), as writer_main()); seconds. */
static double writer_pass(struct state *st, int cont)
{
	uint64_t seed = 7;
	double t0 = now_s();

	for (unsigned i = 0; i < WA_PAIRS; i++)
		toggle_pair(st, cont, &seed);
	return now_s() - t0;
}

static void bench_writer_alone(struct rdm_bench *b, void *arg)
{
	int which = *(const int *)arg;
	struct state *st;
	cpu_set_t old;

	go_multithreaded();
	if (states[which] == NULL)
		states[which] = build_state(which);
	st = states[which];
	find_cpus();
	pthread_getaffinity_np(pthread_self(), sizeof(old), &old);
	pin(pthread_self(), cpus[0]);
	while (rdm_bench_running(b)) {
		double rdm_s = writer_pass(st, C_RDM), peer_s;

		rdm_bench_pause(b);
		peer_s = writer_pass(st, C_MUTEX);
		rdm_bench_resume(b);
		if (wa_n[which] < MAX_SAMPLES) {
			wa_ns[which][0][wa_n[which]] = rdm_s * 1e9 / (2.0 * WA_PAIRS);
			wa_ns[which][1][wa_n[which]] = peer_s * 1e9 / (2.0 * WA_PAIRS);
			wa_n[which]++;
		}
	}
	pthread_setaffinity_np(pthread_self(), sizeof(old), &old);
	if (wa_n[which] > 0) {
		rdm_bench_set_counter(b, "rdm_ns_per_change", wa_ns[which][0][wa_n[which] - 1],
				      RDM_BENCH_COUNTER_VALUE);
		rdm_bench_set_counter(b, "mutex_ns_per_change", wa_ns[which][1][wa_n[which] - 1],
				      RDM_BENCH_COUNTER_VALUE);
	}
}

/* frag1t: 1 TiB at 4 KiB blocks, every other block populated; memory only. */
#ifndef RDM_BENCH_SHARED
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
	res->n = 1;
	rdm_bench_set_counter(b, "bytes", (double)res->bytes, RDM_BENCH_COUNTER_VALUE);
	rdm_bench_set_counter(b, "bitmap_bytes", (double)(cfg.size / BS / 8), RDM_BENCH_COUNTER_VALUE);
}
#endif

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

/* Median, min and max of a result's samples (0 when none). */
static void stats(const double *v, unsigned n, double out[3])
{
	double s[MAX_SAMPLES];

	out[0] = out[1] = out[2] = 0;
	if (n == 0)
		return;
	memcpy(s, v, n * sizeof(double));
	qsort(s, n, sizeof(double), cmp_double);
	out[0] = n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
	out[1] = s[0];
	out[2] = s[n - 1];
}

static void finish(void)
{
	for (int k = 0; k < NCASE; k++) {
		for (int s = 0; s < NSTATE; s++) {
			const struct result *r = results[k][s];
			double m[NCONT][3], w[NCONT][3];
			uint64_t bitmap_bytes;

			if (r[C_RDM].n == 0)
				continue;
			bitmap_bytes = k == K_FRAG1T ? (nblocks_opaque << 8) / 8 : nblocks_opaque / 8;
			if (k == K_FRAG1T) {
				printf("SUMMARY state case=%s state=%s link=%s rdm_bytes=%zu "
				       "rdm_peak_bytes=%zu bitmap_bytes=%llu\n",
				       case_names[k], state_names[s], LINK, r[C_RDM].bytes, r[C_RDM].peak,
				       (unsigned long long)bitmap_bytes);
				continue;
			}
			for (int c = 0; c < NCONT; c++) {
				stats(r[c].mops, r[c].n, m[c]);
				stats(r[c].kcps, r[c].n, w[c]);
			}
			printf("SUMMARY state case=%s state=%s link=%s rounds=%u", case_names[k],
			       state_names[s], LINK, r[C_RDM].n);
			for (int c = 0; c < NCONT; c++)
				printf(" %s_mops=%.2f %s_mops_min=%.2f %s_mops_max=%.2f", cont_names[c],
				       m[c][0], cont_names[c], m[c][1], cont_names[c], m[c][2]);
			printf(" rdm_vs_mutex=%.2f", m[C_MUTEX][0] > 0 ? m[C_RDM][0] / m[C_MUTEX][0] : 0);
			for (int c = 0; c < NCONT; c++)
				printf(" %s_writer_kcps=%.1f", cont_names[c], w[c][0]);
			printf(" rdm_bytes=%zu rdm_peak_bytes=%zu bitmap_bytes=%llu\n", r[C_RDM].bytes,
			       r[C_RDM].peak, (unsigned long long)bitmap_bytes);
		}
	}
	for (int s = 0; s < NSTATE; s++) {
		double r[3], p[3];

		if (wa_n[s] == 0)
			continue;
		stats(wa_ns[s][0], wa_n[s], r);
		stats(wa_ns[s][1], wa_n[s], p);
		printf("SUMMARY state-writer state=%s link=%s rounds=%u rdm_ns_per_change=%.1f "
		       "rdm_ns_per_change_min=%.1f rdm_ns_per_change_max=%.1f bitmap_mutex_ns_per_change=%.1f "
		       "bitmap_mutex_ns_per_change_min=%.1f bitmap_mutex_ns_per_change_max=%.1f rdm_vs_mutex=%.2f\n",
		       state_names[s], LINK, wa_n[s], r[0], r[1], r[2], p[0], p[1], p[2],
		       p[0] > 0 ? r[0] / p[0] : 0);
	}
	fflush(stdout);
}

void rdm_bench_register_state(void)
{
	static char names[NCASE][NSTATE][64];

	rdm_bench_keep(&nblocks_opaque);

	for (int k = 0; k < K_FRAG1T; k++) {
		for (int s = 0; s < NSTATE; s++) {
			struct rdm_bench_def def = { 0 };

			args[k][s] = (struct bench_arg){ k, s };
			snprintf(names[k][s], sizeof(names[k][s]), "state%s/%s/%s",
				 LINK[1] == 'h' ? "_shared" : "", case_names[k], state_names[s]);
			def.name = names[k][s];
			def.fn = bench_case;
			def.arg = &args[k][s];
			def.threads = 1;
			def.real_time = true;
			def.iterations = ROUNDS;
			rdm_bench_register(&def);
		}
	}
	for (int s = 0; s < NSTATE; s++) {
		static char wnames[NSTATE][64];
		struct rdm_bench_def def = { 0 };

		wa_args[s] = s;
		snprintf(wnames[s], sizeof(wnames[s]), "state%s/writer_alone/%s", LINK[1] == 'h' ? "_shared" : "",
			 state_names[s]);
		def.name = wnames[s];
		def.fn = bench_writer_alone;
		def.arg = &wa_args[s];
		def.threads = 1;
		def.real_time = true;
		def.iterations = ROUNDS;
		rdm_bench_register(&def);
	}
#ifndef RDM_BENCH_SHARED
	{
		struct rdm_bench_def def = { 0 };

		def.name = "state/frag1t/frag";
		def.fn = bench_frag1t;
		def.threads = 1;
		def.real_time = true;
		def.iterations = 1;
		rdm_bench_register(&def);
	}
#endif
	rdm_bench_on_finish(finish);
}
