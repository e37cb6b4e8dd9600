//! Reads by id through memory and Redis: hits after the first read, invalidated by writes
//! here at once and in other instances within the coherence bound, and never a failure
//! when Redis is gone.

use std::net::SocketAddr;
use std::time::Instant;

use reqwest::StatusCode;
use tessera_jwt::Role;
use tessera_runtime::NearCache;
use tessera_testkit::app::InProcess;
use tessera_testkit::proxy::TcpProxy;
use uuid::Uuid;

use crate::helpers::{TestApp, TestUser, assert_problem, spawn_app, spawn_app_with};

#[tokio::test]
async fn a_second_read_is_served_from_the_cache() {
    let app = spawn_app().await;
    let user = app.create_user(Role::User).await;

    assert_eq!(app.display_name(&user).await, "Test User");
    app.rename_in_database(&user, "Changed Behind Its Back")
        .await;

    assert_eq!(app.display_name(&user).await, "Test User");
    let mut hits = 0.0;
    for tier in ["result=\"hit\"", "result=\"near\""] {
        hits += app
            .service
            .counter("cache_lookups_total", &["cache=\"users\"", tier])
            .await;
    }
    assert!(hits >= 1.0);
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
    for tier in ["result=\"hit\"", "result=\"near\""] {
        assert_eq!(
            app.service.counter("cache_lookups_total", &[tier]).await,
            0.0
        );
    }
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

/// Reads `user` on `instance` until it answers from process memory (its `near` lookups
/// grow): the near cache is following its invalidations and holds the profile.
async fn until_served_from_memory(app: &TestApp, instance: &InProcess, user: &TestUser) {
    tessera_testkit::until_grows(
        async || {
            instance
                .counter("cache_lookups_total", &["result=\"near\""])
                .await
        },
        async || {
            app.display_name_on(instance, user).await;
        },
        "the near cache serving from memory",
    )
    .await;
}

/// Reads `user` on `instance` until it shows `name`, failing if a read sent
/// [`NearCache::COHERENCE_BOUND`] or more after `written` still shows something else.
async fn shows_within_the_bound(
    app: &TestApp,
    instance: &InProcess,
    user: &TestUser,
    name: &str,
    written: Instant,
) {
    tessera_testkit::seen_within(
        written,
        NearCache::<Uuid, ()>::COHERENCE_BOUND,
        name.to_owned(),
        async || app.display_name_on(instance, user).await,
    )
    .await;
}

#[tokio::test]
async fn another_instance_sees_a_write_within_the_coherence_bound() {
    let app = spawn_app().await;
    let other = app.another_instance(&[]).await;
    let user = app.create_user(Role::User).await;
    until_served_from_memory(&app, &app.service, &user).await;
    until_served_from_memory(&app, &other, &user).await;
    app.rename_in_database(&user, "Changed Behind Its Back")
        .await;
    assert_eq!(app.display_name_on(&other, &user).await, "Test User");

    app.rename(&user, "Renamed").await;
    let written = Instant::now();

    assert_eq!(
        app.display_name(&user).await,
        "Renamed",
        "the writer, at once"
    );
    shows_within_the_bound(&app, &other, &user, "Renamed", written).await;
}

/// An app, another instance reaching Redis through a proxy, and a user that instance serves
/// from memory.
async fn another_instance_behind_a_proxy() -> (TestApp, TcpProxy, InProcess, TestUser) {
    let app = spawn_app().await;
    let (proxy, redis) = TcpProxy::in_front_of("redis://127.0.0.1:6379/0").await;
    let other = app
        .another_instance(&[("REDIS_URL", redis), ("REDIS_TIMEOUT_MS", "200".to_owned())])
        .await;
    let user = app.create_user(Role::User).await;
    until_served_from_memory(&app, &other, &user).await;
    (app, proxy, other, user)
}

#[tokio::test]
async fn an_instance_cut_off_from_its_invalidations_reads_the_source_and_resumes_when_back() {
    let (app, proxy, other, user) = another_instance_behind_a_proxy().await;

    proxy.cut();
    app.rename(&user, "Renamed While Cut Off").await;
    let written = Instant::now();
    shows_within_the_bound(&app, &other, &user, "Renamed While Cut Off", written).await;

    proxy.restore();
    until_served_from_memory(&app, &other, &user).await;
    assert_eq!(
        app.display_name_on(&other, &user).await,
        "Renamed While Cut Off",
        "what it held before the cut is forgotten"
    );
}

#[tokio::test]
async fn an_instance_whose_redis_goes_silent_stops_serving_memory_within_the_bound() {
    let (app, proxy, other, user) = another_instance_behind_a_proxy().await;

    // Nothing is closed: only the missing heartbeats tell the instance.
    proxy.stall();
    app.rename(&user, "Renamed While Silent").await;
    let written = Instant::now();

    shows_within_the_bound(&app, &other, &user, "Renamed While Silent", written).await;
}
