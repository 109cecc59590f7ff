-- Runtime helpers in API mode. SQLite dialect; keep in step with
-- migrations/postgres/0008_runtime_helpers.sql.
--
-- executions.helpers: the mode the run's helpers used (`bundled` | `api`); helpers_note: why API
-- mode fell back to bundled (no endpoint, socket gone, transport without a runner).
-- executions.api_token_sha256: SHA-256 (hex) of the execution's runtime token, never the token;
-- NULL once the execution ended (revoked). api_token_expires_at: the execution's deadline.
ALTER TABLE executions ADD COLUMN helpers TEXT;
ALTER TABLE executions ADD COLUMN helpers_note TEXT;
ALTER TABLE executions ADD COLUMN api_token_sha256 TEXT;
ALTER TABLE executions ADD COLUMN api_token_expires_at INTEGER;
CREATE UNIQUE INDEX executions_api_token ON executions (api_token_sha256) WHERE api_token_sha256 IS NOT NULL;
