//! Where credentials and sessions are kept: a trait, and its PostgreSQL implementation.

mod postgres;

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use tessera_domain::{Email, Role};
use tessera_errors::Error;
use tessera_jwt::IssuedToken;
use uuid::Uuid;

pub use postgres::Postgres;

/// The repository the service runs on.
pub type Repository = Postgres;

use crate::domain::{AccessGrant, Credential, RefreshToken, Rotation, SessionPolicy};

/// Storage of credentials and sessions.
pub trait AccountRepository: Send + Sync + 'static {
    /// Claims `email` for a registration with a `pending` credential and returns its user id,
    /// or `None` when the email is taken. A pending credential older than `abandoned_after`
    /// (its registration died mid-way) is taken over with its id, so a profile made for it
    /// is reused rather than orphaned.
    fn reserve(
        &self,
        email: &Email,
        password_hash: &str,
        role: Role,
        abandoned_after: Duration,
    ) -> impl Future<Output = Result<Option<Uuid>, RepositoryError>> + Send;

    /// Turns the pending credential `pending` into an active one for the profile `user_id`
    /// (the same id, unless an existing profile was adopted) with `role`. False when the
    /// pending credential is gone.
    fn activate(
        &self,
        pending: Uuid,
        user_id: Uuid,
        role: Role,
    ) -> impl Future<Output = Result<bool, RepositoryError>> + Send;

    /// Deletes the pending credential `pending`: the compensation of a failed registration.
    fn discard(&self, pending: Uuid) -> impl Future<Output = Result<(), RepositoryError>> + Send;

    /// The active credential of `email`.
    fn find_active(
        &self,
        email: &Email,
    ) -> impl Future<Output = Result<Option<Credential>, RepositoryError>> + Send;

    /// The role of the active credential of `email`.
    fn role_of(
        &self,
        email: &Email,
    ) -> impl Future<Output = Result<Option<Role>, RepositoryError>> + Send;

    /// Replaces the password hash of `user_id` (after a login with outdated hash costs).
    fn replace_hash(
        &self,
        user_id: Uuid,
        password_hash: &str,
    ) -> impl Future<Output = Result<(), RepositoryError>> + Send;

    /// Starts a session for `user_id` with its first access and refresh tokens. `false` if
    /// the credential is gone (the user was deleted since the password was checked).
    fn open_session(
        &self,
        user_id: Uuid,
        access: AccessGrant,
        refresh: &RefreshToken,
        refresh_expires_at: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool, RepositoryError>> + Send;

    /// Exchanges `presented` for `next` (valid until `next_expires_at`, or until the session
    /// is `policy.lifetime` old if that comes first) in one transaction. A session that old
    /// already is refused. `issue` makes the new access token for the session's user and
    /// current role; its error aborts the exchange.
    ///
    /// Concurrent exchanges of one token are serialised: the first rotates it, the others
    /// see it used moments ago ([`Rotation::JustRotated`]); a token used longer ago than
    /// `policy.reuse_grace` is a replay and revokes the session.
    fn rotate<E: From<RepositoryError> + Send>(
        &self,
        presented: &RefreshToken,
        next: &RefreshToken,
        next_expires_at: DateTime<Utc>,
        policy: SessionPolicy,
        issue: impl FnOnce(Uuid, Role) -> Result<IssuedToken, E> + Send,
    ) -> impl Future<Output = Result<Rotation<IssuedToken>, E>> + Send;

    /// Revokes the session `presented` belongs to, if it is `user_id`'s, and the access
    /// token `caller` presented; returns the revoked unexpired access tokens, `caller`'s
    /// first. A session revoked already answers them too, so a logout retried after its
    /// denylisting failed denylists them after all.
    fn revoke_session(
        &self,
        presented: &RefreshToken,
        user_id: Uuid,
        caller: AccessGrant,
    ) -> impl Future<Output = Result<Vec<AccessGrant>, RepositoryError>> + Send;

    /// Up to `limit` revocations of unexpired tokens that Redis has not taken yet.
    fn unpushed_revocations(
        &self,
        limit: i64,
    ) -> impl Future<Output = Result<Vec<AccessGrant>, RepositoryError>> + Send;

    /// Records that Redis took the revocations of `jtis`.
    fn mark_pushed(
        &self,
        jtis: &[Uuid],
    ) -> impl Future<Output = Result<(), RepositoryError>> + Send;

    /// Marks every revocation of an unexpired token as not taken by Redis, for a Redis that
    /// lost them.
    fn unmark_pushed(&self) -> impl Future<Output = Result<(), RepositoryError>> + Send;

    /// Deletes pending credentials older than `abandoned_after`, expired sessions, revoked
    /// ones whose access tokens have all expired, expired access tokens, expired refresh
    /// tokens (a used one is kept until then, to recognise its reuse) and the revocations
    /// of expired tokens. Returns how many rows went.
    fn sweep(
        &self,
        abandoned_after: Duration,
    ) -> impl Future<Output = Result<u64, RepositoryError>> + Send;

    /// Deletes `user_id`'s credential and sessions through `connection` (inside an event
    /// consumer's transaction); returns the sessions' unexpired access tokens, to denylist.
    fn forget_user(
        &self,
        connection: &mut PgConnection,
        user_id: Uuid,
    ) -> impl Future<Output = Result<Vec<AccessGrant>, RepositoryError>> + Send;

    /// Applies a profile's role as of its `version` through `connection` (inside an event
    /// consumer's transaction), unless a change of a later version was applied already. When that changes
    /// the role, every session of the user ends (their tokens carry the old role); returns
    /// those sessions' unexpired access tokens, to denylist, and nothing otherwise.
    fn apply_role(
        &self,
        connection: &mut PgConnection,
        user_id: Uuid,
        role: Role,
        version: i64,
    ) -> impl Future<Output = Result<Vec<AccessGrant>, RepositoryError>> + Send;
}

/// Why storage failed.
#[derive(Debug, thiserror::Error)]
pub enum RepositoryError {
    /// The database failed.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// A stored role is not one this build knows.
    #[error("credential {user_id} has an unknown role {role:?}")]
    CorruptRole {
        /// Whose.
        user_id: Uuid,
        /// What is stored.
        role: String,
    },
}

impl From<RepositoryError> for Error {
    fn from(error: RepositoryError) -> Self {
        match error {
            RepositoryError::Database(error) => tessera_errors::storage::database_error(error, &[]),
            corrupt @ RepositoryError::CorruptRole { .. } => Self::internal(corrupt),
        }
    }
}
