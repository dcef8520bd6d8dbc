/* test_region.c - unit tests of every region call, listener contract and error path. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <rdm/error.h>
#include <rdm/region.h>

#include <urcu-bp.h>

#include "core/error.h"
#include "core/region_internal.h"
#include "core/tree.h"
#include "tests/check.h"

#define BS 4096u
#define MIB (UINT64_C(1) << 20)

/* A failing call: its errno, a message set, and (checked by the caller) no change. */
#define CHECK_FAIL(call, err)                                                        \
	do {                                                                         \
		rdm_fail(0, "%s", "");                                               \
		CHECK((call) == (err));                                              \
		CHECK(rdm_last_error()[0] != '\0');                                  \
	} while (0)

static struct rdm_region *make(uint64_t size, uint64_t bs, uint32_t flags)
{
	struct rdm_region_config cfg = { .struct_size = sizeof(cfg) };
	struct rdm_region *r = NULL;

	cfg.size = size;
	cfg.block_size = bs;
	cfg.flags = flags;
	REQUIRE(rdm_region_create(&cfg, &r) == 0);
	return r;
}

/* The state as a string of 0/1 per block for small regions. */
static void state(const struct rdm_region *r, char *buf)
{
	uint64_t n = rdm_region_size(r) / rdm_region_granularity(r);

	for (uint64_t i = 0; i < n; i++)
		buf[i] = rdm_is_populated(r, i * rdm_region_granularity(r), 1) ? '1' : '0';
	buf[n] = '\0';
}

