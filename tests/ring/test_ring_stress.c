/* tests/ring/test_ring_stress.c - cross-thread stress: every record arrives once, in order, across capacities, bursts and tiny spin budgets. */
#include "tests/check.h"
#include "tests/ring/ring_test_util.h"
#include "ring/ring_internal.h"

#include <rdm/ring.h>

#include <pthread.h>
#include <string.h>
#include <unistd.h>

/*
 * Records carry their sequence number in word 0 and ring_mix(seq) in every
 * other word. The consumer checks each: none lost, none duplicated, in order,
 * contents intact. Burst sizes are drawn at random from [1, burst] on both
 * sides; modes mix single, burst and bulk calls. When full/empty a side
 * either polls or waits with a spin budget (tiny budgets make the futex path
 * run constantly: a lost wake-up hangs the test, which meson times out).
 */
struct config {
	uint32_t capacity;
	uint32_t record_size;
	unsigned burst;
	unsigned spin;   /* budget passed to the wait calls */
	bool wait;       /* wait (futex) instead of polling when full/empty */
	uint64_t records;
	uint64_t seed;
};

struct side {
	const struct config *cfg;
	struct rdm_ring *r;
	uint64_t seed;
	uint64_t bad;
	uint64_t waits;
};

static void fill(unsigned char *rec, uint32_t rs, uint64_t seq)
{
	memcpy(rec, &seq, 8);
	uint64_t m = ring_mix(seq);
	for (uint32_t o = 8; o < rs; o += 8)
		memcpy(rec + o, &m, 8);
}

static bool verify(const unsigned char *rec, uint32_t rs, uint64_t seq)
{
	uint64_t got, m = ring_mix(seq);
	memcpy(&got, rec, 8);
	if (got != seq)
		return false;
	for (uint32_t o = 8; o < rs; o += 8) {
		memcpy(&got, rec + o, 8);
		if (got != m)
			return false;
	}
	return true;
}

static void *produce(void *arg)
{
	struct side *s = arg;
	const struct config *c = s->cfg;
	uint32_t rs = c->record_size;
	unsigned char *buf = malloc((size_t)c->burst * rs);
	REQUIRE(buf);
	uint64_t seq = 0;
	while (seq < c->records) {
		uint64_t x = ring_rand(&s->seed);
		unsigned n = 1 + (unsigned)(x % c->burst);
		if (n > c->records - seq)
			n = (unsigned)(c->records - seq);
		for (unsigned i = 0; i < n; i++)
			fill(buf + (size_t)i * rs, rs, seq + i);
		unsigned done;
		switch ((x >> 32) % 3) {
		case 0: done = rdm_ring_push(s->r, buf) ? 1 : 0; break;
		case 1: done = rdm_ring_push_burst(s->r, buf, n); break;
		default: done = rdm_ring_push_bulk(s->r, buf, n); break;
		}
		seq += done;
		if (done == 0 && c->wait) {
			s->waits++;
			REQUIRE(rdm_ring_wait_writable(s->r, c->spin) >= 0);
		}
	}
	free(buf);
	return NULL;
}

static void *consume(void *arg)
{
	struct side *s = arg;
	const struct config *c = s->cfg;
	uint32_t rs = c->record_size;
	unsigned char *buf = malloc((size_t)c->burst * rs);
	REQUIRE(buf);
	uint64_t seq = 0;
	while (seq < c->records) {
		uint64_t x = ring_rand(&s->seed);
		unsigned n = 1 + (unsigned)(x % c->burst);
		int got;
		switch ((x >> 32) % 3) {
		case 0: got = rdm_ring_pop(s->r, buf); break;
		case 1: got = rdm_ring_pop_burst(s->r, buf, n); break;
		default: got = rdm_ring_pop_bulk(s->r, buf, n); break;
		}
		REQUIRE(got >= 0);
		for (int i = 0; i < got; i++)
			if (!verify(buf + (size_t)i * rs, rs, seq + (uint64_t)i))
				s->bad++;
		seq += (uint64_t)got;
		if (got == 0 && c->wait) {
			s->waits++;
			REQUIRE(rdm_ring_wait_readable(s->r, c->spin) >= 0);
		}
	}
	free(buf);
	return NULL;
}

