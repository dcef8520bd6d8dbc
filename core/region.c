/* SPDX-License-Identifier: MIT */
/*
 * core/region.c - a region: its state (core/tree.c), its changes, its
 * listeners and its applier.
 *
 * Theory
 *
 * Readers (queries, replays) never lock: each enters an RCU read-side
 * section, checks the dying flag, loads the tree's root once and answers
 * from that version. Changes go through the region's applier: without an
 * installed applier the submitting thread applies under the writer lock
 * (r->lock); with one, the public call only checks its arguments and hands
 * the change to ops->submit, and the applier calls rdm_region_apply(),
 * which takes the same lock. So every change, listener registration and
 * unregistration is applied one at a time, against the state every earlier
 * change produced.
 *
 * Applying a change:
 *   populate: strict check; nothing to do if every block is populated; build
 *     the new version (not visible); tell each listener (registration order,
 *     then the tail listener) the discarded runs of the old version inside
 *     its sub-range; on a refusal discard what was told, in reverse order,
 *     drop the new version and fail; otherwise publish it.
 *   discard: strict check; nothing to do if every block is discarded; build
 *     and publish the new version (visible before anyone is told, so nobody
 *     starts using the memory); tell each listener the populated runs of the
 *     old version inside its sub-range; release them (no applier); then hand
 *     the old version's nodes to RCU.
 * Because the populated runs told are those of the old version restricted to
 * the change, strict and lenient mode share the code: in strict mode the
 * runs are the whole range.
 *
 * Versions per batch. An applier's batch (rdm_region_apply_batched_locked() calls
 * up to rdm_region_batch_end()) keeps one private working version in the
 * tree (tree.c "Working version"). A populate is checked and told against
 * the working state, and only once every listener (the IOMMU last) accepted
 * is it added to the working version: a refusal needs no tree rollback, and
 * a populate runs out of memory there only after it was accepted, when the
 * listeners are told a discard of it in reverse order, as for a refusal. A
 * discard that changes the state adds itself and, on a region with
 * listeners of its own, publishes the working version - every populate
 * accepted before it plus itself, one version - before any listener is
 * told. rdm_region_batch_end(), a listener (un)registration and an
 * unbatched rdm_region_apply() publish the working version if it is open.
 * So a batch makes exactly D + P versions: D its state-changing discards, P
 * its runs of accepted populates ended by a control, a registration or the
 * batch's end rather than by a discard - one version for a batch of
 * populates, one per discard for a batch of discards. Every version
 * published is a state of the one-at-a-time application (DESIGN.md's
 * rules: a discard is visible before its listeners are told; a populate
 * only after all accepted; refused or failed changes never), and a later
 * one, so readers see a subsequence of those states. Without a batch, every
 * change is one version (invariant 3).
 *
 * Discards that wait. On a region whose only listener is the applier's
 * tail (the IOMMU; no listener of the VMM's), a batched discard is added to
 * the working version but not published: the tail acts on a discard only
 * by unmapping and releasing, and its owner publishes first
 * (rdm_region_publish_discards(), before every unmap; rdm_region_release()
 * itself), as does rdm_region_batch_end(), which the applier calls before
 * it completes anything. So readers still see every discard before any of
 * its effects - before an unmap, before its memory is released, before it
 * completes - which is what the visibility rule protects: nobody outside
 * the applier is told anything in between that could start using the
 * memory, and a reader cannot tell a discard not yet applied from one
 * applied but not yet published. What it saves: a publish ends the in-place
 * writes of a working version (tree.c "Working version"), so the next step
 * copies its leaf and path again; a batch of k discards made k versions and
 * k copies, now one of each until the first unmap (bench pipeline, one
 * producer, block policy, each round a run of populates then a run of
 * discards: a discard's tree step ~977 -> ~562 instructions, 405-532 ->
 * 319-368 ns per change, builds interleaved). The tail is still told
 * each discard's runs from the state before it (kept readable as before
 * when the discard is not told whole).
 *
 * Destroy: set dying (new public calls get -ECANCELED), synchronize_rcu()
 * (readers that missed the flag have left), wait until no public change
 * call is in flight, let the applier drain and forget the region, tell the
 * remaining listeners a discard of every populated run, free the state
 * (rcu_barrier() so no retire callback still references it).
 *
 * Invariants
 *  1. r->listeners, r->tail_l, r->applier and the tree's writer state are
 *     touched only under r->lock.
 *  2. A listener is told exactly the blocks that change, clipped to its
 *     sub-range; after a refused populate every listener has been told a
 *     discard of everything it accepted in that change.
 *  3. The published version changes only by rdm_tree_publish(): once per
 *     applied change, or in a batch once per "Versions per batch" above;
 *     each version holds whole changes, so each change is atomic to
 *     readers, and only accepted ones.
 *  4. After dying is set and synchronize_rcu() returned, no reader touches
 *     the tree; after inflight reached 0, no public change call runs.
 */
/*
 * rdm's MIT licence is LGPL-compatible, which liburcu's README names as the
 * condition for _LGPL_SOURCE: the read-side lock and unlock are inlined
 * instead of being two library calls with their TLS lookups per query.
 * Sanitizer builds keep the library calls: inlined, liburcu's own accesses
 * would be reported in rdm's frames (UBSan flags liburcu's under-aligned
 * reader records; TSan its plain counter accesses, which the suppressions
 * may only hide inside liburcu).
 */
#if !defined(__SANITIZE_ADDRESS__) && !defined(RDM_TSAN)
#define _LGPL_SOURCE
#endif
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <urcu-bp.h>

#include "core/alloc.h"
#include "core/callback.h"
#include "core/error.h"
#include "core/flat.h"
#include "core/numa.h"
#include "core/region_internal.h"
#include "core/tree.h"
#include "core/wait.h"

#define CONFIG_MIN_SIZE offsetof(struct rdm_region_config, policy)
#define CONFIG_MAX_SIZE 4096u
#define KNOWN_FLAGS \
	(RDM_REGION_STRICT | RDM_REGION_ALLOW_WINDOWS | RDM_REGION_NUMA_NODE | RDM_REGION_NUMA_PREFERRED)

struct rdm_region {
	/* First cache line: what every query reads and no change writes. */
	uint64_t size; /* cfg.size */
	unsigned shift;
	/* Set once by destroy (seq_cst: the Dekker pair with inflight and
	 * with the flat view's reader records). */
	atomic_bool dying;
	uint64_t nblocks;
	/* The flat view (core/flat.h) of a region of at most
	 * RDM_FLAT_MAX_BLOCKS blocks, else NULL; also r->tree.flat. */
	const struct rdm_flat *flat;
	/* Its first cache line holds the root; the writer's state follows on
	 * lines of its own (core/tree.h). */
	struct rdm_tree tree;
	/* Read by every call (check_range()), written by none after create:
	 * away from the tree's writer state above and the lock below. */
	_Alignas(RDM_SPLIT) struct rdm_region_config cfg;
	/* Public change calls in progress (see change_enter()): written by
	 * every caller, so on lines of its own (core/wait.h, RDM_SPLIT). */
	_Alignas(RDM_SPLIT) atomic_uint inflight;
	/* The writer lock, taken by the applier (the worker) per batch. */
	_Alignas(RDM_SPLIT) pthread_mutex_t lock;
	struct rdm_listener *listeners;
	struct rdm_listener *tail_l;
	const struct rdm_applier_ops *applier;
	void *applier_ctx;
	/* Copies of the two above for submitters, which must not take the
	 * writer lock the applier holds while it applies: ctx is stored before
	 * ops with release (rdm_region_set_applier); a reader loads ops with
	 * acquire, then ctx. Installed once; removal is not concurrent with
	 * changes (the applier's own contract). */
	_Atomic(const struct rdm_applier_ops *) applier_pub;
	_Atomic(void *) applier_ctx_pub;
	/* Byte ranges a failed backend may still pin (rdm_region_pin): never
	 * released, whoever applies the region's changes now or later. Owned
	 * like the working version: by the thread applying changes. pin_all:
	 * a range could not be recorded, nothing is released any more. */
	struct rdm_pin {
		uint64_t offset, length;
	} *pins;
	uint32_t npins, pins_cap;
	bool pin_all;
	/* The working version holds a discard readers do not see yet ("Versions
	 * per batch"): owned like the working version, by the applier's thread. */
	bool discard_unpublished;
	/* While the tail is told a discard run by run ("The tail's view"):
	 * blocks [tail_from, tail_to) read from tail_root, the state before the
	 * discard. Empty (tail_from == tail_to) otherwise. Applier only. */
	uintptr_t tail_root;
	uint64_t tail_from, tail_to;
	struct rdm_mem mem;
	struct rdm_node node; /* where mem's memory and this struct are */
};

