/* SPDX-License-Identifier: MIT */
/*
 * rdm/common.h - conventions shared by every public rdm header.
 *
 * Names: every public identifier starts with rdm_ (macros RDM_). Sub-prefixes
 * name the layer: rdm_ring_* (SPSC rings), rdm_backend_* and rdm_sim_*
 * (IOMMU backends), rdm_worker_* and rdm_producer_* (the IOMMU worker).
 * A _locked suffix means "the caller provides the synchronisation".
 *
 * Errors: functions return 0 (or a count) on success and a negative errno on
 * failure; queries return bool or a count. Every failure also sets a
 * thread-local message, see rdm_last_error() in rdm/error.h.
 */
#ifndef RDM_COMMON_H
#define RDM_COMMON_H

#if defined(RDM_BUILDING_LIBRARY) && defined(__GNUC__)
#define RDM_API __attribute__((visibility("default")))
#else
#define RDM_API
#endif

#if defined(__GNUC__)
#define RDM_WARN_UNUSED __attribute__((warn_unused_result))
#else
#define RDM_WARN_UNUSED
#endif

#endif /* RDM_COMMON_H */
