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
 * Applying a change is rdm_region_apply(): strict checks, listeners, then
 * the region's tail listener - the IOMMU - whose callbacks run the planner
 * (planner.c) for every backend the region is attached to. Maps happen
 * inside the populate callback (a refusal rolls the populate back);
 * unmaps are queued and flushed once per batch (merged), then releases run,
 * then tickets complete, so a discard's blocks are released before it
 * completes (I2).
 *
 * Idle: when drains have found nothing for cfg.spin_us and a few
 * sched_yield() rounds, the worker sets `sleeping`, fences (seq_cst) and
 * checks every ring once more before futex_wait; producers fence after
 * publishing and wake it only if it sleeps (producer.c, C3). A ring whose
 * producer index is corrupt is logged once and ignored from then on, for
 * draining, sleeping and reaping alike. Completion: see producer.c C1/C2.
 *
 * Invariants:
 *  1. Only this thread applies changes to an attached region, in the
 *     region's sequence order, each exactly once (I6).
 *  2. Every record drained completes exactly once: with its result, or with
 *     -EINVAL when it names no live region (logged).
 *  3. Releases of a batch happen before any of its tickets complete.
 */
#include <errno.h>
#include <inttypes.h>
#include <linux/futex.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/region_internal.h"
#include "iommu/worker_internal.h"

struct item {
	struct rdm_change_rec rec;
	struct rdm_link *link;
	int result;
	bool done;
	bool superseded;
	char msg[128]; /* rdm_last_error() of a failed application */
};

struct wstate {
	struct rdm_worker *w;
	struct rdm_link **links;
	uint32_t nlinks, links_cap;
	uint32_t links_gen;
	struct item *items;
	uint32_t nitems, items_cap;
	uint64_t batch_no;
};

#define IDLE_YIELDS 32u

static pthread_mutex_t lifecycle_lock = PTHREAD_MUTEX_INITIALIZER;

void rdm_worker_kick(struct rdm_worker *w)
{
	atomic_fetch_add_explicit(&w->futex, 1, memory_order_release);
	rdm_futex(&w->futex, FUTEX_WAKE_PRIVATE, 1);
}

int rdm_worker_add_link(struct rdm_worker *w, struct rdm_link *l)
{
	pthread_mutex_lock(&w->lock);
	if (w->nlinks == w->links_cap) {
		uint32_t cap = w->links_cap ? w->links_cap * 2 : 8;
		struct rdm_link **nl = rdm_reallocarray(w->links, cap, sizeof(*nl));

		if (!nl) {
			pthread_mutex_unlock(&w->lock);
			return rdm_fail(-ENOMEM, "out of memory adding a producer ring to the worker");
		}
		w->links = nl;
		w->links_cap = cap;
	}
	w->links[w->nlinks++] = l;
	/* Release: pairs with the worker's acquire load of links_gen; the
	 * table is complete before the worker copies it (under the lock). */
	atomic_fetch_add_explicit(&w->links_gen, 1, memory_order_release);
	pthread_mutex_unlock(&w->lock);
	return 0;
}

/* ----------------------------------------------------------- completion */

/* The ticket slot a record names, or NULL if the index is out of range. */
static struct rdm_slot *slot_for(struct item *it)
{
	struct rdm_producer *p = it->link->p;
	uint32_t idx = rdm_ticket_slot(it->rec.ticket);

	return idx < p->nslots ? &p->slots[idx] : NULL;
}

