/* SPDX-License-Identifier: MIT */
/* tools/replay/output.c - the terminal table, SUMMARY lines, JSON and the gnuplot plot. */
#include "tools/replay/output.h"

#include <errno.h>
#include <inttypes.h>
#include <sched.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include <rdm/region.h>

extern char **environ;

static const char *fmt_bytes(uint64_t v, char *buf, size_t len)
{
	static const char units[] = "KMGT";
	double d = (double)v;
	int u = -1;

	if (v < 1024) {
		snprintf(buf, len, "%" PRIu64, v);
		return buf;
	}
	while (d >= 1024 && u < 3) {
		d /= 1024;
		u++;
	}
	snprintf(buf, len, d < 10 ? "%.1f%c" : "%.0f%c", d, units[u]);
	return buf;
}

static const char *fmt_ns(uint64_t ns, char *buf, size_t len)
{
	double d = (double)ns;

	if (ns < 1000)
		snprintf(buf, len, "%" PRIu64 "ns", ns);
	else if (ns < 1000000)
		snprintf(buf, len, "%.1fus", d / 1e3);
	else if (ns < 1000000000)
		snprintf(buf, len, "%.1fms", d / 1e6);
	else
		snprintf(buf, len, "%.2fs", d / 1e9);
	return buf;
}

static const char *fmt_ratio(uint64_t calls, uint64_t lb, char *buf, size_t len)
{
	if (lb == 0)
		snprintf(buf, len, calls ? "inf" : "1.00");
	else
		snprintf(buf, len, "%.2f", (double)calls / (double)lb);
	return buf;
}

/* CPU time per request: the calling thread's and the strategy's threads'. */
static uint64_t cpu_per_req(const struct replay_result *r)
{
	return r->requests ? (r->cpu_caller_ns + r->cpu_helper_ns) / r->requests : 0;
}

void replay_print_table(FILE *f, const struct replay_workload_result *w, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		const struct replay_trace *t = w[i].trace;
		char b1[32], b2[32];

		fprintf(f, "\n%s: %zu requests, block %s, region %s, lower bound %" PRIu64 " calls\n", t->name, t->n,
			replay_fmt_size(t->block_size, b1, sizeof(b1)), replay_fmt_size(t->region_size, b2, sizeof(b2)),
			w[i].lb.calls);
		fprintf(f, "  %-18s %10s %10s %10s %8s %9s %9s %8s %8s %8s %8s %9s %9s %9s %9s %9s\n", "strategy",
			"map", "unmap", "total", "x lb", "peak map", "over lim", "remap", "defer", "def end", "def int",
			"model", "wall", "p50", "p99", "cpu/req");
		for (size_t k = 0; k < w[i].nrows; k++) {
			const struct replay_result *r = &w[i].rows[k];
			char c[13][32], name[48];

			if (r->budget_label[0])
				snprintf(name, sizeof(name), "%s@%s", r->strategy, r->budget_label);
			else
				snprintf(name, sizeof(name), "%s", r->strategy);
			if (r->error) {
				fprintf(f, "  %-18s failed: %s\n", name, strerror(-r->error));
				continue;
			}
			fprintf(f, "  %-18s %10" PRIu64 " %10" PRIu64 " %10" PRIu64 " %8s %9" PRIu64 " %9" PRIu64
				" %8s %8s %8s %8s %9s %9s %9s %9s %9s",
				name, r->map_calls, r->unmap_calls, r->calls,
				fmt_ratio(r->calls, w[i].lb.calls, c[0], 32), r->peak_mappings, r->limit_exceeded,
				fmt_bytes(r->remapped_bytes, c[1], 32), fmt_bytes(r->deferred_peak_bytes, c[2], 32),
				fmt_bytes(r->deferred_end_bytes, c[10], 32), fmt_bytes(r->deferred_integrated, c[11], 32),
				fmt_ns(r->model_ns, c[3], 32), r->lower_bound ? "-" : fmt_ns(r->wall_ns, c[4], 32),
				r->lower_bound ? "-" : fmt_ns(r->lat_p50_ns, c[5], 32),
				r->lower_bound ? "-" : fmt_ns(r->lat_p99_ns, c[6], 32),
				r->lower_bound || !r->cpu_measured ? "-" : fmt_ns(cpu_per_req(r), c[12], 32));
			if (r->failed_requests)
				fprintf(f, "  (%" PRIu64 " requests failed)", r->failed_requests);
			fputc('\n', f);
			if (r->has_async) {
				const struct replay_async_result *a = &r->async;
				double s = (double)a->wall_ns / 1e9;
				fprintf(f, "  %-18s %u producers, async: %" PRIu64 " requests in %s (%.0f/s), %" PRIu64
					" calls, p50 %s, p99 %s, peak map %" PRIu64 "\n",
					"", a->producers, a->requests, fmt_ns(a->wall_ns, c[7], 32),
					s > 0 ? (double)a->requests / s : 0.0, a->calls, fmt_ns(a->lat_p50_ns, c[8], 32),
					fmt_ns(a->lat_p99_ns, c[9], 32), a->peak_mappings);
			}
		}
	}
	fprintf(f, "\nx lb: calls / lower bound; over lim: peak mappings past the default limit of %" PRIu64
		   "; defer / def end: deferred bytes,\npeak and after the last request; def int: deferred bytes after"
		   " each request, summed (byte-requests);\nmodel: the sim's cost model; p50/p99: request completion"
		   " latency; cpu/req: CPU time per request,\ncalling thread + the strategy's own threads (rdm's worker),"
		   " thread CPU clocks; S@B: strategy S with defer budget B\n",
		REPLAY_MAPPING_LIMIT);
}

