/* tests/vm/vm_limit.c - rdm under vfio_iommu_type1's dma_entry_limit: reads it, stays within it, refuses with -ENOSPC, leaves nothing half-mapped. */
#include "guest_util.h"
#include "ioctl_record.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include <rdm/rdm.h>

/* Boot with dma_entry_limit=N (small, e.g. 64). Block policy, 64 KiB blocks, 2N blocks. */
#define IOVA0 (UINT64_C(4) << 30)
#define BS (UINT64_C(64) << 10)

int main(void)
{
	uint64_t limit = gu_env_u64("RDM_VM_LIMIT", 0);
	struct ir_recorder rec = { 0 };
	struct gu_vfio v;
	struct rdm_backend *b = NULL;
	struct rdm_worker *w = NULL;
	struct rdm_region *r = NULL;
	struct rdm_worker_stats ws;
	struct rdm_backend_stats bs;
	int64_t avail0;
	uint64_t nb, ok = 0, peak_seen = 0;
	void *mem;
	int err;

	gu_tap_init("vm_limit");
	if (!gu_tap_ok(limit > 0 && limit <= 4096, "a small dma_entry_limit on the kernel command line (%" PRIu64 ")",
		       limit))
		return gu_tap_done();
	if (!gu_tap_ok(gu_vfio_open(&v) == 0, "type1v2 container with the edu group"))
		return gu_tap_done();
	avail0 = gu_dma_avail(v.container);
	gu_tap_ok(avail0 == (int64_t)limit, "DMA_AVAIL of the fresh container = the limit (%" PRId64 ")", avail0);
	nb = 2 * limit;
	mem = mmap(NULL, nb * BS, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (!gu_tap_ok(mem != MAP_FAILED, "host memory"))
		return gu_tap_done();

	struct rdm_region_config rc = {
		.struct_size = sizeof(rc),
		.flags = RDM_REGION_STRICT,
		.iova = IOVA0,
		.size = nb * BS,
		.block_size = BS,
		.host_addr = mem,
		.policy = RDM_POLICY_BLOCK,
	};
	err = rdm_backend_vfio_type1_create(v.container, ir_ioctl, &rec, &b);
	if (!err)
		err = rdm_worker_create(NULL, &w);
	if (!err)
		err = rdm_worker_add_backend(w, b, 0); /* budget: what DMA_AVAIL says */
	if (!err)
		err = rdm_region_create(&rc, &r);
	if (!err)
		err = rdm_worker_attach(w, r, b);
	if (!gu_tap_ok(err == 0, "block-policy region of %" PRIu64 " blocks on the container, budget from DMA_AVAIL (%s)",
		       nb, err ? rdm_last_error() : "ok"))
		goto out;

	/* One block per populate, every other block (no two mappings could ever merge): the first
	 * `limit` succeed, each one mapping; the next is refused. */
	for (uint64_t i = 0; i < limit; i++) {
		err = rdm_populate(r, 2 * i * BS, BS);
		if (err)
			break;
		ok++;
		int64_t a = gu_dma_avail(v.container);
		if (a != avail0 - (int64_t)ok)
			break;
		peak_seen = ok;
	}
	gu_tap_ok(ok == limit && peak_seen == limit,
		  "%" PRIu64 " single-block populates succeed, DMA_AVAIL dropping by one each (%" PRIu64 " ok, %" PRId64
		  " left)", limit, ok, gu_dma_avail(v.container));
	err = rdm_populate(r, BS, BS);
	gu_tap_ok(err == -ENOSPC, "one more populate is refused: ENOSPC (got %d)", err);
	char num[32];

	snprintf(num, sizeof(num), "%" PRIu64, limit);
	gu_tap_ok(strstr(rdm_last_error(), "limit") && strstr(rdm_last_error(), num),
		  "the message names the limit and its value: \"%s\"", rdm_last_error());
	gu_tap_ok(rdm_is_discarded(r, BS, BS) && gu_dma_avail(v.container) == 0,
		  "the refused block stays discarded; DMA_AVAIL still 0 (%" PRId64 ")", gu_dma_avail(v.container));

	/* Room for 4 mappings: a populate of 8 blocks needs 8 (one per block) and must fail whole. */
	err = 0;
	for (uint64_t i = 0; i < 4; i++)
		err |= rdm_discard(r, 2 * i * BS, BS);
	gu_tap_ok(err == 0 && gu_dma_avail(v.container) == 4, "4 blocks discarded: DMA_AVAIL 4 (%" PRId64 ")",
		  gu_dma_avail(v.container));
	err = rdm_populate(r, 0, 8 * BS);
	gu_tap_ok(err == -ENOSPC, "a populate of 8 blocks with room for 4 mappings: ENOSPC (got %d: %s)", err,
		  rdm_last_error());
	gu_tap_ok(rdm_is_discarded(r, 0, 8 * BS) && gu_dma_avail(v.container) == 4,
		  "nothing of it is mapped or visible: all 8 blocks discarded, DMA_AVAIL still 4 (%" PRId64 ")",
		  gu_dma_avail(v.container));
	err = rdm_populate(r, 0, 4 * BS);
	gu_tap_ok(err == 0 && gu_dma_avail(v.container) == 0, "a populate of 4 blocks fits exactly: %d, DMA_AVAIL 0 (%"
		  PRId64 ")", err, gu_dma_avail(v.container));

	rdm_backend_get_stats(b, &bs);
	rdm_worker_get_stats(w, &ws);
	gu_tap_ok(bs.peak_mappings == limit && bs.failed_calls == 0,
		  "rdm never went past the limit: peak %" PRIu64 " mappings, no call rejected (%" PRIu64 ")",
		  bs.peak_mappings, bs.failed_calls);
	gu_tap_ok(ws.enospc == 2, "the worker counted 2 populates refused for the limit (%" PRIu64 ")", ws.enospc);
	err = rdm_discard_all(r);
	gu_tap_ok(err == 0 && gu_dma_avail(v.container) == avail0, "discard_all: DMA_AVAIL back at %" PRId64 " (%" PRId64
		  ")", avail0, gu_dma_avail(v.container));
out:
	if (r)
		rdm_region_destroy(r);
	if (w)
		rdm_worker_destroy(w);
	rdm_backend_destroy(b);
	if (rec.n)
		ir_validate_fake(&rec, limit, "limit");
	ir_free(&rec);
	munmap(mem, nb * BS);
	gu_vfio_close(&v);
	return gu_tap_done();
}
