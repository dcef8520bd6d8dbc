/* SPDX-License-Identifier: MIT */
/*
 * rdm/ring.h - lock-free single-producer / single-consumer rings of
 * fixed-size records, usable between threads or between processes (memfd).
 *
 * A ring holds `capacity` records (a power of two) of `record_size` bytes
 * (fixed at creation). Exactly one thread produces and exactly one thread
 * consumes at a time. The ring knows nothing of what its records mean: the
 * IOMMU worker's record format is private to rdm (iommu/record.h).
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
 * process may be buggy or hostile. Guarantee: whatever the other process
 * writes into the mapping, at any time (header, indices, flags, records),
 * rdm_ring_attach() and every call on the handle it returns (and on the
 * handle of rdm_ring_create_shared()) read and write only inside the
 * mapping, inside the caller's buffers, and inside the handle; they never
 * raise SIGBUS and never loop forever on the other side's data. How:
 *   - attach accepts only a memfd sealed against shrinking and backed by
 *     shmem (not hugetlbfs, whose pages a punched hole can make fail to
 *     fault back: SIGBUS), maps exactly the file's size, validates ONE
 *     copy of the header against that size and keeps its own copies of
 *     capacity, mask and record size; the header is never read again;
 *   - each side's index is authoritative in its own handle; the shared word
 *     is only stored to. The other side's index is re-checked on every read
 *     (tail - head <= capacity) and every slot address is
 *     slots + (index & mask) * record_size with the local mask;
 *   - the need-wakeup flags only decide whether to call FUTEX_WAKE.
 * A corrupt index makes the consumer's calls return -EBADMSG and the
 * producer's see a full ring (rdm_ring_wait_writable() then returns
 * -EBADMSG). Records are copied as they are: a hostile producer can send
 * any bytes, so their contents need the reader's own validation. Liveness is
 * not guaranteed against a hostile peer (it may simply never publish or
 * never wake us). The handle returned by rdm_ring_create_shared() may be
 * used for both sides, but a process must use only the side the other
 * process did not attach.
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
 * then sets its need-wakeup flag and sleeps on a futex in the ring, and
 * clears the flag itself once awake. The other side issues a FUTEX_WAKE only
 * while that flag is set, so a busy ring makes no system calls. The protocol
 * is model-checked (models/ring_wakeup.pml).
 *
 * Languages. C11 translation units get the hot path (push, pop and the rest
 * of the "hot path" section) as static inline functions; its internals live
 * in <rdm/ring_pvt.h>, which is not API and must not be included directly.
 * C++ (and any user that defines RDM_RING_NO_INLINE before including this
 * header, e.g. for bindgen) sees struct rdm_ring as an opaque type and the
 * same calls as exported out-of-line functions with the same contracts.
 */
#ifndef RDM_RING_H
#define RDM_RING_H

#include <rdm/common.h>

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#ifndef __cplusplus
#include <stdbool.h>
#endif

#if defined(__cplusplus) && !defined(RDM_RING_NO_INLINE)
#define RDM_RING_NO_INLINE 1
#endif

#ifdef __cplusplus
#define RDM_RING_STATIC_ASSERT(cond, msg) static_assert(cond, msg)
#else
#define RDM_RING_STATIC_ASSERT(cond, msg) _Static_assert(cond, msg)
#endif

#ifdef __cplusplus
extern "C" {
#endif

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
 * The header at offset 0 of a ring's mapping (private memory or a memfd).
 * Offsets only. After it, each on its own RDM_RING_LINE-aligned line: the
 * producer's index (tail, uint32_t, also the consumer's futex word), the
 * consumer's index (head, the producer's futex word), then the consumer's
 * and the producer's need-wakeup flags (uint32_t each); the records start at
 * data_offset.
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

/* One process's handle on a ring (opaque). */
struct rdm_ring;

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

/* ---- waiting (out of line) ---------------------------------------------- */

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

/* ---- hot path ------------------------------------------------------------
 *
 * Static inline for C (bodies in <rdm/ring_pvt.h>); exported functions for
 * C++ and RDM_RING_NO_INLINE users. RDM_RING_HOT_FN declares one call either
 * way; RDM_RING_HOT_BODY is its body in the inline case.
 */
#ifdef RDM_RING_NO_INLINE
#define RDM_RING_HOT_FN RDM_API
#define RDM_RING_HOT_BODY(...) ;
#else
#define RDM_RING_PVT_INSIDE 1
#include <rdm/ring_pvt.h>
#undef RDM_RING_PVT_INSIDE
#define RDM_RING_HOT_FN static inline
#define RDM_RING_HOT_BODY(...) { __VA_ARGS__ }
#endif

/* Records the ring holds; bytes per record. Any thread. */
RDM_RING_HOT_FN uint32_t rdm_ring_capacity(const struct rdm_ring *r)
	RDM_RING_HOT_BODY(return rdm_ring_pvt_capacity(r);)
