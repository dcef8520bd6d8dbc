/* SPDX-License-Identifier: MIT */
/*
 * core/numa.c - node resolution, node-bound jemalloc arenas, mbind, and the
 * page census behind rdm_*_get_placement() (see core/numa.h, rdm/numa.h).
 *
 * Theory.
 *  - Arenas. One jemalloc arena per (node, strict) pair, created on first
 *    use with `arenas.create` and extent hooks that are jemalloc's own
 *    (read from arena 0) except `alloc`: it calls the default alloc and binds
 *    the new extent to the node with mbind(2) (MPOL_BIND when strict, else
 *    MPOL_PREFERRED; MPOL_MF_MOVE for pages jemalloc may already have
 *    touched) before jemalloc hands any of it out. Retained and purged
 *    extents keep their policy (it belongs to the mapping), so memory the
 *    arena reuses stays on the node. Allocations pass MALLOCX_ARENA and
 *    MALLOCX_TCACHE_NONE: a thread cache may hold objects of any arena, so
 *    only an uncached allocation is sure to come from the node's arena. The
 *    cost is a bin lock per call; the region's tree keeps its own node pool
 *    (core/tree.c), so steady state rarely reaches the arena.
 *  - Arenas are never destroyed (jemalloc's arena count only grows): at most
 *    2 per node for the process's lifetime, created under one mutex; the
 *    table is read without it (acquire, pairing with the release store that
 *    publishes a new arena's index).
 *  - Census. move_pages(2) with nodes == NULL only reports: each page's
 *    node, or -ENOENT when it is not resident. Unlike
 *    get_mempolicy(MPOL_F_NODE | MPOL_F_ADDR), it never faults a page in (a
 *    read fault maps the shared zero page, whose node says nothing about
 *    the structure's memory).
 */
#include "core/numa.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <numa.h>
#include <numaif.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/jemalloc.h"

/* Nodes above this are refused (libnuma's own limit is 1024 by default). */
#define MAX_NODES 1024

/* Topology, read once (pthread_once orders it before every use): libnuma's
 * numa_node_of_cpu()/numa_node_to_cpus() fill a cache of their own without
 * a lock, so rdm asks them only here. CPUs or nodes brought online later
 * are not seen. */
static pthread_once_t numa_once = PTHREAD_ONCE_INIT;
static bool numa_ok;
static int max_node;          /* highest node number */
static int ncpu_nodes;        /* entries of cpu_node */
static int16_t *cpu_node;     /* CPU -> node (-1: unknown) */
static cpu_set_t *node_cpus;  /* node -> its CPUs, max_node + 1 entries */

static void numa_init(void)
{
	struct bitmask *bm;

	numa_ok = numa_available() >= 0;
	if (!numa_ok)
		return;
	max_node = numa_max_node();
	if (max_node >= MAX_NODES)
		max_node = MAX_NODES - 1;
	ncpu_nodes = CPU_SETSIZE;
	/* Topology for the process's life: plain calloc, outside the counted
	 * allocator and its failure injection. Without it, NUMA is off. */
	cpu_node = calloc((size_t)ncpu_nodes, sizeof(*cpu_node));
	node_cpus = calloc((size_t)max_node + 1, sizeof(*node_cpus));
	bm = numa_allocate_cpumask();
	if (!cpu_node || !node_cpus || !bm) {
		free(cpu_node);
		free(node_cpus);
		if (bm)
			numa_free_cpumask(bm);
		cpu_node = NULL;
		node_cpus = NULL;
		numa_ok = false;
		return;
	}
	for (int c = 0; c < ncpu_nodes; c++)
		cpu_node[c] = -1;
	for (int n = 0; n <= max_node; n++) {
		CPU_ZERO(&node_cpus[n]);
		numa_bitmask_clearall(bm);
		if (numa_node_to_cpus(n, bm) != 0)
			continue;
		for (unsigned c = 0; c < bm->size && c < (unsigned)ncpu_nodes; c++)
			if (numa_bitmask_isbitset(bm, c)) {
				CPU_SET(c, &node_cpus[n]);
				cpu_node[c] = (int16_t)n;
			}
	}
	numa_free_cpumask(bm);
}

