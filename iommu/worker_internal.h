/* SPDX-License-Identifier: MIT */
/*
 * iommu/worker_internal.h - what the worker thread (worker.c) and the
 * producers (producer.c) share.
 */
#ifndef RDM_IOMMU_WORKER_INTERNAL_H
#define RDM_IOMMU_WORKER_INTERNAL_H

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <rdm/ring.h>
#include <rdm/worker.h>

#include "iommu/planner.h"

#define RDM_WORKER_MAX_BACKENDS 16
/* Ticket slots of a producer made by rdm_producer_create(), and the largest
 * rdm_worker_config.ticket_slots. */
#define RDM_PRODUCER_SLOTS 1024u

/* Record ops beyond the public RDM_CHANGE_*: control changes, in-process
 * only (their payload pointer travels in the producer's ticket slot). */
enum {
	RDM_CTL_ATTACH = 16,
	RDM_CTL_DETACH = 17,
	RDM_CTL_REGISTER = 18,
	RDM_CTL_UNREGISTER = 19,
	RDM_CTL_DESTROY = 20,
	RDM_CTL_QUERY = 21,
	RDM_CTL_COMPACT = 22,
};

/* The payload of RDM_CTL_ATTACH. */
struct rdm_attach_req {
	struct rdm_wbackend *wb;
	uint32_t flags; /* RDM_ATTACH_* */
};

/* One ticket slot of a producer. */
enum { SLOT_FREE = 0, SLOT_BUSY = 1, SLOT_RECLAIM = 2 };
struct rdm_slot {
	/* Worker -> producer: the ticket number once complete. Release in
	 * complete_record() (worker.c), acquire in slot_done() (producer.c). */
	_Atomic uint64_t done;
	int result;             /* written by the worker before `done` */
	char msg[128];          /* the worker's message when result < 0 */
	rdm_complete_fn cb;     /* written by the producer before the push */
	void *opaque;
	void *ctl;              /* control payload (listener or backend) */
	uint64_t ticket;        /* producer-private */
	struct rdm_link *link;  /* producer-private: the ring it went into */
	/* SLOT_RECLAIM is stored by the worker (release) after a callback ran;
	 * the producer reclaims with acquire. */
	_Atomic uint32_t state;
};

struct rdm_link {
	struct rdm_producer *p;
	/* Cleared (under worker.c's lifecycle lock) when the worker is
	 * destroyed first; atomic because the producer compares it unlocked. */
	_Atomic(struct rdm_worker *) w;
	struct rdm_ring *ring;
	/* Producer -> worker: no more records will come; worker frees the link.
	 * Release in rdm_producer_destroy(), acquire in the worker's scan. */
	_Atomic bool closed;
	/* Worker-private: the ring's producer index was found corrupt; the
	 * ring is ignored from then on (the worker's other rings go on). */
	bool broken;
	/* Producer-private: tickets outstanding towards this worker, and the
	 * most it may hold (the worker's cfg.ticket_slots). */
	uint32_t outstanding, limit;
	/* Handoff hint, worker -> producer: the CPU the worker thread last ran
	 * on (-1: not known yet). Written by the worker (relaxed) when its CPU
	 * or its table of links changes; read relaxed by a waiter, which only
	 * chooses between spinning and sleeping by it (worker.c, "Handoff").
	 * In the link, not the worker, because a link outlives the worker for
	 * as long as its producer may read it. */
	_Atomic int32_t wcpu;
	/* Producer-private: the waiter's spin cap (the worker's cfg.spin_us in
	 * ns, copied at link creation) and its moving average of how long
	 * waits for this worker's tickets took (rdm_spin_budget()). */
	uint64_t spin_cap_ns, wait_avg_ns;
};

struct rdm_producer {
	struct rdm_link **links; /* one per worker used; grows */
	uint32_t nlinks, links_cap;
	struct rdm_slot *slots;
	uint32_t nslots, slot_mask;
	uint32_t *free_stack;
	uint32_t nfree;
	uint64_t next_ticket;
	uint64_t outstanding;   /* submitted and not yet completed+consumed */
	/* Completion doorbell (Dekker with the worker, see producer.c). */
	_Atomic uint32_t futex;
	_Atomic uint32_t sleeping;
	/* Handoff hint, producer -> worker: the CPU the owner thread runs on
	 * while it waits for a ticket (from a synchronous submit, or the start
	 * of a wait, until the wait returns), else -1. Relaxed both ways: the
	 * worker only decides by it whether to leave its CPU at once after a
	 * batch (worker.c, "Handoff"). */
	_Atomic int32_t wait_cpu;
	/* Owner + one per live link; the last to drop it frees. */
	_Atomic uint32_t refs;
	bool implicit;
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
	/* Submission side: a number is taken and its record pushed together. */
	pthread_mutex_t submit_lock;
	uint64_t next_seq;
	/* Applier side (worker thread only). */
	uint64_t apply_seq;
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

struct rdm_worker {
	pthread_t thread;
	struct rdm_worker_config cfg;