static uint64_t nblocks_of(const struct rdm_region *r, uint64_t bytes)
{
	return bytes >> r->shift;
}

/* ---- creation ---- */

static bool is_pow2(uint64_t x)
{
	return x != 0 && (x & (x - 1)) == 0;
}

int rdm_region_create(const struct rdm_region_config *cfg, struct rdm_region **out)
{
	struct rdm_region_config c;
	uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);
	struct rdm_region *r;
	struct rdm_node node;
	unsigned arena = 0;

	if (cfg == NULL || out == NULL)
		return rdm_fail(-EINVAL, "region create: NULL %s", cfg == NULL ? "config" : "out");
	if (cfg->struct_size < CONFIG_MIN_SIZE || cfg->struct_size > CONFIG_MAX_SIZE)
		return rdm_fail(-EINVAL, "region create: struct_size %u outside [%zu, %u]",
				cfg->struct_size, CONFIG_MIN_SIZE, CONFIG_MAX_SIZE);
	for (size_t i = sizeof(c); i < cfg->struct_size; i++) {
		if (((const unsigned char *)cfg)[i] != 0)
			return rdm_fail(-EINVAL,
					"region create: unknown config byte %zu is set (struct_size %u, "
					"known %zu)",
					i, cfg->struct_size, sizeof(c));
	}
	memset(&c, 0, sizeof(c));
	memcpy(&c, cfg, cfg->struct_size < sizeof(c) ? cfg->struct_size : sizeof(c));
	c.struct_size = sizeof(c);

	if (c.flags & ~(uint32_t)KNOWN_FLAGS)
		return rdm_fail(-EINVAL, "region create: unknown flags %#x",
				c.flags & ~(uint32_t)KNOWN_FLAGS);
	if (c.policy > RDM_POLICY_DEFER)
		return rdm_fail(-EINVAL, "region create: unknown map policy %u", c.policy);
	if (c.size == 0)
		return rdm_fail(-EINVAL, "region create: zero size");
	if (!is_pow2(c.block_size) || c.block_size < page)
		return rdm_fail(-EINVAL,
				"region create: block size %#llx is not a power of two >= the page "
				"size %#llx",
				(unsigned long long)c.block_size, (unsigned long long)page);
	if (c.size % c.block_size != 0)
		return rdm_fail(-EINVAL, "region create: size %#llx not a multiple of block size %#llx",
				(unsigned long long)c.size, (unsigned long long)c.block_size);
	if (c.size - 1 > UINT64_MAX - c.iova)
		return rdm_fail(-EINVAL, "region create: iova %#llx + size %#llx overflows",
				(unsigned long long)c.iova, (unsigned long long)c.size);
	if (c.iova % page != 0 || (uintptr_t)c.host_addr % page != 0)
		return rdm_fail(-EINVAL, "region create: iova %#llx or host address %p not page aligned",
				(unsigned long long)c.iova, c.host_addr);
	if (c.discard_unit == 0)
		c.discard_unit = c.block_size;
	if (!is_pow2(c.discard_unit) || c.discard_unit < c.block_size ||
	    c.size % c.discard_unit != 0)
		return rdm_fail(-EINVAL,
				"region create: discard unit %#llx is not a power-of-two multiple of "
				"the block size that divides the size",
				(unsigned long long)c.discard_unit);
	if (c.defer_budget == 0)
		c.defer_budget = c.size / 100 * RDM_DEFER_BUDGET_DEFAULT_PCT +
				 c.size % 100 * RDM_DEFER_BUDGET_DEFAULT_PCT / 100;
	if (c.defer_budget >= c.size)
		c.defer_budget = RDM_DEFER_BUDGET_NONE; /* the region cannot defer more */
	if (c.defer_budget != RDM_DEFER_BUDGET_NONE && c.defer_budget % c.discard_unit)
		c.defer_budget += c.discard_unit - c.defer_budget % c.discard_unit;
	if ((c.flags & RDM_REGION_NUMA_PREFERRED) && !(c.flags & RDM_REGION_NUMA_NODE))
		return rdm_fail(-EINVAL, "region create: RDM_REGION_NUMA_PREFERRED without RDM_REGION_NUMA_NODE");
	if (!(c.flags & RDM_REGION_NUMA_NODE))
		c.numa_node = -1;
	int err = rdm_node_resolve(c.flags & RDM_REGION_NUMA_NODE, c.numa_node, c.flags & RDM_REGION_NUMA_PREFERRED,
				   "region create", &node);

	if (err == 0)
		err = rdm_node_arena(&node, rdm_node_strict(&node), &arena);
	if (err)
		return err;

	/* Aligned: the tree's read-mostly line must not share a line with its
	 * writer state. On the node: the tree's writer state is in it. */
	r = rdm_arena_alloc(arena, sizeof(*r), _Alignof(struct rdm_region));
	if (r == NULL)
		return rdm_fail(-ENOMEM, "region create: out of memory");
	memset(r, 0, sizeof(*r));
	r->cfg = c;
	r->node = node;
	r->size = c.size;
	r->shift = (unsigned)__builtin_ctzll(c.block_size);
	r->nblocks = c.size >> r->shift;
	atomic_init(&r->dying, false);
	atomic_init(&r->applier_pub, NULL);
	atomic_init(&r->applier_ctx_pub, NULL);
	atomic_init(&r->inflight, 0);
	if (pthread_mutex_init(&r->lock, NULL) != 0) {
		rdm_arena_free(arena, r, sizeof(*r), _Alignof(struct rdm_region));
		return rdm_fail(-ENOMEM, "region create: cannot initialise the writer lock");
	}
	rdm_mem_init(&r->mem);
	rdm_mem_set_arena(&r->mem, arena);
	if (rdm_flat_fits(r->nblocks)) {
		struct rdm_flat *f;

		if (rdm_flat_create(r->nblocks, &r->mem, &f) != 0) {
			uint64_t nb = r->nblocks;

			pthread_mutex_destroy(&r->lock);
			rdm_arena_free(arena, r, sizeof(*r), _Alignof(struct rdm_region));
			return rdm_fail(-ENOMEM, "region create: out of memory for the flat view "
						 "(%llu blocks)",
					(unsigned long long)nb);
		}
		rdm_reader_init();
		r->flat = f;
	}
	rdm_tree_init(&r->tree, r->nblocks, &r->mem);
	r->tree.flat = (struct rdm_flat *)(uintptr_t)r->flat;
	*out = r;
	return 0;
}

static int change_enter(struct rdm_region *r, const char *what);
static void change_leave(struct rdm_region *r);

/* ---- small accessors ---- */

uint64_t rdm_region_granularity(const struct rdm_region *r)
{
	return r == NULL ? 0 : r->cfg.block_size;
}

uint64_t rdm_region_size(const struct rdm_region *r)
{
	return r == NULL ? 0 : r->cfg.size;
}

uint64_t rdm_region_defer_budget(const struct rdm_region *r)
{
	return r == NULL ? 0 : r->cfg.defer_budget;
}

const struct rdm_region_config *rdm_region_cfg(const struct rdm_region *r)
{
	return &r->cfg;
}

