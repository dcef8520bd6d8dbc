/* SPDX-License-Identifier: MIT */
/*
 * bench/shim.h - a C face on Google Benchmark, so rdm's benchmarks are C.
 *
 * Each bench_<area>.c defines `void rdm_bench_register_<area>(void)` which
 * calls rdm_bench_register() for its cases; bench/main.cc calls every
 * register function, runs Google Benchmark (its flags work: --benchmark_filter,
 * --benchmark_format=json, --benchmark_out=FILE, --benchmark_repetitions ...),
 * then calls the summary hooks, which print the SUMMARY lines of the cases
 * that ran.
 */
#ifndef RDM_BENCH_SHIM_H
#define RDM_BENCH_SHIM_H

#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct rdm_bench; /* one running case: wraps benchmark::State */

typedef void (*rdm_bench_fn)(struct rdm_bench *b, void *arg);

struct rdm_bench_def {
	const char *name;    /* full benchmark name, e.g. "ring/single/rdm" */
	rdm_bench_fn fn;
	void *arg;
	int threads;         /* >1: run fn on that many threads at once (Google Benchmark ->Threads) */
	bool real_time;      /* measure wall-clock time (use for multi-threaded cases) */
	double min_time_s;   /* 0 = Google Benchmark's default */
	int64_t iterations;  /* 0 = let Google Benchmark choose */
	int repetitions;     /* 0 = default (1); --benchmark_repetitions=N on the
			      * command line overrides it */
};

void rdm_bench_register(const struct rdm_bench_def *def);

/*
 * Repetitions. Google Benchmark runs the repetitions of one case back to
 * back; a case that compares rdm against a peer wants them interleaved
 * (rdm, peer, rdm, peer ...), so that a burst of outside load on a shared
 * machine hits both series alike. rdm_bench_register_interleaved()
 * registers each of defs[0..n) `reps` times, in the order defs[0], defs[1],
 * ..., defs[n-1], defs[0], ... - every copy under its own def's name and
 * run once - where reps = rdm_bench_repetitions(default_reps). Google
 * Benchmark's JSON then holds `reps` runs per name, which is what
 * compare.py's U test groups by, exactly as with --benchmark_repetitions.
 * The defs' own repetitions field is ignored.
 *
 * rdm_bench_repetitions(dflt): N if the command line gave
 * --benchmark_repetitions=N (N >= 1), else dflt.
 */
int rdm_bench_repetitions(int dflt);
void rdm_bench_register_interleaved(const struct rdm_bench_def *defs, int n, int default_reps);

/* The benchmark loop: while (rdm_bench_running(b)) { ... one iteration ... } */
bool rdm_bench_running(struct rdm_bench *b);
int64_t rdm_bench_iterations(const struct rdm_bench *b);
int rdm_bench_thread_index(const struct rdm_bench *b);
int rdm_bench_threads(const struct rdm_bench *b);
void rdm_bench_pause(struct rdm_bench *b);
void rdm_bench_resume(struct rdm_bench *b);

/* items_per_second = items / time. */
void rdm_bench_set_items(struct rdm_bench *b, int64_t items);

enum rdm_bench_counter_kind {
	RDM_BENCH_COUNTER_VALUE = 0, /* reported as is */
	RDM_BENCH_COUNTER_RATE = 1,  /* divided by the measured time */
	RDM_BENCH_COUNTER_AVG_THREADS = 2, /* averaged over threads */
};
void rdm_bench_set_counter(struct rdm_bench *b, const char *name, double value,
			   enum rdm_bench_counter_kind kind);

/* Mark the case failed with a message (Google Benchmark SkipWithError). */
void rdm_bench_fail(struct rdm_bench *b, const char *msg);

/* Run after all cases; print SUMMARY lines for the cases that ran. */
typedef void (*rdm_bench_finish_fn)(void);
void rdm_bench_on_finish(rdm_bench_finish_fn fn);

/*
 * CPUs for pinning: rdm_bench_cpu(i) is the i-th CPU (i modulo their count)
 * of the process's affinity mask as it was at startup, so `taskset -c 2,3
 * rdm-bench` pins the cases' threads to CPUs 2 and 3. rdm_bench_ncpus() is
 * their count. rdm_bench_pin(i) pins the calling thread to rdm_bench_cpu(i):
 * 0 or a positive errno. Threads a thread creates inherit its mask, which is
 * how a case pins a thread it does not own (the IOMMU worker).
 */
int rdm_bench_cpu(int i);
int rdm_bench_ncpus(void);
int rdm_bench_pin(int i);

/* Keep a value opaque to the compiler (benchmark::DoNotOptimize). */
void rdm_bench_keep(const void *p);

/* The register functions of each area (bench_<area>.c). */
void rdm_bench_register_state(void);
void rdm_bench_register_ring(void);
void rdm_bench_register_pipeline(void);

#ifdef __cplusplus
}
#endif

#endif /* RDM_BENCH_SHIM_H */