	pthread_mutex_t lock;   /* links, regions, backends tables */
	struct rdm_link **links;
	uint32_t nlinks, links_cap;
	_Atomic uint32_t links_gen;
	struct rdm_wregion **regions;
	uint32_t nregions, regions_cap;
	struct rdm_wbackend *backends[RDM_WORKER_MAX_BACKENDS];
	uint32_t nbackends;

	/* Idle doorbell (Dekker with producers, see worker.c). */
	_Atomic uint32_t futex;
	_Atomic uint32_t sleeping;
	_Atomic bool stop;

	/* rdm_worker_flush(): a caller takes a number from flush_req
	 * (seq_cst, after its own publications); the worker loads flush_req,
	 * drains once more, and when that drain finds every ring empty and
	 * nothing pending it stores the number to flush_done (release) and
	 * wakes the futex on it; the caller waits for flush_done >= its
	 * number (acquire). Wrapping 32-bit counters, compared by difference. */
	_Atomic uint32_t flush_req;
	_Atomic uint32_t flush_done;

	/* Idle-loop counters (worker thread writes, relaxed; read by tests and
	 * for display): sched_yield() calls, futex sleeps, and batches after
	 * which the worker left its CPU at once for a waiter sharing it. */
	_Atomic uint64_t idle_yields, idle_sleeps, local_handoffs;

	/* Stats: priv is written by the worker thread only (the planners point
	 * into it); st is its copy published after every batch with relaxed
	 * stores (independent counters, read for display). */
	uint64_t priv[RDM_WST_COUNT];
	_Atomic uint64_t st[RDM_WST_COUNT];
};

/* A ticket number is (serial << RDM_TICKET_SHIFT | slot index). */
#define RDM_TICKET_SHIFT 20

static inline uint32_t rdm_ticket_slot(uint64_t ticket)
{
	return (uint32_t)(ticket & ((1u << RDM_TICKET_SHIFT) - 1));
}

/* futex(2) on a 32-bit atomic word (private to this process). */
static inline long rdm_futex(_Atomic uint32_t *addr, int op, uint32_t val)
{
	return syscall(SYS_futex, addr, op, val, NULL, NULL, 0);
}

/* A monotonic clock in nanoseconds (vDSO, no system call). */
static inline uint64_t rdm_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Idle: sched_yield() calls between the spin and the futex sleep. */
#define RDM_WORKER_IDLE_YIELDS 32u

/*
 * Adaptive spinning (worker.c, "Handoff"). avg is a moving average (1/8
 * weight) of how long past waits took, each clipped to 4 x cap. The budget
 * is twice that average - enough to catch the usual wait and its spread -
 * up to cap; when the average is above cap, waits are long enough that a
 * futex sleep and wake (a few microseconds) costs less than spinning: 0.
 */
static inline uint64_t rdm_spin_budget(uint64_t avg, uint64_t cap)
{
	if (avg > cap)
		return 0;
	return 2 * avg < cap ? 2 * avg : cap;
}

static inline void rdm_spin_note(uint64_t *avg, uint64_t waited, uint64_t cap)
{
	if (waited > 4 * cap)
		waited = 4 * cap;
	*avg = *avg - *avg / 8 + waited / 8;
}

/* The CPU the calling thread runs on, or -1 (glibc reads rseq's cpu_id:
 * no system call). */
static inline int32_t rdm_this_cpu(void)
{
	return (int32_t)sched_getcpu();
}

/* A polite busy-wait step. */
static inline void rdm_cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#elif defined(__aarch64__)
	__asm__ __volatile__("yield" ::: "memory");
#endif
}

/* producer.c */
struct rdm_producer *rdm_producer_implicit(void);
int rdm_producer_new(uint32_t nslots, struct rdm_producer **out);
/* The producer's ring to w, made on first use with `capacity` records (0:
 * the worker's ring_capacity): 0 and *out, or -ENOMEM. */
int rdm_producer_link(struct rdm_producer *p, struct rdm_worker *w, uint32_t capacity, struct rdm_link **out);
int rdm_producer_submit_one(struct rdm_producer *p, struct rdm_wregion *wr, uint16_t op, uint64_t offset,
			    uint64_t length, void *ctl, bool sync, rdm_complete_fn cb, void *opaque,
			    uint64_t *ticket);
void rdm_producer_put(struct rdm_producer *p);
void rdm_producer_close_links(struct rdm_producer *p);
void rdm_producer_prune_links(struct rdm_producer *p);
void rdm_worker_kick(struct rdm_worker *w);
int rdm_worker_add_link(struct rdm_worker *w, struct rdm_link *l);

/* worker.c: the applier hooks installed on attached regions */
extern const struct rdm_applier_ops rdm_worker_applier_ops;

#endif /* RDM_IOMMU_WORKER_INTERNAL_H */
