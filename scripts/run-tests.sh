#!/usr/bin/env bash
# Build rdm and run every test suite (unit, stress, numa, vm, fuzz).
#   scripts/run-tests.sh                      normal build in build/, then the clang
#                                             fuzz build in build-fuzz/ (suite fuzz)
#   scripts/run-tests.sh address,undefined    ASan+UBSan build in build-address-undefined/
#   scripts/run-tests.sh thread               TSan build in build-thread/
# Under CI=true warnings are errors. Prints meson's summary and a closing
# "tests[...]: N passed, N failed, N skipped" line per build.
# RDM_FUZZ_SECONDS (default 60) is how long each fuzz target runs.
set -euo pipefail
cd "$(dirname "$0")/.."

sanitize=${1:-none}
if [ "$sanitize" = none ]; then
	bash scripts/deps.sh build test fuzz
else
	bash scripts/deps.sh build test
fi

if [ "$sanitize" = none ]; then
	dir=build
else
	dir=build-${sanitize//,/-}
fi
opts=(-Db_sanitize="$sanitize")
[ "$sanitize" != none ] && opts+=(-Db_lundef=false)
[ "${CI:-}" = true ] && opts+=(-Dwerror=true)

# Configure DIR with the given options: an existing meson build directory
# is reconfigured; anything else under that name (left empty or half made
# by an interrupted setup) is removed and set up afresh.
configure() {
	local d=$1
	shift
	if [ -f "$d/meson-private/coredata.dat" ]; then
		meson configure "$d" "$@" >/dev/null
	else
		rm -rf "$d"
		meson setup "$d" "$@" >/dev/null
	fi
}

configure "$dir" "${opts[@]}"
ninja -C "$dir"

status=0
meson test -C "$dir" --print-errorlogs --num-processes 2 || status=$?
python3 scripts/test-summary.py "$dir/meson-logs/testlog.json" "tests[$sanitize]"

# The libFuzzer targets (tests/fuzz): a clang build of the whole project with
# ASan+UBSan; only its fuzz suite runs (the other suites ran above).
if [ "$sanitize" = none ]; then
	fopts=(-Db_sanitize=address,undefined -Db_lundef=false -Dfuzz=enabled -Dvm_tests=disabled)
	[ "${CI:-}" = true ] && fopts+=(-Dwerror=true)
	CC=clang CXX=clang++ configure build-fuzz "${fopts[@]}"
	ninja -C build-fuzz
	meson test -C build-fuzz --suite fuzz --print-errorlogs --num-processes 2 || status=1
	python3 scripts/test-summary.py build-fuzz/meson-logs/testlog.json "tests[fuzz]"
fi
exit $status
