#!/usr/bin/env python3
"""tests/vm/run-vm.py - boot a Linux guest with VFIO and QEMU's edu device, run guest programs, print TAP.

One invocation is one guest boot:
  run-vm.py --init tests/vm/init.sh --cache BUILD/tests/vm/cache --name NAME
            [--param key=value]... [--dmesg] [--timeout SECONDS] [--tap-skip]
            [--module NAME]... [--file SRC[:DEST]]... [--numa N]
            --prog PATH [--args 'ARGS']  [--prog PATH [--args 'ARGS']]...

What it does (README.md has the details):
  1. installs what is missing (qemu-system-x86, busybox-static, cpio) with apt-get;
  2. fetches the guest kernel (the linux-image-6.1.0-N-amd64 that linux-image-amd64 depends on)
     with `apt-get download` and unpacks it with `dpkg -x` into the cache (never installed on the
     host); later runs reuse the cache;
  3. builds an initramfs: static busybox, init.sh as /init, the vfio modules in dependency order,
     the guest programs (statically linked) and any --file;
  4. boots qemu-system-x86_64 (TCG, q35, intel-iommu, edu) under a hard timeout, reads the serial
     console and turns it into TAP on stdout: a line per boot step, one per guest check (renamed
     "<program>: <check>"), one per program's exit. With --numa N the guest has N NUMA nodes of
     one CPU and 4/N GiB each (node i: CPU i), and a setup line checks the guest sees them.
Exit: 0 when every check passed, 1 otherwise; 77 (or, with --tap-skip, a TAP skip plan and 0,
which is how meson's TAP runner counts a skip) only when QEMU cannot be installed.
"""

import fcntl
import gzip
import json
import lzma
import os
import queue
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time

MODULES = ["vfio", "vfio_iommu_type1", "vfio_virqfd", "irqbypass", "vfio-pci-core", "vfio-pci"]
PACKAGES = {"qemu-system-x86": "/usr/bin/qemu-system-x86_64", "busybox-static": "/bin/busybox",
            "cpio": "/usr/bin/cpio"}
QEMU_ARGS = ["-accel", "tcg,thread=multi", "-cpu", "max", "-machine", "q35",
             "-device", "intel-iommu,caching-mode=on,intremap=on",
             "-nographic", "-no-reboot", "-nic", "none"]
MEM_MIB = 4096  # -m 4G
NUMA_MAX = 4
CMDLINE = ["console=ttyS0", "intel_iommu=on", "panic=-1"]
# edu's DMA engine masks addresses to 28 bits unless its dma_mask property says otherwise (QEMU
# 7.2's edu has it); 40 bits reach every IOVA the guest's VT-d (39-bit address width) translates,
# rdm's replay region at 4 GiB included. The guest learns the width from RDM_VM_EDU_DMA_BITS.
EDU_DMA_BITS = 40
EDU_DEFAULT_BITS = 28
MARK = "@@RDM-VM "


def usage(msg):
    sys.stderr.write(f"run-vm.py: {msg}\n{__doc__}")
    sys.exit(2)


def parse_args(argv):
    o = {"init": None, "cache": None, "name": "vm", "params": [], "dmesg": False, "timeout": 300.0,
         "tap_skip": False, "modules": list(MODULES), "files": [], "progs": [], "numa": 0}
    it = iter(argv)
    for a in it:
        key, eq, val = a.partition("=")
        if not eq:
            val = None

        def value():
            if val is not None:
                return val
            try:
                return next(it)
            except StopIteration:
                usage(f"{a} needs a value")
        if key == "--init":
            o["init"] = value()
        elif key == "--cache":
            o["cache"] = value()
        elif key == "--name":
            o["name"] = value()
        elif key == "--param":
            p = value()
            if "=" not in p or " " in p:
                usage(f"--param {p!r}: want one key=value word")
            o["params"].append(p)
        elif key == "--dmesg":
            o["dmesg"] = True
        elif key == "--timeout":
            o["timeout"] = float(value())
        elif key == "--tap-skip":
            o["tap_skip"] = True
        elif key == "--module":
            o["modules"].append(value())
        elif key == "--file":
            o["files"].append(value())
        elif key == "--numa":
            v = value()
            if not v.isdigit() or not 2 <= int(v) <= NUMA_MAX:
                usage(f"--numa {v!r}: want a node count from 2 to {NUMA_MAX}")
            o["numa"] = int(v)
        elif key == "--prog":
            o["progs"].append({"path": value(), "args": ""})
        elif key == "--args":
            if not o["progs"]:
                usage("--args must follow a --prog")
            o["progs"][-1]["args"] = value()
        elif key in ("-h", "--help"):
            print(__doc__)
            sys.exit(0)
        else:
            usage(f"unknown argument {a!r}")
    if not o["init"]:
        o["init"] = os.path.join(os.path.dirname(os.path.abspath(__file__)), "init.sh")
    if not o["cache"]:
        o["cache"] = os.path.abspath("vm-cache")
    names = {}
    for p in o["progs"]:
        base = os.path.basename(p["path"])
        names[base] = names.get(base, 0) + 1
        p["name"] = base if names[base] == 1 else f"{base}.{names[base]}"
        p["file"] = base
    return o


