//! Where profiles are kept: a trait, its PostgreSQL implementation, and a Redis cache-aside
//! decorator.
//!
//! Every write goes with its event: the PostgreSQL implementation writes `user.*` to the
//! outbox in the same transaction as the change.

mod cached;
mod postgres;

use std::future::Future;

pub use cached::Cached;
pub use postgres::Postgres;

/// The repository the service runs on: PostgreSQL behind the Redis cache.
pub type Repository = Cached<Postgres>;
use tessera_errors::Error;
use tessera_runtime::Snapshot;
use uuid::Uuid;

use crate::domain::{Creation, NewUser, User, UserChanges};

/// Storage of profiles.
pub trait UserRepository: Send + Sync + 'static {
    /// Creates a profile, or returns the one that already has its email.
    fn create(
        &self,
        user: NewUser,
    ) -> impl Future<Output = Result<Creation, RepositoryError>> + Send;

    /// The profile with this id, as read (shared with other readers when cached).
    fn find(
        &self,
        id: Uuid,
    ) -> impl Future<Output = Result<Option<Snapshot<User>>, RepositoryError>> + Send;

    /// The profiles that exist among these ids.
    fn find_many(
        &self,
        ids: &[Uuid],
    ) -> impl Future<Output = Result<Vec<User>, RepositoryError>> + Send;

    /// Up to `limit` profiles in id order, starting after `after`.
    fn list(
        &self,
        after: Option<Uuid>,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<User>, RepositoryError>> + Send;

    /// Applies `changes`; `None` when there is no such profile.
    fn update(
        &self,
        id: Uuid,
        changes: UserChanges,
    ) -> impl Future<Output = Result<Option<User>, RepositoryError>> + Send;

    /// Deletes the profile; false when there was none.
    fn delete(&self, id: Uuid) -> impl Future<Output = Result<bool, RepositoryError>> + Send;
}

/// Why storage failed.
#[derive(Debug, thiserror::Error)]
pub enum RepositoryError {
    /// The id is taken by a profile with another email.
    #[error("a user with id {0} already exists with another email")]
    IdTaken(Uuid),
    /// A stored row breaks the domain's rules.
    #[error("stored user {id} is invalid: {reason}")]
    Corrupt {
        /// The row's id.
        id: Uuid,
        /// What is wrong with it.
        reason: String,
    },
    /// The database failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The event could not be written.
    #[error(transparent)]
    Outbox(#[from] tessera_messaging::OutboxError),
}

impl From<RepositoryError> for Error {
    fn from(error: RepositoryError) -> Self {
        match error {
            RepositoryError::IdTaken(_) => Self::AlreadyExists(error.to_string()),
            RepositoryError::Database(error)
            | RepositoryError::Outbox(tessera_messaging::OutboxError::Database(error)) => {
                tessera_errors::storage::database_error(error, &[])
            }
            other => Self::internal(other),
        }
    }
}
