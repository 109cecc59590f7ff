#!/usr/bin/env bash
# Builds the local container images Cronium's container target uses by default, without any
# registry. Idempotent: an image that is already present is left alone (fast path: a few
# `docker image inspect` calls). FORCE=1 rebuilds.
#
#   scripts/build-images.sh
#
# On a fresh Debian machine it installs what it needs (mmdebstrap, busybox-static) with apt-get.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
FORCE="${FORCE:-0}"

present() { docker image inspect "$1" >/dev/null 2>&1; }

need_pkg() {
    # $1 = command or file that proves the package is there, $2 = package
    if [ ! -e "$1" ] && ! command -v "$1" >/dev/null 2>&1; then
        if [ "$(id -u)" -ne 0 ]; then
            echo "error: $2 is missing; install it (apt-get install $2) or run as root" >&2
            exit 1
        fi
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$2" >&2 \
            || { apt-get update >&2 && DEBIAN_FRONTEND=noninteractive \
                 apt-get install -y --no-install-recommends "$2" >&2; }
    fi
}

if ! docker info >/dev/null 2>&1; then
    echo "error: the Docker engine is not reachable (is dockerd running, may this user use it?)" >&2
    exit 1
fi

runtime_tags=(cronium/runtime:bookworm cronium/bash:1 cronium/python:1 cronium/node:1)
missing=0
for t in "${runtime_tags[@]}"; do present "$t" || missing=1; done
if [ "$FORCE" = 1 ] || [ "$missing" = 1 ]; then
    if present cronium/runtime:bookworm && [ "$FORCE" != 1 ]; then
        # Only an alias is missing: re-tag instead of rebuilding the rootfs.
        for t in "${runtime_tags[@]:1}"; do docker tag cronium/runtime:bookworm "$t"; done
        echo "tagged ${runtime_tags[*]:1}"
    else
        command -v mmdebstrap >/dev/null 2>&1 || command -v debootstrap >/dev/null 2>&1 \
            || need_pkg mmdebstrap mmdebstrap
        "$root/images/runtime/build.sh"
    fi
else
    echo "present: ${runtime_tags[*]}"
fi

if [ "$FORCE" = 1 ] || ! present cronium/scratch-sh:1; then
    need_pkg /bin/busybox busybox-static
    # The Debian `busybox` package is dynamic; only busybox-static gives a binary usable in scratch.
    if ! ldd /bin/busybox 2>&1 | grep -q 'not a dynamic executable'; then
        need_pkg /usr/share/doc/busybox-static busybox-static
    fi
    BUSYBOX=/bin/busybox "$root/images/scratch-sh/build.sh"
else
    echo "present: cronium/scratch-sh:1"
fi
