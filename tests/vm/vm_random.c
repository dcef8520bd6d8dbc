/* tests/vm/vm_random.c - randomized changes through every policy on the real type1 container: no call the kernel rejects, and the fake kernel answers every recorded call as the kernel did. */
#include "guest_util.h"
#include "ioctl_record.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include <rdm/rdm.h>

/*
 * Each run: a region (strict or lenient) of NB 64 KiB blocks on a fresh worker and vfio-type1
 * backend; OPS bursts of 1..8 random populates and discards (and now and then a discard_all)
 * submitted asynchronously in one call, so the worker batches, supersedes and merges; after each
 * burst every result must be what a sequential oracle (a bitmap) predicts, no call may have been
 * rejected (backend stats), DMA_AVAIL must equal its start minus rdm's mappings, and the state
 * must match the oracle. Every ioctl goes through a recorder; at the end the whole sequence,
 * with a few calls rejected on purpose, is replayed against tests/iommu's fake kernel.
 *
 * Environment: RDM_VM_SEED (first seed, default 1), RDM_VM_SEEDS (default 4), RDM_VM_OPS
 * (bursts per run, default 150).
 */
#define IOVA0 (UINT64_C(4) << 30)
#define RAW_IOVA (UINT64_C(2) << 30)
#define BS (UINT64_C(64) << 10)
#define NB 256u
#define BURST 8u

