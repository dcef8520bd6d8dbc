// SPDX-License-Identifier: MIT
// bench/main.cc - rdm-bench: registers every area's cases, runs Google
// Benchmark with its own command-line flags, then prints the SUMMARY lines.

#include "shim.h"

#include <benchmark/benchmark.h>

extern "C" void rdm_bench_parse_args(int argc, char **argv);
extern "C" void rdm_bench_run_finish_hooks(void);

int main(int argc, char **argv)
{
	rdm_bench_parse_args(argc, argv);
	benchmark::Initialize(&argc, argv);
	if (benchmark::ReportUnrecognizedArguments(argc, argv))
		return 1;
#if RDM_BENCH_HAVE_STATE
	rdm_bench_register_state();
#endif
#if RDM_BENCH_HAVE_RING
	rdm_bench_register_ring();
#endif
#if RDM_BENCH_HAVE_PIPELINE
	rdm_bench_register_pipeline();
#endif
	benchmark::RunSpecifiedBenchmarks();
	rdm_bench_run_finish_hooks();
	benchmark::Shutdown();
	return 0;
}
