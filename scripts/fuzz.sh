#!/usr/bin/env bash
# Runs the property tests of the decoders of untrusted bytes (Raft messages
# and snapshot headers from peers, snapshot files, identity stamps) for many
# more cases than the test suite does, and says how many each ran.
#
#   scripts/fuzz.sh [CASES]      # default 100000 cases per target
set -euo pipefail
cd "$(dirname "$0")/.."

case "${1:-}" in
  -h|--help) sed -n '2,6p' "$0"; exit 0 ;;
esac
cases=${1:-100000}

targets=(
  server::transport::tests::any_payload_decodes_or_is_invalid_argument
  server::transport::tests::a_damaged_append_decodes_or_is_invalid_argument
  raft::snapshot_file::tests::any_damage_reads_as_the_recipes_or_an_error
  raft::snapshot_file::tests::arbitrary_bytes_are_refused_or_read
  identity::tests::any_stamp_bytes_open_or_are_refused
)
cargo test --locked -p recipestore --lib --no-run
for target in "${targets[@]}"; do
  started=$(date +%s)
  PROPTEST_CASES=$cases cargo test --locked --quiet -p recipestore --lib -- --exact "$target" >/dev/null
  echo "$target: $cases cases passed in $(( $(date +%s) - started )) s"
done
