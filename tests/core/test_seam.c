/* test_seam.c - the applier seam: a fake applier thread forwarding to rdm_region_apply, and the tail listener. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <urcu-bp.h>

#include <rdm/error.h>
#include <rdm/region.h>

#include "core/error.h"
#include "core/region_internal.h"
#include "core/tree.h"
#include "tests/check.h"

#define BS 4096u

/* ---- an event log shared by listeners and the release callback ---- */

struct event {
	char who;  /* 'a', 'b', 't' (tail), 'r' (release) */
	char kind; /* 'p', 'd', 'r' */
	uint64_t off, len;
	bool on_worker;
};

static struct event evs[64];
static int nev;
static pthread_t worker_thread;
static bool worker_running;

static void record(char who, char kind, uint64_t off, uint64_t len)
{
	if (nev < 64)
		evs[nev++] = (struct event){ who, kind, off, len,
					     worker_running &&
						     pthread_equal(pthread_self(), worker_thread) };
}

static bool ev(int i, char who, char kind, uint64_t off, uint64_t len)
{
	return i < nev && evs[i].who == who && evs[i].kind == kind && evs[i].off == off &&
	       evs[i].len == len;
}

struct tl {
	struct rdm_listener l;
	char who;
	int refuse;
};

static int tl_populate(struct rdm_listener *l, uint64_t off, uint64_t len)
{
	struct tl *t = (struct tl *)l;

	if (t->refuse)
		return t->refuse;
	record(t->who, 'p', off, len);
	return 0;
}

static void tl_discard(struct rdm_listener *l, uint64_t off, uint64_t len)
{
	record(((struct tl *)l)->who, 'd', off, len);
}

static const struct rdm_listener_ops tl_ops = { tl_populate, tl_discard };

static void on_release(void *opaque, uint64_t off, uint64_t len)
{
	(void)opaque;
	record('r', 'r', off, len);
}

/* ---- the fake applier: one request slot, a worker thread ---- */

struct fake {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool has_req, has_res, stop;
	struct rdm_region *r;
	enum rdm_op op;
	uint64_t off, len;
	struct rdm_listener *l;
	int res;
	int submits, destroys;
};

static void *worker(void *arg)
{
	struct fake *f = arg;

	pthread_mutex_lock(&f->lock);
	for (;;) {
		while (!f->has_req && !f->stop)
			pthread_cond_wait(&f->cond, &f->lock);
		if (f->has_req) {
			struct rdm_region *r = f->r;
			enum rdm_op op = f->op;
			uint64_t off = f->off, len = f->len;
			struct rdm_listener *l = f->l;
			int res;

			pthread_mutex_unlock(&f->lock);
			res = rdm_region_apply(r, op, off, len, l);
			/* The applier releases after "unmapping". */
			if (res == 0 && (op == RDM_OP_DISCARD || op == RDM_OP_DISCARD_ALL))
				rdm_region_release(r, off, len);
			pthread_mutex_lock(&f->lock);
			f->has_req = false;
			f->res = res;
			f->has_res = true;
			pthread_cond_broadcast(&f->cond);
			continue;
		}
		break;
	}
	pthread_mutex_unlock(&f->lock);
	return NULL;
}

static int fake_submit(void *ctx, struct rdm_region *r, enum rdm_op op, uint64_t off,
		       uint64_t len, struct rdm_listener *l)
{
	struct fake *f = ctx;
	int res;

	pthread_mutex_lock(&f->lock);
	f->submits++;
	while (f->has_req || f->has_res)
		pthread_cond_wait(&f->cond, &f->lock);
	f->r = r;
	f->op = op;
	f->off = off;
	f->len = len;
	f->l = l;
	f->has_req = true;
	pthread_cond_broadcast(&f->cond);
	while (!f->has_res)
		pthread_cond_wait(&f->cond, &f->lock);
	res = f->res;
	f->has_res = false;
	pthread_cond_broadcast(&f->cond);
	pthread_mutex_unlock(&f->lock);
	return res;
}

