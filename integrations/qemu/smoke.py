#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Smoke test of the patched QEMU without VFIO: a guest plugs and unplugs memory.

  integrations/qemu/smoke.py QEMU [DEVICE-PROPS]      e.g. ",rdm=on"

Boots a Debian kernel (fetched once with `apt-get download`, cached in
build/qemu/smoke/) under TCG with a 1 GiB virtio-mem device, sets
requested-size through QMP to 256, 512, 128, 0, 384, 0 MiB, and checks after
each step that the device's size and the guest's MemTotal followed and that,
at 0, no memory of the device's backend is resident any more (with rdm=on it
is freed by librdm's release callback). Then, with 256 MiB plugged, a
system_reset must leave the device unplugged, with nothing of its backend
resident. Exits 0 when every check passed.
"""
import glob, json, os, re, shutil, socket, subprocess, sys, tempfile, threading, time

here = os.path.dirname(os.path.abspath(__file__))
cache = os.path.join(here, "..", "..", "build", "qemu", "smoke")
MODULES = ["virtio_ring", "virtio", "virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio_pci",
           "virtio_mem"]
INIT = """#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in %s; do
  insmod /lib/modules/$m.ko || echo "INSMOD FAIL $m"
done
echo GUEST-READY
while true; do
  echo "MEMTOTAL $(grep MemTotal /proc/meminfo | tr -s ' ' | cut -d' ' -f2)"
  sleep 0.5