static void test_create(void)
{
	struct rdm_region_config cfg = { .struct_size = sizeof(cfg), .size = 16 * MIB,
					 .block_size = BS };
	struct rdm_region *r = NULL;
	unsigned char big[sizeof(cfg) + 16];
	const struct rdm_region_config *got;

	CHECK_FAIL(rdm_region_create(NULL, &r), -EINVAL);
	CHECK_FAIL(rdm_region_create(&cfg, NULL), -EINVAL);
	cfg.struct_size = 8;
	CHECK_FAIL(rdm_region_create(&cfg, &r), -EINVAL);
	cfg.struct_size = sizeof(cfg);
	cfg.flags = 1u << 20;
	CHECK_FAIL(rdm_region_create(&cfg, &r), -EINVAL);
	cfg.flags = 0;
	cfg.policy = 7;
	CHECK_FAIL(rdm_region_create(&cfg, &r), -EINVAL);
	cfg.policy = 0;
	cfg.size = 0;
	CHECK_FAIL(rdm_region_create(&cfg, &r), -EINVAL);
	cfg.size = 16 * MIB;
	cfg.block_size = 3 * BS;
	CHECK_FAIL(rdm_region_create(&cfg, &r), -EINVAL);
	cfg.block_size = 1024;
	CHECK_FAIL(rdm_region_create(&cfg, &r), -EINVAL);
	cfg.block_size = 0;
	CHECK_FAIL(rdm_region_create(&cfg, &r), -EINVAL);
	cfg.block_size = BS;
	cfg.size = 16 * MIB + 512;
	CHECK_FAIL(rdm_region_create(&cfg, &r), -EINVAL);
	cfg.size = 16 * MIB;
	cfg.iova = UINT64_MAX - 8 * MIB + 1;
	CHECK_FAIL(rdm_region_create(&cfg, &r), -EINVAL);
	cfg.iova = 100;
	CHECK_FAIL(rdm_region_create(&cfg, &r), -EINVAL);
	cfg.iova = 0;
	cfg.discard_unit = 3 * BS;
	CHECK_FAIL(rdm_region_create(&cfg, &r), -EINVAL);
	cfg.discard_unit = BS / 2;
	CHECK_FAIL(rdm_region_create(&cfg, &r), -EINVAL);
	cfg.discard_unit = 32 * MIB;
	CHECK_FAIL(rdm_region_create(&cfg, &r), -EINVAL);
	cfg.discard_unit = 0;
	cfg.flags = RDM_REGION_NUMA_NODE;
	cfg.numa_node = -1;
	CHECK_FAIL(rdm_region_create(&cfg, &r), -EINVAL);
	cfg.numa_node = 100000;
	CHECK_FAIL(rdm_region_create(&cfg, &r), -EINVAL);
	cfg.flags = 0;
	CHECK(r == NULL);

	/* A larger struct from a newer caller: unknown bytes must be zero. */
	memset(big, 0, sizeof(big));
	cfg.struct_size = sizeof(big);
	memcpy(big, &cfg, sizeof(cfg));
	big[sizeof(cfg) + 3] = 1;
	CHECK_FAIL(rdm_region_create((const struct rdm_region_config *)big, &r), -EINVAL);
	big[sizeof(cfg) + 3] = 0;
	CHECK(rdm_region_create((const struct rdm_region_config *)big, &r) == 0);
	got = rdm_region_cfg(r);
	CHECK(got->struct_size == sizeof(*got) && got->size == 16 * MIB);
	CHECK(got->discard_unit == BS && got->numa_node == -1);
	CHECK(rdm_region_destroy(r) == 0);

	/* A smaller struct from an older caller: missing fields read as zero. */
	cfg.struct_size = offsetof(struct rdm_region_config, policy);
	cfg.policy = 2; /* beyond struct_size: ignored */
	CHECK(rdm_region_create(&cfg, &r) == 0);
	CHECK(rdm_region_cfg(r)->policy == 0);
	CHECK(rdm_region_destroy(r) == 0);

	/* Valid extras: policy, discard unit, NUMA node 0, 1 GiB blocks. */
	cfg.struct_size = sizeof(cfg);
	cfg.policy = RDM_POLICY_DEFER;
	cfg.discard_unit = 2 * MIB;
	cfg.defer_limit = 4 * MIB;
	cfg.flags = RDM_REGION_NUMA_NODE | RDM_REGION_ALLOW_WINDOWS | RDM_REGION_STRICT;
	cfg.numa_node = 0;
	cfg.iova = UINT64_C(1) << 32;
	CHECK(rdm_region_create(&cfg, &r) == 0);
	got = rdm_region_cfg(r);
	CHECK(got->policy == RDM_POLICY_DEFER && got->discard_unit == 2 * MIB);
	CHECK(got->numa_node == 0 && got->iova == UINT64_C(1) << 32 && got->defer_limit == 4 * MIB);
	CHECK(rdm_region_granularity(r) == BS && rdm_region_size(r) == 16 * MIB);
	CHECK(rdm_region_destroy(r) == 0);
	r = make(UINT64_C(1) << 40, UINT64_C(1) << 30, 0);
	CHECK(rdm_region_granularity(r) == UINT64_C(1) << 30);
	CHECK(rdm_region_destroy(r) == 0);

	/* The deferral budget in force: the default (2% of 1 GiB, 21474836
	 * bytes, rounded up to the 2 MiB discard unit), an explicit one rounded
	 * up, and anything from the size up unbounded. */
	struct {
		uint64_t asked, unit, want;
	} budgets[] = {
		{ 0, 2 * MIB, 22 * MIB },
		{ 0, 4 * MIB, 24 * MIB },
		{ 5 * MIB, 2 * MIB, 6 * MIB },
		{ 4 * MIB, 4 * MIB, 4 * MIB },
		{ 1024 * MIB - 1, 2 * MIB, 1024 * MIB }, /* rounded up to the size, still bounded */
		{ 1024 * MIB, 2 * MIB, RDM_DEFER_BUDGET_NONE },
		{ RDM_DEFER_BUDGET_NONE, 2 * MIB, RDM_DEFER_BUDGET_NONE },
	};
	for (size_t i = 0; i < sizeof(budgets) / sizeof(budgets[0]); i++) {
		memset(&cfg, 0, sizeof(cfg));
		cfg.struct_size = sizeof(cfg);
		cfg.size = 1024 * MIB;
		cfg.block_size = BS;
		cfg.policy = RDM_POLICY_DEFER;
		cfg.discard_unit = budgets[i].unit;
		cfg.defer_budget = budgets[i].asked;
		CHECK(rdm_region_create(&cfg, &r) == 0);
		CHECK(rdm_region_defer_budget(r) == budgets[i].want);
		CHECK(rdm_region_cfg(r)->defer_budget == budgets[i].want);
		CHECK(rdm_region_destroy(r) == 0);
	}

	CHECK_FAIL(rdm_region_destroy(NULL), -EINVAL);
	CHECK(rdm_region_granularity(NULL) == 0 && rdm_region_size(NULL) == 0);
	CHECK(rdm_region_defer_budget(NULL) == 0);
}

static void release_nop(void *opaque, uint64_t off, uint64_t len)
{
	(void)opaque;
	(void)off;
	(void)len;
}

/* rdm_region_get_config(): the configuration in force, as far as the
 * caller's struct_size reaches; bad arguments change nothing. */
