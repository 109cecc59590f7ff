#!/usr/bin/env bash
# Builds `cronium/scratch-sh:1`: FROM scratch + Debian's static busybox as /bin/sh. No registry needed.
set -euo pipefail
TAG="${TAG:-cronium/scratch-sh:1}"
BUSYBOX="${BUSYBOX:-/bin/busybox}"
here="$(cd "$(dirname "$0")" && pwd)"

if ! file -L "$BUSYBOX" 2>/dev/null | grep -q 'statically linked' \
   && ! ldd "$BUSYBOX" 2>&1 | grep -q 'not a dynamic executable'; then
    echo "error: $BUSYBOX is not a static binary (install busybox-static)" >&2
    exit 1
fi

ctx="$(mktemp -d)"
trap 'rm -rf "$ctx"' EXIT
cp "$here/Dockerfile" "$ctx/"
cp "$BUSYBOX" "$ctx/busybox"
# The classic builder needs nothing from a registry for FROM scratch; BuildKit may try to resolve
# frontends, so it is switched off.
DOCKER_BUILDKIT=0 docker build -q -t "$TAG" "$ctx" >/dev/null
echo "built $TAG"
