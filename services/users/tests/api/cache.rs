//! Reads by id through Redis: hits after the first read, invalidated by writes, and never a
//! failure when Redis is gone.

use std::net::SocketAddr;

use reqwest::StatusCode;
use tessera_jwt::Role;
use tessera_testkit::proxy::TcpProxy;

use crate::helpers::{assert_problem, spawn_app, spawn_app_with};

#[tokio::test]
async fn a_second_read_is_served_from_the_cache() {
    let app = spawn_app().await;
    let user = app.create_user(Role::User).await;

    assert_eq!(app.display_name(&user).await, "Test User");
    app.rename_in_database(&user, "Changed Behind Its Back")
        .await;

    assert_eq!(app.display_name(&user).await, "Test User");
    assert!(
        app.service
            .counter(
                "cache_lookups_total",
                &["cache=\"users\"", "result=\"hit\""]
            )
            .await
            >= 1.0
    );
    assert!(
        app.service
            .counter(
                "cache_lookups_total",
                &["cache=\"users\"", "result=\"miss\""]
            )
            .await
            >= 1.0
    );
}

#[tokio::test]
async fn an_update_invalidates_the_cached_profile() {
    let app = spawn_app().await;
    let user = app.create_user(Role::User).await;
    app.display_name(&user).await;

    app.rename(&user, "Renamed").await;

    assert_eq!(app.display_name(&user).await, "Renamed");
}

#[tokio::test]
async fn a_delete_invalidates_the_cached_profile() {
    let app = spawn_app().await;
    let user = app.create_user(Role::User).await;
    let path = format!("/api/v1/users/{}", user.id);
    app.display_name(&user).await;

    assert_eq!(
        app.delete(&path, &user.token).await.status(),
        StatusCode::NO_CONTENT
    );

    assert_problem(app.get(&path, &user.token).await, 404, None).await;
}

#[tokio::test]
async fn with_redis_at_a_dead_port_the_service_answers_from_postgres() {
    let dead = format!("redis://127.0.0.1:{}/0", tessera_testkit::free_port());
    let app = spawn_app_with(&[("REDIS_URL", dead), ("REDIS_TIMEOUT_MS", "200".to_owned())]).await;
    let user = app.create_user(Role::User).await;

    assert_eq!(app.display_name(&user).await, "Test User");
    app.rename(&user, "Still Works").await;
    assert_eq!(app.display_name(&user).await, "Still Works");

    assert!(
        app.service
            .counter("cache_failures_total", &["cache=\"users\""])
            .await
            >= 2.0
    );
    assert_eq!(
        app.service
            .counter("cache_lookups_total", &["result=\"hit\""])
            .await,
        0.0
    );
    // Redis is optional: the service stays ready.
    assert_eq!(app.service.ready_status().await, 200);
}

#[tokio::test]
async fn a_write_while_redis_is_cut_off_is_not_hidden_by_the_old_entry_afterwards() {
    let proxy = TcpProxy::start(SocketAddr::from(([127, 0, 0, 1], 6379))).await;
    let redis = format!("redis://{}/0", proxy.addr());
    let app = spawn_app_with(&[("REDIS_URL", redis), ("REDIS_TIMEOUT_MS", "200".to_owned())]).await;
    let user = app.create_user(Role::User).await;
    assert_eq!(app.display_name(&user).await, "Test User"); // now cached

    proxy.cut();
    app.rename(&user, "Renamed While Cut").await; // its invalidation fails
    assert_eq!(app.display_name(&user).await, "Renamed While Cut");

    proxy.restore();
    assert_eq!(app.display_name(&user).await, "Renamed While Cut");
    assert_eq!(app.display_name(&user).await, "Renamed While Cut");
    assert!(
        app.service
            .counter("cache_failures_total", &["operation=\"invalidate\""])
            .await
            >= 1.0
    );
}