static void test_get_config(void)
{
	static char host[4096] __attribute__((aligned(4096)));
	struct rdm_region_config cfg = { 0 }, got, before;
	struct rdm_region *r;

	cfg.struct_size = sizeof(cfg);
	cfg.flags = RDM_REGION_STRICT;
	cfg.iova = UINT64_C(3) << 32;
	cfg.size = 64 * MIB;
	cfg.block_size = BS;
	cfg.host_addr = host;
	cfg.release = release_nop;
	cfg.release_opaque = &cfg;
	cfg.policy = RDM_POLICY_COALESCE;
	REQUIRE(rdm_region_create(&cfg, &r) == 0);

	memset(&got, 0xa5, sizeof(got));
	got.struct_size = sizeof(got);
	CHECK(rdm_region_get_config(r, &got) == 0);
	CHECK(got.struct_size == sizeof(got) && got.flags == RDM_REGION_STRICT);
	CHECK(got.iova == UINT64_C(3) << 32 && got.size == 64 * MIB && got.block_size == BS);
	CHECK(got.host_addr == (void *)host && got.release == release_nop && got.release_opaque == &cfg);
	CHECK(got.policy == RDM_POLICY_COALESCE && got.numa_node == -1 && got.defer_limit == 0);
	/* The defaults as applied: the unit is the block, the budget 2%. */
	CHECK(got.discard_unit == BS && got.defer_budget == rdm_region_defer_budget(r));

	/* An older caller's struct ending after iova: the rest is not written. */
	memset(&got, 0xa5, sizeof(got));
	got.struct_size = (uint32_t)offsetof(struct rdm_region_config, size);
	CHECK(rdm_region_get_config(r, &got) == 0);
	CHECK(got.struct_size == offsetof(struct rdm_region_config, size) && got.iova == UINT64_C(3) << 32);
	CHECK(got.flags == RDM_REGION_STRICT && got.size == UINT64_C(0xa5a5a5a5a5a5a5a5));

	/* Refused: nothing written. */
	memset(&got, 0xa5, sizeof(got));
	got.struct_size = (uint32_t)offsetof(struct rdm_region_config, size) - 1;
	before = got;
	CHECK_FAIL(rdm_region_get_config(r, &got), -EINVAL);
	CHECK(memcmp(&got, &before, sizeof(got)) == 0);
	CHECK(strstr(rdm_last_error(), "struct_size") != NULL);
	CHECK_FAIL(rdm_region_get_config(NULL, &got), -EINVAL);
	CHECK_FAIL(rdm_region_get_config(r, NULL), -EINVAL);
	CHECK(memcmp(&got, &before, sizeof(got)) == 0);
	CHECK(rdm_region_destroy(r) == 0);
}

static int count_cb(void *opaque, uint64_t off, uint64_t len)
{
	uint64_t *v = opaque;

	v[v[0] * 2 + 1] = off;
	v[v[0] * 2 + 2] = len;
	v[0]++;
	return 0;
}

static int stop_cb(void *opaque, uint64_t off, uint64_t len)
{
	(void)off;
	(void)len;
	(*(int *)opaque)++;
	return -77;
}

static void test_queries(void)
{
	struct rdm_region *r = make(64 * BS, BS, 0);
	uint64_t v[64];
	int calls = 0;

	/* Empty region. */
	CHECK(rdm_is_discarded(r, 0, 64 * BS));
	CHECK(!rdm_is_populated(r, 0, BS));
	CHECK(rdm_populated_bytes(r, 0, UINT64_MAX) == 0);

	CHECK(rdm_populate(r, 4 * BS, 4 * BS) == 0);
	CHECK(rdm_populate(r, 10 * BS, BS) == 0);
	/* Rounded outwards; any alignment. */
	CHECK(rdm_is_populated(r, 4 * BS + 100, 3 * BS));
	CHECK(!rdm_is_populated(r, 4 * BS + 100, 4 * BS));
	CHECK(rdm_is_populated(r, 7 * BS + 4095, 1));
	CHECK(!rdm_is_discarded(r, 3 * BS + 4095, 2));
	CHECK(rdm_is_discarded(r, 0, 4 * BS));
	/* Outside, zero length, NULL: false, not an error. */
	CHECK(!rdm_is_populated(r, 4 * BS, 0));
	CHECK(!rdm_is_discarded(r, 0, 0));
	CHECK(!rdm_is_discarded(r, 60 * BS, 5 * BS));
	CHECK(!rdm_is_discarded(r, 64 * BS, BS));
	CHECK(!rdm_is_discarded(r, BS, UINT64_MAX));
	CHECK(!rdm_is_populated(NULL, 0, BS));
	CHECK(!rdm_is_discarded(NULL, 0, BS));
	/* populated_bytes: clipped and rounded. */
	CHECK(rdm_populated_bytes(r, 0, UINT64_MAX) == 5 * BS);
	CHECK(rdm_populated_bytes(r, 5 * BS + 1, 1) == BS);
	CHECK(rdm_populated_bytes(r, 5 * BS + 1, BS) == 2 * BS);
	CHECK(rdm_populated_bytes(r, 10 * BS, UINT64_MAX) == BS);
	CHECK(rdm_populated_bytes(r, 64 * BS, BS) == 0);
	CHECK(rdm_populated_bytes(r, 0, 0) == 0);
	CHECK(rdm_populated_bytes(NULL, 0, BS) == 0);

	/* Replays: maximal runs, ascending, clipped and rounded. */
	memset(v, 0, sizeof(v));
	CHECK(rdm_replay_populated(r, 0, UINT64_MAX, count_cb, v) == 0);
	CHECK(v[0] == 2 && v[1] == 4 * BS && v[2] == 4 * BS && v[3] == 10 * BS && v[4] == BS);
	memset(v, 0, sizeof(v));
	CHECK(rdm_replay_populated(r, 5 * BS + 7, 1, count_cb, v) == 0);
	CHECK(v[0] == 1 && v[1] == 5 * BS && v[2] == BS);
	memset(v, 0, sizeof(v));
	CHECK(rdm_replay_discarded(r, 0, 64 * BS, count_cb, v) == 0);
	CHECK(v[0] == 3 && v[1] == 0 && v[2] == 4 * BS && v[3] == 8 * BS && v[4] == 2 * BS &&
	      v[5] == 11 * BS && v[6] == 53 * BS);
	memset(v, 0, sizeof(v));
	CHECK(rdm_replay_discarded(r, 64 * BS, BS, count_cb, v) == 0 && v[0] == 0);
	CHECK(rdm_replay_discarded(r, 0, 0, count_cb, v) == 0 && v[0] == 0);
	CHECK(rdm_replay_populated(r, 0, UINT64_MAX, stop_cb, &calls) == -77 && calls == 1);
	CHECK_FAIL(rdm_replay_populated(NULL, 0, BS, count_cb, v), -EINVAL);
	CHECK_FAIL(rdm_replay_populated(r, 0, BS, NULL, v), -EINVAL);
	CHECK_FAIL(rdm_replay_discarded(NULL, 0, BS, count_cb, v), -EINVAL);
	CHECK_FAIL(rdm_replay_discarded(r, 0, BS, NULL, v), -EINVAL);
	CHECK(rdm_region_destroy(r) == 0);
}