void replay_print_summary(FILE *f, const struct replay_workload_result *w, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		for (size_t k = 0; k < w[i].nrows; k++) {
			const struct replay_result *r = &w[i].rows[k];
			char ratio[32];

			if (r->error)
				continue;
			fprintf(f,
				"SUMMARY replay workload=%s strategy=%s calls=%" PRIu64 " lower_bound=%" PRIu64
				" ratio_lb=%s peak_mappings=%" PRIu64 " limit_exceeded=%" PRIu64 " remapped_bytes=%" PRIu64
				" deferred_peak_bytes=%" PRIu64 " deferred_end_bytes=%" PRIu64 " deferred_integrated=%" PRIu64
				"\n",
				w[i].trace->name, r->strategy, r->calls, w[i].lb.calls,
				fmt_ratio(r->calls, w[i].lb.calls, ratio, sizeof(ratio)), r->peak_mappings, r->limit_exceeded,
				r->remapped_bytes, r->deferred_peak_bytes, r->deferred_end_bytes, r->deferred_integrated);
			if (r->has_async) {
				const struct replay_async_result *a = &r->async;
				fprintf(f,
					"SUMMARY replay-async workload=%s strategy=%s producers=%u requests=%" PRIu64
					" calls=%" PRIu64 " wall_ns=%" PRIu64 " latency_p50_ns=%" PRIu64 " latency_p99_ns=%" PRIu64
					"\n",
					w[i].trace->name, r->strategy, a->producers, a->requests, a->calls, a->wall_ns,
					a->lat_p50_ns, a->lat_p99_ns);
			}
		}
	}
}

static double us(uint64_t ns)
{
	return (double)ns / 1e3;
}

void replay_print_latency(FILE *f, const struct replay_workload_result *w, size_t n)
{
	cpu_set_t set;
	int cpus = sched_getaffinity(0, sizeof(set), &set) == 0 ? CPU_COUNT(&set) : 0;

	for (size_t i = 0; i < n; i++) {
		const struct replay_result *q = NULL;

		for (size_t k = 0; k < w[i].nrows; k++)
			if (!w[i].rows[k].error && strcmp(w[i].rows[k].strategy, "qemu") == 0)
				q = &w[i].rows[k];
		for (size_t k = 0; k < w[i].nrows; k++) {
			const struct replay_result *r = &w[i].rows[k];

			if (r->error || r->lower_bound || !r->cpu_measured || !r->requests)
				continue;
			fprintf(f,
				"SUMMARY latency workload=%s strategy=%s cpus=%d gap_us=%" PRIu64
				" gap_mean_us=%.2f spin_us=%" PRIu32 " requests=%" PRIu64
				" p50_us=%.2f p99_us=%.2f mean_us=%.2f cpu_us_per_req=%.2f caller_cpu_us_per_req=%.2f"
				" worker_cpu_us_per_req=%.2f cpu_per_wall=%.2f",
				w[i].trace->name, r->strategy, cpus, r->gap_ns / 1000, us(r->gap_mean_ns), r->spin_us,
				r->requests,
				us(r->lat_p50_ns), us(r->lat_p99_ns),
				us(r->lat_mean_ns), us(cpu_per_req(r)), us(r->cpu_caller_ns / r->requests),
				us(r->cpu_helper_ns / r->requests),
				r->lat_mean_ns ? (double)cpu_per_req(r) / (double)r->lat_mean_ns : 0.0);
			if (q)
				fprintf(f, " qemu_p50_us=%.2f qemu_cpu_us_per_req=%.2f", us(q->lat_p50_ns),
					us(cpu_per_req(q)));
			fputc('\n', f);
		}
	}
}

