#!/usr/bin/env bash
# Broker and plh-ctl speed:
#   1. DISC_REQ round trips/s from 1 and from 4 concurrent clients (each one request in
#      flight: strict request/reply), against a plh-broker holding CHANNELS registered
#      channels; also with WINDOW requests in flight per client (pipelined), and 1 client
#      through plh::BrokerClient (the path the tools use).       (bench/bench_broker.cpp)
#      Then window-1 runs against a broker with --busy-poll 0 and one on an ipc:// endpoint,
#      and REPEAT runs of 4 clients x window 1 on fresh brokers, a thread per client and all
#      four from one thread (--loop), with the median of each (the figure varies run to run).
#   2. `plh-ctl list --json` with CHANNELS channels (hyperfine).
#   3. Start-up + exit of `plh-ctl ping` (hyperfine, and a bash loop of LOOP pings).
#
# Usage: bench/run_broker_bench.sh [BUILD_DIR]   (default ./build; not a sanitizer build)
# Env:   CHANNELS (10000), SECONDS_PER_RUN (3), WINDOW (16), LOOP (200), REPEAT (5)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
BUILD=$(cd "${1:-$ROOT/build}" && pwd) || { echo "run_broker_bench: no build directory" >&2; exit 2; }
BIN=$BUILD/bin
CHANNELS=${CHANNELS:-10000}
SECS=${SECONDS_PER_RUN:-3}
WINDOW=${WINDOW:-16}
LOOP=${LOOP:-200}
REPEAT=${REPEAT:-5}
for f in plh-broker plh-ctl bench_broker; do
  [ -x "$BIN/$f" ] || { echo "run_broker_bench: $BIN/$f missing (build first)" >&2; exit 2; }
done

