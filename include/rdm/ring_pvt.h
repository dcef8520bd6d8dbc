/* SPDX-License-Identifier: MIT */
/*
 * rdm/ring_pvt.h - the SPSC ring's inline hot path and the layout it needs.
 *
 * NOT FOR DIRECT INCLUSION: <rdm/ring.h> includes it for C translation
 * units. Nothing here is API: the names (rdm_ring_pvt_*), the layouts and
 * the out-of-line helpers may change with any release. The public calls are
 * the rdm_ring_* wrappers in <rdm/ring.h>, whose contracts are given there.
 * C++ and bindgen users never see this file (RDM_RING_NO_INLINE).
 */
#ifndef RDM_RING_PVT_H
#define RDM_RING_PVT_H

#ifndef RDM_RING_PVT_INSIDE
#error "rdm/ring_pvt.h is private: include <rdm/ring.h> instead"
#endif
#ifdef __cplusplus
#error "rdm/ring_pvt.h is C11 only: C++ sees the out-of-line ring calls of <rdm/ring.h>"
#endif

#include <stdalign.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* ---- layout ------------------------------------------------------------- */

/*
 * The shared part, at offset 0 of the mapping (private memory or a memfd);
 * struct rdm_ring_header is in <rdm/ring.h>. The records start at
 * hdr.data_offset. A process on the other side of a memfd may write any
 * word of it at any time (ring.h, "Shared memory").
 */
struct rdm_ring_shared {
	alignas(RDM_RING_LINE) struct rdm_ring_header hdr;
	/* Written by the producer only; the consumer sleeps on it (futex word). */
	alignas(RDM_RING_LINE) _Atomic uint32_t tail;
	/* Written by the consumer only; the producer sleeps on it (futex word). */
	alignas(RDM_RING_LINE) _Atomic uint32_t head;
	/* Need-wakeup flags: written only around sleeps, read on every publish. */
	alignas(RDM_RING_LINE) _Atomic uint32_t consumer_sleeping;
	_Atomic uint32_t producer_sleeping;
};

/*
 * One process's handle on a ring (opaque in <rdm/ring.h>: the layout is
 * here only because the hot path is inline). Each side's line holds
 * its own index (the authoritative copy: the shared one is only published
 * from it), its cache of the other side's index, and its own copies of the
 * bounds, so the steady state touches no shared line it does not need.
 */
struct rdm_ring {
	alignas(RDM_RING_LINE) struct {
		uint32_t tail;        /* next index to write */
		uint32_t head_cache;  /* the consumer's head as last read (A2) */
		uint32_t capacity;
		uint32_t mask;
		uint32_t record_size;
		uint32_t asym;        /* 1: asymmetric wake-up protocol, 0: seq_cst */
		unsigned char *slots;
		struct rdm_ring_shared *sh;
	} prod;
	alignas(RDM_RING_LINE) struct {
		uint32_t head;        /* next index to read */
		uint32_t tail_cache;  /* the producer's tail as last read (A1) */
		uint32_t capacity;
		uint32_t mask;
		uint32_t record_size;
		uint32_t asym;        /* as prod.asym (same value) */
		unsigned char *slots;
		struct rdm_ring_shared *sh;
	} cons;
	alignas(RDM_RING_LINE) struct {
		void *map;           /* the mapping (struct rdm_ring_shared at 0) */
		size_t map_size;
		int futex_private;   /* 1: FUTEX_PRIVATE_FLAG may be used */
		int side;            /* 0 (both), RDM_RING_PRODUCER or RDM_RING_CONSUMER */
	} ctl;
};

/* ---- out of line (ring/ring.c), called only from the inlines below ----- */

/*
 * FUTEX_WAKE the consumer sleeping on the tail / the producer on the head.
 * The caller saw the sleeper's need-wakeup flag set; the flag is left alone
 * (only its sleeper writes it: ring/ring.c, theory).
 */
RDM_API void rdm_ring_pvt_wake_consumer(struct rdm_ring *r);
RDM_API void rdm_ring_pvt_wake_producer(struct rdm_ring *r);
/* Record the corrupt producer index `tail` (message) and return -EBADMSG. */
RDM_API int rdm_ring_pvt_corrupt(struct rdm_ring *r, uint32_t tail);
/*
 * The sleeper's half of the asymmetric protocol: a full memory barrier on
 * every running thread of this process (membarrier(2), private expedited).
 * Returns 0, or a negative errno (the caller must then not sleep).
 */
RDM_API int rdm_ring_pvt_heavy_fence(void);

