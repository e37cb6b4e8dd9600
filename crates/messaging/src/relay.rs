//! The outbox relay: publishes committed outbox rows with publisher confirms.
//!
//! Each batch runs in one transaction that holds an advisory lock, so with several replicas
//! exactly one publishes at a time and events keep their order; the rows are also locked
//! `FOR UPDATE SKIP LOCKED`. A row is marked sent only after the broker confirmed it. If the
//! process dies between publish and commit, the rows stay pending and are published again:
//! delivery is at least once, and consumers deduplicate by event id.
//!
//! Before publishing on a channel the relay declares the destination of every subscription
//! it is given, and publishes their event types `mandatory`: an event the broker could not
//! route to a queue comes back and is not marked sent. A row the broker refuses (nack,
//! returned, or a channel it closes over that message) is tried again after a growing,
//! jittered delay; after [`RelaySettings::max_attempts`] it is set aside as poisoned (kept,
//! logged with its id, counted in `messaging_outbox_poisoned`) and the rows after it flow.

use std::time::Duration;

use futures::FutureExt as _;

use lapin::Confirmation;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel};
use sqlx::postgres::PgListener;
use sqlx::{PgPool, Row};
use tessera_observability::trace_context::{TRACEPARENT, current_traceparent, set_remote_parent};
use tessera_resilience::backoff;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::broker::Broker;
use crate::metrics::MessagingMetrics;
use crate::outbox::NOTIFY_CHANNEL;
use crate::topology::{self, QueueTopology, short};

/// Key of the advisory lock that makes one relay at a time publish.
const RELAY_LOCK: i64 = 0x7465_7373_6572_6131; // "tessera1"

/// How the relay runs.
#[derive(Debug, Clone)]
pub struct RelaySettings {
    /// The exchange events are published to.
    pub exchange: String,
    /// Most rows published per transaction.
    pub batch_size: i64,
    /// Longest wait between looks at the outbox when no notification arrives.
    pub poll_interval: Duration,
    /// How long sent rows are kept before being deleted.
    pub retention: Duration,
    /// How often sent rows past retention are looked for.
    pub cleanup_interval: Duration,
    /// Most sent rows deleted per statement, so a large backlog of old rows is removed in
    /// short transactions.
    pub cleanup_batch: i64,
    /// The subscriptions whose destinations are declared before publishing; their event
    /// types are published `mandatory`.
    pub subscriptions: Vec<QueueTopology>,
    /// Times the broker may refuse one row before it is set aside as poisoned.
    pub max_attempts: i32,
    /// First delay after a refusal; it doubles per attempt of the row, with jitter.
    pub retry_min: Duration,
    /// Longest delay after a refusal.
    pub retry_max: Duration,
}

impl Default for RelaySettings {
    fn default() -> Self {
        Self {
            exchange: topology::EVENTS_EXCHANGE.to_owned(),
            batch_size: 200,
            poll_interval: Duration::from_secs(1),
            retention: Duration::from_secs(24 * 3600),
            cleanup_interval: Duration::from_secs(60),
            cleanup_batch: 1_000,
            subscriptions: Vec::new(),
            max_attempts: 10,
            retry_min: Duration::from_millis(200),
            retry_max: Duration::from_secs(30),
        }
    }
}

/// Why a batch stopped.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RelayError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("broker: {0}")]
    Broker(#[from] lapin::Error),
    #[error("the broker refused event {event_id} (attempt {attempts}): {reason}")]
    Refused {
        event_id: uuid::Uuid,
        attempts: i32,
        poisoned: bool,
        reason: String,
    },
}

/// Why publishing over a channel stopped.
enum Ended {
    /// `stop` was cancelled.
    Stopped,
    /// The connection or channel failed for reasons of its own.
    Lost,
    /// The broker refused a row, which has now had `attempts` tries.
    Refused { attempts: i32, poisoned: bool },
}

/// Publishes the outbox of one service database.
pub struct Relay {
    pool: PgPool,
    broker: Broker,
    settings: RelaySettings,
    metrics: MessagingMetrics,
}

impl Relay {
    /// A relay for the outbox in `pool`'s database.
    pub fn new(
        pool: PgPool,
        broker: Broker,
        settings: RelaySettings,
        metrics: MessagingMetrics,
    ) -> Self {
        Self {
            pool,
            broker,
            settings,
            metrics,
        }
    }

