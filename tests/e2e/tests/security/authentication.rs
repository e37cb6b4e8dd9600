//! Every secured route of every service, as its OpenAPI document declares them, refuses a
//! request that does not carry a live access token auth issued: none at all, garbage, and
//! each forgery of `tessera_testkit::forge` (which auth's `ValidateToken` and users' `/me`
//! are checked against in `auth/tokens.rs`; here every route of all three services is).

use chrono::Utc;
use reqwest::StatusCode;
use tessera_e2e::stack::{AUDIENCE, ISSUER, Service, Stack};
use tessera_jwt::{Claims, Role};
use tessera_testkit::forge::forgeries;
use tessera_testkit::openapi::Operation;
use uuid::Uuid;

use crate::helpers::{Answer, Failures, prepare, secured_operations};

/// Routes that must be among the secured ones, whatever else is.
const KNOWN: &[&str] = &[
    "POST /api/v1/auth/logout",
    "GET /api/v1/users/me",
    "DELETE /api/v1/users/{id}",
    "POST /api/v1/orders",
    "POST /api/v1/orders/{id}/confirm",
];

/// Sends `operation` with `authorization` (none when `None`) and checks it is refused with a
/// 401 problem that asks for a bearer token.
async fn refused(
    stack: &Stack,
    service: Service,
    operation: &Operation,
    authorization: Option<&str>,
    what: &str,
) -> Result<(), String> {
    // Any id: the token is checked before anything else is looked at.
    let mut request = prepare(stack, service, operation, |_| Uuid::now_v7().to_string());
    if let Some(authorization) = authorization {
        request = request.header("authorization", authorization);
    }
    let answer = Answer::of(request.send().await.unwrap()).await;
    let what = format!("{} at {}: {what}", operation.name(), service.name());
    answer.problem(401, &what)?;
    match answer.www_authenticate.as_deref() {
        Some(challenge) if challenge.starts_with("Bearer") => Ok(()),
        other => Err(format!("{what}: WWW-Authenticate is {other:?}")),
    }
}

#[tokio::test]
async fn every_secured_route_refuses_requests_without_a_usable_token() {
    let stack = Stack::builder().start().await;
    let long = format!("Bearer {}", "a".repeat(8_000));
    let credentials: [(Option<&str>, &str); 7] = [
        (None, "no Authorization header"),
        (Some("Bearer garbage"), "a garbage bearer token"),
        (Some("Bearer a.b.c"), "three garbage parts"),
        (Some("Bearer "), "an empty bearer token"),
        (Some("Basic dXNlcjpwYXNz"), "basic credentials"),
        (Some("Token a.b.c"), "another scheme"),
        (Some(&long), "an 8 KB bearer token"),
    ];
    let mut failures = Failures::default();

    for (service, operation) in secured_operations(&stack, KNOWN).await {
        for (authorization, what) in credentials {
            failures.record(refused(&stack, service, &operation, authorization, what).await);
        }
    }

    failures.assert_none("requests without a usable token");
}

#[tokio::test]
async fn every_secured_route_refuses_forged_stale_and_revoked_tokens() {
    let stack = Stack::builder().start().await;
    let account = stack.register().await;
    let now = Utc::now().timestamp();
    let claims = Claims {
        iss: ISSUER.to_owned(),
        aud: AUDIENCE.to_owned(),
        sub: account.id,
        role: Role::User,
        iat: now,
        exp: now + 900,
        jti: Uuid::now_v7(),
    };
    let signer = stack.signer();
    // The controls: tokens from auth's key verify at users and orders, so every refusal
    // below is the verifier's doing, not a misconfigured stack's.
    let genuine = signer.sign(&claims).unwrap();
    for (service, path) in [
        (Service::Users, "/api/v1/users/me"),
        (Service::Orders, "/api/v1/orders"),
    ] {
        let response = stack.get(service, path, &genuine).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
    }
    let logged_out = stack.login(&account).await;
    assert_eq!(
        stack.logout(&logged_out).await.status(),
        StatusCode::NO_CONTENT
    );
    let mut tokens: Vec<(&str, String)> = forgeries(&signer, &claims)
        .into_iter()
        .map(|forgery| (forgery.what, forgery.token))
        .collect();
    tokens.push(("revoked by logout", logged_out.access));
    let mut failures = Failures::default();

    for (service, operation) in secured_operations(&stack, KNOWN).await {
        for (what, token) in &tokens {
            let bearer = format!("Bearer {token}");
            failures.record(refused(&stack, service, &operation, Some(&bearer), what).await);
        }
    }

    failures.assert_none("forged, stale and revoked tokens");
}
