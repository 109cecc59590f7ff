#!/usr/bin/env bash
# Builds the default Cronium runtime image WITHOUT any registry: a Debian bookworm rootfs made with
# mmdebstrap (or debootstrap), imported with `docker import`, tagged for every language.
#
#   images/runtime/build.sh            # build and tag
#   SUITE=bookworm MIRROR=http://deb.debian.org/debian images/runtime/build.sh
#
# One rootfs serves bash, python and node: the per-language tags are aliases, so that an operator can
# later point one language at a different image without touching the others.
set -euo pipefail

SUITE="${SUITE:-bookworm}"
MIRROR="${MIRROR:-http://deb.debian.org/debian}"
BASE_TAG="${BASE_TAG:-cronium/runtime:${SUITE}}"
LANG_TAGS=(${LANG_TAGS:-cronium/bash:1 cronium/python:1 cronium/node:1})
PACKAGES="bash,python3,nodejs,ca-certificates"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
tarball="$work/rootfs.tar"

if command -v mmdebstrap >/dev/null 2>&1; then
    # --variant=minbase keeps only Essential + apt; docs and locales are dropped to keep the image
    # small (the runner needs none of them).
    mmdebstrap --variant=minbase --include="$PACKAGES" \
        --dpkgopt='path-exclude=/usr/share/doc/*' \
        --dpkgopt='path-exclude=/usr/share/man/*' \
        --dpkgopt='path-exclude=/usr/share/locale/*' \
        --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
        "$SUITE" "$tarball" "$MIRROR"
elif command -v debootstrap >/dev/null 2>&1; then
    root="$work/root"
    debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$root" "$MIRROR"
    rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*
    tar -C "$root" --numeric-owner -cf "$tarball" .
else
    echo "error: neither mmdebstrap nor debootstrap is installed" >&2
    exit 1
fi

docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["/bin/bash"]' \
    --message "cronium runtime: debian ${SUITE} minbase + ${PACKAGES}" \
    "$tarball" "$BASE_TAG" >/dev/null
for tag in "${LANG_TAGS[@]}"; do
    docker tag "$BASE_TAG" "$tag"
done
echo "built $BASE_TAG ${LANG_TAGS[*]}"
