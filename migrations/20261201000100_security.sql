-- Security: login throttling shared by every api replica, and tokens that
-- expire and can be listed and revoked.

-- Failed attempts per bucket: `login:user:<id>`, `login:name:<login>`,
-- `login:addr:<address>`, `signup:addr:<address>`, `upload:addr:<address>`
-- (core::throttle). A bucket that spends its budget within the window is
-- blocked until `blocked_until`; each block doubles the next one.
CREATE TABLE auth_throttle (
    bucket TEXT PRIMARY KEY,
    failures INTEGER NOT NULL DEFAULT 0 CHECK (failures >= 0),
    window_started_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW(),
    blocked_until TIMESTAMP WITH TIME ZONE,
    lockouts INTEGER NOT NULL DEFAULT 0 CHECK (lockouts >= 0),
    last_failure_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW()
);
-- The sweep forgets quiet buckets.
CREATE INDEX idx_auth_throttle_last_failure ON auth_throttle (last_failure_at);

-- Tokens get a public id (listing and revoking name a token without its
-- secret). Existing rows get a random one.
ALTER TABLE api_tokens
    ADD COLUMN token_id VARCHAR(50) NOT NULL
    DEFAULT ('t_' || substr(md5(random()::text || clock_timestamp()::text), 1, 11));
CREATE UNIQUE INDEX idx_api_tokens_token_id ON api_tokens (token_id);

-- Tokens issued before tokens expired keep working for the default
-- lifetime from now, then expire like new ones.
UPDATE api_tokens SET expires_at = NOW() + INTERVAL '30 days'
WHERE expires_at IS NULL AND revoked_at IS NULL;

-- Listing a user's live tokens.
CREATE INDEX idx_api_tokens_user_live ON api_tokens (user_id, created_at DESC)
    WHERE revoked_at IS NULL;
