/* tests/vm/ioctl_record.c - record the vfio-type1 backend's ioctls on a real container; replay them against the fake kernel. */
#include "ioctl_record.h"

#include <errno.h>
#include <inttypes.h>
#include <linux/vfio.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include "guest_util.h"
#include "tests/iommu/fake_kernel.h"

static struct ir_call *push(struct ir_recorder *r)
{
	if (r->n == r->cap) {
		size_t cap = r->cap ? r->cap * 2 : 1024;
		struct ir_call *c = realloc(r->calls, cap * sizeof(*c));

		if (!c)
			abort(); /* a test program: out of memory ends it */
		r->calls = c;
		r->cap = cap;
	}
	memset(&r->calls[r->n], 0, sizeof(r->calls[0]));
	return &r->calls[r->n++];
}

void ir_decode_info(const void *buf, uint32_t argsz, struct ir_info *out)
{
	struct vfio_iommu_type1_info info;
	const unsigned char *b = buf;

	memset(out, 0, sizeof(*out));
	memcpy(&info, buf, sizeof(info));
	out->flags = info.flags;
	out->pgsizes = info.flags & VFIO_IOMMU_INFO_PGSIZES ? info.iova_pgsizes : 0;
	if (!(info.flags & VFIO_IOMMU_INFO_CAPS))
		return;
	if (info.argsz < argsz)
		argsz = info.argsz;
	/* Walk the chain forward only, every header inside the buffer. */
	for (uint32_t off = info.cap_offset, guard = 0; off && guard < 64; guard++) {
		struct vfio_info_cap_header h;

		if (off < sizeof(info) || off + sizeof(h) > argsz)
			return;
		memcpy(&h, b + off, sizeof(h));
		if (h.id == VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL &&
		    off + sizeof(struct vfio_iommu_type1_info_dma_avail) <= argsz) {
			struct vfio_iommu_type1_info_dma_avail d;

			memcpy(&d, b + off, sizeof(d));
			out->has_avail = true;
			out->avail = d.avail;
		} else if (h.id == VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE &&
			   off + sizeof(struct vfio_iommu_type1_info_cap_iova_range) <= argsz) {
			struct vfio_iommu_type1_info_cap_iova_range ir;
			size_t at = off + sizeof(ir);

			memcpy(&ir, b + off, sizeof(ir));
			for (uint32_t i = 0; i < ir.nr_iovas && out->nranges < IR_MAX_RANGES; i++) {
				struct vfio_iova_range v;

				if (at + sizeof(v) > argsz)
					break;
				memcpy(&v, b + at, sizeof(v));
				at += sizeof(v);
				out->range_start[out->nranges] = v.start;
				out->range_last[out->nranges] = v.end;
				out->nranges++;
			}
		}
		if (h.next <= off)
			return;
		off = h.next;
	}
}

int ir_ioctl(void *opaque, int fd, unsigned long request, void *arg)
{
	struct ir_recorder *r = opaque;
	struct ir_call *c = push(r);
	int rc;

	c->request = request;
	c->fd = fd;
	switch (request) {
	case VFIO_IOMMU_MAP_DMA: {
		const struct vfio_iommu_type1_dma_map *m = arg;

		c->argsz = m->argsz;
		c->flags = m->flags;
		c->iova = m->iova;
		c->size = m->size;
		c->vaddr = m->vaddr;
		break;
	}
	case VFIO_IOMMU_UNMAP_DMA: {
		const struct vfio_iommu_type1_dma_unmap *u = arg;

		c->argsz = u->argsz;
		c->flags = u->flags;
		c->iova = u->iova;
		c->size = u->size;
		break;
	}
	case VFIO_IOMMU_GET_INFO:
		c->argsz = ((const struct vfio_iommu_type1_info *)arg)->argsz;
		break;
	case VFIO_CHECK_EXTENSION:
		c->value = (uintptr_t)arg;
		break;
	default:
		break;
	}
	rc = ioctl(fd, request, arg);
	rc = rc < 0 ? -errno : rc;
	c->result = rc;
	if (request == VFIO_IOMMU_UNMAP_DMA)
		c->size_after = ((const struct vfio_iommu_type1_dma_unmap *)arg)->size;
	if (request == VFIO_IOMMU_GET_INFO && rc == 0)
		ir_decode_info(arg, c->argsz, &c->info);
	if (request == VFIO_IOMMU_MAP_DMA || request == VFIO_IOMMU_UNMAP_DMA) {
		request == VFIO_IOMMU_MAP_DMA ? r->maps++ : r->unmaps++;
		if (rc < 0)
			r->failed++;
	}
	return rc;
}