int rdm_region_get_config(const struct rdm_region *r, struct rdm_region_config *out)
{
	const size_t least = offsetof(struct rdm_region_config, size);

	if (r == NULL || out == NULL)
		return rdm_fail(-EINVAL, "region config: NULL %s", r == NULL ? "region" : "out");
	if (out->struct_size < least)
		return rdm_fail(-EINVAL, "region config: struct_size %" PRIu32 ", want at least %zu", out->struct_size,
				least);
	uint32_t size = out->struct_size;
	struct rdm_region_config cfg = r->cfg;

	/* A newer caller's fields past ours are left as they are; an older
	 * caller's struct ends before some of ours. */
	cfg.struct_size = size;
	memcpy(out, &cfg, size < sizeof(cfg) ? size : sizeof(cfg));
	return 0;
}

const struct rdm_tree *rdm_region_tree(const struct rdm_region *r)
{
	return &r->tree;
}

const struct rdm_mem *rdm_region_mem(const struct rdm_region *r)
{
	return &r->mem;
}

struct rdm_mem *rdm_region_mem_mut(struct rdm_region *r)
{
	return &r->mem;
}

/* ---- readers ---- */

static inline bool reader_enter(const struct rdm_region *r)
{
	rcu_read_lock();
	/* Relaxed: destroy stores dying and then waits for a grace period; a
	 * reader that misses the store is inside a read-side section that the
	 * grace period waits for, one that starts after it sees the store. */
	if (atomic_load_explicit(&r->dying, memory_order_relaxed)) {
		rcu_read_unlock();
		return false;
	}
	return true;
}

static inline void reader_leave(const struct rdm_region *r)
{
	rdm_tree_read_done(&r->tree);
	rcu_read_unlock();
}

/* ---- placement (rdm/numa.h) ---- */

struct ranges {
	const void **addr;
	size_t *len;
	size_t n, cap;
};

static int add_range(void *opaque, const void *p, size_t bytes)
{
	struct ranges *rg = opaque;

	if (rg->n == rg->cap) {
		size_t cap = rg->cap ? rg->cap * 2 : 64;
		const void **na = rdm_reallocarray(rg->addr, cap, sizeof(*na));

		if (!na)
			return -ENOMEM;
		rg->addr = na;
		size_t *nl = rdm_reallocarray(rg->len, cap, sizeof(*nl));

		if (!nl)
			return -ENOMEM;
		rg->len = nl;
		rg->cap = cap;
	}
	rg->addr[rg->n] = p;
	rg->len[rg->n++] = bytes;
	return 0;
}

int rdm_region_get_placement(struct rdm_region *r, struct rdm_placement *out)
{
	struct ranges rg = {0};
	struct rdm_placement pl;
	int err;

	if (r == NULL || out == NULL)
		return rdm_fail(-EINVAL, "region placement: NULL %s", r == NULL ? "region" : "out");
	if (out->struct_size < sizeof(pl))
		return rdm_fail(-EINVAL, "region placement: struct_size %u, want %zu", out->struct_size, sizeof(pl));
	pl.struct_size = out->struct_size;
	rdm_node_placement_init(&pl, &r->node);
	if (r->mem.arena)
		pl.flags |= RDM_PLACE_BOUND;
	if (!reader_enter(r))
		return rdm_fail(-EINVAL, "region placement: the region is being destroyed");
	/* The region itself (the tree's writer state is in it), the flat view,
	 * and every node of the version readers see now. */
	err = add_range(&rg, r, sizeof(*r));
	if (!err && r->flat)
		err = add_range(&rg, r->flat, r->flat->bytes);
	if (!err)
		err = rdm_tree_nodes(&r->tree, rdm_tree_snapshot(&r->tree), add_range, &rg);
	if (!err)
		err = rdm_node_census(&pl, rg.addr, rg.len, rg.n);
	reader_leave(r);
	rdm_free(rg.addr);
	rdm_free(rg.len);
	if (err)
		return rdm_fail(-ENOMEM, "region placement: out of memory");
	memcpy(out, &pl, sizeof(pl));
	return 0;
}

/* Block range of a query that must lie wholly inside the region. */
static bool whole_blocks(const struct rdm_region *r, uint64_t offset, uint64_t length,
			 uint64_t *s, uint64_t *e)
{
	/* offset < size, then 1 <= length <= size - offset: length - 1 wraps
	 * for 0. */
	if (r == NULL || offset >= r->size || length - 1 >= r->size - offset)
		return false;
	*s = offset >> r->shift;
	*e = ((offset + length - 1) >> r->shift) + 1;
	return true;
}

/* Block range of a query clipped to the region; false if empty. */
static bool clipped_blocks(const struct rdm_region *r, uint64_t offset, uint64_t length,
			   uint64_t *s, uint64_t *e)
{
	uint64_t end;

	if (length == 0 || offset >= r->size)
		return false;
	end = length > r->size - offset ? r->size : offset + length;
	*s = offset >> r->shift;
	*e = ((end - 1) >> r->shift) + 1;
	return true;
}

/* Out of line: query_all()'s flat path saves no registers for it. */
__attribute__((noinline)) static bool query_tree(const struct rdm_region *r, uint64_t s, uint64_t e, bool val)
{
	bool ret;

	if (!reader_enter(r))
		return false;
	ret = rdm_tree_all(&r->tree, rdm_tree_snapshot(&r->tree), s, e, val);
	reader_leave(r);
	return ret;
}

/* The view changed under the reader: read it again, and after
 * RDM_FLAT_TRIES reads let the tree answer, still inside the record (out of
 * line, so the fast path saves no registers). */
__attribute__((noinline, cold)) static bool query_flat_retry(const struct rdm_region *r,
							     struct rdm_reader *rd, uint64_t s,
							     uint64_t e, bool val)
{
	int ret = -1;

	for (int t = 1; t < RDM_FLAT_TRIES && ret < 0; t++)
		ret = rdm_flat_all(r->flat, s, e, val);
	if (ret < 0)
		ret = query_tree(r, s, e, val);
	rdm_reader_leave(rd);
	return ret != 0;
}

/*
 * A region with a flat view answers a short query from it, inside the
 * thread's reader record instead of an RCU section (flat.c's theory: 81
 * instructions against 159, or 207 through librdm.so). The record is
 * entered before dying is checked: the Dekker pair with destroy's
 * rdm_reader_wait(). Without a record (out of memory), a long range, or a
 * view that kept changing under the reader, the tree answers.
 *
 * Inlined into each query (always_inline): a copy per caller with `val`
 * constant, and the tree path out of line (query_tree), so the flat path
 * saves three registers instead of six and is entered without a second
 * jump. Through librdm.so, rdm-bench-state-shared case=single: frag went
 * from 0.94-0.96x the mutex peer's rate to 1.04-1.15x, sparse from
 * 1.16-1.17x to 1.23-1.24x (3 runs each, same machine and hour).
 */
__attribute__((always_inline)) static inline bool query_all(const struct rdm_region *r, uint64_t offset,
							     uint64_t length, bool val)
{
	const struct rdm_flat *f;
	struct rdm_reader *rd;
	uint64_t s, e;
	int ret;

	if (!whole_blocks(r, offset, length, &s, &e))
		return false;
	f = r->flat;
	if (f == NULL || e - s > RDM_FLAT_MAX_QUERY)
		return query_tree(r, s, e, val);
	rd = rdm_reader_enter(r);
	if (__builtin_expect(rd == NULL, 0))
		return query_tree(r, s, e, val);
	/* Relaxed: ordered after the record's store by rdm_reader_enter()'s
	 * barrier (with destroy's membarrier or its own fence). */
	ret = atomic_load_explicit(&r->dying, memory_order_relaxed) ? 0 : rdm_flat_all(f, s, e, val);
	if (__builtin_expect(ret < 0, 0))
		return query_flat_retry(r, rd, s, e, val);
	rdm_reader_leave(rd);
	return ret != 0;
}

bool rdm_is_populated(const struct rdm_region *r, uint64_t offset, uint64_t length)
{
	return query_all(r, offset, length, true);
}

bool rdm_is_discarded(const struct rdm_region *r, uint64_t offset, uint64_t length)
{
	return query_all(r, offset, length, false);
}

