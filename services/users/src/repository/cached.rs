//! Cache-aside for reads by id: Redis first, PostgreSQL on a miss; writes invalidate.

use tessera_runtime::JsonCache;
use uuid::Uuid;

use super::{RepositoryError, UserRepository};
use crate::domain::{Creation, NewUser, User, UserChanges};

/// A repository whose reads by id go through a cache.
///
/// Invalidation happens after the write commits, so a reader can at worst put back the
/// value it read just before the commit; the entry's time to live bounds that window. Cache
/// failures are the cache's business ([`JsonCache`] logs and counts them): the inner
/// repository always answers.
pub struct Cached<R> {
    inner: R,
    cache: JsonCache,
}

impl<R> Cached<R> {
    /// Wraps `inner` with `cache`.
    pub fn new(inner: R, cache: JsonCache) -> Self {
        Self { inner, cache }
    }
}

fn key(id: Uuid) -> String {
    id.to_string()
}

impl<R: UserRepository> UserRepository for Cached<R> {
    async fn create(&self, user: NewUser) -> Result<Creation, RepositoryError> {
        self.inner.create(user).await
    }

    async fn find(&self, id: Uuid) -> Result<Option<User>, RepositoryError> {
        if let Some(user) = self.cache.get::<User>(&key(id)).await {
            return Ok(Some(user));
        }
        let found = self.inner.find(id).await?;
        if let Some(user) = &found {
            self.cache.put(&key(id), user).await;
        }
        Ok(found)
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
        self.cache.invalidate(&key(id)).await;
        updated
    }

    async fn delete(&self, id: Uuid) -> Result<bool, RepositoryError> {
        let deleted = self.inner.delete(id).await;
        self.cache.invalidate(&key(id)).await;
        deleted
    }
}
