//! Login: tokens other services accept, one answer for every failure, and limits on guessing.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{
    KID, PASSWORD, assert_problem, email, retry_after, session, spawn_app, spawn_app_with,
};

fn decode(part: &str) -> Value {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

/// How many password verifications auth has run.
async fn verifications(app: &crate::helpers::TestApp) -> f64 {
    app.auth
        .counter("auth_password_hash_seconds_count", &["verify"])
        .await
}

#[tokio::test]
async fn login_issues_an_access_token_with_every_claim_and_a_refresh_token() {
    let app = spawn_app().await;
    let account = app.register().await;

    let session = app.login(&account).await;

    let parts: Vec<&str> = session.access.split('.').collect();
    let header = decode(parts[0]);
    assert_eq!(header["alg"], "EdDSA");
    assert_eq!(header["kid"], KID);
    let claims = decode(parts[1]);
    assert_eq!(claims["iss"], "tessera-auth");
    assert_eq!(claims["aud"], "tessera");
    assert_eq!(claims["sub"], account.id.to_string());
    assert_eq!(claims["role"], "user");
    let (iat, exp) = (
        claims["iat"].as_i64().unwrap(),
        claims["exp"].as_i64().unwrap(),
    );
    assert_eq!(exp - iat, 900);
    assert!(claims["jti"].as_str().unwrap().len() == 36);
    // 256 random bits, base64url.
    assert_eq!(session.refresh.len(), 43);
    // Another service takes it.
    let me = app.me(&session.access).await;
    assert_eq!(me.status(), StatusCode::OK);
    let profile: Value = me.json().await.unwrap();
    assert_eq!(profile["id"], account.id.to_string());
}

#[tokio::test]
async fn unknown_email_and_wrong_password_get_the_same_answer_after_the_same_work() {
    let app = spawn_app().await;
    let account = app.register().await;

    let before = verifications(&app).await;
    let wrong_password = app
        .login_with(&account.email, "not the password at all")
        .await;
    let after_wrong = verifications(&app).await;
    let unknown_email = app.login_with(&email(), PASSWORD).await;
    let after_unknown = verifications(&app).await;
    let malformed_email = app.login_with("nobody", PASSWORD).await;

    let wrong = assert_problem(wrong_password, 401, None).await;
    let unknown = assert_problem(unknown_email, 401, None).await;
    let malformed = assert_problem(malformed_email, 401, None).await;
    assert_eq!(wrong, unknown);
    assert_eq!(wrong, malformed);
    // An unknown email costs a password verification (against a dummy hash) like a known one.
    assert_eq!(after_wrong - before, 1.0);
    assert_eq!(after_unknown - after_wrong, 1.0);
}

#[tokio::test]
async fn an_oversized_password_is_refused_without_hashing_it() {
    let app = spawn_app().await;
    let account = app.register().await;
    let before = verifications(&app).await;

    let response = app.login_with(&account.email, &"p".repeat(50_000)).await;

    assert_problem(response, 401, None).await;
    assert_eq!(verifications(&app).await, before);
}

#[tokio::test]
async fn missing_and_unknown_fields_are_named() {
    let app = spawn_app().await;
    let response = app
        .post("/api/v1/auth/login", json!({ "email": email() }))
        .await;
    assert_problem(response, 422, Some("password")).await;
    let response = app
        .post(
            "/api/v1/auth/login",
            json!({ "email": email(), "password": PASSWORD, "otp": "1" }),
        )
        .await;
    assert_problem(response, 422, Some("otp")).await;
}

#[tokio::test]
async fn failed_logins_per_email_and_address_are_limited_until_the_window_passes() {
    let app = spawn_app_with(&[
        ("LOGIN_MAX_FAILURES_PER_EMAIL_CLIENT", "3".to_owned()),
        ("LOGIN_FAILURE_WINDOW_SECS", "2".to_owned()),
    ])
    .await;
    let account = app.register().await;
    for _ in 0..3 {
        let response = app.login_with(&account.email, "wrong wrong wrong").await;
        assert_problem(response, 401, None).await;
    }

    // Even the right password waits now: the limit is checked before any password is.
    let limited = app.login_with(&account.email, PASSWORD).await;
    let retry_after = retry_after(&limited);
    assert!((1..=2).contains(&retry_after.as_secs()), "{retry_after:?}");
    assert_problem(limited, 429, None).await;
    // Another account is not affected.
    let other = app.register().await;
    app.login(&other).await;

    tokio::time::sleep(retry_after + Duration::from_millis(200)).await;
    let response = app.login_with(&account.email, PASSWORD).await;
    session(response).await;
}

/// A login for `email` with `password`, as from `address` behind the trusted proxy.
async fn login_from(
    app: &crate::helpers::TestApp,
    address: &str,
    email: &str,
    password: &str,
) -> reqwest::Response {
    tessera_testkit::http_client()
        .post(app.auth_url("/api/v1/auth/login"))
        .header("x-forwarded-for", address)
        .json(&json!({ "email": email, "password": password }))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn guessing_from_one_address_does_not_lock_the_owner_out_elsewhere() {
    let app = spawn_app_with(&[
        ("LOGIN_MAX_FAILURES_PER_EMAIL_CLIENT", "3".to_owned()),
        ("TRUSTED_PROXY_HOPS", "1".to_owned()),
    ])
    .await;
    let account = app.register().await;
    for _ in 0..3 {
        let guess = login_from(&app, "203.0.113.7", &account.email, "wrong wrong wrong").await;
        assert_problem(guess, 401, None).await;
    }
    let locked = login_from(&app, "203.0.113.7", &account.email, PASSWORD).await;
    assert_problem(locked, 429, None).await;

    // The owner, from anywhere else, gets in.
    let owner = login_from(&app, "198.51.100.20", &account.email, PASSWORD).await;
    session(owner).await;
}

#[tokio::test]
async fn guesses_from_many_addresses_are_slowed_then_stopped_but_a_known_address_gets_in() {
    let app = spawn_app_with(&[
        ("LOGIN_MAX_FAILURES_PER_EMAIL_CLIENT", "1".to_owned()),
        ("LOGIN_MAX_FAILURES_PER_EMAIL", "2".to_owned()),
        ("TRUSTED_PROXY_HOPS", "1".to_owned()),
    ])
    .await;
    let account = app.register().await;
    // The owner logged in from home before: that address is known to the account.
    session(login_from(&app, "198.51.100.20", &account.email, PASSWORD).await).await;

    let guess = |n: u8| {
        let address = format!("203.0.113.{n}");
        let email = account.email.clone();
        let app = &app;
        async move { login_from(app, &address, &email, "wrong wrong wrong").await }
    };
    assert_problem(guess(1).await, 401, None).await;
    // Past one failure per address, every new address waits a delay after the last try.
    assert_problem(guess(2).await, 401, None).await;
    let slowed = guess(3).await;
    let wait = retry_after(&slowed);
    assert!((1..=2).contains(&wait.as_secs()), "{wait:?}");
    assert_problem(slowed, 429, None).await;
    // The owner's known address is not slowed.
    session(login_from(&app, "198.51.100.20", &account.email, PASSWORD).await).await;

    // Past the ceiling, no unknown address gets a try for the rest of the window...
    tokio::time::sleep(wait + Duration::from_millis(200)).await;
    let stopped = guess(4).await;
    assert!(
        retry_after(&stopped).as_secs() > 2,
        "the window, not a delay"
    );
    assert_problem(stopped, 429, None).await;
    // ...and the owner still gets in from home.
    session(login_from(&app, "198.51.100.20", &account.email, PASSWORD).await).await;
}

#[tokio::test]
async fn failed_logins_per_client_address_are_limited_across_emails() {
    let app = spawn_app_with(&[("LOGIN_MAX_FAILURES_PER_CLIENT", "4".to_owned())]).await;
    let account = app.register().await;
    for _ in 0..4 {
        let response = app.login_with(&email(), PASSWORD).await;
        assert_problem(response, 401, None).await;
    }

    let response = app.login_with(&account.email, PASSWORD).await;

    assert_problem(response, 429, None).await;
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_forwarded_address_is_limited() {
    let app = spawn_app_with(&[
        ("LOGIN_MAX_FAILURES_PER_CLIENT", "2".to_owned()),
        ("TRUSTED_PROXY_HOPS", "1".to_owned()),
    ])
    .await;
    let client = tessera_testkit::http_client();
    let attempt = |forwarded: &'static str| {
        client
            .post(app.auth_url("/api/v1/auth/login"))
            .header("x-forwarded-for", forwarded)
            .json(&json!({ "email": email(), "password": PASSWORD }))
            .send()
    };
    for _ in 0..2 {
        // The first entry is whatever the client claims; the proxy appended the last one.
        assert_eq!(attempt("1.1.1.1, 203.0.113.7").await.unwrap().status(), 401);
    }
    assert_eq!(attempt("9.9.9.9, 203.0.113.7").await.unwrap().status(), 429);
    assert_eq!(attempt("203.0.113.8").await.unwrap().status(), 401);
}

#[tokio::test]
async fn logins_still_work_when_redis_is_unreachable() {
    let app = spawn_app_with(&[("REDIS_URL", "redis://127.0.0.1:1/0".to_owned())]).await;
    let account = app.register().await;

    let response = app.login_with(&account.email, PASSWORD).await;

    session(response).await;
}

#[tokio::test]
async fn a_burst_of_parallel_guesses_cannot_slip_past_the_limit() {
    let app = spawn_app_with(&[("LOGIN_MAX_FAILURES_PER_EMAIL_CLIENT", "3".to_owned())]).await;
    let account = app.register().await;

    let passwords: Vec<String> = (0..12).map(|n| format!("guess number {n}")).collect();
    let guesses = passwords
        .iter()
        .map(|password| app.login_with(&account.email, password));
    let statuses: Vec<u16> = futures::future::join_all(guesses)
        .await
        .iter()
        .map(|response| response.status().as_u16())
        .collect();

    assert_eq!(
        statuses.iter().filter(|s| **s == 401).count(),
        3,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        9,
        "{statuses:?}"
    );
}
