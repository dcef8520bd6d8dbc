/* SPDX-License-Identifier: MIT */
/*
 * iommu/backend_sim.c - the sim backend: an exact model of the kernel's
 * mapping rules, rdm's embedded default and the tests' oracle.
 *
 * Theory. The model is the set of mappings the kernel would hold, in a
 * maptree (iommu/maptree.c: O(log n) per call plus O(k) for the k mappings
 * an UNMAP removes; each node's payload is its host address). A range may
 * end exactly at 2^64, so ranges are handled by their last byte, never by
 * an end that would wrap. Each call is judged exactly as DESIGN.md's kernel-rules
 * table says, for the semantics chosen at creation:
 *
 *   call                      type1v2              iommufd
 *   MAP over a mapped byte    -EEXIST              -EEXIST
 *   MAP past the limit        -ENOSPC (65535)      no limit unless set
 *   UNMAP whole mappings      OK, holes allowed, one call, bytes written back
 *   UNMAP bisecting           -EINVAL              -ENOENT
 *   UNMAP of an empty range   OK, 0 bytes          -ENOENT
 *   adjacent mappings         never merged, each counts
 *
 * With can_split (a split-capable kernel) an UNMAP may bisect: the parts of
 * a bisected mapping outside the range stay mapped as mappings of their own
 * (to the same host memory), in the same call. A middle bisect turns one
 * mapping into two, so it needs room under the limit (-ENOSPC otherwise).
 *
 * Rejections are checked in the kernel's order (EEXIST before ENOSPC on
 * MAP) and leave the model untouched. An injected failure fires before any
 * rule, changes nothing, and still counts as a (failed) call.
 *
 * Cost model: model_ns += call_ns per call, plus page_ns per page (of
 * page_size bytes, rounded up) mapped or unmapped by a successful call.
 * Defaults: call_ns = 2000 (a call's own cost: syscall, locks, IOTLB sync,
 * "a few microseconds"), page_ns = 60 per 4 KiB page (mapping 16 GiB of
 * 4 KiB pages took 0.26 s in type1 after the 2025 pinning work, ~60 ns a
 * page; with THP, 0.027 s: page_size = 2 MiB and page_ns ~ 3200 model
 * that). To calibrate on a host: time N MAP_DMA calls of one page each
 * (call_ns ~ t/N) and one MAP_DMA of a large range of P pages (page_ns ~
 * (t - call_ns)/P), then the same for UNMAP_DMA, and use the means.
 *
 * Invariants:
 *  1. The maptree holds exactly the mappings the modelled kernel holds;
 *     no two overlap (EEXIST is checked before every insert).
 *  2. A failed call (rule, limit, injection or -ENOMEM) leaves the maptree,
 *     the limit accounting and the injection list (except the injection
 *     that fired) unchanged; the room a split needs is reserved before
 *     anything is removed.
 *  3. With a limit L, maptree.count <= L after every call.
 *  4. Without can_split, every mapping removed by an UNMAP lies wholly
 *     inside the range, so the bytes written back equal the bytes removed.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "iommu/backend.h"
#include "iommu/maptree.h"

#define SIM_MAX_INJECTIONS 64

struct sim_injection {
	uint32_t kind; /* enum rdm_sim_call */
	uint64_t at;   /* fires at this value of the kind's call counter */
	int err;
};

struct sim {
	struct rdm_backend base;
	struct rdm_maptree tree;
	uint32_t semantics;
	bool can_split;
	uint64_t limit; /* RDM_SIM_UNLIMITED for none */
	uint64_t call_ns, page_ns, cost_page;
	uint64_t map_seen, unmap_seen; /* calls received, for injection */
	unsigned ninj;
	struct sim_injection inj[SIM_MAX_INJECTIONS];
};

static const struct rdm_backend_ops sim_ops;

static struct sim *to_sim(struct rdm_backend *b)
{
	return (struct sim *)b;
}

static const struct sim *to_csim(const struct rdm_backend *b)
{
	return (b != NULL && b->ops == &sim_ops) ? (const struct sim *)b : NULL;
}

static void charge(struct sim *s, uint64_t bytes)
{
	uint64_t pages = bytes / s->cost_page + (bytes % s->cost_page != 0);

	rdm_ctr_add(&s->base.ctr.model_ns, s->call_ns + pages * s->page_ns);
}

