#!/usr/bin/env bash
# The SMTP server of the notification tests (crates/cli/tests/notify.rs): aiosmtpd, pinned,
# installed into a venv under $CRONIUM_TEST_DIR (never into the system Python), once. Prints
# the venv's python on its last line; the tests find it there, or in $CRONIUM_TEST_AIOSMTPD.
# Called by scripts/test.sh; alone: scripts/test-smtp.sh
set -euo pipefail
AIOSMTPD_VERSION=1.4.6
CRONIUM_TEST_DIR="${CRONIUM_TEST_DIR:-/tmp/cronium-test}"
venv="$CRONIUM_TEST_DIR/aiosmtpd-$AIOSMTPD_VERSION"
if [ ! -e "$venv/.installed" ]; then
    echo "installing aiosmtpd $AIOSMTPD_VERSION into $venv" >&2
    rm -rf "$venv"
    mkdir -p "$CRONIUM_TEST_DIR"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "aiosmtpd==$AIOSMTPD_VERSION"
    touch "$venv/.installed"
fi
echo "$venv/bin/python"
