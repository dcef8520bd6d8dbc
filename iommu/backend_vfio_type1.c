/* SPDX-License-Identifier: MIT */
/*
 * iommu/backend_vfio_type1.c - the vfio-type1 backend: MAP_DMA / UNMAP_DMA
 * on a container the VMM set up, and a helper that sets one up for tools.
 *
 * Every ioctl goes through the backend's rdm_ioctl_fn, so a fake kernel can
 * stand behind it. At creation the container must offer VFIO_TYPE1v2_IOMMU
 * (its UNMAP rules are the ones rdm plans for); VFIO_UNMAP_ALL is recorded
 * (never used: the container may hold the VMM's other mappings);
 * VFIO_IOMMU_GET_INFO's capability chain gives the IOMMU page sizes, the
 * usable IOVA ranges and, if present, the remaining-mappings count
 * (DMA_AVAIL), which is read again on every rdm_backend_dma_avail().
 *
 * The backend keeps a shadow of the mappings it made (iommu/maptree.c) so
 * its stats count mappings exactly although the kernel reports only bytes:
 * a successful type1v2 UNMAP never bisects, so every shadow mapping that
 * starts inside the range went away whole.
 *
 * Invariants:
 *  1. The shadow holds exactly the mappings this backend made that the
 *     kernel has not reported unmapped (room for an insert is reserved
 *     before MAP_DMA is issued, so a mapping the kernel made is never lost).
 *  2. Nothing in a reply is trusted: each capability header and body is
 *     bounds-checked against the buffer and the argsz the kernel returned,
 *     and the chain must move forward, so a malformed chain cannot loop.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/vfio.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/error.h"
#include "iommu/backend.h"
#include "iommu/maptree.h"

struct type1 {
	struct rdm_backend base;
	rdm_ioctl_fn ioctl_fn;
	void *opaque;
	int fd;
	struct rdm_maptree shadow;
};

/* What one VFIO_IOMMU_GET_INFO told us. */
struct type1_info {
	uint64_t pgsizes; /* 0 if not reported */
	bool has_range;
	uint64_t iova_min, iova_max;
	bool has_dma_avail;
	uint32_t dma_avail;
};

static struct type1 *to_type1(struct rdm_backend *b)
{
	return (struct type1 *)b;
}

static const char *errname(int err)
{
	const char *s = strerrordesc_np(-err);
	return s ? s : "unknown error";
}

/* Walk the capability chain in buf (valid bytes: len). */
static int parse_caps(const unsigned char *buf, size_t len, uint32_t first, struct type1_info *out)
{
	size_t off = first;
	unsigned hops = 0;

	while (off != 0) {
		struct vfio_info_cap_header h;

		if (off < offsetof(struct vfio_iommu_type1_info, cap_offset) + sizeof(uint32_t) ||
		    off % 4 != 0 || off + sizeof(h) > len || ++hops > 64)
			return rdm_fail(-EPROTO,
					"vfio-type1: GET_INFO capability at offset %zu outside the %zu-byte reply",
					off, len);
		memcpy(&h, buf + off, sizeof(h));
		if (h.id == VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL) {
			struct vfio_iommu_type1_info_dma_avail c;
			if (off + sizeof(c) > len)
				return rdm_fail(-EPROTO, "vfio-type1: DMA_AVAIL capability truncated");
			memcpy(&c, buf + off, sizeof(c));
			out->has_dma_avail = true;
			out->dma_avail = c.avail;
		} else if (h.id == VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE) {
			struct vfio_iommu_type1_info_cap_iova_range c;
			if (off + sizeof(c) > len)
				return rdm_fail(-EPROTO, "vfio-type1: IOVA_RANGE capability truncated");
			memcpy(&c, buf + off, sizeof(c));
			if (c.nr_iovas == 0 ||
			    c.nr_iovas > (len - off - sizeof(c)) / sizeof(struct vfio_iova_range))
				return rdm_fail(-EPROTO,
						"vfio-type1: IOVA_RANGE capability with %" PRIu32
						" ranges does not fit the reply",
						c.nr_iovas);
			out->iova_min = UINT64_MAX;
			out->iova_max = 0;
			for (uint32_t i = 0; i < c.nr_iovas; i++) {
				struct vfio_iova_range r;
				memcpy(&r, buf + off + sizeof(c) + i * sizeof(r), sizeof(r));
				if (r.start > r.end)
					return rdm_fail(-EPROTO, "vfio-type1: IOVA range %" PRIu32 " is reversed", i);
				if (r.start < out->iova_min)
					out->iova_min = r.start;
				if (r.end > out->iova_max)
					out->iova_max = r.end;
			}
			out->has_range = true;
		}
		if (h.next != 0 && h.next <= off)
			return rdm_fail(-EPROTO, "vfio-type1: GET_INFO capability chain goes backwards at %zu",
					off);
		off = h.next;
	}
	return 0;
}

