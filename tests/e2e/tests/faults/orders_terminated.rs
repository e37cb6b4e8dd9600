//! SIGTERM under load drops no request orders has taken: each gets its whole answer, the
//! outbox is flushed, and the process exits 0 within its bound.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use tessera_jwt::Role;

use crate::delivery::{
    committed_orders, spawn_app_behind_broker_proxy, unsent_events, wait_for_broker_connection,
};
use crate::helpers::{UsersAt, spawn_app_with};
use crate::load::{Load, Outcome, Request, customers, tally};

/// Readiness fails this long before the listeners close (5 s in production). A request sent
/// before the signal has then long been read; without the delay, one sent a moment before
/// could still sit unread on a kept-alive connection that the closing server takes for idle.
const SHUTDOWN_DELAY: Duration = Duration::from_millis(300);
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// The configured bound on stopping (delay, then in-flight requests, then background work,
/// each of the last two within the timeout), and a margin for a loaded machine.
const EXIT_WITHIN: Duration = SHUTDOWN_DELAY
    .saturating_add(SHUTDOWN_TIMEOUT.saturating_mul(2))
    .saturating_add(Duration::from_secs(5));

fn in_flight_at(requests: &[Request], moment: Instant) -> usize {
    requests
        .iter()
        .filter(|r| r.started < moment && r.finished > moment)
        .count()
}

#[tokio::test]
async fn sigterm_under_load_answers_every_request_taken_and_exits_0() {
    let millis = |duration: Duration| duration.as_millis().to_string();
    let mut app = spawn_app_with(
        UsersAt::Proxied,
        &[
            ("SHUTDOWN_DELAY_MS", millis(SHUTDOWN_DELAY)),
            ("SHUTDOWN_TIMEOUT_MS", millis(SHUTDOWN_TIMEOUT)),
        ],
    )
    .await;
    let tokens = customers(&app, 16).await;

    let load = Load::placing_orders(app.orders.http_url(), &tokens, Duration::ZERO);
    load.wait_for_answers(100).await;
    let signalled = Instant::now();
    app.orders.terminate();
    let status = app.orders.wait_for_exit(EXIT_WITHIN).await;
    load.stop();
    let requests = load.finish().await;

    assert!(status.success(), "exit status {status}");
    assert!(
        in_flight_at(&requests, signalled) > 0,
        "no request was in flight at the signal"
    );
    // A request sent before the signal was in orders' hands well before the listeners
    // closed. Sent later, it may meet a closed listener or a kept-alive connection being
    // closed: it then gets no answer at all, which a client may retry with its key.
    let dropped: Vec<_> = requests
        .iter()
        .filter(|r| r.started < signalled && r.status() != Some(201))
        .collect();
    assert!(
        dropped.is_empty(),
        "requests sent before SIGTERM not answered 201: {dropped:#?}"
    );
    let bad_answers: Vec<_> = requests
        .iter()
        .filter(|r| !matches!(r.outcome, Outcome::Failed { .. }) && r.status() != Some(201))
        .collect();
    assert!(
        bad_answers.is_empty(),
        "answers that were errors or cut short ({:?}): {bad_answers:#?}",
        tally(&requests)
    );

    // Nothing was committed without its answer reaching the client, and every event the
    // answered requests wrote was published before the process exited.
    let placed: BTreeSet<String> = requests.iter().filter_map(|r| r.order_id()).collect();
    assert_eq!(committed_orders(app.database.url()).await, placed);
    assert_eq!(
        unsent_events(app.database.url()).await,
        0,
        "events left in the outbox at exit"
    );
}

#[tokio::test]
async fn sigterm_with_the_broker_cut_off_exits_0_within_its_bound_keeping_the_events() {
    let millis = |duration: Duration| duration.as_millis().to_string();
    let (mut app, broker) = spawn_app_behind_broker_proxy(
        UsersAt::Proxied,
        &[
            ("SHUTDOWN_DELAY_MS", millis(SHUTDOWN_DELAY)),
            ("SHUTDOWN_TIMEOUT_MS", millis(SHUTDOWN_TIMEOUT)),
        ],
    )
    .await;
    let user = app.create_user(Role::User).await;
    wait_for_broker_connection(&app, 1.0).await;
    broker.cut();
    wait_for_broker_connection(&app, 0.0).await;
    app.placed(&user).await;

    app.orders.terminate();
    let status = app.orders.wait_for_exit(EXIT_WITHIN).await;
    assert!(status.success(), "exit status {status}");
    // Unpublished, it stays for the next process to publish.
    assert_eq!(unsent_events(app.database.url()).await, 1);
}
