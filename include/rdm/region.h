/* SPDX-License-Identifier: MIT */
/*
 * rdm/region.h - a region of guest RAM, its populated/discarded state,
 * the changes to it and its listeners.
 *
 * A region is one guest-RAM range: IOVA base (= guest physical address),
 * size, host virtual address and block size. Each block is either populated
 * (usable by the guest) or discarded. All offsets and lengths in this header
 * are bytes relative to the start of the region.
 *
 * Concurrency:
 *
 *   call                                  may run concurrently with
 *   ------------------------------------  ----------------------------------
 *   queries (is_populated, is_discarded,  everything, including each other and
 *   populated_bytes, replay_*,            changes; never take a lock, never
 *   granularity)                          block a writer
 *   changes (populate, discard,           everything; changes to one region
 *   discard_all, listener register /      are applied one at a time, in the
 *   unregister)                           region's sequence order
 *   rdm_region_destroy                    nothing on the same region except
 *                                         calls already inside it, which it
 *                                         waits for; new calls get -ECANCELED
 *
 * Each region has exactly one applier. Until the region is attached to an
 * IOMMU worker (rdm/worker.h), the applier is the submitting thread, holding
 * the region's writer lock while it applies; afterwards it is the worker.
 *
 * Readers use RCU (liburcu, bulletproof flavour): threads need no
 * registration. A replay callback runs inside one read-side critical
 * section; it may block, which delays reclamation of superseded state but
 * never a writer. A region of at most 2^22 blocks also keeps a flat bitmap
 * of its state, published with the same visibility; is_populated,
 * is_discarded and populated_bytes over up to 4096 blocks read it without
 * RCU (a per-thread record, created on a thread's first such query, tells
 * destroy to wait for them). Either way each answer comes from one
 * published state and no query waits for a writer.
 *
 * Callbacks (listener, release and replay callbacks) may call the queries
 * of any region. Every call that changes a region or may wait (populate,
 * discard, discard_all, listener register/unregister, destroy, and the
 * worker calls of rdm/worker.h) returns -EDEADLK there, with a message, and
 * changes nothing: it would wait for the lock, grace period or worker that
 * is running the callback. The same holds inside the caller's own urcu-bp
 * read-side critical section. A change that must follow from a callback is
 * made after it returns (e.g. collect a replay's runs, then populate).
 */
#ifndef RDM_REGION_H
#define RDM_REGION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <rdm/common.h>

