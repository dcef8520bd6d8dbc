/* tests/vm/vm_numa.c - NUMA placement in a two-node guest: regions, workers and rings on the node asked for, checked by the kernel; two workers on two nodes; local vs remote pipeline cost. */
#include "guest_util.h"

#include <errno.h>
#include <inttypes.h>
#include <numaif.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <urcu-bp.h>

#include <rdm/rdm.h>

#include "core/flat.h"
#include "core/region_internal.h"
#include "core/tree.h"
#include "iommu/producer.h"

/*
 * The guest (run-vm.py --numa 2) has two nodes of one CPU each: node i holds CPU i and 2 GiB.
 * Every structure's node is asked of the kernel twice: by rdm's placement calls (rdm/numa.h)
 * and here, independently, with get_mempolicy(MPOL_F_NODE | MPOL_F_ADDR) on memory known to be
 * live: the nodes of the region's current tree version (walked from its root), its flat view,
 * and every page of a producer's ring once more records than the ring holds went through it
 * (so every page of it was written).
 *
 * 1. errors: node 2 (absent) is -EINVAL for a region, a worker and a producer's ring; with the
 *    PREFERRED flag a region and a worker fall back to the caller's node and say so.
 * 2. placement, for node 1 and node 0, created from a thread on the other node's CPU (so the
 *    caller's node is the wrong answer): a worker on the node, a region on the node attached to
 *    it through a sim, a few thousand random populates and discards from a producer on the
 *    other node (its ring must still be on the worker's node) and then from a producer whose
 *    ring is deliberately on the other node (RDM_PRODUCER_RING_NODE).
 * 3. two workers on two nodes: the same randomized load (strict regions, bursts of up to 64
 *    changes against a bitmap oracle, a listener that burns 100 us of CPU per change so that
 *    the workers, not the pipeline, are the bottleneck) from one producer thread per node,
 *    served by one worker, then by one worker per node, alternately. Prints changes/s of both;
 *    checks correctness and that the two workers ran in parallel, never a time or the ratio.
 * 4. benchmark: per-change pipeline cost (producer -> ring -> worker -> sim, 64 tickets in
 *    flight) with everything on node 0, and with the region's state and the producer's ring on
 *    node 1 (the worker and producer still on node 0); repetitions interleaved, median.
 *
 * Environment: RDM_VM_NUMA_CHANGES (changes per producer thread per phase of 3, default 4096),
 * RDM_VM_NUMA_REPS (repetitions of 3, default 3), RDM_VM_NUMA_BENCH_REPS (of 4, default 7),
 * RDM_VM_NUMA_BURN_NS (work per change in 3, default 100000).
 */

/* Resolved when jemalloc is linked in (the link pulls it with -u mallocx): rdm's allocations
 * then come from node-bound arenas and its placement says RDM_PLACE_BOUND. */
extern void *mallocx(size_t size, int flags) __attribute__((weak));

#define HOST_BASE 0x7f0000000000ull /* never dereferenced: no release callback */
#define PAGE 4096u
#define PL_BLOCKS 65536u  /* placement regions: 256 MiB of 4 KiB blocks, a tree of 16 leaves */
#define PL_CHANGES 3000u  /* changes from the producer on the other node */
#define PL_RING 256u      /* ring capacity of the placement workers */
#define PL_REMOTE_CHANGES (3 * PL_RING) /* from the producer with the remote ring */
#define TP_BLOCKS 1024u   /* throughput regions */
#define BURST 64u
#define BN_BLOCKS 4096u   /* benchmark regions: even blocks change, odd ones stay populated */
#define WINDOW 64u

static int cpu_of[2];  /* the CPU of node i */
static bool have_jemalloc;

/* ------------------------------------------------------------ helpers */

