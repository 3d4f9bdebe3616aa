#!/usr/bin/env bash
# plh-pub -> plh-sub throughput across hosts of a simulated lab LAN beside the same on
# loopback, in one run, on the same input (LINES lines of 42 bytes plus a newline, as in
# run_pubsub_bench.sh, generated once).
#
# The lab is made of network namespaces, as tests/support/netns.hpp does it: hosts A, B,
# C, D (10.77.0.1-4/24 on eth0, a veth pair each to a bridge in a fifth "switch"
# namespace; no route out of the lab). The broker runs on A with --endpoint tcp://0.0.0.0:0.
#
#   loopback, 1 sub   broker, plh-pub and plh-sub all on host B (127.0.0.1)
#   loopback, 2 subs  the same with two plh-sub on B
#   B -> C            plh-pub on B, plh-sub on C, broker on A (default options: the
#                     publisher registers B's lab address itself)
#   B -> C,D          plh-pub on B, one plh-sub on C and one on D
#
# Each run: the subscribers start first (`plh-sub --wait CH > out`), then
# `plh-pub -w N CH < input` is timed from its start until every process of the run has
# exited; every output is compared with the input (cmp). lines/s = LINES / median time.
# The ratio is across-hosts / loopback for the same number of subscribers.
#
# Usage: bench/run_multihost_bench.sh [BUILD_DIR]   (as root; default ./build, a Release or
#        RelWithDebInfo build without sanitizers)
# Env:   LINES (1000000), REPEAT (3 runs per case; the median is shown), RUN_TIMEOUT (120 s
#        per process), PUB_ARGS (extra plh-pub arguments for every run, e.g.
#        "--bind tcp://*:0"), KEEP=1 keeps the work directory.
# The namespaces are deleted at exit (also on error or Ctrl-C).
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
BUILD=$(cd "${1:-$ROOT/build}" && pwd) || { echo "run_multihost_bench: no build directory" >&2; exit 2; }
BIN=$BUILD/bin
PY=/usr/bin/python3
LINES=${LINES:-1000000}
REPEAT=${REPEAT:-3}
RUN_TIMEOUT=${RUN_TIMEOUT:-120}
read -r -a EXTRA_PUB <<< "${PUB_ARGS:-}"

log() { echo "run_multihost_bench: $*" >&2; }
[[ $(id -u) == 0 ]] || { log "needs root (network namespaces)"; exit 2; }
for t in ip "$BIN/plh-broker" "$BIN/plh-pub" "$BIN/plh-sub"; do
  command -v "$t" > /dev/null || { log "missing $t"; exit 2; }
done
if grep -q '^PLH_SANITIZE:BOOL=ON' "$BUILD/CMakeCache.txt" 2>/dev/null; then
  log "warning: $BUILD is a sanitizer build; numbers will be low"
fi

