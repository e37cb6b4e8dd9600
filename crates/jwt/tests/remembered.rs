//! A verifier remembers the tokens it verified, to skip their signature check next time;
//! what can change about a token since is still checked every time.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use chrono::Utc;
use tessera_jwt::{Role, TokenError, Verifier, VerifierSettings};
use tessera_testkit::jwks::TestIssuer;
use uuid::Uuid;

#[tokio::test]
async fn a_remembered_token_still_expires() {
    let issuer = TestIssuer::start().await;
    let verifier = Verifier::remote(VerifierSettings {
        leeway: Duration::ZERO,
        ..issuer.verifier_settings()
    })
    .unwrap();
    let mut claims = issuer.claims(Uuid::now_v7(), Role::User);
    claims.exp = Utc::now().timestamp() + 1;
    let token = issuer.token_with(&claims);
    verifier.verify(&token).await.unwrap();

    tokio::time::sleep(Duration::from_millis(2100)).await;

    let error = verifier.verify(&token).await;
    assert!(matches!(error, Err(TokenError::Expired)), "{error:?}");
}

#[tokio::test]
async fn a_remembered_token_is_refused_once_its_key_is_withdrawn() {
    let issuer = TestIssuer::start().await;
    let verifier = Verifier::remote(VerifierSettings {
        jwks_refresh_interval: Duration::from_millis(200),
        ..issuer.verifier_settings()
    })
    .unwrap();
    let token = issuer.token(Uuid::now_v7(), Role::User);
    let kid = issuer.active_kid();
    verifier.verify(&token).await.unwrap();
    verifier.verify(&token).await.unwrap();

    issuer.replace_keys();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let error = verifier.verify(&token).await;
    assert!(
        matches!(&error, Err(TokenError::UnknownKey { kid: refused }) if *refused == kid),
        "{error:?}"
    );
    // Tokens from the new key pass.
    let user = Uuid::now_v7();
    let fresh = issuer.token(user, Role::User);
    assert_eq!(verifier.verify(&fresh).await.unwrap().user_id, user);
}

#[tokio::test]
async fn a_token_that_differs_from_a_remembered_one_is_checked_in_full() {
    let issuer = TestIssuer::start().await;
    let verifier = Verifier::remote(issuer.verifier_settings()).unwrap();
    let token = issuer.token(Uuid::now_v7(), Role::User);
    verifier.verify(&token).await.unwrap();

    // The same header and claims with a character of the signature changed.
    let at = token.len() - 10;
    let swapped = if &token[at..=at] == "A" { "B" } else { "A" };
    let forged = format!("{}{swapped}{}", &token[..at], &token[at + 1..]);

    let error = verifier.verify(&forged).await;
    assert!(
        matches!(error, Err(TokenError::Invalid(_) | TokenError::Malformed)),
        "{error:?}"
    );
}
