/* SPDX-License-Identifier: MIT */
/*
 * ring/ring.c - creation, attachment and the sleeping side of the SPSC ring.
 *
 * Theory.
 *
 * Indices. `tail` counts records ever pushed, `head` records ever popped,
 * both free-running uint32_t; a slot is index & (capacity - 1). Because the
 * capacity is a power of two no larger than 2^28, tail - head (mod 2^32) is
 * the fill level even across the wrap at UINT32_MAX, and a value above the
 * capacity can only come from a corrupt index. Each side owns its index: the
 * authoritative copy lives in its line of the local handle, the shared word
 * is only ever stored from it (never read back), so the other process cannot
 * move it. Each side caches the other's index and re-reads the shared word
 * only when the cache says there is not enough room / data.
 *
 * Data edges. The producer writes slots, then release-stores the tail (R1);
 * the consumer acquire-loads the tail (A1) and then reads the slots below it.
 * The consumer reads slots, then release-stores the head (R2); the producer
 * acquire-loads the head (A2) before writing the slots it frees. A stale
 * cache only under-states what the other side allows, so it is always safe.
 *
 * Sleeping (the io_uring need-wakeup idea). A side that wants to sleep
 * stores its need-wakeup flag (F), then rechecks the other side's index (L);
 * only if it is unchanged does it FUTEX_WAIT on that very index word with the
 * value v it saw; once awake (or when the recheck saw a change) it clears
 * its flag itself (Z). The other side publishes its index (W) and then loads
 * the flag (Lf); if it is set it calls FUTEX_WAKE on the index word, and
 * writes nothing: a need-wakeup flag has exactly one writer, its sleeper.
 * The publisher's "W; Lf" (S1, S2) and the sleeper's "F; L" (S1', S2') form
 * a Dekker pair: each needs store-load order, and one of two protocols
 * provides it (chosen at creation, the same for both sides, recorded in
 * prod.asym / cons.asym):
 *
 *  - seq_cst: all four accesses are seq_cst (seq_cst operations rather
 *    than fences: ThreadSanitizer does not model fences). The publisher
 *    pays one locked instruction (x86) per publish.
 *  - asymmetric: the publisher's store (release) and load (relaxed) are
 *    separated by a compiler barrier only; the sleeper stores its flag,
 *    calls membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) and then loads the
 *    index. The sleeper, which is about to make a futex system call anyway,
 *    pays one more; the busy path costs what a release store costs.
 *
 * The futex contract used (kernel/futex: "Basic futex operation and ordering
 * guarantees"): FUTEX_WAIT(word, v) compares the word with v and queues the
 * caller atomically with respect to FUTEX_WAKE on that word, and both calls
 * are full barriers; so if a store to the word precedes a FUTEX_WAKE in the
 * waker's program order, a FUTEX_WAIT(word, v) on the old value v either
 * reads the new value and returns at once, or is queued before the wake
 * and is woken by it. (The word never comes back to v while a side sleeps
 * at v: the other index moves at most `capacity` <= 2^28 away from it.)
 *
 * Why no wake-up is lost, seq_cst protocol (consumer asleep; the producer
 * side is symmetric with S2/S2', head for tail). Take one sleep of the
 * consumer: F (flag = 1), L (load tail, reads v == head), FUTEX_WAIT(tail,
 * v), Z (flag = 0). Let W be the producer's first tail store after v (the
 * only way the consumer has anything to wait for) and Lf the flag load of
 * the same publish. All four are seq_cst, so they lie in the single total
 * order S. L did not read W, so L precedes W in S; hence F < L < W < Lf in
 * S, and Lf reads F's 1 or a later value in the flag's modification order.
 * The only later writes are the sleeper's own: Z of this sleep, and F and Z
 * of its later sleeps. If Lf reads a 1, the producer issues FUTEX_WAKE after
 * W (program order) and, by the futex contract, this sleep ends. If Lf reads
 * a 0, it is a Z at or after this sleep's Z, which the consumer executes
 * only after its FUTEX_WAIT returned: this sleep has already ended. So no
 * sleep outlives a publish it has not seen.
 *
 * Why no wake-up is lost, asymmetric protocol. membarrier(2) guarantees
 * that, between the call's entry and its return, every running thread of
 * the process executes a full memory barrier, and a thread not running is
 * de facto in that state (the scheduler's switch is a full barrier); the
 * call itself is a full barrier for the caller. So there is a point B in the
 * producer's program order (its "W; compiler barrier; Lf", the compiler
 * barrier keeping the program order in the machine code) at which it
 * behaves as if it ran a seq_cst fence, ordered after F and before L. Both
 * ends of the edge, by where B falls:
 *   - B after W: W is globally visible before B, B completes before
 *     membarrier returns, so L (S1', after the call) reads W or later:
 *     contradiction with L reading v, so this case does not happen for
 *     the W defined above;
 *   - B before W: then B is before Lf (S1), and F (before the call) is
 *     visible at B, so Lf reads F's 1 or a later value of the flag, and
 *     the case analysis of the seq_cst protocol applies unchanged.
 * In C11 terms: membarrier is a seq_cst fence in the sleeper between F and
 * L, and one in the publisher at B; with two seq_cst fences, either L reads
 * W or Lf reads F or later (the fence rules of the total order S). The
 * private command reaches only this process's threads, so only rings from
 * rdm_ring_create() use it; shared-memory rings keep the seq_cst protocol,
 * and so does every ring when membarrier's private expedited command is
 * missing (old kernel, seccomp) or cannot be registered. If the membarrier
 * call itself fails after registration, the sleeper does not sleep (it
 * returns, as after a spurious wake-up).
 * ThreadSanitizer sees neither membarrier nor fences, so a TSan build
 * (RDM_TSAN) uses the seq_cst protocol for every ring: TSan then checks the
 * data edges R1/A1 and R2/A2, which are the same accesses in both
 * protocols, and the flags are atomics it sees. The normal and ASan+UBSan
 * builds run the asymmetric protocol (and the tests force the seq_cst one
 * on private rings too, via rdm_ring_use_seq_cst_for_test()).
 *
 * Why the waker must not write the flag. An earlier version had the waker
 * clear the flag with an exchange and call FUTEX_WAKE only if it returned 1
 * (to elect one waker per sleep). Its proof said "Lf reads 1 or a later
 * value: only this publisher clears it, and then it wakes", which is false:
 * the later value can be an OLDER publish's exchange. Publish 1 loads the
 * flag of sleep 1 and is delayed before its exchange; sleep 1's FUTEX_WAIT
 * finds the word changed and returns, the sleeper takes the record and
 * starts sleep 2 (F2 = 1, L2 reads the current index); publish 1's exchange
 * now clears F2 and its FUTEX_WAKE lands before sleep 2's FUTEX_WAIT, which
 * then sleeps; the next publish reads the 0 and wakes nobody. With capacity
 * 2 and no spin this lost both sides' sleep once in a few hundred runs of
 * 2 * 10^5 records (tests/ring/test_ring_lost_wakeup.c), and spin finds it
 * in models/ring_wakeup_old.pml. The cost of the fix: between a FUTEX_WAKE
 * and the woken side's Z, each publish that reads the still-set flag makes
 * one more FUTEX_WAKE system call (at most one per publish, and none once
 * the sleeper runs). models/ring_wakeup.pml checks the fixed protocol for
 * both memory-order variants.
 *
 * Other Dekker users. The IOMMU worker (iommu/worker.c, producer.c) has its
 * own doorbell: producers push, then run a seq_cst fence and load the
 * worker's flag; the worker stores its flag, runs a seq_cst fence and checks
 * rdm_ring_empty(). That needs only that the push's tail store precede the
 * producer's fence in program order, which both protocols give (the store
 * is an atomic store sequenced before the fence). rdm_ring_count_seq_cst()
 * serves a doorbell without fences on the producer side: on an asymmetric
 * ring it issues the membarrier itself.
 *
 * Invariants.
 *  1. Only the producer stores the shared tail, only the consumer the head;
 *     neither reads its own shared index after creation/attachment.
 *  2. For the local copies, 0 <= tail - head_cache <= capacity on the
 *     producer side and 0 <= tail_cache - head <= capacity on the consumer
 *     side; an index of the other side that breaks this is rejected, not
 *     cached, so every slot address is slots + (i & mask) * record_size,
 *     inside the mapping.
 *  3. Capacity, mask and record size are copied once (creation, or
 *     validated at attach) and never re-read from shared memory.
 *  4. A need-wakeup flag is written only by its sleeper: set before the
 *     recheck, cleared once awake or when the recheck saw a change. The
 *     waker only reads it; a set flag costs a FUTEX_WAKE per publish until
 *     its sleeper clears it.
 *  5. An attached memfd is sealed against shrinking and lives on shmem, so
 *     the mapping cannot lose its pages under us (no SIGBUS).
 *  6. prod.asym == cons.asym, fixed at creation; it is 1 only for a ring
 *     from rdm_ring_create() in a process registered for membarrier's
 *     private expedited command, and never in a TSan build. A sleeper on an
 *     asymmetric ring issues the membarrier between its flag store and its
 *     index load before every FUTEX_WAIT.
 */
