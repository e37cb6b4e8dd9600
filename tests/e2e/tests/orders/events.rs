//! `user.deleted` cancels the user's open orders, each once, however often it arrives.

use std::time::Duration;

use serde_json::{Value, json};
use tessera_jwt::Role;
use uuid::Uuid;

use crate::helpers::{an_order, assert_problem, key, spawn_app};

fn user_deleted(user_id: Uuid) -> Value {
    json!({
        "id": Uuid::now_v7(),
        "type": "user.deleted",
        "version": 1,
        "occurred_at": chrono::Utc::now(),
        "source": "users",
        "data": { "id": user_id },
    })
}

/// Waits until order `id` has `status`.
#[tokio::test]
async fn deleting_a_user_cancels_their_open_orders_once_each() {
    let app = spawn_app().await;
    let mut tap = app.tap("order.cancelled").await;
    let user = app.create_user(Role::User).await;
    let admin = app.create_user(Role::Admin).await;
    let bystander = app.create_user(Role::User).await;
    let pending = app.placed(&user).await;
    let confirmed = app.placed(&user).await;
    let already = app.placed(&user).await;
    let theirs = app.placed(&bystander).await;
    let id = |order: &Value| order["id"].as_str().unwrap().to_owned();
    let confirm = format!("/api/v1/orders/{}/confirm", id(&confirmed));
    assert_eq!(app.post(&confirm, &admin.token).await.status(), 200);
    let cancel = format!("/api/v1/orders/{}/cancel", id(&already));
    assert_eq!(app.post(&cancel, &user.token).await.status(), 200);

    app.delete_user(&user).await;
    for order in [&pending, &confirmed] {
        app.wait_for_status(
            &admin.token,
            &id(order),
            "cancelled",
            Duration::from_secs(10),
        )
        .await;
        let events = tap
            .about("order.cancelled", &id(order), 2, Duration::from_secs(2))
            .await;
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(events[0]["data"]["reason"], "user_deleted");
    }
    // The one cancelled before has its one event, from then; the bystander's is untouched.
    let events = tap
        .about(
            "order.cancelled",
            &id(&already),
            2,
            Duration::from_millis(500),
        )
        .await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["data"]["reason"], "requested");
    let untouched: Value = app
        .get(&format!("/api/v1/orders/{}", id(&theirs)), &bystander.token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(untouched["status"], "pending");

    // And the deleted user places nothing more.
    let response = app.place(&user, &key(), &an_order()).await;
    assert_problem(response, 403, None).await;
}

#[tokio::test]
async fn a_duplicate_delivery_to_racing_consumers_cancels_once() {
    let app = spawn_app().await;
    let mut tap = app.tap("order.cancelled").await;
    // A second replica on the same database and queue: the two copies race.
    let replica = app.replica().await;
    let user = app.create_user(Role::User).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(app.placed(&user).await["id"].as_str().unwrap().to_owned());
    }

    let event = user_deleted(user.id);
    for _ in 0..3 {
        app.publish(&event).await;
    }
    for id in &ids {
        let events = tap
            .about("order.cancelled", id, 2, Duration::from_secs(3))
            .await;
        assert_eq!(events.len(), 1, "order {id}: {events:?}");
    }
    drop(replica);
}

#[tokio::test]
async fn an_order_checked_before_the_deletion_cannot_land_after_it() {
    let app = spawn_app().await;
    // users still has the profile (so the check passes), but orders has applied its deletion:
    // the moment between users deleting and the placement reaching the database.
    let user = app.create_user(Role::User).await;
    let placed = app.placed(&user).await;
    let mut tap = app.tap("order.cancelled").await;
    app.publish(&user_deleted(user.id)).await;
    tap.one("order.cancelled", placed["id"].as_str().unwrap())
        .await;

    let response = app.place(&user, &key(), &an_order()).await;
    assert_problem(response, 403, None).await;
    assert_eq!(app.rows().await, (1, 1));
}
