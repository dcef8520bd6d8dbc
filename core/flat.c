/* SPDX-License-Identifier: MIT */
/*
 * core/flat.c - the flat view of a small region's state, and the reader
 * records that keep a region alive for its readers.
 *
 * Theory
 *
 * Why. A point query on the tree (core/tree.h) costs the RCU read-side
 * section plus a descent: measured with callgrind on a 2^20-block region
 * (sparse state, random 1..64-block queries), rdm_is_populated took 159
 * instructions through librdm.a, of which ~90 the descent (root, two inner
 * levels, an extent search) and ~30 liburcu-bp's lock/unlock, and 207
 * through librdm.so, where each of the two urcu-bp TLS accesses calls
 * __tls_get_addr (~22 instructions each: liburcu-bp's reader record is
 * another module's TLS, general-dynamic by construction). A QEMU-style
 * bitmap under a mutex costs ~103-124. A region small enough also keeps the
 * plain bitmap beside the tree: a query reads one or two words. Measured
 * the same way, a query on the view takes 81 instructions through either
 * library (range checks ~15, record and dying flag ~12, the seqcount read
 * of one or two words ~35, call and register saves the rest); single-
 * threaded CPU time per query ~22 ns, against ~33 ns (librdm.a) and ~44 ns
 * (librdm.so) before and ~25-30 ns for the mutex peer.
 *
 * What readers see. The view changes only inside rdm_tree_publish(), under
 * a sequence count: publish_begin makes seq odd and applies every change
 * noted since the last publish, in order; the tree's root store follows;
 * publish_end makes seq even. A reader reads seq (even), the words, seq
 * again; equal means the words are one published state. So the view flips
 * where the root flips (DESIGN.md "Visibility": a discard before listeners
 * are told, a populate once all accepted), each change (or batch of
 * prepares published at once) is atomic, and an aborted change was never
 * visible. Because the root store lies inside the odd window, a thread that
 * saw the new root and then reads the view finds seq odd or the new words:
 * answers from the view and from the tree never go backwards relative to
 * each other.
 *
 * Progress. A reader that meets a publish RDM_FLAT_TRIES times answers from
 * the tree under RCU instead, so a query never waits for the writer: a
 * publish of one change rewrites a few words, but a load or discard_all
 * rewrites the whole bitmap.
 *
 * Size threshold, RDM_FLAT_MAX_BLOCKS = 2^22 blocks (a 512 KiB bitmap).
 *  - Memory: the view costs nblocks/8 bytes whatever the state, 1/32768 of
 *    the RAM it describes at 4 KiB blocks and 1/2^24 at 2 MiB. The tree of a
 *    sparse region is a few KiB; of a fragmented one up to the same
 *    nblocks/8 in bitmap leaves plus inner nodes. So the view at most
 *    doubles a fragmented region's state and adds at most 512 KiB to a
 *    sparse one. Past that (1 TiB at 4 KiB blocks would take 32 MiB for
 *    a state the tree keeps in KiB) the tree alone is the better trade.
 *  - Cache: a query touches one or two lines of the view (and the seq line)
 *    whatever its size, against three or four for the descent; the bound
 *    keeps the longest publish (load, discard_all: rewriting 512 KiB, tens
 *    of microseconds) short enough that falling back to the tree is rare.
 *  - Coverage: every virtio-mem device with 2 MiB blocks up to 8 TiB, and
 *    guest_memfd conversion regions (4 KiB blocks) up to 16 GiB.
 * Long queries (more than RDM_FLAT_MAX_QUERY blocks) go to the tree, whose
 * whole slots answer them in a few steps.
 *
 * Lifetime. The view is freed by rdm_region_destroy(), so its readers must
 * be waited for; RCU would bring back the TLS cost it replaces. Each thread
 * has one record (struct rdm_reader), found through an initial-exec TLS
 * pointer (one %fs-relative load, also in librdm.so). A reader stores the
 * region into its record, then loads the dying flag; destroy stores the
 * flag, then loads every record: a Dekker pair. The barrier on the
 * reader's side is a compiler barrier when membarrier(PRIVATE_EXPEDITED)
 * is available (destroy's membarrier() runs a full barrier on every thread
 * of the process), a seq_cst fence otherwise (liburcu's memb flavour makes
 * the same trade). Records are never freed: a thread's exit (its key
 * destructor) marks its record unused for the next new thread.
 *
 * Invariants
 *  1. w[] holds the state of the last publish whenever seq is even.
 *  2. Only the region's writer notes, aborts or publishes.
 *  3. A record's `in` is non-NULL only between rdm_reader_enter() and
 *     rdm_reader_leave() of its own thread; a record serves one thread at a
 *     time (used, and the TLS pointer is cleared when it is given back).
 *  4. After the dying flag is stored and rdm_reader_wait() returned, no
 *     reader reads the view: each either saw the flag or has left.
 */
#include <errno.h>
#include <linux/membarrier.h>
#include <pthread.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/flat.h"