/* ---- inline hot path ----------------------------------------------------- */

static inline uint32_t rdm_ring_pvt_capacity(const struct rdm_ring *r)
{
	return r->prod.capacity;
}

static inline uint32_t rdm_ring_pvt_record_size(const struct rdm_ring *r)
{
	return r->prod.record_size;
}

/* Copy one record (a multiple of 8 bytes) as 8-byte words: no call to memcpy. */
static inline void rdm_ring_pvt_copy_rec(void *dst, const void *src, uint32_t size)
{
	unsigned char *d = (unsigned char *)dst;
	const unsigned char *s = (const unsigned char *)src;
	for (uint32_t i = 0; i < size; i += 8)
		memcpy(d + i, s + i, 8);
}

/*
 * Copy n records between a ring (starting at index idx) and a flat array:
 * at most two contiguous copies (before and after the wrap), so a burst
 * costs one memcpy whatever the record size.
 */
static inline void rdm_ring_pvt_copy_in(unsigned char *slots, uint32_t mask, uint32_t rs,
					uint32_t idx, const unsigned char *src, unsigned n)
{
	uint32_t first = idx & mask;
	uint32_t to_end = mask + 1u - first;
	unsigned a = n < to_end ? n : to_end;

	memcpy(slots + (size_t)first * rs, src, (size_t)a * rs);
	if (n > a)
		memcpy(slots, src + (size_t)a * rs, (size_t)(n - a) * rs);
}

static inline void rdm_ring_pvt_copy_out(const unsigned char *slots, uint32_t mask,
					 uint32_t rs, uint32_t idx, unsigned char *dst, unsigned n)
{
	uint32_t first = idx & mask;
	uint32_t to_end = mask + 1u - first;
	unsigned a = n < to_end ? n : to_end;

	memcpy(dst, slots + (size_t)first * rs, (size_t)a * rs);
	if (n > a)
		memcpy(dst + (size_t)a * rs, slots, (size_t)(n - a) * rs);
}

/*
 * Producer: free slots, refreshing the cached head only when it shows fewer
 * than `want`. A corrupt head (tail - head > capacity) reads as no room.
 */
static inline uint32_t rdm_ring_pvt_prod_room(struct rdm_ring *r, uint32_t want)
{
	uint32_t room = r->prod.capacity - (r->prod.tail - r->prod.head_cache);
	if (room >= want)
		return room;
	/* A2. Acquire: pairs with R2 (the release store of the head in
	 * rdm_ring_pvt_pop_publish): the consumer finished reading the slots up to
	 * head before we overwrite them. */
	uint32_t head = atomic_load_explicit(&r->prod.sh->head, memory_order_acquire);
	uint32_t used = r->prod.tail - head;
	if (used > r->prod.capacity)
		return 0;
	r->prod.head_cache = head;
	return r->prod.capacity - used;
}

/* Producer: publish the tail (R1/S1) and wake a sleeping consumer. */
static inline void rdm_ring_pvt_push_publish(struct rdm_ring *r)
{
	struct rdm_ring_shared *sh = r->prod.sh;
	uint32_t flag;
	if (r->prod.asym) {
		/* R1. Release: pairs with A1 (the acquire load of the tail in
		 * rdm_ring_pvt_cons_avail and the wait path): the records are
		 * written before the consumer can see the index that covers
		 * them. A plain store on x86. */
		atomic_store_explicit(&sh->tail, r->prod.tail, memory_order_release);
		/* S1 (asymmetric). Compiler barrier only: the flag load stays
		 * after the store in program order (this one and any a caller
		 * makes after the push); the CPU's store-load order is the
		 * sleeper's business: its membarrier (S1' in
		 * rdm_ring_wait_readable) acts as a full fence here. Relaxed:
		 * the flag guards no data, it only asks for a FUTEX_WAKE. */
		atomic_signal_fence(memory_order_seq_cst);
		flag = atomic_load_explicit(&sh->consumer_sleeping, memory_order_relaxed);
	} else {
		/* R1 and S1 (seq_cst). As above, and seq_cst (one locked
		 * instruction on x86): with the seq_cst load below it pairs with
		 * S1' in rdm_ring_wait_readable (set flag, recheck the tail):
		 * either we see its flag or it sees our tail. */
		atomic_store_explicit(&sh->tail, r->prod.tail, memory_order_seq_cst);
		flag = atomic_load_explicit(&sh->consumer_sleeping, memory_order_seq_cst);
	}
	if (flag)
		rdm_ring_pvt_wake_consumer(r);
}

