//! pending → confirmed → cancelled, who may move an order, and racing changes.

use reqwest::StatusCode;
use serde_json::Value;
use tessera_jwt::Role;

use crate::helpers::{assert_problem, spawn_app};

fn path(order: &Value, action: &str) -> String {
    format!("/api/v1/orders/{}/{action}", order["id"].as_str().unwrap())
}

#[tokio::test]
async fn an_admin_confirms_and_the_owner_cancels() {
    let app = spawn_app().await;
    let mut tap = app.tap("order.*").await;
    let owner = app.create_user(Role::User).await;
    let admin = app.create_user(Role::Admin).await;
    let order = app.placed(&owner).await;
    let id = order["id"].as_str().unwrap();

    let confirmed = app.post(&path(&order, "confirm"), &admin.token).await;
    assert_eq!(confirmed.status(), StatusCode::OK);
    let confirmed: Value = confirmed.json().await.unwrap();
    assert_eq!(confirmed["status"], "confirmed");
    assert_eq!(confirmed["total_cents"], order["total_cents"]);
    assert_ne!(confirmed["updated_at"], order["updated_at"]);
    let stamp = |order: &Value, field: &str| {
        order[field]
            .as_str()
            .unwrap()
            .parse::<chrono::DateTime<chrono::Utc>>()
            .unwrap()
    };
    assert!(stamp(&confirmed, "updated_at") > stamp(&order, "created_at"));

    let cancelled: Value = app
        .post(&path(&order, "cancel"), &owner.token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(cancelled["status"], "cancelled");

    let created = tap.one("order.created", id).await;
    assert_eq!(created["data"]["total_cents"], 3490);
    assert_eq!(created["data"]["items"].as_array().unwrap().len(), 2);
    let event = tap.one("order.confirmed", id).await;
    assert_eq!(event["data"]["user_id"], owner.id.to_string());
    let event = tap.one("order.cancelled", id).await;
    assert_eq!(event["data"]["reason"], "requested");
    assert_eq!(event["data"]["items"], created["data"]["items"]);
}

#[tokio::test]
async fn only_the_arrows_of_the_lifecycle_are_allowed() {
    let app = spawn_app().await;
    let mut tap = app.tap("order.*").await;
    let owner = app.create_user(Role::User).await;
    let admin = app.create_user(Role::Admin).await;

    let cancelled_while_pending = app.placed(&owner).await;
    assert_eq!(
        app.post(&path(&cancelled_while_pending, "cancel"), &owner.token)
            .await
            .status(),
        200
    );
    for action in ["cancel", "confirm"] {
        let again = app
            .post(&path(&cancelled_while_pending, action), &admin.token)
            .await;
        let problem = assert_problem(again, 409, None).await;
        assert!(
            problem["detail"].as_str().unwrap().contains("cancelled"),
            "{problem}"
        );
    }

    let confirmed = app.placed(&owner).await;
    assert_eq!(
        app.post(&path(&confirmed, "confirm"), &admin.token)
            .await
            .status(),
        200
    );
    assert_problem(
        app.post(&path(&confirmed, "confirm"), &admin.token).await,
        409,
        None,
    )
    .await;
    // An admin cancels an order too, also a confirmed one.
    assert_eq!(
        app.post(&path(&confirmed, "cancel"), &admin.token)
            .await
            .status(),
        200
    );

    // Refused changes publish nothing.
    let id = cancelled_while_pending["id"].as_str().unwrap();
    let events = tap
        .about("order.cancelled", id, 2, std::time::Duration::from_secs(2))
        .await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(
        tap.about(
            "order.confirmed",
            id,
            1,
            std::time::Duration::from_millis(200)
        )
        .await
        .is_empty()
    );
}

#[tokio::test]
async fn only_an_admin_confirms() {
    let app = spawn_app().await;
    let owner = app.create_user(Role::User).await;
    let order = app.placed(&owner).await;
    assert_problem(
        app.post(&path(&order, "confirm"), &owner.token).await,
        403,
        None,
    )
    .await;
    let fetched: Value = app
        .get(
            &format!("/api/v1/orders/{}", order["id"].as_str().unwrap()),
            &owner.token,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(fetched["status"], "pending");
}

#[tokio::test]
async fn another_users_order_does_not_exist_for_them() {
    let app = spawn_app().await;
    let owner = app.create_user(Role::User).await;
    let other = app.create_user(Role::User).await;
    let order = app.placed(&owner).await;
    let get = format!("/api/v1/orders/{}", order["id"].as_str().unwrap());

    let read = app.get(&get, &other.token).await;
    let problem = assert_problem(read, 404, None).await;
    assert!(
        !problem.to_string().contains(&owner.id.to_string()),
        "{problem}"
    );
    assert_problem(
        app.post(&path(&order, "cancel"), &other.token).await,
        404,
        None,
    )
    .await;
    let missing = format!("/api/v1/orders/{}", uuid::Uuid::now_v7());
    assert_problem(app.get(&missing, &owner.token).await, 404, None).await;
    assert_problem(
        app.get("/api/v1/orders/not-a-uuid", &owner.token).await,
        422,
        Some("id"),
    )
    .await;

    let fetched: Value = app.get(&get, &owner.token).await.json().await.unwrap();
    assert_eq!(
        fetched["status"], "pending",
        "the failed cancel changed nothing"
    );
}

#[tokio::test]
async fn of_racing_cancels_exactly_one_wins() {
    let app = spawn_app().await;
    let mut tap = app.tap("order.cancelled").await;
    let owner = app.create_user(Role::User).await;
    let admin = app.create_user(Role::Admin).await;
    let order = app.placed(&owner).await;
    let cancel = path(&order, "cancel");

    let statuses = futures::future::join_all((0..10).map(|i| {
        let token = if i % 2 == 0 {
            &owner.token
        } else {
            &admin.token
        };
        let cancel = &cancel;
        let app = &app;
        async move { app.post(cancel, token).await.status().as_u16() }
    }))
    .await;
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 409),
        "{statuses:?}"
    );

    let id = order["id"].as_str().unwrap();
    let events = tap
        .about("order.cancelled", id, 2, std::time::Duration::from_secs(2))
        .await;
    assert_eq!(events.len(), 1, "one cancellation, one event: {events:?}");
}

#[tokio::test]
async fn a_confirm_racing_a_cancel_never_loses_either_update() {
    let app = spawn_app().await;
    let owner = app.create_user(Role::User).await;
    let admin = app.create_user(Role::Admin).await;
    for _ in 0..5 {
        let order = app.placed(&owner).await;
        let (confirm_path, cancel_path) = (path(&order, "confirm"), path(&order, "cancel"));
        let (confirm, cancel) = tokio::join!(
            app.post(&confirm_path, &admin.token),
            app.post(&cancel_path, &owner.token),
        );
        let (confirm, cancel) = (confirm.status().as_u16(), cancel.status().as_u16());
        let fetched: Value = app
            .get(
                &format!("/api/v1/orders/{}", order["id"].as_str().unwrap()),
                &owner.token,
            )
            .await
            .json()
            .await
            .unwrap();
        // Either order of the two is a valid history; what the callers were told holds.
        match (confirm, cancel) {
            (200, 200) | (409, 200) => assert_eq!(fetched["status"], "cancelled"),
            (200, 409) => assert_eq!(fetched["status"], "confirmed"),
            other => panic!("unexpected answers {other:?}"),
        }
    }
}
