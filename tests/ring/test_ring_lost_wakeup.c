/* tests/ring/test_ring_lost_wakeup.c - capacity 2, no spin: every sleep is woken (threads and processes, both protocols); a watchdog counts lost wake-ups instead of hanging. */
#include "tests/check.h"
#include "tests/ring/ring_test_util.h"
#include "ring/ring_internal.h"

#include <rdm/ring.h>

#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/*
 * A capacity-2 ring with a zero spin budget sleeps on almost every record:
 * each side alternates between "full/empty, set my flag, FUTEX_WAIT" and
 * "publish, see the other's flag, FUTEX_WAKE", so every interleaving of a
 * waker's flag handling with the sleeper's next sleep comes up within a few
 * hundred thousand records.
 *
 * The oracle: the consumer checks that record i carries ring_mix(i), in order.
 * The watchdog (this thread) declares a lost wake-up when neither index has
 * moved for a while and both sides are asleep (state S in /proc: in this
 * test their only sleep is the ring's FUTEX_WAIT), or the consumer is and the
 * producer has finished, in two samples apart. A
 * sleeping pair cannot wake itself, so this is a deadlock, not slowness. It
 * then wakes both futex words itself (the run goes on, so one run counts
 * every loss) and the test fails. A pair that makes no progress at all for
 * HANG_LIMIT_S seconds fails the test too.
 */

#define STALL_MS 1000      /* no index moved for this long: look at the sides' states */
#define CONFIRM_MS 200     /* ... and again this much later */
#define HANG_LIMIT_S 300   /* no progress for this long: give up */

enum mode { THREADS_DEFAULT, THREADS_SEQ_CST, PROCESSES };
static const char *const mode_name[] = {"threads, private ring's protocol", "threads, seq_cst",
					"processes, memfd ring (seq_cst)"};

struct side {
	struct rdm_ring *r;
	uint64_t n;
	_Atomic int tid; /* for /proc; 0 until known */
	int bad;         /* records out of order or with wrong contents */
	_Atomic int *done; /* consumer: raised when it has read all n */
	_Atomic int finished; /* producer thread: has pushed all n and returns */
};

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void nap_ms(unsigned ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

/* The scheduler state letter of a task ('S' asleep, 'R' running, ...), or 0. */
static char task_state(const char *path)
{
	char buf[512];
	FILE *f = fopen(path, "r");
	if (!f)
		return 0;
	size_t len = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[len] = 0;
	/* pid (comm) S ...: the comm may hold spaces and parentheses. */
	char *p = strrchr(buf, ')');
	return p && p[1] == ' ' ? p[2] : 0;
}

static char thread_state(int tid)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/self/task/%d/stat", tid);
	return task_state(path);
}

static char process_state(pid_t pid)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	return task_state(path);
}

static void produce(struct rdm_ring *r, uint64_t n)
{
	for (uint64_t i = 0; i < n;) {
		uint64_t v = ring_mix(i);
		if (rdm_ring_push(r, &v)) {
			i++;
			continue;
		}
		int k = rdm_ring_wait_writable(r, 0);
		if (k < 0) {
			fprintf(stderr, "wait_writable: %d\n", k);
			exit(1);
		}
	}
}

static void *producer_thread(void *arg)
{
	struct side *s = arg;
	atomic_store_explicit(&s->tid, (int)syscall(SYS_gettid), memory_order_relaxed);
	produce(s->r, s->n);
	/* Relaxed: only tells the watchdog it will wake nobody any more. */
	atomic_store_explicit(&s->finished, 1, memory_order_relaxed);
	return NULL;
}

static void *consumer_thread(void *arg)
{
	struct side *s = arg;
	atomic_store_explicit(&s->tid, (int)syscall(SYS_gettid), memory_order_relaxed);
	for (uint64_t i = 0; i < s->n;) {
		uint64_t v;
		int k = rdm_ring_pop(s->r, &v);
		if (k < 0) {
			fprintf(stderr, "pop: %d\n", k);
			exit(1);
		}
		if (k == 0) {
			k = rdm_ring_wait_readable(s->r, 0);
			if (k < 0) {
				fprintf(stderr, "wait_readable: %d\n", k);
				exit(1);
			}
			continue;
		}
		s->bad += v != ring_mix(i);
		i++;
	}
	return NULL;
}

