/* SPDX-License-Identifier: MIT */
/* rdm/rdm.h - the whole public API of rdm. */
#ifndef RDM_RDM_H
#define RDM_RDM_H

#include <rdm/common.h>
#include <rdm/error.h>
#include <rdm/region.h>
#include <rdm/ring.h>
#include <rdm/backend.h>
#include <rdm/worker.h>
#include <rdm/numa.h>

#endif /* RDM_RDM_H */
