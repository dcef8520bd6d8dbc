/* SPDX-License-Identifier: MIT */
/*
 * iommu/backend_iommufd.c - the iommufd backend: IOMMU_IOAS_MAP (fixed IOVA,
 * read-write) and IOMMU_IOAS_UNMAP on an iommufd and IOAS the VMM provides.
 *
 * The ABI is defined in iommu/iommufd_abi.h. At creation the IOAS's allowed
 * IOVA ranges and alignment are read (IOMMU_IOAS_IOVA_RANGES); the outer
 * bounds become the usable window and the alignment the page size. iommufd
 * has no mapping-count limit (its memory is charged to the memory cgroup),
 * so dma_avail is UINT64_MAX.
 *
 * Like vfio-type1, the backend shadows the mappings it made so its stats
 * count mappings: a successful IOAS_UNMAP removes only areas wholly inside
 * the range.
 *
 * Invariants:
 *  1. The shadow holds exactly the mappings this backend made that the
 *     kernel has not reported unmapped (room reserved before IOAS_MAP).
 *  2. Every structure is zeroed before it is filled: the kernel rejects
 *     non-zero reserved fields.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "iommu/backend.h"
#include "iommu/iommufd_abi.h"
#include "iommu/maptree.h"

struct ifd {
	struct rdm_backend base;
	rdm_ioctl_fn ioctl_fn;
	void *opaque;
	int fd;
	uint32_t ioas_id;
	struct rdm_maptree shadow;
};

static struct ifd *to_ifd(struct rdm_backend *b)
{
	return (struct ifd *)b;
}

static const char *errname(int err)
{
	const char *s = strerrordesc_np(-err);
	return s ? s : "unknown error";
}

static int ifd_map(struct rdm_backend *b, uint64_t iova, uint64_t size, uint64_t vaddr)
{
	struct ifd *t = to_ifd(b);

	if (rdm_maptree_reserve(&t->shadow, 1) != 0)
		return rdm_fail(-ENOMEM, "iommufd: out of memory for the mapping shadow");
	struct rdm_iommu_ioas_map m;
	memset(&m, 0, sizeof(m));
	m.size = sizeof(m);
	m.flags = RDM_IOMMU_IOAS_MAP_FIXED_IOVA | RDM_IOMMU_IOAS_MAP_READABLE |
		  RDM_IOMMU_IOAS_MAP_WRITEABLE;
	m.ioas_id = t->ioas_id;
	m.user_va = vaddr;
	m.length = size;
	m.iova = iova;
	int rc = t->ioctl_fn(t->opaque, t->fd, RDM_IOMMU_IOAS_MAP, &m);
	if (rc < 0)
		return rdm_fail(rc, "iommufd: IOMMU_IOAS_MAP 0x%" PRIx64 "+0x%" PRIx64 " on IOAS %" PRIu32 ": %s",
				iova, size, t->ioas_id, errname(rc));
	(void)rdm_maptree_insert(&t->shadow, iova, size); /* reserved: cannot fail */
	return 0;
}

static int ifd_unmap(struct rdm_backend *b, uint64_t iova, uint64_t size, struct rdm_unmap_result *res)
{
	struct ifd *t = to_ifd(b);
	struct rdm_iommu_ioas_unmap u;

	memset(&u, 0, sizeof(u));
	u.size = sizeof(u);
	u.ioas_id = t->ioas_id;
	u.iova = iova;
	u.length = size;
	int rc = t->ioctl_fn(t->opaque, t->fd, RDM_IOMMU_IOAS_UNMAP, &u);
	if (rc < 0)
		return rdm_fail(rc, "iommufd: IOMMU_IOAS_UNMAP 0x%" PRIx64 "+0x%" PRIx64 " on IOAS %" PRIu32 ": %s",
				iova, size, t->ioas_id, errname(rc));
	uint64_t bytes = 0;
	rdm_maptree_remove_starts_in(&t->shadow, iova, iova + (size - 1), &res->removed, &bytes);
	rdm_maptree_trim(&t->shadow); /* no handle is kept across calls */
	res->bytes = u.length; /* the kernel writes the unmapped length back */
	return 0;
}

static int ifd_dma_avail(struct rdm_backend *b, uint64_t *avail)
{
	(void)b;
	*avail = UINT64_MAX;
	return 0;
}

