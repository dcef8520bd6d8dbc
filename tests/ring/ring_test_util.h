/* tests/ring/ring_test_util.h - shared helpers of the ring tests: scale, seed, records. */
#ifndef RDM_TESTS_RING_UTIL_H
#define RDM_TESTS_RING_UTIL_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define RING_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define RING_SANITIZED 1
#endif
#endif

/* How much slower than the normal build to plan for. */
static inline uint64_t ring_test_scale_div(void)
{
#if defined(RDM_TSAN)
	return 100;
#elif defined(RING_SANITIZED)
	return 10;
#else
	return 1;
#endif
}

static inline uint64_t ring_test_env_u64(const char *name, uint64_t dflt)
{
	const char *s = getenv(name);
	return s && *s ? strtoull(s, NULL, 0) : dflt;
}

/* xorshift64*: the seeded random source of every ring test. */
static inline uint64_t ring_rand(uint64_t *s)
{
	uint64_t x = *s;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*s = x;
	return x * 0x2545F4914F6CDD1Dull;
}

/* A word derived from a sequence number, to check record contents. */
static inline uint64_t ring_mix(uint64_t seq)
{
	uint64_t z = seq + 0x9E3779B97F4A7C15ull;
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	return z ^ (z >> 31);
}

#endif