static void fake_destroy(void *ctx, struct rdm_region *r)
{
	struct fake *f = ctx;

	(void)r;
	pthread_mutex_lock(&f->lock);
	f->destroys++;
	f->stop = true;
	pthread_cond_broadcast(&f->cond);
	pthread_mutex_unlock(&f->lock);
	pthread_join(worker_thread, NULL);
	worker_running = false;
}

static const struct rdm_applier_ops fake_ops = { fake_submit, fake_destroy, NULL };
static const struct rdm_applier_ops half_ops = { fake_submit, NULL, NULL };

static struct rdm_region *make(uint32_t flags)
{
	struct rdm_region_config cfg = { .struct_size = sizeof(cfg), .size = 16 * BS,
					 .block_size = BS, .release = on_release };
	struct rdm_region *r = NULL;

	cfg.flags = flags;
	REQUIRE(rdm_region_create(&cfg, &r) == 0);
	return r;
}

static void test_tail_without_applier(void)
{
	struct rdm_region *r = make(0);
	struct tl a = { .l = { .ops = &tl_ops, .offset = 0, .length = 8 * BS }, .who = 'a' };
	struct tl t = { .l = { .ops = &tl_ops, .offset = 0, .length = 16 * BS }, .who = 't' };
	struct tl b = { .l = { .ops = &tl_ops, .offset = 0, .length = 16 * BS }, .who = 'b' };

	CHECK(rdm_populate(r, 0, BS) == 0);
	nev = 0;
	/* Installing the tail replays nothing. */
	rdm_region_set_tail_listener(r, &t.l);
	CHECK(nev == 0);
	CHECK(rdm_listener_register(r, &a.l) == 0);
	/* Registration replays are not told to the tail. */
	CHECK(nev == 1 && ev(0, 'a', 'p', 0, BS));
	CHECK(rdm_listener_register(r, &b.l) == 0);
	nev = 0;
	/* The tail is told last, even after a listener registered later. */
	CHECK(rdm_populate(r, 2 * BS, BS) == 0);
	CHECK(nev == 3 && ev(0, 'a', 'p', 2 * BS, BS) && ev(1, 'b', 'p', 2 * BS, BS) &&
	      ev(2, 't', 'p', 2 * BS, BS));
	nev = 0;
	CHECK(rdm_discard(r, 2 * BS, BS) == 0);
	CHECK(nev == 4 && ev(0, 'a', 'd', 2 * BS, BS) && ev(1, 'b', 'd', 2 * BS, BS) &&
	      ev(2, 't', 'd', 2 * BS, BS) && ev(3, 'r', 'r', 2 * BS, BS));
	/* The tail refuses: everyone else is rolled back in reverse order. */
	nev = 0;
	t.refuse = -ENOSPC;
	rdm_fail(0, "%s", "");
	CHECK(rdm_populate(r, 4 * BS, BS) == -ENOSPC);
	CHECK(rdm_last_error()[0] != '\0');
	CHECK(nev == 4 && ev(0, 'a', 'p', 4 * BS, BS) && ev(1, 'b', 'p', 4 * BS, BS) &&
	      ev(2, 'b', 'd', 4 * BS, BS) && ev(3, 'a', 'd', 4 * BS, BS));
	CHECK(rdm_is_discarded(r, 4 * BS, BS));
	t.refuse = 0;
	/* The tail is not a registered listener. */
	CHECK(rdm_listener_unregister(r, &t.l) == -ENOENT);
	CHECK(rdm_listener_register(r, &t.l) == -EINVAL);
	/* Removing it. */
	rdm_region_set_tail_listener(r, NULL);
	nev = 0;
	CHECK(rdm_populate(r, 5 * BS, BS) == 0);
	CHECK(nev == 2);
	rdm_region_set_tail_listener(r, &t.l);
	/* Destroy without an applier: listeners, then the tail, then release. */
	nev = 0;
	CHECK(rdm_region_destroy(r) == 0);
	CHECK(nev == 8 && ev(0, 'a', 'd', 0, BS) && ev(1, 'a', 'd', 5 * BS, BS) &&
	      ev(3, 'b', 'd', 5 * BS, BS) && ev(4, 't', 'd', 0, BS) && ev(6, 'r', 'r', 0, BS) &&
	      ev(7, 'r', 'r', 5 * BS, BS));
}

