/* SPDX-License-Identifier: MIT */
/* tests/iommu/fake_kernel.c - a fake VFIO type1 container / iommufd IOAS for the real backends. */
#include "fake_kernel.h"

#include <errno.h>
#include <linux/vfio.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "iommu/iommufd_abi.h"

__attribute__((format(printf, 2, 3)))
static void violation(struct fake_kernel *fk, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(fk->last_violation, sizeof(fk->last_violation), fmt, ap);
	va_end(ap);
	fk->violations++;
}

static struct fake_call *record(struct fake_kernel *fk, int fd, unsigned long request)
{
	if (fk->ncalls == fk->cap) {
		size_t cap = fk->cap ? fk->cap * 2 : 64;
		struct fake_call *c = realloc(fk->calls, cap * sizeof(*c));
		if (c == NULL)
			abort();
		fk->calls = c;
		fk->cap = cap;
	}
	struct fake_call *c = &fk->calls[fk->ncalls++];
	memset(c, 0, sizeof(*c));
	c->request = request;
	c->fd = fd;
	return c;
}

static uint64_t min_page(const struct fake_kernel *fk)
{
	uint64_t p = fk->cfg.pgsizes ? fk->cfg.pgsizes : 4096;
	return p & (~p + 1);
}

static bool in_ranges(const struct fake_kernel *fk, uint64_t iova, uint64_t size)
{
	if (fk->cfg.nranges == 0)
		return true;
	for (unsigned i = 0; i < fk->cfg.nranges; i++)
		if (iova >= fk->cfg.range_start[i] && iova + size - 1 <= fk->cfg.range_last[i])
			return true;
	return false;
}

int fake_kernel_init(struct fake_kernel *fk, const struct fake_kernel_config *cfg)
{
	memset(fk, 0, sizeof(*fk));
	fk->cfg = *cfg;
	struct rdm_sim_config sc = {
		.struct_size = sizeof(sc),
		.semantics = cfg->mode == FAKE_IOMMUFD ? RDM_SEM_IOMMUFD : RDM_SEM_TYPE1V2,
		.limit = cfg->limit,
	};
	return rdm_backend_sim_create(&sc, &fk->model);
}

void fake_kernel_fini(struct fake_kernel *fk)
{
	rdm_backend_destroy(fk->model);
	free(fk->calls);
	memset(fk, 0, sizeof(*fk));
}

void fake_kernel_fail_next(struct fake_kernel *fk, unsigned long request, int err)
{
	fk->fail_request = request;
	fk->fail_err = err;
}

const struct fake_call *fake_kernel_last(const struct fake_kernel *fk)
{
	return fk->ncalls ? &fk->calls[fk->ncalls - 1] : NULL;
}

static uint64_t mappings(const struct fake_kernel *fk)
{
	struct rdm_backend_stats st;
	rdm_backend_get_stats(fk->model, &st);
	return st.mappings;
}

/* ------------------------------------------------------------ type1 */

static int t1_check_extension(struct fake_kernel *fk, struct fake_call *c, void *arg)
{
	c->arg_value = (uintptr_t)arg;
	switch (c->arg_value) {
	case VFIO_TYPE1_IOMMU:
		return 1;
	case VFIO_TYPE1v2_IOMMU:
		return fk->cfg.no_type1v2 ? 0 : 1;
	case VFIO_UNMAP_ALL:
		return fk->cfg.unmap_all ? 1 : 0;
	default:
		return 0;
	}
}

static void put(unsigned char *buf, size_t *off, const void *p, size_t n)
{
	memcpy(buf + *off, p, n);
	*off += (n + 7) & ~(size_t)7;
}

