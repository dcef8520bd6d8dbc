/* SPDX-License-Identifier: MIT */
/*
 * rdm/worker.h - the IOMMU worker, producers and tickets.
 *
 * A worker is a thread that applies the changes of the regions attached to
 * it: it drains its producers' SPSC rings in batches, orders each region's
 * changes by sequence number, drops populate+discard pairs that cancel within
 * a batch, plans the fewest map/unmap calls its backends' rules allow,
 * executes them, calls release callbacks and completes tickets.
 *
 * Once a region is attached, the worker is its only applier: rdm_populate()
 * and friends (rdm/region.h) become synchronous submissions through the
 * calling thread's implicit producer, and the asynchronous calls below
 * become available.
 *
 * Concurrency:
 *
 *   call                               thread
 *   ---------------------------------  ------------------------------------
 *   rdm_worker_create/destroy          any; destroy only after every region
 *                                      attached to it was destroyed or detached
 *   rdm_worker_add_backend, attach,    any thread that is not the worker
 *   detach
 *   rdm_producer_create/destroy        the producer's owner thread
 *   rdm_producer_* submits, wait, poll the producer's owner thread only
 *   completion callbacks               run on the worker thread; must not
 *                                      block on rdm
 *   rdm_worker_get_stats               any
 */
#ifndef RDM_WORKER_H
#define RDM_WORKER_H

#include <stdbool.h>
#include <stdint.h>

#include <rdm/backend.h>
#include <rdm/common.h>
#include <rdm/region.h>
#include <rdm/ring.h>

#ifdef __cplusplus
extern "C" {
#endif

struct rdm_worker;   /* opaque */
struct rdm_producer; /* opaque */

/* How long an idle worker, and a producer waiting for a ticket, poll before
 * they yield and then sleep on a futex. Polling costs a core while it lasts;
 * a sleep costs a futex wake (a system call and a scheduler round trip) on
 * the other side. */
#define RDM_WORKER_DEFAULT_SPIN_US 50u

struct rdm_worker_config {
	uint32_t struct_size;
	uint32_t ring_capacity; /* records per producer ring; power of two; default 1024 */
	uint32_t max_batch;     /* records drained per batch; default 256 */
	uint32_t ticket_slots;  /* per producer; power of two; default 1024 */
	uint32_t spin_us;       /* idle: poll the rings this long before sleeping;
	                           default RDM_WORKER_DEFAULT_SPIN_US */
	uint32_t reserved;
	/* Called on the worker thread after every batch, once the batch's
	 * tickets are complete (tests check invariants here). */
	void (*on_batch)(void *opaque, uint64_t batch_no, uint32_t changes);
	void *on_batch_opaque;
};

/* Start a worker thread. 0, -EINVAL (bad config), -ENOMEM or -EAGAIN (thread). */
RDM_API int rdm_worker_create(const struct rdm_worker_config *cfg, struct rdm_worker **out);

/* Stop and free. 0, -EINVAL (NULL), -EBUSY (a region is still attached). */
RDM_API int rdm_worker_destroy(struct rdm_worker *w);

/*
 * Serve backend b. budget: the most mappings rdm may hold in it; 0 means
 * what the backend reports remaining now (rdm_backend_dma_avail) — a
 * non-zero budget is clipped to that too. 0, -EINVAL, -EEXIST (already added).
 */
RDM_API int rdm_worker_add_backend(struct rdm_worker *w, struct rdm_backend *b, uint64_t budget);

/*
 * Attach region r to backend b through worker w (b must have been added).
 * The first attach makes w the region's applier; a region has one worker.
 * The attach is a change applied in the region's order: every populated
 * block is mapped in b before it returns.
 * 0, -EINVAL (NULL, b not added to w, region attached to another worker,
 * policy not usable on this backend: coalesce needs RDM_REGION_ALLOW_WINDOWS
 * or a split-capable backend), -EEXIST (already attached to b), -ENOSPC,
 * -EIO, -ECANCELED, or the backend's error.
 */
RDM_API int rdm_worker_attach(struct rdm_worker *w, struct rdm_region *r, struct rdm_backend *b);

/*
 * Detach: a change in the region's order; rdm's mappings of r in b are
 * unmapped. The region stays with its worker (applier) even with no backend.
 * 0, -EINVAL, -ENOENT (not attached), -ECANCELED.
 */
RDM_API int rdm_worker_detach(struct rdm_worker *w, struct rdm_region *r, struct rdm_backend *b);

struct rdm_worker_stats {
	uint64_t batches;
	uint64_t changes;          /* records applied (superseded ones included) */
	uint64_t superseded;       /* records completed without any call */
	uint64_t remapped_bytes;   /* bytes unmapped and mapped again (DMA windows) */
	uint64_t deferred_bytes;   /* current: discarded, still mapped, not released */
	uint64_t deferred_peak_bytes;
	uint64_t defer_limit_exceeded; /* times a region's defer_limit was passed without a split */
	uint64_t enospc;           /* populates refused for the mapping limit */
	uint64_t failed_backends;  /* backends marked failed */
};
RDM_API void rdm_worker_get_stats(const struct rdm_worker *w, struct rdm_worker_stats *st);

/* ------------------------------------------------------------ producers */

/*
 * A producer belongs to the thread that creates it; it owns one ring to each
 * worker it uses (created on first use) and its tickets. Threads that only
 * call the synchronous rdm_populate() etc. get an implicit producer.
 */
RDM_API int rdm_producer_create(struct rdm_producer **out);

/* Waits for every change it submitted to complete, then frees. */
RDM_API void rdm_producer_destroy(struct rdm_producer *p);

typedef void (*rdm_complete_fn)(void *opaque, int result);

struct rdm_change {
	struct rdm_region *region;
	uint32_t kind;        /* enum rdm_change_op (rdm/ring.h): RDM_CHANGE_* */
	uint32_t reserved;
	uint64_t offset;
	uint64_t length;      /* ignored for discard_all */
	rdm_complete_fn done; /* NULL: the change gets a ticket instead */
	void *opaque;
};

/*
 * Submit n changes asynchronously, published together at the end (one
 * release store per ring). Each change gets either its callback or a ticket
 * (tickets[i], which must be non-NULL then). All or nothing: on failure none
 * was submitted. 0, -EINVAL/-ERANGE (argument errors, message names the
 * index), -EAGAIN (ring full or all ticket slots held), -ECANCELED.
 */
RDM_API int rdm_producer_submit(struct rdm_producer *p, const struct rdm_change *changes, unsigned n,
				uint64_t *tickets);

/* Single-change conveniences of rdm_producer_submit (ticket form). */
RDM_API int rdm_producer_populate(struct rdm_producer *p, struct rdm_region *r, uint64_t offset,
				  uint64_t length, uint64_t *ticket);
RDM_API int rdm_producer_discard(struct rdm_producer *p, struct rdm_region *r, uint64_t offset,
				 uint64_t length, uint64_t *ticket);

/*
 * Wait for a ticket (spin briefly, then sleep on a futex) and consume it:
 * *result gets the change's result (0 or a negative errno). Returns 0, or
 * -EINVAL (not an outstanding ticket of this producer).
 */
RDM_API int rdm_producer_wait(struct rdm_producer *p, uint64_t ticket, int *result);

/* Like wait, but returns -EINPROGRESS at once if not yet complete. */
RDM_API int rdm_producer_poll(struct rdm_producer *p, uint64_t ticket, int *result);

#ifdef __cplusplus
}
#endif

#endif /* RDM_WORKER_H */
