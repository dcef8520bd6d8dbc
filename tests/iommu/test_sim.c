/* tests/iommu/test_sim.c - the sim backend: every kernel rule for both semantics and a split-capable kernel, limit, injection, counters, introspection, bad input. */
#include <errno.h>
#include <string.h>

#include <rdm/backend.h>
#include <rdm/error.h>

#include "iommu/backend.h"
#include "tests/check.h"

#define K 4096ull
#define M (1024 * K / 4) /* 1 MiB */

static struct rdm_backend *mk(uint32_t sem, bool split, uint64_t limit)
{
	struct rdm_sim_config c = { .struct_size = sizeof(c), .semantics = sem, .can_split = split, .limit = limit };
	struct rdm_backend *b = NULL;
	REQUIRE(rdm_backend_sim_create(&c, &b) == 0 && b != NULL);
	return b;
}

static struct rdm_backend_stats stats(const struct rdm_backend *b)
{
	struct rdm_backend_stats st;
	rdm_backend_get_stats(b, &st);
	return st;
}

/* Three mappings [0,8K) [8K,16K) [32K,48K), vaddr = iova + 1 MiB. */
static void three(struct rdm_backend *b)
{
	REQUIRE(rdm_backend_map(b, 0, 2 * K, M) == 0);
	REQUIRE(rdm_backend_map(b, 2 * K, 2 * K, M + 2 * K) == 0);
	REQUIRE(rdm_backend_map(b, 8 * K, 4 * K, M + 8 * K) == 0);
}

static int count_cb(void *opaque, uint64_t iova, uint64_t size, uint64_t vaddr)
{
	(void)iova, (void)size, (void)vaddr;
	(*(int *)opaque)++;
	return 0;
}

static int nmappings(const struct rdm_backend *b)
{
	int n = 0;
	REQUIRE(rdm_sim_for_each_mapping(b, count_cb, &n) == 0);
	return n;
}

static void test_rules(uint32_t sem)
{
	int bisect = sem == RDM_SEM_IOMMUFD ? -ENOENT : -EINVAL;
	struct rdm_backend *b = mk(sem, false, 0);
	uint64_t un = 77;
	struct rdm_backend_caps caps;

	rdm_backend_get_caps(b, &caps);
	CHECK(caps.semantics == sem && !caps.can_split && caps.page_size == 4096);
	CHECK(caps.has_dma_avail == (sem == RDM_SEM_TYPE1V2));
	CHECK(strcmp(rdm_backend_name(b), "sim") == 0);
	three(b);

	/* MAP over any mapped IOVA -> EEXIST, whole, partial, spanning. */
	CHECK(rdm_backend_map(b, 0, 2 * K, 0) == -EEXIST);
	CHECK(rdm_backend_map(b, K, K, 0) == -EEXIST);
	CHECK(rdm_backend_map(b, 4 * K, 8 * K, 0) == -EEXIST); /* hole + part */
	CHECK(rdm_backend_map(b, 11 * K, 4 * K, 0) == -EEXIST); /* tail overlap */
	CHECK(strstr(rdm_last_error(), "overlaps") != NULL);
	CHECK(nmappings(b) == 3);

	/* Adjacent mappings never merge: each counts. */
	CHECK(stats(b).mappings == 3);

	/* Bisecting unmaps: first half, middle, hole + part, tail. Nothing unmapped, size not written. */
	CHECK(rdm_backend_unmap(b, 0, K, &un) == bisect && un == 77);
	CHECK(rdm_backend_unmap(b, 9 * K, K, &un) == bisect && un == 77);
	CHECK(rdm_backend_unmap(b, 6 * K, 4 * K, &un) == bisect && un == 77);
	CHECK(rdm_backend_unmap(b, 11 * K, 2 * K, &un) == bisect && un == 77);
	CHECK(rdm_backend_unmap(b, 2 * K, 8 * K, &un) == bisect); /* whole + part */
	CHECK(rdm_sim_is_mapped(b, 0, 4 * K, true, M) && rdm_sim_is_mapped(b, 8 * K, 4 * K, true, M + 8 * K));

	/* Empty range. */
	un = 77;
	if (sem == RDM_SEM_IOMMUFD) {
		CHECK(rdm_backend_unmap(b, 4 * K, 4 * K, &un) == -ENOENT && un == 77);
	} else {
		CHECK(rdm_backend_unmap(b, 4 * K, 4 * K, &un) == 0 && un == 0);
		CHECK(rdm_backend_unmap(b, 100 * K, K, NULL) == 0);
	}

	/* One UNMAP over several whole mappings and holes. */
	un = 0;
	CHECK(rdm_backend_unmap(b, 0, 16 * K, &un) == 0 && un == 8 * K);
	CHECK(nmappings(b) == 0 && rdm_sim_is_unmapped(b, 0, 64 * K));
	struct rdm_backend_stats st = stats(b);
	CHECK(st.mappings == 0 && st.peak_mappings == 3 && st.mapped_bytes == 0);
	CHECK(st.peak_mapped_bytes == 8 * K && st.bytes_mapped == 8 * K && st.bytes_unmapped == 8 * K);
	rdm_backend_destroy(b);
}

