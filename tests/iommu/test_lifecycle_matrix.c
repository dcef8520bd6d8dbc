/*
 * test_lifecycle_matrix.c - every destroy order of region, worker, producer and backend.
 *
 * For each of the 24 orders in which a region R (attached to a worker W
 * through a sim backend B) and a producer P that submitted changes to it can
 * be destroyed, for changes that are completed, queued (in P's ring behind
 * one the worker is still applying) or none, with and without a detach
 * first, and with the destroys run by the thread that created everything or
 * by another one: each destroy either succeeds or returns its documented
 * errno (-EBUSY: the worker still serves R, or the backend still belongs to
 * a worker), in which case it is retried after the others. The test checks
 * that every submitted change completes with 0 (a change accepted before a
 * destroy is applied, never lost: I6), that R's release callback saw every
 * populated block once B was empty (I2), that B holds no mapping at the end,
 * and (ASan/TSan builds) that nothing leaks or races, and it never hangs.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <rdm/rdm.h>

#include "tests/check.h"

#define BS (2ull << 20)
#define NB 32u
#define REGION (NB * BS)
#define IOVA0 (1ull << 32)
#define NCHANGES 6

static char *host;
/* Each scenario runs with a plain worker and with RDM_WORKER_CALLER_RUNS,
 * whose waiters run passes themselves, also while their producer is being
 * destroyed (producer.c, C4: the pass pins the worker). */
static uint32_t worker_flags;

enum obj { OBJ_R, OBJ_W, OBJ_P, OBJ_B, NOBJ };
enum when { NONE, COMPLETED, QUEUED, NWHEN };

struct scenario {
	struct rdm_region *r;
	struct rdm_worker *w;
	struct rdm_producer *p;
	struct rdm_backend *b;
	bool alive[NOBJ];
	/* The listener that holds the worker inside one change. */
	struct rdm_listener l;
	_Atomic int hold;     /* 1: the next populate waits for release */
	_Atomic int holding;  /* the worker is waiting inside the callback */
	_Atomic int release;
	unsigned released[NB];
	uint64_t tickets[NCHANGES];
	int order[NOBJ];
	bool detach, other_thread;
	enum when when;
};

static int hold_populate(struct rdm_listener *l, uint64_t off, uint64_t len)
{
	struct scenario *s = l->opaque;
	int one = 1;

	(void)off;
	(void)len;
	/* acq_rel/acquire: the test thread's stores before it sets release
	 * are visible when we go on; nothing else is published. */
	if (atomic_compare_exchange_strong_explicit(&s->hold, &one, 0, memory_order_acq_rel,
						    memory_order_acquire)) {
		atomic_store_explicit(&s->holding, 1, memory_order_release);
		while (!atomic_load_explicit(&s->release, memory_order_acquire))
			sched_yield();
	}
	return 0;
}

static void hold_discard(struct rdm_listener *l, uint64_t off, uint64_t len)
{
	(void)l;
	(void)off;
	(void)len;
}

static const struct rdm_listener_ops hold_ops = {hold_populate, hold_discard};

static void on_release(void *opaque, uint64_t off, uint64_t len)
{
	struct scenario *s = opaque;

	for (uint64_t b = off / BS; b < (off + len) / BS; b++)
		s->released[b]++;
}

/* Destroy one object: 0 (gone) or the documented errno (still there). */
static int destroy_one(struct scenario *s, int o)
{
	int err = 0;

	switch (o) {
	case OBJ_R:
		err = rdm_region_destroy(s->r);
		break;
	case OBJ_W:
		err = rdm_worker_destroy(s->w);
		if (err)
			CHECK(err == -EBUSY && s->alive[OBJ_R]);
		break;
	case OBJ_P:
		/* A producer is destroyed by its owner thread (the creator). */
		rdm_producer_destroy(s->p);
		break;
	case OBJ_B:
		err = rdm_backend_destroy(s->b);
		if (err)
			CHECK(err == -EBUSY && s->alive[OBJ_W]);
		break;
	}
	if (!err)
		s->alive[o] = false;
	return err;
}

/* The destroys in s->order, each refused one retried after the others. */
static void destroy_all(struct scenario *s, bool include_p)
{
	int pending[3 * NOBJ], n = 0;

	for (int i = 0; i < NOBJ; i++)
		if (s->alive[s->order[i]] && (s->order[i] != OBJ_P || include_p))
			pending[n++] = s->order[i];
	for (int i = 0; i < n; i++) {
		if (destroy_one(s, pending[i]) != 0) {
			REQUIRE(n < 3 * NOBJ);
			pending[n++] = pending[i];
		}
	}
}

static void *destroyer(void *arg)
{
	destroy_all(arg, false);
	return NULL;
}

static void *releaser(void *arg)
{
	struct scenario *s = arg;
	struct timespec ts = {0, 2000000};

	/* Let the destroys reach their waits, then let the worker go on (a
	 * scheduling aid only: every outcome is correct whatever the delay). */
	nanosleep(&ts, NULL);
	atomic_store_explicit(&s->release, 1, memory_order_release);
	return NULL;
}

