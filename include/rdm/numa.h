/* SPDX-License-Identifier: MIT */
/*
 * rdm/numa.h - where rdm's memory and threads are: node affinity of
 * regions, workers and rings, and the placement each one actually got.
 *
 * Every region, worker and ring has a NUMA node:
 *
 *   region  rdm_region_config.numa_node with RDM_REGION_NUMA_NODE; without
 *           it, the node of the CPU the creating thread runs on. Its range
 *           structure (tree nodes, retire batches, flat view) is allocated
 *           there.
 *   worker  rdm_worker_config.numa_node with RDM_WORKER_NUMA_NODE (for a
 *           device: rdm_numa_node_of_pci()); without it, the creating
 *           thread's node. The worker thread is pinned, unless
 *           RDM_WORKER_NO_PIN: to an explicit node's CPUs (those in the
 *           process's cpuset, whatever the creating thread's own affinity),
 *           or to a derived node's CPUs among the creating thread's (so a
 *           `taskset` still confines a worker made with the defaults). Its
 *           batch state is allocated on the node.
 *           The thread's memory policy is the node too (set_mempolicy:
 *           MPOL_BIND for an explicit node, else MPOL_PREFERRED), so pages
 *           the callbacks it runs touch first come from the node as well.
 *   ring    the node of the worker that consumes it; a producer may name
 *           another (rdm_producer_config.ring_node) - deliberately remote
 *           rings are for measurements.
 *
 * A node given explicitly must exist and have memory this process may use,
 * and a worker's node a CPU in the process's cpuset (-EINVAL otherwise,
 * with a message naming the node), unless the matching
 * PREFERRED flag is set: then a node that cannot be used falls back to the
 * caller's node and the placement says so (RDM_PLACE_FALLBACK). A derived
 * node is always preferred. On a machine without NUMA support every node
 * is 0 and nothing is bound.
 *
 * Placement is checked, not assumed: the calls below ask the kernel where
 * each page of the structure's live memory is (move_pages(2) with no
 * target nodes, which reports a page's node without faulting it in) and
 * count the pages on the intended node, elsewhere and not resident.
 *
 * Allocation. With jemalloc (the default build; see README "NUMA"), a
 * region's and a worker's memory comes from a jemalloc arena per node whose
 * extent hooks bind every extent to the node with mbind(2) before it is
 * used (RDM_PLACE_BOUND). rdm uses jemalloc only through mallocx/dallocx on
 * its own arenas and never replaces the program's malloc. Without jemalloc
 * (a build option, sanitizer builds, or a program that links librdm.a
 * without jemalloc) the memory comes from malloc and is first touched on the
 * thread that uses it: the pinned worker for attached regions, so it is
 * usually on the node but not bound (no RDM_PLACE_BOUND): the page counts
 * tell. Rings are mapped memory bound with mbind(2) in every build.
 */
#ifndef RDM_NUMA_H
#define RDM_NUMA_H

#include <stdint.h>

#include <rdm/common.h>

#ifdef __cplusplus
extern "C" {
#endif

struct rdm_region;
struct rdm_worker;
struct rdm_producer;

/* rdm_placement.flags */
enum {
	RDM_PLACE_EXPLICIT = 1u << 0,  /* the node was given by the caller */
	RDM_PLACE_PREFERRED = 1u << 1, /* a node that cannot be used falls back */
	RDM_PLACE_FALLBACK = 1u << 2,  /* ...and it did: `node` is the fallback */
	RDM_PLACE_BOUND = 1u << 3,     /* the memory is bound to `node` (mbind) */
};

/* Where one structure's memory is. Pages are host pages. */
struct rdm_placement {
	uint32_t struct_size;    /* set by the caller: sizeof(struct rdm_placement) */
	uint32_t flags;          /* RDM_PLACE_* */
	int32_t node_requested;  /* the node asked for; -1 = derived */
	int32_t node;            /* the node the structure belongs to */
	uint64_t bytes;          /* live bytes of the structure */
	uint64_t pages;          /* distinct pages holding them */
	uint64_t pages_on_node;  /* resident on `node` */
	uint64_t pages_elsewhere; /* resident on another node (a mismatch) */
	uint64_t pages_absent;   /* not resident (never touched, or swapped) */
};

/* Where a region's range structure is. 0, or -EINVAL (NULL, struct_size
 * too small), -ENOMEM; on failure *out is unchanged. Any thread, any time;
 * the walk takes the region's current version under RCU. */
RDM_API int rdm_region_get_placement(struct rdm_region *r, struct rdm_placement *out);

struct rdm_worker_placement {
	uint32_t struct_size;    /* set by the caller */
	uint32_t ncpus;          /* CPUs the worker thread may run on */
	int32_t cpu;             /* the CPU it last ran on (-1: not known yet) */
	uint32_t rings;          /* rings it consumes: producers', threads' implicit producers', one per attached region for its control changes */
	uint32_t rings_on_node;  /* ...whose every resident page is on the worker's node */
	uint32_t reserved;
	struct rdm_placement state; /* the worker's own batch state */
	struct rdm_placement ring_memory; /* all its rings' pages together */
};

/* Where a worker runs and where its memory and rings are. 0, -EINVAL,
 * -ENOMEM; on failure *out is unchanged. Any thread but the worker's. */
RDM_API int rdm_worker_get_placement(struct rdm_worker *w, struct rdm_worker_placement *out);

/* The NUMA node of PCI device `bdf` ("0000:00:04.0") from
 * /sys/bus/pci/devices/<bdf>/numa_node. 0 and *node (-1 when the platform
 * gives the device no node), -EINVAL (NULL, or bdf not of the form
 * DDDD:BB:DD.F), -ENOENT (no such device), or the error reading it. */
RDM_API int rdm_numa_node_of_pci(const char *bdf, int32_t *node);

/* The node of the CPU the calling thread runs on (0 without NUMA). */
RDM_API int32_t rdm_numa_current_node(void);

#ifdef __cplusplus
}
#endif

#endif /* RDM_NUMA_H */
