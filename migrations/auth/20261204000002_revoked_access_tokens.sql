-- Every access token revoked before its expiry (logout, reuse of a refresh token, a deleted
-- user, a changed role), recorded in the transaction that revokes it. The denylist verifiers
-- read lives in Redis; a background task pushes every row Redis has not confirmed, and all of
-- them again when Redis has lost its data, so a revocation made while Redis was down holds
-- once it is back. Rows go once their token has expired.
CREATE TABLE revoked_access_tokens (
    jti        uuid        PRIMARY KEY,
    expires_at timestamptz NOT NULL,
    -- When Redis last took it; NULL until then.
    pushed_at  timestamptz
);

CREATE INDEX revoked_access_tokens_unpushed ON revoked_access_tokens (expires_at) WHERE pushed_at IS NULL;
CREATE INDEX revoked_access_tokens_expires_at ON revoked_access_tokens (expires_at);
