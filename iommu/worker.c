/* SPDX-License-Identifier: MIT */
/*
 * iommu/worker.c - the IOMMU worker thread: the applier of its regions.
 *
 * Theory.
 *
 * Each loop drains every producer ring (at most max_batch records: one
 * batch), then applies the batch region by region in sequence order. A
 * region's record whose number is ahead of the next one to apply waits in
 * `pending` until the missing number arrives (it is already in some ring:
 * producer.c takes numbers and pushes under one lock). Within the batch a
 * populate whose exact range a later discard of the same batch removes again,
 * with nothing touching that range in between and every block of it
 * discarded when the populate is reached, is superseded: both complete with
 * 0 and nobody is told (DESIGN.md "Superseding").
 *
 * Applying a change is rdm_region_apply_batched_locked(): strict checks, listeners,
 * then the region's tail listener - the IOMMU - whose callbacks run the
 * planner (planner.c) for every backend the region is attached to. The
 * region's changes of one batch build one working version of its state
 * that readers see once per state-changing discard (with the populates
 * accepted before it) and once at the end of the region's group
 * (rdm_region_batch_end(), which also hands the replaced nodes to call_rcu
 * once a group of them is due), before any ticket completes; a control record after a change
 * of the group publishes it first. Exactly D + P versions per region and
 * batch: core/region.c "Versions per batch". Maps happen
 * inside the populate callback (a refusal rolls the populate back);
 * unmaps are queued and flushed once per batch (merged), then releases run,
 * then tickets complete, so a discard's blocks are released before it
 * completes (I2).
 *
 * Idle: when a drain finds nothing the worker polls the rings for a spin
 * budget (below), then calls sched_yield() RDM_WORKER_IDLE_YIELDS times,
 * then sets `sleeping`, fences (seq_cst) and checks every ring once more
 * before futex_wait; producers fence after publishing and wake it only if
 * it sleeps (producer.c, C3). A ring whose producer index is corrupt is
 * logged once and ignored from then on, for draining, sleeping and reaping
 * alike. Completion: see producer.c C1/C2.
 *
 * Handoff. A synchronous caller and this thread hand each change back and
 * forth; on a host whose cores run vCPUs the two often share one CPU, and
 * then a spin on either side only keeps the other off the CPU it needs
 * (measured before this design, rdm-replay trace A one request at a time,
 * `taskset -c 0`: p50 ~110-280 us = the worker's 50 us poll after each
 * batch + the caller's 50 us poll before its first yield + the work).
 * Three rules:
 *  H1 where: this thread publishes the CPU it runs on (sched_getcpu(),
 *     rseq: no system call) in every producer link (rdm_link.wcpu) when the
 *     CPU or the link table changes and after every sleep; a publisher that
 *     rings the doorbell sets its link's hint, when it names another CPU,
 *     to -1 (unknown: the kernel may wake this thread onto any CPU, the
 *     publisher's included, and a waiter spinning there would keep it
 *     queued; the waiter stops spinning on an unknown CPU after two of its
 *     wake-ups, H3); a waiter publishes its own CPU in rdm_producer.wait_cpu
 *     (producer.h) from a synchronous submit (or the start of a wait) until
 *     its wait returns. Both are hints, relaxed: they choose
 *     only whether a side spins, yields or sleeps, never whether it
 *     checks the flags of C2/C3, so every proof below holds for any value
 *     they hold (a stale one costs time, not a wake-up).
 *  H2 shared CPU: a waiter whose CPU is the worker's sleeps at once (C2);
 *     after a batch that completed a ticket whose waiter shares this CPU,
 *     this thread neither polls nor yields: it goes to sleep (C3), so the
 *     waiter runs at once. A futex sleep is the reliable way to give the
 *     CPU away: sched_yield() between two SCHED_OTHER threads may return at
 *     once (measured: a waiter that yields up to 4 times before sleeping
 *     gave the same p50, 5.9 against 6.0 us, so it is not done). What
 *     usually happens on one CPU: the worker's FUTEX_WAKE lets the waiter
 *     preempt it, the waiter submits the next change and sleeps, and the
 *     worker finds that change at once - one wake, one sleep and two
 *     context switches per change (p50 3.4-6 us for rdm-defer, whose work
 *     is ~1-2 us of it; rdm-block's planner makes its own work ~10 us).
 *  H3 other CPUs: a side spins only for a budget that adapts to how long
 *     its waits take and how long its wake-ups take (struct rdm_spin,
 *     core/wait.h, which argues the rule; tests/core/test_spin.c checks it
 *     against a model of this handoff): moving averages (1/8 weight) of
 *     this thread's gaps from the end of a batch to the next record's
 *     arrival, a waiter's submit-to-done times, and each side's delay from
 *     being woken to running. The budget is twice the wait average, at
 *     least one wake-up, one wake-up alone when waits are longer than two,
 *     never more than cfg.spin_us; a spin yields every few us, so threads
 *     woken onto its CPU are not kept waiting (rdm_spin_round()).
 *     A wait is measured to the other side's act - the producer's doorbell
 *     (rdm_inbox.kicked_ns), the worker's wake of a sleeping waiter
 *     (rdm_producer.woken_ns) - not to when the sleeper got a CPU back,
 *     which is the wake-up sample; only a wait that really slept gives one
 *     (rdm_futex_sleep(): a FUTEX_WAIT that found the word already changed
 *     paid no wake-up, so the time since the other side's wake is none).
 *     Waiting across CPUs costs a wake-up of the other CPU whenever the
 *     other side sleeps: 80-250 us measured in a VM whose idle vCPUs halt,
 *     against ~2 us on one CPU. The old rule
 *     (twice the wait average, none once it exceeded a 50 us cap) locked
 *     both sides into sleeping after every handoff there: 50-90 us per
 *     request on trace A, in most runs. No constant is fitted to a
 *     workload: the cap is the configured spin_us (a safety bound above
 *     any wake-up measured), the averages start unmeasured (a prior of
 *     cap/4 for the wake-up, probed by sleeping), and the rest is measured.
 *  H4 lines: on other CPUs a handoff's cost is mostly cache lines moving
 *     between the two cores (~60 ns each here; a bare ping-pong of two
 *     flags costs 110-145 ns round trip), not instructions (~500 on the
 *     caller's side, ~2,200 on this thread's for a one-block change). So
 *     each group of fields that one side writes per change sits on lines
 *     the other side does not poll or write (core/wait.h, RDM_SPLIT): the
 *     region's inflight count apart from its writer lock, a producer's
 *     owner fields apart from its slots pointer and from the doorbell
 *     line, a link's producer-private counters apart from what this
 *     thread polls, a region's submit lock apart from its planner, and
 *     everything a completion touches on one line of the ticket's slot.
 *     Measured (a one-block rdm_populate/rdm_discard loop, taskset -c 0,1,
 *     sim backend, p50): 1.82/2.05 us before, 0.98/1.17 us after. Most
 *     completions then leave the slot alone: a batch that leaves nothing
 *     incomplete completes its plain tickets by one store per link, the
 *     link's watermark (producer.c, C1).
 *  H5 staying apart: a sleeping side is woken by the other, and the kernel
 *     often wakes it onto the waker's CPU - in a VM whose idle vCPUs halt,
 *     the other CPU looks preempted, not idle, so always. Once both share a
 *     CPU, H2 makes each sleep after every handoff, every wake keeps them
 *     together, and the pair runs as on one CPU for good although the mask
 *     has an idle one (measured, trace A replayed once on `taskset -c 0,1`:
 *     in 4 of 6 runs all 244 requests found the waiter on the worker's CPU,
 *     one-block unplugs p50 4.4 us against 1.8 us in the runs apart). So
 *     after RDM_WORKER_SPREAD_AFTER batches in a row whose waiter shared its
 *     CPU, this thread leaves that CPU for another of its mask (spread());
 *     the waiter, seeing the new hint (H1), spins instead of sleeping, and
 *     with no more wakes the two stay apart. If the scheduler puts it back
 *     at once (no idle CPU), the run needed doubles each time, up to
 *     RDM_WORKER_SPREAD_MAX, and falls back once a move held. A mask of
 *     one CPU (`taskset -c 0`) never moves, and its tries (an affinity
 *     read each) double the same way. If the system refuses to put the
 *     whole mask back after a move (a cpuset changed in between), the
 *     thread runs on the narrower mask, tries again after each batch
 *     (mask_retries), and moves no more until the mask is back.
 *  H6 caller runs (RDM_WORKER_CALLER_RUNS): every rule above still needs
 *     the scheduler to run the woken side soon, and a busy host does not:
 *     with a CPU-bound thread on each CPU of `taskset -c 0,1` (a vCPU that
 *     does not halt), a woken thread here waits for the running one's
 *     slice, and trace A's requests took one tick each (p50 3,960-3,990
 *     us for rdm-block and rdm-defer; QEMU's inline strategy 0.7-0.9 us in
 *     the same runs). Asking for a shorter slice for this thread
 *     (sched_setattr's sched_runtime) did not fix it: the caller's own
 *     wake-up is the other half. So a synchronous submitter that finds
 *     this thread asleep may run the pass itself: it cleared `sleeping`
 *     (C3's exchange) and owes a wake; instead it takes the pass token
 *     (rdm_worker.run, trylock), drains every ring, processes until its
 *     own ticket is complete (no more than RDM_WORKER_ASSIST_PASSES
 *     passes), hands the doorbell back as idle() does (sleeping = 1,
 *     seq_cst fence, re-check every ring) and wakes this thread only if
 *     records are left (producer.c, C4). Without the flag nobody else
 *     takes the token and this thread skips it (token_take()). With it,
 *     this thread holds the token only while it drains and applies: each turn of its loop takes it
 *     (blocking) before it looks at the rings and drops it before a spin
 *     round, a yield or a sleep (idle() drops it after its C3 re-check).
 *     So a submitter's trylock succeeds whenever this thread is not
 *     working - asleep, or spinning on a CPU the submitter may share -
 *     and passes never overlap. A submitter that did not clear `sleeping`
 *     (this thread is awake or woken) may run a pass too and owes
 *     nothing; a waiter tries one pass before its first sleep, for a
 *     worker woken but not yet given a CPU. What a pass does is the same
 *     function on either thread (drain(), process()) on the same state
 *     (struct wstate, whose every field the token guards, except the
 *     spin averages this thread's loop alone touches); the hints of H1-H5
 *     belong to this thread's loop, and a pass run elsewhere completes
 *     tickets with the CPU unknown (-1). Callbacks run on the thread that
 *     runs the pass (rdm/worker.h): why it is a flag. Measured, trace A
 *     one request at a time, sim backend, with the CPU-bound threads:
 *     p50 2.5-3.3 us (rdm-block) and 0.8-1.2 us (rdm-defer) against the
 *     one tick above; `taskset -c 0` alone 2.0-2.5 and 0.7-1.2 us against
 *     4.9-5.1 and 3.1-4.3 us without the flag.
 * The idle counters (idle_yields, idle_sleeps, local_waiters,
 * local_handoffs, spreads, assists in struct rdm_worker) show which path ran.
 * local_handoffs counts only the batches after which this thread itself
 * found no work and slept at once; when the waiter preempted it at the
 * FUTEX_WAKE (the usual case above, and on some kernels every time) the
 * next change is there when it runs again, and only local_waiters counts
 * the batch.
 *
 * The rings, the doorbell and the tickets belong to producer.c (producer.h):
 * this file embeds the inbox and uses only its functions.
 *
 * Invariants:
 *  1. Only a pass applies changes to an attached region - this thread's,
 *     or under H6 a submitter's holding the pass token, never two at once
 *     - in the region's sequence order, each exactly once (I6).
 *  2. Every record drained completes exactly once: with its result, or with
 *     -EINVAL when it names no live region (logged).
 *  3. Releases of a batch happen before any of its tickets complete.
 */