    /// Publishes until `stop` is cancelled, then flushes what is pending once more if the
    /// broker is there. Survives broker and database outages by waiting and retrying.
    pub async fn run(self, stop: CancellationToken) {
        let mut listener = None;
        while !stop.is_cancelled() {
            let Some(connection) = self.broker.connected_until(&stop).await else {
                break;
            };
            // Anything on a connection can hang once it is dead, so all of it races against
            // its loss. Abandoning a batch rolls its transaction back: its rows stay pending.
            let ended = tokio::select! {
                ended = self.publish_on(&connection, &mut listener, &stop) => ended,
                () = self.broker.lost(&connection) => {
                    tracing::warn!("relay lost the broker; will republish unconfirmed events");
                    Ended::Lost
                }
            };
            match ended {
                Ended::Refused {
                    attempts,
                    poisoned: false,
                } => {
                    let failures = u32::try_from(attempts.saturating_sub(1)).unwrap_or(0);
                    let delay = backoff(failures, self.settings.retry_min, self.settings.retry_max);
                    stop.run_until_cancelled(tokio::time::sleep(delay)).await;
                }
                // Whatever failed under the channel, a new one is not opened in a tight loop.
                Ended::Lost => {
                    stop.run_until_cancelled(tokio::time::sleep(self.settings.retry_min))
                        .await;
                }
                Ended::Stopped | Ended::Refused { .. } => {}
            }
        }
        if let Some(connection) = self.broker.connection()
            && let Ok(channel) = self.open_channel(&connection).await
        {
            while let Ok(published) = self.publish_batch(&channel).await {
                if published < self.settings.batch_size {
                    break;
                }
            }
            close(&channel).await;
        }
    }

    /// Publishes over `connection` until it fails, the broker refuses a row, or `stop` is
    /// cancelled.
    async fn publish_on(
        &self,
        connection: &lapin::Connection,
        listener: &mut Option<PgListener>,
        stop: &CancellationToken,
    ) -> Ended {
        match self.open_channel(connection).await {
            Ok(channel) => {
                let ended = self.publish_until_failure(&channel, listener, stop).await;
                close(&channel).await;
                ended
            }
            Err(error) => {
                // A subscription's queue declared elsewhere with other arguments lands here
                // for good: nothing is published (nothing lost) until an operator fixes it.
                tracing::error!(%error, "relay cannot open a channel and declare the subscriptions; retrying");
                stop.run_until_cancelled(tokio::time::sleep(self.settings.poll_interval))
                    .await;
                Ended::Lost
            }
        }
    }

    async fn publish_until_failure(
        &self,
        channel: &Channel,
        listener: &mut Option<PgListener>,
        stop: &CancellationToken,
    ) -> Ended {
        let mut last_cleanup = tokio::time::Instant::now();
        loop {
            match self.publish_batch(channel).await {
                Ok(published) if published >= self.settings.batch_size => continue,
                Ok(_) => {}
                Err(RelayError::Database(error)) => {
                    tracing::warn!(%error, "relay cannot read the outbox")
                }
                Err(RelayError::Refused {
                    event_id,
                    attempts,
                    poisoned,
                    reason,
                }) => {
                    if poisoned {
                        tracing::error!(%event_id, attempts, %reason, "the broker refused an event too often; set aside as poisoned, publishing the rest");
                    } else {
                        tracing::warn!(%event_id, attempts, %reason, "the broker refused an event; trying again after a delay");
                    }
                    self.observe_backlog().await;
                    return Ended::Refused { attempts, poisoned };
                }
                Err(RelayError::Broker(error)) => {
                    tracing::warn!(%error, "relay lost the broker; will republish unconfirmed events");
                    return Ended::Lost;
                }
            }
            self.observe_backlog().await;
            if last_cleanup.elapsed() >= self.settings.cleanup_interval {
                self.delete_sent().await;
                last_cleanup = tokio::time::Instant::now();
            }
            if stop.is_cancelled() {
                return Ended::Stopped;
            }
            self.wait_for_rows(listener, stop).await;
        }
    }

