#!/usr/bin/env bash
# Builds the static cronium-runner binary (the one shipped to containers and SSH hosts), checks
# that it is fully static and at most 3 MB, and prints its path on the last line.
#
# Usage: scripts/build-runner.sh
set -euo pipefail

cd "$(dirname "$0")/.."

max_bytes=$((3 * 1024 * 1024))

# musl first: a static musl binary starts faster than a static glibc one (glibc probes the CPU
# with cpuid at every start, which is slow in a VM) and is 40 % smaller, which matters for a
# program started on every run and uploaded to every host. The target is added through rustup
# when it is missing; without it (no rustup, no network) the gnu target with a statically linked
# glibc still gives a binary that runs on any x86_64 Linux, including Alpine and `FROM scratch`.
target=x86_64-unknown-linux-musl
sysroot=$(rustc --print sysroot 2>/dev/null || true)
if [ -z "$sysroot" ] || [ ! -d "$sysroot/lib/rustlib/$target" ]; then
    if ! command -v rustup >/dev/null || ! timeout 300 rustup target add "$target" >&2; then
        echo "note: the $target target is not available; building for the gnu target" >&2
        target=x86_64-unknown-linux-gnu
    fi
fi

# --target keeps these flags away from host builds.
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
    cargo build --profile release-runner -p cronium-runner --target "$target" >&2

target_dir=$(cargo metadata --format-version 1 --no-deps \
    | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
target_dir="${target_dir:-target}"
built="$target_dir/$target/release-runner/cronium-runner"
if [ ! -x "$built" ]; then
    echo "error: $built was not built" >&2
    exit 1
fi
# One stable path whatever the target: target/runner/cronium-runner (replaced atomically).
mkdir -p "$target_dir/runner"
bin="$target_dir/runner/cronium-runner"
cp "$built" "$bin.tmp.$$"
mv -f "$bin.tmp.$$" "$bin"

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
