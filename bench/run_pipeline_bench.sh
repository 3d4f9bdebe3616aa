#!/usr/bin/env bash
# Throughput of `plh-pub --pattern pipeline` with fast workers: LINES lines of 42 bytes
# (seq -f '%041.0f', generated once) from one plh-pub to W plh-sub workers, each writing to
# its own file. Timed from starting plh-pub (workers and broker already up) until every
# process of the run has exited; then the union of the outputs is checked: every line
# exactly once (sort | uniq -d empty, line count = LINES), each worker's share shown.
# With OLD_BUILD=DIR the same runs use DIR/bin as well (e.g. a build of the PUSH/PULL
# pipeline before the credit-based one), side by side in one run.
#
# Usage: bench/run_pipeline_bench.sh [BUILD_DIR]   (default ./build, Release/RelWithDebInfo)
# Env:   LINES (1000000), WORKERS ("1 3"), REPEAT (3; the median is shown), OLD_BUILD.
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BUILD=$(cd "${1:-$HERE/../build}" && pwd) || { echo "run_pipeline_bench: no build directory" >&2; exit 2; }
LINES=${LINES:-1000000}
WORKERS=${WORKERS:-"1 3"}
REPEAT=${REPEAT:-3}
WORK=$(mktemp -d /tmp/plh-pipeline-bench.XXXXXX)
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
  rm -rf "$WORK"
}
trap cleanup EXIT
seq -f '%041.0f' "$LINES" > "$WORK/input"

# run BIN W -> prints "seconds shares ok|FAIL"
run_once() {
  local bin=$1 w=$2 i t0 t1 ok=ok shares="" pids=()
  rm -f "$WORK"/out.* "$WORK/ready"
  "$bin/plh-broker" --endpoint tcp://127.0.0.1:0 --log-level warn > "$WORK/ready" &
  local bpid=$!
  PIDS+=("$bpid")
  for ((i = 0; i < 500; i++)); do [[ -s "$WORK/ready" ]] && break; sleep 0.01; done
  export PLH_BROKER
  PLH_BROKER=$(sed -E 's/.*"endpoint":"([^"]+)".*/\1/' "$WORK/ready")
  for ((i = 1; i <= w; i++)); do
    "$bin/plh-sub" bench.pipe --wait -W 120 > "$WORK/out.$i" &
    pids+=($!)
  done
  t0=$EPOCHREALTIME
  "$bin/plh-pub" bench.pipe --pattern pipeline -w "$w" -W 60 < "$WORK/input" || ok=FAIL
  for p in "${pids[@]}"; do wait "$p" || ok=FAIL; done
  t1=$EPOCHREALTIME
  kill "$bpid"; wait "$bpid" 2>/dev/null
  for ((i = 1; i <= w; i++)); do shares+="$(wc -l < "$WORK/out.$i")/"; done
  [[ $(cat "$WORK"/out.* | wc -l) == "$LINES" && -z $(sort "$WORK"/out.* | uniq -d | head -1) ]] || ok=FAIL
  awk -v a="$t0" -v b="$t1" -v s="${shares%/}" -v ok="$ok" 'BEGIN { printf "%.3f %s %s\n", b - a, s, ok }'
}

printf '%-28s %8s %10s %12s  %-24s %s\n' build workers lines 'lines/s' shares check
for label in new old; do
  if [[ $label == new ]]; then bin=$BUILD/bin; else [[ -n "${OLD_BUILD:-}" ]] || continue; bin=$OLD_BUILD/bin; fi
  for w in $WORKERS; do
    results=()
    for ((r = 0; r < REPEAT; r++)); do results+=("$(run_once "$bin" "$w")"); done
    median=$(printf '%s\n' "${results[@]}" | sort -n | sed -n "$(((REPEAT + 1) / 2))p")
    read -r secs shares ok <<< "$median"
    printf '%-28s %8s %10s %12.0f  %-24s %s\n' "$label ($bin)" "$w" "$LINES" "$(awk -v n="$LINES" -v s="$secs" 'BEGIN { print n / s }')" "$shares" "$ok"
  done
done
