-- What each job wrote with cronium.setVariable (bundled and API mode). SQLite dialect; keep in
-- step with migrations/postgres/0012_variable_writes.sql.
--
-- One row per write: the variable's name, the job and (when known) the execution that wrote
-- it, whether the variable is secret, and when. Never the value: a secret one must not leave
-- the variables table, and a plain one is read there.
CREATE TABLE variable_writes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    execution_id INTEGER,
    name TEXT NOT NULL,
    is_secret INTEGER NOT NULL,
    written_at INTEGER NOT NULL
);
CREATE INDEX variable_writes_job ON variable_writes (job_id, id);