static int get_info(rdm_ioctl_fn fn, void *opaque, int fd, struct type1_info *out)
{
	size_t cap = 1024;

	*out = (struct type1_info){ 0 };
	for (int attempt = 0; attempt < 4; attempt++) {
		/* uint64_t elements: the reply holds 64-bit fields. */
		uint64_t *mem = rdm_calloc(cap / sizeof(uint64_t), sizeof(uint64_t));
		if (mem == NULL)
			return rdm_fail(-ENOMEM, "vfio-type1: out of memory for GET_INFO");
		struct vfio_iommu_type1_info info = { .argsz = (uint32_t)cap };
		memcpy(mem, &info, sizeof(info));
		int rc = fn(opaque, fd, VFIO_IOMMU_GET_INFO, mem);
		if (rc < 0) {
			rdm_free(mem);
			return rdm_fail(rc, "vfio-type1: VFIO_IOMMU_GET_INFO: %s", errname(rc));
		}
		memcpy(&info, mem, sizeof(info));
		if (info.argsz > cap) {
			/* The chain did not fit: the kernel says how much it needs. */
			cap = (info.argsz + 7) & ~(size_t)7;
			rdm_free(mem);
			continue;
		}
		if (info.flags & VFIO_IOMMU_INFO_PGSIZES)
			out->pgsizes = info.iova_pgsizes;
		rc = 0;
		if ((info.flags & VFIO_IOMMU_INFO_CAPS) && info.cap_offset != 0)
			rc = parse_caps((const unsigned char *)mem, info.argsz, info.cap_offset, out);
		rdm_free(mem);
		return rc;
	}
	return rdm_fail(-EPROTO, "vfio-type1: GET_INFO kept asking for a larger buffer");
}

static int type1_map(struct rdm_backend *b, uint64_t iova, uint64_t size, uint64_t vaddr)
{
	struct type1 *t = to_type1(b);

	if (rdm_maptree_reserve(&t->shadow, 1) != 0)
		return rdm_fail(-ENOMEM, "vfio-type1: out of memory for the mapping shadow");
	struct vfio_iommu_type1_dma_map m = {
		.argsz = sizeof(m),
		.flags = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE,
		.vaddr = vaddr,
		.iova = iova,
		.size = size,
	};
	int rc = t->ioctl_fn(t->opaque, t->fd, VFIO_IOMMU_MAP_DMA, &m);
	if (rc < 0)
		return rdm_fail(rc, "vfio-type1: VFIO_IOMMU_MAP_DMA 0x%" PRIx64 "+0x%" PRIx64 ": %s",
				iova, size, errname(rc));
	(void)rdm_maptree_insert(&t->shadow, iova, size); /* reserved: cannot fail */
	return 0;
}

static int type1_unmap(struct rdm_backend *b, uint64_t iova, uint64_t size, struct rdm_unmap_result *res)
{
	struct type1 *t = to_type1(b);
	struct vfio_iommu_type1_dma_unmap u = {
		.argsz = sizeof(u),
		.flags = 0,
		.iova = iova,
		.size = size,
	};
	int rc = t->ioctl_fn(t->opaque, t->fd, VFIO_IOMMU_UNMAP_DMA, &u);
	if (rc < 0)
		return rdm_fail(rc, "vfio-type1: VFIO_IOMMU_UNMAP_DMA 0x%" PRIx64 "+0x%" PRIx64 ": %s",
				iova, size, errname(rc));
	uint64_t bytes = 0;
	rdm_maptree_remove_starts_in(&t->shadow, iova, iova + (size - 1), &res->removed, &bytes);
	rdm_maptree_trim(&t->shadow); /* no handle is kept across calls */
	res->bytes = u.size; /* the kernel writes the unmapped size back */
	return 0;
}

static int type1_dma_avail(struct rdm_backend *b, uint64_t *avail)
{
	struct type1 *t = to_type1(b);
	struct type1_info info;
	int rc = get_info(t->ioctl_fn, t->opaque, t->fd, &info);

	if (rc)
		return rc;
	*avail = info.has_dma_avail ? info.dma_avail : UINT64_MAX;
	return 0;
}

static void type1_destroy(struct rdm_backend *b)
{
	struct type1 *t = to_type1(b);

	rdm_maptree_fini(&t->shadow);
	rdm_free(t);
}

static const struct rdm_backend_ops type1_ops = {
	.name = "vfio-type1",
	.map = type1_map,
	.unmap = type1_unmap,
	.dma_avail = type1_dma_avail,
	.destroy = type1_destroy,
};

int rdm_backend_vfio_type1_create(int container_fd, rdm_ioctl_fn ioctl_fn, void *ioctl_opaque,
				  struct rdm_backend **out)
{
	if (out == NULL)
		return rdm_fail(-EINVAL, "vfio-type1 create: NULL out");
	if (container_fd < 0)
		return rdm_fail(-EINVAL, "vfio-type1 create: bad container fd %d", container_fd);
	if (ioctl_fn == NULL)
		ioctl_fn = rdm_default_ioctl;

