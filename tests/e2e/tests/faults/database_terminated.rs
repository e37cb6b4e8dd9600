//! A service whose PostgreSQL connections are all terminated under load answers 503 (never
//! 500) meanwhile, recovers without a restart, and loses or doubles nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::json;
use sqlx::{Connection, PgConnection};
use tessera_jwt::Role;
use tessera_proto::users::v1 as users_proto;
use tessera_proto::users::v1::user_service_client::UserServiceClient;
use tessera_testkit::broker::TestBroker;
use tessera_testkit::jwks::TestIssuer;
use uuid::Uuid;

use crate::delivery::{
    assert_each_published_once, assert_one_event_written_per_order, committed_orders,
};
use crate::helpers::{UsersApp, an_order, spawn_app};
use crate::load::{Load, Request, customers, tally};

/// How soon after its connections are gone a service must serve again.
const RECOVERY: Duration = Duration::from_secs(5);

/// Ends every session on `database` but the caller's, as an administrator, a failover or
/// an idle-session killer would; how many there were.
async fn terminate_connections(database: &str) -> i64 {
    let mut admin = PgConnection::connect(&tessera_testkit::postgres_url())
        .await
        .unwrap();
    let terminated = sqlx::query_scalar(
        "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE datname = $1 AND pid <> pg_backend_pid()",
    )
    .bind(database)
    .fetch_one(&mut admin)
    .await
    .unwrap();
    admin.close().await.unwrap();
    terminated
}

/// Terminates `database`'s connections twice while `load` runs, each time waiting for a
/// request sent afterwards to have `written` to the database again.
async fn terminate_twice_and_recover(
    load: &Load,
    database: &str,
    written: impl Fn(&Request) -> bool,
) {
    for answered in [30, 90] {
        load.wait_for_answers(answered).await;
        let terminated = terminate_connections(database).await;
        assert!(terminated > 0, "the service had no connection to end");
        let ended = Instant::now();
        let recovered = load
            .wait_until(RECOVERY, |requests| {
                requests.iter().any(|r| r.started > ended && written(r))
            })
            .await;
        assert!(
            recovered,
            "nothing written within {RECOVERY:?} of {terminated} connections ending"
        );
    }
}

/// Asserts that every request got an answer: `success`, or a 503 problem.
fn assert_success_or_unavailable(requests: &[Request], success: u16) {
    let wrong: Vec<_> = requests
        .iter()
        .filter(|r| r.status() != Some(success) && !r.is_unavailable())
        .collect();
    assert!(
        wrong.is_empty(),
        "answers other than {success} or a 503 problem ({:?}): {wrong:#?}",
        tally(requests)
    );
}

#[tokio::test]
async fn orders_rides_out_its_database_connections_being_terminated() {
    let app = spawn_app().await;
    let mut tap = app.tap("order.created").await;
    let tokens = customers(&app, 8).await;

    let load = Load::placing_orders(app.orders.http_url(), &tokens, Duration::from_millis(20));
    terminate_twice_and_recover(&load, app.database.name(), |r| r.status() == Some(201)).await;
    load.stop();
    let requests = load.finish().await;
    assert_success_or_unavailable(&requests, 201);

    // Every key, retried, stands for exactly one order: the one first answered, or the one
    // the retry places; or the one a 503 did commit after all.
    let mut orders_by_key = BTreeMap::new();
    for request in &requests {
        let key = request.key.as_deref().unwrap();
        let response = app
            .place_raw(
                &tokens[request.client],
                Some(key),
                "application/json",
                an_order().to_string(),
            )
            .await;
        assert_eq!(response.status(), 201, "retrying {request:?}");
        let body: serde_json::Value = response.json().await.unwrap();
        let id = body["id"].as_str().unwrap().to_owned();
        if let Some(first) = request.order_id() {
            assert_eq!(id, first, "the retry of {key} placed another order");
        }
        orders_by_key.insert(key.to_owned(), id);
    }
    let committed = committed_orders(app.database.url()).await;
    let placed: BTreeSet<String> = orders_by_key.values().cloned().collect();
    assert_eq!(placed.len(), requests.len(), "two keys share an order");
    assert_eq!(committed, placed, "orders committed and orders placed");

    assert_each_published_once(&mut tap, &committed, Duration::from_secs(30)).await;
    assert_one_event_written_per_order(app.database.url()).await;
}

/// The users binary on a database this test can reach into, and who signs its tokens.
struct UsersService {
    users: UsersApp,
    issuer: TestIssuer,
    _broker: TestBroker,
}

impl UsersService {
    async fn start() -> Self {
        let issuer = TestIssuer::start().await;
        let broker = TestBroker::isolated().await;
        let users = UsersApp::start(&issuer, broker.amqp_url()).await;
        Self {
            users,
            issuer,
            _broker: broker,
        }
    }

    /// A new profile, and a token to act as its owner.
    async fn profile(&self) -> (Uuid, String) {
        let id = Uuid::now_v7();
        let mut client = UserServiceClient::new(self.users.service.channel().await.unwrap());
        client
            .create_user(users_proto::CreateUserRequest {
                id: id.to_string(),
                email: format!("user-{}@example.com", id.simple()),
                display_name: "Before".to_owned(),
                role: users_proto::Role::User.into(),
            })
            .await
            .unwrap();
        (id, self.issuer.token(id, Role::User))
    }
}

#[tokio::test]
async fn users_rides_out_its_database_connections_being_terminated() {
    let users = UsersService::start().await;
    let mut profiles = Vec::new();
    for _ in 0..4 {
        profiles.push(users.profile().await);
    }

    // Each client renames and reads in turn: a rename always reaches PostgreSQL and evicts
    // the cached profile, so the read after it does too.
    let http = users.users.service.http_url().to_owned();
    let clients = profiles
        .into_iter()
        .map(|(id, token)| (id, token, AtomicUsize::new(0)))
        .collect();
    let load = Load::start(
        clients,
        Duration::from_millis(20),
        move |client, (id, token, turn)| {
            let url = format!("{http}/api/v1/users/{id}");
            let request = if turn.fetch_add(1, Ordering::Relaxed).is_multiple_of(2) {
                let name = format!("Renamed {}", Uuid::now_v7().simple());
                client.patch(url).json(&json!({ "display_name": name }))
            } else {
                client.get(url)
            };
            request.bearer_auth(token)
        },
    );
    let renamed = |r: &Request| r.method == Method::PATCH && r.status() == Some(200);
    terminate_twice_and_recover(&load, users.users.database.name(), renamed).await;
    load.stop();
    let requests = load.finish().await;
    assert_success_or_unavailable(&requests, 200);
}
