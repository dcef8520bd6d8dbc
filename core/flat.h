/* SPDX-License-Identifier: MIT */
/*
 * core/flat.h - the flat view of a small region's state (one bit per block,
 * published under a sequence count) and rdm's own per-thread reader records,
 * which keep a region alive for the readers of its flat view. See flat.c's
 * theory.
 *
 * Writer (the tree's writer, serialised by the caller): rdm_flat_note() /
 * rdm_flat_note_load() record a prepared change (nothing visible), any number
 * of them before one publish; rdm_flat_publish_begin() and
 * rdm_flat_publish_end() bracket the tree's root store and apply every noted
 * change in order; rdm_flat_abort() drops the noted changes (the view stays
 * at the last published state). rdm_tree_prepare() notes a change as its
 * last step, only once the tree part succeeded, so a prepare that fails has
 * noted nothing: a batch that keeps its earlier prepares after a failed one
 * needs no undo here (rdm_tree_abort() today drops them all, and so does
 * the view).
 *
 *   call                        may run concurrently with
 *   --------------------------  ------------------------------------------
 *   rdm_flat_all/_count         everything but destroy (reader records)
 *   note/abort/publish_*        readers only (one writer at a time)
 *   rdm_flat_destroy            nothing (rdm_reader_wait() returned)
 */
#ifndef RDM_CORE_FLAT_H
#define RDM_CORE_FLAT_H

#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

/*
 * Regions of at most this many blocks keep a flat view: 2^22 blocks, a
 * 512 KiB bitmap (16 GiB at 4 KiB blocks, 8 TiB at 2 MiB). See flat.c.
 */
#define RDM_FLAT_MAX_BLOCKS (UINT64_C(1) << 22)
/* Queries spanning more blocks than this go to the tree (its whole slots
 * answer a long range in a few steps; 64 words would be a long scan). */
#define RDM_FLAT_MAX_QUERY 4096u
/* Sequence-count reads before a reader answers from the tree instead. */
#define RDM_FLAT_TRIES 4

struct rdm_flat_change {
	uint64_t s, e;
	bool val;
};

#define RDM_FLAT_PEND_INLINE 4
/* Noted-change capacity kept from one publish to the next (flat.c, forget()). */
#define RDM_FLAT_PEND_KEEP 1024

struct rdm_flat {
	/* Readers' line: odd while a publish rewrites words (seqcount). */
	_Atomic uint32_t seq;
	uint32_t pad;
	uint64_t nblocks;
	struct rdm_mem *mem;
	size_t bytes; /* of this allocation */
	/* Writer-only: the changes noted since the last publish, in order,
	 * after a pending load (the whole bitmap, or NULL). */
	_Alignas(64) struct rdm_flat_change *pend;
	size_t npend, cap;
	uint64_t *load;
	struct rdm_flat_change pend_inline[RDM_FLAT_PEND_INLINE];
	/* The published bits: bit i of w[j] is block 64 j + i. Relaxed
	 * atomics: readers validate with seq. */
	_Alignas(64) _Atomic uint64_t w[];
};

static inline bool rdm_flat_fits(uint64_t nblocks)
{
	return nblocks <= RDM_FLAT_MAX_BLOCKS;
}

struct rdm_mem;
/* 0 or -ENOMEM. Every block discarded. The view's memory is counted in mem
 * (the region's state allocator), which must outlive it. */
int rdm_flat_create(uint64_t nblocks, struct rdm_mem *mem, struct rdm_flat **out);
void rdm_flat_destroy(struct rdm_flat *f);

/* Record the change "blocks [s, e) become val" (0, or -ENOMEM and nothing
 * recorded). Inline while the list has room (every change of a worker's
 * batch is noted: a call per change cost ~27 instructions, the append ~11);
 * growing it is rdm_flat_grow()'s, out of line. */
int rdm_flat_grow(struct rdm_flat *f);
static inline int rdm_flat_note(struct rdm_flat *f, uint64_t s, uint64_t e, bool val)
{
	if (__builtin_expect(f->npend == f->cap, 0) && rdm_flat_grow(f) != 0)
		return -ENOMEM;
	f->pend[f->npend++] = (struct rdm_flat_change){ s, e, val };
	return 0;
}
/* Record "the state becomes this bitmap" (get() as rdm_tree_prepare_load's,
 * called once per 4096 blocks): 0 or -ENOMEM. */
int rdm_flat_note_load(struct rdm_flat *f, void (*get)(void *opaque, uint64_t first, uint64_t *words),
		       void *opaque);