/* Count the call; if an armed injection hits it, consume every armed entry
 * that hits it and return the first one's error. */
static int injected(struct sim *s, bool is_map)
{
	if (is_map)
		s->map_seen++;
	else
		s->unmap_seen++;
	uint64_t any = s->map_seen + s->unmap_seen;
	int err = 0;
	unsigned j = 0;

	for (unsigned i = 0; i < s->ninj; i++) {
		const struct sim_injection *in = &s->inj[i];
		bool hit = (in->kind == RDM_SIM_CALL_ANY && in->at == any) ||
			   (in->kind == RDM_SIM_CALL_MAP && is_map && in->at == s->map_seen) ||
			   (in->kind == RDM_SIM_CALL_UNMAP && !is_map && in->at == s->unmap_seen);
		if (hit) {
			if (!err)
				err = in->err;
			continue;
		}
		s->inj[j++] = *in;
	}
	s->ninj = j;
	return err;
}

/* The host address of a sim node (its payload). */
static uint64_t *vaddr_of(const struct sim *s, uint32_t h)
{
	return rdm_maptree_payload(&s->tree, h);
}

static int sim_map(struct rdm_backend *b, uint64_t iova, uint64_t size, uint64_t vaddr)
{
	struct sim *s = to_sim(b);
	uint64_t last = iova + (size - 1); /* the range may end at 2^64 */
	int err = injected(s, true);

	if (err) {
		charge(s, 0);
		return rdm_fail(err, "sim: injected failure of map [0x%" PRIx64 ", 0x%" PRIx64 "]", iova,
				last);
	}
	if (rdm_maptree_intersects(&s->tree, iova, size)) {
		charge(s, 0);
		return rdm_fail(-EEXIST, "sim: map [0x%" PRIx64 ", 0x%" PRIx64 "] overlaps a mapping",
				iova, last);
	}
	if (s->limit != RDM_SIM_UNLIMITED && s->tree.count >= s->limit) {
		charge(s, 0);
		return rdm_fail(-ENOSPC, "sim: map [0x%" PRIx64 ", 0x%" PRIx64
				"] exceeds the mapping limit %" PRIu64,
				iova, last, s->limit);
	}
	if (rdm_maptree_reserve(&s->tree, 1) != 0) {
		charge(s, 0);
		return rdm_fail(-ENOMEM, "sim: out of memory for a mapping");
	}
	*vaddr_of(s, rdm_maptree_insert(&s->tree, iova, size)) = vaddr;
	charge(s, size);
	return 0;
}

