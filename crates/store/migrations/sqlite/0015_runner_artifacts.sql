-- Runner artifacts per OS and architecture, and each server's detected platform.
-- SQLite dialect; keep in step with migrations/postgres/0015_runner_artifacts.sql.

-- The runner binaries this server can deploy: registered at start from the files it ships
-- with (one row per build: a rebuilt runner is a new row, an old one stays listed).
CREATE TABLE runner_artifacts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    version TEXT NOT NULL,
    -- 'linux'
    os TEXT NOT NULL,
    -- 'x86_64', 'aarch64'
    arch TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    size INTEGER NOT NULL,
    -- Where the bytes live: the file on the Cronium server's file system.
    path TEXT NOT NULL,
    added_at INTEGER NOT NULL,
    -- When the server last found the file at start (an artifact not seen since is gone).
    seen_at INTEGER NOT NULL,
    UNIQUE (os, arch, sha256)
);

-- The OS and architecture a server reported on first contact (normalised uname -s / -m).
ALTER TABLE servers ADD COLUMN os TEXT;
ALTER TABLE servers ADD COLUMN arch TEXT;
ALTER TABLE servers ADD COLUMN platform_detected_at INTEGER;
