/* test_numa.c - node affinity on any machine: the defaults (the caller's node), explicit and preferred nodes, every error path, and the placement calls checked against the kernel's own answer (get_mempolicy). */
#include <errno.h>
#include <numa.h>
#include <numaif.h>
#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include <rdm/rdm.h>

#include "core/jemalloc.h"
#include "core/region_internal.h"
#include "tests/check.h"

#define MiB (1ull << 20)
#define BS (2 * MiB)
#define NB 4096u

/* The node the kernel says the page of p is on (p must be resident). */
static int kernel_node_of(void *p)
{
	int node = -1;

	if (get_mempolicy(&node, NULL, 0, p, MPOL_F_NODE | MPOL_F_ADDR) != 0)
		return -1;
	return node;
}

static int32_t no_such_node(void)
{
	return (numa_available() < 0 ? 0 : numa_max_node()) + 1;
}

/* Placement as the library reports it, with the invariants every report
 * keeps: counts add up, and nothing is elsewhere on this one-node run. */
static void check_placement(const struct rdm_placement *pl, int32_t node, const char *what)
{
	CHECK(pl->node == node);
	CHECK(pl->pages == pl->pages_on_node + pl->pages_elsewhere + pl->pages_absent);
	CHECK(pl->pages_on_node > 0);
	CHECK(pl->pages_elsewhere == 0);
	CHECK(pl->bytes > 0);
	if (pl->node != node || pl->pages_on_node == 0 || pl->pages_elsewhere)
		fprintf(stderr, "%s: node %d (want %d), pages %llu on node %llu elsewhere %llu absent %llu\n", what,
			pl->node, node, (unsigned long long)pl->pages, (unsigned long long)pl->pages_on_node,
			(unsigned long long)pl->pages_elsewhere, (unsigned long long)pl->pages_absent);
}

static struct rdm_region *make_region(uint32_t flags, int32_t node, int *err)
{
	struct rdm_region_config rc = {.struct_size = sizeof(rc)};
	struct rdm_region *r = NULL;

	rc.flags = flags;
	rc.numa_node = node;
	rc.size = (uint64_t)NB * BS;
	rc.block_size = BS;
	*err = rdm_region_create(&rc, &r);
	return r;
}

/* Scatter changes so the tree has many nodes (and the flat view is used). */
static void churn(struct rdm_region *r)
{
	for (unsigned i = 0; i < NB; i += 3)
		CHECK(rdm_populate(r, (uint64_t)i * BS, BS) == 0);
	for (unsigned i = 0; i < NB; i += 9)
		CHECK(rdm_discard(r, (uint64_t)i * BS, BS) == 0);
}

static void test_region_default(void)
{
	int err;
	struct rdm_region *r = make_region(0, 0, &err);
	struct rdm_placement pl = {.struct_size = sizeof(pl)};

	REQUIRE(err == 0);
	churn(r);
	REQUIRE(rdm_region_get_placement(r, &pl) == 0);
	/* Derived: the caller's node, preferred, never an error. */
	CHECK(pl.node_requested == -1);
	CHECK(pl.flags & RDM_PLACE_PREFERRED);
	CHECK(!(pl.flags & (RDM_PLACE_EXPLICIT | RDM_PLACE_FALLBACK)));
	check_placement(&pl, rdm_numa_current_node(), "default region");
	/* Bound through the node's jemalloc arena whenever jemalloc is in the
	 * process and NUMA works; first touch otherwise. */
	CHECK(!!(pl.flags & RDM_PLACE_BOUND) == (rdm_have_jemalloc() && numa_available() >= 0));
	/* The kernel agrees on the page of the region itself. */
	CHECK(kernel_node_of(r) == pl.node);
	CHECK(rdm_region_destroy(r) == 0);
}

