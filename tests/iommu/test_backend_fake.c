/* tests/iommu/test_backend_fake.c - vfio-type1 and iommufd backends against the fake kernel: marshalling, capability detection, error propagation. */
#include <errno.h>
#include <linux/vfio.h>
#include <string.h>

#include <rdm/backend.h>
#include <rdm/error.h>

#include "iommu/iommufd_abi.h"
#include "tests/check.h"
#include "tests/iommu/fake_kernel.h"

#define K 4096ull
#define FD 17

static struct rdm_backend_stats stats(const struct rdm_backend *b)
{
	struct rdm_backend_stats st;
	rdm_backend_get_stats(b, &st);
	return st;
}

static size_t count_req(const struct fake_kernel *fk, unsigned long req)
{
	size_t n = 0;
	for (size_t i = 0; i < fk->ncalls; i++)
		n += fk->calls[i].request == req;
	return n;
}

static void test_type1_detect(void)
{
	struct fake_kernel fk;
	struct fake_kernel_config cfg = {
		.mode = FAKE_TYPE1, .fd = FD, .unmap_all = true, .dma_avail_cap = true, .migration_cap = true,
		.pgsizes = 0x40201000ull, /* 4K | 2M | 1G */
		.limit = 100, .nranges = 2,
		.range_start = { 0, 0xfef00000ull }, .range_last = { 0xfedfffffull, 0xffffffffffull },
	};
	REQUIRE(fake_kernel_init(&fk, &cfg) == 0);
	struct rdm_backend *b = NULL;
	REQUIRE(rdm_backend_vfio_type1_create(FD, fake_kernel_ioctl, &fk, &b) == 0);
	struct rdm_backend_caps caps;
	rdm_backend_get_caps(b, &caps);
	CHECK(caps.semantics == RDM_SEM_TYPE1V2 && !caps.can_split);
	CHECK(caps.has_unmap_all && caps.has_dma_avail && caps.page_size == 4096);
	CHECK(caps.iova_min == 0 && caps.iova_max == 0xffffffffffull);
	CHECK(strcmp(rdm_backend_name(b), "vfio-type1") == 0);
	/* CHECK_EXTENSION passes the extension by value. */
	CHECK(fk.calls[0].request == VFIO_CHECK_EXTENSION && fk.calls[0].arg_value == VFIO_TYPE1v2_IOMMU);
	CHECK(fk.calls[1].request == VFIO_CHECK_EXTENSION && fk.calls[1].arg_value == VFIO_UNMAP_ALL);
	CHECK(fk.calls[2].request == VFIO_IOMMU_GET_INFO && fk.calls[2].argsz >= 20);
	uint64_t avail = 0;
	CHECK(rdm_backend_dma_avail(b, &avail) == 0 && avail == 100);
	CHECK(rdm_backend_map(b, 0, 8 * K, 0x7f0000000000ull) == 0);
	CHECK(rdm_backend_dma_avail(b, &avail) == 0 && avail == 99);
	/* Outside the usable window: refused before any ioctl. */
	size_t before = fk.ncalls;
	CHECK(rdm_backend_map(b, 0x10000000000ull, K, 0) == -EINVAL && fk.ncalls == before);
	CHECK(fk.violations == 0);
	rdm_backend_destroy(b);
	fake_kernel_fini(&fk);

	/* A minimal container: no caps, no UNMAP_ALL, unknown page sizes. */
	cfg = (struct fake_kernel_config){ .mode = FAKE_TYPE1, .fd = FD };
	REQUIRE(fake_kernel_init(&fk, &cfg) == 0);
	REQUIRE(rdm_backend_vfio_type1_create(FD, fake_kernel_ioctl, &fk, &b) == 0);
	rdm_backend_get_caps(b, &caps);
	CHECK(!caps.has_unmap_all && !caps.has_dma_avail && caps.iova_min == 0 && caps.iova_max == UINT64_MAX);
	CHECK(rdm_backend_dma_avail(b, &avail) == 0 && avail == UINT64_MAX);
	rdm_backend_destroy(b);
	fake_kernel_fini(&fk);

	/* A chain longer than the first buffer: the backend retries with the argsz the kernel asks for. */
	cfg = (struct fake_kernel_config){ .mode = FAKE_TYPE1, .fd = FD, .pad_cap = 3000, .dma_avail_cap = true,
					   .nranges = 1, .range_start = { 0x1000 }, .range_last = { 0xffffff } };
	REQUIRE(fake_kernel_init(&fk, &cfg) == 0);
	REQUIRE(rdm_backend_vfio_type1_create(FD, fake_kernel_ioctl, &fk, &b) == 0);
	rdm_backend_get_caps(b, &caps);
	CHECK(caps.has_dma_avail && caps.iova_min == 0x1000 && caps.iova_max == 0xffffff);
	CHECK(count_req(&fk, VFIO_IOMMU_GET_INFO) == 2 && fk.calls[3].argsz > 3000);
	CHECK(rdm_backend_dma_avail(b, &avail) == 0 && avail == 65535);
	rdm_backend_destroy(b);
	fake_kernel_fini(&fk);

	/* 64 KiB IOMMU pages: the smallest page size becomes the alignment. */
	cfg = (struct fake_kernel_config){ .mode = FAKE_TYPE1, .fd = FD, .pgsizes = 0x10000ull | 0x20000000ull };
	REQUIRE(fake_kernel_init(&fk, &cfg) == 0);
	REQUIRE(rdm_backend_vfio_type1_create(FD, fake_kernel_ioctl, &fk, &b) == 0);
	rdm_backend_get_caps(b, &caps);
	CHECK(caps.page_size == 0x10000);
	CHECK(rdm_backend_map(b, 0, K, 0) == -EINVAL); /* caught before the kernel */
	CHECK(rdm_backend_map(b, 0, 0x10000, 0) == 0);
	rdm_backend_destroy(b);
	fake_kernel_fini(&fk);
}

