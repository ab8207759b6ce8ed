#!/usr/bin/env bash
# The benchmark in one command: builds release binaries, starts a local
# 3-node RecipeStore cluster and a 3-member etcd cluster on loopback, runs the
# write/read comparison on both (printing the ratios), a 100k-recipe load
# into empty clusters and a new member's catch-up from it, the seed workload, the
# overload sweep (a second cluster with shedding off as the control) and the
# replicas x clients grid, and writes JSON results and PNG plots to
# docs/bench/. Everything it starts is stopped on exit.
#
#   scripts/bench.sh                     # everything (about 10 minutes)
#   BENCH_SKIP=grid,sweep scripts/bench.sh
#
# Environment: BENCH_DURATION (seconds per measured run, default 10),
# BENCH_CLIENTS (default 64), BENCH_SEED_RATE (seed base rate, req/s,
# default 1500; spikes offer 3.5x), BENCH_SEED_DURATION (default 60), BENCH_OUT (default
# docs/bench), BENCH_SKIP (comma list of compare,load,seed,sweep,grid,fsync,failover),
# BENCH_LOAD_KEYS (recipes of the load step, default 100000),
# BENCH_FAILOVER_REPS (leader kills per system, default 10).
set -euo pipefail
cd "$(dirname "$0")/.."

out=${BENCH_OUT:-docs/bench}
duration=${BENCH_DURATION:-10}
clients=${BENCH_CLIENTS:-64}
seed_rate=${BENCH_SEED_RATE:-1500}
seed_duration=${BENCH_SEED_DURATION:-60}
skip=",${BENCH_SKIP:-},"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
ctl=$CARGO_TARGET_DIR/release/recipectl
work=$(mktemp -d -t recipestore-bench.XXXXXX)
mkdir -p "$out"

wants() { [[ $skip != *",$1,"* ]]; }

# The servers (nodes, etcd) and the load generator get separate CPUs, as
# they would separate machines: sharing them, the generator starves the
# nodes it measures, and overload shows up as the generator's own lag
# rather than as the servers' behaviour. Half the CPUs each (1 and 1 here).
cpus=$(nproc)
if ((cpus >= 2)); then
  pin_load=(taskset -c "0-$((cpus / 2 - 1))")
  pin_servers=(taskset -c "$((cpus / 2))-$((cpus - 1))")
else
  pin_load=()
  pin_servers=()
fi

pids=()
stop_all() {
  trap - EXIT INT TERM
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap stop_all EXIT
trap 'stop_all; exit 130' INT
trap 'stop_all; exit 143' TERM

# Stops one process started here (its id is the last of pids).
stop_last() {
  local pid=${pids[-1]}
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  unset 'pids[-1]'
}

# start_store NAME BASE_PORT [VAR=value...]: a 3-node cluster in the
# background; sets `endpoints` to its client endpoints once it has a leader.
start_store() {
  local name=$1 port=$2
  shift 2
  env "$@" "${pin_servers[@]}" "$ctl" local up --nodes 3 --data-dir "$work/$name" --base-port "$port" \
    >"$work/$name.out" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 300); do
    if [[ -s $work/$name/endpoints ]]; then
      endpoints=$(cat "$work/$name/endpoints")
      return
    fi
    sleep 0.1
  done
  echo "cluster $name did not start:" >&2
  cat "$work/$name.out" >&2
  exit 1
}

echo "--- build"
cargo build --release --locked -p recipestore -p recipectl --bin recipectl --bin recipestore-node

echo "--- machine"
{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "kernel: $(uname -r)"
  echo "cpus: $(nproc) ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'))"
  echo "memory: $(free -h | awk '/^Mem:/ {print $2}')"
  echo "disk: $(df -h "$work" | awk 'NR==2 {print $1" ("$2", "$5" used)"}'), filesystem $(stat -f -c %T "$work")"
  echo "etcd: $(etcd --version 2>/dev/null | head -1 || echo 'not installed yet')"
  echo "rustc: $(rustc --version)"
} | tee "$out/machine.txt"

if wants fsync; then
  echo "--- fsync floor (2000 x pwrite 4 KiB + fdatasync into a preallocated file, same disk)"
  "${pin_servers[@]}" python3 - "$work/fsync.dat" <<'EOF' | tee "$out/fsync.json"
import json, os, sys, time
# The way the Raft log syncs: its segments are written once when allocated,
# so a later fdatasync carries the new data and no file metadata.
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
zeros = b"\0" * (1 << 20)
for _ in range(16):
    os.write(fd, zeros)
os.fsync(fd)
block = b"r" * 4096
lat = []
for i in range(2000):
    t = time.perf_counter()
    os.pwrite(fd, block, i * len(block))
    os.fdatasync(fd)
    lat.append((time.perf_counter() - t) * 1000)