static void test_region_explicit(void)
{
	int err;
	struct rdm_region *r = make_region(RDM_REGION_NUMA_NODE, 0, &err);
	struct rdm_placement pl = {.struct_size = sizeof(pl)};

	REQUIRE(err == 0);
	churn(r);
	REQUIRE(rdm_region_get_placement(r, &pl) == 0);
	CHECK(pl.node_requested == 0);
	CHECK(pl.flags & RDM_PLACE_EXPLICIT);
	CHECK(!(pl.flags & (RDM_PLACE_PREFERRED | RDM_PLACE_FALLBACK)));
	check_placement(&pl, 0, "region on node 0");
	CHECK(kernel_node_of(r) == 0);
	/* The config reads back as given. */
	CHECK(rdm_region_cfg(r)->numa_node == 0);
	CHECK(rdm_region_destroy(r) == 0);
}

static void test_region_errors(void)
{
	int err;
	struct rdm_region *r;
	struct rdm_placement pl = {.struct_size = sizeof(pl)};
	int32_t bad[] = {no_such_node(), -1, -7, 1 << 20};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char want[32];

		r = make_region(RDM_REGION_NUMA_NODE, bad[i], &err);
		CHECK(err == -EINVAL && r == NULL);
		snprintf(want, sizeof(want), "NUMA node %d", bad[i]);
		CHECK(strstr(rdm_last_error(), want) != NULL);
		/* Preferred: falls back to the caller's node, and says so. */
		r = make_region(RDM_REGION_NUMA_NODE | RDM_REGION_NUMA_PREFERRED, bad[i], &err);
		REQUIRE(err == 0);
		REQUIRE(rdm_region_get_placement(r, &pl) == 0);
		CHECK(pl.flags & RDM_PLACE_FALLBACK);
		CHECK(pl.flags & RDM_PLACE_EXPLICIT);
		CHECK(pl.node_requested == bad[i]);
		CHECK(pl.node == rdm_numa_current_node());
		CHECK(rdm_region_destroy(r) == 0);
	}
	/* PREFERRED alone names no node. */
	r = make_region(RDM_REGION_NUMA_PREFERRED, 0, &err);
	CHECK(err == -EINVAL && r == NULL);
	CHECK(strstr(rdm_last_error(), "RDM_REGION_NUMA_PREFERRED") != NULL);

	/* The placement call's own arguments; a refused call leaves *out. */
	r = make_region(0, 0, &err);
	REQUIRE(err == 0);
	struct rdm_placement small = {.struct_size = sizeof(small) - 8, .node = 77};

	CHECK(rdm_region_get_placement(r, &small) == -EINVAL);
	CHECK(small.node == 77 && small.pages == 0);
	CHECK(rdm_region_get_placement(NULL, &pl) == -EINVAL);
	CHECK(rdm_region_get_placement(r, NULL) == -EINVAL);
	CHECK(rdm_region_destroy(r) == 0);
}

/* ---- workers and rings ---- */

static _Atomic int batch_cpu_bad, batches;
static cpu_set_t want_cpus;

static void on_batch(void *opaque, uint64_t batch_no, uint32_t changes)
{
	int cpu = sched_getcpu();

	(void)opaque;
	(void)batch_no;
	(void)changes;
	if (!CPU_ISSET(cpu, &want_cpus))
		atomic_fetch_add_explicit(&batch_cpu_bad, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&batches, 1, memory_order_relaxed);
}

/* CPUs of `node` this thread may run on. */
static int node_cpus(int node, cpu_set_t *set)
{
	cpu_set_t allowed;

	CPU_ZERO(set);
	REQUIRE(sched_getaffinity(0, sizeof(allowed), &allowed) == 0);
	for (int c = 0; c < CPU_SETSIZE; c++)
		if (CPU_ISSET(c, &allowed) && (numa_available() < 0 || numa_node_of_cpu(c) == node))
			CPU_SET(c, set);
	return CPU_COUNT(set);
}

/* Returns the sim backend: it must outlive the worker (rdm/worker.h). */
static struct rdm_backend *drive(struct rdm_worker *w, struct rdm_producer *p, int32_t ring_node, bool check_ring)
{
	struct rdm_sim_config sc = {.struct_size = sizeof(sc), .semantics = RDM_SEM_TYPE1V2};
	struct rdm_backend *sim;
	struct rdm_region *r;
	struct rdm_worker_placement wp = {.struct_size = sizeof(wp)};
	int err;

