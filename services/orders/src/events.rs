//! What orders learns from the users service's events: a deleted user's open orders are
//! cancelled.

use sqlx::PgConnection;
use tessera_errors::BoxError;
use tessera_events::Envelope;
use tessera_events::users::UserDeleted;
use tessera_messaging::{Consumer, Handler};
use tessera_runtime::Context;
use uuid::Uuid;

use crate::repository::OrderRepository;

/// The consumer's name: the key of its processed-event records, so it never changes.
const CONSUMER: &str = "orders.users";

/// The service's consumer with the handler of `user.deleted`.
pub fn consumer<R: OrderRepository + Clone>(context: &Context, repository: &R) -> Consumer {
    context
        .consumer(CONSUMER)
        .on::<UserDeleted, _>(CancelOpenOrders {
            repository: repository.clone(),
        })
}

/// `user.deleted`: cancels each open order of the user with its own `order.cancelled`, in the
/// transaction that records the event as processed, so a redelivery, or a second consumer
/// racing this one, finds the event done and cancels nothing twice.
struct CancelOpenOrders<R> {
    repository: R,
}

impl<R: OrderRepository> Handler<UserDeleted> for CancelOpenOrders<R> {
    /// The orders cancelled, forgotten by caches once cancelled for good.
    type Outcome = Vec<Uuid>;

    async fn handle(
        &self,
        event: UserDeleted,
        _: &Envelope,
        connection: &mut PgConnection,
    ) -> Result<Vec<Uuid>, BoxError> {
        let cancelled = self
            .repository
            .cancel_orders_of_deleted_user(connection, event.id)
            .await?;
        tracing::info!(user_id = %event.id, cancelled = cancelled.len(), "cancelled a deleted user's open orders");
        Ok(cancelled.into_iter().map(|order| order.id).collect())
    }

    async fn committed(&self, cancelled: Vec<Uuid>) {
        self.repository.forget(&cancelled).await;
    }
}
