#!/usr/bin/env python3
"""test_cli.py - rdm-replay's command line: flag errors, trace errors, SUMMARY lines, the JSON schema, --scale, the plot."""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

exe, traces = sys.argv[1], sys.argv[2]
failures = 0


def check(cond, what):
    global failures
    if not cond:
        print("check failed:", what, file=sys.stderr)
        failures += 1


def run(*args):
    p = subprocess.run([exe, *args], capture_output=True, text=True, timeout=100)
    return p.returncode, p.stdout, p.stderr


# Bad flags: exit 2 and a message naming the flag. (A value wrongly accepted runs only a small workload.)
fast = ["--policy", "qemu", "--workload", "sbm:region=1G"]
for args, frag in [
    (["--bogus"], "--bogus"),
    (["--json"], "--json"),
    (["--scale", "0"], "--scale"),
    (["--scale", "x"], "--scale"),
    (["--seed", "-1"], "--seed"),
    (["--policy", "nope"], "nope"),
    (["--backend", "xen"], "--backend"),
    (["--plot", "out.txt"], "--plot"),
    (["--block-size", "3M"], "--block-size"),
    (["--region-size", "12Q"], "--region-size"),
    (["--workload", "nope"], "--workload"),
    (["--sim-call-ns", "fast"], "--sim-call-ns"),
    (["--jobs", "0"], "--jobs"),
    (["--jobs", "2", "--backend", "vfio-type1:/dev/vfio/0"], "--jobs"),
    (["--defer-budget", "0", *fast], "--defer-budget"),
    (["--defer-budget", "0%", *fast], "--defer-budget"),
    (["--defer-budget", "101%", *fast], "--defer-budget"),
    (["--defer-budget", "-1%", *fast], "--defer-budget"),
    (["--defer-budget", "1.%", *fast], "--defer-budget"),
    (["--defer-budget", "0.00001%", *fast], "--defer-budget"),
    (["--defer-budget", "%", *fast], "--defer-budget"),
    (["--defer-budget", "2Q", *fast], "--defer-budget"),
    (["--defer-budget", "nonee", *fast], "--defer-budget"),
    (["--defer-budget"], "--defer-budget"),
    (["--sweep", "--defer-budget", "2%"], "--defer-budget"),
    (["--sweep", "--policy", "qemu"], "--policy"),
    (["--sweep", "--plot", "x.pdf"], "--plot"),
    (["--gap-us", "x", *fast], "--gap-us"),
    (["--gap-us", "-1", *fast], "--gap-us"),
    (["--gap-us", "10000001", *fast], "--gap-us"),
    (["--gap-us"], "--gap-us"),
    (["--sweep", "--gap-us", "0"], "--gap-us"),
    (["--spin-us", "0", *fast], "--spin-us"),
    (["--spin-us", "x", *fast], "--spin-us"),
    (["--spin-us", "-5", *fast], "--spin-us"),
    (["--spin-us", "1000001", *fast], "--spin-us"),
    (["--spin-us"], "--spin-us"),
    (["--sweep", "--spin-us", "5"], "--spin-us"),
]:
    rc, out, err = run(*args)
    check(rc == 2, f"{args}: exit {rc}, want 2")
    check(frag in err, f"{args}: message {err!r} lacks {frag!r}")
    check(out == "", f"{args}: printed to stdout")

rc, out, err = run("--help")
check(rc == 0 and "SYNOPSIS" in out and "--backend" in out and "EXIT STATUS" in out, "--help")

