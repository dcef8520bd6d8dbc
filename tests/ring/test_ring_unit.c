/* tests/ring/test_ring_unit.c - SPSC ring: every call and error path, single-threaded, plus index wrap. */
#include "tests/check.h"
#include "iommu/record.h"
#include "ring/ring_internal.h"

#include <rdm/error.h>

#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static void test_create_errors(void)
{
	struct rdm_ring *r = NULL;
	CHECK(rdm_ring_create(0, 8, &r) == -EINVAL);
	CHECK(rdm_ring_create(3, 8, &r) == -EINVAL);
	CHECK(strstr(rdm_last_error(), "power of two") != NULL);
	CHECK(rdm_ring_create(1, 8, &r) == -EINVAL);
	CHECK(rdm_ring_create(RDM_RING_MAX_CAPACITY * 2u, 8, &r) == -EINVAL);
	CHECK(rdm_ring_create(8, 0, &r) == -EINVAL);
	CHECK(rdm_ring_create(8, 12, &r) == -EINVAL);
	CHECK(rdm_ring_create(8, RDM_RING_MAX_RECORD + 8, &r) == -EINVAL);
	CHECK(rdm_ring_create(RDM_RING_MAX_CAPACITY, RDM_RING_MAX_RECORD, &r) == -EINVAL);
	CHECK(rdm_ring_create(8, 8, NULL) == -EINVAL);
	int fd;
	CHECK(rdm_ring_create_shared(8, 8, NULL, &r) == -EINVAL);
	CHECK(rdm_ring_create_shared(6, 8, &fd, &r) == -EINVAL);
	CHECK(r == NULL);
	rdm_ring_destroy(NULL);
}

static void test_single(uint32_t rs)
{
	struct rdm_ring *r;
	REQUIRE(rdm_ring_create(4, rs, &r) == 0);
	CHECK(rdm_ring_capacity(r) == 4);
	CHECK(rdm_ring_record_size(r) == rs);
	unsigned char in[64], out[64];
	CHECK(rdm_ring_empty(r));
	CHECK(rdm_ring_count(r) == 0);
	CHECK(rdm_ring_pop(r, out) == 0);
	for (int i = 0; i < 4; i++) {
		memset(in, i + 1, rs);
		CHECK(rdm_ring_push(r, in));
	}
	memset(in, 9, rs);
	CHECK(!rdm_ring_push(r, in));
	CHECK(rdm_ring_free_count(r) == 0);
	CHECK(rdm_ring_count(r) == 4);
	CHECK(!rdm_ring_empty(r));
	for (int i = 0; i < 4; i++) {
		memset(out, 0, sizeof(out));
		CHECK(rdm_ring_pop(r, out) == 1);
		CHECK(out[0] == i + 1 && out[rs - 1] == i + 1 && out[rs] == 0);
	}
	CHECK(rdm_ring_pop(r, out) == 0);
	CHECK(rdm_ring_free_count(r) == 4);
	rdm_ring_destroy(r);
}