static void complete_record(struct wstate *ws, struct item *it)
{
	struct rdm_producer *p = it->link->p;
	uint64_t t = it->rec.ticket;
	struct rdm_slot *s = slot_for(it);

	if (!s) {
		rdm_log(RDM_LOG_WARNING, "worker: record with ticket %" PRIu64 " names no slot; dropped", t);
		return;
	}
	if (s->cb) {
		rdm_complete_fn cb = s->cb;
		void *opaque = s->opaque;

		cb(opaque, it->result);
		/* Release: pairs with the producer's acquire in reclaim_slots(). */
		atomic_store_explicit(&s->state, SLOT_RECLAIM, memory_order_release);
		return;
	}
	s->result = it->result;
	if (it->result < 0)
		snprintf(s->msg, sizeof(s->msg), "%s", it->msg);
	/* C1. Release: pairs with the acquire in slot_done() (producer.c). */
	atomic_store_explicit(&s->done, t, memory_order_release);
	/* C2. The fence orders the store of done before the load of sleeping. */
	atomic_thread_fence(memory_order_seq_cst);
	/* Clear sleeping so only the first completion while the producer
	 * sleeps pays for FUTEX_WAKE; a wait that starts again sets it anew
	 * before its fence (C2), so no wake-up is lost. Relaxed: ordered by
	 * the fence above. */
	if (atomic_load_explicit(&p->sleeping, memory_order_relaxed) &&
	    atomic_exchange_explicit(&p->sleeping, 0, memory_order_relaxed)) {
		atomic_fetch_add_explicit(&p->futex, 1, memory_order_relaxed);
		rdm_futex(&p->futex, FUTEX_WAKE_PRIVATE, 1);
	}
	(void)ws;
}

/* -------------------------------------------------------------- the tail */

static int tail_populate(struct rdm_listener *l, uint64_t offset, uint64_t length)
{
	struct rdm_wregion *wr = l->opaque;
	uint64_t bs = wr->planner.block_size;

	return rdm_planner_populate(&wr->planner, offset / bs, length / bs);
}

static void tail_discard(struct rdm_listener *l, uint64_t offset, uint64_t length)
{
	struct rdm_wregion *wr = l->opaque;
	uint64_t bs = wr->planner.block_size;

	rdm_planner_discard(&wr->planner, offset / bs, length / bs);
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
	if (a->op != RDM_CHANGE_POPULATE && a->op != RDM_CHANGE_DISCARD)
		return true;
	if (b->op != RDM_CHANGE_POPULATE && b->op != RDM_CHANGE_DISCARD)
		return true;
	return a->offset < b->offset + b->length && b->offset < a->offset + a->length;
}

/* Find a later discard of exactly this populate's range, with nothing of the
 * same region touching it in between; index or -1. items[i..] are in order. */
static int find_cancelling_discard(struct wstate *ws, uint32_t i, uint32_t end)
{
	const struct rdm_change_rec *p = &ws->items[i].rec;

	for (uint32_t j = i + 1; j < end; j++) {
		const struct rdm_change_rec *q = &ws->items[j].rec;

		if (q->region != p->region)
			continue;
		if (q->op == RDM_CHANGE_DISCARD && q->offset == p->offset && q->length == p->length)
			return (int)j;
		if (overlaps(p, q))
			return -1;
	}
	return -1;
}

static void apply_control(struct rdm_worker *w, struct rdm_wregion *wr, struct item *it)
{
	struct rdm_slot *s = slot_for(it);
	void *ctl = s ? s->ctl : NULL;

	switch (it->rec.op) {
	case RDM_CTL_ATTACH: {
		struct rdm_wbackend *wb = ctl;
		bool dup = false;

		for (uint32_t i = 0; i < wr->planner.nbe; i++)
			dup |= wr->planner.be[i] == wb;
		if (dup) {
			it->result = rdm_fail(-EEXIST, "region is already attached to backend %s",
					      rdm_backend_name(wb->b));
			break;
		}
		it->result = rdm_planner_attach(&wr->planner, wb);
		if (it->result == 0 && !wr->tail_installed) {
			rdm_region_set_tail_listener(wr->r, &wr->tail);
			wr->tail_installed = true;
		}
		break;
	}
	case RDM_CTL_DETACH:
		it->result = rdm_planner_detach(&wr->planner, ctl);
		break;
	case RDM_CTL_REGISTER:
		it->result = rdm_region_apply(wr->r, RDM_OP_REGISTER, 0, 0, ctl);
		break;
	case RDM_CTL_UNREGISTER:
		it->result = rdm_region_apply(wr->r, RDM_OP_UNREGISTER, 0, 0, ctl);
		break;
	case RDM_CTL_DESTROY:
		rdm_planner_teardown(&wr->planner);
		if (wr->tail_installed)
			rdm_region_set_tail_listener(wr->r, NULL);
		wr->tail_installed = false;
		pthread_mutex_lock(&w->lock);
		w->regions[wr->id] = NULL;
		pthread_mutex_unlock(&w->lock);
		it->result = 0;
		break;
	default:
		it->result = rdm_fail(-EINVAL, "unknown control op %u", it->rec.op);
	}
}