static int t1_get_info(struct fake_kernel *fk, struct fake_call *c, void *arg)
{
	struct vfio_iommu_type1_info info;
	const size_t minsz = offsetof(struct vfio_iommu_type1_info, cap_offset) + sizeof(uint32_t);

	memcpy(&info, arg, minsz);
	c->argsz = info.argsz;
	if (info.argsz < minsz) {
		violation(fk, "GET_INFO argsz %u < %zu", info.argsz, minsz);
		return -EINVAL;
	}

	/* Build the capability chain as the kernel lays it out: 8-aligned,
	 * starting right after struct vfio_iommu_type1_info. */
	unsigned char chain[8192];
	size_t off = sizeof(info);
	size_t prev = 0;
	memset(chain, 0, sizeof(chain));
	if (fk->cfg.pad_cap >= sizeof(struct vfio_info_cap_header) && fk->cfg.pad_cap <= 4096) {
		struct vfio_info_cap_header h = { .id = 0x7777, .version = 1 };
		memcpy(chain + off, &h, sizeof(h));
		prev = off;
		off += (fk->cfg.pad_cap + 7) & ~(size_t)7;
	}
	if (fk->cfg.migration_cap) {
		if (prev)
			((struct vfio_info_cap_header *)(void *)(chain + prev))->next = (uint32_t)off;
		struct vfio_iommu_type1_info_cap_migration m = {
			.header = { .id = VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION, .version = 1 },
			.pgsize_bitmap = 4096,
			.max_dirty_bitmap_size = 1 << 20,
		};
		prev = off;
		put(chain, &off, &m, sizeof(m));
	}
	if (fk->cfg.nranges) {
		struct vfio_iommu_type1_info_cap_iova_range r = {
			.header = { .id = VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE, .version = 1 },
			.nr_iovas = fk->cfg.nranges,
		};
		if (prev)
			((struct vfio_info_cap_header *)(void *)(chain + prev))->next = (uint32_t)off;
		prev = off;
		size_t o = off;
		memcpy(chain + o, &r, sizeof(r));
		o += sizeof(r);
		for (unsigned i = 0; i < fk->cfg.nranges; i++) {
			struct vfio_iova_range vr = { fk->cfg.range_start[i], fk->cfg.range_last[i] };
			memcpy(chain + o, &vr, sizeof(vr));
			o += sizeof(vr);
		}
		off = (o + 7) & ~(size_t)7;
	}
	if (fk->cfg.dma_avail_cap) {
		uint64_t limit = fk->cfg.limit ? fk->cfg.limit : 65535;
		struct vfio_iommu_type1_info_dma_avail d = {
			.header = { .id = VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL, .version = 1 },
			.avail = (uint32_t)(limit - mappings(fk)),
		};
		if (prev)
			((struct vfio_info_cap_header *)(void *)(chain + prev))->next = (uint32_t)off;
		prev = off;
		put(chain, &off, &d, sizeof(d));
	}
	if (fk->cfg.bad_chain && prev)
		((struct vfio_info_cap_header *)(void *)(chain + prev))->next = (uint32_t)sizeof(info);

	info.flags = VFIO_IOMMU_INFO_PGSIZES;
	info.iova_pgsizes = fk->cfg.pgsizes ? fk->cfg.pgsizes : 4096;
	info.cap_offset = 0;
	if (off > sizeof(info)) {
		info.flags |= VFIO_IOMMU_INFO_CAPS;
		if (info.argsz < off) {
			info.argsz = (uint32_t)off; /* tell the caller what it needs */
		} else {
			memcpy((unsigned char *)arg + sizeof(info), chain + sizeof(info), off - sizeof(info));
			info.cap_offset = sizeof(info);
		}
	}
	memcpy(arg, &info, minsz); /* the kernel copies back only minsz */
	return 0;
}

static int t1_map(struct fake_kernel *fk, struct fake_call *c, void *arg)
{
	struct vfio_iommu_type1_dma_map m;
	const size_t minsz = offsetof(struct vfio_iommu_type1_dma_map, size) + sizeof(uint64_t);

	memcpy(&m, arg, sizeof(m));
	c->argsz = m.argsz;
	c->flags = m.flags;
	c->iova = m.iova;
	c->size = m.size;
	c->vaddr = m.vaddr;
	if (m.argsz < minsz) {
		violation(fk, "MAP_DMA argsz %u < %zu", m.argsz, minsz);
		return -EINVAL;
	}
	if (m.flags & ~(uint32_t)(VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE | VFIO_DMA_MAP_FLAG_VADDR))
		return -EINVAL;
	if (m.flags != (VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE))
		violation(fk, "MAP_DMA flags 0x%x, want READ|WRITE", m.flags);
	if (m.flags & VFIO_DMA_MAP_FLAG_VADDR)
		return -EINVAL; /* no vaddr was invalidated */
	uint64_t pg = min_page(fk);
	if (m.size == 0 || ((m.iova | m.size | m.vaddr) & (pg - 1)))
		return -EINVAL;
	if (m.iova + m.size - 1 < m.iova || m.vaddr + m.size - 1 < m.vaddr)
		return -EINVAL;
	if (!in_ranges(fk, m.iova, m.size))
		return -EINVAL;
	return rdm_backend_map(fk->model, m.iova, m.size, m.vaddr);
}