WORK=$(mktemp -d /tmp/plh-multihost-bench.XXXXXX)
PREFIX="plhbench-$$"
HOSTS=(a b c d)
declare -A IP
PIDS=()
cleanup() {
  local p ns
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
  for ns in "${HOSTS[@]/#/$PREFIX-}" "$PREFIX-sw"; do
    for p in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
    ip netns del "$ns" 2>/dev/null
  done
  if [[ "${KEEP:-0}" == 1 ]]; then echo "work directory kept: $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- the lab
on() { local h=$1; shift; ip netns exec "$PREFIX-$h" "$@"; }
make_lab() {
  local n=0 h
  ip netns add "$PREFIX-sw" || return 1
  ip -n "$PREFIX-sw" link add br0 type bridge && ip -n "$PREFIX-sw" link set br0 up || return 1
  for h in "${HOSTS[@]}"; do
    n=$((n + 1))
    IP[$h]=10.77.0.$n
    ip netns add "$PREFIX-$h" &&
      ip link add eth0 netns "$PREFIX-$h" type veth peer name "v$n" netns "$PREFIX-sw" &&
      ip -n "$PREFIX-sw" link set "v$n" master br0 && ip -n "$PREFIX-sw" link set "v$n" up &&
      ip -n "$PREFIX-$h" addr add "${IP[$h]}/24" dev eth0 && ip -n "$PREFIX-$h" link set eth0 up &&
      ip -n "$PREFIX-$h" link set lo up || return 1
  done
}
make_lab || { log "cannot build the namespace lab"; exit 1; }

now() { echo "$EPOCHREALTIME"; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }

# Waits (≤ 10 s) until FILE has a first line; prints it.
first_line() {
  local file=$1 i line
  for ((i = 0; i < 1000; i++)); do
    if [[ -s "$file" ]] && IFS= read -r line < "$file"; then echo "$line"; return 0; fi
    sleep 0.01
  done
  return 1
}

# Waits for a background pid with a deadline; returns its exit code (124 on timeout).
wait_for() {
  local pid=$1 deadline=$((SECONDS + RUN_TIMEOUT))
  while kill -0 "$pid" 2>/dev/null; do
    if ((SECONDS >= deadline)); then kill -9 "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; return 124; fi
    sleep 0.005
  done
  wait "$pid"
}

# start_broker HOST ENDPOINT → sets BROKER (the address clients on other hosts use).
start_broker() {
  local host=$1 ep=$2 ready port
  on "$host" "$BIN/plh-broker" --endpoint "$ep" --log-level warn > "$WORK/broker-$host.out" 2> "$WORK/broker-$host.err" &
  PIDS+=("$!")
  ready=$(first_line "$WORK/broker-$host.out") || { log "broker on $host: no ready line: $(tail -n 3 "$WORK/broker-$host.err")"; return 1; }
  port=$("$PY" -c 'import json,sys; print(json.loads(sys.argv[1])["endpoint"].rsplit(":", 1)[1])' "$ready")
  if [[ $ep == tcp://127.0.0.1:* ]]; then BROKER=tcp://127.0.0.1:$port; else BROKER=tcp://${IP[$host]}:$port; fi
}

# ---------------------------------------------------------------- input
INPUT=$WORK/input.txt
"$PY" - "$INPUT" "$LINES" <<'EOF'
import sys
path, n = sys.argv[1], int(sys.argv[2])
with open(path, "w") as f:
    for i in range(n):
        f.write(("%012d temperature=21.5 sensor=lab-" % i).ljust(42, "x") + "\n")
EOF
log "input: $LINES lines of 42 bytes ($(stat -c %s "$INPUT") bytes)"

ORDER=()
declare -A TIMES STATUS
add_time() {  # add_time CASE SECONDS STATUS
  log "$1: $LINES lines in $2 s ($3)"
  [[ -v "STATUS[$1]" ]] || ORDER+=("$1")
  TIMES[$1]="${TIMES[$1]:-} $2"
  if [[ ${STATUS[$1]:-ok} == ok ]]; then STATUS[$1]=$3; fi
}
median() { tr ' ' '\n' <<< "$1" | grep . | sort -g | awk '{ v[NR] = $1 } END { if (NR) printf "%.3f", (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# run_case LABEL BROKER_ENDPOINT PUB_HOST SUB_HOST...
run_case() {
  local label=$1 broker=$2 pub_host=$3; shift 3
  local ch="bench.multi$RANDOM" t0 t1 i rc status=ok spids=() h
  i=0
  for h in "$@"; do
    rm -f "$WORK/out$i"
    on "$h" env PLH_BROKER="$broker" "$BIN/plh-sub" --wait -W "$RUN_TIMEOUT" "$ch" > "$WORK/out$i" 2> "$WORK/sub$i.err" &
    spids+=("$!"); PIDS+=("$!")
    i=$((i + 1))
  done
  t0=$(now)
  on "$pub_host" env PLH_BROKER="$broker" "$BIN/plh-pub" -w "$#" -W "$RUN_TIMEOUT" "${EXTRA_PUB[@]}" "$ch" \
    < "$INPUT" 2> "$WORK/pub.err" & local pp=$!
  PIDS+=("$pp")
  wait_for "$pp"; rc=$?
  ((rc != 0)) && status="pub exit $rc: $(tail -n 1 "$WORK/pub.err")"
  for i in "${!spids[@]}"; do
    wait_for "${spids[$i]}"; rc=$?
    ((rc != 0)) && [[ $status == ok ]] && status="sub $i exit $rc: $(tail -n 1 "$WORK/sub$i.err")"
  done
  t1=$(now)
  for i in "${!spids[@]}"; do
    cmp -s "$INPUT" "$WORK/out$i" || { [[ $status == ok ]] && status="sub $i OUTPUT DIFFERS ($(wc -l < "$WORK/out$i") lines)"; }
  done
  add_time "$label" "$(elapsed "$t0" "$t1")" "$status"
}

start_broker b tcp://127.0.0.1:0 || exit 1
LOCAL_BROKER=$BROKER
start_broker a tcp://0.0.0.0:0 || exit 1
LAB_BROKER=$BROKER
log "brokers: $LOCAL_BROKER on B (loopback), $LAB_BROKER on A"

for ((rep = 0; rep < REPEAT; rep++)); do
  run_case "loopback, 1 sub" "$LOCAL_BROKER" b b
  run_case "B -> C" "$LAB_BROKER" b c
  run_case "loopback, 2 subs" "$LOCAL_BROKER" b b b
  run_case "B -> C,D" "$LAB_BROKER" b c d
done

# ---------------------------------------------------------------- table
echo "plh-pub -> plh-sub, $LINES lines of 42 bytes, median of $REPEAT runs ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg))"
echo "build: $BUILD ($(grep -m1 '^CMAKE_BUILD_TYPE:' "$BUILD/CMakeCache.txt" 2>/dev/null | cut -d= -f2)), commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')"
printf '%-18s %10s %14s %8s  %s\n' case seconds lines/s ratio status
declare -A RATE
for c in "${ORDER[@]}"; do
  m=$(median "${TIMES[$c]}")
  RATE[$c]=$(awk -v n="$LINES" -v t="$m" 'BEGIN { printf "%.0f", (t > 0) ? n / t : 0 }')
done
ratio() { awk -v a="${RATE[$1]:-0}" -v b="${RATE[$2]:-0}" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }
for c in "${ORDER[@]}"; do
  r=-
  [[ $c == "B -> C" ]] && r=$(ratio "B -> C" "loopback, 1 sub")
  [[ $c == "B -> C,D" ]] && r=$(ratio "B -> C,D" "loopback, 2 subs")
  printf '%-18s %10s %14s %8s  %s\n' "$c" "$(median "${TIMES[$c]}")" "${RATE[$c]}" "$r" "${STATUS[$c]}"
done
echo "ratio: across hosts / loopback with the same number of subscribers (target >= 0.5)"
