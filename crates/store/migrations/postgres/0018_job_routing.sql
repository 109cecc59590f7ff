-- Routing jobs to agents: what a job's target needs of its agent, and the agent tags it asks for.
-- PostgreSQL dialect; keep in step with migrations/sqlite/0018_job_routing.sql.

-- `local`, `container` or `ssh`; NULL for a job enqueued before routing (any agent claims it).
ALTER TABLE jobs ADD COLUMN capability TEXT;
-- A JSON array of tag names, or NULL when the job asks for none (almost every job): the claim
-- reads the array only for a job that has one.
ALTER TABLE jobs ADD COLUMN agent_tags TEXT;
