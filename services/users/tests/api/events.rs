//! Every write publishes its event through the outbox; a refused write publishes nothing.

use serde_json::json;
use std::time::Duration;
use tessera_jwt::Role;
use tessera_proto::users::v1 as proto;

use crate::helpers::spawn_app;

#[tokio::test]
async fn each_write_publishes_its_event() {
    let app = spawn_app().await;
    let mut tap = app.tap("user.*").await;
    let user = app.create_user(Role::User).await;
    let id = user.id.to_string();

    let created = tap.one("user.created", &id).await;
    assert_eq!(created["source"], "users");
    assert_eq!(created["data"]["email"], user.email);
    assert_eq!(created["data"]["role"], "user");

    app.rename(&user, "Renamed").await;
    let updated = tap.one("user.updated", &id).await;
    assert_eq!(updated["data"]["display_name"], "Renamed");

    let path = format!("/api/v1/users/{}", user.id);
    assert_eq!(app.delete(&path, &user.token).await.status(), 204);
    let deleted = tap.one("user.deleted", &id).await;
    assert_eq!(deleted["data"], json!({ "id": id }));
}

#[tokio::test]
async fn refused_writes_publish_nothing() {
    let app = spawn_app().await;
    let mut tap = app.tap("user.*").await;
    let user = app.create_user(Role::User).await;
    let other = app.create_user(Role::User).await;
    let id = user.id.to_string();
    let path = format!("/api/v1/users/{}", user.id);

    // Invalid, forbidden, and clashing writes...
    assert_eq!(
        app.patch(&path, &user.token, json!({ "display_name": "" }))
            .await
            .status(),
        422
    );
    assert_eq!(
        app.patch(&path, &other.token, json!({ "display_name": "X" }))
            .await
            .status(),
        404
    );
    assert_eq!(app.delete(&path, &other.token).await.status(), 404);
    let clash = app
        .grpc()
        .await
        .create_user(proto::CreateUserRequest {
            id: id.clone(),
            email: "someone-else@example.com".to_owned(),
            display_name: "Clash".to_owned(),
            role: proto::Role::User.into(),
        })
        .await;
    assert_eq!(clash.unwrap_err().code(), tonic::Code::AlreadyExists);
    // ...then one that succeeds: the relay publishes in commit order, so once its event is
    // here, anything the refused ones had written would be here too.
    app.rename(&user, "Accepted").await;
    let updates = tap
        .about("user.updated", &id, 2, Duration::from_secs(3))
        .await;
    let creates = tap
        .about("user.created", &id, 2, Duration::from_millis(500))
        .await;

    assert_eq!(updates.len(), 1, "{updates:?}");
    assert_eq!(updates[0]["data"]["display_name"], "Accepted");
    assert_eq!(creates.len(), 1, "{creates:?}");
    assert!(
        tap.about("user.deleted", &id, 1, Duration::from_millis(200))
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn racing_updates_carry_versions_in_the_order_they_commit() {
    let app = spawn_app().await;
    let user = app.create_user(Role::User).await;
    let names: Vec<String> = (0..12).map(|n| format!("Writer {n}")).collect();
    futures::future::join_all(names.iter().map(|name| app.rename(&user, name))).await;

    // The outbox is written in commit order (each update holds the row's lock until it
    // commits), and so published: consumers keep the highest version, which is the last.
    let db = sqlx::PgPool::connect(app.database.url()).await.unwrap();
    let published: Vec<(i64, String)> = sqlx::query_as(
        "SELECT (envelope->'data'->>'version')::bigint, envelope->'data'->>'display_name' \
         FROM messaging_outbox WHERE event_type = 'user.updated' ORDER BY seq",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    let versions: Vec<i64> = published.iter().map(|(version, _)| *version).collect();
    assert_eq!(versions, (2..=13).collect::<Vec<_>>());
    let (last_version, last_name) = published.last().unwrap();
    let stored: (i64, String) =
        sqlx::query_as("SELECT version, display_name FROM users WHERE id = $1")
            .bind(user.id)
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!(stored, (*last_version, last_name.clone()));
}