#include "core/alloc.h"
#include "ring/ring_internal.h"

#include "core/error.h"

#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <linux/magic.h>
#include <linux/membarrier.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#define RING_DATA_OFFSET ((uint64_t)sizeof(struct rdm_ring_shared))

_Static_assert(sizeof(struct rdm_ring_shared) % 64 == 0, "records start on a cache line");
_Static_assert(offsetof(struct rdm_ring_shared, tail) - offsetof(struct rdm_ring_shared, hdr) >=
		       RDM_RING_LINE,
	       "tail on its own line");
_Static_assert(offsetof(struct rdm_ring, cons) - offsetof(struct rdm_ring, prod) >= RDM_RING_LINE,
	       "producer and consumer state on separate lines");

static bool is_pow2(uint32_t x)
{
	return x && !(x & (x - 1));
}

static int check_geometry(uint32_t capacity, uint32_t record_size)
{
	if (!is_pow2(capacity) || capacity < RDM_RING_MIN_CAPACITY ||
	    capacity > RDM_RING_MAX_CAPACITY)
		return rdm_fail(-EINVAL, "ring capacity %u is not a power of two in [%u, %u]",
				capacity, RDM_RING_MIN_CAPACITY, RDM_RING_MAX_CAPACITY);
	if (record_size < 8 || record_size > RDM_RING_MAX_RECORD || record_size % 8)
		return rdm_fail(-EINVAL, "ring record size %u is not a multiple of 8 in [8, %u]",
				record_size, RDM_RING_MAX_RECORD);
	if ((uint64_t)capacity * record_size > RDM_RING_MAX_DATA)
		return rdm_fail(-EINVAL, "ring of %u records of %u bytes exceeds %llu bytes",
				capacity, record_size, (unsigned long long)RDM_RING_MAX_DATA);
	return 0;
}

