/* tests/iommu/test_sim_random.c - randomized differential test of the sim against a page-array oracle (both semantics, split-capable, limits, injections), a scale run and concurrent stats readers. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <rdm/backend.h>

#include "tests/check.h"

#if defined(__SANITIZE_ADDRESS__) || defined(RDM_TSAN)
#define SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define SANITIZED 1
#endif
#endif
#ifndef SANITIZED
#define SANITIZED 0
#endif

#define PG 4096ull
#define NPAGES 192 /* small IOVA space: collisions are frequent */
#define MAXMAP 1024

static uint64_t rng_state;

static uint64_t rnd(void)
{
	/* splitmix64 */
	uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static uint64_t below(uint64_t n)
{
	return rnd() % n;
}

/* The oracle: which mapping id holds each page; per id its start, length, vaddr. */
struct oracle {
	uint32_t page[NPAGES];
	uint64_t start[MAXMAP + 1], len[MAXMAP + 1], vaddr[MAXMAP + 1];
	uint32_t next_id;
	uint64_t count;
	uint32_t sem;
	bool split;
	uint64_t limit;
};

static uint32_t new_id(struct oracle *o)
{
	/* Ids are recycled: find a free one (small table). */
	for (uint32_t k = 0; k < MAXMAP; k++) {
		uint32_t id = 1 + (o->next_id + k) % MAXMAP;
		if (o->len[id] == 0) {
			o->next_id = id;
			return id;
		}
	}
	abort();
}

static int o_map(struct oracle *o, uint64_t s, uint64_t n, uint64_t vaddr)
{
	for (uint64_t p = s; p < s + n; p++)
		if (o->page[p])
			return -EEXIST;
	if (o->count >= o->limit)
		return -ENOSPC;
	uint32_t id = new_id(o);
	o->start[id] = s, o->len[id] = n, o->vaddr[id] = vaddr;
	for (uint64_t p = s; p < s + n; p++)
		o->page[p] = id;
	o->count++;
	return 0;
}

static int o_unmap(struct oracle *o, uint64_t s, uint64_t n, uint64_t *bytes)
{
	uint64_t e = s + n;
	bool any = false, cut = false;
	uint32_t lo_id = 0, hi_id = 0;

	for (uint64_t p = s; p < e; p++) {
		uint32_t id = o->page[p];
		if (!id)
			continue;
		any = true;
		if (o->start[id] < s) {
			cut = true;
			lo_id = id;
		}
		if (o->start[id] + o->len[id] > e) {
			cut = true;
			hi_id = id;
		}
	}
	if (cut && !o->split)
		return o->sem == RDM_SEM_IOMMUFD ? -ENOENT : -EINVAL;
	if (!any)
		return o->sem == RDM_SEM_IOMMUFD ? -ENOENT : 0;
	if (lo_id && lo_id == hi_id && o->count + 1 > o->limit)
		return -ENOSPC;
	*bytes = 0;
	for (uint64_t p = s; p < e; p++) {
		if (o->page[p])
			*bytes += PG;
		uint32_t id = o->page[p];
		if (id && id != lo_id && id != hi_id && o->len[id]) {
			o->len[id] = 0;
			o->count--;
		}
		o->page[p] = 0;
	}
	if (lo_id && lo_id == hi_id) {
		/* Middle split: right survivor gets a new id. */
		uint32_t r = new_id(o);
		uint64_t oe = o->start[lo_id] + o->len[lo_id];
		o->start[r] = e, o->len[r] = oe - e, o->vaddr[r] = o->vaddr[lo_id] + (e - o->start[lo_id]) * PG;
		for (uint64_t p = e; p < oe; p++)
			o->page[p] = r;
		o->len[lo_id] = s - o->start[lo_id];
		o->count++;
	} else {
		if (lo_id)
			o->len[lo_id] = s - o->start[lo_id];
		if (hi_id) {
			uint64_t oe = o->start[hi_id] + o->len[hi_id];
			o->vaddr[hi_id] += (e - o->start[hi_id]) * PG;
			o->start[hi_id] = e;
			o->len[hi_id] = oe - e;
		}
	}
	return 0;
}

struct cmp_ctx {
	const struct oracle *o;
	uint64_t next_page;
	int bad;
};

static int cmp_cb(void *opaque, uint64_t iova, uint64_t size, uint64_t vaddr)
{
	struct cmp_ctx *c = opaque;
	const struct oracle *o = c->o;
	uint64_t s = iova / PG;

	/* The next oracle mapping at or after next_page must be this one. */
	uint64_t p = c->next_page;
	while (p < NPAGES && !o->page[p])
		p++;
	if (p != s || p >= NPAGES) {
		c->bad = 1;
		return 1;
	}
	uint32_t id = o->page[p];
	if (o->start[id] != s || o->len[id] * PG != size || o->vaddr[id] != vaddr) {
		c->bad = 1;
		return 1;
	}
	c->next_page = s + o->len[id];
	return 0;
}

static bool same_state(const struct oracle *o, const struct rdm_backend *b)
{
	struct cmp_ctx c = { o, 0, 0 };
	if (rdm_sim_for_each_mapping(b, cmp_cb, &c) != 0 || c.bad)
		return false;
	for (uint64_t p = c.next_page; p < NPAGES; p++)
		if (o->page[p])
			return false;
	struct rdm_backend_stats st;
	rdm_backend_get_stats(b, &st);
	return st.mappings == o->count;
}

/* Pick a range that often lines up with mapping boundaries. */
static void pick_range(const struct oracle *o, uint64_t *s, uint64_t *n)
{
	*s = below(NPAGES);
	*n = 1 + below(12);
	if (below(2) && o->page[*s]) {
		uint32_t id = o->page[*s];
		*s = o->start[id];
		if (below(2)) {
			/* end at the end of some mapping further right */
			uint64_t e = o->start[id] + o->len[id];
			uint64_t hop = below(4);
			while (hop-- && e < NPAGES) {
				uint64_t p = e;
				while (p < NPAGES && !o->page[p])
					p++;
				if (p == NPAGES)
					break;
				e = o->start[o->page[p]] + o->len[o->page[p]];
			}
			*n = e - *s;
		}
	}
	if (*s + *n > NPAGES)
		*n = NPAGES - *s;
}

static void run(uint32_t sem, bool split, uint64_t limit, unsigned iters)
{
	static struct oracle o;
	memset(&o, 0, sizeof(o));
	o.sem = sem, o.split = split;
	o.limit = limit ? limit : (sem == RDM_SEM_TYPE1V2 ? 65535 : UINT64_MAX);
	struct rdm_sim_config cfg = { .struct_size = sizeof(cfg), .semantics = sem, .can_split = split, .limit = limit };
	struct rdm_backend *b;
	REQUIRE(rdm_backend_sim_create(&cfg, &b) == 0);
	unsigned mismatches = 0;

	for (unsigned i = 0; i < iters && mismatches < 5; i++) {
		uint64_t s, n;
		pick_range(&o, &s, &n);
		bool inject = below(50) == 0;
		static struct oracle saved;
		if (inject)
			saved = o; /* an injected call changes nothing */
		if (below(2)) {
			uint64_t vaddr = (below(1 << 20) + 1) * PG;
			int want = o_map(&o, s, n, vaddr);
			if (inject) {
				o = saved;
				REQUIRE(rdm_sim_inject(b, RDM_SIM_CALL_MAP, 1, -EFAULT) == 0);
				want = -EFAULT;
			}
			int got = rdm_backend_map(b, s * PG, n * PG, vaddr);
			if (got != want) {
				fprintf(stderr, "iter %u: map [%llu,+%llu) got %d want %d\n", i,
					(unsigned long long)s, (unsigned long long)n, got, want);
				mismatches++;
			}
		} else {
			uint64_t want_bytes = 0, got_bytes = 12345;
			int want = o_unmap(&o, s, n, &want_bytes);
			if (inject) {
				o = saved;
				REQUIRE(rdm_sim_inject(b, RDM_SIM_CALL_UNMAP, 1, -ENOMEM) == 0);
				want = -ENOMEM;
			}
			int got = rdm_backend_unmap(b, s * PG, n * PG, &got_bytes);
			if (got != want || (got == 0 && got_bytes != want_bytes) ||
			    (got != 0 && got_bytes != 12345)) {
				fprintf(stderr, "iter %u: unmap [%llu,+%llu) got %d/%llu want %d/%llu\n", i,
					(unsigned long long)s, (unsigned long long)n, got,
					(unsigned long long)got_bytes, want,
					(unsigned long long)want_bytes);
				mismatches++;
			}
		}
		if (!same_state(&o, b)) {
			fprintf(stderr, "iter %u: state differs from the oracle\n", i);
			mismatches++;
		}
	}
	CHECK(mismatches == 0);
	rdm_backend_destroy(b);
}

/* Many mappings: ascending 4 KiB maps, lookups, unmaps in strided batches. */
static void scale(uint64_t n)
{
	struct rdm_backend *b;
	REQUIRE(rdm_backend_sim_create(&(struct rdm_sim_config){ .struct_size = sizeof(struct rdm_sim_config),
								 .limit = RDM_SIM_UNLIMITED },
				       &b) == 0);
	for (uint64_t i = 0; i < n; i++)
		REQUIRE(rdm_backend_map(b, i * PG, PG, (i + 7) * PG) == 0);
	for (unsigned k = 0; k < 1000; k++) {
		uint64_t i = below(n - 4);
		CHECK(rdm_sim_is_mapped(b, i * PG, 4 * PG, true, (i + 7) * PG));
	}
	/* Unmap runs of 16 in a scattered order, then the rest in one call. */
	uint64_t runs = n / 16, un, total = 0;
	for (uint64_t r = 0; r < runs; r += 2) {
		uint64_t j = (r * 7919) % runs;
		uint64_t bytes = 0;
		REQUIRE(rdm_backend_unmap(b, j * 16 * PG, 16 * PG, &bytes) == 0);
		total += bytes;
	}
	REQUIRE(rdm_backend_unmap(b, 0, n * PG, &un) == 0);
	CHECK(total + un == n * PG);
	struct rdm_backend_stats st;
	rdm_backend_get_stats(b, &st);
	CHECK(st.mappings == 0 && st.peak_mappings == n && st.map_calls == n);
	rdm_backend_destroy(b);
}

/* Readers poll stats while the owner thread maps and unmaps. */
static atomic_bool stop;

static void *reader(void *arg)
{
	const struct rdm_backend *b = arg;
	struct rdm_backend_stats prev = { 0 }, st;
	long bad = 0;

	/* Acquire: pairs with the release store in readers(). */
	while (!atomic_load_explicit(&stop, memory_order_acquire)) {
		rdm_backend_get_stats(b, &st);
		if (st.map_calls < prev.map_calls || st.bytes_mapped < prev.bytes_mapped ||
		    st.unmap_calls < prev.unmap_calls || st.peak_mappings < prev.peak_mappings ||
		    st.model_ns < prev.model_ns)
			bad++;
		prev = st;
	}
	return (void *)bad;
}

static void readers(unsigned iters)
{
	struct rdm_backend *b;
	REQUIRE(rdm_backend_sim_create(NULL, &b) == 0);
	pthread_t t[2];
	atomic_store_explicit(&stop, false, memory_order_relaxed);
	for (int i = 0; i < 2; i++)
		REQUIRE(pthread_create(&t[i], NULL, reader, b) == 0);
	for (unsigned i = 0; i < iters; i++) {
		uint64_t p = i % 64;
		REQUIRE(rdm_backend_map(b, p * PG, PG, 0) == 0);
		if (i % 3 == 2)
			REQUIRE(rdm_backend_unmap(b, 0, 64 * PG, NULL) == 0);
	}
	REQUIRE(rdm_backend_unmap(b, 0, 64 * PG, NULL) == 0);
	/* Release: pairs with the acquire loads in reader(). */
	atomic_store_explicit(&stop, true, memory_order_release);
	for (int i = 0; i < 2; i++) {
		void *bad;
		pthread_join(t[i], &bad);
		CHECK(bad == NULL);
	}
	struct rdm_backend_stats st;
	rdm_backend_get_stats(b, &st);
	CHECK(st.map_calls == iters && st.mappings == 0);
	rdm_backend_destroy(b);
}

int main(int argc, char **argv)
{
	const char *env = getenv("RDM_SEED");
	uint64_t seed = argc > 1 ? strtoull(argv[1], NULL, 0) : env ? strtoull(env, NULL, 0) : 0;
	if (seed == 0) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		seed = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20);
	}
	const char *it = getenv("RDM_ITERS");
	unsigned iters = it ? (unsigned)strtoul(it, NULL, 0) : SANITIZED ? 20000 : 100000;
	printf("seed=%llu iters=%u (override: argv[1] or RDM_SEED, RDM_ITERS)\n", (unsigned long long)seed, iters);
	fflush(stdout);
	rng_state = seed;

	for (uint32_t sem = 0; sem < 2; sem++) {
		for (int split = 0; split < 2; split++) {
			run(sem, split, 0, iters);
			run(sem, split, 6, iters / 4); /* a small limit: ENOSPC often */
		}
	}
	scale(SANITIZED ? 100000 : 2000000);
	readers(SANITIZED ? 20000 : 200000);
	if (check_failures)
		fprintf(stderr, "seed=%llu\n", (unsigned long long)seed);
	return check_exit();
}
