//! The event pipeline against the real PostgreSQL and RabbitMQ: every test has its own
//! database, exchange and queues, so they run in parallel.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use lapin::BasicProperties;
use lapin::options::{BasicGetOptions, BasicPublishOptions};
use lapin::types::{AMQPValue, FieldTable};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool};
use tessera_errors::BoxError;
use tessera_events::{Envelope, Event};
use tessera_messaging::{
    Broker, BrokerSettings, Consumer, ConsumerSettings, Handler, MessagingMetrics, Outbox, Relay,
    RelaySettings,
};
use tessera_testkit::database::TestDatabase;
use tessera_testkit::proxy::TcpProxy;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Serialize, Deserialize)]
struct Counted {
    aggregate: String,
    n: i32,
}

impl Event for Counted {
    const TYPE: &'static str = "test.counted";
    fn aggregate_id(&self) -> String {
        self.aggregate.clone()
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Doomed {
    reason: String,
}

impl Event for Doomed {
    const TYPE: &'static str = "test.doomed";
    fn aggregate_id(&self) -> String {
        "doomed".to_owned()
    }
}

/// Records each event in `applied`, in the order applied; once that commits, notes in
/// `after_commit` whether another connection (of the pool it holds) sees the record.
struct Record(PgPool);

impl Handler<Counted> for Record {
    type Outcome = uuid::Uuid;

    async fn handle(
        &self,
        event: Counted,
        envelope: &Envelope,
        connection: &mut PgConnection,
    ) -> Result<uuid::Uuid, BoxError> {
        sqlx::query("INSERT INTO applied (event_id, aggregate, n) VALUES ($1, $2, $3)")
            .bind(envelope.id)
            .bind(event.aggregate)
            .bind(event.n)
            .execute(connection)
            .await?;
        Ok(envelope.id)
    }

    async fn committed(&self, event_id: uuid::Uuid) {
        sqlx::query(
            "INSERT INTO after_commit (event_id, seen) \
             SELECT $1, EXISTS (SELECT 1 FROM applied WHERE event_id = $1)",
        )
        .bind(event_id)
        .execute(&self.0)
        .await
        .unwrap();
    }
}

/// Always fails.
struct Fail;

impl Handler<Doomed> for Fail {
    type Outcome = ();

    async fn handle(
        &self,
        event: Doomed,
        _: &Envelope,
        _: &mut PgConnection,
    ) -> Result<(), BoxError> {
        Err(event.reason.into())
    }
}

/// One isolated pipeline: a database, a broker connection, unique exchange and queue names.
struct Pipeline {
    _database: TestDatabase,
    pool: PgPool,
    broker: Broker,
    exchange: String,
    queue: String,
    metrics: MessagingMetrics,
    stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Pipeline {
    async fn new(amqp_addr: SocketAddr) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        if let Ok(filter) = std::env::var("TEST_LOG") {
            use tracing_subscriber::layer::SubscriberExt;
            use tracing_subscriber::util::SubscriberInitExt;
            let targets: tracing_subscriber::filter::Targets = filter.parse().unwrap();
            let _ = tracing_subscriber::fmt()
                .with_test_writer()
                .finish()
                .with(targets)
                .try_init();
        }
        let database = TestDatabase::migrated(&tessera_messaging::MIGRATOR).await;
        let pool = PgPool::connect(database.url()).await.unwrap();
        sqlx::query("CREATE TABLE applied (id BIGSERIAL PRIMARY KEY, event_id UUID NOT NULL, aggregate TEXT NOT NULL, n INT NOT NULL)")
            .execute(&pool)
            .await
            .unwrap();
        sqlx::query("CREATE TABLE after_commit (event_id UUID NOT NULL, seen BOOLEAN NOT NULL)")
            .execute(&pool)
            .await
            .unwrap();
        let metrics = MessagingMetrics::unregistered();
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        let broker = Broker::start(
            BrokerSettings {
                url: format!("amqp://guest:guest@{amqp_addr}/%2f").into(),
                connection_name: format!("test-{suffix}"),
                min_backoff: Duration::from_millis(50),
                max_backoff: Duration::from_millis(500),
            },
            metrics.connection_up.clone(),
        );
        Self {
            _database: database,
            pool,
            broker,
            exchange: format!("test.events.{suffix}"),
            queue: format!("test.{suffix}"),
            metrics,
            stop: CancellationToken::new(),
            tasks: Vec::new(),
        }
    }

    async fn local() -> Self {
        Self::new(SocketAddr::from(([127, 0, 0, 1], 5672))).await
    }

    fn consumer(&self) -> Consumer {
        self.consumer_on(self.pool.clone())
    }

    /// The test consumer, on its database through `pool`.
    fn consumer_on(&self, pool: PgPool) -> Consumer {
        Consumer::new(
            ConsumerSettings {
                name: "test-consumer".to_owned(),
                exchange: self.exchange.clone(),
                queue: self.queue.clone(),
                prefetch: 50,
                retry_delays: vec![Duration::from_millis(50), Duration::from_millis(100)],
                queue_expires: Some(Duration::from_secs(300)),
                processed_retention: Duration::from_secs(3_600),
                prune_interval: Duration::from_secs(3_600),
                prune_batch: 2,
            },
            pool,
            self.broker.clone(),
            self.metrics.clone(),
        )
        .on::<Counted, _>(Record(self.pool.clone()))
        .on::<Doomed, _>(Fail)
    }

    /// Declares the consumer's queues and bindings, then starts it. Declaring first means
    /// nothing published from now on is dropped for want of a bound queue (the consumer's own
    /// declaration races with the relay).
    async fn start_consumer(&mut self) {
        let consumer = self.consumer();
        let connection = self.broker.connected().await.unwrap();
        let channel = connection.create_channel().await.unwrap();
        consumer.topology().declare(&channel).await.unwrap();
        self.tasks
            .push(tokio::spawn(consumer.run(self.stop.clone())));
    }

    fn start_relay(&mut self) {
        self.start_relay_with(RelaySettings::default());
    }

    fn start_relay_with(&mut self, defaults: RelaySettings) {
        // The consumer's subscription, as a service's relay is given the contract's.
        let settings = RelaySettings {
            exchange: self.exchange.clone(),
            batch_size: 100,
            poll_interval: Duration::from_millis(200),
            subscriptions: vec![self.consumer().topology()],
            ..defaults
        };
        let relay = Relay::new(
            self.pool.clone(),
            self.broker.clone(),
            settings,
            self.metrics.clone(),
        );
        self.tasks.push(tokio::spawn(relay.run(self.stop.clone())));
    }

    /// Writes each event in its own committed transaction.
    async fn write(&self, events: impl IntoIterator<Item = Counted>) {
        let outbox = Outbox::new("test");
        for event in events {
            let mut tx = self.pool.begin().await.unwrap();
            outbox.enqueue(&mut tx, &event).await.unwrap();
            tx.commit().await.unwrap();
        }
    }

    async fn applied(&self) -> Vec<(String, i32)> {
        sqlx::query_as("SELECT aggregate, n FROM applied ORDER BY id")
            .fetch_all(&self.pool)
            .await
            .unwrap()
    }

    async fn wait_for_applied(&self, count: usize, limit: Duration) -> Vec<(String, i32)> {
        let deadline = Instant::now() + limit;
        loop {
            let applied = self.applied().await;
            if applied.len() >= count {
                return applied;
            }
            assert!(
                Instant::now() < deadline,
                "only {} of {count} events applied within {limit:?}",
                applied.len()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until at most `left` events are unsent, for up to 30 s; `what` names the wait.
    async fn wait_for_pending(&self, left: i64, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.pending().await > left {
            assert!(Instant::now() < deadline, "{what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A channel on the pipeline's broker connection, for the test's own broker calls.
    async fn channel(&self) -> lapin::Channel {
        let connection = self.broker.connected().await.unwrap();
        connection.create_channel().await.unwrap()
    }

    async fn pending(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM messaging_outbox WHERE sent_at IS NULL")
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    fn consumed(&self, outcome: &str) -> u64 {
        self.metrics
            .consumed
            .with_label_values(&["test-consumer", outcome])
            .get()
    }

    async fn stop(self) {
        self.stop.cancel();
        for task in self.tasks {
            tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .unwrap()
                .unwrap();
        }
        self.broker.close().await;
    }
}

/// `aggregates` × `per_aggregate` events, interleaved across aggregates.
fn events(aggregates: usize, per_aggregate: i32) -> Vec<Counted> {
    (0..per_aggregate)
        .flat_map(|n| {
            (0..aggregates).map(move |a| Counted {
                aggregate: format!("agg-{a}"),
                n,
            })
        })
        .collect()
}

/// Each event applied exactly once, and each aggregate's in the order written.
fn assert_once_in_order(applied: &[(String, i32)], aggregates: usize, per_aggregate: i32) {
    assert_eq!(
        applied.len(),
        aggregates * per_aggregate as usize,
        "each event applied once"
    );
    for a in 0..aggregates {
        let name = format!("agg-{a}");
        let seen: Vec<i32> = applied
            .iter()
            .filter(|(agg, _)| *agg == name)
            .map(|(_, n)| *n)
            .collect();
        assert_eq!(
            seen,
            (0..per_aggregate).collect::<Vec<_>>(),
            "order of {name}"
        );
    }
}

#[tokio::test]
async fn a_thousand_events_arrive_once_in_order_and_rolled_back_ones_never() {
    let mut pipeline = Pipeline::local().await;
    pipeline.start_consumer().await;

    let mut tx = pipeline.pool.begin().await.unwrap();
    let ghost = Counted {
        aggregate: "ghost".to_owned(),
        n: 0,
    };
    Outbox::new("test").enqueue(&mut tx, &ghost).await.unwrap();
    tx.rollback().await.unwrap();

    pipeline.write(events(10, 100)).await;
    pipeline.start_relay();
    let applied = pipeline
        .wait_for_applied(1_000, Duration::from_secs(60))
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await; // anything extra would show now
    let applied_after = pipeline.applied().await;
    assert_eq!(applied, applied_after);
    assert_once_in_order(&applied, 10, 100);
    assert!(applied.iter().all(|(aggregate, _)| aggregate != "ghost"));
    assert_eq!(pipeline.pending().await, 0);
    assert_eq!(pipeline.metrics.confirmed.get(), 1_000);
    pipeline.stop().await;
}

#[tokio::test]
async fn what_a_handler_does_after_the_commit_sees_the_committed_effect() {
    let mut pipeline = Pipeline::local().await;
    pipeline.start_consumer().await;
    pipeline.write(events(1, 5)).await;
    pipeline.start_relay();
    pipeline.wait_for_applied(5, Duration::from_secs(30)).await;

    let deadline = Instant::now() + Duration::from_secs(10);
    let noted = loop {
        let noted: Vec<(bool,)> = sqlx::query_as("SELECT seen FROM after_commit")
            .fetch_all(&pipeline.pool)
            .await
            .unwrap();
        if noted.len() >= 5 || Instant::now() > deadline {
            break noted;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(noted, vec![(true,); 5]);
    pipeline.stop().await;
}

#[tokio::test]
async fn a_broker_connection_cut_mid_stream_loses_nothing() {
    let proxy = TcpProxy::start(SocketAddr::from(([127, 0, 0, 1], 5672))).await;
    let mut pipeline = Pipeline::new(proxy.addr()).await;
    pipeline.start_consumer().await;
    pipeline.start_relay();

    let all = events(10, 100);
    let (first, second): (Vec<_>, Vec<_>) = all.into_iter().partition(|e| e.n < 50);
    pipeline.write(first).await;
    pipeline
        .wait_for_applied(100, Duration::from_secs(30))
        .await;
    proxy.cut();
    // The service keeps writing while the broker is away: the outbox holds the events.
    pipeline.write(second).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        pipeline.pending().await > 0,
        "events accumulate in the outbox during the outage"
    );
    proxy.restore();

    let applied = pipeline
        .wait_for_applied(1_000, Duration::from_secs(60))
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_once_in_order(&pipeline.applied().await, 10, 100);
    assert_eq!(applied.len(), 1_000);
    println!(
        "cut mid-stream: 1000 written, {} applied, {} published, {} confirmed, {} duplicates absorbed, {} publish failures",
        applied.len(),
        pipeline.metrics.published.get(),
        pipeline.metrics.confirmed.get(),
        pipeline.consumed("duplicate"),
        pipeline.metrics.publish_failures.get(),
    );
    pipeline.stop().await;
}

#[tokio::test]
async fn events_published_but_not_marked_sent_are_published_again_and_applied_once() {
    let mut pipeline = Pipeline::local().await;
    pipeline.start_consumer().await;
    pipeline.write(events(5, 20)).await;

    // A relay that died after publishing but before marking: the broker has every event, the
    // outbox still lists them all as pending.
    let connection = pipeline.broker.connected().await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT event_type, envelope::text FROM messaging_outbox ORDER BY seq")
            .fetch_all(&pipeline.pool)
            .await
            .unwrap();
    for (event_type, envelope) in rows {
        channel
            .basic_publish(
                pipeline.exchange.as_str().into(),
                event_type.as_str().into(),
                BasicPublishOptions::default(),
                envelope.as_bytes(),
                BasicProperties::default(),
            )
            .await
            .unwrap();
    }
    pipeline
        .wait_for_applied(100, Duration::from_secs(30))
        .await;
    assert_eq!(pipeline.pending().await, 100);

    pipeline.start_relay();
    let deadline = Instant::now() + Duration::from_secs(30);
    while pipeline.consumed("duplicate") < 100 {
        assert!(
            Instant::now() < deadline,
            "only {} duplicates seen",
            pipeline.consumed("duplicate")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_once_in_order(&pipeline.applied().await, 5, 20);
    assert_eq!(pipeline.pending().await, 0);
    println!(
        "relay killed before marking: 100 events, each delivered twice, {} applied, {} duplicates absorbed",
        pipeline.consumed("processed"),
        pipeline.consumed("duplicate")
    );
    pipeline.stop().await;
}

/// Takes one message from `queue`, if any.
async fn get_one(broker: &Broker, queue: &str) -> Option<lapin::message::BasicGetMessage> {
    let connection = broker.connected().await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    channel
        .basic_get(queue.into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
}

fn header(message: &lapin::message::BasicGetMessage, name: &str) -> Option<AMQPValue> {
    message
        .delivery
        .properties
        .headers()
        .as_ref()?
        .inner()
        .get(name)
        .cloned()
}

#[tokio::test]
async fn failing_and_malformed_messages_end_in_the_dead_letter_queue_without_blocking() {
    let mut pipeline = Pipeline::local().await;
    pipeline.start_consumer().await;
    pipeline.start_relay();
    let dead_letters = format!("{}.dlq", pipeline.queue);

    // A handler that always fails: three attempts (first try + two retries), then dead.
    let mut tx = pipeline.pool.begin().await.unwrap();
    Outbox::new("test")
        .enqueue(
            &mut tx,
            &Doomed {
                reason: "disk on fire".to_owned(),
            },
        )
        .await
        .unwrap();
    tx.commit().await.unwrap();

    // Malformed: not JSON, and a well-formed envelope of a type nobody handles.
    let connection = pipeline.broker.connected().await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    let unknown = Envelope {
        id: uuid::Uuid::now_v7(),
        event_type: "test.unknown".to_owned(),
        version: 1,
        occurred_at: chrono::Utc::now(),
        source: "test".to_owned(),
        data: serde_json::json!({}),
    };
    for payload in [b"{not json".to_vec(), serde_json::to_vec(&unknown).unwrap()] {
        channel
            .basic_publish(
                "".into(),
                pipeline.queue.as_str().into(),
                BasicPublishOptions::default(),
                &payload,
                BasicProperties::default(),
            )
            .await
            .unwrap();
    }
    // A good event behind them still gets through.
    pipeline
        .write([Counted {
            aggregate: "after".to_owned(),
            n: 1,
        }])
        .await;
    pipeline.wait_for_applied(1, Duration::from_secs(30)).await;

    let deadline = Instant::now() + Duration::from_secs(30);
    while pipeline.consumed("dead_lettered") < 3 {
        assert!(
            Instant::now() < deadline,
            "dead-lettered: {}",
            pipeline.consumed("dead_lettered")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(pipeline.consumed("retried"), 2);

    let mut reasons = Vec::new();
    while let Some(message) = get_one(&pipeline.broker, &dead_letters).await {
        let Some(AMQPValue::LongString(reason)) = header(&message, "x-tessera-error") else {
            panic!("no reason")
        };
        let attempts = header(&message, "x-tessera-attempt");
        reasons.push((reason.to_string(), attempts));
    }
    reasons.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(reasons.len(), 3, "{reasons:?}");
    assert!(
        reasons[0].0.contains("handler failed: disk on fire"),
        "{reasons:?}"
    );
    assert_eq!(reasons[0].1, Some(AMQPValue::LongLongInt(3)));
    assert!(
        reasons[1]
            .0
            .contains("malformed: no handler for event type \"test.unknown\""),
        "{reasons:?}"
    );
    assert!(
        reasons[2].0.contains("malformed: not an event envelope"),
        "{reasons:?}"
    );
    pipeline.stop().await;
}

#[tokio::test]
async fn the_writers_trace_context_travels_with_the_event() {
    use tracing::Instrument;
    use tracing_subscriber::layer::SubscriberExt;

    let mut pipeline = Pipeline::local().await;
    // A queue of our own on the exchange shows the message exactly as the relay published it.
    let connection = pipeline.broker.connected().await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    tessera_messaging::topology::declare_exchange(&channel, &pipeline.exchange)
        .await
        .unwrap();
    let probe = format!("{}.probe", pipeline.queue);
    let options = lapin::options::QueueDeclareOptions {
        auto_delete: true,
        ..Default::default()
    };
    channel
        .queue_declare(probe.as_str().into(), options, Default::default())
        .await
        .unwrap();
    channel
        .queue_bind(
            probe.as_str().into(),
            pipeline.exchange.as_str().into(),
            Counted::TYPE.into(),
            Default::default(),
            Default::default(),
        )
        .await
        .unwrap();

    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
    let subscriber =
        tracing_subscriber::registry().with(tessera_observability::trace_context::layer(
            &provider,
            tessera_observability::trace_context::Detail::Full,
        ));
    let traceparent = {
        let _default = tracing::subscriber::set_default(subscriber);
        async {
            pipeline
                .write([Counted {
                    aggregate: "traced".to_owned(),
                    n: 0,
                }])
                .await;
            tessera_observability::trace_context::current_traceparent().unwrap()
        }
        .instrument(tracing::info_span!("request"))
        .await
    };
    pipeline.start_relay();

    let deadline = Instant::now() + Duration::from_secs(30);
    let message = loop {
        if let Some(message) = get_one(&pipeline.broker, &probe).await {
            break message;
        }
        assert!(Instant::now() < deadline, "nothing published");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // The relay's own span continues the writer's trace: same trace id.
    let trace_id = |traceparent: &str| traceparent.split('-').nth(1).unwrap().to_owned();
    let Some(AMQPValue::LongString(sent)) = header(&message, "traceparent") else {
        panic!("no traceparent header");
    };
    assert_eq!(trace_id(&sent.to_string()), trace_id(&traceparent));
    let properties = &message.delivery.properties;
    assert_eq!(
        properties.kind().as_ref().map(|k| k.as_str()),
        Some(Counted::TYPE)
    );
    assert_eq!(
        properties.content_type().as_ref().map(|k| k.as_str()),
        Some("application/json")
    );
    assert_eq!(*properties.delivery_mode(), Some(2));
    let envelope: Envelope = serde_json::from_slice(&message.delivery.data).unwrap();
    assert_eq!(
        properties.message_id().as_ref().map(|k| k.to_string()),
        Some(envelope.id.to_string())
    );
    assert_eq!((envelope.version, envelope.source.as_str()), (1, "test"));
    assert_eq!(envelope.id.get_version_num(), 7);
    pipeline.stop().await;
}

#[tokio::test]
async fn two_relays_on_one_outbox_deliver_each_event_once_in_order() {
    let mut pipeline = Pipeline::local().await;
    pipeline.start_consumer().await;
    pipeline.start_relay();
    pipeline.start_relay();
    pipeline.write(events(4, 50)).await;
    let applied = pipeline
        .wait_for_applied(200, Duration::from_secs(60))
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(applied.len(), pipeline.applied().await.len());
    assert_once_in_order(&applied, 4, 50);
    assert_eq!(
        pipeline.consumed("duplicate"),
        0,
        "one relay at a time publishes each event"
    );
    pipeline.stop().await;
}

#[tokio::test]
async fn sent_events_are_deleted_after_the_retention_period_many_batches_at_a_time() {
    let mut pipeline = Pipeline::local().await;
    pipeline.start_consumer().await;
    pipeline.write(events(1, 10)).await;
    let cleanup_interval = Duration::from_secs(5);
    pipeline.start_relay_with(RelaySettings {
        retention: Duration::ZERO,
        cleanup_interval,
        // Four statements' worth: one cleanup goes on past its first batch.
        cleanup_batch: 3,
        ..RelaySettings::default()
    });
    pipeline.wait_for_applied(10, Duration::from_secs(30)).await;
    let rows = async || -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM messaging_outbox")
            .fetch_one(&pipeline.pool)
            .await
            .unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while rows().await == 10 {
        assert!(Instant::now() < deadline, "sent rows never deleted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The first cleanup has begun; the next is `cleanup_interval` away, so all of them
    // going now is the work of one cleanup.
    let first_cleanup = Instant::now();
    while rows().await > 0 {
        assert!(
            first_cleanup.elapsed() < cleanup_interval / 2,
            "{} rows left after the first cleanup",
            rows().await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    pipeline.stop().await;
}

/// Whether `queue` exists (a passive declare, on a channel of its own since a failed one
/// closes it).
async fn queue_exists(broker: &Broker, queue: &str) -> bool {
    let connection = broker.connected().await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    let passive = lapin::options::QueueDeclareOptions {
        passive: true,
        ..lapin::options::QueueDeclareOptions::default()
    };
    channel
        .queue_declare(queue.into(), passive, FieldTable::default())
        .await
        .is_ok()
}

#[tokio::test]
async fn expiring_queues_last_while_consumed_and_go_after() {
    let mut pipeline = Pipeline::local().await;
    let consumer = Consumer::new(
        ConsumerSettings {
            name: "test-expiring".to_owned(),
            exchange: pipeline.exchange.clone(),
            queue: pipeline.queue.clone(),
            prefetch: 10,
            retry_delays: vec![Duration::from_millis(50)],
            queue_expires: Some(Duration::from_millis(600)),
            processed_retention: Duration::from_secs(3_600),
            prune_interval: Duration::from_secs(3_600),
            prune_batch: 100,
        },
        pipeline.pool.clone(),
        pipeline.broker.clone(),
        pipeline.metrics.clone(),
    )
    .on::<Counted, _>(Record(pipeline.pool.clone()));
    let topology = consumer.topology();
    let queues = [
        topology.queue.clone(),
        topology.retry_queue(1),
        topology.dead_letter_queue(),
    ];
    pipeline
        .tasks
        .push(tokio::spawn(consumer.run(pipeline.stop.clone())));

    // Well past the expiry: the consumer keeps even the queues nobody consumes.
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    for queue in &queues {
        assert!(
            queue_exists(&pipeline.broker, queue).await,
            "{queue} expired"
        );
    }

    pipeline.stop.cancel();
    for task in pipeline.tasks.drain(..) {
        task.await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    for queue in &queues {
        assert!(!queue_exists(&pipeline.broker, queue).await, "{queue} kept");
    }
}

#[tokio::test]
async fn small_frames_still_carry_an_event_many_frames_long() {
    let mut pipeline = Pipeline::local().await;
    let connection = pipeline.broker.connected().await.unwrap();
    // Asked for by the broker connection, to keep its buffers small.
    assert_eq!(connection.configuration().frame_max(), 16 * 1024);
    pipeline.start_consumer().await;

    let aggregate = "x".repeat(300 * 1024);
    pipeline
        .write([Counted {
            aggregate: aggregate.clone(),
            n: 7,
        }])
        .await;
    pipeline.start_relay();
    let applied = pipeline.wait_for_applied(1, Duration::from_secs(30)).await;
    assert_eq!(applied, vec![(aggregate, 7)]);
    pipeline.stop().await;
}

#[tokio::test]
async fn an_event_published_before_its_consumer_ever_ran_waits_for_it() {
    let mut pipeline = Pipeline::local().await;
    // Only the relay runs: it declares the subscription before it publishes.
    pipeline.start_relay();
    pipeline.write(events(1, 5)).await;
    pipeline.wait_for_pending(0, "events never published").await;

    // The consumer comes later and declares nothing before it subscribes.
    let consumer = pipeline.consumer();
    pipeline
        .tasks
        .push(tokio::spawn(consumer.run(pipeline.stop.clone())));
    let applied = pipeline.wait_for_applied(5, Duration::from_secs(30)).await;
    assert_once_in_order(&applied, 1, 5);
    pipeline.stop().await;
}

#[tokio::test]
async fn an_event_whose_queue_was_deleted_is_not_confirmed_into_the_void() {
    let mut pipeline = Pipeline::local().await;
    pipeline.start_relay_with(RelaySettings {
        retry_min: Duration::from_millis(20),
        retry_max: Duration::from_millis(100),
        ..RelaySettings::default()
    });
    pipeline.write(events(1, 1)).await;
    pipeline
        .wait_for_pending(0, "first event never published")
        .await;
    // An operator deletes the queue: the next event comes back unroutable, is not marked
    // sent, and is published again once the relay has declared the queue anew.
    let channel = pipeline.channel().await;
    channel
        .queue_delete(
            pipeline.queue.as_str().into(),
            lapin::options::QueueDeleteOptions::default(),
        )
        .await
        .unwrap();
    pipeline
        .write([Counted {
            aggregate: "after-delete".to_owned(),
            n: 1,
        }])
        .await;
    pipeline
        .wait_for_pending(0, "second event never published")
        .await;
    pipeline.start_consumer().await;
    let applied = pipeline.wait_for_applied(1, Duration::from_secs(30)).await;
    assert_eq!(applied, vec![("after-delete".to_owned(), 1)]);
    let (attempts, error): (i32, Option<String>) = sqlx::query_as(
        "SELECT attempts, last_error FROM messaging_outbox WHERE aggregate_id = 'after-delete'",
    )
    .fetch_one(&pipeline.pool)
    .await
    .unwrap();
    assert_eq!(attempts, 1);
    assert!(error.unwrap().contains("unroutable"));
    pipeline.stop().await;
}

#[derive(Debug, Serialize, Deserialize)]
struct Refused {
    n: i32,
}

impl Event for Refused {
    const TYPE: &'static str = "test.refused";
    fn aggregate_id(&self) -> String {
        "refused".to_owned()
    }
}

impl Pipeline {
    /// Makes the broker refuse (nack) every `test.refused` event: it routes to a queue that
    /// holds nothing and rejects what it cannot hold.
    async fn refuse_refused_events(&self) {
        let channel = self.channel().await;
        tessera_messaging::topology::declare_exchange(&channel, &self.exchange)
            .await
            .unwrap();
        let queue = format!("{}.rejecting", self.queue);
        let mut arguments = FieldTable::default();
        arguments.insert("x-max-length".into(), AMQPValue::LongLongInt(0));
        arguments.insert(
            "x-overflow".into(),
            AMQPValue::LongString("reject-publish".into()),
        );
        arguments.insert("x-expires".into(), AMQPValue::LongLongInt(300_000));
        channel
            .queue_declare(
                queue.as_str().into(),
                lapin::options::QueueDeclareOptions::default(),
                arguments,
            )
            .await
            .unwrap();
        channel
            .queue_bind(
                queue.as_str().into(),
                self.exchange.as_str().into(),
                Refused::TYPE.into(),
                lapin::options::QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
    }

    async fn write_refused(&self) {
        let mut tx = self.pool.begin().await.unwrap();
        Outbox::new("test")
            .enqueue(&mut tx, &Refused { n: 1 })
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }

    async fn refused_row(&self) -> (i32, Option<String>, bool) {
        sqlx::query_as(
            "SELECT attempts, last_error, poisoned_at IS NOT NULL FROM messaging_outbox WHERE event_type = $1",
        )
        .bind(Refused::TYPE)
        .fetch_one(&self.pool)
        .await
        .unwrap()
    }
}

#[tokio::test]
async fn a_refused_event_is_tried_again_after_growing_delays_not_at_once() {
    let mut pipeline = Pipeline::local().await;
    pipeline.refuse_refused_events().await;
    pipeline.write_refused().await;
    pipeline.start_relay_with(RelaySettings {
        max_attempts: 1_000,
        retry_min: Duration::from_millis(100),
        retry_max: Duration::from_secs(10),
        ..RelaySettings::default()
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (attempts, error, poisoned) = pipeline.refused_row().await;
    // Delays of up to 100 ms × 2^n (full jitter) allow about a dozen tries in 2 s; retrying
    // at once makes hundreds.
    assert!((2..=20).contains(&attempts), "{attempts} attempts in 2 s");
    assert!(error.unwrap().contains("nacked"));
    assert!(!poisoned);
    assert_eq!(pipeline.pending().await, 1, "kept, not dropped");
    pipeline.stop().await;
}

#[tokio::test]
async fn an_event_refused_too_often_is_set_aside_and_the_rest_flow() {
    let mut pipeline = Pipeline::local().await;
    pipeline.refuse_refused_events().await;
    pipeline.start_consumer().await;
    pipeline.write_refused().await;
    pipeline.write(events(2, 3)).await;
    pipeline.start_relay_with(RelaySettings {
        max_attempts: 3,
        retry_min: Duration::from_millis(10),
        retry_max: Duration::from_millis(50),
        ..RelaySettings::default()
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while !pipeline.refused_row().await.2 {
        assert!(Instant::now() < deadline, "never set aside");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Every event after it is published and marked sent.
    pipeline.wait_for_pending(1, "the rest never flowed").await;
    let applied = pipeline.wait_for_applied(6, Duration::from_secs(30)).await;
    assert_once_in_order(&applied, 2, 3);
    let (attempts, error, poisoned) = pipeline.refused_row().await;
    assert_eq!((attempts, poisoned), (3, true));
    assert!(error.unwrap().contains("nacked"));
    assert_eq!(pipeline.metrics.outbox_poisoned.get(), 1);
    assert_eq!(pipeline.pending().await, 1, "the poisoned row is kept");
    pipeline.stop().await;
}

#[tokio::test]
async fn a_database_outage_longer_than_every_retry_dead_letters_nothing() {
    let mut pipeline = Pipeline::local().await;
    let (proxy, proxied) = TcpProxy::in_front_of(pipeline._database.url()).await;
    let consumer_pool = sqlx::postgres::PgPoolOptions::new()
        .acquire_timeout(Duration::from_millis(300))
        .connect(&proxied)
        .await
        .unwrap();
    // Retries take 150 ms in all; the outage lasts more than ten times as long.
    let consumer = pipeline.consumer_on(consumer_pool);
    pipeline.start_relay();
    pipeline
        .tasks
        .push(tokio::spawn(consumer.run(pipeline.stop.clone())));
    pipeline.write(events(1, 2)).await;
    pipeline.wait_for_applied(2, Duration::from_secs(30)).await;

    proxy.cut();
    pipeline.write(events(3, 4)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        pipeline.consumed("deferred") > 0,
        "the consumer held its events"
    );
    proxy.restore();

    let applied = pipeline.wait_for_applied(14, Duration::from_secs(30)).await;
    assert_eq!(applied.len(), 14);
    assert_eq!(pipeline.consumed("retried"), 0);
    assert_eq!(pipeline.consumed("dead_lettered"), 0);
    let dead_letters = format!("{}.dlq", pipeline.queue);
    assert!(get_one(&pipeline.broker, &dead_letters).await.is_none());
    pipeline.stop().await;
}

#[tokio::test]
async fn processed_event_records_past_retention_are_pruned_in_batches() {
    let pipeline = Pipeline::local().await;
    for (consumer, age_hours, count) in [
        ("test-consumer", 2, 5),
        ("test-consumer", 0, 2),
        ("another-consumer", 2, 3),
    ] {
        for _ in 0..count {
            sqlx::query(
                "INSERT INTO messaging_processed_events (consumer, event_id, processed_at) \
                 VALUES ($1, $2, now() - make_interval(hours => $3))",
            )
            .bind(consumer)
            .bind(uuid::Uuid::now_v7())
            .bind(age_hours)
            .execute(&pipeline.pool)
            .await
            .unwrap();
        }
    }
    // Retention one hour, two records per statement.
    let pruned = pipeline.consumer().prune().await.unwrap();
    assert_eq!(pruned, 5);
    let left: Vec<(String, i64)> = sqlx::query_as(
        "SELECT consumer, count(*) FROM messaging_processed_events GROUP BY consumer ORDER BY consumer",
    )
    .fetch_all(&pipeline.pool)
    .await
    .unwrap();
    assert_eq!(
        left,
        vec![
            ("another-consumer".to_owned(), 3),
            ("test-consumer".to_owned(), 2)
        ]
    );
    pipeline.stop().await;
}

#[tokio::test]
async fn a_channel_the_broker_closes_over_an_event_charges_it_one_attempt_and_recovers() {
    let mut pipeline = Pipeline::local().await;
    pipeline.start_consumer().await;
    pipeline.start_relay_with(RelaySettings {
        retry_min: Duration::from_millis(20),
        retry_max: Duration::from_millis(100),
        ..RelaySettings::default()
    });
    pipeline.write(events(1, 1)).await;
    pipeline.wait_for_applied(1, Duration::from_secs(30)).await;

    // The exchange goes while the relay's channel is open: publishing to it makes the broker
    // close that channel (404), over that event, on a connection that stays up.
    let channel = pipeline.channel().await;
    channel
        .exchange_delete(
            pipeline.exchange.as_str().into(),
            lapin::options::ExchangeDeleteOptions::default(),
        )
        .await
        .unwrap();
    pipeline
        .write([Counted {
            aggregate: "after-close".to_owned(),
            n: 1,
        }])
        .await;

    // A new channel declares the exchange and the bindings again, and the event goes out.
    let applied = pipeline.wait_for_applied(2, Duration::from_secs(30)).await;
    assert_eq!(applied[1], ("after-close".to_owned(), 1));
    let (attempts, error): (i32, Option<String>) = sqlx::query_as(
        "SELECT attempts, last_error FROM messaging_outbox WHERE aggregate_id = 'after-close'",
    )
    .fetch_one(&pipeline.pool)
    .await
    .unwrap();
    assert_eq!(attempts, 1, "{error:?}");
    assert!(error.unwrap().to_lowercase().contains("not_found"));
    pipeline.stop().await;
}
