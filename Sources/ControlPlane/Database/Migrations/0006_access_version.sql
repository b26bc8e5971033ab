-- Access snapshots for agents (docs/access-control.md): a counter per
-- workspace that every change to who may read its features moves on, so an
-- agent can tell from a heartbeat that its snapshot is out of date.
ALTER TABLE workspaces ADD COLUMN access_version bigint NOT NULL DEFAULT 1;
