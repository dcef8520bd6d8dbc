/* SPDX-License-Identifier: MIT */
/*
 * core/region_internal.h - the seam between a region and its applier (the
 * IOMMU worker), and read access for rdm's other parts, tests and benchmarks.
 *
 * Each region has exactly one applier (DESIGN.md "The change model").
 * Without an installed applier the submitting thread applies its own change
 * under the region's writer lock. With one, the public change calls check
 * their arguments and hand the change to ops->submit; the applier applies
 * changes one at a time with rdm_region_apply(), in its own order.
 */
#ifndef RDM_CORE_REGION_INTERNAL_H
#define RDM_CORE_REGION_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include <rdm/region.h>
#include <rdm/worker.h>

#include "core/alloc.h"

/*
 * Every operation applied in a region's sequence order (DESIGN.md "The
 * change model"): one enum from the public call to the worker's record.
 * The first three are the public enum rdm_change_kind's values; the region
 * applies POPULATE..UNREGISTER itself (rdm_region_apply), the rest are the
 * IOMMU worker's control changes (iommu/worker.c), which travel in its ring
 * records like the others.
 */
struct rdm_region_inbox; /* iommu/producer.h */
struct rdm_tree;        /* core/tree.h */

enum rdm_op {
	RDM_OP_POPULATE = RDM_CHANGE_POPULATE,
	RDM_OP_DISCARD = RDM_CHANGE_DISCARD,
	RDM_OP_DISCARD_ALL = RDM_CHANGE_DISCARD_ALL,
	RDM_OP_REGISTER = 4,
	RDM_OP_UNREGISTER = 5,
	RDM_OP_ATTACH = 6,
	RDM_OP_DETACH = 7,
	RDM_OP_DESTROY = 8,
	RDM_OP_QUERY = 9,
	RDM_OP_COMPACT = 10,
};

struct rdm_applier_ops {
	/* A change passed the argument checks (-EINVAL/-ERANGE are found before
	 * this); route it to the applier and return its result. For
	 * REGISTER/UNREGISTER, l is the listener (offset/length are 0); for
	 * DISCARD_ALL offset is 0 and length the region size. Called on the
	 * submitting thread with no rdm lock held. */
	int (*submit)(void *ctx, struct rdm_region *r, enum rdm_op op, uint64_t offset,
		      uint64_t length, struct rdm_listener *l);
	/* rdm_region_destroy: new submissions already refused (-ECANCELED) and
	 * every submit call has returned; the applier drains what it accepted,
	 * unmaps, releases, and forgets the region before this returns. The
	 * region's listeners are told their discards after this returns. */
	void (*destroy)(void *ctx, struct rdm_region *r);
	/* Optional: the applier's submission side for producers that bypass
	 * submit (rdm_producer_submit: asynchronous, tickets), or NULL. */
	struct rdm_region_inbox *(*inbox)(void *ctx);
};

/*
 * Install (ops != NULL) or remove (ops == NULL) the applier. While installed,
 * the public change calls (populate, discard, discard_all, listener
 * register/unregister) check arguments and then call ops->submit instead of
 * applying themselves. Takes the writer lock, so a change being applied by
 * a submitting thread finishes first. Returns 0, -EINVAL (NULL region, or
 * ops without submit or destroy), -EBUSY (another applier is installed) or
 * -ECANCELED (the region is being destroyed).
 */
int rdm_region_set_applier(struct rdm_region *r, const struct rdm_applier_ops *ops, void *ctx);

/*
 * The region's writer lock, for an applier that must keep every change out
 * while it installs itself (the IOMMU worker's first attach): while it is
 * held no change can be applied on a region without an applier. The holder
 * must not call anything that takes the lock (changes, set_applier,
 * set_tail_listener, batch_end, retire_flush).
 */
void rdm_region_lock(struct rdm_region *r);
void rdm_region_unlock(struct rdm_region *r);
/* With the lock held and no applier installed: install ops/ctx (as
 * rdm_region_set_applier does) and the tail listener in one step. */
void rdm_region_install_applier_locked(struct rdm_region *r, const struct rdm_applier_ops *ops, void *ctx,
				       struct rdm_listener *tail);

