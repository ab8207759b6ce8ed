#!/usr/bin/env bash
# What TLS costs: a plaintext and a TLS local cluster side by side (servers
# on the first CPU, the load generator on the second), each workload run on
# both back to back, alternated, BENCH_REPS times; prints one line per run
# (`recipectl bench`'s total row) for the medians and ratios. Everything it
# starts is stopped on exit.
#
#   scripts/bench-tls.sh          # about 5 minutes
#
# Environment: BENCH_DURATION (seconds per run, default 10), BENCH_REPS
# (default 3).
set -euo pipefail
cd "$(dirname "$0")/.."

duration=${BENCH_DURATION:-10}
reps=${BENCH_REPS:-3}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
cargo build --release --locked -p recipestore -p recipectl >&2
ctl=$CARGO_TARGET_DIR/release/recipectl
work=$(mktemp -d -t recipestore-tls-bench.XXXXXX)
pids=()
stop() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap stop EXIT

servers=0 generator=0
if (($(nproc) >= 2)); then generator=1; fi

start() { # name base-port [flags]
  local name=$1 port=$2
  shift 2
  taskset -c $servers "$ctl" local up --data-dir "$work/$name" --base-port "$port" "$@" \
    > "$work/$name.log" 2>&1 &
  pids+=($!)
}
start plain 7470
start tls 7570 --tls
for name in plain tls; do
  for _ in $(seq 1 120); do
    grep -q "Press Ctrl-C" "$work/$name.log" 2>/dev/null && break
    sleep 0.5
  done
  grep -q "Press Ctrl-C" "$work/$name.log" || { cat "$work/$name.log"; exit 1; }
done

echo "rep workload clients system: sent good shed throttled late deadline errors good/s mean p50 p90 p99 max (ms)"
for rep in $(seq 1 "$reps"); do
  for cell in "write 1" "write 64" "read 64" "read 256"; do
    read -r workload clients <<< "$cell"
    for name in plain tls; do
      flags=()
      if [[ $name == tls ]]; then flags=(--cacert "$work/tls/tls/ca.crt"); fi
      total=$(taskset -c $generator "$ctl" "${flags[@]}" --endpoints "$(cat "$work/$name/endpoints")" \
        bench --workload "$workload" --clients "$clients" --duration-secs "$duration" --no-progress \
        | grep '^total')
      echo "$rep $workload $clients $name: ${total#total}"
    done
  done
done