#include <errno.h>
#include <inttypes.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/callback.h"
#include "core/error.h"
#include "core/numa.h"
#include "core/region_internal.h"
#include "iommu/backend.h"
#include "iommu/worker_internal.h"

struct item {
	struct rdm_change_rec rec;
	struct rdm_link *link;
	int result;
	bool done;
	bool superseded;
	bool wake; /* completed with RDM_LINK_WAKE (complete_batch()) */
};

/* rdm_last_error() of a failed item, kept beside the items (wstate.msgs):
 * written when the item fails and read when it completes, in the same batch
 * and at the same index (nothing moves items in between), so that ordering
 * a batch moves 56-byte items instead of 184-byte ones. */
struct item_msg {
	char s[128];
};

struct wstate {
	struct rdm_worker *w;
	struct rdm_link **links;
	uint32_t nlinks, links_cap;
	uint32_t links_gen;
	/* The batch: items[0..nitems), and beside it, of the same capacity and
	 * in one allocation (batch_mem, also items_pub), order_batch()'s
	 * scratch and the failed items' messages. items and scratch are the
	 * allocation's first two arrays, in either order (a merge leaves the
	 * items where it wrote them). */
	struct item *items, *scratch;
	struct item_msg *msgs;
	void *batch_mem;
	uint32_t nitems, items_cap;
	uint64_t batch_no;
	/* The current region group applied a change to the region's state
	 * (so it has retired state to flush, under the region's lock). */
	bool applied_state;
	/* Handoff (see the theory block): the CPU this thread last ran on, the
	 * links generation it was published for, whether a batch completed a
	 * ticket whose waiter shares that CPU, and the moving averages of idle
	 * gaps (end of a batch to the next record's arrival) and of this
	 * thread's wake-ups (struct rdm_spin, core/wait.h). */
	int32_t cpu;
	uint32_t cpu_gen;
	bool handoff_local;
	struct rdm_spin spin;
	/* H5: batches in a row that completed a waiter on this CPU, the run
	 * length that makes this thread leave the CPU, the batches with no
	 * such waiter since the last try, and whether that try moved it. */
	uint32_t local_run, spread_after;
	uint64_t remote_since_spread;
	bool moved;
	/* H5: spread() narrowed this thread's mask and could not put `mask`
	 * back yet; retried after every batch until it can. */
	bool narrowed;
	cpu_set_t mask;
};

static pthread_mutex_t lifecycle_lock = PTHREAD_MUTEX_INITIALIZER;

int (*rdm_worker_setaffinity)(pthread_t thread, size_t size, const cpu_set_t *mask) = pthread_setaffinity_np;

/* -------------------------------------------------------------- the tail */

static int tail_populate(struct rdm_listener *l, uint64_t offset, uint64_t length)
{
	struct rdm_wregion *wr = l->opaque;
	unsigned sh = wr->planner.block_shift;

	return rdm_planner_populate(&wr->planner, offset >> sh, length >> sh);
}

static void tail_discard(struct rdm_listener *l, uint64_t offset, uint64_t length)
{
	struct rdm_wregion *wr = l->opaque;
	unsigned sh = wr->planner.block_shift;

	rdm_planner_discard(&wr->planner, offset >> sh, length >> sh);
}

static const struct rdm_listener_ops tail_ops = {
	.populate = tail_populate,
	.discard = tail_discard,
};

/* ------------------------------------------------------------- applying */

static struct rdm_wregion *region_of(struct rdm_worker *w, uint32_t id)
{
	struct rdm_wregion *wr = NULL;

	pthread_mutex_lock(&w->lock);
	if (id < w->nregions)
		wr = w->regions[id];
	pthread_mutex_unlock(&w->lock);
	return wr;
}

static bool overlaps(const struct rdm_change_rec *a, const struct rdm_change_rec *b)
{
	if (a->op != RDM_OP_POPULATE && a->op != RDM_OP_DISCARD)
		return true;
	if (b->op != RDM_OP_POPULATE && b->op != RDM_OP_DISCARD)
		return true;
	return a->offset < b->offset + b->length && b->offset < a->offset + a->length;
}

/*
 * Superseding's search (try_supersede()): the first later discard of
 * exactly a populate's range in its region group, with nothing touching the
 * range in between. A scan forward from each populate cost O(n^2) per batch
 * once populates and discards mix (producers sharing a region, one
 * plugging while another unplugs: every populate scanned to the batch's
 * end: rdm-bench pipeline/rdm/producers:4 under callgrind, process()'s
 * own instructions (its stages are inlined) 186.6M before, 123.0M after;
 * with everything it calls 1,389M and 1,329M, for the same 753,665 sim
 * calls; one producer: no change).
 * Instead the group's discards are indexed once, by range, in a hash
 * table with chains in index order, built in the batch's scratch (free
 * after order_batch()) the first time a populate of the group asks; a
 * populate then looks up its range and scans only up to the match it
 * found, which is where the scan would have stopped.
 */
struct dindex {
	uint32_t *head; /* per bucket: first discard's index + 1, 0 if none */
	uint32_t *next; /* per group item: the next discard of its bucket + 1 */
	uint32_t mask, base;
};

static uint32_t range_bucket(const struct rdm_change_rec *r, uint32_t mask)
{
	uint64_t h = (r->offset ^ (r->length * UINT64_C(0x9e3779b97f4a7c15))) * UINT64_C(0xff51afd7ed558ccd);

	return (uint32_t)(h >> 40) & mask;
}

static void dindex_build(struct wstate *ws, struct dindex *d, uint32_t i, uint32_t end)
{
	uint32_t n = end - i, size = 2;

	while (size < 2 * n)
		size *= 2;
	/* size < 4n buckets and n links: under 5n words, in a scratch of at
	 * least n items. */
	_Static_assert(sizeof(struct item) >= 5 * sizeof(uint32_t), "the scratch holds the discard index");
	d->head = (uint32_t *)(void *)ws->scratch;
	d->next = d->head + size;
	d->mask = size - 1;
	d->base = i;
	memset(d->head, 0, (size_t)size * sizeof(uint32_t));
	for (uint32_t j = end; j-- > i;) {
		const struct rdm_change_rec *q = &ws->items[j].rec;

		if (q->op != RDM_OP_DISCARD)
			continue;
		uint32_t b = range_bucket(q, d->mask);

		d->next[j - i] = d->head[b];
		d->head[b] = j - i + 1;
	}
}

/* The cancelling discard of the populate at k (see struct dindex); index or -1. */
static int find_cancelling_discard(struct wstate *ws, struct dindex *d, uint32_t k)
{
	const struct rdm_change_rec *p = &ws->items[k].rec;
	uint32_t j = UINT32_MAX;

	for (uint32_t e = d->head[range_bucket(p, d->mask)]; e; e = d->next[e - 1]) {
		const struct rdm_change_rec *q = &ws->items[d->base + e - 1].rec;

		if (d->base + e - 1 > k && q->offset == p->offset && q->length == p->length) {
			j = d->base + e - 1; /* chains run in index order: the first */
			break;
		}
	}
	if (j == UINT32_MAX)
		return -1;
	for (uint32_t m = k + 1; m < j; m++)
		if (overlaps(p, &ws->items[m].rec))
			return -1;
	return (int)j;
}

static int release_run(void *opaque, uint64_t offset, uint64_t length)
{
	rdm_region_release(opaque, offset, length);
	return 0;
}

/* A query of a region's IOMMU state (rdm_region_get_mappings/deferred),
 * answered on the worker thread in the region's order. */
struct wquery {
	struct rdm_wbackend *wb;  /* mappings: the backend asked about */
	bool deferred;            /* which of the two questions */
	void *out;                /* struct rdm_mapping[] or struct rdm_deferred[] */
	size_t cap, count;
	uint64_t bytes;
};

static int note_deferred(void *opaque, uint64_t offset, uint64_t length)
{
	struct wquery *q = opaque;

	if (q->count < q->cap) {
		struct rdm_deferred *d = (struct rdm_deferred *)q->out + q->count;

		d->offset = offset;
		d->length = length;
	}
	q->count++;
	q->bytes += length;
	return 0;
}

static int count_bytes(void *opaque, uint64_t offset, uint64_t length)
{
	(void)offset;
	*(uint64_t *)opaque += length;
	return 0;
}

struct mapping_ctx {
	struct wquery *q;
	struct rdm_wregion *wr;
};

static int note_mapping(void *opaque, uint64_t iova, uint64_t length, uint64_t host_addr)
{
	struct mapping_ctx *c = opaque;
	struct wquery *q = c->q;
	uint64_t off = iova - c->wr->planner.iova;

	if (q->count < q->cap) {
		struct rdm_mapping *x = (struct rdm_mapping *)q->out + q->count;
		uint64_t discarded = 0;

		rdm_region_applier_runs(c->wr->r, off, length, false, count_bytes, &discarded);
		x->offset = off;
		x->length = length;
		x->iova = iova;
		x->host_addr = host_addr;
		x->deferred_bytes = discarded;
	}
	q->count++;
	q->bytes += length;
	return 0;
}

static int run_query(struct rdm_wregion *wr, struct wquery *q)
{
	struct rdm_planner *p = &wr->planner;
	struct mapping_ctx c = {.q = q, .wr = wr};
	bool attached = false;

	/* Unmaps queued by this batch's discards are not deferrals. */
	rdm_planner_flush(p);
	if (q->deferred)
		return rdm_planner_for_each_deferred(p, note_deferred, q);
	for (uint32_t i = 0; i < p->nbe; i++)
		attached |= p->be[i] == q->wb;
	if (!attached)
		return rdm_fail(-ENOENT, "region is not attached to backend %s", rdm_backend_name(q->wb->b));
	return rdm_planner_for_each_mapping(p, note_mapping, &c);
}

