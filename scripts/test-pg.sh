#!/usr/bin/env bash
# Start (or reuse) a throwaway PostgreSQL server for the store's conformance tests.
#
# Idempotent: if something already listens on 127.0.0.1:55432 it is reused as is. Otherwise a
# cluster is created in ${CRONIUM_TEST_DIR:-/tmp/cronium-test}/pg (owned by the `postgres` OS user,
# because initdb refuses to run as root), with trust auth on loopback and fsync off (test data is
# disposable, speed matters), and started with pg_ctl. PostgreSQL is installed with apt-get when no
# /usr/lib/postgresql/*/bin/initdb exists. The last line printed is the export to eval:
#   eval "$(scripts/test-pg.sh | tail -n1)"
set -euo pipefail

PORT=55432
HOST=127.0.0.1
BASE="${CRONIUM_TEST_DIR:-/tmp/cronium-test}"
DATA="$BASE/pg"
URL="postgres://postgres@$HOST:$PORT/postgres"

log() { echo "test-pg: $*" >&2; }

listening() {
    # bash's /dev/tcp avoids depending on nc/ss being installed.
    (exec 3<>"/dev/tcp/$HOST/$PORT") 2>/dev/null
}

find_bindir() {
    local d
    for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        if [ -x "$d/initdb" ]; then
            echo "$d"
            return 0
        fi
    done
    return 1
}

# Run a command as the postgres OS user (we are usually root; initdb and postgres refuse root).
as_pg() {
    if [ "$(id -u)" = "0" ]; then
        if command -v runuser >/dev/null 2>&1; then
            runuser -u postgres -- "$@"
        else
            su postgres -s /bin/sh -c "$(printf '%q ' "$@")"
        fi
    else
        "$@"
    fi
}

if listening; then
    log "reusing the server already listening on $HOST:$PORT"
    echo "export CRONIUM_TEST_PG_URL=$URL"
    exit 0
fi

if ! BIN="$(find_bindir)"; then
    log "PostgreSQL binaries not found, installing the postgresql package"
    SUDO=""
    [ "$(id -u)" = "0" ] || SUDO="sudo"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql >&2 \
        || { $SUDO apt-get update >&2 && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql >&2; }
    # The Debian package starts its own cluster on 5432; it does not disturb ours on $PORT.
    BIN="$(find_bindir)" || { log "initdb still missing after installing postgresql"; exit 1; }
fi

if [ "$(id -u)" = "0" ] && ! id postgres >/dev/null 2>&1; then
    log "creating the postgres OS user"
    useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
fi

mkdir -p "$BASE"
# The postgres user must be able to reach the data directory's parent.
chmod a+rx "$BASE"
if [ "$(id -u)" = "0" ]; then
    mkdir -p "$DATA"
    chown postgres: "$DATA"
fi
chmod 700 "$DATA" 2>/dev/null || true

if [ ! -f "$DATA/PG_VERSION" ]; then
    log "initdb in $DATA"
    as_pg "$BIN/initdb" -D "$DATA" -U postgres --auth=trust --encoding=UTF8 --locale=C.UTF-8 >&2 \
        || as_pg "$BIN/initdb" -D "$DATA" -U postgres --auth=trust --encoding=UTF8 --no-locale >&2
    cat >>"$DATA/postgresql.conf" <<CONF
# cronium test cluster: disposable data, tuned for speed
listen_addresses = '$HOST'
port = $PORT
unix_socket_directories = '$DATA'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 300
shared_buffers = 128MB
CONF
    cat >"$DATA/pg_hba.conf" <<HBA
local all all trust
host all all 127.0.0.1/32 trust
host all all ::1/128 trust
HBA
fi

# A stale postmaster.pid from an unclean shutdown blocks pg_ctl; drop it when no process holds it.
if [ -f "$DATA/postmaster.pid" ]; then
    pid="$(head -n1 "$DATA/postmaster.pid")"
    if ! kill -0 "$pid" 2>/dev/null; then
        log "removing stale postmaster.pid"
        rm -f "$DATA/postmaster.pid"
    fi
fi

log "starting PostgreSQL on $HOST:$PORT"
as_pg "$BIN/pg_ctl" -D "$DATA" -l "$DATA/server.log" -w -t 60 start >&2 || {
    log "pg_ctl start failed; server log:"
    tail -n 30 "$DATA/server.log" >&2 || true
    exit 1
}

for _ in $(seq 1 100); do
    if listening; then
        echo "export CRONIUM_TEST_PG_URL=$URL"
        exit 0
    fi
    sleep 0.1
done
log "PostgreSQL did not start listening on $HOST:$PORT"
exit 1