static void test_applier(void)
{
	struct rdm_region *r = make(RDM_REGION_STRICT);
	struct fake f = { .lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER };
	struct tl a = { .l = { .ops = &tl_ops, .offset = 0, .length = 16 * BS }, .who = 'a' };
	struct tl t = { .l = { .ops = &tl_ops, .offset = 0, .length = 16 * BS }, .who = 't' };

	rdm_fail(0, "%s", "");
	CHECK(rdm_region_set_applier(NULL, &fake_ops, &f) == -EINVAL);
	CHECK(rdm_region_set_applier(r, &half_ops, &f) == -EINVAL);
	CHECK(rdm_last_error()[0] != '\0');
	REQUIRE(pthread_create(&worker_thread, NULL, worker, &f) == 0);
	worker_running = true;
	CHECK(rdm_region_set_applier(r, &fake_ops, &f) == 0);
	CHECK(rdm_region_set_applier(r, &fake_ops, &f) == -EBUSY);
	rdm_region_set_tail_listener(r, &t.l);

	/* Argument errors never reach the applier. */
	CHECK(rdm_populate(r, 1, BS) == -EINVAL);
	CHECK(rdm_populate(r, 16 * BS, BS) == -ERANGE);
	CHECK(rdm_listener_register(r, NULL) == -EINVAL);
	CHECK(f.submits == 0);

	/* Changes go through submit and are applied on the worker thread. */
	nev = 0;
	CHECK(rdm_listener_register(r, &a.l) == 0);
	CHECK(rdm_populate(r, 0, 4 * BS) == 0);
	CHECK(f.submits == 2);
	CHECK(nev == 2 && ev(0, 'a', 'p', 0, 4 * BS) && ev(1, 't', 'p', 0, 4 * BS));
	CHECK(evs[0].on_worker && evs[1].on_worker);
	CHECK(rdm_is_populated(r, 0, 4 * BS));
	/* State errors come from the applier. */
	rdm_fail(0, "%s", "");
	CHECK(rdm_populate(r, 2 * BS, 4 * BS) == -EEXIST);
	CHECK(rdm_discard(r, 8 * BS, BS) == -ENOENT);
	CHECK(rdm_listener_unregister(r, &t.l) == -ENOENT);
	CHECK(f.submits == 5);
	/* Discard: apply does not release; the applier does. */
	nev = 0;
	CHECK(rdm_discard(r, BS, BS) == 0);
	CHECK(nev == 3 && ev(0, 'a', 'd', BS, BS) && ev(1, 't', 'd', BS, BS) &&
	      ev(2, 'r', 'r', BS, BS));
	/* The tail refuses a populate on the worker. */
	nev = 0;
	t.refuse = -ENOSPC;
	CHECK(rdm_populate(r, 8 * BS, 2 * BS) == -ENOSPC);
	CHECK(nev == 2 && ev(0, 'a', 'p', 8 * BS, 2 * BS) && ev(1, 'a', 'd', 8 * BS, 2 * BS));
	CHECK(rdm_is_discarded(r, 8 * BS, 2 * BS));
	t.refuse = 0;
	CHECK(rdm_discard_all(r) == 0);
	CHECK(rdm_populate(r, 12 * BS, BS) == 0);

	/* Destroy: the applier's destroy runs first, then listeners hear the
	 * discard; the tail (the applier's business) and release are not
	 * called by the core. New calls are refused. */
	nev = 0;
	CHECK(rdm_region_destroy(r) == 0);
	CHECK(f.destroys == 1);
	CHECK(nev == 1 && ev(0, 'a', 'd', 12 * BS, BS));
}

/* A listener of the destroy's discard tries a change (the region is still
 * allocated then): refused with -EDEADLK, as any change from a callback;
 * queries still answer. (-ECANCELED for other threads' calls during a
 * destroy: tests/iommu/test_lifecycle.c.) */
