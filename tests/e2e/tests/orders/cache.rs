//! Reads by id through memory and Redis: served from the cache after the first read, a
//! status change seen at once where it was made and within the coherence bound by a
//! replica, and a cancellation by the `user.deleted` consumer seen once it commits.

use std::time::{Duration, Instant};

use serde_json::Value;
use tessera_jwt::Role;
use tessera_runtime::NearCache;
use tessera_testkit::process::ServiceProcess;
use uuid::Uuid;

use crate::helpers::{TestApp, TestUser, UsersAt, spawn_app, spawn_app_with};

/// The status of order `id` as `process` answers it to `user`.
async fn status_on(process: &ServiceProcess, user: &TestUser, id: &str) -> String {
    let response = tessera_testkit::http_client()
        .get(format!("{}/api/v1/orders/{id}", process.http_url()))
        .bearer_auth(&user.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{id} on {}", process.http_url());
    let order: Value = response.json().await.unwrap();
    order["status"].as_str().unwrap().to_owned()
}

/// Changes order `id`'s status in the database, behind the service's back.
async fn set_status_in_database(app: &TestApp, id: &str, status: &str) {
    let db = sqlx::PgPool::connect(app.database.url()).await.unwrap();
    sqlx::query("UPDATE orders SET status = $2 WHERE id = $1::uuid")
        .bind(id)
        .bind(status)
        .execute(&db)
        .await
        .unwrap();
    db.close().await;
}

/// Reads order `id` on `process` until it answers from memory (its `near` lookups grow).
async fn until_served_from_memory(process: &ServiceProcess, user: &TestUser, id: &str) {
    let near = ["cache=\"orders\"", "result=\"near\""];
    tessera_testkit::until_grows(
        async || process.counter("cache_lookups_total", &near).await,
        async || {
            status_on(process, user, id).await;
        },
        &format!("orders serving {id} from memory"),
    )
    .await;
}

fn id(order: &Value) -> String {
    order["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_second_read_is_served_from_the_cache() {
    let app = spawn_app().await;
    let user = app.create_user(Role::User).await;
    let order = id(&app.placed(&user).await);
    assert_eq!(status_on(&app.orders, &user, &order).await, "pending");

    set_status_in_database(&app, &order, "confirmed").await;

    assert_eq!(status_on(&app.orders, &user, &order).await, "pending");
}

#[tokio::test]
async fn a_replica_sees_a_cancellation_within_the_coherence_bound() {
    let app = spawn_app().await;
    let replica = app.replica().await;
    let user = app.create_user(Role::User).await;
    let order = id(&app.placed(&user).await);
    until_served_from_memory(&app.orders, &user, &order).await;
    until_served_from_memory(&replica, &user, &order).await;

    let cancel = format!("/api/v1/orders/{order}/cancel");
    assert_eq!(app.post(&cancel, &user.token).await.status(), 200);
    let written = Instant::now();

    assert_eq!(
        status_on(&app.orders, &user, &order).await,
        "cancelled",
        "the writer, at once"
    );
    tessera_testkit::seen_within(
        written,
        NearCache::<Uuid, ()>::COHERENCE_BOUND,
        "cancelled".to_owned(),
        async || status_on(&replica, &user, &order).await,
    )
    .await;
}

#[tokio::test]
async fn orders_cancelled_by_a_user_deletion_are_not_served_as_they_were() {
    let app = spawn_app().await;
    let user = app.create_user(Role::User).await;
    let admin = app.create_user(Role::Admin).await;
    let order = id(&app.placed(&user).await);
    until_served_from_memory(&app.orders, &admin, &order).await;

    app.delete_user(&user).await;

    // Well within the cache's 60 s lifetime: the consumer drops its copy after committing.
    app.wait_for_status(&admin.token, &order, "cancelled", Duration::from_secs(10))
        .await;
}

#[tokio::test]
async fn with_redis_at_a_dead_port_orders_are_read_from_postgres() {
    let dead = format!("redis://127.0.0.1:{}/0", tessera_testkit::free_port());
    let app = spawn_app_with(
        UsersAt::Proxied,
        &[("REDIS_URL", dead), ("REDIS_TIMEOUT_MS", "200".to_owned())],
    )
    .await;
    let user = app.create_user(Role::User).await;
    let order = id(&app.placed(&user).await);
    assert_eq!(status_on(&app.orders, &user, &order).await, "pending");

    let cancel = format!("/api/v1/orders/{order}/cancel");
    assert_eq!(app.post(&cancel, &user.token).await.status(), 200);

    assert_eq!(status_on(&app.orders, &user, &order).await, "cancelled");
    // Redis is optional: the service stays in rotation.
    let ready = tessera_testkit::http_client()
        .get(format!("{}/health/ready", app.orders.http_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
}