static void test_type1_create_errors(void)
{
	struct fake_kernel fk;
	struct rdm_backend *b = (struct rdm_backend *)&b;
	struct fake_kernel_config cfg = { .mode = FAKE_TYPE1, .fd = FD, .no_type1v2 = true };

	REQUIRE(fake_kernel_init(&fk, &cfg) == 0);
	CHECK(rdm_backend_vfio_type1_create(FD, fake_kernel_ioctl, &fk, &b) == -EINVAL);
	CHECK(strstr(rdm_last_error(), "type1v2") != NULL);
	CHECK(rdm_backend_vfio_type1_create(FD + 1, fake_kernel_ioctl, &fk, &b) == -EBADF);
	CHECK(rdm_backend_vfio_type1_create(-1, fake_kernel_ioctl, &fk, &b) == -EINVAL);
	CHECK(rdm_backend_vfio_type1_create(FD, fake_kernel_ioctl, &fk, NULL) == -EINVAL);
	fake_kernel_fini(&fk);

	cfg = (struct fake_kernel_config){ .mode = FAKE_TYPE1, .fd = FD, .dma_avail_cap = true };
	REQUIRE(fake_kernel_init(&fk, &cfg) == 0);
	fake_kernel_fail_next(&fk, VFIO_IOMMU_GET_INFO, -EFAULT);
	CHECK(rdm_backend_vfio_type1_create(FD, fake_kernel_ioctl, &fk, &b) == -EFAULT);
	CHECK(strstr(rdm_last_error(), "GET_INFO") != NULL);
	/* An iommufd-mode fd does not know VFIO ioctls: not a container. */
	fake_kernel_fini(&fk);
	cfg = (struct fake_kernel_config){ .mode = FAKE_IOMMUFD, .fd = FD };
	REQUIRE(fake_kernel_init(&fk, &cfg) == 0);
	CHECK(rdm_backend_vfio_type1_create(FD, fake_kernel_ioctl, &fk, &b) == -EINVAL);
	fake_kernel_fini(&fk);

	/* A chain that points backwards is refused, not followed forever. */
	cfg = (struct fake_kernel_config){ .mode = FAKE_TYPE1, .fd = FD, .dma_avail_cap = true, .nranges = 1,
					   .range_last = { 0xffffffffull }, .bad_chain = true };
	REQUIRE(fake_kernel_init(&fk, &cfg) == 0);
	CHECK(rdm_backend_vfio_type1_create(FD, fake_kernel_ioctl, &fk, &b) == -EPROTO);
	CHECK(b == (struct rdm_backend *)&b);
	fake_kernel_fini(&fk);
}

