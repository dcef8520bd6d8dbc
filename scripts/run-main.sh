#!/usr/bin/env bash
# Build everything and run the main job: rdm-replay compares rdm's map
# policies with QEMU's, Cloud Hypervisor's and naive strategies (and the
# offline lower bound) on the shipped virtio-mem traces and the built-in
# workloads (--workload all), on the embedded sim backend. Extra arguments go to
# rdm-replay; the table goes to stdout, out/replay.json and out/replay.svg beside it.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/deps.sh build main
# A directory named build that meson did not finish setting up is made afresh.
if [ ! -f build/meson-private/coredata.dat ]; then
	rm -rf build
	meson setup build >/dev/null
fi
ninja -C build
mkdir -p out
exec build/tools/rdm-replay --json out/replay.json --plot out/replay.svg --workload all "$@" data/traces/*.csv