static int sim_unmap(struct rdm_backend *b, uint64_t iova, uint64_t size, struct rdm_unmap_result *res)
{
	struct sim *s = to_sim(b);
	struct rdm_maptree *t = &s->tree;
	uint64_t last = iova + (size - 1); /* the range may end at 2^64 */
	int err = injected(s, false);

	if (err) {
		charge(s, 0);
		return rdm_fail(err, "sim: injected failure of unmap [0x%" PRIx64 ", 0x%" PRIx64 "]",
				iova, last);
	}
	/* p: the mapping starting at or before iova; q: the last one starting
	 * at or before last - p itself if p reaches last (mappings do not
	 * overlap, so none starts inside p), else look. */
	uint32_t p = rdm_maptree_find_le(t, iova);
	uint64_t p_last = p ? rdm_maptree_node(t, p)->start + (rdm_maptree_node(t, p)->len - 1) : 0;
	uint32_t q = p && p_last >= last ? p : rdm_maptree_find_le(t, last);
	uint64_t q_start = q ? rdm_maptree_node(t, q)->start : 0;
	uint64_t q_last = q ? q_start + (rdm_maptree_node(t, q)->len - 1) : 0;
	uint64_t p_start = p ? rdm_maptree_node(t, p)->start : 0;
	bool cut_lo = p && p_start < iova && p_last >= iova;
	bool cut_hi = q && q_last > last;
	bool any = q && q_last >= iova;
	int bad = s->semantics == RDM_SEM_IOMMUFD ? -ENOENT : -EINVAL;

	if ((cut_lo || cut_hi) && !s->can_split) {
		charge(s, 0);
		return rdm_fail(bad, "sim: unmap [0x%" PRIx64 ", 0x%" PRIx64
				"] bisects the mapping at 0x%" PRIx64,
				iova, last, cut_lo ? p_start : q_start);
	}
	if (!any && s->semantics == RDM_SEM_IOMMUFD) {
		charge(s, 0);
		return rdm_fail(-ENOENT, "sim: unmap [0x%" PRIx64 ", 0x%" PRIx64 "] of an empty range",
				iova, last);
	}
	if (!any) {
		charge(s, 0);
		return 0;
	}
	uint32_t survivors = (uint32_t)cut_lo + (uint32_t)cut_hi;
	if (cut_lo && cut_hi && p == q && s->limit != RDM_SIM_UNLIMITED && t->count + 1 > s->limit) {
		charge(s, 0);
		return rdm_fail(-ENOSPC, "sim: unmap [0x%" PRIx64 ", 0x%" PRIx64
				"] splits a mapping in two past the mapping limit %" PRIu64,
				iova, last, s->limit);
	}
	if (rdm_maptree_reserve(t, survivors) != 0) {
		charge(s, 0);
		return rdm_fail(-ENOMEM, "sim: out of memory for split survivors");
	}
	uint64_t p_vaddr = p ? *vaddr_of(s, p) : 0, q_vaddr = q ? *vaddr_of(s, q) : 0;
	uint64_t removed = 0, bytes = 0, lo = cut_lo ? p_start : iova;

	rdm_maptree_remove_starts_in(t, lo, last, &removed, &bytes);
	if (cut_lo) {
		/* reserved above: cannot fail */
		*vaddr_of(s, rdm_maptree_insert(t, p_start, iova - p_start)) = p_vaddr;
		bytes -= iova - p_start;
	}
	if (cut_hi) {
		*vaddr_of(s, rdm_maptree_insert(t, last + 1, q_last - last)) = q_vaddr + (last + 1 - q_start);
		bytes -= q_last - last;
	}
	res->bytes = bytes;
	res->removed = removed;
	res->added = survivors;
	charge(s, bytes);
	/* The model's memory follows its mappings down too (no handle is
	 * kept across calls). */
	rdm_maptree_trim(t);
	return 0;
}

static int sim_dma_avail(struct rdm_backend *b, uint64_t *avail)
{
	struct sim *s = to_sim(b);

	*avail = s->limit == RDM_SIM_UNLIMITED ? UINT64_MAX : s->limit - s->tree.count;
	return 0;
}

static void sim_destroy(struct rdm_backend *b)
{
	struct sim *s = to_sim(b);

	rdm_maptree_fini(&s->tree);
	rdm_free(s);
}

static const struct rdm_backend_ops sim_ops = {
	.name = "sim",
	.map = sim_map,
	.unmap = sim_unmap,
	.dma_avail = sim_dma_avail,
	.destroy = sim_destroy,
};

int rdm_backend_sim_create(const struct rdm_sim_config *cfg, struct rdm_backend **out)
{
	struct rdm_sim_config c = { 0 };

	if (out == NULL)
		return rdm_fail(-EINVAL, "sim create: NULL out");
	if (cfg != NULL) {
		if (cfg->struct_size == 0)
			return rdm_fail(-EINVAL, "sim create: config struct_size not set");
		memcpy(&c, cfg, cfg->struct_size < sizeof(c) ? cfg->struct_size : sizeof(c));
	}
	if (c.semantics != RDM_SEM_TYPE1V2 && c.semantics != RDM_SEM_IOMMUFD)
		return rdm_fail(-EINVAL, "sim create: unknown semantics %" PRIu32, c.semantics);
	if (c.page_size == 0)
		c.page_size = 4096;
	if (c.page_size < 4096 || (c.page_size & (c.page_size - 1)))
		return rdm_fail(-EINVAL,
				"sim create: cost page size %" PRIu64 " not a power of two >= 4096",
				c.page_size);
	if (c.limit == 0)
		c.limit = c.semantics == RDM_SEM_TYPE1V2 ? 65535 : RDM_SIM_UNLIMITED;

	struct sim *s = rdm_calloc(1, sizeof(*s));
	if (s == NULL)
		return rdm_fail(-ENOMEM, "sim create: out of memory");
	rdm_backend_init(&s->base, &sim_ops);
	s->base.caps.semantics = c.semantics;
	s->base.caps.can_split = c.can_split;
	s->base.caps.has_unmap_all = false;
	s->base.caps.has_dma_avail = c.limit != RDM_SIM_UNLIMITED;
	rdm_maptree_init(&s->tree, sizeof(uint64_t)); /* payload: vaddr */
	s->semantics = c.semantics;
	s->can_split = c.can_split;
	s->limit = c.limit;
	s->call_ns = c.call_ns ? c.call_ns : 2000;
	s->page_ns = c.page_ns ? c.page_ns : 60;
	s->cost_page = c.page_size;
	*out = &s->base;
	return 0;
}