static void test_split(uint32_t sem)
{
	struct rdm_backend *b = mk(sem, true, 4);
	uint64_t un = 0;

	REQUIRE(rdm_backend_map(b, 0, 16 * K, M) == 0);
	/* Middle bisect: two survivors, same host memory. */
	CHECK(rdm_backend_unmap(b, 4 * K, 4 * K, &un) == 0 && un == 4 * K);
	CHECK(nmappings(b) == 2 && stats(b).mappings == 2);
	CHECK(rdm_sim_is_mapped(b, 0, 4 * K, true, M));
	CHECK(rdm_sim_is_mapped(b, 8 * K, 8 * K, true, M + 8 * K));
	CHECK(!rdm_sim_is_mapped(b, 0, 16 * K, false, 0));
	CHECK(rdm_sim_is_unmapped(b, 4 * K, 4 * K));
	/* The survivors are mappings of their own: a second split of one. */
	CHECK(rdm_backend_unmap(b, 12 * K, 4 * K, &un) == 0 && un == 4 * K); /* tail */
	CHECK(rdm_backend_unmap(b, 0, K, &un) == 0 && un == K);              /* head */
	CHECK(nmappings(b) == 2);
	/* hole + part across both: survivors [K,4K)->[K,2K) and [10K,12K). */
	CHECK(rdm_backend_unmap(b, 2 * K, 8 * K, &un) == 0 && un == 2 * K + 2 * K);
	CHECK(rdm_sim_is_mapped(b, K, K, true, M + K) && rdm_sim_is_mapped(b, 10 * K, 2 * K, true, M + 10 * K));
	CHECK(nmappings(b) == 2);
	/* Empty range keeps the semantics' answer. */
	CHECK(rdm_backend_unmap(b, 40 * K, K, &un) == (sem == RDM_SEM_IOMMUFD ? -ENOENT : 0));
	/* A middle split needs room under the limit. */
	REQUIRE(rdm_backend_map(b, 20 * K, 4 * K, 0) == 0);
	REQUIRE(rdm_backend_map(b, 30 * K, 4 * K, 0) == 0);
	CHECK(stats(b).mappings == 4);
	CHECK(rdm_backend_unmap(b, 21 * K, K, &un) == -ENOSPC);
	CHECK(rdm_sim_is_mapped(b, 20 * K, 4 * K, false, 0) && nmappings(b) == 4);
	CHECK(rdm_backend_unmap(b, 20 * K, K, &un) == 0 && un == K); /* head split: no growth */
	CHECK(stats(b).mappings == 4 && stats(b).peak_mappings == 4);
	rdm_backend_destroy(b);
}

