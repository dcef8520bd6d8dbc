/* tests/ring/test_ring_shared.c - memfd rings: attach validation, a hostile peer, and a producer in a forked child. */
#include "tests/check.h"
#include "iommu/record.h"
#include "tests/ring/ring_test_util.h"

#include <rdm/error.h>
#include <rdm/ring.h>

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

/* Attach to a copy of a good ring whose header or indices `mutate` damaged. */
static int attach_damaged(void (*mutate)(struct rdm_ring_shared *sh))
{
	int fd;
	struct rdm_ring *r, *a = NULL;
	REQUIRE(rdm_ring_create_shared(16, 40, &fd, &r) == 0);
	mutate(r->prod.sh);
	int err = rdm_ring_attach(fd, RDM_RING_CONSUMER, &a);
	if (err == 0)
		rdm_ring_destroy(a);
	rdm_ring_destroy(r);
	close(fd);
	return err;
}

static void bad_magic(struct rdm_ring_shared *sh) { sh->hdr.magic ^= 1; }
static void bad_version(struct rdm_ring_shared *sh) { sh->hdr.version = 99; }
static void bad_rs_zero(struct rdm_ring_shared *sh) { sh->hdr.record_size = 0; }
static void bad_rs_odd(struct rdm_ring_shared *sh) { sh->hdr.record_size = 41; }
static void bad_rs_big(struct rdm_ring_shared *sh) { sh->hdr.record_size = 48; } /* data no longer fits */
static void bad_cap(struct rdm_ring_shared *sh) { sh->hdr.capacity = 12; }
static void bad_cap_big(struct rdm_ring_shared *sh) { sh->hdr.capacity = 1u << 20; }
static void bad_offset(struct rdm_ring_shared *sh) { sh->hdr.data_offset = 64; }
static void bad_total(struct rdm_ring_shared *sh) { sh->hdr.total_size += 8; }
static void bad_tail(struct rdm_ring_shared *sh) { atomic_store(&sh->tail, 17); }
static void bad_head(struct rdm_ring_shared *sh) { atomic_store(&sh->head, 1); }
static void good_full(struct rdm_ring_shared *sh)
{
	atomic_store(&sh->tail, 16);
}

static void test_attach_errors(void)
{
	CHECK(attach_damaged(bad_magic) == -EPROTO);
	CHECK(strstr(rdm_last_error(), "magic") != NULL);
	CHECK(attach_damaged(bad_version) == -EPROTONOSUPPORT);
	CHECK(attach_damaged(bad_rs_zero) == -EMSGSIZE);
	CHECK(strstr(rdm_last_error(), "record size") != NULL);
	CHECK(attach_damaged(bad_rs_odd) == -EMSGSIZE);
	CHECK(attach_damaged(bad_rs_big) == -EPROTO);
	CHECK(attach_damaged(bad_cap) == -EPROTO);
	CHECK(attach_damaged(bad_cap_big) == -EPROTO);
	CHECK(attach_damaged(bad_offset) == -EPROTO);
	CHECK(attach_damaged(bad_total) == -EPROTO);
	CHECK(attach_damaged(bad_tail) == -EBADMSG);
	CHECK(strstr(rdm_last_error(), "indices") != NULL);
	CHECK(attach_damaged(bad_head) == -EBADMSG);
	CHECK(attach_damaged(good_full) == 0);

	struct rdm_ring *a = NULL;
	CHECK(rdm_ring_attach(-1, RDM_RING_CONSUMER, &a) == -EINVAL);
	CHECK(rdm_ring_attach(0, (enum rdm_ring_side)7, &a) == -EINVAL);
	CHECK(rdm_ring_attach(0, RDM_RING_CONSUMER, NULL) == -EINVAL);
	/* An unsealed memfd could be truncated under the mapping. */
	int fd = memfd_create("not-sealed", MFD_CLOEXEC);
	REQUIRE(fd >= 0);
	REQUIRE(ftruncate(fd, 4096) == 0);
	CHECK(rdm_ring_attach(fd, RDM_RING_CONSUMER, &a) == -EPERM);
	close(fd);
	/* Sealed but too small for a header. */
	fd = memfd_create("small", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	REQUIRE(fd >= 0);
	REQUIRE(ftruncate(fd, 64) == 0);
	REQUIRE(fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK) == 0);
	CHECK(rdm_ring_attach(fd, RDM_RING_CONSUMER, &a) == -EPROTO);
	close(fd);
	CHECK(a == NULL);
}

