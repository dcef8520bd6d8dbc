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
 *   rdm_worker_create                  any
 *   rdm_worker_destroy                 any but the worker's; -EBUSY while a
 *                                      region it serves exists (destroy the
 *                                      regions first); no other call on the
 *                                      same worker may run concurrently
 *   rdm_worker_add_backend, attach,    any thread that is not the worker;
 *   detach, flush, get_mappings,       concurrently with each other and with
 *   get_deferred, rdm_region_compact   changes
 *   rdm_producer_create/destroy        the producer's owner thread
 *   rdm_producer_* submits, wait, poll the producer's owner thread only
 *   completion callbacks, on_batch     run on the worker thread (see below;
 *                                      RDM_WORKER_CALLER_RUNS: or on a
 *                                      synchronous caller's)
 *   rdm_worker_get_stats, get_config   any
 *
 * Lifetimes (every order is defined):
 *   - region vs worker: a region attached to a worker is served by it until
 *     the region is destroyed (detaching every backend keeps it served);
 *     the worker's destroy returns -EBUSY until then. Destroying the region
 *     first is always right.
 *   - producer vs worker and region: a producer may outlive both. Its
 *     changes to a region being destroyed are refused with -ECANCELED; its
 *     ring to a destroyed worker is freed when the producer next submits or
 *     is destroyed. A producer's destroy waits for its changes in flight.
 *   - backend vs worker: a backend added to a worker must outlive it
 *     (rdm_backend_destroy() after rdm_worker_destroy()). A backend is
 *     served by one worker at a time (-EEXIST for a second).
 *
 * Failed backends: an unmap that fails twice, or a window's remap of a split
 * mapping's survivors that fails twice, marks the backend failed (sticky,
 * logged, counted in failed_backends): later populates on it fail with
 * -EIO, and what it may still map is never released (the region keeps
 * that record for its lifetime, whoever applies its changes later). Its
 * mappings are then no longer promised to match the region (a failed remap
 * leaves survivors unmapped there); detach it, and attach a fresh backend
 * to map the region again. No call that could add a mapping goes to it
 * any more (its count may hold mappings a failed unmap left): a region
 * with a failed backend defers a discard inside a mapping instead of
 * splitting it (counted in defer_limit_exceeded) and unmaps the mapping
 * whole once its last block is discarded. An unmap that failed while
 * splitting a mapping on a split-capable backend leaves that whole mapping
 * there: all of it stays pinned, and that backend gets no unmap inside it
 * (one could bisect it, adding a mapping).
 *
 * Callbacks (listener, release, replay, completion callbacks, on_batch, the
 * log handler) must not make changes or wait on rdm: every call that could
 * (changes, register/unregister, attach/detach, flush, queries of IOMMU
 * state, destroy, rdm_producer_submit/wait/destroy) returns -EDEADLK there,
 * with a message, and does nothing; the region queries (rdm_is_populated
 * etc.) and rdm_producer_poll are allowed. The same -EDEADLK is returned
 * inside the caller's own urcu-bp read-side critical section.
 */
#ifndef RDM_WORKER_H
#define RDM_WORKER_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
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

/* The most an idle worker, and a producer waiting for a ticket, poll before
 * they sleep on a futex. Within it each side polls for a budget adapted to
 * how long its recent waits and its wake-ups from a sleep took (at least
 * one wake-up; one alone when waits are longer than two), yielding every
 * few us, and not at all when the other side runs on the same CPU: polling
 * costs a core while it lasts; a sleep costs a futex wake and, when the
 * other side's CPU went idle, that CPU's wake-up (80-250 us measured on VMs
 * whose idle vCPUs halt, a few us on bare metal). A bound, not the usual
 * spin: it must be above the host's wake-up time, or waits across CPUs
 * lock into sleeping. */
#define RDM_WORKER_DEFAULT_SPIN_US 1000u