RDM_RING_HOT_FN uint32_t rdm_ring_record_size(const struct rdm_ring *r)
	RDM_RING_HOT_BODY(return rdm_ring_pvt_record_size(r);)

/*
 * Producer: write one record without publishing it (false when full). Staged
 * records become visible together at the next rdm_ring_push_publish() or
 * push: a producer that must interleave records with other work (taking a
 * sequence number per record) publishes a whole burst with one release store.
 */
RDM_RING_HOT_FN bool rdm_ring_stage(struct rdm_ring *r, const void *rec)
	RDM_RING_HOT_BODY(return rdm_ring_pvt_stage(r, rec);)

/* Producer: publish every staged record (R1/S1) and wake a sleeping consumer. */
RDM_RING_HOT_FN void rdm_ring_push_publish(struct rdm_ring *r)
	RDM_RING_HOT_BODY(rdm_ring_pvt_push_publish(r);)

/* Producer: push one record (record_size bytes at rec). Returns false when full. */
RDM_RING_HOT_FN bool rdm_ring_push(struct rdm_ring *r, const void *rec)
	RDM_RING_HOT_BODY(return rdm_ring_pvt_push(r, rec);)

/* Producer: push as many of the n records at recs as fit; publish once. Returns that count. */
RDM_RING_HOT_FN unsigned rdm_ring_push_burst(struct rdm_ring *r, const void *recs, unsigned n)
	RDM_RING_HOT_BODY(return rdm_ring_pvt_push_burst(r, recs, n);)

/* Producer: push all n records or none; publish once. Returns n or 0. */
RDM_RING_HOT_FN unsigned rdm_ring_push_bulk(struct rdm_ring *r, const void *recs, unsigned n)
	RDM_RING_HOT_BODY(return rdm_ring_pvt_push_bulk(r, recs, n);)

/* Producer: free slots now (0 also when the consumer's index is corrupt). */
RDM_RING_HOT_FN unsigned rdm_ring_free_count(struct rdm_ring *r)
	RDM_RING_HOT_BODY(return rdm_ring_pvt_free_count(r);)

/*
 * Consumer: pop one record into rec (record_size bytes). Returns 1, 0 when
 * empty, or -EBADMSG when the producer's index is corrupt (nothing is read).
 */
RDM_RING_HOT_FN int rdm_ring_pop(struct rdm_ring *r, void *rec)
	RDM_RING_HOT_BODY(return rdm_ring_pvt_pop(r, rec);)

/*
 * Consumer: pop up to n records into recs; publish once. Returns the count
 * (0 when empty) or -EBADMSG (nothing is read).
 */
RDM_RING_HOT_FN int rdm_ring_pop_burst(struct rdm_ring *r, void *recs, unsigned n)
	RDM_RING_HOT_BODY(return rdm_ring_pvt_pop_burst(r, recs, n);)

/* Consumer: pop exactly n records or none; publish once. Returns n, 0, or -EBADMSG. */
RDM_RING_HOT_FN int rdm_ring_pop_bulk(struct rdm_ring *r, void *recs, unsigned n)
	RDM_RING_HOT_BODY(return rdm_ring_pvt_pop_bulk(r, recs, n);)

/*
 * Consumer: readable records now (reads the shared tail), or -EBADMSG.
 * Updates nothing but the consumer's cached tail.
 */
RDM_RING_HOT_FN int rdm_ring_count(struct rdm_ring *r)
	RDM_RING_HOT_BODY(return rdm_ring_pvt_count(r);)

/*
 * Consumer: true when nothing is readable (a corrupt index counts as not
 * empty, so a drain loop goes on to pop and see -EBADMSG). Reads the shared
 * tail with acquire (A1). For a consumer's own "every ring empty" doorbell
 * use rdm_ring_count_seq_cst(), or a seq_cst fence on both sides (the
 * producer's after its push, the consumer's between its flag store and this
 * call): a push's tail store precedes its return in program order and no
 * compiler or CPU reordering moves it past a later seq_cst fence.
 */
RDM_RING_HOT_FN bool rdm_ring_empty(const struct rdm_ring *r)
	RDM_RING_HOT_BODY(return rdm_ring_pvt_empty(r);)

/*
 * Consumer: as rdm_ring_count, but ordered after the caller's earlier
 * seq_cst store (for a many-ring doorbell: set flag seq_cst, then check every
 * ring with this; a producer that loads that flag seq_cst after its push
 * cannot miss both). On a ring using the asymmetric protocol this issues one
 * membarrier(2) (a system call: call it on the way to sleep only); if that
 * fails it returns 1 (readable, so the caller does not sleep; a pop then
 * finds what is really there).
 */
RDM_RING_HOT_FN int rdm_ring_count_seq_cst(struct rdm_ring *r)
	RDM_RING_HOT_BODY(return rdm_ring_pvt_count_seq_cst(r);)

#ifdef __cplusplus
}
#endif

#endif /* RDM_RING_H */