/* Bounds are copied at attach: later header changes move nothing. */
static void test_header_changed_after_attach(void)
{
	int fd;
	struct rdm_ring *r, *p;
	REQUIRE(rdm_ring_create_shared(4, 8, &fd, &r) == 0);
	REQUIRE(rdm_ring_attach(fd, RDM_RING_PRODUCER, &p) == 0);
	close(fd);
	r->prod.sh->hdr.capacity = 1u << 20;
	r->prod.sh->hdr.record_size = 4096;
	uint64_t v = 5;
	for (int i = 0; i < 4; i++)
		CHECK(rdm_ring_push(p, &v));
	CHECK(!rdm_ring_push(p, &v));
	CHECK(rdm_ring_count(r) == 4);
	rdm_ring_destroy(p);
	rdm_ring_destroy(r);
}

/* Attach refuses a sealed memfd that is not on shmem (hugetlbfs: SIGBUS risk). */
static void test_attach_hugetlb(void)
{
	int fd = memfd_create("rdm-ring-huge", MFD_CLOEXEC | MFD_ALLOW_SEALING | MFD_HUGETLB);
	if (fd < 0) {
		printf("hugetlb memfd: not available (errno %d), check skipped\n", errno);
		return;
	}
	struct rdm_ring *a = NULL;
	if (ftruncate(fd, 2u << 20) == 0 && fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK) == 0) {
		CHECK(rdm_ring_attach(fd, RDM_RING_CONSUMER, &a) == -EPERM);
		CHECK(strstr(rdm_last_error(), "shmem") != NULL);
		CHECK(a == NULL);
	} else {
		printf("hugetlb memfd: cannot size or seal (errno %d), check skipped\n", errno);
	}
	close(fd);
}

/*
 * A hostile peer: between any two calls it writes random values into every
 * index, flag and header word. Each call on the attached handles must stay in
 * range (counts <= capacity, -EBADMSG for a corrupt index) and write only
 * the caller's buffer (a canary after it), never sleep forever (spin budget
 * 0 sleeps at once: the peer's "other thread" is this loop, so waits are
 * only called when they cannot sleep: see below).
 */
static void test_hostile_peer(void)
{
	enum { CAP = 8, RS = 432 }; /* 640 + 8 * 432 = 4096: the ring ends on a page boundary */
	int fd;
	struct rdm_ring *r, *p, *c;
	REQUIRE(rdm_ring_create_shared(CAP, RS, &fd, &r) == 0);
	REQUIRE(rdm_ring_attach(fd, RDM_RING_PRODUCER, &p) == 0);
	REQUIRE(rdm_ring_attach(fd, RDM_RING_CONSUMER, &c) == 0);
	close(fd);
	struct rdm_ring_shared *sh = r->prod.sh;
	unsigned char in[CAP * RS], out[CAP * RS + 64];
	memset(in, 0x5a, sizeof(in));
	uint64_t seed = 0x1234567;
	uint32_t near = 0;
	for (int i = 0; i < 200000; i++) {
		uint64_t x = ring_rand(&seed);
		/* Values near the real indices (the interesting boundaries) or anywhere. */
		uint32_t t = x & 1 ? (uint32_t)(near + (x >> 8) % 24 - 12) : (uint32_t)(x >> 16);
		uint32_t h = x & 2 ? (uint32_t)(near + (x >> 20) % 24 - 12) : (uint32_t)(x >> 32);
		atomic_store(&sh->tail, t);
		atomic_store(&sh->head, h);
		atomic_store(&sh->consumer_sleeping, (uint32_t)(x >> 40) & 1);
		atomic_store(&sh->producer_sleeping, (uint32_t)(x >> 41) & 1);
		sh->hdr.capacity = (uint32_t)(x >> 7);
		sh->hdr.record_size = (uint32_t)(x >> 13);
		sh->hdr.data_offset = x;
		memset(out + CAP * RS, 0xc3, 64);
		unsigned n = (unsigned)((x >> 50) % (CAP + 2));
		int k;
		switch ((x >> 56) % 10) {
		case 0: CHECK(rdm_ring_push(p, in) == true || rdm_ring_free_count(p) == 0); break;
		case 1: CHECK(rdm_ring_push_burst(p, in, n) <= n); break;
		case 2: CHECK(rdm_ring_push_bulk(p, in, n) % (n ? n : 1) == 0); break;
		case 3: CHECK(rdm_ring_free_count(p) <= CAP); break;
		case 4: k = rdm_ring_pop(c, out); CHECK(k == -EBADMSG || k == 0 || k == 1); break;
		case 5: k = rdm_ring_pop_burst(c, out, n); CHECK(k == -EBADMSG || (k >= 0 && (unsigned)k <= n)); break;
		case 6: k = rdm_ring_pop_bulk(c, out, n); CHECK(k == -EBADMSG || k == 0 || (unsigned)k == n); break;
		case 7: k = rdm_ring_count(c); CHECK(k == -EBADMSG || (k >= 0 && k <= CAP)); break;
		case 8: (void)rdm_ring_empty(c); break;
		default:
			/* Only where no sleep can follow: a readable ring returns at once. */
			k = rdm_ring_count(c);
			if (k > 0)
				CHECK(rdm_ring_wait_readable(c, 0) > 0);
			break;
		}
		for (int j = 0; j < 64; j++)
			CHECK(out[CAP * RS + j] == 0xc3);
		near = p->prod.tail; /* the producer's own index: where the checks bite */
	}
	rdm_ring_destroy(c);
	rdm_ring_destroy(p);
	rdm_ring_destroy(r);
}

