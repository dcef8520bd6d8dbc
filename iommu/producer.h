/* SPDX-License-Identifier: MIT */
/*
 * iommu/producer.h - producers and the channel from them to a worker.
 *
 * Owned by producer.c: a producer's ticket slots, its links (one SPSC ring
 * to each worker it uses), the completion of its tickets, and the worker's
 * receiving side (struct rdm_inbox: the table of links, the idle doorbell,
 * the ring and ticket limits; struct rdm_region_inbox: a region's
 * submission side, its sequence numbers). The worker (worker.c) embeds
 * those two and uses them only through the functions below; producer.c
 * knows nothing of the worker. Dependency: worker -> producer, never back.
 */
#ifndef RDM_IOMMU_PRODUCER_H
#define RDM_IOMMU_PRODUCER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <rdm/ring.h>
#include <rdm/worker.h>

#include "core/numa.h"
#include "core/wait.h"
#include "iommu/record.h"

/* Ticket slots of a producer made by rdm_producer_create(), and the largest
 * rdm_worker_config.ticket_slots. */
#define RDM_PRODUCER_SLOTS 1024u

/* One ticket slot of a producer. */
enum { SLOT_FREE = 0, SLOT_BUSY = 1, SLOT_RECLAIM = 2 };
struct rdm_slot {
	/* One line holds everything a completion reads and writes, so that a
	 * ticket's round trip moves it twice (to the worker, back), no more;
	 * the message, written only on failure, follows on lines of its own.
	 * Most completions do not touch the slot at all (the link's
	 * done_upto, C1 in producer.c). */
	/* Worker -> producer: the ticket number once complete, when it
	 * completes through the slot. Release in rdm_link_complete(), acquire
	 * in rdm_slot_done(). */
	_Alignas(RDM_LINE) _Atomic uint64_t done;
	int result;             /* written by the worker before `done` */
	/* SLOT_RECLAIM is stored by the worker (release) after a callback ran;
	 * the producer reclaims with acquire. */
	_Atomic uint32_t state;
	rdm_complete_fn cb;     /* written by the producer before the push */
	void *opaque;
	void *ctl;              /* control payload (listener or backend) */
	uint64_t ticket;        /* producer-private */
	/* Producer-private: the record's position in its link's ring (1 for
	 * the first record the link ever carried; the link's `pushed`). */
	uint64_t lseq;
	struct rdm_link *link;  /* producer-private: the ring it went into */
	_Alignas(RDM_LINE) char msg[128]; /* the worker's message when result < 0 */
};

struct rdm_link {
	/* Read by the worker on every round of its loop; written rarely. */
	struct rdm_producer *p;
	/* Cleared (under producer.c's links_lock) when the worker is
	 * destroyed first; atomic because the producer compares it unlocked. */
	_Atomic(struct rdm_inbox *) in;
	struct rdm_ring *ring;
	/* Producer -> worker: no more records will come; worker frees the link.
	 * Release in rdm_producer_destroy(), acquire in the worker's scan. */
	_Atomic bool closed;
	/* Worker-private: the ring's producer index was found corrupt; the
	 * ring is ignored from then on (the worker's other rings go on). */
	bool broken;
	/* Handoff hint, worker -> producer: the CPU the worker thread last ran
	 * on (-1: not known yet). Written by the worker (relaxed, through
	 * rdm_link_set_worker_cpu()) when its CPU or its table of links
	 * changes; read relaxed by a waiter, which only chooses between
	 * spinning and sleeping by it (worker.c, "Handoff"). In the link, not
	 * the inbox, because a link outlives the worker for as long as its
	 * producer may read it. */
	_Atomic int32_t wcpu;
	/* The worker lets waiters run passes (its inbox's assist is set,
	 * fixed before it started): copied at link creation, so a waiter
	 * whose worker does not never looks at the inbox (C4). */
	bool assists;
	/* Completion watermark (C1 in producer.c), on a line only the worker
	 * writes: done_upto is the number of records drained from this ring
	 * at the end of a batch that left no drained record incomplete, so
	 * every record at a position (a slot's lseq) up to it is complete.
	 * Stored with release once per batch (rdm_link_complete_upto()),
	 * loaded with acquire by a waiter (rdm_slot_done()). `drained`, the
	 * records taken from the ring so far, is the worker's alone. */
	_Alignas(RDM_LINE) _Atomic uint64_t done_upto;
	uint64_t drained;
	/* Producer-private from here, written on every submit and wait: on
	 * lines of their own (RDM_SPLIT), away from what the worker polls. */
	/* Tickets outstanding towards this worker, and the most it may hold
	 * (the worker's cfg.ticket_slots). */
	_Alignas(RDM_SPLIT) uint32_t outstanding, limit;
	/* Records taken for this ring so far (a refused one given back): the
	 * next record's lseq is pushed + 1. */
	uint64_t pushed;
	/* The waiter's spin cap (the inbox's spin_cap_ns,
	 * copied at link creation) and its moving averages of how long waits
	 * for this worker's tickets took and of how long this thread took to
	 * run again when woken (struct rdm_spin, core/wait.h). */
	struct rdm_spin spin;
};