static void apply_item(struct wstate *ws, struct rdm_wregion *wr, struct item *it)
{
	const struct rdm_change_rec *rec = &it->rec;

	/* Records are plain integers that may one day come from another
	 * process: check the range again rather than trust the submitter. */
	if (rec->op == RDM_CHANGE_POPULATE || rec->op == RDM_CHANGE_DISCARD) {
		it->result = rdm_region_check_range(wr->r, rec->offset, rec->length);
		if (it->result)
			return;
	}
	switch (rec->op) {
	case RDM_CHANGE_POPULATE:
		/* A discard the tail is told meanwhile is this populate's rollback. */
		rdm_planner_populate_begin(&wr->planner);
		it->result = rdm_region_apply(wr->r, RDM_OP_POPULATE, rec->offset, rec->length, NULL);
		rdm_planner_populate_end(&wr->planner);
		break;
	case RDM_CHANGE_DISCARD:
		it->result = rdm_region_apply(wr->r, RDM_OP_DISCARD, rec->offset, rec->length, NULL);
		break;
	case RDM_CHANGE_DISCARD_ALL:
		it->result = rdm_region_apply(wr->r, RDM_OP_DISCARD_ALL, 0, 0, NULL);
		break;
	default:
		apply_control(ws->w, wr, it);
	}
}

static int cmp_item(const void *a, const void *b)
{
	const struct item *x = a, *y = b;

	if (x->rec.region != y->rec.region)
		return x->rec.region < y->rec.region ? -1 : 1;
	return x->rec.seq < y->rec.seq ? -1 : x->rec.seq > y->rec.seq;
}

/* Is items[0..n) already in (region, sequence) order? It usually is (one
 * producer, or producers on different regions drained in turn), and then
 * the sort, which moves whole items, is skipped. */
static bool items_sorted(const struct item *items, uint32_t n)
{
	for (uint32_t i = 1; i < n; i++)
		if (cmp_item(&items[i - 1], &items[i]) > 0)
			return false;
	return true;
}

static void publish_stats(struct rdm_worker *w)
{
	for (int i = 0; i < RDM_WST_COUNT; i++)
		atomic_store_explicit(&w->st[i], w->priv[i], memory_order_relaxed);
}