const char *replay_frontier_budget(const struct replay_result *r, char *buf, size_t len)
{
	if (r->lower_bound)
		snprintf(buf, len, "lower-bound");
	else if (strncmp(r->strategy, "rdm-", 4) != 0)
		snprintf(buf, len, "%s", r->strategy); /* "cut-16M", "qemu" */
	else if (r->defer_budget == RDM_DEFER_BUDGET_NONE)
		snprintf(buf, len, "none");
	else
		snprintf(buf, len, "%" PRIu64, r->defer_budget);
	return buf;
}

static uint64_t qemu_calls(const struct replay_workload_result *w)
{
	for (size_t k = 0; k < w->nrows; k++)
		if (!w->rows[k].error && strcmp(w->rows[k].strategy, "qemu") == 0)
			return w->rows[k].calls;
	return 0;
}

void replay_print_frontier(FILE *f, const struct replay_workload_result *w, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		uint64_t q = qemu_calls(&w[i]);

		/* The strategies' points in row order, then the lower bound (row 0). */
		for (size_t kk = 1; kk <= w[i].nrows; kk++) {
			const struct replay_result *r = &w[i].rows[kk % w[i].nrows];
			char b[32];

			if (r->error)
				continue;
			fprintf(f,
				"SUMMARY frontier workload=%s budget=%s calls=%" PRIu64 " deferred_peak_bytes=%" PRIu64
				" qemu_calls=%" PRIu64 " lower_bound=%" PRIu64 " deferred_end_bytes=%" PRIu64
				" deferred_integrated=%" PRIu64 "\n",
				w[i].trace->name, replay_frontier_budget(r, b, sizeof(b)), r->calls, r->deferred_peak_bytes,
				q, w[i].lb.calls, r->deferred_end_bytes, r->deferred_integrated);
		}
	}
}

static void json_str(FILE *f, const char *s)
{
	fputc('"', f);
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (c == '"' || c == '\\')
			fprintf(f, "\\%c", c);
		else if (c < 0x20)
			fprintf(f, "\\u%04x", c);
		else
			fputc(c, f);
	}
	fputc('"', f);
}

