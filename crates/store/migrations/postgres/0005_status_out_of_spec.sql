-- An event's status lives only in events.status: earlier versions also kept a copy inside the
-- stored spec JSON (and the API patched it back in on reads). Remove that copy from events and
-- their versions. PostgreSQL dialect; keep in step with migrations/sqlite/0004_status_out_of_spec.sql.
-- Specs are JSON text written by the store; a spec holding an escaped NUL (which jsonb refuses)
-- is left as it is rather than failing the migration (CASE evaluates lazily, AND may not).

UPDATE events SET spec = (spec::jsonb - 'status')::text
WHERE CASE WHEN strpos(spec, '\u0000') > 0 THEN false
           ELSE (spec::jsonb -> 'status') IS NOT NULL END;

UPDATE event_versions SET spec = (spec::jsonb - 'status')::text
WHERE CASE WHEN strpos(spec, '\u0000') > 0 THEN false
           ELSE (spec::jsonb -> 'status') IS NOT NULL END;