struct rdm_producer {
	/* Set at creation, then only read: the worker reads the slots through
	 * these when it completes a ticket. */
	struct rdm_slot *slots;
	uint32_t nslots, slot_mask;
	/* Owner-private, written on every submit: lines of their own. */
	_Alignas(RDM_SPLIT) struct rdm_link **links; /* one per worker used; grows */
	uint32_t nlinks, links_cap;
	uint32_t *free_stack;
	uint32_t nfree;
	uint64_t next_ticket;
	uint64_t outstanding;   /* submitted and not yet completed+consumed */
	bool implicit;
	bool passes;            /* rdm_producer_new()'s: may run passes (C4) */
	/* rdm_producer_config's RDM_PRODUCER_RING_NODE: rings this producer
	 * creates are bound to ring_node instead of their worker's node. */
	bool has_ring_node;
	struct rdm_node ring_node;
	/* Shared with the worker (the handoff's line). Completion doorbell
	 * (Dekker with the worker, see producer.c). */
	_Alignas(RDM_SPLIT) _Atomic uint32_t futex;
	_Atomic uint32_t sleeping;
	/* Handoff hint, producer -> worker: the CPU the owner thread runs on
	 * while it waits for a ticket (from a synchronous submit, or the start
	 * of a wait, until the wait returns), else -1. Relaxed both ways: the
	 * worker only decides by it whether to leave its CPU at once after a
	 * batch (worker.c, "Handoff"). */
	_Atomic int32_t wait_cpu;
	/* Handoff hint, worker -> producer: when the worker last woke this
	 * producer from its futex sleep (rdm_now_ns()), stored before the wake.
	 * A waiter that slept measures its wait up to this instant, not up to
	 * when it got the CPU back (worker.c, "Handoff", H3). Relaxed: a
	 * stale value only skews one sample of an average. */
	_Atomic uint64_t woken_ns;
	/* Owner + one per live link; the last to drop it frees. */
	_Atomic uint32_t refs;
};

/* A ticket number is (serial << RDM_TICKET_SHIFT | slot index). */
#define RDM_TICKET_SHIFT 20

static inline uint32_t rdm_ticket_slot(uint64_t ticket)
{
	return (uint32_t)(ticket & ((1u << RDM_TICKET_SHIFT) - 1));
}


/*
 * A worker's receiving side (embedded in struct rdm_worker). The links table
 * is written by producers (rdm_inbox_add_link) and by rdm_inbox_reap/orphan,
 * under `lock`; the worker reads it through rdm_inbox_refresh(). The doorbell
 * (futex, sleeping) is the Dekker pair C3 of producer.c.
 */