/*
 * Apply one change now, on the calling thread, which must be the region's
 * applier: the installed applier, or (without one) any thread; the call
 * takes the region's writer lock itself, so it must not be called from a
 * listener callback or with that lock held. Arguments are NOT checked
 * (the submitter did). Does the strict-mode checks against the current
 * state, tells listeners (then the tail listener) with rollback, publishes to
 * readers with the visibility rules of DESIGN.md (a discard is visible
 * before listeners are told, a populate once all accepted): one version per
 * change. When an applier
 * is installed it does NOT call the release callback (the applier releases
 * after unmapping); without one, a discard calls release for the blocks it
 * discarded before returning.
 * Returns 0, -EEXIST / -ENOENT (strict mode), -ENOMEM, a listener's error,
 * for REGISTER -EINVAL (already registered), for UNREGISTER -ENOENT (not
 * registered). Works while the region is being destroyed (for the drain).
 */
int rdm_region_apply(struct rdm_region *r, enum rdm_op op, uint64_t offset,
		     uint64_t length, struct rdm_listener *l);

/*
 * Like rdm_region_apply() for a populate or discard (no listener), but by
 * the installed applier, holding the region's lock (rdm_region_lock(): it
 * applies a run of changes under one lock), and batched: the strict checks
 * and listeners see the
 * applier's working state (every earlier change it applied), and an accepted
 * populate joins a working version that is published, as one version, by the
 * next discard that changes the state (together with that discard), the next
 * rdm_region_apply() or listener (un)registration, or
 * rdm_region_batch_end(), whichever comes first (see "Versions per batch"
 * in core/region.c). On a region with no listener but the tail, a discard
 * waits too, for rdm_region_publish_discards() (before its first unmap or
 * release) or the batch's end ("Discards that wait"). The applier must
 * call rdm_region_batch_end() before it completes any change of the batch,
 * unmaps or releases outside a change, or waits for more work.
 */
int rdm_region_apply_batched_locked(struct rdm_region *r, enum rdm_op op, uint64_t offset, uint64_t length);

/*
 * End of the applier's batch: publish the working version (populates
 * accepted since the last publish), and hand the state that the changes
 * applied since the last hand-on replaced to reclamation (one call_rcu)
 * when a group is due (core/tree.c "Retire groups"). The applier calls it
 * before any change of the batch completes. While an applier is installed,
 * rdm_region_apply() keeps that state for this call instead of handing it
 * on per change; an applier calls it after each run of rdm_region_apply()
 * calls (the worker: per region, per batch), before it waits for more work.
 * On the applier's thread, like rdm_region_apply().
 */
void rdm_region_batch_end(struct rdm_region *r);
/*
 * Publish the working version now if it holds a discard readers do not see
 * yet. A batched discard on a region whose only listener is the applier's
 * tail listener is not published when it is applied: the tail's owner calls
 * this before every effect of a discard - each unmap; rdm_region_release()
 * calls it itself - so readers see a discard before its unmap and its
 * release, and rdm_region_batch_end() publishes what is left ("Versions per
 * batch" in core/region.c). Applier only; a discard is pending only inside
 * a change's application, where the writer lock is held (the tail's
 * callbacks), so the applier calls rdm_region_batch_end() before any effect
 * outside one (its flush at the end of a batch, a control).
 */
void rdm_region_publish_discards(struct rdm_region *r);
/*
 * rdm_region_batch_end(), then hand on everything kept, group due or not
 * (tests that count memory after rcu_barrier()). Removing the applier and
 * destroying the region do the same.
 */
void rdm_region_retire_flush(struct rdm_region *r);
/*
 * Whether every block of [offset, offset + length) is populated (or
 * discarded) in the applier's working state: every change it applied, also
 * those of its batch not yet visible to readers. Applier only, not from a
 * listener callback (takes the writer lock). Arguments are not checked.
 */
bool rdm_region_applier_all(struct rdm_region *r, uint64_t offset, uint64_t length, bool populated);
/* Versions of the state published to readers so far (any thread): see
 * "Versions per batch" in core/region.c. */
uint64_t rdm_region_versions(const struct rdm_region *r);
/* Replaced tree nodes kept for the next hand-on to RCU (core/tree.c
 * "Retire groups"); for tests. Takes the writer lock. */
