#!/usr/bin/env bash
# Build rdm and run every test suite (unit, stress, vm).
#   scripts/run-tests.sh                      normal build in build/
#   scripts/run-tests.sh address,undefined    ASan+UBSan build in build-address-undefined/
#   scripts/run-tests.sh thread               TSan build in build-thread/
# Under CI=true warnings are errors. Prints meson's summary and a closing
# "tests: N passed, N failed, N skipped" line.
set -euo pipefail
cd "$(dirname "$0")/.."

sanitize=${1:-none}
bash scripts/deps.sh build test

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
exit $status
