-- Signed webhooks and notifications. SQLite dialect; keep in step with
-- migrations/postgres/0011_hooks_notifications.sql.
--
-- hooks: the secret of each event's or workflow's webhook (kind `event` | `workflow`), as
-- ciphertext (context `hook:KIND:NAME`); `revealed` once it was shown (it is shown once).
-- hook_replays: the signatures (or GitHub delivery ids) already accepted, until they expire;
-- a request carrying one of them is a replay.
-- channels: where notifications go (`email` | `slack` | `discord` | `webhook`): `config` the
-- settings that are not secret (JSON), `secret` the ciphertext of those that are (context
-- `channel:NAME`), and the last delivery's outcome.
-- notifications: the outbox. One row per (channel, job or workflow run); the message as JSON;
-- claimed by a delivery task until `claimed_until`, retried at `next_attempt_at`, ended by
-- `delivered_at` or `gave_up_at`.
-- jobs.notified / workflow_runs.notified: 1 once the notifications of the final state were
-- written (in the transaction that writes them); 0 while not final or not yet looked at.
CREATE TABLE hooks (
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    secret BLOB NOT NULL,
    revealed INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    rotated_at INTEGER NOT NULL,
    PRIMARY KEY (kind, name)
);

CREATE TABLE hook_replays (
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    replay_key TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (kind, name, replay_key)
);
CREATE INDEX hook_replays_expiry ON hook_replays (expires_at);

CREATE TABLE channels (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    config TEXT NOT NULL,
    secret BLOB,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    last_success_at INTEGER,
    last_error TEXT,
    last_error_at INTEGER
);

CREATE TABLE notifications (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    channel_id INTEGER NOT NULL REFERENCES channels (id) ON DELETE CASCADE,
    source_kind TEXT NOT NULL,
    source_id INTEGER NOT NULL,
    on_kind TEXT NOT NULL,
    message TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    claimed_until INTEGER,
    last_error TEXT,
    delivered_at INTEGER,
    gave_up_at INTEGER,
    created_at INTEGER NOT NULL,
    UNIQUE (channel_id, source_kind, source_id)
);
CREATE INDEX notifications_due ON notifications (next_attempt_at)
    WHERE delivered_at IS NULL AND gave_up_at IS NULL;

ALTER TABLE jobs ADD COLUMN notified INTEGER NOT NULL DEFAULT 0;
UPDATE jobs SET notified = 1
    WHERE status IN ('succeeded', 'failed', 'timed_out', 'cancelled', 'partial');
CREATE INDEX jobs_to_notify ON jobs (id)
    WHERE notified = 0 AND status IN ('succeeded', 'failed', 'timed_out', 'cancelled', 'partial');

ALTER TABLE workflow_runs ADD COLUMN notified INTEGER NOT NULL DEFAULT 0;
UPDATE workflow_runs SET notified = 1
    WHERE status IN ('succeeded', 'failed', 'timed_out', 'cancelled');
CREATE INDEX workflow_runs_to_notify ON workflow_runs (id)
    WHERE notified = 0 AND status IN ('succeeded', 'failed', 'timed_out', 'cancelled');
