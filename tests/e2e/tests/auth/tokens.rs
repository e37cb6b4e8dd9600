//! The keys auth publishes, ValidateToken, and every kind of bad token refused by the shared
//! verifier both in auth (gRPC) and in another service (users, REST).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::Utc;
use reqwest::StatusCode;
use serde_json::Value;
use tessera_jwt::{Claims, Role};
use tessera_testkit::forge::forgeries;
use uuid::Uuid;

use crate::helpers::{KID, TestApp, eventually, spawn_app, write_key};

/// Asserts that both auth's ValidateToken and the users service refuse `token`.
async fn refused_everywhere(app: &TestApp, token: &str, what: &str) {
    let status = app.validate(token).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{what}");
    assert_eq!(
        app.me(token).await.status(),
        StatusCode::UNAUTHORIZED,
        "{what}"
    );
}

fn claims_for(user: Uuid) -> Claims {
    let now = Utc::now().timestamp();
    Claims {
        iss: "tessera-auth".to_owned(),
        aud: "tessera".to_owned(),
        sub: user,
        role: Role::User,
        iat: now,
        exp: now + 900,
        jti: Uuid::now_v7(),
    }
}

#[tokio::test]
async fn validate_token_returns_the_principal_of_a_live_token() {
    let app = spawn_app().await;
    let account = app.register().await;
    let session = app.login(&account).await;

    let principal = app.validate(&session.access).await.unwrap();

    assert_eq!(principal.user_id, account.id.to_string());
    assert_eq!(principal.role, "user");
    assert_eq!(principal.token_id.len(), 36);
    let expires_in = principal.expires_at.unwrap().seconds - Utc::now().timestamp();
    assert!((890..=900).contains(&expires_in), "{expires_in}");
    let empty = app.validate(" ").await.unwrap_err();
    assert_eq!(empty.code(), tonic::Code::Unauthenticated);
}

#[tokio::test]
async fn forged_and_stale_tokens_are_refused_by_every_verifier() {
    let app = spawn_app().await;
    let account = app.register().await;
    let signer = app.signer();
    // The control: auth's own key and claims verify everywhere.
    let genuine = signer.sign(&claims_for(account.id)).unwrap();
    assert_eq!(app.me(&genuine).await.status(), StatusCode::OK);

    for forgery in forgeries(&signer, &claims_for(account.id)) {
        refused_everywhere(&app, &forgery.token, forgery.what).await;
    }
}

#[tokio::test]
async fn the_jwks_publishes_public_keys_only_with_cache_headers() {
    let app = spawn_app().await;

    let response = tessera_testkit::get(app.auth_url("/.well-known/jwks.json"))
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_eq!(response.headers()["cache-control"], "public, max-age=300");
    let jwks: Value = response.json().await.unwrap();
    let keys = jwks["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["kid"], KID);
    assert_eq!(keys[0]["kty"], "OKP");
    assert_eq!(keys[0]["crv"], "Ed25519");
    assert!(keys[0].get("d").is_none(), "private part published: {jwks}");
}

#[tokio::test]
async fn rotating_keys_keeps_earlier_tokens_valid_and_reaches_other_services() {
    let app = spawn_app().await;
    let account = app.register().await;
    let before = app.login(&account).await;
    // users has fetched the JWKS with the first key only.
    assert_eq!(app.me(&before.access).await.status(), StatusCode::OK);

    write_key(app.keys.path(), "test-2");
    let mut env = app.auth_env.clone();
    tessera_testkit::set_var(&mut env, "AUTH_", "SIGNING_KID", "test-2");
    let app = app.restart_auth_with(env).await;
    let after = app.login(&account).await;

    let header: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(after.access.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(header["kid"], "test-2");
    let jwks = app.jwks().await;
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|key| key["kid"].as_str().unwrap())
        .collect();
    assert_eq!(kids, ["test-2", "test-1"]);
    // users refetches the JWKS when a token names a key it lacks, at most once per 10 s:
    // having fetched it moments ago, it may refuse the new token until then.
    eventually("users learns the new key", || async {
        app.me(&after.access).await.status() == StatusCode::OK
    })
    .await;
    assert_eq!(app.me(&before.access).await.status(), StatusCode::OK);
    session_refreshes(&app, &before.refresh).await;
}

async fn session_refreshes(app: &TestApp, refresh: &str) {
    let renewed = crate::helpers::session(app.refresh(refresh).await).await;
    assert_eq!(app.me(&renewed.access).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn the_openapi_document_describes_every_route() {
    let app = spawn_app().await;
    let doc: Value = tessera_testkit::get(app.auth_url("/openapi.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    for path in [
        "/api/v1/auth/register",
        "/api/v1/auth/login",
        "/api/v1/auth/refresh",
        "/api/v1/auth/logout",
        "/.well-known/jwks.json",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} missing");
    }
    assert!(
        doc["paths"]["/api/v1/auth/login"]["post"]["responses"]
            .get("429")
            .is_some()
    );
}
