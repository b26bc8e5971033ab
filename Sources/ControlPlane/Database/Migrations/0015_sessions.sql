-- Sessions: the tokens `POST /v1/login` hands out. A token minted with a
-- session expires no later than the session unless the password is given
-- again, and a password change revokes the user's other sessions.
ALTER TABLE api_tokens ADD COLUMN session boolean NOT NULL DEFAULT false;
UPDATE api_tokens SET session = true WHERE description = 'session from larder login';
-- The bootstrap token no longer lasts for ever (LARDER_BOOTSTRAP_TTL for new
-- ones): one from before gets a week from this migration to be replaced by
-- an admin's own token.
UPDATE api_tokens SET expires_at = now() + interval '7 days'
WHERE created_by = 'bootstrap' AND description = 'bootstrap token' AND expires_at IS NULL AND revoked_at IS NULL;