static size_t map_size_of(uint32_t capacity, uint32_t record_size)
{
	return (size_t)(RING_DATA_OFFSET + (uint64_t)capacity * record_size);
}

static void init_shared(struct rdm_ring_shared *sh, uint32_t capacity, uint32_t record_size)
{
	sh->hdr.magic = RDM_RING_MAGIC;
	sh->hdr.version = RDM_RING_LAYOUT_VERSION;
	sh->hdr.record_size = record_size;
	sh->hdr.capacity = capacity;
	sh->hdr.reserved = 0;
	sh->hdr.data_offset = RING_DATA_OFFSET;
	sh->hdr.total_size = map_size_of(capacity, record_size);
	/* Relaxed: nobody else can see the mapping yet. */
	atomic_store_explicit(&sh->tail, 0, memory_order_relaxed);
	atomic_store_explicit(&sh->head, 0, memory_order_relaxed);
	atomic_store_explicit(&sh->consumer_sleeping, 0, memory_order_relaxed);
	atomic_store_explicit(&sh->producer_sleeping, 0, memory_order_relaxed);
}

#ifndef RDM_TSAN
/* 0: not yet asked, 1: registered for the private expedited command, -1: unavailable. */
static _Atomic int membarrier_state;
#endif

/*
 * True when this process may use membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED):
 * the kernel offers it and the registration succeeded. Asked once; racing
 * first callers both register, which the kernel allows.
 */
