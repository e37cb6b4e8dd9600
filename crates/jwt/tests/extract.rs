//! The `Authenticated` extractor, driven through a tiny axum router.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use chrono::Utc;
use http::{Request, StatusCode, header};
use http_body_util::BodyExt as _;
use tessera_jwt::{Authenticated, Role, Verifier};
use tessera_testkit::jwks::TestIssuer;
use tower::ServiceExt as _;
use uuid::Uuid;

struct Answer {
    status: StatusCode,
    content_type: Option<String>,
    www_authenticate: bool,
    body: serde_json::Value,
}

async fn call(verifier: Verifier, authorization: Option<&str>) -> Answer {
    let router = Router::new()
        .route(
            "/me",
            get(|Authenticated(principal): Authenticated| async move {
                axum::Json(serde_json::json!({
                    "user_id": principal.user_id,
                    "role": principal.role,
                }))
            }),
        )
        .with_state(verifier);
    let mut request = Request::get("/me");
    if let Some(value) = authorization {
        request = request.header(header::AUTHORIZATION, value);
    }
    let response = router
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        content_type: headers
            .get(header::CONTENT_TYPE)
            .map(|value| value.to_str().unwrap().to_owned()),
        www_authenticate: headers.contains_key(header::WWW_AUTHENTICATE),
        body: serde_json::from_slice(&bytes).unwrap(),
    }
}

async fn issuer_and_verifier() -> (TestIssuer, Verifier) {
    let issuer = TestIssuer::start().await;
    let verifier = Verifier::remote(issuer.verifier_settings()).unwrap();
    (issuer, verifier)
}

fn assert_unauthenticated(answer: &Answer, detail: &str) {
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        answer.content_type.as_deref(),
        Some("application/problem+json")
    );
    assert!(answer.www_authenticate);
    assert_eq!(answer.body["detail"], detail);
}

#[tokio::test]
async fn missing_authorization_header_is_a_401_problem() {
    let (_issuer, verifier) = issuer_and_verifier().await;

    let answer = call(verifier, None).await;

    assert_unauthenticated(&answer, "a bearer access token is required");
}

#[tokio::test]
async fn another_authorization_scheme_is_a_401_problem() {
    let (_issuer, verifier) = issuer_and_verifier().await;

    let answer = call(verifier, Some("Basic dXNlcjpwYXNzd29yZA==")).await;

    assert_unauthenticated(&answer, "a bearer access token is required");
}

#[tokio::test]
async fn an_expired_token_is_a_401_saying_so() {
    let (issuer, verifier) = issuer_and_verifier().await;
    let mut claims = issuer.claims(Uuid::now_v7(), Role::User);
    claims.exp = Utc::now().timestamp() - 3600;
    let token = issuer.token_with(&claims);

    let answer = call(verifier, Some(&format!("Bearer {token}"))).await;

    assert_unauthenticated(&answer, "the access token has expired");
    assert!(!answer.body.to_string().contains(&token));
}

#[tokio::test]
async fn a_valid_bearer_token_reaches_the_handler_as_its_principal() {
    let (issuer, verifier) = issuer_and_verifier().await;
    let user = Uuid::now_v7();
    let token = issuer.token(user, Role::Admin);

    let answer = call(verifier, Some(&format!("bearer {token}"))).await;

    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body["user_id"], user.to_string());
    assert_eq!(answer.body["role"], "admin");
}
