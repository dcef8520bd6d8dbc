/* SPDX-License-Identifier: MIT */
/* tools/replay/main.c - rdm-replay: compare IOMMU-mapping strategies on traces and generated workloads. */
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <rdm/error.h>
#include <rdm/region.h>
#include <rdm/worker.h>

#include "tools/replay/gen.h"
#include "tools/replay/lower_bound.h"
#include "tools/replay/output.h"
#include "tools/replay/run.h"
#include "tools/replay/strategy.h"
#include "tools/replay/trace.h"

#define MAX_STRATEGIES 32
#define MAX_POINTS 32

static const char *prog = "rdm-replay";

/* A --defer-budget value, resolved per workload (a percentage is of its region). */
enum budget_kind { BUDGET_UNSET, BUDGET_BYTES, BUDGET_PCT, BUDGET_NONE };

struct budget {
	enum budget_kind kind;
	uint64_t bytes;   /* BUDGET_BYTES */
	uint64_t ppm;     /* BUDGET_PCT: millionths of the region (1% = 10000) */
	char label[24];   /* as given: "64M", "0.5%", "none" */
};

/* The defer budget for a region of `size` bytes: 0 = the library's default. */
static uint64_t budget_bytes(const struct budget *b, uint64_t size)
{
	uint64_t v;

	switch (b->kind) {
	case BUDGET_BYTES: return b->bytes;
	case BUDGET_NONE: return RDM_DEFER_BUDGET_NONE;
	case BUDGET_PCT:
		/* Exact without overflow: ppm <= 10^6 and size % 10^6 < 10^6. */
		v = size / 1000000 * b->ppm + size % 1000000 * b->ppm / 1000000;
		return v ? v : 1; /* 0 would mean the default; the library rounds up to a discard unit */
	default: return 0;
	}
}

/*
 * One replay of each workload: a strategy with a defer budget. Without
 * --sweep the points are the selected strategies, all with --defer-budget;
 * with --sweep, rdm-defer at each sweep budget, the fixed cuts and qemu.
 */
struct point {
	const struct replay_strategy *s;
	struct budget budget;
	bool sweep;       /* a --sweep point: the row is labelled with its budget */
};

/* The (workload, strategy) runs, handed out to --jobs threads. */
struct job_ctx {
	struct replay_trace *traces;
	struct replay_workload_result *res;
	const struct point *pts;
	size_t nsel, njobs;
	struct replay_backend_spec *be;
	atomic_size_t next;  /* next job index to hand out */
	atomic_size_t done;  /* jobs finished, for the progress line */
	atomic_bool failed;
};

static void run_job(struct job_ctx *c, size_t j)
{
	size_t i = j / c->nsel, s = j % c->nsel;
	const struct point *pt = &c->pts[s];
	const struct replay_strategy *st = pt->s;
	struct replay_trace *t = &c->traces[i];
	struct replay_result *r = &c->res[i].rows[1 + s];
	struct replay_backend_spec be = *c->be; /* this job's defer budget */
	bool is_rdm = strncmp(st->name, "rdm-", 4) == 0;
	char err[REPLAY_ERR_LEN];

	be.defer_budget = is_rdm ? budget_bytes(&pt->budget, t->region_size) : 0;

	replay_progress("rdm-replay: [%zu/%zu] %s / %s",
			atomic_load_explicit(&c->done, memory_order_relaxed) + 1, c->njobs, t->name, st->name);
	if (replay_run_strategy(t, st, &be, r, err, sizeof(err)) < 0) {
		replay_progress_done();
		fprintf(stderr, "%s: %s / %s: %s\n", prog, t->name, st->name, err);
		atomic_store_explicit(&c->failed, true, memory_order_relaxed);
	} else if (st->run_async && t->kind == REPLAY_KIND_STORM && !pt->sweep) {
		replay_progress("rdm-replay: %s / %s, 4 producers", t->name, st->name);
		if (replay_run_async(t, st, &be, 4, r, err, sizeof(err)) < 0) {
			replay_progress_done();
			fprintf(stderr, "%s: %s / %s: asynchronous run: %s\n", prog, t->name, st->name, err);
			atomic_store_explicit(&c->failed, true, memory_order_relaxed);
		}
	}
	if (is_rdm && pt->budget.kind != BUDGET_UNSET)
		snprintf(r->budget_label, sizeof(r->budget_label), "%s", pt->budget.label);
	if (pt->sweep)
		r->sweep_point = true;
	atomic_fetch_add_explicit(&c->done, 1, memory_order_relaxed);
}

