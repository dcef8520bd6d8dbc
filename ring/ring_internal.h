/* SPDX-License-Identifier: MIT */
/* ring/ring_internal.h - the SPSC ring's internals for the rest of rdm and its tests (not part of the API). */
#ifndef RDM_RING_INTERNAL_H
#define RDM_RING_INTERNAL_H

#include <rdm/ring.h>

/*
 * Move both indices of an EMPTY ring to `index` (e.g. just below UINT32_MAX,
 * to test wrap-around). Returns 0, or -EBUSY if the ring is not empty.
 * No other call on r may be running.
 */
int rdm_ring_set_index_for_test(struct rdm_ring *r, uint32_t index);

/*
 * Switch a ring to the seq_cst wake-up protocol (so tests run both protocols
 * on private rings). Returns 0. No other call on r may be running.
 */
int rdm_ring_use_seq_cst_for_test(struct rdm_ring *r);

/* The memory mapping that holds r's records and indices (to bind it to a
 * NUMA node, or to ask where it is: core/numa.h). */
void rdm_ring_memory(const struct rdm_ring *r, void **addr, size_t *len);

/* rdm_ring_create(), with prepare(map, len, opaque) called on the fresh
 * mapping before anything touches it (to bind it to a NUMA node without
 * moving pages: rdm_node_bind()). If prepare fails, its error is
 * returned and nothing is left. prepare NULL: rdm_ring_create(). */
int rdm_ring_create_prepared(uint32_t capacity, uint32_t record_size,
			     int (*prepare)(void *map, size_t len, const void *opaque), const void *opaque,
			     struct rdm_ring **out);

/* True when r uses the asymmetric (membarrier) wake-up protocol. */
bool rdm_ring_is_asymmetric_for_test(const struct rdm_ring *r);

#endif /* RDM_RING_INTERNAL_H */
