/* SPDX-License-Identifier: MIT */
/* tools/replay/run.c - the replay loop: one request completes before the next. */
#include "tools/replay/run.h"
#include "tools/replay/util.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#include <rdm/error.h>

bool replay_progress_enabled;
/* The line is shared by the --jobs threads. */
static pthread_mutex_t progress_lock = PTHREAD_MUTEX_INITIALIZER;
static bool progress_dirty;

void replay_progress(const char *fmt, ...)
{
	va_list ap;

	if (!replay_progress_enabled)
		return;
	pthread_mutex_lock(&progress_lock);
	fputs("\r\033[K", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fflush(stderr);
	progress_dirty = true;
	pthread_mutex_unlock(&progress_lock);
}

void replay_progress_done(void)
{
	if (!replay_progress_enabled)
		return;
	pthread_mutex_lock(&progress_lock);
	if (progress_dirty) {
		fputs("\r\033[K", stderr);
		fflush(stderr);
		progress_dirty = false;
	}
	pthread_mutex_unlock(&progress_lock);
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

uint64_t replay_quantile(uint64_t *v, size_t n, double q)
{
	size_t i;

	if (n == 0)
		return 0;
	qsort(v, n, sizeof(*v), cmp_u64);
	i = (size_t)(q * (double)(n - 1) + 0.5);
	return v[i < n ? i : n - 1];
}

/* The strategy's own threads' CPU time (0 ns if it has none). */
static int helper_ns(const struct replay_strategy *s, void *state, uint64_t *ns)
{
	*ns = 0;
	return s->helper_cpu_ns ? s->helper_cpu_ns(state, ns) : 0;
}

/*
 * Pacing (--gap-us). The pause is an absolute-deadline sleep on the
 * monotonic clock, resumed after a signal, so it never ends early; the
 * calling thread's timer slack (50 us by default for a normal thread) is
 * cut to 1 us for the replay, else short pauses would all be ~50 us longer
 * than asked. What a pause really took is reported (gap_mean_ns): in a VM
 * the wake-up from it adds its own delay.
 */
static int pace_begin(void)
{
	int old = prctl(PR_GET_TIMERSLACK, 0, 0, 0, 0);

	(void)prctl(PR_SET_TIMERSLACK, 1000ul, 0, 0, 0);
	return old;
}

static void pace_end(int old)
{
	if (old > 0)
		(void)prctl(PR_SET_TIMERSLACK, (unsigned long)old, 0, 0, 0);
}

static void pace(uint64_t ns)
{
	struct timespec d;

	clock_gettime(CLOCK_MONOTONIC, &d);
	ns += (uint64_t)d.tv_nsec;
	d.tv_sec += (time_t)(ns / 1000000000u);
	d.tv_nsec = (long)(ns % 1000000000u);
	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &d, NULL) == EINTR)
		;
}

static int fail_msg(char *err, size_t errlen, int rc, const char *what)
{
	const char *m = rdm_last_error();

	snprintf(err, errlen, "%s: %s%s%s", what, strerror(-rc), *m ? ": " : "", m);
	return rc;
}

/* Region host memory: the sim never touches it; a real container pins it. */
#define SIM_HOST_ADDR (UINT64_C(1) << 46)

/* A fresh backend and the region's geometry (host memory reserved for a real container). */
static int setup(const struct replay_trace *t, bool baseline, struct replay_backend_spec *be,
		 struct replay_geometry *g, struct rdm_backend **b, void **mem, char *err, size_t errlen)
{
	int rc;

	*g = (struct replay_geometry){
		.iova = be->iova,
		.host_addr = SIM_HOST_ADDR,
		.size = t->region_size,
		.block_size = t->block_size,
		.strict = true,
		.defer_budget = be->defer_budget,
		.spin_us = be->spin_us,
	};
	*b = NULL;
	*mem = NULL;
	if (be->kind == REPLAY_BACKEND_VFIO_TYPE1) {
		void *m = mmap(NULL, t->region_size, PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		if (m == MAP_FAILED) {
			rc = -errno;
			snprintf(err, errlen, "%s: cannot reserve %" PRIu64 " bytes of host memory: %s", t->name,
				 t->region_size, strerror(errno));
			return rc;
		}
		*mem = m;
		g->host_addr = (uint64_t)(uintptr_t)m;
		rc = rdm_backend_vfio_type1_create(be->container_fd, NULL, NULL, b);
		if (rc < 0)
			return fail_msg(err, errlen, rc, "vfio-type1 backend");
		return 0;
	}
	struct rdm_sim_config cfg = {
		.struct_size = sizeof(cfg),
		.semantics = RDM_SEM_TYPE1V2,
		.limit = baseline ? RDM_SIM_UNLIMITED : 0,
		.call_ns = be->call_ns,
		.page_ns = be->page_ns,
		.page_size = REPLAY_PAGE_SIZE,
	};
	rc = rdm_backend_sim_create(&cfg, b);
	if (rc < 0)
		return fail_msg(err, errlen, rc, "sim backend");
	return 0;
}

static void teardown(const struct replay_geometry *g, struct replay_backend_spec *be, struct rdm_backend *b,
		     void *mem)
{
	if (b && be->kind == REPLAY_BACKEND_VFIO_TYPE1) {
		/* Leave the container empty for the next run: one call over whole mappings and holes. */
		(void)rdm_backend_unmap(b, g->iova, g->size, NULL);
	}
	if (b)
		rdm_backend_destroy(b);
	if (mem)
		munmap(mem, g->size);
}

int replay_run_strategy(const struct replay_trace *t, const struct replay_strategy *s,
			struct replay_backend_spec *be, struct replay_result *out, char *err, size_t errlen)
{
	struct replay_geometry g;
	struct rdm_backend *b = NULL;
	struct replay_strategy_stats sst = { 0 };
	struct rdm_backend_stats bst;
	void *mem = NULL, *state = NULL;
	uint64_t *lat = NULL, t0, peak_seen = 0;
	int rc;

