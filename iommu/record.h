/* SPDX-License-Identifier: MIT */
/*
 * iommu/record.h - the IOMMU worker's ring record: one change on its way
 * from a producer (producer.c) to the worker (worker.c).
 *
 * Private to rdm: the rings (rdm/ring.h) carry records of any fixed size and
 * know nothing of their meaning. Plain integers only (never pointers), so a
 * record could cross processes; a control change's payload pointer travels
 * in the producer's ticket slot, never in the record.
 */
#ifndef RDM_IOMMU_RECORD_H
#define RDM_IOMMU_RECORD_H

#include <stddef.h>
#include <stdint.h>

#include "core/region_internal.h"

/* rdm_change_rec.flags */
enum {
	/*
	 * The ticket completes through its slot's callback. Without it the
	 * worker completes the ticket without reading the slot: by its link's
	 * watermark, or by storing result and done into the slot (producer.c,
	 * C1). Why no read: the producer wrote that line
	 * last (take_slot), and a read before the store is a second transfer
	 * of it per change (bench pipeline, one producer, four alternating
	 * pairs: 183-196 ns per change without the read, 188-219 with it).
	 * A record that lies about it harms only its own producer, as a
	 * wrong ticket number would: a callback slot completed as a ticket
	 * is never taken back; a flag without a callback is completed as a
	 * ticket.
	 */
	RDM_REC_CALLBACK = 1u << 0,
};

struct rdm_change_rec {
	uint16_t op;     /* enum rdm_op */
	uint16_t flags;  /* RDM_REC_* */
	uint32_t region; /* the region's number at the worker */
	uint64_t seq;    /* the region's sequence number of this change */
	uint64_t offset; /* bytes from the region's start */
	uint64_t length; /* bytes */
	uint64_t ticket; /* the producer's ticket number */
};
_Static_assert(sizeof(struct rdm_change_rec) == 40, "rdm_change_rec is 40 bytes");
_Static_assert(offsetof(struct rdm_change_rec, seq) == 8, "rdm_change_rec layout");
_Static_assert(offsetof(struct rdm_change_rec, ticket) == 32, "rdm_change_rec layout");

#endif /* RDM_IOMMU_RECORD_H */
