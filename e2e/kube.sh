#!/usr/bin/env bash
# Runs the kube end-to-end suite against the cluster KUBECONFIG (or the
# current kubectl context) names, e.g. a kind cluster:
#
#   kind create cluster && bash e2e/kube.sh
#
# For a remote cluster, set RECIPESTORE_E2E_REGISTRY to a registry the
# cluster can pull from; the images are pushed there.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --workspace
RECIPESTORE_BIN_DIR="$PWD/target/release" cargo test --release -p recipestore-e2e --test it kube:: -- --nocapture
