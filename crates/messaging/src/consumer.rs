//! Idempotent consumers: the effect and the record of the event commit together, the message
//! is acknowledged only after the commit, failures are retried with growing delays and then
//! dead-lettered with the error recorded.
//!
//! Only a failure of the message's own spends one of its attempts. While the consumer's
//! database cannot be reached (a failover, a restart, an exhausted pool) the message in hand
//! is held, unacknowledged, and applied again once the database answers: no outage, however
//! long, moves events into the dead-letter queue. The records of processed events are kept
//! for [`ConsumerSettings::processed_retention`], far longer than any redelivery, and then
//! pruned in batches.

use std::collections::HashMap;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel};
use sqlx::{PgConnection, PgPool};
use tessera_observability::trace_context::{TRACEPARENT, set_remote_parent};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::broker::Broker;
use crate::metrics::MessagingMetrics;
use crate::topology::{QueueTopology, short};
use tessera_errors::BoxError;
use tessera_events::{Envelope, Event};
use tessera_resilience::backoff;

/// Header counting how many times a message has been attempted.
const ATTEMPT_HEADER: &str = "x-tessera-attempt";
/// Header carrying the last error, on retried and dead-lettered messages.
const ERROR_HEADER: &str = "x-tessera-error";

/// Applies one kind of event. Runs inside the transaction that also records the event as
/// processed: return an error and neither happens.
///
/// An error whose chain holds a `sqlx::Error` (or I/O error) meaning the database cannot be
/// reached, or a serialization failure or deadlock, costs the message no attempt: it is
/// applied again once the database answers. Any other error is the message's own.
pub trait Handler<E: Event>: Send + Sync + 'static {
    /// What [`Handler::handle`] hands to [`Handler::committed`]; `()` for most handlers.
    type Outcome: Send;

    /// Applies `event` through `connection` (inside the transaction).
    fn handle(
        &self,
        event: E,
        envelope: &Envelope,
        connection: &mut PgConnection,
    ) -> impl Future<Output = Result<Self::Outcome, BoxError>> + Send;

    /// Runs once the transaction has committed, before the message is acknowledged: for
    /// effects outside the database that must not be seen before the commit, such as
    /// dropping cached copies of what the event changed (dropped before the commit, a copy
    /// read in between would outlive it). A process killed between the commit and this
    /// never runs it. Nothing by default.
    fn committed(&self, outcome: Self::Outcome) -> impl Future<Output = ()> + Send {
        drop(outcome);
        std::future::ready(())
    }
}

/// The type-erased form the consumer stores: applying gives what to run after the commit.
trait ErasedHandler: Send + Sync {
    fn handle<'h, 'c>(
        &'h self,
        envelope: &'c Envelope,
        connection: &'c mut PgConnection,
    ) -> BoxFuture<'c, Result<BoxFuture<'h, ()>, Failure>>
    where
        'h: 'c;
}

struct Typed<E, H>(H, PhantomData<fn(E)>);

