/* bench/bench_pipeline.c - software cost per change through the IOMMU worker, against a direct path. */
/*
 * What is measured: the wall time of a whole stream of changes, submitted
 * and waited for, divided by the number of changes. Calls into the IOMMU
 * cost nothing but their own bookkeeping: the sim only accumulates its
 * modelled time (rdm_sim_config call_ns/page_ns feed a counter, never a
 * delay), so every nanosecond measured is software - rdm's or the peer's.
 *
 * rdm: each producer thread submits asynchronously with single-change calls
 * (rdm_producer_populate/discard), keeps at most WINDOW tickets outstanding
 * (waiting for the oldest when the window is full) and waits for every
 * ticket. The worker thread runs in parallel; its time counts because the
 * stream is not over until the last ticket completes.
 *
 * The peer, a QEMU-like direct path: per change, lock a pthread mutex,
 * update a plain bitmap, call rdm_backend_map/unmap on a sim of the same
 * configuration, unlock.
 *
 * Like for like: the regions use RDM_POLICY_BLOCK and every change is one
 * block, so each change is exactly one MAP or one UNMAP call for both. The
 * odd blocks of each producer's range are populated (and mapped) before
 * timing and stay so, and the stream changes only even blocks: two even
 * blocks discarded in one batch are separated by a mapped block, so the
 * planner cannot merge their unmaps into one call. Each round populates
 * every even block of the producer's range in ascending order, then
 * discards them in the same order: a block's populate has completed long
 * before its discard is submitted (more than WINDOW changes apart), so
 * nothing is superseded (checked), and every round starts from the same
 * state.
 *
 * Order: the cases named pipeline/... visit the even blocks in ascending
 * order, as virtio-mem's plugs do; those named pipeline-scattered/... visit
 * them in a scattered order (i * SCATTER_STRIDE mod m, a permutation:
 * the stride is a prime above m), the same in both passes and for both
 * paths, so that neither the planner's layout nor the sim's model finds
 * its next node beside the last one. Its SUMMARY line (SUMMARY
 * pipeline-scattered) prints the same goals: the worse of the two orders
 * is the one that counts.
 *
 * Threads: producer 0 is Google Benchmark's thread; producers 1.. are
 * threads started per case that run their stream between two barriers per
 * round. Producer k is pinned to rdm_bench_cpu(k), the k-th CPU of the
 * process's affinity mask, and the worker (which inherits the mask of the
 * thread that creates it) to the CPU after the last producer's; with more
 * threads than CPUs they wrap around. One round is one benchmark iteration
 * and gives the wall time and the process's CPU time (every thread: the
 * producers, the worker, liburcu's call_rcu thread) per change, and the
 * worker thread's own CPU time per change (its thread CPU clock): printed
 * as worker_cpu_ns_per_change and, over the wall time per change, as
 * worker_busy - near 1 the stream is bound by the one thread that applies
 * every change (its idle polling counts too: it is CPU the worker took),
 * well below 1 by the producers or the handoff, and the process's context
 * switches per 1,000 changes (getrusage; every thread, both paths): sleeps
 * and preemptions, what threads sharing a CPU pay. One
 * repetition is PL_ROUNDS rounds, reported as their median; the
 * repetitions of rdm and of the direct path alternate (rdm, direct, rdm,
 * direct ...) so that outside load on a shared machine hits both alike, and
 * the SUMMARY line per producer count (1, 2, 4) gives median, min and max
 * over the repetitions, changes per second (all producers together) and
 * the goals of issue 11, printed and never asserted: with one producer, ns
 * per change <= 1.5x the direct path's and <= 250 ns; with 2 and 4,
 * changes/s at least the direct path's (which serializes on its lock).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <linux/perf_event.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>

#include <rdm/backend.h>
#include <rdm/error.h>
#include <rdm/region.h>
#include <rdm/worker.h>

#include "core/region_internal.h"
#include "iommu/planner.h"
#include "shim.h"

#define WINDOW 64u          /* tickets outstanding per producer, at most */
#define MAX_PRODUCERS 4
#define PL_REPS 5          /* repetitions by default (--benchmark_repetitions) */
#define PL_ROUNDS 10       /* rounds per repetition */
#define MAX_SAMPLES 1024
#define BLOCK_SIZE (2ull << 20) /* virtio-mem's subblock */
#define HOST_BASE 0x7f0000000000ull /* never dereferenced: no release callback */

/* Even blocks changed per producer per round; opaque to the compiler. */
static uint32_t blocks_per_producer = 8192;

