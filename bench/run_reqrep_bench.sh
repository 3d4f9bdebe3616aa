#!/usr/bin/env bash
# Request/reply: plh-req/plh-rep side by side with bare libzmq and with MQTT
# request/response (mosquitto_rr), on one machine over loopback tcp, in one run.
#
#   latency, in a stream   plh-req -f json -j 1 (its rtt_us per reply, whole µs) against
#                          `plh-rep --pipe -- cat`, vs bench/reqrep_raw.cpp REQ -> REP
#                          echo (no header, no broker, no child process); LAT_N round
#                          trips of SIZE-byte messages each, in ROUNDS (5) alternating
#                          rounds, the first 200 of each round not counted
#   latency, per command   one process per request: `plh-req SERVICE MSG` (broker lookup,
#                          connect, handshake, request) vs `mosquitto_rr` through a local
#                          mosquitto with a `mosquitto_sub | mosquitto_pub -l` echo
#                          responder; wall time of each of CMD_N runs
#   throughput             `seq TP_N | plh-req -j 64` against `plh-rep --pipe -c 64 -- cat`,
#                          vs reqrep_raw DEALER (64 in flight) -> ROUTER echo
#   CMD mode               `seq EXEC_N | plh-req -j 4` against `plh-rep -c 2 -- cat` (a
#                          process per request)
#
# Usage: bench/run_reqrep_bench.sh [BUILD_DIR]     (default ./build: Release/RelWithDebInfo,
#        no sanitizers). Env: LAT_N (20000), ROUNDS (5), SIZE (32), CMD_N (200), TP_N (500000),
#        EXEC_N (2000), KEEP=1 keeps the work directory. mosquitto missing: its rows say
#        "skipped" (apt-get install mosquitto mosquitto-clients).
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
BUILD=$(cd "${1:-$ROOT/build}" && pwd) || { echo "run_reqrep_bench: no build directory" >&2; exit 2; }
BIN=$BUILD/bin
RAW=$BIN/reqrep_raw
PY=/usr/bin/python3
LAT_N=${LAT_N:-20000}
SIZE=${SIZE:-32}
CMD_N=${CMD_N:-200}
TP_N=${TP_N:-500000}
EXEC_N=${EXEC_N:-2000}

WORK=$(mktemp -d /tmp/plh-reqrep-bench.XXXXXX)
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

log() { echo "run_reqrep_bench: $*" >&2; }
free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
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
# p50/p99/mean of the numbers on stdin (one per line; skip the first $1), in $2 units.
percentiles() {
  "$PY" -c '
import sys
skip, unit = int(sys.argv[1]), sys.argv[2]
v = sorted(float(x) for x in sys.stdin.read().split()[skip:])
q = lambda p: v[int(p * (len(v) - 1))]
print("p50 %.1f%s p99 %.1f%s mean %.1f%s (n=%d)" % (q(.5), unit, q(.99), unit, sum(v) / len(v), unit, len(v)))' "$1" "$2"
}
p50_of() { awk '{ print $2 }' <<< "$1" | tr -d 'a-z'; }

echo "# run_reqrep_bench $(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) cores, load: $(uptime | sed 's/.*load average: //')"
echo "# git $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)$(git -C "$ROOT" diff --quiet 2>/dev/null || echo '+dirty')"

# ------------------------------------------------------------------ the plh side
BPORT=$(free_port)
export PLH_BROKER=tcp://127.0.0.1:$BPORT
"$BIN/plh-broker" --endpoint "$PLH_BROKER" --log-level warn > "$WORK/broker.out" 2> "$WORK/broker.err" &
PIDS+=($!)
first_line "$WORK/broker.out" > /dev/null || { log "plh-broker did not start"; exit 1; }
start_rep() {  # NAME ARGS... : a plh-rep, registered once it printed its endpoint
  local name=$1
  shift
  "$BIN/plh-rep" --print-endpoint "$@" > "$WORK/$name.ep" 2> "$WORK/$name.err" < /dev/null &
  PIDS+=($!)
  first_line "$WORK/$name.ep" > /dev/null || { log "plh-rep $name did not start: $(cat "$WORK/$name.err")"; exit 1; }
}
start_rep lat bench.lat --pipe -- cat
start_rep tp bench.tp --pipe -c 64 -- cat
start_rep exec bench.exec -c 2 -- cat