void ir_free(struct ir_recorder *r)
{
	free(r->calls);
	memset(r, 0, sizeof(*r));
}

static bool info_equal(const struct ir_info *a, const struct ir_info *b)
{
	if (a->flags != b->flags || a->pgsizes != b->pgsizes || a->has_avail != b->has_avail ||
	    (a->has_avail && a->avail != b->avail) || a->nranges != b->nranges)
		return false;
	for (unsigned i = 0; i < a->nranges; i++)
		if (a->range_start[i] != b->range_start[i] || a->range_last[i] != b->range_last[i])
			return false;
	return true;
}

static const char *req_name(unsigned long request)
{
	switch (request) {
	case VFIO_IOMMU_MAP_DMA: return "MAP_DMA";
	case VFIO_IOMMU_UNMAP_DMA: return "UNMAP_DMA";
	case VFIO_IOMMU_GET_INFO: return "GET_INFO";
	case VFIO_CHECK_EXTENSION: return "CHECK_EXTENSION";
	default: return "other";
	}
}

enum { K_MAP, K_UNMAP, K_INFO, K_EXT, K_OTHER, K_N };

static int kind_of(unsigned long request)
{
	switch (request) {
	case VFIO_IOMMU_MAP_DMA: return K_MAP;
	case VFIO_IOMMU_UNMAP_DMA: return K_UNMAP;
	case VFIO_IOMMU_GET_INFO: return K_INFO;
	case VFIO_CHECK_EXTENSION: return K_EXT;
	default: return K_OTHER;
	}
}

