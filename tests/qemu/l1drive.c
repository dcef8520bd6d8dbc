/* tests/qemu/l1drive.c - in the L1 guest: run the L2 QEMU, drive virtio-mem through QMP, measure.
 *
 *   l1drive --cmd FILE [--preload SO] [--variant NAME] [--step-mib N] [--levels N] [--cycles N]
 *           [--boot-timeout S] [--only SCENARIO[,SCENARIO]] [--break skip-unmap]
 *           [--deferred QOM-PATH:PROPERTY] [--budget QOM-PATH:PROPERTY]
 *
 * FILE holds the L2 QEMU's command line, one argument a line; "@BDF@" becomes RDM_VM_BDF (edu,
 * bound to vfio-pci by tests/vm/init.sh). QEMU runs with SO preloaded (vfio_count.so: its
 * VFIO_IOMMU_MAP_DMA/UNMAP_DMA ioctls are counted in a shared file; --break skip-unmap has it
 * swallow every unmap, to see the checks fail) and its stdio as L2's
 * serial console, over which l2-init.sh takes commands. Scenarios, one L2 boot:
 *   movable  hotplugged memory onlined to ZONE_MOVABLE; plug/unplug cycles of --levels steps of
 *            --step-mib up and down; edu DMA from L2 into plugged memory, and into the same
 *            address after the unplug (a DMAR fault in L1's log: the L2 QEMU unmapped it)
 *   kernel   the same cycles onlined to the kernel zone
 *   reset    plug --levels steps, then system_reset: virtio-mem unplugs everything
 * Checks per step: virtio-mem's size reaches requested-size; L2's MemTotal grows by exactly the
 * plugged size; the QEMU's pinned memory (VmLck: vfio type1 accounts pinned pages in locked_vm)
 * beyond what it pinned at boot equals the plugged size plus what the VMM defers (--deferred
 * names a QOM integer property holding those bytes; none for a stock QEMU), and those bytes stay
 * within the VMM's deferral budget (--budget names a QOM integer property holding it, read once
 * after boot). Prints per scenario
 *   SUMMARY qemu scenario=S variant=V vfio_calls=N plug_s=T unplug_s=T
 *           pinned_after_unplug_bytes=B deferred_peak_bytes=D plug_map_calls=C plug_map_s=T
 *           plug_call_s=T plug_page_s=T defer_budget_bytes=G
 * with plug_s/unplug_s the mean time of one step (QMP request to size == requested-size; steps
 * that never got there, kernel-zone unplugs, are counted apart),
 * vfio_calls the map + unmap ioctls of the scenario, B the pinned bytes beyond boot after the
 * scenario's last unplug (after the reset for reset). The plug time's split: per plug step, the
 * MAP_DMA calls (C) and the time inside them (plug_map_s, timed by vfio_count.so), and the
 * kernel's cost model, measured first on L1's own container (calibrate(): a map call costs
 * call_us + page_ns per page; SUMMARY qemu-map-cost), applied to the step's calls and pages: a
 * part per call (plug_call_s = C * call_us) and a part per page (plug_page_s); the rest of plug_s
 * is the guest's and the VMM's own work. With more than one cycle, movable and kernel also print
 *   SUMMARY qemu-cycles scenario=S variant=V cycles=N vfio_calls_first_cycle=F
 *           vfio_calls_per_later_cycle=L
 * the calls of the first cycle (before the guest ever unplugged) and the mean of the others.
 */
#include "guest_util.h"
#include "qmp.h"
#include "vfio_count.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MIB (UINT64_C(1) << 20)
#define QMP_SOCK "/tmp/l2-qmp.sock"
#define COUNT_FILE "/tmp/vfio-count"

static struct {
	const char *cmd_file, *preload, *variant, *brk, *only;
	const char *deferred_path, *deferred_prop; /* --deferred PATH:PROP */
	const char *budget_path, *budget_prop;     /* --budget PATH:PROP */
	uint64_t step, levels, cycles;
	int boot_timeout_s;
} opt = { NULL, NULL, "stock", NULL, NULL, NULL, NULL, NULL, NULL, 128 * MIB, 4, 2, 600 };

