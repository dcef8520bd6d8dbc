/* tests/vm/vm_compact.c - rdm_region_compact() on the real type1 container: deferred blocks reachable before, released and faulting after, every populated block reachable, the container holding exactly rdm's mappings. */
#include "guest_util.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include <rdm/rdm.h>

/*
 * A defer region of NB 64 KiB blocks at IOVA 64 MiB (inside edu's 28-bit reach) on a fresh
 * type1v2 container, attached with RDM_ATTACH_QUIESCE_OK. Everything is populated (two mappings:
 * the defer policy halves the run), then single blocks and short runs inside both mappings are
 * discarded: they stay mapped (deferred). Checks:
 *  - before: the deferred bytes are the discarded ones, nothing was released, edu DMA both ways
 *    reaches a deferred block (it is still mapped), DMA_AVAIL = start - rdm's mappings;
 *  - the compaction succeeds and reports the re-cut;
 *  - after: nothing deferred; the released blocks are exactly the discarded ones; edu DMA both
 *    ways carries the right data at every populated block (start and end of each) and an edu
 *    write to every released block leaves memory untouched (the kernel logs the DMAR fault for
 *    the first); the container holds exactly rdm's mappings: DMA_AVAIL = start - mappings, the
 *    backend counts as many, a one-page MAP_DMA at the first and last page of each mapping fails
 *    with EEXIST, an UNMAP_DMA of each released block and of each gap between mappings unmaps
 *    0 bytes; after destroy the container holds nothing.
 */
#define IOVA0 (UINT64_C(64) << 20)
#define BS (UINT64_C(64) << 10)
#define NB 256u
#define XFER 1024u

static unsigned released[NB];

static void on_release(void *opaque, uint64_t off, uint64_t len)
{
	(void)opaque;
	for (uint64_t b = off / BS; b < (off + len) / BS; b++)
		released[b]++;
}

static const struct {
	unsigned first, n;
} discards[] = {
	{ 5, 1 }, { 6, 1 }, { 20, 4 }, { 64, 1 }, { 100, 1 }, { 127, 1 }, /* inside [0, 128) */
	{ 128, 1 }, { 200, 2 }, { 230, 3 }, { 254, 1 },                   /* inside [128, 256) */
};

static bool discarded(unsigned b)
{
	for (size_t i = 0; i < sizeof(discards) / sizeof(discards[0]); i++)
		if (b >= discards[i].first && b < discards[i].first + discards[i].n)
			return true;
	return false;
}

static bool dma_mapped(struct gu_edu *e, uint8_t *mem, uint64_t off, char *why, size_t whylen)
{
	bool ok = gu_edu_check_mapped(e, IOVA0 + off, mem + off, XFER, why, whylen);

	if (!ok) {
		/* Both of its DMAs may have faulted: tell the log budget. */
		gu_dmar_fault_pace(false);
		gu_dmar_fault_pace(false);
	}
	return ok;
}

