//! The broker objects events travel through, declared idempotently at startup.
//!
//! ```text
//! publisher ──▶ exchange tessera.events (topic, durable), routing key = event type
//!                 │ bound by each consumer to the types it handles
//!                 ▼
//!               <queue>                 ◀── back after the delay ──┐
//!                 │ handler fails (attempt n)                      │
//!                 ├──────────────▶ <queue>.retry.<n>  (TTL = delay n, dead-letters to <queue>)
//!                 │ attempts exhausted, or malformed
//!                 └──────────────▶ <queue>.dlq        (kept for an operator)
//! ```
//!
//! Retries and dead letters go through the default exchange, addressed by queue name. All
//! queues are durable and messages persistent, so pending retries survive a broker restart.
//!
//! The main queue, its dead-letter queue and the bindings are the *destination* of a
//! subscription: every publisher declares the destinations of all subscriptions it knows
//! before publishing ([`crate::RelaySettings::subscriptions`]), and publishes their types
//! `mandatory`, so an event is never confirmed into a void.

use std::time::Duration;

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{Channel, ExchangeKind};

/// The exchange every event is published to.
pub const EVENTS_EXCHANGE: &str = "tessera.events";

/// Declares the events exchange.
pub async fn declare_exchange(channel: &Channel, exchange: &str) -> lapin::Result<()> {
    let options = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    channel
        .exchange_declare(
            exchange.into(),
            ExchangeKind::Topic,
            options,
            FieldTable::default(),
        )
        .await
}

/// The destinations of every subscription of the event contract
/// ([`tessera_events::subscriptions`]) on `exchange`: what each service declares before it
/// publishes, and in its `migrate` step.
pub fn contract_destinations(exchange: &str) -> Vec<QueueTopology> {
    tessera_events::subscriptions::SUBSCRIPTIONS
        .iter()
        .map(|subscription| QueueTopology {
            exchange: exchange.to_owned(),
            queue: subscription.queue(),
            event_types: subscription
                .event_types
                .iter()
                .map(|event_type| (*event_type).to_owned())
                .collect(),
            retry_delays: Vec::new(),
            expires: None,
        })
        .collect()
}

/// A consumer's queues: the main one, one per retry delay, and the dead-letter queue.
#[derive(Debug, Clone)]
pub struct QueueTopology {
    /// The exchange the main queue is bound to.
    pub exchange: String,
    /// The main queue (`orders.events`).
    pub queue: String,
    /// The event types to bind.
    pub event_types: Vec<String>,
    /// Delay before each retry; its length is the number of retries.
    pub retry_delays: Vec<Duration>,
    /// Delete the queues after this long unused (`x-expires`); never when `None`. The
    /// retry and dead-letter queues never have consumers: the consumer redeclares the
    /// topology to keep them while it runs.
    pub expires: Option<Duration>,
}

impl QueueTopology {
    /// The queue a message waits in before its `attempt`-th retry (1-based).
    pub fn retry_queue(&self, attempt: usize) -> String {
        format!("{}.retry.{attempt}", self.queue)
    }

    /// The dead-letter queue.
    pub fn dead_letter_queue(&self) -> String {
        format!("{}.dlq", self.queue)
    }

    /// Declares the queues and bindings; declaring what exists already is a no-op.
    pub async fn declare(&self, channel: &Channel) -> lapin::Result<()> {
        self.declare_destination(channel).await?;
        for (index, delay) in self.retry_delays.iter().enumerate() {
            let mut args = FieldTable::default();
            let ttl = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
            args.insert("x-message-ttl".into(), AMQPValue::LongLongInt(ttl));
            args.insert("x-dead-letter-exchange".into(), string(""));
            args.insert("x-dead-letter-routing-key".into(), string(&self.queue));
            declare_queue(channel, &self.retry_queue(index + 1), self.expiring(args)).await?;
        }
        Ok(())
    }

    /// Declares what keeps every event of these types once published: the main queue, its
    /// dead-letter queue and the bindings, all derived from the queue's name. Publishers
    /// declare this for every subscription, so an event for a consumer that has never run
    /// waits for it; the retry queues, whose delays are the consumer's own setting, are left
    /// to [`Self::declare`].
    pub async fn declare_destination(&self, channel: &Channel) -> lapin::Result<()> {
        declare_exchange(channel, &self.exchange).await?;
        // A message the consumer rejects outright still lands in the dead-letter queue.
        let mut main_args = FieldTable::default();
        main_args.insert("x-dead-letter-exchange".into(), string(""));
        main_args.insert(
            "x-dead-letter-routing-key".into(),
            string(&self.dead_letter_queue()),
        );
        declare_queue(channel, &self.queue, self.expiring(main_args)).await?;
        declare_queue(
            channel,
            &self.dead_letter_queue(),
            self.expiring(FieldTable::default()),
        )
        .await?;
        for event_type in &self.event_types {
            channel
                .queue_bind(
                    self.queue.as_str().into(),
                    self.exchange.as_str().into(),
                    event_type.as_str().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }
        Ok(())
    }

    /// `arguments` with `x-expires` when the queues expire.
    fn expiring(&self, mut arguments: FieldTable) -> FieldTable {
        if let Some(expires) = self.expires {
            let millis = i64::try_from(expires.as_millis()).unwrap_or(i64::MAX);
            arguments.insert("x-expires".into(), AMQPValue::LongLongInt(millis));
        }
        arguments
    }
}

async fn declare_queue(channel: &Channel, name: &str, arguments: FieldTable) -> lapin::Result<()> {
    let options = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare(name.into(), options, arguments)
        .await
        .map(drop)
}

fn string(value: &str) -> AMQPValue {
    AMQPValue::LongString(value.into())
}

/// Shorthand for lapin's short strings.
pub(crate) fn short(value: &str) -> ShortString {
    value.into()
}
