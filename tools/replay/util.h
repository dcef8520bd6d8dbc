/* SPDX-License-Identifier: MIT */
/* tools/replay/util.h - clocks, a bitmap and a seeded random generator for the harness. */
#ifndef RDM_REPLAY_UTIL_H
#define RDM_REPLAY_UTIL_H

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

/* Monotonic time in nanoseconds. */
static inline uint64_t replay_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Clock `clk` (a thread's CPU clock, say) in nanoseconds: 0 and *ns, or
 * -errno if it cannot be read (*ns unchanged). */
static inline int replay_clock_ns(clockid_t clk, uint64_t *ns)
{
	struct timespec ts;

	if (clock_gettime(clk, &ts))
		return -errno;
	*ns = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
	return 0;
}

static inline bool bm_test(const uint64_t *w, uint64_t i)
{
	return (w[i / 64] >> (i % 64)) & 1;
}

static inline void bm_set(uint64_t *w, uint64_t i, bool v)
{
	if (v)
		w[i / 64] |= UINT64_C(1) << (i % 64);
	else
		w[i / 64] &= ~(UINT64_C(1) << (i % 64));
}

/* Is every bit of [first, first + n) equal to v? */
static inline bool bm_all(const uint64_t *w, uint64_t first, uint64_t n, bool v)
{
	for (uint64_t i = first; i < first + n; i++) {
		if (i % 64 == 0 && first + n - i >= 64) {
			if (w[i / 64] != (v ? UINT64_MAX : 0))
				return false;
			i += 63;
			continue;
		}
		if (bm_test(w, i) != v)
			return false;
	}
	return true;
}

static inline uint64_t *bm_alloc(uint64_t bits)
{
	return calloc((size_t)(bits + 63) / 64, sizeof(uint64_t));
}

/* xoshiro256**, seeded through splitmix64. */
struct replay_rng {
	uint64_t s[4];
};

static inline uint64_t replay_splitmix(uint64_t *x)
{
	uint64_t z = (*x += UINT64_C(0x9e3779b97f4a7c15));
	z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
	z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
	return z ^ (z >> 31);
}

static inline void replay_rng_seed(struct replay_rng *r, uint64_t seed)
{
	for (int i = 0; i < 4; i++)
		r->s[i] = replay_splitmix(&seed);
}

static inline uint64_t replay_rng_next(struct replay_rng *r)
{
	uint64_t *s = r->s;
	uint64_t x = s[1] * 5;
	uint64_t res = ((x << 7) | (x >> 57)) * 9;
	uint64_t t = s[1] << 17;

	s[2] ^= s[0];
	s[3] ^= s[1];
	s[1] ^= s[2];
	s[0] ^= s[3];
	s[2] ^= t;
	s[3] = (s[3] << 45) | (s[3] >> 19);
	return res;
}

/* Uniform in [0, n), n > 0 (the bias of a 64-bit modulo is negligible here). */
static inline uint64_t replay_rng_below(struct replay_rng *r, uint64_t n)
{
	return replay_rng_next(r) % n;
}

/* True with probability pct/100. */
static inline bool replay_rng_pct(struct replay_rng *r, uint64_t pct)
{
	return replay_rng_below(r, 100) < pct;
}

#endif
