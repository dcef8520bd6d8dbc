/* tests/iommu/test_vfio_dev.c - the vfio-type1 backend on a real container; skips (77) without /dev/vfio/vfio or RDM_VFIO_GROUP. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include <rdm/backend.h>
#include <rdm/error.h>

#include "tests/check.h"

int main(void)
{
	if (access("/dev/vfio/vfio", F_OK) != 0) {
		printf("skip: /dev/vfio/vfio absent\n");
		return 77;
	}
	const char *group = getenv("RDM_VFIO_GROUP"); /* e.g. /dev/vfio/7 */
	if (group == NULL) {
		printf("skip: set RDM_VFIO_GROUP to a viable group's path\n");
		return 77;
	}
	int cfd, gfd;
	int rc = rdm_vfio_open_group(group, &cfd, &gfd);
	if (rc) {
		printf("skip: %s\n", rdm_last_error());
		return 77;
	}
	struct rdm_backend *b;
	REQUIRE(rdm_backend_vfio_type1_create(cfd, NULL, NULL, &b) == 0);
	struct rdm_backend_caps caps;
	rdm_backend_get_caps(b, &caps);
	printf("page_size=%llu dma_avail=%d unmap_all=%d iova=[0x%llx, 0x%llx]\n",
	       (unsigned long long)caps.page_size, caps.has_dma_avail, caps.has_unmap_all,
	       (unsigned long long)caps.iova_min, (unsigned long long)caps.iova_max);
	size_t len = 16 * caps.page_size;
	void *mem = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	REQUIRE(mem != MAP_FAILED);
	uint64_t va = (uint64_t)(uintptr_t)mem, pg = caps.page_size, iova = caps.iova_min + (1ull << 20), un;
	CHECK(rdm_backend_map(b, iova, 8 * pg, va) == 0);
	CHECK(rdm_backend_map(b, iova + 8 * pg, 8 * pg, va + 8 * pg) == 0);
	CHECK(rdm_backend_map(b, iova, pg, va) == -EEXIST);
	CHECK(rdm_backend_unmap(b, iova, pg, &un) == -EINVAL);
	CHECK(rdm_backend_unmap(b, iova, 16 * pg, &un) == 0 && un == 16 * pg);
	CHECK(rdm_backend_unmap(b, iova, 16 * pg, &un) == 0 && un == 0);
	rdm_backend_destroy(b);
	munmap(mem, len);
	close(gfd);
	close(cfd);
	return check_exit();
}