struct rdm_worker_config {
	uint32_t struct_size;
	uint32_t ring_capacity; /* records per producer ring; power of two; default 1024 */
	uint32_t max_batch;     /* records drained per batch; default 256 */
	/* The most tickets one producer may hold towards this worker: changes
	 * submitted with a ticket (not a callback) and not yet consumed by
	 * wait/poll, plus callbacks not yet run. Past it, asynchronous submits
	 * get -EAGAIN. Power of two, at most 1024 (a producer's own total);
	 * default 1024. */
	uint32_t ticket_slots;
	uint32_t spin_us;       /* idle: poll the rings at most this long before
	                           sleeping (see RDM_WORKER_DEFAULT_SPIN_US); also
	                           caps a ticket wait's polling; default
	                           RDM_WORKER_DEFAULT_SPIN_US */
	uint32_t reserved;      /* must be 0 */
	/* Called on the worker thread after every batch, once the batch's
	 * tickets are complete (tests check invariants here); with
	 * RDM_WORKER_CALLER_RUNS, on the thread that ran the batch. */
	void (*on_batch)(void *opaque, uint64_t batch_no, uint32_t changes);
	void *on_batch_opaque;
	uint32_t flags;         /* RDM_WORKER_* */
	int32_t numa_node;      /* with RDM_WORKER_NUMA_NODE (rdm/numa.h) */
};

/* rdm_worker_config.flags */
enum {
	/* numa_node is meaningful (a device's: rdm_numa_node_of_pci()); without
	 * it the worker's node is the creating thread's. A node that does not
	 * exist, has no memory, or has no CPU in the process's cpuset is
	 * -EINVAL... */
	RDM_WORKER_NUMA_NODE = 1u << 0,
	/* ...unless this is set too: then the creating thread's node, and
	 * rdm_worker_get_placement() reports the fallback. */
	RDM_WORKER_NUMA_PREFERRED = 1u << 1,
	/* Do not pin the worker thread to its node's CPUs (it keeps the
	 * creating thread's affinity). */
	RDM_WORKER_NO_PIN = 1u << 2,
	/*
	 * A synchronous change (rdm_populate() and friends through a worker;
	 * rdm_producer_wait()) that finds the worker thread idle runs the
	 * worker's pass itself, on the calling thread,
	 * instead of waking the worker and waiting for it: no handoff, so its
	 * latency does not depend on how soon the scheduler runs two threads
	 * on a busy host. The pass is the worker's (every ring is drained,
	 * other producers' changes included, in the same order, under the same
	 * rules); only one pass runs at a time. What changes: listener,
	 * release and completion callbacks and on_batch may then run on the
	 * submitting thread, with whatever locks it holds (they still must
	 * not block on rdm), and the worker's memory and CPU placement does
	 * not apply to those passes. Without this flag every callback runs on
	 * the worker thread.
	 */
	RDM_WORKER_CALLER_RUNS = 1u << 3,
};

/* Start a worker thread. 0, -EINVAL (bad config: ring_capacity or
 * ticket_slots not a power of two, ticket_slots > 1024, reserved != 0,
 * struct_size too small), -ENOMEM or -EAGAIN (thread). */
RDM_API int rdm_worker_create(const struct rdm_worker_config *cfg, struct rdm_worker **out);

/* The worker's thread, for what a VMM does to its own threads: name it,
 * read its CPU clock (pthread_getcpuclockid), set its scheduling. Valid
 * until rdm_worker_destroy(). 0, or -EINVAL (NULL w or out; *out unchanged). */
RDM_API int rdm_worker_get_thread(const struct rdm_worker *w, pthread_t *out);

/* The configuration w runs with, its defaults filled in: ring_capacity,
 * max_batch, ticket_slots and spin_us as used, numa_node -1 without
 * RDM_WORKER_NUMA_NODE, and the rest as given to rdm_worker_create().
 * out->struct_size says how much of *out the caller has (at least up to
 * on_batch, as for create); that much is written and struct_size is left
 * as the caller set it. Any thread, any time until rdm_worker_destroy().
 * 0, or -EINVAL (NULL w or out, out->struct_size too small; *out
 * unchanged). */
RDM_API int rdm_worker_get_config(const struct rdm_worker *w, struct rdm_worker_config *out);

/* Stop and free. 0, -EINVAL (NULL), -EBUSY (a region it serves still
 * exists: nothing changed), -EDEADLK (from a callback or the worker's own
 * thread). */
RDM_API int rdm_worker_destroy(struct rdm_worker *w);