struct rel {
	uint64_t v[64];
	int n;
};

static void on_release(void *opaque, uint64_t off, uint64_t len)
{
	struct rel *rl = opaque;

	rl->v[2 * rl->n] = off;
	rl->v[2 * rl->n + 1] = len;
	rl->n++;
}

static void test_changes(void)
{
	struct rdm_region_config cfg = { .struct_size = sizeof(cfg), .size = 16 * BS,
					 .block_size = BS };
	struct rdm_region *r;
	struct rel rl = { .n = 0 };
	char before[64], after[64];

	cfg.release = on_release;
	cfg.release_opaque = &rl;
	REQUIRE(rdm_region_create(&cfg, &r) == 0);
	CHECK(rdm_populate(r, 0, 4 * BS) == 0);
	state(r, before);
	/* Argument errors leave the state alone. */
	CHECK_FAIL(rdm_populate(NULL, 0, BS), -EINVAL);
	CHECK_FAIL(rdm_populate(r, 0, 0), -EINVAL);
	CHECK_FAIL(rdm_populate(r, 1, BS), -EINVAL);
	CHECK_FAIL(rdm_populate(r, 0, BS + 1), -EINVAL);
	CHECK_FAIL(rdm_populate(r, UINT64_MAX - BS + 1, 2 * BS), -EINVAL);
	CHECK_FAIL(rdm_populate(r, 16 * BS, BS), -ERANGE);
	CHECK_FAIL(rdm_populate(r, 15 * BS, 2 * BS), -ERANGE);
	CHECK_FAIL(rdm_discard(NULL, 0, BS), -EINVAL);
	CHECK_FAIL(rdm_discard(r, 0, 0), -EINVAL);
	CHECK_FAIL(rdm_discard(r, BS / 2, BS), -EINVAL);
	CHECK_FAIL(rdm_discard(r, UINT64_MAX - BS + 1, 2 * BS), -EINVAL);
	CHECK_FAIL(rdm_discard(r, 12 * BS, 8 * BS), -ERANGE);
	CHECK_FAIL(rdm_discard_all(NULL), -EINVAL);
	state(r, after);
	CHECK(strcmp(before, after) == 0);
	CHECK(rl.n == 0);

	/* Lenient: overlapping changes are fine; release gets what changed. */
	CHECK(rdm_populate(r, 2 * BS, 4 * BS) == 0);
	CHECK(rdm_discard(r, 3 * BS, 6 * BS) == 0);
	CHECK(rl.n == 1 && rl.v[0] == 3 * BS && rl.v[1] == 3 * BS);
	CHECK(rdm_discard(r, 8 * BS, BS) == 0 && rl.n == 1);
	state(r, after);
	CHECK(strcmp(after, "1110000000000000") == 0);
	CHECK(rdm_discard_all(r) == 0);
	CHECK(rl.n == 2 && rl.v[2] == 0 && rl.v[3] == 3 * BS);
	CHECK(rdm_populated_bytes(r, 0, UINT64_MAX) == 0);
	CHECK(rdm_discard_all(r) == 0 && rl.n == 2);
	CHECK(rdm_populate(r, 0, 16 * BS) == 0 && rdm_is_populated(r, 0, 16 * BS));
	CHECK(rdm_region_destroy(r) == 0);
	/* Destroy without an applier releases what was populated. */
	CHECK(rl.n == 3 && rl.v[4] == 0 && rl.v[5] == 16 * BS);

	/* Strict mode. */
	r = make(16 * BS, BS, RDM_REGION_STRICT);
	CHECK(rdm_populate(r, 2 * BS, 2 * BS) == 0);
	state(r, before);
	CHECK_FAIL(rdm_populate(r, 3 * BS, 2 * BS), -EEXIST);
	CHECK_FAIL(rdm_populate(r, 2 * BS, 2 * BS), -EEXIST);
	CHECK_FAIL(rdm_discard(r, 1 * BS, 2 * BS), -ENOENT);
	CHECK_FAIL(rdm_discard(r, 8 * BS, BS), -ENOENT);
	state(r, after);
	CHECK(strcmp(before, after) == 0);
	CHECK(rdm_discard(r, 2 * BS, BS) == 0);
	CHECK(rdm_discard_all(r) == 0);
	CHECK(rdm_discard_all(r) == 0);
	CHECK(rdm_is_discarded(r, 0, 16 * BS));
	CHECK(rdm_region_destroy(r) == 0);
}