MSG=$(head -c "$SIZE" /dev/zero | tr '\0' x)
# -f json: each input line is {"data": ...}; the request body is SIZE-1 bytes, as for raw.
# The machine is shared: plh and raw alternate in ROUNDS rounds, so both see the same load.
ROUNDS=${ROUNDS:-5}
PER_ROUND=$((LAT_N / ROUNDS))
yes "{\"data\":\"${MSG:1}\"}" | head -n $((PER_ROUND + 200)) > "$WORK/lat.in"
RPORT=$(free_port)
"$RAW" rep "tcp://127.0.0.1:$RPORT" 2> "$WORK/raw_rep.err" &
PIDS+=($!)
: > "$WORK/lat_plh.us"
: > "$WORK/lat_raw.us"
for ((r = 0; r < ROUNDS; r++)); do
  "$BIN/plh-req" bench.lat -j 1 -f json -W 10s < "$WORK/lat.in" > "$WORK/lat.json" 2> "$WORK/lat.err" ||
    log "plh-req latency run failed: $(tail -n 1 "$WORK/lat.err")"
  "$PY" -c 'import sys, json
for l in list(open(sys.argv[1]))[200:]: print(json.loads(l)["rtt_us"])' "$WORK/lat.json" >> "$WORK/lat_plh.us"
  "$RAW" req "tcp://127.0.0.1:$RPORT" "$PER_ROUND" $((SIZE - 1)) all >> "$WORK/lat_raw.us"
done
PLH_LAT=$(percentiles 0 us < "$WORK/lat_plh.us")
RAW_LAT=$(percentiles 0 us < "$WORK/lat_raw.us")

# ------------------------------------------------------------------ per-command latency
log "per-command latency ($(date -u +%T))"
for ((i = 0; i < CMD_N; i++)); do
  t0=$(now)
  "$BIN/plh-req" bench.lat "$MSG" > /dev/null 2>> "$WORK/cmd.err" || echo "failed" >> "$WORK/cmd.fail"
  t1=$(now)
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f\n", (b - a) * 1000 }'
done > "$WORK/cmd_plh.ms"
PLH_CMD=$(percentiles 0 ms < "$WORK/cmd_plh.ms")
[[ -s $WORK/cmd.fail ]] && PLH_CMD="$PLH_CMD, $(wc -l < "$WORK/cmd.fail") failed"

MQTT_CMD="skipped: mosquitto or mosquitto-clients not installed"
if command -v mosquitto > /dev/null && command -v mosquitto_rr > /dev/null; then
  MPORT=$(free_port)
  mosquitto -p "$MPORT" > "$WORK/mosquitto.log" 2>&1 &
  PIDS+=($!)
  for ((i = 0; i < 200; i++)); do mosquitto_pub -p "$MPORT" -t bench/probe -m x 2> /dev/null && break; sleep 0.02; done
  # The responder: every request line republished on the response topic.
  mkfifo "$WORK/mqtt.fifo"
  mosquitto_pub -p "$MPORT" -t bench/resp -l < "$WORK/mqtt.fifo" &
  PIDS+=($!)
  mosquitto_sub -p "$MPORT" -t bench/req > "$WORK/mqtt.fifo" 2> "$WORK/mqtt_sub.err" &
  PIDS+=($!)
  for ((i = 0; i < 100; i++)); do  # until the responder is subscribed
    timeout 1 mosquitto_rr -p "$MPORT" -t bench/req -e bench/resp -m probe -W 1 > /dev/null 2>&1 && break
  done
  for ((i = 0; i < CMD_N; i++)); do
    t0=$(now)
    mosquitto_rr -p "$MPORT" -t bench/req -e bench/resp -m "$MSG" -W 5 > /dev/null 2>> "$WORK/mqtt.err" || echo failed >> "$WORK/mqtt.fail"
    t1=$(now)
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f\n", (b - a) * 1000 }'
  done > "$WORK/cmd_mqtt.ms"
  MQTT_CMD=$(percentiles 0 ms < "$WORK/cmd_mqtt.ms")
  [[ -s $WORK/mqtt.fail ]] && MQTT_CMD="$MQTT_CMD, $(wc -l < "$WORK/mqtt.fail") failed"