/* rdm_region_compact(), on the worker thread in the region's order. */
static int run_compact(struct rdm_worker *w, struct rdm_wregion *wr, struct rdm_planner_compact_result *res)
{
	struct rdm_planner *p = &wr->planner;
	int err;

	memset(res, 0, sizeof(*res));
	/* Refused before anything changes unless every backend's devices can
	 * be quiesced (the caller's statement covers only those). */
	for (uint32_t i = 0; i < p->nbe; i++) {
		bool ok = false;

		for (uint32_t k = 0; k < wr->nquiesce_ok; k++)
			ok |= wr->quiesce_ok[k] == p->be[i];
		if (!ok)
			return rdm_fail(-EPERM,
					"rdm_region_compact: the region was attached to backend %s without "
					"RDM_ATTACH_QUIESCE_OK: its devices are not known to be quiescent",
					rdm_backend_name(p->be[i]->b));
	}
	err = rdm_planner_compact(p, res);
	if (err)
		return err;
	w->priv[RDM_WST_COMPACTIONS]++;
	w->priv[RDM_WST_COMPACT_RELEASED] += res->released_bytes;
	w->priv[RDM_WST_COMPACT_REMAPPED] += res->remapped_bytes;
	return 0;
}

static void apply_control(struct rdm_worker *w, struct rdm_wregion *wr, struct item *it)
{
	void *ctl = rdm_link_payload(it->link, it->rec.ticket);

	switch (it->rec.op) {
	case RDM_OP_ATTACH: {
		const struct rdm_attach_req *req = ctl;
		struct rdm_wbackend *wb = req->wb;
		bool dup = false;

		for (uint32_t i = 0; i < wr->planner.nbe; i++)
			dup |= wr->planner.be[i] == wb;
		if (dup) {
			it->result = rdm_fail(-EEXIST, "region is already attached to backend %s",
					      rdm_backend_name(wb->b));
			break;
		}
		/* The tail listener is installed by the region's first attach,
		 * on the attaching thread, which holds the region's writer lock
		 * while this runs (attach_first()): nothing here may take it. */
		it->result = rdm_planner_attach(&wr->planner, wb);
		if (it->result == 0 && (req->flags & RDM_ATTACH_QUIESCE_OK))
			wr->quiesce_ok[wr->nquiesce_ok++] = wb; /* at most one per attached backend */
		break;
	}
	case RDM_OP_DETACH:
		it->result = rdm_planner_detach(&wr->planner, ctl);
		for (uint32_t i = 0; it->result == 0 && i < wr->nquiesce_ok; i++)
			if (wr->quiesce_ok[i] == ctl) {
				wr->quiesce_ok[i] = wr->quiesce_ok[--wr->nquiesce_ok];
				break;
			}
		break;
	case RDM_OP_COMPACT:
		it->result = run_compact(w, wr, ctl);
		break;
	case RDM_OP_REGISTER:
		it->result = rdm_region_apply(wr->r, RDM_OP_REGISTER, 0, 0, ctl);
		break;
	case RDM_OP_UNREGISTER:
		it->result = rdm_region_apply(wr->r, RDM_OP_UNREGISTER, 0, 0, ctl);
		break;
	case RDM_OP_QUERY:
		it->result = run_query(wr, ctl);
		break;
	case RDM_OP_DESTROY:
		rdm_planner_teardown(&wr->planner);
		/* Destroy releases every populated block, as a region without a
		 * worker does, once no backend maps it - unless a backend failed
		 * an unmap for this region: then any block may still be pinned
		 * there and none is released (DESIGN.md, contract 3). */
		if (!rdm_region_any_pinned(wr->r))
			rdm_region_applier_runs(wr->r, 0, rdm_region_size(wr->r), true, release_run, wr->r);
		rdm_region_set_tail_listener(wr->r, NULL);
		pthread_mutex_lock(&w->lock);
		w->regions[wr->id] = NULL;
		pthread_mutex_unlock(&w->lock);
		it->result = 0;
		break;
	default:
		it->result = rdm_fail(-EINVAL, "unknown control op %u", it->rec.op);
	}
}

/*
 * The region's lock over a run of changes. Each change is applied under
 * the region's lock; a group takes it at its first change and keeps it
 * for the next ones (one lock and unlock per run instead of per change:
 * ~60 instructions, two atomic RMWs, a change in bench pipeline), and lets
 * go before anything that takes it itself: a control (attach, destroy,
 * queries), superseding's look at the working state, the group's finish.
 * What runs under it is what ran under it before, change by change; other
 * takers of the lock (none on the hot path: readers are lock-free) wait
 * for a run of at most max_batch changes instead of one change.
 */
static void hold_region(struct rdm_wregion *wr, bool *locked)
{
	if (!*locked) {
		rdm_region_lock(wr->r);
		*locked = true;
	}
}

static void let_go_region(struct rdm_wregion *wr, bool *locked)
{
	if (*locked) {
		rdm_region_unlock(wr->r);
		*locked = false;
	}
}

static void apply_item(struct wstate *ws, struct rdm_wregion *wr, struct item *it, bool *locked)
{
	const struct rdm_change_rec *rec = &it->rec;

	/* Records are plain integers that may one day come from another
	 * process: check the range again rather than trust the submitter. */
	if (rec->op == RDM_OP_POPULATE || rec->op == RDM_OP_DISCARD) {
		it->result = rdm_region_check_range(wr->r, rec->offset, rec->length);
		if (it->result)
			return;
	}
	bool earlier = ws->applied_state;

	if (rec->op <= RDM_OP_DISCARD_ALL || rec->op == RDM_OP_REGISTER || rec->op == RDM_OP_UNREGISTER)
		ws->applied_state = true;
	switch (rec->op) {
	case RDM_OP_POPULATE:
		/* A discard the tail is told meanwhile is this populate's rollback. */
		hold_region(wr, locked);
		rdm_planner_populate_begin(&wr->planner);
		it->result = rdm_region_apply_batched_locked(wr->r, RDM_OP_POPULATE, rec->offset, rec->length);
		rdm_planner_populate_end(&wr->planner);
		break;
	case RDM_OP_DISCARD:
		hold_region(wr, locked);
		it->result = rdm_region_apply_batched_locked(wr->r, RDM_OP_DISCARD, rec->offset, rec->length);
		break;
	case RDM_OP_DISCARD_ALL:
		hold_region(wr, locked);
		it->result = rdm_region_apply_batched_locked(wr->r, RDM_OP_DISCARD_ALL, 0, 0);
		break;
	default:
		let_go_region(wr, locked);
		/* Controls (destroy's release, queries, compaction, attach)
		 * read or replay the state readers see: publish the batch's
		 * working version first. Only after a change of this group, so
		 * a first attach, whose caller holds the region's lock, does not
		 * take it. */
		if (earlier)
			rdm_region_batch_end(wr->r);
		apply_control(ws->w, wr, it);
	}
}

/* Does x come after y in (region, sequence) order? */
static inline bool item_after(const struct item *x, const struct item *y)
{
	return x->rec.region != y->rec.region ? x->rec.region > y->rec.region : x->rec.seq > y->rec.seq;
}

/* The end of the run of items in order that starts at src[i]. */
static uint32_t run_end(const struct item *src, uint32_t i, uint32_t n)
{
	while (++i < n && !item_after(&src[i - 1], &src[i]))
		;
	return i;
}

/* One pass of a natural merge sort: every two neighbouring runs of src,
 * merged into dst (ties from the left run: stable). Returns the runs the
 * pass found in src. */
static uint32_t merge_runs(const struct item *src, struct item *dst, uint32_t n)
{
	uint32_t runs = 0;

	for (uint32_t i = 0; i < n;) {
		uint32_t a = i, am = run_end(src, i, n), b = am, bm = b < n ? run_end(src, b, n) : n;
		uint32_t o = i;

		runs += 1 + (b < n);
		while (a < am && b < bm)
			dst[o++] = item_after(&src[a], &src[b]) ? src[b++] : src[a++];
		while (a < am)
			dst[o++] = src[a++];
		while (b < bm)
			dst[o++] = src[b++];
		i = bm;
	}
	return runs;
}

static void publish_stats(struct rdm_worker *w)
{
	/* Only the counters that changed: a caller reading the stats between
	 * its changes holds these lines, and each store to one costs a
	 * transfer ahead of the batch's tickets (H4); the load is a hit. */
	for (int i = 0; i < RDM_WST_COUNT; i++)
		if (atomic_load_explicit(&w->st[i], memory_order_relaxed) != w->priv[i])
			atomic_store_explicit(&w->st[i], w->priv[i], memory_order_relaxed);
}

/*
 * A batch goes through these stages, each its own function below:
 *  1. order_batch: items into (region, sequence) order;
 *  2. per region group (group_end): refuse_group if the worker does not
 *     serve the region, else apply_group - sequence gating, superseding
 *     (try_supersede), application (apply_item) - then finish_group: the
 *     planner's pending unmaps and releases, the tree's one publish and
 *     retire for the group;
 *  3. complete_batch: stats, then every applied item's ticket or callback,
 *     keeping the rest (waiting for a missing number) in order;
 *  4. notify_batch: the on_batch hook.
 *
 * Stage 1. A batch is a few runs already in order: each link's records in
 * its producer's numbering, drained link after link, after the items kept
 * from the last batch. One producer per region (the usual case) gives one
 * run and nothing moves. Producers sharing a region interleave their
 * numbers; a natural merge sort then costs one pass per halving of the
 * runs (4 producers: 2 passes over ~140 items). It replaced qsort(), an
 * indirect sort through a comparison call that then moved 184-byte items:
 * rdm-bench pipeline/rdm/producers:4 under callgrind, process() with
 * everything it calls: 1,484M instructions before, 1,386M after (the same
 * 753,665 sim calls); perf had put the sort at ~5% of the worker's time.
 */
static void order_batch(struct wstate *ws)
{
	struct item *src = ws->items, *dst = ws->scratch;
	uint32_t n = ws->nitems;

	if (n < 2 || run_end(src, 0, n) == n)
		return;
	while (merge_runs(src, dst, n) > 2) {
		struct item *t = src;

		src = dst;
		dst = t;
	}
	/* The last pass merged two runs into dst: the items from now on (the
	 * two arrays trade places; the allocation starts at batch_mem). */
	ws->scratch = src;
	ws->items = dst;
}

/* The end of the region group starting at i, and its last discard (i if
 * none): only a populate before it can be superseded. */
static uint32_t group_end(const struct wstate *ws, uint32_t i, uint32_t *last_discard)
{
	uint32_t id = ws->items[i].rec.region, end = i;

	*last_discard = i;
	while (end < ws->nitems && ws->items[end].rec.region == id) {
		if (ws->items[end].rec.op == RDM_OP_DISCARD)
			*last_discard = end;
		end++;
	}
	return end;
}

/* Records naming a region this worker does not serve: -EINVAL, logged. */
static void refuse_group(struct wstate *ws, uint32_t i, uint32_t end)
{
	uint32_t id = ws->items[i].rec.region;

	for (uint32_t k = i; k < end; k++) {
		ws->items[k].result = rdm_fail(-EINVAL, "record names region %" PRIu32
							" which the worker does not serve", id);
		snprintf(ws->msgs[k].s, sizeof(ws->msgs[k].s), "%s", rdm_last_error());
		rdm_log(RDM_LOG_WARNING, "worker: %s", rdm_last_error());
		ws->items[k].done = true;
	}
}