int replay_write_json(const char *path, const struct replay_run_info *info, const struct replay_workload_result *w,
		      size_t n, char *err, size_t errlen)
{
	FILE *f = fopen(path, "w");

	if (!f) {
		snprintf(err, errlen, "--json %s: %s", path, strerror(errno));
		return -1;
	}
	fprintf(f, "{\n  \"tool\": \"rdm-replay\",\n  \"schema_version\": 1,\n  \"seed\": %" PRIu64
		   ",\n  \"scale\": %" PRIu64 ",\n  \"gap_us\": %" PRIu64 ",\n  \"spin_us\": %" PRIu32
		   ",\n  \"backend\": ",
		info->seed, info->scale, info->gap_ns / 1000, info->spin_us);
	json_str(f, info->backend);
	fprintf(f, ",\n  \"mapping_limit\": %" PRIu64 ",\n  \"cost_model\": {\"call_ns\": %" PRIu64
		   ", \"page_ns\": %" PRIu64 ", \"page_size\": %d},\n  \"workloads\": [",
		REPLAY_MAPPING_LIMIT, info->call_ns, info->page_ns, REPLAY_PAGE_SIZE);
	for (size_t i = 0; i < n; i++) {
		const struct replay_trace *t = w[i].trace;

		fprintf(f, "%s\n    {\"name\": ", i ? "," : "");
		json_str(f, t->name);
		fprintf(f, ", \"source\": ");
		if (w[i].path)
			json_str(f, w[i].path);
		else
			fprintf(f, "\"generator\"");
		fprintf(f, ", \"block_size\": %" PRIu64 ", \"region_size\": %" PRIu64 ", \"requests\": %zu,\n",
			t->block_size, t->region_size, t->n);
		fprintf(f, "     \"lower_bound\": {\"calls\": %" PRIu64 ", \"maps\": %" PRIu64 ", \"unmaps\": %" PRIu64
			   ", \"peak_mappings\": %" PRIu64 "},\n     \"results\": [",
			w[i].lb.calls, w[i].lb.maps, w[i].lb.unmaps, w[i].lb.peak_mappings);
		for (size_t k = 0; k < w[i].nrows; k++) {
			const struct replay_result *r = &w[i].rows[k];

			fprintf(f, "%s\n       {\"strategy\": ", k ? "," : "");
			json_str(f, r->strategy);
			if (r->error) {
				fprintf(f, ", \"error\": ");
				json_str(f, strerror(-r->error));
				fputc('}', f);
				continue;
			}
			fprintf(f, ", \"map_calls\": %" PRIu64 ", \"unmap_calls\": %" PRIu64 ", \"calls\": %" PRIu64,
				r->map_calls, r->unmap_calls, r->calls);
			if (w[i].lb.calls)
				fprintf(f, ", \"ratio_lb\": %.6f", (double)r->calls / (double)w[i].lb.calls);
			else
				fprintf(f, ", \"ratio_lb\": %s", r->calls ? "null" : "1.0");
			fprintf(f, ", \"peak_mappings\": %" PRIu64 ", \"limit_exceeded\": %" PRIu64
				   ", \"remapped_bytes\": %" PRIu64 ", \"deferred_peak_bytes\": %" PRIu64
				   ", \"modelled_ns\": %" PRIu64,
				r->peak_mappings, r->limit_exceeded, r->remapped_bytes, r->deferred_peak_bytes, r->model_ns);
			if (r->lower_bound)
				fprintf(f, ", \"wall_ns\": null, \"latency_p50_ns\": null, \"latency_p99_ns\": null"
					   ", \"gap_mean_ns\": null");
			else
				fprintf(f, ", \"wall_ns\": %" PRIu64 ", \"latency_p50_ns\": %" PRIu64
					   ", \"latency_p99_ns\": %" PRIu64 ", \"gap_mean_ns\": %" PRIu64,
					r->wall_ns, r->lat_p50_ns, r->lat_p99_ns, r->gap_mean_ns);
			if (r->lower_bound || !r->cpu_measured)
				fprintf(f, ", \"latency_mean_ns\": null, \"cpu_caller_ns\": null, \"cpu_worker_ns\": null"
					   ", \"cpu_ns_per_request\": null");
			else
				fprintf(f, ", \"latency_mean_ns\": %" PRIu64 ", \"cpu_caller_ns\": %" PRIu64
					   ", \"cpu_worker_ns\": %" PRIu64 ", \"cpu_ns_per_request\": %" PRIu64,
					r->lat_mean_ns, r->cpu_caller_ns, r->cpu_helper_ns, cpu_per_req(r));
			fprintf(f, ", \"deferred_end_bytes\": %" PRIu64 ", \"deferred_integrated\": %" PRIu64
				   ", \"defer_budget\": ",
				r->deferred_end_bytes, r->deferred_integrated);
			if (r->defer_budget == RDM_DEFER_BUDGET_NONE)
				fprintf(f, "\"none\"");
			else if (r->defer_budget)
				fprintf(f, "%" PRIu64, r->defer_budget);
			else
				fprintf(f, "null");
			fprintf(f, ", \"failed_requests\": %" PRIu64 ", \"async\": ", r->failed_requests);
			if (r->has_async) {
				const struct replay_async_result *a = &r->async;
				fprintf(f, "{\"producers\": %u, \"requests\": %" PRIu64 ", \"failed\": %" PRIu64
					   ", \"calls\": %" PRIu64 ", \"wall_ns\": %" PRIu64 ", \"latency_p50_ns\": %" PRIu64
					   ", \"latency_p99_ns\": %" PRIu64 ", \"peak_mappings\": %" PRIu64
					   ", \"remapped_bytes\": %" PRIu64 ", \"deferred_peak_bytes\": %" PRIu64 "}",
					a->producers, a->requests, a->failed, a->calls, a->wall_ns, a->lat_p50_ns,
					a->lat_p99_ns, a->peak_mappings, a->remapped_bytes, a->deferred_peak_bytes);
			} else {
				fprintf(f, "null");
			}
			fputc('}', f);
		}
		fprintf(f, "\n     ]");
		if (info->sweep) {
			uint64_t q = qemu_calls(&w[i]);

			fprintf(f, ",\n     \"frontier\": [");
			for (size_t kk = 1, m = 0; kk <= w[i].nrows; kk++) {
				const struct replay_result *r = &w[i].rows[kk % w[i].nrows];
				char b[32];

				if (r->error)
					continue;
				replay_frontier_budget(r, b, sizeof(b));
				fprintf(f, "%s\n       {\"budget\": ", m++ ? "," : "");
				if (strncmp(r->strategy, "rdm-", 4) == 0 && r->defer_budget != RDM_DEFER_BUDGET_NONE)
					fprintf(f, "%" PRIu64, r->defer_budget);
				else
					json_str(f, b);
				fprintf(f, ", \"strategy\": ");
				json_str(f, r->strategy);
				fprintf(f, ", \"calls\": %" PRIu64 ", \"deferred_peak_bytes\": %" PRIu64
					   ", \"qemu_calls\": %" PRIu64 ", \"lower_bound\": %" PRIu64
					   ", \"deferred_end_bytes\": %" PRIu64 ", \"deferred_integrated\": %" PRIu64 "}",
					r->calls, r->deferred_peak_bytes, q, w[i].lb.calls, r->deferred_end_bytes,
					r->deferred_integrated);
			}
			fprintf(f, "\n     ]");
		}
		fprintf(f, "}");
	}
	fprintf(f, "\n  ]\n}\n");
	if (fclose(f) != 0) {
		snprintf(err, errlen, "--json %s: %s", path, strerror(errno));
		return -1;
	}
	return 0;
}