	REQUIRE(rdm_backend_sim_create(&sc, &sim) == 0);
	REQUIRE(rdm_worker_add_backend(w, sim, 0) == 0);
	r = make_region(0, 0, &err);
	REQUIRE(err == 0);
	REQUIRE(rdm_worker_attach(w, r, sim) == 0);
	for (unsigned i = 0; i < 256; i++) {
		uint64_t t;
		int res = -1;

		REQUIRE(rdm_producer_populate(p, r, (uint64_t)i * BS, BS, &t) == 0);
		REQUIRE(rdm_producer_wait(p, t, &res) == 0);
		CHECK(res == 0);
	}
	CHECK(rdm_populated_bytes(r, 0, (uint64_t)NB * BS) == 256 * BS);
	REQUIRE(rdm_worker_get_placement(w, &wp) == 0);
	CHECK(wp.cpu >= 0 && CPU_ISSET(wp.cpu, &want_cpus));
	CHECK(wp.rings >= 1);
	if (check_ring) {
		/* Every ring on the worker's node, by the report and by the
		 * kernel: the census counts each page on `ring_node`. */
		CHECK(wp.rings_on_node == wp.rings);
		CHECK(wp.ring_memory.pages_elsewhere == 0 && wp.ring_memory.pages_on_node > 0);
		CHECK(wp.ring_memory.node == ring_node);
	}
	check_placement(&wp.state, wp.state.node, "worker state");
	CHECK(rdm_region_destroy(r) == 0);
	return sim;
}

static void test_worker_default(void)
{
	struct rdm_worker *w;
	struct rdm_producer *p;
	struct rdm_worker_placement wp = {.struct_size = sizeof(wp)};
	int node = rdm_numa_current_node();
	struct rdm_worker_config wc = {.struct_size = sizeof(wc), .on_batch = on_batch};

	node_cpus(node, &want_cpus);
	atomic_store(&batch_cpu_bad, 0);
	REQUIRE(rdm_worker_create(&wc, &w) == 0);
	REQUIRE(rdm_producer_create(&p) == 0);
	struct rdm_backend *sim = drive(w, p, node, true);
	REQUIRE(rdm_worker_get_placement(w, &wp) == 0);
	CHECK(wp.state.node == node && wp.state.node_requested == -1);
	CHECK(wp.state.flags & RDM_PLACE_PREFERRED);
	CHECK(wp.ncpus == (uint32_t)CPU_COUNT(&want_cpus));
	CHECK(atomic_load(&batches) > 0 && atomic_load(&batch_cpu_bad) == 0);
	rdm_producer_destroy(p);
	CHECK(rdm_worker_destroy(w) == 0);
	rdm_backend_destroy(sim);
}

/* An explicit node's worker runs on the node's CPUs even when the creating
 * thread is pinned to one of them (a VMM thread pinned elsewhere creates
 * the worker of a device's node); a default worker keeps the creator's. */