/* ---- listeners ---- */

#define MAXLOG 64

struct event {
	int who;
	char kind; /* 'p' or 'd' */
	uint64_t off, len;
};

static struct event log_[MAXLOG];
static int nlog;

struct tl {
	struct rdm_listener l;
	int id;
	int refuse_at; /* refuse the n-th populate call (1-based), 0 never */
	int refuse_with; /* what the refusal returns; 0: -EPERM */
	int calls;
};

static int tl_populate(struct rdm_listener *l, uint64_t off, uint64_t len)
{
	struct tl *t = (struct tl *)l;

	t->calls++;
	if (t->refuse_at != 0 && t->calls == t->refuse_at)
		return t->refuse_with != 0 ? t->refuse_with : -EPERM;
	if (nlog < MAXLOG)
		log_[nlog++] = (struct event){ t->id, 'p', off, len };
	return 0;
}

static void tl_discard(struct rdm_listener *l, uint64_t off, uint64_t len)
{
	struct tl *t = (struct tl *)l;

	if (nlog < MAXLOG)
		log_[nlog++] = (struct event){ t->id, 'd', off, len };
}

static const struct rdm_listener_ops tl_ops = { tl_populate, tl_discard };

static bool ev(int i, int who, char kind, uint64_t off, uint64_t len)
{
	return i < nlog && log_[i].who == who && log_[i].kind == kind && log_[i].off == off &&
	       log_[i].len == len;
}

static void tl_init(struct tl *t, int id, uint64_t off, uint64_t len)
{
	memset(t, 0, sizeof(*t));
	t->l.ops = &tl_ops;
	t->l.offset = off;
	t->l.length = len;
	t->id = id;
}

