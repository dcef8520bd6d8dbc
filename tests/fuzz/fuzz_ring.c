/* SPDX-License-Identifier: MIT */
/*
 * fuzz_ring - rdm_ring_attach() on a memfd whose header the input writes,
 * then push/pop sequences while the input, playing a hostile other process,
 * rewrites the shared indices, flags, header and records between calls.
 *
 * The input is a byte stream (zeros once it runs out): first the geometry,
 * which header fields to replace with raw input values, the memfd's size and
 * seals and the initial indices; then operations, one byte each plus their
 * arguments.
 *
 * Checks:
 *  - attach returns exactly the error an independent reading of the header
 *    predicts (-EPERM, -EPROTO, -EPROTONOSUPPORT, -EMSGSIZE, -EBADMSG), with
 *    a message, and on success copies the header's capacity and record size;
 *  - no call touches memory outside the mapping or the caller's buffers
 *    (ASan), none sleeps or spins forever (libFuzzer's -timeout): a wait is
 *    only called where the shared state lets it return;
 *  - each result is what the shared indices at that moment allow: a pop that
 *    reports empty saw tail == head, -EBADMSG only for a producer index out
 *    of range, counts never above the capacity; the handle's bounds never
 *    change (rewriting the shared header changes nothing) and its own indices
 *    stay within one capacity of each other;
 *  - while the input has not touched the shared indices or records, records
 *    come out in order and intact (a FIFO model).
 */
#include <rdm/error.h>
#include <rdm/ring.h>

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct in {
	const uint8_t *p;
	size_t n, i;
};

static uint8_t u8(struct in *in)
{
	return in->i < in->n ? in->p[in->i++] : 0;
}

static uint32_t u32(struct in *in)
{
	uint32_t v = 0;
	for (int k = 0; k < 4; k++)
		v |= (uint32_t)u8(in) << (8 * k);
	return v;
}

static uint64_t u64(struct in *in)
{
	uint64_t lo = u32(in);
	return lo | (uint64_t)u32(in) << 32;
}