int rdm_sim_inject(struct rdm_backend *b, enum rdm_sim_call kind, uint64_t nth, int err)
{
	if (to_csim(b) == NULL)
		return rdm_fail(-EINVAL, "sim inject: %s", b ? "not a sim backend" : "NULL backend");
	if (kind != RDM_SIM_CALL_MAP && kind != RDM_SIM_CALL_UNMAP && kind != RDM_SIM_CALL_ANY)
		return rdm_fail(-EINVAL, "sim inject: unknown call kind %d", (int)kind);
	if (nth == 0)
		return rdm_fail(-EINVAL, "sim inject: nth counts from 1");
	if (err >= 0 || err < -4095)
		return rdm_fail(-EINVAL, "sim inject: error %d is not a negative errno", err);
	struct sim *s = to_sim(b);
	if (s->ninj == SIM_MAX_INJECTIONS)
		return rdm_fail(-ENOSPC, "sim inject: %d injections already armed", SIM_MAX_INJECTIONS);
	uint64_t base = kind == RDM_SIM_CALL_MAP     ? s->map_seen
			: kind == RDM_SIM_CALL_UNMAP ? s->unmap_seen
						     : s->map_seen + s->unmap_seen;
	s->inj[s->ninj++] = (struct sim_injection){ kind, base + nth, err };
	return 0;
}

void rdm_sim_clear_injections(struct rdm_backend *b)
{
	if (to_csim(b) != NULL)
		to_sim(b)->ninj = 0;
}

/* Does [x, x + size) go past 2^64? (It may end exactly there.) */
static bool range_wraps(uint64_t x, uint64_t size)
{
	return size != 0 && x + (size - 1) < x;
}

bool rdm_sim_is_mapped(const struct rdm_backend *b, uint64_t iova, uint64_t size, bool vaddr_check,
		       uint64_t vaddr)
{
	const struct sim *s = to_csim(b);

	if (s == NULL || size == 0 || range_wraps(iova, size))
		return false;
	uint64_t last = iova + (size - 1);
	uint32_t h = rdm_maptree_find_le(&s->tree, iova);

	for (uint64_t x = iova; h;) {
		const struct rdm_maptree_node *n = rdm_maptree_node(&s->tree, h);
		uint64_t n_last = n->start + (n->len - 1);

		if (!rdm_maptree_contains(&s->tree, h, x))
			return false;
		if (vaddr_check && *vaddr_of(s, h) + (x - n->start) != vaddr + (x - iova))
			return false;
		if (n_last >= last)
			return true;
		x = n_last + 1;
		h = rdm_maptree_find_ge(&s->tree, x);
	}
	return false;
}

bool rdm_sim_is_unmapped(const struct rdm_backend *b, uint64_t iova, uint64_t size)
{
	const struct sim *s = to_csim(b);

	if (s == NULL)
		return false;
	if (size == 0)
		return true;
	if (range_wraps(iova, size))
		return false;
	return !rdm_maptree_intersects(&s->tree, iova, size);
}

struct visit_ctx {
	rdm_sim_mapping_fn fn;
	void *opaque;
};

static int visit_one(void *opaque, const struct rdm_maptree *t, uint32_t h)
{
	struct visit_ctx *v = opaque;
	const struct rdm_maptree_node *n = rdm_maptree_node(t, h);

	return v->fn(v->opaque, n->start, n->len, *(const uint64_t *)rdm_maptree_payload(t, h));
}

int rdm_sim_for_each_mapping(const struct rdm_backend *b, rdm_sim_mapping_fn fn, void *opaque)
{
	const struct sim *s = to_csim(b);

	if (s == NULL || fn == NULL)
		return rdm_fail(-EINVAL, "sim for_each_mapping: %s",
				s == NULL ? "not a sim backend" : "NULL callback");
	struct visit_ctx v = { fn, opaque };
	return rdm_maptree_for_each(&s->tree, visit_one, &v);
}
