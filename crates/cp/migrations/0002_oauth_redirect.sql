-- Where a browser login goes after the OAuth callback: a same-site path chosen when the login
-- started, kept with its `state` so any control-plane replica can finish the login.
ALTER TABLE oauth_states ADD COLUMN redirect TEXT;
CREATE INDEX oauth_states_expires_at ON oauth_states (expires_at);
