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

if [ -d "$dir" ]; then
	meson configure "$dir" "${opts[@]}" >/dev/null
else
	meson setup "$dir" "${opts[@]}" >/dev/null
fi
ninja -C "$dir"

status=0
meson test -C "$dir" --print-errorlogs --num-processes 2 || status=$?
python3 scripts/test-summary.py "$dir/meson-logs/testlog.json" "tests[$sanitize]"

# The libFuzzer targets (tests/fuzz): a clang build of the whole project with
# ASan+UBSan; only its fuzz suite runs (the other suites ran above).
if [ "$sanitize" = none ]; then
	fopts=(-Db_sanitize=address,undefined -Db_lundef=false -Dfuzz=enabled -Dvm_tests=disabled)
	[ "${CI:-}" = true ] && fopts+=(-Dwerror=true)
	if [ -d build-fuzz ]; then
		meson configure build-fuzz "${fopts[@]}" >/dev/null
	else
		CC=clang CXX=clang++ meson setup build-fuzz "${fopts[@]}" >/dev/null
	fi
	ninja -C build-fuzz
	meson test -C build-fuzz --suite fuzz --print-errorlogs --num-processes 2 || status=1
	python3 scripts/test-summary.py build-fuzz/meson-logs/testlog.json "tests[fuzz]"
fi
exit $status