struct rdm_inbox {
	pthread_mutex_t lock;   /* links table */
	struct rdm_link **links;
	uint32_t nlinks, links_cap;
	/* Bumped (release) on every change of the table; the worker copies
	 * the table when it sees a new value (acquire). */
	_Atomic uint32_t links_gen;
	/* Idle doorbell. */
	_Atomic uint32_t futex;
	_Atomic uint32_t sleeping;
	/* Handoff hint, producer -> worker: when a publisher last rang the
	 * doorbell (rdm_now_ns()), stored before the wake; the worker measures
	 * its idle gap up to it (rdm_inbox_arrival_ns()). Relaxed, as woken_ns. */
	_Atomic uint64_t kicked_ns;
	uint32_t ring_capacity; /* records per ring made for this worker */
	uint32_t ticket_slots;  /* unconsumed tickets a producer may hold towards it */
	uint64_t spin_cap_ns;   /* a waiter's longest spin (the worker's spin_us) */
	struct rdm_node node;   /* the worker's: its rings are bound there */
	/* C4 (producer.c): the worker's pass, for a synchronous submitter
	 * (the worker's RDM_WORKER_CALLER_RUNS; NULL without it). Set before
	 * the worker starts, then only read. If it takes the worker's pass
	 * token it runs passes until slot s completed `ticket` (or a bound) and
	 * returns true; with `owe` (the caller cleared `sleeping` and owes the
	 * worker a wake) it then hands the doorbell back (C4). False if the
	 * token is taken: nothing changed, and a caller that owes the wake
	 * must still ring. The worker's function: producer.c does not know
	 * what a pass is. */
	bool (*assist)(struct rdm_inbox *in, const struct rdm_slot *s, uint64_t ticket, bool owe);
	/* Waiters inside a pass they run without a region entered (C4 in
	 * wait_slot(): nothing else keeps the worker alive there), taken by
	 * inbox_pin() under producer.c's links_lock unless `dying`; the
	 * worker's destroy sets dying (under links_lock, rdm_inbox_quiesce()),
	 * then waits for pins to drop to 0 (acquire; release in
	 * inbox_unpin()) before it frees anything a pass uses. */
	_Atomic uint32_t pins;
	bool dying;
};

/* A region's submission side (embedded in the worker's region state): a
 * number is taken and its record pushed together, under submit_lock. */
struct rdm_region_inbox {
	struct rdm_inbox *in;
	uint32_t id; /* the region's number at the worker, in every record */
	pthread_mutex_t submit_lock;
	uint64_t next_seq;
};

/* ---- the worker's side ---- */
void rdm_inbox_init(struct rdm_inbox *in, uint32_t ring_capacity, uint32_t ticket_slots, uint32_t spin_us,
		    const struct rdm_node *node);
/* Where the rings of in's links are: their count, those whose resident
 * pages are all on in's node, and their pages (added to *pl, whose node is
 * in's). -ENOMEM or 0. */
int rdm_inbox_ring_census(struct rdm_inbox *in, uint32_t *rings, uint32_t *on_node, struct rdm_placement *pl);
/* After the worker thread stopped, before anything a pass uses is freed:
 * no waiter runs a pass from here on (see `pins`). */
void rdm_inbox_quiesce(struct rdm_inbox *in);
/* After rdm_inbox_quiesce(): free closed links, orphan the others (their
 * producers free them), free the table. */
void rdm_inbox_fini(struct rdm_inbox *in);
/* Wake the worker sleeping on the doorbell (unconditionally). */
void rdm_inbox_kick(struct rdm_inbox *in);
/* When work came to a worker idle since `since` (rdm_now_ns()): the
 * doorbell's time if a publisher rang it after `since`, else now. */
uint64_t rdm_inbox_arrival_ns(const struct rdm_inbox *in, uint64_t since);
/* The worker's private copy of the links table: refreshed when links_gen
 * moved; keeps the old copy if memory runs out (new rings wait). */
