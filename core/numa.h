/* SPDX-License-Identifier: MIT */
/*
 * core/numa.h - node affinity inside rdm: which node a structure belongs to,
 * memory bound to it, and where pages really are (public side: rdm/numa.h).
 *
 * A struct rdm_node says what the caller asked for and what it got. It is
 * resolved once (rdm_node_resolve) when the structure is created; from then
 * on the structure allocates through its node's jemalloc arena (when there is
 * one, see rdm_node_arena) or binds its mapped memory (rdm_node_bind).
 */
#ifndef RDM_CORE_NUMA_H
#define RDM_CORE_NUMA_H

#include <sched.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <rdm/numa.h>

struct rdm_node {
	int32_t requested; /* -1: derived from the creating thread */
	int32_t node;      /* the node used */
	uint32_t flags;    /* RDM_PLACE_EXPLICIT | PREFERRED | FALLBACK */
};

/*
 * Resolve a node for `what` (named in messages): explicit (the caller gave
 * `requested`) or derived (the calling thread's node). An explicit node
 * that does not exist, or on which this process may not allocate memory,
 * is -EINVAL with a message, unless `preferred`: then the calling thread's
 * node is used and RDM_PLACE_FALLBACK set. Without NUMA support only node
 * 0 exists.
 */
int rdm_node_resolve(bool explicit_node, int32_t requested, bool preferred, const char *what,
		     struct rdm_node *out);

/* Whether NUMA policy calls work here (numa_available()); without them
 * nothing is bound and every page is on node 0. */
bool rdm_numa_on(void);

/* Memory of an explicit node that may not fall back is bound strictly
 * (MPOL_BIND); any other is preferred (MPOL_PREFERRED). */
static inline bool rdm_node_strict(const struct rdm_node *n)
{
	return (n->flags & (RDM_PLACE_EXPLICIT | RDM_PLACE_PREFERRED)) == RDM_PLACE_EXPLICIT;
}

/*
 * The jemalloc arena for n's memory (its extents bound with mbind to n's
 * node: MPOL_BIND when `strict`, else MPOL_PREFERRED), created on first use.
 * 0 and *arena (the index + 1, as struct rdm_mem holds it; 0: there is
 * none - no jemalloc in the process, or no NUMA),
 * or -ENOMEM / the error of creating it, with a message. Thread-safe.
 */
int rdm_node_arena(const struct rdm_node *n, bool strict, unsigned *arena);

/* Bind [addr, addr + len) (page-aligned) to n's node: memory nothing has
 * touched yet (a fresh mapping), so no page is moved (no MPOL_MF_MOVE,
 * whose LRU drain interrupts every CPU of the host: core/numa.c). 0 or
 * -errno with a message. No-op without NUMA. */
int rdm_node_bind(void *addr, size_t len, const struct rdm_node *n, bool strict);

/* The calling thread's memory policy: n's node (MPOL_BIND when strict,
 * else MPOL_PREFERRED). 0 or -errno with a message; no-op without NUMA. */
int rdm_node_bind_thread(const struct rdm_node *n);

/* CPUs of node `node`: all of them, or (callers_only) those the calling
 * thread may run on. false if none. Without NUMA: the caller's CPUs. */
bool rdm_node_cpus(int32_t node, bool callers_only, cpu_set_t *set);

/*
 * Page census: add the distinct pages of n ranges (addr[i], len[i]) to
 * *pl, counting them against pl->node with move_pages(2) (no target nodes:
 * it reports each page's node without faulting it in). Adds len to
 * pl->bytes. -ENOMEM, or 0.
 */
int rdm_node_census(struct rdm_placement *pl, const void *const *addr, const size_t *len, size_t n);

/* Fill the caller-visible fields from a resolved node (struct_size kept,
 * counters zeroed). */
void rdm_node_placement_init(struct rdm_placement *pl, const struct rdm_node *n);

#endif /* RDM_CORE_NUMA_H */