static void test_worker_explicit_pinned(void)
{
	struct rdm_worker_config wc = {.struct_size = sizeof(wc), .on_batch = on_batch};
	struct rdm_worker *w;
	struct rdm_producer *p;
	struct rdm_worker_placement wp = {.struct_size = sizeof(wp)};
	cpu_set_t saved, one, node0;
	int c;

	REQUIRE(sched_getaffinity(0, sizeof(saved), &saved) == 0);
	node_cpus(0, &node0);
	for (c = 0; c < CPU_SETSIZE && !CPU_ISSET(c, &node0); c++)
		;
	REQUIRE(c < CPU_SETSIZE);
	CPU_ZERO(&one);
	CPU_SET(c, &one);
	REQUIRE(sched_setaffinity(0, sizeof(one), &one) == 0);
	want_cpus = node0;
	atomic_store(&batch_cpu_bad, 0);
	wc.flags = RDM_WORKER_NUMA_NODE;
	wc.numa_node = 0;
	REQUIRE(rdm_worker_create(&wc, &w) == 0);
	REQUIRE(rdm_producer_create(&p) == 0);
	struct rdm_backend *sim = drive(w, p, 0, true);
	REQUIRE(rdm_worker_get_placement(w, &wp) == 0);
	CHECK(wp.ncpus == (uint32_t)CPU_COUNT(&node0));
	CHECK(wp.state.flags & RDM_PLACE_EXPLICIT);
	CHECK(!(wp.state.flags & (RDM_PLACE_PREFERRED | RDM_PLACE_FALLBACK)));
	CHECK(atomic_load(&batch_cpu_bad) == 0);
	rdm_producer_destroy(p);
	CHECK(rdm_worker_destroy(w) == 0);
	rdm_backend_destroy(sim);

	/* The defaults: confined with the creator (taskset keeps working). */
	want_cpus = one;
	REQUIRE(rdm_worker_create(NULL, &w) == 0);
	REQUIRE(rdm_producer_create(&p) == 0);
	sim = drive(w, p, 0, true);
	REQUIRE(rdm_worker_get_placement(w, &wp) == 0);
	CHECK(wp.ncpus == 1 && wp.cpu == c);
	rdm_producer_destroy(p);
	CHECK(rdm_worker_destroy(w) == 0);
	rdm_backend_destroy(sim);
	REQUIRE(sched_setaffinity(0, sizeof(saved), &saved) == 0);
}

/* A ring on a node the producer chose (here the same node: one-node
 * machine), and the producer's config errors. */
static void test_producer_ring_node(void)
{
	struct rdm_producer_config pc = {.struct_size = sizeof(pc), .flags = RDM_PRODUCER_RING_NODE};
	struct rdm_worker *w;
	struct rdm_producer *p = NULL;

	node_cpus(rdm_numa_current_node(), &want_cpus);
	REQUIRE(rdm_worker_create(NULL, &w) == 0);
	pc.ring_node = 0;
	REQUIRE(rdm_producer_create_ex(&pc, &p) == 0);
	struct rdm_backend *sim = drive(w, p, 0, true);
	rdm_producer_destroy(p);

	pc.ring_node = no_such_node();
	p = NULL;
	CHECK(rdm_producer_create_ex(&pc, &p) == -EINVAL && p == NULL);
	CHECK(strstr(rdm_last_error(), "NUMA node") != NULL);
	pc.ring_node = 0;
	pc.flags = 1u << 7;
	CHECK(rdm_producer_create_ex(&pc, &p) == -EINVAL && p == NULL);
	pc.flags = 0;
	pc.reserved = 1;
	CHECK(rdm_producer_create_ex(&pc, &p) == -EINVAL && p == NULL);
	pc.reserved = 0;
	pc.struct_size = 8;
	CHECK(rdm_producer_create_ex(&pc, &p) == -EINVAL && p == NULL);
	CHECK(rdm_producer_create_ex(&pc, NULL) == -EINVAL);
	REQUIRE(rdm_producer_create_ex(NULL, &p) == 0);
	rdm_producer_destroy(p);
	CHECK(rdm_worker_destroy(w) == 0);
	rdm_backend_destroy(sim);
}

