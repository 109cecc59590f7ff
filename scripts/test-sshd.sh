#!/usr/bin/env bash
# Prepares this machine for the cronium-ssh tests (idempotent, needs root):
# - installs openssh-server when /usr/sbin/sshd is missing;
# - creates the login user `cronium-test` with /bin/bash as a plain shell (no rc files that run
#   slow tools) and a known password, so both key and password logins can be tested, and
#   `cronium-test-sh` likewise with /bin/sh (a login shell that is not bash);
# - creates /run/sshd (sshd's privilege separation directory).
# The test support (crates/ssh/tests/support) runs this script, then starts its own sshd
# instances on 127.0.0.1 with per-instance host keys; nothing here touches the system sshd.
set -euo pipefail

USER_NAME="${CRONIUM_TEST_USER:-cronium-test}"
PASSWORD="${CRONIUM_TEST_PASSWORD:-cronium-test-password}"

if [ "$(id -u)" -ne 0 ]; then
    echo "test-sshd.sh: must run as root (creates a user, starts sshd)" >&2
    exit 1
fi

if [ ! -x /usr/sbin/sshd ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq openssh-server >/dev/null
    # The package enables the system service; the tests do not need it.
    systemctl disable --now ssh 2>/dev/null || true
fi

# The second user's login shell is not bash (direct-ssh has a path for each case).
for spec in "$USER_NAME:/bin/bash" "$USER_NAME-sh:/bin/sh"; do
    name="${spec%%:*}"
    shell="${spec#*:}"
    if ! id "$name" >/dev/null 2>&1; then
        useradd --create-home --shell "$shell" "$name"
    fi
    # A plain shell: no rc files, so every exec costs only the shell's own start-up.
    home="$(getent passwd "$name" | cut -d: -f6)"
    rm -f "$home/.bashrc" "$home/.bash_profile" "$home/.profile" "$home/.bash_logout"
    # sshd without PAM refuses any login to an account whose password is locked ('!').
    echo "$name:$PASSWORD" | chpasswd
done
home="$(getent passwd "$USER_NAME" | cut -d: -f6)"

mkdir -p /run/sshd
chmod 755 /run/sshd
echo "ok: sshd $(/usr/sbin/sshd -V 2>&1 | head -1), users $USER_NAME (home $home) and $USER_NAME-sh"
