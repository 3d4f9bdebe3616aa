#!/usr/bin/env bash
# Broker and plh-ctl speed:
#   1. DISC_REQ round trips/s from 1 and from 4 concurrent clients (each one request in
#      flight: strict request/reply), against a plh-broker holding CHANNELS registered
#      channels; also with WINDOW requests in flight per client (pipelined), and 1 client
#      through plh::BrokerClient (the path the tools use).       (bench/bench_broker.cpp)
#   2. `plh-ctl list --json` with CHANNELS channels (hyperfine).
#   3. Start-up + exit of `plh-ctl ping` (hyperfine, and a bash loop of LOOP pings).
#
# Usage: bench/run_broker_bench.sh [BUILD_DIR]   (default ./build; not a sanitizer build)
# Env:   CHANNELS (10000), SECONDS_PER_RUN (3), WINDOW (16), LOOP (200)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
BUILD=$(cd "${1:-$ROOT/build}" && pwd) || { echo "run_broker_bench: no build directory" >&2; exit 2; }
BIN=$BUILD/bin
CHANNELS=${CHANNELS:-10000}
SECS=${SECONDS_PER_RUN:-3}
WINDOW=${WINDOW:-16}
LOOP=${LOOP:-200}
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

# The broker, with a long timeout so the registered channels (which never heartbeat) stay.
mkfifo "$WORK/ready"
"$BIN/plh-broker" --endpoint tcp://127.0.0.1:0 --heartbeat-timeout 3600s -q > "$WORK/ready" &
BROKER_PID=$!
read -r READY < "$WORK/ready"
EP=$(sed -E 's/.*"endpoint":"([^"]+)".*/\1/' <<<"$READY")
echo "== broker $EP (pid $BROKER_PID)"

echo "== DISC_REQ round trips, $CHANNELS channels registered"
"$BIN/bench_broker" --broker "$EP" --channels "$CHANNELS" --clients 1,4 --seconds "$SECS" --via-client \
  | tee "$WORK/disc.jsonl"
"$BIN/bench_broker" --broker "$EP" --channels "$CHANNELS" --clients 1,4 --seconds "$SECS" --window "$WINDOW" \
  --no-populate | tee -a "$WORK/disc.jsonl"

echo "== plh-ctl list --json with $CHANNELS channels"
COUNT=$("$BIN/plh-ctl" --broker "$EP" list --json | sed -E 's/^\{"broker":"[^"]*","count":([0-9]+).*/\1/')
echo "channels listed: $COUNT, document size: $("$BIN/plh-ctl" --broker "$EP" list --json | wc -c) bytes"
if command -v hyperfine > /dev/null; then
  hyperfine -N --warmup 3 --runs 20 "$BIN/plh-ctl --broker $EP list --json" --export-json "$WORK/list.json" 2>&1 | sed -n '1,4p'
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