	memset(out, 0, sizeof(*out));
	out->strategy = s->name;
	out->requests = t->n;
	out->defer_budget = be->defer_budget;
	rc = setup(t, s->baseline, be, &g, &b, &mem, err, errlen);
	if (rc < 0)
		goto out;
	lat = malloc((t->n ? t->n : 1) * sizeof(*lat));
	if (!lat) {
		rc = fail_msg(err, errlen, -ENOMEM, t->name);
		goto out;
	}
	rc = s->create(&g, b, &state);
	if (rc < 0) {
		fail_msg(err, errlen, rc, s->name);
		goto out;
	}
	uint64_t helper0 = 0, caller0 = 0;
	/* A worker that has not run yet reads 0 ns: only a failed read is "not measured". */
	bool clocks = helper_ns(s, state, &helper0) == 0 && replay_clock_ns(CLOCK_THREAD_CPUTIME_ID, &caller0) == 0;
	uint64_t lat_sum = 0, gap_sum = 0, prev_end = 0, caller_in = 0, gap = be->gap_ns;
	int slack = gap ? pace_begin() : -1;

	t0 = replay_now_ns();
	for (size_t i = 0; i < t->n; i++) {
		uint64_t c0 = 0, c1 = 0;

		/*
		 * Paced: the pause, then the caller's CPU clock around the
		 * request alone. Each read is a system call (~0.3-0.7 us in a
		 * VM) whose tail and head fall inside the window: a second
		 * pair after the request measures that, warm, and is taken
		 * off; the first read after a sleep, slower, is a throw-away.
		 * A one-thread inline strategy (qemu) then reads 1.0-1.2 CPU
		 * per wall; counting the whole loop, the sleeps' own system
		 * calls made it ~20 us of CPU per request here.
		 */
		if (gap) {
			pace(gap);
			clocks = replay_clock_ns(CLOCK_THREAD_CPUTIME_ID, &c0) == 0 && clocks;
			clocks = replay_clock_ns(CLOCK_THREAD_CPUTIME_ID, &c0) == 0 && clocks;
		}
		uint64_t a = replay_now_ns();

		if (i)
			gap_sum += a - prev_end;
		if (s->apply(state, &t->reqs[i]) < 0)
			out->failed_requests++;
		prev_end = replay_now_ns();
		lat[i] = prev_end - a;
		lat_sum += lat[i];
		if (gap) {
			uint64_t c2 = 0, reads;

			clocks = replay_clock_ns(CLOCK_THREAD_CPUTIME_ID, &c1) == 0 && clocks;
			clocks = replay_clock_ns(CLOCK_THREAD_CPUTIME_ID, &c2) == 0 && clocks;
			reads = c2 - c1;
			caller_in += c1 - c0 > reads ? c1 - c0 - reads : 0;
		}
		/* The deferred bytes after each request, integrated over the trace
		 * (outside the latency: stats() is the harness's, not the request's;
		 * only for a strategy that defers: see replay_strategy.defers). */
		if (s->defers && s->stats) {
			struct replay_strategy_stats now = { 0 };

			s->stats(state, &now);
			/* Saturates (2^64 byte-requests: far beyond any trace so far). */
			if (__builtin_add_overflow(out->deferred_integrated, now.deferred_bytes, &out->deferred_integrated))
				out->deferred_integrated = UINT64_MAX;
			if (now.deferred_bytes > peak_seen)
				peak_seen = now.deferred_bytes;
		}
		if ((i & 0xffff) == 0xffff)
			replay_progress("rdm-replay: %s / %s: request %zu of %zu", t->name, s->name, i + 1, t->n);
	}
	out->wall_ns = replay_now_ns() - t0;
	uint64_t caller1 = 0, helper1 = 0;

