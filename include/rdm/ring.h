/* SPDX-License-Identifier: MIT */
/*
 * rdm/ring.h - lock-free single-producer / single-consumer rings of
 * fixed-size records, usable between threads or between processes (memfd).
 *
 * A ring holds `capacity` records (a power of two) of `record_size` bytes
 * (fixed at creation). Exactly one thread produces and exactly one thread
 * consumes at a time. rdm's own record is struct rdm_change_rec.
 *
 * Concurrency:
 *
 *   call                                may run concurrently with
 *   ----------------------------------  ------------------------------------
 *   push*, wait_writable, free_count    every consumer-side call
 *   pop*, wait_readable, count, empty   every producer-side call
 *   create*, attach                     -
 *   destroy                             nothing on this handle
 *
 * Two producer-side calls on one ring never run at once (likewise consumer).
 *
 * Shared memory: rdm_ring_create_shared() puts the ring in a sealed memfd;
 * another process maps it with rdm_ring_attach() and takes ONE side. That
 * process may be buggy or hostile: the attaching side validates the header
 * once and keeps its own copies of capacity and record size, and each side
 * checks the other side's index before trusting it. A corrupt index makes
 * the consumer's calls return -EBADMSG and the producer's see a full ring
 * (rdm_ring_wait_writable() then returns -EBADMSG); no access ever leaves
 * the ring. The handle returned by rdm_ring_create_shared() may be used for
 * both sides, but a process must use only the side the other process did not
 * attach.
 *
 * Memory ordering (the edges; the theory is in ring/ring.c):
 *   R1 producer's release store of the tail after writing records
 *      -> A1 consumer's acquire load of the tail before reading them.
 *   R2 consumer's release store of the head after reading records
 *      -> A2 producer's acquire load of the head before overwriting slots.
 *   S1/S2 the index store, then the read of the other side's need-wakeup
 *      flag; S1'/S2' a sleeper's "set my flag", then "recheck the index".
 *      Two protocols make these a Dekker pair (the argument is in ring/ring.c):
 *      - asymmetric (rings from rdm_ring_create() when membarrier(2)'s
 *        private expedited command is available): the publisher orders its
 *        store and load with a compiler barrier only (no fence, no locked
 *        instruction on the hot path); the sleeper pays with one
 *        membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) between its two steps;
 *      - seq_cst (shared-memory rings, whose other side is another process
 *        that a private membarrier cannot reach; kernels without membarrier;
 *        every ring of a ThreadSanitizer build, which cannot see membarrier):
 *        all four accesses are seq_cst.
 *      Either way no wake-up is lost.
 * A push is visible to the consumer when it returns; a burst or bulk push
 * publishes all its records at once, at its end. Likewise for pops.
 *
 * Waiting: a side that finds the ring empty/full may call
 * rdm_ring_wait_readable()/rdm_ring_wait_writable(): it polls `spin` times,
 * then sets its need-wakeup flag and sleeps on a futex in the ring. The other
 * side issues a FUTEX_WAKE only when that flag is set, so a busy ring makes
 * no system calls.
 */
#ifndef RDM_RING_H
#define RDM_RING_H

#include <rdm/common.h>

#include <errno.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- rdm's change record ---------------------------------------------- */

enum rdm_change_op {
	RDM_CHANGE_POPULATE = 1,
	RDM_CHANGE_DISCARD = 2,
	RDM_CHANGE_DISCARD_ALL = 3,
};

/*
 * One state change on its way from a producer to the IOMMU worker. Plain
 * integers only (never pointers), so a record can cross processes.
 */
struct rdm_change_rec {
	uint16_t op;     /* enum rdm_change_op (or a later extension) */
	uint16_t flags;
	uint32_t region; /* the region's number at the worker */
	uint64_t seq;    /* the region's sequence number of this change */
	uint64_t offset; /* bytes from the region's start */
	uint64_t length; /* bytes */
	uint64_t ticket; /* the producer's ticket number */
};
_Static_assert(sizeof(struct rdm_change_rec) == 40, "rdm_change_rec is 40 bytes");
_Static_assert(offsetof(struct rdm_change_rec, seq) == 8, "rdm_change_rec layout");
_Static_assert(offsetof(struct rdm_change_rec, ticket) == 32, "rdm_change_rec layout");

/* ---- settings ----------------------------------------------------------- */