uint64_t rdm_populated_bytes(const struct rdm_region *r, uint64_t offset, uint64_t length)
{
	uint64_t s, e, n;

	if (r == NULL || !clipped_blocks(r, offset, length, &s, &e))
		return 0;
	if (r->flat != NULL && e - s <= RDM_FLAT_MAX_QUERY) {
		struct rdm_reader *rd = rdm_reader_enter(r);
		int64_t c = -1;

		if (rd != NULL) {
			/* Relaxed: as in query_all(). */
			c = atomic_load_explicit(&r->dying, memory_order_relaxed)
				    ? 0
				    : rdm_flat_count(r->flat, s, e);
			rdm_reader_leave(rd);
		}
		if (c >= 0)
			return (uint64_t)c << r->shift;
	}
	if (!reader_enter(r))
		return 0;
	n = rdm_tree_count(&r->tree, rdm_tree_snapshot(&r->tree), s, e);
	reader_leave(r);
	return n << r->shift;
}

struct replay_ctx {
	rdm_replay_fn fn;
	void *opaque;
	unsigned shift;
};

static int replay_cb(void *opaque, uint64_t s, uint64_t e)
{
	struct replay_ctx *c = opaque;
	int ret;

	rdm_callback_enter();
	ret = c->fn(c->opaque, s << c->shift, (e - s) << c->shift);
	rdm_callback_leave();

	/* A callback stops the replay with a negative value; a positive one is
	 * not part of the contract and is treated as "go on". */
	return ret < 0 ? ret : 0;
}

static int replay(const struct rdm_region *r, uint64_t offset, uint64_t length, rdm_replay_fn fn,
		  void *opaque, bool val)
{
	struct replay_ctx c = { .fn = fn, .opaque = opaque };
	uint64_t s, e;
	int ret;

	if (r == NULL || fn == NULL)
		return rdm_fail(-EINVAL, "replay: NULL %s", r == NULL ? "region" : "callback");
	c.shift = r->shift;
	if (!clipped_blocks(r, offset, length, &s, &e))
		return 0;
	if (!reader_enter(r))
		return rdm_fail(-ECANCELED, "replay: the region is being destroyed");
	ret = rdm_tree_runs(&r->tree, rdm_tree_snapshot(&r->tree), s, e, val, replay_cb, &c);
	reader_leave(r);
	return ret;
}

int rdm_replay_populated(const struct rdm_region *r, uint64_t offset, uint64_t length,
			 rdm_replay_fn fn, void *opaque)
{
	return replay(r, offset, length, fn, opaque, true);
}

int rdm_replay_discarded(const struct rdm_region *r, uint64_t offset, uint64_t length,
			 rdm_replay_fn fn, void *opaque)
{
	return replay(r, offset, length, fn, opaque, false);
}

/* ---- listeners (all under r->lock) ---- */

/*
 * A listener belongs to at most one region: rdm_listener_register() claims
 * l->rdm_region (NULL -> r) before it submits, so the same struct offered to
 * a second region, or twice to one, is refused at once; the claim is given
 * back when registration fails, when the listener is unregistered, or when
 * its region is destroyed. The field lives in a public struct, which cannot
 * be _Atomic (C++ and bindgen users include it), so it is accessed with the
 * compiler's __atomic builtins: acq_rel on the claim pairs with the release
 * store that gives it back, so a new owner sees every write the old region
 * made to the struct (rdm_next).
 */
static bool listener_claim(struct rdm_listener *l, struct rdm_region *r)
{
	struct rdm_region *none = NULL;

	return __atomic_compare_exchange_n(&l->rdm_region, &none, r, false, __ATOMIC_ACQ_REL,
					   __ATOMIC_ACQUIRE);
}

static void listener_release(struct rdm_listener *l)
{
	__atomic_store_n(&l->rdm_region, NULL, __ATOMIC_RELEASE);
}

/* The i-th listener told of changes: the registered ones, then the tail. */
static struct rdm_listener *listener_at(const struct rdm_region *r, size_t i)
{
	struct rdm_listener *l = r->listeners;

	while (l != NULL && i > 0) {
		l = l->rdm_next;
		i--;
	}
	return l != NULL ? l : r->tail_l;
}

/* The listeners told of changes in order, by pointer: the registered
 * ones, then the tail (first_told(), then next_told() until NULL). */
static struct rdm_listener *first_told(const struct rdm_region *r)
{
	return r->listeners != NULL ? r->listeners : r->tail_l;
}

static struct rdm_listener *next_told(const struct rdm_region *r, const struct rdm_listener *l)
{
	if (l == r->tail_l)
		return NULL;
	return l->rdm_next != NULL ? l->rdm_next : r->tail_l;
}

static bool listed(const struct rdm_region *r, const struct rdm_listener *l)
{
	for (const struct rdm_listener *x = r->listeners; x != NULL; x = x->rdm_next) {
		if (x == l)
			return true;
	}
	return false;
}

/* The listener's sub-range intersected with [s, e), in blocks. */
static bool clip_to(const struct rdm_region *r, const struct rdm_listener *l, uint64_t s,
		    uint64_t e, uint64_t *cs, uint64_t *ce)
{
	uint64_t ls = nblocks_of(r, l->offset), le = nblocks_of(r, l->offset + l->length);

	*cs = s > ls ? s : ls;
	*ce = e < le ? e : le;
	return *cs < *ce;
}

struct tell {
	struct rdm_region *r;
	struct rdm_listener *l;
	uint64_t refused_at;
	bool tail_view; /* a discard told to the tail run by run */
};

/* The listener calls, in blocks, marked as callbacks (core/callback.h).
 * A populate returns 0 or the listener's refusal: the contract asks for a
 * negative errno; anything else refuses too and is reported as a protocol
 * error. */
static int call_populate(const struct rdm_region *r, struct rdm_listener *l, uint64_t s, uint64_t e)
{
	int ret;

	rdm_callback_enter();
	ret = l->ops->populate(l, s << r->shift, (e - s) << r->shift);
	rdm_callback_leave();
	return ret <= 0 ? ret : -EPROTO;
}

static void call_discard(const struct rdm_region *r, struct rdm_listener *l, uint64_t s, uint64_t e)
{
	rdm_callback_enter();
	l->ops->discard(l, s << r->shift, (e - s) << r->shift);
	rdm_callback_leave();
}

static int tell_populate_cb(void *opaque, uint64_t s, uint64_t e)
{
	struct tell *t = opaque;
	int ret = call_populate(t->r, t->l, s, e);

	if (ret != 0)
		t->refused_at = s;
	return ret;
}

static int tell_discard_cb(void *opaque, uint64_t s, uint64_t e)
{
	struct tell *t = opaque;

	/* The tail now knows of the runs up to e: its view of the state is the
	 * new one below e, the old one above ("The tail's view"). */
	if (t->tail_view)
		t->r->tail_from = e;
	call_discard(t->r, t->l, s, e);
	return 0;
}

static int release_cb(void *opaque, uint64_t s, uint64_t e)
{
	struct rdm_region *r = opaque;

	rdm_region_release(r, s << r->shift, (e - s) << r->shift);
	return 0;
}

/* tell_populate()'s run walk: [cs, ce) clipped, not known whole. */
static __attribute__((noinline)) int tell_populate_runs(struct rdm_region *r, struct rdm_listener *l, uintptr_t root,
							bool val, uint64_t cs, uint64_t ce)
{
	struct tell t = { .r = r, .l = l };
	int ret = rdm_tree_runs(&r->tree, root, cs, ce, val, tell_populate_cb, &t);

	if (ret != 0 && t.refused_at > cs)
		rdm_tree_runs(&r->tree, root, cs, t.refused_at, val, tell_discard_cb, &t);
	return ret;
}

/* tell_discard()'s run walk: [cs, ce) clipped, not known whole. */
static __attribute__((noinline)) void tell_discard_runs(struct rdm_region *r, struct rdm_listener *l, uintptr_t root,
							 bool val, uint64_t cs, uint64_t ce)
{
	struct tell t = { .r = r, .l = l };

	/* The tail reads the state while it is told (rdm_region_applier_runs):
	 * until it has been told every run, show it the old state past the
	 * runs it knows of. A discard of the state `root` holds only (val). */
	t.tail_view = l == r->tail_l && val;
	if (t.tail_view) {
		r->tail_root = root;
		r->tail_from = cs;
		r->tail_to = ce;
	}
	rdm_tree_runs(&r->tree, root, cs, ce, val, tell_discard_cb, &t);
	r->tail_from = r->tail_to = 0;
}