    /// Waits for a notification of new rows, the poll interval, or `stop`. Notifications
    /// that arrived meanwhile are all taken: one batch reads every row they announce.
    async fn wait_for_rows(&self, listener: &mut Option<PgListener>, stop: &CancellationToken) {
        if listener.is_none() {
            match PgListener::connect_with(&self.pool).await {
                Ok(mut fresh) => match fresh.listen(NOTIFY_CHANNEL).await {
                    Ok(()) => *listener = Some(fresh),
                    Err(error) => tracing::debug!(%error, "relay cannot LISTEN; polling"),
                },
                Err(error) => tracing::debug!(%error, "relay cannot LISTEN; polling"),
            }
        }
        let notified = async {
            match listener.as_mut() {
                Some(active) => match active.recv().await {
                    // Take the ones already here too, without waiting (reading a message is
                    // cancel-safe): one batch serves them all.
                    Ok(_) => while let Some(Ok(Some(_))) = active.try_recv().now_or_never() {},
                    Err(_) => *listener = None,
                },
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = stop.cancelled() => {}
            () = notified => {}
            () = tokio::time::sleep(self.settings.poll_interval) => {}
        }
    }

    /// Publishes one batch of pending rows in order and marks the confirmed ones sent.
    /// Returns how many were published; 0 when another replica holds the relay lock.
    ///
    /// The first row the broker does not take ends the batch: the rows before it are marked
    /// sent, and it is charged an attempt when the broker refused it (nacked, returned, or
    /// closed the channel over it) rather than the connection failing under it, which is no
    /// fault of the row's.
    pub(crate) async fn publish_batch(&self, channel: &Channel) -> Result<i64, RelayError> {
        let mut tx = self.pool.begin().await?;
        let leader: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
            .bind(RELAY_LOCK)
            .fetch_one(&mut *tx)
            .await?;
        if !leader {
            return Ok(0);
        }
        let rows = sqlx::query(
            "SELECT seq, event_id, event_type, envelope::text AS envelope, traceparent FROM messaging_outbox \
             WHERE sent_at IS NULL AND poisoned_at IS NULL ORDER BY seq LIMIT $1 FOR UPDATE SKIP LOCKED",
        )
        .bind(self.settings.batch_size)
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            return Ok(0);
        }

        // Publish the whole batch, then collect the confirms: one round trip, not one per row.
        let mut pending = Vec::with_capacity(rows.len());
        let mut failed_publish = None;
        for row in &rows {
            let seq: i64 = row.try_get("seq")?;
            let event_id: uuid::Uuid = row.try_get("event_id")?;
            let event_type: String = row.try_get("event_type")?;
            let envelope: String = row.try_get("envelope")?;
            let traceparent: Option<String> = row.try_get("traceparent")?;
            match self
                .publish(channel, event_id, &event_type, &envelope, traceparent)
                .await
            {
                Ok(confirm) => pending.push((seq, event_id, confirm)),
                Err(error) => {
                    failed_publish = Some(Refusal {
                        seq,
                        event_id,
                        reason: error.to_string(),
                        error: Some(error),
                    });
                    break;
                }
            }
        }

        let mut confirmed = Vec::with_capacity(pending.len());
        let mut refused = None;
        for (seq, event_id, confirm) in pending {
            let refusal = |reason: String, error| Refusal {
                seq,
                event_id,
                reason,
                error,
            };
            // Every confirm is awaited, also after a refusal, so none is left dangling.
            let outcome = confirm.await;
            if refused.is_some() {
                continue;
            }
            match outcome {
                Ok(Confirmation::Ack(None) | Confirmation::NotRequested) => confirmed.push(seq),
                Ok(Confirmation::Ack(Some(returned))) => {
                    refused = Some(refusal(
                        format!(
                            "returned unroutable ({} {}): no queue is bound to its type",
                            returned.reply_code, returned.reply_text
                        ),
                        None,
                    ));
                }
                Ok(Confirmation::Nack(_)) => {
                    refused = Some(refusal("nacked".to_owned(), None));
                }
                Err(error) => refused = Some(refusal(error.to_string(), Some(error))),
            }
        }
        let refused = refused.or(failed_publish);
        // Only the confirmed prefix is marked: a refused event and those after it are
        // published again, in order, by the next batch.
        sqlx::query("UPDATE messaging_outbox SET sent_at = now() WHERE seq = ANY($1)")
            .bind(&confirmed)
            .execute(&mut *tx)
            .await?;
        let outcome = match refused {
            None => Ok(i64::try_from(confirmed.len()).unwrap_or(i64::MAX)),
            Some(refusal) => {
                self.metrics.publish_failures.inc();
                // A channel-level (soft) error is the broker closing the channel over this
                // message; any other error is the connection's, no fault of the row's.
                let charged = refusal
                    .error
                    .as_ref()
                    .is_none_or(lapin::Error::is_amqp_soft_error);
                match (charged, refusal.error) {
                    (false, Some(error)) => Err(RelayError::Broker(error)),
                    _ => Err(self
                        .charge(&mut tx, refusal.seq, refusal.event_id, refusal.reason)
                        .await?),
                }
            }
        };
        tx.commit().await?;
        self.metrics.confirmed.inc_by(confirmed.len() as u64);
        outcome
    }

