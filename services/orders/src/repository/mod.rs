//! Where orders are kept: a trait, its PostgreSQL implementation, and a cache in front.
//!
//! Every change goes with its event: the implementation writes `order.*` to the outbox in
//! the same transaction, and an order, its lines, its event and its idempotency record
//! commit together or not at all.

mod cached;
mod postgres;

use std::future::Future;
use std::time::Duration;

use sqlx::PgConnection;
use tessera_errors::Error;
use tessera_runtime::Snapshot;
use uuid::Uuid;

use crate::domain::{Fingerprint, IdempotencyKey, NewOrder, Order, OrderStatus};

pub use cached::Cached;
pub use postgres::Postgres;

/// The repository the service runs on.
pub type Repository = Cached<Postgres>;

/// Renders the response stored for an idempotency key.
pub type Render = fn(&Order) -> Result<Vec<u8>, serde_json::Error>;

/// An order to write, with the key it is placed under.
#[derive(Clone, Copy)]
pub struct Placement<'a> {
    /// Who places it.
    pub user_id: Uuid,
    /// The client's key.
    pub key: &'a IdempotencyKey,
    /// The request's fingerprint, stored with the key.
    pub fingerprint: Fingerprint,
    /// The order.
    pub order: &'a NewOrder,
    /// How long the key is remembered.
    pub key_ttl: Duration,
    /// The response to store for the key (HTTP 201's body).
    pub render: Render,
}

/// The response stored for a key.
#[derive(Debug, Clone)]
pub struct StoredResponse {
    /// The fingerprint of the request that made it.
    pub fingerprint: Fingerprint,
    /// The order it made.
    pub order_id: Uuid,
    /// Its HTTP status.
    pub status: u16,
    /// Its body.
    pub body: Vec<u8>,
}

/// What [`OrderRepository::place`] did.
#[derive(Debug)]
pub enum Placed {
    /// The order was written; the body is the stored response.
    Created {
        /// The order.
        order: Order,
        /// The response stored for its key.
        body: Vec<u8>,
    },
    /// Another request with the key got there first; nothing was written.
    KeyTaken(StoredResponse),
    /// The user was deleted meanwhile; nothing was written.
    UserGone,
}

/// Which orders a listing shows.
#[derive(Debug, Clone, Copy, Default)]
pub struct Filter {
    /// Only this user's.
    pub user_id: Option<Uuid>,
    /// Only those in this status.
    pub status: Option<OrderStatus>,
}

/// Storage of orders.
pub trait OrderRepository: Send + Sync + 'static {
    /// The live response stored for `key` of `user_id`.
    fn stored_response(
        &self,
        user_id: Uuid,
        key: &IdempotencyKey,
    ) -> impl Future<Output = Result<Option<StoredResponse>, RepositoryError>> + Send;

    /// Writes a new pending order with its `order.created` event and its key, unless the key
    /// is taken (by a request racing this one) or the user was deleted.
    fn place(
        &self,
        placement: Placement<'_>,
    ) -> impl Future<Output = Result<Placed, RepositoryError>> + Send;

    /// The order with this id, as read (shared with other readers when cached).
    fn find(
        &self,
        id: Uuid,
    ) -> impl Future<Output = Result<Option<Snapshot<Order>>, RepositoryError>> + Send;

    /// Up to `limit` orders matching `filter`, newest first, starting after `after`.
    fn list(
        &self,
        filter: Filter,
        after: Option<Uuid>,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<Order>, RepositoryError>> + Send;

    /// Moves `order` to `status` with its event, if nobody changed it since it was read;
    /// `None` if somebody did.
    fn set_status(
        &self,
        order: &Order,
        status: OrderStatus,
    ) -> impl Future<Output = Result<Option<Order>, RepositoryError>> + Send;

    /// Cancels every open order of a deleted user, each with its `order.cancelled`, through
    /// `connection` (the consumer's transaction), and refuses orders of theirs from now on.
    fn cancel_orders_of_deleted_user(
        &self,
        connection: &mut PgConnection,
        user_id: Uuid,
    ) -> impl Future<Output = Result<Vec<Order>, RepositoryError>> + Send;

    /// Drops any copy of the orders `ids` kept outside PostgreSQL, once a transaction the
    /// repository did not commit itself (the consumer's) has changed them. Storage without
    /// copies has nothing to do.
    fn forget(&self, ids: &[Uuid]) -> impl Future<Output = ()> + Send {
        let _ = ids;
        std::future::ready(())
    }

    /// Deletes up to `batch` expired idempotency keys and day-old deletion records; returns
    /// how many rows went.
    fn sweep(&self, batch: u32) -> impl Future<Output = Result<u64, RepositoryError>> + Send;
}

/// Why storage failed.
#[derive(Debug, thiserror::Error)]
pub enum RepositoryError {
    /// A stored row breaks the domain's rules.
    #[error("stored order {id} is invalid: {reason}")]
    Corrupt {
        /// The order's id.
        id: Uuid,
        /// What is wrong with it.
        reason: String,
    },
    /// The response to store could not be rendered.
    #[error("cannot render the stored response: {0}")]
    Render(#[from] serde_json::Error),
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
            RepositoryError::Database(error)
            | RepositoryError::Outbox(tessera_messaging::OutboxError::Database(error)) => {
                tessera_errors::storage::database_error(error, &[])
            }
            other => Self::internal(other),
        }
    }
}
