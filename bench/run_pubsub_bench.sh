#!/usr/bin/env bash
# Pub/sub throughput and latency of plh-pub/plh-sub compared with the alternatives a
# lab would otherwise use, on one machine over loopback tcp, all on the same input
# (LINES lines of 42 bytes, generated once):
#
#   plh            plh-broker (port 0), `plh-sub --wait CH > out` and `plh-pub -w 1 CH < input`
#   plh pipeline   the same with --pattern pipeline (PUSH/PULL)
#   raw libzmq     bench/zmq_raw_pair.cpp: PUSH/PULL, one message per line (the ceiling
#                  for one-ZeroMQ-message-per-line; plh may exceed it by batching)
#   pyzmq          bench/pyzmq_relay.py with /usr/bin/python3, one message per line
#   mosquitto      mosquitto_pub -l | local mosquitto broker | mosquitto_sub (MQTT_LINES lines)
#
# Each run is timed from starting the sender (receiver and broker already up; for plh,
# both tools start together) until every process of the run has exited (mosquitto_sub
# never exits on its own: until the end marker reached its output), and its output is
# compared with its input (cmp). Then a one-way latency run: 64-byte lines at 1 kHz for
# LAT_SECONDS through plh-pub -> plh-sub (and through the raw libzmq pair for reference),
# timestamps from CLOCK_MONOTONIC in the line itself (bench/pubsub_latency.cpp).
#
# Usage: bench/run_pubsub_bench.sh [BUILD_DIR]      (default: ./build; a Release or
#        RelWithDebInfo build without sanitizers)
# Env:   LINES (1000000), MQTT_LINES (100000), LAT_SECONDS (5), REPEAT (3 runs per tool,
#        the table shows the median), RUN_TIMEOUT (120 s per process),
#        KEEP=1 keeps the work directory.
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
BUILD=$(cd "${1:-$ROOT/build}" && pwd) || { echo "run_pubsub_bench: no build directory" >&2; exit 2; }
BIN=$BUILD/bin
PY=/usr/bin/python3
LINES=${LINES:-1000000}
MQTT_LINES=${MQTT_LINES:-100000}
LAT_SECONDS=${LAT_SECONDS:-5}
REPEAT=${REPEAT:-3}
RUN_TIMEOUT=${RUN_TIMEOUT:-120}

WORK=$(mktemp -d /tmp/plh-pubsub-bench.XXXXXX)
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
  if [[ "${KEEP:-0}" == 1 ]]; then echo "work directory kept: $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

log() { echo "run_pubsub_bench: $*" >&2; }
free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now() { echo "$EPOCHREALTIME"; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }

# Waits (≤ 10 s) until FILE has a first line; prints it.
first_line() {
  local file=$1 i
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

# ---------------------------------------------------------------- build and input
if grep -q '^PLH_SANITIZE:BOOL=ON' "$BUILD/CMakeCache.txt" 2>/dev/null; then
  log "warning: $BUILD is a sanitizer build; numbers will be low"
fi
cmake --build "$BUILD" --target zmq_raw_pair pubsub_latency -j2 >/dev/null ||
  { log "cannot build zmq_raw_pair/pubsub_latency in $BUILD"; exit 1; }

INPUT=$WORK/input.txt
"$PY" - "$INPUT" "$LINES" <<'EOF'
import sys
path, n = sys.argv[1], int(sys.argv[2])
with open(path, "w") as f:
    for i in range(n):
        f.write(("%012d temperature=21.5 sensor=lab-" % i).ljust(42, "x") + "\n")
EOF
head -n "$MQTT_LINES" "$INPUT" > "$WORK/input_mqtt.txt"
log "input: $LINES lines of 42 bytes ($(stat -c %s "$INPUT") bytes) in $INPUT"

# Results: every run of a tool adds its seconds; the table shows the median per tool.
ORDER=()
declare -A LINES_OF TIMES STATUS
add_row() {  # add_row TOOL LINES SECONDS STATUS
  log "$1: $2 lines in $3 s ($4)"
  [[ -v "LINES_OF[$1]" ]] || ORDER+=("$1")
  LINES_OF[$1]=$2
  [[ $3 != - ]] && TIMES[$1]="${TIMES[$1]:-} $3"
  if [[ ${STATUS[$1]:-ok} == ok ]]; then STATUS[$1]=$4; fi
}
median() { tr ' ' '\n' <<< "$1" | grep . | sort -g | awk '{ v[NR] = $1 } END { if (NR) printf "%.3f", (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

verify() {  # verify EXPECTED ACTUAL → "ok" or a reason
  if cmp -s "$1" "$2"; then echo ok; else echo "OUTPUT DIFFERS ($(wc -l < "$2") of $(wc -l < "$1") lines)"; fi
}

# ---------------------------------------------------------------- a) plh
run_plh() {  # run_plh LABEL EXTRA_PUB_ARGS...
  local label=$1; shift
  local out=$WORK/plh_out.txt ch="bench.lines$RANDOM" t0 t1 rs rp
  rm -f "$out"
  t0=$(now)
  PLH_BROKER=$BROKER "$BIN/plh-sub" --wait "$ch" > "$out" 2> "$WORK/plh_sub.err" & local sp=$!
  PIDS+=("$sp")
  PLH_BROKER=$BROKER "$BIN/plh-pub" -w 1 "$@" "$ch" < "$INPUT" 2> "$WORK/plh_pub.err" & local pp=$!
  PIDS+=("$pp")
  wait_for "$pp"; rp=$?
  wait_for "$sp"; rs=$?
  t1=$(now)
  local status
  status=$(verify "$INPUT" "$out")
  if ((rp != 0 || rs != 0)); then
    status="$status; exit codes pub $rp sub $rs"
    log "plh-pub stderr: $(tail -n 3 "$WORK/plh_pub.err")"
    log "plh-sub stderr: $(tail -n 3 "$WORK/plh_sub.err")"
  fi
  add_row "$label" "$LINES" "$(elapsed "$t0" "$t1")" "$status"
}

BROKER=""
if [[ -x "$BIN/plh-broker" && -x "$BIN/plh-pub" && -x "$BIN/plh-sub" ]]; then
  "$BIN/plh-broker" --endpoint tcp://127.0.0.1:0 > "$WORK/broker.out" 2> "$WORK/broker.err" &
  PIDS+=("$!")
  if ready=$(first_line "$WORK/broker.out"); then
    BROKER=$("$PY" -c 'import json,sys; print(json.loads(sys.argv[1])["endpoint"])' "$ready")
    log "plh-broker ready at $BROKER"
    for ((rep = 0; rep < REPEAT; rep++)); do
      run_plh "plh (pubsub)"
      run_plh "plh (pipeline)" --pattern pipeline
    done
  else
    log "plh-broker printed no ready line: $(tail -n 3 "$WORK/broker.err")"
    add_row "plh (pubsub)" "$LINES" "-" "broker did not start"
  fi
else
  add_row "plh (pubsub)" "$LINES" "-" "skipped: plh-broker/plh-pub/plh-sub not built"
fi

# ---------------------------------------------------------------- b) raw libzmq
run_pair() {  # run_pair LABEL LINES INPUT RECV_CMD... -- SEND_CMD...  (ENDPOINT and OUT substituted)
  local label=$1 n=$2 in=$3; shift 3
  local recv=() send=() a ep out=$WORK/pair_out.txt
  ep="tcp://127.0.0.1:$(free_port)"
  while [[ $1 != -- ]]; do recv+=("$1"); shift; done; shift
  send=("$@")
  recv=("${recv[@]//ENDPOINT/$ep}"); recv=("${recv[@]//OUTFILE/$out}")
  send=("${send[@]//ENDPOINT/$ep}"); send=("${send[@]//INFILE/$in}")
  rm -f "$out"
  "${recv[@]}" 2> "$WORK/pair_recv.err" & local rp=$!
  PIDS+=("$rp")
  # The receiver says "ready" on stderr once bound, so bind time stays out of the timing.
  for ((a = 0; a < 1000; a++)); do
    grep -q ready "$WORK/pair_recv.err" 2>/dev/null && break
    sleep 0.01
  done
  local t0 t1 rs ss
  t0=$(now)
  "${send[@]}" 2> "$WORK/pair_send.err" & local sp=$!
  PIDS+=("$sp")
  wait_for "$sp"; ss=$?
  wait_for "$rp"; rs=$?
  t1=$(now)
  local status
  status=$(verify "$in" "$out")
  ((ss != 0 || rs != 0)) && status="$status; exit codes send $ss recv $rs"
  add_row "$label" "$n" "$(elapsed "$t0" "$t1")" "$status"
}

for ((rep = 0; rep < REPEAT; rep++)); do
  run_pair "raw libzmq (C++)" "$LINES" "$INPUT" "$BIN/zmq_raw_pair" pull ENDPOINT OUTFILE -- \
    "$BIN/zmq_raw_pair" push ENDPOINT INFILE
done

# ---------------------------------------------------------------- c) pyzmq
if "$PY" -c 'import zmq' 2>/dev/null; then
  for ((rep = 0; rep < REPEAT; rep++)); do
    run_pair "pyzmq (python3)" "$LINES" "$INPUT" "$PY" "$HERE/pyzmq_relay.py" recv ENDPOINT OUTFILE -- \
      "$PY" "$HERE/pyzmq_relay.py" send ENDPOINT INFILE
  done
else
  add_row "pyzmq (python3)" "$LINES" "-" "skipped: /usr/bin/python3 has no zmq module"
fi

# ---------------------------------------------------------------- d) mosquitto
run_mosquitto() {
  local port out=$WORK/mqtt_out.txt in=$WORK/input_mqtt.txt i
  port=$(free_port)
  mosquitto -p "$port" > "$WORK/mosquitto.log" 2>&1 & local mp=$!
  PIDS+=("$mp")
  for ((i = 0; i < 200; i++)); do
    mosquitto_pub -p "$port" -t bench/probe -m x 2>/dev/null && break
    sleep 0.02
  done
  mosquitto_sub -p "$port" -t bench/data > "$out" 2> "$WORK/mqtt_sub.err" & local sp=$!
  PIDS+=("$sp")
  # mosquitto_sub has no ready signal: publish markers until one arrives.
  for ((i = 0; i < 500; i++)); do
    mosquitto_pub -p "$port" -t bench/data -m __ready__
    grep -q '^__ready__$' "$out" && break
    sleep 0.02
  done
  local t0 t1 deadline=$((SECONDS + RUN_TIMEOUT))
  t0=$(now)
  { cat "$in"; echo __end__; } | mosquitto_pub -p "$port" -t bench/data -l
  # mosquitto_sub runs forever: the run ends when the end marker reached its output.
  until [[ "$(tail -n 1 "$out")" == __end__ ]] || ((SECONDS >= deadline)); do sleep 0.002; done
  t1=$(now)
  kill "$sp" "$mp" 2>/dev/null; wait "$sp" "$mp" 2>/dev/null
  grep -v '^__ready__$' "$out" | grep -v '^__end__$' > "$out.data"
  add_row "mosquitto (MQTT QoS 0)" "$MQTT_LINES" "$(elapsed "$t0" "$t1")" "$(verify "$in" "$out.data")"
}
if command -v mosquitto >/dev/null && command -v mosquitto_pub >/dev/null; then
  for ((rep = 0; rep < REPEAT; rep++)); do run_mosquitto; done
else
  add_row "mosquitto (MQTT QoS 0)" "$MQTT_LINES" "-" "skipped: mosquitto not installed"
fi

# ---------------------------------------------------------------- latency
LAT_ROWS=()
if [[ -n "$BROKER" ]]; then
  lch="bench.latency$RANDOM"
  if r=$(PLH_BROKER=$BROKER "$BIN/pubsub_latency" --seconds "$LAT_SECONDS" --rate 1000 --size 64 \
        --sub "'$BIN/plh-sub' --wait $lch" --pub "'$BIN/plh-pub' -w 1 $lch" 2> "$WORK/lat_plh.err"); then
    LAT_ROWS+=("plh-pub -> plh-sub|$r")
  else
    LAT_ROWS+=("plh-pub -> plh-sub|FAILED: $r $(tail -n 2 "$WORK/lat_plh.err" | tr '\n' ' ')")
  fi
fi
ep="tcp://127.0.0.1:$(free_port)"
if r=$("$BIN/pubsub_latency" --seconds "$LAT_SECONDS" --rate 1000 --size 64 \
      --sub "'$BIN/zmq_raw_pair' pull $ep -" --pub "'$BIN/zmq_raw_pair' push $ep -" 2> "$WORK/lat_raw.err"); then
  LAT_ROWS+=("raw libzmq pair|$r")
else
  LAT_ROWS+=("raw libzmq pair|FAILED: $r")
fi

# ---------------------------------------------------------------- report
echo
echo "Throughput, 42-byte lines over loopback tcp, $(nproc) CPUs (load average $(cut -d" " -f1-3 /proc/loadavg)), median of $REPEAT runs, $(date -u +%Y-%m-%dT%H:%MZ)"
printf '%-24s %9s %9s %12s %10s  %s\n' tool lines seconds lines/s "vs raw zmq" check
RAW="raw libzmq (C++)"
RAW_RATE=""
if [[ ${STATUS[$RAW]:-} == ok ]]; then
  RAW_RATE=$(awk -v n="${LINES_OF[$RAW]}" -v s="$(median "${TIMES[$RAW]}")" 'BEGIN { printf "%.0f", n / s }')
fi
for tool in "${ORDER[@]}"; do
  n=${LINES_OF[$tool]}
  st=${STATUS[$tool]}
  s=$(median "${TIMES[$tool]:-}")
  if [[ -z $s ]]; then
    printf '%-24s %9s %9s %12s %10s  %s\n' "$tool" "$n" - - - "$st"
    continue
  fi
  rate=$(awk -v n="$n" -v s="$s" 'BEGIN { printf "%.0f", n / s }')
  ratio=-
  [[ -n $RAW_RATE ]] && ratio=$(awk -v r="$rate" -v b="$RAW_RATE" 'BEGIN { printf "%.2fx", r / b }')
  printf '%-24s %9s %9s %12s %10s  %s\n' "$tool" "$n" "$s" "$rate" "$ratio" "$st"
done
echo "(mosquitto runs $MQTT_LINES lines; the others $LINES)"
echo
echo "One-way latency, 64-byte lines at 1000/s for ${LAT_SECONDS} s (CLOCK_MONOTONIC, same host)"
for row in "${LAT_ROWS[@]}"; do
  IFS='|' read -r tool r <<< "$row"
  printf '%-24s %s\n' "$tool" "$r"
done
