-- Accounts, narrowed tokens and the audit log. SQLite dialect; keep in step with
-- migrations/postgres/0010_accounts.sql.
--
-- users.role is a `cronium_model::Role` (admin, operator, viewer); a user with `disabled_at`
-- set cannot log in, and its tokens and sessions stop working at their next request.
-- tokens.role, when set, narrows what the token may do below its user's role (never above);
-- a token past `expires_at` stops working.
-- audit_log is append-only (the triggers refuse every UPDATE; retention alone deletes old
-- rows): who (`actor_id` and the name at the time, `actor`), with what (`token_id` or
-- `session_id`), from where (`source`), what (`action`, `target`), the object before and
-- after as JSON (never a secret, never a variable's value), and the `outcome`.

ALTER TABLE users ADD COLUMN disabled_at INTEGER;
ALTER TABLE users ADD COLUMN last_login_at INTEGER;
ALTER TABLE tokens ADD COLUMN role TEXT;
ALTER TABLE tokens ADD COLUMN expires_at INTEGER;
CREATE INDEX tokens_user ON tokens (user_id);

CREATE TABLE audit_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at INTEGER NOT NULL,
    actor_id INTEGER,
    actor TEXT NOT NULL,
    token_id INTEGER,
    session_id TEXT,
    source TEXT,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    before_json TEXT,
    after_json TEXT,
    outcome TEXT NOT NULL
);
CREATE INDEX audit_log_at ON audit_log (at);
CREATE INDEX audit_log_actor ON audit_log (actor, id);

CREATE TRIGGER audit_log_append_only BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;