tmp = tempfile.mkdtemp(prefix="rdm-replay-cli")
try:
    # A malformed trace: exit 1, file and line named, nothing replayed (even the good trace before it).
    bad = os.path.join(tmp, "bad.csv")
    with open(bad, "w") as f:
        f.write("seq,op,offset_bytes,length_bytes\n0,plug,0,2097152\n1,unplug,0,1000\n")
    with open(os.path.join(tmp, "bad.meta.json"), "w") as f:
        f.write('{"block_size": 2097152, "max_size": 8589934592}')
    rc, out, err = run(os.path.join(traces, "C_bbm1G_movable.csv"), bad)
    check(rc == 1, f"malformed trace: exit {rc}")
    check("bad.csv:3:" in err and "aligned" in err, f"malformed trace message {err!r}")
    check("SUMMARY" not in out and out == "", "malformed trace: something was replayed")

    # No meta file and no override.
    nometa = os.path.join(tmp, "nometa.csv")
    with open(nometa, "w") as f:
        f.write("seq,op,offset_bytes,length_bytes\n0,plug,0,2097152\n")
    rc, out, err = run(nometa)
    check(rc == 1 and "nometa.meta.json is missing" in err and "--block-size" in err, f"missing meta: {err!r}")
    rc, out, err = run("--block-size", "2M", "--region-size", "1G", nometa)
    check(rc == 0 and "workload=nometa strategy=qemu calls=1 " in out, "overrides replace the meta file")

    # --scale: call counts depend on block counts, not bytes.
    a = os.path.join(traces, "A_sbm2M_movable.csv")
    rc1, out1, _ = run("--policy", "qemu", a)
    rc2, out2, _ = run("--policy", "qemu", "--scale", "64", a)
    s1 = [l for l in out1.splitlines() if l.startswith("SUMMARY replay")]
    s2 = [l for l in out2.splitlines() if l.startswith("SUMMARY replay")]
    check(rc1 == 0 and rc2 == 0 and s1 == s2 and len(s1) == 2, "--scale 64 keeps call counts")
    rc, out, err = run("--scale", "3", a)
    check(rc == 1 and "--scale 3" in err, f"--scale not dividing: {err!r}")

    # --defer-budget: good values run, and the rdm rows carry the budget (bytes; a % of this region).
    region = 8589934592  # A_sbm2M_movable's max_size
    for v, want in [("64M", 64 << 20), ("0.5%", region // 200), ("2%", region * 2 // 100), ("100%", region),
                    ("0.0001%", region // 1000000), ("none", "none")]:
        jsb = os.path.join(tmp, "b.json")
        rc, out, err = run("--defer-budget", v, "--policy", "rdm-defer,qemu", "--json", jsb, a)
        check(rc == 0, f"--defer-budget {v}: exit {rc}: {err}")
        if rc == 0:
            with open(jsb) as f:
                rows = {r["strategy"]: r for r in json.load(f)["workloads"][0]["results"]}
            if "rdm-defer" in rows:
                check(rows["rdm-defer"]["defer_budget"] == want,
                      f"--defer-budget {v}: defer_budget {rows['rdm-defer']['defer_budget']}, want {want}")
            check(rows["qemu"]["defer_budget"] is None, f"--defer-budget {v}: qemu has a budget")
            check(f"rdm-defer@{v}" in out or "rdm-defer" not in rows, f"--defer-budget {v}: table label")

    # A fixed cut is selected by name (not in the default set) and reports deferred bytes.
    rc, out, _ = run("--policy", "cut-16M", a)
    check(rc == 0 and "strategy=cut-16M " in out and "strategy=qemu " not in out, "--policy cut-16M")
    rc, out, _ = run(a)
    check(rc == 0 and "cut-" not in out, "fixed cuts are not in the default set")

    # --sweep: one frontier line per point (7 budgets, 6 cuts, qemu, lower bound) per workload; with --jobs.
    fr = re.compile(r"SUMMARY frontier workload=(\S+) budget=(\S+) calls=(\d+) deferred_peak_bytes=(\d+) "
                    r"qemu_calls=(\d+) lower_bound=(\d+) deferred_end_bytes=(\d+) deferred_integrated=(\d+)")
    jss = os.path.join(tmp, "s.json")
    sweep_args = ["--sweep", "--workload", "sbm:region=2G", "--json", jss, a]
    rc, out, err = run(*sweep_args, "--jobs", "2")
    check(rc == 0, f"--sweep: exit {rc}: {err}")
    lines = [l for l in out.splitlines() if l.startswith("SUMMARY")]
    check(all(l.startswith("SUMMARY frontier ") for l in lines), "--sweep prints only frontier lines")
    pts = {}
    for l in lines:
        m = fr.fullmatch(l)
        check(m is not None, f"frontier format: {l}")
        if m:
            pts.setdefault(m[1], []).append(m)
    have_defer = "rdm-defer" in subprocess.run([exe, "--list"], capture_output=True, text=True).stdout
    want_budgets = ([str(region * p // 1000000) for p in (2500, 5000, 10000, 20000, 40000, 80000)] + ["none"]
                    if have_defer else [])
    want_budgets += ["cut-4M", "cut-8M", "cut-16M", "cut-32M", "cut-64M", "cut-128M", "qemu", "lower-bound"]
    check(sorted(pts) == ["A_sbm2M_movable", "sbm:region=2G"], f"frontier workloads {sorted(pts)}")
    a_pts = pts.get("A_sbm2M_movable", [])
    check([m[2] for m in a_pts] == want_budgets, f"frontier budgets {[m[2] for m in a_pts]}")
    for w, ms in pts.items():
        by = {m[2]: m for m in ms}
        for m in ms:
            check(m[5] == by["qemu"][3] and m[6] == by["lower-bound"][3], f"qemu_calls/lower_bound: {m[0]}")
            check(int(m[7]) <= int(m[4]), f"end above the peak: {m[0]}")
            check(int(m[8]) >= int(m[4]), f"integrated below the peak: {m[0]}")
        check(by["qemu"][4] == "0" and by["lower-bound"][4] == "0", f"{w}: qemu/lower bound defer nothing")
        # Coarser fixed cuts: fewer calls.
        cc = [int(by[c][3]) for c in ["cut-4M", "cut-8M", "cut-16M", "cut-32M", "cut-64M", "cut-128M"]]
        check(cc == sorted(cc, reverse=True), f"{w}: fixed-cut calls not decreasing {cc}")
    with open(jss) as f:
        d = json.load(f)
    for w in d["workloads"]:
        fr_rows = w.get("frontier")
        check(isinstance(fr_rows, list) and len(fr_rows) == len(want_budgets), f"{w['name']}: frontier array")
        for e, m in zip(fr_rows or [], pts.get(w["name"], [])):
            check(set(e) == {"budget", "strategy", "calls", "deferred_peak_bytes", "qemu_calls", "lower_bound",
                             "deferred_end_bytes", "deferred_integrated"}, f"frontier keys {sorted(e)}")
            check(str(e["budget"]) == m[2] and e["calls"] == int(m[3]) and e["deferred_peak_bytes"] == int(m[4])
                  and e["deferred_integrated"] == int(m[8]), f"frontier JSON disagrees with {m[0]}")
    # --jobs 1 gives the same points.
    rc, out1, _ = run(*sweep_args)
    check(rc == 0 and [l for l in out1.splitlines() if l.startswith("SUMMARY")] == lines, "--sweep --jobs 2 = --jobs 1")
    if shutil.which("gnuplot"):
        svg = os.path.join(tmp, "f.svg")
        rc, _, err = run("--sweep", "--plot", svg, "--workload", "sbm:region=1G")
        check(rc == 0 and os.path.exists(svg) and os.path.exists(svg + ".gp"), f"--sweep --plot: {err}")

    # --jobs: the same counts from parallel runs.
    small = ["--workload", "sbm:region=2G", "--workload", "storm:region=256M,conversions=2000",
             os.path.join(traces, "D_bbm2M_forced_movable.csv")]
    rc1, out1, _ = run(*small)
    rc2, out2, _ = run("--jobs", "2", *small)
    # The synchronous replays are deterministic; the asynchronous storm run
    # (SUMMARY replay-async) measures time and batching, which vary.
    s1 = [l for l in out1.splitlines() if l.startswith("SUMMARY replay ")]
    s2 = [l for l in out2.splitlines() if l.startswith("SUMMARY replay ")]
    check(rc1 == 0 and rc2 == 0 and s1 == s2 and len(s1) >= 12, "--jobs 2 gives the same SUMMARY lines")

    # --gap-us: every request waits at least that long after the previous one
    # ended (gap_mean_us, JSON gap_mean_ns), for every strategy; the
    # calling thread's CPU is then read around the requests alone. For the
    # one-thread baseline that is at most its latency plus what the clock
    # reads leave (~0.1 us); counted over the whole loop, the sleeps' own
    # system calls made it ~20 us per request against ~1 us of latency.
    jsg = os.path.join(tmp, "g.json")
    rc, out, err = run("--gap-us", "2000", "--policy", "qemu,rdm-block", "--workload", "sbm:region=512M",
                       "--json", jsg)
    check(rc == 0, f"--gap-us: exit {rc}: {err}")
    glines = [l for l in out.splitlines() if l.startswith("SUMMARY latency ")]
    gre = re.compile(r"SUMMARY latency workload=\S+ strategy=(\S+) cpus=\d+ gap_us=(\d+) gap_mean_us=([\d.]+) "
                     r"spin_us=1000 requests=(\d+) .* mean_us=([\d.]+) cpu_us_per_req=([\d.]+) caller_cpu_us_per_req=([\d.]+) .*")
    gm = {m[1]: m for m in (gre.fullmatch(l) for l in glines) if m}
    check(len(glines) >= 2 and len(gm) == len(glines), f"--gap-us SUMMARY latency lines: {glines}")
    for st, m in gm.items():
        check(m[2] == "2000" and float(m[3]) >= 2000.0, f"--gap-us {st}: gap {m[2]}/{m[3]}")
    if "qemu" in gm:
        check(float(gm["qemu"][7]) <= 3 * float(gm["qemu"][5]) + 2.0,
              f"--gap-us: qemu caller CPU {gm['qemu'][7]} us per request against {gm['qemu'][5]} us of latency")
    if rc == 0:
        with open(jsg) as f:
            dg = json.load(f)
        check(dg["gap_us"] == 2000, f"--gap-us json gap_us {dg['gap_us']}")
        for r in dg["workloads"][0]["results"]:
            if r["strategy"] != "lower-bound":
                check(r["gap_mean_ns"] >= 2000000, f"--gap-us json {r['strategy']} gap_mean_ns {r['gap_mean_ns']}")

    # --spin-us reaches every rdm strategy's worker: their rows print the
    # bound the worker itself reports (rdm_worker_get_config()), the
    # baseline's the run's setting, so a flag that stopped at the harness
    # shows as 1000 on the rdm rows.
    jss = os.path.join(tmp, "s.json")
    rc, out, err = run("--spin-us", "7", "--policy", "qemu,rdm-block,rdm-defer-cr", "--workload",
                       "sbm:region=512M", "--json", jss)
    check(rc == 0, f"--spin-us: exit {rc}: {err}")
    sl = re.findall(r"^SUMMARY latency workload=\S+ strategy=(\S+) .* spin_us=(\d+) ", out, re.M)
    check(sorted(st for st, _ in sl) == ["qemu", "rdm-block", "rdm-defer-cr"] and all(v == "7" for _, v in sl),
          f"--spin-us 7: SUMMARY latency spin_us {sl}")
    if rc == 0:
        with open(jss) as f:
            check(json.load(f)["spin_us"] == 7, "--spin-us json spin_us")

    # JSON schema, and the SUMMARY lines agree with it.
    js = os.path.join(tmp, "r.json")
    args = ["--json", js, "--seed", "7", "--workload", "storm:region=1G,conversions=3000",
            "--workload", "frag:region=1G,steps=500", os.path.join(traces, "G_sbm128M_movable.csv"),
            os.path.join(traces, "H_sbm2M_movable_reset.csv")]
    have_gnuplot = shutil.which("gnuplot") is not None
    svg = os.path.join(tmp, "r.svg")
    if have_gnuplot:
        args += ["--plot", svg]
    rc, out, err = run(*args)
    check(rc == 0, f"json run: exit {rc}: {err}")
    with open(js) as f:
        d = json.load(f)
    check(d["tool"] == "rdm-replay" and d["schema_version"] == 1 and d["seed"] == 7 and d["scale"] == 1 and
          d["gap_us"] == 0 and d["spin_us"] == 1000, "json header")
    check(d["backend"] == "sim" and d["mapping_limit"] == 65535, "json backend/limit")
    check(set(d["cost_model"]) == {"call_ns", "page_ns", "page_size"}, "json cost_model")
    names = [w["name"] for w in d["workloads"]]
    check(names == ["G_sbm128M_movable", "H_sbm2M_movable_reset", "storm:region=1G,conversions=3000",
                    "frag-d50:region=1G,steps=500"], f"json workload names {names}")
    row_keys = {"strategy", "map_calls", "unmap_calls", "calls", "ratio_lb", "peak_mappings", "limit_exceeded",
                "remapped_bytes", "deferred_peak_bytes", "deferred_end_bytes", "deferred_integrated",
                "defer_budget", "modelled_ns", "wall_ns", "latency_p50_ns", "latency_p99_ns", "failed_requests",
                "async", "latency_mean_ns", "cpu_caller_ns", "cpu_worker_ns", "cpu_ns_per_request", "gap_mean_ns"}
    lat_re = re.compile(r"SUMMARY latency workload=(\S+) strategy=(\S+) cpus=(\d+) gap_us=0 gap_mean_us=[\d.]+ "
                        r"spin_us=1000 requests=(\d+) p50_us=([\d.]+) "
                        r"p99_us=([\d.]+) mean_us=([\d.]+) cpu_us_per_req=([\d.]+) caller_cpu_us_per_req=([\d.]+) "
                        r"worker_cpu_us_per_req=([\d.]+) cpu_per_wall=([\d.]+) qemu_p50_us=([\d.]+) "
                        r"qemu_cpu_us_per_req=([\d.]+)")
    latency = {}
    summaries = {}
    for l in out.splitlines():
        if l.startswith("SUMMARY replay "):
            m = re.fullmatch(r"SUMMARY replay workload=(\S+) strategy=(\S+) calls=(\d+) lower_bound=(\d+) "
                             r"ratio_lb=(\S+) peak_mappings=(\d+) limit_exceeded=(\d+) remapped_bytes=(\d+) "
                             r"deferred_peak_bytes=(\d+) deferred_end_bytes=(\d+) deferred_integrated=(\d+)", l)
            check(m is not None, f"SUMMARY format: {l}")
            if m:
                summaries[(m[1], m[2])] = m
        elif l.startswith("SUMMARY latency "):
            m = lat_re.fullmatch(l)
            check(m is not None, f"SUMMARY latency format: {l}")
            if m:
                latency[(m[1], m[2])] = m
    for w in d["workloads"]:
        for k, t in [("name", str), ("source", str), ("block_size", int), ("region_size", int), ("requests", int),
                     ("lower_bound", dict), ("results", list)]:
            check(isinstance(w.get(k), t), f"{w.get('name')}: {k} is {type(w.get(k))}")
        lb = w["lower_bound"]
        check(set(lb) == {"calls", "maps", "unmaps", "peak_mappings"}, "lower_bound keys")
        check(lb["calls"] == lb["maps"] + lb["unmaps"], "lower_bound sum")
        strategies = [r["strategy"] for r in w["results"]]
        check(strategies[0] == "lower-bound" and {"qemu", "cloud-hypervisor", "naive"} <= set(strategies),
              f"strategies {strategies}")
        for r in w["results"]:
            check(set(r) == row_keys, f"row keys {sorted(set(r) ^ row_keys)}")
            check(r["calls"] == r["map_calls"] + r["unmap_calls"], "calls = map + unmap")
            # The bound assumes no deferred reclaim: only a strategy that
            # defers (and says so in deferred_peak_bytes) may go below it.
            check(r["calls"] >= lb["calls"] or r["deferred_peak_bytes"] > 0,
                  f"{w['name']}/{r['strategy']} below the lower bound")
            if lb["calls"]:
                check(abs(r["ratio_lb"] - r["calls"] / lb["calls"]) < 1e-5, "ratio_lb")
            check(r["limit_exceeded"] == max(0, r["peak_mappings"] - 65535), "limit_exceeded")
            if r["strategy"] == "lower-bound":
                check(r["wall_ns"] is None and r["latency_p50_ns"] is None and r["gap_mean_ns"] is None,
                      "lower bound has no wall time")
                check(r["cpu_ns_per_request"] is None and r["cpu_worker_ns"] is None, "lower bound has no CPU time")
                check((w["name"], r["strategy"]) not in latency, "lower bound has no SUMMARY latency")
            else:
                check(isinstance(r["wall_ns"], int) and r["latency_p50_ns"] <= r["latency_p99_ns"], "latency")
                # CPU time: the calling thread's always, the worker's for rdm strategies only.
                n = w["requests"]
                check(r["cpu_caller_ns"] > 0 and r["cpu_ns_per_request"] ==
                      (r["cpu_caller_ns"] + r["cpu_worker_ns"]) // n, f"{r['strategy']}: cpu fields")
                check(r["latency_mean_ns"] * n <= r["wall_ns"], f"{r['strategy']}: mean latency above wall/requests")
                if r["strategy"].endswith("-cr"):
                    # Caller runs: the requests may all run on the calling
                    # thread, and the worker thread then does nothing.
                    check(isinstance(r["cpu_worker_ns"], int), f"{r['strategy']}: worker CPU time")
                elif r["strategy"].startswith("rdm-"):
                    check(r["cpu_worker_ns"] > 0, f"{r['strategy']}: no worker CPU time")
                else:
                    check(r["cpu_worker_ns"] == 0, f"{r['strategy']}: a baseline has worker CPU time")
                m = latency.get((w["name"], r["strategy"]))
                check(m is not None, f"no SUMMARY latency for {w['name']}/{r['strategy']}")
                if m:
                    check(int(m[3]) >= 1 and int(m[4]) == n, f"SUMMARY latency cpus/requests: {m[0]}")
                    check(abs(float(m[5]) * 1000 - r["latency_p50_ns"]) <= 10 and
                          abs(float(m[8]) * 1000 - r["cpu_ns_per_request"]) <= 10, f"SUMMARY latency vs JSON: {m[0]}")
                    q = [x for x in w["results"] if x["strategy"] == "qemu"][0]
                    check(abs(float(m[12]) * 1000 - q["latency_p50_ns"]) <= 10, f"qemu_p50_us: {m[0]}")
            check(r["async"] is None or isinstance(r["async"], dict), "async")
            m = summaries.get((w["name"], r["strategy"]))
            check(m is not None, f"no SUMMARY for {w['name']}/{r['strategy']}")
            if m:
                check(int(m[3]) == r["calls"] and int(m[4]) == lb["calls"] and int(m[6]) == r["peak_mappings"],
                      f"SUMMARY disagrees with JSON: {m[0]}")
                check(int(m[10]) == r["deferred_end_bytes"] and int(m[11]) == r["deferred_integrated"],
                      f"SUMMARY deferred end/integrated disagree with JSON: {m[0]}")
            check(r["deferred_end_bytes"] <= r["deferred_peak_bytes"], f"{r['strategy']}: end above the peak")
    if have_gnuplot:
        with open(svg) as f:
            check("<svg" in f.read(), "plot is an SVG")
        check(os.path.exists(svg + ".dat") and os.path.exists(svg + ".gp"), "plot data and script kept")
finally:
    shutil.rmtree(tmp)

if failures:
    print(f"{failures} check(s) failed", file=sys.stderr)
sys.exit(1 if failures else 0)