/* The deferral budget the VMM applies (--budget; 0: none given, a stock QEMU defers nothing). */
static uint64_t budget;

static struct {
	pid_t pid;
	int in, out;
	char buf[65536];
	size_t len;
	char line[4096];
} l2 = { .pid = -1, .in = -1, .out = -1 };

static struct qmp qmp;
static struct vfio_counts *counts;
static uint64_t boot_pinned, boot_memtotal_kb, memaddr;

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- L2's console ---- */

/* Read L2's console until a line holding "@@L2 <what>" (copied to l2.line, from the marker on);
 * every line is also printed as "l2| ...". 0, -ETIMEDOUT or -ECONNRESET (QEMU gone). */
static int l2_wait(const char *what, double timeout_s)
{
	double end = now_s() + timeout_s;
	char marker[64];

	snprintf(marker, sizeof(marker), "@@L2 %s", what);
	for (;;) {
		char *nl = memchr(l2.buf, '\n', l2.len);
		if (nl) {
			size_t n = (size_t)(nl - l2.buf);
			*nl = 0;
			if (n && l2.buf[n - 1] == '\r')
				l2.buf[n - 1] = 0;
			printf("l2| %s\n", l2.buf);
			char *at = strstr(l2.buf, marker);
			if (at)
				snprintf(l2.line, sizeof(l2.line), "%s", at);
			memmove(l2.buf, nl + 1, l2.len - n - 1);
			l2.len -= n + 1;
			if (at)
				return 0;
			continue;
		}
		if (l2.len == sizeof(l2.buf))
			l2.len = 0; /* a 64 KiB line: drop it */
		int left = (int)((end - now_s()) * 1000);
		struct pollfd p = { .fd = l2.out, .events = POLLIN };
		if (left <= 0 || poll(&p, 1, left) == 0)
			return -ETIMEDOUT;
		ssize_t r = read(l2.out, l2.buf + l2.len, sizeof(l2.buf) - l2.len);
		if (r <= 0)
			return -ECONNRESET;
		l2.len += (size_t)r;
	}
}