void rdm_flat_abort(struct rdm_flat *f);
void rdm_flat_publish_begin(struct rdm_flat *f);
void rdm_flat_publish_end(struct rdm_flat *f);

/* Whether bits [a, b) of the view all equal val, a < b: 1 or 0, or -1 when
 * the read met a publish (then retry, or ask the tree). One attempt, so that
 * the caller's fast path stays small; callers retry out of line. */
static inline int rdm_flat_all(const struct rdm_flat *f, uint64_t a, uint64_t b, bool val)
{
	uint64_t flip = val ? ~UINT64_C(0) : 0;
	/* Acquire: pairs with the release store that ends a publish
	 * (rdm_flat_publish_end()); the words it wrote are seen. */
	uint32_t q = atomic_load_explicit(&f->seq, memory_order_acquire);
	uint64_t i = a >> 6, i1 = (b - 1) >> 6, m = ~UINT64_C(0) << (a & 63);
	int ok = 1;

	for (; i < i1; i++, m = ~UINT64_C(0)) {
		/* Relaxed: validated by the seq re-read below. */
		if (((atomic_load_explicit(&f->w[i], memory_order_relaxed) ^ flip) & m) != 0) {
			ok = 0;
			break;
		}
	}
	if (ok) {
		m &= ~UINT64_C(0) >> (63 - ((b - 1) & 63));
		ok = ((atomic_load_explicit(&f->w[i], memory_order_relaxed) ^ flip) & m) == 0;
	}
	/* Acquire fence: the word loads above are ordered before the re-read;
	 * pairs with the release fence after the odd store in
	 * rdm_flat_publish_begin(): if a word load saw a publish's store, the
	 * re-read sees that publish's odd count (or a later one). */
	atomic_thread_fence(memory_order_acquire);
	if ((q & 1) != 0 || atomic_load_explicit(&f->seq, memory_order_relaxed) != q)
		return -1;
	return ok;
}

/* Populated blocks in [a, b), a < b; -1 as for rdm_flat_all(). */
int64_t rdm_flat_count(const struct rdm_flat *f, uint64_t a, uint64_t b);

/*
 * Reader records: one per thread, found through initial-exec TLS (no
 * __tls_get_addr even in librdm.so). rdm_reader_enter(obj) announces that the
 * thread reads obj; rdm_reader_wait(obj), after the caller made obj's dying
 * flag visible, returns once no thread that missed the flag is still inside.
 * One object per thread at a time (the flat queries do not nest: they call
 * nothing). rdm_reader_enter returns false if the thread has no record (out
 * of memory): the caller reads another way (RCU).
 */
struct rdm_reader {
	_Atomic(const void *) in;
	atomic_bool used;
	struct rdm_reader *next; /* immutable once the record is listed */
};

extern __thread struct rdm_reader *rdm_reader_self __attribute__((tls_model("initial-exec")));
extern int rdm_reader_membarrier;

struct rdm_reader *rdm_reader_register(void);

/* Set up the dying-flag protocol (membarrier registration); once per
 * process, before the first region with a flat view exists. */
void rdm_reader_init(void);

static inline struct rdm_reader *rdm_reader_enter(const void *obj)
{
	struct rdm_reader *rd = rdm_reader_self;

	if (__builtin_expect(rd == NULL, 0)) {
		rd = rdm_reader_register();
		if (rd == NULL)
			return NULL;
	}
	/* Relaxed store, then a full barrier on this side: the Dekker pair with
	 * rdm_reader_wait() (store dying; barrier; load in). With
	 * membarrier(PRIVATE_EXPEDITED) the writer's call is the barrier on
	 * every running thread and this side needs only the compiler's. */
	atomic_store_explicit(&rd->in, obj, memory_order_relaxed);
	if (rdm_reader_membarrier)
		atomic_signal_fence(memory_order_seq_cst);
	else
		atomic_thread_fence(memory_order_seq_cst);
	return rd;
}

static inline void rdm_reader_leave(struct rdm_reader *rd)
{
	/* Release: pairs with the acquire load in rdm_reader_wait(); every read
	 * of the object is done before the waiter may free it. */
	atomic_store_explicit(&rd->in, NULL, memory_order_release);
}

/* After the caller stored its dying flag: waits until no reader record is
 * inside obj. May sleep. */
void rdm_reader_wait(const void *obj);

#endif /* RDM_CORE_FLAT_H */