static bool membarrier_ready(void)
{
#ifdef RDM_TSAN
	/* TSan cannot see membarrier: every ring keeps the seq_cst protocol. */
	return false;
#else
	/* Relaxed: the state is a plain cache of the kernel's answer; the
	 * registration itself is the kernel's (process-wide) state. */
	int st = atomic_load_explicit(&membarrier_state, memory_order_relaxed);
	if (st == 0) {
		long cmds = syscall(SYS_membarrier, MEMBARRIER_CMD_QUERY, 0, 0);
		bool ok = cmds >= 0 && (cmds & MEMBARRIER_CMD_PRIVATE_EXPEDITED) &&
			  syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) == 0;
		st = ok ? 1 : -1;
		atomic_store_explicit(&membarrier_state, st, memory_order_relaxed);
	}
	return st > 0;
#endif
}

int rdm_ring_pvt_heavy_fence(void)
{
	if (syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) < 0)
		return -errno;
	return 0;
}

/* Fill a handle from validated values and indices. */
static struct rdm_ring *new_handle(void *map, size_t map_size, uint32_t capacity,
				   uint32_t record_size, uint32_t head, uint32_t tail,
				   int futex_private, int side, bool asym)
{
	struct rdm_ring *r = rdm_aligned_alloc(RDM_RING_LINE, sizeof(*r));
	if (!r)
		return NULL;
	memset(r, 0, sizeof(*r));
	struct rdm_ring_shared *sh = map;
	unsigned char *slots = (unsigned char *)map + RING_DATA_OFFSET;

	r->prod.tail = tail;
	r->prod.head_cache = head;
	r->prod.capacity = capacity;
	r->prod.mask = capacity - 1;
	r->prod.record_size = record_size;
	r->prod.asym = asym;
	r->prod.slots = slots;
	r->prod.sh = sh;

	r->cons.head = head;
	r->cons.tail_cache = head; /* shows nothing readable: the first pop reads the tail */
	r->cons.capacity = capacity;
	r->cons.mask = capacity - 1;
	r->cons.record_size = record_size;
	r->cons.asym = asym;
	r->cons.slots = slots;
	r->cons.sh = sh;

	r->ctl.map = map;
	r->ctl.map_size = map_size;
	r->ctl.futex_private = futex_private;
	r->ctl.side = side;
	return r;
}

int rdm_ring_create_prepared(uint32_t capacity, uint32_t record_size,
			     int (*prepare)(void *map, size_t len, const void *opaque), const void *opaque,
			     struct rdm_ring **out)
{
	if (!out)
		return rdm_fail(-EINVAL, "rdm_ring_create: out is NULL");
	int err = check_geometry(capacity, record_size);
	if (err)
		return err;
	size_t size = map_size_of(capacity, record_size);
	void *map = rdm_alloc_should_fail()
			    ? MAP_FAILED
			    : mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (map == MAP_FAILED)
		return rdm_fail(-ENOMEM, "ring: out of memory mapping %zu bytes", size);
	if (prepare) {
		err = prepare(map, size, opaque);
		if (err) {
			munmap(map, size);
			return err;
		}
	}
	init_shared(map, capacity, record_size);
	/* Both sides are threads of this process: the private membarrier
	 * reaches them (invariant 6). */
	struct rdm_ring *r = new_handle(map, size, capacity, record_size, 0, 0, 1, 0,
					membarrier_ready());
	if (!r) {
		munmap(map, size);
		return rdm_fail(-ENOMEM, "ring: out of memory for the handle");
	}
	*out = r;
	return 0;
}

int rdm_ring_create(uint32_t capacity, uint32_t record_size, struct rdm_ring **out)
{
	return rdm_ring_create_prepared(capacity, record_size, NULL, NULL, out);
}

