/* SPDX-License-Identifier: MIT */
/*
 * tools/replay/strategy.h - the interface every compared strategy implements.
 *
 * A strategy is how a VMM turns the guest's requests into IOMMU calls. The
 * harness creates it with the region's geometry and a backend (the sim, or a
 * real vfio-type1 container), then applies the workload's requests one at a
 * time: apply() must return only when the request is complete (every map it
 * needs is done; every unmap it owes now is done), which is the replay
 * discipline that keeps call counts deterministic. Calls, peak mappings and
 * modelled time are read from the backend's stats, so a strategy cannot
 * miscount them; what only the strategy knows (remapped bytes, deferred
 * bytes) it reports through stats().
 *
 * Built-in strategies: the baselines (strategy_base.c: qemu,
 * cloud-hypervisor, naive) and the fixed-cut references (strategy_cut.c:
 * cut-4M ... cut-128M). The lower bound is computed offline
 * (lower_bound.h) and is not a strategy. rdm's own policies plug in through
 * replay_rdm_strategies[] (strategy_rdm.c).
 */
#ifndef RDM_REPLAY_STRATEGY_H
#define RDM_REPLAY_STRATEGY_H

#include <stdbool.h>
#include <stdint.h>

#include <rdm/backend.h>

#include "tools/replay/trace.h"

/* The region as the backend sees it. */
struct replay_geometry {
	uint64_t iova;        /* IOVA of region offset 0 */
	uint64_t host_addr;   /* host virtual address of region offset 0 */
	uint64_t size;        /* region bytes, a multiple of block_size */
	uint64_t block_size;  /* power of two, >= the backend's page size */
	bool strict;          /* virtio-mem's rule holds for every request (all shipped workloads) */
	/* rdm strategies: rdm_region_config.defer_budget (0 = the library's
	 * default, RDM_DEFER_BUDGET_NONE = unbounded); the others ignore it. */
	uint64_t defer_budget;
	/* rdm strategies: rdm_worker_config.spin_us (0 = the library's
	 * default); the others ignore it. */
	uint32_t spin_us;
};

/* What only the strategy knows. Zero-filled by the harness before stats(). */
struct replay_strategy_stats {
	uint64_t remapped_bytes;      /* still-populated bytes unmapped and mapped again (DMA windows) */
	uint64_t deferred_bytes;      /* current: discarded bytes still mapped (not yet released) */
	uint64_t deferred_peak_bytes; /* peak of deferred_bytes over the run */
	uint64_t failed_requests;     /* requests apply() returned an error for */
	uint32_t spin_us;             /* the polling bound its worker reports (rdm_worker_get_config); 0: no worker */
};

/* Result of the asynchronous multi-producer run (run_async). */
struct replay_async_result {
	unsigned producers;
	uint64_t requests;       /* completed */
	uint64_t failed;         /* completed with an error */
	uint64_t calls;          /* map + unmap calls the backend saw */
	uint64_t wall_ns;        /* first submit to last completion */
	uint64_t lat_p50_ns;     /* submit-to-completion latency over all requests */
	uint64_t lat_p99_ns;
	uint64_t peak_mappings;
	uint64_t remapped_bytes;
	uint64_t deferred_peak_bytes;
};

struct replay_strategy {
	/* Name in every output: "qemu", "cloud-hypervisor", "naive", "rdm-<policy>". */
	const char *name;
	/* One line for --help. */
	const char *help;
	/* A baseline runs on an unlimited sim and reports limit_exceeded past
	 * 65,535 mappings; a non-baseline runs on the default-limit sim. */
	bool baseline;

	/* Create the strategy's state for one run. 0 or a negative errno. */
	int (*create)(const struct replay_geometry *g, struct rdm_backend *b, void **state);
	/*
	 * Apply one request synchronously. REPLAY_DISCARD_ALL has offset 0 and
	 * length = region size. Returns 0 or a negative errno (the harness
	 * counts a failed request and goes on with the next).
	 */
	int (*apply)(void *state, const struct replay_req *req);
	/* Optional: fill what only the strategy knows (see the struct). */
	void (*stats)(void *state, struct replay_strategy_stats *st);
	/*
	 * The strategy may hold discarded memory mapped (deferred_bytes): the
	 * harness calls stats() after every request to integrate it
	 * (deferred_integrated). That call is the harness's work, not the
	 * request's, yet it runs on the calling thread between requests and
	 * its CPU time lands in the caller's CPU clock (an rdm worker's stats
	 * read its counters' cache lines: measured, a few percent of a short
	 * request's CPU). A strategy that never defers leaves this false and
	 * is not sampled; the harness checks that claim against the peak
	 * stats() reports at the end of the run (replay_run_strategy()).
	 */
	bool defers;
	/*
	 * Optional: the CPU time, in nanoseconds, that the strategy's own
	 * threads (an rdm IOMMU worker) have used so far (their thread CPU
	 * clocks). The harness reads it before and after the replay, beside the
	 * calling thread's CPU clock, so that CPU burnt waiting shows next to
	 * the latency it buys. 0 and *ns set, or -errno if a clock cannot be
	 * read (a thread that has not run yet reads 0 ns: not an error).
	 * NULL: the strategy has no thread of its own.
	 */
	int (*helper_cpu_ns)(void *state, uint64_t *ns);
	/* Release the state. It may unmap what it mapped (an rdm region's destroy
	 * does): the harness has read the backend's stats before this call. */
	void (*destroy)(void *state);

	/*
	 * Optional (rdm strategies only; NULL: nothing is run or printed).
	 * The conversion storm's second run: the workload's requests split among
	 * `producers` threads, producer i owning the i-th equal slice of the
	 * region (a storm request never crosses a slice), each submitting its
	 * requests in trace order, asynchronously; fill *out. Called on a fresh
	 * backend of the same kind. 0 or a negative errno.
	 */
	int (*run_async)(const struct replay_geometry *g, struct rdm_backend *b, const struct replay_trace *t,
			 unsigned producers, struct replay_async_result *out);
};

/* The baselines, in output order. */
extern const struct replay_strategy replay_strategy_qemu;
extern const struct replay_strategy replay_strategy_cloud_hypervisor;
extern const struct replay_strategy replay_strategy_naive;

/*
 * The fixed-cut references (strategy_cut.c), in output order: each maps a
 * populate's unmapped blocks in pieces that never cross a multiple of its
 * cut size and defers what a discard leaves inside a partly populated
 * mapping. Not in the default set; --sweep runs them.
 */
#define REPLAY_NCUTS 6
extern const struct replay_strategy *const replay_cut_strategies[REPLAY_NCUTS];

/*
 * rdm's own policies (strategy_rdm.c): a NULL-terminated table. The harness
 * runs them in table order, before the baselines.
 */
extern const struct replay_strategy *const replay_rdm_strategies[];

#endif
