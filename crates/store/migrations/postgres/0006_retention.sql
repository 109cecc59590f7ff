-- Retention: pruning old jobs with their executions and logs. PostgreSQL dialect; keep in step with
-- migrations/sqlite/0005_retention.sql.
--
-- jobs_event_finished: the age scan per event (and for jobs of deleted events, event_id NULL),
-- oldest first, and the newest-N lookup of `keep`, both walking one index range.
-- jobs.pruning: 1 once the deletion of a job has begun (its logs are deleted in chunks across
-- transactions, the job row last), so that it is finished whatever the policy becomes meanwhile.

CREATE INDEX jobs_event_finished ON jobs (event_id, finished_at, id) WHERE finished_at IS NOT NULL;
ALTER TABLE jobs ADD COLUMN pruning BIGINT NOT NULL DEFAULT 0;
CREATE INDEX jobs_pruning ON jobs (id) WHERE pruning = 1;
