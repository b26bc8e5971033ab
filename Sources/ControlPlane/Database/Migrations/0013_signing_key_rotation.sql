-- Key rotation. The control plane keeps several signing keys, each in one
-- state: `next` (made by `larder-control key rotate`: announced to agents,
-- signs nothing yet), `active` (signs everything), `previous` (the key before
-- the active one: still accepted by agents, and still signs the announced key
-- set so that an agent that missed the rotation can follow it), `retired`
-- (its private key erased; agents drop it). At most one key is in each state
-- but `retired`. The generation grows with every change, so an agent never
-- goes back to an older key set.
ALTER TABLE signing_keys DROP CONSTRAINT signing_keys_id_check;
ALTER TABLE signing_keys
    ADD COLUMN state text NOT NULL DEFAULT 'active' CHECK (state IN ('next', 'active', 'previous', 'retired')),
    ADD COLUMN changed_at timestamptz NOT NULL DEFAULT now();
CREATE UNIQUE INDEX signing_keys_one_per_state ON signing_keys (state) WHERE state <> 'retired';

CREATE TABLE signing_key_generation (
    id         smallint PRIMARY KEY CHECK (id = 1),
    generation bigint NOT NULL
);
INSERT INTO signing_key_generation (id, generation) VALUES (1, 1);

-- The key set generation each agent last said it holds (in its heartbeats),
-- so an operator sees which agents follow a rotation before retiring a key.
ALTER TABLE agent_sessions ADD COLUMN key_generation bigint;
