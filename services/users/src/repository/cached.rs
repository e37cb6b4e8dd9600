//! Cache-aside for reads by id: memory, then Redis, then PostgreSQL; writes invalidate.

use tessera_runtime::{NearCache, Snapshot};
use uuid::Uuid;

use super::{RepositoryError, UserRepository};
use crate::domain::{Creation, NewUser, User, UserChanges};

/// A repository whose reads by id go through a cache.
///
/// Invalidation happens after the write commits: this instance reads the write at once,
/// others within [`NearCache::COHERENCE_BOUND`]. A reader in another instance that read
/// PostgreSQL just before the commit can at worst put the old value back in Redis; the
/// entry's time to live bounds that window. Cache failures are the cache's business (it
/// logs and counts them): the inner repository always answers.
pub struct Cached<R> {
    inner: R,
    cache: NearCache<Uuid, User>,
}

impl<R> Cached<R> {
    /// Wraps `inner` with `cache`.
    pub fn new(inner: R, cache: NearCache<Uuid, User>) -> Self {
        Self { inner, cache }
    }
}

impl<R: UserRepository> UserRepository for Cached<R> {
    async fn create(&self, user: NewUser) -> Result<Creation, RepositoryError> {
        self.inner.create(user).await
    }

    async fn find(&self, id: Uuid) -> Result<Option<Snapshot<User>>, RepositoryError> {
        self.cache
            .get_or_load(&id, async || self.inner.find(id).await)
            .await
    }

    async fn find_many(&self, ids: &[Uuid]) -> Result<Vec<User>, RepositoryError> {
        self.inner.find_many(ids).await
    }

    async fn list(&self, after: Option<Uuid>, limit: u32) -> Result<Vec<User>, RepositoryError> {
        self.inner.list(after, limit).await
    }

    async fn update(
        &self,
        id: Uuid,
        changes: UserChanges,
    ) -> Result<Option<User>, RepositoryError> {
        // Invalidate whatever the outcome: an error after the commit was sent (a lost
        // acknowledgement) may still have changed the row.
        let updated = self.inner.update(id, changes).await;
        self.cache.invalidate(&id).await;
        updated
    }

    async fn delete(&self, id: Uuid) -> Result<bool, RepositoryError> {
        let deleted = self.inner.delete(id).await;
        self.cache.invalidate(&id).await;
        deleted
    }
}