static int t1_unmap(struct fake_kernel *fk, struct fake_call *c, void *arg)
{
	struct vfio_iommu_type1_dma_unmap u;
	const size_t minsz = offsetof(struct vfio_iommu_type1_dma_unmap, size) + sizeof(uint64_t);

	memcpy(&u, arg, sizeof(u));
	c->argsz = u.argsz;
	c->flags = u.flags;
	c->iova = u.iova;
	c->size = u.size;
	if (u.argsz < minsz) {
		violation(fk, "UNMAP_DMA argsz %u < %zu", u.argsz, minsz);
		return -EINVAL;
	}
	if (u.flags != 0) {
		violation(fk, "UNMAP_DMA flags 0x%x (rdm never unmaps all or dirty-tracks)", u.flags);
		return -EINVAL;
	}
	uint64_t pg = min_page(fk);
	if (u.size == 0 || ((u.iova | u.size) & (pg - 1)) || u.iova + u.size - 1 < u.iova)
		return -EINVAL;
	uint64_t done = 0;
	int rc = rdm_backend_unmap(fk->model, u.iova, u.size, &done);
	if (rc)
		return rc; /* size not written back */
	u.size = done;
	memcpy(arg, &u, minsz);
	c->written_size = done;
	return 0;
}

/* ---------------------------------------------------------- iommufd */

static int ifd_ranges(struct fake_kernel *fk, struct fake_call *c, void *arg)
{
	struct rdm_iommu_ioas_iova_ranges q;

	memcpy(&q, arg, sizeof(q));
	c->argsz = q.size;
	if (q.size < sizeof(q)) {
		violation(fk, "IOAS_IOVA_RANGES size %u < %zu", q.size, sizeof(q));
		return -EINVAL;
	}
	if (q.reserved != 0)
		return -EOPNOTSUPP;
	if (q.ioas_id != fk->cfg.ioas_id)
		return -ENOENT;
	unsigned n = fk->cfg.nranges ? fk->cfg.nranges : 1;
	if (q.num_iovas < n) {
		q.num_iovas = n;
		memcpy(arg, &q, sizeof(q));
		return -EMSGSIZE;
	}
	struct rdm_iommu_iova_range *out = (struct rdm_iommu_iova_range *)(uintptr_t)q.allowed_iovas;
	for (unsigned i = 0; i < n; i++) {
		out[i].start = fk->cfg.nranges ? fk->cfg.range_start[i] : 0;
		out[i].last = fk->cfg.nranges ? fk->cfg.range_last[i] : UINT64_MAX;
	}
	q.num_iovas = n;
	q.out_iova_alignment = min_page(fk);
	memcpy(arg, &q, sizeof(q));
	return 0;
}

static int ifd_map(struct fake_kernel *fk, struct fake_call *c, void *arg)
{
	struct rdm_iommu_ioas_map m;
	const uint32_t known = RDM_IOMMU_IOAS_MAP_FIXED_IOVA | RDM_IOMMU_IOAS_MAP_READABLE |
			       RDM_IOMMU_IOAS_MAP_WRITEABLE;

	memcpy(&m, arg, sizeof(m));
	c->argsz = m.size;
	c->flags = m.flags;
	c->iova = m.iova;
	c->size = m.length;
	c->vaddr = m.user_va;
	if (m.size < sizeof(m)) {
		violation(fk, "IOAS_MAP size %u < %zu", m.size, sizeof(m));
		return -EINVAL;
	}
	if ((m.flags & ~known) || m.reserved != 0) {
		violation(fk, "IOAS_MAP flags 0x%x reserved %u", m.flags, m.reserved);
		return -EOPNOTSUPP;
	}
	if (m.flags != known)
		violation(fk, "IOAS_MAP flags 0x%x, want FIXED_IOVA|READABLE|WRITEABLE", m.flags);
	if (!(m.flags & RDM_IOMMU_IOAS_MAP_FIXED_IOVA))
		return -EINVAL; /* the fake allocates no IOVA */
	if (m.ioas_id != fk->cfg.ioas_id)
		return -ENOENT;
	uint64_t pg = min_page(fk);
	if (m.length == 0 || ((m.iova | m.length) & (pg - 1)))
		return -EINVAL;
	if (m.iova + m.length - 1 < m.iova || m.user_va + m.length - 1 < m.user_va)
		return -EOVERFLOW;
	if (!in_ranges(fk, m.iova, m.length))
		return -ENOENT;
	return rdm_backend_map(fk->model, m.iova, m.length, m.user_va);
}