static struct rdm_region *dying_region;
static int during_destroy = 1;

static void dl_discard(struct rdm_listener *l, uint64_t off, uint64_t len)
{
	(void)l;
	(void)off;
	(void)len;
	during_destroy = rdm_populate(dying_region, 0, BS);
	CHECK(!rdm_is_populated(dying_region, 0, 16 * BS));
	CHECK(rdm_replay_populated(dying_region, 0, BS, NULL, NULL) == -EINVAL);
}

static int dl_populate(struct rdm_listener *l, uint64_t off, uint64_t len)
{
	(void)l;
	(void)off;
	(void)len;
	return 0;
}

static void test_destroy_refuses(void)
{
	static const struct rdm_listener_ops ops = { dl_populate, dl_discard };
	struct rdm_listener l = { .ops = &ops, .offset = 0, .length = 16 * BS };

	dying_region = make(0);
	CHECK(rdm_listener_register(dying_region, &l) == 0);
	CHECK(rdm_populate(dying_region, 0, 16 * BS) == 0);
	CHECK(rdm_region_destroy(dying_region) == 0);
	CHECK(during_destroy == -EDEADLK);
}

/* An applier that is the calling thread itself: nothing is submitted. */
static int self_submit(void *ctx, struct rdm_region *r, enum rdm_op op, uint64_t off,
		       uint64_t len, struct rdm_listener *l)
{
	(void)ctx, (void)r, (void)op, (void)off, (void)len, (void)l;
	return -ENOTSUP;
}

static void self_destroy(void *ctx, struct rdm_region *r)
{
	(void)ctx, (void)r;
}

static const struct rdm_applier_ops self_ops = { self_submit, self_destroy, NULL };

/* Under an applier the state a change replaced waits for
 * rdm_region_retire_flush(); a refused change keeps what earlier changes
 * left for it; removing the applier flushes; destroy frees what is kept
 * (ASan's leak check). */
static void test_retire_batched(void)
{
	struct rdm_region *r = make(0);
	const struct rdm_mem *m = rdm_region_mem(r);
	struct tl a = { .l = { .ops = &tl_ops, .offset = 0, .length = 16 * BS }, .who = 'a' };
	size_t steady;

	REQUIRE(rdm_populate(r, 0, BS) == 0);
	rcu_barrier();
	steady = rdm_mem_current(m);
	REQUIRE(rdm_region_set_applier(r, &self_ops, NULL) == 0);
	for (int i = 0; i < 4; i++) {
		CHECK(rdm_region_apply(r, RDM_OP_POPULATE, 4 * BS, BS, NULL) == 0);
		CHECK(rdm_region_apply(r, RDM_OP_DISCARD, 4 * BS, BS, NULL) == 0);
	}
	rcu_barrier();
	CHECK(rdm_mem_current(m) > steady);
	rdm_region_retire_flush(r);
	rcu_barrier();
	CHECK(rdm_mem_current(m) == steady);

	CHECK(rdm_region_apply(r, RDM_OP_POPULATE, 4 * BS, BS, NULL) == 0);
	CHECK(rdm_region_apply(r, RDM_OP_REGISTER, 0, 0, &a.l) == 0);
	a.refuse = -EIO;
	CHECK(rdm_region_apply(r, RDM_OP_POPULATE, 8 * BS, BS, NULL) == -EIO);
	a.refuse = 0;
	CHECK(rdm_region_apply(r, RDM_OP_DISCARD, 4 * BS, BS, NULL) == 0);
	CHECK(rdm_region_apply(r, RDM_OP_UNREGISTER, 0, 0, &a.l) == 0);
	CHECK(rdm_is_populated(r, 0, BS) && rdm_is_discarded(r, BS, 15 * BS));
	rdm_region_retire_flush(r);
	rcu_barrier();
	CHECK(rdm_mem_current(m) == steady);

	CHECK(rdm_region_apply(r, RDM_OP_POPULATE, 4 * BS, BS, NULL) == 0);
	CHECK(rdm_region_apply(r, RDM_OP_DISCARD, 4 * BS, BS, NULL) == 0);
	REQUIRE(rdm_region_set_applier(r, NULL, NULL) == 0);
	rcu_barrier();
	CHECK(rdm_mem_current(m) == steady);

	REQUIRE(rdm_region_set_applier(r, &self_ops, NULL) == 0);
	CHECK(rdm_region_apply(r, RDM_OP_POPULATE, 4 * BS, BS, NULL) == 0);
	CHECK(rdm_region_apply(r, RDM_OP_DISCARD, 4 * BS, BS, NULL) == 0);
	CHECK(rdm_region_destroy(r) == 0);
}

