#!/usr/bin/env bash
# Builds the static cronium-runner binary (the one shipped to containers and SSH hosts), checks
# that it is fully static and at most 3 MB, and prints its path on the last line.
#
# Usage: scripts/build-runner.sh           the runner of this tree (x86_64, and aarch64)
#        scripts/build-runner.sh --next    a second x86_64 runner of the same source that reports
#                                          VERSION-next, at target/runner/next/cronium-runner (with
#                                          its cronium-runner.json): the "new version" of the
#                                          rollout tests. Its own CARGO_TARGET_DIR
#                                          (target/runner-next-build), so the two builds never
#                                          invalidate each other and a second call is a no-op.
set -euo pipefail

cd "$(dirname "$0")/.."

next=0
if [ "${1:-}" = "--next" ]; then
    next=1
elif [ -n "${1:-}" ]; then
    echo "usage: scripts/build-runner.sh [--next]" >&2
    exit 2
fi

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

if [ "$next" = 1 ]; then
    target_dir=$(cargo metadata --format-version 1 --no-deps \
        | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
    target_dir="${target_dir:-target}"
    base_version=$(cargo metadata --format-version 1 --no-deps \
        | sed -n 's/.*"name":"cronium-runner","version":"\([^"]*\)".*/\1/p')
    if [ -z "$base_version" ]; then
        echo "error: cannot read the cronium-runner package version from cargo metadata" >&2
        exit 1
    fi
    next_version="$base_version-next"
    CARGO_TARGET_DIR="$target_dir/runner-next-build" CRONIUM_RUNNER_VERSION="$next_version" \
        RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
        cargo build --profile release-runner -p cronium-runner --target "$target" >&2
    built="$target_dir/runner-next-build/$target/release-runner/cronium-runner"
    bin="$target_dir/runner/next/cronium-runner"
    mkdir -p "$(dirname "$bin")"
    if ! cmp -s "$built" "$bin"; then
        cp "$built" "$bin.tmp.$$"
        mv -f "$bin.tmp.$$" "$bin"
    fi
    reported=$("$bin" --version | sed -n 's/^cronium-runner //p')
    if [ "$reported" != "$next_version" ]; then
        echo "error: $bin reports '$reported', expected '$next_version'" >&2
        exit 1
    fi
    sum=$(sha256sum "$bin" | cut -d' ' -f1)
    printf '{"version": "%s", "sha256": "%s"}\n' "$next_version" "$sum" >"$(dirname "$bin")/cronium-runner.json"
    echo "next: $next_version" >&2
    echo "$bin"
    exit 0
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
version=$("$bin" --version | sed -n 's/^cronium-runner //p')

# The manifest next to each per-architecture binary: how the server learns the version of a
# binary it cannot run (the aarch64 one on an x86_64 server; it checks the sha256 against the
# file, so a manifest left from another build is refused). Both binaries come from this one
# source tree, so the host build's --version is theirs.
write_manifest() {
    local file=$1 sum
    sum=$(sha256sum "$file" | cut -d' ' -f1)
    printf '{"version": "%s", "sha256": "%s"}\n' "$version" "$sum" >"$(dirname "$file")/cronium-runner.json"
}

# One directory per architecture, for the servers (and the artifact list) to pick from:
# target/runner/linux-x86_64/ holds the host build above; linux-aarch64/ a cross build, linked
# by the toolchain's own rust-lld (musl's C runtime comes with the Rust target, so no cross C
# toolchain is needed). CRONIUM_RUNNER_ARCHS (default "x86_64 aarch64") can leave aarch64 out.
mkdir -p "$target_dir/runner/linux-x86_64"
cp "$bin" "$target_dir/runner/linux-x86_64/cronium-runner.tmp.$$"
mv -f "$target_dir/runner/linux-x86_64/cronium-runner.tmp.$$" "$target_dir/runner/linux-x86_64/cronium-runner"
write_manifest "$target_dir/runner/linux-x86_64/cronium-runner"
archs="${CRONIUM_RUNNER_ARCHS:-x86_64 aarch64}"
if [[ " ${archs//,/ } " == *" aarch64 "* ]]; then
    cross=aarch64-unknown-linux-musl
    if [ -z "$sysroot" ] || [ ! -d "$sysroot/lib/rustlib/$cross" ]; then
        if ! command -v rustup >/dev/null || ! timeout 300 rustup target add "$cross" >&2; then
            echo "error: the $cross target is not installed and rustup cannot add it;" \
                "set CRONIUM_RUNNER_ARCHS=x86_64 to build for this machine only" >&2
            exit 1
        fi
    fi
    CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER=rust-lld \
        RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
        cargo build --profile release-runner -p cronium-runner --target "$cross" >&2
    cross_built="$target_dir/$cross/release-runner/cronium-runner"
    cross_bin="$target_dir/runner/linux-aarch64/cronium-runner"
    mkdir -p "$(dirname "$cross_bin")"
    cp "$cross_built" "$cross_bin.tmp.$$"
    mv -f "$cross_bin.tmp.$$" "$cross_bin"
    write_manifest "$cross_bin"
    cross_size=$(stat -c %s "$cross_bin")
    if command -v file >/dev/null; then
        description=$(file -b "$cross_bin")
        case "$description" in
            *"ARM aarch64"*"statically linked"*) ;;
            *) echo "error: $cross_bin is not a static aarch64 binary: $description" >&2; exit 1 ;;
        esac
    fi
    if [ "$cross_size" -gt "$max_bytes" ]; then
        echo "error: $cross_bin is larger than 3 MB" >&2
        exit 1
    fi
    echo "aarch64: $cross_bin, $cross_size bytes" >&2
fi
echo "$bin"
