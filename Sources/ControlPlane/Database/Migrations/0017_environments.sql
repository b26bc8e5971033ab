-- Environments: the places a workspace's data plane runs (staging,
-- production, a region), each with its own offline and online stores and the
-- agents enrolled into it. Materializations are queued per environment, so
-- each environment's stores end complete.
CREATE TABLE environments (
    id           bigserial PRIMARY KEY,
    workspace_id bigint NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    name         text NOT NULL,
    -- 'embedded': each agent keeps its own online store, so the environment has
    -- exactly one agent (writer_id). 'redis': every agent reads and writes one
    -- shared store, so any number of them run jobs and serve.
    online_store text NOT NULL DEFAULT 'embedded' CHECK (online_store IN ('embedded', 'redis')),
    description  text NOT NULL DEFAULT '',
    writer_id    bigint REFERENCES principals (id) ON DELETE SET NULL,
    created_by   text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (workspace_id, name)
);

-- Existing installs: one environment per distinct environment agents and
-- enrollment tokens name.
INSERT INTO environments (workspace_id, name, created_by)
SELECT workspace_id, environment, 'migration' FROM principals WHERE kind = 'agent' AND environment IS NOT NULL
UNION
SELECT workspace_id, environment, 'migration' FROM enrollment_tokens
UNION
SELECT workspace_id, environment, 'migration' FROM jobs WHERE environment IS NOT NULL;

-- An agent, token or job names an environment that exists. An environment
-- with agents cannot be deleted; its unused tokens and its jobs go with it.
ALTER TABLE principals ADD FOREIGN KEY (workspace_id, environment) REFERENCES environments (workspace_id, name);
ALTER TABLE enrollment_tokens ADD FOREIGN KEY (workspace_id, environment) REFERENCES environments (workspace_id, name) ON DELETE CASCADE;
ALTER TABLE jobs ADD FOREIGN KEY (workspace_id, environment) REFERENCES environments (workspace_id, name) ON DELETE CASCADE;

-- One queued, running or successful materialization per version, environment
-- and interval (jobs queued before environments existed have none).
DROP INDEX jobs_one_per_interval;
CREATE UNIQUE INDEX jobs_one_per_interval ON jobs (version_id, coalesce(environment, ''), interval_start, interval_end)
    WHERE kind = 'materialize' AND state NOT IN ('failed', 'cancelled');

-- The scheduler's progress is per environment: a new environment catches up
-- from the view's feature start time on its own.
ALTER TABLE schedule_progress ADD COLUMN environment_id bigint REFERENCES environments (id) ON DELETE CASCADE;
INSERT INTO schedule_progress (version_id, scheduled_through, updated_at, environment_id)
SELECT p.version_id, p.scheduled_through, p.updated_at, e.id
FROM schedule_progress p
JOIN object_versions v ON v.id = p.version_id
JOIN registry_objects o ON o.id = v.object_id
JOIN environments e ON e.workspace_id = o.workspace_id;
DELETE FROM schedule_progress WHERE environment_id IS NULL;
ALTER TABLE schedule_progress DROP CONSTRAINT schedule_progress_pkey;
ALTER TABLE schedule_progress ALTER COLUMN environment_id SET NOT NULL;
ALTER TABLE schedule_progress ADD PRIMARY KEY (version_id, environment_id);
