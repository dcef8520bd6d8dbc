/* SPDX-License-Identifier: MIT */
/*
 * iommu/wbackend.h - a backend as one worker serves it.
 *
 * Owned by the worker (worker.c): made by rdm_worker_add_backend(), kept in
 * the worker's table and freed when the worker is destroyed; a backend is
 * served by at most one worker. Shared by every region attached to it, so
 * the planners of those regions (planner.c) account their mappings in
 * `used` and mark the backend failed - on the worker's thread only, which
 * is the only thread that touches it after rdm_worker_add_backend().
 */
#ifndef RDM_IOMMU_WBACKEND_H
#define RDM_IOMMU_WBACKEND_H

#include <stdbool.h>
#include <stdint.h>

#include <rdm/backend.h>

struct rdm_wbackend {
	struct rdm_backend *b;
	struct rdm_backend_caps caps;
	uint64_t budget;   /* most mappings rdm may hold in it */
	uint64_t used;     /* mappings rdm holds in it (all regions) */
	bool failed;       /* sticky: an unmap failed twice */
	char failed_why[160];
};

#endif /* RDM_IOMMU_WBACKEND_H */
