#!/usr/bin/env bash
# Builds the static cronium-runner binary (the one shipped to containers and SSH hosts), checks
# that it is fully static and at most 3 MB, and prints its path on the last line.
#
# Usage: scripts/build-runner.sh
set -euo pipefail

cd "$(dirname "$0")/.."

target=x86_64-unknown-linux-gnu
max_bytes=$((3 * 1024 * 1024))

# crt-static links glibc statically: the binary then runs on any x86_64 Linux, including Alpine
# (musl) and a bare `FROM scratch` image. --target keeps these flags away from host builds.
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
    cargo build --profile release-runner -p cronium-runner --target "$target" >&2

target_dir=$(cargo metadata --format-version 1 --no-deps \
    | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
bin="${target_dir:-target}/$target/release-runner/cronium-runner"

if [ ! -x "$bin" ]; then
    echo "error: $bin was not built" >&2
    exit 1
fi

if command -v file >/dev/null; then
    description=$(file -b "$bin")
    echo "file: $description" >&2
    case "$description" in
        *"dynamically linked"*)
            echo "error: $bin is dynamically linked" >&2
            exit 1
            ;;
    esac
fi
# ldd prints "not a dynamic executable" (and fails) for a static binary.
if ldd_out=$(ldd "$bin" 2>&1); then
    if ! grep -q "statically linked" <<<"$ldd_out"; then
        echo "error: $bin has dynamic dependencies:" >&2
        echo "$ldd_out" >&2
        exit 1
    fi
fi

size=$(stat -c %s "$bin")
echo "size: $size bytes (limit $max_bytes)" >&2
if [ "$size" -gt "$max_bytes" ]; then
    echo "error: $bin is larger than 3 MB" >&2
    exit 1
fi

"$bin" --version >&2
echo "$bin"