static int unmap_all_one(void *opaque, uint64_t iova, uint64_t size, uint64_t vaddr)
{
	(void)vaddr;
	uint64_t *acc = opaque;
	acc[acc[0] * 2 + 1] = iova;
	acc[acc[0] * 2 + 2] = size;
	acc[0]++;
	return acc[0] >= 255 ? 1 : 0;
}

static int ifd_unmap(struct fake_kernel *fk, struct fake_call *c, void *arg)
{
	struct rdm_iommu_ioas_unmap u;

	memcpy(&u, arg, sizeof(u));
	c->argsz = u.size;
	c->iova = u.iova;
	c->size = u.length;
	if (u.size < sizeof(u)) {
		violation(fk, "IOAS_UNMAP size %u < %zu", u.size, sizeof(u));
		return -EINVAL;
	}
	if (u.ioas_id != fk->cfg.ioas_id)
		return -ENOENT;
	uint64_t done = 0;
	if (u.iova == 0 && u.length == UINT64_MAX) {
		violation(fk, "IOAS_UNMAP of everything (rdm never does that)");
		uint64_t acc[1 + 2 * 256];
		do {
			acc[0] = 0;
			rdm_sim_for_each_mapping(fk->model, unmap_all_one, acc);
			for (uint64_t i = 0; i < acc[0]; i++) {
				uint64_t d = 0;
				rdm_backend_unmap(fk->model, acc[2 * i + 1], acc[2 * i + 2], &d);
				done += d;
			}
		} while (acc[0] != 0);
	} else {
		uint64_t pg = min_page(fk);
		if (u.length == 0 || ((u.iova | u.length) & (pg - 1)))
			return -EINVAL;
		if (u.iova + u.length - 1 < u.iova)
			return -EOVERFLOW;
		int rc = rdm_backend_unmap(fk->model, u.iova, u.length, &done);
		if (rc)
			return rc;
	}
	u.length = done;
	memcpy(arg, &u, sizeof(u));
	c->written_size = done;
	return 0;
}

int fake_kernel_ioctl(void *opaque, int fd, unsigned long request, void *arg)
{
	struct fake_kernel *fk = opaque;
	struct fake_call *c = record(fk, fd, request);
	int rc;

	if (fd != fk->cfg.fd) {
		rc = -EBADF;
	} else if (fk->fail_err && fk->fail_request == request) {
		rc = fk->fail_err;
		fk->fail_err = 0;
	} else if (fk->cfg.mode == FAKE_TYPE1) {
		switch (request) {
		case VFIO_CHECK_EXTENSION:
			rc = t1_check_extension(fk, c, arg);
			break;
		case VFIO_IOMMU_GET_INFO:
			rc = t1_get_info(fk, c, arg);
			break;
		case VFIO_IOMMU_MAP_DMA:
			rc = t1_map(fk, c, arg);
			break;
		case VFIO_IOMMU_UNMAP_DMA:
			rc = t1_unmap(fk, c, arg);
			break;
		default:
			rc = -ENOTTY;
		}
	} else {
		switch (request) {
		case RDM_IOMMU_IOAS_IOVA_RANGES:
			rc = ifd_ranges(fk, c, arg);
			break;
		case RDM_IOMMU_IOAS_MAP:
			rc = ifd_map(fk, c, arg);
			break;
		case RDM_IOMMU_IOAS_UNMAP:
			rc = ifd_unmap(fk, c, arg);
			break;
		default:
			rc = -ENOTTY;
		}
	}
	c->result = rc;
	return rc;
}
