/* tests/vm/vm_replay.c - every rdm policy replays every shipped trace on the guest's real type1 container and on the sim: same calls, peaks, DMA_AVAIL. */
#include "guest_util.h"
#include "ioctl_record.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include <rdm/rdm.h>

#include "tools/replay/strategy.h"
#include "tools/replay/trace.h"

/* IOVA of region offset 0: the traces' guest address (4 GiB), inside the guest IOMMU's window. */
#define REGION_IOVA (UINT64_C(1) << 32)
#define MAX_TRACES 32
#define MAX_POLICIES 8
/* The sim's default type1 limit: its DMA_AVAIL is this minus its mappings. */
#define SIM_LIMIT 65535

struct run {
	int err;                 /* create() failed */
	uint64_t map_calls, unmap_calls, calls, failed_calls, peak_mappings, mappings;
	uint64_t failed_requests;
	int64_t avail_end;       /* DMA_AVAIL after the last request (before destroy) */
	unsigned resets;         /* unplug_all requests seen */
	int64_t avail_reset;     /* DMA_AVAIL right after the last unplug_all */
	double wall_s;
};

static double now_s(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/*
 * One replay as tools/replay/run.c does it (one request completes before the next), with the
 * final DMA_AVAIL read before the strategy's destroy: the kernel's own answer for a real
 * container (an ioctl outside the backend), limit - mappings for the sim.
 */
static void replay_one(const struct replay_trace *t, const struct replay_strategy *s, struct rdm_backend *b,
		       void *mem, int container, struct run *out)
{
	struct replay_geometry g = {
		.iova = REGION_IOVA,
		.host_addr = (uint64_t)(uintptr_t)mem,
		.size = t->region_size,
		.block_size = t->block_size,
		.strict = true,
	};
	struct rdm_backend_stats st;
	void *state;
	double t0;

	memset(out, 0, sizeof(*out));
	out->err = s->create(&g, b, &state);
	if (out->err) {
		gu_tap_diag("%s / %s: create: %s: %s", t->name, s->name, strerror(-out->err), rdm_last_error());
		return;
	}
	t0 = now_s();
	for (size_t i = 0; i < t->n; i++) {
		if (s->apply(state, &t->reqs[i]) < 0)
			out->failed_requests++;
		if (t->reqs[i].op == REPLAY_DISCARD_ALL) {
			/* One GET_INFO in the timed loop, in every policy's run alike. */
			rdm_backend_get_stats(b, &st);
			out->resets++;
			out->avail_reset = container >= 0 ? gu_dma_avail(container) : SIM_LIMIT - (int64_t)st.mappings;
		}
	}
	out->wall_s = now_s() - t0;
	rdm_backend_get_stats(b, &st);
	out->map_calls = st.map_calls;
	out->unmap_calls = st.unmap_calls;
	out->calls = st.map_calls + st.unmap_calls;
	out->failed_calls = st.failed_calls;
	out->peak_mappings = st.peak_mappings;
	out->mappings = st.mappings;
	out->avail_end = container >= 0 ? gu_dma_avail(container) : SIM_LIMIT - (int64_t)st.mappings;
	s->destroy(state);
	/* As run.c's teardown: one call over the region leaves the container empty for the next run. */
	(void)rdm_backend_unmap(b, REGION_IOVA, t->region_size, NULL);
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static size_t list_traces(const char *dir, char **paths)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	size_t n = 0;

	if (!d)
		return 0;
	while ((e = readdir(d)) && n < MAX_TRACES) {
		size_t l = strlen(e->d_name);

		if (l > 4 && strcmp(e->d_name + l - 4, ".csv") == 0) {
			paths[n] = malloc(strlen(dir) + l + 2);
			if (!paths[n])
				abort();
			sprintf(paths[n++], "%s/%s", dir, e->d_name);
		}
	}
	closedir(d);
	qsort(paths, n, sizeof(*paths), cmp_str);
	return n;
}

int main(int argc, char **argv)
{
	const char *dir = "/data/traces";
	uint64_t scale = 32;
	struct gu_vfio v;
	struct ir_recorder rec = { 0 };
	char *paths[MAX_TRACES];
	size_t ntraces;
	int64_t avail0;
	bool h_seen = false;

	gu_tap_init("vm_replay");
	for (int i = 1; i + 1 < argc; i += 2) {
		if (strcmp(argv[i], "--scale") == 0)
			scale = strtoull(argv[i + 1], NULL, 0);
		else if (strcmp(argv[i], "--traces") == 0)
			dir = argv[i + 1];
	}
	if (!gu_tap_ok(gu_vfio_open(&v) == 0, "type1v2 container with the edu group"))
		return gu_tap_done();
	avail0 = gu_dma_avail(v.container);
	gu_tap_ok(avail0 > 0, "DMA_AVAIL of the fresh container: %" PRId64, avail0);
	ntraces = list_traces(dir, paths);
	gu_tap_ok(ntraces >= 5, "%zu traces in %s", ntraces, dir);

	for (size_t ti = 0; ti < ntraces; ti++) {
		struct replay_trace t;
		struct replay_trace_opts opts = { 0 };
		char err[REPLAY_ERR_LEN];
		struct run real[MAX_POLICIES], sim[MAX_POLICIES];
		const char *pname[MAX_POLICIES];
		size_t np = 0;
		void *mem;

		if (!gu_tap_ok(replay_trace_load(paths[ti], &opts, &t, err, sizeof(err)) == 0, "load %s", paths[ti])) {
			gu_tap_diag("%s", err);
			continue;
		}
		if (!gu_tap_ok(replay_trace_scale(&t, scale, err, sizeof(err)) == 0, "%s: --scale %" PRIu64,
			       t.name, scale)) {
			gu_tap_diag("%s", err);
			replay_trace_free(&t);
			continue;
		}
		gu_tap_diag("%s: %zu requests, %" PRIu64 " KiB blocks, %" PRIu64 " MiB region", t.name, t.n,
			    t.block_size >> 10, t.region_size >> 20);
		mem = mmap(NULL, t.region_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
			   -1, 0);
		if (!gu_tap_ok(mem != MAP_FAILED, "%s: host memory for the region", t.name)) {
			replay_trace_free(&t);
			continue;
		}
		for (size_t pi = 0; replay_rdm_strategies[pi] && np < MAX_POLICIES; pi++, np++) {
			const struct replay_strategy *s = replay_rdm_strategies[pi];
			struct rdm_sim_config sc = { .struct_size = sizeof(sc), .semantics = RDM_SEM_TYPE1V2 };
			struct rdm_backend *sb = NULL, *rb = NULL;
			struct run *R = &real[np], *S = &sim[np];
			int e;

			pname[np] = s->name;
			e = rdm_backend_sim_create(&sc, &sb);
			if (!gu_tap_ok(e == 0, "%s / %s: sim backend", t.name, s->name))
				continue;
			replay_one(&t, s, sb, mem, -1, S);
			rdm_backend_destroy(sb);
			e = rdm_backend_vfio_type1_create(v.container, ir_ioctl, &rec, &rb);
			if (!gu_tap_ok(e == 0, "%s / %s: vfio-type1 backend on the container (%s)", t.name, s->name,
				       e ? rdm_last_error() : "ok"))
				continue;
			replay_one(&t, s, rb, mem, v.container, R);
			rdm_backend_destroy(rb);
			/* The pages were pinned and unpinned; give them back before the next run. */
			madvise(mem, t.region_size, MADV_DONTNEED);

			gu_tap_ok(!R->err && !S->err && R->failed_requests == 0 && S->failed_requests == 0,
				  "%s / %s: every request succeeds on the kernel and the sim", t.name, s->name);
			gu_tap_ok(R->map_calls == S->map_calls && R->unmap_calls == S->unmap_calls,
				  "%s / %s: calls as the sim: %" PRIu64 " maps + %" PRIu64 " unmaps (sim %" PRIu64
				  " + %" PRIu64 ")",
				  t.name, s->name, R->map_calls, R->unmap_calls, S->map_calls, S->unmap_calls);
			gu_tap_ok(R->peak_mappings == S->peak_mappings, "%s / %s: peak mappings as the sim: %" PRIu64
				  " (sim %" PRIu64 ")", t.name, s->name, R->peak_mappings, S->peak_mappings);
			gu_tap_ok(R->failed_calls == 0 && S->failed_calls == 0,
				  "%s / %s: no call rejected (kernel %" PRIu64 ", sim %" PRIu64 ")", t.name, s->name,
				  R->failed_calls, S->failed_calls);
			gu_tap_ok(R->avail_end == S->avail_end && R->avail_end == avail0,
				  "%s / %s: final DMA_AVAIL %" PRId64 " = the sim's %" PRId64 " = the start's %" PRId64,
				  t.name, s->name, R->avail_end, S->avail_end, avail0);
		}
		if (strncmp(t.name, "H_", 2) == 0) {
			bool ok = np > 0;

			h_seen = true;
			for (size_t k = 0; k < np; k++) {
				ok = ok && real[k].resets > 0 && real[k].avail_reset == avail0 &&
				     sim[k].avail_reset == SIM_LIMIT;
				gu_tap_diag("%s / %s: %u unplug_all, DMA_AVAIL right after it %" PRId64 " (sim %" PRId64 ")",
					    t.name, pname[k], real[k].resets, real[k].avail_reset, sim[k].avail_reset);
			}
			gu_tap_ok(ok, "reset: trace %s's unplug_all leaves DMA_AVAIL at its start (%" PRId64
				  ") under every policy, on the kernel and the sim", t.name, avail0);
		}
		for (size_t k = 0; k < np; k++)
			gu_tap_diag("SUMMARY guest trace=%s policy=%s calls=%" PRIu64 " sim_calls=%" PRIu64
				    " peak_mappings=%" PRIu64 " wall_ratio_vs_block=%.2f",
				    t.name, pname[k], real[k].calls, sim[k].calls, real[k].peak_mappings,
				    real[0].wall_s > 0 ? real[k].wall_s / real[0].wall_s : 0.0);
		for (size_t k = 0; k < np; k++)
			gu_tap_diag("%s / %s: wall %.3f s on the kernel", t.name, pname[k], real[k].wall_s);
		munmap(mem, t.region_size);
		replay_trace_free(&t);
	}
	gu_tap_ok(h_seen, "trace H (the reset) was replayed");
	gu_tap_ok(gu_dma_avail(v.container) == avail0, "the container ends with DMA_AVAIL at its start (%" PRId64 ")",
		  gu_dma_avail(v.container));
	gu_tap_ok(rec.failed == 0, "the kernel rejected none of the %" PRIu64 " maps and %" PRIu64 " unmaps rdm issued",
		  rec.maps, rec.unmaps);
	ir_validate_fake(&rec, (uint64_t)avail0, "traces");
	ir_free(&rec);
	for (size_t i = 0; i < ntraces; i++)
		free(paths[i]);
	gu_vfio_close(&v);
	return gu_tap_done();
}