static void process(struct wstate *ws, uint32_t fresh)
{
	struct rdm_worker *w = ws->w;
	uint32_t n = ws->nitems;

	if (!items_sorted(ws->items, n))
		qsort(ws->items, n, sizeof(ws->items[0]), cmp_item);
	for (uint32_t i = 0; i < n;) {
		uint32_t id = ws->items[i].rec.region, end = i;
		struct rdm_wregion *wr = region_of(w, id);

		/* Only a populate before the group's last discard (i if none)
		 * can be superseded: the others need no search. */
		uint32_t last_discard = i;

		while (end < n && ws->items[end].rec.region == id) {
			if (ws->items[end].rec.op == RDM_CHANGE_DISCARD)
				last_discard = end;
			end++;
		}
		if (!wr) {
			for (uint32_t k = i; k < end; k++) {
				ws->items[k].result = rdm_fail(-EINVAL, "record names region %" PRIu32
								       " which the worker does not serve", id);
				snprintf(ws->items[k].msg, sizeof(ws->items[k].msg), "%s", rdm_last_error());
				rdm_log(RDM_LOG_WARNING, "worker: %s", rdm_last_error());
				ws->items[k].done = true;
			}
			i = end;
			continue;
		}
		for (uint32_t k = i; k < end; k++) {
			struct item *it = &ws->items[k];

			if (it->rec.seq != wr->apply_seq)
				break; /* a gap: the rest waits for the missing number */
			wr->apply_seq++;
			it->done = true;
			w->priv[RDM_WST_CHANGES]++;
			if (it->superseded)
				continue;
			if (it->rec.op == RDM_CHANGE_POPULATE && k < last_discard) {
				int j = find_cancelling_discard(ws, k, end);

				if (j >= 0 && ws->items[j].rec.seq == wr->apply_seq + (uint64_t)(j - (int)k - 1) &&
				    rdm_is_discarded(wr->r, it->rec.offset, it->rec.length)) {
					/* Contiguous numbers up to j are in this batch,
					 * so the discard will be applied in it. */
					it->result = 0;
					ws->items[j].superseded = true;
					ws->items[j].result = 0;
					w->priv[RDM_WST_SUPERSEDED] += 2;
					continue;
				}
			}
			apply_item(ws, wr, it);
			if (it->result < 0)
				snprintf(it->msg, sizeof(it->msg), "%s", rdm_last_error());
			if (it->rec.op == RDM_CTL_DESTROY)
				break;
		}
		rdm_planner_flush(&wr->planner);
		rdm_region_retire_flush(wr->r);
		i = end;
	}
	/* Stats first, so a caller woken by its ticket sees its change counted. */
	w->priv[RDM_WST_BATCHES]++;
	publish_stats(w);
	/* Complete what was applied, keep the rest (in order) for later. */
	uint32_t keep = 0;

	for (uint32_t i = 0; i < n; i++) {
		struct item *it = &ws->items[i];

		if (it->done)
			complete_record(ws, it);
		else
			ws->items[keep++] = *it;
	}
	ws->nitems = keep;
	ws->batch_no++;
	if (w->cfg.on_batch)
		w->cfg.on_batch(w->cfg.on_batch_opaque, ws->batch_no, fresh);
}

static void refresh_links(struct wstate *ws)
{
	struct rdm_worker *w = ws->w;
	/* Acquire: pairs with the release increment in rdm_worker_add_link. */
	uint32_t gen = atomic_load_explicit(&w->links_gen, memory_order_acquire);

	if (gen == ws->links_gen)
		return;
	pthread_mutex_lock(&w->lock);
	if (ws->links_cap < w->nlinks) {
		rdm_free(ws->links);
		ws->links = rdm_malloc(w->links_cap * sizeof(*ws->links));
		ws->links_cap = ws->links ? w->links_cap : 0;
	}
	if (ws->links) {
		memcpy(ws->links, w->links, w->nlinks * sizeof(*ws->links));
		ws->nlinks = w->nlinks;
	}
	ws->links_gen = gen;
	pthread_mutex_unlock(&w->lock);
}

/* Drop links whose producer closed them and whose ring is drained. */
static void reap_links(struct wstate *ws)
{
	struct rdm_worker *w = ws->w;
	bool changed = false;

	for (uint32_t i = 0; i < ws->nlinks; i++) {
		struct rdm_link *l = ws->links[i];

		/* Acquire: pairs with the release store in rdm_producer_destroy. */
		if (!atomic_load_explicit(&l->closed, memory_order_acquire) ||
		    (!l->broken && !rdm_ring_empty(l->ring)))
			continue;
		pthread_mutex_lock(&w->lock);
		for (uint32_t k = 0; k < w->nlinks; k++)
			if (w->links[k] == l) {
				w->links[k] = w->links[--w->nlinks];
				break;
			}
		atomic_fetch_add_explicit(&w->links_gen, 1, memory_order_release);
		pthread_mutex_unlock(&w->lock);
		rdm_ring_destroy(l->ring);
		rdm_producer_put(l->p);
		rdm_free(l);
		changed = true;
	}
	if (changed)
		refresh_links(ws);
}

