#!/usr/bin/env bash
# Shared-memory speed, side by side in one run:
#   1. iceoryx 2.0.3 (Debian) iceperf, C++ API, 64 B / 4 KiB / 1 MiB   (round trip / 2, average)
#   2. bare futex and spin ping-pong between two processes over a shared page (baseline)
#   3. memcpy bandwidth for 1 MiB buffers
#   4. the plh shm library (plh::shm::Writer/Reader): one-way latency and throughput
#   5. the CLI: seq -f '%041g' 1000000 | plh-shm write ... ; plh-shm read ... | cmp
# and prints one table (also written to bench/results/shm-<UTC date>.txt).
#
# Usage: bench/run_shm_bench.sh [--quick] [--no-results] [--skip ice,futex,memcpy,lib,cli]
#   --quick       fewer iterations (a smoke run; numbers are noisier)
#   --no-results  do not write bench/results/shm-<date>.txt
#   --skip LIST   leave out some parts
# Environment: PLH_BENCH_BUILD (default <repo>/build-bench), CPU_A / CPU_B (default 0 / 1).
#
# Pinning: the two communicating processes run on different CPUs (CPU_A, CPU_B) with
# sched_setaffinity inside the bench programs and `taskset` for iceperf and the CLI
# pipeline; iox-roudi is not pinned (it is idle during the measurement). Blocking modes
# are also measured with both processes on one CPU, because on a VM whose idle vCPU halts
# a cross-CPU wake-up costs a trip through the hypervisor.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${PLH_BENCH_BUILD:-$ROOT/build-bench}
CPU_A=${CPU_A:-0}
CPU_B=${CPU_B:-1}
QUICK=0
WRITE_RESULTS=1
SKIP=""
while [ $# -gt 0 ]; do
  case $1 in
    --quick) QUICK=1 ;;
    --no-results) WRITE_RESULTS=0 ;;
    --skip) SKIP=$2; shift ;;
    -h|--help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "run_shm_bench.sh: error: unknown argument '$1'" >&2; exit 2 ;;
  esac
  shift
done
skipped() { [[ ",$SKIP," == *",$1,"* ]]; }
log() { echo "== $*" >&2; }

if [ "$QUICK" = 1 ]; then
  ICE_N=20000; PP_N=20000; PP_BLOCK_N=5000; LAT_N=20000; LAT_BLOCK_N=5000
  TP64_COUNT=2000000; TP1M_COUNT=1000; MEMCPY_S=0.3; CLI_LINES=1000000
else
  ICE_N=100000; PP_N=100000; PP_BLOCK_N=20000; LAT_N=100000; LAT_BLOCK_N=20000
  TP64_COUNT=20000000; TP1M_COUNT=5000; MEMCPY_S=1; CLI_LINES=1000000
fi