/* gnuplot strings in single quotes: double any single quote. */
/* The plot's data file is written: close it (its error is the data
 * file's) and open the gnuplot script. NULL with err set on failure. */
static FILE *plot_next_file(FILE *f, const char *dat, const char *gp, char *err, size_t errlen)
{
	if (fclose(f) != 0) {
		snprintf(err, errlen, "--plot: %s: %s", dat, strerror(errno));
		return NULL;
	}
	f = fopen(gp, "w");
	if (!f)
		snprintf(err, errlen, "--plot: %s: %s", gp, strerror(errno));
	return f;
}

static void gp_str(FILE *f, const char *s)
{
	fputc('\'', f);
	for (; *s; s++) {
		if (*s == '\'')
			fputc('\'', f);
		fputc(*s, f);
	}
	fputc('\'', f);
}

static int run_gnuplot(char *gp, char *err, size_t errlen)
{
	char prog_name[] = "gnuplot";
	char *argv[] = { prog_name, gp, NULL };
	int status;
	pid_t pid;
	int e = posix_spawnp(&pid, "gnuplot", NULL, NULL, argv, environ);

	if (e) {
		snprintf(err, errlen, "--plot: cannot run gnuplot: %s (Debian package gnuplot-nox)", strerror(e));
		return -1;
	}
	if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		snprintf(err, errlen, "--plot: gnuplot %s failed", gp);
		return -1;
	}
	return 0;
}

