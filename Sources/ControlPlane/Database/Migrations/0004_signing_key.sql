-- The control plane's Ed25519 key pair, which signs job specs for agents.
-- One row, created at first start; agents pin its public key.
CREATE TABLE signing_keys (
    id          smallint PRIMARY KEY CHECK (id = 1),
    private_key bytea NOT NULL,
    public_key  text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
