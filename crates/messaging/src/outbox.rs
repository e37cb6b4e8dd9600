//! Writing events into the outbox, inside the caller's transaction.

use sqlx::PgConnection;
use uuid::Uuid;

use tessera_events::{Envelope, Event};

/// The channel the relay listens on; each write notifies it when its transaction commits.
pub(crate) const NOTIFY_CHANNEL: &str = "messaging_outbox";

/// Why an event could not be written.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// The payload cannot be serialized.
    #[error("cannot serialize event: {0}")]
    Serialize(#[from] serde_json::Error),
    /// The database refused the write.
    #[error("cannot write event to the outbox: {0}")]
    Database(#[from] sqlx::Error),
}

/// The service's outbox: writes events that the relay publishes after commit.
#[derive(Debug, Clone)]
pub struct Outbox {
    source: String,
}

impl Outbox {
    /// An outbox for events published by `source` (the service name).
    pub fn new(source: impl Into<String>) -> Self {
        Self {
            source: source.into(),
        }
    }

    /// Writes `event` through `connection`, which must be inside the transaction that makes
    /// the change: the event is published if and only if that transaction commits.
    ///
    /// Returns the event's id.
    pub async fn enqueue<E: Event>(
        &self,
        connection: &mut PgConnection,
        event: &E,
    ) -> Result<Uuid, OutboxError> {
        let envelope = Envelope::wrap(&self.source, event)?;
        // The notification is delivered on commit and dropped on rollback, so the relay
        // wakes only for real rows; one statement with the insert saves a round trip.
        sqlx::query(
            "WITH written AS ( \
               INSERT INTO messaging_outbox (event_id, event_type, aggregate_id, envelope, traceparent) \
               VALUES ($1, $2, $3, $4, $5) RETURNING seq \
             ) \
             SELECT pg_notify($6, '') FROM written",
        )
        .bind(envelope.id)
        .bind(&envelope.event_type)
        .bind(event.aggregate_id())
        .bind(sqlx::types::Json(&envelope))
        .bind(tessera_observability::trace_context::current_traceparent())
        .bind(NOTIFY_CHANNEL)
        .execute(&mut *connection)
        .await?;
        Ok(envelope.id)
    }
}

/// Runs `delete`, a statement deleting at most `batch` rows, until a run deletes fewer: a
/// backlog of old rows goes in short transactions. Returns how many rows went.
pub(crate) async fn delete_in_batches<F, Deleting>(
    batch: i64,
    mut delete: F,
) -> Result<u64, sqlx::Error>
where
    F: FnMut() -> Deleting,
    Deleting: std::future::Future<Output = Result<u64, sqlx::Error>>,
{
    let mut deleted = 0;
    loop {
        let rows = delete().await?;
        deleted += rows;
        if rows < batch.unsigned_abs() {
            return Ok(deleted);
        }
    }
}