static void test_listeners(void)
{
	struct rdm_region *r = make(16 * BS, BS, 0);
	struct tl a, b, c, bad;
	static const struct rdm_listener_ops no_discard = { tl_populate, NULL };
	char before[64], after[64];

	tl_init(&a, 0, 0, 8 * BS);
	tl_init(&b, 1, 4 * BS, 8 * BS);
	tl_init(&c, 2, 0, 16 * BS);

	/* Registration errors. */
	tl_init(&bad, 9, 0, BS);
	CHECK_FAIL(rdm_listener_register(NULL, &bad.l), -EINVAL);
	CHECK_FAIL(rdm_listener_register(r, NULL), -EINVAL);
	bad.l.ops = NULL;
	CHECK_FAIL(rdm_listener_register(r, &bad.l), -EINVAL);
	bad.l.ops = &no_discard;
	CHECK_FAIL(rdm_listener_register(r, &bad.l), -EINVAL);
	bad.l.ops = &tl_ops;
	bad.l.length = 0;
	CHECK_FAIL(rdm_listener_register(r, &bad.l), -EINVAL);
	bad.l.length = BS + 1;
	CHECK_FAIL(rdm_listener_register(r, &bad.l), -EINVAL);
	bad.l.offset = 12 * BS;
	bad.l.length = 8 * BS;
	CHECK_FAIL(rdm_listener_register(r, &bad.l), -ERANGE);
	CHECK_FAIL(rdm_listener_unregister(r, &bad.l), -ENOENT);
	CHECK_FAIL(rdm_listener_unregister(NULL, &bad.l), -EINVAL);
	CHECK_FAIL(rdm_listener_unregister(r, NULL), -EINVAL);

	/* Registration replays populated runs inside the sub-range. */
	CHECK(rdm_populate(r, 2 * BS, 4 * BS) == 0);
	CHECK(rdm_populate(r, 7 * BS, BS) == 0);
	nlog = 0;
	CHECK(rdm_listener_register(r, &a.l) == 0);
	CHECK(nlog == 2 && ev(0, 0, 'p', 2 * BS, 4 * BS) && ev(1, 0, 'p', 7 * BS, BS));
	CHECK_FAIL(rdm_listener_register(r, &a.l), -EINVAL);
	/* A refused replay: the accepted part is discarded, registration fails. */
	nlog = 0;
	b.refuse_at = 2;
	CHECK_FAIL(rdm_listener_register(r, &b.l), -EPERM);
	CHECK(nlog == 2 && ev(0, 1, 'p', 4 * BS, 2 * BS) && ev(1, 1, 'd', 4 * BS, 2 * BS));
	CHECK_FAIL(rdm_listener_unregister(r, &b.l), -ENOENT);
	b.refuse_at = 0;
	b.calls = 0;
	nlog = 0;
	CHECK(rdm_listener_register(r, &b.l) == 0);
	CHECK(rdm_listener_register(r, &c.l) == 0);
	CHECK(nlog == 4);
	CHECK(rdm_discard_all(r) == 0);
	a.calls = b.calls = c.calls = 0;

	/* Populate: order, clipping. */
	nlog = 0;
	CHECK(rdm_populate(r, 2 * BS, 4 * BS) == 0);
	CHECK(nlog == 3 && ev(0, 0, 'p', 2 * BS, 4 * BS) && ev(1, 1, 'p', 4 * BS, 2 * BS) &&
	      ev(2, 2, 'p', 2 * BS, 4 * BS));
	/* Lenient: only the blocks that change. */
	nlog = 0;
	CHECK(rdm_populate(r, 0, 8 * BS) == 0);
	CHECK(nlog == 5 && ev(0, 0, 'p', 0, 2 * BS) && ev(1, 0, 'p', 6 * BS, 2 * BS) &&
	      ev(2, 1, 'p', 6 * BS, 2 * BS) && ev(3, 2, 'p', 0, 2 * BS) &&
	      ev(4, 2, 'p', 6 * BS, 2 * BS));
	/* A refusal by listener 2 (second run): rollback in reverse order. */
	CHECK(rdm_discard(r, 0, 8 * BS) == 0);
	CHECK(rdm_populate(r, 3 * BS, 2 * BS) == 0);
	state(r, before);
	nlog = 0;
	c.calls = 0;
	c.refuse_at = 2;
	CHECK_FAIL(rdm_populate(r, BS, 6 * BS), -EPERM);
	c.refuse_at = 0;
	/* told: a [1,3) [5,7); b [5,7); c [1,3) then refuses [5,7);
	 * rollback: c [1,3), b [5,7), a [1,3) [5,7). */
	CHECK(nlog == 8);
	CHECK(ev(0, 0, 'p', BS, 2 * BS) && ev(1, 0, 'p', 5 * BS, 2 * BS));
	CHECK(ev(2, 1, 'p', 5 * BS, 2 * BS) && ev(3, 2, 'p', BS, 2 * BS));
	CHECK(ev(4, 2, 'd', BS, 2 * BS) && ev(5, 1, 'd', 5 * BS, 2 * BS));
	CHECK(ev(6, 0, 'd', BS, 2 * BS) && ev(7, 0, 'd', 5 * BS, 2 * BS));
	state(r, after);
	CHECK(strcmp(before, after) == 0);
	/* A refusal by the first listener: nobody else hears anything. */
	/* (a's sub-range ends at 8: the populate above was not a's.) */
	nlog = 0;
	a.calls = 0;
	a.refuse_at = 1;
	CHECK_FAIL(rdm_populate(r, 0, BS), -EPERM);
	a.refuse_at = 0;
	CHECK(nlog == 0);
	CHECK(rdm_is_discarded(r, 0, BS));
	/* A refusal that is not a negative errno is a protocol error, told
	 * whole (one block) or run by run, and rolls back the same way. */
	a.calls = 0;
	a.refuse_at = 1;
	a.refuse_with = 1;
	CHECK_FAIL(rdm_populate(r, 0, BS), -EPROTO);
	a.refuse_at = a.refuse_with = 0;
	CHECK(nlog == 0);
	CHECK(rdm_is_discarded(r, 0, BS));
	state(r, before);
	c.calls = 0;
	c.refuse_at = 2;
	c.refuse_with = 7;
	CHECK_FAIL(rdm_populate(r, BS, 6 * BS), -EPROTO);
	c.refuse_at = c.refuse_with = 0;
	CHECK(nlog == 8 && ev(4, 2, 'd', BS, 2 * BS) && ev(7, 0, 'd', 5 * BS, 2 * BS));
	state(r, after);
	CHECK(strcmp(before, after) == 0);

	/* Discard: visible, told in order, clipped; only populated runs. */
	CHECK(rdm_discard_all(r) == 0);
	CHECK(rdm_populate(r, 3 * BS, 2 * BS) == 0);
	nlog = 0;
	CHECK(rdm_discard(r, 0, 16 * BS) == 0);
	CHECK(nlog == 3 && ev(0, 0, 'd', 3 * BS, 2 * BS) && ev(1, 1, 'd', 4 * BS, BS) &&
	      ev(2, 2, 'd', 3 * BS, 2 * BS));

	/* Unregister discards what is populated in the sub-range. */
	CHECK(rdm_populate(r, 6 * BS, 4 * BS) == 0);
	nlog = 0;
	CHECK(rdm_listener_unregister(r, &b.l) == 0);
	CHECK(nlog == 1 && ev(0, 1, 'd', 6 * BS, 4 * BS));
	CHECK_FAIL(rdm_listener_unregister(r, &b.l), -ENOENT);
	nlog = 0;
	CHECK(rdm_populate(r, 0, BS) == 0);
	CHECK(nlog == 2 && ev(0, 0, 'p', 0, BS) && ev(1, 2, 'p', 0, BS));

	/* Destroy tells the remaining listeners a discard of everything. */
	nlog = 0;
	CHECK(rdm_region_destroy(r) == 0);
	CHECK(nlog == 4 && ev(0, 0, 'd', 0, BS) && ev(1, 0, 'd', 6 * BS, 2 * BS) &&
	      ev(2, 2, 'd', 0, BS) && ev(3, 2, 'd', 6 * BS, 4 * BS));
}