/* Polls of the other side's index before a waiting call goes to sleep. */
#define RDM_RING_DEFAULT_SPIN 2048u

#define RDM_RING_MIN_CAPACITY 2u
#define RDM_RING_MAX_CAPACITY (1u << 28)
/* Record sizes: a multiple of 8 bytes, from 8 to RDM_RING_MAX_RECORD. */
#define RDM_RING_MAX_RECORD 4096u
/* Total bytes of records: capacity * record_size at most this. */
#define RDM_RING_MAX_DATA ((uint64_t)1 << 32)

#define RDM_RING_MAGIC 0x474e4952004d4452ull /* "RDM\0RING" little-endian */
#define RDM_RING_LAYOUT_VERSION 1u

/* Two cache lines: adjacent-line prefetch pairs lines, so 128 bytes apart. */
#define RDM_RING_LINE 128

enum rdm_ring_side {
	RDM_RING_PRODUCER = 1,
	RDM_RING_CONSUMER = 2,
};

/* ---- layout ------------------------------------------------------------- */

/*
 * The shared part, at offset 0 of the mapping (private memory or a memfd).
 * Offsets only. The records start at hdr.data_offset.
 */
struct rdm_ring_header {
	uint64_t magic;        /* RDM_RING_MAGIC */
	uint32_t version;      /* RDM_RING_LAYOUT_VERSION */
	uint32_t record_size;  /* bytes per record */
	uint32_t capacity;     /* records, a power of two */
	uint32_t reserved;     /* 0 */
	uint64_t data_offset;  /* bytes from the mapping's start to record 0 */
	uint64_t total_size;   /* data_offset + capacity * record_size */
};

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
 * One process's handle on a ring. The layout is public only because the hot
 * path is inline; callers must not touch the fields. Each side's line holds
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

/* ---- creation ------------------------------------------------------------ */

/*
 * Create a ring in private memory (threads of this process).
 * capacity: a power of two in [RDM_RING_MIN_CAPACITY, RDM_RING_MAX_CAPACITY];
 * record_size: a multiple of 8 in [8, RDM_RING_MAX_RECORD]; and
 * capacity * record_size <= RDM_RING_MAX_DATA.
 * Returns 0 and *out, or -EINVAL (bad argument, NULL out), -ENOMEM.
 * Any thread; the new ring is empty.
 */
RDM_API RDM_WARN_UNUSED int rdm_ring_create(uint32_t capacity, uint32_t record_size,
					    struct rdm_ring **out);

/*
 * Create a ring in a new memfd (close-on-exec, sealed against shrinking and
 * growing) for use with another process. Returns 0, *memfd_out (owned by the
 * caller, who passes it on and closes it; the mapping stays valid) and *out;
 * or -EINVAL as rdm_ring_create(), -ENOMEM, -EMFILE/-ENFILE (memfd_create),
 * or another negative errno of memfd_create, ftruncate, fcntl or mmap.
 */
RDM_API RDM_WARN_UNUSED int rdm_ring_create_shared(uint32_t capacity, uint32_t record_size,
						   int *memfd_out, struct rdm_ring **out);

/*
 * Map a ring another process created, as one side. Validates the header and
 * copies capacity and record size into the handle; the fd may be closed after.
 * Returns 0 and *out, or:
 *   -EINVAL           NULL out, unknown side, fd < 0
 *   -EPERM            the memfd is not sealed against shrinking (the other
 *                     process could truncate it under us: SIGBUS)
 *   -EPROTO           not a ring: bad magic, data offset, total size, or a
 *                     capacity that is not a power of two in range, or a
 *                     file smaller than the header says
 *   -EPROTONOSUPPORT  another layout version
 *   -EMSGSIZE         record size not a multiple of 8 in [8, RDM_RING_MAX_RECORD]
 *   -EBADMSG          the indices are out of range (tail - head > capacity)
 *   or the negative errno of fstat, fcntl or mmap.
 */
RDM_API RDM_WARN_UNUSED int rdm_ring_attach(int memfd, enum rdm_ring_side side,
					    struct rdm_ring **out);

/* Unmap and free. NULL is ignored. No call on r may be running. */
RDM_API void rdm_ring_destroy(struct rdm_ring *r);

/* ---- slow paths (out of line) ------------------------------------------- */