size_t rdm_region_retired_kept(struct rdm_region *r);
/*
 * Load the whole state from a bitmap in one change (an incoming migration
 * restoring a plug bitmap; benchmarks building large states): get() fills
 * the 64 words of the 4096 blocks starting at block `first` (bit i of word j
 * = block first + 64 j + i; the words come zeroed; bits past the region are
 * ignored). Only on a region with every block discarded and no listener, no
 * tail listener and no applier (nobody needs telling); the new state becomes
 * visible to readers at once. Returns 0, -EINVAL (NULL), -EBUSY (state or
 * listeners present), -ECANCELED or -ENOMEM.
 */
int rdm_region_load(struct rdm_region *r, void (*get)(void *opaque, uint64_t first, uint64_t *words),
		    void *opaque);

/*
 * Call the region's release callback (if any) for a range, skipping every
 * pinned byte (below). On the thread applying the region's changes.
 */
void rdm_region_release(struct rdm_region *r, uint64_t offset, uint64_t length);

/*
 * Pins: bytes of the region that a failed backend may still map (its unmap
 * failed twice), so their memory is never released again (DESIGN.md I2) -
 * by this applier, by the region itself once it has none (a first attach
 * that failed and was undone), or by a later applier. The record belongs
 * to the region and lives as long as it. Without memory for a new range
 * the region stops releasing anything (rdm_region_pins_all): memory lost,
 * never memory still mapped released. On the thread applying the region's
 * changes, like rdm_region_release().
 */
void rdm_region_pin(struct rdm_region *r, uint64_t offset, uint64_t length);
bool rdm_region_any_pinned(const struct rdm_region *r);
/* The first bytes of [offset, end) that no pin covers: [*start, *stop);
 * false if there are none (pin-all: never any). */
bool rdm_region_next_unpinned(const struct rdm_region *r, uint64_t offset, uint64_t end, uint64_t *start,
			      uint64_t *stop);
bool rdm_region_pins_all(const struct rdm_region *r);

/*
 * The internal listener (the IOMMU) that is told after every registered
 * listener of each populate and discard, and can refuse a populate like any
 * listener (the others are then rolled back). It is not told registration
 * replays of other listeners. NULL removes it. Installing or removing it
 * replays nothing (its owner maps what is populated itself). Takes the
 * writer lock.
 */
void rdm_region_set_tail_listener(struct rdm_region *r, struct rdm_listener *l);

/* The creation config (struct_size = sizeof, defaults filled in:
 * discard_unit = block_size; numa_node = -1 without RDM_REGION_NUMA_NODE). */
const struct rdm_region_config *rdm_region_cfg(const struct rdm_region *r);

/* The counted allocator of the region's state structure. */
const struct rdm_mem *rdm_region_mem(const struct rdm_region *r);
/* The region's state, read-only (tests: structure statistics). */
const struct rdm_tree *rdm_region_tree(const struct rdm_region *r);
struct rdm_mem *rdm_region_mem_mut(struct rdm_region *r);

/* The installed applier (NULL when none) and its context. */
const struct rdm_applier_ops *rdm_region_get_applier_ops(struct rdm_region *r);
void *rdm_region_get_applier_ctx(struct rdm_region *r);

/* The argument checks of a populate/discard range: 0, -EINVAL or -ERANGE. */
int rdm_region_check_range(const struct rdm_region *r, uint64_t offset, uint64_t length);

/* Bracket a submission that bypasses the public change calls (asynchronous
 * producers): enter fails with -ECANCELED once destroy began; destroy waits
 * for every entered caller to leave before it calls the applier's destroy. */
int rdm_region_enter(struct rdm_region *r);
void rdm_region_leave(struct rdm_region *r);

/* Replay for the applier itself: like rdm_replay_populated/discarded
 * (populated selects which), but also while the region is being destroyed,
 * and of the applier's working state (as rdm_region_applier_all()). On the
 * applier's thread only; may be called from its listener callbacks. */
int rdm_region_applier_runs(struct rdm_region *r, uint64_t offset, uint64_t length, bool populated,
			    rdm_replay_fn fn, void *opaque);

#endif /* RDM_CORE_REGION_INTERNAL_H */