/*
 * Superseding (DESIGN.md): the populate at k, whose exact range a later
 * discard of this batch removes again with nothing in between, completes
 * with 0 together with that discard and nobody is told. Returns true if so.
 */
static bool try_supersede(struct wstate *ws, struct rdm_wregion *wr, struct dindex *d, uint32_t k,
			  bool *locked)
{
	struct item *it = &ws->items[k];
	int j = find_cancelling_discard(ws, d, k);

	/* Contiguous numbers up to j are in this batch, so the discard will be
	 * applied in it. The working state: earlier populates of this batch
	 * are applied but not yet visible to readers. */
	if (j < 0 || ws->items[j].rec.seq != wr->apply_seq + (uint64_t)(j - (int)k - 1))
		return false;
	let_go_region(wr, locked); /* rdm_region_applier_all() takes it */
	if (!rdm_region_applier_all(wr->r, it->rec.offset, it->rec.length, false))
		return false;
	it->result = 0;
	ws->items[j].superseded = true;
	ws->items[j].result = 0;
	ws->w->priv[RDM_WST_SUPERSEDED] += 2;
	return true;
}

/* Apply the group's items in sequence order, up to the first gap. */
static void apply_group(struct wstate *ws, struct rdm_wregion *wr, uint32_t i, uint32_t end,
			uint32_t last_discard)
{
	bool locked = false;
	struct dindex d = { 0 };

	for (uint32_t k = i; k < end; k++) {
		struct item *it = &ws->items[k];

		if (it->rec.seq != wr->apply_seq)
			break; /* a gap: the rest waits for the missing number */
		wr->apply_seq++;
		it->done = true;
		ws->w->priv[RDM_WST_CHANGES]++;
		if (it->superseded)
			continue;
		if (it->rec.op == RDM_OP_POPULATE && k < last_discard) {
			if (!d.head)
				dindex_build(ws, &d, i, end);
			if (try_supersede(ws, wr, &d, k, &locked))
				continue;
		}
		apply_item(ws, wr, it, &locked);
		if (it->result < 0)
			snprintf(ws->msgs[k].s, sizeof(ws->msgs[k].s), "%s", rdm_last_error());
		if (it->rec.op == RDM_OP_DESTROY)
			break;
	}
	let_go_region(wr, &locked);
}

static void finish_group(struct wstate *ws, struct rdm_wregion *wr)
{
	/* Publish first: readers see the group's discards before the flush
	 * unmaps and releases them (rdm_region_publish_discards()). Only a
	 * group that applied a change has state to publish and retire; one
	 * that only attached must not take the region's lock, which the first
	 * attach's caller holds (attach_first()). */
	if (ws->applied_state)
		rdm_region_batch_end(wr->r);
	ws->applied_state = false;
	rdm_planner_flush(&wr->planner);
	/* A layout that shrank gives its memory back, between batches. */
	rdm_planner_trim(&wr->planner);
}

static void count(_Atomic uint64_t *c)
{
	/* Relaxed: one writer (this thread), readers only display it. */
	atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + 1, memory_order_relaxed);
}

/*
 * The links whose watermark a batch moves (C1 in producer.c): a batch
 * touches few links, so a short list searched in order; the items of a
 * link past its end complete through their slots.
 */
#define BATCH_LINKS 16

static void complete_batch(struct wstate *ws)
{
	struct rdm_worker *w = ws->w;
	struct rdm_link *marks[BATCH_LINKS];
	uint32_t keep = 0;
	unsigned nmarks = 0;
	bool wake = false, all_done = true, item_wake = false;

	/* Stats first, so a caller woken by its ticket sees its change counted. */
	w->priv[RDM_WST_BATCHES]++;
	publish_stats(w);
	for (uint32_t i = 0; i < ws->nitems && all_done; i++)
		all_done = ws->items[i].done;
	/* Complete what was applied (C1 for each), then wake the waiters
	 * once for the whole batch (C2: one fence after every store of done;
	 * producer.c), then keep the rest (in order) for later. When nothing
	 * stays incomplete, every record drained so far is complete: a
	 * ticket with result 0 and no callback completes through its link's
	 * watermark, stored once per link after every slot completion. */
	for (uint32_t i = 0; i < ws->nitems; i++) {
		struct item *it = &ws->items[i];

		it->wake = false;
		if (!it->done)
			continue;
		if (all_done && it->result == 0 && !(it->rec.flags & RDM_REC_CALLBACK)) {
			unsigned k = 0;

			while (k < nmarks && marks[k] != it->link)
				k++;
			if (k < nmarks)
				continue;
			if (k < BATCH_LINKS) {
				marks[nmarks++] = it->link;
				continue;
			}
		}
		unsigned f = rdm_link_complete(it->link, it->rec.ticket, (it->rec.flags & RDM_REC_CALLBACK) != 0,
					       it->result, ws->msgs[i].s, ws->cpu);

		ws->handoff_local |= (f & RDM_LINK_LOCAL) != 0;
		it->wake = (f & RDM_LINK_WAKE) != 0;
		item_wake |= it->wake;
	}
	wake |= item_wake;
	for (unsigned k = 0; k < nmarks; k++) {
		unsigned f = rdm_link_complete_upto(marks[k], ws->cpu);

		ws->handoff_local |= (f & RDM_LINK_LOCAL) != 0;
		wake = true;
	}
	if (wake)
		atomic_thread_fence(memory_order_seq_cst);
	for (unsigned k = 0; k < nmarks; k++)
		rdm_link_wake(marks[k]);
	struct rdm_link *woken = NULL;

	/* Nothing to keep and no item's own wake: the usual batch. */
	for (uint32_t i = 0; (!all_done || item_wake) && i < ws->nitems; i++) {
		struct item *it = &ws->items[i];

		if (!it->done) {
			ws->items[keep++] = *it;
		} else if (it->wake && it->link != woken) {
			rdm_link_wake(it->link); /* once per run of one link's items */
			woken = it->link;
		}
	}
	ws->nitems = keep;
	ws->batch_no++;
	if (ws->handoff_local)
		count(&w->local_waiters);
}

static void notify_batch(struct wstate *ws, uint32_t fresh)
{
	struct rdm_worker *w = ws->w;

	if (w->cfg.on_batch) {
		rdm_callback_enter();
		w->cfg.on_batch(w->cfg.on_batch_opaque, ws->batch_no, fresh);
		rdm_callback_leave();
	}
}

static void process(struct wstate *ws, uint32_t fresh)
{
	order_batch(ws);
	for (uint32_t i = 0, last_discard, end; i < ws->nitems; i = end) {
		struct rdm_wregion *wr = region_of(ws->w, ws->items[i].rec.region);

		end = group_end(ws, i, &last_discard);
		if (!wr) {
			refuse_group(ws, i, end);
			continue;
		}
		apply_group(ws, wr, i, end, last_discard);
		finish_group(ws, wr);
	}
	complete_batch(ws);
	notify_batch(ws, fresh);
}

static void refresh_links(struct wstate *ws)
{
	rdm_inbox_refresh(&ws->w->in, &ws->links, &ws->nlinks, &ws->links_cap, &ws->links_gen);
}

/* Drop links whose producer closed them and whose ring is drained. */
static void reap_links(struct wstate *ws)
{
	rdm_inbox_reap(&ws->w->in, ws->links, &ws->nlinks);
}

static bool all_empty(struct wstate *ws)
{
	for (uint32_t i = 0; i < ws->nlinks; i++)
		if (!ws->links[i]->broken && !rdm_ring_empty(ws->links[i]->ring))
			return false;
	return true;
}

/* The batch's one allocation for cap items: the items, the scratch, the
 * messages (struct wstate). */
static size_t batch_bytes(uint32_t cap)
{
	return (size_t)cap * (2 * sizeof(struct item) + sizeof(struct item_msg));
}

static void free_batch(struct wstate *ws)
{
	rdm_arena_free(ws->w->arena, ws->batch_mem, batch_bytes(ws->items_cap), _Alignof(struct item));
}

static uint32_t drain(struct wstate *ws)
{
	uint32_t max = ws->w->cfg.max_batch, got = 0;
	/* Padded like producer.c's rec_buf: the ring's copy helper may use
	 * a 64-byte move for the last record. */
	struct rdm_change_rec recs[64 + 2];

	if (ws->items_cap < ws->nitems + max) {
		/* From the worker's arena: on its node (rdm/numa.h). */
		uint32_t cap = ws->nitems + max;
		struct item *ni = rdm_arena_alloc(ws->w->arena, batch_bytes(cap), _Alignof(struct item));

		if (!ni)
			return 0;
		if (ws->nitems)
			memcpy(ni, ws->items, ws->nitems * sizeof(*ni));
		free_batch(ws);
		ws->batch_mem = ni;
		ws->items = ni;
		ws->scratch = ni + cap;
		ws->msgs = (struct item_msg *)(void *)(ni + 2 * (size_t)cap);
		ws->items_cap = cap;
		/* Relaxed: display only (the placement call counts pages). */
		atomic_store_explicit(&ws->w->items_pub, ni, memory_order_relaxed);
		atomic_store_explicit(&ws->w->items_bytes, batch_bytes(cap), memory_order_relaxed);
	}
	for (uint32_t i = 0; i < ws->nlinks && got < max; i++) {
		struct rdm_link *l = ws->links[i];

		if (l->broken)
			continue;
		while (got < max) {
			unsigned want = max - got < 64 ? max - got : 64;
			int k = rdm_ring_pop_burst(l->ring, recs, want);

			if (k < 0) {
				rdm_log(RDM_LOG_ERROR, "worker: producer ring index corrupt (%s); ring ignored",
					strerror(-k));
				l->broken = true;
				break;
			}
			if (k == 0)
				break;
			/* C1: the ring's positions, counted as the producer
			 * numbered them (rdm_link_complete_upto()). */
			l->drained += (uint64_t)k;
			for (int j = 0; j < k; j++) {
				struct item *it = &ws->items[ws->nitems++];

				it->rec = recs[j];
				it->link = l;
				it->result = 0;
				it->done = false;
				it->superseded = false;
			}
			got += (uint32_t)k;
		}
	}
	return got;
}

/* H6: the worker thread's side of the pass token. Without
 * RDM_WORKER_CALLER_RUNS (no assist, fixed before the thread starts) no
 * other thread takes it, and this thread does not pay for it. */
static void token_take(struct rdm_worker *w)
{
	if (w->in.assist)
		pthread_mutex_lock(&w->run);
}

static void token_drop(struct rdm_worker *w)
{
	if (w->in.assist)
		pthread_mutex_unlock(&w->run);
}

/* Sleep until kicked (C3), unless work or a request came. H3: a sleep that
 * a publisher's doorbell ended is a sample of this thread's wake-up cost.
 * Called with the pass token (H6); returns without it. */
