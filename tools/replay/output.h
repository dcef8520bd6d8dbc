/* SPDX-License-Identifier: MIT */
/* tools/replay/output.h - the terminal table, SUMMARY lines, JSON and the gnuplot plot. */
#ifndef RDM_REPLAY_OUTPUT_H
#define RDM_REPLAY_OUTPUT_H

#include <stdbool.h>
#include <stdio.h>

#include "tools/replay/run.h"

struct replay_run_info {
	uint64_t seed;
	uint64_t scale;
	const char *backend;   /* "sim" or "vfio-type1:PATH" */
	uint64_t call_ns, page_ns;
	bool sweep;            /* --sweep: each workload gets a "frontier" array */
	uint64_t gap_ns;       /* --gap-us */
	uint32_t spin_us;      /* --spin-us, or the library's default */
};

void replay_print_table(FILE *f, const struct replay_workload_result *w, size_t n);
void replay_print_summary(FILE *f, const struct replay_workload_result *w, size_t n);
/*
 * One line per workload and strategy from the one-request-at-a-time replay:
 *   SUMMARY latency workload=W strategy=S cpus=N gap_us=G gap_mean_us=.. spin_us=P requests=R
 *           p50_us=.. p99_us=.. mean_us=..
 *           cpu_us_per_req=.. caller_cpu_us_per_req=.. worker_cpu_us_per_req=.. cpu_per_wall=..
 *           [qemu_p50_us=.. qemu_cpu_us_per_req=..]
 * cpus: CPUs in the process's affinity mask; cpu_per_wall: CPU per request
 * over mean latency; the qemu fields when qemu ran on the same workload.
 */
void replay_print_latency(FILE *f, const struct replay_workload_result *w, size_t n);
/*
 * --sweep: one line per point of each workload's frontier:
 *   SUMMARY frontier workload=W budget=B calls=N deferred_peak_bytes=D qemu_calls=Q lower_bound=L
 *           deferred_end_bytes=E deferred_integrated=I
 * B: rdm-defer's budget in bytes or "none"; "cut-16M" etc. for the fixed
 * cuts; "qemu"; "lower-bound".
 */
void replay_print_frontier(FILE *f, const struct replay_workload_result *w, size_t n);
/* The budget of a frontier point as SUMMARY frontier prints it. */
const char *replay_frontier_budget(const struct replay_result *r, char *buf, size_t len);
/* 0 or -1 with err. */
int replay_write_json(const char *path, const struct replay_run_info *info, const struct replay_workload_result *w,
		      size_t n, char *err, size_t errlen);
/* Writes PATH.dat and PATH.gp beside the image, runs gnuplot. 0 or -1 with err. */
int replay_write_plot(const char *path, const struct replay_workload_result *w, size_t n, char *err, size_t errlen);
/* --sweep --plot: one panel per workload, x = calls (log), y = peak deferred bytes as % of the region. */
int replay_write_frontier_plot(const char *path, const struct replay_workload_result *w, size_t n, char *err,
			       size_t errlen);

#endif
