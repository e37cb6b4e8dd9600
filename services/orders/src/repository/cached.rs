//! Cache-aside for reads by id: memory, then Redis, then PostgreSQL; changes invalidate.

use sqlx::PgConnection;
use tessera_runtime::{NearCache, Snapshot};
use uuid::Uuid;

use super::{Filter, OrderRepository, Placed, Placement, RepositoryError, StoredResponse};
use crate::domain::{IdempotencyKey, Order, OrderStatus};

/// A repository whose reads by id go through a cache.
///
/// A status change invalidates after it commits: this instance reads it at once, others
/// within [`NearCache::COHERENCE_BOUND`]. Orders cancelled in the consumer's transaction
/// are invalidated by [`OrderRepository::forget`] once that commits. A new order needs
/// nothing: misses are not cached. Cache failures are the cache's business (it logs and
/// counts them): the inner repository always answers.
#[derive(Clone)]
pub struct Cached<R> {
    inner: R,
    cache: NearCache<Uuid, Order>,
}

impl<R> Cached<R> {
    /// Wraps `inner` with `cache`.
    pub fn new(inner: R, cache: NearCache<Uuid, Order>) -> Self {
        Self { inner, cache }
    }
}

impl<R: OrderRepository> OrderRepository for Cached<R> {
    async fn stored_response(
        &self,
        user_id: Uuid,
        key: &IdempotencyKey,
    ) -> Result<Option<StoredResponse>, RepositoryError> {
        self.inner.stored_response(user_id, key).await
    }

    async fn place(&self, placement: Placement<'_>) -> Result<Placed, RepositoryError> {
        self.inner.place(placement).await
    }

    async fn find(&self, id: Uuid) -> Result<Option<Snapshot<Order>>, RepositoryError> {
        self.cache
            .get_or_load(&id, async || self.inner.find(id).await)
            .await
    }

    async fn list(
        &self,
        filter: Filter,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<Order>, RepositoryError> {
        self.inner.list(filter, after, limit).await
    }

    async fn set_status(
        &self,
        order: &Order,
        status: OrderStatus,
    ) -> Result<Option<Order>, RepositoryError> {
        // Invalidate whatever the outcome: an error after the commit was sent (a lost
        // acknowledgement) may still have changed the row.
        let changed = self.inner.set_status(order, status).await;
        self.cache.invalidate(&order.id).await;
        changed
    }

    async fn cancel_orders_of_deleted_user(
        &self,
        connection: &mut PgConnection,
        user_id: Uuid,
    ) -> Result<Vec<Order>, RepositoryError> {
        // Not invalidated here: the transaction is still open, and a read before its commit
        // would cache the order as it was. The consumer calls `forget` after the commit.
        self.inner
            .cancel_orders_of_deleted_user(connection, user_id)
            .await
    }

    async fn forget(&self, ids: &[Uuid]) {
        for id in ids {
            self.cache.invalidate(id).await;
        }
    }

    async fn sweep(&self, batch: u32) -> Result<u64, RepositoryError> {
        self.inner.sweep(batch).await
    }
}