WORK=$(mktemp -d /tmp/plh-shm-bench.XXXXXX)
declare -a OUR_PIDS=()
cleanup() {
  local p
  for p in "${OUR_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${OUR_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -f /dev/shm/plh.plhbench-$$-* 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# key=value field from a RESULT line: field "$line" p50_ns
field() { tr ' ' '\n' <<<"$1" | sed -n "s/^$2=//p" | head -1; }
# nanoseconds -> microseconds with 2 decimals
us() { if [ -z "${1:-}" ] || [ "$1" = "-" ]; then echo "-"; else awk -v n="$1" 'BEGIN{printf "%.2f", n/1000}'; fi; }
declare -A R=()   # results by name

# ---------------------------------------------------------------------------- setup
ensure_packages() {
  local missing=() p
  for p in iceoryx libiceoryx-posh-dev libiceoryx-hoofs-dev libiceoryx-binding-c-dev; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    local sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
    $sudo apt-get install -y --no-install-recommends "${missing[@]}" >&2 ||
      { $sudo apt-get update >&2 && $sudo apt-get install -y --no-install-recommends "${missing[@]}" >&2; }
  fi
}

build_plh() {
  log "building plh bench programs in $BUILD (RelWithDebInfo = -O2 -g)"
  cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPLH_BUILD_TESTS=OFF -DPLH_BUILD_BENCH=ON >/dev/null
  local targets=() f
  for f in "$ROOT"/bench/shm_*.cpp; do targets+=("$(basename "$f" .cpp)"); done
  [ -f "$ROOT/tools/plh-shm/main.cpp" ] && targets+=(plh-shm)
  cmake --build "$BUILD" -j2 --target "${targets[@]}" >&2
}
have() { [ -x "$BUILD/bin/$1" ]; }

# ---------------------------------------------------------------------------- 1. iceoryx
run_iceoryx() {
  local src=/usr/share/doc/libiceoryx-posh-dev/examples/iceperf dir=$WORK/iceperf
  log "iceoryx: building iceperf from $src in $dir"
  cp -r "$src/." "$dir/"
  # Our payload sizes instead of 1 KB..4 MB (the list is then in bytes), and 4 significant digits.
  sed -i -e 's/payloadSizesInKB{1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096}/payloadSizesInKB{64, 4096, 1048576}/' \
         -e 's/payloadSizeInKB \* IcePerfBase::ONE_KILOBYTE/payloadSizeInKB/' \
         -e 's/std::setprecision(2)/std::setprecision(4)/' "$dir/iceperf_leader.cpp"
  grep -q 'payloadSizesInKB{64, 4096, 1048576}' "$dir/iceperf_leader.cpp" ||
    { echo "run_shm_bench.sh: error: could not set iceperf payload sizes" >&2; return 1; }
  cmake -S "$dir" -B "$dir/build" -DCMAKE_BUILD_TYPE=Release >"$dir/cmake.log" 2>&1 ||
    { cat "$dir/cmake.log" >&2; return 1; }
  cmake --build "$dir/build" -j2 >"$dir/build.log" 2>&1 || { tail -30 "$dir/build.log" >&2; return 1; }

  if pgrep -x iox-roudi >/dev/null; then
    echo "run_shm_bench.sh: error: an iox-roudi is already running; stop it first" >&2; return 1
  fi
  iox-roudi -l info >"$WORK/roudi.log" 2>&1 &
  local roudi=$!; OUR_PIDS+=("$roudi")
  local i
  for i in $(seq 100); do grep -q "RouDi is ready for clients" "$WORK/roudi.log" && break; sleep 0.1; done
  grep -q "RouDi is ready for clients" "$WORK/roudi.log" || { cat "$WORK/roudi.log" >&2; return 1; }

  taskset -c "$CPU_B" "$dir/build/iceperf-bench-follower" >"$WORK/follower.log" 2>&1 &
  local follower=$!; OUR_PIDS+=("$follower")
  log "iceoryx: taskset -c $CPU_A iceperf-bench-leader -t iceoryx-cpp-api -n $ICE_N (follower on CPU $CPU_B)"
  timeout 600 taskset -c "$CPU_A" "$dir/build/iceperf-bench-leader" -t iceoryx-cpp-api -n "$ICE_N" \
    >"$WORK/leader.log" 2>&1 || { cat "$WORK/leader.log" >&2; return 1; }
  wait "$follower" || true
  kill "$roudi" 2>/dev/null || true; wait "$roudi" 2>/dev/null || true
  grep -A8 'Measurement Result' "$WORK/leader.log" >&2
  local size lat
  while read -r size lat; do R[ice_$size]=$lat; done < <(awk -F'|' '/^\| +[0-9]+ +\| +[0-9.e+]+ +\|/{gsub(/ /,""); print $2, $3}' "$WORK/leader.log")
}

# ---------------------------------------------------------------------------- 2. futex baseline
run_futex() {
  local line
  log "futex: shm_futex_pingpong --mode spin -n $PP_N --cpu-a $CPU_A --cpu-b $CPU_B"
  line=$("$BUILD/bin/shm_futex_pingpong" --mode spin -n "$PP_N" --cpu-a "$CPU_A" --cpu-b "$CPU_B"); echo "$line" >&2
  R[pp_spin]=$line
  log "futex: shm_futex_pingpong --mode futex -n $PP_BLOCK_N --cpu-a $CPU_A --cpu-b $CPU_B"
  line=$("$BUILD/bin/shm_futex_pingpong" --mode futex -n "$PP_BLOCK_N" --cpu-a "$CPU_A" --cpu-b "$CPU_B"); echo "$line" >&2
  R[pp_futex]=$line
  log "futex: shm_futex_pingpong --mode futex -n $PP_BLOCK_N --cpu-a $CPU_A --cpu-b $CPU_A"
  line=$("$BUILD/bin/shm_futex_pingpong" --mode futex -n "$PP_BLOCK_N" --cpu-a "$CPU_A" --cpu-b "$CPU_A"); echo "$line" >&2
  R[pp_futex_1cpu]=$line
}

# ---------------------------------------------------------------------------- 3. memcpy
run_memcpy() {
  log "memcpy: shm_memcpy_bw --size 1048576 --ring-slots 16 --seconds $MEMCPY_S --cpu $CPU_A"
  local line
  line=$("$BUILD/bin/shm_memcpy_bw" --size 1048576 --ring-slots 16 --seconds "$MEMCPY_S" --cpu "$CPU_A"); echo "$line" >&2
  R[memcpy]=$line
}

# ---------------------------------------------------------------------------- 4. plh shm library
run_lib() {
  have shm_latency && have shm_throughput || { log "plh shm library benchmarks not built (library missing?)"; return 0; }
  local size mode line n cpub
  for mode in busy blocking blocking-nospin blocking-1cpu; do
    for size in 64 4096 1048576; do
      n=$LAT_N; cpub=$CPU_B
      local args=(--mode busy)
      case $mode in
        blocking) args=(--mode blocking); n=$LAT_BLOCK_N ;;
        blocking-nospin) args=(--mode blocking --spin-ns 0); n=$LAT_BLOCK_N ;;
        blocking-1cpu) args=(--mode blocking --spin-ns 0); n=$LAT_BLOCK_N; cpub=$CPU_A ;;
      esac
      local cmd=("$BUILD/bin/shm_latency" --name "plhbench-$$-lat" --size "$size" "${args[@]}" -n "$n"
                 --cpu-a "$CPU_A" --cpu-b "$cpub")
      log "lib: ${cmd[*]#"$BUILD/bin/"}"
      line=$("${cmd[@]}"); echo "$line" >&2
      R[lat_${mode}_$size]=$line
    done
  done
  for mode in busy blocking; do
    local cmd=("$BUILD/bin/shm_throughput" --name "plhbench-$$-tp" --size 64 --slots 4096 --count "$TP64_COUNT"
               --mode "$mode" --cpu-a "$CPU_A" --cpu-b "$CPU_B")
    log "lib: ${cmd[*]#"$BUILD/bin/"}"
    line=$("${cmd[@]}"); echo "$line" >&2
    R[tp64_$mode]=$line
    cmd=("$BUILD/bin/shm_throughput" --name "plhbench-$$-tp" --size 1048576 --slots 16 --count "$TP1M_COUNT"
         --mode "$mode" --cpu-a "$CPU_A" --cpu-b "$CPU_B")
    log "lib: ${cmd[*]#"$BUILD/bin/"}"
    line=$("${cmd[@]}"); echo "$line" >&2
    R[tp1m_$mode]=$line
  done
}