static void ifd_destroy(struct rdm_backend *b)
{
	struct ifd *t = to_ifd(b);

	rdm_maptree_fini(&t->shadow);
	rdm_free(t);
}

static const struct rdm_backend_ops ifd_ops = {
	.name = "iommufd",
	.map = ifd_map,
	.unmap = ifd_unmap,
	.dma_avail = ifd_dma_avail,
	.destroy = ifd_destroy,
};

/* Read the allowed ranges: outer bounds and the alignment. */
static int read_ranges(rdm_ioctl_fn fn, void *opaque, int fd, uint32_t ioas_id, struct rdm_backend_caps *caps)
{
	uint32_t n = 8;

	for (int attempt = 0; attempt < 4; attempt++) {
		struct rdm_iommu_iova_range *r = rdm_calloc(n, sizeof(*r));
		if (r == NULL)
			return rdm_fail(-ENOMEM, "iommufd create: out of memory");
		struct rdm_iommu_ioas_iova_ranges q;
		memset(&q, 0, sizeof(q));
		q.size = sizeof(q);
		q.ioas_id = ioas_id;
		q.num_iovas = n;
		q.allowed_iovas = (uint64_t)(uintptr_t)r;
		int rc = fn(opaque, fd, RDM_IOMMU_IOAS_IOVA_RANGES, &q);
		if (rc == -EMSGSIZE && q.num_iovas > n && q.num_iovas <= 4096) {
			n = q.num_iovas;
			rdm_free(r);
			continue;
		}
		if (rc < 0) {
			rdm_free(r);
			return rdm_fail(rc == -ENOTTY ? -EINVAL : rc,
					"iommufd create: IOMMU_IOAS_IOVA_RANGES on fd %d IOAS %" PRIu32 ": %s", fd,
					ioas_id, errname(rc));
		}
		if (q.num_iovas > n) {
			rdm_free(r);
			return rdm_fail(-EPROTO, "iommufd create: IOAS_IOVA_RANGES reports %" PRIu32
					" ranges for an array of %" PRIu32, q.num_iovas, n);
		}
		if (q.num_iovas > 0) {
			caps->iova_min = UINT64_MAX;
			caps->iova_max = 0;
		}
		for (uint32_t i = 0; i < q.num_iovas; i++) {
			if (r[i].start > r[i].last) {
				rdm_free(r);
				return rdm_fail(-EPROTO, "iommufd create: IOVA range %" PRIu32 " is reversed", i);
			}
			if (r[i].start < caps->iova_min)
				caps->iova_min = r[i].start;
			if (r[i].last > caps->iova_max)
				caps->iova_max = r[i].last;
		}
		rdm_free(r);
		uint64_t a = q.out_iova_alignment;
		if (a != 0 && (a & (a - 1)) == 0 && a > caps->page_size)
			caps->page_size = a;
		return 0;
	}
	return rdm_fail(-EPROTO, "iommufd create: IOAS_IOVA_RANGES kept asking for a larger array");
}

int rdm_backend_iommufd_create(int iommufd, uint32_t ioas_id, rdm_ioctl_fn ioctl_fn, void *ioctl_opaque,
			       struct rdm_backend **out)
{
	if (out == NULL)
		return rdm_fail(-EINVAL, "iommufd create: NULL out");
	if (iommufd < 0)
		return rdm_fail(-EINVAL, "iommufd create: bad iommufd %d", iommufd);
	if (ioctl_fn == NULL)
		ioctl_fn = rdm_default_ioctl;

	struct ifd *t = rdm_calloc(1, sizeof(*t));
	if (t == NULL)
		return rdm_fail(-ENOMEM, "iommufd create: out of memory");
	rdm_backend_init(&t->base, &ifd_ops);
	t->base.caps.semantics = RDM_SEM_IOMMUFD;
	t->base.caps.can_split = false;
	t->base.caps.has_unmap_all = true; /* IOVA 0, length UINT64_MAX (rdm never uses it) */
	t->base.caps.has_dma_avail = false;
	int rc = read_ranges(ioctl_fn, ioctl_opaque, iommufd, ioas_id, &t->base.caps);
	if (rc) {
		rdm_free(t);
		return rc;
	}
	t->ioctl_fn = ioctl_fn;
	t->opaque = ioctl_opaque;
	t->fd = iommufd;
	t->ioas_id = ioas_id;
	rdm_maptree_init(&t->shadow, 0);
	*out = &t->base;
	return 0;
}
