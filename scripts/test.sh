#!/usr/bin/env bash
# The whole test suite, from a fresh Debian 12 machine with a Rust toolchain:
#   - installs what the tests need (PostgreSQL, OpenSSH server, Python, Node.js, image tools,
#     Chromium and chromium-driver for the web UI's browser tests),
#   - starts a throwaway PostgreSQL on 127.0.0.1:55432,
#   - builds the binaries, the static runner (and its `--next` twin for the rollout tests) and the container images (once; reused when present),
#   - runs every test (unit, store conformance on SQLite and PostgreSQL, integration against the
#     real binaries, sshd instances and the Docker engine), fuzzes the API against its OpenAPI
#     document (scripts/fuzz-api.sh: schemathesis, in a venv under $CRONIUM_TEST_DIR), then
#     rustfmt and clippy,
#   - installs aiosmtpd (scripts/test-smtp.sh, a venv under $CRONIUM_TEST_DIR), the real SMTP
#     server the notification tests start.
# Usage: scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."
export CRONIUM_TEST_DIR="${CRONIUM_TEST_DIR:-/tmp/cronium-test}"
mkdir -p "$CRONIUM_TEST_DIR"

step() { printf '\n==> %s\n' "$*" >&2; }

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

step "system packages"
missing=()
[ -x /usr/sbin/sshd ] || missing+=(openssh-server)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
command -v python3 >/dev/null || missing+=(python3)
# The API fuzzer (schemathesis) is installed into a venv, which Debian's python3 needs this for.
python3 -c 'import ensurepip' 2>/dev/null || missing+=(python3-venv)
command -v node >/dev/null || missing+=(nodejs)
command -v docker >/dev/null || missing+=(docker.io)
command -v mmdebstrap >/dev/null || missing+=(mmdebstrap)
[ -x /bin/busybox ] || missing+=(busybox-static)
command -v file >/dev/null || missing+=(file)
# The aarch64 runner's tests (crates/runner/tests/aarch64.rs) run it under qemu-user.
[ -x /usr/bin/qemu-aarch64-static ] || missing+=(qemu-user-static)
# The web UI's browser tests (crates/cli/tests/browser.rs) drive headless Chromium over WebDriver.
command -v chromium >/dev/null || missing+=(chromium)
command -v chromedriver >/dev/null || missing+=(chromium-driver)
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing: ${missing[*]}" >&2
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if ! docker info >/dev/null 2>&1; then
    step "starting the Docker engine"
    (as_root systemctl start docker 2>/dev/null || as_root service docker start 2>/dev/null || (as_root dockerd >/tmp/dockerd.log 2>&1 &)) || true
    for _ in $(seq 1 30); do docker info >/dev/null 2>&1 && break; sleep 1; done
fi

step "PostgreSQL"
eval "$(scripts/test-pg.sh | tail -n1)"
export CRONIUM_TEST_PG_URL

step "SMTP server for the notification tests (aiosmtpd, in a venv)"
CRONIUM_TEST_AIOSMTPD="$(scripts/test-smtp.sh | tail -n1)"
export CRONIUM_TEST_AIOSMTPD

step "build"
cargo build --workspace --all-targets
if [ -x scripts/build-runner.sh ]; then
    CRONIUM_STATIC_RUNNER="$(scripts/build-runner.sh | tail -n1)"
    # One static runner for every suite: the server's container/SSH runner, the SSH transport
    # tests (CRONIUM_RUNNER_BIN) and the container transport tests (CRONIUM_RUNNER).
    export CRONIUM_STATIC_RUNNER CRONIUM_RUNNER_BIN="$CRONIUM_STATIC_RUNNER" CRONIUM_RUNNER="$CRONIUM_STATIC_RUNNER"
    # A second runner version (same source, reporting X.Y.Z-next) for the rollout tests
    # (crates/cli/tests/rollout.rs); its own target dir, about a minute the first time, a
    # no-op after.
    CRONIUM_NEXT_RUNNER="$(scripts/build-runner.sh --next | tail -n1)"
    export CRONIUM_NEXT_RUNNER
fi

if [ -x scripts/build-images.sh ]; then
    step "container images"
    scripts/build-images.sh
fi

step "tests"
cargo test --workspace "$@"

step "API fuzzing against the OpenAPI document (schemathesis)"
scripts/fuzz-api.sh target/debug/cronium

step "rustfmt and clippy"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
echo "all checks passed" >&2