/*
 * Relaxed throughout: the counters only hand out distinct job indices and
 * count for the progress line; each job writes its own result slot, and the
 * main thread reads the slots after pthread_join(), which synchronises.
 */
static void *job_thread(void *arg)
{
	struct job_ctx *c = arg;

	for (;;) {
		size_t j = atomic_fetch_add_explicit(&c->next, 1, memory_order_relaxed);
		if (j >= c->njobs)
			return NULL;
		run_job(c, j);
	}
}

static void usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void usage_error(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s: ", prog);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nTry '%s --help'.\n", prog);
	exit(2);
}

static void print_help(const struct replay_strategy *const *all, size_t nall)
{
	printf("NAME\n"
	       "    rdm-replay - compare IOMMU-mapping strategies on virtio-mem traces and generated workloads\n"
	       "\n"
	       "SYNOPSIS\n"
	       "    rdm-replay [OPTION...] [TRACE.csv...]\n"
	       "\n"
	       "DESCRIPTION\n"
	       "    Replays each workload through each strategy on the same IOMMU backend, one request at a\n"
	       "    time (a request completes before the next is submitted), and reports how many VFIO map and\n"
	       "    unmap calls each needed, against the offline lower bound: the fewest calls any strategy\n"
	       "    could make with zero DMA windows and no deferred reclaim, knowing the whole trace.\n"
	       "\n"
	       "    With TRACE.csv arguments it replays those traces (format: README, \"Trace format\"); the\n"
	       "    geometry comes from the sibling NAME.meta.json unless --block-size and --region-size are\n"
	       "    given. Every trace is parsed and checked before anything runs. Without traces it runs\n"
	       "    the default built-in workloads; --workload adds built-in workloads to the traces.\n"
	       "\n"
	       "OPTIONS\n"
	       "    --workload SPEC     Run a built-in workload, SPEC = NAME[:KEY=VALUE[,KEY=VALUE...]];\n"
	       "                        repeatable; 'all' = the default set (below). Default: all when no\n"
	       "                        trace is given, none otherwise.\n"
	       "    --policy LIST       Comma-separated strategies to run (default: every one). Names below;\n"
	       "                        'rdm' selects every rdm-* strategy, 'baselines' qemu,cloud-hypervisor,naive,\n"
	       "                        'cuts' the fixed-cut references (not in the default set).\n"
	       "                        The lower bound is always computed; 'lower-bound' is accepted.\n"
	       "    --backend KIND      'sim' (default): the exact software model of the type1 kernel's rules\n"
	       "                        with a cost model. 'vfio-type1:GROUP_PATH': a real VFIO container on\n"
	       "                        the group (e.g. /dev/vfio/12); the region's host memory is reserved\n"
	       "                        with mmap and pinned by the kernel, so scale big traces down.\n"
	       "    --block-size SIZE   Block size of the traces (overrides the meta file). SIZE takes K, M,\n"
	       "                        G, T suffixes (powers of 1024).\n"
	       "    --region-size SIZE  Region size of the traces (overrides the meta file).\n"
	       "    --scale DIV         Divide every offset, length, block size and region size by DIV (an\n"
	       "                        error if one is not divisible, or a block falls below 4 KiB). Call\n"
	       "                        counts depend on block counts, not bytes.\n"
	       "    --seed N            Seed of the generators (default 1).\n"
	       "    --json FILE         Write the results as JSON (schema: README, \"rdm-replay JSON\").\n"
	       "    --plot FILE         Plot calls and modelled time per strategy, one group per workload,\n"
	       "                        log scale; FILE ends in .svg or .png. gnuplot draws it from FILE.dat\n"
	       "                        and FILE.gp, which are kept beside it.\n"
	       "    --defer-budget B    The rdm strategies' defer budget (rdm_region_config.defer_budget):\n"
	       "                        a SIZE (K, M, G, T suffixes), a percentage of each workload's region\n"
	       "                        (2%%, 0.5%%; up to 4 decimals) or 'none' (unbounded). Default: the\n"
	       "                        library's (2%% of the region). Only rdm-defer acts on it.\n"
	       "    --sweep             The calls-against-deferred-memory frontier: for each workload,\n"
	       "                        rdm-defer at budgets 0.25%%, 0.5%%, 1%%, 2%%, 4%%, 8%% of the region and\n"
	       "                        none, the fixed cuts cut-4M ... cut-128M, qemu and the lower bound;\n"
	       "                        prints SUMMARY frontier lines (below) instead of SUMMARY replay.\n"
	       "                        Not with --policy or --defer-budget. --plot draws the frontier.\n"
	       "    --jobs N            Run N (workload, strategy) replays at once, each on its own sim\n"
	       "                        (default 1; at most 16; sim only). Call counts do not change; wall\n"
	       "                        times and latencies are measured on a busier machine.\n"
	       "    --sim-call-ns N     Sim cost model: nanoseconds per call (default %d).\n"
	       "    --sim-page-ns N     Sim cost model: nanoseconds per 4 KiB page mapped or unmapped\n"
	       "                        (default %d). Calibrate both from a real container: see README.\n"
	       "    --iova ADDR         IOVA of region offset 0 (default 0; hex with 0x).\n"
	       "    --gap-us N          Pace the replay: sleep N microseconds before each request, as a guest\n"
	       "                        does between requests (default 0: back to back; at most 10000000).\n"
	       "                        The caller's CPU time is then read around each request alone (the\n"
	       "                        sleeps are the harness's); the worker's still over the whole replay,\n"
	       "                        so its polling between requests shows. Not with --sweep; the\n"
	       "                        asynchronous storm run (SUMMARY replay-async) is not paced.\n"
	       "    --spin-us N         The rdm strategies' worker polling bound (rdm_worker_config.spin_us):\n"
	       "                        an idle worker, and a caller waiting for its ticket, poll at most N\n"
	       "                        microseconds before they sleep (default %d; 1 to 1000000). Lower\n"
	       "                        trades latency for CPU: see it with --gap-us. Not with --sweep.\n"
	       "    --list              List strategies and workloads with their parameters, then exit.\n"
	       "    --help              This text.\n"
	       "\n"
	       "STRATEGIES\n",
	       REPLAY_DEFAULT_CALL_NS, REPLAY_DEFAULT_PAGE_NS, RDM_WORKER_DEFAULT_SPIN_US);
	if (!replay_rdm_strategies[0])
		printf("    %-19s %s\n", "rdm-*", "rdm's own policies (rdm-block, rdm-coalesce, rdm-defer): not in this build yet");
	for (size_t i = 0; i < nall; i++)
		printf("    %-19s %s\n", all[i]->name, all[i]->help);
	printf("    %-19s %s\n", "lower-bound", "offline: cut populates where later discards cut them; one unmap per discard");
	printf("\nWORKLOADS (built-in; --list shows every parameter)\n");
	for (size_t i = 0; i < replay_ngenerators; i++)
		printf("    %-19s %s\n", replay_generators[i].name, replay_generators[i].help);
	printf("    default set:       ");
	for (size_t i = 0; replay_default_workloads[i]; i++)
		printf("%s%s", i ? " " : "", replay_default_workloads[i]);
	printf("\n\nOUTPUT\n"
	       "    A table per workload on stdout: map, unmap and total calls, ratio to the lower bound, peak\n"
	       "    mappings and how far past the kernel's default limit of 65535 they go, remapped bytes\n"
	       "    (DMA windows), deferred bytes (peak, after the last request, and integrated: the sum\n"
	       "    over requests of the deferred bytes after each, in byte-requests, as traces carry no\n"
	       "    times), modelled time, wall time, request latency p50/p99, CPU time per request (the\n"
	       "    calling thread's CPU clock plus, for rdm strategies, the IOMMU worker thread's, over the\n"
	       "    whole replay, per request; with --gap-us the calling thread's inside requests only).\n"
	       "    Then one line per workload and strategy:\n"
	       "      SUMMARY replay workload=W strategy=S calls=N lower_bound=LB ratio_lb=R peak_mappings=K\n"
	       "              limit_exceeded=E remapped_bytes=B deferred_peak_bytes=D deferred_end_bytes=F\n"
	       "              deferred_integrated=I\n"
	       "    With --sweep, one line per workload and point instead:\n"
	       "      SUMMARY frontier workload=W budget=B calls=N deferred_peak_bytes=D qemu_calls=Q\n"
	       "              lower_bound=LB deferred_end_bytes=F deferred_integrated=I\n"
	       "    B: rdm-defer's budget in bytes or 'none'; cut-4M ... cut-128M; qemu; lower-bound.\n"
	       "    Without --sweep, also one line per workload and strategy (not the lower bound):\n"
	       "      SUMMARY latency workload=W strategy=S cpus=N gap_us=G gap_mean_us=T spin_us=P\n"
	       "              requests=R\n"
	       "              p50_us=T p99_us=T mean_us=T\n"
	       "              cpu_us_per_req=T caller_cpu_us_per_req=T worker_cpu_us_per_req=T\n"
	       "              cpu_per_wall=X [qemu_p50_us=T qemu_cpu_us_per_req=T]\n"
	       "    cpus: CPUs in the affinity mask (taskset); gap_us: --gap-us; gap_mean_us: measured\n"
	       "    from one request's end to the next one's start; spin_us: the rdm workers' polling bound\n"
	       "    (--spin-us or the default; printed on every line); cpu_per_wall: CPU per request / mean\n"
	       "    latency; qemu_*: the qemu baseline's, when it ran on the same workload.\n"
	       "    Baselines run on an unlimited sim; rdm strategies on one with the default limit.\n"
	       "    A progress line goes to stderr when it is a terminal.\n"
	       "\n"
	       "EXIT STATUS\n"
	       "    0 success; 1 a trace, backend or output failed (nothing is replayed when a trace is\n"
	       "    malformed); 2 a bad option.\n"
	       "\n"
	       "EXAMPLES\n"
	       "    rdm-replay data/traces/*.csv --workload all --json out/replay.json --plot out/replay.svg\n"
	       "    rdm-replay --workload storm:conversions=20000 --policy qemu,naive\n"
	       "    rdm-replay --sweep --workload sbm --plot out/frontier.svg data/traces/A_sbm2M_movable.csv\n"
	       "    rdm-replay --defer-budget 0.5%% --policy rdm-defer,qemu --workload frag\n"
	       "    rdm-replay --scale 64 --backend vfio-type1:/dev/vfio/12 data/traces/A_sbm2M_movable.csv\n"
	       "    taskset -c 0 rdm-replay --policy rdm-block,rdm-defer,qemu data/traces/A_sbm2M_movable.csv\n");
}

