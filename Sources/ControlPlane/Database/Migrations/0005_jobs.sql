-- Jobs: the ledger of what agents must compute, every attempt at it, what
-- happened to it; the scheduler's progress per feature-view version; the
-- agents' sessions; and the leader lease that lets one replica schedule.

CREATE TABLE jobs (
    id               bigserial PRIMARY KEY,
    workspace_id     bigint NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    kind             text NOT NULL CHECK (kind IN ('materialize', 'backfill', 'dataset')),
    state            text NOT NULL CHECK (state IN ('queued', 'leased', 'running', 'succeeded', 'failed', 'cancelled')),
    version_id       bigint REFERENCES object_versions (id) ON DELETE CASCADE,
    interval_start   timestamptz,
    interval_end     timestamptz,
    parent_id        bigint REFERENCES jobs (id) ON DELETE CASCADE,
    environment      text,
    trigger          text NOT NULL,
    -- The signed spec: canonical JSON, its Ed25519 signature, the key's fingerprint.
    spec_payload     text,
    spec_signature   text,
    spec_key         text,
    attempts         integer NOT NULL DEFAULT 0,
    max_attempts     integer NOT NULL CHECK (max_attempts >= 1),
    not_before       timestamptz NOT NULL DEFAULT now(),
    -- The current lease: its fencing token, holder and end.
    lease_token      uuid,
    lease_agent      text,
    lease_instance   text,
    lease_expires_at timestamptz,
    cancel_requested boolean NOT NULL DEFAULT false,
    progress         jsonb,
    metrics          jsonb,
    failure          jsonb,
    created_at       timestamptz NOT NULL DEFAULT now(),
    created_by       text NOT NULL,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz,
    CHECK (interval_start IS NULL OR interval_start < interval_end),
    CHECK (kind = 'backfill' OR (state IN ('leased', 'running')) = (lease_token IS NOT NULL))
);
-- One queued, running or successful materialization per version and interval:
-- enqueueing the same interval twice is a no-op.
CREATE UNIQUE INDEX jobs_one_per_interval ON jobs (version_id, interval_start, interval_end)
    WHERE kind = 'materialize' AND state NOT IN ('failed', 'cancelled');
CREATE INDEX jobs_claimable ON jobs (workspace_id, id) WHERE state = 'queued' AND kind <> 'backfill';
CREATE INDEX jobs_leases ON jobs (lease_expires_at) WHERE lease_token IS NOT NULL;
CREATE INDEX jobs_listing ON jobs (workspace_id, id);
CREATE INDEX jobs_children ON jobs (parent_id, state) WHERE parent_id IS NOT NULL;

CREATE TABLE job_attempts (
    job_id      bigint NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    attempt     integer NOT NULL,
    lease_token uuid NOT NULL UNIQUE,
    agent       text NOT NULL,
    instance_id text,
    claimed_at  timestamptz NOT NULL DEFAULT now(),
    started_at  timestamptz,
    ended_at    timestamptz,
    outcome     text NOT NULL DEFAULT 'running'
                CHECK (outcome IN ('running', 'succeeded', 'failed', 'cancelled', 'lease-expired')),
    failure     jsonb,
    PRIMARY KEY (job_id, attempt)
);

CREATE TABLE job_events (
    id     bigserial PRIMARY KEY,
    job_id bigint NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    at     timestamptz NOT NULL DEFAULT now(),
    event  text NOT NULL,
    detail text
);
CREATE INDEX job_events_by_job ON job_events (job_id, id);

-- Agents waiting for work LISTEN on larder_jobs; the payload is the workspace id.
-- Notifications are sent at commit, and duplicates within a transaction fold into one.
CREATE FUNCTION jobs_notify_queued() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('larder_jobs', NEW.workspace_id::text);
    RETURN NULL;
END
$$;
CREATE TRIGGER jobs_queued AFTER INSERT OR UPDATE OF state ON jobs
    FOR EACH ROW WHEN (NEW.state = 'queued' AND NEW.kind <> 'backfill') EXECUTE FUNCTION jobs_notify_queued();

-- Everything of a scheduled feature-view version before scheduled_through is queued.
CREATE TABLE schedule_progress (
    version_id        bigint PRIMARY KEY REFERENCES object_versions (id) ON DELETE CASCADE,
    scheduled_through timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL DEFAULT now()
);

-- What each agent said in its last hello, and when it was last heard from.
CREATE TABLE agent_sessions (
    principal_id bigint PRIMARY KEY REFERENCES principals (id) ON DELETE CASCADE,
    instance_id  text NOT NULL,
    version      text NOT NULL,
    hostname     text NOT NULL,
    capabilities text[] NOT NULL,
    connected_at timestamptz NOT NULL DEFAULT now(),
    last_seen_at timestamptz NOT NULL DEFAULT now()
);

-- A lease held by one replica at a time (the scheduler's); `term` grows with each new holder.
CREATE TABLE leader_leases (
    name       text PRIMARY KEY,
    holder     text NOT NULL,
    term       bigint NOT NULL,
    expires_at timestamptz NOT NULL
);