static void idle(struct wstate *ws)
{
	struct rdm_worker *w = ws->w;
	uint32_t seen = atomic_load_explicit(&w->in.futex, memory_order_relaxed);
	bool sleep;

	atomic_store_explicit(&w->in.sleeping, 1, memory_order_relaxed);
	/* C3: pairs with kick_after_publish() in producer.c. */
	atomic_thread_fence(memory_order_seq_cst);
	/* The flush check: rdm_worker_flush() increments flush_req before its
	 * kick's release increment of futex; if `seen` read that increment,
	 * the fence above (acquire) makes flush_req's new value visible here. */
	sleep = all_empty(ws) && !atomic_load_explicit(&w->stop, memory_order_relaxed) &&
		atomic_load_explicit(&w->in.links_gen, memory_order_relaxed) == ws->links_gen &&
		atomic_load_explicit(&w->flush_req, memory_order_relaxed) ==
			atomic_load_explicit(&w->flush_done, memory_order_relaxed);
	/* A publisher that rings sets its link's CPU hint to unknown
	 * (producer.c, kick_after_publish()): republish it after the sleep. */
	ws->cpu = -1;
	token_drop(w);
	if (sleep) {
		uint64_t slept = rdm_now_ns();

		count(&w->idle_sleeps);
		bool woken = rdm_futex_sleep(&w->in.futex, seen);
		uint64_t rang = rdm_inbox_arrival_ns(&w->in, slept), now = rdm_now_ns();

		/* ws->spin is this thread's own (passes do not touch it). */
		if (woken && rang < now)
			rdm_spin_note_wake(&ws->spin, now - rang);
	}
	/* Awake: this thread drains before it sleeps again (C3). A pass's
	 * hand-back (C4) may store 1 just before or after; either way a
	 * publisher that reads 0 is covered by this thread's next idle(). */
	atomic_store_explicit(&w->in.sleeping, 0, memory_order_relaxed);
}

/*
 * H5: leave a CPU shared with the waiters for another CPU of this thread's
 * mask. Taking the current CPU out of the mask makes the kernel move the
 * thread before the call returns; the whole mask put back leaves it where
 * it now runs (the scheduler may move it later, as any thread). A mask
 * changed by another thread between the two calls is overwritten by the
 * one read here: rdm_worker_config's CPUs are the worker's owner's say.
 * True if the thread moved; false with a mask of one CPU or when the
 * system denies the call (a sandbox), and then nothing changed. If the
 * whole mask cannot be put back (the system refused the second call), the
 * thread stays on the narrower mask, which still holds CPUs, and
 * restore_mask() tries again after each later batch (note_locality()):
 * the worker never keeps a mask its owner did not give it.
 */
static bool restore_mask(struct wstate *ws)
{
	if (rdm_worker_setaffinity(pthread_self(), sizeof(ws->mask), &ws->mask) != 0)
		return false;
	ws->narrowed = false;
	return true;
}

static bool spread(struct wstate *ws)
{
	pthread_t self = pthread_self();
	int32_t cpu = rdm_this_cpu();
	cpu_set_t others;

	if (cpu < 0 || pthread_getaffinity_np(self, sizeof(ws->mask), &ws->mask) != 0 ||
	    !CPU_ISSET(cpu, &ws->mask) || CPU_COUNT(&ws->mask) < 2)
		return false;
	others = ws->mask;
	CPU_CLR(cpu, &others);
	if (rdm_worker_setaffinity(self, sizeof(others), &others) != 0)
		return false;
	ws->narrowed = true;
	if (!restore_mask(ws))
		rdm_log(RDM_LOG_WARNING,
			"worker: cannot restore its CPU mask after leaving CPU %d; trying again after each batch", cpu);
	count(&ws->w->spreads);
	return true;
}

/* H5: after each batch, count the run of batches that completed a waiter
 * on this CPU; a run of spread_after leaves the CPU. */
static void note_locality(struct wstate *ws)
{
	/* A mask spread() could not put back: again, and no new move (it
	 * would read the narrowed mask as the owner's) until it is back. */
	if (__builtin_expect(ws->narrowed, 0)) {
		count(&ws->w->mask_retries);
		if (!restore_mask(ws))
			return;
	}
	if (!ws->handoff_local) {
		ws->local_run = 0;
		ws->remote_since_spread++;
		return;
	}
	if (++ws->local_run < ws->spread_after)
		return;
	/* The last move held if as many batches ran apart after it as this
	 * run needed. If the scheduler put this thread back (the other CPUs
	 * are busy), or this try cannot move it (a mask of one CPU, a denied
	 * call), wait twice as long before the next try: a host with no idle
	 * CPU pays for a move, and a one-CPU mask for the affinity read, ever
	 * more rarely. A move after one that held tries again as soon. */
	bool undone = ws->moved && ws->remote_since_spread < ws->spread_after;

	ws->moved = spread(ws);
	if (undone || !ws->moved)
		ws->spread_after = ws->spread_after < RDM_WORKER_SPREAD_MAX / 2 ? 2 * ws->spread_after
										: RDM_WORKER_SPREAD_MAX;
	else
		ws->spread_after = RDM_WORKER_SPREAD_AFTER;
	ws->local_run = 0;
	ws->remote_since_spread = 0;
}

/* Tell the producers' waiters which CPU this thread runs on (links carry
 * it: see producer.h), when it or the table of links changed. */
static void publish_cpu(struct wstate *ws)
{
	int32_t cpu = rdm_this_cpu();

	if (cpu == ws->cpu && ws->cpu_gen == ws->links_gen)
		return;
	for (uint32_t i = 0; i < ws->nlinks; i++)
		rdm_link_set_worker_cpu(ws->links[i], cpu);
	ws->cpu = cpu;
	ws->cpu_gen = ws->links_gen;
	/* Relaxed: display only (rdm_worker_get_placement). */
	atomic_store_explicit(&ws->w->cur_cpu, cpu, memory_order_relaxed);
}

/*
 * Answer rdm_worker_flush() callers (see worker_internal.h). Called when a
 * drain found nothing. Returns true if the loop should go on at once.
 */
static bool flush_pending(struct wstate *ws)
{
	struct rdm_worker *w = ws->w;
	/* Seq_cst: pairs with the caller's fetch_add in rdm_worker_flush(),
	 * which follows its publications; the drain below comes after this
	 * load, so it sees them. */
	uint32_t req = atomic_load_explicit(&w->flush_req, memory_order_seq_cst);

	if (req == atomic_load_explicit(&w->flush_done, memory_order_relaxed))
		return false;
	refresh_links(ws);
	uint32_t got = drain(ws);

	if (got) {
		process(ws, got);
		return true;
	}
	if (ws->nitems != 0 || !all_empty(ws))
		return true;
	/* Release: pairs with the acquire load in rdm_worker_flush(); every
	 * ticket this worker completed so far happens before it. */
	atomic_store_explicit(&w->flush_done, req, memory_order_release);
	rdm_futex(&w->flush_done, FUTEX_WAKE_PRIVATE, INT32_MAX);
	return false;
}

/*
 * Pages this thread touches first (its stack, the planner's and backends'
 * state it allocates, malloc arenas it alone uses) come from the worker's
 * node: the thread's memory policy says so. Memory the worker allocates
 * explicitly comes from its node's arena anyway (w->arena).
 */
static void bind_thread_memory(struct rdm_worker *w)
{
	if (rdm_node_bind_thread(&w->in.node) != 0)
		rdm_log(RDM_LOG_WARNING, "worker: %s", rdm_last_error());
}

/*
 * H6: a synchronous submitter's pass (rdm_inbox.assist; producer.c C4).
 * `owe`: the caller cleared `sleeping` (C3's exchange) and owes the worker
 * a wake, which this pays by handing the doorbell back.
 */
static bool assist(struct rdm_inbox *in, const struct rdm_slot *s, uint64_t ticket, bool owe)
{
	struct rdm_worker *w = (struct rdm_worker *)((char *)in - offsetof(struct rdm_worker, in));
	struct wstate *ws = w->ws;
	bool more;

	/* Acquire (the mutex): everything the last holder did to *ws. */
	if (pthread_mutex_trylock(&w->run) != 0)
		return false;
	count(&w->assists);
	ws->cpu = -1; /* H1-H5 are the worker thread's: its loop republishes */
	for (unsigned pass = 0; pass < RDM_WORKER_ASSIST_PASSES; pass++) {
		refresh_links(ws);
		uint32_t got = drain(ws);

		if (!got)
			break;
		ws->handoff_local = false;
		process(ws, got);
		/* Only whether to stop: on the caller's thread, whose slot it
		 * is; its wait reads the result after its own look (C1). */
		if (rdm_slot_done(s, ticket))
			break;
	}
	if (!owe) {
		/* sleeping was 0: the worker thread is awake or woken, and
		 * drains before it sleeps again (C3). */
		pthread_mutex_unlock(&w->run);
		return true;
	}
	/* C4: hand the doorbell back as idle() does before a sleep. The fence
	 * orders the store of sleeping before the loads of the rings; a
	 * publisher fences between its publication and its load of sleeping
	 * (C3), so either it sees 1 and wakes the worker, or the check below
	 * sees its record. */
	atomic_store_explicit(&in->sleeping, 1, memory_order_relaxed);
	atomic_thread_fence(memory_order_seq_cst);
	/* A link made since this pass's refresh is not in ws: its generation
	 * counts as a record (as in idle()). */
	more = ws->nitems != 0 || !all_empty(ws) ||
	       atomic_load_explicit(&w->in.links_gen, memory_order_relaxed) != ws->links_gen;
	/* Release (the mutex): this pass's work, to the next holder. */
	pthread_mutex_unlock(&w->run);
	if (more && atomic_exchange_explicit(&in->sleeping, 0, memory_order_relaxed))
		rdm_inbox_kick(in);
	return true;
}

static void *worker_main(void *arg)
{
	struct rdm_worker *w = arg;
	struct wstate *ws = w->ws;
	uint64_t cap = (uint64_t)w->cfg.spin_us * 1000u;
	/* idle_since: when the last batch ended (0: not idle); spin_from: when
	 * the current spin began; budget: its length; yields: how many of the
	 * RDM_WORKER_IDLE_YIELDS were made since. */
	uint64_t idle_since = 0, spin_from = 0, budget = 0;
	unsigned spins = 0, yields = 0;

	rdm_spin_init(&ws->spin, cap);
	bind_thread_memory(w);
	for (;;) {
		/* H6: the pass token for every look at the rings and what
		 * follows; dropped before a spin round, a yield or a sleep. */
		token_take(w);
		refresh_links(ws);
		publish_cpu(ws);
		uint32_t got = drain(ws);

		if (got) {
			if (idle_since)
				rdm_spin_note(&ws->spin, rdm_inbox_arrival_ns(&w->in, idle_since) - idle_since);
			idle_since = 0;
			ws->handoff_local = false;
			process(ws, got);
			note_locality(ws);
			token_drop(w);
			continue;
		}
		if (flush_pending(ws)) {
			token_drop(w);
			continue;
		}
		if (atomic_load_explicit(&w->stop, memory_order_acquire)) {
			token_drop(w);
			break;
		}
		reap_links(ws);
		if (idle_since == 0) {
			/* A batch just ended. A waiter that shares this CPU needs
			 * it now: no spin and no yields (a yield between two
			 * threads of one CPU may come straight back); sleep. */
			idle_since = spin_from = rdm_now_ns();
			spins = yields = 0;
			budget = ws->handoff_local ? 0 : rdm_spin_budget(&ws->spin);
			if (ws->handoff_local) {
				count(&w->local_handoffs);
				yields = RDM_WORKER_IDLE_YIELDS;
			}
		}
		/* Poll for the budget (the clock is read every 8 rounds)... */
		if (budget && yields == 0) {
			if (++spins % 8 != 0 || rdm_now_ns() - spin_from < budget) {
				token_drop(w);
				rdm_spin_round(spins);
				continue;
			}
			budget = 0;
		}
		/* ...then give the CPU away a few times (cheaper than a sleep
		 * and a wake when another thread wants it)... */
		if (yields < RDM_WORKER_IDLE_YIELDS) {
			token_drop(w);
			yields++;
			count(&w->idle_yields);
			sched_yield();
			continue;
		}
		/* ...then sleep (C3; idle() drops the token). Woken, spin and
		 * yield again before the next sleep; the gap runs on until
		 * records come. */
		idle(ws);
		spin_from = rdm_now_ns();
		spins = yields = 0;
		budget = rdm_spin_budget(&ws->spin);
	}
	return NULL;
}