done
""" % " ".join(MODULES)


def guest_files():
    """The kernel and an initramfs with busybox and the virtio-mem modules."""
    os.makedirs(cache, exist_ok=True)
    kernel, initrd = os.path.join(cache, "vmlinuz"), os.path.join(cache, "initrd.cpio")
    if os.path.exists(kernel) and os.path.exists(initrd):
        return kernel, initrd
    dep = subprocess.run(["apt-cache", "depends", "linux-image-amd64"], capture_output=True, text=True)
    pkg = re.search(r"Depends: (linux-image-\S+-amd64)", dep.stdout).group(1)
    dl = os.path.join(cache, "download")
    os.makedirs(dl, exist_ok=True)
    os.chmod(dl, 0o777)
    subprocess.run(["apt-get", "download", "-qq", pkg], cwd=dl, check=True)
    x = os.path.join(cache, "x")
    subprocess.run(["dpkg", "-x", glob.glob(os.path.join(dl, pkg + "_*.deb"))[0], x], check=True)
    root = tempfile.mkdtemp(dir=cache)
    for d in ("bin", "lib/modules", "proc", "sys", "dev"):
        os.makedirs(os.path.join(root, d))
    shutil.copy("/bin/busybox", os.path.join(root, "bin"))
    for m in MODULES:
        shutil.copy(glob.glob(os.path.join(x, "lib/modules/*/kernel/drivers/virtio", m + ".ko"))[0],
                    os.path.join(root, "lib/modules"))
    with open(os.path.join(root, "init"), "w") as f:
        f.write(INIT)
    os.chmod(os.path.join(root, "init"), 0o755)
    names = subprocess.run(["find", "."], cwd=root, capture_output=True).stdout
    with open(initrd + ".tmp", "wb") as out:
        subprocess.run(["cpio", "-o", "-H", "newc", "-R", "0:0", "--quiet"], cwd=root, input=names,
                       stdout=out, check=True)
    shutil.copy(glob.glob(os.path.join(x, "boot", "vmlinuz-*"))[0], kernel)
    os.rename(initrd + ".tmp", initrd)
    shutil.rmtree(root)
    shutil.rmtree(x)
    shutil.rmtree(dl)
    return kernel, initrd


qemu = sys.argv[1]
extra = sys.argv[2:]
kernel, initrd = guest_files()
sockdir = tempfile.mkdtemp()
sock = os.path.join(sockdir, "qmp.sock")
cmd = [qemu, "-L", "/usr/share/seabios", "-L", "/usr/share/qemu", "-accel", "tcg", "-M", "q35",
       "-m", "512M,maxmem=4G", "-smp", "1", "-nographic", "-nic", "none",
       "-object", "memory-backend-ram,id=vmem0,size=1G",
       "-device", "virtio-mem-pci,id=vm0,memdev=vmem0,block-size=2M,requested-size=0" + "".join(extra),
       "-kernel", kernel, "-initrd", initrd,
       "-append", "console=ttyS0 memhp_default_state=online_movable quiet",
       "-qmp", f"unix:{sock},server=on,wait=off"]
p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
memtotal = [0]
ready = threading.Event()
log = []
def reader():
    for line in p.stdout:
        log.append(line)
        m = re.search(r"MEMTOTAL (\d+)", line)
        if m:
            memtotal[0] = int(m.group(1))
        if "GUEST-READY" in line:
            ready.set()
        if "insmod" in line.lower() or "virtio" in line or "Unknown symbol" in line or "qemu-system" in line or "Call Trace" in line:
            print("GUEST:", line.rstrip(), flush=True)
threading.Thread(target=reader, daemon=True).start()
for _ in range(100):
    if os.path.exists(sock):
        break
    time.sleep(0.1)
s = socket.socket(socket.AF_UNIX); s.connect(sock); f = s.makefile("rw")
def vmem_rss_kb(pid):
    """Resident kB of the 1 GiB virtio-mem backend mapping."""
    cur = None
    with open(f"/proc/{pid}/smaps") as sm:
        for line in sm:
            if line.startswith("Size:"):
                cur = int(line.split()[1])
            elif line.startswith("Rss:") and cur == 1 << 20:
                return int(line.split()[1])
    return -1
def qmp(c, **a):
    f.write(json.dumps({"execute": c, "arguments": a}) + "\n"); f.flush()
    while True:
        r = json.loads(f.readline())
        if "return" in r or "error" in r:
            return r
json.loads(f.readline()); qmp("qmp_capabilities")
t0 = time.time()
if not ready.wait(300):
    print("no GUEST-READY"); print("".join(log[-30:])); p.kill(); sys.exit(1)
print(f"booted in {time.time()-t0:.1f} s", flush=True)
base = 0
time.sleep(2); base = memtotal[0]
print("base MemTotal kB", base)
ok = True
for req in [256, 512, 128, 0, 384, 0]:
    qmp("qom-set", path="/machine/peripheral/vm0", property="requested-size", value=req << 20)
    t = time.time()
    while time.time() - t < 60:
        size = qmp("qom-get", path="/machine/peripheral/vm0", property="size")["return"]
        if size == req << 20:
            break
        time.sleep(0.2)
    time.sleep(4)
    delta = (memtotal[0] - base) // 1024
    rss = vmem_rss_kb(p.pid)
    good = size == req << 20 and delta == req and (req != 0 or rss == 0)
    ok &= good
    print(f"requested {req} MiB: device size {size >> 20} MiB, guest MemTotal +{delta} MiB, backend RSS {rss} kB, in {time.time()-t:.1f} s {'ok' if good else 'FAIL'}", flush=True)
    if not good:
        print("".join(l for l in log[-40:] if "MEMTOTAL" not in l))
        break
# A reset with memory plugged unplugs everything and frees it.
qmp("qom-set", path="/machine/peripheral/vm0", property="requested-size", value=0)
qmp("qom-set", path="/machine/peripheral/vm0", property="requested-size", value=256 << 20)
t = time.time()
while time.time() - t < 60:
    if qmp("qom-get", path="/machine/peripheral/vm0", property="size")["return"] == 256 << 20:
        break
    time.sleep(0.2)
qmp("system_reset")
time.sleep(1)
size = qmp("qom-get", path="/machine/peripheral/vm0", property="size")["return"]
rss = vmem_rss_kb(p.pid)
good = size == 0 and rss == 0
ok &= good
print(f"reset with 256 MiB plugged: device size {size >> 20} MiB, backend RSS {rss} kB {'ok' if good else 'FAIL'}")
qmp("quit"); p.wait(30)
shutil.rmtree(sockdir, ignore_errors=True)
print("RESULT", "ok" if ok else "FAIL")
sys.exit(0 if ok else 1)
