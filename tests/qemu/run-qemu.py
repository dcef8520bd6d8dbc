#!/usr/bin/env python3
"""tests/qemu/run-qemu.py - a VMM with virtio-mem and VFIO, nested: QEMU in an L1 guest, L2 inside.

One invocation is one L1 boot and one L2 boot:
  run-qemu.py --qemu PATH --variant NAME --name NAME --cache DIR
              --driver L1DRIVE --preload VFIO_COUNT_SO --edu-dma EDU_DMA
              [--l2-arg ARG]... [--driver-args 'ARGS'] [--timeout S] [--tap-skip]

The L1 guest is tests/vm/run-vm.py's (its kernel cache, its /init, edu on vfio-pci under an
emulated VT-d; imported from there) with more memory. Its initramfs also carries the VMM under
test (--qemu: the binary, every shared library ldd names, Debian's accel-tcg module when the
binary has one beside it, and the firmware it loads), the uncompressed guest kernel (vmlinux, which
QEMU boots through its PVH entry) and L2's initramfs (busybox, l2-init.sh, virtio_mem, edu_dma).
In L1, l1drive starts that QEMU with edu passed through and a virtio-mem device, drives it over
QMP and prints TAP and SUMMARY lines, which come out here as TAP (README.md).
"""

import importlib.util
import lzma
import os
import re
import shlex
import shutil
import struct
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True
_spec = importlib.util.spec_from_file_location("run_vm", os.path.join(HERE, "..", "vm", "run-vm.py"))
rv = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(rv)

L2_MODULES = ["virtio_pci", "virtio_mem"]
L1_MEMORY = "6G"
# What QEMU 7.2 opens to boot a -kernel on q35 (strace of Debian's binary): SeaBIOS, the option
# ROMs for the Linux and PVH entries, and the vapic ROM it loads even under TCG.
FIRMWARE = ["/usr/share/seabios/bios-256k.bin", "/usr/share/qemu/kvmvapic.bin",
            "/usr/share/qemu/linuxboot_dma.bin", "/usr/share/qemu/pvh.bin"]
# mitigations=off: no speculation workarounds in a guest that runs only the test (each costs
# much under nested TCG).
L2_CMDLINE = "console=ttyS0 memhp_default_state=online_movable panic=-1 quiet mitigations=off"


def l2_command(extra):
    """The L2 QEMU's command line as l1drive runs it in L1 (@BDF@: edu's address there)."""
    return (["/usr/bin/qemu-system-x86_64", "-L", "/usr/share/seabios", "-L", "/usr/share/qemu",
             "-accel", "tcg", "-machine", "q35", "-m", "1G,maxmem=4G", "-smp", "1",
             "-nodefaults", "-display", "none", "-serial", "stdio",
             "-device", "vfio-pci,host=@BDF@",
             "-object", "memory-backend-ram,id=vmem0,size=1G",
             "-device", "virtio-mem-pci,id=vm0,memdev=vmem0,block-size=2M,requested-size=0",
             "-qmp", "unix:/tmp/l2-qmp.sock,server=on,wait=off",
             "-kernel", "/qemu/vmlinux", "-initrd", "/qemu/l2-initramfs.cpio",
             "-append", L2_CMDLINE] + extra)


def parse_args(argv):
    o = {"qemu": "/usr/bin/qemu-system-x86_64", "variant": "stock", "name": "stock", "cache": None,
         "driver": None, "preload": None, "edu_dma": None, "l2_args": [], "driver_args": "",
         "timeout": 1500.0, "tap_skip": False}
    it = iter(argv)
    for a in it:
        key = a.lstrip("-").replace("-", "_")
        if key == "tap_skip":
            o["tap_skip"] = True
        elif key == "l2_arg":
            o["l2_args"].append(next(it))
        elif key in o:
            o[key] = float(next(it)) if key == "timeout" else next(it)
        else:
            rv.usage(f"run-qemu.py: unknown argument {a!r}")
    for k in ("cache", "driver", "preload", "edu_dma"):
        if not o[k]:
            sys.stderr.write(f"run-qemu.py: --{k.replace('_', '-')} is required\n{__doc__}")
            sys.exit(2)
    return o