static void test_type1_calls(void)
{
	struct fake_kernel fk;
	struct fake_kernel_config cfg = { .mode = FAKE_TYPE1, .fd = FD, .dma_avail_cap = true, .limit = 4 };
	REQUIRE(fake_kernel_init(&fk, &cfg) == 0);
	struct rdm_backend *b;
	REQUIRE(rdm_backend_vfio_type1_create(FD, fake_kernel_ioctl, &fk, &b) == 0);
	const struct fake_call *c;

	/* MAP marshalling, field by field. */
	CHECK(rdm_backend_map(b, 0x100000, 4 * K, 0x7f1234560000ull) == 0);
	c = fake_kernel_last(&fk);
	CHECK(c->request == VFIO_IOMMU_MAP_DMA && c->fd == FD);
	CHECK(c->argsz == sizeof(struct vfio_iommu_type1_dma_map));
	CHECK(c->flags == (VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE));
	CHECK(c->iova == 0x100000 && c->size == 4 * K && c->vaddr == 0x7f1234560000ull);
	CHECK(rdm_backend_map(b, 0x100000 + 4 * K, 4 * K, 0x7f1234564000ull) == 0);

	/* Kernel rules come back as the kernel's errno, with a message. */
	CHECK(rdm_backend_map(b, 0x100000 + K, K, 0) == -EEXIST);
	CHECK(strstr(rdm_last_error(), "MAP_DMA") != NULL);
	uint64_t un = 99;
	CHECK(rdm_backend_unmap(b, 0x100000, K, &un) == -EINVAL && un == 99); /* bisects */
	CHECK(rdm_backend_unmap(b, 0x900000, K, &un) == 0 && un == 0);       /* empty: OK, 0 */
	c = fake_kernel_last(&fk);
	CHECK(c->request == VFIO_IOMMU_UNMAP_DMA && c->argsz == sizeof(struct vfio_iommu_type1_dma_unmap));
	CHECK(c->flags == 0 && c->iova == 0x900000 && c->size == K && c->written_size == 0);

	/* Limit: ENOSPC at limit + 1. */
	CHECK(rdm_backend_map(b, 0, K, 0) == 0);
	CHECK(rdm_backend_map(b, K, K, 0) == 0);
	uint64_t avail = 7;
	CHECK(rdm_backend_dma_avail(b, &avail) == 0 && avail == 0);
	CHECK(rdm_backend_map(b, 2 * K, K, 0) == -ENOSPC);

	/* Injected kernel errors propagate and change nothing. */
	fake_kernel_fail_next(&fk, VFIO_IOMMU_UNMAP_DMA, -EFAULT);
	CHECK(rdm_backend_unmap(b, 0, 2 * K, &un) == -EFAULT);
	CHECK(rdm_sim_is_mapped(fk.model, 0, 2 * K, false, 0));
	fake_kernel_fail_next(&fk, VFIO_IOMMU_GET_INFO, -EIO);
	CHECK(rdm_backend_dma_avail(b, &avail) == -EIO);

	/* One unmap over whole mappings and a hole: the written-back size. */
	CHECK(rdm_backend_unmap(b, 0, 0x100000 + 8 * K, &un) == 0 && un == 10 * K);
	CHECK(fake_kernel_last(&fk)->written_size == 10 * K);
	struct rdm_backend_stats st = stats(b);
	CHECK(st.mappings == 0 && st.peak_mappings == 4 && st.mapped_bytes == 0);
	CHECK(st.map_calls == 6 && st.unmap_calls == 4 && st.failed_calls == 4);
	CHECK(st.bytes_mapped == 10 * K && st.bytes_unmapped == 10 * K);
	CHECK(count_req(&fk, VFIO_IOMMU_MAP_DMA) == 6 && count_req(&fk, VFIO_IOMMU_UNMAP_DMA) == 4);
	CHECK(fk.violations == 0);
	rdm_backend_destroy(b);
	fake_kernel_fini(&fk);
}