static void test_limit(void)
{
	struct rdm_backend *b = mk(RDM_SEM_TYPE1V2, false, 0);
	uint64_t avail = 0;

	CHECK(rdm_backend_dma_avail(b, &avail) == 0 && avail == 65535);
	for (uint64_t i = 0; i < 65535; i++)
		REQUIRE(rdm_backend_map(b, i * K, K, i * K) == 0);
	CHECK(rdm_backend_dma_avail(b, &avail) == 0 && avail == 0);
	CHECK(rdm_backend_map(b, 65535 * K, K, 0) == -ENOSPC);
	CHECK(strstr(rdm_last_error(), "65535") != NULL);
	CHECK(rdm_sim_is_unmapped(b, 65535 * K, K));
	CHECK(rdm_backend_map(b, 0, K, 0) == -EEXIST); /* EEXIST is judged first, as the kernel does */
	CHECK(stats(b).mappings == 65535 && stats(b).failed_calls == 2);
	uint64_t un = 0;
	CHECK(rdm_backend_unmap(b, 0, 65535 * K, &un) == 0 && un == 65535 * K);
	CHECK(stats(b).mappings == 0 && nmappings(b) == 0);
	rdm_backend_destroy(b);

	b = mk(RDM_SEM_TYPE1V2, false, 3);
	for (uint64_t i = 0; i < 3; i++)
		REQUIRE(rdm_backend_map(b, i * K, K, 0) == 0);
	CHECK(rdm_backend_map(b, 8 * K, 8 * K, 0) == -ENOSPC && rdm_sim_is_unmapped(b, 8 * K, 8 * K));
	rdm_backend_destroy(b);

	/* iommufd: no count limit by default; an explicit one applies. */
	b = mk(RDM_SEM_IOMMUFD, false, 0);
	CHECK(rdm_backend_dma_avail(b, &avail) == 0 && avail == UINT64_MAX);
	for (uint64_t i = 0; i < 70000; i++)
		REQUIRE(rdm_backend_map(b, i * K, K, 0) == 0);
	rdm_backend_destroy(b);
	b = mk(RDM_SEM_TYPE1V2, false, RDM_SIM_UNLIMITED);
	CHECK(rdm_backend_dma_avail(b, &avail) == 0 && avail == UINT64_MAX);
	rdm_backend_destroy(b);
}

static void test_injection(void)
{
	static const int errs[] = { -ENOMEM, -EFAULT, -ENOSPC, -EIO };
	for (unsigned e = 0; e < sizeof(errs) / sizeof(errs[0]); e++) {
		struct rdm_backend *b = mk(RDM_SEM_TYPE1V2, false, 0);
		uint64_t un = 5;

		/* Third map from now, second unmap from now, fifth call of any kind. */
		CHECK(rdm_sim_inject(b, RDM_SIM_CALL_MAP, 3, errs[e]) == 0);
		CHECK(rdm_sim_inject(b, RDM_SIM_CALL_UNMAP, 2, errs[e]) == 0);
		CHECK(rdm_sim_inject(b, RDM_SIM_CALL_ANY, 5, errs[e]) == 0);
		CHECK(rdm_backend_map(b, 0, K, 0) == 0);              /* map 1, call 1 */
		CHECK(rdm_backend_map(b, K, K, K) == 0);              /* map 2, call 2 */
		CHECK(rdm_backend_map(b, 2 * K, K, 0) == errs[e]);    /* map 3 */
		CHECK(strstr(rdm_last_error(), "injected") != NULL);
		CHECK(rdm_sim_is_unmapped(b, 2 * K, K));
		CHECK(rdm_backend_unmap(b, 0, K, &un) == 0 && un == K); /* unmap 1, call 4 */
		un = 5;
		CHECK(rdm_backend_unmap(b, K, K, &un) == errs[e] && un == 5); /* unmap 2 and call 5 */
		CHECK(rdm_sim_is_mapped(b, K, K, true, K));
		CHECK(rdm_backend_map(b, 2 * K, K, 0) == 0); /* nothing armed any more */
		struct rdm_backend_stats st = stats(b);
		CHECK(st.map_calls == 4 && st.unmap_calls == 2 && st.failed_calls == 2 && st.mappings == 2);

		/* Cleared injections never fire. */
		CHECK(rdm_sim_inject(b, RDM_SIM_CALL_ANY, 1, errs[e]) == 0);
		rdm_sim_clear_injections(b);
		CHECK(rdm_backend_map(b, 3 * K, K, 0) == 0);
		rdm_backend_destroy(b);
	}
	struct rdm_backend *b = mk(RDM_SEM_IOMMUFD, false, 0);
	int n = 0;
	while (rdm_sim_inject(b, RDM_SIM_CALL_MAP, 1000, -ENOMEM) == 0)
		n++;
	CHECK(n == 64 && rdm_sim_inject(b, RDM_SIM_CALL_MAP, 1, -ENOMEM) == -ENOSPC);
	rdm_backend_destroy(b);
}

struct collect {
	uint64_t iova[8], size[8], vaddr[8];
	int n, stop_at;
};

static int collect_cb(void *opaque, uint64_t iova, uint64_t size, uint64_t vaddr)
{
	struct collect *c = opaque;
	if (c->n == c->stop_at)
		return 42;
	c->iova[c->n] = iova, c->size[c->n] = size, c->vaddr[c->n] = vaddr;
	c->n++;
	return 0;
}