size_t ir_validate_fake(const struct ir_recorder *r, uint64_t limit, const char *what)
{
	struct fake_kernel_config cfg = { .mode = FAKE_TYPE1, .unmap_all = true, .dma_avail_cap = true };
	struct fake_kernel fk;
	size_t calls[K_N] = { 0 }, bad[K_N] = { 0 }, rejected[K_N] = { 0 }, mismatches = 0;
	bool configured = false;

	if (r->n == 0) {
		gu_tap_ok(false, "%s: the backend issued ioctls to compare", what);
		return 1;
	}
	cfg.fd = r->calls[0].fd;
	cfg.limit = limit;
	for (size_t i = 0; i < r->n && !configured; i++) {
		const struct ir_call *c = &r->calls[i];

		if (c->request == VFIO_IOMMU_GET_INFO && c->result == 0) {
			cfg.pgsizes = c->info.pgsizes;
			cfg.nranges = c->info.nranges;
			for (unsigned k = 0; k < c->info.nranges && k < FAKE_MAX_RANGES; k++) {
				cfg.range_start[k] = c->info.range_start[k];
				cfg.range_last[k] = c->info.range_last[k];
			}
			configured = true;
		}
	}
	if (fake_kernel_init(&fk, &cfg) != 0) {
		gu_tap_ok(false, "%s: fake kernel created", what);
		return 1;
	}

	for (size_t i = 0; i < r->n; i++) {
		const struct ir_call *c = &r->calls[i];
		int k = kind_of(c->request), rc;
		bool same;
		char got[160] = "";

		calls[k]++;
		if (c->result < 0)
			rejected[k]++;
		switch (k) {
		case K_MAP: {
			struct vfio_iommu_type1_dma_map m = { .argsz = c->argsz, .flags = c->flags, .iova = c->iova,
							      .size = c->size, .vaddr = c->vaddr };

			rc = fake_kernel_ioctl(&fk, c->fd, c->request, &m);
			same = rc == c->result;
			snprintf(got, sizeof(got), "fake %d", rc);
			break;
		}
		case K_UNMAP: {
			struct vfio_iommu_type1_dma_unmap u = { .argsz = c->argsz, .flags = c->flags, .iova = c->iova,
								.size = c->size };

			rc = fake_kernel_ioctl(&fk, c->fd, c->request, &u);
			same = rc == c->result && u.size == c->size_after;
			snprintf(got, sizeof(got), "fake %d size 0x%" PRIx64 ", kernel size 0x%" PRIx64, rc,
				 (uint64_t)u.size, c->size_after);
			break;
		}
		case K_INFO: {
			uint64_t *buf = calloc((c->argsz + 7) / 8 + 1, 8);
			struct vfio_iommu_type1_info info = { .argsz = c->argsz };
			struct ir_info fi;

			if (!buf)
				abort();
			memcpy(buf, &info, sizeof(info));
			rc = fake_kernel_ioctl(&fk, c->fd, c->request, buf);
			memset(&fi, 0, sizeof(fi));
			if (rc == 0)
				ir_decode_info(buf, c->argsz, &fi);
			same = rc == c->result && (rc != 0 || info_equal(&fi, &c->info));
			snprintf(got, sizeof(got), "fake %d flags 0x%x pgsizes 0x%" PRIx64 " avail %u/%d ranges %u; kernel flags 0x%x pgsizes 0x%" PRIx64 " avail %u/%d ranges %u",
				 rc, fi.flags, fi.pgsizes, fi.avail, fi.has_avail, fi.nranges, c->info.flags,
				 c->info.pgsizes, c->info.avail, c->info.has_avail, c->info.nranges);
			free(buf);
			break;
		}
		case K_EXT:
			rc = fake_kernel_ioctl(&fk, c->fd, c->request, (void *)(uintptr_t)c->value);
			same = rc == c->result;
			snprintf(got, sizeof(got), "fake %d for extension %" PRIu64, rc, c->value);
			break;
		default:
			rc = 0;
			same = true; /* the backend issues nothing else */
			break;
		}
		if (!same) {
			bad[k]++;
			if (mismatches++ < 8)
				gu_tap_diag("%s: call %zu %s iova 0x%" PRIx64 " size 0x%" PRIx64 ": kernel %d, %s", what, i,
					    req_name(c->request), c->iova, c->size, c->result, got);
		}
	}
	gu_tap_ok(bad[K_MAP] == 0, "%s: the fake answers all %zu MAP_DMA as the kernel did (%zu rejected by both)",
		  what, calls[K_MAP], rejected[K_MAP]);
	gu_tap_ok(bad[K_UNMAP] == 0,
		  "%s: the fake answers all %zu UNMAP_DMA as the kernel did, same unmapped sizes (%zu rejected by both)",
		  what, calls[K_UNMAP], rejected[K_UNMAP]);
	gu_tap_ok(bad[K_INFO] == 0 && bad[K_EXT] == 0,
		  "%s: the fake answers all %zu GET_INFO (page sizes, IOVA ranges, DMA_AVAIL) and %zu CHECK_EXTENSION as the kernel did",
		  what, calls[K_INFO], calls[K_EXT]);
	gu_tap_ok(fk.violations == 0 && calls[K_OTHER] == 0,
		  "%s: no call the fake flags as malformed (%u%s%s), no other ioctl (%zu)", what, fk.violations,
		  fk.violations ? ": " : "", fk.last_violation, calls[K_OTHER]);
	fake_kernel_fini(&fk);
	return mismatches;
}