int replay_write_plot(const char *path, const struct replay_workload_result *w, size_t n, char *err, size_t errlen)
{
	size_t pl = strlen(path), ns = 0;
	const char *names[64];
	char *dat = malloc(pl + 8), *gp = malloc(pl + 8);
	bool png = pl >= 4 && strcmp(path + pl - 4, ".png") == 0;
	FILE *f;
	int rc = -1;

	if (!dat || !gp) {
		snprintf(err, errlen, "--plot: out of memory");
		goto out;
	}
	snprintf(dat, pl + 8, "%s.dat", path);
	snprintf(gp, pl + 8, "%s.gp", path);
	for (size_t i = 0; i < n; i++) {
		for (size_t k = 0; k < w[i].nrows; k++) {
			size_t j;
			for (j = 0; j < ns; j++)
				if (strcmp(names[j], w[i].rows[k].strategy) == 0)
					break;
			if (j == ns && ns < 64)
				names[ns++] = w[i].rows[k].strategy;
		}
	}
	f = fopen(dat, "w");
	if (!f) {
		snprintf(err, errlen, "--plot: %s: %s", dat, strerror(errno));
		goto out;
	}
	fprintf(f, "workload");
	for (int pass = 0; pass < 2; pass++)
		for (size_t j = 0; j < ns; j++)
			fprintf(f, "\t%s", names[j]);
	fputc('\n', f);
	for (size_t i = 0; i < n; i++) {
		fprintf(f, "%s", w[i].trace->name);
		for (int pass = 0; pass < 2; pass++) {
			for (size_t j = 0; j < ns; j++) {
				const struct replay_result *r = NULL;
				for (size_t k = 0; k < w[i].nrows; k++)
					if (strcmp(w[i].rows[k].strategy, names[j]) == 0 && !w[i].rows[k].error)
						r = &w[i].rows[k];
				/* Log scale: a zero or missing value is left out ("?"). */
				if (!r || (pass == 0 ? r->calls : r->model_ns) == 0)
					fprintf(f, "\t?");
				else if (pass == 0)
					fprintf(f, "\t%" PRIu64, r->calls);
				else
					fprintf(f, "\t%.6f", (double)r->model_ns / 1e6);
			}
		}
		fputc('\n', f);
	}
	f = plot_next_file(f, dat, gp, err, errlen);
	if (!f)
		goto out;
	fprintf(f, "# rdm-replay plot: gnuplot %s (data in %s)\n", gp, dat);
	fprintf(f, "set terminal %s size %zu,960 %s font 'sans,10' background '#ffffff'\n",
		png ? "pngcairo" : "svg", 300 + n * (40 + 12 * ns), png ? "" : "dynamic");
	fprintf(f, "set output ");
	gp_str(f, path);
	fprintf(f, "\nset termoption noenhanced\n"
		   "set datafile separator '\\t'\n"
		   "set datafile missing '?'\n"
		   "set style data histograms\n"
		   "set style histogram clustered gap 1\n"
		   "set style fill solid 0.85 border -1\n"
		   "set boxwidth 0.9\n"
		   "set logscale y 10\n"
		   "set grid ytics mytics\n"
		   "set key outside right top vertical\n"
		   "set xtics rotate by 30 right scale 0\n"
		   "set multiplot layout 2,1 title 'rdm-replay: IOMMU calls and modelled time per strategy, one group per workload'\n"
		   "set ylabel 'map + unmap calls (log)'\n"
		   "plot for [i=2:%zu] ",
		ns + 1);
	gp_str(f, dat);
	fprintf(f, " using i:xtic(1) title columnheader(i)\n"
		   "set ylabel 'modelled time, ms (log)'\n"
		   "plot for [i=%zu:%zu] ",
		ns + 2, 2 * ns + 1);
	gp_str(f, dat);
	fprintf(f, " using i:xtic(1) title columnheader(i)\nunset multiplot\n");
	if (fclose(f) != 0) {
		snprintf(err, errlen, "--plot: %s: %s", gp, strerror(errno));
		goto out;
	}
	rc = run_gnuplot(gp, err, errlen);
out:
	free(dat);
	free(gp);
	return rc;
}

/* The frontier plot's data sets per workload (gnuplot "index" 4 * i + kind). */
enum { FK_RDM, FK_CUT, FK_QEMU, FK_LB, FK_COUNT };

static int frontier_kind(const struct replay_result *r)
{
	if (r->lower_bound)
		return FK_LB;
	if (strncmp(r->strategy, "rdm-", 4) == 0)
		return FK_RDM;
	if (strncmp(r->strategy, "cut-", 4) == 0)
		return FK_CUT;
	return FK_QEMU;
}

