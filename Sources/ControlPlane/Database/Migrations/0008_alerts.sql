-- Alerts: one row per condition episode. Opening it is the condition's event
-- (a view gone stale); resolving it is its recovery. At most one open alert
-- per (workspace, kind, subject): a condition that persists is not raised again.
CREATE TABLE alerts (
    id              bigserial PRIMARY KEY,
    workspace_id    bigint NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    kind            text NOT NULL CHECK (kind IN ('stale', 'job-failed', 'agent-offline', 'expectation-violated')),
    subject         text NOT NULL,
    detail          text NOT NULL,
    opened_at       timestamptz NOT NULL DEFAULT now(),
    resolved_at     timestamptz,
    resolved_detail text
);
CREATE UNIQUE INDEX alerts_one_open ON alerts (workspace_id, kind, subject) WHERE resolved_at IS NULL;
CREATE INDEX alerts_by_workspace ON alerts (workspace_id, id);
