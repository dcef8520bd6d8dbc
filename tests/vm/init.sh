#!/bin/busybox sh
# tests/vm/init.sh - the guest's /init: load vfio, bind edu to vfio-pci, run the guest programs.
#
# Everything the host reads is a line starting with "@@RDM-VM " (see run-vm.py):
#   @@RDM-VM BOOTED uptime=<s>
#   @@RDM-VM NUMA online=<list> node<i>_cpus=<list> node<i>_mem_kb=<n>...   (on rdm_numa=N)
#   @@RDM-VM READY uptime=<s> bdf=<bdf> group=<n> limit=<n>
#   @@RDM-VM BEGIN <name>            the program's stdout+stderr follow
#   @@RDM-VM END <name> rc=<rc> secs=<s>
#   @@RDM-VM DMESG BEGIN / END       the kernel log (on rdm_dmesg=1, or after a failure)
#   @@RDM-VM FAIL <what>             setup failed; nothing else runs
#   @@RDM-VM DONE uptime=<s>
# Kernel command-line words key=value arrive here as environment variables and are passed on to
# the programs; dma_entry_limit=N becomes vfio_iommu_type1's parameter.
. /etc/rdm-vm/setup.sh # busybox, /proc /sys /dev /tmp, kernel messages off the console, up()

dump_dmesg() {
	echo "@@RDM-VM DMESG BEGIN"
	dmesg
	echo "@@RDM-VM DMESG END"
}
finish() {
	[ "${rdm_dmesg:-0}" = 1 ] && dump_dmesg
	echo "@@RDM-VM DONE uptime=$(up)"
	sync
	poweroff -f
}
fail() {
	echo "@@RDM-VM FAIL $*"
	dump_dmesg
	rdm_dmesg=0
	finish
}

echo "@@RDM-VM BOOTED uptime=$(up)"

# The NUMA nodes the kernel sees (run-vm.py --numa N boots N of them and checks this line).
if [ -n "$rdm_numa" ]; then
	line="online=$(cat /sys/devices/system/node/online 2>/dev/null || echo none)"
	for n in /sys/devices/system/node/node[0-9]*; do
		[ -d "$n" ] || continue
		i=${n##*/node}
		line="$line node${i}_cpus=$(cat "$n/cpulist") node${i}_mem_kb=$(awk '/MemTotal/ { print $4 }' "$n/meminfo")"
	done
	echo "@@RDM-VM NUMA $line"
fi

# Modules, in dependency order (run-vm.py wrote the list).
while read -r ko; do
	params=
	case "$ko" in
	vfio_iommu_type1.ko) [ -n "$dma_entry_limit" ] && params="dma_entry_limit=$dma_entry_limit" ;;
	esac
	insmod "/lib/modules/$ko" $params || fail "insmod $ko $params"
done </etc/rdm-vm/modules

# edu: vendor 0x1234, device 0x11e8; no host driver claims it.
bdf=
for d in /sys/bus/pci/devices/*; do
	if [ "$(cat "$d/vendor")" = 0x1234 ] && [ "$(cat "$d/device")" = 0x11e8 ]; then
		bdf=${d##*/}
	fi
done
[ -n "$bdf" ] || fail "no edu device (1234:11e8) on the PCI bus"
[ -e "/sys/bus/pci/devices/$bdf/iommu_group" ] || fail "edu $bdf has no IOMMU group (is intel_iommu=on?)"
echo vfio-pci >"/sys/bus/pci/devices/$bdf/driver_override" || fail "driver_override of $bdf"
echo "$bdf" >/sys/bus/pci/drivers_probe || fail "drivers_probe $bdf"
driver=$(readlink "/sys/bus/pci/devices/$bdf/driver")
[ "${driver##*/}" = vfio-pci ] || fail "edu $bdf bound to '${driver##*/}', not vfio-pci"
group=$(readlink "/sys/bus/pci/devices/$bdf/iommu_group")
group=${group##*/}
[ -c "/dev/vfio/$group" ] || fail "/dev/vfio/$group missing"
limit=$(cat /sys/module/vfio_iommu_type1/parameters/dma_entry_limit)
export RDM_VM_BDF="$bdf" RDM_VM_GROUP="$group" RDM_VM_LIMIT="$limit"
echo "@@RDM-VM READY uptime=$(up) bdf=$bdf group=$group limit=$limit"

# Programs: one per line, "name<TAB>command line" (run-vm.py wrote the list).
cd /tmp
tab=$(printf '\t')
while IFS="$tab" read -r name cmd; do
	echo "@@RDM-VM BEGIN $name"
	t0=$(up)
	# shellcheck disable=SC2086 # the command line is split into words on purpose
	/bin/sh -c "exec $cmd" </dev/null 2>&1
	rc=$?
	echo "@@RDM-VM END $name rc=$rc secs=$(awk -v a="$t0" -v b="$(up)" 'BEGIN { printf "%.2f", b - a }')"
done </etc/rdm-vm/programs

finish
