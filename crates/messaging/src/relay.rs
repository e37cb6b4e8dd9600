//! The outbox relay: publishes committed outbox rows with publisher confirms.
//!
//! Each batch runs in one transaction that holds an advisory lock, so with several replicas
//! exactly one publishes at a time and events keep their order; the rows are also locked
//! `FOR UPDATE SKIP LOCKED`. A row is marked sent only after the broker confirmed it. If the
//! process dies between publish and commit, the rows stay pending and are published again:
//! delivery is at least once, and consumers deduplicate by event id.

use std::time::Duration;

use lapin::Confirmation;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel};
use sqlx::postgres::PgListener;
use sqlx::{PgPool, Row};
use tessera_observability::trace_context::{TRACEPARENT, current_traceparent, set_remote_parent};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::broker::Broker;
use crate::metrics::MessagingMetrics;
use crate::outbox::NOTIFY_CHANNEL;
use crate::topology::{self, short};

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
}

impl Default for RelaySettings {
    fn default() -> Self {
        Self {
            exchange: topology::EVENTS_EXCHANGE.to_owned(),
            batch_size: 200,
            poll_interval: Duration::from_secs(1),
            retention: Duration::from_secs(24 * 3600),
            cleanup_interval: Duration::from_secs(60),
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
    #[error("the broker refused event {0}")]
    Refused(uuid::Uuid),
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
            tokio::select! {
                () = self.publish_on(&connection, &mut listener, &stop) => {}
                () = self.broker.lost(&connection) => {
                    tracing::warn!("relay lost the broker; will republish unconfirmed events");
                }
            }
        }
        if let Some(connection) = self.broker.connection()
            && let Ok(channel) = open_channel(&connection, &self.settings.exchange).await
        {
            while let Ok(published) = self.publish_batch(&channel).await {
                if published < self.settings.batch_size {
                    break;
                }
            }
            close(&channel).await;
        }
    }

    /// Publishes over `connection` until it fails or `stop` is cancelled.
    async fn publish_on(
        &self,
        connection: &lapin::Connection,
        listener: &mut Option<PgListener>,
        stop: &CancellationToken,
    ) {
        match open_channel(connection, &self.settings.exchange).await {
            Ok(channel) => {
                self.publish_until_failure(&channel, listener, stop).await;
                close(&channel).await;
            }
            Err(error) => {
                tracing::warn!(%error, "relay cannot open a channel; retrying");
                self.pause(stop).await;
            }
        }
    }

    async fn publish_until_failure(
        &self,
        channel: &Channel,
        listener: &mut Option<PgListener>,
        stop: &CancellationToken,
    ) {
        let mut last_cleanup = tokio::time::Instant::now();
        loop {
            match self.publish_batch(channel).await {
                Ok(published) if published >= self.settings.batch_size => continue,
                Ok(_) => {}
                Err(RelayError::Database(error)) => {
                    tracing::warn!(%error, "relay cannot read the outbox")
                }
                Err(error) => {
                    tracing::warn!(%error, "relay lost the broker; will republish unconfirmed events");
                    return;
                }
            }
            self.observe_backlog().await;
            if last_cleanup.elapsed() >= self.settings.cleanup_interval {
                self.delete_sent().await;
                last_cleanup = tokio::time::Instant::now();
            }
            if stop.is_cancelled() {
                return;
            }
            self.wait_for_rows(listener, stop).await;
        }
    }

    /// Waits for a notification of new rows, the poll interval, or `stop`.
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
                Some(active) => {
                    if active.recv().await.is_err() {
                        *listener = None;
                    }
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = stop.cancelled() => {}
            () = notified => {}
            () = tokio::time::sleep(self.settings.poll_interval) => {}
        }
    }

    async fn pause(&self, stop: &CancellationToken) {
        tokio::select! {
            () = stop.cancelled() => {}
            () = tokio::time::sleep(self.settings.poll_interval) => {}
        }
    }

    /// Publishes one batch of pending rows in order and marks the confirmed ones sent.
    /// Returns how many were published; 0 when another replica holds the relay lock.
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
             WHERE sent_at IS NULL ORDER BY seq LIMIT $1 FOR UPDATE SKIP LOCKED",
        )
        .bind(self.settings.batch_size)
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            return Ok(0);
        }

        // Publish the whole batch, then collect the confirms: one round trip, not one per row.
        let mut pending = Vec::with_capacity(rows.len());
        for row in &rows {
            let event_id: uuid::Uuid = row.try_get("event_id")?;
            let event_type: String = row.try_get("event_type")?;
            let envelope: String = row.try_get("envelope")?;
            let traceparent: Option<String> = row.try_get("traceparent")?;
            let span = publish_span(&self.settings.exchange, &event_type, event_id);
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
                .with_type(short(&event_type))
                .with_content_type(short("application/json"))
                .with_delivery_mode(2);
            let confirm = channel
                .basic_publish(
                    short(&self.settings.exchange),
                    short(&event_type),
                    BasicPublishOptions::default(),
                    envelope.as_bytes(),
                    properties,
                )
                .instrument(span)
                .await
                .inspect_err(|_| self.metrics.publish_failures.inc())?;
            self.metrics.published.inc();
            pending.push((row.try_get::<i64, _>("seq")?, event_id, confirm));
        }

        let mut confirmed = Vec::with_capacity(pending.len());
        let mut refused = None;
        for (seq, event_id, confirm) in pending {
            match confirm.await {
                Ok(Confirmation::Ack(_) | Confirmation::NotRequested) if refused.is_none() => {
                    confirmed.push(seq)
                }
                Ok(Confirmation::Ack(_) | Confirmation::NotRequested) => {}
                Ok(Confirmation::Nack(_)) => {
                    self.metrics.publish_failures.inc();
                    refused.get_or_insert(RelayError::Refused(event_id));
                }
                Err(error) => {
                    self.metrics.publish_failures.inc();
                    refused.get_or_insert(RelayError::Broker(error));
                }
            }
        }
        // Only the confirmed prefix is marked: a refused event and those after it are
        // published again, in order, by the next batch.
        sqlx::query("UPDATE messaging_outbox SET sent_at = now() WHERE seq = ANY($1)")
            .bind(&confirmed)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        self.metrics.confirmed.inc_by(confirmed.len() as u64);
        match refused {
            Some(error) => Err(error),
            None => Ok(i64::try_from(confirmed.len()).unwrap_or(i64::MAX)),
        }
    }

    async fn observe_backlog(&self) {
        let stats = sqlx::query_as::<_, (i64, Option<f64>)>(
            "SELECT count(*), EXTRACT(EPOCH FROM now() - min(created_at))::float8 \
             FROM messaging_outbox WHERE sent_at IS NULL",
        )
        .fetch_one(&self.pool)
        .await;
        if let Ok((backlog, oldest)) = stats {
            self.metrics.outbox_backlog.set(backlog);
            self.metrics
                .outbox_oldest_pending_seconds
                .set(oldest.unwrap_or(0.0));
        }
    }

    async fn delete_sent(&self) {
        let retention = format!("{} seconds", self.settings.retention.as_secs());
        let deleted =
            sqlx::query("DELETE FROM messaging_outbox WHERE sent_at < now() - $1::interval")
                .bind(retention)
                .execute(&self.pool)
                .await;
        match deleted {
            Ok(result) if result.rows_affected() > 0 => {
                tracing::debug!(
                    rows = result.rows_affected(),
                    "deleted sent outbox events past retention"
                );
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "cannot delete sent outbox events"),
        }
    }
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
