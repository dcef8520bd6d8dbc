#!/usr/bin/env bash
# Install the Debian packages rdm needs, if any is missing.
#   scripts/deps.sh build   compilers, meson, liburcu, libnuma, jemalloc, Google Benchmark, ck
#   scripts/deps.sh main    build + gnuplot and the benchmark tools (compare.py and its scipy)
#   scripts/deps.sh test    build + what the real-kernel guest tests need (QEMU, busybox, cpio)
#                           and the model checker of models/ (spin)
#   scripts/deps.sh fuzz    build + clang, its libFuzzer/sanitizer runtimes and llvm-symbolizer
#   scripts/deps.sh qemu    build + what integrations/qemu/build-qemu.sh needs to build Debian's
#                           QEMU with librdm (glib, pixman, dpkg-source, git) and its smoke test
# DPDK (libdpdk-dev) is optional: installed when available, for the ring benchmark's rte_ring peer.
set -euo pipefail

want=(gcc g++ meson ninja-build pkg-config python3 liburcu-dev libnuma-dev libjemalloc-dev
      libbenchmark-dev libck-dev)
optional=()
for what in "$@"; do
	case "$what" in
	build) ;;
	main) want+=(gnuplot-nox libbenchmark-tools python3-scipy); optional+=(libdpdk-dev) ;;
	test) want+=(qemu-system-x86 busybox-static cpio spin) ;;
	fuzz) want+=(clang libclang-rt-dev llvm) ;;
	qemu) want+=(libglib2.0-dev libpixman-1-dev dpkg-dev git xz-utils busybox-static cpio) ;;
	*) echo "deps.sh: unknown set '$what' (build, main, test, fuzz or qemu)" >&2; exit 2 ;;
	esac
done

missing=()
for p in "${want[@]}" "${optional[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
	echo "deps.sh: missing packages: ${missing[*]}; run as root or install them" >&2
	exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
required=()
for p in "${missing[@]}"; do
	case " ${optional[*]} " in *" $p "*) ;; *) required+=("$p") ;; esac
done
if [ ${#required[@]} -gt 0 ]; then
	apt-get install -y -qq --no-install-recommends "${required[@]}" >/dev/null
fi
for p in "${optional[@]}"; do
	case " ${missing[*]} " in
	*" $p "*) apt-get install -y -qq --no-install-recommends "$p" >/dev/null ||
		echo "deps.sh: optional package $p not installed; continuing without it" >&2 ;;
	esac
done
