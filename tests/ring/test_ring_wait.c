/* tests/ring/test_ring_wait.c - the futex path: a sleeping consumer woken by one push, a sleeping producer by one pop (both wake-up protocols). */
#include "tests/check.h"
#include "ring/ring_internal.h"

#include <rdm/ring.h>

#include <pthread.h>
#include <stdio.h>
#include <unistd.h>
#include <time.h>

struct waiter {
	struct rdm_ring *r;
	int result;
	uint64_t value;
};

static void nap(void)
{
	struct timespec ts = {0, 20 * 1000 * 1000};
	nanosleep(&ts, NULL);
}

static void *consumer(void *arg)
{
	struct waiter *w = arg;
	do
		w->result = rdm_ring_wait_readable(w->r, 0);
	while (w->result == 0);
	CHECK(rdm_ring_pop(w->r, &w->value) == 1);
	return NULL;
}

static void *producer(void *arg)
{
	struct waiter *w = arg;
	do
		w->result = rdm_ring_wait_writable(w->r, 0);
	while (w->result == 0);
	CHECK(rdm_ring_push(w->r, &w->value));
	return NULL;
}

/* Wait until the other thread has asked for a wake-up (it then sleeps or is about to). */
static void until_flag(_Atomic uint32_t *flag)
{
	/* Acquire: only a hint here; correctness is the test's subject. */
	while (!atomic_load_explicit(flag, memory_order_acquire))
		nap();
	nap();
}

static void test_ring(struct rdm_ring *r)
{
	struct waiter w = {.r = r};
	pthread_t t;
	REQUIRE(pthread_create(&t, NULL, consumer, &w) == 0);
	until_flag(&r->prod.sh->consumer_sleeping);
	uint64_t v = 0xfeed;
	CHECK(rdm_ring_push(r, &v));
	REQUIRE(pthread_join(t, NULL) == 0);
	CHECK(w.result == 1 && w.value == 0xfeed);
	CHECK(atomic_load(&r->prod.sh->consumer_sleeping) == 0);

	for (uint32_t i = 0; i < rdm_ring_capacity(r); i++)
		CHECK(rdm_ring_push(r, &v));
	w = (struct waiter){.r = r, .value = 0xbeef};
	REQUIRE(pthread_create(&t, NULL, producer, &w) == 0);
	until_flag(&r->prod.sh->producer_sleeping);
	CHECK(rdm_ring_pop(r, &v) == 1 && v == 0xfeed);
	REQUIRE(pthread_join(t, NULL) == 0);
	CHECK(w.result == 1);
	for (uint32_t i = 0; i + 1 < rdm_ring_capacity(r); i++)
		CHECK(rdm_ring_pop(r, &v) == 1 && v == 0xfeed);
	CHECK(rdm_ring_pop(r, &v) == 1 && v == 0xbeef);
	CHECK(rdm_ring_empty(r));
}

int main(void)
{
	struct rdm_ring *r;
	REQUIRE(rdm_ring_create(4, 8, &r) == 0);
	printf("private ring: %s protocol\n", rdm_ring_is_asymmetric_for_test(r) ? "asymmetric" : "seq_cst");
#ifdef RDM_TSAN
	CHECK(!rdm_ring_is_asymmetric_for_test(r));
#endif
	test_ring(r);
	rdm_ring_destroy(r);
	REQUIRE(rdm_ring_create(4, 8, &r) == 0);
	REQUIRE(rdm_ring_use_seq_cst_for_test(r) == 0);
	CHECK(!rdm_ring_is_asymmetric_for_test(r));
	test_ring(r);
	rdm_ring_destroy(r);
	int fd;
	REQUIRE(rdm_ring_create_shared(2, 8, &fd, &r) == 0); /* non-private futex ops */
	close(fd);
	CHECK(!rdm_ring_is_asymmetric_for_test(r)); /* another process may hold the other side */
	test_ring(r);
	rdm_ring_destroy(r);
	return check_exit();
}