static bool all_empty(struct wstate *ws)
{
	for (uint32_t i = 0; i < ws->nlinks; i++)
		if (!ws->links[i]->broken && !rdm_ring_empty(ws->links[i]->ring))
			return false;
	return true;
}

static uint32_t drain(struct wstate *ws)
{
	uint32_t max = ws->w->cfg.max_batch, got = 0;
	/* Padded like producer.c's rec_buf: the ring's copy helper may use
	 * a 64-byte move for the last record. */
	struct rdm_change_rec recs[64 + 2];

	if (ws->items_cap < ws->nitems + max) {
		uint32_t cap = ws->nitems + max;
		struct item *ni = rdm_reallocarray(ws->items, cap, sizeof(*ni));

		if (!ni)
			return 0;
		ws->items = ni;
		ws->items_cap = cap;
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

static void idle(struct wstate *ws)
{
	struct rdm_worker *w = ws->w;
	uint32_t seen = atomic_load_explicit(&w->futex, memory_order_relaxed);

	atomic_store_explicit(&w->sleeping, 1, memory_order_relaxed);
	/* C3: pairs with kick_after_publish() in producer.c. */
	atomic_thread_fence(memory_order_seq_cst);
	if (all_empty(ws) && !atomic_load_explicit(&w->stop, memory_order_relaxed) &&
	    atomic_load_explicit(&w->links_gen, memory_order_relaxed) == ws->links_gen)
		rdm_futex(&w->futex, FUTEX_WAIT_PRIVATE, seen);
	atomic_store_explicit(&w->sleeping, 0, memory_order_relaxed);
}

static void *worker_main(void *arg)
{
	struct wstate ws = {.w = arg};
	struct rdm_worker *w = arg;
	unsigned spins = 0;
	uint64_t idle_since = 0;

	for (;;) {
		refresh_links(&ws);
		uint32_t got = drain(&ws);

		if (got) {
			spins = 0;
			idle_since = 0;
			process(&ws, got);
			continue;
		}
		if (atomic_load_explicit(&w->stop, memory_order_acquire))
			break;
		reap_links(&ws);
		/* Poll for spin_us (the clock is read every 64 rounds), then
		 * yield a few times (see wait_slot() in producer.c), then sleep. */
		if (++spins % 64 == 0 || idle_since == 0) {
			uint64_t now = rdm_now_ns();

			if (idle_since == 0)
				idle_since = now;
			if (now - idle_since < (uint64_t)w->cfg.spin_us * 1000u) {
				spins = 1;
				continue;
			}
		} else {
			rdm_cpu_relax();
			continue;
		}
		if (spins < 64 + IDLE_YIELDS) {
			sched_yield();
			continue;
		}
		spins = 0;
		idle_since = 0;
		idle(&ws);
	}
	rdm_free(ws.items);
	rdm_free(ws.links);
	return NULL;
}

/* ----------------------------------------------------------- public API */

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
	if (!c.spin_us)
		c.spin_us = RDM_WORKER_DEFAULT_SPIN_US;
	if (c.ring_capacity & (c.ring_capacity - 1))
		return rdm_fail(-EINVAL, "ring_capacity %" PRIu32 " is not a power of two", c.ring_capacity);
	w = rdm_calloc(1, sizeof(*w));
	if (!w)
		return rdm_fail(-ENOMEM, "out of memory creating a worker");
	w->cfg = c;
	pthread_mutex_init(&w->lock, NULL);
	err = pthread_create(&w->thread, NULL, worker_main, w);
	if (err) {
		pthread_mutex_destroy(&w->lock);
		rdm_free(w);
		return rdm_fail(-err, "cannot start the worker thread: %s", strerror(err));
	}
	*out = w;
	return 0;
}

int rdm_worker_destroy(struct rdm_worker *w)
{
	if (!w)
		return rdm_fail(-EINVAL, "rdm_worker_destroy: worker is NULL");
	pthread_mutex_lock(&w->lock);
	for (uint32_t i = 0; i < w->nregions; i++)
		if (w->regions[i]) {
			pthread_mutex_unlock(&w->lock);
			return rdm_fail(-EBUSY, "worker still serves region %" PRIu32 "; destroy it first", i);
		}
	pthread_mutex_unlock(&w->lock);
	/* Release: pairs with the worker's acquire load of stop. */
	atomic_store_explicit(&w->stop, true, memory_order_release);
	rdm_worker_kick(w);
	pthread_join(w->thread, NULL);
	pthread_mutex_lock(&lifecycle_lock);
	for (uint32_t i = 0; i < w->nlinks; i++) {
		struct rdm_link *l = w->links[i];

		/* Acquire: pairs with the release store in close_links. */
		if (atomic_load_explicit(&l->closed, memory_order_acquire)) {
			rdm_ring_destroy(l->ring);
			rdm_producer_put(l->p);
			rdm_free(l);
		} else {
			/* The producer still holds l: it frees it when it closes
			 * or prunes. */
			atomic_store_explicit(&l->w, NULL, memory_order_relaxed);
			rdm_producer_put(l->p);
		}
	}
	pthread_mutex_unlock(&lifecycle_lock);
	for (uint32_t i = 0; i < w->nbackends; i++)
		rdm_free(w->backends[i]);
	rdm_free(w->links);
	rdm_free(w->regions);
	pthread_mutex_destroy(&w->lock);
	rdm_free(w);
	return 0;
}

static struct rdm_wbackend *wbackend_of(struct rdm_worker *w, struct rdm_backend *b)
{
	for (uint32_t i = 0; i < w->nbackends; i++)
		if (w->backends[i]->b == b)
			return w->backends[i];
	return NULL;
}

int rdm_worker_add_backend(struct rdm_worker *w, struct rdm_backend *b, uint64_t budget)
{
	struct rdm_wbackend *wb;
	uint64_t avail = UINT64_MAX;
	int err;

	if (!w || !b)
		return rdm_fail(-EINVAL, "rdm_worker_add_backend: NULL worker or backend");
	err = rdm_backend_dma_avail(b, &avail);
	if (err)
		return err;
	pthread_mutex_lock(&w->lock);
	if (wbackend_of(w, b)) {
		pthread_mutex_unlock(&w->lock);
		return rdm_fail(-EEXIST, "backend %s was already added to this worker", rdm_backend_name(b));
	}
	if (w->nbackends == RDM_WORKER_MAX_BACKENDS) {
		pthread_mutex_unlock(&w->lock);
		return rdm_fail(-EINVAL, "a worker serves at most %d backends", RDM_WORKER_MAX_BACKENDS);
	}
	wb = rdm_calloc(1, sizeof(*wb));
	if (!wb) {
		pthread_mutex_unlock(&w->lock);
		return rdm_fail(-ENOMEM, "out of memory adding a backend");
	}
	wb->b = b;
	rdm_backend_get_caps(b, &wb->caps);
	wb->budget = budget && budget < avail ? budget : avail;
	w->backends[w->nbackends++] = wb;
	pthread_mutex_unlock(&w->lock);
	return 0;
}

static int applier_submit(void *ctx, struct rdm_region *r, enum rdm_apply_op op, uint64_t offset, uint64_t length,
			  struct rdm_listener *l)
{
	struct rdm_wregion *wr = ctx;
	struct rdm_producer *p = rdm_producer_implicit();
	uint16_t rop;

	(void)r;
	if (!p)
		return rdm_fail(-ENOMEM, "out of memory creating this thread's producer");
	switch (op) {
	case RDM_OP_POPULATE: rop = RDM_CHANGE_POPULATE; break;
	case RDM_OP_DISCARD: rop = RDM_CHANGE_DISCARD; break;
	case RDM_OP_DISCARD_ALL: rop = RDM_CHANGE_DISCARD_ALL; break;
	case RDM_OP_REGISTER: rop = RDM_CTL_REGISTER; break;
	case RDM_OP_UNREGISTER: rop = RDM_CTL_UNREGISTER; break;
	default: return rdm_fail(-EINVAL, "unknown change op %d", (int)op);
	}
	return rdm_producer_submit_one(p, wr, rop, offset, length, l, true, NULL, NULL, NULL);
}

static void applier_destroy(void *ctx, struct rdm_region *r)
{
	struct rdm_wregion *wr = ctx;
	struct rdm_producer *p = rdm_producer_implicit();

	(void)r;
	if (p)
		rdm_producer_submit_one(p, wr, RDM_CTL_DESTROY, 0, 0, NULL, true, NULL, NULL, NULL);
	rdm_planner_fini(&wr->planner);
	pthread_mutex_destroy(&wr->submit_lock);
	rdm_free(wr);
}

const struct rdm_applier_ops rdm_worker_applier_ops = {
	.submit = applier_submit,
	.destroy = applier_destroy,
};

static int new_wregion(struct rdm_worker *w, struct rdm_region *r, struct rdm_wregion **out)
{
	struct rdm_wregion *wr = rdm_calloc(1, sizeof(*wr));
	uint32_t id;

	if (!wr)
		return rdm_fail(-ENOMEM, "out of memory attaching a region");
	wr->r = r;
	wr->w = w;
	pthread_mutex_init(&wr->submit_lock, NULL);
	rdm_planner_init(&wr->planner, r);
	wr->planner.stat_remapped_bytes = &w->priv[RDM_WST_REMAPPED];
	wr->planner.stat_deferred_bytes = &w->priv[RDM_WST_DEFERRED];
	wr->planner.stat_deferred_peak = &w->priv[RDM_WST_DEFERRED_PEAK];
	wr->planner.stat_defer_exceeded = &w->priv[RDM_WST_DEFER_EXCEEDED];
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
				rdm_free(wr);
				return rdm_fail(-ENOMEM, "out of memory attaching a region");
			}
			w->regions = nr;
			w->regions_cap = cap;
		}
		w->nregions++;
	}
	wr->id = id;
	w->regions[id] = wr;
	pthread_mutex_unlock(&w->lock);
	*out = wr;
	return 0;
}