bool rdm_numa_on(void)
{
	pthread_once(&numa_once, numa_init);
	return numa_ok;
}

int32_t rdm_numa_current_node(void)
{
	int cpu = sched_getcpu();
	int node;

	if (!rdm_numa_on() || cpu < 0 || cpu >= ncpu_nodes)
		return 0;
	node = cpu_node[cpu];
	return node < 0 ? 0 : node;
}

/* 0 if `node` exists and this process may allocate memory on it; else an
 * errno with *why naming the reason. */
static int node_usable(int32_t node, const char **why)
{
	if (node < 0) {
		*why = "is negative";
		return -EINVAL;
	}
	if (!rdm_numa_on()) {
		*why = "does not exist (no NUMA support: only node 0)";
		return node == 0 ? 0 : -EINVAL;
	}
	if (node > max_node) {
		*why = "does not exist";
		return -EINVAL;
	}
	if (!numa_bitmask_isbitset(numa_all_nodes_ptr, (unsigned)node)) {
		*why = "has no memory this process may use";
		return -EINVAL;
	}
	return 0;
}

int rdm_node_resolve(bool explicit_node, int32_t requested, bool preferred, const char *what,
		     struct rdm_node *out)
{
	struct rdm_node n = {.requested = -1, .node = rdm_numa_current_node(), .flags = RDM_PLACE_PREFERRED};
	const char *why = NULL;

	if (explicit_node) {
		n.requested = requested;
		n.flags = RDM_PLACE_EXPLICIT | (preferred ? RDM_PLACE_PREFERRED : 0);
		if (node_usable(requested, &why) == 0)
			n.node = requested;
		else if (preferred)
			n.flags |= RDM_PLACE_FALLBACK; /* the caller's node, reported */
		else
			return rdm_fail(-EINVAL, "%s: NUMA node %d %s (highest node %d)", what, requested, why,
					rdm_numa_on() ? max_node : 0);
	}
	*out = n;
	return 0;
}

void rdm_node_placement_init(struct rdm_placement *pl, const struct rdm_node *n)
{
	uint32_t size = pl->struct_size;

	memset(pl, 0, sizeof(*pl));
	pl->struct_size = size;
	pl->flags = n->flags;
	pl->node_requested = n->requested;
	pl->node = n->node;
}

/* ---------------------------------------------------------------- mbind */

#define MASK_WORDS (MAX_NODES / (8 * sizeof(unsigned long)))

/* The node mask of mbind/set_mempolicy naming only `node`. */
static void node_mask(unsigned long mask[MASK_WORDS], int32_t node)
{
	memset(mask, 0, MASK_WORDS * sizeof(mask[0]));
	mask[node / (8 * sizeof(unsigned long))] = 1ul << (node % (8 * sizeof(unsigned long)));
}

/* `move`: pages may be touched already; MPOL_MF_MOVE migrates them, and for
 * that the kernel first drains every CPU's LRU caches (lru_cache_disable():
 * an expedited RCU grace period, an IPI to every CPU of the host), which
 * memory nothing has touched does not need. */
static int bind_range(void *addr, size_t len, int32_t node, bool strict, bool move)
{
	unsigned long mask[MASK_WORDS];

	node_mask(mask, node);
	if (mbind(addr, len, strict ? MPOL_BIND : MPOL_PREFERRED, mask, MAX_NODES + 1, move ? MPOL_MF_MOVE : 0) != 0)
		return -errno;
	return 0;
}

int rdm_node_bind_thread(const struct rdm_node *n)
{
	unsigned long mask[MASK_WORDS];

	if (!rdm_numa_on())
		return 0;
	node_mask(mask, n->node);
	if (set_mempolicy(rdm_node_strict(n) ? MPOL_BIND : MPOL_PREFERRED, mask, MAX_NODES + 1) != 0)
		return rdm_fail(-errno, "cannot set the thread's memory policy to NUMA node %d (errno %d)", n->node,
				errno);
	return 0;
}

int rdm_node_bind(void *addr, size_t len, const struct rdm_node *n, bool strict)
{
	int err;

	if (!rdm_numa_on())
		return 0;
	err = bind_range(addr, len, n->node, strict, false);
	if (err)
		return rdm_fail(err, "cannot bind %zu bytes to NUMA node %d (mbind: errno %d)", len, n->node, -err);
	return 0;
}