/* Retire groups (core/tree.c): an applier's batches keep what they replaced
 * until RDM_TREE_RETIRE_GROUP entries are kept, never more across batches,
 * and a replaced subtree goes at the end of its batch. */
static void test_retire_groups(void)
{
	/* 2^19 blocks: inner nodes above the 4096-block leaves, and a level
	 * above those (each of its slots spans 2^18 blocks). */
	const uint64_t nb = UINT64_C(1) << 19;
	struct rdm_region_config cfg = { .struct_size = sizeof(cfg), .size = nb * BS, .block_size = BS };
	struct rdm_region *r = NULL;
	size_t kept, before, max = 0;
	unsigned handed = 0;

	REQUIRE(rdm_region_create(&cfg, &r) == 0);
	REQUIRE(rdm_region_set_applier(r, &self_ops, NULL) == 0);
	/* One single-block populate per batch, spread over the leaves: each
	 * replaces a few single nodes (a leaf, its inner copies). */
	for (unsigned i = 0; i < 4 * RDM_TREE_RETIRE_GROUP; i++) {
		uint64_t blk = (i * UINT64_C(4099)) % nb;

		if (rdm_is_populated(r, blk * BS, BS))
			continue;
		before = rdm_region_retired_kept(r);
		CHECK(rdm_region_apply(r, RDM_OP_POPULATE, blk * BS, BS, NULL) == 0);
		rdm_region_batch_end(r);
		kept = rdm_region_retired_kept(r);
		CHECK(kept < RDM_TREE_RETIRE_GROUP);
		if (kept < before) {
			CHECK(kept == 0);
			handed++;
		}
		if (kept > max)
			max = kept;
	}
	/* Kept across batches (not handed on per batch), and handed on in
	 * groups more than once. */
	CHECK(max >= RDM_TREE_RETIRE_GROUP / 2);
	CHECK(handed >= 2);
	CHECK(rdm_region_apply(r, RDM_OP_DISCARD_ALL, 0, nb * BS, NULL) == 0);
	rdm_region_batch_end(r);

	/* 64 single blocks in [0, 2^18), one per leaf: an inner node with 64
	 * extent leaves. Discarding the span whole drops that subtree. */
	for (uint64_t k = 0; k < 64; k++)
		CHECK(rdm_region_apply(r, RDM_OP_POPULATE, (k * 4096 + 7) * BS, BS, NULL) == 0);
	rdm_region_batch_end(r);
	kept = rdm_region_retired_kept(r);
	CHECK(kept > 0 && kept < RDM_TREE_RETIRE_GROUP);
	CHECK(rdm_region_apply(r, RDM_OP_DISCARD, 0, (nb / 2) * BS, NULL) == 0);
	rdm_region_batch_end(r);
	CHECK(rdm_region_retired_kept(r) == 0);
	CHECK(rdm_is_discarded(r, 0, nb * BS));
	/* What is kept at destroy is freed (ASan's leak check). */
	for (uint64_t k = 5; k < 9; k += 2) {
		CHECK(rdm_region_apply(r, RDM_OP_POPULATE, k * BS, BS, NULL) == 0);
		rdm_region_batch_end(r);
	}
	CHECK(rdm_region_retired_kept(r) > 0);
	CHECK(rdm_region_destroy(r) == 0);
}

int main(void)
{
	test_tail_without_applier();
	test_applier();
	test_destroy_refuses();
	test_retire_batched();
	test_retire_groups();
	return check_exit();
}
