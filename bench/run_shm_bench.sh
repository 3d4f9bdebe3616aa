#!/usr/bin/env bash
# Shared-memory speed, side by side in one run:
#   1. iceoryx 2.0.3 (Debian) iceperf, C++ API, 64 B / 4 KiB / 1 MiB   (round trip / 2, average)
#   2. bare futex and spin ping-pong between two processes over a shared page (baseline)
#   3. memcpy bandwidth for 1 MiB buffers
#   4. the plh shm library (plh::shm::Writer/Reader): one-way latency and throughput
#   5. the CLI: seq -f '%041g' 1000000 | plh-shm write ... ; plh-shm read ... | cmp
# and prints one table (also written to bench/results/shm-<UTC date>.txt).
#
# Usage: bench/run_shm_bench.sh [--quick] [--no-results] [--skip LIST] [--wait-idle SEC]
#   --quick          fewer iterations (a smoke run; numbers are noisier)
#   --no-results     do not write bench/results/shm-<date>.txt
#   --skip LIST      leave out some parts: ice,futex,memcpy,lib,cli
#   --wait-idle SEC  before each part, wait up to SEC seconds for the machine to be >= 80% idle
#                    (other jobs take CPU time from busy-polling processes; see cpu_share)
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
WAIT_IDLE=0
while [ $# -gt 0 ]; do
  case $1 in
    --quick) QUICK=1 ;;
    --no-results) WRITE_RESULTS=0 ;;
    --skip) SKIP=$2; shift ;;
    --wait-idle) WAIT_IDLE=$2; shift ;;
    -h|--help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "run_shm_bench.sh: error: unknown argument '$1'" >&2; exit 2 ;;
  esac
  shift
done
skipped() { [[ ",$SKIP," == *",$1,"* ]]; }
# Percentage of CPU time idle over the next second (all CPUs, from /proc/stat).
idle_pct() {
  local a b
  a=$(head -1 /proc/stat); sleep 1; b=$(head -1 /proc/stat)
  awk -v a="$a" -v b="$b" 'BEGIN{split(a,x," "); split(b,y," "); t=0; for(i=2;i<=9;i++) t+=y[i]-x[i];
    idle = (t > 0) ? 100*((y[5]-x[5])+(y[6]-x[6]))/t : 0; printf "%d", idle}'
}
IDLE_LOG=""
# part NAME: log the idle state before a part (waiting for quiet with --wait-idle).
part() {
  local name=$1 waited=0 idle
  idle=$(idle_pct)
  while [ "$idle" -lt 80 ] && [ "$waited" -lt "$WAIT_IDLE" ]; do
    sleep 4; waited=$((waited + 5)); idle=$(idle_pct)
  done
  log "part $name: machine ${idle}% idle (waited ${waited}s)"
  IDLE_LOG="$IDLE_LOG $name=${idle}%"
}
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
  # The follower sometimes keeps waiting for an unsubscribe that never comes: give it a
  # few seconds to finish on its own, then stop it.
  for i in $(seq 50); do kill -0 "$follower" 2>/dev/null || break; sleep 0.1; done
  kill "$follower" 2>/dev/null || true; wait "$follower" 2>/dev/null || true
  kill "$roudi" 2>/dev/null || true; wait "$roudi" 2>/dev/null || true
  grep -A8 'Measurement Result' "$WORK/leader.log" >&2
  local size lat
  while read -r size lat; do R[ice_$size]=$lat; done < <(awk -F'|' '/^\| +[0-9]+ +\| +[0-9.e+]+ +\|/{gsub(/ /,""); print $2, $3}' "$WORK/leader.log")
}

# ---------------------------------------------------------------------------- 2-4. our programs
# run_one KEY PROGRAM ARGS...: runs build/bin/PROGRAM, keeps its RESULT line as R[KEY].
run_one() {
  local key=$1 prog=$2; shift 2
  log "$prog $*"
  local line
  if line=$(timeout 300 "$BUILD/bin/$prog" "$@" | grep '^RESULT'); then
    echo "$line" >&2
    R[$key]=$line
  else
    log "FAILED: $prog $*"
  fi
}

run_futex() {
  run_one pp_spin shm_futex_pingpong --mode spin -n "$PP_N" --cpu-a "$CPU_A" --cpu-b "$CPU_B"
  run_one pp_futex shm_futex_pingpong --mode futex -n "$PP_BLOCK_N" --cpu-a "$CPU_A" --cpu-b "$CPU_B"
  run_one pp_futex_1cpu shm_futex_pingpong --mode futex -n "$PP_BLOCK_N" --cpu-a "$CPU_A" --cpu-b "$CPU_A"
}

