-- Credentials: one per user. `user_id` is also the id of the user's profile in the users
-- service, chosen here so a retried registration cannot create a second profile.
CREATE TABLE credentials (
    user_id            uuid        PRIMARY KEY,
    -- Normalised (trimmed, lower case) by the service before it gets here.
    email              text        NOT NULL,
    -- An argon2id PHC string; the parameters it was made with travel inside it.
    password_hash      text        NOT NULL,
    role               text        NOT NULL DEFAULT 'user' CHECK (role IN ('user', 'admin')),
    -- 'pending' while registration creates the profile: such a row never logs in, and a
    -- failed registration deletes it (or, after a crash, the janitor does).
    status             text        NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'active')),
    -- `updated_at` of the last profile change applied from `user.updated`: older ones are stale.
    profile_updated_at timestamptz,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now()
);

CREATE UNIQUE INDEX credentials_email_key ON credentials (email);
CREATE INDEX credentials_pending_created_at ON credentials (created_at) WHERE status = 'pending';

-- A session is one login: the family of refresh tokens that rotate from it.
CREATE TABLE sessions (
    id         uuid        PRIMARY KEY,
    user_id    uuid        NOT NULL REFERENCES credentials (user_id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    -- Set on logout, on reuse of a rotated refresh token, and when the user is deleted.
    revoked_at timestamptz,
    -- When its newest refresh token expires; the janitor removes sessions past it.
    expires_at timestamptz NOT NULL
);

CREATE INDEX sessions_user_id ON sessions (user_id);
CREATE INDEX sessions_expires_at ON sessions (expires_at);
CREATE INDEX sessions_revoked_at ON sessions (revoked_at) WHERE revoked_at IS NOT NULL;

-- Every access token a session issued, until it expires: revoking the session denylists
-- all of them, an earlier one copied by a thief included, not only the newest.
CREATE TABLE session_access_tokens (
    jti        uuid        PRIMARY KEY,
    session_id uuid        NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    expires_at timestamptz NOT NULL
);

CREATE INDEX session_access_tokens_session_id ON session_access_tokens (session_id);
CREATE INDEX session_access_tokens_expires_at ON session_access_tokens (expires_at);

-- Refresh tokens, by the SHA-256 of the token: the token itself is never stored.
CREATE TABLE refresh_tokens (
    token_hash bytea       PRIMARY KEY CHECK (length(token_hash) = 32),
    session_id uuid        NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    expires_at timestamptz NOT NULL,
    -- Set when the token is exchanged for the next one; presenting it again is reuse.
    used_at    timestamptz,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX refresh_tokens_session_id ON refresh_tokens (session_id);
CREATE INDEX refresh_tokens_expires_at ON refresh_tokens (expires_at);
