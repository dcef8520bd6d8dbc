// SPDX-License-Identifier: MIT
// bench/shim.cc - the C API of bench/shim.h over Google Benchmark (>= 1.7).
//
// Each registered case owns a copy of its definition; the benchmark function
// wraps the benchmark::State in a struct rdm_bench for the C code. Nothing in
// here is timed beyond what Google Benchmark itself times.

#include "shim.h"

#include <benchmark/benchmark.h>

#include <pthread.h>
#include <sched.h>

#include <cstdlib>
#include <cstring>
#include <deque>
#include <string>
#include <vector>

struct rdm_bench {
	benchmark::State *st;
};

namespace {

struct registered {
	std::string name;
	rdm_bench_def def;
};

// std::deque: stable addresses, the lambdas below keep pointers into it.
std::deque<registered> &registry()
{
	static std::deque<registered> r;
	return r;
}

// --benchmark_repetitions=N from the command line, 0 if not given (main.cc
// records it before Google Benchmark consumes its flags).
int cli_repetitions = 0;

// The process's CPUs at startup (rdm_bench_cpu); main.cc records them
// before any case pins a thread.
std::vector<int> &startup_cpus()
{
	static std::vector<int> c;
	return c;
}

std::vector<rdm_bench_finish_fn> &finish_hooks()
{
	static std::vector<rdm_bench_finish_fn> h;
	return h;
}

} // namespace

namespace {

// once: one copy of an interleaved series - a single run whatever the
// command line says (the series' length already honours it).
void register_one(const rdm_bench_def *def, bool once)
{
	registry().push_back(registered{def->name ? def->name : "unnamed", *def});
	registered *r = &registry().back();
	r->def.name = r->name.c_str();

	benchmark::internal::Benchmark *b = benchmark::RegisterBenchmark(
		r->name.c_str(), [r](benchmark::State &st) {
			rdm_bench wrap{&st};
			r->def.fn(&wrap, r->def.arg);
		});
	if (r->def.threads > 1)
		b->Threads(r->def.threads);
	if (r->def.real_time)
		b->UseRealTime();
	if (r->def.min_time_s > 0)
		b->MinTime(r->def.min_time_s);
	if (r->def.iterations > 0)
		b->Iterations(r->def.iterations);
	// An explicit Repetitions() overrides --benchmark_repetitions: set
	// one only where the command line gave none.
	if (once)
		b->Repetitions(1);
	else if (r->def.repetitions > 0 && cli_repetitions == 0)
		b->Repetitions(r->def.repetitions);
}

} // namespace

extern "C" void rdm_bench_register(const struct rdm_bench_def *def)
{
	register_one(def, false);
}

extern "C" int rdm_bench_repetitions(int dflt)
{
	return cli_repetitions > 0 ? cli_repetitions : dflt;
}

extern "C" void rdm_bench_register_interleaved(const struct rdm_bench_def *defs, int n, int default_reps)
{
	int reps = rdm_bench_repetitions(default_reps);

	for (int k = 0; k < reps; k++)
		for (int i = 0; i < n; i++)
			register_one(&defs[i], true);
}

extern "C" int rdm_bench_ncpus(void)
{
	return startup_cpus().empty() ? 1 : static_cast<int>(startup_cpus().size());
}

extern "C" int rdm_bench_cpu(int i)
{
	const std::vector<int> &c = startup_cpus();

	if (c.empty())
		return i < 0 ? 0 : i;
	return c[static_cast<size_t>(i < 0 ? 0 : i) % c.size()];
}

extern "C" int rdm_bench_pin(int i)
{
	cpu_set_t set;

	CPU_ZERO(&set);
	CPU_SET(rdm_bench_cpu(i), &set);
	return pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
}

// Called by main.cc before benchmark::Initialize() removes its flags.
extern "C" void rdm_bench_parse_args(int argc, char **argv);
extern "C" void rdm_bench_parse_args(int argc, char **argv)
{
	static const char flag[] = "--benchmark_repetitions=";
	cpu_set_t set;

	if (sched_getaffinity(0, sizeof(set), &set) == 0)
		for (int cpu = 0; cpu < CPU_SETSIZE; cpu++)
			if (CPU_ISSET(cpu, &set))
				startup_cpus().push_back(cpu);

	for (int i = 1; i < argc; i++)
		if (!std::strncmp(argv[i], flag, sizeof(flag) - 1)) {
			long v = std::strtol(argv[i] + sizeof(flag) - 1, nullptr, 10);

			// Google Benchmark itself rejects a bad value.
			cli_repetitions = v > 0 && v < 1000000 ? static_cast<int>(v) : 0;
		}
}

extern "C" bool rdm_bench_running(struct rdm_bench *b)
{
	return b->st->KeepRunning();
}

extern "C" int64_t rdm_bench_iterations(const struct rdm_bench *b)
{
	return static_cast<int64_t>(b->st->iterations());
}

extern "C" int rdm_bench_thread_index(const struct rdm_bench *b)
{
	return b->st->thread_index();
}

extern "C" int rdm_bench_threads(const struct rdm_bench *b)
{
	return b->st->threads();
}

extern "C" void rdm_bench_pause(struct rdm_bench *b)
{
	b->st->PauseTiming();
}

extern "C" void rdm_bench_resume(struct rdm_bench *b)
{
	b->st->ResumeTiming();
}

extern "C" void rdm_bench_set_items(struct rdm_bench *b, int64_t items)
{
	b->st->SetItemsProcessed(items);
}

extern "C" void rdm_bench_set_counter(struct rdm_bench *b, const char *name, double value,
				      enum rdm_bench_counter_kind kind)
{
	benchmark::Counter::Flags flags = benchmark::Counter::kDefaults;
	if (kind == RDM_BENCH_COUNTER_RATE)
		flags = benchmark::Counter::kIsRate;
	else if (kind == RDM_BENCH_COUNTER_AVG_THREADS)
		flags = benchmark::Counter::kAvgThreads;
	b->st->counters[name] = benchmark::Counter(value, flags);
}

extern "C" void rdm_bench_fail(struct rdm_bench *b, const char *msg)
{
	b->st->SkipWithError(msg);
}

extern "C" void rdm_bench_on_finish(rdm_bench_finish_fn fn)
{
	finish_hooks().push_back(fn);
}

extern "C" void rdm_bench_keep(const void *p)
{
	benchmark::DoNotOptimize(p);
	benchmark::ClobberMemory();
}

// Called by main.cc after RunSpecifiedBenchmarks().
extern "C" void rdm_bench_run_finish_hooks(void);
extern "C" void rdm_bench_run_finish_hooks(void)
{
	for (rdm_bench_finish_fn fn : finish_hooks())
		fn();
}