/* ---- the view ---- */

int rdm_flat_create(uint64_t nblocks, struct rdm_mem *mem, struct rdm_flat **out)
{
	size_t words = (size_t)((nblocks + 63) / 64);
	size_t bytes = (sizeof(struct rdm_flat) + words * sizeof(uint64_t) + 63) & ~(size_t)63;
	struct rdm_flat *f = rdm_mem_alloc(mem, bytes, 64);

	if (f == NULL)
		return -ENOMEM;
	memset(f, 0, bytes);
	atomic_init(&f->seq, 0);
	f->nblocks = nblocks;
	f->mem = mem;
	f->bytes = bytes;
	f->pend = f->pend_inline;
	f->cap = RDM_FLAT_PEND_INLINE;
	*out = f;
	return 0;
}

/* Forget the noted changes and a pending load. The array of noted changes
 * keeps its size for the next publish unless it grew past
 * RDM_FLAT_PEND_KEEP entries (or `all`): a worker batch notes one change per
 * record, and growing the array from the inline four each batch cost four
 * reallocs per publish (~36 instructions per change in bench pipeline,
 * callgrind). Kept, it costs at most RDM_FLAT_PEND_KEEP x 24 bytes per
 * region. */
static void forget(struct rdm_flat *f, bool all)
{
	rdm_free(f->load);
	f->load = NULL;
	f->npend = 0;
	if (f->pend != f->pend_inline && (all || f->cap > RDM_FLAT_PEND_KEEP)) {
		rdm_free(f->pend);
		f->pend = f->pend_inline;
		f->cap = RDM_FLAT_PEND_INLINE;
	}
}

void rdm_flat_destroy(struct rdm_flat *f)
{
	if (f == NULL)
		return;
	forget(f, true);
	rdm_mem_free(f->mem, f, f->bytes, 64);
}

/* rdm_flat_note()'s list is full: double it (0, or -ENOMEM and nothing changed). */
int rdm_flat_grow(struct rdm_flat *f)
{
	struct rdm_flat_change *p;

	p = rdm_reallocarray(f->pend == f->pend_inline ? NULL : f->pend, f->cap * 2, sizeof(*p));
	if (p == NULL)
		return -ENOMEM;
	if (f->pend == f->pend_inline)
		memcpy(p, f->pend_inline, sizeof(f->pend_inline));
	f->pend = p;
	f->cap *= 2;
	return 0;
}

int rdm_flat_note_load(struct rdm_flat *f, void (*get)(void *opaque, uint64_t first, uint64_t *words),
		       void *opaque)
{
	size_t words = (size_t)((f->nblocks + 63) / 64);
	uint64_t *b = rdm_calloc((words + 63) / 64 * 64, sizeof(uint64_t));

	if (b == NULL)
		return -ENOMEM;
	for (uint64_t first = 0; first < f->nblocks; first += 4096)
		get(opaque, first, &b[first / 64]);
	if (f->nblocks % 64 != 0)
		b[words - 1] &= (UINT64_C(1) << (f->nblocks % 64)) - 1;
	/* The load replaces whatever was noted before it. */
	rdm_free(f->load);
	f->load = b;
	f->npend = 0;
	return 0;
}

void rdm_flat_abort(struct rdm_flat *f)
{
	forget(f, false);
}

static void set_word(struct rdm_flat *f, uint64_t i, uint64_t m, bool val)
{
	/* Relaxed: the only writer; readers validate with seq. */
	uint64_t w = atomic_load_explicit(&f->w[i], memory_order_relaxed);

	atomic_store_explicit(&f->w[i], val ? w | m : w & ~m, memory_order_relaxed);
}

/* Words as rdm_flat_all() reads them: the first one's mask from bit s, the
 * last one's up to bit e - 1, whole words between; a change inside one word
 * (every one-block change) is one mask and one store. */
static void set_bits(struct rdm_flat *f, uint64_t s, uint64_t e, bool val)
{
	uint64_t i = s >> 6, i1 = (e - 1) >> 6, m = ~UINT64_C(0) << (s & 63);

	if (s >= e)
		return;
	for (; i < i1; i++, m = ~UINT64_C(0))
		set_word(f, i, m, val);
	set_word(f, i1, m & (~UINT64_C(0) >> (63 - ((e - 1) & 63))), val);
}

void rdm_flat_publish_begin(struct rdm_flat *f)
{
	uint32_t q = atomic_load_explicit(&f->seq, memory_order_relaxed);

	if (f->npend == 0 && f->load == NULL)
		return;
	atomic_store_explicit(&f->seq, q + 1, memory_order_relaxed);
	/* Release fence: the odd count is ordered before the word stores below;
	 * pairs with the acquire fence in rdm_flat_all()/rdm_flat_count(). */
	atomic_thread_fence(memory_order_release);
	if (f->load != NULL) {
		for (uint64_t i = 0; i < (f->nblocks + 63) / 64; i++)
			atomic_store_explicit(&f->w[i], f->load[i], memory_order_relaxed);
	}
	for (size_t i = 0; i < f->npend; i++)
		set_bits(f, f->pend[i].s, f->pend[i].e, f->pend[i].val);
}

