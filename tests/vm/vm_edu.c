/* tests/vm/vm_edu.c - I1/I2 with a device: edu DMA into rdm's regions on the real type1 container, under every map policy. */
#include "guest_util.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include <rdm/rdm.h>

/*
 * The region lies below edu's 28-bit DMA mask and away from guest_util's scratch page:
 * IOVA 64 MiB, 128 blocks of 64 KiB (the shipped traces' 2 MiB blocks scaled by 32).
 *
 * Per policy the same sequence of changes runs, and after each one every block it touched is
 * checked with the device: a populated block must carry DMA both ways (I1); a discarded block
 * that rdm released (the region's release callback said so, and the callback freed the memory
 * with MADV_DONTNEED as a VMM would) must be unreachable - a device write leaves memory untouched
 * and the kernel logs a DMAR fault (I2, the log checked on a few: its rate limit); a discarded
 * block that rdm has not released (defer only) must still be reachable, because its mapping is
 * still in use and its memory was never freed.
 */
#define IOVA0 (UINT64_C(64) << 20)
#define BS (UINT64_C(64) << 10)
#define NB 128u
#define LEN 4095u

static unsigned char released[NB]; /* written on the worker thread before the change completes */
static uint8_t *host;
static unsigned faults_logged_wanted;

/* The release callback (worker thread). The synchronous change that caused it returns after it,
 * through the worker's completion, which orders these writes before the main thread's reads. */
static void on_release(void *opaque, uint64_t off, uint64_t len)
{
	(void)opaque;
	for (uint64_t b = off / BS; b < (off + len) / BS; b++)
		released[b] = 1;
	madvise(host + off, len, MADV_DONTNEED);
}

struct ctx {
	const char *pol;
	uint32_t policy;
	struct gu_edu *e;
	int container;
	struct rdm_region *r;
	struct rdm_backend *b;
	bool want_fault; /* the next unreachable check also waits for the kernel's DMAR fault */
};

/* I1 at block blk (the transfer starts `at` bytes into it, may run into the next block). */
static void check_reachable(struct ctx *c, unsigned blk, uint32_t at, const char *what)
{
	char why[200];
	uint64_t off = (uint64_t)blk * BS + at;
	bool ok = gu_edu_check_mapped(c->e, IOVA0 + off, host + off, LEN, why, sizeof(why));

	gu_tap_ok(ok, "%s: %s: edu DMA both ways at block %u+0x%x carries the right data (%s)", c->pol, what, blk, at,
		  why);
}

static void check_unreachable(struct ctx *c, unsigned blk, const char *what)
{
	char why[200];
	uint64_t off = (uint64_t)blk * BS + 512;
	bool fault = c->want_fault;
	bool ok = gu_edu_check_unmapped(c->e, IOVA0 + off, host + off, LEN, fault, 3000, why, sizeof(why));

	c->want_fault = false;
	if (fault)
		faults_logged_wanted++;
	gu_tap_ok(ok, "%s: %s: edu write to released block %u leaves memory untouched%s (%s)", c->pol, what, blk,
		  fault ? " and the kernel logs a DMAR fault" : "", why);
}

/* After a discard of [b0, b1): each block either released (then unreachable) or, under defer
 * only, not yet released (then still reachable). Checks at most `sample` blocks each way. */
static void check_discarded(struct ctx *c, unsigned b0, unsigned b1, const char *what)
{
	unsigned nrel = 0, nkept = 0, rel_checked = 0, kept_checked = 0;

	for (unsigned b = b0; b < b1; b++)
		released[b] ? nrel++ : nkept++;
	if (c->policy != RDM_POLICY_DEFER)
		gu_tap_ok(nkept == 0, "%s: %s: the completed discard released all its %u blocks (%u released)", c->pol,
			  what, b1 - b0, nrel);
	else
		gu_tap_diag("%s: %s: %u of %u blocks released, %u deferred", c->pol, what, nrel, b1 - b0, nkept);
	/* First and last block of each kind. */
	for (unsigned b = b0; b < b1; b++) {
		bool edge = b == b0 || b + 1 == b1 || (b > b0 && released[b] != released[b - 1]) ||
			    (b + 1 < b1 && released[b] != released[b + 1]);

		if (!edge)
			continue;
		if (released[b] && rel_checked < 2) {
			rel_checked++;
			check_unreachable(c, b, what);
		} else if (!released[b] && kept_checked < 2) {
			kept_checked++;
			check_reachable(c, b, 256, "discarded but deferred (not released), its mapping still in use");
		}
	}
}

