#!/usr/bin/env bash
# Runs a 3-member etcd cluster on loopback (Debian's etcd-server package) for
# the comparison benchmark, until interrupted; stops every member on exit.
#
#   scripts/etcd-cluster.sh [--data-dir DIR] [--base-port 23790]
#
# Member i listens for clients on base+10i and for peers on base+10i+1. The
# client endpoints are printed and written to DIR/endpoints once the cluster
# answers. The data directory is removed first: every run starts empty.
set -euo pipefail

data_dir=./data-etcd
base_port=23790
while [[ $# -gt 0 ]]; do
  case "$1" in
    --data-dir) data_dir=$2; shift 2 ;;
    --base-port) base_port=$2; shift 2 ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "unknown option: $1" >&2; exit 2 ;;
  esac
done

if ! command -v etcd >/dev/null || ! command -v etcdctl >/dev/null; then
  echo "installing etcd-server and etcd-client" >&2
  apt-get update -qq >/dev/null && apt-get install -y -qq etcd-server etcd-client >/dev/null
fi

rm -rf "$data_dir"
mkdir -p "$data_dir"

cluster=""
endpoints=""
for i in 0 1 2; do
  client=$((base_port + 10 * i))
  peer=$((client + 1))
  cluster+="${cluster:+,}etcd-$i=http://127.0.0.1:$peer"
  endpoints+="${endpoints:+,}127.0.0.1:$client"
done

pids=()
stop() {
  trap - EXIT INT TERM
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap stop EXIT
trap 'stop; exit 130' INT
trap 'stop; exit 143' TERM

for i in 0 1 2; do
  client=$((base_port + 10 * i))
  peer=$((client + 1))
  etcd --name "etcd-$i" \
    --data-dir "$data_dir/etcd-$i" \
    --listen-client-urls "http://127.0.0.1:$client" \
    --advertise-client-urls "http://127.0.0.1:$client" \
    --listen-peer-urls "http://127.0.0.1:$peer" \
    --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
    --initial-cluster "$cluster" \
    --initial-cluster-token recipestore-bench \
    --initial-cluster-state new \
    --log-level warn \
    >"$data_dir/etcd-$i.log" 2>&1 &
  pids+=($!)
done

for _ in $(seq 1 100); do
  if ETCDCTL_API=3 etcdctl --endpoints "$endpoints" endpoint health >/dev/null 2>&1; then
    echo "$endpoints" >"$data_dir/endpoints"
    echo "etcd cluster up: $endpoints"
    wait -n "${pids[@]}" || true
    echo "an etcd member exited; see $data_dir/etcd-*.log" >&2
    exit 1
  fi
  sleep 0.2
done
echo "etcd did not become healthy; see $data_dir/etcd-*.log" >&2
exit 1
