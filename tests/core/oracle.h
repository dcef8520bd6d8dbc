/* oracle.h - a plain bitmap of blocks and a small PRNG: the reference the region tests compare with. */
#ifndef RDM_TESTS_CORE_ORACLE_H
#define RDM_TESTS_CORE_ORACLE_H

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__) || defined(RDM_TSAN)
#define TEST_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define TEST_SANITIZED 1
#endif
#endif
#ifndef TEST_SANITIZED
#define TEST_SANITIZED 0
#endif

struct rng {
	uint64_t s;
};

static inline uint64_t rng_next(struct rng *r)
{
	/* splitmix64 */
	uint64_t z = (r->s += UINT64_C(0x9e3779b97f4a7c15));

	z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
	z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
	return z ^ (z >> 31);
}

/* Uniform in [0, n), n > 0. */
static inline uint64_t rng_below(struct rng *r, uint64_t n)
{
	return rng_next(r) % n;
}

static inline unsigned popcount64(uint64_t x)
{
	x = x - ((x >> 1) & UINT64_C(0x5555555555555555));
	x = (x & UINT64_C(0x3333333333333333)) + ((x >> 2) & UINT64_C(0x3333333333333333));
	x = (x + (x >> 4)) & UINT64_C(0x0f0f0f0f0f0f0f0f);
	return (unsigned)((x * UINT64_C(0x0101010101010101)) >> 56);
}

struct oracle {
	uint64_t n; /* blocks */
	uint64_t *w;
};

static inline void oracle_init(struct oracle *o, uint64_t n)
{
	o->n = n;
	o->w = calloc((n + 63) / 64, 8);
}

static inline void oracle_fini(struct oracle *o)
{
	free(o->w);
}

static inline bool oracle_get(const struct oracle *o, uint64_t b)
{
	return (o->w[b / 64] >> (b % 64)) & 1;
}

static inline void oracle_set(struct oracle *o, uint64_t s, uint64_t e, bool v)
{
	while (s < e) {
		uint64_t m;
		unsigned a = s % 64, n = (e - s) < (64 - a) ? (unsigned)(e - s) : 64 - a;

		m = (n == 64 ? ~UINT64_C(0) : ((UINT64_C(1) << n) - 1)) << a;
		if (v)
			o->w[s / 64] |= m;
		else
			o->w[s / 64] &= ~m;
		s += n;
	}
}

static inline uint64_t oracle_count(const struct oracle *o, uint64_t s, uint64_t e)
{
	uint64_t c = 0;

	while (s < e) {
		uint64_t m;
		unsigned a = s % 64, n = (e - s) < (64 - a) ? (unsigned)(e - s) : 64 - a;

		m = (n == 64 ? ~UINT64_C(0) : ((UINT64_C(1) << n) - 1)) << a;
		c += (uint64_t)popcount64(o->w[s / 64] & m);
		s += n;
	}
	return c;
}

/* First block >= from and < end whose bit equals v, or end. */
static inline uint64_t oracle_find(const struct oracle *o, uint64_t from, uint64_t end, bool v)
{
	while (from < end) {
		uint64_t x = (v ? o->w[from / 64] : ~o->w[from / 64]) & (~UINT64_C(0) << (from % 64));

		if (x != 0) {
			uint64_t b = from / 64 * 64 + (uint64_t)__builtin_ctzll(x);

			return b < end ? b : end;
		}
		from = (from / 64 + 1) * 64;
	}
	return end;
}

/* Number of blocks in [s, e) where a and b differ. */
static inline uint64_t oracle_diff(const struct oracle *a, const struct oracle *b, uint64_t s,
				   uint64_t e)
{
	uint64_t c = 0;

	while (s < e) {
		uint64_t m;
		unsigned sh = s % 64, n = (e - s) < (64 - sh) ? (unsigned)(e - s) : 64 - sh;

		m = (n == 64 ? ~UINT64_C(0) : ((UINT64_C(1) << n) - 1)) << sh;
		c += (uint64_t)popcount64((a->w[s / 64] ^ b->w[s / 64]) & m);
		s += n;
	}
	return c;
}

static inline uint64_t env_u64(const char *name, uint64_t def)
{
	const char *v = getenv(name);

	return v != NULL && *v != '\0' ? strtoull(v, NULL, 0) : def;
}

#endif