int rdm_ring_create_shared(uint32_t capacity, uint32_t record_size, int *memfd_out,
			   struct rdm_ring **out)
{
	if (!out || !memfd_out)
		return rdm_fail(-EINVAL, "rdm_ring_create_shared: NULL out argument");
	int err = check_geometry(capacity, record_size);
	if (err)
		return err;
	size_t size = map_size_of(capacity, record_size);
	int fd = memfd_create("rdm-ring", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (fd < 0)
		return rdm_fail(-errno, "ring: memfd_create failed (errno %d)", errno);
	if (ftruncate(fd, (off_t)size) < 0) {
		err = -errno;
		close(fd);
		return rdm_fail(err, "ring: cannot size the memfd to %zu bytes (errno %d)", size, -err);
	}
	if (fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0) {
		err = -errno;
		close(fd);
		return rdm_fail(err, "ring: cannot seal the memfd (errno %d)", -err);
	}
	void *map = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (map == MAP_FAILED) {
		err = -errno;
		close(fd);
		return rdm_fail(err, "ring: cannot map the memfd (errno %d)", -err);
	}
	init_shared(map, capacity, record_size);
	/* seq_cst protocol: the other side may live in another process. */
	struct rdm_ring *r = new_handle(map, size, capacity, record_size, 0, 0, 0, 0, false);
	if (!r) {
		munmap(map, size);
		close(fd);
		return rdm_fail(-ENOMEM, "ring: out of memory for the handle");
	}
	*memfd_out = fd;
	*out = r;
	return 0;
}

/*
 * Copy a header the other process may be writing. Volatile reads: a plain
 * memcpy into a local that is only read could legally be turned back into
 * reads of the shared header (the compiler may assume no one else writes
 * it), so a field could be validated from one read and used from another.
 * Each byte is read exactly once here; the copy may be torn, and then it
 * fails validation or describes a ring that fits the mapping all the same.
 */
static void copy_header_once(struct rdm_ring_header *dst, const struct rdm_ring_header *src)
{
	const volatile unsigned char *s = (const volatile unsigned char *)src;
	unsigned char *d = (unsigned char *)dst;
	for (size_t i = 0; i < sizeof(*dst); i++)
		d[i] = s[i];
}

int rdm_ring_attach(int memfd, enum rdm_ring_side side, struct rdm_ring **out)
{
	if (!out)
		return rdm_fail(-EINVAL, "rdm_ring_attach: out is NULL");
	if (side != RDM_RING_PRODUCER && side != RDM_RING_CONSUMER)
		return rdm_fail(-EINVAL, "rdm_ring_attach: unknown side %d", (int)side);
	if (memfd < 0)
		return rdm_fail(-EINVAL, "rdm_ring_attach: bad fd %d", memfd);

	int seals = fcntl(memfd, F_GET_SEALS);
	if (seals < 0)
		return rdm_fail(-errno, "ring attach: cannot read the memfd's seals (errno %d)", errno);
	if (!(seals & F_SEAL_SHRINK))
		return rdm_fail(-EPERM, "ring attach: memfd not sealed against shrinking");
	/* Invariant 5: only shmem. A hole punched in a hugetlbfs file frees
	 * its huge page, and faulting it back in can fail (SIGBUS) when the
	 * pool is empty; a shmem hole reads back as zeros. */
	struct statfs fs;
	if (fstatfs(memfd, &fs) < 0)
		return rdm_fail(-errno, "ring attach: fstatfs failed (errno %d)", errno);
	if (fs.f_type != TMPFS_MAGIC)
		return rdm_fail(-EPERM, "ring attach: the memfd is not on shmem (filesystem %#lx)",
				(unsigned long)fs.f_type);
	struct stat st;
	if (fstat(memfd, &st) < 0)
		return rdm_fail(-errno, "ring attach: fstat failed (errno %d)", errno);
	if (st.st_size < (off_t)RING_DATA_OFFSET ||
	    (uint64_t)st.st_size > RING_DATA_OFFSET + RDM_RING_MAX_DATA)
		return rdm_fail(-EPROTO, "ring attach: memfd size %lld does not fit a ring",
				(long long)st.st_size);
	size_t size = (size_t)st.st_size;
	void *map = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
	if (map == MAP_FAILED)
		return rdm_fail(-errno, "ring attach: mmap failed (errno %d)", errno);
	struct rdm_ring_shared *sh = map;

	/* One copy of the header: the other process may change it at any
	 * time, so only the copy is validated and used (invariant 3). */
	struct rdm_ring_header h;
	copy_header_once(&h, &sh->hdr);
	int err = 0;
	if (h.magic != RDM_RING_MAGIC)
		err = rdm_fail(-EPROTO, "ring attach: bad magic %#llx", (unsigned long long)h.magic);
	else if (h.version != RDM_RING_LAYOUT_VERSION)
		err = rdm_fail(-EPROTONOSUPPORT, "ring attach: layout version %u, expected %u",
			       h.version, RDM_RING_LAYOUT_VERSION);
	else if (h.record_size < 8 || h.record_size > RDM_RING_MAX_RECORD || h.record_size % 8)
		err = rdm_fail(-EMSGSIZE, "ring attach: record size %u is not a multiple of 8 in [8, %u]",
			       h.record_size, RDM_RING_MAX_RECORD);
	else if (!is_pow2(h.capacity) || h.capacity < RDM_RING_MIN_CAPACITY ||
		 h.capacity > RDM_RING_MAX_CAPACITY)
		err = rdm_fail(-EPROTO, "ring attach: capacity %u is not a power of two in range",
			       h.capacity);
	else if (h.data_offset != RING_DATA_OFFSET)
		err = rdm_fail(-EPROTO, "ring attach: data offset %llu, expected %llu",
			       (unsigned long long)h.data_offset,
			       (unsigned long long)RING_DATA_OFFSET);
	else if (h.total_size != RING_DATA_OFFSET + (uint64_t)h.capacity * h.record_size ||
		 h.total_size > (uint64_t)size)
		err = rdm_fail(-EPROTO,
			       "ring attach: total size %llu does not match %u records of %u bytes "
			       "in a %zu-byte memfd",
			       (unsigned long long)h.total_size, h.capacity, h.record_size, size);
	if (err) {
		munmap(map, size);
		return err;
	}

	/* Acquire: pairs with R1/R2 of the side that last published, so a
	 * consumer attaching to a ring with records sees them written. */
	uint32_t tail = atomic_load_explicit(&sh->tail, memory_order_acquire);
	uint32_t head = atomic_load_explicit(&sh->head, memory_order_acquire);
	if (tail - head > h.capacity) {
		munmap(map, size);
		return rdm_fail(-EBADMSG, "ring attach: indices out of range (head %u, tail %u, capacity %u)",
				head, tail, h.capacity);
	}
	struct rdm_ring *r = new_handle(map, size, h.capacity, h.record_size, head, tail, 0, side,
					false);
	if (!r) {
		munmap(map, size);
		return rdm_fail(-ENOMEM, "ring attach: out of memory for the handle");
	}
	*out = r;
	return 0;
}

void rdm_ring_destroy(struct rdm_ring *r)
{
	if (!r)
		return;
	munmap(r->ctl.map, r->ctl.map_size);
	rdm_free(r);
}

static long futex_op(struct rdm_ring *r, _Atomic uint32_t *word, int op, uint32_t val)
{
	if (r->ctl.futex_private)
		op |= FUTEX_PRIVATE_FLAG;
	return syscall(SYS_futex, word, op, val, NULL, NULL, 0);
}

void rdm_ring_pvt_wake_consumer(struct rdm_ring *r)
{
	/* The caller's flag load (S1) saw a sleeper; invariant 4: the flag is
	 * the sleeper's, so no write here (theory: "Why the waker must not
	 * write the flag"). */
	futex_op(r, &r->prod.sh->tail, FUTEX_WAKE, INT_MAX);
}

void rdm_ring_pvt_wake_producer(struct rdm_ring *r)
{
	/* As rdm_ring_pvt_wake_consumer, with S2. */
	futex_op(r, &r->cons.sh->head, FUTEX_WAKE, INT_MAX);
}

int rdm_ring_pvt_corrupt(struct rdm_ring *r, uint32_t tail)
{
	return rdm_fail(-EBADMSG, "ring: producer index out of range (head %u, tail %u, capacity %u)",
			r->cons.head, tail, r->cons.capacity);
}

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#elif defined(__aarch64__)
	__asm__ volatile("yield");
#endif
}