static void test_introspection(void)
{
	struct rdm_backend *b = mk(RDM_SEM_TYPE1V2, false, 0);

	three(b);
	CHECK(rdm_sim_is_mapped(b, 0, 4 * K, true, M));      /* spans two adjacent mappings */
	CHECK(rdm_sim_is_mapped(b, K, 2 * K, true, M + K));  /* any sub-range */
	CHECK(!rdm_sim_is_mapped(b, 0, 4 * K, true, M + K)); /* wrong host address */
	CHECK(rdm_sim_is_mapped(b, 0, 4 * K, false, 12345));
	CHECK(!rdm_sim_is_mapped(b, 0, 12 * K, false, 0)); /* hole */
	CHECK(!rdm_sim_is_mapped(b, 4 * K, K, false, 0));
	CHECK(!rdm_sim_is_mapped(b, 0, 0, false, 0));
	CHECK(!rdm_sim_is_mapped(b, UINT64_MAX, 2, false, 0));
	CHECK(rdm_sim_is_unmapped(b, 4 * K, 4 * K) && !rdm_sim_is_unmapped(b, 4 * K, 5 * K));
	CHECK(!rdm_sim_is_unmapped(b, 3 * K, 2 * K) && rdm_sim_is_unmapped(b, 12 * K, 1000 * K));
	CHECK(rdm_sim_is_unmapped(b, 5 * K, 0));

	struct collect c = { .stop_at = -1 };
	CHECK(rdm_sim_for_each_mapping(b, collect_cb, &c) == 0 && c.n == 3);
	CHECK(c.iova[0] == 0 && c.size[0] == 2 * K && c.vaddr[0] == M);
	CHECK(c.iova[1] == 2 * K && c.iova[2] == 8 * K && c.size[2] == 4 * K && c.vaddr[2] == M + 8 * K);
	struct collect d = { .stop_at = 1 };
	CHECK(rdm_sim_for_each_mapping(b, collect_cb, &d) == 42 && d.n == 1);
	rdm_backend_destroy(b);
}

static void test_model_time(void)
{
	struct rdm_backend *b = mk(RDM_SEM_TYPE1V2, false, 0);
	CHECK(rdm_backend_map(b, 0, 16 * K, 0) == 0);
	CHECK(stats(b).model_ns == 2000 + 16 * 60);
	CHECK(rdm_backend_map(b, 0, K, 0) == -EEXIST); /* a rejected call costs the call */
	CHECK(rdm_backend_unmap(b, 0, 16 * K, NULL) == 0);
	CHECK(stats(b).model_ns == 3 * 2000 + 32 * 60);
	rdm_backend_destroy(b);

	struct rdm_sim_config c = { .struct_size = sizeof(c), .call_ns = 10, .page_ns = 1000, .page_size = 2 * M };
	REQUIRE(rdm_backend_sim_create(&c, &b) == 0);
	CHECK(rdm_backend_map(b, 0, 4 * M + 4 * K, 0) == 0); /* 3 cost pages, rounded up */
	CHECK(stats(b).model_ns == 10 + 3 * 1000);
	rdm_backend_destroy(b);
}