/*
 * Serve backend b. budget: the most mappings rdm may hold in it; 0 means
 * what the backend reports remaining now (rdm_backend_dma_avail) — a
 * non-zero budget is clipped to that too. 0, -EINVAL (NULL, or 16 backends
 * already), -EEXIST (b was added to this or another worker), -ENOMEM,
 * -EDEADLK, or the backend's error from reading its remaining mappings.
 * On failure nothing changed.
 */
RDM_API int rdm_worker_add_backend(struct rdm_worker *w, struct rdm_backend *b, uint64_t budget);

/*
 * Attach region r to backend b through worker w (b must have been added).
 * The first attach makes w the region's applier; a region has one worker.
 * The attach is a change applied in the region's order: every populated
 * block is mapped in b before it returns.
 * All or nothing: on failure the region is as before — in particular a
 * failed first attach leaves the region without a worker, applying its own
 * changes. The one exception is a backend failure: when the undo's unmap
 * fails twice, b is marked failed and keeps those mappings, and the region
 * never releases their blocks ("Failed backends"), with or without a
 * worker, now or later. Everything the region will need from the worker
 * later (its detach, its destroy) is reserved here, so those cannot fail
 * for memory.
 * 0, -EINVAL (NULL, b not added to w, region attached to another worker,
 * policy not usable on this backend: coalesce needs RDM_REGION_ALLOW_WINDOWS
 * or a split-capable backend), -EEXIST (already attached to b), -ENOSPC
 * (b's mapping limit), -ENOMEM, -EIO (b is marked failed), -ECANCELED,
 * -EDEADLK, or the backend's error.
 */
RDM_API int rdm_worker_attach(struct rdm_worker *w, struct rdm_region *r, struct rdm_backend *b);

/*
 * Attach flags (rdm_worker_attach_flags).
 *
 * RDM_ATTACH_QUIESCE_OK: the caller can stop all DMA of the devices behind
 * b into r (device reset, VM paused for migration or a snapshot); only then
 * may rdm_region_compact() be used on r. The flag is remembered for this
 * (region, backend) attachment until it is detached; it changes nothing
 * else.
 */
#define RDM_ATTACH_QUIESCE_OK (1u << 0)

/* rdm_worker_attach() with flags (rdm_worker_attach is flags 0). The same
 * contract; unknown flags are -EINVAL (nothing changed). */
RDM_API int rdm_worker_attach_flags(struct rdm_worker *w, struct rdm_region *r, struct rdm_backend *b,
				    uint32_t flags);

/*
 * Detach: a change in the region's order; rdm's mappings of r in b are
 * unmapped. The region stays with its worker (applier) even with no backend.
 * 0, -EINVAL, -ENOENT (not attached), -ECANCELED, -EDEADLK.
 */
RDM_API int rdm_worker_detach(struct rdm_worker *w, struct rdm_region *r, struct rdm_backend *b);

/*
 * Wait until every change published to w before this call (by any producer,
 * synchronous or not) is applied and complete: its ticket done or callback
 * run, its releases made. Changes published later may or may not be.
 * 0, -EINVAL (NULL), -EDEADLK (from a callback or the worker thread).
 */
RDM_API int rdm_worker_flush(struct rdm_worker *w);

/* One IOMMU mapping rdm holds for a region (the same in every backend the
 * region is attached to). Offsets are region offsets. */
struct rdm_mapping {
	uint64_t offset;
	uint64_t length;
	uint64_t iova;
	uint64_t host_addr;
	uint64_t deferred_bytes; /* discarded but still mapped (defer policy) */
};

/*
 * rdm's mappings of region r in backend b, ascending: up to cap of them into
 * maps, and the total in *count (call again with a larger array if it is
 * larger than cap). Answered by the worker in the region's order: the answer
 * reflects every change submitted before the call and none submitted after.
 * 0, -EINVAL (NULL r, b or count; NULL maps with cap > 0), -ENOENT (r is not
 * attached to b), -ECANCELED, -EDEADLK.
 */
RDM_API int rdm_region_get_mappings(struct rdm_region *r, struct rdm_backend *b, struct rdm_mapping *maps,
				    size_t cap, size_t *count);