class Tap:
    """TAP on stdout, streamed so a by-hand run shows progress."""

    def __init__(self):
        self.n = 0
        self.failed = 0

    def line(self, ok, text, counts=True):
        self.n += 1
        if not ok and counts:
            self.failed += 1
        print(f"{'ok' if ok else 'not ok'} {self.n} - {text}", flush=True)
        return ok

    def diag(self, text):
        for ln in str(text).splitlines() or [""]:
            print(f"# {ln}", flush=True)

    def done(self):
        print(f"1..{self.n}", flush=True)
        return 1 if self.failed else 0


class Skip(Exception):
    pass


class Fail(Exception):
    pass


def run(cmd, **kw):
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


class CacheLock:
    """One boot at a time installs packages or fetches the kernel (meson may run tests at once)."""

    def __init__(self, cache):
        os.makedirs(cache, exist_ok=True)
        self.f = open(os.path.join(cache, ".lock"), "w")

    def __enter__(self):
        fcntl.flock(self.f, fcntl.LOCK_EX)

    def __exit__(self, *exc):
        fcntl.flock(self.f, fcntl.LOCK_UN)


def installed(pkg):
    r = run(["dpkg-query", "-W", "-f=${Status}", pkg])
    return r.returncode == 0 and "install ok installed" in r.stdout and os.path.exists(PACKAGES[pkg])


def ensure_packages(tap):
    missing = [p for p in PACKAGES if not installed(p)]
    if not missing:
        return
    tap.diag(f"installing {' '.join(missing)}")
    if os.geteuid() != 0:
        why = f"{' '.join(missing)} not installed, and not root to install them"
    else:
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        cmd = ["apt-get", "install", "-y", "-qq", "--no-install-recommends"] + missing
        r = run(cmd, env=env)
        if r.returncode != 0:
            u = run(["apt-get", "update", "-qq"], env=env)
            r = run(cmd, env=env)
            if r.returncode != 0:
                r.stdout = u.stdout + r.stdout
        why = ("apt-get install failed:\n" + r.stdout.strip()[-2000:] if r.returncode != 0 else
               "apt-get install succeeded but left them missing")
    still = [p for p in PACKAGES if not installed(p)]
    if "qemu-system-x86" in still:
        raise Skip(f"QEMU cannot be installed: {why}")
    if still:
        raise Fail(f"cannot install {' '.join(still)}: {why}")