os.close(fd)
os.unlink(sys.argv[1])
lat.sort()
pick = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))]
print(json.dumps({"iterations": len(lat), "mean_ms": sum(lat) / len(lat),
                  "p50_ms": pick(0.5), "p99_ms": pick(0.99), "max_ms": lat[-1],
                  "fsyncs_per_sec": len(lat) / (sum(lat) / 1000)}))
EOF
fi

if wants failover; then
  echo "--- failover: SIGKILL the leader, time the first write through the survivors (RecipeStore, then etcd)"
  cargo build --release --locked -p recipestore-chaos --bin chaos
  command -v etcd >/dev/null || apt-get install -y -qq etcd-server >/dev/null
  "${pin_servers[@]}" "$CARGO_TARGET_DIR/release/chaos" failover --reps "${BENCH_FAILOVER_REPS:-10}" \
    --dir "$work/failover" | tee "$out/failover.txt"
fi

echo "--- RecipeStore clusters: shedding on (default) and off (control)"
# Without a cgroup CPU controller the node would sample the whole host; on a
# machine shared with other work (builds, etcd, the load generator) that sheds
# for load the node did not cause. Measure the node's own CPU instead.
start_store shed-on 27070 RECIPESTORE_CPU_FALLBACK=process
store=$endpoints
store_peers=$(cat "$work/shed-on/peers")
echo "shedding on:  $store"
start_store shed-off 27170 RECIPESTORE_SHED_ENABLED=false
control=$endpoints
control_peers=$(cat "$work/shed-off/peers")
echo "shedding off: $control"

if wants compare; then
  echo "--- etcd cluster"
  "${pin_servers[@]}" scripts/etcd-cluster.sh --data-dir "$work/etcd" --base-port 23790 >"$work/etcd.out" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 150); do [[ -s $work/etcd/endpoints ]] && break; sleep 0.2; done
  [[ -s $work/etcd/endpoints ]] || { cat "$work/etcd.out" >&2; exit 1; }
  etcd_endpoints=$(cat "$work/etcd/endpoints")
  echo "endpoints: $etcd_endpoints"
  # The default cluster, shedding on: it must shed nothing at a load etcd
  # serves without errors, and the shed columns show whether it does.
  echo "--- compare: RecipeStore (defaults) vs etcd"
  "${pin_load[@]}" "$ctl" bench --profile compare --endpoints "$store" --etcd-endpoints "$etcd_endpoints" \
    --clients "$clients" --duration "$duration" --json-out "$out/compare.json"
  stop_last
fi

