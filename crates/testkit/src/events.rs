//! Watching the event bus: a private queue bound to `tessera.events` that a test reads.

use std::time::Duration;

use futures::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use serde_json::Value;

/// Every event published under some routing keys from the moment it was bound.
///
/// The exchange is shared by all tests running at once, so tests pick their own events out
/// by aggregate (a fresh user id), never by position.
pub struct EventTap {
    _connection: Connection,
    consumer: lapin::Consumer,
    seen: Vec<Value>,
}

impl EventTap {
    /// Binds an exclusive, auto-deleted queue to `tessera.events` for `pattern` (`user.*`)
    /// on the broker and virtual host at `amqp_url`: a
    /// [`TestBroker`](crate::broker::TestBroker)'s, where the services under test publish.
    pub async fn bind_at(amqp_url: &str, pattern: &str) -> Self {
        let connection = Connection::connect(amqp_url, ConnectionProperties::default())
            .await
            .unwrap();
        let channel = connection.create_channel().await.unwrap();
        let exchange = tessera_messaging::topology::EVENTS_EXCHANGE;
        tessera_messaging::topology::declare_exchange(&channel, exchange)
            .await
            .unwrap();
        let queue = channel
            .queue_declare(
                "".into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        channel
            .queue_bind(
                queue.name().clone(),
                exchange.into(),
                pattern.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        let consumer = channel
            .basic_consume(
                queue.name().clone(),
                "event-tap".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        Self {
            _connection: connection,
            consumer,
            seen: Vec::new(),
        }
    }

    /// The envelopes of `event_type` about aggregate `id` (its `data.id`) that arrive within
    /// `wait`, after waiting for at least `count` of them (or the time running out).
    pub async fn about(
        &mut self,
        event_type: &str,
        id: &str,
        count: usize,
        wait: Duration,
    ) -> Vec<Value> {
        let matching = |seen: &[Value]| -> Vec<Value> {
            seen.iter()
                .filter(|e| e["type"] == event_type && e["data"]["id"] == id)
                .cloned()
                .collect()
        };
        self.read_until(wait, |seen| matching(seen).len() >= count)
            .await;
        matching(&self.seen)
    }

    /// Reads events until `done` holds for all those read so far, or `wait` runs out;
    /// whether it held. `|_| false` reads whatever arrives within `wait`.
    pub async fn read_until(
        &mut self,
        wait: Duration,
        mut done: impl FnMut(&[Value]) -> bool,
    ) -> bool {
        let deadline = tokio::time::Instant::now() + wait;
        while !done(&self.seen) {
            let Ok(Some(delivery)) = tokio::time::timeout_at(deadline, self.consumer.next()).await
            else {
                return false;
            };
            let delivery = delivery.unwrap();
            delivery.ack(BasicAckOptions::default()).await.unwrap();
            self.seen
                .push(serde_json::from_slice(&delivery.data).unwrap());
        }
        true
    }

    /// Every envelope read so far, other tests' included, in order of arrival.
    pub fn seen(&self) -> &[Value] {
        &self.seen
    }

    /// Exactly one envelope of `event_type` about `id`, within 10 s.
    pub async fn one(&mut self, event_type: &str, id: &str) -> Value {
        let found = self.about(event_type, id, 1, Duration::from_secs(10)).await;
        assert_eq!(
            found.len(),
            1,
            "expected one {event_type} for {id}, got {found:?}"
        );
        found.into_iter().next().unwrap()
    }
}

/// Publishes `envelope` to `tessera.events` under its `type`, as a service's relay would
/// (persistent, with its id as `message_id`), and waits for the broker's confirm. Publishing
/// one envelope twice is how tests deliver a duplicate. `amqp_url` names the broker and
/// virtual host.
pub async fn publish_at(amqp_url: &str, envelope: &Value) {
    let connection = Connection::connect(amqp_url, ConnectionProperties::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    channel
        .confirm_select(lapin::options::ConfirmSelectOptions::default())
        .await
        .unwrap();
    let event_type = envelope["type"].as_str().unwrap();
    let properties = lapin::BasicProperties::default()
        .with_message_id(envelope["id"].as_str().unwrap().into())
        .with_type(event_type.into())
        .with_content_type("application/json".into())
        .with_delivery_mode(2);
    let confirm = channel
        .basic_publish(
            tessera_messaging::topology::EVENTS_EXCHANGE.into(),
            event_type.into(),
            lapin::options::BasicPublishOptions::default(),
            &serde_json::to_vec(envelope).unwrap(),
            properties,
        )
        .await
        .unwrap();
    assert!(
        confirm.await.unwrap().is_ack(),
        "the broker refused {envelope}"
    );
    let _ = connection.close(200, "done".into()).await;
}

/// The number of messages in `queue` on the broker and virtual host at `amqp_url`, or
/// `None` when there is no such queue.
pub async fn queue_depth_at(amqp_url: &str, queue: &str) -> Option<u32> {
    let connection = Connection::connect(amqp_url, ConnectionProperties::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    let declared = channel
        .queue_declare(queue.into(), passive, FieldTable::default())
        .await
        .ok()
        .map(|queue| queue.message_count());
    let _ = connection.close(200, "done".into()).await;
    declared
}
