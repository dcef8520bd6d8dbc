/* tests/check.h - assertions for rdm's test programs that also work under NDEBUG. */
#ifndef RDM_TESTS_CHECK_H
#define RDM_TESTS_CHECK_H

#include <stdio.h>
#include <stdlib.h>

static int check_failures;

/* Report and count a failed condition, go on (so one run shows every failure). */
#define CHECK(cond)                                                                  \
	do {                                                                         \
		if (!(cond)) {                                                       \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, \
				#cond);                                              \
			check_failures++;                                            \
		}                                                                    \
	} while (0)

/* Like CHECK, but stop at once: later steps depend on it. */
#define REQUIRE(cond)                                                                \
	do {                                                                         \
		if (!(cond)) {                                                       \
			fprintf(stderr, "%s:%d: required: %s\n", __FILE__, __LINE__, #cond); \
			exit(1);                                                     \
		}                                                                    \
	} while (0)

static inline int check_exit(void)
{
	if (check_failures)
		fprintf(stderr, "%d check(s) failed\n", check_failures);
	return check_failures ? 1 : 0;
}

#endif