/* Wake every sleeper on both index words (the rescue after a lost wake-up). */
static void wake_all(struct rdm_ring *r)
{
	int op = FUTEX_WAKE | (r->ctl.futex_private ? FUTEX_PRIVATE_FLAG : 0);
	syscall(SYS_futex, &r->cons.sh->tail, op, INT_MAX, NULL, NULL, 0);
	syscall(SYS_futex, &r->cons.sh->head, op, INT_MAX, NULL, NULL, 0);
}

struct watch {
	struct rdm_ring *r; /* a handle on the ring (its shared words) */
	struct side *prod;  /* producer thread, or NULL for a child process */
	pid_t child;        /* the producer process, or 0 */
	struct side *cons;
	_Atomic int *done;
};

/*
 * The consumer asleep, and the producer asleep or gone (a producer that has
 * pushed everything wakes nobody any more: its last wake-up may be the lost
 * one).
 */
static bool both_asleep(const struct watch *w)
{
	int ct = atomic_load_explicit(&w->cons->tid, memory_order_relaxed);
	if (!ct || thread_state(ct) != 'S')
		return false;
	char ps;
	if (w->child) {
		ps = process_state(w->child);
		return ps == 'S' || ps == 'Z' || ps == 'X';
	}
	if (atomic_load_explicit(&w->prod->finished, memory_order_relaxed))
		return true;
	int pt = atomic_load_explicit(&w->prod->tid, memory_order_relaxed);
	return pt && thread_state(pt) == 'S';
}

/* Watch one pair until it is done; returns the number of lost wake-ups seen. */
static unsigned watch(const struct watch *w)
{
	struct rdm_ring_shared *sh = w->r->cons.sh;
	unsigned lost = 0;
	/* Relaxed: the watchdog only compares index values over time. */
	uint32_t tail = atomic_load_explicit(&sh->tail, memory_order_relaxed);
	uint32_t head = atomic_load_explicit(&sh->head, memory_order_relaxed);
	uint64_t since = now_ms();
	while (!atomic_load_explicit(w->done, memory_order_acquire)) {
		nap_ms(20);
		uint32_t t = atomic_load_explicit(&sh->tail, memory_order_relaxed);
		uint32_t h = atomic_load_explicit(&sh->head, memory_order_relaxed);
		if (t != tail || h != head) {
			tail = t;
			head = h;
			since = now_ms();
			continue;
		}
		uint64_t stalled = now_ms() - since;
		if (stalled >= (uint64_t)HANG_LIMIT_S * 1000u) {
			fprintf(stderr, "no progress for %d s (tail %u head %u): giving up\n",
				HANG_LIMIT_S, t, h);
			if (w->child)
				kill(w->child, SIGKILL);
			exit(1);
		}
		if (stalled < STALL_MS || !both_asleep(w))
			continue;
		nap_ms(CONFIRM_MS);
		if (atomic_load_explicit(&sh->tail, memory_order_relaxed) != t ||
		    atomic_load_explicit(&sh->head, memory_order_relaxed) != h || !both_asleep(w))
			continue;
		lost++;
		fprintf(stderr,
			"LOST WAKE-UP: both sides asleep, tail %u head %u (%s), consumer flag %u, "
			"producer flag %u; waking both\n",
			t, h, t == h ? "empty" : "not empty",
			atomic_load_explicit(&sh->consumer_sleeping, memory_order_relaxed),
			atomic_load_explicit(&sh->producer_sleeping, memory_order_relaxed));
		wake_all(w->r);
		since = now_ms();
	}
	return lost;
}

static struct result {
	unsigned lost;
	unsigned rounds_lost; /* rounds with at least one lost wake-up */
	int bad;
	bool asym;            /* the ring ran the asymmetric protocol */
} res;

static void *consumer_thread_done(void *arg)
{
	struct side *s = arg;
	consumer_thread(s);
	/* Release: pairs with the watchdog's acquire load of done; it then
	 * reads s->bad after the join anyway. */
	atomic_store_explicit(s->done, 1, memory_order_release);
	return NULL;
}

static void account(unsigned lost, int bad)
{
	res.lost += lost;
	res.rounds_lost += lost > 0;
	res.bad += bad;
}

