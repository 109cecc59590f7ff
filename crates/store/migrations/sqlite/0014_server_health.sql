-- Runner health per server: the latest reading and contact on the server's row, and a short
-- history (the store keeps the last few checks per server, pruned by the insert's transaction).
-- SQLite dialect; keep in step with migrations/postgres/0014_server_health.sql.

-- When the last check (successful or not) was made, and the last successful contact.
ALTER TABLE servers ADD COLUMN health_checked_at INTEGER;
ALTER TABLE servers ADD COLUMN health_contact_at INTEGER;
-- Checks failed in a row since the last successful contact.
ALTER TABLE servers ADD COLUMN health_failures INTEGER NOT NULL DEFAULT 0;
-- Why the last check failed, or what it could not read (no runner deployed yet).
ALTER TABLE servers ADD COLUMN health_error TEXT;
-- The latest reading (JSON of `cronium-runner health`) and when it was taken.
ALTER TABLE servers ADD COLUMN health_reading TEXT;
ALTER TABLE servers ADD COLUMN health_reading_at INTEGER;

CREATE TABLE server_health (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    server_id INTEGER NOT NULL REFERENCES servers (id) ON DELETE CASCADE,
    at INTEGER NOT NULL,
    -- 1: the host answered (a reading, or a note why there is none); 0: the check failed
    ok INTEGER NOT NULL,
    duration_ms INTEGER NOT NULL,
    error TEXT,
    reading TEXT
);
CREATE INDEX server_health_server ON server_health (server_id, id);
