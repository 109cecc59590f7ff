-- Resources each execution used, as its runner measured them. PostgreSQL dialect; keep in step
-- with migrations/sqlite/0013_execution_usage.sql.
--
-- cpu_user_ms / cpu_system_ms: CPU time of the script's process tree (getrusage of the reaped
-- children, orphans included); max_rss_bytes: the peak resident set of the largest single
-- process of the tree. cgroup_cpu_ms / cgroup_memory_peak_bytes: the whole container's cgroup
-- (container runs only). All NULL when not measured (older rows, direct-ssh, http, runs that
-- never started).
ALTER TABLE executions ADD COLUMN cpu_user_ms BIGINT;
ALTER TABLE executions ADD COLUMN cpu_system_ms BIGINT;
ALTER TABLE executions ADD COLUMN max_rss_bytes BIGINT;
ALTER TABLE executions ADD COLUMN cgroup_cpu_ms BIGINT;
ALTER TABLE executions ADD COLUMN cgroup_memory_peak_bytes BIGINT;