    /// Hands one row to the broker; the returned confirm resolves once the broker took it.
    async fn publish(
        &self,
        channel: &Channel,
        event_id: uuid::Uuid,
        event_type: &str,
        envelope: &str,
        traceparent: Option<String>,
    ) -> lapin::Result<lapin::PublisherConfirm> {
        let span = publish_span(&self.settings.exchange, event_type, event_id);
        if let Some(traceparent) = &traceparent {
            set_remote_parent(&span, traceparent);
        }
        // The consumer continues from this span, which continues the writer's trace
        // (or from the writer's span, when this process traces nothing).
        let mut headers = FieldTable::default();
        if let Some(traceparent) = span.in_scope(current_traceparent).or(traceparent) {
            headers.insert(
                short(TRACEPARENT),
                AMQPValue::LongString(traceparent.into()),
            );
        }
        let properties = BasicProperties::default()
            .with_headers(headers)
            .with_message_id(short(&event_id.to_string()))
            .with_type(short(event_type))
            .with_content_type(short("application/json"))
            .with_delivery_mode(2);
        let options = BasicPublishOptions {
            mandatory: self.subscribed(event_type),
            ..BasicPublishOptions::default()
        };
        let confirm = channel
            .basic_publish(
                short(&self.settings.exchange),
                short(event_type),
                options,
                envelope.as_bytes(),
                properties,
            )
            .instrument(span)
            .await?;
        self.metrics.published.inc();
        Ok(confirm)
    }

    /// Whether some subscription binds `event_type`: then an unroutable copy is a fault.
    fn subscribed(&self, event_type: &str) -> bool {
        self.settings.subscriptions.iter().any(|subscription| {
            subscription
                .event_types
                .iter()
                .any(|bound| bound == event_type)
        })
    }

    /// Records a refusal of row `seq`, poisoning it once it has had its attempts.
    async fn charge(
        &self,
        tx: &mut sqlx::PgConnection,
        seq: i64,
        event_id: uuid::Uuid,
        reason: String,
    ) -> Result<RelayError, sqlx::Error> {
        let (attempts, poisoned): (i32, bool) = sqlx::query_as(
            "UPDATE messaging_outbox SET attempts = attempts + 1, last_error = $2, \
               poisoned_at = CASE WHEN attempts + 1 >= $3 THEN now() END \
             WHERE seq = $1 RETURNING attempts, poisoned_at IS NOT NULL",
        )
        .bind(seq)
        .bind(&reason)
        .bind(self.settings.max_attempts)
        .fetch_one(&mut *tx)
        .await?;
        Ok(RelayError::Refused {
            event_id,
            attempts,
            poisoned,
            reason,
        })
    }

    async fn observe_backlog(&self) {
        let stats = sqlx::query_as::<_, (i64, Option<f64>, i64)>(
            "SELECT count(*) FILTER (WHERE poisoned_at IS NULL), \
               EXTRACT(EPOCH FROM now() - min(created_at) FILTER (WHERE poisoned_at IS NULL))::float8, \
               count(*) FILTER (WHERE poisoned_at IS NOT NULL) \
             FROM messaging_outbox WHERE sent_at IS NULL",
        )
        .fetch_one(&self.pool)
        .await;
        if let Ok((backlog, oldest, poisoned)) = stats {
            self.metrics.outbox_backlog.set(backlog);
            self.metrics
                .outbox_oldest_pending_seconds
                .set(oldest.unwrap_or(0.0));
            self.metrics.outbox_poisoned.set(poisoned);
        }
    }

