/* SPDX-License-Identifier: MIT */
/*
 * iommu/worker_internal.h - the worker's state (owned by worker.c): its
 * regions, backends, stats, and the receiving side it embeds (producer.h).
 * Read by tests; producer.c does not include it.
 */
#ifndef RDM_IOMMU_WORKER_INTERNAL_H
#define RDM_IOMMU_WORKER_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <rdm/ring.h>
#include <rdm/worker.h>

#include "core/wait.h"
#include "iommu/planner.h"
#include "iommu/producer.h"
#include "iommu/record.h"

#define RDM_WORKER_MAX_BACKENDS 16
/* H6: the most passes a synchronous submitter runs for the worker
 * (RDM_WORKER_CALLER_RUNS) before it leaves the rest to the worker thread;
 * its own change is complete after the first unless other producers keep
 * the rings fuller than a batch. */
#define RDM_WORKER_ASSIST_PASSES 4

/* Idle: sched_yield() calls between the spin and the futex sleep. */
#define RDM_WORKER_IDLE_YIELDS 32u
/* H5 (worker.c "Handoff"): consecutive batches whose waiter shares this
 * thread's CPU before it leaves that CPU, when its mask allows others; the
 * count doubles (up to RDM_WORKER_SPREAD_MAX) each time the move did not
 * hold or could not be made, and falls back once one held. */
#define RDM_WORKER_SPREAD_AFTER 16u
#define RDM_WORKER_SPREAD_MAX 65536u
/* The payload of RDM_OP_ATTACH. */
struct rdm_attach_req {
	struct rdm_wbackend *wb;
	uint32_t flags; /* RDM_ATTACH_* */
};

enum {
	RDM_WST_BATCHES, RDM_WST_CHANGES, RDM_WST_SUPERSEDED, RDM_WST_REMAPPED, RDM_WST_DEFERRED,
	RDM_WST_DEFERRED_PEAK, RDM_WST_DEFER_EXCEEDED, RDM_WST_ENOSPC, RDM_WST_FAILED_BACKENDS,
	RDM_WST_BUDGET_EXCEEDED,
	RDM_WST_COMPACTIONS, RDM_WST_COMPACT_RELEASED, RDM_WST_COMPACT_REMAPPED,
	RDM_WST_COUNT
};

struct rdm_wregion {
	struct rdm_region *r;
	struct rdm_worker *w;
	uint32_t id;
	/* Submission side (producer.h): a number is taken and its record
	 * pushed together. Written by every submit: on lines of its own. */
	_Alignas(RDM_SPLIT) struct rdm_region_inbox sub;
	/* Applier side (worker thread only). */
	_Alignas(RDM_SPLIT) uint64_t apply_seq;
	struct rdm_planner planner;
	/* The backends the region was attached to with RDM_ATTACH_QUIESCE_OK
	 * (worker thread only: set by the attach, cleared by the detach). */
	struct rdm_wbackend *quiesce_ok[RDM_PLANNER_MAX_BACKENDS];
	uint32_t nquiesce_ok;
	struct rdm_listener tail;
	/* Control changes (attach, detach, query, destroy) from any thread go
	 * through this producer, made with its ring and its one ticket slot at
	 * the region's first attach, so that none of them can fail for want of
	 * memory, ring room or slots later - above all not the destroy. Its
	 * users take ctl_lock, which stands in for the producer's owner thread. */
	struct rdm_producer *ctl;
	pthread_mutex_t ctl_lock;
};

struct wstate; /* worker.c: what a pass works on */

struct rdm_worker {
	pthread_t thread;
	struct rdm_worker_config cfg;

	pthread_mutex_t lock;   /* regions, backends tables */
	/* Producers' rings, the idle doorbell (producer.h): read by every
	 * submit, so away from what the worker writes per batch. */
	_Alignas(RDM_SPLIT) struct rdm_inbox in;
	_Alignas(RDM_SPLIT) struct rdm_wregion **regions;
	uint32_t nregions, regions_cap;
	struct rdm_wbackend *backends[RDM_WORKER_MAX_BACKENDS];
	uint32_t nbackends;

	_Atomic bool stop;

	/* The pass token (H6 in worker.c): whoever holds it owns *ws, the
	 * drained records and the planners, and runs passes. Used only with
	 * RDM_WORKER_CALLER_RUNS: the worker thread holds it while it drains
	 * and applies, and a synchronous submitter may take it (trylock)
	 * whenever the worker thread is not working - asleep, spinning or
	 * yielding. Mutex lock/unlock are the synchronising edges between
	 * consecutive holders. */
	pthread_mutex_t run;
	struct wstate *ws;

	/* NUMA (rdm/numa.h): the worker's node (also in.node), the arena its
	 * own memory comes from (rdm_mem.arena encoding), the CPUs it may run
	 * on. cur_cpu: the CPU it last ran on (worker writes, relaxed; read for
	 * display). items_pub/items_bytes: its batch array (worker writes,
	 * relaxed; the placement call only counts the pages). */
	unsigned arena;
	uint32_t ncpus;
	_Atomic int32_t cur_cpu;
	_Atomic(void *) items_pub;
	_Atomic size_t items_bytes;

	/* rdm_worker_flush(): a caller takes a number from flush_req
	 * (seq_cst, after its own publications); the worker loads flush_req,
	 * drains once more, and when that drain finds every ring empty and
	 * nothing pending it stores the number to flush_done (release) and
	 * wakes the futex on it; the caller waits for flush_done >= its
	 * number (acquire). Wrapping 32-bit counters, compared by difference. */
	_Atomic uint32_t flush_req;
	_Atomic uint32_t flush_done;

	/* Idle-loop counters (worker thread writes, relaxed; read by tests and
	 * for display): sched_yield() calls, futex sleeps, batches that
	 * completed a ticket of a waiter sharing the worker's CPU, and those of
	 * them after which the worker, finding no work, left its CPU at once. */
	_Atomic uint64_t idle_yields, idle_sleeps, local_waiters, local_handoffs;
	/* H5: times this thread left a CPU it shared with its waiters (spread()
	 * in worker.c), and the tries to put its whole mask back after the
	 * first failed (one after each later batch until one succeeds); worker
	 * thread writes, relaxed; read by tests. */
	_Atomic uint64_t spreads, mask_retries;
	/* H6: passes run by synchronous submitters (RDM_WORKER_CALLER_RUNS);
	 * written by the token holder, relaxed; read by tests. */
	_Atomic uint64_t assists;

	/* Stats: priv is written by the worker thread only (the planners point
	 * into it); st is its copy published after every batch with relaxed
	 * stores (independent counters, read for display). */
	_Alignas(RDM_SPLIT) uint64_t priv[RDM_WST_COUNT];
	_Alignas(RDM_SPLIT) _Atomic uint64_t st[RDM_WST_COUNT];
};

/* worker.c: how spread() sets the worker thread's CPU mask;
 * pthread_setaffinity_np() unless a test makes it fail. Set it only while
 * no worker runs. */
extern int (*rdm_worker_setaffinity)(pthread_t thread, size_t size, const cpu_set_t *mask);

/* worker.c: the applier hooks installed on attached regions */
extern const struct rdm_applier_ops rdm_worker_applier_ops;

#endif /* RDM_IOMMU_WORKER_INTERNAL_H */