static int attach_entered(struct rdm_worker *w, struct rdm_region *r, struct rdm_wbackend *wb);

int rdm_worker_attach(struct rdm_worker *w, struct rdm_region *r, struct rdm_backend *b)
{
	struct rdm_wbackend *wb;
	int err;

	if (!w || !r || !b)
		return rdm_fail(-EINVAL, "rdm_worker_attach: NULL worker, region or backend");
	pthread_mutex_lock(&w->lock);
	wb = wbackend_of(w, b);
	pthread_mutex_unlock(&w->lock);
	if (!wb)
		return rdm_fail(-EINVAL, "backend %s was not added to this worker", rdm_backend_name(b));
	err = rdm_region_enter(r);
	if (err)
		return err;
	err = attach_entered(w, r, wb);
	rdm_region_leave(r);
	return err;
}

static int attach_entered(struct rdm_worker *w, struct rdm_region *r, struct rdm_wbackend *wb)
{
	struct rdm_wregion *wr = NULL;
	struct rdm_producer *p;
	int err;
	const struct rdm_applier_ops *ops = rdm_region_get_applier_ops(r);

	if (ops && (ops != &rdm_worker_applier_ops || ((struct rdm_wregion *)rdm_region_get_applier_ctx(r))->w != w))
		return rdm_fail(-EINVAL, "region is already served by another applier");
	if (!ops) {
		struct rdm_planner probe;

		rdm_planner_init(&probe, r);
		err = rdm_planner_check_backend(&probe, wb);
		rdm_planner_fini(&probe);
		if (err)
			return err;
		err = new_wregion(w, r, &wr);
		if (err)
			return err;
		err = rdm_region_set_applier(r, &rdm_worker_applier_ops, wr);
		if (err) {
			pthread_mutex_lock(&w->lock);
			w->regions[wr->id] = NULL;
			pthread_mutex_unlock(&w->lock);
			rdm_planner_fini(&wr->planner);
			pthread_mutex_destroy(&wr->submit_lock);
			rdm_free(wr);
			return err;
		}
	} else {
		wr = rdm_region_get_applier_ctx(r);
	}
	p = rdm_producer_implicit();
	if (!p)
		return rdm_fail(-ENOMEM, "out of memory creating this thread's producer");
	return rdm_producer_submit_one(p, wr, RDM_CTL_ATTACH, 0, 0, wb, true, NULL, NULL, NULL);
}