if wants load; then
  load_keys=${BENCH_LOAD_KEYS:-100000}
  echo "--- load: $load_keys x 1 KiB recipes by 64 writers into an empty cluster; time, disk, memory (RecipeStore, then etcd)"
  # measure_load NAME ENDPOINTS DIR PATTERN: loads the cluster of system
  # NAME, then records its data directory's size and the summed RSS of the
  # processes whose command line matches PATTERN.
  measure_load() {
    local name=$1 eps=$2 dir=$3 pattern=$4
    "${pin_load[@]}" "$ctl" bench --target "$name" --profile read --endpoints "$eps" --keys "$load_keys" \
      --clients 64 --duration 1 --no-progress --json-out "$work/load-$name.json" >/dev/null
    sync
    local rss_kib=0 pid
    for pid in $(pgrep -f "$pattern"); do
      rss_kib=$((rss_kib + $(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status")))
    done
    python3 - "$work/load-$name.json" "$name" "$(du -sk "$dir" | cut -f1)" "$rss_kib" "$load_keys" <<'EOF'
import json, sys
setup = json.load(open(sys.argv[1]))["setup"]
name, disk_kib, rss_kib, keys = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
print(json.dumps({"system": name, "recipes": keys, "loaded": setup["good"],
                  "not_loaded": keys - setup["good"], "seconds": setup["good"] / setup["goodput"],
                  "recipes_per_sec": setup["goodput"], "disk_mib": disk_kib / 1024,
                  "rss_mib_all_members": rss_kib / 1024}))
EOF
  }
  start_store load 27270 RECIPESTORE_CPU_FALLBACK=process
  measure_load recipestore "$endpoints" "$work/load" "recipestore-node.*$work/load/" | tee "$out/load.json"
  echo "--- catch-up: an empty fourth node joins the loaded cluster as a learner (snapshot install, then the log's tail)"
  # Laid out as `local up` lays out a node of id 3; `member add-learner`
  # returns once the learner has replicated the log up to its own admission.
  learner_port=$((27270 + 30))
  "${pin_servers[@]}" "$CARGO_TARGET_DIR/release/recipestore-node" --id 3 --data-dir "$work/load/node-3" \
    --client-addr "127.0.0.1:$learner_port" --peer-addr "127.0.0.1:$((learner_port + 1))" \
    --http-addr "127.0.0.1:$((learner_port + 2))" >"$work/load/node-3.log" 2>&1 &
  pids+=($!)
  # The clock starts once the node serves, so it times the catch-up alone.
  for _ in $(seq 1 100); do
    curl -sf "http://127.0.0.1:$((learner_port + 2))/healthz" >/dev/null && break
    sleep 0.1
  done
  started=$(date +%s.%N)
  "${pin_load[@]}" "$ctl" --peers "$(cat "$work/load/peers")" --timeout-ms 600000 member add-learner 3 \
    --peer-addr "127.0.0.1:$((learner_port + 1))" --client-addr "127.0.0.1:$learner_port" >/dev/null
  caught_up=$(date +%s.%N)
  python3 - "$started" "$caught_up" "$load_keys" "$(du -sk "$work/load/node-3" | cut -f1)" <<'EOF' |
import json, sys
seconds = float(sys.argv[2]) - float(sys.argv[1])
keys, disk_kib = int(sys.argv[3]), int(sys.argv[4])
content_mb = keys * 1024 / 1e6
print(json.dumps({"recipes": keys, "seconds": seconds, "recipes_per_sec": keys / seconds,
                  "content_mb_per_sec": content_mb / seconds, "learner_disk_mib": disk_kib / 1024}))
EOF
    tee "$out/catch-up.json"
  stop_last
  stop_last
  "${pin_servers[@]}" scripts/etcd-cluster.sh --data-dir "$work/etcd-load" --base-port 23890 >"$work/etcd-load.out" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 150); do [[ -s $work/etcd-load/endpoints ]] && break; sleep 0.2; done
  [[ -s $work/etcd-load/endpoints ]] || { cat "$work/etcd-load.out" >&2; exit 1; }
  measure_load etcd "$(cat "$work/etcd-load/endpoints")" "$work/etcd-load" "etcd --name .*$work/etcd-load/" |
    tee -a "$out/load.json"
  stop_last
fi

# A step that fails is reported and the others still run.
failed_steps=()

if wants seed; then
  # Shedding keys on the CPU of the container, or of the host when there is
  # no quota: on a shared machine the default cluster may shed every upload,
  # so the seed runs on the control cluster too.
  # The control runs without any overload protection: its clients do not
  # throttle themselves either.
  for run in "shed-off|$control|--throttle-ratio=0" "shed-on|$store|"; do
    IFS='|' read -r name eps extra <<<"$run"
    echo "--- seed workload ($name)"
    "${pin_load[@]}" "$ctl" bench --profile seed --endpoints "$eps" ${extra:+"$extra"} --clients "$clients" \
      --rate "$seed_rate" --duration "$seed_duration" \
      --plot "$out/seed-$name.png" --json-out "$out/seed-$name.json" ||
      failed_steps+=("seed ($name)")
  done
fi

# The highest Raft term among the members of the cluster with admin ports
# $1: an election anywhere raises it.
max_term() {
  "$ctl" --peers "$1" --output json status |
    python3 -c 'import json, sys; print(max(row.get("term", 0) for row in json.load(sys.stdin)))'
}

if wants sweep; then
  # The protected cluster goes first (and its capacity is the reference), so
  # its figures do not depend on how the control, on the same CPU, recovers
  # from its collapse.
  echo "--- overload sweep: shedding and throttling (capacity) vs no protection (control)"
  terms_before="$(max_term "$store_peers") $(max_term "$control_peers")"
  "${pin_load[@]}" "$ctl" bench --profile sweep --endpoints "$store" --label "shedding on" \
    --baseline-endpoints "$control" --baseline-label "shedding off" --baseline-throttle-ratio 0 \
    --clients "$clients" --duration "$duration" \
    --plot "$out/sweep.png" --json-out "$out/sweep.json" ||
    failed_steps+=("sweep")
  read -r on_before off_before <<<"$terms_before"
  echo "elections during the sweep (term changes): shedding on $(($(max_term "$store_peers") - on_before)), shedding off $(($(max_term "$control_peers") - off_before))" |
    tee "$out/sweep-elections.txt"
fi

if wants grid; then
  # The grid starts its own clusters (unpinned: they and the generator
  # share every CPU): stop the shared ones first. It measures latency by
  # size, so its clusters run with shedding off.
  stop_last
  stop_last
  echo "--- grid: replicas x nodes x clients"
  RECIPESTORE_SHED_ENABLED=false "$ctl" bench --profile grid \
    --grid-replicas 1,3,5 --grid-nodes 1,3,5 \
    --grid-clients 1,16,64 --duration 5 --base-port 28000 \
    --json-out "$out/grid.json" || failed_steps+=("grid")
fi

if [[ ${#failed_steps[@]} -gt 0 ]]; then
  echo "--- failed: ${failed_steps[*]}; other results in $out/" >&2
  exit 1
fi
echo "--- done: results in $out/"