static uint64_t rnd(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int pin_to(int cpu)
{
	cpu_set_t set;

	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	return sched_setaffinity(0, sizeof(set), &set) == 0 ? 0 : -errno;
}

/* Both nodes' CPUs: a worker is pinned to those CPUs of its node that its creator may use. */
static int pin_to_both(void)
{
	cpu_set_t set;

	CPU_ZERO(&set);
	CPU_SET(cpu_of[0], &set);
	CPU_SET(cpu_of[1], &set);
	return sched_setaffinity(0, sizeof(set), &set) == 0 ? 0 : -errno;
}

/* The first CPU of node n from sysfs, or -1. */
static int first_cpu_of_node(int n)
{
	char path[96];
	int cpu = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/sys/devices/system/node/node%d/cpulist", n);
	f = fopen(path, "r");
	if (!f)
		return -1;
	if (fscanf(f, "%d", &cpu) != 1)
		cpu = -1;
	fclose(f);
	return cpu;
}

/* The node of the page at addr, as the kernel sees it, or -errno. */
static int page_node(const void *addr)
{
	int node = -1;

	if (get_mempolicy(&node, NULL, 0, (void *)(uintptr_t)addr, MPOL_F_NODE | MPOL_F_ADDR) != 0)
		return -errno;
	return node;
}

/* Pages of several ranges asked one by one; a page repeated right after itself counts once. */
struct pages {
	int want;
	uint64_t pages, on, off, err, ranges;
	uintptr_t last;
	int first_off_node;
	uintptr_t first_off;
};

static void pages_check(struct pages *pc, const void *p, size_t len)
{
	uintptr_t a = (uintptr_t)p & ~(uintptr_t)(PAGE - 1), end = (uintptr_t)p + len;

	pc->ranges++;
	for (; a < end; a += PAGE) {
		int n;

		if (a == pc->last)
			continue;
		pc->last = a;
		pc->pages++;
		n = page_node((const void *)a);
		if (n < 0) {
			pc->err++;
		} else if (n == pc->want) {
			pc->on++;
		} else {
			if (!pc->off)
				pc->first_off = a, pc->first_off_node = n;
			pc->off++;
		}
	}
}

static bool pages_ok(const struct pages *pc)
{
	return pc->pages > 0 && pc->on == pc->pages && pc->off == 0 && pc->err == 0;
}

static void pages_diag(const char *what, const struct pages *pc)
{
	gu_tap_diag("%s: %" PRIu64 " ranges, %" PRIu64 " pages: %" PRIu64 " on node %d, %" PRIu64
		    " elsewhere%s, %" PRIu64 " unknown", what, pc->ranges, pc->pages, pc->on, pc->want, pc->off,
		    pc->off ? " (the first one" : "", pc->err);
	if (pc->off)
		gu_tap_diag("%s: first page elsewhere: %#" PRIxPTR " on node %d)", what, pc->first_off,
			    pc->first_off_node);
}

/* Every node of the region's current tree version and its flat view. The tree walk repeats
 * tree.c's slot encoding (tree.h): EMPTY, FULL, extent leaf (tag 2), bitmap leaf (tag 1, 512
 * bytes), inner node (tag 0: root_fan slots at the root level, 64 below). */
static void tree_walk(const struct rdm_tree *t, uintptr_t v, unsigned level, struct pages *pc, uint64_t *nodes)
{
	const void *p;

	if (v == RDM_TREE_EMPTY || v == RDM_TREE_FULL)
		return;
	p = rdm_tree_ptr(v);
	(*nodes)++;
	if ((v & 3) == RDM_TREE_T_EXT) {
		const struct rdm_tree_ext *x = p;

		pages_check(pc, p, sizeof(*x) + 2 * sizeof(uint64_t) * x->n);
	} else if ((v & 3) == 1) {
		pages_check(pc, p, (size_t)1 << (RDM_TREE_LEAF_SHIFT - 3));
	} else {
		unsigned fan = level == t->root_level ? t->root_fan : 1u << RDM_TREE_FAN_SHIFT;

		pages_check(pc, p, fan * sizeof(uintptr_t));
		for (unsigned i = 0; i < fan && level > 0; i++)
			tree_walk(t, ((const uintptr_t *)p)[i], level - 1, pc, nodes);
	}
}

static uint64_t region_pages(struct rdm_region *r, struct pages *pc)
{
	const struct rdm_tree *t = rdm_region_tree(r);
	uint64_t nodes = 0;

	urcu_bp_read_lock();
	tree_walk(t, rdm_tree_snapshot(t), t->root_level, pc, &nodes);
	if (t->flat)
		pages_check(pc, t->flat, t->flat->bytes);
	urcu_bp_read_unlock();
	return nodes;
}

/* Every page of the ring of producer p's n-th link (the order of the workers it first used). */
static bool ring_pages(struct rdm_producer *p, uint32_t n, struct pages *pc)
{
	struct rdm_ring *ring;

	if (n >= p->nlinks || !(ring = p->links[n]->ring))
		return false;
	pages_check(pc, ring->ctl.map, ring->ctl.map_size);
	return true;
}

static void placement_diag(const char *what, const struct rdm_placement *pl)
{
	gu_tap_diag("%s: flags %#x node %d (requested %d) bytes %" PRIu64 " pages %" PRIu64 " (on the node %" PRIu64
		    ", elsewhere %" PRIu64 ", absent %" PRIu64 ")", what, pl->flags, pl->node, pl->node_requested, pl->bytes,
		    pl->pages, pl->pages_on_node, pl->pages_elsewhere, pl->pages_absent);
}

static int region_placement(struct rdm_region *r, struct rdm_placement *pl)
{
	memset(pl, 0, sizeof(*pl));
	pl->struct_size = sizeof(*pl);
	return rdm_region_get_placement(r, pl);
}

static int worker_placement(struct rdm_worker *w, struct rdm_worker_placement *wp)
{
	memset(wp, 0, sizeof(*wp));
	wp->struct_size = sizeof(*wp);
	return rdm_worker_get_placement(w, wp);
}

static void worker_placement_diag(const char *what, const struct rdm_worker_placement *wp)
{
	char buf[96];

	gu_tap_diag("%s: cpu %d ncpus %u rings %u rings_on_node %u", what, wp->cpu, wp->ncpus, wp->rings,
		    wp->rings_on_node);
	snprintf(buf, sizeof(buf), "%s state", what);
	placement_diag(buf, &wp->state);
	snprintf(buf, sizeof(buf), "%s ring memory", what);
	placement_diag(buf, &wp->ring_memory);
}

/* CPU work of about burn_ns, calibrated once: a chain of multiplications the compiler cannot
 * drop. */
static uint64_t burn_iters = 1000;
static volatile uint64_t burn_sink;

static void burn(uint64_t iters)
{
	uint64_t x = iters | 1;

	for (uint64_t i = 0; i < iters; i++)
		x = x * 6364136223846793005ull + 1442695040888963407ull;
	burn_sink = x;
}

static void burn_calibrate(uint64_t ns)
{
	uint64_t best = UINT64_MAX, n = 100000;

	for (int i = 0; i < 5; i++) {
		uint64_t t0 = now_ns();

		burn(n);
		if (now_ns() - t0 < best)
			best = now_ns() - t0;
	}
	burn_iters = best ? n * ns / best : n;
	if (!burn_iters)
		burn_iters = 1;
	gu_tap_diag("burn: %" PRIu64 " iterations ~ %" PRIu64 " ns (100000 took %" PRIu64 " ns)", burn_iters, ns,
		    best);
}

/* A listener run by the region's worker: counts calls, the calls on another CPU than expected,
 * burns `iters` per call, and keeps the first and last time it ran and how often the other
 * listener of its pair was inside its own call on another CPU at the same moment. */
struct cpu_listener {
	struct rdm_listener l;
	int expect_cpu;
	uint64_t iters;
	_Atomic uint64_t calls, wrong, both;
	_Atomic uint64_t first_ns, last_ns;
	_Atomic int inside, cur_cpu;
	struct cpu_listener *peer;
	int last_wrong_cpu; /* -1: none */
};

static void cpu_listener_note(struct cpu_listener *c)
{
	int cpu = sched_getcpu();
	uint64_t t = now_ns(), zero = 0;

	/* Relaxed throughout: counters read by the main thread after rdm_worker_flush() (whose
	 * completion orders the worker's callbacks before the flush returns). */
	/* In parallel: the peer is inside its call on another CPU (on the same CPU it could only
	 * have been preempted there). */
	atomic_store_explicit(&c->cur_cpu, cpu, memory_order_relaxed);
	atomic_store_explicit(&c->inside, 1, memory_order_relaxed);
	if (c->peer && atomic_load_explicit(&c->peer->inside, memory_order_relaxed) &&
	    atomic_load_explicit(&c->peer->cur_cpu, memory_order_relaxed) != cpu)
		atomic_fetch_add_explicit(&c->both, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&c->calls, 1, memory_order_relaxed);
	if (cpu != c->expect_cpu) {
		c->last_wrong_cpu = cpu;
		atomic_fetch_add_explicit(&c->wrong, 1, memory_order_relaxed);
	}
	atomic_compare_exchange_strong_explicit(&c->first_ns, &zero, t, memory_order_relaxed, memory_order_relaxed);
	if (c->iters)
		burn(c->iters);
	atomic_store_explicit(&c->last_ns, now_ns(), memory_order_relaxed);
	atomic_store_explicit(&c->inside, 0, memory_order_relaxed);
}

static int cpu_listener_populate(struct rdm_listener *l, uint64_t offset, uint64_t length)
{
	(void)offset, (void)length;
	cpu_listener_note((struct cpu_listener *)l);
	return 0;
}

static void cpu_listener_discard(struct rdm_listener *l, uint64_t offset, uint64_t length)
{
	(void)offset, (void)length;
	cpu_listener_note((struct cpu_listener *)l);
}

static const struct rdm_listener_ops cpu_listener_ops = {
	.populate = cpu_listener_populate,
	.discard = cpu_listener_discard,
};

static void cpu_listener_reset(struct cpu_listener *c)
{
	atomic_store(&c->calls, 0);
	atomic_store(&c->wrong, 0);
	atomic_store(&c->both, 0);
	atomic_store(&c->first_ns, 0);
	atomic_store(&c->last_ns, 0);
}

/* The worker's on_batch: the CPU of every batch. */
struct batch_cpu {
	int expect_cpu;
	_Atomic uint64_t batches, wrong;
	int last_wrong_cpu; /* -1: none */
};

static void batch_cpu_note(void *opaque, uint64_t batch_no, uint32_t changes)
{
	struct batch_cpu *b = opaque;
	int cpu = sched_getcpu();

	(void)batch_no, (void)changes;
	atomic_fetch_add_explicit(&b->batches, 1, memory_order_relaxed);
	if (cpu != b->expect_cpu) {
		b->last_wrong_cpu = cpu;
		atomic_fetch_add_explicit(&b->wrong, 1, memory_order_relaxed);
	}
}

static int make_worker(int node, uint32_t flags, uint32_t ring, struct batch_cpu *bc, struct rdm_worker **w)
{
	struct rdm_worker_config wc = {
		.struct_size = sizeof(wc),
		.ring_capacity = ring,
		.on_batch = bc ? batch_cpu_note : NULL,
		.on_batch_opaque = bc,
		.flags = flags,
		.numa_node = node,
	};

	int err = rdm_worker_create(&wc, w);

	if (err)
		gu_tap_diag("worker on node %d (flags %#x): %s: %s", node, flags, strerror(-err), rdm_last_error());
	return err;
}

/* A region of nb 4 KiB blocks at iova on node `node` (flags RDM_REGION_*), attached to w through
 * a fresh unlimited sim. */
static int make_region(struct rdm_worker *w, uint64_t iova, uint32_t nb, uint32_t flags, int node,
		       struct rdm_backend **b, struct rdm_region **r)
{
	struct rdm_sim_config sc = { .struct_size = sizeof(sc), .limit = RDM_SIM_UNLIMITED };
	struct rdm_region_config rc = {
		.struct_size = sizeof(rc),
		.flags = flags,
		.iova = iova,
		.size = (uint64_t)nb * PAGE,
		.block_size = PAGE,
		.host_addr = (void *)(uintptr_t)(HOST_BASE + iova),
		.policy = RDM_POLICY_BLOCK,
		.numa_node = node,
	};
	int err;

	*b = NULL;
	*r = NULL;
	err = rdm_backend_sim_create(&sc, b);
	if (!err)
		err = rdm_worker_add_backend(w, *b, 0);
	if (!err)
		err = rdm_region_create(&rc, r);
	if (!err)
		err = rdm_worker_attach(w, *r, *b);
	if (err)
		gu_tap_diag("region at %#" PRIx64 " on node %d: %s: %s", iova, node, strerror(-err), rdm_last_error());
	return err;
}

/* ------------------------------------------------------------ 1. errors */

static void test_errors(void)
{
	struct rdm_region_config rc = {
		.struct_size = sizeof(rc),
		.flags = RDM_REGION_NUMA_NODE,
		.iova = 0,
		.size = 64 * PAGE,
		.block_size = PAGE,
		.host_addr = (void *)(uintptr_t)HOST_BASE,
		.numa_node = 2,
	};
	struct rdm_producer_config pc = { .struct_size = sizeof(pc), .flags = RDM_PRODUCER_RING_NODE, .ring_node = 2 };
	struct rdm_region *r = NULL;
	struct rdm_worker *w = NULL;
	struct rdm_producer *p = NULL;
	struct rdm_placement pl;
	struct rdm_worker_placement wp;
	int err, here = rdm_numa_current_node();

	gu_tap_ok(here == 0, "errors: the caller (pinned to CPU %d) is on node 0 (rdm_numa_current_node %d)", cpu_of[0],
		  here);
	err = rdm_region_create(&rc, &r);
	gu_tap_ok(err == -EINVAL && !r, "errors: a region on node 2 (absent) is -EINVAL (got %d: %s)", err,
		  rdm_last_error());
	if (r)
		rdm_region_destroy(r), r = NULL;
	err = make_worker(2, RDM_WORKER_NUMA_NODE, 0, NULL, &w);
	gu_tap_ok(err == -EINVAL && !w, "errors: a worker on node 2 is -EINVAL (got %d: %s)", err, rdm_last_error());
	if (w)
		rdm_worker_destroy(w), w = NULL;
	err = rdm_producer_create_ex(&pc, &p);
	gu_tap_ok(err == -EINVAL && !p, "errors: a producer ring on node 2 is -EINVAL (got %d: %s)", err,
		  rdm_last_error());
	if (p)
		rdm_producer_destroy(p), p = NULL;

	/* A device's node: edu sits on q35's root bus, which the platform gives no node. */
	{
		const char *bdf = getenv("RDM_VM_BDF");
		int32_t dn = -5;

		err = rdm_numa_node_of_pci(bdf ? bdf : "", &dn);
		gu_tap_ok(err == 0 && dn >= -1 && dn <= 1, "errors: rdm_numa_node_of_pci(%s): 0, node -1..1 (got %d, node %d)",
			  bdf ? bdf : "(unset)", err, dn);
		err = rdm_numa_node_of_pci("0000:00:1f.7", &dn);
		gu_tap_ok(err == -ENOENT, "errors: ...of a device that does not exist: -ENOENT (got %d)", err);
		err = rdm_numa_node_of_pci("00:02.0", &dn);
		gu_tap_ok(err == -EINVAL, "errors: ...of a malformed address: -EINVAL (got %d)", err);
	}

	/* RDM_WORKER_NO_PIN: the node's memory, the creator's CPUs (here node 0's only). */
	err = make_worker(1, RDM_WORKER_NUMA_NODE | RDM_WORKER_NO_PIN, 0, NULL, &w);
	if (gu_tap_ok(err == 0, "errors: a worker on node 1 with RDM_WORKER_NO_PIN, made on CPU %d (got %d)", cpu_of[0],
		      err)) {
		rdm_worker_flush(w);
		err = worker_placement(w, &wp);
		worker_placement_diag("errors: worker on node 1, not pinned", &wp);
		gu_tap_ok(err == 0 && wp.state.node == 1 && wp.state.pages_elsewhere == 0 && wp.state.pages_on_node > 0 &&
				  wp.ncpus == 1 && (wp.cpu == -1 || wp.cpu == cpu_of[0]),
			  "errors: ...its state on node 1, its thread on the creator's CPU %d (got %d: node %d, %" PRIu64
			  " pages elsewhere, ncpus %u, cpu %d)", cpu_of[0], err, wp.state.node, wp.state.pages_elsewhere,
			  wp.ncpus, wp.cpu);
		rdm_worker_destroy(w);
		w = NULL;
	}

	/* Preferred: falls back to the caller's node, and says so. */
	rc.flags = RDM_REGION_NUMA_NODE | RDM_REGION_NUMA_PREFERRED;
	err = rdm_region_create(&rc, &r);
	if (gu_tap_ok(err == 0, "errors: a region preferring node 2 is created (got %d: %s)", err,
		      err ? rdm_last_error() : "")) {
		err = region_placement(r, &pl);
		placement_diag("errors: region preferring node 2", &pl);
		gu_tap_ok(err == 0 && (pl.flags & RDM_PLACE_FALLBACK) && (pl.flags & RDM_PLACE_PREFERRED) && pl.node == 0 &&
				  pl.node_requested == 2,
			  "errors: ...its placement says FALLBACK to node 0 (the caller's), requested 2 (got %d, flags %#x, "
			  "node %d, requested %d)", err, pl.flags, pl.node, pl.node_requested);
		gu_tap_ok(pl.pages_elsewhere == 0, "errors: ...and no page of it is elsewhere than node 0 (%" PRIu64 ")",
			  pl.pages_elsewhere);
		rdm_region_destroy(r);
		r = NULL;
	}
	rc.numa_node = 1;
	err = rdm_region_create(&rc, &r);
	if (gu_tap_ok(err == 0, "errors: a region preferring node 1 (present) is created (got %d)", err)) {
		err = region_placement(r, &pl);
		gu_tap_ok(err == 0 && !(pl.flags & RDM_PLACE_FALLBACK) && pl.node == 1,
			  "errors: ...on node 1, no fallback (got %d, flags %#x, node %d)", err, pl.flags, pl.node);
		rdm_region_destroy(r);
		r = NULL;
	}

	err = make_worker(2, RDM_WORKER_NUMA_NODE | RDM_WORKER_NUMA_PREFERRED, 0, NULL, &w);
	if (gu_tap_ok(err == 0, "errors: a worker preferring node 2 is created (got %d: %s)", err,
		      err ? rdm_last_error() : "")) {
		rdm_worker_flush(w);
		err = worker_placement(w, &wp);
		worker_placement_diag("errors: worker preferring node 2", &wp);
		gu_tap_ok(err == 0 && (wp.state.flags & RDM_PLACE_FALLBACK) && wp.state.node == 0 &&
				  wp.state.node_requested == 2,
			  "errors: ...its placement says FALLBACK to node 0, requested 2 (got %d, flags %#x, node %d, "
			  "requested %d)", err, wp.state.flags, wp.state.node, wp.state.node_requested);
		gu_tap_ok(wp.ncpus == 1 && (wp.cpu == -1 || wp.cpu == cpu_of[0]),
			  "errors: ...and it is pinned to node 0's CPU (ncpus %u, cpu %d)", wp.ncpus, wp.cpu);
		rdm_worker_destroy(w);
	}
}

/* ------------------------------------------------------------ 2. placement */

/* Random lenient populates and discards of 1..64 blocks through producer p in bursts; returns
 * the changes whose result was not 0. The oracle (one byte per block) follows. */
static unsigned random_changes(struct rdm_producer *p, struct rdm_region *r, uint8_t *oracle, uint32_t nb,
			       unsigned changes, uint64_t *seed)
{
	unsigned bad = 0;

	for (unsigned done = 0; done < changes;) {
		struct rdm_change ch[BURST];
		uint64_t tickets[BURST];
		unsigned n = 1 + (unsigned)(rnd(seed) % BURST);
		int err;

		if (n > changes - done)
			n = changes - done;
		for (unsigned i = 0; i < n; i++) {
			uint64_t x = rnd(seed);
			uint32_t b0 = (uint32_t)(x % nb), len = 1 + (uint32_t)((x >> 24) % 64);
			bool pop = (x >> 40) & 1;

			if (len > nb - b0)
				len = nb - b0;
			ch[i] = (struct rdm_change){ .region = r, .kind = pop ? RDM_CHANGE_POPULATE : RDM_CHANGE_DISCARD,
						     .offset = (uint64_t)b0 * PAGE, .length = (uint64_t)len * PAGE };
			memset(oracle + b0, pop, len);
		}
		err = rdm_producer_submit(p, ch, n, tickets);
		if (err) {
			gu_tap_diag("submit: %s: %s", strerror(-err), rdm_last_error());
			return bad + changes - done;
		}
		for (unsigned i = 0; i < n; i++) {
			int res = 0;

			if (rdm_producer_wait(p, tickets[i], &res) != 0 || res != 0)
				bad++;
		}
		done += n;
	}
	return bad;
}

static unsigned oracle_mismatches(struct rdm_region *r, const uint8_t *oracle, uint32_t nb, uint64_t *populated)
{
	unsigned bad = 0;

	*populated = 0;
	for (uint32_t b = 0; b < nb; b++) {
		bool pop = rdm_is_populated(r, (uint64_t)b * PAGE, PAGE);

		*populated += pop;
		bad += pop != (oracle[b] != 0);
	}
	return bad;
}

/* The ring-node producer of a placement run: its own thread is the main one (a producer
 * belongs to its creating thread). */
static void test_placement(int node)
{
	int other = 1 - node;
	char tag[32];
	struct batch_cpu bc = { .expect_cpu = cpu_of[node], .last_wrong_cpu = -1 };
	struct cpu_listener cl = { .l = { .ops = &cpu_listener_ops, .offset = 0, .length = (uint64_t)PL_BLOCKS * PAGE },
				   .expect_cpu = cpu_of[node], .last_wrong_cpu = -1 };
	struct rdm_producer_config pcfg = { .struct_size = sizeof(pcfg), .flags = RDM_PRODUCER_RING_NODE,
					    .ring_node = other };
	struct rdm_worker *w = NULL;
	struct rdm_backend *b = NULL;
	struct rdm_region *r = NULL;
	struct rdm_producer *p = NULL, *q = NULL;
	struct rdm_placement pl;
	struct rdm_worker_placement wp;
	struct pages pc;
	uint8_t *oracle = calloc(PL_BLOCKS, 1);
	uint64_t seed = 0x5eed0000u + (uint64_t)node, populated, nodes;
	unsigned bad;
	bool ok;
	int err;

	snprintf(tag, sizeof(tag), "node %d", node);
	/* The worker from a thread that may run on both nodes (rdm pins it to the CPUs of its node
	 * that its creator may use), everything else from the other node's CPU. */
	pin_to_both();
	err = make_worker(node, RDM_WORKER_NUMA_NODE, PL_RING, &bc, &w);
	if (!gu_tap_ok(err == 0, "%s: worker created with RDM_WORKER_NUMA_NODE (%d: %s)", tag, err,
		       err ? rdm_last_error() : ""))
		goto out;
	err = pin_to(cpu_of[other]);
	gu_tap_ok(err == 0 && rdm_numa_current_node() == other, "%s: the creating thread runs on node %d's CPU %d (%d)",
		  tag, other, cpu_of[other], err);
	err = make_region(w, UINT64_C(1) << 32, PL_BLOCKS, RDM_REGION_NUMA_NODE, node, &b, &r);
	if (!gu_tap_ok(err == 0, "%s: region created with RDM_REGION_NUMA_NODE and attached to it (%d)", tag, err))
		goto out;
	err = rdm_listener_register(r, &cl.l);
	if (!gu_tap_ok(err == 0, "%s: listener registered (%d)", tag, err))
		goto out;
	err = rdm_producer_create(&p);
	if (!gu_tap_ok(err == 0, "%s: producer created on node %d (%d)", tag, other, err))
		goto out;

	bad = random_changes(p, r, oracle, PL_BLOCKS, PL_CHANGES, &seed);
	gu_tap_ok(bad == 0, "%s: %u random changes from node %d, every one 0 (%u not)", tag, PL_CHANGES, other, bad);
	rdm_worker_flush(w);
	bad = oracle_mismatches(r, oracle, PL_BLOCKS, &populated);
	gu_tap_ok(bad == 0, "%s: the state is the oracle's (%u blocks differ; %" PRIu64 " populated)", tag, bad,
		  populated);

	/* The region's state. */
	err = region_placement(r, &pl);
	placement_diag(tag, &pl);
	gu_tap_ok(err == 0 && pl.node == node && pl.node_requested == node && (pl.flags & RDM_PLACE_EXPLICIT) &&
			  !(pl.flags & RDM_PLACE_FALLBACK),
		  "%s: rdm_region_get_placement: node %d, requested %d, explicit, no fallback (got %d: node %d, "
		  "requested %d, flags %#x)", tag, node, node, err, pl.node, pl.node_requested, pl.flags);
	gu_tap_ok(pl.pages_on_node > 0 && pl.pages_elsewhere == 0,
		  "%s: ...%" PRIu64 " pages on node %d, %" PRIu64 " elsewhere", tag, pl.pages_on_node, node,
		  pl.pages_elsewhere);
	gu_tap_ok(!!(pl.flags & RDM_PLACE_BOUND) == have_jemalloc, "%s: ...RDM_PLACE_BOUND %s (jemalloc %s)", tag,
		  pl.flags & RDM_PLACE_BOUND ? "set" : "not set", have_jemalloc ? "linked" : "not linked");
	pc = (struct pages){ .want = node };
	nodes = region_pages(r, &pc);
	pages_diag(tag, &pc);
	gu_tap_ok(nodes > 1 && pages_ok(&pc),
		  "%s: get_mempolicy: every page of the %" PRIu64 " tree nodes and the flat view is on node %d "
		  "(%" PRIu64 " of %" PRIu64 "; %" PRIu64 " elsewhere)", tag, nodes, node, pc.on, pc.pages, pc.off);

	/* The worker. */
	gu_tap_ok(atomic_load(&bc.batches) > 0 && atomic_load(&bc.wrong) == 0,
		  "%s: on_batch ran on CPU %d every time (%" PRIu64 " batches, %" PRIu64 " elsewhere, last on %d)", tag,
		  cpu_of[node], atomic_load(&bc.batches), atomic_load(&bc.wrong), bc.last_wrong_cpu);
	gu_tap_ok(atomic_load(&cl.calls) > 0 && atomic_load(&cl.wrong) == 0,
		  "%s: the listener ran on CPU %d every time (%" PRIu64 " calls, %" PRIu64 " elsewhere, last on %d)", tag,
		  cpu_of[node], atomic_load(&cl.calls), atomic_load(&cl.wrong), cl.last_wrong_cpu);
	err = worker_placement(w, &wp);
	worker_placement_diag(tag, &wp);
	gu_tap_ok(err == 0 && wp.cpu == cpu_of[node] && wp.ncpus == 1,
		  "%s: rdm_worker_get_placement: on CPU %d, 1 CPU (got %d: cpu %d, ncpus %u)", tag, cpu_of[node], err,
		  wp.cpu, wp.ncpus);
	gu_tap_ok(wp.state.node == node && wp.state.pages_elsewhere == 0 && (wp.state.flags & RDM_PLACE_EXPLICIT),
		  "%s: ...its state on node %d, explicit, nothing elsewhere (node %d, flags %#x, %" PRIu64 " elsewhere)", tag,
		  node, wp.state.node, wp.state.flags, wp.state.pages_elsewhere);
	gu_tap_ok(wp.rings >= 1 && wp.rings_on_node == wp.rings && wp.ring_memory.pages_elsewhere == 0 &&
			  wp.ring_memory.pages_on_node > 0 && wp.ring_memory.node == node,
		  "%s: ...every ring on node %d, the producer on node %d's included (rings %u, on node %u; ring pages "
		  "%" PRIu64 " on node, %" PRIu64 " elsewhere)", tag, node, other, wp.rings, wp.rings_on_node,
		  wp.ring_memory.pages_on_node, wp.ring_memory.pages_elsewhere);
	pc = (struct pages){ .want = node };
	ok = ring_pages(p, 0, &pc) && pages_ok(&pc);
	gu_tap_ok(ok,
		  "%s: get_mempolicy: every page of that producer's ring is on node %d (%" PRIu64 " of %" PRIu64 ")", tag,
		  node, pc.on, pc.pages);
	pages_diag("ring", &pc);

	/* A ring deliberately on the other node. */
	err = rdm_producer_create_ex(&pcfg, &q);
	if (!gu_tap_ok(err == 0, "%s: producer with RDM_PRODUCER_RING_NODE %d (%d: %s)", tag, other, err,
		       err ? rdm_last_error() : ""))
		goto out;
	bad = random_changes(q, r, oracle, PL_BLOCKS, PL_REMOTE_CHANGES, &seed);
	gu_tap_ok(bad == 0, "%s: %u changes through it, every one 0 (%u not)", tag, PL_REMOTE_CHANGES, bad);
	rdm_worker_flush(w);
	bad = oracle_mismatches(r, oracle, PL_BLOCKS, &populated);
	gu_tap_ok(bad == 0, "%s: the state is the oracle's (%u blocks differ)", tag, bad);
	pc = (struct pages){ .want = other };
	ok = ring_pages(q, 0, &pc) && pages_ok(&pc);
	gu_tap_ok(ok,
		  "%s: get_mempolicy: every page of its ring is on node %d (%" PRIu64 " of %" PRIu64 ")", tag, other,
		  pc.on, pc.pages);
	pages_diag("remote ring", &pc);
	err = worker_placement(w, &wp);
	worker_placement_diag(tag, &wp);
	gu_tap_ok(err == 0 && wp.rings >= 2 && wp.rings_on_node == wp.rings - 1 && wp.ring_memory.pages_elsewhere > 0,
		  "%s: rdm_worker_get_placement counts it as the one ring off node %d (rings %u, on node %u, ring pages "
		  "elsewhere %" PRIu64 ")", tag, node, wp.rings, wp.rings_on_node, wp.ring_memory.pages_elsewhere);
	err = region_placement(r, &pl);
	gu_tap_ok(err == 0 && pl.node == node && pl.pages_elsewhere == 0 && pl.pages_on_node > 0,
		  "%s: the region's state is still all on node %d (%" PRIu64 " pages, %" PRIu64 " elsewhere)", tag, node,
		  pl.pages_on_node, pl.pages_elsewhere);
out:
	if (q)
		rdm_producer_destroy(q);
	if (p)
		rdm_producer_destroy(p);
	if (r)
		rdm_region_destroy(r);
	if (w)
		gu_tap_ok(rdm_worker_destroy(w) == 0, "%s: worker destroyed", tag);
	if (b)
		rdm_backend_destroy(b);
	free(oracle);
	pin_to(cpu_of[0]);
}

/* ------------------------------------------------------------ 3. two workers */

struct tp_region {
	struct rdm_region *r;
	struct rdm_backend *b;
	struct cpu_listener cl;
	uint8_t oracle[TP_BLOCKS];
	uint64_t seed;
};

struct tp_thread {
	pthread_t th;
	int cpu;
	struct tp_region *reg;
	unsigned changes;
	pthread_barrier_t *start;
	unsigned bad, wrong_cpu;
	int err;
};

/* Strict single-block changes, predicted in order by the oracle. */
static void *tp_run(void *arg)
{
	struct tp_thread *t = arg;
	struct tp_region *g = t->reg;
	struct rdm_producer *p = NULL;

	t->err = pin_to(t->cpu);
	if (!t->err)
		t->err = rdm_producer_create(&p);
	pthread_barrier_wait(t->start);
	if (t->err)
		return NULL;
	for (unsigned done = 0; done < t->changes;) {
		struct rdm_change ch[BURST];
		uint64_t tickets[BURST];
		int expect[BURST];
		unsigned n = 1 + (unsigned)(rnd(&g->seed) % BURST);
		int err;

		if (n > t->changes - done)
			n = t->changes - done;
		for (unsigned i = 0; i < n; i++) {
			uint64_t x = rnd(&g->seed);
			uint32_t blk = (uint32_t)(x % TP_BLOCKS);
			/* Mostly the change the block can take (it makes a call and runs the
			 * listener), one in eight the one strict mode refuses. */
			bool pop = ((x >> 32) & 7) ? !g->oracle[blk] : g->oracle[blk];

			ch[i] = (struct rdm_change){ .region = g->r, .kind = pop ? RDM_CHANGE_POPULATE : RDM_CHANGE_DISCARD,
						     .offset = (uint64_t)blk * PAGE, .length = PAGE };
			if (pop)
				expect[i] = g->oracle[blk] ? -EEXIST : 0;
			else
				expect[i] = g->oracle[blk] ? 0 : -ENOENT;
			if (!expect[i])
				g->oracle[blk] = pop;
		}
		err = rdm_producer_submit(p, ch, n, tickets);
		if (err) {
			t->err = err;
			break;
		}
		for (unsigned i = 0; i < n; i++) {
			int res = 1;

			if (rdm_producer_wait(p, tickets[i], &res) != 0 || res != expect[i])
				t->bad++;
		}
		done += n;
	}
	if (sched_getcpu() != t->cpu)
		t->wrong_cpu++;
	rdm_producer_destroy(p);
	return NULL;
}

/* One phase: both producer threads at once, each on its region; changes/s over both. */
static double tp_phase(struct tp_region *reg[2], struct rdm_worker *ws[2], unsigned changes, unsigned *bad,
		       unsigned *errs)
{
	struct tp_thread t[2];
	pthread_barrier_t start;
	uint64_t t0, t1;

	pthread_barrier_init(&start, NULL, 3);
	for (int i = 0; i < 2; i++) {
		t[i] = (struct tp_thread){ .cpu = cpu_of[i], .reg = reg[i], .changes = changes, .start = &start };
		pthread_create(&t[i].th, NULL, tp_run, &t[i]);
	}
	pthread_barrier_wait(&start);
	t0 = now_ns();
	for (int i = 0; i < 2; i++)
		pthread_join(t[i].th, NULL);
	t1 = now_ns();
	pthread_barrier_destroy(&start);
	for (int i = 0; i < 2; i++) {
		*bad += t[i].bad;
		*errs += t[i].err != 0 || t[i].wrong_cpu;
		if (t[i].err)
			gu_tap_diag("producer on CPU %d: %s", t[i].cpu, strerror(-t[i].err));
		rdm_worker_flush(ws[i]);
	}
	return 2.0 * changes * 1e9 / (double)(t1 - t0);
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static double median(double *v, unsigned n)
{
	qsort(v, n, sizeof(*v), cmp_double);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

#define TP_MAX_REPS 15

static void test_workers(void)
{
	unsigned changes = (unsigned)gu_env_u64("RDM_VM_NUMA_CHANGES", 4096);
	unsigned reps = (unsigned)gu_env_u64("RDM_VM_NUMA_REPS", 3);
	struct rdm_worker *w[2] = { NULL, NULL };
	/* single[i]: producer i's region on the one worker (node 0); dual[i]: on worker i (node i). */
	struct tp_region *single[2] = { NULL, NULL }, *dual[2] = { NULL, NULL };
	double cps1[TP_MAX_REPS], cps2[TP_MAX_REPS];
	unsigned bad1 = 0, bad2 = 0, errs = 0, wrong = 0, overlap = 0, states = 0;
	uint64_t both[2] = { 0, 0 }, calls[2] = { 0, 0 };
	bool setup = true;

	if (reps > TP_MAX_REPS)
		reps = TP_MAX_REPS;
	if (!reps)
		reps = 1;
	pin_to_both();
	for (int i = 0; i < 2 && setup; i++)
		setup = make_worker(i, RDM_WORKER_NUMA_NODE, 0, NULL, &w[i]) == 0;
	for (int i = 0; i < 2 && setup; i++) {
		single[i] = calloc(1, sizeof(*single[i]));
		dual[i] = calloc(1, sizeof(*dual[i]));
		setup = single[i] && dual[i];
		for (int k = 0; k < 2 && setup; k++) {
			struct tp_region *g = k ? dual[i] : single[i];
			struct rdm_worker *gw = k ? w[i] : w[0];
			int node = k ? i : 0;

			g->seed = 0xabcdef01u + (uint64_t)i; /* the same load in both phases */
			g->cl = (struct cpu_listener){
				.l = { .ops = &cpu_listener_ops, .offset = 0, .length = (uint64_t)TP_BLOCKS * PAGE },
				.expect_cpu = cpu_of[node],
				.iters = burn_iters,
				.last_wrong_cpu = -1,
			};
			setup = make_region(gw, (UINT64_C(8) + 2 * (uint64_t)i + (uint64_t)k) << 32, TP_BLOCKS,
					    RDM_REGION_STRICT | RDM_REGION_NUMA_NODE, node, &g->b, &g->r) == 0 &&
				rdm_listener_register(g->r, &g->cl.l) == 0;
		}
	}
	pin_to(cpu_of[0]);
	if (!gu_tap_ok(setup, "workers: two workers (nodes 0, 1), four strict regions with a working listener each"))
		goto out;
	dual[0]->cl.peer = &dual[1]->cl;
	dual[1]->cl.peer = &dual[0]->cl;
	for (unsigned rep = 0; rep < reps; rep++) {
		struct rdm_worker *one[2] = { w[0], w[0] };

		for (int i = 0; i < 2; i++) {
			cpu_listener_reset(&single[i]->cl);
			cpu_listener_reset(&dual[i]->cl);
		}
		cps1[rep] = tp_phase(single, one, changes, &bad1, &errs);
		cps2[rep] = tp_phase(dual, w, changes, &bad2, &errs);
		for (int i = 0; i < 2; i++) {
			wrong += (unsigned)(atomic_load(&single[i]->cl.wrong) + atomic_load(&dual[i]->cl.wrong));
			calls[i] += atomic_load(&dual[i]->cl.calls);
			both[i] += atomic_load(&dual[i]->cl.both);
		}
		/* Concurrent progress: each dual worker's busy interval overlaps the other's. */
		overlap += atomic_load(&dual[0]->cl.first_ns) < atomic_load(&dual[1]->cl.last_ns) &&
			   atomic_load(&dual[1]->cl.first_ns) < atomic_load(&dual[0]->cl.last_ns);
		gu_tap_diag("workers: rep %u: one worker %.0f changes/s, two workers %.0f changes/s (%.2fx)", rep, cps1[rep],
			    cps2[rep], cps2[rep] / cps1[rep]);
	}
	for (int i = 0; i < 2; i++) {
		uint64_t populated;

		states += oracle_mismatches(single[i]->r, single[i]->oracle, TP_BLOCKS, &populated);
		states += oracle_mismatches(dual[i]->r, dual[i]->oracle, TP_BLOCKS, &populated);
	}
	gu_tap_ok(errs == 0, "workers: every producer thread ran its %u changes per phase on its node's CPU (%u errors)",
		  changes, errs);
	gu_tap_ok(bad1 == 0 && bad2 == 0,
		  "workers: every result is the strict oracle's, one worker and two (%u and %u differ of %u each)", bad1, bad2,
		  2 * changes * reps);
	gu_tap_ok(states == 0, "workers: every region's state is its oracle's (%u blocks differ)", states);
	gu_tap_ok(wrong == 0, "workers: every listener call ran on its worker's node's CPU (%u elsewhere)", wrong);
	gu_tap_ok(overlap == reps && calls[0] > 0 && calls[1] > 0,
		  "workers: the two workers' busy times overlap in every repetition (%u of %u; %" PRIu64 " and %" PRIu64
		  " listener calls)", overlap, reps, calls[0], calls[1]);
	gu_tap_ok(both[0] > 0 && both[1] > 0,
		  "workers: each worker was inside a change while the other was too, on the other CPU (%" PRIu64 " and %"
		  PRIu64 " times)",
		  both[0], both[1]);
	{
		double m1 = median(cps1, reps), m2 = median(cps2, reps);

		printf("SUMMARY numa-workers workers=1 changes_per_s=%.0f reps=%u changes=%u burn_ns=%" PRIu64 "\n", m1, reps,
		       2 * changes, gu_env_u64("RDM_VM_NUMA_BURN_NS", 100000));
		printf("SUMMARY numa-workers workers=2 changes_per_s=%.0f reps=%u changes=%u ratio=%.3f\n", m2, reps,
		       2 * changes, m2 / m1);
	}
out:
	for (int i = 0; i < 2; i++) {
		struct tp_region *gs[2] = { single[i], dual[i] };

		for (int k = 0; k < 2; k++) {
			if (!gs[k])
				continue;
			if (gs[k]->r)
				rdm_region_destroy(gs[k]->r);
		}
	}
	for (int i = 0; i < 2; i++)
		if (w[i])
			rdm_worker_destroy(w[i]);
	for (int i = 0; i < 2; i++) {
		struct tp_region *gs[2] = { single[i], dual[i] };

		for (int k = 0; k < 2; k++) {
			if (gs[k] && gs[k]->b)
				rdm_backend_destroy(gs[k]->b);
			free(gs[k]);
		}
	}
}

/* ------------------------------------------------------------ 4. benchmark */

struct bn_case {
	const char *name;
	int node;                /* the region's and the ring's */
	struct rdm_region *r;
	struct rdm_backend *b;
	struct rdm_producer *p;
	double ns[TP_MAX_REPS];
};

/* One round: every even block populated in ascending order, then discarded; 64 tickets in
 * flight. Returns ns per change, or -1 after a failure (counted in *bad). */
static double bn_round(struct bn_case *c, unsigned *bad)
{
	uint64_t tickets[WINDOW], t0 = now_ns();
	unsigned head = 0, tail = 0;

	for (unsigned k = 0; k < BN_BLOCKS; k++) {
		bool pop = k < BN_BLOCKS / 2;
		uint64_t off = (uint64_t)(2 * (k % (BN_BLOCKS / 2))) * PAGE;
		int err, res = 1;

		if (tail - head == WINDOW) {
			if (rdm_producer_wait(c->p, tickets[head++ % WINDOW], &res) != 0 || res != 0)
				(*bad)++;
		}
		err = pop ? rdm_producer_populate(c->p, c->r, off, PAGE, &tickets[tail % WINDOW])
			  : rdm_producer_discard(c->p, c->r, off, PAGE, &tickets[tail % WINDOW]);
		if (err) {
			(*bad)++;
			gu_tap_diag("bench %s: %s: %s", c->name, strerror(-err), rdm_last_error());
			return -1;
		}
		tail++;
	}
	while (head != tail) {
		int res = 1;

		if (rdm_producer_wait(c->p, tickets[head++ % WINDOW], &res) != 0 || res != 0)
			(*bad)++;
	}
	return (double)(now_ns() - t0) / BN_BLOCKS;
}

static void test_bench(void)
{
	unsigned reps = (unsigned)gu_env_u64("RDM_VM_NUMA_BENCH_REPS", 7);
	struct bn_case cs[2] = { { .name = "local", .node = 0 }, { .name = "remote", .node = 1 } };
	struct rdm_worker *w = NULL;
	struct rdm_worker_stats st0, st1;
	unsigned bad = 0, states = 0;
	bool setup;

	if (reps > TP_MAX_REPS)
		reps = TP_MAX_REPS;
	if (reps < 3)
		reps = 3;
	pin_to(cpu_of[0]);
	setup = make_worker(0, RDM_WORKER_NUMA_NODE, 0, NULL, &w) == 0;
	for (int i = 0; i < 2 && setup; i++) {
		struct rdm_producer_config pcfg = { .struct_size = sizeof(pcfg), .flags = RDM_PRODUCER_RING_NODE,
						    .ring_node = cs[i].node };

		setup = make_region(w, (UINT64_C(16) + (uint64_t)i) << 32, BN_BLOCKS, RDM_REGION_NUMA_NODE, cs[i].node,
				    &cs[i].b, &cs[i].r) == 0 &&
			rdm_producer_create_ex(&pcfg, &cs[i].p) == 0;
		/* The odd blocks stay populated (and mapped): no two discards merge into one call. */
		for (unsigned k = 1; k < BN_BLOCKS && setup; k += 2)
			setup = rdm_populate(cs[i].r, (uint64_t)k * PAGE, PAGE) == 0;
	}
	if (!gu_tap_ok(setup, "bench: a worker on node 0; regions (and producer rings) on node 0 and on node 1"))
		goto out;
	/* One round of each to warm up (rings, tree nodes, pools), then the repetitions, the
	 * order alternating: local first in even ones, remote first in odd ones. */
	for (int i = 0; i < 2; i++)
		bn_round(&cs[i], &bad);
	rdm_worker_get_stats(w, &st0);
	for (unsigned rep = 0; rep < reps; rep++)
		for (int k = 0; k < 2; k++) {
			int i = (rep & 1) ? 1 - k : k;

			cs[i].ns[rep] = bn_round(&cs[i], &bad);
		}
	rdm_worker_flush(w);
	rdm_worker_get_stats(w, &st1);
	for (int i = 0; i < 2; i++)
		for (unsigned k = 0; k < BN_BLOCKS; k++)
			states += rdm_is_populated(cs[i].r, (uint64_t)k * PAGE, PAGE) != (k & 1);
	gu_tap_ok(bad == 0, "bench: every change of %u x 2 rounds of %u succeeded (%u did not)", reps + 1, BN_BLOCKS, bad);
	gu_tap_ok(st1.superseded == st0.superseded && st1.changes - st0.changes >= 2ull * reps * BN_BLOCKS,
		  "bench: none superseded: every change made its call (%" PRIu64 " applied, %" PRIu64 " superseded)",
		  st1.changes - st0.changes, st1.superseded - st0.superseded);
	gu_tap_ok(states == 0, "bench: both regions end with exactly the odd blocks populated (%u differ)", states);
	for (int i = 0; i < 2; i++) {
		struct rdm_placement pl;
		struct pages pc = { .want = cs[i].node };
		int err = region_placement(cs[i].r, &pl);
		bool ok;

		gu_tap_ok(err == 0 && pl.node == cs[i].node && pl.pages_elsewhere == 0 && pl.pages_on_node > 0,
			  "bench: the %s region's state is on node %d (%d: node %d, %" PRIu64 " pages there, %" PRIu64
			  " elsewhere)", cs[i].name, cs[i].node, err, pl.node, pl.pages_on_node, pl.pages_elsewhere);
		ok = ring_pages(cs[i].p, 0, &pc) && pages_ok(&pc);
		gu_tap_ok(ok,
			  "bench: get_mempolicy: the %s producer's ring is on node %d (%" PRIu64 " of %" PRIu64 " pages)",
			  cs[i].name, cs[i].node, pc.on, pc.pages);
	}
	{
		double loc[TP_MAX_REPS], rem[TP_MAX_REPS], l, m;

		for (unsigned rep = 0; rep < reps; rep++) {
			loc[rep] = cs[0].ns[rep];
			rem[rep] = cs[1].ns[rep];
			gu_tap_diag("bench: rep %u: local %.0f ns/change, remote %.0f ns/change", rep, loc[rep], rem[rep]);
		}
		l = median(loc, reps);
		m = median(rem, reps);
		printf("SUMMARY numa local_ns=%.0f remote_ns=%.0f ratio=%.3f reps=%u changes=%u\n", l, m, m / l, reps,
		       BN_BLOCKS);
	}
out:
	for (int i = 0; i < 2; i++) {
		if (cs[i].p)
			rdm_producer_destroy(cs[i].p);
		if (cs[i].r)
			rdm_region_destroy(cs[i].r);
	}
	if (w)
		rdm_worker_destroy(w);
	for (int i = 0; i < 2; i++)
		rdm_backend_destroy(cs[i].b);
}

int main(void)
{
	char online[32] = "";
	FILE *f;

	gu_tap_init("vm_numa");
	f = fopen("/sys/devices/system/node/online", "r");
	if (f) {
		if (!fgets(online, sizeof(online), f))
			online[0] = 0;
		online[strcspn(online, "\n")] = 0;
		fclose(f);
	}
	cpu_of[0] = first_cpu_of_node(0);
	cpu_of[1] = first_cpu_of_node(1);
	if (!gu_tap_ok(strcmp(online, "0-1") == 0 && cpu_of[0] >= 0 && cpu_of[1] >= 0 && cpu_of[0] != cpu_of[1],
		       "two nodes online (%s), node 0 with CPU %d, node 1 with CPU %d", online, cpu_of[0], cpu_of[1]))
		return gu_tap_done();
	have_jemalloc = mallocx != NULL;
	gu_tap_ok(have_jemalloc, "jemalloc is linked in (mallocx resolved)");
	pin_to(cpu_of[0]);
	burn_calibrate(gu_env_u64("RDM_VM_NUMA_BURN_NS", 100000));

	test_errors();
	test_placement(1);
	test_placement(0);
	test_workers();
	test_bench();
	return gu_tap_done();
}