/*
 * Tell l a populate of the runs of `val` state in `root` inside [s, e)
 * clipped to its sub-range. On refusal, l is told a discard of the runs it
 * accepted and the listener's error is returned. `whole`: the caller knows
 * every block of [s, e) is in `val` state in root, so the runs are the one
 * clipped range and no walk is needed: one listener call, inline (the
 * applier's usual change; the walk is out of line).
 */
static inline int tell_populate(struct rdm_region *r, struct rdm_listener *l, uintptr_t root, bool val,
				bool whole, uint64_t s, uint64_t e)
{
	uint64_t cs, ce;

	if (!clip_to(r, l, s, e, &cs, &ce))
		return 0;
	if (whole)
		return call_populate(r, l, cs, ce);
	return tell_populate_runs(r, l, root, val, cs, ce);
}

/* Tell l a discard of the runs of `val` state in `root` inside [s, e);
 * `whole` as for tell_populate(). */
static inline void tell_discard(struct rdm_region *r, struct rdm_listener *l, uintptr_t root, bool val,
				bool whole, uint64_t s, uint64_t e)
{
	uint64_t cs, ce;

	if (!clip_to(r, l, s, e, &cs, &ce))
		return;
	if (whole)
		call_discard(r, l, cs, ce);
	else
		tell_discard_runs(r, l, root, val, cs, ce);
}

/* ---- applying changes (under r->lock) ---- */

/* End a published change: its superseded state goes to reclamation now
 * without an applier; an applier's go on at the end of its batch, in
 * rdm_region_batch_end(); both in groups (below). */
/*
 * Retired nodes go to RCU in groups (tree.c "Retire groups":
 * RDM_TREE_RETIRE_GROUP entries, or at once for a replaced subtree), not
 * once per change: one call_rcu (and one wake of the call_rcu thread, which
 * on a busy host competes for the writer's and readers' CPUs) and one retire
 * batch per group. Measured with bench/state's writer (a change and a sim
 * call per toggle, two pinned CPUs): per-change call_rcu held the writer at
 * 260-310k changes/s against a 500k/s target, grouped it reaches
 * 480-500k/s. An applier's batches group the same way
 * (rdm_region_batch_end()). The cost is bounded memory: fewer than
 * RDM_TREE_RETIRE_GROUP single nodes wait per region until the group fills,
 * the applier leaves, or the region is destroyed.
 */
static void retire_change(struct rdm_region *r)
{
	rdm_tree_retire_later(&r->tree);
	if (r->applier == NULL && rdm_tree_retire_due(&r->tree))
		rdm_tree_retire_flush(&r->tree);
}

/* Publish the applier's working version, if one is open (populates accepted
 * since the last publish), as one version. */
static void publish_working(struct rdm_region *r)
{
	r->discard_unpublished = false;
	if (!rdm_tree_is_open(&r->tree))
		return;
	rdm_tree_publish(&r->tree);
	rdm_tree_retire_later(&r->tree);
}

/* End the applier's run of changes: publish the working version, then hand
 * the retired nodes on - all of them, or only when a group is due (tree.c
 * "Retire groups"). Under r->lock. */
static void end_working(struct rdm_region *r, bool all)
{
	publish_working(r);
	if (all || rdm_tree_retire_due(&r->tree))
		rdm_tree_retire_flush(&r->tree);
}

/* Tell listeners 0..k-1 a discard of what they were told, in reverse. */
static void untell_populate(struct rdm_region *r, size_t k, uintptr_t root, bool whole, uint64_t s,
			    uint64_t e)
{
	for (size_t j = k; j-- > 0;)
		tell_discard(r, listener_at(r, j), root, false, whole, s, e);
}

static int refused(struct rdm_region *r, struct rdm_listener *l, size_t k, int ret, uint64_t s, uint64_t e)
{
	if (l == r->tail_l && rdm_last_error()[0] != '\0')
		return ret; /* the IOMMU: its own message names the cause */
	return rdm_fail(ret, "populate [%#llx, +%#llx): refused by listener %zu (error %d)",
			(unsigned long long)(s << r->shift), (unsigned long long)((e - s) << r->shift), k,
			ret);
}

/* Strict mode's refusals, out of the way of the changes that pass. */
static __attribute__((cold, noinline)) int not_discarded(const struct rdm_region *r, uint64_t s, uint64_t e)
{
	return rdm_fail(-EEXIST, "populate [%#llx, +%#llx): a block is not discarded (strict mode)",
			(unsigned long long)(s << r->shift), (unsigned long long)((e - s) << r->shift));
}

static __attribute__((cold, noinline)) int not_populated(const struct rdm_region *r, uint64_t s, uint64_t e)
{
	return rdm_fail(-ENOENT, "discard [%#llx, +%#llx): a block is not populated (strict mode)",
			(unsigned long long)(s << r->shift), (unsigned long long)((e - s) << r->shift));
}

/*
 * Populate. Without an applier: build the new version, tell the listeners,
 * publish (or drop the version on a refusal). With one (batched): tell the
 * listeners against the working version, and only once all accepted add the
 * change to it (a refusal leaves the tree untouched, so nothing needs undoing
 * there); the working version is published by a later discard, a control
 * change or the end of the batch. If adding it runs out of memory after
 * every listener accepted, they are told a discard of it in reverse order,
 * as for a refusal, and the populate fails with -ENOMEM.
 */
static int apply_populate(struct rdm_region *r, uint64_t s, uint64_t e, bool batched)
{
	uintptr_t root = rdm_tree_working(&r->tree);
	/* Every block of [s, e) is discarded: strict mode checks it below,
	 * and a single block that is not populated is. */
	bool whole = (r->cfg.flags & RDM_REGION_STRICT) || e - s == 1;
	size_t n = 0;
	int ret;

	if ((r->cfg.flags & RDM_REGION_STRICT) && !rdm_tree_working_all(&r->tree, s, e, false))
		return not_discarded(r, s, e);
	/* Nothing to do if already populated (strict mode has just seen the
	 * nonempty range discarded). */
	if (!(r->cfg.flags & RDM_REGION_STRICT) && rdm_tree_working_all(&r->tree, s, e, true))
		return 0;
	if (!batched) {
		ret = rdm_tree_prepare(&r->tree, s, e, true);
		if (ret != 0)
			return rdm_fail(ret, "populate: out of memory for the new state");
	}

	rdm_error_clear();
	for (struct rdm_listener *l = first_told(r); l != NULL; l = next_told(r, l), n++) {
		ret = tell_populate(r, l, root, false, whole, s, e);
		if (ret == 0)
			continue;
		untell_populate(r, n, root, whole, s, e);
		if (!batched)
			rdm_tree_abort(&r->tree);
		return refused(r, l, n, ret, s, e);
	}
	if (batched) {
		ret = rdm_tree_prepare(&r->tree, s, e, true);
		if (ret != 0) {
			untell_populate(r, n, root, whole, s, e);
			return rdm_fail(ret, "populate: out of memory for the new state");
		}
		return 0;
	}
	rdm_tree_publish(&r->tree);
	retire_change(r);
	return 0;
}

/*
 * Discard. The new version - the working version (populates of the batch
 * accepted so far) plus this discard - is published before any listener is
 * told, then each is told the populated runs of the state before the
 * discard. That earlier state's replaced nodes are kept for the batch's
 * flush, so it stays readable here.
 */
