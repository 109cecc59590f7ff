-- Workflows (issue 11): workflows and their immutable versions, each version's graph as rows the
-- store evaluates without parsing specs, runs and node runs, the job policy of events as
-- columns, and the jobs of workflow nodes. SQLite dialect; keep in step with
-- migrations/postgres/0007_workflows.sql.

-- An event's job policy, written at apply from the parsed spec, so that a node's job is built
-- from rows alone. NULL (all five) for an event written before this migration, or through a
-- write that did not give the policy: a node of such an event fails with a message asking to
-- apply the event again, rather than run with a guessed timeout or retry count.
ALTER TABLE events ADD COLUMN max_attempts INTEGER;
ALTER TABLE events ADD COLUMN backoff_ms INTEGER;
ALTER TABLE events ADD COLUMN max_backoff_ms INTEGER;
ALTER TABLE events ADD COLUMN timeout_ms INTEGER;
ALTER TABLE events ADD COLUMN max_executions INTEGER;
-- The workflow whose inline node this event is (named WORKFLOW/NODE); NULL for a user's event.
ALTER TABLE events ADD COLUMN workflow_id INTEGER;
CREATE INDEX events_workflow ON events (workflow_id) WHERE workflow_id IS NOT NULL;

CREATE TABLE workflows (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    version INTEGER NOT NULL,
    status TEXT NOT NULL,
    spec TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    next_fire_at INTEGER,
    last_fired_at INTEGER,
    broken TEXT
);
CREATE INDEX workflows_next_fire ON workflows (next_fire_at) WHERE next_fire_at IS NOT NULL;

-- input and timeout_ms: what a run of this version starts with (default input, deadline).
CREATE TABLE workflow_versions (
    workflow_id INTEGER NOT NULL REFERENCES workflows (id) ON DELETE CASCADE,
    version INTEGER NOT NULL,
    status TEXT NOT NULL,
    spec TEXT NOT NULL,
    input TEXT NOT NULL,
    timeout_ms INTEGER,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (workflow_id, version)
);

-- One row per node of a version. kind: event (event_name, resolved when its job is made) |
-- inline (event_id and event_version pinned to the inline event this version wrote) |
-- workflow (sub_workflow, by name). timeout_ms..max_backoff_ms: the node's overrides of its
-- event's policy (NULL: the event's); for inline nodes all set. overrides: JSON the agent
-- applies over the event spec (target, env, helpers), opaque here.
CREATE TABLE workflow_nodes (
    workflow_id INTEGER NOT NULL,
    version INTEGER NOT NULL,
    node_id TEXT NOT NULL,
    position INTEGER NOT NULL,
    kind TEXT NOT NULL,
    event_name TEXT,
    event_id INTEGER,
    event_version INTEGER,
    sub_workflow TEXT,
    join_kind TEXT NOT NULL,
    input TEXT NOT NULL,
    overrides TEXT,
    timeout_ms INTEGER,
    max_attempts INTEGER,
    backoff_ms INTEGER,
    max_backoff_ms INTEGER,
    PRIMARY KEY (workflow_id, version, node_id),
    FOREIGN KEY (workflow_id, version) REFERENCES workflow_versions (workflow_id, version) ON DELETE CASCADE
);
CREATE INDEX workflow_nodes_event ON workflow_nodes (event_name) WHERE event_name IS NOT NULL;

-- position: the edge's place in its target's `after` (the order upstream outputs merge in).
CREATE TABLE workflow_edges (
    workflow_id INTEGER NOT NULL,
    version INTEGER NOT NULL,
    from_node TEXT NOT NULL,
    to_node TEXT NOT NULL,
    kind TEXT NOT NULL,
    position INTEGER NOT NULL,
    PRIMARY KEY (workflow_id, version, to_node, from_node),
    FOREIGN KEY (workflow_id, version) REFERENCES workflow_versions (workflow_id, version) ON DELETE CASCADE
);

-- A run of one version. root_run_id: the top run of a tree of sub-workflow runs (itself for a
-- top run); its row is the lock every progression of the tree takes first. stop_status:
-- cancelled | timed_out once the run was stopped (its running nodes are ending). serial: a run
-- queued behind an active run of the same workflow (overlap: queue). One run per schedule tick.
CREATE TABLE workflow_runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    workflow_id INTEGER REFERENCES workflows (id) ON DELETE SET NULL,
    workflow_name TEXT NOT NULL,
    workflow_version INTEGER NOT NULL,
    trigger_kind TEXT NOT NULL,
    status TEXT NOT NULL,
    input TEXT NOT NULL,
    output TEXT,
    error TEXT,
    retry_of INTEGER,
    attempt INTEGER NOT NULL,
    parent_node_run_id INTEGER,
    root_run_id INTEGER,
    depth INTEGER NOT NULL,
    serial INTEGER NOT NULL DEFAULT 0,
    scheduled_for INTEGER,
    deadline_at INTEGER,
    stop_status TEXT,
    created_at INTEGER NOT NULL,
    started_at INTEGER,
    finished_at INTEGER,
    UNIQUE (workflow_id, scheduled_for)
);
CREATE INDEX workflow_runs_workflow ON workflow_runs (workflow_id, id);
CREATE INDEX workflow_runs_status ON workflow_runs (status, id);
CREATE INDEX workflow_runs_deadline ON workflow_runs (deadline_at)
    WHERE status = 'running' AND deadline_at IS NOT NULL;

CREATE TABLE workflow_node_runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id INTEGER NOT NULL REFERENCES workflow_runs (id) ON DELETE CASCADE,
    node_id TEXT NOT NULL,
    position INTEGER NOT NULL,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    job_id INTEGER,
    sub_run_id INTEGER,
    input TEXT,
    output TEXT,
    condition INTEGER,
    reason TEXT,
    error TEXT,
    started_at INTEGER,
    finished_at INTEGER,
    UNIQUE (run_id, node_id)
);

-- The node run a job is for (NULL for every other job), and the node's overrides of its event
-- spec (JSON: target, env, helpers) that the agent applies.
ALTER TABLE jobs ADD COLUMN node_run_id INTEGER;
ALTER TABLE jobs ADD COLUMN overrides TEXT;