/* ----------------------------------------------------------- public API */

/*
 * Backends served by some worker, process-wide (under lifecycle_lock): a
 * backend is driven by one thread only, so a second worker is refused.
 */
static struct rdm_backend **claimed;
static uint32_t nclaimed, claimed_cap;

static bool backend_claimed_locked(const struct rdm_backend *b)
{
	for (uint32_t i = 0; i < nclaimed; i++)
		if (claimed[i] == b)
			return true;
	return false;
}

static void backend_unclaim_locked(const struct rdm_backend *b)
{
	for (uint32_t i = 0; i < nclaimed; i++)
		if (claimed[i] == b) {
			claimed[i] = claimed[--nclaimed];
			break;
		}
	if (nclaimed == 0) {
		rdm_free(claimed);
		claimed = NULL;
		claimed_cap = 0;
	}
}

bool rdm_worker_serves_backend(const struct rdm_backend *b)
{
	bool ret;

	pthread_mutex_lock(&lifecycle_lock);
	ret = backend_claimed_locked(b);
	pthread_mutex_unlock(&lifecycle_lock);
	return ret;
}

#define WORKER_KNOWN_FLAGS \
	(RDM_WORKER_NUMA_NODE | RDM_WORKER_NUMA_PREFERRED | RDM_WORKER_NO_PIN | RDM_WORKER_CALLER_RUNS)

int rdm_worker_create(const struct rdm_worker_config *cfg, struct rdm_worker **out)
{
	struct rdm_worker_config c = {0};
	struct rdm_worker *w;
	int err;

	if (!out)
		return rdm_fail(-EINVAL, "rdm_worker_create: out is NULL");
	if (cfg) {
		if (cfg->struct_size < offsetof(struct rdm_worker_config, on_batch))
			return rdm_fail(-EINVAL, "rdm_worker_config.struct_size %" PRIu32 " is too small",
					cfg->struct_size);
		memcpy(&c, cfg, cfg->struct_size < sizeof(c) ? cfg->struct_size : sizeof(c));
	}
	c.struct_size = sizeof(c);
	if (!c.ring_capacity)
		c.ring_capacity = 1024;
	if (!c.max_batch)
		c.max_batch = 256;
	if (!c.ticket_slots)
		c.ticket_slots = RDM_PRODUCER_SLOTS;
	if (!c.spin_us)
		c.spin_us = RDM_WORKER_DEFAULT_SPIN_US;
	if (c.ring_capacity & (c.ring_capacity - 1))
		return rdm_fail(-EINVAL, "ring_capacity %" PRIu32 " is not a power of two", c.ring_capacity);
	if ((c.ticket_slots & (c.ticket_slots - 1)) || c.ticket_slots > RDM_PRODUCER_SLOTS)
		return rdm_fail(-EINVAL, "ticket_slots %" PRIu32 " is not a power of two up to %u",
				c.ticket_slots, RDM_PRODUCER_SLOTS);
	if (c.reserved)
		return rdm_fail(-EINVAL, "rdm_worker_config.reserved must be 0");
	if (c.flags & ~(uint32_t)WORKER_KNOWN_FLAGS)
		return rdm_fail(-EINVAL, "rdm_worker_config: unknown flags %#" PRIx32,
				c.flags & ~(uint32_t)WORKER_KNOWN_FLAGS);
	if ((c.flags & RDM_WORKER_NUMA_PREFERRED) && !(c.flags & RDM_WORKER_NUMA_NODE))
		return rdm_fail(-EINVAL, "rdm_worker_config: RDM_WORKER_NUMA_PREFERRED without RDM_WORKER_NUMA_NODE");
	if (!(c.flags & RDM_WORKER_NUMA_NODE))
		c.numa_node = -1;

	struct rdm_node node;
	unsigned arena;
	cpu_set_t cpus;
	pthread_attr_t attr;
	bool pin;

	err = rdm_node_resolve(c.flags & RDM_WORKER_NUMA_NODE, c.numa_node, c.flags & RDM_WORKER_NUMA_PREFERRED,
			       "worker create", &node);
	if (err)
		return err;
retry:
	err = rdm_node_arena(&node, rdm_node_strict(&node), &arena);
	if (err)
		return err;
	/*
	 * The CPUs: an explicit node's own (whatever the creating thread's
	 * affinity; the kernel keeps those of the process's cpuset, and fails
	 * when none is left); a derived node's among the creating thread's, so
	 * that `taskset` still confines a worker created with the defaults.
	 */
	pin = !(c.flags & RDM_WORKER_NO_PIN);
	if (pin && !rdm_node_cpus(node.node, !(node.flags & RDM_PLACE_EXPLICIT) || (node.flags & RDM_PLACE_FALLBACK),
				  &cpus))
		pin = false; /* a node without CPUs: the creator's CPUs */
	w = rdm_arena_alloc(arena, sizeof(*w), _Alignof(struct rdm_worker));
	if (!w)
		return rdm_fail(-ENOMEM, "out of memory creating a worker");
	memset(w, 0, sizeof(*w));
	w->ws = rdm_arena_alloc(arena, sizeof(*w->ws), _Alignof(struct wstate));
	if (!w->ws) {
		rdm_arena_free(arena, w, sizeof(*w), _Alignof(struct rdm_worker));
		return rdm_fail(-ENOMEM, "out of memory creating a worker");
	}
	*w->ws = (struct wstate){.w = w, .cpu = -1, .spread_after = RDM_WORKER_SPREAD_AFTER};
	w->cfg = c;
	w->arena = arena;
	atomic_init(&w->cur_cpu, -1);
	atomic_init(&w->items_pub, NULL);
	atomic_init(&w->items_bytes, 0);
	pthread_mutex_init(&w->lock, NULL);
	pthread_mutex_init(&w->run, NULL);
	rdm_inbox_init(&w->in, c.ring_capacity, c.ticket_slots, c.spin_us, &node);
	if (c.flags & RDM_WORKER_CALLER_RUNS)
		w->in.assist = assist; /* before the thread starts: then read-only */
	err = pthread_attr_init(&attr);
	if (!err) {
		if (pin)
			err = pthread_attr_setaffinity_np(&attr, sizeof(cpus), &cpus);
		if (!err)
			err = pthread_create(&w->thread, &attr, worker_main, w);
		pthread_attr_destroy(&attr);
	}
	if (err) {
		rdm_inbox_fini(&w->in);
		pthread_mutex_destroy(&w->run);
		pthread_mutex_destroy(&w->lock);
		rdm_arena_free(arena, w->ws, sizeof(*w->ws), _Alignof(struct wstate));
		rdm_arena_free(arena, w, sizeof(*w), _Alignof(struct rdm_worker));
		if (err == EINVAL && pin && (node.flags & RDM_PLACE_EXPLICIT) && !(node.flags & RDM_PLACE_FALLBACK)) {
			/* No CPU of the node is in the process's cpuset. */
			if (rdm_node_strict(&node))
				return rdm_fail(-EINVAL, "worker create: NUMA node %d has no CPU this process may run on",
						node.node);
			node.flags |= RDM_PLACE_FALLBACK;
			node.node = rdm_numa_current_node();
			goto retry;
		}
		return rdm_fail(-err, "cannot start the worker thread: %s", strerror(err));
	}
	/* What the kernel made of the mask (the cpuset clips it). */
	if (pthread_getaffinity_np(w->thread, sizeof(cpus), &cpus) != 0)
		CPU_ZERO(&cpus);
	w->ncpus = (uint32_t)CPU_COUNT(&cpus);
	*out = w;
	return 0;
}

int rdm_worker_get_thread(const struct rdm_worker *w, pthread_t *out)
{
	if (!w || !out)
		return rdm_fail(-EINVAL, "rdm_worker_get_thread: NULL %s", w ? "out" : "worker");
	*out = w->thread;
	return 0;
}

int rdm_worker_get_config(const struct rdm_worker *w, struct rdm_worker_config *out)
{
	if (!w || !out)
		return rdm_fail(-EINVAL, "rdm_worker_get_config: NULL %s", w ? "out" : "worker");
	uint32_t size = out->struct_size;

	if (size < offsetof(struct rdm_worker_config, on_batch))
		return rdm_fail(-EINVAL, "rdm_worker_get_config: out->struct_size %" PRIu32 " is too small", size);
	/* w->cfg is written once, before the worker thread starts, and never
	 * again: any thread may read it. */
	struct rdm_worker_config c = w->cfg;

	c.struct_size = size;
	memcpy(out, &c, size < sizeof(c) ? size : sizeof(c));
	return 0;
}

int rdm_worker_get_placement(struct rdm_worker *w, struct rdm_worker_placement *out)
{
	struct rdm_worker_placement wp;
	const void *addr[2 + RDM_WORKER_MAX_BACKENDS];
	size_t len[2 + RDM_WORKER_MAX_BACKENDS], n = 0;
	int err;

	if (!w || !out)
		return rdm_fail(-EINVAL, "worker placement: NULL %s", w ? "out" : "worker");
	if (out->struct_size < sizeof(wp))
		return rdm_fail(-EINVAL, "worker placement: struct_size %u, want %zu", out->struct_size, sizeof(wp));
	memset(&wp, 0, sizeof(wp));
	wp.struct_size = out->struct_size;
	wp.ncpus = w->ncpus;
	/* Relaxed: display values (see worker_internal.h). */
	wp.cpu = atomic_load_explicit(&w->cur_cpu, memory_order_relaxed);
	wp.state.struct_size = wp.ring_memory.struct_size = sizeof(struct rdm_placement);
	rdm_node_placement_init(&wp.state, &w->in.node);
	rdm_node_placement_init(&wp.ring_memory, &w->in.node);
	if (w->arena)
		wp.state.flags |= RDM_PLACE_BOUND;
	if (rdm_numa_on())
		wp.ring_memory.flags |= RDM_PLACE_BOUND;
	/* The worker itself (stats, inbox, tables), its batch array, and the
	 * per-backend planner state. */
	addr[n] = w;
	len[n++] = sizeof(*w);
	addr[n] = atomic_load_explicit(&w->items_pub, memory_order_relaxed);
	len[n++] = atomic_load_explicit(&w->items_bytes, memory_order_relaxed);
	pthread_mutex_lock(&w->lock);
	for (uint32_t i = 0; i < w->nbackends; i++) {
		addr[n] = w->backends[i];
		len[n++] = sizeof(*w->backends[i]);
	}
	err = rdm_node_census(&wp.state, addr, len, n);
	pthread_mutex_unlock(&w->lock);
	if (!err)
		err = rdm_inbox_ring_census(&w->in, &wp.rings, &wp.rings_on_node, &wp.ring_memory);
	if (err)
		return rdm_fail(-ENOMEM, "worker placement: out of memory");
	memcpy(out, &wp, sizeof(wp));
	return 0;
}

