/* SPDX-License-Identifier: MIT */
/*
 * tools/replay/sim_stub.c - a stand-in for the library's sim backend, linked
 * into rdm-replay only while the library does not provide
 * rdm_backend_sim_create() (tools/meson.build checks). It models the type1v2
 * rules the baselines meet: an overlapping map is -EEXIST, an unmap that
 * bisects a mapping is -EINVAL with nothing unmapped, an unmap over whole
 * mappings and holes is one call, the mapping limit gives -ENOSPC. It counts
 * calls, mappings and the cost model's time. No fault injection, no iommufd.
 *
 * Mappings live in a tsearch(3) tree ordered by IOVA whose comparison treats
 * overlapping intervals as equal, so a lookup of [a, b) finds some mapping
 * that overlaps it. Invariant: stored mappings never overlap.
 */
#include <errno.h>
#include <search.h>
#include <stdlib.h>
#include <string.h>

#include <rdm/backend.h>

struct stub_map {
	uint64_t iova, size, vaddr;
};

struct rdm_backend {
	void *root;
	struct rdm_sim_config cfg;
	struct rdm_backend_stats st;
};

static int cmp_overlap(const void *a, const void *b)
{
	const struct stub_map *x = a, *y = b;

	if (x->iova + x->size <= y->iova)
		return -1;
	if (y->iova + y->size <= x->iova)
		return 1;
	return 0;
}

int rdm_backend_sim_create(const struct rdm_sim_config *cfg, struct rdm_backend **out)
{
	struct rdm_backend *b;

	if (!cfg || !out)
		return -EINVAL;
	b = calloc(1, sizeof(*b));
	if (!b)
		return -ENOMEM;
	b->cfg = *cfg;
	if (!b->cfg.limit)
		b->cfg.limit = b->cfg.semantics == RDM_SEM_IOMMUFD ? RDM_SIM_UNLIMITED : 65535;
	if (!b->cfg.call_ns)
		b->cfg.call_ns = 2000;
	if (!b->cfg.page_ns)
		b->cfg.page_ns = 60;
	if (!b->cfg.page_size)
		b->cfg.page_size = 4096;
	*out = b;
	return 0;
}

static void charge(struct rdm_backend *b, uint64_t bytes)
{
	b->st.model_ns += b->cfg.call_ns + (bytes + b->cfg.page_size - 1) / b->cfg.page_size * b->cfg.page_ns;
}

int rdm_backend_map(struct rdm_backend *b, uint64_t iova, uint64_t size, uint64_t vaddr)
{
	struct stub_map key = { iova, size, vaddr }, *m;

	b->st.map_calls++;
	charge(b, 0);
	if (size == 0 || iova + size < iova || iova % b->cfg.page_size || size % b->cfg.page_size) {
		b->st.failed_calls++;
		return -EINVAL;
	}
	if (tfind(&key, &b->root, cmp_overlap)) {
		b->st.failed_calls++;
		return -EEXIST;
	}
	if (b->st.mappings >= b->cfg.limit) {
		b->st.failed_calls++;
		return -ENOSPC;
	}
	m = malloc(sizeof(*m));
	if (m)
		*m = key;
	if (!m || !tsearch(m, &b->root, cmp_overlap)) {
		free(m);
		b->st.failed_calls++;
		return -ENOMEM;
	}
	b->st.model_ns += (size + b->cfg.page_size - 1) / b->cfg.page_size * b->cfg.page_ns;
	b->st.mappings++;
	if (b->st.mappings > b->st.peak_mappings)
		b->st.peak_mappings = b->st.mappings;
	b->st.mapped_bytes += size;
	if (b->st.mapped_bytes > b->st.peak_mapped_bytes)
		b->st.peak_mapped_bytes = b->st.mapped_bytes;
	b->st.bytes_mapped += size;
	return 0;
}

int rdm_backend_unmap(struct rdm_backend *b, uint64_t iova, uint64_t size, uint64_t *unmapped)
{
	struct stub_map key, **p;
	uint64_t done = 0;

	b->st.unmap_calls++;
	charge(b, 0);
	if (unmapped)
		*unmapped = 0;
	if (size == 0 || iova + size < iova) {
		b->st.failed_calls++;
		return -EINVAL;
	}
	key = (struct stub_map){ iova, 1, 0 };
	p = tfind(&key, &b->root, cmp_overlap);
	if (p && (*p)->iova < iova) {
		b->st.failed_calls++;
		return -EINVAL;
	}
	key = (struct stub_map){ iova + size - 1, 1, 0 };
	p = tfind(&key, &b->root, cmp_overlap);
	if (p && (*p)->iova + (*p)->size > iova + size) {
		b->st.failed_calls++;
		return -EINVAL;
	}
	key = (struct stub_map){ iova, size, 0 };
	while ((p = tfind(&key, &b->root, cmp_overlap))) {
		struct stub_map *m = *p;

		tdelete(m, &b->root, cmp_overlap);
		done += m->size;
		b->st.mappings--;
		free(m);
	}
	b->st.mapped_bytes -= done;
	b->st.bytes_unmapped += done;
	b->st.model_ns += (done + b->cfg.page_size - 1) / b->cfg.page_size * b->cfg.page_ns;
	if (unmapped)
		*unmapped = done;
	return 0;
}

int rdm_backend_dma_avail(struct rdm_backend *b, uint64_t *avail)
{
	*avail = b->cfg.limit == RDM_SIM_UNLIMITED ? UINT64_MAX : b->cfg.limit - b->st.mappings;
	return 0;
}

void rdm_backend_get_caps(const struct rdm_backend *b, struct rdm_backend_caps *caps)
{
	memset(caps, 0, sizeof(*caps));
	caps->semantics = b->cfg.semantics;
	caps->has_dma_avail = true;
	caps->page_size = b->cfg.page_size;
	caps->iova_max = UINT64_MAX;
}

void rdm_backend_get_stats(const struct rdm_backend *b, struct rdm_backend_stats *st)
{
	*st = b->st;
}

const char *rdm_backend_name(const struct rdm_backend *b)
{
	(void)b;
	return "sim";
}

static void free_node(void *p)
{
	free(p);
}

void rdm_backend_destroy(struct rdm_backend *b)
{
	if (!b)
		return;
	tdestroy(b->root, free_node);
	free(b);
}

int rdm_backend_vfio_type1_create(int container_fd, rdm_ioctl_fn ioctl_fn, void *ioctl_opaque,
				  struct rdm_backend **out)
{
	(void)container_fd;
	(void)ioctl_fn;
	(void)ioctl_opaque;
	(void)out;
	return -ENOSYS;
}

int rdm_vfio_open_group(const char *group_path, int *container_fd, int *group_fd)
{
	(void)group_path;
	(void)container_fd;
	(void)group_fd;
	return -ENOSYS;
}