def libraries(path):
    """The shared objects ldd resolves for path, and the program interpreter."""
    r = rv.run(["ldd", path])
    if r.returncode != 0:
        raise rv.Fail(f"ldd {path} failed:\n{r.stdout}")
    libs = []
    for ln in r.stdout.splitlines():
        m = re.search(r"=>\s*(/\S+)", ln) or re.match(r"\s*(/\S+)\s+\(", ln)
        if m:
            libs.append(m.group(1))
        elif "=>" in ln and "not found" in ln:
            raise rv.Fail(f"ldd {path}: {ln.strip()}")
    return libs


def extract_vmlinux(vmlinuz, out):
    """The kernel ELF inside a bzImage: its payload (xz in Debian's 6.1), decompressed."""
    if os.path.exists(out):
        return
    with open(vmlinuz, "rb") as f:
        img = f.read()
    setup_sects = img[0x1f1] or 4
    off, length = struct.unpack_from("<II", img, 0x248)
    payload = img[(setup_sects + 1) * 512 + off:][:length]
    if payload.startswith(b"\xfd7zXZ\x00"):
        data = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(payload)
    elif payload.startswith(b"\x1f\x8b"):
        import zlib
        data = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(payload)
    else:
        r = subprocess.run(["zstd", "-dc"], input=payload, stdout=subprocess.PIPE)
        if r.returncode != 0:
            raise rv.Fail(f"{vmlinuz}: payload starts {payload[:6].hex()}, not xz, gzip or zstd")
        data = r.stdout
    if not data.startswith(b"\x7fELF"):
        raise rv.Fail(f"{vmlinuz}: the decompressed payload is not an ELF image")
    with open(out + ".tmp", "wb") as f:
        f.write(data)
    os.replace(out + ".tmp", out)


def put(src, root, dest=None):
    """Copy src (symlinks followed) to root + dest (default: its own path)."""
    target = os.path.join(root, (dest or src).lstrip("/"))
    os.makedirs(os.path.dirname(target), exist_ok=True)
    shutil.copy(src, target)


def build_bundle(o, meta, work, vmlinux):
    """The tree l1drive needs in L1: /usr (QEMU, its libraries, module, firmware), /lib64 (the
    program interpreter), /qemu (kernel, L2 initramfs, vfio_count.so, the command line)."""
    b = os.path.join(work, "bundle")
    shutil.rmtree(b, ignore_errors=True)
    qemu = os.path.abspath(o["qemu"])
    if not os.access(qemu, os.X_OK):
        raise rv.Fail(f"--qemu {qemu} is not an executable")
    put(qemu, b, "/usr/bin/qemu-system-x86_64")
    objs = [qemu]
    accel = os.path.join(os.path.dirname(qemu), "..", "lib", "x86_64-linux-gnu", "qemu", "accel-tcg-x86_64.so")
    if os.path.exists(accel):  # Debian's build: TCG is a module
        put(accel, b, "/usr/lib/x86_64-linux-gnu/qemu/accel-tcg-x86_64.so")
        objs.append(accel)
    for obj in objs:
        for lib in libraries(obj):
            if re.search(r"/ld-linux[^/]*$", lib):
                put(lib, b, "/lib64/" + os.path.basename(lib))
            else:
                put(lib, b, "/usr/lib/x86_64-linux-gnu/" + os.path.basename(lib))
    for fw in FIRMWARE:
        if not os.path.exists(fw):
            raise rv.Fail(f"firmware {fw} missing (packages seabios, qemu-system-data)")
        put(fw, b)
    put(vmlinux, b, "/qemu/vmlinux")
    put(o["preload"], b, "/qemu/vfio_count.so")
    # L2's initramfs: run-vm.py's builder with L2's /init, virtio_mem and edu_dma.
    l2o = {"init": os.path.join(HERE, "l2-init.sh"), "files": [],
           "progs": [{"path": o["edu_dma"], "file": "edu_dma", "name": "edu_dma", "args": ""}]}
    l2meta = dict(meta, modules=rv.collect_modules(meta["moddir"], L2_MODULES)[0])
    image = rv.build_initramfs(l2o, l2meta, os.path.join(work, "l2"))
    put(image, b, "/qemu/l2-initramfs.cpio")
    cmd = l2_command(o["l2_args"])
    with open(os.path.join(b, "qemu", "l2-command"), "w") as f:
        f.write("".join(a + "\n" for a in cmd))
    with open(os.path.join(work, "l2-command"), "w") as f:
        f.write(shlex.join(cmd) + "\n")
    return b, cmd