static struct rdm_change_rec make_rec(uint64_t i)
{
	return (struct rdm_change_rec){.op = (uint16_t)(1 + i % 3), .flags = (uint16_t)i,
				       .region = (uint32_t)(i % 5), .seq = i, .offset = ring_mix(i),
				       .length = i << 12, .ticket = ~i};
}

static uint64_t rec_sum(const struct rdm_change_rec *c)
{
	return ring_mix(c->op ^ ((uint64_t)c->flags << 16) ^ ((uint64_t)c->region << 32)) ^
	       ring_mix(c->seq) * 3 ^ c->offset * 5 ^ c->length * 7 ^ c->ticket * 11;
}

/* Producer in a forked child over the memfd, consumer here; checksum. */
static void test_fork(void)
{
	uint64_t n = ring_test_env_u64("RDM_RING_FORK_RECORDS", 2000000 / ring_test_scale_div());
	printf("fork: %llu records\n", (unsigned long long)n);
	fflush(stdout);
	int fd;
	struct rdm_ring *cons;
	REQUIRE(rdm_ring_create_shared(256, sizeof(struct rdm_change_rec), &fd, &cons) == 0);
	pid_t pid = fork();
	REQUIRE(pid >= 0);
	if (pid == 0) {
		struct rdm_ring *prod;
		if (rdm_ring_attach(fd, RDM_RING_PRODUCER, &prod) != 0)
			_exit(2);
		struct rdm_change_rec batch[16];
		uint64_t i = 0;
		while (i < n) {
			unsigned want = (unsigned)(i % 16) + 1;
			if (want > n - i)
				want = (unsigned)(n - i);
			for (unsigned k = 0; k < want; k++)
				batch[k] = make_rec(i + k);
			unsigned done = want == 1 ? (rdm_ring_push(prod, batch) ? 1u : 0u)
						  : rdm_ring_push_burst(prod, batch, want);
			i += done;
			if (done == 0 && rdm_ring_wait_writable(prod, 64) < 0)
				_exit(3);
		}
		rdm_ring_destroy(prod);
		_exit(0);
	}
	uint64_t expect = 0, got = 0, i = 0;
	for (uint64_t k = 0; k < n; k++)
		expect += rec_sum(&(struct rdm_change_rec){0}) ^ rec_sum((const struct rdm_change_rec[]){make_rec(k)});
	bool ordered = true;
	struct rdm_change_rec out[32];
	while (i < n) {
		int k = rdm_ring_pop_burst(cons, out, 32);
		REQUIRE(k >= 0);
		if (k == 0) {
			REQUIRE(rdm_ring_wait_readable(cons, 64) >= 0);
			continue;
		}
		for (int j = 0; j < k; j++) {
			ordered &= out[j].seq == i + (uint64_t)j;
			got += rec_sum(&(struct rdm_change_rec){0}) ^ rec_sum(&out[j]);
		}
		i += (uint64_t)k;
	}
	int status;
	REQUIRE(waitpid(pid, &status, 0) == pid);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	CHECK(ordered);
	CHECK(got == expect);
	CHECK(rdm_ring_count(cons) == 0);
	rdm_ring_destroy(cons);
	close(fd);
}

int main(void)
{
	test_attach_errors();
	test_header_changed_after_attach();
	test_attach_hugetlb();
	test_hostile_peer();
	test_fork();
	return check_exit();
}
