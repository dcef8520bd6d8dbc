/* SPDX-License-Identifier: MIT */
/* tools/replay/output.h - the terminal table, SUMMARY lines, JSON and the gnuplot plot. */
#ifndef RDM_REPLAY_OUTPUT_H
#define RDM_REPLAY_OUTPUT_H

#include <stdio.h>

#include "tools/replay/run.h"

struct replay_run_info {
	uint64_t seed;
	uint64_t scale;
	const char *backend;   /* "sim" or "vfio-type1:PATH" */
	uint64_t call_ns, page_ns;
};

void replay_print_table(FILE *f, const struct replay_workload_result *w, size_t n);
void replay_print_summary(FILE *f, const struct replay_workload_result *w, size_t n);
/* 0 or -1 with err. */
int replay_write_json(const char *path, const struct replay_run_info *info, const struct replay_workload_result *w,
		      size_t n, char *err, size_t errlen);
/* Writes PATH.dat and PATH.gp beside the image, runs gnuplot. 0 or -1 with err. */
int replay_write_plot(const char *path, const struct replay_workload_result *w, size_t n, char *err, size_t errlen);

#endif
