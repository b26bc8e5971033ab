-- The registry: workspaces, objects with immutable versions, lineage between
-- versions, plans and applies.

CREATE TABLE workspaces (
    id          bigserial PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    description text,
    revision    bigint NOT NULL DEFAULT 0,
    created_at  timestamptz NOT NULL DEFAULT now(),
    created_by  text NOT NULL
);

-- One row per object ever applied in a workspace. current_version is NULL
-- while the object is retired; its versions stay.
CREATE TABLE registry_objects (
    id              bigserial PRIMARY KEY,
    workspace_id    bigint NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    kind            text NOT NULL,
    name            text NOT NULL,
    current_version integer,
    latest_version  integer NOT NULL,
    operational     jsonb NOT NULL DEFAULT '{}',
    metadata        jsonb NOT NULL DEFAULT '{}',
    description     text,
    owner           text,
    tags            jsonb NOT NULL DEFAULT '{}',
    search_document tsvector NOT NULL DEFAULT ''::tsvector,
    retired_at      timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (workspace_id, kind, name)
);
CREATE INDEX registry_objects_search ON registry_objects USING gin (search_document);
CREATE INDEX registry_objects_tags ON registry_objects USING gin (tags jsonb_path_ops);
CREATE INDEX registry_objects_listing ON registry_objects (workspace_id, kind, name) WHERE current_version IS NOT NULL;

CREATE TABLE applies (
    id          bigserial PRIMARY KEY,
    workspace_id bigint NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    plan_id     uuid NOT NULL,
    revision    bigint NOT NULL,
    changed     boolean NOT NULL,
    changes     jsonb NOT NULL,
    applied_by  text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX applies_by_workspace ON applies (workspace_id, id);

-- Immutable: rows are inserted, never updated.
CREATE TABLE object_versions (
    id           bigserial PRIMARY KEY,
    object_id    bigint NOT NULL REFERENCES registry_objects (id) ON DELETE CASCADE,
    version      integer NOT NULL,
    content_hash text NOT NULL,
    spec         jsonb NOT NULL,
    apply_id     bigint REFERENCES applies (id) ON DELETE SET NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    created_by   text NOT NULL,
    UNIQUE (object_id, version),
    UNIQUE (object_id, content_hash)
);

-- downstream was built from upstream (both versions).
CREATE TABLE lineage_edges (
    downstream_id bigint NOT NULL REFERENCES object_versions (id) ON DELETE CASCADE,
    upstream_id   bigint NOT NULL REFERENCES object_versions (id) ON DELETE CASCADE,
    PRIMARY KEY (downstream_id, upstream_id)
);
CREATE INDEX lineage_edges_upstream ON lineage_edges (upstream_id, downstream_id);

CREATE TABLE plans (
    id            uuid PRIMARY KEY,
    workspace_id  bigint NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    base_revision bigint NOT NULL,
    definitions   jsonb NOT NULL,
    changes       jsonb NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    created_by    text NOT NULL,
    applied_at    timestamptz
);
CREATE INDEX plans_by_workspace ON plans (workspace_id, created_at);