static int apply_discard(struct rdm_region *r, uint64_t s, uint64_t e, bool strict, bool batched)
{
	uintptr_t root = rdm_tree_working(&r->tree);
	/* Every block of [s, e) is populated: strict mode checks it below,
	 * and a single block that is not discarded is. */
	bool whole = strict || e - s == 1;
	/* Only the applier's own tail listener is told, and it acts (unmap,
	 * release) only after rdm_region_publish_discards(): the publish waits
	 * for that, the batch's end or a control ("Versions per batch"). */
	bool later = batched && r->listeners == NULL;
	int ret;

	if (strict && !rdm_tree_working_all(&r->tree, s, e, true))
		return not_populated(r, s, e);
	/* Nothing to do if already discarded (strict mode has just seen the
	 * nonempty range populated). */
	if (!strict && rdm_tree_working_all(&r->tree, s, e, false))
		return 0;
	/* The listeners are told from root, the state before this discard:
	 * keep it readable, unless they are told [s, e) whole and the version
	 * is published now anyway (which ends the in-place writes too). */
	if (!whole || !later)
		rdm_tree_keep_working(&r->tree);
	ret = rdm_tree_prepare(&r->tree, s, e, false);
	if (ret != 0)
		return rdm_fail(ret, "discard: out of memory for the new state");
	if (later)
		r->discard_unpublished = true;
	else
		rdm_tree_publish(&r->tree);

	for (struct rdm_listener *l = first_told(r); l != NULL; l = next_told(r, l))
		tell_discard(r, l, root, true, whole, s, e);
	if (r->applier == NULL && r->cfg.release != NULL)
		rdm_tree_runs(&r->tree, root, s, e, true, release_cb, r);
	/* A version not yet published has retired nothing readers could hold;
	 * publish_working() hands its nodes on. */
	if (!later)
		retire_change(r);
	return 0;
}

static int apply_register(struct rdm_region *r, struct rdm_listener *l)
{
	uintptr_t root = rdm_tree_snapshot(&r->tree);
	struct rdm_listener **pp;
	int ret;

	if (listed(r, l) || l == r->tail_l)
		return rdm_fail(-EINVAL, "listener register: already registered");
	ret = tell_populate(r, l, root, true, false, 0, r->nblocks);
	if (ret != 0)
		return rdm_fail(ret, "listener register: the listener refused the replay (error %d)",
				ret);
	l->rdm_next = NULL;
	for (pp = &r->listeners; *pp != NULL; pp = &(*pp)->rdm_next)
		;
	*pp = l;
	return 0;
}

static int apply_unregister(struct rdm_region *r, struct rdm_listener *l)
{
	struct rdm_listener **pp;

	if (!listed(r, l))
		return rdm_fail(-ENOENT, "listener unregister: not registered on this region");
	tell_discard(r, l, rdm_tree_snapshot(&r->tree), true, false, 0, r->nblocks);
	for (pp = &r->listeners; *pp != l; pp = &(*pp)->rdm_next)
		;
	*pp = l->rdm_next;
	l->rdm_next = NULL;
	listener_release(l);
	return 0;
}

static int apply_locked(struct rdm_region *r, enum rdm_op op, uint64_t offset,
			uint64_t length, struct rdm_listener *l, bool batched)
{
	uint64_t s = nblocks_of(r, offset), e = nblocks_of(r, offset + length);

	/* A listener (un)registration sees, and is seen after, every earlier
	 * change of the batch: the working version is published first. */
	if (op == RDM_OP_REGISTER || op == RDM_OP_UNREGISTER)
		publish_working(r);
	switch (op) {
	case RDM_OP_POPULATE:
		return apply_populate(r, s, e, batched);
	case RDM_OP_DISCARD:
		return apply_discard(r, s, e, (r->cfg.flags & RDM_REGION_STRICT) != 0, batched);
	case RDM_OP_DISCARD_ALL:
		return apply_discard(r, 0, r->nblocks, false, batched);
	case RDM_OP_REGISTER:
		return apply_register(r, l);
	case RDM_OP_UNREGISTER:
		return apply_unregister(r, l);
	default: /* the worker's control changes are not the region's */
		break;
	}
	return rdm_fail(-EINVAL, "apply: operation %d is not a region change", (int)op);
}

int rdm_region_apply(struct rdm_region *r, enum rdm_op op, uint64_t offset,
		     uint64_t length, struct rdm_listener *l)
{
	int ret;

	if (r == NULL)
		return rdm_fail(-EINVAL, "apply: NULL region");
	pthread_mutex_lock(&r->lock);
	ret = apply_locked(r, op, offset, length, l, false);
	publish_working(r);
	pthread_mutex_unlock(&r->lock);
	return ret;
}

int rdm_region_apply_batched_locked(struct rdm_region *r, enum rdm_op op, uint64_t offset, uint64_t length)
{
	bool batched = r->applier != NULL;

	/* The applier's changes straight to their steps: through
	 * apply_locked(), which also holds the (un)registrations, a change
	 * paid ~16 more instructions of set-up (callgrind, bench pipeline). */
	if (op == RDM_OP_POPULATE)
		return apply_populate(r, nblocks_of(r, offset), nblocks_of(r, offset + length), batched);
	if (op == RDM_OP_DISCARD)
		return apply_discard(r, nblocks_of(r, offset), nblocks_of(r, offset + length),
				     (r->cfg.flags & RDM_REGION_STRICT) != 0, batched);
	return apply_locked(r, op, offset, length, NULL, batched);
}

int rdm_region_load(struct rdm_region *r, void (*get)(void *opaque, uint64_t first, uint64_t *words),
		    void *opaque)
{
	int ret;

	if (r == NULL || get == NULL)
		return rdm_fail(-EINVAL, "region load: NULL %s", r == NULL ? "region" : "source");
	if (rdm_check_may_block("region load") != 0)
		return -EDEADLK;
	ret = change_enter(r, "region load");
	if (ret != 0)
		return ret;
	pthread_mutex_lock(&r->lock);
	if (r->listeners != NULL || r->tail_l != NULL || r->applier != NULL ||
	    !rdm_tree_all(&r->tree, rdm_tree_snapshot(&r->tree), 0, r->nblocks, false)) {
		ret = rdm_fail(-EBUSY, "region load: the region has populated blocks, listeners or an "
				       "applier");
	} else {
		ret = rdm_tree_prepare_load(&r->tree, get, opaque);
		if (ret != 0) {
			ret = rdm_fail(ret, "region load: out of memory");
		} else {
			rdm_tree_publish(&r->tree);
			rdm_tree_retire(&r->tree);
		}
	}
	pthread_mutex_unlock(&r->lock);
	change_leave(r);
	return ret;
}

static void release_now(struct rdm_region *r, uint64_t offset, uint64_t length)
{
	rdm_callback_enter();
	r->cfg.release(r->cfg.release_opaque, offset, length);
	rdm_callback_leave();
}

void rdm_region_release(struct rdm_region *r, uint64_t offset, uint64_t length)
{
	uint64_t pos = offset, end = offset + length;

	if (r->cfg.release == NULL || r->pin_all)
		return;
	/* Readers see the blocks discarded before their memory goes. */
	rdm_region_publish_discards(r);
	if (r->npins == 0) {
		release_now(r, offset, length);
		return;
	}
	/* Around the pinned ranges (rare: a backend failed). */
	for (uint64_t a, z; rdm_region_next_unpinned(r, pos, end, &a, &z); pos = z)
		release_now(r, a, z - a);
}

void rdm_region_pin(struct rdm_region *r, uint64_t offset, uint64_t length)
{
	if (r->pin_all || length == 0)
		return;
	if (r->npins == r->pins_cap) {
		uint32_t cap = r->pins_cap ? r->pins_cap * 2 : 8;
		struct rdm_pin *nv = rdm_reallocarray(r->pins, cap, sizeof(*nv));

		if (nv == NULL) {
			r->pin_all = true;
			rdm_log(RDM_LOG_ERROR,
				"out of memory recording pinned bytes 0x%" PRIx64 "+0x%" PRIx64
				" of a failed backend: the region releases no memory from now on",
				offset, length);
			return;
		}
		r->pins = nv;
		r->pins_cap = cap;
	}
	r->pins[r->npins].offset = offset;
	r->pins[r->npins].length = length;
	r->npins++;
}