/* FUTEX_WAKE the consumer sleeping on the tail / the producer on the head. */
RDM_API void rdm_ring_wake_consumer_slow(struct rdm_ring *r);
RDM_API void rdm_ring_wake_producer_slow(struct rdm_ring *r);
/* Record the corrupt producer index `tail` (message) and return -EBADMSG. */
RDM_API int rdm_ring_corrupt_slow(struct rdm_ring *r, uint32_t tail);
/*
 * The sleeper's half of the asymmetric protocol: a full memory barrier on
 * every running thread of this process (membarrier(2), private expedited).
 * Returns 0, or a negative errno (the caller must then not sleep).
 */
RDM_API int rdm_ring_heavy_fence_slow(void);

/*
 * Consumer side. Return the number of records readable (> 0) as soon as there
 * are any; poll `spin` times first (RDM_RING_DEFAULT_SPIN is a good value,
 * 0 sleeps at once), then sleep until a push. May return 0 (a signal, a
 * spurious wake-up): the caller checks its own stop
 * condition and calls again. Returns -EBADMSG if the producer's index is out
 * of range. Never fails otherwise.
 */
RDM_API int rdm_ring_wait_readable(struct rdm_ring *r, unsigned spin);

/*
 * Producer side. Return the number of free slots (> 0) as soon as there are
 * any; poll, then sleep until a pop, like rdm_ring_wait_readable(). May
 * return 0 (see there). Returns -EBADMSG if the consumer's index is out of
 * range.
 */
RDM_API int rdm_ring_wait_writable(struct rdm_ring *r, unsigned spin);

/* ---- inline hot path ----------------------------------------------------- */

static inline uint32_t rdm_ring_capacity(const struct rdm_ring *r)
{
	return r->prod.capacity;
}

static inline uint32_t rdm_ring_record_size(const struct rdm_ring *r)
{
	return r->prod.record_size;
}

/* Copy one record (a multiple of 8 bytes) as 8-byte words: no call to memcpy. */
static inline void rdm_ring_copy_rec(void *dst, const void *src, uint32_t size)
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
static inline void rdm_ring_copy_in(unsigned char *slots, uint32_t mask, uint32_t rs,
				    uint32_t idx, const unsigned char *src, unsigned n)
{
	uint32_t first = idx & mask;
	uint32_t to_end = mask + 1u - first;
	unsigned a = n < to_end ? n : to_end;

	memcpy(slots + (size_t)first * rs, src, (size_t)a * rs);
	if (n > a)
		memcpy(slots, src + (size_t)a * rs, (size_t)(n - a) * rs);
}

static inline void rdm_ring_copy_out(const unsigned char *slots, uint32_t mask, uint32_t rs,
				     uint32_t idx, unsigned char *dst, unsigned n)
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
static inline uint32_t rdm_ring_prod_room(struct rdm_ring *r, uint32_t want)
{
	uint32_t room = r->prod.capacity - (r->prod.tail - r->prod.head_cache);
	if (room >= want)
		return room;
	/* A2. Acquire: pairs with R2 (the release store of the head in
	 * rdm_ring_pop_publish): the consumer finished reading the slots up to
	 * head before we overwrite them. */
	uint32_t head = atomic_load_explicit(&r->prod.sh->head, memory_order_acquire);
	uint32_t used = r->prod.tail - head;
	if (used > r->prod.capacity)
		return 0;
	r->prod.head_cache = head;
	return r->prod.capacity - used;
}