static int l2_cmd(const char *reply, double timeout_s, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static int l2_cmd(const char *reply, double timeout_s, const char *fmt, ...)
{
	char cmd[256];
	va_list ap;

	va_start(ap, fmt);
	int n = vsnprintf(cmd, sizeof(cmd) - 1, fmt, ap);
	va_end(ap);
	cmd[n++] = '\n';
	if (write(l2.in, cmd, (size_t)n) != n)
		return -EIO;
	return l2_wait(reply, timeout_s);
}

/* A key=value number of l2.line (0 when missing). */
static uint64_t l2_val(const char *key)
{
	char k[64];
	const char *at;

	snprintf(k, sizeof(k), " %s=", key);
	at = strstr(l2.line, k);
	return at ? strtoull(at + strlen(k), NULL, 0) : 0;
}

/* ---- L2's QEMU ---- */

static int start_qemu(void)
{
	static char *argv[256];
	static char args[65536];
	const char *bdf = getenv("RDM_VM_BDF");
	int in[2], out[2], fd, argc = 0;
	FILE *f = fopen(opt.cmd_file, "r");
	size_t used = 0;

	if (!f || !bdf) {
		gu_tap_diag("cannot read %s or no RDM_VM_BDF", opt.cmd_file);
		return -1;
	}
	while (argc < 255 && used < sizeof(args) - 512 && fgets(args + used, (int)(sizeof(args) - used - 256), f)) {
		char *a = args + used, *at;
		a[strcspn(a, "\n")] = 0;
		if ((at = strstr(a, "@BDF@"))) {
			char rest[256];
			snprintf(rest, sizeof(rest), "%s", at + 5);
			snprintf(at, 256, "%s%s", bdf, rest);
		}
		argv[argc++] = a;
		used += strlen(a) + 1;
	}
	fclose(f);
	argv[argc] = NULL;

	fd = open(COUNT_FILE, O_RDWR | O_CREAT | O_TRUNC, 0600);
	if (fd < 0 || ftruncate(fd, 4096) ||
	    (counts = mmap(NULL, sizeof(*counts), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)) == MAP_FAILED) {
		gu_tap_diag("counter file %s: %s", COUNT_FILE, strerror(errno));
		return -1;
	}
	close(fd);
	if (pipe(in) || pipe(out))
		return -1;
	l2.pid = fork();
	if (l2.pid == 0) {
		dup2(in[0], 0);
		dup2(out[1], 1);
		dup2(out[1], 2);
		close(in[1]);
		close(out[0]);
		if (opt.preload)
			setenv("LD_PRELOAD", opt.preload, 1);
		setenv("RDM_QEMU_VFIO_COUNT", COUNT_FILE, 1);
		if (opt.brk)
			setenv("RDM_QEMU_VFIO_BREAK", opt.brk, 1);
		execv(argv[0], argv);
		printf("exec %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	close(in[0]);
	close(out[1]);
	l2.in = in[1];
	l2.out = out[0];
	return l2.pid > 0 ? 0 : -1;
}

static uint64_t pinned(void)
{
	char path[64], line[256];
	uint64_t kb = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)l2.pid);
	f = fopen(path, "r");
	while (f && fgets(line, sizeof(line), f))
		if (!strncmp(line, "VmLck:", 6))
			kb = strtoull(line + 6, NULL, 10);
	if (f)
		fclose(f);
	return kb * 1024;
}

static uint64_t vfio_calls(void)
{
	return atomic_load_explicit(&counts->map, memory_order_relaxed) +
	       atomic_load_explicit(&counts->unmap, memory_order_relaxed);
}

/* ---- scenarios ---- */

/* The MAP_DMA sums of vfio_count.so: calls, pages, ns inside the ioctl. */
struct mapsum {
	uint64_t n, p, t;
};

static struct mapsum mapsum(void)
{
	struct mapsum m = {
		atomic_load_explicit(&counts->map, memory_order_relaxed),
		atomic_load_explicit(&counts->map_pages, memory_order_relaxed),
		atomic_load_explicit(&counts->map_ns, memory_order_relaxed),
	};
	return m;
}

/* The kernel's cost of one VFIO_IOMMU_MAP_DMA, t = call_s + page_s * pages, measured by
 * calibrate() on L1's container before the L2 QEMU owns the group (0: not measured). */
static double call_s, page_s;

/*
 * Map fresh anonymous memory (never touched, as virtio-mem's plugged memory is after QEMU
 * discarded it: the kernel faults in, zeroes and pins every page) in pieces of 4 KiB, 2, 16 and
 * 128 MiB on a container of edu's group and time each call; sizes interleaved, so drift hits all
 * of them. A one-page call is nearly all per-call cost: call_s = t(4 KiB) - page_s and page_s =
 * (t(128 MiB) - t(4 KiB)) / 32767 from the means; 2 and 16 MiB show whether the cost is linear
 * in pages between the two.
 */
static void calibrate(void)
{
	static const uint64_t sizes[] = { 4096, 2 * MIB, 16 * MIB, 128 * MIB };
	static const int reps[] = { 16, 4, 2, 1 };
	double sum[4] = { 0 }, cnt[4] = { 0 }, mean[4];
	struct gu_vfio v;
	int ret = gu_vfio_open(&v), bad = 0;

	for (int round = 0; !ret && round < 4; round++)
		for (size_t k = 0; k < 4; k++)
			for (int rep = 0; rep < reps[k]; rep++) {
				uint64_t len = sizes[k], iova = UINT64_C(1) << 36;
				void *mem = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
				double t0 = now_s();

				if (mem == MAP_FAILED || gu_dma_map(v.container, iova, mem, len)) {
					bad++;
				} else {
					sum[k] += now_s() - t0;
					cnt[k]++;
					if (gu_dma_unmap(v.container, iova, len, NULL))
						bad++;
				}
				if (mem != MAP_FAILED)
					munmap(mem, len);
			}
	if (!ret)
		gu_vfio_close(&v);
	for (size_t k = 0; k < 4; k++)
		mean[k] = cnt[k] ? sum[k] / cnt[k] : 0;
	double pages[4];
	for (size_t k = 0; k < 4; k++)
		pages[k] = (double)(sizes[k] / 4096);
	if (!ret && !bad) {
		page_s = (mean[3] - mean[0]) / (pages[3] - pages[0]);
		call_s = mean[0] - page_s * pages[0];
	}
	gu_tap_ok(!ret && !bad && mean[3] > mean[0],
		  "the kernel's cost of a VFIO map call, over %.0f calls: 4 KiB %.2f ms, 2 MiB %.2f ms, 16 MiB %.1f ms, "
		  "128 MiB %.1f ms: %.1f us per call + %.0f ns per 4 KiB page (predicts 2 MiB %.2f ms, 16 MiB %.1f ms)",
		  cnt[0] + cnt[1] + cnt[2] + cnt[3], mean[0] * 1e3, mean[1] * 1e3, mean[2] * 1e3, mean[3] * 1e3,
		  call_s * 1e6, page_s * 1e9, (call_s + pages[1] * page_s) * 1e3, (call_s + pages[2] * page_s) * 1e3);
	printf("SUMMARY qemu-map-cost variant=%s call_us=%.1f page_ns=%.1f map_4k_ms=%.3f map_2m_ms=%.3f "
	       "map_16m_ms=%.2f map_128m_ms=%.1f\n",
	       opt.variant, call_s * 1e6, page_s * 1e9, mean[0] * 1e3, mean[1] * 1e3, mean[2] * 1e3, mean[3] * 1e3);
}

struct tally {
	const char *name;
	double plug_s, unplug_s;
	unsigned plugs, unplugs, unreached; /* steps timed; steps that did not reach their size */
	uint64_t calls0, pinned_after, deferred_peak;
	uint64_t plug_maps, plug_pages, plug_map_ns; /* MAP_DMA calls of the timed plug steps */
	/* VFIO calls of the first cycle and of all later ones (cycles() only): what a VMM pays
	 * before the region has seen an unplug, and once it has (iommu/planner.c, the learned cut). */
	uint64_t calls_first, calls_later;
	unsigned ncycles;
};

/* Bytes the VMM keeps mapped (and pinned) after the guest gave them back, when it says so
 * (--deferred: a QOM integer property); a stock QEMU defers nothing. */
static int deferred(uint64_t *bytes)
{
	*bytes = 0;
	return opt.deferred_path ? qmp_qom_get_u64(&qmp, opt.deferred_path, opt.deferred_prop, bytes) : 0;
}

/* One request: requested-size = target, then size == target (device side), L2's MemTotal
 * (guest side) and the pinned memory. must_reach: a step that does not get there fails. */
static bool step(struct tally *t, uint64_t target, bool must_reach)
{
	uint64_t size = 0, before = 0, calls = vfio_calls();
	struct mapsum m0 = mapsum();
	double t0 = now_s(), secs, limit = must_reach ? 120 : 30;
	int ret;

	qmp_qom_get_u64(&qmp, "vm0", "size", &before);
	ret = qmp_qom_set_u64(&qmp, "vm0", "requested-size", target);
	while (!ret && !(ret = qmp_qom_get_u64(&qmp, "vm0", "size", &size)) && size != target &&
	       now_s() - t0 < limit)
		usleep(20000);
	secs = now_s() - t0;
	if (size != target) {
		t->unreached++; /* a timeout says nothing about how long a step takes */
	} else if (target > before) {
		struct mapsum m1 = mapsum();

		t->plug_s += secs;
		t->plugs++;
		t->plug_maps += m1.n - m0.n;
		t->plug_pages += m1.p - m0.p;
		t->plug_map_ns += m1.t - m0.t;
	} else {
		t->unplug_s += secs;
		t->unplugs++;
	}
	/* The guest onlines what it plugged after the device acknowledged it: poll a little. */
	uint64_t want_kb = boot_memtotal_kb + size / 1024, kb = 0;
	double g0 = now_s();
	while (l2_cmd("MEM", 60, "mem") == 0 && (kb = l2_val("memtotal_kb")) != want_kb && now_s() - g0 < 20)
		usleep(200000);
	uint64_t pin = pinned() - boot_pinned, def = 0;
	if (!ret)
		ret = deferred(&def);
	if (def > t->deferred_peak)
		t->deferred_peak = def;
	bool within = !opt.budget_path || def <= budget;
	bool ok = !ret && (size == target || !must_reach) && kb == want_kb && pin == size + def && within;
	gu_tap_ok(ok, "%s: requested-size %" PRIu64 " MiB: size %" PRIu64 " MiB after %.2f s (%" PRIu64
		  " VFIO calls); L2 MemTotal +%" PRId64 " MiB (%" PRIu64 " hotplugged blocks online: %" PRIu64 " movable, %" PRIu64
		  " normal); pinned beyond boot %" PRIu64 " MiB, deferred %" PRIu64 " KiB%s",
		  t->name, target / MIB, size / MIB, secs, vfio_calls() - calls,
		  ((int64_t)kb - (int64_t)boot_memtotal_kb) / 1024, l2_val("hot_online"), l2_val("movable"),
		  l2_val("normal"), pin / MIB, def / 1024, within ? "" : ", past the deferral budget");
	if (ret)
		gu_tap_diag("QMP: %d %s", ret, qmp.reply);
	if (size != target)
		gu_tap_diag("%s: size %" PRIu64 " MiB did not reach %" PRIu64 " MiB in %.0f s", t->name, size / MIB,
			    target / MIB, limit);
	return ok;
}

static void summary(struct tally *t)
{
	double per = t->plugs ? 1.0 / t->plugs : 0;

	printf("SUMMARY qemu scenario=%s variant=%s vfio_calls=%" PRIu64 " plug_s=%.3f unplug_s=%.3f "
	       "pinned_after_unplug_bytes=%" PRIu64 " deferred_peak_bytes=%" PRIu64 " plug_map_calls=%.1f "
	       "plug_map_s=%.3f plug_call_s=%.3f plug_page_s=%.3f defer_budget_bytes=%" PRIu64 "\n",
	       t->name, opt.variant, vfio_calls() - t->calls0, t->plug_s * per, t->unplugs ? t->unplug_s / t->unplugs : 0,
	       t->pinned_after, t->deferred_peak, (double)t->plug_maps * per, (double)t->plug_map_ns / 1e9 * per,
	       call_s * (double)t->plug_maps * per, page_s * (double)t->plug_pages * per, budget);
	if (t->ncycles > 1)
		printf("SUMMARY qemu-cycles scenario=%s variant=%s cycles=%u vfio_calls_first_cycle=%" PRIu64
		       " vfio_calls_per_later_cycle=%.1f\n",
		       t->name, opt.variant, t->ncycles, t->calls_first,
		       (double)t->calls_later / (double)(t->ncycles - 1));
	gu_tap_diag("%s: %u plugs and %u unplugs of %" PRIu64 " MiB timed, %u steps short of their size; VFIO "
		    "maps %" PRIu64 " unmaps %" PRIu64 " rejected %" PRIu64 " (whole run so far)",
		    t->name, t->plugs, t->unplugs, opt.step / MIB, t->unreached, (uint64_t)counts->map, (uint64_t)counts->unmap,
		    (uint64_t)counts->failed);
}

/* edu DMA from L2 into plugged memory; returns the guest-physical address it used (0: none). */
static uint64_t dma_plugged(uint64_t plugged)
{
	int ret = l2_cmd("DMA", 120, "dma 0x%" PRIx64 " 0x%" PRIx64, memaddr, memaddr + plugged);
	bool ok = !ret && !strncmp(l2.line, "@@L2 DMA ok", 11);

	gu_tap_ok(ok, "movable: edu DMA from L2 into plugged memory and back: %s", ret ? "no answer" : l2.line + 5);
	return ok ? l2_val("paddr") : 0;
}

/* edu DMA into an address L2 gave back: the L2 QEMU unmapped it, L1's IOMMU faults. */
static void dma_unplugged(uint64_t paddr)
{
	int kmsg = gu_kmsg_mark();
	int ret = l2_cmd("DMAW", 120, "dmaw 0x%" PRIx64, paddr);
	bool fault = kmsg >= 0 && gu_dmar_fault_seen(kmsg, paddr, true, 10000);

	gu_tap_ok(!ret && fault, "movable: edu DMA from L2 into unplugged 0x%" PRIx64 ": %s; DMAR fault in L1's log: %s",
		  paddr, ret ? "no answer" : l2.line + 5, fault ? "yes" : "no");
	if (kmsg >= 0)
		close(kmsg);
}

static void cycles(const char *name, const char *policy, bool dma)
{
	struct tally t = { .name = name, .calls0 = vfio_calls() };
	uint64_t paddr = 0;
	bool movable = !strcmp(policy, "online_movable");

	gu_tap_ok(l2_cmd("ONLINE", 60, "online %s", policy) == 0 && strstr(l2.line, policy),
		  "%s: L2 onlines hotplugged memory as %s", name, policy);
	for (uint64_t c = 0; c < opt.cycles; c++) {
		uint64_t c0 = vfio_calls();

		for (uint64_t k = 1; k <= opt.levels; k++) {
			step(&t, k * opt.step, true);
			if (dma && c == 0 && k == 1)
				paddr = dma_plugged(opt.step);
		}
		for (uint64_t k = opt.levels; k-- > 0;)
			step(&t, k * opt.step, movable);
		if (dma && c == 0 && paddr)
			dma_unplugged(paddr);
		if (c == 0)
			t.calls_first = vfio_calls() - c0;
		else
			t.calls_later += vfio_calls() - c0;
		t.ncycles++;
	}
	t.pinned_after = pinned() - boot_pinned;
	summary(&t);
}

static void reset(void)
{
	struct tally t = { .name = "reset", .calls0 = vfio_calls() };
	uint64_t size = 1;

	for (uint64_t k = 1; k <= opt.levels; k++)
		step(&t, k * opt.step, true);
	double t0 = now_s();
	int ret = qmp_cmd(&qmp, 30000, "{\"execute\":\"system_reset\"}");
	while (!ret && !(ret = qmp_qom_get_u64(&qmp, "vm0", "size", &size)) && size && now_s() - t0 < 120)
		usleep(20000);
	t.unplug_s = now_s() - t0;
	t.unplugs = 1;
	t.pinned_after = pinned() - boot_pinned;
	gu_tap_ok(!ret && !size && !t.pinned_after,
		  "reset: system_reset with %" PRIu64 " MiB plugged: size %" PRIu64 " MiB after %.2f s; pinned beyond "
		  "boot %" PRIu64 " bytes",
		  opt.levels * opt.step / MIB, size / MIB, t.unplug_s, t.pinned_after);
	/* The guest boots again: keep it from plugging anything. */
	qmp_qom_set_u64(&qmp, "vm0", "requested-size", 0);
	summary(&t);
}

int main(int argc, char **argv)
{
	gu_tap_init("l1drive");
	for (int i = 1; i + 1 < argc; i += 2) {
		const char *k = argv[i], *v = argv[i + 1];
		if (!strcmp(k, "--cmd"))
			opt.cmd_file = v;
		else if (!strcmp(k, "--preload"))
			opt.preload = v;
		else if (!strcmp(k, "--variant"))
			opt.variant = v;
		else if (!strcmp(k, "--step-mib"))
			opt.step = strtoull(v, NULL, 0) * MIB;
		else if (!strcmp(k, "--levels"))
			opt.levels = strtoull(v, NULL, 0);
		else if (!strcmp(k, "--cycles"))
			opt.cycles = strtoull(v, NULL, 0);
		else if (!strcmp(k, "--deferred") || !strcmp(k, "--budget")) {
			bool d = !strcmp(k, "--deferred");
			static char pp[2][256];
			char *c = pp[d];

			snprintf(c, sizeof(pp[d]), "%s", v);
			if (!strchr(c, ':')) {
				gu_tap_ok(false, "%s %s: want QOM-PATH:PROPERTY", k, v);
				return gu_tap_done();
			}
			*(d ? &opt.deferred_prop : &opt.budget_prop) = strchr(c, ':') + 1;
			*strchr(c, ':') = 0;
			*(d ? &opt.deferred_path : &opt.budget_path) = c;
		} else if (!strcmp(k, "--only"))
			opt.only = v;
		else if (!strcmp(k, "--break"))
			opt.brk = v;
		else if (!strcmp(k, "--boot-timeout"))
			opt.boot_timeout_s = atoi(v);
	}
	if (opt.cmd_file)
		calibrate();
	if (!opt.cmd_file || start_qemu()) {
		gu_tap_ok(false, "start the L2 QEMU");
		return gu_tap_done();
	}
	double t0 = now_s();
	int ret = l2_wait("READY", opt.boot_timeout_s);
	if (!gu_tap_ok(!ret, "L2 booted in %.1f s (%s)", now_s() - t0, ret ? "no READY" : l2.line + 5))
		goto out;
	boot_memtotal_kb = l2_val("memtotal_kb");
	ret = qmp_open(&qmp, QMP_SOCK, 30000);
	if (!gu_tap_ok(!ret, "QMP connected (%s)", ret ? strerror(-ret) : "capabilities negotiated"))
		goto out;
	boot_pinned = pinned();
	ret = qmp_qom_get_u64(&qmp, "vm0", "memaddr", &memaddr);
	gu_tap_diag("L2 QEMU pid %d: pinned at boot %" PRIu64 " KiB (VmLck), %" PRIu64 " VFIO maps, %" PRIu64
		    " unmaps at boot; virtio-mem region at 0x%" PRIx64,
		    (int)l2.pid, boot_pinned / 1024, (uint64_t)counts->map, (uint64_t)counts->unmap, memaddr);
	if (!gu_tap_ok(!ret && boot_pinned > 0, "L2 QEMU pins its boot memory for VFIO (%" PRIu64 " MiB)",
		       boot_pinned / MIB))
		goto out;
	if (opt.budget_path) {
		ret = qmp_qom_get_u64(&qmp, opt.budget_path, opt.budget_prop, &budget);
		if (!gu_tap_ok(!ret && budget > 0, "the VMM's deferral budget: %" PRIu64 " KiB (%s %s)", budget / 1024,
			       opt.budget_path, opt.budget_prop))
			goto out;
	}
	if (!opt.only || strstr(opt.only, "movable"))
		cycles("movable", "online_movable", true);
	if (!opt.only || strstr(opt.only, "kernel"))
		cycles("kernel", "online", false);
	if (!opt.only || strstr(opt.only, "reset"))
		reset();
out:
	if (qmp.fd > 0)
		qmp_cmd(&qmp, 30000, "{\"execute\":\"quit\"}");
	int status = 0;
	for (int i = 0; i < 300 && l2.pid > 0 && waitpid(l2.pid, &status, WNOHANG) == 0; i++) {
		char drain[4096];
		struct pollfd p = { .fd = l2.out, .events = POLLIN };
		if (poll(&p, 1, 100) > 0 && read(l2.out, drain, sizeof(drain)) <= 0)
			l2.out = -1;
		if (i == 299)
			kill(l2.pid, SIGKILL), waitpid(l2.pid, &status, 0);
	}
	return gu_tap_done();
}
