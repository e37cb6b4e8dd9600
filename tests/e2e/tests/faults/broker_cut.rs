//! Orders keeps taking orders while its broker connections are cut; once they are back every
//! order is published, none under two event ids, and what arrived meanwhile is consumed.

use std::collections::BTreeSet;
use std::time::Duration;

use tessera_jwt::Role;

use crate::delivery::{
    assert_each_published_once, assert_one_event_written_per_order, spawn_app_behind_broker_proxy,
    wait_for_broker_connection,
};
use crate::helpers::UsersAt;
use crate::load::{Load, customers, tally};

#[tokio::test]
async fn every_order_placed_while_the_broker_is_cut_off_is_published_once() {
    let (app, broker) = spawn_app_behind_broker_proxy(UsersAt::Proxied, &[]).await;
    // The tap reads from the broker directly: only orders' connections go through the proxy.
    let mut tap = app.tap("order.created").await;
    wait_for_broker_connection(&app, 1.0).await;
    let tokens = customers(&app, 8).await;

    let load = Load::placing_orders(app.orders.http_url(), &tokens, Duration::from_millis(150));
    // Two outages, each beginning and ending while orders are being placed.
    for _ in 0..2 {
        wait_for_broker_connection(&app, 1.0).await;
        load.wait_for_answers(load.answered() + 15).await;
        broker.cut();
        wait_for_broker_connection(&app, 0.0).await;
        // Degraded, not out of rotation: the outbox absorbs the outage.
        let ready = tessera_testkit::get(format!("{}/health/ready", app.orders.http_url()))
            .await
            .unwrap();
        assert_eq!(ready.status(), 200);
        load.wait_for_answers(load.answered() + 25).await;
        broker.restore();
    }
    load.wait_for_answers(load.answered() + 15).await;
    load.stop();
    let requests = load.finish().await;

    assert!(
        requests.iter().all(|request| request.status() == Some(201)),
        "{:?}",
        tally(&requests)
    );
    let placed: BTreeSet<String> = requests.iter().filter_map(|r| r.order_id()).collect();
    assert_eq!(placed.len(), requests.len());
    assert_each_published_once(&mut tap, &placed, Duration::from_secs(30)).await;
    assert_one_event_written_per_order(app.database.url()).await;
}

#[tokio::test]
async fn an_event_sent_while_orders_is_cut_off_is_consumed_once_it_is_back() {
    let (app, broker) = spawn_app_behind_broker_proxy(UsersAt::Proxied, &[]).await;
    let mut tap = app.tap("order.cancelled").await;
    wait_for_broker_connection(&app, 1.0).await;
    let user = app.create_user(Role::User).await;
    let admin = app.create_user(Role::Admin).await;
    let order = app.placed(&user).await;

    broker.cut();
    wait_for_broker_connection(&app, 0.0).await;
    // Its user.deleted waits in orders' queue, on the broker orders cannot reach.
    app.delete_user(&user).await;
    broker.restore();

    // Consumed (the order is cancelled), then published (the event arrives): two steps, each
    // told apart when it fails.
    let id = order["id"].as_str().unwrap();
    app.wait_for_status(&admin.token, id, "cancelled", Duration::from_secs(30))
        .await;
    let cancelled = tap
        .about("order.cancelled", id, 1, Duration::from_secs(30))
        .await;
    assert!(
        !cancelled.is_empty(),
        "order {id} was cancelled but its order.cancelled never published"
    );
    // A second cancellation, were there one, would follow within moments.
    tap.read_until(Duration::from_secs(1), |_| false).await;
    let settled = tap.about("order.cancelled", id, 0, Duration::ZERO).await;
    let event_ids: BTreeSet<_> = settled
        .iter()
        .map(|event| event["id"].to_string())
        .collect();
    assert_eq!(event_ids.len(), 1, "cancelled more than once: {settled:?}");
}
