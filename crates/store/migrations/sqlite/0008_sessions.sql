-- Web UI sessions and failed-login counters. SQLite dialect; keep in step with
-- migrations/postgres/0008_sessions.sql.
--
-- sessions: the cookie holds `id.secret`; only the SHA-256 of the secret is stored. A session
-- ends at `expires_at` (absolute) or when `last_seen_at` is older than the idle limit the
-- server applies. `csrf_token` is compared with every state-changing page request.
-- login_failures: one row per key (`user:NAME`, `addr:IP`), counting failures since the last
-- success; the server derives the delay before the next attempt from `failures` and `last_at`.

CREATE TABLE sessions (
    id TEXT PRIMARY KEY,
    secret_hash TEXT NOT NULL,
    user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    csrf_token TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    last_seen_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX sessions_expires ON sessions (expires_at);

CREATE TABLE login_failures (
    key TEXT PRIMARY KEY,
    failures INTEGER NOT NULL,
    last_at INTEGER NOT NULL
);

-- The job list's server filter (jobs that ran on a server, newest first), and an event's
-- history (its newest jobs) without sorting all of them.
CREATE INDEX executions_server ON executions (server, job_id) WHERE server IS NOT NULL;
CREATE INDEX jobs_event_id ON jobs (event_id, id);
