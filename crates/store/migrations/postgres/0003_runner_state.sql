-- What is known to be deployed on each server: the runner verified there (path, checksum, when),
-- so that a restarted agent trusts a recent verification instead of checking every host again.
-- NULL when nothing is known (never deployed, or an error put it in doubt). PostgreSQL dialect;
-- keep in step with migrations/sqlite/0003_runner_state.sql.

ALTER TABLE servers ADD COLUMN runner_path TEXT;
ALTER TABLE servers ADD COLUMN runner_sha256 TEXT;
ALTER TABLE servers ADD COLUMN runner_verified_at BIGINT;