static void test_burst_bulk(void)
{
	struct rdm_ring *r;
	REQUIRE(rdm_ring_create(8, sizeof(struct rdm_change_rec), &r) == 0);
	struct rdm_change_rec in[16], out[16];
	for (int i = 0; i < 16; i++)
		in[i] = (struct rdm_change_rec){.op = RDM_OP_POPULATE, .region = 7, .seq = (uint64_t)i,
						.offset = (uint64_t)i << 21, .length = 1u << 21, .ticket = 100u + (uint64_t)i};
	CHECK(rdm_ring_push_bulk(r, in, 0) == 0);
	CHECK(rdm_ring_push_bulk(r, in, 9) == 0);
	CHECK(rdm_ring_count(r) == 0);
	CHECK(rdm_ring_push_bulk(r, in, 5) == 5);
	CHECK(rdm_ring_push_bulk(r, in + 5, 4) == 0);
	CHECK(rdm_ring_push_burst(r, in + 5, 11) == 3);
	CHECK(rdm_ring_push_burst(r, in + 8, 1) == 0);
	CHECK(rdm_ring_pop_bulk(r, out, 9) == 0);
	CHECK(rdm_ring_pop_bulk(r, out, 0) == 0);
	CHECK(rdm_ring_pop_bulk(r, out, 3) == 3);
	CHECK(rdm_ring_pop_burst(r, out + 3, 2) == 2);
	/* Wrap inside a burst: 3 left, push 5 more (slots 0..4 reused). */
	CHECK(rdm_ring_push_burst(r, in + 8, 8) == 5);
	CHECK(rdm_ring_pop_burst(r, out + 5, 16) == 8);
	CHECK(rdm_ring_pop_burst(r, out, 16) == 0);
	CHECK(memcmp(out, in, 13 * sizeof(in[0])) == 0);
	rdm_ring_destroy(r);
}

/* Indices start just below UINT32_MAX and cross it with every call kind. */
static void test_wrap(void)
{
	for (uint32_t rep = 0, start = UINT32_MAX - 20; rep < 8; rep++, start += 7) {
		struct rdm_ring *r;
		REQUIRE(rdm_ring_create(8, 8, &r) == 0);
		REQUIRE(rdm_ring_set_index_for_test(r, start) == 0);
		uint64_t next_in = 0, next_out = 0;
		for (int round = 0; round < 40; round++) {
			uint64_t buf[8];
			unsigned n = (unsigned)(round % 8) + 1;
			for (unsigned i = 0; i < n; i++)
				buf[i] = next_in + i;
			unsigned k = round % 3 == 0 ? rdm_ring_push_bulk(r, buf, n)
						    : rdm_ring_push_burst(r, buf, n);
			next_in += k;
			CHECK(rdm_ring_count(r) == (int)(next_in - next_out));
			int got = round % 2 ? rdm_ring_pop_burst(r, buf, 8) : rdm_ring_pop_bulk(r, buf, (unsigned)(next_in - next_out));
			CHECK(got == (int)(next_in - next_out));
			for (int i = 0; i < got; i++)
				CHECK(buf[i] == next_out + (uint64_t)i);
			next_out += (uint64_t)(got > 0 ? got : 0);
			/* Single push and pop across the wrap too. */
			uint64_t v = next_in;
			CHECK(rdm_ring_push(r, &v));
			next_in++;
			CHECK(rdm_ring_pop(r, &v) == 1 && v == next_out);
			next_out++;
		}
		CHECK(rdm_ring_empty(r));
		rdm_ring_destroy(r);
	}
	struct rdm_ring *r;
	REQUIRE(rdm_ring_create(2, 8, &r) == 0);
	uint64_t v = 1;
	CHECK(rdm_ring_push(r, &v));
	CHECK(rdm_ring_set_index_for_test(r, 5) == -EBUSY);
	rdm_ring_destroy(r);
}