#ifdef __cplusplus
extern "C" {
#endif

struct rdm_region;   /* opaque */
struct rdm_listener; /* below; filled by the caller */

/*
 * Called with ranges that are discarded and unmapped from every backend: from
 * this call on the memory may be freed (madvise, fallocate). Runs on the
 * region's applier thread; must not block on rdm. A range can be released
 * again without being populated in between: when the IOMMU refused a
 * populate after mapping part of it, that part was pinned (its memory
 * faulted in) and is released again after the rollback unmaps it; the
 * callback must accept that (madvise(MADV_DONTNEED) and hole punching do).
 */
typedef void (*rdm_release_fn)(void *opaque, uint64_t offset, uint64_t length);

/* rdm_region_config.flags */
enum {
	/* virtio-mem's rule: populate needs every block discarded (else -EEXIST),
	 * discard needs every block populated (else -ENOENT). Without it
	 * (lenient), blocks already in the target state are left alone. */
	RDM_REGION_STRICT = 1u << 0,
	/* A map policy may close a DMA window briefly (unmap and remap the
	 * survivors of a split mapping); every such byte is counted. */
	RDM_REGION_ALLOW_WINDOWS = 1u << 1,
	/* numa_node is meaningful; without it the region's node is the
	 * creating thread's (rdm/numa.h). A node that does not exist or has
	 * no memory is -EINVAL... */
	RDM_REGION_NUMA_NODE = 1u << 2,
	/* ...unless this is set too: then it falls back to the creating
	 * thread's node, and rdm_region_get_placement() reports the fallback. */
	RDM_REGION_NUMA_PREFERRED = 1u << 3,
};

/* How the IOMMU worker cuts populated ranges into mappings (rdm/worker.h). */
enum rdm_map_policy {
	RDM_POLICY_BLOCK = 0,  /* one mapping per discard unit; never a window */
	RDM_POLICY_COALESCE,   /* larger mappings; a bisecting discard remaps survivors */
	RDM_POLICY_DEFER,      /* larger mappings; bisected memory released later */
};

/*
 * Creation arguments. Zero-initialise, set struct_size = sizeof(struct
 * rdm_region_config) and fill what you need: a zero field means its default.
 * Later versions only append fields; an older caller's smaller struct_size
 * reads the missing fields as zero.
 */
struct rdm_region_config {
	uint32_t struct_size;
	uint32_t flags;          /* RDM_REGION_* */
	uint64_t iova;           /* guest physical address of offset 0 */
	uint64_t size;           /* bytes, a multiple of block_size, > 0 */
	uint64_t block_size;     /* power of two >= host page size */
	void *host_addr;         /* host virtual address of offset 0 */
	rdm_release_fn release;  /* optional */
	void *release_opaque;
	/* Used once the region is attached to an IOMMU worker. */
	uint32_t policy;         /* enum rdm_map_policy */
	int32_t numa_node;       /* with RDM_REGION_NUMA_NODE */
	uint64_t discard_unit;   /* 0 = block_size; else a power-of-two multiple */
	uint64_t defer_limit;    /* RDM_POLICY_DEFER: bytes; 0 = no limit */
	/*
	 * RDM_POLICY_DEFER: the most discarded bytes the policy aims to keep
	 * mapped (deferred), without DMA windows: it cuts new mappings finer
	 * as the region's discards show they are needed and as the budget
	 * fills (iommu/planner.c, "Deferral budget"). 0 = the default,
	 * RDM_DEFER_BUDGET_DEFAULT_PCT percent of the size rounded up to the
	 * discard unit; RDM_DEFER_BUDGET_NONE, or any value
	 * >= size = unbounded (the largest mappings, whatever stays deferred).
	 * Other values are rounded up to the discard unit. Past the budget a warning is logged and counted
	 * (rdm_worker_stats.defer_budget_exceeded).
	 */
	uint64_t defer_budget;
};

#define RDM_DEFER_BUDGET_DEFAULT_PCT 2
#define RDM_DEFER_BUDGET_NONE UINT64_MAX

/*
 * Create a region with every block discarded.
 * Returns 0 and *out, or -EINVAL (NULL argument, struct_size too small or
 * larger than known with non-zero unknown fields, unknown flag or policy,
 * zero size, block size not a power of two or below the host page size, size
 * not a multiple of the block size, iova + size overflowing, discard unit not
 * a power-of-two multiple of the block size) or -ENOMEM.
 */
RDM_API int rdm_region_create(const struct rdm_region_config *cfg, struct rdm_region **out);

/*
 * Destroy a region: calls that start while it runs get -ECANCELED; waits
 * until every accepted change is applied and every caller inside a region
 * call has left; discards every populated block from the listeners still
 * registered (they are unregistered: the struct may be freed or registered
 * again afterwards); unmaps rdm's own mappings; releases every populated or
 * deferred block through the release callback - with or without an IOMMU
 * worker - except, after a backend failed an unmap for this region, the
 * blocks it may still pin; frees. The handle must not be used once this
 * returns. Returns 0, -EINVAL for NULL, -ECANCELED (already being
 * destroyed), -EDEADLK (from a callback: nothing happens).
 */
RDM_API int rdm_region_destroy(struct rdm_region *r);

/* The block size. 0 for NULL. */
RDM_API uint64_t rdm_region_granularity(const struct rdm_region *r);

/* The region size in bytes. 0 for NULL. */
RDM_API uint64_t rdm_region_size(const struct rdm_region *r);

/* The deferral budget in force, in bytes: defer_budget as created, with the
 * default applied and rounded up to the discard unit; RDM_DEFER_BUDGET_NONE
 * when unbounded. 0 for NULL. Whatever the policy: only RDM_POLICY_DEFER
 * defers. */
RDM_API uint64_t rdm_region_defer_budget(const struct rdm_region *r);

/*
 * The configuration in force, as rdm_region_create() completed it: the
 * defaults applied (discard_unit = block_size when 0 was given, defer_budget
 * as rdm_region_defer_budget() answers, numa_node -1 without
 * RDM_REGION_NUMA_NODE: the node in use is rdm_region_get_placement()'s),
 * iova, host_addr, release and the rest as given. A VMM, or a
 * listener that receives offsets, translates them to guest-physical and
 * host addresses with iova and host_addr. Set out->struct_size to the size
 * of your struct rdm_region_config: the fields that fit in it are filled,
 * later ones (of a newer rdm) are not written, and struct_size keeps your
 * value. Returns 0, or -EINVAL (NULL, struct_size below 16, the size of
 * the first three fields): then *out is unchanged. Any thread, no lock: the
 * configuration never changes after creation.
 */
RDM_API int rdm_region_get_config(const struct rdm_region *r, struct rdm_region_config *out);

/*
 * Queries. Lock-free; any thread; each answers from one version of the state.
 *
 * is_populated: true only if every block the range touches (rounded outwards
 * to blocks) is populated. A range not wholly inside the region, or of zero
 * length, answers false, as does a NULL region. is_discarded: likewise for
 * discarded.
 */
RDM_API bool rdm_is_populated(const struct rdm_region *r, uint64_t offset, uint64_t length);
RDM_API bool rdm_is_discarded(const struct rdm_region *r, uint64_t offset, uint64_t length);

/*
 * Populated bytes within the range, clipped to the region and rounded
 * outwards to blocks. 0 for NULL or an empty intersection.
 */
RDM_API uint64_t rdm_populated_bytes(const struct rdm_region *r, uint64_t offset, uint64_t length);

/* A replay callback: return 0 to go on, a negative errno to stop. */
typedef int (*rdm_replay_fn)(void *opaque, uint64_t offset, uint64_t length);

/*
 * Call fn for every maximal populated (replay_populated) or discarded
 * (replay_discarded) run inside the range, clipped to the region and rounded
 * outwards to blocks, in ascending order, all from one consistent snapshot.
 * Returns 0, the first negative value a callback returned (no further calls),
 * or -EINVAL for a NULL region or fn.
 */
RDM_API int rdm_replay_populated(const struct rdm_region *r, uint64_t offset, uint64_t length,
				 rdm_replay_fn fn, void *opaque);
RDM_API int rdm_replay_discarded(const struct rdm_region *r, uint64_t offset, uint64_t length,
				 rdm_replay_fn fn, void *opaque);

/*
 * Changes: whole blocks. Synchronous: they return when the change was applied
 * and every listener (the IOMMU included, once attached) has completed.
 *
 * Returns 0, or
 *   -EINVAL    NULL region, zero length, offset or length not block aligned,
 *              offset + length overflowing
 *   -ERANGE    range outside the region
 *   -EEXIST    strict mode: populate of a block that is not discarded
 *   -ENOENT    strict mode: discard of a block that is not populated
 *   -ENOSPC    the IOMMU's mapping limit would be exceeded
 *   -EIO       an attached IOMMU backend is marked failed (populate)
 *   -ECANCELED the region is being destroyed
 *   -ENOMEM    out of memory (nothing changed)
 *   -EDEADLK   called from an rdm callback or a read-side section
 *   a listener's own negative errno when it refused a populate.
 * On failure the state, the listeners and the mappings are as before.
 *
 * Populate: listeners are told first, in registration order, each clipped to
 * its sub-range (only the blocks that change, in lenient mode); the new state
 * becomes visible to readers once every listener accepted. If listener k
 * refuses, listeners k-1..0 are told a discard of what they accepted, in
 * that order, and the caller gets listener k's error.
 * Discard: visible to readers first, then listeners are told (they cannot
 * refuse), then the release callback gets the discarded blocks.
 * discard_all: a discard of every populated block; valid in strict mode.
 */
RDM_API int rdm_populate(struct rdm_region *r, uint64_t offset, uint64_t length);
RDM_API int rdm_discard(struct rdm_region *r, uint64_t offset, uint64_t length);
RDM_API int rdm_discard_all(struct rdm_region *r);

/*
 * A listener: a consumer of the region's state on a sub-range. The caller
 * owns the struct, fills ops, offset, length and opaque, and keeps it alive
 * until rdm_listener_unregister() returns (or the region is destroyed).
 * Offsets passed to the callbacks are region offsets inside the sub-range.
 */
struct rdm_listener_ops {
	/* The range will be populated; return 0 to accept, or a negative errno
	 * to refuse (the populate then fails with it). */
	int (*populate)(struct rdm_listener *l, uint64_t offset, uint64_t length);
	/* The range is discarded. Must accept ranges that span blocks it was
	 * never told were populated, and of another size than the populates. */
	void (*discard)(struct rdm_listener *l, uint64_t offset, uint64_t length);
};

struct rdm_listener {
	const struct rdm_listener_ops *ops;
	uint64_t offset;  /* sub-range, block aligned */
	uint64_t length;
	void *opaque;
	/* Private to rdm. */
	struct rdm_listener *rdm_next;
	struct rdm_region *rdm_region;
};

/*
 * Register: the listener joins the end of the region's list and is told a
 * populate of every populated run inside its sub-range (in ascending order).
 * If it refuses one, it is told a discard of what it accepted and
 * registration fails with its error.
 * A listener belongs to one region at a time: a struct registered (or
 * being registered) on any region is refused.
 * Returns 0, -EINVAL (NULL, no ops or callbacks, sub-range not block aligned
 * or empty, listener already registered here or on another region),
 * -ERANGE (sub-range outside the region), -ECANCELED, -EDEADLK, -ENOMEM, or
 * the listener's error.
 */
RDM_API int rdm_listener_register(struct rdm_region *r, struct rdm_listener *l);

/*
 * Unregister: the listener is told a discard of every populated run inside
 * its sub-range, then leaves the list (and may be registered anywhere
 * again). Returns 0, -EINVAL (NULL), -ENOENT (not registered on this
 * region), -ECANCELED or -EDEADLK (from a callback, e.g. the listener's own:
 * a listener cannot unregister itself from its callback).
 */
RDM_API int rdm_listener_unregister(struct rdm_region *r, struct rdm_listener *l);

#ifdef __cplusplus
}
#endif

#endif /* RDM_REGION_H */
