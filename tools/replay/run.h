/* SPDX-License-Identifier: MIT */
/* tools/replay/run.h - replaying workloads through strategies on a backend, and the results. */
#ifndef RDM_REPLAY_RUN_H
#define RDM_REPLAY_RUN_H

#include <stdbool.h>
#include <stdint.h>

#include "tools/replay/lower_bound.h"
#include "tools/replay/strategy.h"
#include "tools/replay/trace.h"

/* The kernel's default dma_entry_limit: what limit_exceeded is measured against. */
#define REPLAY_MAPPING_LIMIT UINT64_C(65535)

enum replay_backend_kind { REPLAY_BACKEND_SIM = 0, REPLAY_BACKEND_VFIO_TYPE1 = 1 };

struct replay_backend_spec {
	uint32_t kind;          /* enum replay_backend_kind */
	const char *group_path; /* vfio-type1 */
	uint64_t call_ns;       /* sim cost model; 0 = the sim's default */
	uint64_t page_ns;
	uint64_t iova;          /* IOVA of region offset 0 */
	/* Passed to the strategy as replay_geometry.defer_budget (rdm strategies):
	 * 0 = the library's default, RDM_DEFER_BUDGET_NONE = unbounded. */
	uint64_t defer_budget;
	/* vfio-type1: opened once per run of the program. */
	int container_fd, group_fd;
	/* --gap-us: the one-request-at-a-time replay sleeps this long before
	 * each request, as a guest does between virtio-mem requests (0: back
	 * to back). Not a backend property, but every run is given this spec. */
	uint64_t gap_ns;
	/* --spin-us, else RDM_WORKER_DEFAULT_SPIN_US: passed to the rdm
	 * strategies as replay_geometry.spin_us (rdm_worker_config.spin_us). */
	uint32_t spin_us;
};

struct replay_result {
	const char *strategy;   /* static name */
	bool lower_bound;       /* the offline row */
	int error;              /* create() failed: negative errno; the row holds no counts */
	uint64_t map_calls, unmap_calls, calls;
	uint64_t peak_mappings, limit_exceeded;
	uint64_t remapped_bytes, deferred_peak_bytes;
	uint64_t deferred_end_bytes;   /* after the last request, before destroy */
	/* Sum over requests of the deferred bytes after each request (byte-requests:
	 * traces carry no timestamps). */
	uint64_t deferred_integrated;
	/* The defer budget the run was given (geometry.defer_budget; 0 = default),
	 * and a label for it ("" = none given; "2%", "none", "64M", ...). */
	uint64_t defer_budget;
	char budget_label[24];
	bool sweep_point;       /* a --sweep point (its row is labelled with the budget) */
	uint64_t model_ns, wall_ns, lat_p50_ns, lat_p99_ns;
	uint64_t lat_mean_ns;   /* mean request latency */
	/* CPU time over the whole replay loop (thread CPU clocks): the calling
	 * thread's (requests and the harness's bookkeeping between them) and the
	 * strategy's own threads' (an rdm worker: work, spinning and yielding
	 * alike). cpu_measured: both clocks could be read. */
	uint64_t cpu_caller_ns, cpu_helper_ns;
	bool cpu_measured;
	/* Pacing: the pause asked for before each request (--gap-us; then
	 * cpu_caller_ns counts the requests only, read around each one, since
	 * a sleep's own CPU is the harness's), and the mean time measured from
	 * one request's end to the next one's start (the pause and the
	 * harness's bookkeeping; 0 with fewer than two requests). */
	uint64_t gap_ns, gap_mean_ns;
	/* The worker's polling bound: for an rdm strategy as its worker
	 * reports it (rdm_worker_get_config()), for the others the run's
	 * setting (replay_backend_spec.spin_us). */
	uint32_t spin_us;
	uint64_t requests, failed_requests;
	bool has_async;
	struct replay_async_result async;
};

struct replay_workload_result {
	struct replay_trace *trace; /* borrowed */
	const char *path;           /* NULL for generated workloads */
	struct replay_lower_bound lb;
	struct replay_result *rows;
	size_t nrows;
};

/* Default cost model, reported in the output (the sim's defaults, rdm/backend.h). */
#define REPLAY_DEFAULT_CALL_NS 2000
/* --gap-us's bound: 10 s between requests. */
#define REPLAY_MAX_GAP_US 10000000
/* --spin-us: the most it accepts (1 s). */
#define REPLAY_MAX_SPIN_US 1000000
#define REPLAY_DEFAULT_PAGE_NS 60
#define REPLAY_PAGE_SIZE 4096

/*
 * Run one strategy over a workload on a fresh backend. Returns 0, or a
 * negative errno if the backend or the strategy could not be created (the
 * message is in err).
 */
int replay_run_strategy(const struct replay_trace *t, const struct replay_strategy *s,
			struct replay_backend_spec *be, struct replay_result *out, char *err, size_t errlen);

/*
 * The storm's asynchronous run of a strategy that has run_async: on a fresh
 * backend; fills row->async and sets row->has_async. 0 or a negative errno.
 */
int replay_run_async(const struct replay_trace *t, const struct replay_strategy *s, struct replay_backend_spec *be,
		     unsigned producers, struct replay_result *row, char *err, size_t errlen);

/* The offline lower bound as a result row (its modelled time uses the same cost model). */
void replay_lower_bound_row(const struct replay_trace *t, const struct replay_lower_bound *lb,
			    const struct replay_backend_spec *be, struct replay_result *out);

/* Progress line on stderr (only when it is a terminal). */
void replay_progress(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void replay_progress_done(void);
extern bool replay_progress_enabled;

/* Quantile q (0..1) of n values (sorts them in place). 0 for n == 0. */
uint64_t replay_quantile(uint64_t *v, size_t n, double q);

#endif