/* A corrupt index of the other side: an error, and no access outside. */
static void test_corrupt_indices(void)
{
	struct rdm_ring *r;
	REQUIRE(rdm_ring_create(8, 8, &r) == 0);
	uint64_t v = 42, buf[8];
	CHECK(rdm_ring_push(r, &v));
	CHECK(rdm_ring_push(r, &v));
	CHECK(rdm_ring_pop(r, &v) == 1 && v == 42); /* caches tail 2 */
	/* The producer's tail jumps far ahead, as a hostile process could. */
	atomic_store_explicit(&r->prod.sh->tail, 1000, memory_order_relaxed);
	CHECK(rdm_ring_pop(r, &v) == 1 && v == 42); /* cached: one record known good */
	CHECK(rdm_ring_pop(r, &v) == -EBADMSG);
	CHECK(strstr(rdm_last_error(), "producer index out of range") != NULL);
	CHECK(rdm_ring_pop_burst(r, buf, 8) == -EBADMSG);
	CHECK(rdm_ring_pop_bulk(r, buf, 2) == -EBADMSG);
	CHECK(rdm_ring_count(r) == -EBADMSG);
	CHECK(!rdm_ring_empty(r));
	CHECK(rdm_ring_wait_readable(r, 4) == -EBADMSG);
	/* Behind the head: tail - head wraps to a huge value. */
	atomic_store_explicit(&r->prod.sh->tail, 0, memory_order_relaxed);
	CHECK(rdm_ring_pop(r, &v) == -EBADMSG);
	rdm_ring_destroy(r);

	REQUIRE(rdm_ring_create(4, 8, &r) == 0);
	for (int i = 0; i < 4; i++)
		CHECK(rdm_ring_push(r, &v));
	/* The consumer's head jumps ahead of the tail: the producer sees no room. */
	atomic_store_explicit(&r->cons.sh->head, 77, memory_order_relaxed);
	CHECK(!rdm_ring_push(r, &v));
	CHECK(rdm_ring_push_burst(r, buf, 4) == 0);
	CHECK(rdm_ring_push_bulk(r, buf, 1) == 0);
	CHECK(rdm_ring_free_count(r) == 0);
	CHECK(rdm_ring_wait_writable(r, 4) == -EBADMSG);
	CHECK(strstr(rdm_last_error(), "consumer index out of range") != NULL);
	rdm_ring_destroy(r);
}

/*
 * rdm_ring_create_prepared(): the hook sees the whole mapping before any
 * page of it is touched (a producer binds it to a NUMA node there without
 * moving pages, so a page touched first would stay where it was touched),
 * and a failing hook leaves nothing: its error, no ring, the mapping gone.
 */
struct prep_seen {
	void *map;
	size_t len;
	size_t resident; /* pages mincore() found resident, in the hook */
	int ret;
};

static int prep(void *map, size_t len, const void *opaque)
{
	struct prep_seen *s = (struct prep_seen *)(uintptr_t)opaque;
	size_t page = (size_t)sysconf(_SC_PAGESIZE), n = (len + page - 1) / page;
	unsigned char vec[64];

	s->map = map;
	s->len = len;
	s->resident = 0;
	if (n > sizeof(vec) || mincore(map, len, vec) != 0) {
		s->resident = (size_t)-1;
		return s->ret;
	}
	for (size_t i = 0; i < n; i++)
		s->resident += vec[i] & 1;
	return s->ret;
}

static void test_create_prepared(void)
{
	struct prep_seen seen = {0};
	struct rdm_ring *r = NULL;
	void *addr;
	size_t len;
	uint64_t rec = 7, out = 0;
	unsigned char vec[64];

	CHECK(rdm_ring_create_prepared(64, 8, prep, &seen, &r) == 0);
	rdm_ring_memory(r, &addr, &len);
	CHECK(seen.map == addr && seen.len == len && len > 0);
	CHECK(seen.resident == 0);
	CHECK(rdm_ring_push(r, &rec) && rdm_ring_pop(r, &out) == 1 && out == 7);
	rdm_ring_destroy(r);

	seen.ret = -EIO;
	r = NULL;
	CHECK(rdm_ring_create_prepared(64, 8, prep, &seen, &r) == -EIO);
	CHECK(r == NULL);
	/* The failed ring's mapping is unmapped: mincore() answers ENOMEM. */
	CHECK(mincore(seen.map, seen.len, vec) != 0 && errno == ENOMEM);
	CHECK(rdm_ring_create_prepared(3, 8, prep, &seen, &r) == -EINVAL);
}

int main(void)
{
	test_create_errors();
	test_create_prepared();
	test_single(8);
	test_single(40);
	test_single(24);
	test_burst_bulk();
	test_wrap();
	test_corrupt_indices();
	return check_exit();
}