static void print_list(const struct replay_strategy *const *all, size_t nall)
{
	printf("strategies:");
	for (size_t i = 0; i < nall; i++)
		printf(" %s", all[i]->name);
	printf(" lower-bound\nworkloads:\n");
	for (size_t i = 0; i < replay_ngenerators; i++) {
		const struct replay_generator *g = &replay_generators[i];
		printf("  %s - %s\n", g->name, g->help);
		for (size_t k = 0; k < g->nparams; k++) {
			char b[32];
			printf("      %-12s %-8s %s\n", g->params[k].name,
			       g->params[k].is_size ? replay_fmt_size(g->params[k].def, b, sizeof(b))
						    : (snprintf(b, sizeof(b), "%" PRIu64, g->params[k].def), b),
			       g->params[k].help);
		}
	}
}

static uint64_t parse_count(const char *opt, const char *v, bool positive)
{
	char *e;
	uint64_t x;

	errno = 0;
	if (!v || *v < '0' || *v > '9')
		usage_error("%s: '%s' is not a%s integer", opt, v ? v : "", positive ? " positive" : "n unsigned");
	x = strtoull(v, &e, 0);
	if (*e || errno || (positive && x == 0))
		usage_error("%s: '%s' is not a%s integer", opt, v, positive ? " positive" : "n unsigned");
	return x;
}