# ---------------------------------------------------------------------------- 5. CLI pipeline
run_cli() {
  have plh-shm || { log "plh-shm not built"; return 0; }
  local shm=$BUILD/bin/plh-shm name=plhbench-$$-cli
  seq -f '%041g' "$CLI_LINES" >"$WORK/in.txt"
  log "cli: $(wc -c <"$WORK/in.txt") bytes, $CLI_LINES lines of 42 bytes"
  "$shm" rm "$name" >/dev/null 2>&1 || true
  log "cli: taskset -c $CPU_A plh-shm write $name --create --policy sequential --slots 1024 --slot-size 65536 < in.txt | taskset -c $CPU_B plh-shm read $name -W 10 > out.txt"
  local t0 t1 rc=0
  t0=$(date +%s%N)
  # The writer's stdout is empty; the pipe only runs both at once (reader waits for the segment with -W).
  taskset -c "$CPU_A" "$shm" write "$name" --create --policy sequential --slots 1024 --slot-size 65536 <"$WORK/in.txt" |
    taskset -c "$CPU_B" "$shm" read "$name" -W 10 >"$WORK/out.txt" || rc=$?
  t1=$(date +%s%N)
  "$shm" rm "$name" >/dev/null 2>&1 || true
  local cmp_result=identical
  cmp -s "$WORK/in.txt" "$WORK/out.txt" || cmp_result="DIFFERENT ($(wc -l <"$WORK/out.txt") lines out)"
  [ "$rc" = 0 ] || cmp_result="$cmp_result, exit $rc"
  R[cli_s]=$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.3f", (b-a)/1e9}')
  R[cli_lps]=$(awk -v a="$t0" -v b="$t1" -v n="$CLI_LINES" 'BEGIN{printf "%.0f", n/((b-a)/1e9)}')
  R[cli_cmp]=$cmp_result
  log "cli: ${R[cli_lps]} lines/s in ${R[cli_s]} s, output $cmp_result"
}