bool rdm_region_next_unpinned(const struct rdm_region *r, uint64_t offset, uint64_t end, uint64_t *start,
			      uint64_t *stop)
{
	uint64_t pos = offset, next = end;
	bool moved = true;

	if (r->pin_all)
		return false;
	/* Past every pin that covers pos (pins may overlap and come in any
	 * order: again until none does)... */
	while (moved && pos < end) {
		moved = false;
		for (uint32_t i = 0; i < r->npins; i++)
			if (r->pins[i].offset <= pos && pos - r->pins[i].offset < r->pins[i].length) {
				pos = r->pins[i].offset + r->pins[i].length;
				moved = true;
			}
	}
	if (pos >= end)
		return false;
	/* ...then up to the next pin's start. */
	for (uint32_t i = 0; i < r->npins; i++)
		if (r->pins[i].offset > pos && r->pins[i].offset < next)
			next = r->pins[i].offset;
	*start = pos;
	*stop = next;
	return true;
}

bool rdm_region_any_pinned(const struct rdm_region *r)
{
	return r->pin_all || r->npins != 0;
}

bool rdm_region_pins_all(const struct rdm_region *r)
{
	return r->pin_all;
}

/* ---- public change calls ---- */

static int change_enter(struct rdm_region *r, const char *what)
{
	/* Seq_cst, the Dekker pair with rdm_region_destroy(): either this load
	 * sees dying, or destroy's load of inflight sees this increment. */
	atomic_fetch_add_explicit(&r->inflight, 1, memory_order_seq_cst);
	if (atomic_load_explicit(&r->dying, memory_order_seq_cst)) {
		atomic_fetch_sub_explicit(&r->inflight, 1, memory_order_seq_cst);
		return rdm_fail(-ECANCELED, "%s: the region is being destroyed", what);
	}
	return 0;
}

static void change_leave(struct rdm_region *r)
{
	/* Seq_cst: pairs with destroy's wait; everything this call did happens
	 * before destroy goes on (also ordered by r->lock). */
	atomic_fetch_sub_explicit(&r->inflight, 1, memory_order_seq_cst);
}

static int submit(struct rdm_region *r, enum rdm_op op, uint64_t offset, uint64_t length,
		  struct rdm_listener *l, const char *what)
{
	const struct rdm_applier_ops *ops;
	void *ctx;
	int ret = rdm_check_may_block(what);

	if (ret != 0)
		return ret;
	ret = change_enter(r, what);
	if (ret != 0)
		return ret;
	/* Acquire: pairs with the release store in rdm_region_set_applier(). */
	ops = atomic_load_explicit(&r->applier_pub, memory_order_acquire);
	ctx = atomic_load_explicit(&r->applier_ctx_pub, memory_order_relaxed);
	if (ops == NULL) {
		pthread_mutex_lock(&r->lock);
		ops = r->applier; /* installed meanwhile? the lock decides */
		ctx = r->applier_ctx;
		if (ops == NULL) {
			ret = apply_locked(r, op, offset, length, l, false);
			pthread_mutex_unlock(&r->lock);
			change_leave(r);
			return ret;
		}
		pthread_mutex_unlock(&r->lock);
	}
	ret = ops->submit(ctx, r, op, offset, length, l);
	change_leave(r);
	return ret;
}

static int check_range(const struct rdm_region *r, uint64_t offset, uint64_t length,
		       const char *what)
{
	if (r == NULL)
		return rdm_fail(-EINVAL, "%s: NULL region", what);
	if (length == 0)
		return rdm_fail(-EINVAL, "%s: zero length", what);
	if (((offset | length) & (r->cfg.block_size - 1)) != 0)
		return rdm_fail(-EINVAL, "%s [%#llx, +%#llx): not aligned to the block size %#llx",
				what, (unsigned long long)offset, (unsigned long long)length,
				(unsigned long long)r->cfg.block_size);
	if (offset + length < offset)
		return rdm_fail(-EINVAL, "%s [%#llx, +%#llx): offset + length overflows", what,
				(unsigned long long)offset, (unsigned long long)length);
	if (offset + length > r->cfg.size)
		return rdm_fail(-ERANGE, "%s [%#llx, +%#llx): outside the region (size %#llx)", what,
				(unsigned long long)offset, (unsigned long long)length,
				(unsigned long long)r->cfg.size);
	/* A declared discard unit is all or nothing: one mapping each under
	 * the block policy, so a change that breaks one is refused. */
	if (((offset | length) & (r->cfg.discard_unit - 1)) != 0)
		return rdm_fail(-EINVAL, "%s [%#llx, +%#llx): breaks a discard unit of %#llx",
				what, (unsigned long long)offset, (unsigned long long)length,
				(unsigned long long)r->cfg.discard_unit);
	return 0;
}

int rdm_populate(struct rdm_region *r, uint64_t offset, uint64_t length)
{
	int ret = check_range(r, offset, length, "populate");

	return ret != 0 ? ret : submit(r, RDM_OP_POPULATE, offset, length, NULL, "populate");
}

int rdm_discard(struct rdm_region *r, uint64_t offset, uint64_t length)
{
	int ret = check_range(r, offset, length, "discard");

	return ret != 0 ? ret : submit(r, RDM_OP_DISCARD, offset, length, NULL, "discard");
}

int rdm_discard_all(struct rdm_region *r)
{
	if (r == NULL)
		return rdm_fail(-EINVAL, "discard_all: NULL region");
	return submit(r, RDM_OP_DISCARD_ALL, 0, r->cfg.size, NULL, "discard_all");
}

int rdm_listener_register(struct rdm_region *r, struct rdm_listener *l)
{
	int ret;

	if (l == NULL)
		return rdm_fail(-EINVAL, "listener register: NULL listener");
	if (l->ops == NULL || l->ops->populate == NULL || l->ops->discard == NULL)
		return rdm_fail(-EINVAL, "listener register: missing ops or callbacks");
	ret = check_range(r, l->offset, l->length, "listener register");
	if (ret != 0)
		return ret;
	if (!listener_claim(l, r))
		return rdm_fail(-EINVAL, "listener register: the listener is already registered%s",
				__atomic_load_n(&l->rdm_region, __ATOMIC_RELAXED) == r
					? " on this region"
					: " on another region");
	ret = submit(r, RDM_OP_REGISTER, 0, 0, l, "listener register");
	if (ret != 0)
		listener_release(l);
	return ret;
}

int rdm_listener_unregister(struct rdm_region *r, struct rdm_listener *l)
{
	if (r == NULL || l == NULL)
		return rdm_fail(-EINVAL, "listener unregister: NULL %s",
				r == NULL ? "region" : "listener");
	return submit(r, RDM_OP_UNREGISTER, 0, 0, l, "listener unregister");
}

int rdm_region_set_applier(struct rdm_region *r, const struct rdm_applier_ops *ops, void *ctx)
{
	int ret;

	if (r == NULL)
		return rdm_fail(-EINVAL, "set applier: NULL region");
	if (ops != NULL && (ops->submit == NULL || ops->destroy == NULL))
		return rdm_fail(-EINVAL, "set applier: ops without submit or destroy");
	ret = change_enter(r, "set applier");
	if (ret != 0)
		return ret;
	pthread_mutex_lock(&r->lock);
	if (ops != NULL && r->applier != NULL) {
		ret = rdm_fail(-EBUSY, "set applier: the region already has an applier");
	} else {
		r->applier = ops;
		r->applier_ctx = ops != NULL ? ctx : NULL;
		/* Relaxed, then release: pairs with the acquire load in
		 * submit() and rdm_region_get_applier_ops(). Removal clears ops
		 * first so no reader pairs old ops with a cleared ctx. */
		if (ops != NULL) {
			atomic_store_explicit(&r->applier_ctx_pub, ctx, memory_order_relaxed);
			atomic_store_explicit(&r->applier_pub, ops, memory_order_release);
		} else {
			atomic_store_explicit(&r->applier_pub, NULL, memory_order_release);
			atomic_store_explicit(&r->applier_ctx_pub, NULL, memory_order_relaxed);
			/* What the leaving applier kept (it may not have flushed). */
			end_working(r, true);
		}
	}
	pthread_mutex_unlock(&r->lock);
	change_leave(r);
	return ret;
}

void rdm_region_lock(struct rdm_region *r)
{
	pthread_mutex_lock(&r->lock);
}

void rdm_region_unlock(struct rdm_region *r)
{
	pthread_mutex_unlock(&r->lock);
}