static uint64_t parse_size_opt(const char *opt, const char *v)
{
	uint64_t x;

	if (replay_parse_size(v, &x) < 0 || x == 0)
		usage_error("%s: '%s' is not a size (a number with an optional K, M, G or T suffix)", opt, v);
	return x;
}

/*
 * --defer-budget: SIZE (K/M/G/T suffixes), PCT% of each workload's region
 * (up to 4 decimals, more than 0, at most 100), or "none".
 */
static struct budget parse_budget(const char *opt, const char *v)
{
	struct budget b = { .kind = BUDGET_UNSET };
	size_t len;

	if (!v)
		usage_error("%s: a size, a percentage or 'none' is needed", opt);
	len = strlen(v);
	snprintf(b.label, sizeof(b.label), "%.*s", (int)sizeof(b.label) - 1, v);
	if (strcmp(v, "none") == 0) {
		b.kind = BUDGET_NONE;
		return b;
	}
	if (len > 1 && v[len - 1] == '%') {
		uint64_t whole = 0, frac = 0;
		size_t i = 0, digits = 0, fd = 0;

		for (; i < len - 1 && v[i] >= '0' && v[i] <= '9' && digits < 4; i++, digits++)
			whole = whole * 10 + (uint64_t)(v[i] - '0');
		if (digits && i < len - 1 && v[i] == '.') {
			for (i++; i < len - 1 && v[i] >= '0' && v[i] <= '9' && fd < 4; i++, fd++)
				frac = frac * 10 + (uint64_t)(v[i] - '0');
			if (fd == 0)
				digits = 0;
		}
		/* 1% = 10^4 ppm: up to 4 decimals are exact. */
		for (size_t k = fd; k < 4; k++)
			frac *= 10;
		b.ppm = whole * 10000 + frac;
		if (!digits || i != len - 1 || b.ppm == 0 || b.ppm > 1000000)
			usage_error("%s: '%s' is not a percentage of the region (more than 0%%, at most 100%%, "
				    "up to 4 decimals, e.g. 0.5%%)", opt, v);
		b.kind = BUDGET_PCT;
		return b;
	}
	if (replay_parse_size(v, &b.bytes) < 0 || b.bytes == 0)
		usage_error("%s: '%s' is not a size (a number with an optional K, M, G or T suffix), "
			    "a percentage of the region (e.g. 2%% or 0.5%%) or 'none'", opt, v);
	b.kind = BUDGET_BYTES;
	return b;
}

