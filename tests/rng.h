/* tests/rng.h - the tests' deterministic generator (xorshift64*), seeded by each test. */
#ifndef RDM_TESTS_RNG_H
#define RDM_TESTS_RNG_H

#include <stdint.h>

static uint64_t rng_state;

static inline uint64_t rnd(void)
{
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 2685821657736338717ull;
}

/* Uniform enough below n (n > 0). */
static inline uint64_t below(uint64_t n)
{
	return rnd() % n;
}

#endif /* RDM_TESTS_RNG_H */
