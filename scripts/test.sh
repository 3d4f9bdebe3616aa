#!/usr/bin/env bash
# Builds and runs the whole test suite twice: a normal build with warnings as errors,
# then an AddressSanitizer + UndefinedBehaviorSanitizer build; then the in-process tests
# (label unit: broker, client and data-plane threads, shm readers/writers as threads)
# under ThreadSanitizer, with tests/tsan.supp for the uninstrumented system libraries.
# Usage: scripts/test.sh [normal|asan|tsan|all]   (default all)
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
if [ "$which" = tsan ] || [ "$which" = all ]; then
  echo "== ThreadSanitizer build (unit tests) =="
  cmake -S . -B build-tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPLH_WERROR=ON -DPLH_TSAN=ON -DPLH_BUILD_BENCH=OFF >/dev/null
  cmake --build build-tsan -j"$jobs" --target plh-unit-tests
  TSAN_OPTIONS="suppressions=$PWD/tests/tsan.supp halt_on_error=1" \
    ctest --test-dir build-tsan -L unit -j"$jobs" --output-on-failure --timeout 180
fi
echo "== all tests passed =="