/*
 * Write one record without publishing it (false when full). Staged records
 * become visible together at the next rdm_ring_pvt_push_publish() or push: a
 * producer that must interleave records with other work (taking a sequence
 * number per record) publishes a whole burst with one release store.
 */
static inline bool rdm_ring_pvt_stage(struct rdm_ring *r, const void *rec)
{
	if (rdm_ring_pvt_prod_room(r, 1) == 0)
		return false;
	uint32_t rs = r->prod.record_size;
	rdm_ring_pvt_copy_rec(r->prod.slots + (size_t)(r->prod.tail & r->prod.mask) * rs, rec, rs);
	r->prod.tail++;
	return true;
}

/* Push one record (record_size bytes at rec). Returns false when full. */
static inline bool rdm_ring_pvt_push(struct rdm_ring *r, const void *rec)
{
	if (!rdm_ring_pvt_stage(r, rec))
		return false;
	rdm_ring_pvt_push_publish(r);
	return true;
}

/* Push as many of the n records at recs as fit; publish once. Returns that count. */
static inline unsigned rdm_ring_pvt_push_burst(struct rdm_ring *r, const void *recs, unsigned n)
{
	uint32_t room = rdm_ring_pvt_prod_room(r, n);
	if (n > room)
		n = room;
	if (n == 0)
		return 0;
	rdm_ring_pvt_copy_in(r->prod.slots, r->prod.mask, r->prod.record_size, r->prod.tail,
			 (const unsigned char *)recs, n);
	r->prod.tail += n;
	rdm_ring_pvt_push_publish(r);
	return n;
}

/* Push all n records or none; publish once. Returns n or 0. */
static inline unsigned rdm_ring_pvt_push_bulk(struct rdm_ring *r, const void *recs, unsigned n)
{
	if (n == 0 || rdm_ring_pvt_prod_room(r, n) < n)
		return 0;
	rdm_ring_pvt_copy_in(r->prod.slots, r->prod.mask, r->prod.record_size, r->prod.tail,
			 (const unsigned char *)recs, n);
	r->prod.tail += n;
	rdm_ring_pvt_push_publish(r);
	return n;
}

/* Producer: free slots now (0 also when the consumer's index is corrupt). */
static inline unsigned rdm_ring_pvt_free_count(struct rdm_ring *r)
{
	return rdm_ring_pvt_prod_room(r, r->prod.capacity);
}

/*
 * Consumer: readable records, refreshing the cached tail only when it shows
 * fewer than `want`. Returns -EBADMSG when the producer's tail is out of range.
 */
static inline int64_t rdm_ring_pvt_cons_avail(struct rdm_ring *r, uint32_t want)
{
	uint32_t avail = r->cons.tail_cache - r->cons.head;
	if (avail >= want)
		return avail;
	/* A1. Acquire: pairs with R1 (the release store of the tail in
	 * rdm_ring_pvt_push_publish): the records below tail are written. */
	uint32_t tail = atomic_load_explicit(&r->cons.sh->tail, memory_order_acquire);
	avail = tail - r->cons.head;
	if (avail > r->cons.capacity)
		return rdm_ring_pvt_corrupt(r, tail);
	r->cons.tail_cache = tail;
	return avail;
}

/* Consumer: publish the head (R2/S2) and wake a sleeping producer. */
static inline void rdm_ring_pvt_pop_publish(struct rdm_ring *r)
{
	struct rdm_ring_shared *sh = r->cons.sh;
	uint32_t flag;
	if (r->cons.asym) {
		/* R2. Release: pairs with A2 (the acquire load of the head in
		 * rdm_ring_pvt_prod_room and the wait path): our reads of the slots
		 * are done before the producer may overwrite them. */
		atomic_store_explicit(&sh->head, r->cons.head, memory_order_release);
		/* S2 (asymmetric): as S1 in rdm_ring_pvt_push_publish, paired with
		 * the membarrier of S2' in rdm_ring_wait_writable. */
		atomic_signal_fence(memory_order_seq_cst);
		flag = atomic_load_explicit(&sh->producer_sleeping, memory_order_relaxed);
	} else {
		/* R2 and S2 (seq_cst): pairs with S2' in rdm_ring_wait_writable. */
		atomic_store_explicit(&sh->head, r->cons.head, memory_order_seq_cst);
		flag = atomic_load_explicit(&sh->producer_sleeping, memory_order_seq_cst);
	}
	if (flag)
		rdm_ring_pvt_wake_producer(r);
}

/*
 * Pop one record into rec (record_size bytes). Returns 1, 0 when empty, or
 * -EBADMSG when the producer's index is corrupt (nothing is read).
 */
