/* SPDX-License-Identifier: MIT */
/*
 * ring/ring_extern.c - the ring's hot path as exported functions, for C++
 * and RDM_RING_NO_INLINE users (bindgen), who cannot use the static inline
 * versions of <rdm/ring.h>. Each one is the same private inline the C
 * wrappers call, so both kinds of caller share one implementation and one
 * contract.
 */
#define RDM_RING_NO_INLINE 1
#include <rdm/ring.h>

#define RDM_RING_PVT_INSIDE 1
#include <rdm/ring_pvt.h>

uint32_t rdm_ring_capacity(const struct rdm_ring *r)
{
	return rdm_ring_pvt_capacity(r);
}

uint32_t rdm_ring_record_size(const struct rdm_ring *r)
{
	return rdm_ring_pvt_record_size(r);
}

bool rdm_ring_stage(struct rdm_ring *r, const void *rec)
{
	return rdm_ring_pvt_stage(r, rec);
}

void rdm_ring_push_publish(struct rdm_ring *r)
{
	rdm_ring_pvt_push_publish(r);
}

bool rdm_ring_push(struct rdm_ring *r, const void *rec)
{
	return rdm_ring_pvt_push(r, rec);
}

unsigned rdm_ring_push_burst(struct rdm_ring *r, const void *recs, unsigned n)
{
	return rdm_ring_pvt_push_burst(r, recs, n);
}

unsigned rdm_ring_push_bulk(struct rdm_ring *r, const void *recs, unsigned n)
{
	return rdm_ring_pvt_push_bulk(r, recs, n);
}

unsigned rdm_ring_free_count(struct rdm_ring *r)
{
	return rdm_ring_pvt_free_count(r);
}

int rdm_ring_pop(struct rdm_ring *r, void *rec)
{
	return rdm_ring_pvt_pop(r, rec);
}

int rdm_ring_pop_burst(struct rdm_ring *r, void *recs, unsigned n)
{
	return rdm_ring_pvt_pop_burst(r, recs, n);
}

int rdm_ring_pop_bulk(struct rdm_ring *r, void *recs, unsigned n)
{
	return rdm_ring_pvt_pop_bulk(r, recs, n);
}

int rdm_ring_count(struct rdm_ring *r)
{
	return rdm_ring_pvt_count(r);
}

bool rdm_ring_empty(const struct rdm_ring *r)
{
	return rdm_ring_pvt_empty(r);
}

int rdm_ring_count_seq_cst(struct rdm_ring *r)
{
	return rdm_ring_pvt_count_seq_cst(r);
}