def l1_memory():
    """L1 holds the L2 QEMU's memory (1 GiB and what is plugged, all pinned) and the initramfs:
    it boots with L1_MEMORY instead of run-vm.py's 4 GiB (whose -m is in QEMU_ARGS, or in what
    machine_args() returns where run-vm.py boots NUMA nodes)."""
    def more(args):
        args = list(args)
        if "-m" in args:
            args[args.index("-m") + 1] = L1_MEMORY
        return args
    if hasattr(rv, "machine_args"):
        base = rv.machine_args
        rv.machine_args = lambda numa: more(base(numa))
    rv.QEMU_ARGS = more(rv.QEMU_ARGS)


def main():
    o = parse_args(sys.argv[1:])
    tap = rv.Tap()
    cache = os.path.abspath(o["cache"])
    work = os.path.join(os.path.dirname(cache), o["name"])
    os.makedirs(work, exist_ok=True)
    t0 = time.monotonic()
    try:
        with rv.CacheLock(cache):
            rv.ensure_packages(tap)
            meta = rv.ensure_kernel(tap, cache, rv.MODULES + L2_MODULES)
            vmlinux = os.path.join(os.path.dirname(meta["vmlinuz"]), "vmlinux")
            extract_vmlinux(meta["vmlinuz"], vmlinux)
        bundle, cmd = build_bundle(o, meta, work, vmlinux)
        driver_args = (f"--cmd /qemu/l2-command --preload /qemu/vfio_count.so --variant {o['variant']} "
                       + o["driver_args"])
        l1 = rv.parse_args(["--init", os.path.join(HERE, "..", "vm", "init.sh"), "--cache", cache,
                            "--name", o["name"], "--timeout", str(o["timeout"]),
                            "--param", "mitigations=off",
                            "--prog", o["driver"], "--args", driver_args,
                            "--file", os.path.join(bundle, "usr") + ":/usr",
                            "--file", os.path.join(bundle, "lib64") + ":/lib64",
                            "--file", os.path.join(bundle, "qemu") + ":/qemu"])
        l1meta = dict(meta, modules=rv.collect_modules(meta["moddir"], rv.MODULES)[0])
        image = rv.build_initramfs(l1, l1meta, work)
        shutil.rmtree(bundle, ignore_errors=True)
        tap.diag(f"{o['name']}: VMM {o['qemu']} ({o['variant']}), kernel {meta['package']}, L1 initramfs "
                 f"{os.path.getsize(image) / 2**20:.0f} MiB, ready in {time.monotonic() - t0:.1f} s")
        tap.diag(f"L2: {shlex.join(cmd)}")
    except (rv.Skip, rv.Fail) as e:
        return rv.setup_failed(e, tap, o["tap_skip"], "run-qemu.py")
    l1_memory()
    rv.boot(l1, l1meta, image, work, tap)
    return tap.done()


if __name__ == "__main__":
    sys.exit(main())