/* A deferred range: discarded by the guest, still mapped, not released. */
struct rdm_deferred {
	uint64_t offset;
	uint64_t length;
};

/*
 * The deferred ranges of region r (maximal runs inside each mapping),
 * ascending, up to cap into ranges, the total count in *count and the total
 * bytes in *bytes (optional): why memory the guest gave back is still
 * pinned. Answered in the region's order, as rdm_region_get_mappings().
 * 0, -EINVAL, -ENOENT (r is not attached to a worker), -ECANCELED, -EDEADLK.
 */
RDM_API int rdm_region_get_deferred(struct rdm_region *r, struct rdm_deferred *ranges, size_t cap,
				    size_t *count, uint64_t *bytes);

/*
 * Compaction: nothing of region r stays deferred.
 *
 * By calling this, the caller states that no device behind any backend r is
 * attached to does DMA into r until it returns (a device reset, a VM paused
 * for migration or a snapshot): a DMA window is then harmless. Every mapping
 * that holds deferred blocks (discarded, still mapped, not released: the
 * defer policy's price, or coalesce's when a split was refused) is unmapped
 * and its populated runs are mapped again, cut as the region's policy cuts a
 * populate, in every backend; the deferred blocks are released (release
 * callback) before it returns. Afterwards rdm_region_get_deferred() reports
 * 0 bytes. Mappings without deferred blocks are not touched. Applied as a
 * change in the region's order: it sees every change submitted before it.
 *
 * Costs: per re-cut mapping and backend, one UNMAP and one MAP per piece;
 * the populated memory of those mappings is pinned again (the kernel unpins
 * and repins it). These remaps are not DMA windows (the device is quiescent
 * by the caller's statement): they are counted in compact_remapped_bytes,
 * not in remapped_bytes.
 *
 * out (optional) gets what was done; on failure it is zeroed.
 *
 * 0 (also when nothing is deferred, and when r is attached to a worker but
 * to no backend: nothing is mapped then), -EINVAL (NULL r), -ENOENT (r is
 * not attached to a worker), -EPERM (a backend r is attached to was attached
 * without RDM_ATTACH_QUIESCE_OK; the message names it; nothing changed),
 * -ENOSPC (the re-cut mappings would exceed a backend's mapping budget;
 * nothing changed), -ENOMEM (nothing changed), -EIO (a backend is marked
 * failed; nothing changed), -ECANCELED (r is being destroyed), -EDEADLK
 * (from a callback or the worker's thread), or a backend's MAP error: the
 * re-cut is then rolled back (every re-cut mapping is mapped whole again,
 * nothing is released, the state is as before) - and if even that map fails,
 * that backend is marked failed (sticky, see "Failed backends"). An UNMAP
 * that fails twice marks its backend failed too, and the call returns -EIO
 * after rolling the other backends back.
 */
struct rdm_compact_result {
	uint64_t mappings;       /* mappings of the layout that were re-cut */
	uint64_t new_mappings;   /* mappings of the layout that replaced them */
	uint64_t map_calls;      /* MAP calls issued, summed over the backends */
	uint64_t unmap_calls;    /* UNMAP calls issued, summed over the backends */
	uint64_t released_bytes; /* deferred bytes released */
	uint64_t remapped_bytes; /* populated bytes mapped again, per backend
				    (the layout's figure: not multiplied by the
				    number of backends) */
};
RDM_API int rdm_region_compact(struct rdm_region *r, struct rdm_compact_result *out);

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
	/* Times a region's deferred memory passed its defer_budget (each
	 * crossing from under to over counts once, and is logged). */
	uint64_t defer_budget_exceeded;
	uint64_t compactions;      /* rdm_region_compact() calls that succeeded */
	uint64_t compact_released_bytes; /* deferred bytes they released */
	uint64_t compact_remapped_bytes; /* bytes they mapped again (per layout;
					    not DMA windows: not in remapped_bytes) */
};
RDM_API void rdm_worker_get_stats(const struct rdm_worker *w, struct rdm_worker_stats *st);

/* ------------------------------------------------------------ producers */

/*
 * A producer belongs to the thread that creates it; it owns one ring to each
 * worker it uses (created on first use; any number of workers) and its
 * tickets (1024 slots). Threads that only call the synchronous
 * rdm_populate() etc. get an implicit producer, freed at thread exit.
 */
