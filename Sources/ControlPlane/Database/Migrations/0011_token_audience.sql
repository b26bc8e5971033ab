-- Where a token works: on the control plane's API, on agents' feature
-- servers (the data plane), or both. A token a model server sends to an
-- agent should be useless against the control plane if it leaks there, so
-- only tokens whose audience includes the data plane enter the access
-- snapshots agents hold, and the control plane refuses data-plane tokens on
-- every route but whoami. New tokens say their audience; a row that does
-- not is a control-plane token (sessions, bootstrap, agents' own tokens).
-- Existing tokens keep working where they did: users' and service accounts'
-- become 'both', agents' 'control-plane'.
ALTER TABLE api_tokens ADD COLUMN audience text NOT NULL DEFAULT 'both'
    CHECK (audience IN ('control-plane', 'data-plane', 'both'));
UPDATE api_tokens t SET audience = 'control-plane' FROM principals p WHERE p.id = t.principal_id AND p.kind = 'agent';
ALTER TABLE api_tokens ALTER COLUMN audience SET DEFAULT 'control-plane';