static void test_worker_errors(void)
{
	struct rdm_worker_config wc = {.struct_size = sizeof(wc)};
	struct rdm_worker_placement wp = {.struct_size = sizeof(wp)};
	struct rdm_worker *w = NULL;

	wc.flags = RDM_WORKER_NUMA_NODE;
	wc.numa_node = no_such_node();
	CHECK(rdm_worker_create(&wc, &w) == -EINVAL && w == NULL);
	CHECK(strstr(rdm_last_error(), "NUMA node") != NULL);
	wc.numa_node = -1;
	CHECK(rdm_worker_create(&wc, &w) == -EINVAL && w == NULL);
	wc.flags = RDM_WORKER_NUMA_PREFERRED;
	wc.numa_node = 0;
	CHECK(rdm_worker_create(&wc, &w) == -EINVAL && w == NULL);
	wc.flags = 1u << 9;
	CHECK(rdm_worker_create(&wc, &w) == -EINVAL && w == NULL);
	CHECK(strstr(rdm_last_error(), "unknown flags") != NULL);

	/* Preferred: the fallback is the caller's node, reported. */
	wc.flags = RDM_WORKER_NUMA_NODE | RDM_WORKER_NUMA_PREFERRED;
	wc.numa_node = no_such_node();
	REQUIRE(rdm_worker_create(&wc, &w) == 0);
	REQUIRE(rdm_worker_get_placement(w, &wp) == 0);
	CHECK(wp.state.flags & RDM_PLACE_FALLBACK);
	CHECK(wp.state.node == rdm_numa_current_node() && wp.state.node_requested == no_such_node());
	struct rdm_worker_placement small = {.struct_size = 8, .cpu = 55};

	CHECK(rdm_worker_get_placement(w, &small) == -EINVAL && small.cpu == 55);
	CHECK(rdm_worker_get_placement(NULL, &wp) == -EINVAL);
	CHECK(rdm_worker_get_placement(w, NULL) == -EINVAL);
	CHECK(rdm_worker_destroy(w) == 0);

	/* Not pinned: the worker keeps the caller's CPUs. */
	wc.flags = RDM_WORKER_NO_PIN;
	REQUIRE(rdm_worker_create(&wc, &w) == 0);
	cpu_set_t mine;

	REQUIRE(sched_getaffinity(0, sizeof(mine), &mine) == 0);
	REQUIRE(rdm_worker_get_placement(w, &wp) == 0);
	CHECK(wp.ncpus == (uint32_t)CPU_COUNT(&mine));
	CHECK(rdm_worker_destroy(w) == 0);
}

static void test_pci(void)
{
	int32_t node = 42;
	const char *bad[] = {"", "0000:00:04", "0000:00:04.0x", "00:00:04.0", "0000:00:20.0", "0000:00:04.8",
			     "zzzz:00:04.0"};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		CHECK(rdm_numa_node_of_pci(bad[i], &node) == -EINVAL);
		CHECK(node == 42);
	}
	CHECK(rdm_numa_node_of_pci(NULL, &node) == -EINVAL);
	CHECK(rdm_numa_node_of_pci("0000:00:04.0", NULL) == -EINVAL);
	CHECK(rdm_numa_node_of_pci("ffff:ff:1f.7", &node) == -ENOENT && node == 42);
	CHECK(strstr(rdm_last_error(), "ffff:ff:1f.7") != NULL);
	/* A device that exists, if the machine has one: its sysfs value. */
	FILE *f = popen("ls /sys/bus/pci/devices 2>/dev/null | head -1", "r");
	char bdf[64] = "";

	if (f) {
		if (!fgets(bdf, sizeof(bdf), f))
			bdf[0] = '\0';
		pclose(f);
	}
	bdf[strcspn(bdf, "\n")] = '\0';
	if (bdf[0]) {
		char path[128];
		int want = -2;

		snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/numa_node", bdf);
		f = fopen(path, "r");
		REQUIRE(f && fscanf(f, "%d", &want) == 1);
		fclose(f);
		CHECK(rdm_numa_node_of_pci(bdf, &node) == 0 && node == want);
	} else {
		printf("test_numa: no PCI device here; the sysfs read is checked in the guest\n");
	}
}

int main(void)
{
	printf("test_numa: numa %s, nodes %d, this thread on node %d, jemalloc %s\n",
	       numa_available() < 0 ? "off" : "on", numa_available() < 0 ? 1 : numa_max_node() + 1,
	       rdm_numa_current_node(), rdm_have_jemalloc() ? "in" : "not in");
	test_region_default();
	test_region_explicit();
	test_region_errors();
	test_worker_default();
	test_worker_explicit_pinned();
	test_producer_ring_node();
	test_worker_errors();
	test_pci();
	return check_exit();
}