void rdm_flat_publish_end(struct rdm_flat *f)
{
	uint32_t q = atomic_load_explicit(&f->seq, memory_order_relaxed);

	if (q & 1) {
		/* Release: pairs with the acquire load that starts a read. */
		atomic_store_explicit(&f->seq, q + 1, memory_order_release);
	}
	forget(f, false); /* the noted changes are published */
}

int64_t rdm_flat_count(const struct rdm_flat *f, uint64_t a, uint64_t b)
{
	for (int t = 0; t < RDM_FLAT_TRIES; t++) {
		/* Acquire / fence / relaxed re-read: as in rdm_flat_all(). */
		uint32_t q = atomic_load_explicit(&f->seq, memory_order_acquire);
		uint64_t i = a >> 6, i1 = (b - 1) >> 6, m = ~UINT64_C(0) << (a & 63);
		int64_t n = 0;

		if (q & 1)
			continue;
		for (; i < i1; i++, m = ~UINT64_C(0))
			n += __builtin_popcountll(atomic_load_explicit(&f->w[i], memory_order_relaxed) & m);
		m &= ~UINT64_C(0) >> (63 - ((b - 1) & 63));
		n += __builtin_popcountll(atomic_load_explicit(&f->w[i], memory_order_relaxed) & m);
		atomic_thread_fence(memory_order_acquire);
		if (atomic_load_explicit(&f->seq, memory_order_relaxed) == q)
			return n;
	}
	return -1;
}

/* ---- reader records ---- */

__thread struct rdm_reader *rdm_reader_self __attribute__((tls_model("initial-exec")));
int rdm_reader_membarrier;

/* Every record ever made; pushed with release, walked with acquire. */
static _Atomic(struct rdm_reader *) readers;
static pthread_key_t reader_key;
static bool reader_key_ok;
static pthread_once_t reader_once = PTHREAD_ONCE_INIT;

static void reader_exit(void *p)
{
	struct rdm_reader *rd = p;

	rdm_reader_self = NULL;
	/* Release: pairs with the acquire exchange of the next owner. */
	atomic_store_explicit(&rd->used, false, memory_order_release);
}

static void reader_setup(void)
{
	long cmds = syscall(__NR_membarrier, MEMBARRIER_CMD_QUERY, 0);

	reader_key_ok = pthread_key_create(&reader_key, reader_exit) == 0;
	if (cmds > 0 && (cmds & MEMBARRIER_CMD_PRIVATE_EXPEDITED) &&
	    syscall(__NR_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0) == 0)
		rdm_reader_membarrier = 1;
}

void rdm_reader_init(void)
{
	pthread_once(&reader_once, reader_setup);
}

struct rdm_reader *rdm_reader_register(void)
{
	struct rdm_reader *rd;

	rdm_reader_init();
	if (!reader_key_ok)
		return NULL;
	/* Acquire: pairs with the release push below; a listed record's fields
	 * are initialised. */
	for (rd = atomic_load_explicit(&readers, memory_order_acquire); rd != NULL; rd = rd->next) {
		/* Acquire: pairs with the release store in reader_exit(). */
		if (!atomic_load_explicit(&rd->used, memory_order_relaxed) &&
		    !atomic_exchange_explicit(&rd->used, true, memory_order_acquire))
			break;
	}
	if (rd == NULL) {
		rd = rdm_aligned_alloc(64, 64);
		if (rd == NULL)
			return NULL;
		atomic_init(&rd->in, NULL);
		atomic_init(&rd->used, true);
		rd->next = atomic_load_explicit(&readers, memory_order_relaxed);
		/* Release: the record is initialised before a walker can reach it;
		 * pairs with the acquire loads in the walks. */
		while (!atomic_compare_exchange_weak_explicit(&readers, &rd->next, rd,
							      memory_order_release,
							      memory_order_relaxed))
			;
	}
	if (pthread_setspecific(reader_key, rd) != 0) {
		atomic_store_explicit(&rd->used, false, memory_order_release);
		return NULL;
	}
	rdm_reader_self = rd;
	return rd;
}

void rdm_reader_wait(const void *obj)
{
	/* The writer's half of the Dekker pair in rdm_reader_enter(). */
	if (rdm_reader_membarrier)
		syscall(__NR_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0);
	else
		atomic_thread_fence(memory_order_seq_cst);
	for (struct rdm_reader *rd = atomic_load_explicit(&readers, memory_order_acquire); rd != NULL;
	     rd = rd->next) {
		/* Acquire: pairs with the release store in rdm_reader_leave(). */
		while (atomic_load_explicit(&rd->in, memory_order_acquire) == obj) {
			struct timespec ts = { 0, 20000 };

			nanosleep(&ts, NULL);
		}
	}
}
