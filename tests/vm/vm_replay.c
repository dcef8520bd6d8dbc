/* tests/vm/vm_replay.c - every rdm policy replays every shipped trace on the guest's real type1 container in lockstep with the sim: edu DMA into the replayed memory, the container against the sim, real ioctls against the backend's counts; and modes that break each on purpose. */
#include "guest_util.h"
#include "ioctl_record.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <linux/vfio.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include <rdm/rdm.h>

#include "tools/replay/gen.h"
#include "tools/replay/trace.h"

/*
 * A run is one trace under one policy. It builds two regions the way tools/replay's rdm
 * strategies do (strategy_rdm.c: strict, windows allowed under coalesce), each on its own worker:
 * one on a sim, one on the real container through the ioctl recorder. Every request goes to the
 * sim and then to the kernel (lockstep), so after any request the sim's mappings are what the
 * container must hold. Each region's release callback records the blocks released. No memory is
 * freed during a run: a mapping that leaked still points at the very page this program reads, so
 * a device write through it changes memory the check looks at.
 *
 * Checkpoints: MID, after the first request at which the trace has the most blocks that are both
 * populated and discarded-after-populated (the smaller count of the two), and END, after the last
 * request, before the regions are destroyed. At each:
 *   1. edu DMA into sampled blocks of the replayed memory: a populated block carries data both
 *      ways; a released block is unreachable (a device write leaves memory untouched; the first
 *      such check at END also waits for the DMAR fault in the kernel log); under defer a
 *      discarded block that still lies in a mapping (not released) is reachable;
 *   2. the released blocks are the sim's;
 *   3. the container against the sim, without changing it: DMA_AVAIL = start - the sim's
 *      mappings; the backend shadows as many; the first and the last page of each of the sim's
 *      mappings is mapped (a one-page MAP_DMA there is refused with EEXIST).
 * At END, then, the leak probe: an UNMAP_DMA of every run of released blocks and of every gap
 * between the sim's mappings up to IOVA_TOP unmaps 0 bytes (whatever leaked is unmapped by it, so
 * the next run starts clean). After the regions are destroyed, an UNMAP_DMA of [0, IOVA_TOP)
 * unmaps nothing, and the MAP_DMA/UNMAP_DMA ioctls the recorder saw in the run equal the
 * backend's map_calls/unmap_calls (and rejections failed_calls).
 *
 * Witnesses. The ioctl hook looks, in every run, for the first UNMAP_DMA of blocks that are all
 * discarded and that no later request populates: its first block W is released from then to the
 * end; and for the first MAP_DMA at or before MID of blocks no request up to MID discards: its
 * first block P is populated and mapped at MID. The DMA checks always sample W and P besides a
 * random block of each kind. A break mode (--break MODE, or RDM_VM_BREAK=MODE on the kernel
 * command line) acts on exactly those calls:
 *   skip-unmap  W's UNMAP_DMA is not issued but reported done: a mapping leaks
 *   extra-map   after W's UNMAP_DMA, W's block is mapped again behind the backend's back
 *   skip-map    P's MAP_DMA is not issued but reported done: a populated block has no mapping
 * In a break mode the checks above become diagnostics ("caught: ..."), and the TAP checks are, per
 * run: the defect was injected, and every check that names it failed (brk_expect[]).
 *
 * Options: --scale N (divide every size, default 32), --traces DIR (default /data/traces),
 * --only PREFIX[,PREFIX...] (traces whose file names start so), --cut N (only the first N
 * requests of each trace: the run ends with memory plugged), --break MODE, --workload SPEC
 * (repeatable: a workload of tools/replay's generators, seed 1, as rdm-replay --workload SPEC
 * makes it; replayed after the traces like one; with --workload and no --traces, no trace).
 */

/* IOVA of region offset 0: the traces' guest address (4 GiB), inside the guest IOMMU's window. */
#define REGION_IOVA (UINT64_C(1) << 32)
/* The probes' end: the guest VT-d's 39-bit address width; nothing can be mapped above. */
#define IOVA_TOP (UINT64_C(1) << 39)
#define PAGE UINT64_C(4096)
#define XFER GU_EDU_DMA_MAX
#define MAX_TRACES 32
#define MAX_WORKLOADS 8
/* The sim's default type1 limit: its DMA_AVAIL is this minus its mappings. */
#define SIM_LIMIT 65535

/* tools/replay's rdm strategies: their names and map policies. */
static const struct policy {
	const char *name;
	uint32_t policy;
} policies[] = {
	{ "rdm-block", RDM_POLICY_BLOCK },
	{ "rdm-coalesce", RDM_POLICY_COALESCE },
	{ "rdm-defer", RDM_POLICY_DEFER },
};
#define NPOL (sizeof(policies) / sizeof(policies[0]))

/* ---- checks, and the break modes that must trip them ---- */

enum ck {
	CK_REQ,
	CK_CALLS,
	CK_PEAK,
	CK_REJECT,
	CK_SAMPLED,
	CK_DMA_POP,
	CK_DMA_REL,
	CK_DMA_DEFER,
	CK_RELEASED,
	CK_STATE_MID,
	CK_STATE_END,
	CK_LEAK,
	CK_EMPTY,
	CK_IOCTLS,
	CK_RESET,
	CK_N
};

