// tests/ring/test_ring_cxx.cc - the ring from C++: every hot-path call through the exported out-of-line versions.
#include "tests/check.h"

#include <rdm/rdm.h>

#include <cstdint>

// A 40-byte record like the IOMMU worker's (which is private to rdm).
struct rec40 {
	uint16_t op, flags;
	uint32_t region;
	uint64_t seq, offset, length, ticket;
};
static_assert(sizeof(rec40) == 40, "40-byte record");

int main()
{
	rdm_ring *r = nullptr;
	REQUIRE(rdm_ring_create(4, sizeof(rec40), &r) == 0);
	CHECK(rdm_ring_capacity(r) == 4);
	CHECK(rdm_ring_record_size(r) == sizeof(rec40));
	CHECK(rdm_ring_empty(r));
	CHECK(rdm_ring_free_count(r) == 4);

	rec40 in[4] = {}, out[4] = {};
	for (unsigned i = 0; i < 4; i++)
		in[i].seq = 100 + i;
	CHECK(rdm_ring_push(r, &in[0]));
	CHECK(rdm_ring_stage(r, &in[1]));
	CHECK(rdm_ring_count(r) == 1); // staged, not yet published
	rdm_ring_push_publish(r);
	CHECK(rdm_ring_count_seq_cst(r) == 2);
	CHECK(rdm_ring_push_bulk(r, &in[2], 3) == 0); // all or nothing: only 2 fit
	CHECK(rdm_ring_push_burst(r, &in[2], 3) == 2);
	CHECK(rdm_ring_free_count(r) == 0);
	CHECK(!rdm_ring_push(r, &in[0]));
	CHECK(rdm_ring_wait_readable(r, 0) > 0);

	CHECK(rdm_ring_pop(r, &out[0]) == 1 && out[0].seq == 100);
	CHECK(rdm_ring_pop_bulk(r, &out[1], 4) == 0);
	CHECK(rdm_ring_pop_bulk(r, &out[1], 2) == 2 && out[1].seq == 101 && out[2].seq == 102);
	CHECK(rdm_ring_pop_burst(r, &out[3], 4) == 1 && out[3].seq == 103);
	CHECK(rdm_ring_pop(r, &out[0]) == 0);
	CHECK(rdm_ring_wait_writable(r, 0) > 0);
	CHECK(rdm_ring_empty(r));
	rdm_ring_destroy(r);
	return check_exit();
}
