#!/bin/bash
# tests/qemu/run-patched.sh - the `qemu` suite's rdm variant: build Debian's QEMU 7.2 with the
# patch series of integrations/qemu (build-qemu.sh, cached in WORKDIR: a second run rebuilds only
# what changed), then run the nested scenarios with it (run-qemu.py, whose arguments follow).
#
#   run-patched.sh WORKDIR RUN-QEMU-ARGS...
#
# Prints TAP: a failed build is one failing test line with the end of its log.
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
workdir=$1
shift
mkdir -p "$workdir"
log=$workdir/build-qemu.log
echo "# building the patched QEMU: integrations/qemu/build-qemu.sh $workdir (log: $log)"
start=$(date +%s)
if ! nice bash "$root/integrations/qemu/build-qemu.sh" "$workdir" >"$log" 2>&1; then
	tail -n 30 "$log" | sed 's/^/# /'
	echo "not ok 1 - build the patched QEMU (integrations/qemu/build-qemu.sh; log $log)"
	echo "1..1"
	exit 1
fi
echo "# built in $(($(date +%s) - start)) s: $workdir/qemu-system-x86_64"
# The binary links librdm.so from the prefix build-qemu.sh installed it into.
libdir=$(dirname "$(find "$workdir/rdm-prefix" -name 'librdm.so*' -print -quit)")
export LD_LIBRARY_PATH=$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
exec python3 "$here/run-qemu.py" "$@" --qemu "$workdir/qemu-system-x86_64"
