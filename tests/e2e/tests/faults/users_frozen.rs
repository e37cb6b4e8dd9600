//! A users process frozen in place (SIGSTOP: connections open, nothing answered) costs
//! orders a 503 within its deadline and nothing written; once it runs again orders recovers
//! by itself.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use tessera_jwt::Role;

use crate::helpers::{TestApp, TestUser, UsersAt, an_order, assert_problem, key, spawn_app_with};

const USERS_DEADLINE: Duration = Duration::from_millis(800);

/// Beyond the deadline, what a loaded machine may add to answering.
const SLACK: Duration = Duration::from_secs(2);

/// Places an order; its response and how long it took.
async fn timed_placement(app: &TestApp, user: &TestUser) -> (reqwest::Response, Duration) {
    let started = Instant::now();
    let response = app.place(user, &key(), &an_order()).await;
    (response, started.elapsed())
}

#[tokio::test]
async fn a_frozen_users_service_is_a_503_within_the_deadline_and_orders_recovers_after() {
    let deadline_ms = USERS_DEADLINE.as_millis().to_string();
    let app = spawn_app_with(UsersAt::Proxied, &[("USERS_DEADLINE_MS", deadline_ms)]).await;
    let user = app.create_user(Role::User).await;
    // Orders now holds a live connection to users: the frozen process leaves it hanging
    // rather than refusing it.
    let (response, _) = timed_placement(&app, &user).await;
    assert_eq!(response.status(), StatusCode::CREATED);

    let frozen = app.users().service.suspend();
    let placements = (0..4).map(|_| timed_placement(&app, &user));
    for (response, took) in futures::future::join_all(placements).await {
        assert!(
            took < USERS_DEADLINE + SLACK,
            "not bounded by the deadline: {took:?}"
        );
        assert!(response.headers().contains_key("retry-after"));
        assert_problem(response, 503, None).await;
    }
    assert_eq!(app.rows().await, (1, 1), "only the order placed before");
    frozen.resume();

    // Nothing is restarted or reset: orders must find users again on its own, once its
    // circuit lets a call through.
    let resumed = Instant::now();
    loop {
        let (response, _) = timed_placement(&app, &user).await;
        if response.status() == StatusCode::CREATED {
            break;
        }
        assert_problem(response, 503, None).await;
        assert!(
            resumed.elapsed() < Duration::from_secs(10),
            "orders did not recover within 10 s of users resuming"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(app.rows().await, (2, 2));
}
