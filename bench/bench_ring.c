/* bench/bench_ring.c - SPSC ring throughput: rdm's ring against its peers. */
#include "shim.h"

static void bench_ring_empty(struct rdm_bench *b, void *arg)
{
	(void)arg;
	int64_t n = 0;
	while (rdm_bench_running(b)) {
		rdm_bench_keep(&n);
		n++;
	}
	rdm_bench_set_items(b, n);
}

void rdm_bench_register_ring(void)
{
	struct rdm_bench_def def = {.name = "ring/empty", .fn = bench_ring_empty};
	rdm_bench_register(&def);
}