static void test_iommufd(void)
{
	struct fake_kernel fk;
	struct fake_kernel_config cfg = { .mode = FAKE_IOMMUFD, .fd = FD, .ioas_id = 5, .nranges = 6 };
	for (unsigned i = 0; i < 4; i++) {
		cfg.range_start[i] = (uint64_t)i << 32;
		cfg.range_last[i] = ((uint64_t)i << 32) + 0xffffffffull;
	}
	cfg.nranges = 4;
	REQUIRE(fake_kernel_init(&fk, &cfg) == 0);
	struct rdm_backend *b;
	REQUIRE(rdm_backend_iommufd_create(FD, 5, fake_kernel_ioctl, &fk, &b) == 0);
	struct rdm_backend_caps caps;
	rdm_backend_get_caps(b, &caps);
	CHECK(caps.semantics == RDM_SEM_IOMMUFD && !caps.has_dma_avail && caps.page_size == 4096);
	CHECK(caps.iova_min == 0 && caps.iova_max == (3ull << 32) + 0xffffffffull);
	CHECK(strcmp(rdm_backend_name(b), "iommufd") == 0);
	uint64_t avail = 0;
	CHECK(rdm_backend_dma_avail(b, &avail) == 0 && avail == UINT64_MAX);

	const struct fake_call *c;
	CHECK(rdm_backend_map(b, 0x200000, 8 * K, 0x7f0000200000ull) == 0);
	c = fake_kernel_last(&fk);
	CHECK(c->request == RDM_IOMMU_IOAS_MAP && c->argsz == sizeof(struct rdm_iommu_ioas_map));
	CHECK(c->flags == (RDM_IOMMU_IOAS_MAP_FIXED_IOVA | RDM_IOMMU_IOAS_MAP_READABLE |
			   RDM_IOMMU_IOAS_MAP_WRITEABLE));
	CHECK(c->iova == 0x200000 && c->size == 8 * K && c->vaddr == 0x7f0000200000ull);
	CHECK(rdm_backend_map(b, 0x200000 + 8 * K, 8 * K, 0x7f0000208000ull) == 0);
	CHECK(rdm_backend_map(b, 0x200000, K, 0) == -EEXIST);

	uint64_t un = 99;
	CHECK(rdm_backend_unmap(b, 0x200000, K, &un) == -ENOENT && un == 99); /* bisects */
	CHECK(rdm_backend_unmap(b, 0x900000, K, &un) == -ENOENT && un == 99); /* empty */
	CHECK(strstr(rdm_last_error(), "IOAS_UNMAP") != NULL);
	CHECK(rdm_backend_unmap(b, 0x100000, 0x200000, &un) == 0 && un == 16 * K); /* whole + holes */
	c = fake_kernel_last(&fk);
	CHECK(c->request == RDM_IOMMU_IOAS_UNMAP && c->argsz == sizeof(struct rdm_iommu_ioas_unmap));
	CHECK(c->iova == 0x100000 && c->size == 0x200000 && c->written_size == 16 * K);
	fake_kernel_fail_next(&fk, RDM_IOMMU_IOAS_MAP, -ENOMEM);
	CHECK(rdm_backend_map(b, 0, K, 0) == -ENOMEM && rdm_sim_is_unmapped(fk.model, 0, K));
	struct rdm_backend_stats st = stats(b);
	CHECK(st.mappings == 0 && st.peak_mappings == 2 && st.failed_calls == 4);
	CHECK(fk.violations == 0);
	rdm_backend_destroy(b);

	/* Wrong IOAS: the kernel's ENOENT from IOVA_RANGES. Not an iommufd: EINVAL. */
	b = (struct rdm_backend *)&b;
	CHECK(rdm_backend_iommufd_create(FD, 6, fake_kernel_ioctl, &fk, &b) == -ENOENT);
	CHECK(rdm_backend_iommufd_create(-3, 5, fake_kernel_ioctl, &fk, &b) == -EINVAL);
	CHECK(rdm_backend_iommufd_create(FD, 5, fake_kernel_ioctl, &fk, NULL) == -EINVAL);
	CHECK(b == (struct rdm_backend *)&b);
	fake_kernel_fini(&fk);
	cfg = (struct fake_kernel_config){ .mode = FAKE_TYPE1, .fd = FD };
	REQUIRE(fake_kernel_init(&fk, &cfg) == 0);
	CHECK(rdm_backend_iommufd_create(FD, 5, fake_kernel_ioctl, &fk, &b) == -EINVAL);
	fake_kernel_fini(&fk);

	/* One full range (default) and 64 KiB alignment. */
	cfg = (struct fake_kernel_config){ .mode = FAKE_IOMMUFD, .fd = FD, .ioas_id = 1, .pgsizes = 0x10000 };
	REQUIRE(fake_kernel_init(&fk, &cfg) == 0);
	REQUIRE(rdm_backend_iommufd_create(FD, 1, fake_kernel_ioctl, &fk, &b) == 0);
	rdm_backend_get_caps(b, &caps);
	CHECK(caps.page_size == 0x10000 && caps.iova_min == 0 && caps.iova_max == UINT64_MAX);
	rdm_backend_destroy(b);
	fake_kernel_fini(&fk);

	/* More ranges than the first array holds: EMSGSIZE, then a second call. */
	cfg = (struct fake_kernel_config){ .mode = FAKE_IOMMUFD, .fd = FD, .ioas_id = 1, .nranges = 10 };
	for (unsigned i = 0; i < 10; i++) {
		cfg.range_start[i] = (uint64_t)(i + 1) << 30;
		cfg.range_last[i] = ((uint64_t)(i + 1) << 30) + 0x3fffffff;
	}
	REQUIRE(fake_kernel_init(&fk, &cfg) == 0);
	REQUIRE(rdm_backend_iommufd_create(FD, 1, fake_kernel_ioctl, &fk, &b) == 0);
	rdm_backend_get_caps(b, &caps);
	CHECK(caps.iova_min == 1ull << 30 && caps.iova_max == (11ull << 30) - 1);
	CHECK(fk.ncalls == 2 && fk.calls[0].result == -EMSGSIZE && fk.calls[1].result == 0);
	rdm_backend_destroy(b);
	fake_kernel_fini(&fk);
}

