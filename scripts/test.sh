#!/usr/bin/env bash
# Builds and runs the whole test suite twice: a normal build with warnings as errors (then
# its Debian package is built, installed, tried and removed: scripts/test-package.sh),
# then an AddressSanitizer + UndefinedBehaviorSanitizer build; then the in-process tests
# (label unit: broker, client and data-plane threads, shm readers/writers as threads)
# under ThreadSanitizer, with tests/tsan.supp for the uninstrumented system libraries;
# then the libFuzzer targets of tests/fuzz (clang, ASan + UBSan), each for a bounded time
# (PLH_FUZZ_SECONDS, default 60; two at a time) on a copy of its seed corpus plus its
# regression inputs. PLH_CI_FUZZ=0 leaves the fuzz stage out of `all`.
# Usage: scripts/test.sh [normal|asan|tsan|fuzz|all]   (default all)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
which="${1:-all}"
jobs=$(nproc)

# Line tables only (-g1): file:line in every sanitizer report and backtrace, at a quarter
# less compile time than full debug information. Sanitizer builds use -O1.

run_suite() {
  local dir=$1 opt=$2; shift 2
  cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPLH_WERROR=ON \
    "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=$opt -g1 -DNDEBUG" "-DCMAKE_C_FLAGS_RELWITHDEBINFO=$opt -g1 -DNDEBUG" "$@" >/dev/null
  cmake --build "$dir" -j"$jobs"
  ctest --test-dir "$dir" -j"$jobs" --output-on-failure --timeout 180
}

if [ "$which" = normal ] || [ "$which" = all ]; then
  echo "== normal build =="
  run_suite build -O2 -DCMAKE_INSTALL_PREFIX=/usr
  echo "== Debian package (cpack, dpkg -i, installed tools, dpkg -r) =="
  bash scripts/test-package.sh build
fi
if [ "$which" = asan ] || [ "$which" = all ]; then
  echo "== ASan + UBSan build =="
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    run_suite build-asan -O1 -DPLH_SANITIZE=ON -DPLH_BUILD_BENCH=OFF
fi
if [ "$which" = tsan ] || [ "$which" = all ]; then
  echo "== ThreadSanitizer build (unit tests) =="
  cmake -S . -B build-tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPLH_WERROR=ON -DPLH_TSAN=ON -DPLH_BUILD_BENCH=OFF \
    "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 -g1 -DNDEBUG" "-DCMAKE_C_FLAGS_RELWITHDEBINFO=-O1 -g1 -DNDEBUG" >/dev/null
  cmake --build build-tsan -j"$jobs" --target plh-unit-tests
  TSAN_OPTIONS="suppressions=$PWD/tests/tsan.supp halt_on_error=1" \
    ctest --test-dir build-tsan -L unit -j"$jobs" --output-on-failure --timeout 180
fi
if [ "$which" = fuzz ] || { [ "$which" = all ] && [ "${PLH_CI_FUZZ:-1}" = 1 ]; }; then
  echo "== libFuzzer targets (tests/fuzz) =="
  secs="${PLH_FUZZ_SECONDS:-60}"
  cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPLH_WERROR=ON -DPLH_FUZZ=ON -DPLH_BUILD_TESTS=OFF \
    -DPLH_BUILD_BENCH=OFF -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
    "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 -g1 -DNDEBUG" "-DCMAKE_C_FLAGS_RELWITHDEBINFO=-O1 -g1 -DNDEBUG" >/dev/null
  cmake --build build-fuzz -j"$jobs" --target plh-fuzz-targets
  # Runs on copies (the repository's corpus is never modified); findings are kept in
  # build-fuzz/findings/<target>/ for the report.
  work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
  rm -rf build-fuzz/findings
  targets=()
  for c in tests/fuzz/corpus/*/; do targets+=("$(basename "$c")"); done
  for t in "${targets[@]}"; do
    while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n || true; done
    mkdir -p "$work/$t/corpus" "$work/$t/regressions" "build-fuzz/findings/$t"
    cp -r "tests/fuzz/corpus/$t/." "$work/$t/corpus/"
    [ -d "tests/fuzz/regressions/$t" ] && cp -r "tests/fuzz/regressions/$t/." "$work/$t/regressions/"
    dict=""; [ -f "tests/fuzz/$t.dict" ] && dict="-dict=tests/fuzz/$t.dict"
    # -timeout: an input running over 10 s is a hang; the outer timeout catches a
    # fuzzer that does not stop by itself.
    (
      rc=0
      ASAN_OPTIONS=detect_leaks=1:handle_abort=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
        timeout -k 10 $((secs + 120)) "build-fuzz/bin/plh-fuzz-$t" -max_total_time="$secs" -timeout=10 \
        -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="build-fuzz/findings/$t/" $dict \
        "$work/$t/corpus" "$work/$t/regressions" >"$work/$t.log" 2>&1 || rc=$?
      echo "$rc" >"$work/$t.rc"
    ) &
  done
  wait
  failed=0
  for t in "${targets[@]}"; do
    if [ "$(cat "$work/$t.rc")" = 0 ]; then
      echo "fuzz $t: $(grep -o 'Done [0-9]* runs in [0-9]* second(s)' "$work/$t.log" | tail -1), nothing found"
    else
      failed=1
      echo "fuzz $t: FAILED (exit $(cat "$work/$t.rc"): crash, leak, UB, hang or out of memory); input in build-fuzz/findings/$t/" >&2
      grep -E 'ERROR|SUMMARY|invariant failed|^ *#[0-9]+ ' "$work/$t.log" | head -30 >&2 || tail -30 "$work/$t.log" >&2
    fi
  done
  # Segments a crashed target left behind (/dev/shm/plh.fuzz-PID-*, PID gone).
  for f in /dev/shm/plh.fuzz-*; do
    [ -e "$f" ] || continue
    pid=${f#/dev/shm/plh.fuzz-}; pid=${pid%%-*}
    kill -0 "$pid" 2>/dev/null || rm -f "$f"
  done
  [ "$failed" = 0 ] || exit 1
fi
echo "== all tests passed =="