enum {
	OPT_WORKLOAD = 256, OPT_POLICY, OPT_BACKEND, OPT_BLOCK, OPT_REGION, OPT_SCALE, OPT_SEED, OPT_JSON,
	OPT_PLOT, OPT_JOBS, OPT_CALL_NS, OPT_PAGE_NS, OPT_IOVA, OPT_LIST, OPT_HELP, OPT_DEFER_BUDGET, OPT_SWEEP,
	OPT_GAP, OPT_SPIN,
};

static const struct option longopts[] = {
	{ "workload", required_argument, NULL, OPT_WORKLOAD },
	{ "policy", required_argument, NULL, OPT_POLICY },
	{ "backend", required_argument, NULL, OPT_BACKEND },
	{ "block-size", required_argument, NULL, OPT_BLOCK },
	{ "region-size", required_argument, NULL, OPT_REGION },
	{ "scale", required_argument, NULL, OPT_SCALE },
	{ "seed", required_argument, NULL, OPT_SEED },
	{ "json", required_argument, NULL, OPT_JSON },
	{ "plot", required_argument, NULL, OPT_PLOT },
	{ "jobs", required_argument, NULL, OPT_JOBS },
	{ "sim-call-ns", required_argument, NULL, OPT_CALL_NS },
	{ "sim-page-ns", required_argument, NULL, OPT_PAGE_NS },
	{ "iova", required_argument, NULL, OPT_IOVA },
	{ "defer-budget", required_argument, NULL, OPT_DEFER_BUDGET },
	{ "sweep", no_argument, NULL, OPT_SWEEP },
	{ "gap-us", required_argument, NULL, OPT_GAP },
	{ "spin-us", required_argument, NULL, OPT_SPIN },
	{ "list", no_argument, NULL, OPT_LIST },
	{ "help", no_argument, NULL, OPT_HELP },
	{ NULL, 0, NULL, 0 },
};

static const char *opt_name(int c)
{
	for (const struct option *o = longopts; o->name; o++)
		if (o->val == c)
			return o->name;
	return "?";
}