static const char *const ck_names[CK_N] = {
	[CK_REQ] = "every request succeeds",
	[CK_CALLS] = "calls as the sim",
	[CK_PEAK] = "peak mappings as the sim",
	[CK_REJECT] = "no call rejected",
	[CK_SAMPLED] = "blocks of both states sampled",
	[CK_DMA_POP] = "DMA into populated blocks",
	[CK_DMA_REL] = "DMA into released blocks",
	[CK_DMA_DEFER] = "DMA into deferred blocks",
	[CK_RELEASED] = "released blocks as the sim's",
	[CK_STATE_MID] = "mid-trace container state as the sim's",
	[CK_STATE_END] = "final container state as the sim's",
	[CK_LEAK] = "leak probe",
	[CK_EMPTY] = "container empty after destroy",
	[CK_IOCTLS] = "real ioctls = the backend's counts",
	[CK_RESET] = "reset",
};

enum brk { BRK_NONE, BRK_SKIP_UNMAP, BRK_EXTRA_MAP, BRK_SKIP_MAP, BRK_N };

static const char *const brk_names[BRK_N] = { "none", "skip-unmap", "extra-map", "skip-map" };

#define BIT(k) (1u << (k))
static const unsigned brk_expect[BRK_N] = {
	[BRK_SKIP_UNMAP] = BIT(CK_DMA_REL) | BIT(CK_STATE_END) | BIT(CK_LEAK) | BIT(CK_IOCTLS),
	[BRK_EXTRA_MAP] = BIT(CK_DMA_REL) | BIT(CK_STATE_END) | BIT(CK_LEAK) | BIT(CK_IOCTLS),
	[BRK_SKIP_MAP] = BIT(CK_DMA_POP) | BIT(CK_STATE_MID) | BIT(CK_IOCTLS),
};

static enum brk brk;
static unsigned run_failed[CK_N]; /* failures in the current run */

/* One check of kind k: a TAP line, or in a break mode a diagnostic when it fails. */
static bool __attribute__((format(printf, 3, 4))) chk(enum ck k, bool ok, const char *fmt, ...)
{
	char buf[600];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (!ok)
		run_failed[k]++;
	if (brk == BRK_NONE)
		return gu_tap_ok(ok, "%s", buf);
	if (!ok)
		gu_tap_diag("break=%s: caught (%s): %s", brk_names[brk], ck_names[k], buf);
	return ok;
}

