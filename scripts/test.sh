#!/usr/bin/env bash
# Builds and runs the whole test suite twice: a normal build with warnings as errors,
# then an AddressSanitizer + UndefinedBehaviorSanitizer build.
# Usage: scripts/test.sh [normal|asan|all]   (default all)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
which="${1:-all}"
jobs=$(nproc)

run_suite() {
  local dir=$1; shift
  cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPLH_WERROR=ON "$@" >/dev/null
  cmake --build "$dir" -j"$jobs"
  ctest --test-dir "$dir" -j"$jobs" --output-on-failure --timeout 180
}

if [ "$which" = normal ] || [ "$which" = all ]; then
  echo "== normal build =="
  run_suite build
fi
if [ "$which" = asan ] || [ "$which" = all ]; then
  echo "== ASan + UBSan build =="
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    run_suite build-asan -DPLH_SANITIZE=ON -DPLH_BUILD_BENCH=OFF
fi
echo "== all tests passed =="