/* Strict mode with listeners: the check comes before anyone is told. */
static void test_strict_listeners(void)
{
	struct rdm_region *r = make(16 * BS, BS, RDM_REGION_STRICT);
	struct tl a;

	tl_init(&a, 0, 0, 16 * BS);
	CHECK(rdm_listener_register(r, &a.l) == 0);
	CHECK(rdm_populate(r, 0, 4 * BS) == 0);
	nlog = 0;
	CHECK_FAIL(rdm_populate(r, 2 * BS, 4 * BS), -EEXIST);
	CHECK_FAIL(rdm_discard(r, 2 * BS, 4 * BS), -ENOENT);
	CHECK(nlog == 0);
	CHECK(rdm_discard(r, BS, 2 * BS) == 0);
	CHECK(nlog == 1 && ev(0, 0, 'd', BS, 2 * BS));
	CHECK(rdm_listener_unregister(r, &a.l) == 0);
	CHECK(rdm_region_destroy(r) == 0);
}

/* Superseded state leaves: the region hands what it retired to RCU (in
 * groups of RDM_TREE_RETIRE_GROUP nodes, core/tree.c "Retire groups"; here
 * at once), then a grace period frees it. */
static void reclaim(struct rdm_region *r)
{
	rdm_region_retire_flush(r);
	rcu_barrier();
}

/* Canonical structure: memory returns to zero, sparse stays small. */
static void test_memory(void)
{
	struct rdm_region *r = make(UINT64_C(1) << 40, BS, 0);
	const struct rdm_mem *m = rdm_region_mem(r);
	uint64_t nb = (UINT64_C(1) << 40) / BS;
	size_t view;

	CHECK(rdm_mem_current(m) == 0);
	/* A few extents in a 1 TiB region. */
	for (uint64_t i = 0; i < 8; i++)
		CHECK(rdm_populate(r, (i * (nb / 8) + 3) * BS, (1 + i) * BS) == 0);
	reclaim(r);
	printf("8 extents in 1 TiB: %zu bytes\n", rdm_mem_current(m));
	CHECK(rdm_mem_current(m) <= 8 * 64);
	/* Everything populated, then everything discarded. */
	CHECK(rdm_populate(r, 0, UINT64_C(1) << 40) == 0);
	reclaim(r);
	CHECK(rdm_mem_current(m) <= 64);
	CHECK(rdm_discard_all(r) == 0);
	reclaim(r);
	CHECK(rdm_mem_current(m) == 0);
	CHECK(rdm_region_destroy(r) == 0);

	/* ~1,000 extents in 2^20 blocks; the flat view (core/flat.h) of a
	 * region this small is counted apart. */
	r = make((UINT64_C(1) << 20) * BS, BS, 0);
	m = rdm_region_mem(r);
	view = rdm_mem_current(m);
	CHECK(view <= (UINT64_C(1) << 20) / 8 + 256);
	for (uint64_t i = 0; i < 1000; i++)
		CHECK(rdm_populate(r, (i * 1048 + (i * 7919) % 500) * BS, (1 + i % 13) * BS) == 0);
	reclaim(r);
	printf("1000 extents in 2^20 blocks: %zu bytes (%.1f per extent)\n", rdm_mem_current(m) - view,
	       (rdm_mem_current(m) - view) / 1000.0);
	CHECK(rdm_mem_current(m) - view <= 64 * 1000);
	CHECK(rdm_region_destroy(r) == 0);
}