static double now_s(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static uint64_t rnd(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

/* ---- the trace ahead of time ---- */

struct plan {
	size_t mid;      /* request index of the MID checkpoint */
	long *last_pop;  /* per block: the last request that populates it, -1 for none */
};

static bool overlaps(const struct replay_req *q, uint64_t off, uint64_t len)
{
	return q->op == REPLAY_DISCARD_ALL || (q->offset < off + len && off < q->offset + q->length);
}

static int plan_trace(const struct replay_trace *t, struct plan *p)
{
	uint64_t nb = t->region_size / t->block_size;
	uint8_t *pop = calloc(nb, 1), *ever = calloc(nb, 1);
	uint64_t npop = 0, ndis = 0, best = 0, best_pop = 0;
	size_t at_best = 0, at_best_pop = 0;

	p->last_pop = calloc(nb, sizeof(*p->last_pop));
	if (!pop || !ever || !p->last_pop) {
		free(pop);
		free(ever);
		free(p->last_pop);
		return -ENOMEM;
	}
	for (uint64_t b = 0; b < nb; b++)
		p->last_pop[b] = -1;
	for (size_t i = 0; i < t->n; i++) {
		const struct replay_req *q = &t->reqs[i];
		uint64_t b0 = q->op == REPLAY_DISCARD_ALL ? 0 : q->offset / t->block_size;
		uint64_t b1 = q->op == REPLAY_DISCARD_ALL ? nb : (q->offset + q->length) / t->block_size;

		for (uint64_t b = b0; b < b1; b++) {
			if (q->op == REPLAY_POPULATE) {
				p->last_pop[b] = (long)i;
				ndis -= ever[b] && !pop[b];
				npop += !pop[b];
				pop[b] = ever[b] = 1;
			} else if (pop[b]) {
				pop[b] = 0;
				npop--;
				ndis++;
			}
		}
		if ((npop < ndis ? npop : ndis) > best) {
			best = npop < ndis ? npop : ndis;
			at_best = i;
		}
		if (npop > best_pop) {
			best_pop = npop;
			at_best_pop = i;
		}
	}
	p->mid = best ? at_best : at_best_pop;
	free(pop);
	free(ever);
	return 0;
}

/* ---- the ioctl hook: witnesses and the break modes ---- */

struct hook {
	struct ir_recorder *rec;
	const struct replay_trace *t;
	const struct plan *plan;
	uint8_t *mem;
	/*
	 * Written by the main thread before it submits a request, read on the real region's worker
	 * thread in the calls that request causes. The edge: rdm_populate()/rdm_discard() hand the
	 * change to the worker through its queue (the producer's release store, the worker's acquire
	 * load), after these writes; the main thread writes again only after the change completed.
	 */
	struct rdm_region *region;
	size_t cur; /* the request being applied; SIZE_MAX outside the trace */
	/* Found in every mode; acted on in a break mode. Worker thread, read by the main thread
	 * after the request that set them completed (the completion orders them). */
	bool have_w, have_p, fired;
	uint64_t w_iova, w_size, p_iova, p_size;
	size_t w_req, p_req;
};

/* Inside the region, every block discarded now and never populated by a later request. */
static bool unmap_witness(const struct hook *h, uint64_t iova, uint64_t size)
{
	uint64_t bs = h->t->block_size, off = iova - REGION_IOVA;

	if (!h->region || h->cur == SIZE_MAX || iova < REGION_IOVA || size == 0 || off % bs || size % bs ||
	    size > h->t->region_size - off || !rdm_is_discarded(h->region, off, size))
		return false;
	for (uint64_t b = off / bs; b < (off + size) / bs; b++)
		if (h->plan->last_pop[b] >= (long)h->cur)
			return false;
	return true;
}

/* At or before MID, inside the region, no block discarded by a request up to MID. */
static bool map_witness(const struct hook *h, uint64_t iova, uint64_t size)
{
	uint64_t off = iova - REGION_IOVA;

	if (!h->region || h->cur == SIZE_MAX || h->cur > h->plan->mid || iova < REGION_IOVA || size == 0 ||
	    size > h->t->region_size - off)
		return false;
	for (size_t j = h->cur + 1; j <= h->plan->mid; j++)
		if (h->t->reqs[j].op != REPLAY_POPULATE && overlaps(&h->t->reqs[j], off, size))
			return false;
	return true;
}

static int hook_ioctl(void *opaque, int fd, unsigned long request, void *arg)
{
	struct hook *h = opaque;
	int rc;

	if (request == VFIO_IOMMU_UNMAP_DMA && !h->have_w) {
		const struct vfio_iommu_type1_dma_unmap *u = arg;

		if (unmap_witness(h, u->iova, u->size)) {
			h->have_w = true;
			h->w_iova = u->iova;
			h->w_size = u->size;
			h->w_req = h->cur;
			if (brk == BRK_SKIP_UNMAP) {
				/* Not issued; the size field still says "all of it unmapped". */
				h->fired = true;
				return 0;
			}
			rc = ir_ioctl(h->rec, fd, request, arg);
			if (brk == BRK_EXTRA_MAP && rc == 0) {
				struct vfio_iommu_type1_dma_map m = {
					.argsz = sizeof(m),
					.flags = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE,
					.vaddr = (uint64_t)(uintptr_t)(h->mem + (h->w_iova - REGION_IOVA)),
					.iova = h->w_iova,
					.size = h->t->block_size,
				};

				h->fired = ir_ioctl(h->rec, fd, VFIO_IOMMU_MAP_DMA, &m) == 0;
			}
			return rc;
		}
	}
	if (request == VFIO_IOMMU_MAP_DMA && !h->have_p) {
		const struct vfio_iommu_type1_dma_map *m = arg;

		if (map_witness(h, m->iova, m->size)) {
			h->have_p = true;
			h->p_iova = m->iova;
			h->p_size = m->size;
			h->p_req = h->cur;
			if (brk == BRK_SKIP_MAP) {
				h->fired = true;
				return 0;
			}
		}
	}
	return ir_ioctl(h->rec, fd, request, arg);
}

/* ---- one side of the lockstep: a region on a worker on a backend ---- */

struct side {
	struct rdm_backend *b;
	struct rdm_worker *w;
	struct rdm_region *r;
	uint64_t bs;
	/* Per block: released and not populated since. Written by the release callback on the
	 * worker thread before the change that released it completes; read by the main thread after
	 * that (the completion orders them). */
	uint8_t *released;
};

static void on_release(void *opaque, uint64_t off, uint64_t len)
{
	struct side *s = opaque;

	for (uint64_t b = off / s->bs; b < (off + len) / s->bs; b++)
		s->released[b] = 1;
}

static int side_create(struct side *s, const struct replay_trace *t, uint32_t policy, void *mem)
{
	struct rdm_region_config rc = {
		.struct_size = sizeof(rc),
		.flags = RDM_REGION_STRICT | (policy == RDM_POLICY_COALESCE ? RDM_REGION_ALLOW_WINDOWS : 0),
		.iova = REGION_IOVA,
		.size = t->region_size,
		.block_size = t->block_size,
		.host_addr = mem,
		.release = on_release,
		.release_opaque = s,
		.policy = policy,
	};
	int err;

	s->bs = t->block_size;
	s->released = calloc(t->region_size / t->block_size, 1);
	if (!s->released)
		return -ENOMEM;
	err = rdm_worker_create(NULL, &s->w);
	if (!err)
		err = rdm_worker_add_backend(s->w, s->b, 0);
	if (!err)
		err = rdm_region_create(&rc, &s->r);
	if (!err)
		err = rdm_worker_attach(s->w, s->r, s->b);
	return err;
}

static void side_destroy(struct side *s)
{
	if (s->r)
		rdm_region_destroy(s->r);
	if (s->w)
		rdm_worker_destroy(s->w);
	s->r = NULL;
	s->w = NULL;
}

static int side_apply(struct side *s, const struct replay_req *q)
{
	int err;

	switch (q->op) {
	case REPLAY_POPULATE:
		err = rdm_populate(s->r, q->offset, q->length);
		if (!err)
			memset(s->released + q->offset / s->bs, 0, q->length / s->bs);
		return err;
	case REPLAY_DISCARD:
		return rdm_discard(s->r, q->offset, q->length);
	case REPLAY_DISCARD_ALL:
		return rdm_discard_all(s->r);
	default:
		return -EINVAL;
	}
}

/* ---- one run ---- */

struct maps {
	uint64_t *iova, *size;
	size_t n, cap;
};

static int collect_mapping(void *opaque, uint64_t iova, uint64_t size, uint64_t vaddr)
{
	struct maps *m = opaque;

	(void)vaddr;
	if (m->n == m->cap) {
		size_t cap = m->cap ? 2 * m->cap : 256;
		uint64_t *a = realloc(m->iova, cap * sizeof(*a)), *b;

		if (!a)
			abort(); /* a test program: out of memory ends it */
		m->iova = a;
		b = realloc(m->size, cap * sizeof(*b));
		if (!b)
			abort();
		m->size = b;
		m->cap = cap;
	}
	m->iova[m->n] = iova;
	m->size[m->n++] = size;
	return 0;
}

struct run {
	/* inputs */
	const struct replay_trace *t;
	const struct plan *plan;
	const struct policy *pol;
	struct gu_edu *e;
	int container;
	int64_t avail0;
	uint8_t *mem;
	void *probe_page;
	uint64_t nb, seed;
	/* state */
	struct side sim, real;
	struct hook hook;
	bool fault_checked;
	unsigned sampled_pop, sampled_rel;
	/* results */
	int err;
	uint64_t failed_requests, sim_failed_requests;
	struct rdm_backend_stats rst, sst; /* after the last request */
	unsigned resets;
	int64_t avail_reset, sim_avail_reset;
	double wall_s;
	double check_s; /* in the checkpoints */
};

static uint64_t blk_iova(const struct run *R, uint64_t b)
{
	return REGION_IOVA + b * R->t->block_size;
}

static bool is_pop(const struct run *R, uint64_t b)
{
	return rdm_is_populated(R->real.r, b * R->t->block_size, R->t->block_size);
}

static bool is_rel(const struct run *R, uint64_t b)
{
	return R->real.released[b] && rdm_is_discarded(R->real.r, b * R->t->block_size, R->t->block_size);
}

/* Discarded, not released, inside one of the sim's mappings (defer's kept blocks). */
static bool is_deferred(const struct run *R, uint64_t b)
{
	return !R->real.released[b] && rdm_is_discarded(R->real.r, b * R->t->block_size, R->t->block_size) &&
	       rdm_sim_is_mapped(R->sim.b, blk_iova(R, b), R->t->block_size, false, 0);
}

/* A block drawn uniformly from those that satisfy pred, other than avoid; UINT64_MAX when none does. */
static uint64_t pick(struct run *R, bool (*pred)(const struct run *, uint64_t), uint64_t avoid)
{
	uint64_t n = 0, k;

	for (uint64_t b = 0; b < R->nb; b++)
		n += b != avoid && pred(R, b);
	if (n == 0)
		return UINT64_MAX;
	k = rnd(&R->seed) % n;
	for (uint64_t b = 0; b < R->nb; b++)
		if (b != avoid && pred(R, b) && k-- == 0)
			return b;
	return UINT64_MAX;
}

/* A transfer's offset in the region: somewhere inside block b, the transfer inside the block. */
static uint64_t xfer_off(struct run *R, uint64_t b)
{
	return b * R->t->block_size + rnd(&R->seed) % (R->t->block_size - XFER);
}

static void dma_populated(struct run *R, uint64_t b, const char *where, const char *which)
{
	char why[200];
	uint64_t off = xfer_off(R, b);
	bool ok = gu_edu_check_mapped(R->e, REGION_IOVA + off, R->mem + off, XFER, why, sizeof(why));

	if (!ok) {
		/* Both of its DMAs may have faulted: the kernel's log budget knows it (gu_dmar_fault_pace). */
		gu_dmar_fault_pace(false);
		gu_dmar_fault_pace(false);
	}
	R->sampled_pop++;
	chk(CK_DMA_POP, ok, "%s / %s: %s: edu DMA both ways at populated block %" PRIu64 "%s (IOVA 0x%" PRIx64
	    ") carries the right data (%s)", R->t->name, R->pol->name, where, b, which, REGION_IOVA + off, why);
}

static void dma_deferred(struct run *R, uint64_t b, const char *where)
{
	char why[200];
	uint64_t off = xfer_off(R, b);
	bool ok = gu_edu_check_mapped(R->e, REGION_IOVA + off, R->mem + off, XFER, why, sizeof(why));

	chk(CK_DMA_DEFER, ok, "%s / %s: %s: edu DMA both ways at discarded, not yet released block %" PRIu64
	    " (its mapping still in use) carries the right data (%s)", R->t->name, R->pol->name, where, b, why);
}

/* The kernel's log of a DMAR fault is checked once per run, at the end: its rate limit (3 faults
 * per 5 s) then most often still has room left from the mid-trace faults, so nothing waits. */
static void dma_released(struct run *R, uint64_t b, bool end, const char *where, const char *which)
{
	char why[200];
	uint64_t off = xfer_off(R, b);
	bool fault = end && !R->fault_checked;
	bool ok = gu_edu_check_unmapped(R->e, REGION_IOVA + off, R->mem + off, XFER, fault, 3000, why, sizeof(why));

	R->fault_checked = R->fault_checked || fault;
	R->sampled_rel++;
	chk(CK_DMA_REL, ok, "%s / %s: %s: edu write to released block %" PRIu64 "%s (IOVA 0x%" PRIx64
	    ") leaves memory untouched%s (%s)", R->t->name, R->pol->name, where, b, which, REGION_IOVA + off,
	    fault ? " and the kernel logs a DMAR fault" : "", why);
}

/* One page at iova is mapped: a MAP_DMA there is refused with EEXIST (one that succeeds is undone). */
static bool page_mapped(struct run *R, uint64_t iova)
{
	int rc = gu_dma_map(R->container, iova, R->probe_page, PAGE);

	if (rc == 0)
		gu_dma_unmap(R->container, iova, PAGE, NULL);
	return rc == -EEXIST;
}

static void checkpoint(struct run *R, bool end)
{
	const char *where = end ? "end" : "mid-trace";
	const uint64_t bs = R->t->block_size, none = UINT64_MAX;
	uint64_t w = R->hook.have_w ? (R->hook.w_iova - REGION_IOVA) / bs : none;
	uint64_t p = R->hook.have_p ? (R->hook.p_iova - REGION_IOVA) / bs : none;
	uint64_t b, diff = none, missing = 0, first_missing = 0;
	struct rdm_backend_stats st;
	struct maps m = { 0 };
	int64_t avail;
	char first[80];

	/* 1. DMA: the witnesses when in the state they must be, and a random block of each kind. */
	if (p != none && is_pop(R, p))
		dma_populated(R, p, where, " (the witness P)");
	b = pick(R, is_pop, p);
	if (b != none)
		dma_populated(R, b, where, "");
	if (w != none && is_rel(R, w))
		dma_released(R, w, end, where, " (the witness W)");
	b = pick(R, is_rel, w);
	if (b != none)
		dma_released(R, b, end, where, "");
	if (R->pol->policy == RDM_POLICY_DEFER && !end) {
		b = pick(R, is_deferred, none);
		if (b != none)
			dma_deferred(R, b, where);
	}

	/* 2. Released blocks: the kernel's run and the sim's release the same. */
	for (b = 0; b < R->nb && diff == none; b++)
		if (R->real.released[b] != R->sim.released[b])
			diff = b;
	if (diff == none)
		snprintf(first, sizeof(first), "none");
	else
		snprintf(first, sizeof(first), "block %" PRIu64 ", %s by the kernel's run", diff,
			 R->real.released[diff] ? "released" : "not released");
	chk(CK_RELEASED, diff == none, "%s / %s: %s: the released blocks are the sim's (first difference: %s)",
	    R->t->name, R->pol->name, where, first);

	/* 3. The container holds the sim's mappings: as many, each at its place. */
	rdm_sim_for_each_mapping(R->sim.b, collect_mapping, &m);
	avail = gu_dma_avail(R->container);
	rdm_backend_get_stats(R->real.b, &st);
	for (size_t i = 0; i < m.n; i++) {
		if (!page_mapped(R, m.iova[i]) || !page_mapped(R, m.iova[i] + m.size[i] - PAGE)) {
			if (!missing++)
				first_missing = m.iova[i];
		}
	}
	if (missing)
		snprintf(first, sizeof(first), ", the first at IOVA 0x%" PRIx64, first_missing);
	else
		first[0] = '\0';
	chk(end ? CK_STATE_END : CK_STATE_MID, avail == R->avail0 - (int64_t)m.n && st.mappings == m.n && !missing,
	    "%s / %s: %s: the container holds the sim's %zu mappings: DMA_AVAIL %" PRId64 " = start %" PRId64
	    " - %zu, the backend shadows %" PRIu64 ", %" PRIu64 " of them not mapped at both ends%s", R->t->name,
	    R->pol->name, where, m.n, avail, R->avail0, m.n, st.mappings, missing, first);

	/* The leak probe, at the end only: it unmaps whatever it finds. */
	if (end) {
		uint64_t probes = 0, bad = 0, bad_bytes = 0, first_bad = 0, prev = 0;
		int first_rc = 0;

		for (b = 0; b < R->nb;) {
			uint64_t e = b, got = 0;
			int rc;

			if (!R->real.released[b]) {
				b++;
				continue;
			}
			while (e < R->nb && R->real.released[e])
				e++;
			rc = gu_dma_unmap(R->container, blk_iova(R, b), (e - b) * bs, &got);
			probes++;
			if (rc || got) {
				if (!bad++) {
					first_bad = blk_iova(R, b);
					first_rc = rc;
				}
				bad_bytes += rc ? 0 : got;
			}
			b = e;
		}
		for (size_t i = 0; i <= m.n; i++) {
			uint64_t lo = prev, hi = i < m.n ? m.iova[i] : IOVA_TOP, got = 0;
			int rc;

			prev = i < m.n ? m.iova[i] + m.size[i] : IOVA_TOP;
			if (hi <= lo)
				continue;
			rc = gu_dma_unmap(R->container, lo, hi - lo, &got);
			probes++;
			if (rc || got) {
				if (!bad++) {
					first_bad = lo;
					first_rc = rc;
				}
				bad_bytes += rc ? 0 : got;
			}
		}
		if (bad)
			snprintf(first, sizeof(first), "; the first at IOVA 0x%" PRIx64 ": %s", first_bad,
				 first_rc ? strerror(-first_rc) : "OK");
		else
			first[0] = '\0';
		chk(CK_LEAK, bad == 0, "%s / %s: leak probe: %" PRIu64 " UNMAP_DMA of the released runs and of the gaps "
		    "between the sim's mappings unmap nothing (%" PRIu64 " did: %" PRIu64 " bytes%s)", R->t->name,
		    R->pol->name, probes, bad, bad_bytes, first);
	}
	free(m.iova);
	free(m.size);
}

static void run_one(struct run *R, struct ir_recorder *rec)
{
	struct rdm_sim_config sc = { .struct_size = sizeof(sc), .semantics = RDM_SEM_TYPE1V2 };
	struct rdm_backend_stats st;
	uint64_t maps0 = rec->maps, unmaps0 = rec->unmaps, failed0 = rec->failed, got = 0;
	double t0;
	int rc;

	R->hook = (struct hook){ .rec = rec, .t = R->t, .plan = R->plan, .mem = R->mem, .cur = SIZE_MAX };
	R->err = rdm_backend_sim_create(&sc, &R->sim.b);
	if (!R->err)
		R->err = rdm_backend_vfio_type1_create(R->container, hook_ioctl, &R->hook, &R->real.b);
	if (!R->err)
		R->err = side_create(&R->sim, R->t, R->pol->policy, R->mem);
	if (!R->err)
		R->err = side_create(&R->real, R->t, R->pol->policy, R->mem);
	if (!gu_tap_ok(R->err == 0, "%s / %s: a region on the sim and one on the container, each on a worker (%s)",
		       R->t->name, R->pol->name, R->err ? rdm_last_error() : "ok"))
		goto out;
	R->hook.region = R->real.r;

	for (size_t i = 0; i < R->t->n; i++) {
		const struct replay_req *q = &R->t->reqs[i];

		R->hook.cur = i;
		if (side_apply(&R->sim, q) < 0)
			R->sim_failed_requests++;
		t0 = now_s();
		if (side_apply(&R->real, q) < 0)
			R->failed_requests++;
		R->wall_s += now_s() - t0;
		if (q->op == REPLAY_DISCARD_ALL) {
			rdm_backend_get_stats(R->sim.b, &st);
			R->resets++;
			R->avail_reset = gu_dma_avail(R->container);
			R->sim_avail_reset = SIM_LIMIT - (int64_t)st.mappings;
		}
		if (i == R->plan->mid) {
			R->hook.cur = SIZE_MAX;
			t0 = now_s();
			checkpoint(R, false);
			R->check_s += now_s() - t0;
		}
	}
	R->hook.cur = SIZE_MAX;
	rdm_backend_get_stats(R->real.b, &R->rst);
	rdm_backend_get_stats(R->sim.b, &R->sst);
	t0 = now_s();
	checkpoint(R, true);
	R->check_s += now_s() - t0;
	chk(CK_SAMPLED, R->sampled_pop > 0 && R->sampled_rel > 0 && R->fault_checked,
	    "%s / %s: edu DMA sampled %u populated and %u released blocks, the DMAR fault log checked %s",
	    R->t->name, R->pol->name, R->sampled_pop, R->sampled_rel, R->fault_checked ? "once" : "never");
	gu_tap_diag("%s / %s: MID after request %zu; W %s%" PRIu64 " (UNMAP_DMA of %" PRIu64 " KiB in request %zu), "
		    "P %s%" PRIu64 " (MAP_DMA of %" PRIu64 " KiB in request %zu)",
		    R->t->name, R->pol->name, R->plan->mid, R->hook.have_w ? "block " : "none ",
		    R->hook.have_w ? (R->hook.w_iova - REGION_IOVA) / R->t->block_size : 0, R->hook.w_size >> 10,
		    R->hook.w_req, R->hook.have_p ? "block " : "none ",
		    R->hook.have_p ? (R->hook.p_iova - REGION_IOVA) / R->t->block_size : 0, R->hook.p_size >> 10,
		    R->hook.p_req);
	side_destroy(&R->sim);
	side_destroy(&R->real);

	/* Before anything of the harness touches the container: rdm's destroy left nothing mapped. */
	rc = gu_dma_unmap(R->container, 0, IOVA_TOP, &got);
	chk(CK_EMPTY, rc == 0 && got == 0, "%s / %s: after destroy the container holds nothing: an UNMAP_DMA of "
	    "[0, 0x%" PRIx64 ") unmaps %" PRIu64 " bytes (%s)", R->t->name, R->pol->name, IOVA_TOP, got,
	    rc ? strerror(-rc) : "OK");
	rdm_backend_get_stats(R->real.b, &st);
	chk(CK_IOCTLS, st.map_calls == rec->maps - maps0 && st.unmap_calls == rec->unmaps - unmaps0 &&
	    st.failed_calls == rec->failed - failed0,
	    "%s / %s: the kernel saw the backend's calls: %" PRIu64 " MAP_DMA + %" PRIu64 " UNMAP_DMA ioctls, %" PRIu64
	    " rejected (the backend counts %" PRIu64 " + %" PRIu64 ", %" PRIu64 " failed)", R->t->name, R->pol->name,
	    rec->maps - maps0, rec->unmaps - unmaps0, rec->failed - failed0, st.map_calls, st.unmap_calls,
	    st.failed_calls);
out:
	side_destroy(&R->sim);
	side_destroy(&R->real);
	free(R->sim.released);
	free(R->real.released);
	rdm_backend_destroy(R->sim.b);
	rdm_backend_destroy(R->real.b);
}

/* The run's results against the sim's; in a break mode, the verdicts on the break. */
static void report_run(struct run *R)
{
	const char *tn = R->t->name, *pn = R->pol->name;

	if (R->err)
		return;
	chk(CK_REQ, R->failed_requests == 0 && R->sim_failed_requests == 0,
	    "%s / %s: every request succeeds on the kernel and the sim (%" PRIu64 " and %" PRIu64 " failed)", tn, pn,
	    R->failed_requests, R->sim_failed_requests);
	chk(CK_CALLS, R->rst.map_calls == R->sst.map_calls && R->rst.unmap_calls == R->sst.unmap_calls,
	    "%s / %s: calls as the sim: %" PRIu64 " maps + %" PRIu64 " unmaps (sim %" PRIu64 " + %" PRIu64 ")", tn, pn,
	    R->rst.map_calls, R->rst.unmap_calls, R->sst.map_calls, R->sst.unmap_calls);
	chk(CK_PEAK, R->rst.peak_mappings == R->sst.peak_mappings,
	    "%s / %s: peak mappings as the sim: %" PRIu64 " (sim %" PRIu64 ")", tn, pn, R->rst.peak_mappings,
	    R->sst.peak_mappings);
	chk(CK_REJECT, R->rst.failed_calls == 0 && R->sst.failed_calls == 0,
	    "%s / %s: no call rejected (kernel %" PRIu64 ", sim %" PRIu64 ")", tn, pn, R->rst.failed_calls,
	    R->sst.failed_calls);
	if (brk == BRK_NONE)
		return;
	gu_tap_ok(R->hook.fired, "break=%s: %s / %s: the defect was injected (%s)", brk_names[brk], tn, pn,
		  brk == BRK_SKIP_MAP ? (R->hook.have_p ? "P's MAP_DMA not issued" : "no P found")
				      : (R->hook.have_w ? (brk == BRK_SKIP_UNMAP ? "W's UNMAP_DMA not issued"
									      : "W's block mapped again")
							: "no W found"));
	for (unsigned k = 0; k < CK_N; k++) {
		if (brk_expect[brk] & BIT(k))
			gu_tap_ok(run_failed[k] > 0, "break=%s: %s / %s: the check \"%s\" caught it (%u failed)",
				  brk_names[brk], tn, pn, ck_names[k], run_failed[k]);
		else if (run_failed[k])
			gu_tap_diag("break=%s: %s / %s: \"%s\" failed too (%u)", brk_names[brk], tn, pn, ck_names[k],
				    run_failed[k]);
	}
}

/* ---- traces ---- */

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The .csv files in dir whose names start with one of the comma-separated prefixes in only. */
static size_t list_traces(const char *dir, const char *only, char **paths)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	size_t n = 0;

	if (!d)
		return 0;
	while ((e = readdir(d)) && n < MAX_TRACES) {
		size_t l = strlen(e->d_name);
		bool want = !only;

		for (const char *o = only; o && *o && !want;) {
			size_t ol = strcspn(o, ",");

			want = ol && strncmp(e->d_name, o, ol) == 0;
			o += ol + (o[ol] == ',');
		}
		if (want && l > 4 && strcmp(e->d_name + l - 4, ".csv") == 0) {
			paths[n] = malloc(strlen(dir) + l + 2);
			if (!paths[n])
				abort();
			sprintf(paths[n++], "%s/%s", dir, e->d_name);
		}
	}
	closedir(d);
	qsort(paths, n, sizeof(*paths), cmp_str);
	return n;
}

static enum brk parse_break(const char *s)
{
	for (unsigned i = 0; s && i < BRK_N; i++)
		if (strcmp(s, brk_names[i]) == 0)
			return (enum brk)i;
	if (s && *s)
		gu_tap_diag("unknown break mode '%s' (none, skip-unmap, extra-map, skip-map)", s);
	return s && *s ? BRK_N : BRK_NONE;
}

int main(int argc, char **argv)
{
	const char *dir = "/data/traces", *only = NULL, *brk_arg = getenv("RDM_VM_BREAK");
	const char *workloads[MAX_WORKLOADS];
	size_t nwork = 0;
	bool traces_given = false;
	uint64_t scale = 32, max_region = 0, cut = 0;
	struct gu_vfio v;
	struct gu_edu e;
	struct ir_recorder rec = { 0 };
	char *paths[MAX_TRACES];
	size_t ntraces;
	int64_t avail0;
	bool h_seen = false, want_traces;
	void *probe_page;

	gu_tap_init("vm_replay");
	for (int i = 1; i + 1 < argc; i += 2) {
		if (strcmp(argv[i], "--scale") == 0)
			scale = strtoull(argv[i + 1], NULL, 0);
		else if (strcmp(argv[i], "--traces") == 0)
			dir = argv[i + 1], traces_given = true;
		else if (strcmp(argv[i], "--workload") == 0 && nwork < MAX_WORKLOADS)
			workloads[nwork++] = argv[i + 1];
		else if (strcmp(argv[i], "--only") == 0)
			only = argv[i + 1];
		else if (strcmp(argv[i], "--break") == 0)
			brk_arg = argv[i + 1];
		else if (strcmp(argv[i], "--cut") == 0)
			cut = strtoull(argv[i + 1], NULL, 0);
	}
	brk = parse_break(brk_arg);
	if (!gu_tap_ok(brk < BRK_N, "break mode: %s", brk < BRK_N ? brk_names[brk] : brk_arg))
		return gu_tap_done();
	if (!gu_tap_ok(gu_vfio_open(&v) == 0, "type1v2 container with the edu group"))
		return gu_tap_done();
	if (!gu_tap_ok(gu_edu_init(&e, &v) == 0, "edu's BAR0 and bus mastering")) {
		gu_vfio_close(&v);
		return gu_tap_done();
	}
	probe_page = gu_alloc_pages(PAGE);
	avail0 = gu_dma_avail(v.container);
	gu_tap_ok(avail0 > 0 && probe_page, "DMA_AVAIL of the fresh container: %" PRId64, avail0);
	/* With --workload only the workloads, unless --traces names a directory too. */
	want_traces = traces_given || nwork == 0;
	ntraces = want_traces ? list_traces(dir, only, paths) : 0;
	if (want_traces)
		gu_tap_ok(ntraces >= (only ? 1u : 5u), "%zu traces in %s%s%s", ntraces, dir, only ? " starting with " : "",
			  only ? only : "");

	/* The traces, then the generated workloads: the same runs and checks for each. */
	for (size_t ti = 0; ti < ntraces + nwork; ti++) {
		struct replay_trace t;
		struct replay_trace_opts opts = { 0 };
		struct plan plan;
		char err[REPLAY_ERR_LEN];
		struct run runs[NPOL];
		void *mem;

		if (ti >= ntraces) {
			const char *spec = workloads[ti - ntraces];

			if (!gu_tap_ok(replay_generate(spec, 1, &t, err, sizeof(err)) == 0 &&
					       replay_trace_validate(&t, err, sizeof(err)) == 0,
				       "generate workload %s (seed 1)", spec)) {
				gu_tap_diag("%s", err);
				continue;
			}
		} else if (!gu_tap_ok(replay_trace_load(paths[ti], &opts, &t, err, sizeof(err)) == 0, "load %s",
				      paths[ti])) {
			gu_tap_diag("%s", err);
			continue;
		}
		if (!gu_tap_ok(replay_trace_scale(&t, scale, err, sizeof(err)) == 0, "%s: --scale %" PRIu64,
			       t.name, scale)) {
			gu_tap_diag("%s", err);
			replay_trace_free(&t);
			continue;
		}
		if (cut && cut < t.n) {
			/* Only the first requests: the run ends with memory still plugged. */
			size_t l = strlen(t.name);

			snprintf(t.name + l, sizeof(t.name) - l, "[:%" PRIu64 "]", cut);
			t.n = cut;
		}
		if (t.region_size > max_region)
			max_region = t.region_size;
		if (!gu_tap_ok(REGION_IOVA + t.region_size <= e.iova_limit && t.block_size > XFER && t.n > 0,
			       "%s: edu reaches the whole region [0x%" PRIx64 ", 0x%" PRIx64 ") (its DMA reaches 0x%" PRIx64
			       ")", t.name, REGION_IOVA, REGION_IOVA + t.region_size, e.iova_limit) ||
		    !gu_tap_ok(plan_trace(&t, &plan) == 0, "%s: planned", t.name)) {
			replay_trace_free(&t);
			continue;
		}
		gu_tap_diag("%s: %zu requests, %" PRIu64 " KiB blocks, %" PRIu64 " MiB region", t.name, t.n,
			    t.block_size >> 10, t.region_size >> 20);
		mem = mmap(NULL, t.region_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
			   -1, 0);
		if (!gu_tap_ok(mem != MAP_FAILED, "%s: host memory for the region", t.name)) {
			free(plan.last_pop);
			replay_trace_free(&t);
			continue;
		}
		for (size_t pi = 0; pi < NPOL; pi++) {
			struct run *R = &runs[pi];

			memset(R, 0, sizeof(*R));
			memset(run_failed, 0, sizeof(run_failed));
			R->t = &t;
			R->plan = &plan;
			R->pol = &policies[pi];
			R->e = &e;
			R->container = v.container;
			R->avail0 = avail0;
			R->mem = mem;
			R->probe_page = probe_page;
			R->nb = t.region_size / t.block_size;
			R->seed = 0x9e3779b97f4a7c15ull ^ (ti * 131 + pi + 1);
			run_one(R, &rec);
			report_run(R);
			/* The pages were pinned and unpinned; give them back before the next run. */
			madvise(mem, t.region_size, MADV_DONTNEED);
		}
		if (strncmp(t.name, "H_", 2) == 0) {
			bool ok = true;

			h_seen = true;
			for (size_t k = 0; k < NPOL; k++) {
				ok = ok && !runs[k].err && runs[k].resets > 0 && runs[k].avail_reset == avail0 &&
				     runs[k].sim_avail_reset == SIM_LIMIT;
				gu_tap_diag("%s / %s: %u unplug_all, DMA_AVAIL right after it %" PRId64 " (sim %" PRId64 ")",
					    t.name, policies[k].name, runs[k].resets, runs[k].avail_reset,
					    runs[k].sim_avail_reset);
			}
			chk(CK_RESET, ok, "reset: trace %s's unplug_all leaves DMA_AVAIL at its start (%" PRId64
			    ") under every policy, on the kernel and the sim", t.name, avail0);
		}
		for (size_t k = 0; k < NPOL; k++)
			gu_tap_diag("SUMMARY guest trace=%s policy=%s calls=%" PRIu64 " sim_calls=%" PRIu64
				    " peak_mappings=%" PRIu64 " wall_ratio_vs_block=%.2f",
				    t.name, policies[k].name, runs[k].rst.map_calls + runs[k].rst.unmap_calls,
				    runs[k].sst.map_calls + runs[k].sst.unmap_calls, runs[k].rst.peak_mappings,
				    runs[0].wall_s > 0 ? runs[k].wall_s / runs[0].wall_s : 0.0);
		for (size_t k = 0; k < NPOL; k++)
			gu_tap_diag("%s / %s: wall %.3f s on the kernel, %.3f s in the checkpoints", t.name,
				    policies[k].name, runs[k].wall_s, runs[k].check_s);
		munmap(mem, t.region_size);
		free(plan.last_pop);
		replay_trace_free(&t);
	}
	if (brk == BRK_NONE) {
		if (want_traces && !only)
			gu_tap_ok(h_seen, "trace H (the reset) was replayed");
		gu_tap_ok(gu_dma_avail(v.container) == avail0,
			  "the container ends with DMA_AVAIL at its start (%" PRId64 ")", gu_dma_avail(v.container));
		gu_tap_ok(rec.failed == 0,
			  "the kernel rejected none of the %" PRIu64 " maps and %" PRIu64 " unmaps rdm issued", rec.maps,
			  rec.unmaps);
		ir_validate_fake(&rec, (uint64_t)avail0, "traces");
	}
	gu_tap_diag("%u DMAs by edu, %.1f s waited for the kernel's DMAR log budget, regions up to %" PRIu64 " MiB",
		    e.dma_count, gu_dmar_fault_waited_s(), max_region >> 20);
	ir_free(&rec);
	for (size_t i = 0; i < ntraces; i++)
		free(paths[i]);
	if (probe_page)
		munmap(probe_page, PAGE);
	gu_edu_fini(&e);
	gu_vfio_close(&v);
	return gu_tap_done();
}