fi

# ------------------------------------------------------------------ throughput
log "throughput ($(date -u +%T))"
seq "$TP_N" > "$WORK/tp.in"
t0=$(now)
"$BIN/plh-req" bench.tp -j 64 -W 30s < "$WORK/tp.in" > "$WORK/tp.out" 2> "$WORK/tp.err"
rc=$?
t1=$(now)
s=$(elapsed "$t0" "$t1")
if [[ $rc == 0 ]] && cmp -s "$WORK/tp.in" "$WORK/tp.out"; then
  PLH_TP=$(awk -v n="$TP_N" -v s="$s" 'BEGIN { printf "%.0f req/s (%d in %.3f s, replies in order)", n / s, n, s }')
else
  PLH_TP="FAILED (exit $rc, $(tail -n 1 "$WORK/tp.err"))"
fi
TPORT=$(free_port)
"$RAW" router "tcp://127.0.0.1:$TPORT" 2> "$WORK/raw_router.err" &
PIDS+=($!)
RAW_TP=$("$RAW" dealer "tcp://127.0.0.1:$TPORT" "$TP_N" 64 | awk '{ printf "%.0f req/s (%.3f s)", $2, $4 }')

seq "$EXEC_N" > "$WORK/exec.in"
t0=$(now)
"$BIN/plh-req" bench.exec -j 4 -W 30s < "$WORK/exec.in" > "$WORK/exec.out" 2> "$WORK/exec.err"
rc=$?
t1=$(now)
s=$(elapsed "$t0" "$t1")
if [[ $rc == 0 ]] && cmp -s "$WORK/exec.in" "$WORK/exec.out"; then
  PLH_EXEC=$(awk -v n="$EXEC_N" -v s="$s" 'BEGIN { printf "%.0f req/s (%d in %.3f s)", n / s, n, s }')
else
  PLH_EXEC="FAILED (exit $rc, $(tail -n 1 "$WORK/exec.err"))"
fi

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else print "-" }'; }
echo
echo "## round-trip latency in a stream, ${SIZE}-byte requests"
echo "plh-req -j 1 -> plh-rep --pipe cat   $PLH_LAT"
echo "raw libzmq REQ -> REP echo           $RAW_LAT"
echo "ratio plh / raw (p50)                $(ratio "$(p50_of "$PLH_LAT")" "$(p50_of "$RAW_LAT")")"
echo
echo "## one process per request (wall time)"
echo "plh-req SERVICE MSG                  $PLH_CMD"
echo "mosquitto_rr (local mosquitto)       $MQTT_CMD"
[[ $MQTT_CMD != skipped* ]] && echo "ratio plh / mosquitto_rr (p50)       $(ratio "$(p50_of "$PLH_CMD")" "$(p50_of "$MQTT_CMD")")"
echo
echo "## throughput"
echo "plh-req -j 64 -> plh-rep --pipe -c 64 cat   $PLH_TP"
echo "raw libzmq DEALER (64 in flight) -> ROUTER  $RAW_TP"
echo "plh-req -j 4 -> plh-rep -c 2 -- cat (CMD)   $PLH_EXEC"
echo
echo "# load after: $(uptime | sed 's/.*load average: //')"