static void check_avail(struct ctx *c, int64_t avail0, const char *what)
{
	struct rdm_backend_stats st;
	int64_t a = gu_dma_avail(c->container);

	rdm_backend_get_stats(c->b, &st);
	gu_tap_ok(a == avail0 - (int64_t)st.mappings, "%s: %s: DMA_AVAIL %" PRId64 " = start %" PRId64
		  " - rdm's %" PRIu64 " mappings", c->pol, what, a, avail0, st.mappings);
}

static void run_policy(struct gu_vfio *v, struct gu_edu *e, uint32_t policy, const char *pol)
{
	struct rdm_region_config rc = {
		.struct_size = sizeof(rc),
		.flags = RDM_REGION_STRICT | (policy == RDM_POLICY_COALESCE ? RDM_REGION_ALLOW_WINDOWS : 0),
		.iova = IOVA0,
		.size = NB * BS,
		.block_size = BS,
		.host_addr = host,
		.release = on_release,
		.policy = policy,
	};
	struct ctx c = { .pol = pol, .policy = policy, .e = e, .container = v->container, .want_fault = true };
	struct rdm_worker *w = NULL;
	struct rdm_backend_stats st0, st1;
	int64_t avail0 = gu_dma_avail(v->container);
	int err;

	memset(released, 0, sizeof(released));
	err = rdm_backend_vfio_type1_create(v->container, NULL, NULL, &c.b);
	if (!gu_tap_ok(err == 0, "%s: vfio-type1 backend (%s)", pol, err ? rdm_last_error() : "ok"))
		return;
	err = rdm_worker_create(NULL, &w);
	if (!err)
		err = rdm_worker_add_backend(w, c.b, 0);
	if (!err)
		err = rdm_region_create(&rc, &c.r);
	if (!err)
		err = rdm_worker_attach(w, c.r, c.b);
	if (!gu_tap_ok(err == 0, "%s: region at IOVA 0x%" PRIx64 " (%u x 64 KiB) on a worker and the container (%s)",
		       pol, (uint64_t)IOVA0, NB, err ? rdm_last_error() : "ok"))
		goto out;

	/* Populate 32 blocks; I1 at the first, across an inner boundary, at the last byte. */
	err = rdm_populate(c.r, 0, 32 * BS);
	gu_tap_ok(err == 0, "%s: populate blocks [0,32): %d", pol, err);
	check_reachable(&c, 0, 0, "after populate [0,32)");
	check_reachable(&c, 15, (uint32_t)(BS - 2048), "after populate [0,32)");
	check_reachable(&c, 31, (uint32_t)(BS - LEN), "after populate [0,32)");
	check_avail(&c, avail0, "after populate [0,32)");

	/* The top 4 blocks: block and coalesce release them now (coalesce remaps [0,28));
	 * defer keeps them mapped inside a mapping still in use. */
	err = rdm_discard(c.r, 28 * BS, 4 * BS);
	gu_tap_ok(err == 0, "%s: discard [28,32): %d", pol, err);
	check_discarded(&c, 28, 32, "discard [28,32)");
	check_reachable(&c, 27, (uint32_t)(BS - LEN), "the populated neighbour of discard [28,32)");

	/* The rest of the upper half: under defer its mapping empties and everything goes. */
	err = rdm_discard(c.r, 16 * BS, 12 * BS);
	gu_tap_ok(err == 0, "%s: discard [16,28): %d", pol, err);
	check_discarded(&c, 16, 32, "discard [16,28) after [28,32)");
	check_reachable(&c, 15, 0, "populated block 15 after discard [16,28)");
	check_avail(&c, avail0, "after discard [16,32)");

	/* One block inside a populated run. */
	err = rdm_discard(c.r, 1 * BS, BS);
	gu_tap_ok(err == 0, "%s: discard [1,2): %d", pol, err);
	check_discarded(&c, 1, 2, "discard [1,2) inside populated [0,16)");
	check_reachable(&c, 0, 0, "populated block 0 beside discarded block 1");
	check_reachable(&c, 2, 0, "populated block 2 beside discarded block 1");

	/* Populate it again: a released block is mapped anew (fresh memory, the DMA sees it); a
	 * deferred one reuses its mapping without a call and is never released. */
	bool was_released = released[1];
	rdm_backend_get_stats(c.b, &st0);
	err = rdm_populate(c.r, 1 * BS, BS);
	rdm_backend_get_stats(c.b, &st1);
	gu_tap_ok(err == 0, "%s: populate [1,2) again: %d", pol, err);
	if (was_released)
		gu_tap_ok(st1.map_calls == st0.map_calls + 1, "%s: the released block is mapped anew (%" PRIu64 " map call)",
			  pol, st1.map_calls - st0.map_calls);
	else
		gu_tap_ok(st1.map_calls == st0.map_calls && st1.unmap_calls == st0.unmap_calls,
			  "%s: the deferred block reuses its mapping: no call (%" PRIu64 " maps, %" PRIu64 " unmaps)", pol,
			  st1.map_calls - st0.map_calls, st1.unmap_calls - st0.unmap_calls);
	check_reachable(&c, 1, 0, "block 1 populated again");

	/* A released range populated again maps fresh memory. */
	err = rdm_populate(c.r, 16 * BS, 16 * BS);
	gu_tap_ok(err == 0, "%s: populate released [16,32) again: %d", pol, err);
	check_reachable(&c, 20, 0, "released [16,32) populated again");

	/* Under defer: a deferred block becomes unreachable only once released. */
	err = rdm_discard(c.r, 1 * BS, BS);
	gu_tap_ok(err == 0, "%s: discard [1,2) again: %d", pol, err);
	if (policy == RDM_POLICY_DEFER) {
		gu_tap_ok(!released[1], "defer: block 1, discarded inside the in-use mapping [0,16), is not released");
		check_reachable(&c, 1, 0, "deferred block 1 before its mapping empties");
		err = rdm_discard(c.r, 0, BS);
		if (!err)
			err = rdm_discard(c.r, 2 * BS, 14 * BS);
		gu_tap_ok(err == 0 && released[1], "defer: discarding the rest of [0,16) releases deferred block 1 (%d)",
			  err);
		c.want_fault = true;
		check_unreachable(&c, 1, "deferred block 1 once released");
	} else {
		check_discarded(&c, 1, 2, "discard [1,2) again");
	}

	err = rdm_discard_all(c.r);
	gu_tap_ok(err == 0, "%s: discard_all: %d", pol, err);
	unsigned nrel = 0;
	for (unsigned b = 0; b < NB; b++)
		nrel += released[b];
	gu_tap_ok(nrel == 32, "%s: after discard_all every block ever populated is released (%u of 32)", pol, nrel);
	check_unreachable(&c, 5, "after discard_all");
	gu_tap_ok(gu_dma_avail(v->container) == avail0, "%s: DMA_AVAIL back at its start (%" PRId64 ")", pol,
		  gu_dma_avail(v->container));
out:
	if (c.r)
		rdm_region_destroy(c.r);
	if (w)
		rdm_worker_destroy(w);
	rdm_backend_destroy(c.b);
}