def kernel_package(tap):
    """The linux-image-6.1.0-N-amd64 that linux-image-amd64 depends on."""
    for attempt in (0, 1):
        r = run(["apt-cache", "depends", "linux-image-amd64"])
        m = re.search(r"Depends:\s*(linux-image-[0-9][^\s]*-amd64)\b", r.stdout)
        if m:
            return m.group(1)
        if attempt == 0 and os.geteuid() == 0:
            tap.diag("apt-cache knows no linux-image-amd64; apt-get update")
            run(["apt-get", "update", "-qq"], env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
    raise Fail("apt-cache depends linux-image-amd64 names no linux-image-*-amd64 package:\n" + r.stdout)


def modinfo_depends(data):
    m = re.search(rb"(?:^|\0)depends=([^\0]*)\0", data)
    return [d for d in m.group(1).decode().split(",") if d] if m else []


def read_module(path):
    with open(path, "rb") as f:
        data = f.read()
    if path.endswith(".xz"):
        return lzma.decompress(data)
    if path.endswith(".gz"):
        return gzip.decompress(data)
    if path.endswith(".zst"):
        r = subprocess.run(["zstd", "-dc", path], stdout=subprocess.PIPE, check=True)
        return r.stdout
    return data


def collect_modules(moddir, wanted):
    """Plain .ko images of wanted and their dependencies, dependencies first."""
    index = {}
    for root, _, files in os.walk(moddir):
        for fn in files:
            m = re.match(r"(.+)\.ko(\.xz|\.gz|\.zst)?$", fn)
            if m:
                index[m.group(1).replace("-", "_")] = os.path.join(root, fn)
    order, seen, images = [], set(), {}

    def visit(name, chain):
        key = name.replace("-", "_")
        if key in seen:
            return
        if key not in index:
            raise Fail(f"module {name} (needed by {' <- '.join(chain) or 'the tests'}) is not in {moddir}")
        seen.add(key)
        data = read_module(index[key])
        for dep in modinfo_depends(data):
            visit(dep, [name] + chain)
        fn = re.sub(r"\.(xz|gz|zst)$", "", os.path.basename(index[key]))
        images[fn] = data
        order.append(fn)

    for w in wanted:
        visit(w, [])
    return order, images


def ensure_kernel(tap, cache, modules):
    """Cached kernel (vmlinuz + module images); fetched and unpacked on first use."""
    meta_path = os.path.join(cache, "kernel.json")
    if os.path.exists(meta_path):
        with open(meta_path) as f:
            meta = json.load(f)
        if meta.get("modules_wanted") == modules and os.path.exists(meta["vmlinuz"]):
            meta["fetched"] = False
            return meta
    t0 = time.monotonic()
    pkg = kernel_package(tap)
    dl = os.path.join(cache, "download")
    shutil.rmtree(dl, ignore_errors=True)
    os.makedirs(dl)
    os.chmod(dl, 0o777)  # apt-get download drops to user _apt when it can
    r = run(["apt-get", "download", pkg], cwd=dl)
    debs = [f for f in os.listdir(dl) if f.endswith(".deb")]
    if r.returncode != 0 or not debs:
        raise Fail(f"apt-get download {pkg} failed:\n{r.stdout.strip()[-2000:]}")
    x = os.path.join(dl, "x")
    r = run(["dpkg", "-x", os.path.join(dl, debs[0]), x])
    if r.returncode != 0:
        raise Fail(f"dpkg -x {debs[0]} failed:\n{r.stdout}")
    boot = [f for f in os.listdir(os.path.join(x, "boot")) if f.startswith("vmlinuz-")]
    if not boot:
        raise Fail(f"{debs[0]} holds no /boot/vmlinuz-*")
    release = boot[0][len("vmlinuz-"):]
    order, images = collect_modules(os.path.join(x, "lib", "modules", release), modules)
    kdir = os.path.join(cache, pkg)
    shutil.rmtree(kdir, ignore_errors=True)
    os.makedirs(os.path.join(kdir, "modules"))
    shutil.copy(os.path.join(x, "boot", boot[0]), os.path.join(kdir, "vmlinuz"))
    for fn, data in images.items():
        with open(os.path.join(kdir, "modules", fn), "wb") as f:
            f.write(data)
    meta = {"package": pkg, "deb": debs[0], "release": release, "vmlinuz": os.path.join(kdir, "vmlinuz"),
            "moddir": os.path.join(kdir, "modules"), "modules": order, "modules_wanted": modules}
    shutil.rmtree(dl, ignore_errors=True)  # ~400 MB unpacked; keep only what boots
    with open(meta_path + ".tmp", "w") as f:
        json.dump(meta, f, indent=1)
    os.replace(meta_path + ".tmp", meta_path)
    meta["fetched"] = True
    tap.diag(f"fetched {debs[0]} and unpacked {len(order)} modules in {time.monotonic() - t0:.1f} s")
    return meta


def build_initramfs(o, meta, work):
    root = os.path.join(work, "root")
    shutil.rmtree(root, ignore_errors=True)
    for d in ("bin", "etc/rdm-vm", "lib/modules", "tests", "data"):
        os.makedirs(os.path.join(root, d))
    shutil.copy("/bin/busybox", os.path.join(root, "bin", "busybox"))
    shutil.copy(o["init"], os.path.join(root, "init"))
    # What every /init sources first.
    shutil.copy(os.path.join(os.path.dirname(os.path.abspath(__file__)), "guest-setup.sh"),
                os.path.join(root, "etc/rdm-vm/setup.sh"))
    os.chmod(os.path.join(root, "init"), 0o755)
    for fn in meta["modules"]:
        shutil.copy(os.path.join(meta["moddir"], fn), os.path.join(root, "lib", "modules", fn))
    with open(os.path.join(root, "etc/rdm-vm/modules"), "w") as f:
        f.write("".join(m + "\n" for m in meta["modules"]))
    lines = []
    for p in o["progs"]:
        if not os.path.isfile(p["path"]):
            raise Fail(f"guest program {p['path']} does not exist (built?)")
        with open(p["path"], "rb") as f:
            head = f.read(4)
        if head != b"\x7fELF":
            raise Fail(f"guest program {p['path']} is not an ELF executable")
        r = run(["file", "-b", p["path"]]) if shutil.which("file") else None
        if r and "dynamically linked" in r.stdout:
            raise Fail(f"guest program {p['path']} is dynamically linked; link it with -static")
        if not os.path.exists(os.path.join(root, "tests", p["file"])):
            shutil.copy(p["path"], os.path.join(root, "tests", p["file"]))
        cmd = "/tests/" + p["file"] + (" " + p["args"] if p["args"] else "")
        if "\t" in cmd or "\n" in cmd:
            raise Fail(f"--args of {p['name']} holds a tab or newline")
        lines.append(f"{p['name']}\t{cmd}\n")
    with open(os.path.join(root, "etc/rdm-vm/programs"), "w") as f:
        f.write("".join(lines))
    for spec in o["files"]:
        src, _, dest = spec.partition(":")
        dest = dest or "/data/" + os.path.basename(src)
        target = os.path.join(root, dest.lstrip("/"))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if os.path.isdir(src):
            shutil.copytree(src, target)
        else:
            shutil.copy(src, target)
    image = os.path.join(work, "initramfs.cpio")
    names = run(["find", "."], cwd=root).stdout
    with open(image, "wb") as out:
        r = subprocess.run(["cpio", "-o", "-H", "newc", "-R", "0:0", "--quiet"], cwd=root,
                           input=names.encode(), stdout=out, stderr=subprocess.PIPE)
    if r.returncode != 0:
        raise Fail(f"cpio failed: {r.stderr.decode()}")
    shutil.rmtree(root, ignore_errors=True)
    return image


def edu_device():
    """-device edu with its DMA reach widened when this QEMU can, and that reach in bits."""
    r = run(["qemu-system-x86_64", "-device", "edu,help"])
    if re.search(r"^\s*dma_mask=", r.stdout, re.M):
        return f"edu,dma_mask={(1 << EDU_DMA_BITS) - 1:#x}", EDU_DMA_BITS
    return "edu", EDU_DEFAULT_BITS


def machine_args(numa):
    """Memory and CPUs: 4 GiB and 2 CPUs; with numa = N, N nodes of one CPU and 4/N GiB each
    (node i has CPU i and memory backend m<i>), 4 GiB in all."""
    if not numa:
        return ["-m", "4G", "-smp", "2"]
    per = MEM_MIB // numa
    args = ["-m", f"{per * numa}M", "-smp", str(numa)]
    for i in range(numa):
        args += ["-object", f"memory-backend-ram,id=m{i},size={per}M"]
    for i in range(numa):
        args += ["-numa", f"node,nodeid={i},cpus={i},memdev=m{i}"]
    return args


def numa_seen(kv, numa):
    """The guest's view of its nodes (init.sh's NUMA line) against what was booted: nodes
    0..N-1 online, node i's CPU list is i, every node has memory. (ok, text)"""
    want_online = f"0-{numa - 1}" if numa > 1 else "0"
    bad = []
    if kv.get("online") != want_online:
        bad.append(f"online nodes {kv.get('online')!r}, want {want_online!r}")
    parts = []
    for i in range(numa):
        cpus, mem = kv.get(f"node{i}_cpus"), kv.get(f"node{i}_mem_kb")
        parts.append(f"node{i} cpus {cpus} memory {int(mem) // 1024 if (mem or '').isdigit() else mem} MiB")
        if cpus != str(i):
            bad.append(f"node{i} has CPUs {cpus!r}, want '{i}'")
        if not (mem or "").isdigit() or int(mem) == 0:
            bad.append(f"node{i} has no memory ({mem!r} kB)")
    return not bad, f"setup: {numa} NUMA nodes: " + "; ".join(parts) + ("" if not bad else " - " + "; ".join(bad))


def boot(o, meta, image, work, tap):
    edu, edu_bits = edu_device()
    params = (list(o["params"]) + (["rdm_dmesg=1"] if o["dmesg"] else []) +
              ([f"rdm_numa={o['numa']}"] if o["numa"] else []))
    cmdline = " ".join(CMDLINE + [f"RDM_VM_EDU_DMA_BITS={edu_bits}"] + params)
    cmd = (["qemu-system-x86_64"] + QEMU_ARGS + machine_args(o["numa"]) +
           ["-device", edu, "-kernel", meta["vmlinuz"], "-initrd", image, "-append", cmdline])
    with open(os.path.join(work, "qemu-command"), "w") as f:
        f.write(shlex.join(cmd) + "\n")
    tap.diag(f"boot: {shlex.join(cmd)}")
    log_path = os.path.join(work, "serial.log")
    log = open(log_path, "w")
    t0 = time.monotonic()
    # QEMU's own messages (e.g. the IOMMU model's fault reports) go to a file of their own, so
    # they are never taken for the guest's output.
    err_path = os.path.join(work, "qemu-stderr.log")
    err = open(err_path, "w")
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err,
                            start_new_session=True)
    lines = queue.Queue()

    def reader():
        for raw in proc.stdout:
            lines.put(raw.decode("utf-8", "replace").replace("\r", "").rstrip("\n"))
        lines.put(None)

    threading.Thread(target=reader, daemon=True).start()

    expected_limit = next((p.split("=", 1)[1] for p in params if p.startswith("dma_entry_limit=")), None)
    state = {"booted": False, "ready": False, "done": False, "prog": None, "count": 0, "plan": None,
             "bad": 0, "in_dmesg": False, "ran": set(), "numa": False}
    tail = []
    progs = {p["name"]: p for p in o["progs"]}
    timed_out = False

    def handle(text):
        now = time.monotonic() - t0
        kind, _, rest = text.partition(" ")
        kv = dict(w.split("=", 1) for w in rest.split() if "=" in w)
        if kind == "BOOTED":
            state["booted"] = True
            tap.line(True, f"boot: the kernel ran /init ({now:.1f} s host wall, guest uptime {kv.get('uptime')} s)")
        elif kind == "READY":
            state["ready"] = True
            ok = expected_limit is None or kv.get("limit") == expected_limit
            tap.line(ok, f"setup: {', '.join(meta['modules'])} loaded; edu {kv.get('bdf')} on vfio-pci in IOMMU "
                         f"group {kv.get('group')}; dma_entry_limit {kv.get('limit')}"
                         + ("" if ok else f" (asked for {expected_limit})") + f" ({now:.1f} s)")
        elif kind == "NUMA":
            state["numa"] = True
            tap.line(*numa_seen(kv, o["numa"]))
        elif kind == "FAIL":
            tap.line(False, f"setup: {rest}")
        elif kind == "BEGIN":
            state.update(prog=rest.strip(), count=0, plan=None, bad=0)
            state["ran"].add(rest.strip())
        elif kind == "END":
            name = rest.split()[0]
            rc = kv.get("rc")
            complete = state["plan"] is not None and state["plan"] == state["count"]
            ok = rc == "0" and complete and state["bad"] == 0
            what = (f"{state['count']} checks" + (f", {state['bad']} failed" if state["bad"] else "") if complete else
                    f"{state['count']} checks of a plan of {state['plan']}" if state["plan"] is not None
                    else f"{state['count']} checks, no plan line (crashed?)")
            tap.line(ok, f"{name}: exited {rc} after {what} ({kv.get('secs')} s)")
            state["prog"] = None
        elif kind == "DMESG":
            state["in_dmesg"] = rest.strip() == "BEGIN"
        elif kind == "DONE":
            state["done"] = True
            tap.diag(f"guest done at {now:.1f} s host wall (guest uptime {kv.get('uptime')} s)")

    def program_line(text):
        name = state["prog"]
        m = re.match(r"(not )?ok\b(?:\s+(\d+))?\s*(?:-\s*)?(.*)$", text)
        if m:
            state["count"] += 1
            desc = m.group(3)
            todo = re.search(r"#\s*TODO\b", desc, re.I) is not None
            if m.group(1) and not todo:
                state["bad"] += 1
            # A directive (# SKIP, # TODO) stays at the end of the description, where meson reads it.
            tap.line(not m.group(1), f"{name}: {desc}", counts=not todo)
            return
        m = re.match(r"1\.\.(\d+)", text)
        if m:
            state["plan"] = int(m.group(1))
            return
        if text.startswith("#"):
            text = text[1:].lstrip()
        if text.startswith("SUMMARY "):
            tap.diag(text)  # verbatim: "# SUMMARY ..." in meson's log, whatever program printed it
        elif text:
            tap.diag(f"{name}: {text}")

    while True:
        left = o["timeout"] - (time.monotonic() - t0)
        try:
            text = lines.get(timeout=max(left, 0.01))
        except queue.Empty:
            timed_out = True
            break
        if text is None:
            break
        log.write(text + "\n")
        tail = (tail + [text])[-60:]
        at = text.find(MARK)
        if at > 0:  # a program's last line without a newline
            if state["prog"]:
                program_line(text[:at])
            text = text[at:]
        if text.startswith(MARK):
            handle(text[len(MARK):])
        elif state["in_dmesg"]:
            tap.diag(f"dmesg: {text}")
        elif state["prog"]:
            program_line(text)
    if timed_out:
        os.killpg(proc.pid, signal.SIGKILL)
    try:
        rc = proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        rc = proc.wait()
    log.close()
    err.close()
    total = time.monotonic() - t0
    with open(err_path, errors="replace") as f:
        qemu_err = f.read().splitlines()
    if qemu_err:
        tap.diag(f"QEMU said ({len(qemu_err)} lines, {err_path}):")
        for t in qemu_err[:12]:
            tap.diag(f"  qemu: {t}")

    if not state["booted"]:
        tap.line(False, "boot: the kernel never ran /init")
    elif o["numa"] and not state["numa"]:
        tap.line(False, f"setup: the guest never said which NUMA nodes it sees (asked for {o['numa']})")
    if state["prog"]:
        tap.line(False, f"{state['prog']}: did not finish")
    for name in progs:
        if name not in state["ran"]:
            tap.line(False, f"{name}: never ran")
    finished = state["done"] and not timed_out
    why = (f"timed out after {o['timeout']:.0f} s" if timed_out else
           f"QEMU exited {rc} before the guest finished" if not state["done"] else f"QEMU exited {rc}")
    tap.line(finished and rc == 0, f"boot: guest finished and powered off in {total:.1f} s" if finished and rc == 0
             else f"boot: {why}")
    if not (finished and rc == 0) or tap.failed:
        tap.diag(f"serial log: {log_path}; its last lines:")
        for t in tail:
            tap.diag(f"  | {t}")