#define CHECK(c)                                                                          \
	do {                                                                              \
		if (!(c)) {                                                               \
			fprintf(stderr, "fuzz_ring: %s:%d: check failed: %s (%s)\n",       \
				__FILE__, __LINE__, #c, rdm_last_error());                \
			abort();                                                          \
		}                                                                         \
	} while (0)

#define DATA_OFFSET ((uint64_t)sizeof(struct rdm_ring_shared))

static bool is_pow2(uint64_t x)
{
	return x && !(x & (x - 1));
}

/* What rdm_ring_attach must answer for this file (ring.h's list, in order). */
static int expected_attach(bool sealed, uint64_t fsize, const struct rdm_ring_header *h,
			   uint32_t head, uint32_t tail)
{
	if (!sealed)
		return -EPERM;
	if (fsize < DATA_OFFSET || fsize > DATA_OFFSET + RDM_RING_MAX_DATA)
		return -EPROTO;
	if (h->magic != RDM_RING_MAGIC)
		return -EPROTO;
	if (h->version != RDM_RING_LAYOUT_VERSION)
		return -EPROTONOSUPPORT;
	if (h->record_size < 8 || h->record_size > RDM_RING_MAX_RECORD || h->record_size % 8)
		return -EMSGSIZE;
	if (!is_pow2(h->capacity) || h->capacity < RDM_RING_MIN_CAPACITY ||
	    h->capacity > RDM_RING_MAX_CAPACITY)
		return -EPROTO;
	if (h->data_offset != DATA_OFFSET)
		return -EPROTO;
	if (h->total_size != DATA_OFFSET + (uint64_t)h->capacity * h->record_size ||
	    h->total_size > fsize)
		return -EPROTO;
	if (tail - head > h->capacity)
		return -EBADMSG;
	return 0;
}

/* The handle's fixed part, to check nothing moves it. */
struct fixed {
	uint32_t capacity, mask, record_size;
	unsigned char *slots;
	struct rdm_ring_shared *sh;
};

static void check_fixed(const struct rdm_ring *r, const struct fixed *f)
{
	CHECK(r->prod.capacity == f->capacity && r->cons.capacity == f->capacity);
	CHECK(r->prod.mask == f->mask && r->cons.mask == f->mask);
	CHECK(r->prod.record_size == f->record_size && r->cons.record_size == f->record_size);
	CHECK(r->prod.slots == f->slots && r->cons.slots == f->slots);
	CHECK(r->prod.sh == f->sh && r->cons.sh == f->sh);
	/* Invariant 2 of ring/ring.c. */
	CHECK(r->prod.tail - r->prod.head_cache <= f->capacity);
	CHECK(r->cons.tail_cache - r->cons.head <= f->capacity);
}

static void fill_rec(unsigned char *rec, uint32_t rs, uint64_t stamp)
{
	for (uint32_t i = 0; i < rs; i += 8) {
		uint64_t w = stamp * 0x9e3779b97f4a7c15ull + i;
		memcpy(rec + i, &w, 8);
	}
}

static void check_rec(const unsigned char *rec, uint32_t rs, uint64_t stamp)
{
	unsigned char *want = malloc(rs);
	CHECK(want);
	fill_rec(want, rs, stamp);
	CHECK(memcmp(rec, want, rs) == 0);
	free(want);
}

static uint32_t sh_load(_Atomic uint32_t *w)
{
	return atomic_load_explicit(w, memory_order_relaxed);
}

static void sh_store(_Atomic uint32_t *w, uint32_t v)
{
	atomic_store_explicit(w, v, memory_order_relaxed);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct in in = { data, size, 0 };
	uint32_t cap = 1u << (u8(&in) % 6 + 1); /* 2..64 */
	uint32_t rs = 8u * (u8(&in) % 8 + 1);   /* 8..64 */
	struct rdm_ring_header h = {
		.magic = RDM_RING_MAGIC,
		.version = RDM_RING_LAYOUT_VERSION,
		.record_size = rs,
		.capacity = cap,
		.data_offset = DATA_OFFSET,
		.total_size = DATA_OFFSET + (uint64_t)cap * rs,
	};
	uint8_t bad = u8(&in);
	if (bad & 1)
		h.magic ^= (uint64_t)1 << (u8(&in) % 64);
	if (bad & 2)
		h.version = u32(&in);
	if (bad & 4)
		h.record_size = u32(&in);
	if (bad & 8)
		h.capacity = u32(&in);
	if (bad & 16)
		h.data_offset = u64(&in);
	if (bad & 32)
		h.total_size = u64(&in);
	if (bad & 64)
		h.reserved = u32(&in);
	uint64_t fsize = h.total_size;
	uint8_t fz = u8(&in);
	switch (fz % 4) {
	case 0: break;                                   /* exactly total_size */
	case 1: fsize = DATA_OFFSET + (uint64_t)cap * rs + u8(&in) * 8u; break; /* larger */
	case 2: fsize = (uint64_t)u8(&in) * 16u; break;  /* small: maybe no header */
	case 3: fsize = DATA_OFFSET + (uint64_t)u32(&in) % (1u << 20); break;
	}
	if (fsize > ((uint64_t)1 << 24))
		fsize = DATA_OFFSET + (uint64_t)cap * rs; /* keep the fuzzer's memory small */
	bool sealed = !(fz & 0x80);
	uint32_t head = 0, tail = 0;
	if (fz & 0x40) {
		head = u32(&in);
		tail = head + (uint32_t)(u8(&in) & 0x7f) - 0x20;
	}

	int fd = memfd_create("fuzz-ring", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	CHECK(fd >= 0);
	CHECK(ftruncate(fd, (off_t)fsize) == 0);
	if (fsize) {
		unsigned char *m = mmap(NULL, fsize, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
		CHECK(m != MAP_FAILED);
		struct rdm_ring_shared init;
		memset(&init, 0, sizeof(init));
		init.hdr = h;
		atomic_store_explicit(&init.tail, tail, memory_order_relaxed);
		atomic_store_explicit(&init.head, head, memory_order_relaxed);
		memcpy(m, &init, fsize < sizeof(init) ? fsize : sizeof(init));
		munmap(m, fsize);
	}
	if (sealed)
		CHECK(fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW) == 0);

	int want = expected_attach(sealed, fsize, &h, head, tail);
	struct rdm_ring *prod = NULL, *cons = NULL;
	int rc = rdm_ring_attach(fd, RDM_RING_PRODUCER, &prod);
	if (rc != want)
		fprintf(stderr, "fuzz_ring: attach returned %d, expected %d: %s\n", rc, want,
			rdm_last_error());
	CHECK(rc == want);
	if (rc) {
		CHECK(rdm_last_error()[0] != '\0');
		CHECK(prod == NULL);
		close(fd);
		return 0;
	}
	CHECK(rdm_ring_attach(fd, RDM_RING_CONSUMER, &cons) == 0);
	close(fd);
	/*
	 * The header's geometry, not the generator's: replaced fields can make
	 * another valid one of the same byte size (16 x 16 rewritten as 32 x 8).
	 */
	cap = h.capacity;
	rs = h.record_size;
	CHECK(rdm_ring_capacity(prod) == cap && rdm_ring_record_size(prod) == rs);

	struct fixed fp = { cap, cap - 1, rs, prod->prod.slots, prod->prod.sh };
	struct fixed fc = { cap, cap - 1, rs, cons->cons.slots, cons->cons.sh };
	struct rdm_ring_shared *sh = cons->cons.sh;
	CHECK(fp.slots == (unsigned char *)prod->ctl.map + DATA_OFFSET);
	CHECK(DATA_OFFSET + (uint64_t)cap * rs <= prod->ctl.map_size);

	/* FIFO model while the input leaves the indices and records alone. */
	bool clean = (tail == head);
	uint64_t next_push = 0, next_pop = 0;
	unsigned char *buf = malloc((size_t)2 * cap * rs);
	CHECK(buf);

	for (int steps = 0; steps < 512 && in.i < in.n; steps++) {
		uint8_t op = u8(&in);
		unsigned n = (unsigned)(u8(&in) % (2 * cap + 1));
		uint32_t stail = sh_load(&sh->tail), shead = sh_load(&sh->head);
		bool tail_bad = stail - cons->cons.head > cap;
		switch (op % 16) {
		case 0: { /* push */
			fill_rec(buf, rs, next_push);
			bool ok = rdm_ring_push(prod, buf);
			if (ok)
				next_push++;
			else
				CHECK(prod->prod.tail - shead >= cap); /* full or corrupt */
			break;
		}
		case 1: { /* push_burst */
			for (unsigned k = 0; k < n; k++)
				fill_rec(buf + (size_t)k * rs, rs, next_push + k);
			unsigned got = rdm_ring_push_burst(prod, buf, n);
			CHECK(got <= n);
			next_push += got;
			break;
		}
		case 2: { /* push_bulk */
			for (unsigned k = 0; k < n; k++)
				fill_rec(buf + (size_t)k * rs, rs, next_push + k);
			unsigned got = rdm_ring_push_bulk(prod, buf, n);
			CHECK(got == 0 || got == n);
			next_push += got;
			break;
		}
		case 3: { /* pop */
			int got = rdm_ring_pop(cons, buf);
			CHECK(got == 1 || got == 0 || got == -EBADMSG);
			if (got == 0)
				CHECK(stail == cons->cons.head);
			if (got == -EBADMSG)
				CHECK(tail_bad);
			if (got == 1 && clean)
				check_rec(buf, rs, next_pop);
			if (got == 1)
				next_pop++;
			break;
		}
		case 4: case 5: { /* pop_burst, pop_bulk */
			uint32_t h0 = cons->cons.head;
			int got = op % 16 == 4 ? rdm_ring_pop_burst(cons, buf, n)
					       : rdm_ring_pop_bulk(cons, buf, n);
			CHECK(got == -EBADMSG || (got >= 0 && (unsigned)got <= n));
			if (op % 16 == 5)
				CHECK(got <= 0 || (unsigned)got == n);
			if (got == -EBADMSG)
				CHECK(tail_bad && cons->cons.head == h0);
			if (got > 0) {
				CHECK(cons->cons.head == h0 + (uint32_t)got);
				for (int k = 0; clean && k < got; k++)
					check_rec(buf + (size_t)k * rs, rs, next_pop + (uint64_t)k);
				next_pop += (uint64_t)got;
			}
			break;
		}
		case 6: { /* count, empty, free_count, count_seq_cst */
			int c = rdm_ring_count(cons);
			if (tail_bad)
				CHECK(c == -EBADMSG);
			else
				CHECK(c >= 0 && (uint32_t)c == stail - cons->cons.head);
			CHECK(rdm_ring_empty(cons) == (stail == cons->cons.head));
			unsigned fr = rdm_ring_free_count(prod);
			CHECK(fr <= cap);
			if (prod->prod.tail - shead > cap)
				CHECK(fr == 0 || fr == cap - (prod->prod.tail - prod->prod.head_cache));
			c = rdm_ring_count_seq_cst(cons);
			CHECK(tail_bad ? c == -EBADMSG : c >= 0 && (uint32_t)c <= cap);
			break;
		}
		case 7: { /* wait_readable, only where it cannot sleep */
			if (stail == cons->cons.head)
				break;
			bool cached = cons->cons.tail_cache != cons->cons.head;
			int c = rdm_ring_wait_readable(cons, u8(&in) % 4);
			if (tail_bad && !cached)
				CHECK(c == -EBADMSG);
			else
				CHECK(c > 0 && (uint32_t)c <= cap);
			break;
		}
		case 8: { /* wait_writable, only where it cannot sleep */
			uint32_t used = prod->prod.tail - shead;
			bool cached_room = prod->prod.tail - prod->prod.head_cache < cap;
			if (!cached_room && used == cap)
				break;
			int c = rdm_ring_wait_writable(prod, u8(&in) % 4);
			if (!cached_room && used > cap)
				CHECK(c == -EBADMSG);
			else
				CHECK(c > 0 && (uint32_t)c <= cap);
			break;
		}
		case 9: /* hostile: the tail near the consumer's head, or anywhere */
			sh_store(&sh->tail, op & 0x80 ? u32(&in)
					   : cons->cons.head + (uint32_t)(u8(&in) % (2 * cap + 2)));
			clean = false;
			break;
		case 10: /* hostile: the head */
			sh_store(&sh->head, op & 0x80 ? u32(&in)
					   : prod->prod.tail - (uint32_t)(u8(&in) % (2 * cap + 2)));
			clean = false;
			break;
		case 11: /* hostile: need-wakeup flags (a set flag costs a spurious wake) */
			sh_store(&sh->consumer_sleeping, u8(&in) & 1);
			sh_store(&sh->producer_sleeping, u8(&in) & 1);
			break;
		case 12: { /* hostile: the header (must change nothing) */
			uint8_t f = u8(&in);
			if (f & 1)
				sh->hdr.capacity = u32(&in);
			if (f & 2)
				sh->hdr.record_size = u32(&in);
			if (f & 4)
				sh->hdr.total_size = u64(&in);
			if (f & 8)
				sh->hdr.data_offset = u64(&in);
			break;
		}
		case 13: { /* hostile: a record's bytes */
			uint32_t slot = u8(&in) & (cap - 1);
			memset(fp.slots + (size_t)slot * rs, u8(&in), rs);
			clean = false;
			break;
		}
		case 14: /* stage several, publish once */
			for (unsigned k = 0; k < n % 4; k++) {
				fill_rec(buf, rs, next_push);
				if (!rdm_ring_stage(prod, buf))
					break;
				next_push++;
			}
			rdm_ring_push_publish(prod);
			break;
		case 15: /* the consumer's pops so far, then reconcile the model */
			if (clean)
				CHECK(next_push - next_pop == (uint64_t)(prod->prod.tail - cons->cons.head));
			break;
		}
		check_fixed(prod, &fp);
		check_fixed(cons, &fc);
	}
	free(buf);
	rdm_ring_destroy(prod);
	rdm_ring_destroy(cons);
	return 0;
}
