#!/usr/bin/env bash
# Live demo: installs what is missing, builds, then runs a broker, a pub/sub stream,
# a live channel visible in `plh-ctl list`/`stats`, and a shared-memory ring.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DPLH_BUILD_TESTS=OFF -DPLH_BUILD_BENCH=OFF >/dev/null
cmake --build build -j"$(nproc)" >/dev/null
# As root: installed under /usr/local (tools, man pages, shell completion, libplh.so +
# plh.h, and the Python package, so that `python3 -c 'import plh'` works afterwards).
if [ "$(id -u)" -eq 0 ]; then
  cmake --install build >/dev/null
  ldconfig 2>/dev/null || true
  echo "installed under /usr/local; /usr/bin/python3 -c 'import plh' works"
fi
export PATH="$PWD/build/bin:$PATH"

tmp=$(mktemp -d)
pids=()
cleanup() {
  # Newest first: publishers deregister while the broker is still there.
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do kill "${pids[i]}" 2>/dev/null || true; wait "${pids[i]}" 2>/dev/null || true; done
  wait 2>/dev/null || true
  plh-shm rm "demo-$$" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "plh-broker on an ephemeral port (its ready line names the endpoint)"
mkfifo "$tmp/ready"
plh-broker --endpoint tcp://127.0.0.1:0 >"$tmp/ready" 2>"$tmp/broker.log" &
pids+=($!)
read -r -t 10 ready <"$tmp/ready"
echo "$ready"
PLH_BROKER=$(sed -n 's/.*"endpoint":"\([^"]*\)".*/\1/p' <<<"$ready")
export PLH_BROKER

step "seq 100000 | plh-pub demo.numbers   and   plh-sub demo.numbers | wc -l"
plh-sub --wait -W 30 demo.numbers | wc -l >"$tmp/count" &
sub=$!
seq 100000 | plh-pub -w 1 demo.numbers
wait "$sub"
echo "subscriber received $(cat "$tmp/count") lines and exited by itself"

step "a live channel: a clock publishing 20 lines/s"
(while true; do date +%T.%N; sleep 0.05; done) | plh-pub demo.clock &
pids+=($!)
plh-ctl wait demo.clock -W 10
plh-sub -n 3 demo.clock

step "plh-ctl list"
plh-ctl list
step "plh-ctl stats (rates from heartbeat metrics)"
sleep 1.5   # let a couple of heartbeats carry counters
plh-ctl stats

step "shared memory: seq 1000 | plh-shm write demo-$$ --create ...; plh-shm read demo-$$ --from oldest"
seq 1000 | plh-shm write "demo-$$" --create --slots 64 --slot-size 4096 --checksum xxh3
plh-shm read "demo-$$" --from oldest | tail -n 3
plh-shm info "demo-$$"
plh-shm rm "demo-$$"

step "demo done"