RDM_API int rdm_producer_create(struct rdm_producer **out);

/* rdm_producer_config.flags */
enum {
	/* The rings this producer creates are on ring_node rather than on
	 * their consuming worker's node (measurements of remote rings). */
	RDM_PRODUCER_RING_NODE = 1u << 0,
};

/* rdm_producer_create_ex() arguments: zero-initialise, set struct_size. */
struct rdm_producer_config {
	uint32_t struct_size;
	uint32_t flags;          /* RDM_PRODUCER_* */
	int32_t ring_node;       /* with RDM_PRODUCER_RING_NODE; must exist and have memory */
	uint32_t reserved;       /* must be 0 */
};

/* rdm_producer_create() with a config (NULL = the defaults). 0, -EINVAL
 * (bad config or node, with a message), -ENOMEM. */
RDM_API int rdm_producer_create_ex(const struct rdm_producer_config *cfg, struct rdm_producer **out);

/* Waits for every change it submitted to complete (consumed or not), then
 * frees. From a callback it does nothing (logged, -EDEADLK's message). */
RDM_API void rdm_producer_destroy(struct rdm_producer *p);

typedef void (*rdm_complete_fn)(void *opaque, int result);

/* What a struct rdm_change asks for. */
enum rdm_change_kind {
	RDM_CHANGE_POPULATE = 1,
	RDM_CHANGE_DISCARD = 2,
	RDM_CHANGE_DISCARD_ALL = 3,
};

struct rdm_change {
	struct rdm_region *region;
	uint32_t kind;        /* enum rdm_change_kind: RDM_CHANGE_* */
	uint32_t reserved;
	uint64_t offset;
	uint64_t length;      /* ignored for discard_all */
	rdm_complete_fn done; /* NULL: the change gets a ticket instead */
	void *opaque;
};

/*
 * Submit n changes asynchronously, published together at the end (one
 * release store per ring). Each change gets either its callback or a ticket
 * (tickets[i], which must be non-NULL then). At most 64 changes. All or
 * nothing: on failure none was submitted. 0, -EINVAL/-ERANGE (argument
 * errors, or a region not attached to a worker; the message names the
 * index), -EAGAIN (a ring full, all ticket slots held, or the worker's
 * ticket_slots reached), -ENOMEM (first use of a worker: its ring),
 * -ECANCELED (a region is being destroyed), -EDEADLK (from a callback).
 * State errors (strict mode's -EEXIST/-ENOENT, -ENOSPC, a listener's refusal)
 * are the change's result, delivered through its ticket or callback.
 */
RDM_API int rdm_producer_submit(struct rdm_producer *p, const struct rdm_change *changes, unsigned n,
				uint64_t *tickets);

/* Single-change conveniences of rdm_producer_submit (ticket form). */
RDM_API int rdm_producer_populate(struct rdm_producer *p, struct rdm_region *r, uint64_t offset,
				  uint64_t length, uint64_t *ticket);
RDM_API int rdm_producer_discard(struct rdm_producer *p, struct rdm_region *r, uint64_t offset,
				 uint64_t length, uint64_t *ticket);

/*
 * Wait for a ticket (spin briefly if the worker runs on another CPU, then
 * sleep on a futex) and consume it.
 * Two results, never mixed: the return value says whether the wait itself
 * worked; *result (optional) gets the change's own result (0 or a negative
 * errno, e.g. -EEXIST or -ENOSPC; rdm_last_error() then names its cause).
 * Returns 0 (the ticket is consumed and *result set), -EINVAL (p NULL, or
 * not an outstanding ticket of this producer: nothing consumed), -EDEADLK
 * (from a callback: nothing consumed).
 */
RDM_API int rdm_producer_wait(struct rdm_producer *p, uint64_t ticket, int *result);

/* Like wait, but returns -EINPROGRESS at once (nothing consumed, *result not
 * written) if the change is not yet complete. Allowed in callbacks. */
RDM_API int rdm_producer_poll(struct rdm_producer *p, uint64_t ticket, int *result);

#ifdef __cplusplus
}
#endif

#endif /* RDM_WORKER_H */