impl<E: Event, H: Handler<E>> ErasedHandler for Typed<E, H> {
    fn handle<'h, 'c>(
        &'h self,
        envelope: &'c Envelope,
        connection: &'c mut PgConnection,
    ) -> BoxFuture<'c, Result<BoxFuture<'h, ()>, Failure>>
    where
        'h: 'c,
    {
        Box::pin(async move {
            if envelope.version != E::VERSION {
                return Err(Failure::Malformed(format!(
                    "{} version {} is not handled (expected {})",
                    envelope.event_type,
                    envelope.version,
                    E::VERSION
                )));
            }
            let event = envelope.decode::<E>().map_err(|error| {
                Failure::Malformed(format!("{} payload does not parse: {error}", E::TYPE))
            })?;
            let outcome = self
                .0
                .handle(event, envelope, connection)
                .await
                .map_err(|error| {
                    if transient(&*error) {
                        Failure::Unavailable(error.to_string())
                    } else {
                        Failure::Handler(error)
                    }
                })?;
            Ok(Box::pin(self.0.committed(outcome)) as BoxFuture<'h, ()>)
        })
    }
}

/// How a delivery failed.
enum Failure {
    /// It can never succeed (bad JSON, unknown type or version): dead-letter at once.
    Malformed(String),
    /// The handler failed: retry, then dead-letter.
    Handler(BoxError),
    /// Our own storage refused what was asked: retry, then dead-letter.
    Database(sqlx::Error),
    /// The database cannot be reached (or asked to try again): no fault of the message's,
    /// which is applied again once it answers.
    Unavailable(String),
}

impl Failure {
    fn describe(&self) -> String {
        match self {
            Self::Malformed(reason) => format!("malformed: {reason}"),
            Self::Handler(error) => format!("handler failed: {error}"),
            Self::Database(error) => format!("database: {error}"),
            Self::Unavailable(reason) => format!("database unavailable: {reason}"),
        }
    }
}

impl From<sqlx::Error> for Failure {
    fn from(error: sqlx::Error) -> Self {
        if transient(&error) {
            Self::Unavailable(error.to_string())
        } else {
            Self::Database(error)
        }
    }
}

/// Whether `error`, or an error in its chain, says the database is unreachable now or asks
/// for the transaction to be tried again, rather than refusing it.
fn transient(error: &(dyn std::error::Error + 'static)) -> bool {
    use tessera_errors::storage::{is_unreachable, is_unreachable_code};
    // Serialization failure and deadlock: the database asks for the transaction again.
    let retry_requested =
        |code: &str| is_unreachable_code(code) || matches!(code, "40001" | "40P01");
    let mut next = Some(error);
    while let Some(error) = next {
        let transient = if let Some(error) = error.downcast_ref::<sqlx::Error>() {
            is_unreachable(error)
                || matches!(error, sqlx::Error::Database(database)
                    if database.code().is_some_and(|code| retry_requested(&code)))
        } else if let Some(error) = error.downcast_ref::<sqlx::postgres::PgDatabaseError>() {
            retry_requested(error.code())
        } else {
            error.is::<std::io::Error>()
        };
        if transient {
            return true;
        }
        next = error.source();
    }
    false
}

/// How a consumer runs.
#[derive(Debug, Clone)]
pub struct ConsumerSettings {
    /// The consumer's name, unique per service: the key of its processed-event records.
    pub name: String,
    /// The exchange its queue is bound to.
    pub exchange: String,
    /// Its queue.
    pub queue: String,
    /// Most unacknowledged messages in flight.
    pub prefetch: u16,
    /// Delay before each retry; after the last one a failing message is dead-lettered.
    pub retry_delays: Vec<Duration>,
    /// Delete the queues after this long without their consumer (for short-lived
    /// environments and tests); never when `None`.
    pub queue_expires: Option<Duration>,
    /// How long the record of a processed event is kept, so a redelivery is known as one;
    /// far beyond the retry delays and the broker's redelivery of unacknowledged messages.
    pub processed_retention: Duration,
    /// How often records past retention are deleted, [`Self::prune_batch`] per statement.
    pub prune_interval: Duration,
    /// Most records deleted per statement.
    pub prune_batch: i64,
}

/// Consumes events of the registered types from one queue.
pub struct Consumer {
    settings: ConsumerSettings,
    handlers: HashMap<&'static str, Arc<dyn ErasedHandler>>,
    pool: PgPool,
    broker: Broker,
    metrics: MessagingMetrics,
}

impl Consumer {
    /// A consumer with no handlers yet.
    pub fn new(
        settings: ConsumerSettings,
        pool: PgPool,
        broker: Broker,
        metrics: MessagingMetrics,
    ) -> Self {
        Self {
            settings,
            handlers: HashMap::new(),
            pool,
            broker,
            metrics,
        }
    }

    /// Handles events of type `E` with `handler`; the queue is bound to `E::TYPE`.
    #[must_use]
    pub fn on<E: Event, H: Handler<E>>(mut self, handler: H) -> Self {
        self.handlers
            .insert(E::TYPE, Arc::new(Typed(handler, PhantomData)));
        self
    }

    /// The broker objects this consumer uses.
    pub fn topology(&self) -> QueueTopology {
        let mut event_types: Vec<String> = self.handlers.keys().map(|t| (*t).to_owned()).collect();
        event_types.sort();
        QueueTopology {
            exchange: self.settings.exchange.clone(),
            queue: self.settings.queue.clone(),
            event_types,
            retry_delays: self.settings.retry_delays.clone(),
            expires: self.settings.queue_expires,
        }
    }

    /// Consumes until `stop` is cancelled, re-subscribing whenever the broker comes back,
    /// and prunes old processed-event records meanwhile. On stop it finishes (and
    /// acknowledges) the message in hand and takes no more.
    pub async fn run(self, stop: CancellationToken) {
        tokio::join!(self.consume_until(&stop), self.prune_until(&stop));
    }

    async fn consume_until(&self, stop: &CancellationToken) {
        let stop = stop.clone();
        let topology = self.topology();
        while !stop.is_cancelled() {
            let Some(connection) = self.broker.connected_until(&stop).await else {
                break;
            };
            // Anything on a connection can hang once it is dead, so all of it races against
            // its loss. Abandoning a message mid-way rolls its transaction back; it was not
            // acknowledged, so the broker delivers it again.
            tokio::select! {
                () = self.consume_on(&connection, &topology, &stop) => {}
                () = self.broker.lost(&connection) => {
                    tracing::warn!(queue = %topology.queue, "lost the broker; resubscribing");
                }
            }
            tokio::select! {
                () = stop.cancelled() => {}
                () = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        }
    }

    /// Subscribes over `connection` and consumes until it fails or `stop` is cancelled.
    async fn consume_on(
        &self,
        connection: &lapin::Connection,
        topology: &QueueTopology,
        stop: &CancellationToken,
    ) {
        match self.subscribe(connection, topology).await {
            Ok((channel, deliveries)) => {
                tracing::info!(queue = %topology.queue, "consuming");
                self.consume(&channel, deliveries, topology, stop).await;
                crate::relay::close(&channel).await;
            }
            Err(error) => {
                tracing::warn!(%error, queue = %topology.queue, "cannot subscribe; retrying")
            }
        }
    }

    async fn subscribe(
        &self,
        connection: &lapin::Connection,
        topology: &QueueTopology,
    ) -> lapin::Result<(Channel, lapin::Consumer)> {
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        topology.declare(&channel).await?;
        channel
            .basic_qos(self.settings.prefetch, BasicQosOptions::default())
            .await?;
        let deliveries = channel
            .basic_consume(
                short(&topology.queue),
                short(&self.settings.name),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok((channel, deliveries))
    }

    async fn consume(
        &self,
        channel: &Channel,
        mut deliveries: lapin::Consumer,
        topology: &QueueTopology,
        stop: &CancellationToken,
    ) {
        // Expiring queues stay while their consumer runs: redeclaring renews their lease,
        // including the retry and dead-letter queues, which never have consumers.
        let renew_every = topology
            .expires
            .map(|expires| (expires / 3).max(Duration::from_millis(100)));
        let period = renew_every.unwrap_or(Duration::from_secs(3_600));
        let mut renew = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        loop {
            let delivery = tokio::select! {
                () = stop.cancelled() => return,
                _ = renew.tick(), if renew_every.is_some() => {
                    if let Err(error) = topology.declare(channel).await {
                        tracing::warn!(%error, "cannot renew the expiring queues");
                        return;
                    }
                    continue;
                }
                next = deliveries.next() => next,
            };
            match delivery {
                Some(Ok(delivery)) => {
                    if let Err(error) = self.process(channel, delivery, topology, stop).await {
                        // The message was not acknowledged: the broker redelivers it.
                        tracing::warn!(%error, "lost the broker while settling a message");
                        return;
                    }
                }
                Some(Err(error)) => {
                    tracing::warn!(%error, "delivery stream failed");
                    return;
                }
                None => return,
            }
        }
    }

    /// Applies one delivery and settles it. Errors are broker errors only.
    ///
    /// While the database is unreachable the delivery is held and applied again once it
    /// answers; if `stop` comes first, it is left unacknowledged for the broker to deliver
    /// again.
    async fn process(
        &self,
        channel: &Channel,
        delivery: Delivery,
        topology: &QueueTopology,
        stop: &CancellationToken,
    ) -> lapin::Result<()> {
        let mut outages = 0;
        let outcome = loop {
            match self.attempt(&delivery).await {
                Err(Failure::Unavailable(reason)) => {
                    self.count("deferred");
                    tracing::warn!(%reason, "cannot apply an event while the database is unavailable; holding it");
                    outages += 1;
                    if !self.database_answers(outages, stop).await {
                        return Ok(());
                    }
                }
                outcome => break outcome,
            }
        };
        match outcome {
            Ok(Applied::Processed) => self.count("processed"),
            Ok(Applied::Duplicate) => self.count("duplicate"),
            Err(failure) => {
                self.settle_failure(channel, &delivery, topology, &failure)
                    .await?;
            }
        }
        delivery
            .acker
            .ack(BasicAckOptions::default())
            .await
            .map(drop)
    }

    /// Counts a delivery's `outcome` for this consumer.
    fn count(&self, outcome: &str) {
        self.metrics
            .consumed
            .with_label_values(&[self.settings.name.as_str(), outcome])
            .inc();
    }

    /// Waits, with backoff, until the database answers (`true`) or `stop` (`false`).
    async fn database_answers(&self, mut failures: u32, stop: &CancellationToken) -> bool {
        loop {
            let delay = backoff(failures, Duration::from_millis(100), Duration::from_secs(5));
            if stop
                .run_until_cancelled(tokio::time::sleep(delay))
                .await
                .is_none()
            {
                return false;
            }
            if sqlx::query("SELECT 1").execute(&self.pool).await.is_ok() {
                return true;
            }
            failures += 1;
        }
    }

    /// Decodes the delivery and applies it with its handler, in its own span.
    async fn attempt(&self, delivery: &Delivery) -> Result<Applied, Failure> {
        match serde_json::from_slice::<Envelope>(&delivery.data) {
            Err(error) => Err(Failure::Malformed(format!(
                "not an event envelope: {error}"
            ))),
            Ok(envelope) => match self.handlers.get(envelope.event_type.as_str()) {
                None => Err(Failure::Malformed(format!(
                    "no handler for event type {:?}",
                    envelope.event_type
                ))),
                Some(handler) => {
                    let span = tracing::info_span!(
                        "consume_event",
                        otel.name = format_args!("process {}", envelope.event_type),
                        otel.kind = "consumer",
                        otel.status_code = tracing::field::Empty,
                        messaging.system = "rabbitmq",
                        messaging.operation.type = "process",
                        messaging.destination.name = %self.settings.queue,
                        messaging.consumer.group.name = %self.settings.name,
                        messaging.message.id = %envelope.id,
                        event_type = %envelope.event_type,
                    );
                    if let Some(AMQPValue::LongString(traceparent)) = header(delivery, TRACEPARENT)
                    {
                        set_remote_parent(&span, &traceparent.to_string());
                    }
                    let applied = self
                        .apply(handler.as_ref(), &envelope)
                        .instrument(span.clone())
                        .await;
                    if applied.is_err() {
                        span.record("otel.status_code", "ERROR");
                    }
                    applied
                }
            },
        }
    }

    /// Runs the handler and records the event, in one transaction.
    async fn apply(
        &self,
        handler: &dyn ErasedHandler,
        envelope: &Envelope,
    ) -> Result<Applied, Failure> {
        let mut tx = self.pool.begin().await?;
        let first_time = sqlx::query(
            "INSERT INTO messaging_processed_events (consumer, event_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(&self.settings.name)
        .bind(envelope.id)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !first_time {
            return Ok(Applied::Duplicate);
        }
        let committed = handler.handle(envelope, &mut tx).await?;
        tx.commit().await?;
        committed.await;
        Ok(Applied::Processed)
    }

    /// Deletes this consumer's processed-event records past retention every
    /// `prune_interval`, a batch per statement, until `stop`.
    async fn prune_until(&self, stop: &CancellationToken) {
        let period = self.settings.prune_interval;
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            match self.prune().await {
                Ok(0) => {}
                Ok(deleted) => {
                    tracing::debug!(deleted, "pruned processed-event records past retention")
                }
                Err(error) => tracing::warn!(%error, "cannot prune processed-event records"),
            }
        }
    }

    /// Deletes the records past retention; returns how many.
    pub async fn prune(&self) -> Result<u64, sqlx::Error> {
        let settings = &self.settings;
        let pool = &self.pool;
        crate::outbox::delete_in_batches(settings.prune_batch, || async move {
            sqlx::query(
                "DELETE FROM messaging_processed_events WHERE consumer = $1 AND event_id IN ( \
                   SELECT event_id FROM messaging_processed_events \
                   WHERE consumer = $1 AND processed_at < now() - make_interval(secs => $2) \
                   ORDER BY processed_at LIMIT $3)",
            )
            .bind(&settings.name)
            .bind(settings.processed_retention.as_secs_f64())
            .bind(settings.prune_batch)
            .execute(pool)
            .await
            .map(|done| done.rows_affected())
        })
        .await
    }

    /// Sends a failed message to its next retry queue, or to the dead-letter queue.
    async fn settle_failure(
        &self,
        channel: &Channel,
        delivery: &Delivery,
        topology: &QueueTopology,
        failure: &Failure,
    ) -> lapin::Result<()> {
        let attempt = attempt_of(delivery) + 1;
        let reason = failure.describe();
        let retryable = !matches!(failure, Failure::Malformed(_));
        let (target, outcome) = if retryable && attempt <= topology.retry_delays.len() {
            (topology.retry_queue(attempt), "retried")
        } else {
            (topology.dead_letter_queue(), "dead_lettered")
        };
        tracing::warn!(%reason, attempt, queue = %target, "event failed");
        let mut headers = delivery.properties.headers().clone().unwrap_or_default();
        headers.insert(
            short(ATTEMPT_HEADER),
            AMQPValue::LongLongInt(i64::try_from(attempt).unwrap_or(i64::MAX)),
        );
        headers.insert(short(ERROR_HEADER), AMQPValue::LongString(reason.into()));
        let properties = delivery
            .properties
            .clone()
            .with_headers(headers)
            .with_delivery_mode(2);
        republish(channel, &target, &delivery.data, properties).await?;
        self.count(outcome);
        Ok(())
    }
}

enum Applied {
    Processed,
    Duplicate,
}

/// A header of `delivery`.
fn header(delivery: &Delivery, name: &str) -> Option<AMQPValue> {
    delivery
        .properties
        .headers()
        .as_ref()?
        .inner()
        .get(name)
        .cloned()
}

/// How many attempts a message has had so far (0 when fresh).
fn attempt_of(delivery: &Delivery) -> usize {
    match header(delivery, ATTEMPT_HEADER) {
        Some(AMQPValue::LongLongInt(n)) => usize::try_from(n).unwrap_or(0),
        Some(AMQPValue::LongInt(n)) => usize::try_from(n).unwrap_or(0),
        _ => 0,
    }
}

/// Publishes to a queue through the default exchange and waits for the broker's confirm, so
/// the original is acknowledged only once its copy is safe.
async fn republish(
    channel: &Channel,
    queue: &str,
    payload: &[u8],
    properties: BasicProperties,
) -> lapin::Result<()> {
    let confirm = channel
        .basic_publish(
            short(""),
            short(queue),
            BasicPublishOptions::default(),
            payload,
            properties,
        )
        .await?;
    match confirm.await? {
        lapin::Confirmation::Nack(_) => {
            Err(std::io::Error::other(format!("the broker refused the message for {queue}")).into())
        }
        _ => Ok(()),
    }
}
