-- An event's status lives only in events.status: earlier versions also kept a copy inside the
-- stored spec JSON (and the API patched it back in on reads). Remove that copy from events and
-- their versions. SQLite dialect; keep in step with migrations/postgres/0004_status_out_of_spec.sql.
-- CASE, not AND, so that json_type never sees text that is not JSON (CASE evaluates lazily).

UPDATE events SET spec = json_remove(spec, '$.status')
WHERE CASE WHEN json_valid(spec) THEN json_type(spec, '$.status') IS NOT NULL ELSE 0 END;

UPDATE event_versions SET spec = json_remove(spec, '$.status')
WHERE CASE WHEN json_valid(spec) THEN json_type(spec, '$.status') IS NOT NULL ELSE 0 END;