	clocks = replay_clock_ns(CLOCK_THREAD_CPUTIME_ID, &caller1) == 0 && helper_ns(s, state, &helper1) == 0 && clocks;
	if (gap)
		pace_end(slack);
	out->cpu_measured = clocks;
	out->cpu_caller_ns = gap ? caller_in : caller1 - caller0;
	out->cpu_helper_ns = helper1 - helper0;
	out->lat_mean_ns = t->n ? lat_sum / t->n : 0;
	out->gap_ns = gap;
	out->gap_mean_ns = t->n > 1 ? gap_sum / (t->n - 1) : 0;
	/* Counted up to the last request's completion: what destroy() does afterwards is not. */
	rdm_backend_get_stats(b, &bst);
	if (s->stats)
		s->stats(state, &sst);
	s->destroy(state);
	/* What the worker ran with, as it says; the run's setting for the rest. */
	out->spin_us = sst.spin_us ? sst.spin_us : be->spin_us;
	out->map_calls = bst.map_calls;
	out->unmap_calls = bst.unmap_calls;
	out->calls = bst.map_calls + bst.unmap_calls;
	out->peak_mappings = bst.peak_mappings;
	out->limit_exceeded = bst.peak_mappings > REPLAY_MAPPING_LIMIT ? bst.peak_mappings - REPLAY_MAPPING_LIMIT : 0;
	out->model_ns = bst.model_ns;
	/* The IOMMU worker records its policy counts in the backend's stats; a strategy may report its own. */
	out->remapped_bytes = sst.remapped_bytes > bst.remapped_bytes ? sst.remapped_bytes : bst.remapped_bytes;
	out->deferred_peak_bytes = sst.deferred_peak_bytes > bst.peak_deferred_bytes ? sst.deferred_peak_bytes
										       : bst.peak_deferred_bytes;
	if (peak_seen > out->deferred_peak_bytes)
		out->deferred_peak_bytes = peak_seen;
	out->deferred_end_bytes = sst.deferred_bytes > bst.deferred_bytes ? sst.deferred_bytes : bst.deferred_bytes;
	if (sst.failed_requests > out->failed_requests)
		out->failed_requests = sst.failed_requests;
	/* A strategy not sampled per request must not have deferred: else its
	 * deferred_integrated (0) would be wrong. */
	if (!s->defers && out->deferred_peak_bytes != 0) {
		rc = -EPROTO;
		snprintf(err, errlen, "%s: strategy %s deferred %" PRIu64 " bytes but is not sampled per request",
			 t->name, s->name, out->deferred_peak_bytes);
		goto out;
	}
	out->lat_p50_ns = replay_quantile(lat, t->n, 0.50);
	out->lat_p99_ns = replay_quantile(lat, t->n, 0.99);
	rc = 0;
out:
	teardown(&g, be, b, mem);
	free(lat);
	if (rc < 0)
		out->error = rc;
	return rc;
}

int replay_run_async(const struct replay_trace *t, const struct replay_strategy *s, struct replay_backend_spec *be,
		     unsigned producers, struct replay_result *row, char *err, size_t errlen)
{
	struct replay_geometry g;
	struct rdm_backend *b = NULL;
	void *mem = NULL;
	int rc;

	rc = setup(t, s->baseline, be, &g, &b, &mem, err, errlen);
	if (rc == 0) {
		memset(&row->async, 0, sizeof(row->async));
		rc = s->run_async(&g, b, t, producers, &row->async);
		if (rc < 0)
			fail_msg(err, errlen, rc, s->name);
		else
			row->has_async = true;
	}
	teardown(&g, be, b, mem);
	return rc;
}

void replay_lower_bound_row(const struct replay_trace *t, const struct replay_lower_bound *lb,
			    const struct replay_backend_spec *be, struct replay_result *out)
{
	uint64_t call_ns = be->call_ns ? be->call_ns : REPLAY_DEFAULT_CALL_NS;
	uint64_t page_ns = be->page_ns ? be->page_ns : REPLAY_DEFAULT_PAGE_NS;

	memset(out, 0, sizeof(*out));
	out->strategy = "lower-bound";
	out->lower_bound = true;
	out->requests = t->n;
	out->map_calls = lb->maps;
	out->unmap_calls = lb->unmaps;
	out->calls = lb->calls;
	out->peak_mappings = lb->peak_mappings;
	out->limit_exceeded = lb->peak_mappings > REPLAY_MAPPING_LIMIT ? lb->peak_mappings - REPLAY_MAPPING_LIMIT : 0;
	out->model_ns = lb->calls * call_ns + (lb->bytes_mapped + lb->bytes_unmapped) / REPLAY_PAGE_SIZE * page_ns;
}
