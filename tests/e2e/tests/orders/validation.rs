//! Every refused order names the field at fault and writes nothing.

use reqwest::StatusCode;
use serde_json::{Value, json};
use tessera_jwt::Role;

use crate::helpers::{TestApp, an_order, assert_problem, key, spawn_app};

/// `an_order()` with `change` applied, which must be refused with 422 naming `field`.
async fn refused(app: &TestApp, token: &str, body: Value, field: &str) {
    let response = app
        .place_raw(token, Some(&key()), "application/json", body.to_string())
        .await;
    assert_problem(response, 422, Some(field)).await;
}

fn with(change: impl FnOnce(&mut Value)) -> Value {
    let mut body = an_order();
    change(&mut body);
    body
}

fn items(n: usize) -> Value {
    json!(
        (0..n)
            .map(|i| json!({ "sku": format!("SKU-{i}"), "quantity": 1, "unit_price_cents": 1 }))
            .collect::<Vec<_>>()
    )
}

#[tokio::test]
async fn each_invalid_field_is_named() {
    let app = spawn_app().await;
    let user = app.create_user(Role::User).await;
    let t = &user.token;

    refused(
        &app,
        t,
        with(|b| b["items"][0]["quantity"] = json!(0)),
        "items[0].quantity",
    )
    .await;
    refused(
        &app,
        t,
        with(|b| b["items"][1]["quantity"] = json!(10_001)),
        "items[1].quantity",
    )
    .await;
    refused(
        &app,
        t,
        with(|b| b["items"][0]["quantity"] = json!(-1)),
        "items[0].quantity",
    )
    .await;
    refused(
        &app,
        t,
        with(|b| b["items"][0]["unit_price_cents"] = json!(-1)),
        "items[0].unit_price_cents",
    )
    .await;
    refused(
        &app,
        t,
        with(|b| b["items"][0]["sku"] = json!("")),
        "items[0].sku",
    )
    .await;
    refused(
        &app,
        t,
        with(|b| b["items"][0]["sku"] = json!("a b")),
        "items[0].sku",
    )
    .await;
    refused(
        &app,
        t,
        with(|b| b["items"][0]["sku"] = json!("x".repeat(65))),
        "items[0].sku",
    )
    .await;
    for currency in ["eur", "XXY", "EU", "", "XXX"] {
        refused(
            &app,
            t,
            with(|b| b["currency"] = json!(currency)),
            "currency",
        )
        .await;
    }
    refused(&app, t, with(|b| b["items"] = items(0)), "items").await;
    refused(&app, t, with(|b| b["items"] = items(101)), "items").await;
    assert_eq!(app.rows().await, (0, 0));

    // The edges that are valid.
    for body in [
        with(|b| b["items"] = items(100)),
        with(|b| b["items"][0]["quantity"] = json!(10_000)),
        with(|b| b["items"][0]["unit_price_cents"] = json!(0)),
        with(|b| b["currency"] = json!("JPY")),
    ] {
        assert_eq!(
            app.place(&user, &key(), &body).await.status(),
            StatusCode::CREATED,
            "{body}"
        );
    }
}

#[tokio::test]
async fn prices_are_capped_so_that_no_total_can_overflow() {
    let app = spawn_app().await;
    let user = app.create_user(Role::User).await;
    let t = &user.token;
    const HIGHEST: i64 = 1_000_000_000_000;
    for (price, field) in [
        (HIGHEST + 1, "items[1].unit_price_cents"),
        (i64::MAX, "items[1].unit_price_cents"),
    ] {
        refused(
            &app,
            t,
            with(|b| b["items"][1]["unit_price_cents"] = json!(price)),
            field,
        )
        .await;
    }
    // Larger than any i64 at all.
    let huge = an_order()
        .to_string()
        .replace("1250", "99999999999999999999");
    let response = app
        .place_raw(t, Some(&key()), "application/json", huge)
        .await;
    assert_problem(response, 422, Some("items[0].unit_price_cents")).await;
    assert_eq!(app.rows().await, (0, 0));

    // The largest order there can be: every line at the highest price and quantity.
    let largest = json!({
        "currency": "EUR",
        "items": (0..100)
            .map(|i| json!({ "sku": format!("SKU-{i}"), "quantity": 10_000, "unit_price_cents": HIGHEST }))
            .collect::<Vec<_>>(),
    });
    let response = app.place(&user, &key(), &largest).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let order: Value = response.json().await.unwrap();
    assert_eq!(order["total_cents"], json!(100 * 10_000 * HIGHEST));
}

#[tokio::test]
async fn unknown_fields_wrong_types_and_missing_fields_are_refused() {
    let app = spawn_app().await;
    let user = app.create_user(Role::User).await;
    let t = &user.token;
    refused(&app, t, with(|b| b["discount"] = json!(10)), "discount").await;
    refused(
        &app,
        t,
        with(|b| b["items"][0]["colour"] = json!("red")),
        "items[0].colour",
    )
    .await;
    refused(
        &app,
        t,
        with(|b| b["items"][0]["quantity"] = json!("2")),
        "items[0].quantity",
    )
    .await;
    refused(
        &app,
        t,
        with(|b| b["items"][0]["quantity"] = json!(1.5)),
        "items[0].quantity",
    )
    .await;
    refused(&app, t, with(|b| b["items"] = json!({"sku": "A"})), "items").await;
    refused(&app, t, with(|b| b["currency"] = json!(978)), "currency").await;
    refused(&app, t, json!({ "currency": "EUR" }), "items").await;
    let array = app
        .place_raw(
            t,
            Some(&key()),
            "application/json",
            json!([an_order()]).to_string(),
        )
        .await;
    assert_problem(array, 422, None).await;
    assert_eq!(app.rows().await, (0, 0));
}

#[tokio::test]
async fn bodies_that_are_not_json_or_too_large_are_refused() {
    let app = spawn_app().await;
    let user = app.create_user(Role::User).await;
    let t = &user.token;
    let not_json = app
        .place_raw(
            t,
            Some(&key()),
            "application/json",
            "{\"currency\":".to_owned(),
        )
        .await;
    assert_problem(not_json, 400, None).await;
    let wrong_type = app
        .place_raw(t, Some(&key()), "text/plain", an_order().to_string())
        .await;
    assert_problem(wrong_type, 415, None).await;
    let huge = format!(
        "{{\"currency\":\"EUR\",\"items\":[],\"pad\":\"{}\"}}",
        "x".repeat(70_000)
    );
    let too_large = app
        .place_raw(t, Some(&key()), "application/json", huge)
        .await;
    assert_problem(too_large, 413, None).await;
    assert_eq!(app.rows().await, (0, 0));
}