void rdm_inbox_refresh(struct rdm_inbox *in, struct rdm_link ***links, uint32_t *n, uint32_t *cap,
		       uint32_t *gen);
/* Drop links whose producer closed them and whose ring is drained (or
 * broken), from the table and from the worker's copy; frees them. */
void rdm_inbox_reap(struct rdm_inbox *in, struct rdm_link **links, uint32_t *n);
/* Complete the record carrying `ticket` on link l: run its callback (when
 * the record said it has one: RDM_REC_CALLBACK), or store its result (and
 * message when result < 0) and its done (C1). That
 * wakes nobody yet: after the batch's completions the completing thread
 * issues one seq_cst fence, then calls rdm_link_wake() for each link whose
 * completion returned RDM_LINK_WAKE (producer.c, C2). RDM_LINK_LOCAL: the
 * link's producer waits on CPU `cpu` (a hint). */
enum { RDM_LINK_WAKE = 1u << 0, RDM_LINK_LOCAL = 1u << 1 };
unsigned rdm_link_complete(struct rdm_link *l, uint64_t ticket, bool callback, int result, const char *msg,
			   int32_t cpu);
/* Complete, at once, every record drained from l so far that has not
 * completed through rdm_link_complete() (C1's watermark): only when no
 * record drained from l is still incomplete. Returns as rdm_link_complete()
 * does; the wake follows the same way (C2). */
unsigned rdm_link_complete_upto(struct rdm_link *l, int32_t cpu);
void rdm_link_wake(struct rdm_link *l);
/* Handoff hint: the worker thread runs on `cpu` (relaxed, see wcpu). */
static inline void rdm_link_set_worker_cpu(struct rdm_link *l, int32_t cpu)
{
	atomic_store_explicit(&l->wcpu, cpu, memory_order_relaxed);
}
/* Has slot s's ticket completed (C1)? Either path; acquire, so the
 * result and message (in the slot or 0) may be read after a true. */
static inline bool rdm_slot_done(const struct rdm_slot *s, uint64_t ticket)
{
	/* Acquire: pairs with the worker's release store of done
	 * (rdm_link_complete()) ... */
	if (atomic_load_explicit(&s->done, memory_order_acquire) == ticket)
		return true;
	/* ... or of the watermark (rdm_link_complete_upto()). */
	return s->lseq <= atomic_load_explicit(&s->link->done_upto, memory_order_acquire);
}
/* The control payload of the record carrying `ticket` (NULL if none). */
void *rdm_link_payload(const struct rdm_link *l, uint64_t ticket);

void rdm_region_inbox_init(struct rdm_region_inbox *ri, struct rdm_inbox *in, uint32_t id);
void rdm_region_inbox_fini(struct rdm_region_inbox *ri);

/* ---- submission (the producer's own thread) ---- */
struct rdm_producer *rdm_producer_implicit(void);
/* A producer with nslots tickets (a power of two). `passes`: its
 * synchronous submits and waits may run the worker's pass (C4); false for
 * one whose submitter may hold a lock a pass takes (a region's control
 * producer: under its ctl_lock, an attach under the region's lock). */
int rdm_producer_new(uint32_t nslots, bool passes, struct rdm_producer **out);
/* The producer's ring to in's worker, made on first use with `capacity`
 * records (0: in->ring_capacity): 0 and *out, or -ENOMEM. */
int rdm_producer_link(struct rdm_producer *p, struct rdm_inbox *in, uint32_t capacity, struct rdm_link **out);
int rdm_producer_submit_one(struct rdm_producer *p, struct rdm_region_inbox *ri, uint16_t op, uint64_t offset,
			    uint64_t length, void *ctl, bool sync, rdm_complete_fn cb, void *opaque,
			    uint64_t *ticket);

#endif /* RDM_IOMMU_PRODUCER_H */