bool rdm_node_cpus(int32_t node, bool callers_only, cpu_set_t *set)
{
	cpu_set_t allowed;

	CPU_ZERO(set);
	if (sched_getaffinity(0, sizeof(allowed), &allowed) != 0)
		return false;
	if (!rdm_numa_on()) {
		*set = allowed;
		return CPU_COUNT(set) > 0;
	}
	if (node < 0 || node > max_node)
		return false;
	if (callers_only)
		CPU_AND(set, &allowed, &node_cpus[node]);
	else
		*set = node_cpus[node];
	return CPU_COUNT(set) > 0;
}

/* --------------------------------------------------------------- arenas */

#ifdef RDM_HAVE_JEMALLOC
struct node_hooks {
	extent_hooks_t hooks; /* first: jemalloc passes &hooks back */
	extent_hooks_t *dflt;
	int32_t node;
	bool strict;
};

static void *hook_alloc(extent_hooks_t *h, void *new_addr, size_t size, size_t alignment, bool *zero,
			bool *commit, unsigned arena_ind)
{
	struct node_hooks *nh = (struct node_hooks *)h;
	void *p = nh->dflt->alloc(nh->dflt, new_addr, size, alignment, zero, commit, arena_ind);

	if (p != NULL && bind_range(p, size, nh->node, nh->strict, true) != 0) {
		/* Unbound memory must not serve the node's arena: give it back
		 * (if the default dalloc keeps it, it stays jemalloc's). */
		if (nh->dflt->dalloc == NULL || nh->dflt->dalloc(nh->dflt, p, size, *commit, arena_ind))
			munmap(p, size);
		return NULL;
	}
	return p;
}
#endif

/* 0 = not created yet; else the arena index + 1 (release-published). */
static _Atomic unsigned arena_tab[2][MAX_NODES];
static pthread_mutex_t arena_lock = PTHREAD_MUTEX_INITIALIZER;

int rdm_node_arena(const struct rdm_node *n, bool strict, unsigned *arena)
{
	*arena = 0;
#ifdef RDM_HAVE_JEMALLOC
	if (!rdm_have_jemalloc() || !rdm_numa_on() || n->node < 0 || n->node >= MAX_NODES)
		return 0;
	_Atomic unsigned *slot = &arena_tab[strict][n->node];
	/* Acquire: pairs with the release store below; the arena exists. */
	unsigned v = atomic_load_explicit(slot, memory_order_acquire);

	if (v) {
		*arena = v;
		return 0;
	}
	pthread_mutex_lock(&arena_lock);
	v = atomic_load_explicit(slot, memory_order_relaxed);
	if (!v) {
		struct node_hooks *nh = rdm_alloc_should_fail() ? NULL : calloc(1, sizeof(*nh));
		extent_hooks_t *hp;
		size_t sz = sizeof(nh->dflt);
		unsigned idx;
		int err;

		if (!nh) {
			pthread_mutex_unlock(&arena_lock);
			return rdm_fail(-ENOMEM, "out of memory creating the allocator arena of NUMA node %d",
					n->node);
		}
		err = mallctl("arena.0.extent_hooks", &nh->dflt, &sz, NULL, 0);
		if (err == 0) {
			nh->hooks = *nh->dflt;
			nh->hooks.alloc = hook_alloc;
			nh->node = n->node;
			nh->strict = strict;
			hp = &nh->hooks;
			sz = sizeof(idx);
			err = mallctl("arenas.create", &idx, &sz, &hp, sizeof(hp));
		}
		if (err) {
			/* nh stays unused; jemalloc made no arena that uses it. */
			free(nh);
			pthread_mutex_unlock(&arena_lock);
			return rdm_fail(-err, "cannot create the allocator arena of NUMA node %d (jemalloc: %s)",
					n->node, strerror(err));
		}
		/* nh lives as long as the arena: for the process. */
		v = idx + 1;
		/* Release: pairs with the acquire load above. */
		atomic_store_explicit(slot, v, memory_order_release);
	}
	pthread_mutex_unlock(&arena_lock);
	*arena = v;
	return 0;
#else
	(void)n;
	(void)strict;
	(void)arena_tab;
	(void)arena_lock;
	return 0;
#endif
}