static inline int rdm_ring_pvt_pop(struct rdm_ring *r, void *rec)
{
	int64_t avail = rdm_ring_pvt_cons_avail(r, 1);
	if (avail <= 0)
		return (int)avail;
	uint32_t rs = r->cons.record_size;
	rdm_ring_pvt_copy_rec(rec, r->cons.slots + (size_t)(r->cons.head & r->cons.mask) * rs, rs);
	r->cons.head++;
	rdm_ring_pvt_pop_publish(r);
	return 1;
}

/*
 * Pop up to n records into recs; publish once. Returns the count (0 when
 * empty) or -EBADMSG (nothing is read).
 */
static inline int rdm_ring_pvt_pop_burst(struct rdm_ring *r, void *recs, unsigned n)
{
	int64_t avail = rdm_ring_pvt_cons_avail(r, n);
	if (avail <= 0)
		return (int)avail;
	if (n > avail)
		n = (unsigned)avail;
	if (n == 0)
		return 0;
	rdm_ring_pvt_copy_out(r->cons.slots, r->cons.mask, r->cons.record_size, r->cons.head,
			  (unsigned char *)recs, n);
	r->cons.head += n;
	rdm_ring_pvt_pop_publish(r);
	return (int)n;
}

/* Pop exactly n records or none; publish once. Returns n, 0, or -EBADMSG. */
static inline int rdm_ring_pvt_pop_bulk(struct rdm_ring *r, void *recs, unsigned n)
{
	if (n == 0)
		return 0;
	int64_t avail = rdm_ring_pvt_cons_avail(r, n);
	if (avail < 0)
		return (int)avail;
	if (avail < n)
		return 0;
	rdm_ring_pvt_copy_out(r->cons.slots, r->cons.mask, r->cons.record_size, r->cons.head,
			  (unsigned char *)recs, n);
	r->cons.head += n;
	rdm_ring_pvt_pop_publish(r);
	return (int)n;
}

/*
 * Consumer side: readable records now (reads the shared tail), or -EBADMSG.
 * Updates nothing but the consumer's cached tail.
 */
static inline int rdm_ring_pvt_count(struct rdm_ring *r)
{
	int64_t avail = rdm_ring_pvt_cons_avail(r, r->cons.capacity + 1u);
	return (int)avail;
}

/*
 * Consumer side: true when nothing is readable (a corrupt index counts as
 * not empty, so a drain loop goes on to pop and see -EBADMSG). Reads the
 * shared tail with acquire (A1). For a consumer's own "every ring empty"
 * doorbell use rdm_ring_pvt_count_seq_cst(), or a seq_cst fence on both sides
 * (the producer's after its push, the consumer's between its flag store and
 * this call): a push's tail store precedes its return in program order and
 * no compiler or CPU reordering moves it past a later seq_cst fence.
 */
static inline bool rdm_ring_pvt_empty(const struct rdm_ring *r)
{
	/* A1 (as in rdm_ring_pvt_cons_avail). */
	uint32_t tail = atomic_load_explicit(&r->cons.sh->tail, memory_order_acquire);
	return tail == r->cons.head;
}

/*
 * Consumer side: as rdm_ring_pvt_count, but ordered after the caller's earlier
 * seq_cst store (for a many-ring doorbell: set flag seq_cst, then check every
 * ring with this; a producer that loads that flag seq_cst after its push
 * cannot miss both). On a ring using the asymmetric protocol this issues one
 * membarrier(2) (a system call: call it on the way to sleep only); if that
 * fails it returns 1 (readable, so the caller does not sleep; a pop then
 * finds what is really there).
 */
static inline int rdm_ring_pvt_count_seq_cst(struct rdm_ring *r)
{
	/* On an asymmetric ring the producer's push ends with a plain store
	 * and a compiler barrier (S1): the heavy fence stands in for the
	 * fence its side does not issue, as S1' does in the wait path. */
	if (r->cons.asym && rdm_ring_pvt_heavy_fence() != 0)
		return 1;
	/* seq_cst: pairs with S1 (the producer's seq_cst tail store) on a
	 * seq_cst ring; also A1 (pairs with R1). */
	uint32_t tail = atomic_load_explicit(&r->cons.sh->tail, memory_order_seq_cst);
	uint32_t avail = tail - r->cons.head;
	if (avail > r->cons.capacity)
		return rdm_ring_pvt_corrupt(r, tail);
	r->cons.tail_cache = tail;
	return (int)avail;
}

#endif /* RDM_RING_PVT_H */
