//! Accounts, credentials, sessions and their tokens: types and rules, no I/O.

mod common_passwords;
mod password;
mod refresh;

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use tessera_domain::{DisplayName, Email, Role};
use tessera_jwt::IssuedToken;
use uuid::Uuid;

pub use password::{MAX_CHARS, MIN_CHARS, Password};
pub use refresh::RefreshToken;

/// How long a pending registration may take before another may take its email over (and
/// the janitor may delete it): far longer than any registration request lives.
pub const ABANDONED_AFTER: Duration = Duration::from_secs(10 * 60);

/// What a new account is made of, validated.
#[derive(Debug, Clone)]
pub struct NewAccount {
    /// Its email.
    pub email: Email,
    /// Its password.
    pub password: Password,
    /// The profile's display name.
    pub display_name: DisplayName,
    /// Its role: `User` for everyone who registers; `Admin` only from the bootstrap.
    pub role: Role,
}

/// A credential that can log in.
#[derive(Debug, Clone)]
pub struct Credential {
    /// The user (and profile) id.
    pub user_id: Uuid,
    /// The argon2id PHC string.
    pub password_hash: String,
    /// The role tokens carry.
    pub role: Role,
}

/// An access token to remember for a session: revoking the session denylists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccessGrant {
    /// The token's `jti`.
    pub jti: Uuid,
    /// Its `exp`.
    pub expires_at: DateTime<Utc>,
}

impl From<&IssuedToken> for AccessGrant {
    fn from(token: &IssuedToken) -> Self {
        Self {
            jti: token.jti,
            expires_at: token.expires_at,
        }
    }
}

/// How long sessions live, and how a refresh token presented twice is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionPolicy {
    /// Longest a session lives from its login, however often it is refreshed.
    pub lifetime: TimeDelta,
    /// How long after its exchange a refresh token presented again is taken for a retry or a
    /// second tab (answered 409, nothing revoked) rather than for a replay (the session is
    /// revoked).
    pub reuse_grace: TimeDelta,
}

/// What presenting a refresh token came to.
#[derive(Debug)]
pub enum Rotation<T> {
    /// The token was current: it is now used, and `next` replaces it.
    Rotated(T),
    /// The token was exchanged moments ago, within the reuse grace: an honest client's retry
    /// or second tab. Nothing is revoked; the tokens of that exchange are the ones to use.
    JustRotated,
    /// The token was already rotated: someone replays it, so its whole session is now
    /// revoked; the session's unexpired access tokens are returned to be denylisted.
    Reused(Vec<AccessGrant>),
    /// Unknown, expired, or its session is revoked.
    Refused,
}