/* Producer: publish the tail (R1/S1) and wake a sleeping consumer. */
static inline void rdm_ring_push_publish(struct rdm_ring *r)
{
	struct rdm_ring_shared *sh = r->prod.sh;
	uint32_t flag;
	if (r->prod.asym) {
		/* R1. Release: pairs with A1 (the acquire load of the tail in
		 * rdm_ring_cons_avail and the wait path): the records are
		 * written before the consumer can see the index that covers
		 * them. A plain store on x86. */
		atomic_store_explicit(&sh->tail, r->prod.tail, memory_order_release);
		/* S1 (asymmetric). Compiler barrier only: the flag load stays
		 * after the store in program order (this one and any a caller
		 * makes after the push); the CPU's store-load order is the
		 * sleeper's business: its membarrier (S1' in
		 * rdm_ring_wait_readable) acts as a full fence here. Relaxed:
		 * the flag guards no data, it only elects a waker. */
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
		rdm_ring_wake_consumer_slow(r);
}

/*
 * Write one record without publishing it (false when full). Staged records
 * become visible together at the next rdm_ring_push_publish() or push: a
 * producer that must interleave records with other work (taking a sequence
 * number per record) publishes a whole burst with one release store.
 */
static inline bool rdm_ring_stage(struct rdm_ring *r, const void *rec)
{
	if (rdm_ring_prod_room(r, 1) == 0)
		return false;
	uint32_t rs = r->prod.record_size;
	rdm_ring_copy_rec(r->prod.slots + (size_t)(r->prod.tail & r->prod.mask) * rs, rec, rs);
	r->prod.tail++;
	return true;
}

/* Push one record (record_size bytes at rec). Returns false when full. */
static inline bool rdm_ring_push(struct rdm_ring *r, const void *rec)
{
	if (!rdm_ring_stage(r, rec))
		return false;
	rdm_ring_push_publish(r);
	return true;
}

/* Push as many of the n records at recs as fit; publish once. Returns that count. */
static inline unsigned rdm_ring_push_burst(struct rdm_ring *r, const void *recs, unsigned n)
{
	uint32_t room = rdm_ring_prod_room(r, n);
	if (n > room)
		n = room;
	if (n == 0)
		return 0;
	rdm_ring_copy_in(r->prod.slots, r->prod.mask, r->prod.record_size, r->prod.tail,
			 (const unsigned char *)recs, n);
	r->prod.tail += n;
	rdm_ring_push_publish(r);
	return n;
}

/* Push all n records or none; publish once. Returns n or 0. */
static inline unsigned rdm_ring_push_bulk(struct rdm_ring *r, const void *recs, unsigned n)
{
	if (n == 0 || rdm_ring_prod_room(r, n) < n)
		return 0;
	rdm_ring_copy_in(r->prod.slots, r->prod.mask, r->prod.record_size, r->prod.tail,
			 (const unsigned char *)recs, n);
	r->prod.tail += n;
	rdm_ring_push_publish(r);
	return n;
}

/* Producer: free slots now (0 also when the consumer's index is corrupt). */
static inline unsigned rdm_ring_free_count(struct rdm_ring *r)
{
	return rdm_ring_prod_room(r, r->prod.capacity);
}

/*
 * Consumer: readable records, refreshing the cached tail only when it shows
 * fewer than `want`. Returns -EBADMSG when the producer's tail is out of range.
 */
static inline int64_t rdm_ring_cons_avail(struct rdm_ring *r, uint32_t want)
{
	uint32_t avail = r->cons.tail_cache - r->cons.head;
	if (avail >= want)
		return avail;
	/* A1. Acquire: pairs with R1 (the release store of the tail in
	 * rdm_ring_push_publish): the records below tail are written. */
	uint32_t tail = atomic_load_explicit(&r->cons.sh->tail, memory_order_acquire);
	avail = tail - r->cons.head;
	if (avail > r->cons.capacity)
		return rdm_ring_corrupt_slow(r, tail);
	r->cons.tail_cache = tail;
	return avail;
}

/* Consumer: publish the head (R2/S2) and wake a sleeping producer. */
static inline void rdm_ring_pop_publish(struct rdm_ring *r)
{
	struct rdm_ring_shared *sh = r->cons.sh;
	uint32_t flag;
	if (r->cons.asym) {
		/* R2. Release: pairs with A2 (the acquire load of the head in
		 * rdm_ring_prod_room and the wait path): our reads of the slots
		 * are done before the producer may overwrite them. */
		atomic_store_explicit(&sh->head, r->cons.head, memory_order_release);
		/* S2 (asymmetric): as S1 in rdm_ring_push_publish, paired with
		 * the membarrier of S2' in rdm_ring_wait_writable. */
		atomic_signal_fence(memory_order_seq_cst);
		flag = atomic_load_explicit(&sh->producer_sleeping, memory_order_relaxed);
	} else {
		/* R2 and S2 (seq_cst): pairs with S2' in rdm_ring_wait_writable. */
		atomic_store_explicit(&sh->head, r->cons.head, memory_order_seq_cst);
		flag = atomic_load_explicit(&sh->producer_sleeping, memory_order_seq_cst);
	}
	if (flag)
		rdm_ring_wake_producer_slow(r);
}

/*
 * Pop one record into rec (record_size bytes). Returns 1, 0 when empty, or
 * -EBADMSG when the producer's index is corrupt (nothing is read).
 */
static inline int rdm_ring_pop(struct rdm_ring *r, void *rec)
{
	int64_t avail = rdm_ring_cons_avail(r, 1);
	if (avail <= 0)
		return (int)avail;
	uint32_t rs = r->cons.record_size;
	rdm_ring_copy_rec(rec, r->cons.slots + (size_t)(r->cons.head & r->cons.mask) * rs, rs);
	r->cons.head++;
	rdm_ring_pop_publish(r);
	return 1;
}

/*
 * Pop up to n records into recs; publish once. Returns the count (0 when
 * empty) or -EBADMSG (nothing is read).
 */
static inline int rdm_ring_pop_burst(struct rdm_ring *r, void *recs, unsigned n)
{
	int64_t avail = rdm_ring_cons_avail(r, n);
	if (avail <= 0)
		return (int)avail;
	if (n > avail)
		n = (unsigned)avail;
	if (n == 0)
		return 0;
	rdm_ring_copy_out(r->cons.slots, r->cons.mask, r->cons.record_size, r->cons.head,
			  (unsigned char *)recs, n);
	r->cons.head += n;
	rdm_ring_pop_publish(r);
	return (int)n;
}

/* Pop exactly n records or none; publish once. Returns n, 0, or -EBADMSG. */
static inline int rdm_ring_pop_bulk(struct rdm_ring *r, void *recs, unsigned n)
{
	if (n == 0)
		return 0;
	int64_t avail = rdm_ring_cons_avail(r, n);
	if (avail < 0)
		return (int)avail;
	if (avail < n)
		return 0;
	rdm_ring_copy_out(r->cons.slots, r->cons.mask, r->cons.record_size, r->cons.head,
			  (unsigned char *)recs, n);
	r->cons.head += n;
	rdm_ring_pop_publish(r);
	return (int)n;
}

/*
 * Consumer side: readable records now (reads the shared tail), or -EBADMSG.
 * Updates nothing but the consumer's cached tail.
 */
static inline int rdm_ring_count(struct rdm_ring *r)
{
	int64_t avail = rdm_ring_cons_avail(r, r->cons.capacity + 1u);
	return (int)avail;
}

/*
 * Consumer side: true when nothing is readable (a corrupt index counts as
 * not empty, so a drain loop goes on to pop and see -EBADMSG). Reads the
 * shared tail with acquire (A1). For a consumer's own "every ring empty"
 * doorbell use rdm_ring_count_seq_cst(), or a seq_cst fence on both sides
 * (the producer's after its push, the consumer's between its flag store and
 * this call): a push's tail store precedes its return in program order and
 * no compiler or CPU reordering moves it past a later seq_cst fence.
 */
static inline bool rdm_ring_empty(const struct rdm_ring *r)
{
	/* A1 (as in rdm_ring_cons_avail). */
	uint32_t tail = atomic_load_explicit(&r->cons.sh->tail, memory_order_acquire);
	return tail == r->cons.head;
}

/*
 * Consumer side: as rdm_ring_count, but ordered after the caller's earlier
 * seq_cst store (for a many-ring doorbell: set flag seq_cst, then check every
 * ring with this; a producer that loads that flag seq_cst after its push
 * cannot miss both). On a ring using the asymmetric protocol this issues one
 * membarrier(2) (a system call: call it on the way to sleep only); if that
 * fails it returns 1 (readable, so the caller does not sleep; a pop then
 * finds what is really there).
 */
static inline int rdm_ring_count_seq_cst(struct rdm_ring *r)
{
	/* On an asymmetric ring the producer's push ends with a plain store
	 * and a compiler barrier (S1): the heavy fence stands in for the
	 * fence its side does not issue, as S1' does in the wait path. */
	if (r->cons.asym && rdm_ring_heavy_fence_slow() != 0)
		return 1;
	/* seq_cst: pairs with S1 (the producer's seq_cst tail store) on a
	 * seq_cst ring; also A1 (pairs with R1). */
	uint32_t tail = atomic_load_explicit(&r->cons.sh->tail, memory_order_seq_cst);
	uint32_t avail = tail - r->cons.head;
	if (avail > r->cons.capacity)
		return rdm_ring_corrupt_slow(r, tail);
	r->cons.tail_cache = tail;
	return (int)avail;
}

#ifdef __cplusplus
}
#endif

#endif /* RDM_RING_H */
