#!/usr/bin/env bash
# Fuzzes the API against its own OpenAPI document with schemathesis (property-based): a fresh
# server (SQLite, its own data directory, a free loopback port) is started, schemathesis reads
# /api/v1/openapi.json and sends generated requests, valid and invalid, to every operation, then
# chains them along the document's links (stateful phase). It fails on any 5xx, any status the
# document does not list, any response whose body, content type or headers the document does not
# describe, and on the request checks of scripts/fuzz-api.toml (a schema-violating request
# accepted, a deleted resource still there, a created one missing, a request without the token
# let through...).
#
# Called by scripts/test.sh; alone: scripts/fuzz-api.sh [target/debug/cronium]
#   CRONIUM_FUZZ_EXAMPLES  examples per operation (default 40; a run takes about a minute)
#   CRONIUM_FUZZ_SEED      a seed to replay a run (schemathesis prints the one it used)
#
# Schemathesis is installed (pinned) into a venv under $CRONIUM_TEST_DIR, never into the
# system Python.
#
# What is not fuzzed, and why:
#   - GET /api/v1/jobs/{id}/logs/stream: the live log answers with a stream that stays open
#     until the job ends, and the fuzz server runs no agent (below), so a queued job's stream
#     never ends. tests/openapi.rs checks the stream's status, content type and events.
#   - GET /api/v1/workflow-runs/{id}/logs: the same, for a workflow run (its node jobs stay
#     queued, so the run never ends).
#   - POST /api/v1/servers/{name}/test: it opens an SSH connection to the host the server names,
#     and the fuzzer registers servers with any host name or address; tests must never dial
#     hosts off this machine. tests/openapi.rs tests it against a loopback port.
#   - POST /api/v1/channels/{name}/test: it sends a message to the URL or SMTP host the
#     channel names, and the fuzzer adds channels with any URL; tests must never dial hosts off
#     this machine. tests/openapi.rs tests it against a loopback port, tests/notify.rs against
#     real receivers.
#   - POST /api/v1/servers/deploy, /api/v1/runners/rollouts (and GET of them: an exclusion is
#     by path) and POST /api/v1/runners/rollback: they deploy runners over SSH to the servers
#     the fuzzer registered, with any host name or address. tests/openapi.rs tests them against
#     an unreachable loopback port, tests/rollout.rs against real sshd hosts.
#   - DELETE /api/v1/tokens/{id} for the fuzzer's own token (scripts/fuzz-api-hooks.py): every
#     request after it would be a 401.
# The server runs with --no-agent and --no-docker: the fuzzer creates events with generated
# scripts, HTTP requests and targets, and none of them may run. Jobs stay queued; everything
# else (events, jobs, cancel, logs, variables, tokens, servers, metrics) is fuzzed as it is.
set -euo pipefail
cd "$(dirname "$0")/.."

SCHEMATHESIS_VERSION=4.32.5
CRONIUM_TEST_DIR="${CRONIUM_TEST_DIR:-/tmp/cronium-test}"
mkdir -p "$CRONIUM_TEST_DIR"
bin="${1:-target/debug/cronium}"
examples="${CRONIUM_FUZZ_EXAMPLES:-40}"
token="crn_fuzz_$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"

venv="$CRONIUM_TEST_DIR/schemathesis-$SCHEMATHESIS_VERSION"
if [ ! -e "$venv/.installed" ]; then
    echo "installing schemathesis $SCHEMATHESIS_VERSION into $venv" >&2
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
    touch "$venv/.installed"
fi

work="$(mktemp -d "$CRONIUM_TEST_DIR/fuzz-api.XXXXXX")"
server_pid=""
cleanup() {
    if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

CRONIUM_ADMIN_TOKEN="$token" CRONIUM_LOG=warn "$bin" serve --listen 127.0.0.1:0 \
    --data-dir "$work/data" --no-agent --no-docker >"$work/stdout" 2>"$work/server.log" &
server_pid=$!
url=""
for _ in $(seq 1 600); do
    url="$(sed -n 's/^Cronium listening on \([^ ]*\).*/\1/p' "$work/stdout")"
    [ -n "$url" ] && break
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.1
done
if [ -z "$url" ]; then
    echo "fuzz-api: the server did not start" >&2
    cat "$work/stdout" "$work/server.log" >&2
    exit 1
fi

own_id="$(FUZZ_URL="$url" FUZZ_TOKEN="$token" python3 -c '
import json, os, urllib.request
req = urllib.request.Request(os.environ["FUZZ_URL"] + "/api/v1/tokens",
                             headers={"Authorization": "Bearer " + os.environ["FUZZ_TOKEN"]})
print(json.load(urllib.request.urlopen(req))[0]["id"])')"

seed_args=()
if [ -n "${CRONIUM_FUZZ_SEED:-}" ]; then seed_args=(--seed "$CRONIUM_FUZZ_SEED"); fi

# From the work directory: schemathesis keeps a cache (.schemathesis/) in its current directory.
hooks="$PWD/scripts/fuzz-api-hooks.py" config="$PWD/scripts/fuzz-api.toml"
fuzz() {
    (cd "$work" && CRONIUM_FUZZ_OWN_TOKEN_ID="$own_id" SCHEMATHESIS_HOOKS="$hooks" \
        "$venv/bin/schemathesis" --config-file "$config" run "$url/api/v1/openapi.json" \
        --header "Authorization: Bearer $token" \
        --phases examples,coverage,fuzzing,stateful \
        --max-examples "$examples" \
        --exclude-path /api/v1/jobs/{id}/logs/stream \
        --exclude-path /api/v1/workflow-runs/{id}/logs \
        --exclude-path /api/v1/servers/{name}/test \
        --exclude-path /api/v1/channels/{name}/test \
        --exclude-path /api/v1/servers/deploy \
        --exclude-path /api/v1/runners/rollouts \
        --exclude-path /api/v1/runners/rollouts/{id} \
        --exclude-path /api/v1/runners/rollback \
        --request-timeout 10 \
        --workers 1 \
        --generation-database none \
        --no-color \
        "${seed_args[@]}") >"$work/schemathesis.log" 2>&1
}
status=0
fuzz || status=$?
cat "$work/schemathesis.log"
# Hypothesis inside schemathesis occasionally fails on its own: "Inconsistent results" from an
# internal cache error, or "AST constructor recursion depth mismatch", a CPython 3.11 bug
# (python/cpython#106905, in Debian 12's 3.11.2 and pyenv's 3.11.7) in the ast module that
# hypothesis uses to describe strategies, hit when two threads build ASTs at once: hence one
# worker above (with two, it struck twice in a row on 2026-12-04). That is the harness, not a
# finding about the API. Only then, with no failure reported, the run is made once more; any
# failure stands.
if [ "$status" -ne 0 ] && ! grep -q 'Failures:' "$work/schemathesis.log" \
    && grep -q -E 'Inconsistent results|AST constructor recursion depth mismatch' "$work/schemathesis.log"; then
    echo "fuzz-api: schemathesis failed internally (no API failure reported); running it once more" >&2
    status=0
    fuzz || status=$?
    cat "$work/schemathesis.log"
fi

if grep -q 'panicked' "$work/server.log"; then
    echo "fuzz-api: the server panicked:" >&2
    grep -A5 'panicked' "$work/server.log" >&2
    status=1
fi
if [ "$status" -ne 0 ]; then
    echo "fuzz-api: FAILED (server log follows)" >&2
    tail -n 50 "$work/server.log" >&2
fi
exit "$status"
