#!/usr/bin/env bash
# The migration benchmark: a 3-node store of one shard loaded with
# BENCH_RESHARD_KEYS recipes of 1 KiB is restarted as two shards
# (`recipectl local up --shards 2`), which moves half the slots to the new
# shard while 16 closed-loop clients upload over every key (writes to a
# slot in its switch wait); the same clients run on the one-shard store
# first, as the baseline. Prints the migration rate
# (from `local up`) and the foreground latency of both runs, for each
# copy rate in BENCH_RESHARD_RATES (MB/s). Nodes on CPU 1, the client on CPU 0.
#
#   scripts/bench-reshard.sh
#   BENCH_RESHARD_KEYS=20000 BENCH_RESHARD_RATES=8 scripts/bench-reshard.sh
set -euo pipefail
cd "$(dirname "$0")/.."

keys=${BENCH_RESHARD_KEYS:-100000}
rates=${BENCH_RESHARD_RATES:-32 8}
duration=${BENCH_RESHARD_DURATION:-20}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
ctl=$CARGO_TARGET_DIR/release/recipectl
port=${BENCH_RESHARD_PORT:-26100}
work=$(mktemp -d -t recipestore-reshard.XXXXXX)
up=""

stop() {
  if [[ -n $up ]]; then
    kill -TERM "$up" 2>/dev/null || true
    wait "$up" 2>/dev/null || true
    up=""
  fi
}
trap 'stop; rm -rf "$work"' EXIT

cargo build --release --locked -p recipestore -p recipectl >/dev/null

# Starts `local up` on CPU 1 with the given flags; waits until its nodes
# answer (status through every peer).
start() {
  RECIPESTORE_CPU_FALLBACK=process taskset -c 1 "$ctl" local up --data-dir "$data" \
    --base-port "$port" "$@" >"$work/up.log" 2>&1 &
  up=$!
  for _ in $(seq 600); do
    if [[ -s $data/peers ]] && "$ctl" --peers "$(cat "$data/peers")" status >/dev/null 2>&1; then
      return
    fi
    sleep 0.1
  done
  echo "the store did not start:" >&2
  cat "$work/up.log" >&2
  exit 1
}

# The foreground: 16 closed-loop writers of 1 KiB over every key.
foreground() {
  taskset -c 0 "$ctl" bench --profile write --target recipestore --clients 16 \
    --keys "$keys" --duration "$1" --endpoints "$(cat "$data/endpoints")" --no-progress |
    grep -E '^upload'
}

for rate in $rates; do
  data=$work/store-$rate
  start --shards 1
  taskset -c 0 "$ctl" bench --profile read --target recipestore --clients 64 --keys "$keys" \
    --duration 1 --endpoints "$(cat "$data/endpoints")" --no-progress >/dev/null
  echo "== copy rate $rate MB/s, $keys recipes"
  echo "-- one shard, steady"
  foreground "$duration"
  stop
  rm -f "$data/peers"
  # The first shard's nodes come back on the same ports: the client starts
  # as soon as they answer, while the slots move.
  start --shards 2 --move-rate-mb "$rate"
  echo "-- while half the slots move to a second shard"
  foreground "$duration"
  grep -E '^moved ' "$work/up.log" || { cat "$work/up.log"; exit 1; }
  stop
done