/* Ring kinds: private (asymmetric wake-up protocol where membarrier is
 * available), private forced to the seq_cst protocol, shared (seq_cst). */
enum kind { PRIVATE, PRIVATE_SEQ_CST, SHARED };

static void run(const struct config *c, enum kind kind)
{
	struct rdm_ring *r;
	int fd = -1;
	bool shared = kind == SHARED;
	if (shared)
		REQUIRE(rdm_ring_create_shared(c->capacity, c->record_size, &fd, &r) == 0);
	else
		REQUIRE(rdm_ring_create(c->capacity, c->record_size, &r) == 0);
	if (kind == PRIVATE_SEQ_CST)
		REQUIRE(rdm_ring_use_seq_cst_for_test(r) == 0);
	bool asym = rdm_ring_is_asymmetric_for_test(r);
	struct side p = {.cfg = c, .r = r, .seed = c->seed | 1};
	struct side q = {.cfg = c, .r = r, .seed = (c->seed * 31) | 1};
	pthread_t tp, tq;
	REQUIRE(pthread_create(&tq, NULL, consume, &q) == 0);
	REQUIRE(pthread_create(&tp, NULL, produce, &p) == 0);
	REQUIRE(pthread_join(tp, NULL) == 0);
	REQUIRE(pthread_join(tq, NULL) == 0);
	printf("cap=%u rs=%u burst=%u wait=%d spin=%u shared=%d asym=%d records=%llu: bad=%llu waits p=%llu c=%llu\n",
	       c->capacity, c->record_size, c->burst, c->wait, c->spin, shared, asym,
	       (unsigned long long)c->records, (unsigned long long)q.bad,
	       (unsigned long long)p.waits, (unsigned long long)q.waits);
	fflush(stdout);
	CHECK(q.bad == 0);
	CHECK(rdm_ring_count(r) == 0);
	rdm_ring_destroy(r);
	if (fd >= 0)
		close(fd);
}

int main(void)
{
	uint64_t seed = ring_test_env_u64("RDM_SEED", 0x5eed1234);
	uint64_t total = ring_test_env_u64("RDM_RING_STRESS_RECORDS", 100000000ull / ring_test_scale_div());
	printf("seed=%llu total=%llu (override with RDM_SEED, RDM_RING_STRESS_RECORDS)\n",
	       (unsigned long long)seed, (unsigned long long)total);
	/* Most records go through polling configurations (fast); the waiting ones
	 * make system calls on nearly every record, so they get a smaller share. */
	static const struct config polling[] = {
		{.capacity = 2, .record_size = 8, .burst = 1},
		{.capacity = 64, .record_size = 8, .burst = 8},
		{.capacity = 1024, .record_size = 8, .burst = 32},
		{.capacity = 65536, .record_size = 8, .burst = 32},
		{.capacity = 256, .record_size = 40, .burst = 32},
		{.capacity = 4096, .record_size = 40, .burst = 64},
	};
	static const struct config waiting[] = {
		{.capacity = 2, .record_size = 8, .burst = 2, .wait = true, .spin = 0},
		{.capacity = 4, .record_size = 40, .burst = 4, .wait = true, .spin = 1},
		{.capacity = 64, .record_size = 8, .burst = 16, .wait = true, .spin = 8},
		{.capacity = 1024, .record_size = 8, .burst = 32, .wait = true, .spin = RDM_RING_DEFAULT_SPIN},
	};
	size_t np = sizeof(polling) / sizeof(polling[0]), nw = sizeof(waiting) / sizeof(waiting[0]);
	/* Each waiting configuration runs on all three kinds of ring. */
	uint64_t wait_share = total / 50 / nw / 3;
	uint64_t poll_share = (total - wait_share * nw * 3) / np;
	for (size_t i = 0; i < np; i++) {
		struct config c = polling[i];
		c.records = poll_share;
		c.seed = seed + i;
		run(&c, i % 2 ? SHARED : PRIVATE);
	}
	for (size_t i = 0; i < nw; i++) {
		struct config c = waiting[i];
		c.records = wait_share;
		c.seed = seed + 100 + i;
		run(&c, PRIVATE);
		run(&c, PRIVATE_SEQ_CST);
		run(&c, SHARED);
	}
	return check_exit();
}
