/* SPDX-License-Identifier: MIT */
/*
 * tools/replay/strategy_rdm.c - rdm's own map policies as replay strategies.
 *
 * This table is the one place rdm's policies join the comparison. Each entry
 * is a struct replay_strategy (strategy.h) named "rdm-<policy>" that drives
 * the rdm library itself: create() makes an rdm region (strict, the given
 * geometry, the policy) and an IOMMU worker on the given backend; apply()
 * submits the request synchronously (rdm_populate / rdm_discard /
 * rdm_discard_all) and returns its result; stats() copies remapped and
 * deferred bytes from rdm's stats; run_async() (optional) runs the storm with
 * several producers submitting asynchronously. Expected entries:
 * "rdm-block", "rdm-coalesce", "rdm-defer" (RDM_POLICY_BLOCK, _COALESCE,
 * _DEFER), each with baseline = false.
 *
 * Until the IOMMU worker is in the tree the table is empty; the harness
 * iterates it and needs no other change when entries are added.
 */
#include <stddef.h>

#include "tools/replay/strategy.h"

const struct replay_strategy *const replay_rdm_strategies[] = {
	NULL,
};
