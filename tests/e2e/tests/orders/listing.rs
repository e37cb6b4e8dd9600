//! Listing: one's own orders, all of them for an admin, by status, a page at a time.

use std::collections::HashSet;

use serde_json::Value;
use tessera_jwt::Role;

use crate::helpers::{TestApp, TestUser, assert_problem, spawn_app};

async fn page(app: &TestApp, user: &TestUser, query: &str) -> Value {
    let response = app
        .get(&format!("/api/v1/orders{query}"), &user.token)
        .await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

fn ids(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|order| order["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn users_see_their_own_newest_first_and_admins_everyones() {
    let app = spawn_app().await;
    let alice = app.create_user(Role::User).await;
    let bob = app.create_user(Role::User).await;
    let admin = app.create_user(Role::Admin).await;
    let mut hers = Vec::new();
    for _ in 0..3 {
        hers.push(app.placed(&alice).await["id"].as_str().unwrap().to_owned());
    }
    let his = app.placed(&bob).await["id"].as_str().unwrap().to_owned();

    hers.reverse();
    assert_eq!(ids(&page(&app, &alice, "").await), hers);
    assert_eq!(ids(&page(&app, &bob, "").await), std::slice::from_ref(&his));
    let all: HashSet<String> = ids(&page(&app, &admin, "").await).into_iter().collect();
    assert_eq!(all.len(), 4);
    assert!(all.contains(&his));
}

#[tokio::test]
async fn pages_follow_the_cursor_and_the_status_filter() {
    let app = spawn_app().await;
    let user = app.create_user(Role::User).await;
    let mut placed = Vec::new();
    for _ in 0..5 {
        placed.push(app.placed(&user).await["id"].as_str().unwrap().to_owned());
    }
    let cancel = format!("/api/v1/orders/{}/cancel", placed[1]);
    assert_eq!(app.post(&cancel, &user.token).await.status(), 200);

    let mut seen = Vec::new();
    let mut query = "?limit=2".to_owned();
    loop {
        let page = page(&app, &user, &query).await;
        seen.extend(ids(&page));
        match page["next_cursor"].as_str() {
            Some(cursor) => query = format!("?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    placed.reverse();
    assert_eq!(seen, placed);

    let cancelled = page(&app, &user, "?status=cancelled").await;
    assert_eq!(ids(&cancelled), [placed[3].clone()]);
    let pending = page(&app, &user, "?status=pending&limit=100").await;
    assert_eq!(ids(&pending).len(), 4);
}

#[tokio::test]
async fn bad_parameters_are_named() {
    let app = spawn_app().await;
    let user = app.create_user(Role::User).await;
    for (query, field) in [
        ("?limit=0", "limit"),
        ("?limit=101", "limit"),
        ("?limit=ten", "limit"),
        ("?cursor=bogus", "cursor"),
        ("?status=shipped", "status"),
        ("?colour=red", "colour"),
    ] {
        let response = app
            .get(&format!("/api/v1/orders{query}"), &user.token)
            .await;
        assert_problem(response, 422, Some(field)).await;
    }
}
