//! Reliable domain events over RabbitMQ for tessera services.
//!
//! - [`Broker`]: the service's AMQP connection, re-made with backoff and jitter whenever it
//!   is lost, for the life of the process.
//! - `tessera_events::{Event, Envelope}` (a crate of its own, free of I/O): what a service
//!   declares, and the JSON that travels.
//! - [`Outbox`]: writes an event inside the caller's transaction, so the change and its event
//!   commit or roll back together.
//! - [`Relay`]: publishes committed events in order with publisher confirms, marking them
//!   sent only once confirmed; safe with several replicas.
//! - [`Consumer`]: applies events idempotently (effect and processed-id in one transaction,
//!   ack after commit), retries failures with growing delays, dead-letters the rest.
//! - [`MIGRATOR`]: the tables behind the outbox and the processed-event records, applied by
//!   the runtime to every service database.
//!
//! Delivery is at least once from outbox to consumer and effectively once in effect.

mod broker;
mod consumer;
mod metrics;
mod outbox;
mod relay;
pub mod topology;

use std::borrow::Cow;

use sqlx::migrate::Migrator;

pub use broker::{Broker, BrokerSettings};
pub use consumer::{Consumer, ConsumerSettings, Handler};
pub use metrics::MessagingMetrics;
pub use outbox::{Outbox, OutboxError};
pub use relay::{Relay, RelaySettings};

/// Migrations of the messaging tables. They keep their own history table, so they apply to a
/// service database next to the service's own migrations without either seeing the other's.
pub static MIGRATOR: Migrator = Migrator {
    table_name: Cow::Borrowed("_messaging_migrations"),
    ..sqlx::migrate!("./migrations")
};