/* --------------------------------------------------------------- census */

static int cmp_ptr(const void *a, const void *b)
{
	uintptr_t x = *(const uintptr_t *)a, y = *(const uintptr_t *)b;

	return x < y ? -1 : x > y;
}

int rdm_node_census(struct rdm_placement *pl, const void *const *addr, const size_t *len, size_t n)
{
	uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
	size_t npages = 0, cap = 0, u = 0;
	uintptr_t *pages = NULL;
	int status[256];

	for (size_t i = 0; i < n; i++) {
		if (!addr[i] || !len[i])
			continue;
		uintptr_t s = (uintptr_t)addr[i] & ~(page - 1);
		uintptr_t e = ((uintptr_t)addr[i] + len[i] + page - 1) & ~(page - 1);

		pl->bytes += len[i];
		for (uintptr_t p = s; p < e; p += page) {
			if (npages == cap) {
				size_t nc = cap ? cap * 2 : 64;
				uintptr_t *np = rdm_reallocarray(pages, nc, sizeof(*np));

				if (!np) {
					rdm_free(pages);
					return rdm_fail(-ENOMEM, "out of memory counting pages for a placement report");
				}
				pages = np;
				cap = nc;
			}
			pages[npages++] = p;
		}
	}
	if (npages == 0)
		return 0;
	qsort(pages, npages, sizeof(*pages), cmp_ptr);
	for (size_t i = 0; i < npages; i++)
		if (u == 0 || pages[u - 1] != pages[i])
			pages[u++] = pages[i];
	pl->pages += u;
	for (size_t i = 0; i < u; i += 256) {
		unsigned long k = u - i < 256 ? (unsigned long)(u - i) : 256;

		if (move_pages(0, k, (void **)(pages + i), NULL, status, 0) != 0) {
			/* No NUMA in this kernel: resident pages are on node 0. */
			unsigned char vec[1];

			for (unsigned long j = 0; j < k; j++) {
				bool in = mincore((void *)pages[i + j], page, vec) == 0 && (vec[0] & 1);

				status[j] = in ? 0 : -ENOENT;
			}
		}
		for (unsigned long j = 0; j < k; j++) {
			if (status[j] < 0)
				pl->pages_absent++;
			else if (status[j] == pl->node)
				pl->pages_on_node++;
			else
				pl->pages_elsewhere++;
		}
	}
	rdm_free(pages);
	return 0;
}

/* ------------------------------------------------------------ PCI nodes */

int rdm_numa_node_of_pci(const char *bdf, int32_t *node)
{
	unsigned dom, bus, dev, fn;
	char path[128], buf[32], tail;
	ssize_t got;
	long v;
	int fd;

	if (!bdf || !node)
		return rdm_fail(-EINVAL, "numa node of PCI device: NULL %s", bdf ? "node" : "address");
	if (strlen(bdf) != 12 || sscanf(bdf, "%4x:%2x:%2x.%1x%c", &dom, &bus, &dev, &fn, &tail) != 4 ||
	    dev > 0x1f || fn > 7)
		return rdm_fail(-EINVAL, "numa node of PCI device: '%.32s' is not a PCI address DDDD:BB:DD.F", bdf);
	snprintf(path, sizeof(path), "/sys/bus/pci/devices/%04x:%02x:%02x.%x/numa_node", dom, bus, dev, fn);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return rdm_fail(errno == ENOENT ? -ENOENT : -errno, "numa node of PCI device %s: cannot open %s (errno %d)",
				bdf, path, errno);
	got = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (got <= 0)
		return rdm_fail(got < 0 ? -errno : -EIO, "numa node of PCI device %s: cannot read %s", bdf, path);
	buf[got] = '\0';
	char *end;

	errno = 0;
	v = strtol(buf, &end, 10);
	if (errno || end == buf || v < -1 || v >= MAX_NODES)
		return rdm_fail(-EIO, "numa node of PCI device %s: %s holds '%.16s'", bdf, path, buf);
	*node = (int32_t)v;
	return 0;
}