int replay_write_frontier_plot(const char *path, const struct replay_workload_result *w, size_t n, char *err,
			       size_t errlen)
{
	size_t pl = strlen(path), cols = 1, rows;
	char *dat = malloc(pl + 8), *gp = malloc(pl + 8);
	bool png = pl >= 4 && strcmp(path + pl - 4, ".png") == 0;
	FILE *f;
	int rc = -1;

	if (!dat || !gp) {
		snprintf(err, errlen, "--plot: out of memory");
		goto out;
	}
	snprintf(dat, pl + 8, "%s.dat", path);
	snprintf(gp, pl + 8, "%s.gp", path);
	while (cols * cols < n)
		cols++;
	rows = n ? (n + cols - 1) / cols : 1;
	f = fopen(dat, "w");
	if (!f) {
		snprintf(err, errlen, "--plot: %s: %s", dat, strerror(errno));
		goto out;
	}
	/* Blocks separated by two blank lines: calls, peak deferred % of the region, label. */
	for (size_t i = 0; i < n; i++) {
		for (int kind = 0; kind < FK_COUNT; kind++) {
			size_t lines = 0;

			fprintf(f, "# %s kind %d\n", w[i].trace->name, kind);
			for (size_t k = 0; k < w[i].nrows; k++) {
				const struct replay_result *r = &w[i].rows[k];
				char b[32];

				if (r->error || frontier_kind(r) != kind || r->calls == 0)
					continue;
				if (kind == FK_RDM)
					snprintf(b, sizeof(b), "%s", r->budget_label[0] ? r->budget_label : "default");
				else
					snprintf(b, sizeof(b), "%s", kind == FK_CUT ? r->strategy + 4 : "");
				fprintf(f, "%" PRIu64 "\t%.6f\t%s\n", r->calls,
					100.0 * (double)r->deferred_peak_bytes / (double)w[i].trace->region_size, b);
				lines++;
			}
			if (!lines)
				fprintf(f, "?\t?\t-\n"); /* keeps the block's index */
			fprintf(f, "\n\n");
		}
	}
	f = plot_next_file(f, dat, gp, err, errlen);
	if (!f)
		goto out;
	fprintf(f, "# rdm-replay frontier plot: gnuplot %s (data in %s)\n", gp, dat);
	fprintf(f, "set terminal %s size %zu,%zu %s font 'sans,9' background '#ffffff'\n", png ? "pngcairo" : "svg",
		460 * cols, 60 + 340 * rows, png ? "" : "dynamic");
	fprintf(f, "set output ");
	gp_str(f, path);
	fprintf(f, "\nset termoption noenhanced\n"
		   "set datafile separator '\\t'\n"
		   "set datafile missing '?'\n"
		   "set logscale x 10\n"
		   "set grid xtics ytics mxtics\n"
		   "set yrange [0:*]\n"
		   "set offsets graph 0.05, graph 0.05, graph 0.08, 0\n"
		   "set key top right font ',8'\n"
		   "set xlabel 'map + unmap calls (log)'\n"
		   "set ylabel 'peak deferred, %% of region'\n"
		   "set multiplot layout %zu,%zu title 'rdm-replay: calls against deferred memory (rdm-defer budgets,"
		   " fixed cuts, QEMU, lower bound)'\n",
		rows, cols);
	for (size_t i = 0; i < n; i++) {
		size_t b = 4 * i;

		fprintf(f, "set title ");
		gp_str(f, w[i].trace->name);
		fprintf(f, "\nplot ");
		gp_str(f, dat);
		fprintf(f, " index %zu using 1:2 with linespoints lw 2 pt 7 lc rgb '#1f77b4' title 'rdm-defer (budget)', \\\n"
			   "     '' index %zu using 1:2:3 with labels offset 0,0.8 font ',7' tc rgb '#1f77b4' notitle, \\\n"
			   "     '' index %zu using 1:2 with linespoints lw 2 pt 5 lc rgb '#ff7f0e' title 'fixed cut', \\\n"
			   "     '' index %zu using 1:2:3 with labels offset 0,-0.8 font ',7' tc rgb '#ff7f0e' notitle, \\\n"
			   "     '' index %zu using 1:2 with points pt 9 ps 2 lc rgb '#d62728' title 'QEMU', \\\n"
			   "     '' index %zu using 1:2 with points pt 13 ps 2 lc rgb '#2ca02c' title 'lower bound'\n",
			b + FK_RDM, b + FK_RDM, b + FK_CUT, b + FK_CUT, b + FK_QEMU, b + FK_LB);
	}
	fprintf(f, "unset multiplot\n");
	if (fclose(f) != 0) {
		snprintf(err, errlen, "--plot: %s: %s", gp, strerror(errno));
		goto out;
	}
	rc = run_gnuplot(gp, err, errlen);
out:
	free(dat);
	free(gp);
	return rc;
}
