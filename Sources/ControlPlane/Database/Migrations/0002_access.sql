-- Identity and access: principals, API tokens, workspace role bindings, and
-- the append-only audit log.

CREATE TABLE principals (
    id             bigserial PRIMARY KEY,
    name           text NOT NULL UNIQUE,
    kind           text NOT NULL CHECK (kind IN ('user', 'service_account', 'agent')),
    is_admin       boolean NOT NULL DEFAULT false,
    workspace_id   bigint REFERENCES workspaces (id) ON DELETE CASCADE,
    environment    text,
    description    text,
    password_hash  text,
    disabled_at    timestamptz,
    created_at     timestamptz NOT NULL DEFAULT now(),
    created_by     text NOT NULL,
    CHECK (kind <> 'agent' OR (workspace_id IS NOT NULL AND environment IS NOT NULL AND NOT is_admin)),
    CHECK (kind = 'user' OR password_hash IS NULL)
);

-- Only the SHA-256 of each token's secret is kept.
CREATE TABLE api_tokens (
    id           bigserial PRIMARY KEY,
    public_id    text NOT NULL UNIQUE,
    principal_id bigint NOT NULL REFERENCES principals (id) ON DELETE CASCADE,
    secret_hash  bytea NOT NULL,
    description  text,
    expires_at   timestamptz,
    revoked_at   timestamptz,
    last_used_at timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),
    created_by   text NOT NULL
);
CREATE INDEX api_tokens_by_principal ON api_tokens (principal_id);

CREATE TABLE role_bindings (
    principal_id bigint NOT NULL REFERENCES principals (id) ON DELETE CASCADE,
    workspace_id bigint NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    role         text NOT NULL CHECK (role IN ('viewer', 'consumer', 'operator', 'editor', 'owner')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    created_by   text NOT NULL,
    PRIMARY KEY (principal_id, workspace_id, role)
);
CREATE INDEX role_bindings_by_workspace ON role_bindings (workspace_id);

-- Append-only: names are kept as text so records outlive what they name.
CREATE TABLE audit_log (
    id             bigserial PRIMARY KEY,
    at             timestamptz NOT NULL DEFAULT now(),
    principal      text NOT NULL,
    action         text NOT NULL,
    resource       text NOT NULL,
    workspace      text,
    outcome        text NOT NULL CHECK (outcome IN ('success', 'failure', 'denied')),
    status         integer NOT NULL,
    request_id     text NOT NULL,
    client_address text
);
CREATE INDEX audit_log_by_workspace ON audit_log (workspace, id);
CREATE INDEX audit_log_by_principal ON audit_log (principal, id);

CREATE FUNCTION audit_log_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only';
END
$$;
CREATE TRIGGER audit_log_no_update_or_delete BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_is_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_is_append_only();