static void round_threads(bool seq_cst, uint64_t n)
{
	struct rdm_ring *r;
	REQUIRE(rdm_ring_create(2, 8, &r) == 0);
	if (seq_cst)
		REQUIRE(rdm_ring_use_seq_cst_for_test(r) == 0);
	res.asym = rdm_ring_is_asymmetric_for_test(r);
	_Atomic int done = 0;
	struct side prod = {.r = r, .n = n}, cons = {.r = r, .n = n, .done = &done};
	pthread_t pt, ct;
	REQUIRE(pthread_create(&ct, NULL, consumer_thread_done, &cons) == 0);
	REQUIRE(pthread_create(&pt, NULL, producer_thread, &prod) == 0);
	struct watch w = {.r = r, .prod = &prod, .cons = &cons, .done = &done};
	unsigned lost = watch(&w);
	REQUIRE(pthread_join(pt, NULL) == 0);
	REQUIRE(pthread_join(ct, NULL) == 0);
	account(lost, cons.bad);
	rdm_ring_destroy(r);
}

static void round_processes(uint64_t n)
{
	int fd;
	struct rdm_ring *r;
	REQUIRE(rdm_ring_create_shared(2, 8, &fd, &r) == 0);
	fflush(stdout);
	fflush(stderr);
	pid_t pid = fork();
	REQUIRE(pid >= 0);
	if (pid == 0) {
		struct rdm_ring *p;
		if (rdm_ring_attach(fd, RDM_RING_PRODUCER, &p) != 0)
			_exit(2);
		produce(p, n);
		rdm_ring_destroy(p);
		_exit(0);
	}
	_Atomic int done = 0;
	struct side cons = {.r = r, .n = n, .done = &done};
	pthread_t ct;
	REQUIRE(pthread_create(&ct, NULL, consumer_thread_done, &cons) == 0);
	struct watch w = {.r = r, .child = pid, .cons = &cons, .done = &done};
	unsigned lost = watch(&w);
	REQUIRE(pthread_join(ct, NULL) == 0);
	int status;
	REQUIRE(waitpid(pid, &status, 0) == pid);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	account(lost, cons.bad);
	rdm_ring_destroy(r);
	close(fd);
}

/*
 * Usage: test_ring_lost_wakeup [ROUNDS [RECORDS [SECONDS]]] (defaults 4,
 * 200000 and no limit; RDM_RING_LW_ROUNDS / RDM_RING_LW_RECORDS override).
 * Each mode runs ROUNDS rings of RECORDS records, but stops starting new
 * rings once it has used its third of SECONDS (at least one ring each): the
 * time goes into futex sleeps and wakes, whose cost is the host's (150
 * rings per mode took 390 s on one run of a machine and more than 1800 s on
 * another run of it, when waking an idle vCPU took 100-250 us). The line
 * per mode says how many rings ran.
 */
int main(int argc, char **argv)
{
	uint64_t rounds = argc > 1 ? strtoull(argv[1], NULL, 0) : 4;
	uint64_t n = argc > 2 ? strtoull(argv[2], NULL, 0) : 200000;
	uint64_t budget_ms = argc > 3 ? strtoull(argv[3], NULL, 0) * 1000u / 3 : 0;
	rounds = ring_test_env_u64("RDM_RING_LW_ROUNDS", rounds);
	n = ring_test_env_u64("RDM_RING_LW_RECORDS", n);
	if (n < 1000)
		n = 1000;
	for (int m = THREADS_DEFAULT; m <= PROCESSES; m++) {
		uint64_t t0 = now_ms(), ran = 0;

		res = (struct result){0};
		for (uint64_t i = 0; i < rounds; i++, ran++) {
			if (i && budget_ms && now_ms() - t0 > budget_ms)
				break;
			if (m == PROCESSES)
				round_processes(n);
			else
				round_threads(m == THREADS_SEQ_CST, n);
		}
		printf("%s%s: %llu of %llu rounds of %llu records in %.1f s: %u lost wake-up(s) in %u round(s), "
		       "%d bad record(s)\n",
		       mode_name[m], m == THREADS_DEFAULT ? (res.asym ? ": asymmetric" : ": seq_cst") : "",
		       (unsigned long long)ran, (unsigned long long)rounds, (unsigned long long)n,
		       (double)(now_ms() - t0) / 1000.0, res.lost, res.rounds_lost, res.bad);
		fflush(stdout);
		CHECK(res.lost == 0);
		CHECK(res.bad == 0);
	}
	return check_exit();
}