int main(void)
{
	struct rdm_region_config rc = {
		.struct_size = sizeof(rc),
		.iova = IOVA0,
		.size = NB * BS,
		.block_size = BS,
		.release = on_release,
		.policy = RDM_POLICY_DEFER,
		/* Two large mappings with deferred blocks are compaction's subject
		 * here, not the budget's cuts (tests/iommu/test_budget.c). */
		.defer_budget = RDM_DEFER_BUDGET_NONE,
	};
	static struct rdm_mapping maps[NB];
	struct rdm_compact_result res;
	struct rdm_backend_stats bst;
	struct rdm_backend *b = NULL;
	struct rdm_worker *w = NULL;
	struct rdm_region *r = NULL;
	struct gu_vfio v;
	struct gu_edu e;
	uint64_t def_bytes = 0, want_def = 0, left = 0;
	unsigned bad, checked, nrel = 0;
	size_t nmaps = 0, ndef = 0;
	int64_t avail0;
	char why[200];
	uint8_t *mem;
	int err;

	gu_tap_init("vm_compact");
	if (!gu_tap_ok(gu_vfio_open(&v) == 0, "type1v2 container with the edu group"))
		return gu_tap_done();
	if (!gu_tap_ok(gu_edu_init(&e, &v) == 0, "edu's BAR0 and bus mastering")) {
		gu_vfio_close(&v);
		return gu_tap_done();
	}
	avail0 = gu_dma_avail(v.container);
	mem = gu_alloc_pages(NB * BS);
	if (!gu_tap_ok(mem != NULL && avail0 > 0 && IOVA0 + NB * BS <= e.iova_limit,
		       "host memory, DMA_AVAIL %" PRId64 ", the region inside edu's reach", avail0))
		goto out;
	rc.host_addr = mem;
	err = rdm_backend_vfio_type1_create(v.container, NULL, NULL, &b);
	if (!err)
		err = rdm_worker_create(NULL, &w);
	if (!err)
		err = rdm_worker_add_backend(w, b, 0);
	if (!err)
		err = rdm_region_create(&rc, &r);
	if (!err)
		err = rdm_worker_attach_flags(w, r, b, RDM_ATTACH_QUIESCE_OK);
	if (!err) /* two populates: two mappings */
		err = rdm_populate(r, 0, NB / 2 * BS);
	if (!err)
		err = rdm_populate(r, NB / 2 * BS, NB / 2 * BS);
	for (size_t i = 0; !err && i < sizeof(discards) / sizeof(discards[0]); i++) {
		err = rdm_discard(r, (uint64_t)discards[i].first * BS, (uint64_t)discards[i].n * BS);
		want_def += (uint64_t)discards[i].n * BS;
	}
	if (!err)
		err = rdm_region_get_deferred(r, NULL, 0, &ndef, &def_bytes);
	if (!err)
		err = rdm_region_get_mappings(r, b, maps, NB, &nmaps);
	if (!gu_tap_ok(err == 0, "defer region attached with RDM_ATTACH_QUIESCE_OK, populated, %zu pieces discarded (%s)",
		       sizeof(discards) / sizeof(discards[0]), err ? rdm_last_error() : "ok"))
		goto out;

	/* Before: deferred, nothing released, still reachable. */
	for (unsigned k = 0; k < NB; k++)
		nrel += released[k];
	gu_tap_ok(def_bytes == want_def && nrel == 0 && nmaps == 2,
		  "before: %" PRIu64 " bytes deferred (want %" PRIu64 "), %u blocks released, %zu mappings", def_bytes,
		  want_def, nrel, nmaps);
	gu_tap_ok(dma_mapped(&e, mem, 100 * BS + 512, why, sizeof(why)),
		  "before: edu DMA both ways reaches deferred block 100 (still mapped): %s", why);
	gu_tap_ok(gu_dma_avail(v.container) == avail0 - (int64_t)nmaps, "before: DMA_AVAIL = start - %zu mappings (%" PRId64
		  ")", nmaps, gu_dma_avail(v.container));

	/* Compact. */
	err = rdm_region_compact(r, &res);
	gu_tap_ok(err == 0 && res.mappings == 2 && res.released_bytes == want_def && res.unmap_calls == 2 &&
			  res.map_calls == res.new_mappings && res.remapped_bytes == NB * BS - want_def,
		  "compact: %s; %" PRIu64 " mappings re-cut into %" PRIu64 ", %" PRIu64 " MAP + %" PRIu64
		  " UNMAP calls, %" PRIu64 " bytes released, %" PRIu64 " remapped",
		  err ? rdm_last_error() : "ok", res.mappings, res.new_mappings, res.map_calls, res.unmap_calls,
		  res.released_bytes, res.remapped_bytes);
	err = rdm_region_get_deferred(r, NULL, 0, &ndef, &def_bytes);
	gu_tap_ok(err == 0 && ndef == 0 && def_bytes == 0, "after: nothing deferred (%zu ranges, %" PRIu64 " bytes)", ndef,
		  def_bytes);
	bad = 0;
	for (unsigned k = 0; k < NB; k++)
		bad += released[k] != (discarded(k) ? 1u : 0u);
	gu_tap_ok(bad == 0, "after: the released blocks are exactly the discarded ones, once each (%u differ)", bad);
	err = rdm_region_get_mappings(r, b, maps, NB, &nmaps);
	if (!gu_tap_ok(err == 0 && nmaps < NB, "after: rdm reports %zu mappings", nmaps))
		goto out;

	/* edu DMA at every populated block (start and end of each), and faults at released ones. */
	bad = 0;
	checked = 0;
	for (unsigned k = 0; k < NB; k++) {
		if (discarded(k))
			continue;
		for (int end = 0; end < 2; end++) {
			uint64_t off = (uint64_t)k * BS + (end ? BS - XFER : 0);

			checked++;
			if (!dma_mapped(&e, mem, off, why, sizeof(why)) && bad++ < 3)
				gu_tap_diag("populated block %u: %s", k, why);
		}
	}
	gu_tap_ok(bad == 0, "after: edu DMA both ways carries the right data at %u places (start and end of every populated "
		  "block): %u failed", checked, bad);
	bad = 0;
	checked = 0;
	for (unsigned k = 0; k < NB; k++) {
		bool fault = checked == 0;

		if (!discarded(k))
			continue;
		checked++;
		if (!gu_edu_check_unmapped(&e, IOVA0 + (uint64_t)k * BS + 256, mem + (uint64_t)k * BS + 256, XFER, fault,
					   3000, why, sizeof(why)) &&
		    bad++ < 3)
			gu_tap_diag("released block %u: %s", k, why);
	}
	gu_tap_ok(bad == 0, "after: an edu write to each of the %u released blocks leaves memory untouched (the first "
		  "logs a DMAR fault): %u failed", checked, bad);

	/* The container holds exactly rdm's mappings. */
	rdm_backend_get_stats(b, &bst);
	gu_tap_ok(gu_dma_avail(v.container) == avail0 - (int64_t)nmaps && bst.mappings == nmaps && bst.failed_calls == 0,
		  "after: DMA_AVAIL = start - %zu mappings (%" PRId64 "), the backend counts %" PRIu64 ", none rejected (%"
		  PRIu64 ")", nmaps, gu_dma_avail(v.container), bst.mappings, bst.failed_calls);
	bad = 0;
	for (size_t i = 0; i < nmaps; i++) {
		uint64_t pages[2] = { maps[i].iova, maps[i].iova + maps[i].length - 4096 };

		for (int j = 0; j < 2; j++) {
			err = gu_dma_map(v.container, pages[j], mem + (pages[j] - IOVA0), 4096);
			if (err == 0)
				gu_dma_unmap(v.container, pages[j], 4096, NULL);
			if (err != -EEXIST && bad++ < 3)
				gu_tap_diag("mapping %zu: a one-page MAP_DMA at 0x%" PRIx64 " gave %d, not EEXIST", i,
					    pages[j], err);
		}
	}
	gu_tap_ok(bad == 0, "after: a one-page MAP_DMA at the first and last page of each of the %zu mappings fails with "
		  "EEXIST", nmaps);
	bad = 0;
	for (size_t i = 0; i <= nmaps; i++) {
		uint64_t a = i ? maps[i - 1].iova + maps[i - 1].length : IOVA0;
		uint64_t z = i < nmaps ? maps[i].iova : IOVA0 + NB * BS;

		if (z > a && (gu_dma_unmap(v.container, a, z - a, &left) != 0 || left != 0) && bad++ < 3)
			gu_tap_diag("gap [0x%" PRIx64 ", 0x%" PRIx64 "): UNMAP_DMA unmapped %" PRIu64 " bytes", a, z, left);
	}
	gu_tap_ok(bad == 0, "after: an UNMAP_DMA of every gap between rdm's mappings (the released blocks) unmaps 0 bytes");

	err = rdm_region_destroy(r);
	r = NULL;
	left = UINT64_MAX;
	if (err == 0)
		err = gu_dma_unmap(v.container, 0, UINT64_C(1) << 39, &left);
	gu_tap_ok(err == 0 && left == 0,
		  "destroy, then an UNMAP_DMA of [0, 2^39) unmaps nothing: the container held nothing (%" PRIu64
		  " bytes)", left);
out:
	if (r)
		rdm_region_destroy(r);
	if (w)
		rdm_worker_destroy(w);
	if (b)
		rdm_backend_destroy(b);
	if (mem)
		munmap(mem, NB * BS);
	gu_edu_fini(&e);
	gu_vfio_close(&v);
	return gu_tap_done();
}
