-- Remote agents: their tokens and the registry of agents (remote and embedded).
-- SQLite dialect; keep in step with migrations/postgres/0017_agents.sql.

-- Tokens good for the agent API only (never for /api/v1 otherwise): only the SHA-256 is kept.
CREATE TABLE agent_tokens (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    token_hash TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL,
    last_used_at INTEGER,
    revoked_at INTEGER
);

-- Every agent that registered, by name: what it runs and when it was last heard of.
CREATE TABLE agents (
    name TEXT PRIMARY KEY,
    -- The lease owner of its claims (changes at each start of the process).
    worker TEXT NOT NULL,
    version TEXT NOT NULL,
    -- JSON arrays of strings.
    tags TEXT NOT NULL,
    capabilities TEXT NOT NULL,
    concurrency INTEGER NOT NULL,
    -- 1 for the agent inside a server, 0 for a `cronium agent` process.
    embedded INTEGER NOT NULL,
    -- The agent token it authenticated with (NULL for an embedded agent).
    token_id INTEGER,
    started_at INTEGER NOT NULL,
    last_heartbeat_at INTEGER NOT NULL,
    -- Set when it drained and stopped; cleared by its next registration.
    stopped_at INTEGER
);