int main(void)
{
	struct gu_vfio v;
	struct gu_edu e;

	gu_tap_init("vm_edu");
	if (!gu_tap_ok(gu_vfio_open(&v) == 0, "type1v2 container with the edu group"))
		return gu_tap_done();
	if (!gu_tap_ok(gu_edu_init(&e, &v) == 0, "edu's BAR0 and bus mastering")) {
		gu_vfio_close(&v);
		return gu_tap_done();
	}
	gu_tap_ok(IOVA0 + NB * BS <= GU_EDU_SCRATCH_IOVA, "the region [0x%" PRIx64 ", 0x%" PRIx64
		  ") lies below edu's mask and its scratch page", (uint64_t)IOVA0, IOVA0 + NB * BS);
	host = gu_alloc_pages(NB * BS);
	if (!gu_tap_ok(host != NULL, "%u KiB of host memory", (unsigned)(NB * BS >> 10)))
		return gu_tap_done();
	run_policy(&v, &e, RDM_POLICY_BLOCK, "block");
	run_policy(&v, &e, RDM_POLICY_COALESCE, "coalesce");
	run_policy(&v, &e, RDM_POLICY_DEFER, "defer");
	gu_tap_diag("%u DMAR fault log checks, %u edu DMAs", faults_logged_wanted, e.dma_count);
	gu_edu_fini(&e);
	gu_vfio_close(&v);
	return gu_tap_done();
}