void rdm_region_install_applier_locked(struct rdm_region *r, const struct rdm_applier_ops *ops, void *ctx,
				       struct rdm_listener *tail)
{
	r->applier = ops;
	r->applier_ctx = ctx;
	r->tail_l = tail;
	/* Relaxed, then release: pairs with the acquire load in submit() and
	 * rdm_region_get_applier_ops(), as in rdm_region_set_applier(). */
	atomic_store_explicit(&r->applier_ctx_pub, ctx, memory_order_relaxed);
	atomic_store_explicit(&r->applier_pub, ops, memory_order_release);
}

void rdm_region_set_tail_listener(struct rdm_region *r, struct rdm_listener *l)
{
	pthread_mutex_lock(&r->lock);
	r->tail_l = l;
	pthread_mutex_unlock(&r->lock);
}

/* ---- destroy ---- */

int rdm_region_destroy(struct rdm_region *r)
{
	const struct rdm_applier_ops *ops;
	void *ctx;
	uintptr_t root;

	if (r == NULL)
		return rdm_fail(-EINVAL, "region destroy: NULL region");
	if (rdm_check_may_block("region destroy") != 0)
		return -EDEADLK;
	/* Seq_cst: the Dekker pair with change_enter(). */
	if (atomic_exchange_explicit(&r->dying, true, memory_order_seq_cst))
		return rdm_fail(-ECANCELED, "region destroy: already being destroyed");
	/* Every reader that may have missed the flag leaves its section: the
	 * flat view's records, then RCU. */
	if (r->flat != NULL)
		rdm_reader_wait(r);
	synchronize_rcu();
	/* Seq_cst: pairs with change_enter()/change_leave(). */
	while (atomic_load_explicit(&r->inflight, memory_order_seq_cst) != 0) {
		struct timespec ts = { 0, 20000 };

		nanosleep(&ts, NULL);
	}

	pthread_mutex_lock(&r->lock);
	ops = r->applier;
	ctx = r->applier_ctx;
	pthread_mutex_unlock(&r->lock);
	if (ops != NULL)
		ops->destroy(ctx, r);

	pthread_mutex_lock(&r->lock);
	publish_working(r);
	root = rdm_tree_snapshot(&r->tree);
	for (struct rdm_listener *l = r->listeners, *next; l != NULL; l = next) {
		next = l->rdm_next;
		tell_discard(r, l, root, true, false, 0, r->nblocks);
		l->rdm_next = NULL;
		listener_release(l);
	}
	r->listeners = NULL;
	if (ops == NULL) {
		if (r->tail_l != NULL)
			tell_discard(r, r->tail_l, root, true, false, 0, r->nblocks);
		if (r->cfg.release != NULL)
			rdm_tree_runs(&r->tree, root, 0, r->nblocks, true, release_cb, r);
	}
	pthread_mutex_unlock(&r->lock);

	rdm_tree_fini(&r->tree);
	/* Retire callbacks of earlier changes reference r->mem and r->tree. */
	rcu_barrier();
	rdm_tree_barrier_done(&r->tree);
	rdm_flat_destroy(r->tree.flat);
	rdm_free(r->pins);
	pthread_mutex_destroy(&r->lock);
	rdm_arena_free(r->mem.arena, r, sizeof(*r), _Alignof(struct rdm_region));
	return 0;
}

/* ---- for the applier (core/region_internal.h) ---- */

void rdm_region_batch_end(struct rdm_region *r)
{
	pthread_mutex_lock(&r->lock);
	end_working(r, false);
	pthread_mutex_unlock(&r->lock);
}

void rdm_region_publish_discards(struct rdm_region *r)
{
	/* Pending only inside a change's application, under r->lock (see
	 * region_internal.h); false elsewhere, and then nothing is touched. */
	if (r->discard_unpublished)
		publish_working(r);
}

void rdm_region_retire_flush(struct rdm_region *r)
{
	pthread_mutex_lock(&r->lock);
	end_working(r, true);
	pthread_mutex_unlock(&r->lock);
}

bool rdm_region_applier_all(struct rdm_region *r, uint64_t offset, uint64_t length, bool populated)
{
	uint64_t s = nblocks_of(r, offset), e = nblocks_of(r, offset + length);
	bool ret;

	pthread_mutex_lock(&r->lock);
	ret = rdm_tree_all(&r->tree, rdm_tree_working(&r->tree), s, e, populated);
	pthread_mutex_unlock(&r->lock);
	return ret;
}

uint64_t rdm_region_versions(const struct rdm_region *r)
{
	return rdm_tree_versions(&r->tree);
}

size_t rdm_region_retired_kept(struct rdm_region *r)
{
	size_t n;

	pthread_mutex_lock(&r->lock);
	n = rdm_tree_retired_pending(&r->tree);
	pthread_mutex_unlock(&r->lock);
	return n;
}

const struct rdm_applier_ops *rdm_region_get_applier_ops(struct rdm_region *r)
{
	/* Acquire: pairs with the release store in rdm_region_set_applier(). */
	return atomic_load_explicit(&r->applier_pub, memory_order_acquire);
}

void *rdm_region_get_applier_ctx(struct rdm_region *r)
{
	/* Acquire on ops first, so ctx is at least as new as the ops seen. */
	if (atomic_load_explicit(&r->applier_pub, memory_order_acquire) == NULL)
		return NULL;
	return atomic_load_explicit(&r->applier_ctx_pub, memory_order_relaxed);
}

int rdm_region_check_range(const struct rdm_region *r, uint64_t offset, uint64_t length)
{
	return check_range(r, offset, length, "change");
}

int rdm_region_enter(struct rdm_region *r)
{
	if (r == NULL)
		return rdm_fail(-EINVAL, "NULL region");
	return change_enter(r, "change");
}

void rdm_region_leave(struct rdm_region *r)
{
	change_leave(r);
}

/*
 * The tail's view. A discard that is not told whole reaches the tail as one
 * call per populated run, in ascending order, after the working version
 * already holds the whole discard. The tail (the planner) reads the state
 * between those calls - a split maps a mapping's populated runs and
 * releases the rest - and must see exactly what it has been told: the runs
 * it knows of discarded, the later ones still populated. Otherwise a split
 * at the first run releases the blocks of a later run too, and the later
 * run, which then lies in no mapping, is released again (found by fuzzing:
 * a defer mapping past its limit, a lenient discard of two runs in it). So
 * while the tail is told, [tail_from, tail_to) - from the end of the run it
 * is told to the end of the discard - reads from the state before the
 * discard, the rest from the working version, and runs that meet at a
 * boundary are given as one.
 */
int rdm_region_applier_runs(struct rdm_region *r, uint64_t offset, uint64_t length, bool populated,
			    rdm_replay_fn fn, void *opaque)
{
	struct replay_ctx c = { .fn = fn, .opaque = opaque, .shift = r->shift };
	struct rdm_tree_seg seg[3];
	unsigned n = 1;
	uint64_t s, e;
	int ret;

	if (!clipped_blocks(r, offset, length, &s, &e))
		return 0;
	/* The applier's own view: no dying check (destroy's teardown runs on
	 * the applier after dying is set), and the working version of its
	 * batch - every change it applied, published or not - which only the
	 * applier's thread writes (under the lock, which it may hold here: the
	 * planner asks from inside listener callbacks); while the tail is told
	 * a discard, the tail's view above. */
	rcu_read_lock();
	seg[0] = (struct rdm_tree_seg){ .root = rdm_tree_working(&r->tree), .s = s, .e = e };
	if (r->tail_from < r->tail_to && e > r->tail_from && s < r->tail_to) {
		uint64_t a = s > r->tail_from ? s : r->tail_from, b = e < r->tail_to ? e : r->tail_to;

		seg[0].e = a;
		seg[1] = (struct rdm_tree_seg){ .root = r->tail_root, .s = a, .e = b };
		seg[2] = (struct rdm_tree_seg){ .root = seg[0].root, .s = b, .e = e };
		n = 3;
	}
	ret = rdm_tree_runs_spliced(&r->tree, seg, n, populated, replay_cb, &c);
	rdm_tree_read_done(&r->tree);
	rcu_read_unlock();
	return ret;
}