# ---------------------------------------------------------------------------- table
verdict() { awk -v v="$1" -v t="$2" 'BEGIN{ if (v=="" || v=="-") print "n/a"; else if (v+0 >= t+0) print "PASS"; else print "FAIL" }'; }

print_table() {
  local load cpu
  cpu=$(lscpu | sed -n 's/^Model name: *//p' | head -1)
  echo "plh-shm speed — $(date -u '+%Y-%m-%d %H:%M UTC'), plh $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')"
  echo "machine: $cpu, $(nproc) CPUs, kernel $(uname -r), cpuidle $(cat /sys/devices/system/cpu/cpuidle/current_driver 2>/dev/null || echo '?'), load before run: $LOAD_BEFORE"
  echo "pinning: sender/writer on CPU $CPU_A, echo/reader on CPU $CPU_B (\"1 CPU\" rows: both on CPU $CPU_A)"
  echo "command: bench/run_shm_bench.sh${QUICK_FLAG}"
  echo
  echo "One-way latency, microseconds (p50 / p99 of per-message CLOCK_MONOTONIC stamps; avg = round trip / 2 averaged, as iceperf reports)"
  printf '%-44s %12s %12s %12s\n' "" "64 B" "4 KiB" "1 MiB"
  local s row
  lat_row() {  # label key prefix
    local label=$1 key=$2 f=$3 out=() s
    for s in 64 4096 1048576; do
      local l=${R[${key}_$s]:-}
      if [ -z "$l" ]; then out+=("-"); else out+=("$(us "$(field "$l" "${f}p50_ns")")/$(us "$(field "$l" "${f}p99_ns")")"); fi
    done
    printf '%-44s %12s %12s %12s\n' "$label" "${out[@]}"
  }
  avg_row() {  # label key
    local label=$1 key=$2 out=() s
    for s in 64 4096 1048576; do
      local l=${R[${key}_$s]:-}
      if [ -z "$l" ]; then out+=("-"); else out+=("$(us "$(field "$l" rtthalf_mean_ns)")"); fi
    done
    printf '%-44s %12s %12s %12s\n' "$label" "${out[@]}"
  }
  pp_cell() { local l=${R[$1]:-}; [ -z "$l" ] && echo "-" || echo "$(us "$(field "$l" "$2p50_ns")")/$(us "$(field "$l" "$2p99_ns")")"; }
  pp_avg() { local l=${R[$1]:-}; [ -z "$l" ] && echo "-" || us "$(field "$l" rtthalf_mean_ns)"; }
  echo "busy-poll"
  lat_row "  plh shm (Reader busy_poll) p50/p99" lat_busy oneway_
  avg_row "  plh shm  rtt/2 avg" lat_busy
  printf '%-44s %12s %12s %12s\n' "  iceoryx 2.0.3 C++ API (iceperf) rtt/2 avg" "${R[ice_64]:--}" "${R[ice_4096]:--}" "${R[ice_1048576]:--}"
  printf '%-44s %12s %12s %12s\n' "  baseline: spin ping-pong p50/p99" "$(pp_cell pp_spin oneway_)" "(size-free)" ""
  printf '%-44s %12s\n' "  baseline: spin ping-pong rtt/2 avg" "$(pp_avg pp_spin)"
  echo "blocking"
  lat_row "  plh shm (spin 20us, then futex) p50/p99" lat_blocking oneway_
  lat_row "  plh shm (futex only) p50/p99" lat_blocking-nospin oneway_
  lat_row "  plh shm (futex only, 1 CPU) p50/p99" lat_blocking-1cpu oneway_
  printf '%-44s %12s %12s %12s\n' "  baseline: futex ping-pong p50/p99" "$(pp_cell pp_futex oneway_)" "(size-free)" ""
  printf '%-44s %12s\n' "  baseline: futex ping-pong, 1 CPU p50/p99" "$(pp_cell pp_futex_1cpu oneway_)"
  echo
  echo "Throughput (writer copies the payload into the slot, reader copies it out; policy sequential)"
  local mc=${R[memcpy]:-} hot ring half
  hot=$(field "$mc" hot_gbs); ring=$(field "$mc" ring_gbs)
  half=$(awk -v r="${ring:-0}" 'BEGIN{printf "%.2f", r/2}')
  printf '%-44s %14s %14s %22s %6s\n' "" "busy-poll" "blocking" "target" ""
  local b64 k64 b1m k1m
  b64=$(field "${R[tp64_busy]:-}" slots_per_s); k64=$(field "${R[tp64_blocking]:-}" slots_per_s)
  b1m=$(field "${R[tp1m_busy]:-}" gbs); k1m=$(field "${R[tp1m_blocking]:-}" gbs)
  local best64 best1m
  best64=$(awk -v a="${b64:-0}" -v b="${k64:-0}" 'BEGIN{print (a>b)?a:b}')
  best1m=$(awk -v a="${b1m:-0}" -v b="${k1m:-0}" 'BEGIN{print (a>b)?a:b}')
  printf '%-44s %14s %14s %22s %6s\n' "  plh shm 64 B slots, slots/s" "${b64:--}" "${k64:--}" ">= 10000000" \
    "$( [ -n "$b64$k64" ] && verdict "$best64" 10000000 || echo n/a)"
  printf '%-44s %14s %14s %22s %6s\n' "  plh shm 1 MiB slots, GB/s" "${b1m:--}" "${k1m:--}" ">= memcpy/2 = ${half}" \
    "$( [ -n "$b1m$k1m" ] && verdict "$best1m" "$half" || echo n/a)"
  printf '%-44s %14s\n' "  memcpy 1 MiB, GB/s, ring of 16 x 1 MiB" "${ring:--}"
  printf '%-44s %14s\n' "  memcpy 1 MiB, GB/s, hot (same buffers)" "${hot:--}"
  echo
  echo "CLI pipeline: $CLI_LINES lines of 42 bytes (seq -f '%041g'), plh-shm write --create | plh-shm read"
  printf '%-44s %14s %14s %22s %6s\n' "  lines/s" "${R[cli_lps]:--}" "" ">= 3000000" \
    "$( [ -n "${R[cli_lps]:-}" ] && verdict "${R[cli_lps]}" 3000000 || echo n/a)"
  printf '%-44s %14s\n' "  elapsed s" "${R[cli_s]:--}"
  printf '%-44s %14s\n' "  cmp output with input" "${R[cli_cmp]:--}"
  echo
  echo "Raw result lines:"
  local k
  for k in $(printf '%s\n' "${!R[@]}" | sort); do
    case ${R[$k]} in RESULT*) echo "  ${R[$k]}" ;; esac
  done
}

# ---------------------------------------------------------------------------- main
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
QUICK_FLAG=""; [ "$QUICK" = 1 ] && QUICK_FLAG=" --quick"
skipped ice || ensure_packages
build_plh
skipped ice || run_iceoryx || log "iceoryx part failed (see above)"
skipped futex || run_futex
skipped memcpy || run_memcpy
skipped lib || run_lib
skipped cli || run_cli
table=$(print_table)
echo "$table"
if [ "$WRITE_RESULTS" = 1 ]; then
  mkdir -p "$ROOT/bench/results"
  out=$ROOT/bench/results/shm-$(date -u +%Y-%m-%d).txt
  echo "$table" >"$out"
  log "written to $out"
fi