int rdm_ring_wait_readable(struct rdm_ring *r, unsigned spin)
{
	for (unsigned i = 0;; i++) {
		int64_t n = rdm_ring_pvt_cons_avail(r, 1);
		if (n != 0)
			return (int)n;
		if (i >= spin)
			break;
		cpu_relax();
	}
	struct rdm_ring_shared *sh = r->cons.sh;
	uint32_t seen;
	if (r->cons.asym) {
		/* S1' (asymmetric): flag, membarrier, tail; pairs with S1 in
		 * rdm_ring_pvt_push_publish (theory). Relaxed store: the system
		 * call orders it before the load (a full barrier for us and,
		 * at some point B, for the producer). On failure do not sleep. */
		atomic_store_explicit(&sh->consumer_sleeping, 1, memory_order_relaxed);
		if (rdm_ring_pvt_heavy_fence() != 0)
			seen = r->cons.head + 1;
		else /* A1 as well: acquire, pairs with R1. */
			seen = atomic_load_explicit(&sh->tail, memory_order_acquire);
	} else {
		/* S1'. seq_cst store and load: pair with S1 in
		 * rdm_ring_pvt_push_publish (theory); the load is also A1 (pairs
		 * with R1). */
		atomic_store_explicit(&sh->consumer_sleeping, 1, memory_order_seq_cst);
		seen = atomic_load_explicit(&sh->tail, memory_order_seq_cst);
	}
	if (seen == r->cons.head)
		futex_op(r, &sh->tail, FUTEX_WAIT, seen);
	/* Z. Awake (or never slept): drop the request; only we write the
	 * flag (invariant 4). Relaxed: a producer that still sees the 1 makes
	 * one FUTEX_WAKE too many, nothing worse. */
	atomic_store_explicit(&sh->consumer_sleeping, 0, memory_order_relaxed);
	int64_t n = rdm_ring_pvt_cons_avail(r, 1);
	return (int)n;
}