int rdm_worker_detach(struct rdm_worker *w, struct rdm_region *r, struct rdm_backend *b)
{
	struct rdm_wbackend *wb;
	struct rdm_producer *p;
	int err;

	if (!w || !r || !b)
		return rdm_fail(-EINVAL, "rdm_worker_detach: NULL worker, region or backend");
	pthread_mutex_lock(&w->lock);
	wb = wbackend_of(w, b);
	pthread_mutex_unlock(&w->lock);
	if (!wb || rdm_region_get_applier_ops(r) != &rdm_worker_applier_ops ||
	    ((struct rdm_wregion *)rdm_region_get_applier_ctx(r))->w != w)
		return rdm_fail(-ENOENT, "region is not attached to backend %s through this worker",
				rdm_backend_name(b));
	p = rdm_producer_implicit();
	if (!p)
		return rdm_fail(-ENOMEM, "out of memory creating this thread's producer");
	err = rdm_region_enter(r);
	if (err)
		return err;
	err = rdm_producer_submit_one(p, rdm_region_get_applier_ctx(r), RDM_CTL_DETACH, 0, 0, wb, true, NULL,
				      NULL, NULL);
	rdm_region_leave(r);
	return err;
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
	st->enospc = v[RDM_WST_ENOSPC];
	st->failed_backends = v[RDM_WST_FAILED_BACKENDS];
}

