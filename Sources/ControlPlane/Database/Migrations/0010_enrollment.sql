-- Enrollment tokens: one-time, short-lived secrets a workspace owner hands to
-- whoever installs an agent. Exchanged once (POST /v1/enroll) for a new agent
-- principal of the workspace and environment, with its own API token. Only
-- the secret's SHA-256 is kept; used_at is set in the exchange's transaction,
-- so a token is never used twice.
CREATE TABLE enrollment_tokens (
    id           bigserial PRIMARY KEY,
    public_id    text NOT NULL UNIQUE,
    secret_hash  bytea NOT NULL,
    workspace_id bigint NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    environment  text NOT NULL,
    agent_name   text,
    created_by   text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    used_at      timestamptz,
    used_by      text
);