/* A call that waits for w: 0, or -EDEADLK (message set) from a callback or
 * on w's own thread, which it would wait for. */
static int check_may_wait_for(const struct rdm_worker *w, const char *what)
{
	if (rdm_check_may_block(what))
		return -EDEADLK;
	if (pthread_equal(pthread_self(), w->thread))
		return rdm_fail(-EDEADLK, "%s: called on the worker's own thread", what);
	return 0;
}

int rdm_worker_destroy(struct rdm_worker *w)
{
	if (!w)
		return rdm_fail(-EINVAL, "rdm_worker_destroy: worker is NULL");
	if (check_may_wait_for(w, "rdm_worker_destroy"))
		return -EDEADLK;
	pthread_mutex_lock(&w->lock);
	for (uint32_t i = 0; i < w->nregions; i++)
		if (w->regions[i]) {
			pthread_mutex_unlock(&w->lock);
			return rdm_fail(-EBUSY, "worker still serves region %" PRIu32 "; destroy it first", i);
		}
	pthread_mutex_unlock(&w->lock);
	/* Release: pairs with the worker's acquire load of stop. */
	atomic_store_explicit(&w->stop, true, memory_order_release);
	rdm_inbox_kick(&w->in);
	pthread_join(w->thread, NULL);
	/* No pass runs any more: no region is left to submit to, and no
	 * waiter starts one (a waiter's pass may still be running: it ends
	 * before this returns). */
	rdm_inbox_quiesce(&w->in);
	struct wstate *ws = w->ws;

	atomic_store_explicit(&w->items_pub, NULL, memory_order_relaxed);
	free_batch(ws);
	rdm_free(ws->links);
	rdm_arena_free(w->arena, ws, sizeof(*ws), _Alignof(struct wstate));
	pthread_mutex_destroy(&w->run);
	rdm_inbox_fini(&w->in);
	pthread_mutex_lock(&lifecycle_lock);
	for (uint32_t i = 0; i < w->nbackends; i++)
		backend_unclaim_locked(w->backends[i]->b);
	pthread_mutex_unlock(&lifecycle_lock);
	for (uint32_t i = 0; i < w->nbackends; i++)
		rdm_arena_free(w->arena, w->backends[i], sizeof(*w->backends[i]), _Alignof(struct rdm_wbackend));
	rdm_free(w->regions);
	pthread_mutex_destroy(&w->lock);
	rdm_arena_free(w->arena, w, sizeof(*w), _Alignof(struct rdm_worker));
	return 0;
}

/* w's record of backend b, or NULL (takes the worker's table lock). */
static struct rdm_wbackend *wbackend_of(struct rdm_worker *w, struct rdm_backend *b)
{
	struct rdm_wbackend *wb = NULL;

	pthread_mutex_lock(&w->lock);
	for (uint32_t i = 0; i < w->nbackends && !wb; i++)
		if (w->backends[i]->b == b)
			wb = w->backends[i];
	pthread_mutex_unlock(&w->lock);
	return wb;
}

int rdm_worker_add_backend(struct rdm_worker *w, struct rdm_backend *b, uint64_t budget)
{
	struct rdm_wbackend *wb;
	uint64_t avail = UINT64_MAX;
	int err;

	if (!w || !b)
		return rdm_fail(-EINVAL, "rdm_worker_add_backend: NULL worker or backend");
	if (rdm_check_may_block("rdm_worker_add_backend"))
		return -EDEADLK;
	/* The planner's per-backend state: from the worker's node. */
	wb = rdm_arena_alloc(w->arena, sizeof(*wb), _Alignof(struct rdm_wbackend));
	if (!wb)
		return rdm_fail(-ENOMEM, "out of memory adding a backend");
	memset(wb, 0, sizeof(*wb));
	/* The claim first: until it is ours, no other thread drives b for
	 * this worker, and dma_avail below is a call on b. */
	pthread_mutex_lock(&lifecycle_lock);
	if (backend_claimed_locked(b)) {
		pthread_mutex_unlock(&lifecycle_lock);
		rdm_arena_free(w->arena, wb, sizeof(*wb), _Alignof(struct rdm_wbackend));
		return rdm_fail(-EEXIST, "backend %s was already added to a worker", rdm_backend_name(b));
	}
	if (nclaimed == claimed_cap) {
		uint32_t cap = claimed_cap ? claimed_cap * 2 : 8;
		struct rdm_backend **nc = rdm_reallocarray(claimed, cap, sizeof(*nc));

		if (!nc) {
			pthread_mutex_unlock(&lifecycle_lock);
			rdm_arena_free(w->arena, wb, sizeof(*wb), _Alignof(struct rdm_wbackend));
			return rdm_fail(-ENOMEM, "out of memory adding a backend");
		}
		claimed = nc;
		claimed_cap = cap;
	}
	claimed[nclaimed++] = b;
	pthread_mutex_unlock(&lifecycle_lock);

	err = rdm_backend_dma_avail(b, &avail);
	pthread_mutex_lock(&w->lock);
	if (!err && w->nbackends == RDM_WORKER_MAX_BACKENDS)
		err = rdm_fail(-EINVAL, "a worker serves at most %d backends", RDM_WORKER_MAX_BACKENDS);
	if (!err) {
		wb->b = b;
		rdm_backend_get_caps(b, &wb->caps);
		wb->budget = budget && budget < avail ? budget : avail;
		w->backends[w->nbackends++] = wb;
	}
	pthread_mutex_unlock(&w->lock);
	if (err) {
		pthread_mutex_lock(&lifecycle_lock);
		backend_unclaim_locked(b);
		pthread_mutex_unlock(&lifecycle_lock);
		rdm_arena_free(w->arena, wb, sizeof(*wb), _Alignof(struct rdm_wbackend));
	}
	return err;
}

static int applier_submit(void *ctx, struct rdm_region *r, enum rdm_op op, uint64_t offset, uint64_t length,
			  struct rdm_listener *l)
{
	struct rdm_wregion *wr = ctx;
	struct rdm_producer *p = rdm_producer_implicit();
	uint16_t rop;

	(void)r;
	if (!p)
		return rdm_fail(-ENOMEM, "out of memory creating this thread's producer");
	/* The region hands on only the operations it applies itself. */
	if (op < RDM_OP_POPULATE || op > RDM_OP_UNREGISTER)
		return rdm_fail(-EINVAL, "unknown change op %d", (int)op);
	rop = (uint16_t)op;
	return rdm_producer_submit_one(p, &wr->sub, rop, offset, length, l, true, NULL, NULL, NULL);
}

/*
 * A control change through the region's own producer (see rdm_wregion.ctl):
 * it cannot fail to be submitted, so its result is the change's.
 */
static int ctl_submit(struct rdm_wregion *wr, uint16_t op, void *payload)
{
	int err;

	pthread_mutex_lock(&wr->ctl_lock);
	err = rdm_producer_submit_one(wr->ctl, &wr->sub, op, 0, 0, payload, true, NULL, NULL, NULL);
	pthread_mutex_unlock(&wr->ctl_lock);
	return err;
}

static void free_wregion(struct rdm_worker *w, struct rdm_wregion *wr)
{
	pthread_mutex_lock(&w->lock);
	if (w->regions[wr->id] == wr)
		w->regions[wr->id] = NULL;
	pthread_mutex_unlock(&w->lock);
	/* Closes the control ring; the worker frees it once it is drained. */
	rdm_producer_destroy(wr->ctl);
	rdm_planner_fini(&wr->planner);
	pthread_mutex_destroy(&wr->ctl_lock);
	rdm_region_inbox_fini(&wr->sub);
	rdm_free(wr);
}

static void applier_destroy(void *ctx, struct rdm_region *r)
{
	struct rdm_wregion *wr = ctx;

	(void)r;
	/* Cannot fail: the control producer was made at attach. The worker
	 * applies every change accepted before it, then tears down. */
	ctl_submit(wr, RDM_OP_DESTROY, NULL);
	free_wregion(wr->w, wr);
}

static struct rdm_region_inbox *applier_inbox(void *ctx)
{
	struct rdm_wregion *wr = ctx;

	return &wr->sub;
}

const struct rdm_applier_ops rdm_worker_applier_ops = {
	.submit = applier_submit,
	.destroy = applier_destroy,
	.inbox = applier_inbox,
};

/* Everything a region needs to be served by w, made before anything is
 * changed (all or nothing): the worker-side region, its planner, its control
 * producer with its ring and slot, its slot in the worker's table. */
static int new_wregion(struct rdm_worker *w, struct rdm_region *r, struct rdm_wregion **out)
{
	struct rdm_wregion *wr = rdm_aligned_zalloc(_Alignof(struct rdm_wregion), sizeof(*wr));
	struct rdm_link *l;
	uint32_t id;
	int err;

	if (!wr)
		return rdm_fail(-ENOMEM, "out of memory attaching a region");
	wr->r = r;
	wr->w = w;
	err = rdm_planner_init(&wr->planner, r);
	if (err) {
		rdm_free(wr);
		return err;
	}
	err = rdm_producer_new(1, false, &wr->ctl);
	if (!err) {
		err = rdm_producer_link(wr->ctl, &w->in, 2, &l);
		if (err)
			rdm_producer_destroy(wr->ctl);
	}
	if (err) {
		rdm_planner_fini(&wr->planner);
		rdm_free(wr);
		return err;
	}
	rdm_region_inbox_init(&wr->sub, &w->in, UINT32_MAX); /* its number comes below */
	pthread_mutex_init(&wr->ctl_lock, NULL);
	wr->planner.stat_remapped_bytes = &w->priv[RDM_WST_REMAPPED];
	wr->planner.stat_deferred_bytes = &w->priv[RDM_WST_DEFERRED];
	wr->planner.stat_deferred_peak = &w->priv[RDM_WST_DEFERRED_PEAK];
	wr->planner.stat_defer_exceeded = &w->priv[RDM_WST_DEFER_EXCEEDED];
	wr->planner.stat_budget_exceeded = &w->priv[RDM_WST_BUDGET_EXCEEDED];
	wr->planner.stat_enospc = &w->priv[RDM_WST_ENOSPC];
	wr->planner.stat_failed_backends = &w->priv[RDM_WST_FAILED_BACKENDS];
	wr->tail.ops = &tail_ops;
	wr->tail.opaque = wr;
	wr->tail.offset = 0;
	wr->tail.length = rdm_region_size(r);
	pthread_mutex_lock(&w->lock);
	for (id = 0; id < w->nregions && w->regions[id]; id++)
		;
	if (id == w->nregions) {
		if (w->nregions == w->regions_cap) {
			uint32_t cap = w->regions_cap ? w->regions_cap * 2 : 8;
			struct rdm_wregion **nr = rdm_reallocarray(w->regions, cap, sizeof(*nr));

			if (!nr) {
				pthread_mutex_unlock(&w->lock);
				wr->id = UINT32_MAX;
				rdm_producer_destroy(wr->ctl);
				rdm_planner_fini(&wr->planner);
				pthread_mutex_destroy(&wr->ctl_lock);
				rdm_region_inbox_fini(&wr->sub);
				rdm_free(wr);
				return rdm_fail(-ENOMEM, "out of memory attaching a region");
			}
			w->regions = nr;
			w->regions_cap = cap;
		}
		w->nregions++;
	}
	wr->id = id;
	wr->sub.id = id;
	w->regions[id] = wr;
	pthread_mutex_unlock(&w->lock);
	*out = wr;
	return 0;
}