int rdm_ring_wait_writable(struct rdm_ring *r, unsigned spin)
{
	uint32_t cap = r->prod.capacity;
	for (unsigned i = 0;; i++) {
		uint32_t room = rdm_ring_pvt_prod_room(r, 1);
		if (room)
			return (int)room;
		/* Room 0: full, or a corrupt head. */
		uint32_t head = atomic_load_explicit(&r->prod.sh->head, memory_order_acquire);
		if (r->prod.tail - head > cap)
			return rdm_fail(-EBADMSG, "ring: consumer index out of range (head %u, tail %u)",
					head, r->prod.tail);
		if (i >= spin)
			break;
		cpu_relax();
	}
	struct rdm_ring_shared *sh = r->prod.sh;
	uint32_t seen;
	if (r->prod.asym) {
		/* S2' (asymmetric): flag, membarrier, head; pairs with S2 in
		 * rdm_ring_pvt_pop_publish, as S1' above. On failure do not sleep. */
		atomic_store_explicit(&sh->producer_sleeping, 1, memory_order_relaxed);
		if (rdm_ring_pvt_heavy_fence() != 0)
			seen = r->prod.tail - cap + 1;
		else /* A2 as well: acquire, pairs with R2. */
			seen = atomic_load_explicit(&sh->head, memory_order_acquire);
	} else {
		/* S2'. seq_cst store and load: pair with S2 in
		 * rdm_ring_pvt_pop_publish; the load is also A2 (pairs with R2). */
		atomic_store_explicit(&sh->producer_sleeping, 1, memory_order_seq_cst);
		seen = atomic_load_explicit(&sh->head, memory_order_seq_cst);
	}
	if (r->prod.tail - seen == cap)
		futex_op(r, &sh->head, FUTEX_WAIT, seen);
	/* Z, as in rdm_ring_wait_readable. */
	atomic_store_explicit(&sh->producer_sleeping, 0, memory_order_relaxed);
	uint32_t room = rdm_ring_pvt_prod_room(r, 1);
	if (room == 0) {
		uint32_t head = atomic_load_explicit(&sh->head, memory_order_acquire);
		if (r->prod.tail - head > cap)
			return rdm_fail(-EBADMSG, "ring: consumer index out of range (head %u, tail %u)",
					head, r->prod.tail);
	}
	return (int)room;
}

int rdm_ring_set_index_for_test(struct rdm_ring *r, uint32_t index)
{
	if (r->prod.tail != r->cons.head)
		return -EBUSY;
	/* Relaxed: no other call may be running (the caller's contract). */
	atomic_store_explicit(&r->prod.sh->tail, index, memory_order_relaxed);
	atomic_store_explicit(&r->prod.sh->head, index, memory_order_relaxed);
	r->prod.tail = index;
	r->prod.head_cache = index;
	r->cons.head = index;
	r->cons.tail_cache = index;
	return 0;
}

int rdm_ring_use_seq_cst_for_test(struct rdm_ring *r)
{
	r->prod.asym = 0;
	r->cons.asym = 0;
	return 0;
}

bool rdm_ring_is_asymmetric_for_test(const struct rdm_ring *r)
{
	return r->prod.asym != 0;
}

void rdm_ring_memory(const struct rdm_ring *r, void **addr, size_t *len)
{
	*addr = r->ctl.map;
	*len = r->ctl.map_size;
}
