/* SPDX-License-Identifier: MIT */
/*
 * tools/replay/strategy_base.c - the baselines: what VMMs do today.
 *
 *   qemu              vfio's RamDiscardListener: a populate notification maps
 *                     every block with its own call; a discard notification
 *                     is one unmap over its whole range (type1 accepts it: the
 *                     range covers whole one-block mappings and holes). On a
 *                     failed map QEMU unmaps the notification's range and the
 *                     request fails with the state unchanged. unplug_all is
 *                     one notification over the region.
 *   cloud-hypervisor  virtio-mem's state_change(): the plugged bitmap is set
 *                     first, then one map per block; one unmap per request. A
 *                     failed map leaves the bitmap set and the earlier blocks
 *                     mapped (nothing rolls back).
 *   naive             one call per block, both ways; a failed map unmaps the
 *                     blocks this request mapped, one call each.
 *
 * All are synchronous: apply() returns when its calls are done. They keep a
 * bitmap of populated blocks so that lenient requests map and unmap only the
 * blocks that change; the shipped workloads are strict.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "tools/replay/strategy.h"

enum base_kind { BASE_QEMU, BASE_CH, BASE_NAIVE };

struct base {
	enum base_kind kind;
	struct replay_geometry g;
	struct rdm_backend *b;
	uint64_t *bits;     /* one bit per block: populated */
	uint64_t populated; /* blocks */
	uint64_t failed;
};

static bool test_bit(const uint64_t *w, uint64_t i)
{
	return (w[i / 64] >> (i % 64)) & 1;
}

static void set_bit(uint64_t *w, uint64_t i, bool v)
{
	if (v)
		w[i / 64] |= UINT64_C(1) << (i % 64);
	else
		w[i / 64] &= ~(UINT64_C(1) << (i % 64));
}

static int base_create(enum base_kind kind, const struct replay_geometry *g, struct rdm_backend *b,
		       void **state)
{
	struct base *s = calloc(1, sizeof(*s));
	uint64_t blocks = g->size / g->block_size;

	if (!s)
		return -ENOMEM;
	s->bits = calloc((size_t)(blocks + 63) / 64, sizeof(uint64_t));
	if (!s->bits) {
		free(s);
		return -ENOMEM;
	}
	s->kind = kind;
	s->g = *g;
	s->b = b;
	*state = s;
	return 0;
}

static int qemu_create(const struct replay_geometry *g, struct rdm_backend *b, void **state)
{
	return base_create(BASE_QEMU, g, b, state);
}

static int ch_create(const struct replay_geometry *g, struct rdm_backend *b, void **state)
{
	return base_create(BASE_CH, g, b, state);
}

static int naive_create(const struct replay_geometry *g, struct rdm_backend *b, void **state)
{
	return base_create(BASE_NAIVE, g, b, state);
}

static int map_block(struct base *s, uint64_t blk)
{
	uint64_t off = blk * s->g.block_size;

	return rdm_backend_map(s->b, s->g.iova + off, s->g.block_size, s->g.host_addr + off);
}

static int unmap_range(struct base *s, uint64_t off, uint64_t len)
{
	return rdm_backend_unmap(s->b, s->g.iova + off, len, NULL);
}

static int base_populate(struct base *s, uint64_t first, uint64_t n)
{
	uint64_t bs = s->g.block_size;
	int rc = 0;

	if (s->kind == BASE_CH) {
		/* The bitmap is set before mapping and stays set on failure. */
		for (uint64_t i = first; i < first + n; i++) {
			if (!test_bit(s->bits, i)) {
				set_bit(s->bits, i, true);
				s->populated++;
			}
		}
		for (uint64_t i = first; i < first + n; i++) {
			rc = map_block(s, i);
			if (rc < 0)
				return rc;
		}
		return 0;
	}
	uint64_t i;
	for (i = first; i < first + n; i++) {
		if (test_bit(s->bits, i))
			continue;
		rc = map_block(s, i);
		if (rc < 0)
			break;
	}
	if (rc < 0) {
		if (s->kind == BASE_QEMU) {
			if (i > first)
				(void)unmap_range(s, first * bs, (i - first) * bs);
		} else {
			for (uint64_t j = first; j < i; j++)
				if (!test_bit(s->bits, j))
					(void)unmap_range(s, j * bs, bs);
		}
		return rc;
	}
	for (i = first; i < first + n; i++) {
		if (!test_bit(s->bits, i)) {
			set_bit(s->bits, i, true);
			s->populated++;
		}
	}
	return 0;
}

static int base_discard(struct base *s, uint64_t first, uint64_t n, bool all)
{
	uint64_t bs = s->g.block_size;
	int rc = 0;

	if (s->kind == BASE_NAIVE) {
		for (uint64_t i = first; i < first + n; i++) {
			if (!test_bit(s->bits, i))
				continue;
			int r = unmap_range(s, i * bs, bs);
			if (r < 0 && rc == 0)
				rc = r;
		}
	} else if (!all || s->populated) {
		rc = unmap_range(s, first * bs, n * bs);
	}
	/* A discard cannot be refused: the state changes whatever the backend said. */
	for (uint64_t i = first; i < first + n; i++) {
		if (test_bit(s->bits, i)) {
			set_bit(s->bits, i, false);
			s->populated--;
		}
	}
	return rc;
}

static int base_apply(void *state, const struct replay_req *req)
{
	struct base *s = state;
	uint64_t first = req->offset / s->g.block_size, n = req->length / s->g.block_size;
	int rc;

	switch (req->op) {
	case REPLAY_POPULATE: rc = base_populate(s, first, n); break;
	case REPLAY_DISCARD: rc = base_discard(s, first, n, false); break;
	case REPLAY_DISCARD_ALL: rc = base_discard(s, 0, s->g.size / s->g.block_size, true); break;
	default: rc = -EINVAL; break;
	}
	if (rc < 0)
		s->failed++;
	return rc;
}

static void base_stats(void *state, struct replay_strategy_stats *st)
{
	const struct base *s = state;

	st->failed_requests = s->failed;
}

static void base_destroy(void *state)
{
	struct base *s = state;

	if (s) {
		free(s->bits);
		free(s);
	}
}

const struct replay_strategy replay_strategy_qemu = {
	.name = "qemu",
	.help = "QEMU's vfio listener: one map per block, one unmap per discard notification",
	.baseline = true,
	.create = qemu_create,
	.apply = base_apply,
	.stats = base_stats,
	.destroy = base_destroy,
};

const struct replay_strategy replay_strategy_cloud_hypervisor = {
	.name = "cloud-hypervisor",
	.help = "Cloud Hypervisor's virtio-mem: bitmap first, one map per block, one unmap per request",
	.baseline = true,
	.create = ch_create,
	.apply = base_apply,
	.stats = base_stats,
	.destroy = base_destroy,
};

const struct replay_strategy replay_strategy_naive = {
	.name = "naive",
	.help = "one map or unmap call per block, both ways",
	.baseline = true,
	.create = naive_create,
	.apply = base_apply,
	.stats = base_stats,
	.destroy = base_destroy,
};