run_memcpy() {
  run_one memcpy shm_memcpy_bw --size 1048576 --ring-slots 16 --seconds "$MEMCPY_S" --cpu "$CPU_A"
}

run_lib() {
  have shm_latency && have shm_throughput || { log "plh shm library benchmarks not built (library missing?)"; return 0; }
  local size
  for size in 64 4096 1048576; do
    local common=(--name "plhbench-$$-lat" --size "$size" --cpu-a "$CPU_A")
    run_one "lat_busy_$size" shm_latency "${common[@]}" --cpu-b "$CPU_B" --mode busy -n "$LAT_N"
    run_one "lat_blockgap_$size" shm_latency "${common[@]}" --cpu-b "$CPU_B" --mode blocking -n "$LAT_BLOCK_N" --gap-us 200
    run_one "lat_futex_$size" shm_latency "${common[@]}" --cpu-b "$CPU_B" --mode blocking --spin-ns 0 -n "$LAT_BLOCK_N"
    run_one "lat_futex1cpu_$size" shm_latency "${common[@]}" --cpu-b "$CPU_A" --mode blocking --spin-ns 0 -n "$LAT_BLOCK_N"
  done
  run_one cost64 shm_throughput --single-process --name "plhbench-$$-tp" --size 64 --slots 4096 --cpu-a "$CPU_A"
  run_one cost1m shm_throughput --single-process --name "plhbench-$$-tp" --size 1048576 --slots 16 --cpu-a "$CPU_A"
  local mode
  for mode in busy blocking; do
    run_one "tp64_$mode" shm_throughput --name "plhbench-$$-tp" --size 64 --slots 4096 --count "$TP64_COUNT" \
      --mode "$mode" --cpu-a "$CPU_A" --cpu-b "$CPU_B"
    run_one "tp1m_$mode" shm_throughput --name "plhbench-$$-tp" --size 1048576 --slots 16 --count "$TP1M_COUNT" \
      --mode "$mode" --cpu-a "$CPU_A" --cpu-b "$CPU_B"
  done
}