/* The fake itself: it must catch what a broken caller would send. */
static void test_fake_catches(void)
{
	struct fake_kernel fk;
	struct fake_kernel_config cfg = { .mode = FAKE_TYPE1, .fd = FD };
	REQUIRE(fake_kernel_init(&fk, &cfg) == 0);
	struct vfio_iommu_type1_dma_map m = { .argsz = 8, .flags = 3, .iova = 0, .size = K, .vaddr = 0 };
	CHECK(fake_kernel_ioctl(&fk, FD, VFIO_IOMMU_MAP_DMA, &m) == -EINVAL && fk.violations == 1);
	m.argsz = sizeof(m), m.flags = VFIO_DMA_MAP_FLAG_READ;
	CHECK(fake_kernel_ioctl(&fk, FD, VFIO_IOMMU_MAP_DMA, &m) == 0 && fk.violations == 2);
	struct vfio_iommu_type1_dma_unmap u = { .argsz = sizeof(u), .flags = VFIO_DMA_UNMAP_FLAG_ALL };
	CHECK(fake_kernel_ioctl(&fk, FD, VFIO_IOMMU_UNMAP_DMA, &u) == -EINVAL && fk.violations == 3);
	u.flags = 0, u.iova = 0, u.size = K + 1;
	CHECK(fake_kernel_ioctl(&fk, FD, VFIO_IOMMU_UNMAP_DMA, &u) == -EINVAL);
	CHECK(fake_kernel_ioctl(&fk, FD, 0x1234, NULL) == -ENOTTY);
	fake_kernel_fini(&fk);

	cfg = (struct fake_kernel_config){ .mode = FAKE_IOMMUFD, .fd = FD, .ioas_id = 2 };
	REQUIRE(fake_kernel_init(&fk, &cfg) == 0);
	struct rdm_iommu_ioas_map im = { .size = sizeof(im), .flags = 7, .ioas_id = 2, .reserved = 1, .length = K };
	CHECK(fake_kernel_ioctl(&fk, FD, RDM_IOMMU_IOAS_MAP, &im) == -EOPNOTSUPP && fk.violations == 1);
	im.reserved = 0, im.ioas_id = 3;
	CHECK(fake_kernel_ioctl(&fk, FD, RDM_IOMMU_IOAS_MAP, &im) == -ENOENT);
	im.ioas_id = 2;
	CHECK(fake_kernel_ioctl(&fk, FD, RDM_IOMMU_IOAS_MAP, &im) == 0);
	struct rdm_iommu_ioas_unmap iu = { .size = sizeof(iu), .ioas_id = 2, .iova = 0, .length = UINT64_MAX };
	CHECK(fake_kernel_ioctl(&fk, FD, RDM_IOMMU_IOAS_UNMAP, &iu) == 0 && iu.length == K);
	fake_kernel_fini(&fk);
}

int main(void)
{
	test_type1_detect();
	test_type1_create_errors();
	test_type1_calls();
	test_iommufd();
	test_fake_catches();
	return check_exit();
}
