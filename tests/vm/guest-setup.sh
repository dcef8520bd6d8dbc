# tests/vm/guest-setup.sh - sourced first by every guest's /init (tests/vm/init.sh, and L2's
# tests/qemu/l2-init.sh); run-vm.py puts it at /etc/rdm-vm/setup.sh. Busybox's applets, the
# kernel's filesystems, and kernel messages off the console so they cannot split the programs'
# lines (programs read the log from /dev/kmsg).
/bin/busybox mkdir -p /proc /sys /dev /tmp /usr/bin /usr/sbin /sbin
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
dmesg -n 1

up() { cut -d' ' -f1 /proc/uptime; }