# ---------------------------------------------------------------------------- 5. CLI pipeline
run_cli() {
  have plh-shm || { log "plh-shm not built"; return 0; }
  local shm=$BUILD/bin/plh-shm name=plhbench-$$-cli
  seq -f '%041g' "$CLI_LINES" >"$WORK/in.txt"
  log "cli: $(wc -c <"$WORK/in.txt") bytes, $CLI_LINES lines of 42 bytes"
  "$shm" rm "$name" >/dev/null 2>&1 || true
  log "cli: taskset -c $CPU_A plh-shm write $name --create --policy sequential --slots 1024 --slot-size 65536 < in.txt | taskset -c $CPU_B plh-shm read $name --wait > out.txt"
  local t0 t1 rc=0
  t0=$(date +%s%N)
  # The writer's stdout is empty; the pipe only runs both at once (the reader waits for the segment).
  taskset -c "$CPU_A" "$shm" write "$name" --create --policy sequential --slots 1024 --slot-size 65536 <"$WORK/in.txt" |
    taskset -c "$CPU_B" timeout 300 "$shm" read "$name" --wait >"$WORK/out.txt" || rc=$?
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
  local cpu W=52
  cpu=$(lscpu | sed -n 's/^Model name: *//p' | head -1)
  row() { printf "%-${W}s %13s %13s %13s\n" "$@"; }
  # latency cell "p50/p99" (us) from R[key] fields <prefix>p50_ns / <prefix>p99_ns
  cell() { local l=${R[$1]:-}; [ -z "$l" ] && { echo "-"; return; }; echo "$(us "$(field "$l" oneway_p50_ns)")/$(us "$(field "$l" oneway_p99_ns)")"; }
  avg() { local l=${R[$1]:-}; [ -z "$l" ] && { echo "-"; return; }; us "$(field "$l" rtthalf_mean_ns)"; }
  echo "plh-shm speed, $(date -u '+%Y-%m-%d %H:%M UTC'), plh $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')"
  echo "command: bench/run_shm_bench.sh${QUICK_FLAG}"
  echo "machine: $cpu, $(nproc) vCPUs, kernel $(uname -r), cpuidle $(cat /sys/devices/system/cpu/cpuidle/current_driver 2>/dev/null || echo '?')"
  echo "load average before/after: $LOAD_BEFORE / $(cut -d' ' -f1-3 /proc/loadavg) (the machine is shared with other jobs)"
  echo "idle CPU just before each part:$IDLE_LOG"
  echo "pinning: sender/writer on CPU $CPU_A, echo/reader on CPU $CPU_B; \"1 CPU\" rows: both on CPU $CPU_A"
  echo
  echo "ONE-WAY LATENCY, microseconds. p50/p99: per-message CLOCK_MONOTONIC stamps (sender before"
  echo "begin_publish -> receiver after acquire). avg: round trip / 2 averaged (what iceperf reports)."
  row "" "64 B" "4 KiB" "1 MiB"
  echo "busy-poll"
  row "  plh shm, busy_poll             p50/p99  [a]" "$(cell lat_busy_64)" "$(cell lat_busy_4096)" "$(cell lat_busy_1048576)"
  row "  plh shm, busy_poll             avg" "$(avg lat_busy_64)" "$(avg lat_busy_4096)" "$(avg lat_busy_1048576)"
  row "  iceoryx 2.0.3 C++ API, iceperf avg      [b]" "${R[ice_64]:--}" "${R[ice_4096]:--}" "${R[ice_1048576]:--}"
  row "  baseline: spin ping-pong       p50/p99  [c]" "$(cell pp_spin)" "" ""
  row "  baseline: spin ping-pong       avg" "$(avg pp_spin)" "" ""
  echo "blocking"
  row "  plh shm, default, idle reader  p50/p99  [d]" "$(cell lat_blockgap_64)" "$(cell lat_blockgap_4096)" "$(cell lat_blockgap_1048576)"
  row "  plh shm, spin 0                p50/p99  [e]" "$(cell lat_futex_64)" "$(cell lat_futex_4096)" "$(cell lat_futex_1048576)"
  row "  plh shm, spin 0                avg" "$(avg lat_futex_64)" "$(avg lat_futex_4096)" "$(avg lat_futex_1048576)"
  row "  baseline: futex ping-pong      p50/p99  [f]" "$(cell pp_futex)" "" ""
  row "  baseline: futex ping-pong      avg" "$(avg pp_futex)" "" ""
  row "  plh shm, spin 0, 1 CPU         p50/p99" "$(cell lat_futex1cpu_64)" "$(cell lat_futex1cpu_4096)" "$(cell lat_futex1cpu_1048576)"
  row "  baseline: futex ping-pong, 1 CPU p50/p99" "$(cell pp_futex_1cpu)" "" ""
  echo
  echo "THROUGHPUT (writer memcpy()s the payload into the slot, reader memcpy()s it out; policy sequential)"
  local mc=${R[memcpy]:-} hot ring half b64 k64 b1m k1m best64 best1m
  hot=$(field "$mc" hot_gbs); ring=$(field "$mc" ring_gbs)
  half=$(awk -v r="${ring:-0}" 'BEGIN{printf "%.2f", r/2}')
  b64=$(field "${R[tp64_busy]:-}" slots_per_s); k64=$(field "${R[tp64_blocking]:-}" slots_per_s)
  b1m=$(field "${R[tp1m_busy]:-}" gbs); k1m=$(field "${R[tp1m_blocking]:-}" gbs)
  best64=$(awk -v a="${b64:-0}" -v b="${k64:-0}" 'BEGIN{print (a>b)?a:b}')
  best1m=$(awk -v a="${b1m:-0}" -v b="${k1m:-0}" 'BEGIN{print (a>b)?a:b}')
  row "" "busy-poll" "blocking" "target"
  row "  plh shm, 64 B slots, slots/s            [g]" "${b64:--}" "${k64:--}" ">= 10000000"
  row "    verdict (best of the two)" "$( [ -n "$b64$k64" ] && verdict "$best64" 10000000 || echo n/a)" "" ""
  row "  plh shm, 1 MiB slots, GB/s              [g]" "${b1m:--}" "${k1m:--}" ">= ${half}"
  row "    verdict (best of the two; target = memcpy ring / 2)" "$( [ -n "$b1m$k1m" ] && verdict "$best1m" "$half" || echo n/a)" "" ""
  share() { local l=${R[$1]:-}; [ -z "$l" ] && { echo "-"; return; }; echo "$(field "$l" cpu_share_a)/$(field "$l" cpu_share_b)"; }
  row "    CPU share writer/reader (1.00 = never preempted)" "$(share tp64_busy)" "$(share tp64_blocking)" ""
  row "    CPU share writer/reader, 1 MiB" "$(share tp1m_busy)" "$(share tp1m_blocking)" ""
  local c64=${R[cost64]:-} c1m=${R[cost1m]:-}
  row "  CPU time per slot, one process alone, ns     [j]" "writer" "(ts given)" "reader"
  row "    64 B" "$(field "$c64" writer_ns)" "$(field "$c64" writer_explicit_ts_ns)" "$(field "$c64" reader_ns)"
  row "    1 MiB" "$(field "$c1m" writer_ns)" "$(field "$c1m" writer_explicit_ts_ns)" "$(field "$c1m" reader_ns)"
  row "  memcpy 1 MiB into a ring of 16 x 1 MiB, GB/s [h]" "${ring:--}" "" ""
  row "  memcpy 1 MiB, same buffers (hot), GB/s" "${hot:--}" "" ""
  echo
  echo "CLI PIPELINE: $CLI_LINES lines of 42 bytes (seq -f '%041g'), plh-shm write --create | plh-shm read  [i]"
  row "  lines/s" "${R[cli_lps]:--}" "" ">= 3000000"
  row "    verdict" "$( [ -n "${R[cli_lps]:-}" ] && verdict "${R[cli_lps]}" 3000000 || echo n/a)" "" ""
  row "  elapsed, s" "${R[cli_s]:--}" "" ""
  row "  cmp output input" "${R[cli_cmp]:--}" "" ""
  cat <<'NOTES'

[a] bench/shm_latency: ping-pong over two segments (policy sequential, 8 slots), A->B stamps;
    only the 8-byte stamp is written into the slot (zero copy, like iceperf), so size hardly matters.
[b] Debian's iceperf example (iceoryx 2.0.3, C++ API, busy-polling take()), built in a temp dir with
    its payload list set to 64/4096/1048576 bytes; it prints round trip / 2 averaged over all round
    trips, nothing else. Leader on CPU A, follower on CPU B, iox-roudi unpinned.
[c] bench/shm_futex_pingpong --mode spin: two processes, two words on a shared page, pause-loop.
[d] Blocking mode with the library default (spin 20 us, then sleep on the futex), 200 us pause between
    messages so the reader is asleep when the message comes: the idle-reader case.
[e] Blocking mode with WaitOptions::spin = 0: every message wakes a sleeping process (futex).
[f] bench/shm_futex_pingpong --mode futex: FUTEX_WAIT / FUTEX_WAKE on a shared page, nothing else.
    On this VM (haltpoll cpuidle, guest_halt_poll_ns=0) a sleeping vCPU halts, and waking it from
    the other vCPU goes through the hypervisor: that is the ~20 us. On one CPU a wake is ~1 us.
[g] bench/shm_throughput: one writer and one reader process, --count slots (64 B: 4096-slot ring,
    1 MiB: 16-slot ring); rate = slots received / (reader's last - writer's first), seq and payload
    counter checked, nothing lost. nivcsw_a/b in the raw lines = involuntary context switches.
[h] bench/shm_memcpy_bw: single thread, 1 MiB source into 16 rotating 1 MiB destinations.
[i] Input pre-generated into a file; time from starting the pipeline to the reader's exit;
    writer on CPU A, reader on CPU B (taskset); policy sequential, 1024 slots of 64 KiB.
[j] bench/shm_throughput --single-process: writer alone (begin_publish + memcpy + end_publish, ts_ns
    0 = the library reads CLOCK_REALTIME, or given) and reader alone (acquire + memcpy + release,
    draining a full ring), in CPU time of the thread: what each side costs without any waiting.
NOTES
  echo
  echo "Raw result lines:"
  local k
  for k in $(printf '%s\n' "${!R[@]}" | sort); do
    case ${R[$k]} in RESULT*) echo "  $k: ${R[$k]}" ;; esac
  done
  [ -n "${R[ice_64]:-}" ] && { echo "  iceperf (payload column in bytes):"; grep -E '^(\||[0-9]+ round trips)' "$WORK/leader.log" | sed 's/^/    /'; }
  return 0
}

# ---------------------------------------------------------------------------- main
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
QUICK_FLAG=""; [ "$QUICK" = 1 ] && QUICK_FLAG=" --quick"
skipped ice || ensure_packages
build_plh
skipped ice || { part iceoryx; run_iceoryx || log "iceoryx part failed (see above)"; }
skipped futex || { part futex; run_futex; }
skipped memcpy || { part memcpy; run_memcpy; }
skipped lib || { part lib; run_lib; }
skipped cli || { part cli; run_cli; }
table=$(print_table)
echo "$table"
if [ "$WRITE_RESULTS" = 1 ]; then
  mkdir -p "$ROOT/bench/results"
  out=$ROOT/bench/results/shm-$(date -u +%Y-%m-%d).txt
  echo "$table" >"$out"
  log "written to $out"
fi