static uint64_t rnd(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static const char *errname(int e)
{
	switch (e) {
	case 0: return "OK";
	case -EINVAL: return "EINVAL";
	case -EEXIST: return "EEXIST";
	case -ENOENT: return "ENOENT";
	case -ENOSPC: return "ENOSPC";
	default: return strerror(-e);
	}
}

/* Calls the kernel must reject, issued through the backend so they are recorded too. */
static void rejected_on_purpose(struct gu_vfio *v, struct ir_recorder *rec, void *mem)
{
	struct rdm_backend *b;
	struct rdm_backend_stats st;
	uint64_t va = (uint64_t)(uintptr_t)mem, n = 0;
	int r;

	if (!gu_tap_ok(rdm_backend_vfio_type1_create(v->container, ir_ioctl, rec, &b) == 0, "raw: backend"))
		return;
	r = rdm_backend_map(b, RAW_IOVA, 4 * BS, va);
	gu_tap_ok(r == 0, "raw: map [0,256K): %s", errname(r));
	r = rdm_backend_map(b, RAW_IOVA + 2 * BS, 4 * BS, va + 2 * BS);
	gu_tap_ok(r == -EEXIST, "raw: overlapping map [128K,384K): EEXIST (got %s)", errname(r));
	r = rdm_backend_unmap(b, RAW_IOVA, 2 * BS, &n);
	gu_tap_ok(r == -EINVAL, "raw: bisecting unmap [0,128K): EINVAL (got %s)", errname(r));
	r = rdm_backend_unmap(b, RAW_IOVA + BS, 2 * BS, &n);
	gu_tap_ok(r == -EINVAL, "raw: unmap of the middle [64K,192K): EINVAL (got %s)", errname(r));
	r = rdm_backend_unmap(b, RAW_IOVA + 8 * BS, 4 * BS, &n);
	gu_tap_ok(r == 0 && n == 0, "raw: unmap of an empty range: OK, 0 bytes (got %s, %" PRIu64 ")", errname(r), n);
	r = rdm_backend_map(b, RAW_IOVA + 4 * BS, 4 * BS, va + 4 * BS);
	gu_tap_ok(r == 0, "raw: adjacent map [256K,512K): %s", errname(r));
	r = rdm_backend_unmap(b, RAW_IOVA, 16 * BS, &n);
	gu_tap_ok(r == 0 && n == 8 * BS, "raw: one unmap over both mappings and a hole: OK, 512 KiB (got %s, %" PRIu64 ")",
		  errname(r), n);
	rdm_backend_get_stats(b, &st);
	gu_tap_ok(st.failed_calls == 3 && st.mappings == 0, "raw: the backend counts the 3 rejected calls (%" PRIu64 ")",
		  st.failed_calls);
	rdm_backend_destroy(b);
}

struct tk {
	uint64_t ticket;
	int expect;
};

/* One run; returns the number of mismatches (0 = all as predicted). */
static unsigned run(struct gu_vfio *v, struct ir_recorder *rec, void *mem, uint32_t policy, const char *pol,
		    bool strict, uint64_t seed, unsigned ops, int64_t avail0)
{
	struct rdm_region_config rc = {
		.struct_size = sizeof(rc),
		.flags = (strict ? RDM_REGION_STRICT : 0) | (policy == RDM_POLICY_COALESCE ? RDM_REGION_ALLOW_WINDOWS : 0),
		.iova = IOVA0,
		.size = NB * BS,
		.block_size = BS,
		.host_addr = mem,
		.policy = policy,
	};
	struct rdm_worker *w = NULL;
	struct rdm_region *r = NULL;
	struct rdm_backend *b = NULL;
	struct rdm_producer *p = NULL;
	unsigned char st[NB];
	uint64_t s = seed * 0x9e3779b97f4a7c15ull + policy * 7919 + strict, changes = 0, avail_bad = 0;
	uint64_t maps0 = rec->maps, unmaps0 = rec->unmaps, failed0 = rec->failed, left = 0;
	unsigned bad = 0, refused = 0;
	struct rdm_backend_stats bs;
	bool ran = false;
	int err;

	memset(st, 0, sizeof(st));
	err = rdm_backend_vfio_type1_create(v->container, ir_ioctl, rec, &b);
	if (!err)
		err = rdm_worker_create(NULL, &w);
	if (!err)
		err = rdm_worker_add_backend(w, b, 0);
	if (!err)
		err = rdm_region_create(&rc, &r);
	if (!err)
		err = rdm_worker_attach(w, r, b);
	if (!err)
		err = rdm_producer_create(&p);
	if (err) {
		gu_tap_diag("%s seed %" PRIu64 ": setup: %s: %s", pol, seed, errname(err), rdm_last_error());
		bad++;
		goto out;
	}
	for (unsigned op = 0; op < ops && !bad; op++) {
		struct rdm_change ch[BURST];
		struct tk tk[BURST];
		uint64_t tickets[BURST];
		unsigned n = 1 + (unsigned)(rnd(&s) % BURST);

		for (unsigned i = 0; i < n; i++) {
			uint64_t x = rnd(&s);
			unsigned b0 = (unsigned)(x % NB), len = 1 + (unsigned)((x >> 16) % 32), kind = (unsigned)((x >> 32) % 100);
			bool all_pop = true, all_dis = true;

			if (b0 + len > NB)
				len = NB - b0;
			/* Half of the time a range the strict rule allows: the run of b0's state. */
			if ((x >> 40) & 1) {
				unsigned e = b0;

				while (e < NB && e - b0 < len && st[e] == st[b0])
					e++;
				len = e - b0;
				kind = st[b0] ? 60 : 10;
			}
			for (unsigned k = b0; k < b0 + len; k++) {
				all_pop = all_pop && st[k];
				all_dis = all_dis && !st[k];
			}
			memset(&ch[i], 0, sizeof(ch[i]));
			ch[i].region = r;
			ch[i].offset = (uint64_t)b0 * BS;
			ch[i].length = (uint64_t)len * BS;
			if (kind < 48) {
				ch[i].kind = RDM_CHANGE_POPULATE;
				tk[i].expect = strict && !all_dis ? -EEXIST : 0;
				if (!tk[i].expect)
					memset(st + b0, 1, len);
			} else if (kind < 97) {
				ch[i].kind = RDM_CHANGE_DISCARD;
				tk[i].expect = strict && !all_pop ? -ENOENT : 0;
				if (!tk[i].expect)
					memset(st + b0, 0, len);
			} else {
				ch[i].kind = RDM_CHANGE_DISCARD_ALL;
				ch[i].offset = 0;
				ch[i].length = 0;
				tk[i].expect = 0;
				memset(st, 0, sizeof(st));
			}
		}
		while ((err = rdm_producer_submit(p, ch, n, tickets)) == -EAGAIN)
			;
		if (err) {
			gu_tap_diag("%s seed %" PRIu64 ": submit: %s: %s", pol, seed, errname(err), rdm_last_error());
			bad++;
			break;
		}
		for (unsigned i = 0; i < n; i++) {
			int res = 1;

			rdm_producer_wait(p, tickets[i], &res);
			changes++;
			refused += res != 0;
			if (res != tk[i].expect && bad++ < 5)
				gu_tap_diag("%s %s seed %" PRIu64 " burst %u change %u (kind %u [%" PRIu64 ", +%" PRIu64
					    ")): got %s, predicted %s (%s)", pol, strict ? "strict" : "lenient", seed, op, i,
					    ch[i].kind, ch[i].offset / BS, ch[i].length / BS, errname(res),
					    errname(tk[i].expect), rdm_last_error());
		}
		rdm_backend_get_stats(b, &bs);
		if (bs.failed_calls && bad++ < 5)
			gu_tap_diag("%s seed %" PRIu64 " burst %u: the kernel rejected %" PRIu64 " calls", pol, seed, op,
				    bs.failed_calls);
		if (gu_dma_avail(v->container) != avail0 - (int64_t)bs.mappings)
			avail_bad++;
		for (unsigned k = 0; k < NB; k++)
			if ((bool)st[k] != rdm_is_populated(r, (uint64_t)k * BS, BS) && bad++ < 5)
				gu_tap_diag("%s seed %" PRIu64 " burst %u: block %u state differs from the oracle", pol, seed,
					    op, k);
	}
	err = rdm_discard_all(r);
	rdm_backend_get_stats(b, &bs);
	gu_tap_ok(bad == 0 && bs.failed_calls == 0 && avail_bad == 0,
		  "%s %s seed %" PRIu64 ": %" PRIu64 " changes (%u refused as predicted), %" PRIu64 " maps + %" PRIu64
		  " unmaps, none rejected by the kernel (%" PRIu64 "), DMA_AVAIL = start - mappings after every burst (%"
		  PRIu64 " off)",
		  pol, strict ? "strict" : "lenient", seed, changes, refused, bs.map_calls, bs.unmap_calls, bs.failed_calls,
		  avail_bad);
	gu_tap_ok(err == 0 && gu_dma_avail(v->container) == avail0, "%s %s seed %" PRIu64
		  ": discard_all brings DMA_AVAIL back to %" PRId64 " (%" PRId64 ")", pol, strict ? "strict" : "lenient",
		  seed, avail0, gu_dma_avail(v->container));
	ran = true;
out:
	if (p)
		rdm_producer_destroy(p);
	if (r)
		rdm_region_destroy(r);
	if (w)
		rdm_worker_destroy(w);
	if (ran) {
		/* The ioctls the kernel saw are the calls the backend counts, and destroy left nothing
		 * mapped (this UNMAP_DMA, outside the backend, would unmap what leaked). */
		rdm_backend_get_stats(b, &bs);
		gu_tap_ok(bs.map_calls == rec->maps - maps0 && bs.unmap_calls == rec->unmaps - unmaps0 &&
			  bs.failed_calls == rec->failed - failed0,
			  "%s %s seed %" PRIu64 ": the kernel saw the backend's calls: %" PRIu64 " MAP_DMA + %" PRIu64
			  " UNMAP_DMA ioctls, %" PRIu64 " rejected (the backend counts %" PRIu64 " + %" PRIu64 ", %" PRIu64
			  " failed)", pol, strict ? "strict" : "lenient", seed, rec->maps - maps0, rec->unmaps - unmaps0,
			  rec->failed - failed0, bs.map_calls, bs.unmap_calls, bs.failed_calls);
		err = gu_dma_unmap(v->container, 0, UINT64_C(1) << 39, &left);
		gu_tap_ok(err == 0 && left == 0, "%s %s seed %" PRIu64 ": after destroy the container holds nothing "
			  "(an UNMAP_DMA of [0, 2^39) unmaps %" PRIu64 " bytes: %s)", pol, strict ? "strict" : "lenient",
			  seed, left, errname(err));
	}
	rdm_backend_destroy(b);
	madvise(mem, NB * BS, MADV_DONTNEED);
	return bad + avail_bad;
}

int main(void)
{
	static const struct { uint32_t policy; const char *name; } pols[] = {
		{ RDM_POLICY_BLOCK, "block" },
		{ RDM_POLICY_COALESCE, "coalesce" },
		{ RDM_POLICY_DEFER, "defer" },
	};
	uint64_t seed0 = gu_env_u64("RDM_VM_SEED", 1), seeds = gu_env_u64("RDM_VM_SEEDS", 4);
	unsigned ops = (unsigned)gu_env_u64("RDM_VM_OPS", 150);
	struct ir_recorder rec = { 0 };
	struct gu_vfio v;
	int64_t avail0;
	void *mem;

	gu_tap_init("vm_random");
	gu_tap_diag("seeds %" PRIu64 "..%" PRIu64 ", %u bursts per run (RDM_VM_SEED, RDM_VM_SEEDS, RDM_VM_OPS)", seed0,
		    seed0 + seeds - 1, ops);
	if (!gu_tap_ok(gu_vfio_open(&v) == 0, "type1v2 container with the edu group"))
		return gu_tap_done();
	avail0 = gu_dma_avail(v.container);
	mem = mmap(NULL, NB * BS, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (!gu_tap_ok(mem != MAP_FAILED, "host memory"))
		return gu_tap_done();
	rejected_on_purpose(&v, &rec, mem);
	for (uint64_t sd = seed0; sd < seed0 + seeds; sd++)
		for (size_t k = 0; k < sizeof(pols) / sizeof(pols[0]); k++)
			run(&v, &rec, mem, pols[k].policy, pols[k].name, (sd & 1) != 0, sd, ops, avail0);
	gu_tap_ok(rec.failed == 3, "of %" PRIu64 " maps and %" PRIu64 " unmaps, the kernel rejected only the 3 issued on purpose (%" PRIu64 ")",
		  rec.maps, rec.unmaps, rec.failed);
	ir_validate_fake(&rec, (uint64_t)avail0, "random");
	ir_free(&rec);
	munmap(mem, NB * BS);
	gu_vfio_close(&v);
	return gu_tap_done();
}
