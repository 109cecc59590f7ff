-- Scheduler failover and broken events. SQLite dialect; keep in step with
-- migrations/postgres/0004_scheduler_lease_and_broken_events.sql.
--
-- locks.token: a fencing token, bumped whenever a lock changes hands (or is taken again after it
-- expired), so that a write fenced by a lease fails once that lease is gone, even for a holder
-- that has not noticed yet.
-- events.broken: why the scheduler cannot use the event's stored spec (NULL when it can);
-- cleared when a new version is written.

ALTER TABLE locks ADD COLUMN token INTEGER NOT NULL DEFAULT 0;
ALTER TABLE events ADD COLUMN broken TEXT;