static void test_bad_input(void)
{
	struct rdm_backend *b = mk(RDM_SEM_TYPE1V2, false, 0);
	struct rdm_backend *out = (struct rdm_backend *)&out;
	uint64_t un = 9, avail;

	CHECK(rdm_backend_map(NULL, 0, K, 0) == -EINVAL);
	CHECK(rdm_backend_map(b, 0, 0, 0) == -EINVAL && strstr(rdm_last_error(), "zero size"));
	CHECK(rdm_backend_map(b, 1, K, 0) == -EINVAL && strstr(rdm_last_error(), "aligned"));
	CHECK(rdm_backend_map(b, 0, K + 1, 0) == -EINVAL);
	CHECK(rdm_backend_map(b, 0, K, 1) == -EINVAL && strstr(rdm_last_error(), "vaddr"));
	CHECK(rdm_backend_map(b, UINT64_MAX - K + 1, 2 * K, 0) == -EINVAL && strstr(rdm_last_error(), "overflows"));
	CHECK(rdm_backend_map(b, 0, 2 * K, UINT64_MAX - K + 1) == -EINVAL);
	CHECK(rdm_backend_unmap(NULL, 0, K, &un) == -EINVAL);
	CHECK(rdm_backend_unmap(b, 0, 0, &un) == -EINVAL && un == 9);
	CHECK(rdm_backend_unmap(b, K / 2, K, &un) == -EINVAL);
	CHECK(rdm_backend_unmap(b, UINT64_MAX - K + 1, 2 * K, &un) == -EINVAL);
	CHECK(rdm_backend_dma_avail(NULL, &avail) == -EINVAL && rdm_backend_dma_avail(b, NULL) == -EINVAL);
	/* Argument errors never reach the backend: no call counted. */
	struct rdm_backend_stats st = stats(b);
	CHECK(st.map_calls == 0 && st.unmap_calls == 0 && st.failed_calls == 0 && st.model_ns == 0);

	CHECK(rdm_sim_inject(NULL, RDM_SIM_CALL_MAP, 1, -EIO) == -EINVAL);
	CHECK(rdm_sim_inject(b, 0, 1, -EIO) == -EINVAL && rdm_sim_inject(b, 4, 1, -EIO) == -EINVAL);
	CHECK(rdm_sim_inject(b, RDM_SIM_CALL_MAP, 0, -EIO) == -EINVAL);
	CHECK(rdm_sim_inject(b, RDM_SIM_CALL_MAP, 1, 0) == -EINVAL);
	CHECK(rdm_sim_inject(b, RDM_SIM_CALL_MAP, 1, EIO) == -EINVAL);
	CHECK(rdm_sim_inject(b, RDM_SIM_CALL_MAP, 1, -5000) == -EINVAL);
	CHECK(rdm_sim_for_each_mapping(NULL, count_cb, NULL) == -EINVAL);
	CHECK(rdm_sim_for_each_mapping(b, NULL, NULL) == -EINVAL);
	CHECK(!rdm_sim_is_mapped(NULL, 0, K, false, 0) && !rdm_sim_is_unmapped(NULL, 0, K));
	rdm_sim_clear_injections(NULL);

	struct rdm_sim_config c = { .struct_size = sizeof(c) };
	CHECK(rdm_backend_sim_create(&c, NULL) == -EINVAL);
	c.semantics = 2;
	CHECK(rdm_backend_sim_create(&c, &out) == -EINVAL && strstr(rdm_last_error(), "semantics"));
	c.semantics = 0, c.page_size = 3000;
	CHECK(rdm_backend_sim_create(&c, &out) == -EINVAL);
	c.page_size = 6 * K;
	CHECK(rdm_backend_sim_create(&c, &out) == -EINVAL);
	c = (struct rdm_sim_config){ 0 };
	CHECK(rdm_backend_sim_create(&c, &out) == -EINVAL && strstr(rdm_last_error(), "struct_size"));
	CHECK(out == (struct rdm_backend *)&out); /* untouched on failure */
	CHECK(rdm_backend_sim_create(NULL, &out) == 0); /* NULL config: defaults */
	struct rdm_backend_caps caps;
	rdm_backend_get_caps(out, &caps);
	CHECK(caps.semantics == RDM_SEM_TYPE1V2 && caps.iova_min == 0 && caps.iova_max == UINT64_MAX);
	CHECK(rdm_backend_dma_avail(out, &avail) == 0 && avail == 65535);
	rdm_backend_destroy(out);

	/* NULL-tolerant getters and destroy. */
	rdm_backend_get_caps(NULL, &caps);
	rdm_backend_get_stats(NULL, &st);
	rdm_backend_get_stats(b, NULL);
	CHECK(strcmp(rdm_backend_name(NULL), "") == 0);
	rdm_backend_destroy(NULL);
	rdm_backend_destroy(b);
}

static void test_policy_counts(void)
{
	struct rdm_backend *b = mk(RDM_SEM_TYPE1V2, false, 0);
	rdm_backend_note_remapped(b, 8 * K);
	rdm_backend_note_deferred(b, 12 * K);
	rdm_backend_note_deferred(b, -4 * (int64_t)K);
	rdm_backend_note_deferred(b, -100 * (int64_t)K); /* clamps at 0 */
	struct rdm_backend_stats st = stats(b);
	CHECK(st.remapped_bytes == 8 * K && st.deferred_bytes == 0 && st.peak_deferred_bytes == 12 * K);
	rdm_backend_destroy(b);
}

int main(void)
{
	test_rules(RDM_SEM_TYPE1V2);
	test_rules(RDM_SEM_IOMMUFD);
	test_split(RDM_SEM_TYPE1V2);
	test_split(RDM_SEM_IOMMUFD);
	test_limit();
	test_injection();
	test_introspection();
	test_model_time();
	test_bad_input();
	test_policy_counts();
	return check_exit();
}
