//! Orders killed outright (SIGKILL) under load loses no committed event: started again on
//! the same database, it publishes every order that made it in.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::delivery::{
    assert_each_published_once, assert_one_event_written_per_order, committed_orders, unsent_events,
};
use crate::helpers::spawn_app;
use crate::load::{Load, Outcome, customers, tally};

#[tokio::test]
async fn orders_killed_under_load_publishes_every_committed_order_once_restarted() {
    let mut app = spawn_app().await;
    let mut tap = app.tap("order.created").await;
    let tokens = customers(&app, 12).await;

    let load = Load::placing_orders(app.orders.http_url(), &tokens, Duration::ZERO);
    load.wait_for_answers(60).await;
    app.orders.kill().await;
    load.stop();
    let requests = load.finish().await;
    let unsent = unsent_events(app.database.url()).await;

    // The kill struck while clients were calling, and until then every answer was a placed
    // order.
    assert!(
        requests
            .iter()
            .any(|r| matches!(r.outcome, Outcome::Failed { .. })),
        "no request met the killed process: {:?}",
        tally(&requests)
    );
    let answered: Vec<_> = requests.iter().filter_map(|r| r.status()).collect();
    assert!(
        answered.iter().all(|status| *status == 201),
        "{:?}",
        tally(&requests)
    );

    let committed = committed_orders(app.database.url()).await;
    let placed: BTreeSet<String> = requests.iter().filter_map(|r| r.order_id()).collect();
    assert!(
        placed.is_subset(&committed),
        "orders answered 201 but not committed: {:?}",
        placed.difference(&committed).collect::<Vec<_>>()
    );

    // What the restarted process had left to publish, for whoever reads a failure below.
    eprintln!(
        "{} orders committed, {} answered, {unsent} events unpublished when orders was killed",
        committed.len(),
        placed.len()
    );
    app.orders = app.replica().await;
    assert_each_published_once(&mut tap, &committed, Duration::from_secs(30)).await;
    assert_one_event_written_per_order(app.database.url()).await;
}
