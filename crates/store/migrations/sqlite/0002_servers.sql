-- Registered SSH servers, their runner deployment history, and the workflow condition of an
-- execution. SQLite dialect; keep in step with migrations/postgres/0002_servers.sql.

ALTER TABLE executions ADD COLUMN condition INTEGER;

CREATE TABLE servers (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    host TEXT NOT NULL,
    port INTEGER NOT NULL,
    username TEXT NOT NULL,
    -- key | password
    auth_kind TEXT NOT NULL,
    -- ciphertext of the credential (private key and passphrase, or password)
    credential BLOB NOT NULL,
    -- pinned host key, OpenSSH format; NULL until first contact
    host_key TEXT,
    -- a different key seen on contact, waiting for an operator to accept it
    pending_host_key TEXT,
    -- JSON array of strings
    tags TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

CREATE TABLE runner_deployments (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    server_id INTEGER NOT NULL REFERENCES servers (id) ON DELETE CASCADE,
    version TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    -- deployed | cached | failed
    outcome TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    duration_ms INTEGER NOT NULL,
    error TEXT,
    at INTEGER NOT NULL
);
CREATE INDEX runner_deployments_server ON runner_deployments (server_id, id);