static uint32_t stream_blocks(void)
{
	rdm_bench_keep(&blocks_per_producer);
	return blocks_per_producer;
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ------------------------------------------------------------ results */

struct samples {
	double v[MAX_SAMPLES];
	unsigned n;
};

/* Per repetition (one registered copy of a case): the median over its
 * rounds of wall ns per change, of CPU ns per change (the process's and the
 * worker thread's) and of context switches per 1,000 changes. */
struct pl_results {
	struct samples ns, cpu_ns, worker_cpu_ns, switches;
};

enum { ORDER_ASCENDING, ORDER_SCATTERED, NORDERS };
static const char *const order_name[NORDERS] = {"pipeline", "pipeline-scattered"};

/* A prime above any blocks_per_producer used (so i -> i * stride mod m is a
 * permutation of [0, m)), far from a multiple of m for powers of two. */
#define SCATTER_STRIDE 1000003u

static struct pl_results pl_res[NORDERS][2][MAX_PRODUCERS + 1]; /* [order][use_rdm][producers] */
static uint64_t rdm_changes[NORDERS][MAX_PRODUCERS + 1], rdm_batches[NORDERS][MAX_PRODUCERS + 1];

static void add_sample(struct samples *s, double v)
{
	if (s->n < MAX_SAMPLES)
		s->v[s->n++] = v;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static double median(struct samples *s)
{
	if (!s->n)
		return NAN;
	qsort(s->v, s->n, sizeof(s->v[0]), cmp_double);
	return s->n % 2 ? s->v[s->n / 2] : (s->v[s->n / 2 - 1] + s->v[s->n / 2]) / 2;
}

/* After median(): sorted. */
static double min_of(const struct samples *s)
{
	return s->n ? s->v[0] : NAN;
}

static double max_of(const struct samples *s)
{
	return s->n ? s->v[s->n - 1] : NAN;
}

static uint64_t clock_ns(clockid_t id)
{
	struct timespec ts;

	if (clock_gettime(id, &ts) != 0)
		return 0;
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t cpu_ns(void)
{
	/* Every thread of the process: producers, the worker, call_rcu. */
	return clock_ns(CLOCK_PROCESS_CPUTIME_ID);
}

/* Context switches of every thread of the process, voluntary (a sleep: a
 * futex wait, a contended mutex) and involuntary (preempted). */
static uint64_t switches(void)
{
	struct rusage ru;

	if (getrusage(RUSAGE_SELF, &ru) != 0)
		return 0;
	return (uint64_t)ru.ru_nvcsw + (uint64_t)ru.ru_nivcsw;
}

/* ------------------------------------------------------ the two paths */

struct direct {
	pthread_mutex_t lock;
	uint64_t *bitmap;
	struct rdm_backend *sim;
	uint64_t iova;
};

struct bench_case {
	int nprod;
	bool use_rdm;
	int order;                /* ORDER_* */
	uint32_t m;               /* even blocks per producer */
	/* rdm */
	struct rdm_worker *w;
	struct rdm_region *r;
	struct rdm_backend *sim;
	/* the peer */
	struct direct d;
	/* helper producers */
	pthread_t th[MAX_PRODUCERS];
	pthread_barrier_t start, end;
	atomic_bool stop;
	atomic_int err;           /* first error of a helper, 0 if none */
	char msg[160];
};

static uint64_t first_block(const struct bench_case *c, int prod)
{
	return (uint64_t)prod * 2 * c->m;
}

/* The i-th block a producer's pass changes (both passes, both paths). */
static uint64_t nth_block(const struct bench_case *c, int prod, uint32_t i)
{
	uint64_t k = c->order == ORDER_SCATTERED ? (uint64_t)i * SCATTER_STRIDE % c->m : i;

	return first_block(c, prod) + 2 * k;
}

/* One round of one rdm producer: populate every even block, then discard them. */
static int rdm_stream(struct bench_case *c, struct rdm_producer *p, int prod, char *msg, size_t msglen)
{
	uint64_t tickets[WINDOW];
	unsigned head = 0, n = 0;

	for (int pass = 0; pass < 2; pass++) {
		for (uint32_t i = 0; i < c->m; i++) {
			uint64_t off = nth_block(c, prod, i) * BLOCK_SIZE, t;
			int err, res;

			if (n == WINDOW) {
				err = rdm_producer_wait(p, tickets[head], &res);
				if (err || res) {
					snprintf(msg, msglen, "wait: %d/%d %s", err, res, rdm_last_error());
					return err ? err : res;
				}
				head = (head + 1) % WINDOW;
				n--;
			}
			err = pass == 0 ? rdm_producer_populate(p, c->r, off, BLOCK_SIZE, &t)
					: rdm_producer_discard(p, c->r, off, BLOCK_SIZE, &t);
			if (err) {
				snprintf(msg, msglen, "submit: %s", rdm_last_error());
				return err;
			}
			tickets[(head + n) % WINDOW] = t;
			n++;
		}
	}
	for (; n; n--, head = (head + 1) % WINDOW) {
		int res, err = rdm_producer_wait(p, tickets[head], &res);

		if (err || res) {
			snprintf(msg, msglen, "wait: %d/%d %s", err, res, rdm_last_error());
			return err ? err : res;
		}
	}
	return 0;
}

/* One change of the peer: lock, bitmap, one call, unlock (QEMU's way). */
static int direct_change(struct direct *d, uint64_t blk, bool populate)
{
	uint64_t word = blk / 64, bit = 1ull << (blk % 64);
	uint64_t iova = d->iova + blk * BLOCK_SIZE;
	int err = 0;

	pthread_mutex_lock(&d->lock);
	if (populate && !(d->bitmap[word] & bit)) {
		err = rdm_backend_map(d->sim, iova, BLOCK_SIZE, HOST_BASE + blk * BLOCK_SIZE);
		if (!err)
			d->bitmap[word] |= bit;
	} else if (!populate && (d->bitmap[word] & bit)) {
		d->bitmap[word] &= ~bit;
		err = rdm_backend_unmap(d->sim, iova, BLOCK_SIZE, NULL);
	}
	pthread_mutex_unlock(&d->lock);
	return err;
}

static int direct_stream(struct bench_case *c, int prod, char *msg, size_t msglen)
{
	for (int pass = 0; pass < 2; pass++)
		for (uint32_t i = 0; i < c->m; i++) {
			int err = direct_change(&c->d, nth_block(c, prod, i), pass == 0);

			if (err) {
				snprintf(msg, msglen, "direct: %s", rdm_last_error());
				return err;
			}
		}
	return 0;
}

/* ------------------------------------------------------- setup, teardown */

static struct rdm_backend *new_sim(void)
{
	/* Type1v2 with its default limit (65535 mappings); the cost model's
	 * defaults only feed model_ns and cost no wall time. */
	struct rdm_sim_config sc = {.struct_size = sizeof(sc), .semantics = RDM_SEM_TYPE1V2};
	struct rdm_backend *b = NULL;

	return rdm_backend_sim_create(&sc, &b) ? NULL : b;
}

static int setup_rdm(struct bench_case *c)
{
	uint64_t nblocks = (uint64_t)c->nprod * 2 * c->m;
	/* RDM_POLICY_BLOCK, one block per change: one MAP or UNMAP per change,
	 * the same calls the direct path makes. */
	struct rdm_region_config rc = {
		.struct_size = sizeof(rc),
		.flags = RDM_REGION_STRICT,
		.iova = 1ull << 40,
		.size = nblocks * BLOCK_SIZE,
		.block_size = BLOCK_SIZE,
		.host_addr = (void *)(uintptr_t)HOST_BASE,
		.policy = RDM_POLICY_BLOCK,
	};
	int err;

	c->sim = new_sim();
	if (!c->sim)
		return -ENOMEM;
	err = rdm_region_create(&rc, &c->r);
	if (err)
		return err;
	/* The odd blocks stay populated: no two changed blocks are adjacent. */
	for (uint64_t b = 1; b < nblocks; b += 2) {
		err = rdm_populate(c->r, b * BLOCK_SIZE, BLOCK_SIZE);
		if (err)
			return err;
	}
	/* The worker inherits the creating thread's mask: its CPU is the one
	 * after the producers' (rdm_bench_cpu wraps around). */
	rdm_bench_pin(c->nprod);
	err = rdm_worker_create(NULL, &c->w);
	rdm_bench_pin(0);
	if (!err)
		err = rdm_worker_add_backend(c->w, c->sim, 0);
	if (!err)
		err = rdm_worker_attach(c->w, c->r, c->sim);
	return err;
}

static int setup_direct(struct bench_case *c)
{
	uint64_t nblocks = (uint64_t)c->nprod * 2 * c->m;

	pthread_mutex_init(&c->d.lock, NULL);
	c->d.iova = 1ull << 40;
	c->d.bitmap = calloc((nblocks + 63) / 64, sizeof(uint64_t));
	c->d.sim = new_sim();
	if (!c->d.bitmap || !c->d.sim)
		return -ENOMEM;
	for (uint64_t b = 1; b < nblocks; b += 2) {
		int err = direct_change(&c->d, b, true);

		if (err)
			return err;
	}
	return 0;
}

static void teardown(struct bench_case *c)
{
	if (c->r)
		rdm_region_destroy(c->r);
	if (c->w)
		rdm_worker_destroy(c->w);
	rdm_backend_destroy(c->sim);
	if (c->d.bitmap) {
		rdm_backend_destroy(c->d.sim);
		free(c->d.bitmap);
		pthread_mutex_destroy(&c->d.lock);
	}
}

struct helper_arg {
	struct bench_case *c;
	int prod;
};

static void helper_fail(struct bench_case *c, int prod, int err, const char *msg)
{
	int zero = 0;

	/* The first error wins; its message is written by that helper only,
	 * and read by the main thread after the round's end barrier. */
	if (atomic_compare_exchange_strong_explicit(&c->err, &zero, err, memory_order_relaxed,
						    memory_order_relaxed))
		snprintf(c->msg, sizeof(c->msg), "producer %d: %s", prod, msg);
}

static void *helper_main(void *arg)
{
	struct helper_arg *ha = arg;
	struct bench_case *c = ha->c;
	struct rdm_producer *p = NULL;
	char msg[160] = "";

	rdm_bench_pin(ha->prod);
	if (c->use_rdm && rdm_producer_create(&p))
		helper_fail(c, ha->prod, -ENOMEM, "cannot create a producer");
	for (;;) {
		pthread_barrier_wait(&c->start);
		/* Relaxed: the barrier orders it. */
		if (atomic_load_explicit(&c->stop, memory_order_relaxed))
			break;
		if (c->use_rdm ? (p ? rdm_stream(c, p, ha->prod, msg, sizeof(msg)) : 0)
			       : direct_stream(c, ha->prod, msg, sizeof(msg)))
			helper_fail(c, ha->prod, -EIO, msg);
		pthread_barrier_wait(&c->end);
	}
	rdm_producer_destroy(p);
	return NULL;
}

/* One round on every producer; returns its wall time in ns, 0 on error, and
 * the process's CPU time in *cpu and its context switches in *csw (the
 * round's two barriers add a few per helper: noise next to thousands). */
static uint64_t run_round(struct bench_case *c, struct rdm_producer *p0, uint64_t *cpu, uint64_t *csw, char *msg,
			  size_t msglen)
{
	uint64_t s0 = switches(), c0 = cpu_ns(), t0 = now_ns();
	int err;

	if (c->nprod > 1)
		pthread_barrier_wait(&c->start);
	err = c->use_rdm ? rdm_stream(c, p0, 0, msg, msglen) : direct_stream(c, 0, msg, msglen);
	if (c->nprod > 1)
		pthread_barrier_wait(&c->end);
	uint64_t t1 = now_ns();

	*cpu = cpu_ns() - c0;
	*csw = switches() - s0;
	if (!err && atomic_load_explicit(&c->err, memory_order_relaxed)) {
		snprintf(msg, msglen, "%s", c->msg);
		err = -EIO;
	}
	return err ? 0 : t1 - t0;
}

static void bench_pipeline(struct rdm_bench *b, bool use_rdm, int nprod, int order)
{
	struct bench_case *c = calloc(1, sizeof(*c));
	struct helper_arg ha[MAX_PRODUCERS];
	struct rdm_producer *p0 = NULL;
	struct rdm_worker_stats st0, st1;
	char msg[200] = "";
	int started = 0, err;
	bool barriers = false;

	cpu_set_t saved;

	if (!c) {
		rdm_bench_fail(b, "out of memory");
		return;
	}
	/* Producer k on rdm_bench_cpu(k), the worker on the next one. */
	pthread_getaffinity_np(pthread_self(), sizeof(saved), &saved);
	rdm_bench_pin(0);
	c->nprod = nprod;
	c->use_rdm = use_rdm;
	c->order = order;
	c->m = stream_blocks();
	err = use_rdm ? setup_rdm(c) : setup_direct(c);
	if (!err && use_rdm)
		err = rdm_producer_create(&p0);
	if (err)
		snprintf(msg, sizeof(msg), "setup: %d %s", err, rdm_last_error());
	if (!err && nprod > 1) {
		pthread_barrier_init(&c->start, NULL, (unsigned)nprod);
		pthread_barrier_init(&c->end, NULL, (unsigned)nprod);
		barriers = true;
		for (int i = 1; i < nprod; i++) {
			ha[i] = (struct helper_arg){.c = c, .prod = i};
			if (pthread_create(&c->th[i], NULL, helper_main, &ha[i]))
				break;
			started++;
		}
		if (started != nprod - 1) {
			err = -EAGAIN;
			snprintf(msg, sizeof(msg), "cannot start producer threads");
		}
	}
	/* Warm-up round (rings, links, allocations), untimed. */
	uint64_t cpu, csw;

	if (!err && started == nprod - 1 && !run_round(c, p0, &cpu, &csw, msg, sizeof(msg)))
		err = -EIO;
	if (err)
		rdm_bench_fail(b, msg);
	rdm_worker_get_stats(c->w, &st0);

	uint64_t changes_per_round = (uint64_t)nprod * 2 * c->m;
	struct pl_results *out = &pl_res[order][use_rdm][nprod];
	struct samples *mine = calloc(4, sizeof(*mine)); /* wall, cpu, the worker's cpu, switches */
	/* The worker thread's own CPU clock: how busy the one thread that
	 * applies every change is (near the wall time: the stream is bound by
	 * the worker, not by the producers or the handoff). */
	pthread_t wth;
	clockid_t wclk;
	bool wclock = use_rdm && !err && rdm_worker_get_thread(c->w, &wth) == 0 &&
		      pthread_getcpuclockid(wth, &wclk) == 0;

	while (!err && mine && rdm_bench_running(b)) {
		uint64_t w0 = wclock ? clock_ns(wclk) : 0;
		uint64_t ns = run_round(c, p0, &cpu, &csw, msg, sizeof(msg));
		uint64_t w1 = wclock ? clock_ns(wclk) : 0;

		if (!ns) {
			rdm_bench_fail(b, msg);
			break;
		}
		add_sample(&mine[0], (double)ns / (double)changes_per_round);
		add_sample(&mine[1], (double)cpu / (double)changes_per_round);
		add_sample(&mine[3], 1000.0 * (double)csw / (double)changes_per_round);
		if (wclock && w0 && w1 >= w0)
			add_sample(&mine[2], (double)(w1 - w0) / (double)changes_per_round);
	}
	if (use_rdm) {
		rdm_worker_get_stats(c->w, &st1);
		if (st1.superseded != st0.superseded)
			rdm_bench_fail(b, "a change was superseded: the stream is not like for like");
		rdm_changes[order][nprod] += st1.changes - st0.changes;
		rdm_batches[order][nprod] += st1.batches - st0.batches;
		if (st1.batches > st0.batches)
			rdm_bench_set_counter(b, "changes_per_batch",
					      (double)(st1.changes - st0.changes) / (double)(st1.batches - st0.batches),
					      RDM_BENCH_COUNTER_VALUE);
	}
	rdm_bench_set_items(b, rdm_bench_iterations(b) * (int64_t)changes_per_round);
	if (mine && mine[0].n) {
		double ns = median(&mine[0]), cns = median(&mine[1]), sw = median(&mine[3]);

		add_sample(&out->ns, ns);
		add_sample(&out->cpu_ns, cns);
		add_sample(&out->switches, sw);
		if (mine[2].n) {
			double wns = median(&mine[2]);

			add_sample(&out->worker_cpu_ns, wns);
			rdm_bench_set_counter(b, "worker_cpu_ns_per_change", wns, RDM_BENCH_COUNTER_VALUE);
		}
		rdm_bench_set_counter(b, "ns_per_change", ns, RDM_BENCH_COUNTER_VALUE);
		rdm_bench_set_counter(b, "cpu_ns_per_change", cns, RDM_BENCH_COUNTER_VALUE);
		rdm_bench_set_counter(b, "switches_per_1k_changes", sw, RDM_BENCH_COUNTER_VALUE);
	}
	free(mine);

	if (started) {
		atomic_store_explicit(&c->stop, true, memory_order_relaxed);
		pthread_barrier_wait(&c->start);
		for (int i = 1; i <= started; i++)
			pthread_join(c->th[i], NULL);
	}
	if (barriers) {
		pthread_barrier_destroy(&c->start);
		pthread_barrier_destroy(&c->end);
	}
	rdm_producer_destroy(p0);
	teardown(c);
	free(c);
	pthread_setaffinity_np(pthread_self(), sizeof(saved), &saved);
}

struct pl_case {
	bool use_rdm;
	int nprod;
	int order;
};

static void bench_pipeline_case(struct rdm_bench *b, void *arg)
{
	const struct pl_case *pc = arg;

	bench_pipeline(b, pc->use_rdm, pc->nprod, pc->order);
}

static void print_goal(const char *name, bool met)
{
	printf(" %s=%s", name, met ? "met" : "missed");
}

static void finish_order(int o)
{
	for (int n = 1; n <= MAX_PRODUCERS; n++) {
		struct pl_results *r = &pl_res[o][1][n], *d = &pl_res[o][0][n];

		if (!r->ns.n && !d->ns.n)
			continue;
		double ns = median(&r->ns), dns = median(&d->ns);
		double cps = 1e9 / ns, dcps = 1e9 / dns;

		printf("SUMMARY %s producers=%d reps=%u ns_per_change=%.1f ns_min=%.1f ns_max=%.1f "
		       "cpu_ns_per_change=%.1f direct_ns_per_change=%.1f direct_ns_min=%.1f direct_ns_max=%.1f "
		       "direct_cpu_ns_per_change=%.1f changes_per_s=%.0f direct_changes_per_s=%.0f ratio_ns=%.2f "
		       "ratio_cps=%.2f changes_per_batch=%.1f",
		       order_name[o], n, r->ns.n, ns, min_of(&r->ns), max_of(&r->ns), median(&r->cpu_ns), dns, min_of(&d->ns),
		       max_of(&d->ns), median(&d->cpu_ns), cps, dcps, ns / dns, cps / dcps,
		       rdm_batches[o][n] ? (double)rdm_changes[o][n] / (double)rdm_batches[o][n] : NAN);
		/* The worker thread's CPU per change, and that over the wall
		 * time per change: near 1, the worker is the bottleneck. */
		if (r->worker_cpu_ns.n) {
			double wns = median(&r->worker_cpu_ns);

			printf(" worker_cpu_ns_per_change=%.1f worker_busy=%.2f", wns, wns / ns);
		}
		/* Context switches per 1,000 changes, every thread: sleeps and
		 * preemptions, the price of threads that share a CPU. */
		printf(" switches_per_1k_changes=%.2f direct_switches_per_1k_changes=%.2f", median(&r->switches),
		       median(&d->switches));
		/* The goals (issue 11), printed, never asserted. */
		if (n == 1) {
			print_goal("goal_ns_le_1.5x_direct", ns <= 1.5 * dns);
			print_goal("goal_ns_le_250", ns <= 250);
		} else {
			print_goal("goal_cps_ge_direct", cps >= dcps);
		}
		printf("\n");
	}
}

static void finish_pipeline(void)
{
	for (int o = 0; o < NORDERS; o++)
		finish_order(o);
	fflush(stdout);
}

/* ------------------------------------------------- block-fastpath */
/*
 * The planner's cost per request under the block policy against QEMU's
 * direct path, in instructions (planner.c, "Fast path"). Trace A
 * (data/traces/A_sbm2M_movable.csv: 2 MiB blocks, an 8 GiB region, 128 MiB
 * plugs and unplugs) is replayed one request at a time on the calling
 * thread, three ways, each on its own sim:
 *  - rdm: rdm_planner_populate/discard + flush per request, the fast path on;
 *  - general: the same with the fast path off (general_only);
 *  - direct: QEMU's inline strategy - a bitmap, one MAP per block of a plug,
 *    one UNMAP per unplug.
 * All three must make the same calls (checked). Each replays the trace
 * once untimed, then once measured (steady state: the trees' node pools
 * have grown, as in a long-running VMM). The planner is driven
 * directly, without the worker and its handoff, so only the planner's and
 * the sim's work is counted - what the 32k-vs-14k figures measured.
 * Instructions come from perf_event_open (PERF_COUNT_HW_INSTRUCTIONS, user
 * space only); where perf events are not permitted the SUMMARY says
 * "unavailable", and the same figures come from callgrind (README,
 * "Benchmarks"): the inclusive cost of fastpath_replay_rdm, _general and
 * _direct divided by the requests.
 */
#ifndef RDM_BENCH_TRACE_A
#define RDM_BENCH_TRACE_A "data/traces/A_sbm2M_movable.csv"
#endif
#define FP_BLOCK (2ull << 20)
#define FP_REGION (8ull << 30)
#define FP_MAX_REQ 4096

struct fp_req {
	bool plug;
	uint64_t off, len; /* bytes */
};

static struct fp_req fp_reqs[FP_MAX_REQ];
static unsigned fp_nreq;

static int fp_load(char *msg, size_t msglen)
{
	FILE *f = fopen(RDM_BENCH_TRACE_A, "r");
	char line[256];

	if (!f) {
		snprintf(msg, msglen, "cannot open %s", RDM_BENCH_TRACE_A);
		return -ENOENT;
	}
	fp_nreq = 0;
	while (fgets(line, sizeof(line), f)) {
		unsigned long long seq, off, len;
		char op[16];

		if (sscanf(line, "%llu,%15[^,],%llu,%llu", &seq, op, &off, &len) != 4)
			continue; /* the header */
		if (fp_nreq == FP_MAX_REQ || off % FP_BLOCK || len % FP_BLOCK || !len || off + len > FP_REGION ||
		    (strcmp(op, "plug") && strcmp(op, "unplug"))) {
			fclose(f);
			snprintf(msg, msglen, "%s: unexpected request %llu", RDM_BENCH_TRACE_A, seq);
			return -EINVAL;
		}
		fp_reqs[fp_nreq++] = (struct fp_req){.plug = !strcmp(op, "plug"), .off = off, .len = len};
	}
	fclose(f);
	return fp_nreq ? 0 : -EINVAL;
}

/* User-space instructions of this thread; fd < 0: unavailable (errno kept). */
static int fp_counter_open(void)
{
	struct perf_event_attr pa;

	memset(&pa, 0, sizeof(pa));
	pa.size = sizeof(pa);
	pa.type = PERF_TYPE_HARDWARE;
	pa.config = PERF_COUNT_HW_INSTRUCTIONS;
	pa.disabled = 1;
	pa.exclude_kernel = 1;
	pa.exclude_hv = 1;
	return (int)syscall(SYS_perf_event_open, &pa, 0, -1, -1, 0);
}

static uint64_t fp_counter_read(int fd)
{
	uint64_t v = 0;

	if (fd < 0 || read(fd, &v, sizeof(v)) != (ssize_t)sizeof(v))
		return 0;
	return v;
}

struct fp_rdm {
	struct rdm_region *r;
	struct rdm_planner p;
	struct rdm_wbackend wb;
	uint64_t stats[7];
};

static int fp_rdm_init(struct fp_rdm *x, bool general_only)
{
	struct rdm_region_config rc = {
		.struct_size = sizeof(rc),
		.iova = 1ull << 40,
		.size = FP_REGION,
		.block_size = FP_BLOCK,
		.host_addr = (void *)(uintptr_t)HOST_BASE,
		.policy = RDM_POLICY_BLOCK,
	};
	int err;

	memset(x, 0, sizeof(*x));
	x->wb.b = new_sim();
	if (!x->wb.b)
		return -ENOMEM;
	rdm_backend_get_caps(x->wb.b, &x->wb.caps);
	x->wb.budget = 65535; /* type1's default limit */
	err = rdm_region_create(&rc, &x->r);
	if (err)
		return err;
	rdm_planner_init(&x->p, x->r);
	x->p.general_only = general_only;
	x->p.stat_remapped_bytes = &x->stats[0];
	x->p.stat_deferred_bytes = &x->stats[1];
	x->p.stat_deferred_peak = &x->stats[2];
	x->p.stat_defer_exceeded = &x->stats[3];
	x->p.stat_budget_exceeded = &x->stats[4];
	x->p.stat_enospc = &x->stats[5];
	x->p.stat_failed_backends = &x->stats[6];
	return rdm_planner_attach(&x->p, &x->wb);
}

static void fp_rdm_fini(struct fp_rdm *x)
{
	if (x->r) {
		rdm_planner_teardown(&x->p);
		rdm_planner_fini(&x->p);
		rdm_region_destroy(x->r);
	}
	rdm_backend_destroy(x->wb.b);
}

/* What the worker does per request: one change, then the end of its batch. */
__attribute__((noinline)) static int fp_replay_planner(struct rdm_planner *p)
{
	for (unsigned i = 0; i < fp_nreq; i++) {
		uint64_t s = fp_reqs[i].off / FP_BLOCK, n = fp_reqs[i].len / FP_BLOCK;

		if (fp_reqs[i].plug) {
			int err;

			rdm_planner_populate_begin(p);
			err = rdm_planner_populate(p, s, n);
			rdm_planner_populate_end(p);
			if (err)
				return err;
		} else {
			rdm_planner_discard(p, s, n);
		}
		rdm_planner_flush(p);
	}
	return 0;
}

/* Named apart so that callgrind separates the two. */
__attribute__((noinline)) int fastpath_replay_rdm(struct rdm_planner *p);
__attribute__((noinline)) int fastpath_replay_general(struct rdm_planner *p);
__attribute__((noinline)) int fastpath_replay_direct(struct direct *d);

int fastpath_replay_rdm(struct rdm_planner *p)
{
	return fp_replay_planner(p);
}

int fastpath_replay_general(struct rdm_planner *p)
{
	return fp_replay_planner(p);
}

/* QEMU's vfio listener with virtio-mem: a MAP per block of a plug, one
 * UNMAP per unplug notification; the bitmap is virtio-mem's. */
__attribute__((noinline)) static int fp_replay_direct(struct direct *d)
{
	for (unsigned i = 0; i < fp_nreq; i++) {
		uint64_t s = fp_reqs[i].off / FP_BLOCK, n = fp_reqs[i].len / FP_BLOCK;
		int err = 0;

		pthread_mutex_lock(&d->lock);
		if (fp_reqs[i].plug) {
			for (uint64_t b = s; b < s + n && !err; b++)
				if (!(d->bitmap[b / 64] & (1ull << (b % 64)))) {
					err = rdm_backend_map(d->sim, d->iova + b * FP_BLOCK, FP_BLOCK, HOST_BASE + b * FP_BLOCK);
					if (!err)
						d->bitmap[b / 64] |= 1ull << (b % 64);
				}
		} else {
			for (uint64_t b = s; b < s + n; b++)
				d->bitmap[b / 64] &= ~(1ull << (b % 64));
			err = rdm_backend_unmap(d->sim, d->iova + s * FP_BLOCK, n * FP_BLOCK, NULL);
		}
		pthread_mutex_unlock(&d->lock);
		if (err)
			return err;
	}
	return 0;
}

int fastpath_replay_direct(struct direct *d)
{
	return fp_replay_direct(d);
}

enum { FP_RDM, FP_GENERAL, FP_DIRECT, FP_WAYS };
static const char *const fp_names[FP_WAYS] = {"rdm", "general", "direct"};
static struct samples fp_instr[FP_WAYS], fp_ns[FP_WAYS];
static char fp_unavailable[120];

/* One replay of trace A one way: instructions (0 if unavailable) and ns. */
static int fp_run(int way, int fd, uint64_t *instr, uint64_t *ns, struct rdm_backend_stats *st, char *msg,
		  size_t msglen)
{
	struct fp_rdm x;
	struct direct d;
	uint64_t i0, i1, t0, t1;
	int err;

	memset(&d, 0, sizeof(d));
	if (way == FP_DIRECT) {
		pthread_mutex_init(&d.lock, NULL);
		d.iova = 1ull << 40;
		d.bitmap = calloc(FP_REGION / FP_BLOCK / 64, sizeof(uint64_t));
		d.sim = new_sim();
		err = d.bitmap && d.sim ? 0 : -ENOMEM;
	} else {
		err = fp_rdm_init(&x, way == FP_GENERAL);
	}
	/* Trace A ends where it starts (all unplugged): a first replay, not
	 * counted, grows the trees' pools as a long-running VMM's would be. */
	if (!err)
		err = way == FP_DIRECT ? fp_replay_direct(&d) : fp_replay_planner(&x.p);
	if (!err) {
		if (fd >= 0) {
			ioctl(fd, PERF_EVENT_IOC_RESET, 0);
			ioctl(fd, PERF_EVENT_IOC_ENABLE, 0);
		}
		i0 = fp_counter_read(fd);
		t0 = now_ns();
		err = way == FP_DIRECT ? fastpath_replay_direct(&d) :
		      way == FP_RDM    ? fastpath_replay_rdm(&x.p) : fastpath_replay_general(&x.p);
		t1 = now_ns();
		i1 = fp_counter_read(fd);
		if (fd >= 0)
			ioctl(fd, PERF_EVENT_IOC_DISABLE, 0);
		*instr = i1 - i0;
		*ns = t1 - t0;
		rdm_backend_get_stats(way == FP_DIRECT ? d.sim : x.wb.b, st);
	}
	if (err)
		snprintf(msg, msglen, "%s: %d %s", fp_names[way], err, rdm_last_error());
	if (way == FP_DIRECT) {
		rdm_backend_destroy(d.sim);
		free(d.bitmap);
		pthread_mutex_destroy(&d.lock);
	} else {
		fp_rdm_fini(&x);
	}
	return err;
}

static void bench_block_fastpath(struct rdm_bench *b, void *arg)
{
	char msg[200] = "";
	int fd, err = fp_nreq ? 0 : fp_load(msg, sizeof(msg));

	(void)arg;
	if (err) {
		rdm_bench_fail(b, msg);
		return;
	}
	fd = fp_counter_open();
	if (fd < 0)
		snprintf(fp_unavailable, sizeof(fp_unavailable), "perf_event_open: %s", strerror(errno));
	while (rdm_bench_running(b)) {
		struct rdm_backend_stats st[FP_WAYS];

		/* Interleaved: rdm, general, direct in every iteration. */
		for (int way = 0; way < FP_WAYS && !err; way++) {
			uint64_t instr = 0, ns = 0;

			err = fp_run(way, fd, &instr, &ns, &st[way], msg, sizeof(msg));
			if (!err) {
				if (fd >= 0)
					add_sample(&fp_instr[way], (double)instr / fp_nreq);
				add_sample(&fp_ns[way], (double)ns / fp_nreq);
			}
		}
		if (!err && (st[FP_RDM].map_calls != st[FP_DIRECT].map_calls ||
			     st[FP_RDM].unmap_calls != st[FP_DIRECT].unmap_calls ||
			     st[FP_GENERAL].map_calls != st[FP_DIRECT].map_calls ||
			     st[FP_GENERAL].unmap_calls != st[FP_DIRECT].unmap_calls)) {
			snprintf(msg, sizeof(msg), "the calls differ: rdm %" PRIu64 "+%" PRIu64 ", direct %" PRIu64 "+%" PRIu64,
				 st[FP_RDM].map_calls, st[FP_RDM].unmap_calls, st[FP_DIRECT].map_calls,
				 st[FP_DIRECT].unmap_calls);
			err = -EIO;
		}
		if (err) {
			rdm_bench_fail(b, msg);
			break;
		}
	}
	if (fd >= 0)
		close(fd);
	rdm_bench_set_items(b, rdm_bench_iterations(b) * (int64_t)fp_nreq);
}

static void fp_print(const char *key, struct samples *s)
{
	if (s->n)
		printf(" %s=%.0f", key, median(s));
	else
		printf(" %s=unavailable", key);
}

static void finish_block_fastpath(void)
{
	if (!fp_ns[FP_DIRECT].n)
		return;
	if (fp_unavailable[0])
		printf("block-fastpath: instructions unavailable (%s); README, \"Benchmarks\", counts them with callgrind\n",
		       fp_unavailable);
	printf("SUMMARY block-fastpath requests=%u", fp_nreq);
	fp_print("instr_per_req", &fp_instr[FP_RDM]);
	fp_print("direct_instr_per_req", &fp_instr[FP_DIRECT]);
	if (fp_instr[FP_RDM].n && fp_instr[FP_DIRECT].n)
		printf(" ratio=%.2f", median(&fp_instr[FP_RDM]) / median(&fp_instr[FP_DIRECT]));
	else
		printf(" ratio=unavailable");
	fp_print("general_instr_per_req", &fp_instr[FP_GENERAL]);
	printf(" ns_per_req=%.0f direct_ns_per_req=%.0f general_ns_per_req=%.0f goal_ratio=1.5", median(&fp_ns[FP_RDM]),
	       median(&fp_ns[FP_DIRECT]), median(&fp_ns[FP_GENERAL]));
	printf("\n");
	fflush(stdout);
}

void rdm_bench_register_pipeline(void)
{
	/* Per producer count, rdm and the direct path alternate (rdm, direct,
	 * rdm, direct ...: rdm_bench_register_interleaved), PL_REPS times or
	 * --benchmark_repetitions; one repetition is PL_ROUNDS rounds (2 *
	 * blocks_per_producer changes per producer each, a few milliseconds)
	 * and yields the median over its rounds. The SUMMARY gives median, min
	 * and max over the repetitions. */
	static const int nprods[] = {1, 2, 4};
	static struct pl_case args[NORDERS][3][2];
	static char names[NORDERS][3][2][48];

	for (int o = 0; o < NORDERS; o++)
		for (int i = 0; i < 3; i++) {
			struct rdm_bench_def defs[2];

			for (int k = 0; k < 2; k++) {
				args[o][i][k] = (struct pl_case){.use_rdm = k == 0, .nprod = nprods[i], .order = o};
				snprintf(names[o][i][k], sizeof(names[o][i][k]), "%s/%s/producers:%d", order_name[o],
					 k == 0 ? "rdm" : "direct", nprods[i]);
				defs[k] = (struct rdm_bench_def){
					.name = names[o][i][k],
					.fn = bench_pipeline_case,
					.arg = &args[o][i][k],
					.real_time = true,
					.iterations = PL_ROUNDS,
				};
			}
			rdm_bench_register_interleaved(defs, 2, PL_REPS);
		}
	rdm_bench_on_finish(finish_pipeline);

	/* One iteration replays trace A three ways (~10 ms). */
	struct rdm_bench_def fp = {
		.name = "block-fastpath",
		.fn = bench_block_fastpath,
		.real_time = true,
		.iterations = 5,
	};

	rdm_bench_register(&fp);
	rdm_bench_on_finish(finish_block_fastpath);
}