static void run(const int order[NOBJ], enum when when, bool detach, bool other_thread)
{
	static struct scenario s;
	struct rdm_region_config rc = {.struct_size = sizeof(rc), .iova = IOVA0, .size = REGION, .block_size = BS,
				       .host_addr = host, .release = on_release, .release_opaque = &s,
				       .policy = RDM_POLICY_BLOCK};
	struct rdm_sim_config sc = {.struct_size = sizeof(sc), .semantics = RDM_SEM_TYPE1V2, .call_ns = 1};
	pthread_t rel_th, des_th;
	bool p_done = false;

	memset(&s, 0, sizeof(s));
	memcpy(s.order, order, sizeof(s.order));
	s.when = when;
	s.detach = detach;
	s.other_thread = other_thread;
	rc.release_opaque = &s;
	REQUIRE(rdm_backend_sim_create(&sc, &s.b) == 0);
	{
		struct rdm_worker_config wc = {.struct_size = sizeof(wc), .flags = worker_flags};

		REQUIRE(rdm_worker_create(&wc, &s.w) == 0);
	}
	REQUIRE(rdm_region_create(&rc, &s.r) == 0);
	REQUIRE(rdm_producer_create(&s.p) == 0);
	for (int i = 0; i < NOBJ; i++)
		s.alive[i] = true;
	s.l = (struct rdm_listener){.ops = &hold_ops, .offset = 0, .length = REGION, .opaque = &s};
	REQUIRE(rdm_listener_register(s.r, &s.l) == 0);
	REQUIRE(rdm_worker_add_backend(s.w, s.b, 0) == 0);
	REQUIRE(rdm_worker_attach(s.w, s.r, s.b) == 0);

	if (when != NONE) {
		if (when == QUEUED)
			atomic_store_explicit(&s.hold, 1, memory_order_release);
		for (int i = 0; i < NCHANGES; i++)
			CHECK(rdm_producer_populate(s.p, s.r, (uint64_t)i * 4 * BS, 4 * BS, &s.tickets[i]) == 0);
		if (when == COMPLETED) {
			for (int i = 0; i < NCHANGES; i++) {
				int res = 1;

				CHECK(rdm_producer_wait(s.p, s.tickets[i], &res) == 0 && res == 0);
			}
		} else {
			/* The first change is in flight, the others queued. */
			while (!atomic_load_explicit(&s.holding, memory_order_acquire))
				sched_yield();
		}
	}
	REQUIRE(pthread_create(&rel_th, NULL, releaser, &s) == 0);
	if (detach)
		CHECK(rdm_worker_detach(s.w, s.r, s.b) == 0);
	if (other_thread) {
		/* R, W, B on another thread; P stays with its owner, destroyed
		 * in its place in the order relative to this thread's start. */
		REQUIRE(pthread_create(&des_th, NULL, destroyer, &s) == 0);
		if (order[0] == OBJ_P) {
			rdm_producer_destroy(s.p);
			p_done = true;
		}
		pthread_join(des_th, NULL);
		if (!p_done)
			rdm_producer_destroy(s.p);
		s.alive[OBJ_P] = false;
		/* What the other thread could not destroy while P lived. */
		destroy_all(&s, false);
	} else {
		destroy_all(&s, true);
	}
	pthread_join(rel_th, NULL);
	for (int i = 0; i < NOBJ; i++)
		if (s.alive[i])
			CHECK(destroy_one(&s, i) == 0);
	/* Every populate was applied (none lost), so every block it covered
	 * is populated until the region's destroy, which releases it exactly
	 * once (a detach unmaps but keeps the state). */
	for (unsigned b = 0; b < NB; b++) {
		unsigned want = when != NONE && b < NCHANGES * 4 ? 1 : 0;

		if (s.released[b] != want) {
			fprintf(stderr, "order %d%d%d%d when %d detach %d other %d: block %u released %u times, want %u\n",
				order[0], order[1], order[2], order[3], when, detach, other_thread, b, s.released[b],
				want);
			check_failures++;
			break;
		}
	}
}

static void permute(int *a, int k, enum when when, bool detach, bool other, unsigned *n)
{
	if (k == NOBJ) {
		run(a, when, detach, other);
		(*n)++;
		return;
	}
	for (int i = k; i < NOBJ; i++) {
		int t = a[k];

		a[k] = a[i];
		a[i] = t;
		permute(a, k + 1, when, detach, other, n);
		a[i] = a[k];
		a[k] = t;
	}
}

int main(void)
{
	unsigned n = 0;

	host = aligned_alloc(BS, REGION);
	REQUIRE(host != NULL);
	for (int cr = 0; cr < 2; cr++) {
		worker_flags = cr ? RDM_WORKER_CALLER_RUNS : 0;
		for (int when = 0; when < NWHEN; when++)
			for (int detach = 0; detach < 2; detach++)
				for (int other = 0; other < 2; other++) {
					int order[NOBJ] = {OBJ_R, OBJ_W, OBJ_P, OBJ_B};

					permute(order, 0, when, detach, other, &n);
				}
	}
	printf("%u scenarios\n", n);
	free(host);
	return check_exit();
}
