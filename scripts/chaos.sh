#!/usr/bin/env bash
# Long fault-injection runs: builds release binaries, then runs the chaos
# suite against local clusters and prints a table (one row per run). Runs
# that found a violation or a divergent Raft log are kept, with their
# history, under ./chaos-runs.
#
#   scripts/chaos.sh --fault kill-leader --seconds 60 --seed 7
#   scripts/chaos.sh --fault all --seconds 20 --runs 60
#
# Faults: kill-node, kill-leader, kill-all, pause-node, pause-leader,
# membership, or all (take turns). `scripts/chaos.sh --help` lists every
# option; `failover` instead of options times leader failover beside etcd.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
cargo build --release --locked -p recipestore -p recipestore-chaos --bins >&2
if [[ ${1:-} == failover ]]; then
  shift
  exec "$CARGO_TARGET_DIR/release/chaos" failover "$@"
fi
exec "$CARGO_TARGET_DIR/release/chaos" run "$@"