int main(int argc, char **argv)
{
	const struct replay_strategy *all[MAX_STRATEGIES], *sel[MAX_STRATEGIES];
	size_t nall = 0, nsel = 0;
	const char *workloads[64], *json = NULL, *plot = NULL, *policy = NULL, *backend = "sim";
	size_t nwork = 0;
	bool want_all_workloads = false;
	struct replay_trace_opts topts = { 0 };
	struct replay_backend_spec be = { .kind = REPLAY_BACKEND_SIM, .container_fd = -1, .group_fd = -1 };
	uint64_t scale = 1, seed = 1, jobs = 1, gap_us = 0, spin_us = 0;
	bool gap_given = false;
	struct budget budget = { .kind = BUDGET_UNSET };
	bool sweep = false;
	struct point pts[MAX_POINTS];
	size_t npts = 0;
	char err[REPLAY_ERR_LEN];
	int c, status = 0;

	for (size_t i = 0; replay_rdm_strategies[i] && nall < MAX_STRATEGIES - 3; i++)
		all[nall++] = replay_rdm_strategies[i];
	all[nall++] = &replay_strategy_qemu;
	all[nall++] = &replay_strategy_cloud_hypervisor;
	all[nall++] = &replay_strategy_naive;
	size_t ndefault_strategies = nall; /* the fixed cuts are selected by name (or --sweep) only */
	for (size_t i = 0; i < REPLAY_NCUTS; i++)
		all[nall++] = replay_cut_strategies[i];

	opterr = 0;
	while ((c = getopt_long(argc, argv, ":", longopts, NULL)) != -1) {
		switch (c) {
		case OPT_WORKLOAD:
			if (strcmp(optarg, "all") == 0)
				want_all_workloads = true;
			else if (nwork < 64)
				workloads[nwork++] = optarg;
			else
				usage_error("--workload: too many workloads (at most 64)");
			break;
		case OPT_POLICY: policy = optarg; break;
		case OPT_BACKEND: backend = optarg; break;
		case OPT_BLOCK: topts.block_size = parse_size_opt("--block-size", optarg); break;
		case OPT_REGION: topts.region_size = parse_size_opt("--region-size", optarg); break;
		case OPT_SCALE: scale = parse_count("--scale", optarg, true); break;
		case OPT_SEED: seed = parse_count("--seed", optarg, false); break;
		case OPT_JSON: json = optarg; break;
		case OPT_PLOT: plot = optarg; break;
		case OPT_JOBS: jobs = parse_count("--jobs", optarg, true); break;
		case OPT_CALL_NS: be.call_ns = parse_count("--sim-call-ns", optarg, true); break;
		case OPT_PAGE_NS: be.page_ns = parse_count("--sim-page-ns", optarg, true); break;
		case OPT_IOVA: be.iova = parse_count("--iova", optarg, false); break;
		case OPT_DEFER_BUDGET: budget = parse_budget("--defer-budget", optarg); break;
		case OPT_SWEEP: sweep = true; break;
		case OPT_GAP:
			gap_us = parse_count("--gap-us", optarg, false);
			gap_given = true;
			break;
		case OPT_SPIN:
			spin_us = parse_count("--spin-us", optarg, true); /* > 0: 0 means not given */
			break;
		case OPT_LIST: print_list(all, nall); return 0;
		case OPT_HELP: print_help(all, nall); return 0;
		case ':': usage_error("option '--%s' needs an argument", opt_name(optopt));
		default:
			if (optopt && optopt < 256)
				usage_error("unknown option '-%c'", optopt);
			usage_error("unknown option '%s'", argv[optind - 1]);
		}
	}

	/* Validate every option before any work. */
	if (strcmp(backend, "sim") == 0) {
		be.kind = REPLAY_BACKEND_SIM;
	} else if (strncmp(backend, "vfio-type1:", 11) == 0 && backend[11]) {
		be.kind = REPLAY_BACKEND_VFIO_TYPE1;
		be.group_path = backend + 11;
	} else {
		usage_error("--backend: unknown backend '%s' (sim or vfio-type1:GROUP_PATH)", backend);
	}
	if (jobs > 16)
		usage_error("--jobs: %" PRIu64 " is more than 16", jobs);
	if (jobs > 1 && be.kind != REPLAY_BACKEND_SIM)
		usage_error("--jobs: runs share one container on --backend %s; use --jobs 1", backend);
	if (be.iova % REPLAY_PAGE_SIZE)
		usage_error("--iova: 0x%" PRIx64 " is not aligned to 4 KiB", be.iova);
	if (plot) {
		size_t pl = strlen(plot);
		if (pl < 5 || (strcmp(plot + pl - 4, ".svg") && strcmp(plot + pl - 4, ".png")))
			usage_error("--plot: '%s' must end in .svg or .png", plot);
	}
	if (topts.block_size && (topts.block_size & (topts.block_size - 1)))
		usage_error("--block-size: %" PRIu64 " is not a power of two", topts.block_size);
	if (sweep && budget.kind != BUDGET_UNSET)
		usage_error("--sweep runs its own defer budgets; it cannot be combined with --defer-budget");
	if (sweep && policy)
		usage_error("--sweep runs its own strategies; it cannot be combined with --policy");
	if (gap_us > REPLAY_MAX_GAP_US)
		usage_error("--gap-us: %" PRIu64 " is more than %d (10 s)", gap_us, REPLAY_MAX_GAP_US);
	if (sweep && gap_given)
		usage_error("--gap-us paces the latency replay; --sweep counts calls only and cannot be paced");
	be.gap_ns = gap_us * 1000u;
	if (spin_us > REPLAY_MAX_SPIN_US)
		usage_error("--spin-us: %" PRIu64 " is more than %d (1 s)", spin_us, REPLAY_MAX_SPIN_US);
	if (sweep && spin_us)
		usage_error("--spin-us sets the worker's polling for the latency replay; --sweep counts calls only");
	/* Resolved here, once, for the worker, the rows and the JSON. */
	be.spin_us = spin_us ? (uint32_t)spin_us : RDM_WORKER_DEFAULT_SPIN_US;
	if (policy) {
		char *copy = strdup(policy), *save = NULL;
		bool want[MAX_STRATEGIES] = { false };

		for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
			bool found = false;
			for (size_t i = 0; i < nall; i++) {
				bool is_rdm = strncmp(all[i]->name, "rdm-", 4) == 0;
				bool is_cut = i >= ndefault_strategies;
				if (strcmp(tok, all[i]->name) == 0 || (strcmp(tok, "all") == 0 && !is_cut) ||
				    (strcmp(tok, "cuts") == 0 && is_cut) ||
				    (strcmp(tok, "rdm") == 0 && is_rdm) || (strcmp(tok, "baselines") == 0 && all[i]->baseline)) {
					want[i] = true;
					found = true;
				}
			}
			if (strcmp(tok, "lower-bound") == 0 || strcmp(tok, "rdm") == 0 || strcmp(tok, "baselines") == 0 ||
			    strcmp(tok, "all") == 0 || strcmp(tok, "cuts") == 0)
				found = true;
			if (!found) {
				fprintf(stderr, "%s: --policy: unknown strategy '%s'; this build has:", prog, tok);
				for (size_t i = 0; i < nall; i++)
					fprintf(stderr, " %s", all[i]->name);
				fprintf(stderr, " lower-bound%s\n",
					replay_rdm_strategies[0] ? "" : " (rdm's own policies are not built in yet)");
				free(copy);
				return 2;
			}
		}
		free(copy);
		for (size_t i = 0; i < nall; i++)
			if (want[i])
				sel[nsel++] = all[i];
	} else {
		memcpy(sel, all, ndefault_strategies * sizeof(*sel));
		nsel = ndefault_strategies;
	}
	if (sweep) {
		/* rdm-defer at each budget (% of the region; 2% is the library's default), the fixed cuts, qemu. */
		static const char *const sweep_budgets[] = { "0.25%", "0.5%", "1%", "2%", "4%", "8%", "none" };
		const struct replay_strategy *defer = NULL;

		for (size_t i = 0; replay_rdm_strategies[i]; i++)
			if (strcmp(replay_rdm_strategies[i]->name, "rdm-defer") == 0)
				defer = replay_rdm_strategies[i];
		for (size_t i = 0; defer && i < sizeof(sweep_budgets) / sizeof(sweep_budgets[0]); i++)
			pts[npts++] = (struct point){ .s = defer, .budget = parse_budget("--sweep", sweep_budgets[i]),
						      .sweep = true };
		for (size_t i = 0; i < REPLAY_NCUTS; i++)
			pts[npts++] = (struct point){ .s = replay_cut_strategies[i], .sweep = true };
		pts[npts++] = (struct point){ .s = &replay_strategy_qemu, .sweep = true };
	} else {
		for (size_t i = 0; i < nsel && npts < MAX_POINTS; i++)
			pts[npts++] = (struct point){ .s = sel[i], .budget = budget };
	}
	for (size_t i = 0; i < nwork; i++) {
		char name[32];
		size_t nl = strcspn(workloads[i], ":");
		snprintf(name, sizeof(name), "%.*s", (int)(nl < 31 ? nl : 31), workloads[i]);
		if (!replay_find_generator(name))
			usage_error("--workload: unknown workload '%s' (sbm, bbm, reset, register, storm, frag, kzone, all)", name);
	}

	/* Load every trace first: a malformed one stops everything before any replay. */
	size_t ntraces = (size_t)(argc - optind);
	if (ntraces == 0 && nwork == 0)
		want_all_workloads = true;
	size_t ndefault = 0;
	if (want_all_workloads)
		while (replay_default_workloads[ndefault])
			ndefault++;
	size_t nw = ntraces + nwork + ndefault;
	struct replay_trace *traces = calloc(nw ? nw : 1, sizeof(*traces));
	struct replay_workload_result *res = calloc(nw ? nw : 1, sizeof(*res));
	if (!traces || !res) {
		fprintf(stderr, "%s: out of memory\n", prog);
		return 1;
	}
	size_t k = 0;
	for (int i = optind; i < argc; i++, k++) {
		if (replay_trace_load(argv[i], &topts, &traces[k], err, sizeof(err)) < 0) {
			fprintf(stderr, "%s: %s\n", prog, err);
			status = 1;
			goto cleanup;
		}
		res[k].path = argv[i];
	}
	for (size_t i = 0; i < nwork + ndefault; i++, k++) {
		const char *spec = i < nwork ? workloads[i] : replay_default_workloads[i - nwork];
		if (replay_generate(spec, seed, &traces[k], err, sizeof(err)) < 0) {
			fprintf(stderr, "%s: --workload %s: %s\n", prog, spec, err);
			status = 1;
			goto cleanup;
		}
	}
	for (size_t i = 0; i < nw; i++) {
		if (replay_trace_scale(&traces[i], scale, err, sizeof(err)) < 0 ||
		    replay_trace_validate(&traces[i], err, sizeof(err)) < 0) {
			fprintf(stderr, "%s: %s\n", prog, err);
			status = 1;
			goto cleanup;
		}
		if (traces[i].block_size < REPLAY_PAGE_SIZE) {
			fprintf(stderr, "%s: %s: block size %" PRIu64 " is below the 4 KiB page%s\n", prog, traces[i].name,
				traces[i].block_size, scale > 1 ? " after --scale" : "");
			status = 1;
			goto cleanup;
		}
		if (be.iova + traces[i].region_size < be.iova) {
			fprintf(stderr, "%s: %s: --iova + region size overflows\n", prog, traces[i].name);
			status = 1;
			goto cleanup;
		}
	}

	if (be.kind == REPLAY_BACKEND_VFIO_TYPE1) {
		int rc = rdm_vfio_open_group(be.group_path, &be.container_fd, &be.group_fd);
		if (rc < 0) {
			const char *m = rdm_last_error();
			fprintf(stderr, "%s: --backend vfio-type1:%s: %s%s%s\n", prog, be.group_path, strerror(-rc),
				*m ? ": " : "", m);
			status = 1;
			goto cleanup;
		}
	}

	replay_progress_enabled = isatty(STDERR_FILENO);
	for (size_t i = 0; i < nw; i++) {
		struct replay_trace *t = &traces[i];
		struct replay_workload_result *w = &res[i];

		w->trace = t;
		w->rows = calloc(npts + 1, sizeof(*w->rows));
		if (!w->rows) {
			fprintf(stderr, "%s: out of memory\n", prog);
			status = 1;
			goto cleanup;
		}
		w->nrows = npts + 1;
		replay_progress("rdm-replay: %s / lower-bound", t->name);
		if (replay_lower_bound(t, &w->lb) < 0) {
			fprintf(stderr, "%s: %s: lower bound: out of memory\n", prog, t->name);
			status = 1;
			goto cleanup;
		}
		replay_lower_bound_row(t, &w->lb, &be, &w->rows[0]);
	}
	struct job_ctx ctx = {
		.traces = traces, .res = res, .pts = pts, .nsel = npts, .njobs = nw * npts, .be = &be,
	};
	pthread_t tids[16];
	size_t nthreads = 0;
	for (; nthreads + 1 < jobs && nthreads < 16; nthreads++) {
		if (pthread_create(&tids[nthreads], NULL, job_thread, &ctx) != 0)
			break;
	}
	job_thread(&ctx);
	for (size_t i = 0; i < nthreads; i++)
		pthread_join(tids[i], NULL); /* publishes every job's result to this thread */
	if (atomic_load_explicit(&ctx.failed, memory_order_relaxed))
		status = 1;
	replay_progress_done();

	replay_print_table(stdout, res, nw);
	printf("\n");
	if (sweep)
		replay_print_frontier(stdout, res, nw);
	else {
		replay_print_summary(stdout, res, nw);
		replay_print_latency(stdout, res, nw);
	}
	fflush(stdout);

	struct replay_run_info info = {
		.seed = seed,
		.scale = scale,
		.backend = backend,
		.call_ns = be.call_ns ? be.call_ns : REPLAY_DEFAULT_CALL_NS,
		.page_ns = be.page_ns ? be.page_ns : REPLAY_DEFAULT_PAGE_NS,
		.sweep = sweep,
		.gap_ns = be.gap_ns,
		.spin_us = be.spin_us,
	};
	if (json && replay_write_json(json, &info, res, nw, err, sizeof(err)) < 0) {
		fprintf(stderr, "%s: %s\n", prog, err);
		status = 1;
	}
	if (plot && (sweep ? replay_write_frontier_plot(plot, res, nw, err, sizeof(err))
			   : replay_write_plot(plot, res, nw, err, sizeof(err))) < 0) {
		fprintf(stderr, "%s: %s\n", prog, err);
		status = 1;
	}
cleanup:
	replay_progress_done();
	for (size_t i = 0; i < nw; i++) {
		free(res[i].rows);
		replay_trace_free(&traces[i]);
	}
	free(res);
	free(traces);
	if (be.group_fd >= 0)
		close(be.group_fd);
	if (be.container_fd >= 0)
		close(be.container_fd);
	return status;
}