void rdm_producer_close_links(struct rdm_producer *p)
{
	/* lifecycle_lock keeps a worker from being freed between reading l->w
	 * and kicking it (rdm_worker_destroy clears l->w under it). */
	pthread_mutex_lock(&lifecycle_lock);
	for (uint32_t i = 0; i < p->nlinks; i++) {
		struct rdm_link *l = p->links[i];
		struct rdm_worker *w = atomic_load_explicit(&l->w, memory_order_relaxed);

		if (!w) {
			/* The worker is gone (it dropped the link's reference):
			 * nobody else holds the link. */
			rdm_ring_destroy(l->ring);
			rdm_free(l);
			continue;
		}
		/* Release: pairs with the worker's acquire load of closed in
		 * reap_links(); the worker frees the link and drops its ref. */
		atomic_store_explicit(&l->closed, true, memory_order_release);
		rdm_worker_kick(w);
	}
	pthread_mutex_unlock(&lifecycle_lock);
}

void rdm_producer_prune_links(struct rdm_producer *p)
{
	uint32_t keep = 0;

	pthread_mutex_lock(&lifecycle_lock);
	for (uint32_t i = 0; i < p->nlinks; i++) {
		struct rdm_link *l = p->links[i];

		if (atomic_load_explicit(&l->w, memory_order_relaxed)) {
			p->links[keep++] = l;
			continue;
		}
		/* Its worker was destroyed and dropped the link's reference. */
		rdm_ring_destroy(l->ring);
		rdm_free(l);
	}
	p->nlinks = keep;
	pthread_mutex_unlock(&lifecycle_lock);
}
