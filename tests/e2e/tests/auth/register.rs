//! Registration: the credential, the profile in users, and nothing left when users fails.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use tessera_proto::users::v1 as users_proto;
use uuid::Uuid;

use crate::helpers::{PASSWORD, assert_problem, email, retry_after, spawn_app, spawn_app_with};

#[tokio::test]
async fn registering_creates_the_credential_and_the_profile() {
    let app = spawn_app().await;
    let email = email();

    let response = app
        .register_with(&format!("  {}  ", email.to_uppercase()), PASSWORD, "Ada")
        .await;

    assert_eq!(response.status(), StatusCode::CREATED);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["email"], email, "stored normalised");
    let id = body["user_id"].as_str().unwrap();
    let profile = app
        .users_grpc()
        .await
        .get_user(users_proto::GetUserRequest { id: id.to_owned() })
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!(profile.email, email);
    assert_eq!(profile.display_name, "Ada");
    assert_eq!(profile.role(), users_proto::Role::User);
    assert_eq!(app.credentials_for(&email).await, 1);
}

#[tokio::test]
async fn a_taken_email_is_a_conflict_whatever_its_case() {
    let app = spawn_app().await;
    let account = app.register().await;

    let response = app
        .register_with(&account.email.to_uppercase(), PASSWORD, "Someone Else")
        .await;

    assert_problem(response, 409, None).await;
    assert_eq!(app.credentials_for(&account.email).await, 1);
}

#[tokio::test]
async fn weak_and_oversized_passwords_are_refused_naming_the_field() {
    let app = spawn_app().await;
    let email = email();
    let huge = "x".repeat(60_000);
    for password in [
        "short",
        "aaaaaaaaaaaaaaaa",
        "password1234",
        &format!("{email}!"),
        &"a1b2c3d4e5".repeat(13),
        &huge,
    ] {
        let response = app.register_with(&email, password, "Ada").await;
        let body = assert_problem(response, 422, Some("password")).await;
        assert!(
            !body.to_string().contains(password),
            "the password is echoed: {body}"
        );
    }
    assert_eq!(app.credentials_for(&email).await, 0);
    assert_eq!(app.profiles_for(&email).await, 0);
}

#[tokio::test]
async fn invalid_fields_are_named() {
    let app = spawn_app().await;
    let valid = json!({ "email": email(), "password": PASSWORD, "display_name": "Ada" });
    for (field, value) in [
        ("email", json!("not-an-email")),
        ("email", json!(42)),
        ("display_name", json!("")),
        ("display_name", json!("\u{202e}evil")),
        ("password", json!(null)),
    ] {
        let mut body = valid.clone();
        body[field] = value;
        let response = app.post("/api/v1/auth/register", body).await;
        assert_problem(response, 422, Some(field)).await;
    }
    let mut unknown = valid.clone();
    unknown["role"] = json!("admin");
    let response = app.post("/api/v1/auth/register", unknown).await;
    assert_problem(response, 422, Some("role")).await;
}

#[tokio::test]
async fn users_down_answers_503_and_leaves_nothing_behind() {
    let app = spawn_app().await;
    let email = email();
    app.users_proxy.cut();

    let response = app.register_with(&email, PASSWORD, "Ada").await;

    assert_problem(response, 503, None).await;
    assert_eq!(app.credentials_for(&email).await, 0);
    assert_eq!(app.profiles_for(&email).await, 0);

    app.users_proxy.restore();
    let response = app.register_with(&email, PASSWORD, "Ada").await;
    assert_eq!(response.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn a_users_service_that_never_answers_is_given_up_at_the_deadline() {
    // Accepts connections and never says a word.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            open.push(socket);
        }
    });
    let app = spawn_app_with(&[
        ("USERS_GRPC_URL", format!("http://{addr}")),
        ("USERS_TIMEOUT_MS", "300".to_owned()),
    ])
    .await;
    let email = email();

    let started = Instant::now();
    let response = app.register_with(&email, PASSWORD, "Ada").await;

    assert_problem(response, 503, None).await;
    assert!(started.elapsed() < Duration::from_secs(5), "no hang");
    assert_eq!(app.credentials_for(&email).await, 0);
    held.abort();
}

#[tokio::test]
async fn a_profile_left_by_an_earlier_attempt_is_adopted() {
    let app = spawn_app().await;
    let email = email();
    // What a registration leaves when users created the profile after auth gave up waiting.
    let orphan = Uuid::now_v7();
    app.users_grpc()
        .await
        .create_user(users_proto::CreateUserRequest {
            id: orphan.to_string(),
            email: email.clone(),
            display_name: "Ada".to_owned(),
            role: users_proto::Role::User.into(),
        })
        .await
        .unwrap();

    let response = app.register_with(&email, PASSWORD, "Ada").await;

    assert_eq!(response.status(), StatusCode::CREATED);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["user_id"], orphan.to_string());
    let login = app.login_with(&email, PASSWORD).await;
    assert_eq!(login.status(), StatusCode::OK);
}

#[tokio::test]
async fn an_admin_profile_is_never_adopted_by_a_registration() {
    let app = spawn_app().await;
    let email = email();
    app.users_grpc()
        .await
        .create_user(users_proto::CreateUserRequest {
            id: Uuid::now_v7().to_string(),
            email: email.clone(),
            display_name: "Root".to_owned(),
            role: users_proto::Role::Admin.into(),
        })
        .await
        .unwrap();

    let response = app.register_with(&email, PASSWORD, "Mallory").await;

    assert_problem(response, 409, None).await;
    assert_eq!(app.credentials_for(&email).await, 0);
}

#[tokio::test]
async fn registrations_from_one_address_are_limited_until_the_window_passes() {
    let app = spawn_app_with(&[
        ("REGISTRATIONS_PER_CLIENT", "2".to_owned()),
        ("REGISTRATION_WINDOW_SECS", "2".to_owned()),
    ])
    .await;
    // Refused bodies cost no hash and do not count.
    let weak = app.register_with(&email(), "short", "Ada").await;
    assert_problem(weak, 422, Some("password")).await;
    app.register().await;
    app.register().await;

    let refused = email();
    let limited = app.register_with(&refused, PASSWORD, "Ada").await;
    let retry_after = retry_after(&limited);
    assert!((1..=2).contains(&retry_after.as_secs()), "{retry_after:?}");
    assert_problem(limited, 429, None).await;
    assert_eq!(app.credentials_for(&refused).await, 0);

    tokio::time::sleep(retry_after + Duration::from_millis(200)).await;
    let response = app.register_with(&refused, PASSWORD, "Ada").await;
    assert_eq!(response.status(), StatusCode::CREATED);
}