	/* VFIO_CHECK_EXTENSION takes the extension by value, answers > 0 if present. */
	int rc = ioctl_fn(ioctl_opaque, container_fd, VFIO_CHECK_EXTENSION,
			  (void *)(uintptr_t)VFIO_TYPE1v2_IOMMU);
	if (rc < 0)
		return rdm_fail(rc == -ENOTTY ? -EINVAL : rc,
				"vfio-type1 create: fd %d: VFIO_CHECK_EXTENSION(TYPE1v2): %s", container_fd,
				errname(rc));
	if (rc == 0)
		return rdm_fail(-EINVAL, "vfio-type1 create: container fd %d does not offer the type1v2 IOMMU",
				container_fd);
	rc = ioctl_fn(ioctl_opaque, container_fd, VFIO_CHECK_EXTENSION, (void *)(uintptr_t)VFIO_UNMAP_ALL);
	if (rc < 0)
		return rdm_fail(rc, "vfio-type1 create: VFIO_CHECK_EXTENSION(UNMAP_ALL): %s", errname(rc));
	bool unmap_all = rc > 0;

	struct type1_info info;
	rc = get_info(ioctl_fn, ioctl_opaque, container_fd, &info);
	if (rc)
		return rc;

	struct type1 *t = rdm_calloc(1, sizeof(*t));
	if (t == NULL)
		return rdm_fail(-ENOMEM, "vfio-type1 create: out of memory");
	rdm_backend_init(&t->base, &type1_ops);
	t->base.caps.semantics = RDM_SEM_TYPE1V2;
	t->base.caps.can_split = false;
	t->base.caps.has_unmap_all = unmap_all;
	t->base.caps.has_dma_avail = info.has_dma_avail;
	if (info.pgsizes)
		t->base.caps.page_size = info.pgsizes & (~info.pgsizes + 1); /* smallest */
	if (info.has_range) {
		t->base.caps.iova_min = info.iova_min;
		t->base.caps.iova_max = info.iova_max;
	}
	t->ioctl_fn = ioctl_fn;
	t->opaque = ioctl_opaque;
	t->fd = container_fd;
	rdm_maptree_init(&t->shadow, 0);
	*out = &t->base;
	return 0;
}

int rdm_vfio_open_group(const char *group_path, int *container_fd, int *group_fd)
{
	int cfd = -1, gfd = -1, rc;
	struct vfio_group_status st = { .argsz = sizeof(st) };

	if (group_path == NULL || container_fd == NULL || group_fd == NULL)
		return rdm_fail(-EINVAL, "vfio open group: NULL argument");
	cfd = open("/dev/vfio/vfio", O_RDWR | O_CLOEXEC);
	if (cfd < 0) {
		rc = -errno;
		return rdm_fail(rc, "vfio open group: open /dev/vfio/vfio: %s", errname(rc));
	}
	rc = rdm_default_ioctl(NULL, cfd, VFIO_GET_API_VERSION, NULL);
	if (rc != VFIO_API_VERSION) {
		rc = rc < 0 ? rc : -EINVAL;
		rdm_fail(rc, "vfio open group: VFIO_GET_API_VERSION: %s",
			 rc == -EINVAL ? "unknown API version" : errname(rc));
		goto fail;
	}
	rc = rdm_default_ioctl(NULL, cfd, VFIO_CHECK_EXTENSION, (void *)(uintptr_t)VFIO_TYPE1v2_IOMMU);
	if (rc <= 0) {
		rc = rc < 0 ? rc : -EINVAL;
		rdm_fail(rc, "vfio open group: VFIO_CHECK_EXTENSION: no type1v2 IOMMU");
		goto fail;
	}
	gfd = open(group_path, O_RDWR | O_CLOEXEC);
	if (gfd < 0) {
		rc = -errno;
		rdm_fail(rc, "vfio open group: open %s: %s", group_path, errname(rc));
		goto fail;
	}
	rc = rdm_default_ioctl(NULL, gfd, VFIO_GROUP_GET_STATUS, &st);
	if (rc < 0) {
		rdm_fail(rc, "vfio open group: VFIO_GROUP_GET_STATUS on %s: %s", group_path, errname(rc));
		goto fail;
	}
	if (!(st.flags & VFIO_GROUP_FLAGS_VIABLE)) {
		rc = rdm_fail(-EINVAL,
			      "vfio open group: %s not viable (bind every device of the group to vfio-pci)",
			      group_path);
		goto fail;
	}
	rc = rdm_default_ioctl(NULL, gfd, VFIO_GROUP_SET_CONTAINER, &cfd);
	if (rc < 0) {
		rdm_fail(rc, "vfio open group: VFIO_GROUP_SET_CONTAINER: %s", errname(rc));
		goto fail;
	}
	rc = rdm_default_ioctl(NULL, cfd, VFIO_SET_IOMMU, (void *)(uintptr_t)VFIO_TYPE1v2_IOMMU);
	if (rc < 0) {
		rdm_fail(rc, "vfio open group: VFIO_SET_IOMMU(TYPE1v2): %s", errname(rc));
		goto fail;
	}
	*container_fd = cfd;
	*group_fd = gfd;
	return 0;
fail:
	if (gfd >= 0)
		close(gfd);
	close(cfd);
	return rc;
}
