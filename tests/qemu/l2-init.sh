#!/bin/busybox sh
# tests/qemu/l2-init.sh - /init of the L2 guest: load virtio_mem, then answer l1drive's commands.
#
# The console (ttyS0, the L2 QEMU's stdio) is the only channel: l1drive writes one command a
# line, every answer is one line starting with "@@L2 ":
#   @@L2 READY uptime=<s> memtotal_kb=<n> online=<policy>
#   online <policy>   -> @@L2 ONLINE <policy>   auto_online_blocks for later plugs: online_movable
#                        or online (the kernel zone), as memhp_default_state= sets it at boot
#   mem               -> @@L2 MEM memtotal_kb=<n> hot_online=<n> movable=<n> normal=<n>
#                        (/proc/meminfo; /sys/devices/system/memory: hotplugged memory blocks
#                        online, and in which zone)
#   dma START END     -> edu_dma find START END: edu DMA into a page of hotplugged memory
#   dmaw PADDR        -> edu_dma write PADDR: edu DMA into memory that was unplugged
#   off               -> power off
. /etc/rdm-vm/setup.sh # tests/vm/guest-setup.sh: busybox, /proc /sys /dev /tmp, dmesg -n 1, up()
stty -echo 2>/dev/null

# Shell builtins only in what l1drive polls (a fork and exec costs much in a nested guest);
# memtotal sets mt.
memtotal() {
	while read -r k mt _; do
		[ "$k" = MemTotal: ] && return
	done </proc/meminfo
}

while read -r ko; do
	insmod "/lib/modules/$ko" || echo "@@L2 FAIL insmod $ko"
done </etc/rdm-vm/modules

memtotal
echo "@@L2 READY uptime=$(up) memtotal_kb=$mt online=$(cat /sys/devices/system/memory/auto_online_blocks)"

while read -r cmd a b; do
	case "$cmd" in
	online)
		echo "$a" >/sys/devices/system/memory/auto_online_blocks
		echo "@@L2 ONLINE $(cat /sys/devices/system/memory/auto_online_blocks)" ;;
	mem)
		# Hotplugged blocks: those at or above 4 GiB, where virtio-mem's region is (1 GiB of
		# boot memory lies below).
		read -r bs </sys/devices/system/memory/block_size_bytes
		hot=0 mov=0 nor=0
		for m in /sys/devices/system/memory/memory*; do
			[ $((${m##*memory} * 0x$bs)) -ge $((1 << 32)) ] || continue
			st= zone=
			{ read -r st <"$m/state"; } 2>/dev/null
			[ "$st" = online ] || continue
			{ read -r zone <"$m/valid_zones"; } 2>/dev/null
			hot=$((hot + 1))
			case "$zone" in
			Movable*) mov=$((mov + 1)) ;;
			*) nor=$((nor + 1)) ;;
			esac
		done
		memtotal
		echo "@@L2 MEM memtotal_kb=$mt hot_online=$hot movable=$mov normal=$nor" ;;
	dma) /tests/edu_dma find "$a" "$b" || echo "@@L2 DMA fail rc=$?" ;;
	dmaw) /tests/edu_dma write "$a" || echo "@@L2 DMAW fail rc=$?" ;;
	off) poweroff -f ;;
	"") ;;
	*) echo "@@L2 ERR unknown command $cmd" ;;
	esac
done
echo "@@L2 EOF"
poweroff -f
