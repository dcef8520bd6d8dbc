/* tests/iommu/strict_oracle.h - the tests' oracle for a strict region of blocks (RDM_REGION_STRICT). */
#ifndef RDM_TESTS_STRICT_ORACLE_H
#define RDM_TESTS_STRICT_ORACLE_H

#include <errno.h>
#include <stdbool.h>

/* Strict mode's expected result of populating (or discarding) blocks
 * [b, b + n), and the oracle updated when it succeeds. */
static inline int expect(bool *pop, unsigned b, unsigned n, bool populate)
{
	for (unsigned k = b; k < b + n; k++)
		if (pop[k] == populate)
			return populate ? -EEXIST : -ENOENT;
	for (unsigned k = b; k < b + n; k++)
		pop[k] = populate;
	return 0;
}

#endif /* RDM_TESTS_STRICT_ORACLE_H */
