-- Cronium store schema, SQLite dialect. Append-only: never edit a shipped migration, add a new one.
-- Timestamps are epoch milliseconds (INTEGER), JSON is TEXT, booleans are INTEGER 0/1.
-- Keep in step with migrations/postgres/0001_initial.sql (same tables, columns, constraint meaning).

CREATE TABLE events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    version INTEGER NOT NULL,
    status TEXT NOT NULL,
    spec TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    next_fire_at INTEGER,
    last_fired_at INTEGER
);
CREATE INDEX events_next_fire ON events (next_fire_at) WHERE next_fire_at IS NOT NULL;

CREATE TABLE event_versions (
    event_id INTEGER NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    version INTEGER NOT NULL,
    status TEXT NOT NULL,
    spec TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (event_id, version)
);

CREATE TABLE jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id INTEGER REFERENCES events (id) ON DELETE SET NULL,
    event_name TEXT NOT NULL,
    event_version INTEGER NOT NULL,
    trigger_kind TEXT NOT NULL,
    status TEXT NOT NULL,
    input TEXT NOT NULL,
    output TEXT,
    exit_code INTEGER,
    error TEXT,
    attempt INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    backoff_ms INTEGER NOT NULL,
    max_backoff_ms INTEGER NOT NULL,
    run_at INTEGER NOT NULL,
    scheduled_for INTEGER,
    serial INTEGER NOT NULL DEFAULT 0,
    timeout_ms INTEGER NOT NULL,
    lease_owner TEXT,
    lease_expires_at INTEGER,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    started_at INTEGER,
    finished_at INTEGER,
    -- one job per schedule tick: a second scheduler firing the same tick hits this
    UNIQUE (event_id, scheduled_for)
);
-- the claim predicate: oldest due queued job
CREATE INDEX jobs_claim ON jobs (run_at, id) WHERE status = 'queued';
-- lease recovery scans running jobs by expiry
CREATE INDEX jobs_lease ON jobs (lease_expires_at) WHERE status = 'running';
CREATE INDEX jobs_event_status ON jobs (event_id, status);
CREATE INDEX jobs_event_name ON jobs (event_name, id);
CREATE INDEX jobs_status ON jobs (status, id);
-- at most one running serial job per event, whatever the race between claimers
CREATE UNIQUE INDEX jobs_serial_running ON jobs (event_id) WHERE serial = 1 AND status = 'running';

CREATE TABLE executions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    attempt INTEGER NOT NULL,
    server TEXT,
    status TEXT NOT NULL,
    exit_code INTEGER,
    started_at INTEGER,
    finished_at INTEGER,
    setup_ms INTEGER,
    run_ms INTEGER,
    runner_version TEXT,
    error TEXT,
    output TEXT,
    mode TEXT,
    note TEXT,
    created_at INTEGER NOT NULL
);
CREATE INDEX executions_job ON executions (job_id, id);

CREATE TABLE logs (
    job_id INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    execution_id INTEGER,
    stream TEXT NOT NULL,
    line TEXT NOT NULL,
    ts INTEGER NOT NULL,
    PRIMARY KEY (job_id, seq)
) WITHOUT ROWID;

CREATE TABLE locks (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires_at INTEGER NOT NULL
);

CREATE TABLE variables (
    name TEXT PRIMARY KEY,
    is_secret INTEGER NOT NULL,
    value TEXT,
    secret BLOB,
    updated_at INTEGER NOT NULL
);

CREATE TABLE users (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    username TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    role TEXT NOT NULL,
    created_at INTEGER NOT NULL
);

CREATE TABLE tokens (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    last_used_at INTEGER,
    revoked_at INTEGER
);
