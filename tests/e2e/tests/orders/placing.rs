//! Placing an order: the answer, and idempotency under retries and races.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tessera_jwt::Role;

use crate::helpers::{UsersAt, an_order, assert_problem, key, spawn_app, spawn_app_with};

#[tokio::test]
async fn an_order_is_placed_pending_with_its_totals() {
    let app = spawn_app().await;
    let user = app.create_user(Role::User).await;

    let response = app.place(&user, &key(), &an_order()).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    assert!(response.headers().get("idempotent-replayed").is_none());
    let order: Value = response.json().await.unwrap();

    assert_eq!(
        location,
        format!("/api/v1/orders/{}", order["id"].as_str().unwrap())
    );
    assert_eq!(order["user_id"], user.id.to_string());
    assert_eq!(order["status"], "pending");
    assert_eq!(order["currency"], "EUR");
    assert_eq!(
        order["items"],
        json!([
            { "sku": "BOOK-42", "quantity": 2, "unit_price_cents": 1250, "line_total_cents": 2500 },
            { "sku": "pen.blue_1", "quantity": 10, "unit_price_cents": 99, "line_total_cents": 990 }
        ])
    );
    assert_eq!(order["total_cents"], 3490);
    assert_eq!(order["created_at"], order["updated_at"]);

    let fetched: Value = app.get(&location, &user.token).await.json().await.unwrap();
    assert_eq!(fetched, order);
}

#[tokio::test]
async fn the_same_key_and_body_replay_the_first_answer() {
    let app = spawn_app().await;
    let user = app.create_user(Role::User).await;
    let key = key();

    let first = app.place(&user, &key, &an_order()).await;
    assert_eq!(first.status(), StatusCode::CREATED);
    let first_body = first.bytes().await.unwrap();

    // The same order written differently (field order, spacing) is the same request.
    let rewritten = r#"{ "items": [ {"unit_price_cents":1250,"quantity":2,"sku":"BOOK-42"},
        {"sku":"pen.blue_1","unit_price_cents":99,"quantity":10} ], "currency": "EUR" }"#;
    for body in [an_order().to_string(), rewritten.to_owned()] {
        let again = app
            .place_raw(&user.token, Some(&key), "application/json", body)
            .await;
        assert_eq!(again.status(), StatusCode::CREATED);
        assert_eq!(again.headers()["idempotent-replayed"], "true");
        assert_eq!(again.bytes().await.unwrap(), first_body, "byte for byte");
    }
    assert_eq!(app.rows().await, (1, 1));
}

#[tokio::test]
async fn the_replay_is_the_first_answer_even_after_the_order_changed() {
    let app = spawn_app().await;
    let user = app.create_user(Role::User).await;
    let key = key();
    let first: Value = app
        .place(&user, &key, &an_order())
        .await
        .json()
        .await
        .unwrap();
    let path = format!("/api/v1/orders/{}/cancel", first["id"].as_str().unwrap());
    assert_eq!(app.post(&path, &user.token).await.status(), StatusCode::OK);

    let again: Value = app
        .place(&user, &key, &an_order())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        again, first,
        "a replay repeats the answer; GET tells the present"
    );
}

#[tokio::test]
async fn the_same_key_with_another_order_is_refused() {
    let app = spawn_app().await;
    let user = app.create_user(Role::User).await;
    let key = key();
    assert_eq!(
        app.place(&user, &key, &an_order()).await.status(),
        StatusCode::CREATED
    );

    let mut other = an_order();
    other["items"][0]["quantity"] = json!(3);
    let refused = app.place(&user, &key, &other).await;
    let problem = assert_problem(refused, 422, Some("Idempotency-Key")).await;
    let message = problem["errors"][0]["message"].as_str().unwrap();
    assert!(message.contains("different order"), "{problem}");
    assert_eq!(app.rows().await, (1, 1));
}

