//! When users cannot answer, orders answers 503 within its deadline and writes nothing; the
//! circuit opens after repeated failures and closes again once users is back.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use tessera_jwt::Role;
use tokio::net::TcpListener;

use crate::helpers::{TestApp, UsersAt, an_order, assert_problem, key, spawn_app_with};

/// A 503 problem with `Retry-After`, and how long it took.
async fn unavailable(app: &TestApp, token: &str) -> Duration {
    let started = Instant::now();
    let response = app
        .place_raw(
            token,
            Some(&key()),
            "application/json",
            an_order().to_string(),
        )
        .await;
    let took = started.elapsed();
    assert!(response.headers().contains_key("retry-after"));
    assert_problem(response, 503, None).await;
    took
}

#[tokio::test]
async fn users_unreachable_is_a_fast_503_with_nothing_written() {
    // Nothing listens on the discard port.
    let app = spawn_app_with(
        UsersAt::Url("http://127.0.0.1:9".to_owned()),
        &[("USERS_DEADLINE_MS", "500".to_owned())],
    )
    .await;
    let user = app.stranger();
    for _ in 0..3 {
        let took = unavailable(&app, &user.token).await;
        assert!(
            took < Duration::from_secs(3),
            "not bounded by the deadline: {took:?}"
        );
    }
    assert_eq!(app.rows().await, (0, 0));
}

#[tokio::test]
async fn users_hanging_is_a_503_within_the_deadline() {
    // Accepts connections and never says a word.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let app = spawn_app_with(
        UsersAt::Url(format!("http://{addr}")),
        &[("USERS_DEADLINE_MS", "600".to_owned())],
    )
    .await;
    let user = app.stranger();
    let took = unavailable(&app, &user.token).await;
    assert!(
        took >= Duration::from_millis(500),
        "gave up before the deadline: {took:?}"
    );
    assert!(
        took < Duration::from_secs(3),
        "not bounded by the deadline: {took:?}"
    );
    assert_eq!(app.rows().await, (0, 0));
    silent.abort();
}

#[tokio::test]
async fn the_circuit_opens_on_failures_and_closes_when_users_is_back() {
    let app = spawn_app_with(
        UsersAt::Proxied,
        &[
            ("USERS_BREAKER_MINIMUM_CALLS", "4".to_owned()),
            ("USERS_BREAKER_OPEN_MS", "1000".to_owned()),
        ],
    )
    .await;
    let user = app.create_user(Role::User).await;
    assert_eq!(
        app.place(&user, &key(), &an_order()).await.status(),
        StatusCode::CREATED
    );

    let proxy = app.users_proxy.as_ref().unwrap();
    proxy.cut();
    for _ in 0..3 {
        unavailable(&app, &user.token).await;
    }
    let metrics = app.orders.metrics().await;
    let state = |text: &str| {
        tessera_testkit::prometheus::counter(text, "client_circuit_state", &[r#"target="users""#])
    };
    assert_eq!(state(&metrics), 1.0, "open:\n{metrics}");

    // Open: refused at once, without trying users.
    let short_circuited = |text: &str| {
        tessera_testkit::prometheus::counter(
            text,
            "client_calls_total",
            &[r#"outcome="short_circuited""#],
        )
    };
    let before = short_circuited(&app.orders.metrics().await);
    unavailable(&app, &user.token).await;
    assert_eq!(short_circuited(&app.orders.metrics().await), before + 1.0);

    // Back, and after the cool-down a probe closes the circuit again.
    proxy.restore();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        app.place(&user, &key(), &an_order()).await.status(),
        StatusCode::CREATED
    );
    let metrics = app.orders.metrics().await;
    assert_eq!(state(&metrics), 0.0, "closed:\n{metrics}");
    let transitions = |to: &str| {
        tessera_testkit::prometheus::counter(
            &metrics,
            "client_circuit_transitions_total",
            &[&format!(r#"to="{to}""#)],
        )
    };
    assert_eq!(
        (
            transitions("open"),
            transitions("half_open"),
            transitions("closed")
        ),
        (1.0, 1.0, 1.0)
    );
    assert_eq!(
        app.rows().await.0,
        2,
        "only the orders placed while users answered"
    );
}