/* The worker serving r through rdm_worker_applier_ops, or NULL. */
static struct rdm_wregion *served(struct rdm_region *r)
{
	if (rdm_region_get_applier_ops(r) != &rdm_worker_applier_ops)
		return NULL;
	return rdm_region_get_applier_ctx(r);
}

/*
 * The region's first attach. The attaching thread holds the region's writer
 * lock from before the worker applies the attach until the applier is
 * installed or the attempt is undone: no change can be applied meanwhile
 * (without an applier every change needs that lock), so nothing is queued
 * for the worker but this attach, and a failure leaves the region exactly
 * as it was. The worker's side takes no region lock for an attach.
 */
static int attach_first(struct rdm_worker *w, struct rdm_region *r, struct rdm_attach_req *req, bool *raced)
{
	struct rdm_wbackend *wb = req->wb;
	struct rdm_wregion *wr = NULL;
	int err;

	/* Checked without building a planner (its block layout's index can
	 * take megabytes). */
	err = rdm_planner_check_first_backend(r, wb);
	if (err)
		return err;
	rdm_region_lock(r);
	if (rdm_region_get_applier_ops(r)) {
		rdm_region_unlock(r);
		*raced = true;
		return 0;
	}
	err = new_wregion(w, r, &wr);
	if (err || !wr) {
		rdm_region_unlock(r);
		return err;
	}
	err = ctl_submit(wr, RDM_OP_ATTACH, req);
	if (!err)
		rdm_region_install_applier_locked(r, &rdm_worker_applier_ops, wr, &wr->tail);
	rdm_region_unlock(r);
	if (err)
		free_wregion(w, wr);
	return err;
}

int rdm_worker_attach(struct rdm_worker *w, struct rdm_region *r, struct rdm_backend *b)
{
	return rdm_worker_attach_flags(w, r, b, 0);
}

int rdm_worker_attach_flags(struct rdm_worker *w, struct rdm_region *r, struct rdm_backend *b, uint32_t flags)
{
	struct rdm_attach_req req = {.flags = flags};
	struct rdm_wregion *wr;
	bool raced = false;
	int err;

	if (!w || !r || !b)
		return rdm_fail(-EINVAL, "rdm_worker_attach: NULL worker, region or backend");
	if (flags & ~(uint32_t)RDM_ATTACH_QUIESCE_OK)
		return rdm_fail(-EINVAL, "rdm_worker_attach: unknown flags 0x%" PRIx32,
				flags & ~(uint32_t)RDM_ATTACH_QUIESCE_OK);
	if (rdm_check_may_block("rdm_worker_attach"))
		return -EDEADLK;
	req.wb = wbackend_of(w, b);
	if (!req.wb)
		return rdm_fail(-EINVAL, "backend %s was not added to this worker", rdm_backend_name(b));
	err = rdm_region_enter(r);
	if (err)
		return err;
	if (!rdm_region_get_applier_ops(r)) {
		err = attach_first(w, r, &req, &raced);
		if (err || !raced)
			goto out;
	}
	/* Served already: the attach is a change in the region's order. */
	wr = served(r);
	if (!wr || wr->w != w)
		err = rdm_fail(-EINVAL, "the region is already served by another %s", wr ? "worker" : "applier");
	else
		err = ctl_submit(wr, RDM_OP_ATTACH, &req);
out:
	rdm_region_leave(r);
	return err;
}

int rdm_worker_detach(struct rdm_worker *w, struct rdm_region *r, struct rdm_backend *b)
{
	struct rdm_wbackend *wb;
	struct rdm_wregion *wr;
	int err;

	if (!w || !r || !b)
		return rdm_fail(-EINVAL, "rdm_worker_detach: NULL worker, region or backend");
	if (rdm_check_may_block("rdm_worker_detach"))
		return -EDEADLK;
	wb = wbackend_of(w, b);
	/* Enter first: the applier state read below lives until the region's
	 * destroy, which waits for entered callers. */
	err = rdm_region_enter(r);
	if (err)
		return err;
	wr = served(r);
	if (!wb || !wr || wr->w != w)
		err = rdm_fail(-ENOENT, "region is not attached to backend %s through this worker",
			       rdm_backend_name(b));
	else
		err = ctl_submit(wr, RDM_OP_DETACH, wb);
	rdm_region_leave(r);
	return err;
}

/* A control record (a query, a compaction) for the worker serving r, in
 * the region's order; waits for its answer. */
static int region_ctl(struct rdm_region *r, uint16_t op, void *arg, const char *what)
{
	struct rdm_wregion *wr;
	int err;

	if (rdm_check_may_block(what))
		return -EDEADLK;
	err = rdm_region_enter(r);
	if (err)
		return err;
	wr = served(r);
	if (!wr)
		err = rdm_fail(-ENOENT, "%s: the region is not attached to an IOMMU worker", what);
	else if (!check_may_wait_for(wr->w, what))
		err = ctl_submit(wr, op, arg);
	else
		err = -EDEADLK;
	rdm_region_leave(r);
	return err;
}

static int query(struct rdm_region *r, struct wquery *q, const char *what)
{
	return region_ctl(r, RDM_OP_QUERY, q, what);
}

int rdm_region_get_mappings(struct rdm_region *r, struct rdm_backend *b, struct rdm_mapping *maps, size_t cap,
			    size_t *count)
{
	struct wquery q = {.out = maps, .cap = cap};
	struct rdm_wregion *wr;
	int err;

	if (!r || !b || !count || (!maps && cap))
		return rdm_fail(-EINVAL, "rdm_region_get_mappings: NULL region, backend, count or array");
	err = rdm_region_enter(r);
	if (err)
		return err;
	wr = served(r);
	if (wr) {
		q.wb = wbackend_of(wr->w, b);
	}
	rdm_region_leave(r);
	if (!q.wb)
		return rdm_fail(-ENOENT, "rdm_region_get_mappings: the region is not attached to backend %s",
				rdm_backend_name(b));
	err = query(r, &q, "rdm_region_get_mappings");
	if (!err)
		*count = q.count;
	return err;
}

int rdm_region_get_deferred(struct rdm_region *r, struct rdm_deferred *ranges, size_t cap, size_t *count,
			    uint64_t *bytes)
{
	struct wquery q = {.deferred = true, .out = ranges, .cap = cap};
	int err;

	if (!r || !count || (!ranges && cap))
		return rdm_fail(-EINVAL, "rdm_region_get_deferred: NULL region, count or array");
	err = query(r, &q, "rdm_region_get_deferred");
	if (!err) {
		*count = q.count;
		if (bytes)
			*bytes = q.bytes;
	}
	return err;
}

int rdm_region_compact(struct rdm_region *r, struct rdm_compact_result *out)
{
	struct rdm_planner_compact_result res;
	int err;

	if (out)
		memset(out, 0, sizeof(*out));
	if (!r)
		return rdm_fail(-EINVAL, "rdm_region_compact: region is NULL");
	err = region_ctl(r, RDM_OP_COMPACT, &res, "rdm_region_compact");
	if (!err && out) {
		out->mappings = res.mappings;
		out->new_mappings = res.new_mappings;
		out->map_calls = res.map_calls;
		out->unmap_calls = res.unmap_calls;
		out->released_bytes = res.released_bytes;
		out->remapped_bytes = res.remapped_bytes;
	}
	return err;
}

int rdm_worker_flush(struct rdm_worker *w)
{
	uint32_t my, done;

	if (!w)
		return rdm_fail(-EINVAL, "rdm_worker_flush: worker is NULL");
	if (check_may_wait_for(w, "rdm_worker_flush"))
		return -EDEADLK;
	/* Seq_cst: after this thread's publications, paired with the worker's
	 * load in flush_pending(). */
	my = atomic_fetch_add_explicit(&w->flush_req, 1, memory_order_seq_cst) + 1;
	rdm_inbox_kick(&w->in);
	for (;;) {
		/* Acquire: pairs with the release store in flush_pending(). */
		done = atomic_load_explicit(&w->flush_done, memory_order_acquire);
		if ((int32_t)(done - my) >= 0)
			return 0;
		rdm_futex(&w->flush_done, FUTEX_WAIT_PRIVATE, done);
	}
}

void rdm_worker_get_stats(const struct rdm_worker *w, struct rdm_worker_stats *st)
{
	uint64_t v[RDM_WST_COUNT];

	if (!st)
		return;
	memset(st, 0, sizeof(*st));
	if (!w)
		return;
	for (int i = 0; i < RDM_WST_COUNT; i++)
		v[i] = atomic_load_explicit(&w->st[i], memory_order_relaxed);
	st->batches = v[RDM_WST_BATCHES];
	st->changes = v[RDM_WST_CHANGES];
	st->superseded = v[RDM_WST_SUPERSEDED];
	st->remapped_bytes = v[RDM_WST_REMAPPED];
	st->deferred_bytes = v[RDM_WST_DEFERRED];
	st->deferred_peak_bytes = v[RDM_WST_DEFERRED_PEAK];
	st->defer_limit_exceeded = v[RDM_WST_DEFER_EXCEEDED];
	st->defer_budget_exceeded = v[RDM_WST_BUDGET_EXCEEDED];
	st->enospc = v[RDM_WST_ENOSPC];
	st->failed_backends = v[RDM_WST_FAILED_BACKENDS];
	st->compactions = v[RDM_WST_COMPACTIONS];
	st->compact_released_bytes = v[RDM_WST_COMPACT_RELEASED];
	st->compact_remapped_bytes = v[RDM_WST_COMPACT_REMAPPED];
}
