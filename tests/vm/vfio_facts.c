/* tests/vm/vfio_facts.c - the VFIO type1v2 rules rdm relies on, checked with raw ioctls and edu DMA. */
#include "guest_util.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define KiB(x) ((uint64_t)(x) << 10)

static const char *errname(int err)
{
	switch (err) {
	case 0: return "OK";
	case -EEXIST: return "EEXIST";
	case -EINVAL: return "EINVAL";
	case -ENOSPC: return "ENOSPC";
	case -ENOENT: return "ENOENT";
	case -EFAULT: return "EFAULT";
	case -ENOMEM: return "ENOMEM";
	default: return strerror(-err);
	}
}

static double now_s(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/*
 * DESIGN.md's type1v2 table. Layout (IOVA base 1 MiB, KiB offsets):
 *   A [0,16)  B [16,32)  hole [32,48)  C [48,64)
 */
static void check_map_unmap_rules(int c, int64_t avail0)
{
	const uint64_t base = 0x100000;
	uint8_t *mem = gu_alloc_pages(KiB(64));
	uint64_t sz;
	int r;

	if (!gu_tap_ok(mem != NULL, "64 KiB of host memory for the rule checks"))
		return;

	r = gu_dma_map(c, base, mem, KiB(16));
	gu_tap_ok(r == 0, "map A [0,16K): %s", errname(r));
	gu_tap_ok(gu_dma_avail(c) == avail0 - 1, "DMA_AVAIL drops by one after a map (%" PRId64 ")",
		  gu_dma_avail(c));
	r = gu_dma_map(c, base + KiB(16), mem + KiB(16), KiB(16));
	gu_tap_ok(r == 0, "map B [16K,32K) adjacent to A (contiguous host memory): %s", errname(r));
	gu_tap_ok(gu_dma_avail(c) == avail0 - 2,
		  "adjacent mappings are not merged: DMA_AVAIL dropped by one more (%" PRId64 ")",
		  gu_dma_avail(c));
	r = gu_dma_map(c, base + KiB(48), mem + KiB(48), KiB(16));
	gu_tap_ok(r == 0, "map C [48K,64K) after a hole: %s", errname(r));
	gu_tap_ok(gu_dma_avail(c) == avail0 - 3, "DMA_AVAIL = start - 3 (%" PRId64 ")", gu_dma_avail(c));

	r = gu_dma_map(c, base + KiB(8), mem + KiB(8), KiB(16));
	gu_tap_ok(r == -EEXIST, "map [8K,24K) over A and B: EEXIST (got %s)", errname(r));
	r = gu_dma_map(c, base, mem, KiB(16));
	gu_tap_ok(r == -EEXIST, "map exactly A again: EEXIST (got %s)", errname(r));
	r = gu_dma_map(c, base + KiB(28), mem + KiB(28), KiB(8));
	gu_tap_ok(r == -EEXIST, "map [28K,36K), the end of B and the hole: EEXIST (got %s)",
		  errname(r));
	gu_tap_ok(gu_dma_avail(c) == avail0 - 3, "refused maps leave DMA_AVAIL alone (%" PRId64 ")",
		  gu_dma_avail(c));

	r = gu_dma_unmap(c, base, KiB(8), &sz);
	gu_tap_ok(r == -EINVAL && sz == KiB(8),
		  "unmap [0,8K), first half of A: EINVAL, size not written back (got %s, size %" PRIu64 ")",
		  errname(r), sz);
	r = gu_dma_unmap(c, base + KiB(4), KiB(8), &sz);
	gu_tap_ok(r == -EINVAL && sz == KiB(8),
		  "unmap [4K,12K), middle of A: EINVAL, size not written back (got %s, size %" PRIu64 ")",
		  errname(r), sz);
	r = gu_dma_unmap(c, base + KiB(32), KiB(24), &sz);
	gu_tap_ok(r == -EINVAL && sz == KiB(24),
		  "unmap [32K,56K), hole + first half of C: EINVAL (got %s, size %" PRIu64 ")", errname(r),
		  sz);
	r = gu_dma_unmap(c, base + KiB(24), KiB(24), &sz);
	gu_tap_ok(r == -EINVAL && sz == KiB(24),
		  "unmap [24K,48K), second half of B + hole: EINVAL (got %s, size %" PRIu64 ")", errname(r),
		  sz);
	r = gu_dma_unmap(c, base + KiB(8), KiB(48), &sz);
	gu_tap_ok(r == -EINVAL, "unmap [8K,56K), bisecting A and C around whole B: EINVAL (got %s)",
		  errname(r));
	gu_tap_ok(gu_dma_avail(c) == avail0 - 3, "refused unmaps unmapped nothing: DMA_AVAIL = start - 3 (%" PRId64 ")",
		  gu_dma_avail(c));

	r = gu_dma_unmap(c, base + KiB(32), KiB(16), &sz);
	gu_tap_ok(r == 0 && sz == 0, "unmap of the hole [32K,48K): OK, 0 bytes (got %s, %" PRIu64 ")",
		  errname(r), sz);
	r = gu_dma_unmap(c, 0x8000000, 0x100000, &sz);
	gu_tap_ok(r == 0 && sz == 0, "unmap of a never-mapped 1 MiB: OK, 0 bytes (got %s, %" PRIu64 ")",
		  errname(r), sz);

	r = gu_dma_unmap(c, base, KiB(64), &sz);
	gu_tap_ok(r == 0 && sz == KiB(48),
		  "one unmap [0,64K) over A, B, the hole and C: OK, 48 KiB unmapped (got %s, %" PRIu64 ")",
		  errname(r), sz);
	gu_tap_ok(gu_dma_avail(c) == avail0, "DMA_AVAIL back to its start (%" PRId64 ")", gu_dma_avail(c));
	r = gu_dma_map(c, base, mem, KiB(64));
	gu_tap_ok(r == 0 && gu_dma_avail(c) == avail0 - 1, "the whole range maps again as one mapping: %s",
		  errname(r));
	r = gu_dma_unmap(c, base, KiB(64), &sz);
	gu_tap_ok(r == 0 && sz == KiB(64), "and unmaps with one call: %s, %" PRIu64 " bytes", errname(r),
		  sz);
	munmap(mem, KiB(64));
}

/* Fill the container to the limit with 4 KiB mappings of one page; one more fails ENOSPC. */
static void check_limit(int c, int64_t avail0)
{
	const uint64_t base = 0x10000000; /* above edu's reach, below the MSI window */
	uint64_t max = gu_env_u64("vfio_facts_limit_max", 65535), n, sz;
	uint8_t *page = gu_alloc_pages(4096);
	double t0;
	int r = 0;

	if (avail0 <= 0 || (uint64_t)avail0 > max) {
		gu_tap_skip("set vfio_facts_limit_max", "fill the container to DMA_AVAIL = %" PRId64,
			    avail0);
		return;
	}
	if (!gu_tap_ok(page != NULL, "a page for the limit check"))
		return;
	t0 = now_s();
	for (n = 0; n < (uint64_t)avail0; n++) {
		r = gu_dma_map(c, base + n * 4096, page, 4096);
		if (r)
			break;
	}
	gu_tap_ok(n == (uint64_t)avail0, "%" PRIu64 " of %" PRId64 " single-page maps succeed (%s)", n,
		  avail0, errname(r));
	gu_tap_diag("%" PRIu64 " maps took %.2f s (%.1f us each, under emulation)", n, now_s() - t0,
		    n ? (now_s() - t0) * 1e6 / (double)n : 0.0);
	gu_tap_ok(gu_dma_avail(c) == 0, "DMA_AVAIL is 0 at the limit (%" PRId64 ")", gu_dma_avail(c));
	r = gu_dma_map(c, base + n * 4096, page, 4096);
	gu_tap_ok(r == -ENOSPC, "map number %" PRId64 " + 1 fails ENOSPC (got %s)", avail0, errname(r));
	t0 = now_s();
	r = gu_dma_unmap(c, base, (n + 1) * 4096, &sz);
	gu_tap_ok(r == 0 && sz == n * 4096,
		  "one unmap removes all %" PRIu64 " mappings (got %s, %" PRIu64 " bytes, %.2f s)", n,
		  errname(r), sz, now_s() - t0);
	gu_tap_ok(gu_dma_avail(c) == avail0, "DMA_AVAIL back to %" PRId64 " (%" PRId64 ")", avail0,
		  gu_dma_avail(c));
	munmap(page, 4096);
}

/* edu DMA through the container: both directions into a mapped IOVA, then nothing (and a DMAR
 * fault) once it is unmapped. */
static void check_edu(struct gu_vfio *v)
{
	const uint64_t iova = 0x1000000; /* 16 MiB: below edu's 28-bit reach */
	struct gu_edu e;
	uint8_t *mem;
	char why[160];
	uint64_t sz;
	int r, kmsg;

	r = gu_edu_init(&e, v);
	if (!gu_tap_ok(r == 0, "edu: BAR0 mmapped, identity checked, bus mastering on (%s)",
		       errname(r)))
		return;
	mem = gu_alloc_pages(KiB(8));
	if (!gu_tap_ok(mem != NULL, "8 KiB of host memory for edu"))
		goto out;
	r = gu_dma_map(v->container, iova, mem, KiB(8));
	if (!gu_tap_ok(r == 0, "map 8 KiB at IOVA 0x%" PRIx64 ": %s", iova, errname(r)))
		goto out;

	gu_pattern_fill(mem, 4096, 1);
	r = gu_edu_dma_from_ram(&e, iova, 0, 2048);
	gu_tap_ok(r == 0, "edu DMA RAM->device, 2048 bytes from IOVA 0x%" PRIx64 ": %s", iova,
		  errname(r));
	gu_pattern_fill(mem + 4096, 4096, 2);
	r = gu_edu_dma_to_ram(&e, 0, iova + 4096, 2048);
	gu_tap_ok(r == 0 && gu_pattern_check(mem + 4096, 2048, 1) < 0,
		  "edu DMA device->RAM brings the same 2048 bytes back at IOVA + 4096");
	{
		uint8_t expect[4096];

		gu_pattern_fill(expect, 4096, 2);
		gu_tap_ok(memcmp(mem + 4096 + 2048, expect + 2048, 2048) == 0,
			  "bytes past the transfer's count are untouched");
	}
	/* A transfer that crosses a page boundary inside the mapping. */
	gu_pattern_fill(mem, KiB(8), 3);
	r = gu_edu_dma_from_ram(&e, iova + 3000, 100, 3000);
	gu_pattern_fill(mem, KiB(8), 4);
	if (!r)
		r = gu_edu_dma_to_ram(&e, 100, iova + 2000, 3000);
	{
		uint8_t expect[KiB(8)];

		gu_pattern_fill(expect, KiB(8), 3);
		gu_tap_ok(r == 0 && memcmp(mem + 2000, expect + 3000, 3000) == 0,
			  "3000-byte transfers across the page boundary, both directions, data right");
	}
	gu_tap_ok(gu_edu_check_mapped(&e, iova + 100, mem + 100, 3900, why, sizeof(why)),
		  "gu_edu_check_mapped on the mapped range: %s", why);

	r = gu_dma_unmap(v->container, iova, KiB(8), &sz);
	gu_tap_ok(r == 0 && sz == KiB(8), "unmap the 8 KiB: %s", errname(r));

	/* edu's buffer still holds pattern 4's bytes at offset 100..3100; RAM gets pattern 5. */
	gu_pattern_fill(mem, KiB(8), 5);
	kmsg = gu_kmsg_mark();
	gu_dmar_fault_pace(true);
	r = gu_edu_dma_to_ram(&e, 100, iova, 2048);
	gu_tap_ok(r == 0 && gu_pattern_check(mem, KiB(8), 5) < 0,
		  "after unmap, edu DMA device->RAM leaves memory untouched");
	gu_tap_ok(kmsg >= 0 && gu_dmar_fault_seen(kmsg, iova, true, 3000),
		  "the guest kernel logs a DMAR write fault at 0x%" PRIx64, iova);
	if (kmsg >= 0)
		close(kmsg);
	kmsg = gu_kmsg_mark();
	gu_dmar_fault_pace(true);
	r = gu_edu_dma_from_ram(&e, iova + 4096, 0, 2048);
	gu_tap_ok(r == 0 && kmsg >= 0 && gu_dmar_fault_seen(kmsg, iova + 4096, false, 3000),
		  "after unmap, edu DMA RAM->device logs a DMAR read fault at 0x%" PRIx64, iova + 4096);
	if (kmsg >= 0)
		close(kmsg);
	gu_tap_ok(gu_edu_check_unmapped(&e, iova + 4096, mem + 4096, 2000, true, 3000, why, sizeof(why)),
		  "gu_edu_check_unmapped on the unmapped range: %s", why);
out:
	if (mem)
		munmap(mem, KiB(8));
	gu_edu_fini(&e);
}

int main(void)
{
	uint64_t limit = gu_env_u64("dma_entry_limit", 65535);
	struct gu_vfio v;
	int64_t avail0;
	int r;

	gu_tap_init("vfio_facts");
	r = gu_vfio_open(&v);
	if (!gu_tap_ok(r == 0, "group %s opens in a type1v2 container, device fd for %s: %s",
		       getenv("RDM_VM_GROUP") ? getenv("RDM_VM_GROUP") : "?", v.bdf, errname(r)))
		return gu_tap_done();
	avail0 = gu_dma_avail(v.container);
	gu_tap_ok(avail0 >= 0 && (uint64_t)avail0 == limit,
		  "DMA_AVAIL from VFIO_IOMMU_GET_INFO's capability chain = dma_entry_limit %" PRIu64
		  " (got %" PRId64 ")",
		  limit, avail0);
	if (avail0 < 0)
		return gu_tap_done();

	check_map_unmap_rules(v.container, avail0);
	check_limit(v.container, avail0);
	check_edu(&v);

	gu_vfio_close(&v);
	r = gu_vfio_open(&v);
	gu_tap_ok(r == 0 && gu_dma_avail(v.container) == avail0,
		  "closed and reopened: a fresh container, DMA_AVAIL = %" PRId64, avail0);
	gu_vfio_close(&v);
	return gu_tap_done();
}