#[tokio::test]
async fn keys_belong_to_the_user_who_sent_them() {
    let app = spawn_app().await;
    let alice = app.create_user(Role::User).await;
    let bob = app.create_user(Role::User).await;
    let key = key();

    let hers: Value = app
        .place(&alice, &key, &an_order())
        .await
        .json()
        .await
        .unwrap();
    let his = app.place(&bob, &key, &an_order()).await;
    assert_eq!(his.status(), StatusCode::CREATED);
    assert!(his.headers().get("idempotent-replayed").is_none());
    let his: Value = his.json().await.unwrap();
    assert_ne!(his["id"], hers["id"]);
    assert_eq!(his["user_id"], bob.id.to_string());
    assert_eq!(app.rows().await, (2, 2));
}

#[tokio::test]
async fn twenty_racing_requests_with_one_key_make_one_order() {
    let app = spawn_app().await;
    let user = app.create_user(Role::User).await;
    let key = key();
    let body = an_order();

    let answers = futures::future::join_all((0..20).map(|_| async {
        let response = app.place(&user, &key, &body).await;
        let status = response.status();
        (status, response.json::<Value>().await.unwrap())
    }))
    .await;

    let (orders, keys) = app.rows().await;
    assert_eq!((orders, keys), (1, 1), "exactly one order: {answers:?}");
    let id = &answers[0].1["id"];
    for (status, body) in &answers {
        assert_eq!(*status, StatusCode::CREATED, "{body}");
        assert_eq!(&body["id"], id, "every caller gets the one order");
    }
}

#[tokio::test]
async fn an_expired_key_places_a_new_order() {
    let app = spawn_app_with(
        UsersAt::Proxied,
        &[("IDEMPOTENCY_TTL_SECS", "1".to_owned())],
    )
    .await;
    let user = app.create_user(Role::User).await;
    let key = key();
    let first: Value = app
        .place(&user, &key, &an_order())
        .await
        .json()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let second = app.place(&user, &key, &an_order()).await;
    assert_eq!(second.status(), StatusCode::CREATED);
    assert!(second.headers().get("idempotent-replayed").is_none());
    let second: Value = second.json().await.unwrap();
    assert_ne!(second["id"], first["id"]);
    assert_eq!(app.rows().await, (2, 1), "the expired key was taken over");
}

#[tokio::test]
async fn a_missing_or_malformed_key_is_refused() {
    let app = spawn_app().await;
    let user = app.create_user(Role::User).await;
    let body = an_order().to_string();
    let long = "k".repeat(256);
    for key in [
        None,
        Some(""),
        Some("has space"),
        Some("tab\tkey"),
        Some(long.as_str()),
    ] {
        let response = app
            .place_raw(&user.token, key, "application/json", body.clone())
            .await;
        let problem = assert_problem(response, 400, None).await;
        assert!(
            problem["detail"]
                .as_str()
                .unwrap()
                .contains("Idempotency-Key"),
            "{problem}"
        );
    }
    let max = "k".repeat(255);
    assert_eq!(
        app.place_raw(&user.token, Some(&max), "application/json", body)
            .await
            .status(),
        StatusCode::CREATED
    );
    assert_eq!(app.rows().await, (1, 1));
}

#[tokio::test]
async fn a_user_without_a_profile_places_nothing() {
    let app = spawn_app().await;
    let stranger = app.stranger();
    let response = app.place(&stranger, &key(), &an_order()).await;
    let problem = assert_problem(response, 403, None).await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("no longer exists"),
        "{problem}"
    );
    assert_eq!(app.rows().await, (0, 0));
}

#[tokio::test]
async fn a_request_without_a_valid_token_is_refused() {
    let app = spawn_app_with(UsersAt::Url("http://127.0.0.1:9".to_owned()), &[]).await;
    for token in ["", "not-a-jwt"] {
        let response = app
            .place_raw(
                token,
                Some(&key()),
                "application/json",
                an_order().to_string(),
            )
            .await;
        assert_problem(response, 401, None).await;
    }
    assert_eq!(app.rows().await, (0, 0));
}
