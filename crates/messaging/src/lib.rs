//! RabbitMQ for tessera services.
//!
//! [`Broker`] owns the service's AMQP connection: a background task connects, notices when
//! the connection is lost (broker restart, network cut) and connects again with exponential
//! backoff and jitter, for as long as the process runs. Callers never hold a dead connection
//! for long and never need to restart the process; while the broker is away the service
//! keeps serving and [`Broker::health_check`] reports it as degraded.

mod broker;

pub use broker::{Broker, BrokerSettings};