WORK=$(mktemp -d /tmp/plh-broker-bench.XXXXXX)
BROKER_PID=
cleanup() {
  [ -n "$BROKER_PID" ] && kill "$BROKER_PID" 2>/dev/null && wait "$BROKER_PID" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT

echo "== machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), $(date -u +%FT%TZ)"

# Starts a broker (plh-broker arguments; default endpoint tcp://127.0.0.1:0) with a long
# timeout, so the registered channels (which never heartbeat) stay, waits for its ready
# line and registers CHANNELS channels. Sets SB_PID and SB_EP.
start_broker() {
  local fifo=$WORK/ready.$RANDOM ready
  mkfifo "$fifo"
  [ $# -gt 0 ] || set -- --endpoint tcp://127.0.0.1:0
  "$BIN/plh-broker" "$@" --heartbeat-timeout 3600s --max-channels-per-client 0 -q > "$fifo" &
  SB_PID=$!
  read -r ready < "$fifo"
  SB_EP=$(sed -E 's/.*"endpoint":"([^"]+)".*/\1/' <<<"$ready")
  "$BIN/bench_broker" --broker "$SB_EP" --channels "$CHANNELS" --clients 1 --seconds 0.2 > /dev/null
}
stop_broker() { kill "$SB_PID"; wait "$SB_PID" 2>/dev/null || true; }

start_broker
BROKER_PID=$SB_PID EP=$SB_EP
echo "== broker $EP (pid $BROKER_PID)"

# Broker CPU time (user+sys, clock ticks) from /proc: load-independent cost per request.
broker_ticks() { awk '{print $14 + $15}' "/proc/$BROKER_PID/stat"; }
TICK=$(getconf CLK_TCK)

echo "== DISC_REQ round trips, $CHANNELS channels registered"
for spec in "4 1" "1 1" "4 $WINDOW" "1 $WINDOW"; do
  set -- $spec
  t0=$(broker_ticks)
  line=$("$BIN/bench_broker" --broker "$EP" --channels "$CHANNELS" --clients "$1" --window "$2" \
         --seconds "$SECS" --no-populate)
  t1=$(broker_ticks)
  n=$(sed -E 's/.*"round_trips":([0-9]+).*/\1/' <<<"$line")
  echo "$line"
  awk -v d=$((t1 - t0)) -v n="$n" -v hz="$TICK" \
    'BEGIN { if (n > 0) printf "   broker CPU: %.2f us per DISC round trip (=> %.0f/s if the broker had a core to itself)\n", d / hz * 1e6 / n, n / (d / hz) }'
done
"$BIN/bench_broker" --broker "$EP" --channels "$CHANNELS" --clients 1 --seconds "$SECS" --no-populate --via-client \
  | tail -1

# The same strict request/reply runs against other broker set-ups: busy-poll off (every
# request wakes the sleeping broker thread) and an ipc:// endpoint (same-host clients,
# no TCP stack), each a fresh broker holding the same number of channels.
other_broker() {  # label, plh-broker arguments...
  local label=$1; shift
  start_broker "$@"
  for c in 4 1; do
    echo "$label: $("$BIN/bench_broker" --broker "$SB_EP" --channels "$CHANNELS" --clients "$c" --window 1 \
                      --seconds "$SECS" --no-populate)"
  done
  stop_broker
}
echo "== DISC_REQ round trips, other broker set-ups (window 1)"
other_broker "tcp, --busy-poll 0" --endpoint tcp://127.0.0.1:0 --busy-poll 0
other_broker "ipc, --busy-poll 1ms (default)" --endpoint "ipc://$WORK/broker.sock"

# One 4-client window-1 run on a fresh broker; prints round trips/s.
fresh_run() {  # bench_broker extra arguments...
  start_broker
  "$BIN/bench_broker" --broker "$SB_EP" --channels "$CHANNELS" --clients 4 --window 1 --seconds "$SECS" \
    --no-populate "$@" | sed -E 's/.*"round_trips_per_s":([0-9]+).*/\1/'
  stop_broker
}
median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : int((v[NR / 2] + v[NR / 2 + 1]) / 2) }'; }
echo "== 4 clients x window 1, $REPEAT runs on fresh brokers (alternating)"
threads=() loop=()
for _ in $(seq "$REPEAT"); do
  threads+=("$(fresh_run)")
  loop+=("$(fresh_run --loop)")
done
echo "thread per client: ${threads[*]}  median $(printf '%s\n' "${threads[@]}" | median)"
echo "one thread (--loop): ${loop[*]}  median $(printf '%s\n' "${loop[@]}" | median)"

echo "== plh-ctl list --json with $CHANNELS channels"
COUNT=$("$BIN/plh-ctl" --broker "$EP" list --json | sed -E 's/^\{"broker":"[^"]*","count":([0-9]+).*/\1/')
echo "channels listed: $COUNT, document size: $("$BIN/plh-ctl" --broker "$EP" list --json | wc -c) bytes"
if command -v hyperfine > /dev/null; then
  hyperfine -N --warmup 3 --runs 20 "$BIN/plh-ctl --broker $EP list --json" 2>&1 | sed -n '1,4p'
  hyperfine -N --warmup 3 --runs 10 "$BIN/plh-ctl --broker $EP list" 2>&1 | sed -n '1,4p'
else
  time "$BIN/plh-ctl" --broker "$EP" list --json > /dev/null
fi

echo "== plh-ctl ping start-up + exit"
if command -v hyperfine > /dev/null; then
  hyperfine -N --warmup 10 --runs 200 "$BIN/plh-ctl --broker $EP ping" 2>&1 | sed -n '1,4p'
  hyperfine -N --warmup 10 --runs 200 "$BIN/plh-ctl --version" 2>&1 | sed -n '1,4p'
fi
start=$(date +%s%N)
for _ in $(seq "$LOOP"); do "$BIN/plh-ctl" --broker "$EP" ping > /dev/null; done
end=$(date +%s%N)
echo "bash loop: $LOOP x plh-ctl ping in $(( (end - start) / 1000000 )) ms = $(( (end - start) / LOOP / 1000 )) us each"