def setup_failed(e, tap, tap_skip, prog):
    """The exit code when preparing a boot raised Skip (QEMU not installable) or Fail."""
    if isinstance(e, Skip):
        msg = str(e).replace("\n", " | ")
        if tap_skip:
            print(f"1..0 # SKIP {msg}", flush=True)
            return 0
        sys.stderr.write(f"{prog}: SKIP: {msg}\n")
        return 77
    tap.line(False, f"setup: {str(e).splitlines()[0]}")
    tap.diag(str(e))
    return tap.done()


def main():
    o = parse_args(sys.argv[1:])
    tap = Tap()
    work = os.path.join(os.path.dirname(os.path.abspath(o["cache"])), o["name"])
    os.makedirs(work, exist_ok=True)
    t0 = time.monotonic()
    try:
        with CacheLock(o["cache"]):
            ensure_packages(tap)
            meta = ensure_kernel(tap, o["cache"], o["modules"])
        image = build_initramfs(o, meta, work)
        tap.diag(f"{o['name']}: kernel {meta['package']} ({'fetched' if meta['fetched'] else 'cached'}), "
                 f"initramfs {os.path.getsize(image) / 2**20:.1f} MiB, ready in {time.monotonic() - t0:.1f} s")
    except (Skip, Fail) as e:
        return setup_failed(e, tap, o["tap_skip"], "run-vm.py")
    boot(o, meta, image, work, tap)
    return tap.done()


if __name__ == "__main__":
    sys.exit(main())
