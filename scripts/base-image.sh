#!/usr/bin/env bash
# Creates the Dockerfile's base image locally when it cannot be pulled:
# a minimal Debian bookworm root filesystem from debootstrap, imported under
# the name the Dockerfile uses, so the same Dockerfile builds with or without
# a registry.
set -euo pipefail

image="${1:-debian:bookworm-slim}"
if docker image inspect "$image" >/dev/null 2>&1; then
    echo "base image $image already present"
    exit 0
fi
if ! command -v debootstrap >/dev/null; then
    apt-get install -y debootstrap >/dev/null
fi
rootfs="$(mktemp -d)"
trap 'rm -rf "$rootfs"' EXIT
echo "building $image with debootstrap (minbase, bookworm)"
debootstrap --variant=minbase bookworm "$rootfs" http://deb.debian.org/debian >/dev/null
# Keep the image small: package caches and docs are not needed at run time.
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
    "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/*
tar -C "$rootfs" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["/bin/bash"]' - "$image" >/dev/null
echo "imported $image"