/* rdm_region_load: same state (and, canonical, same memory) as populates. */
static uint64_t load_bits[(UINT64_C(1) << 16) / 64];

static void load_get(void *opaque, uint64_t first, uint64_t *words)
{
	(void)opaque;
	if (first < (UINT64_C(1) << 16))
		memcpy(words, &load_bits[first / 64], 64 * sizeof(uint64_t));
}

/* Replay callbacks may not make changes (they run inside an RCU read-side
 * section): collect the runs, populate afterwards. */
struct runs {
	uint64_t off[1 << 15], len[1 << 15];
	unsigned n;
};

static int collect_run(void *opaque, uint64_t off, uint64_t len)
{
	struct runs *r = opaque;

	if (r->n == sizeof(r->off) / sizeof(r->off[0]))
		return -ENOSPC;
	r->off[r->n] = off;
	r->len[r->n++] = len;
	return 0;
}

static void test_load(void)
{
	uint64_t nb = (UINT64_C(1) << 16) - 100, x = 12345;
	struct rdm_region *a = make(nb * BS, BS, 0), *b = make(nb * BS, BS, 0);
	struct tl l;

	for (uint64_t i = 0; i < nb; i++) {
		unsigned chunk = (unsigned)(i / 4096) % 4;
		bool v;

		x = x * 6364136223846793005u + 1442695040888963407u;
		/* per 4096-block chunk: empty, full, sparse, dense */
		v = chunk == 1 || (chunk == 2 && (x >> 60) == 0) || (chunk == 3 && (x >> 63));
		if (v)
			load_bits[i / 64] |= UINT64_C(1) << (i % 64);
	}
	CHECK_FAIL(rdm_region_load(NULL, load_get, NULL), -EINVAL);
	CHECK_FAIL(rdm_region_load(a, NULL, NULL), -EINVAL);
	CHECK(rdm_region_load(a, load_get, NULL) == 0);
	static struct runs runs;

	CHECK(rdm_replay_populated(a, 0, UINT64_MAX, collect_run, &runs) == 0);
	for (unsigned i = 0; i < runs.n; i++)
		CHECK(rdm_populate(b, runs.off[i], runs.len[i]) == 0);
	for (uint64_t i = 0; i < nb; i += 97)
		CHECK(rdm_is_populated(a, i * BS, BS) ==
		      (bool)((load_bits[i / 64] >> (i % 64)) & 1));
	CHECK(rdm_populated_bytes(a, 0, UINT64_MAX) == rdm_populated_bytes(b, 0, UINT64_MAX));
	reclaim(a);
	reclaim(b);
	/* The same canonical structure, node for node (the writers' scratch
	 * lists, whose capacity depends on the path taken, are not compared). */
	struct rdm_tree_stats sa, sb;

	rdm_tree_stats(rdm_region_tree(a), &sa);
	rdm_tree_stats(rdm_region_tree(b), &sb);
	CHECK(sa.inner == sb.inner && sa.bitmap == sb.bitmap && sa.ext == sb.ext && sa.extents == sb.extents);
	/* Only on an empty region without listeners. */
	CHECK_FAIL(rdm_region_load(a, load_get, NULL), -EBUSY);
	CHECK(rdm_discard_all(b) == 0);
	tl_init(&l, 0, 0, BS);
	CHECK(rdm_listener_register(b, &l.l) == 0);
	CHECK_FAIL(rdm_region_load(b, load_get, NULL), -EBUSY);
	CHECK(rdm_populated_bytes(b, 0, UINT64_MAX) == 0);
	CHECK(rdm_region_destroy(a) == 0);
	CHECK(rdm_region_destroy(b) == 0);
}

int main(void)
{
	test_create();
	test_get_config();
	test_queries();
	test_changes();
	test_listeners();
	test_strict_listeners();
	test_memory();
	test_load();
	return check_exit();
}
