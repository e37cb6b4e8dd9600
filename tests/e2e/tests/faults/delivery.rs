//! What a fault may not cost: every committed order reaches the bus as its `order.created`,
//! under one event id; whether orders is connected to the bus at all; and an orders whose
//! bus can be cut.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use sqlx::PgPool;
use tessera_testkit::broker::TestBroker;
use tessera_testkit::events::EventTap;
use tessera_testkit::proxy::TcpProxy;

use crate::helpers::{TestApp, UsersAt, spawn_app_on};

/// After the last expected event, how long to keep listening for a second one about the same
/// order under another id.
const SETTLE: Duration = Duration::from_secs(1);

/// Waits until orders reports its broker connection up (`1`) or down (`0`).
pub async fn wait_for_broker_connection(app: &TestApp, up: f64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let state = app.orders.counter("messaging_connection_up", &[]).await;
        if state == up {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "messaging_connection_up stayed {state}, not {up}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The ids of the orders committed in the database at `url`.
pub async fn committed_orders(url: &str) -> BTreeSet<String> {
    let db = PgPool::connect(url).await.unwrap();
    let ids: Vec<String> = sqlx::query_scalar("SELECT id::text FROM orders")
        .fetch_all(&db)
        .await
        .unwrap();
    db.close().await;
    ids.into_iter().collect()
}

/// How many events in the outbox at `url` the broker has not confirmed.
pub async fn unsent_events(url: &str) -> i64 {
    let db = PgPool::connect(url).await.unwrap();
    let unsent = sqlx::query_scalar("SELECT count(*) FROM messaging_outbox WHERE sent_at IS NULL")
        .fetch_one(&db)
        .await
        .unwrap();
    db.close().await;
    unsent
}

/// Asserts that the database at `url` holds one `order.created` per order in its outbox.
pub async fn assert_one_event_written_per_order(url: &str) {
    let db = PgPool::connect(url).await.unwrap();
    let (orders, events, distinct): (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM orders), count(*), count(DISTINCT aggregate_id) \
         FROM messaging_outbox WHERE event_type = 'order.created'",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    db.close().await;
    assert_eq!(
        (events, distinct),
        (orders, orders),
        "outbox rows and orders they are about, for {orders} orders"
    );
}

/// Reads `tap` (bound to `order.created`) until every order in `ids` has arrived, waiting
/// up to `wait`, and asserts that each arrived under exactly one event id. The same event
/// more than once is allowed: delivery is at least once, and consumers deduplicate by id.
pub async fn assert_each_published_once(
    tap: &mut EventTap,
    ids: &BTreeSet<String>,
    wait: Duration,
) {
    let mut awaited: BTreeSet<&str> = ids.iter().map(String::as_str).collect();
    let mut read = 0;
    tap.read_until(wait, |seen| {
        for event in &seen[read..] {
            if event["type"] == "order.created"
                && let Some(order) = event["data"]["id"].as_str()
            {
                awaited.remove(order);
            }
        }
        read = seen.len();
        awaited.is_empty()
    })
    .await;
    tap.read_until(SETTLE, |_| false).await;
    let events = event_ids(tap, ids);
    let missing: Vec<_> = ids.iter().filter(|id| !events.contains_key(*id)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} orders never published within {wait:?}: {missing:?}",
        missing.len(),
        ids.len()
    );
    let twice: BTreeMap<_, _> = events
        .iter()
        .filter(|(_, event_ids)| event_ids.len() > 1)
        .collect();
    assert!(
        twice.is_empty(),
        "orders published under more than one event id: {twice:?}"
    );
}

/// The ids of the `order.created` events `tap` read about each of `ids`.
fn event_ids(tap: &EventTap, ids: &BTreeSet<String>) -> BTreeMap<String, BTreeSet<String>> {
    let mut events: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for event in tap.seen() {
        let Some(order) = event["data"]["id"].as_str() else {
            continue;
        };
        if event["type"] == "order.created" && ids.contains(order) {
            let id = event["id"].as_str().unwrap_or_default().to_owned();
            events.entry(order.to_owned()).or_default().insert(id);
        }
    }
    events
}

/// [`spawn_app_on`] a vhost of its own, orders reaching its broker through a proxy the test
/// can cut (users and the test's taps reach it directly).
pub async fn spawn_app_behind_broker_proxy(
    users_at: UsersAt,
    overrides: &[(&str, String)],
) -> (TestApp, TcpProxy) {
    let broker = TestBroker::isolated().await;
    let (proxy, proxied) = TcpProxy::in_front_of(broker.amqp_url()).await;
    let mut overrides = overrides.to_vec();
    overrides.push(("AMQP_URL", proxied));
    (spawn_app_on(broker, users_at, &overrides).await, proxy)
}