    /// Deletes sent rows past retention, a batch per statement, so no single transaction
    /// holds locks over (or bloats the log with) an unbounded number of rows.
    async fn delete_sent(&self) {
        let retention = format!("{} seconds", self.settings.retention.as_secs());
        let (retention, pool, batch) = (&retention, &self.pool, self.settings.cleanup_batch);
        let deleted = crate::outbox::delete_in_batches(batch, || async move {
            sqlx::query(
                "DELETE FROM messaging_outbox WHERE seq IN ( \
                   SELECT seq FROM messaging_outbox WHERE sent_at < now() - $1::interval \
                   ORDER BY sent_at LIMIT $2)",
            )
            .bind(retention)
            .bind(batch)
            .execute(pool)
            .await
            .map(|done| done.rows_affected())
        })
        .await;
        match deleted {
            Ok(0) => {}
            Ok(rows) => tracing::debug!(rows, "deleted sent outbox events past retention"),
            Err(error) => tracing::warn!(%error, "cannot delete sent outbox events"),
        }
    }

    /// A channel in confirm mode, with the exchange and every subscription's destination
    /// declared.
    async fn open_channel(&self, connection: &lapin::Connection) -> lapin::Result<Channel> {
        let channel = open_channel(connection, &self.settings.exchange).await?;
        for subscription in &self.settings.subscriptions {
            subscription.declare_destination(&channel).await?;
        }
        Ok(channel)
    }
}

/// A row the broker did not take, and the broker error if there was one.
struct Refusal {
    seq: i64,
    event_id: uuid::Uuid,
    reason: String,
    error: Option<lapin::Error>,
}

/// The PRODUCER span of one event's publication.
fn publish_span(exchange: &str, event_type: &str, event_id: uuid::Uuid) -> tracing::Span {
    tracing::info_span!(
        "publish_event",
        otel.name = format_args!("publish {event_type}"),
        otel.kind = "producer",
        messaging.system = "rabbitmq",
        messaging.operation.type = "send",
        messaging.destination.name = exchange,
        messaging.rabbitmq.destination.routing_key = event_type,
        messaging.message.id = %event_id,
    )
}

/// Closes a channel we are done with, so closing the connection later finds none open.
pub(crate) async fn close(channel: &Channel) {
    if !channel.status().connected() {
        return;
    }
    // On a connection that died unnoticed the close-ok never comes.
    match tokio::time::timeout(Duration::from_secs(1), channel.close(200, "done".into())).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::debug!(%error, "channel was already closed"),
        Err(_) => tracing::debug!("channel did not confirm its close"),
    }
}

/// A channel in confirm mode, with the exchange declared.
pub(crate) async fn open_channel(
    connection: &lapin::Connection,
    exchange: &str,
) -> lapin::Result<Channel> {
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    topology::declare_exchange(&channel, exchange).await?;
    Ok(channel)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::broker::BrokerSettings;
    use tessera_testkit::database::TestDatabase;

    #[tokio::test]
    async fn one_wake_up_takes_every_notification_that_arrived() {
        let database = TestDatabase::migrated(&crate::MIGRATOR).await;
        let pool = PgPool::connect(database.url()).await.unwrap();
        let metrics = MessagingMetrics::unregistered();
        // Never connected: waiting for rows needs only the database.
        let broker = Broker::start(
            BrokerSettings {
                url: "amqp://127.0.0.1:1/%2f".to_owned().into(),
                connection_name: "relay-test".to_owned(),
                min_backoff: Duration::from_secs(60),
                max_backoff: Duration::from_secs(60),
            },
            metrics.connection_up.clone(),
        );
        let relay = Relay::new(
            pool.clone(),
            broker.clone(),
            RelaySettings::default(),
            metrics,
        );
        let mut listener = PgListener::connect_with(&pool).await.unwrap();
        listener.listen(NOTIFY_CHANNEL).await.unwrap();
        let mut listener = Some(listener);

        // Five commits' worth of notifications, all arrived before the relay looks.
        let mut tx = pool.begin().await.unwrap();
        for n in 0..5 {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(NOTIFY_CHANNEL)
                .bind(n.to_string())
                .execute(&mut *tx)
                .await
                .unwrap();
        }
        tx.commit().await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;

        relay
            .wait_for_rows(&mut listener, &CancellationToken::new())
            .await;

        let left = listener.as_mut().unwrap().try_recv().now_or_never();
        assert!(
            left.is_none(),
            "a notification was left for another wake-up: {left:?}"
        );
        broker.close().await;
    }
}
