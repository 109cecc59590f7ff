-- Runner versions: pins (per server or per tag) and rollouts (batches, per server outcome).
-- SQLite dialect; keep in step with migrations/postgres/0016_runner_versions.sql.

-- The runner version a server, or every server of a tag, should run. Exactly one of server_id
-- and tag. A server's own pin beats its tags' pins; of two tag pins the most recently set wins.
CREATE TABLE runner_pins (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    server_id INTEGER REFERENCES servers (id) ON DELETE CASCADE,
    tag TEXT,
    version TEXT NOT NULL,
    set_at INTEGER NOT NULL,
    -- Who set it: a user name, or `rollout N`.
    set_by TEXT NOT NULL,
    CHECK ((server_id IS NULL) <> (tag IS NULL))
);
CREATE UNIQUE INDEX runner_pins_server ON runner_pins (server_id) WHERE server_id IS NOT NULL;
CREATE UNIQUE INDEX runner_pins_tag ON runner_pins (tag) WHERE tag IS NOT NULL;

-- A rollout of a runner version to servers, batch by batch (run by the Cronium server).
CREATE TABLE runner_rollouts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    version TEXT NOT NULL,
    -- The servers' tag; NULL: every server.
    tag TEXT,
    -- As given: a count ('2') or a share ('40%').
    batch TEXT NOT NULL,
    pause_ms INTEGER NOT NULL,
    -- running, succeeded, failed, rolled_back
    status TEXT NOT NULL,
    error TEXT,
    created_by TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    finished_at INTEGER,
    rolled_back_at INTEGER
);

-- Each server of a rollout: its batch, what it ran before, what happened to it.
CREATE TABLE runner_rollout_servers (
    rollout_id INTEGER NOT NULL REFERENCES runner_rollouts (id) ON DELETE CASCADE,
    server_id INTEGER NOT NULL REFERENCES servers (id) ON DELETE CASCADE,
    server_name TEXT NOT NULL,
    -- 1-based.
    batch INTEGER NOT NULL,
    -- pending, upgraded, failed, reverted (its batch failed), rolled_back
    status TEXT NOT NULL,
    previous_version TEXT NOT NULL,
    -- The server's own pin before the rollout (NULL: none): restored by a rollback.
    previous_pin TEXT,
    error TEXT,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (rollout_id, server_id)
);
CREATE INDEX runner_rollout_servers_server ON runner_rollout_servers (server_id);
