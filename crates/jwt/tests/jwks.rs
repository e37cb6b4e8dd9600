//! Keys from a remote JWKS: fetched lazily, cached, refetched on rotation, rate limited.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use tessera_jwt::{KeyError, Role, Signer, SigningKey, TokenError, Verifier, VerifierSettings};
use tessera_testkit::jwks::TestIssuer;
use tessera_testkit::proxy::TcpProxy;
use uuid::Uuid;

/// A token from a key the issuer does not publish.
fn stranger_token() -> String {
    let keys = vec![SigningKey::generate("stranger")];
    let signer = Signer::new(
        keys,
        TestIssuer::ISSUER,
        TestIssuer::AUDIENCE,
        TestIssuer::TTL,
    );
    signer
        .unwrap()
        .issue(Uuid::now_v7(), Role::User)
        .unwrap()
        .token
}

#[tokio::test]
async fn keys_are_fetched_on_first_use_and_then_served_from_the_cache() {
    let issuer = TestIssuer::start().await;
    let verifier = Verifier::remote(issuer.verifier_settings()).unwrap();
    assert_eq!(issuer.fetches(), 0);

    for _ in 0..3 {
        let token = issuer.token(Uuid::now_v7(), Role::User);
        verifier.verify(&token).await.unwrap();
    }

    assert_eq!(issuer.fetches(), 1);
}

#[tokio::test]
async fn unknown_kid_is_rejected_after_one_refetch() {
    let issuer = TestIssuer::start().await;
    let settings = issuer.verifier_settings();
    let min_refetch = settings.jwks_min_refetch;
    let verifier = Verifier::remote(settings).unwrap();
    verifier
        .verify(&issuer.token(Uuid::now_v7(), Role::User))
        .await
        .unwrap();
    tokio::time::sleep(min_refetch * 2).await;

    let error = verifier.verify(&stranger_token()).await;

    assert!(
        matches!(&error, Err(TokenError::UnknownKey { kid }) if kid == "stranger"),
        "{error:?}"
    );
    assert_eq!(issuer.fetches(), 2);
}

#[tokio::test]
async fn a_rotated_in_key_verifies_after_a_refetch_and_the_old_key_still_does() {
    let issuer = TestIssuer::start().await;
    let settings = issuer.verifier_settings();
    let min_refetch = settings.jwks_min_refetch;
    let verifier = Verifier::remote(settings).unwrap();
    let old_token = issuer.token(Uuid::now_v7(), Role::User);
    verifier.verify(&old_token).await.unwrap();
    tokio::time::sleep(min_refetch * 2).await;

    let new_kid = issuer.rotate();
    let user = Uuid::now_v7();
    let new_token = issuer.token(user, Role::User);

    let header = jsonwebtoken::decode_header(&new_token).unwrap();
    assert_eq!(header.kid.as_deref(), Some(new_kid.as_str()));
    assert_eq!(verifier.verify(&new_token).await.unwrap().user_id, user);
    assert!(verifier.verify(&old_token).await.is_ok());
    assert_eq!(issuer.fetches(), 2);
}

#[tokio::test]
async fn unknown_kid_floods_refetch_at_most_once_per_interval() {
    let issuer = TestIssuer::start().await;
    let settings = VerifierSettings {
        jwks_min_refetch: Duration::from_secs(1),
        ..issuer.verifier_settings()
    };
    let verifier = Verifier::remote(settings).unwrap();
    let flood = || {
        let token = stranger_token();
        let verifier = verifier.clone();
        futures::future::join_all((0..50).map(move |_| {
            let (verifier, token) = (verifier.clone(), token.clone());
            async move { verifier.verify(&token).await }
        }))
    };

    // The first flood arrives before any keys: one fetch for all of it.
    let first = flood().await;
    assert_eq!(issuer.fetches(), 1);
    // Within the interval: no fetch at all.
    let second = flood().await;
    assert_eq!(issuer.fetches(), 1);
    // After it: one more.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let third = flood().await;
    assert_eq!(issuer.fetches(), 2);

    for result in first.into_iter().chain(second).chain(third) {
        assert!(
            matches!(result, Err(TokenError::UnknownKey { .. })),
            "{result:?}"
        );
    }
}

#[tokio::test]
async fn unreachable_jwks_at_first_use_means_keys_unavailable_and_503() {
    let port = tessera_testkit::free_port();
    let settings = VerifierSettings {
        jwks_url: Some(format!("http://127.0.0.1:{port}/.well-known/jwks.json")),
        ..VerifierSettings::new(TestIssuer::ISSUER, TestIssuer::AUDIENCE)
    };
    let verifier = Verifier::remote(settings).unwrap();

    let error = verifier.verify(&stranger_token()).await.unwrap_err();

    assert!(matches!(error, TokenError::KeysUnavailable(_)), "{error:?}");
    assert_eq!(tessera_errors::Error::from(error).http_status(), 503);
}

#[tokio::test]
async fn stale_keys_are_refetched_on_next_use() {
    let issuer = TestIssuer::start().await;
    let settings = VerifierSettings {
        jwks_refresh_interval: Duration::from_millis(100),
        ..issuer.verifier_settings()
    };
    let verifier = Verifier::remote(settings).unwrap();
    let token = issuer.token(Uuid::now_v7(), Role::User);
    verifier.verify(&token).await.unwrap();

    tokio::time::sleep(Duration::from_millis(200)).await;
    verifier.verify(&token).await.unwrap();

    assert_eq!(issuer.fetches(), 2);
}

#[tokio::test]
async fn a_failed_refresh_keeps_the_cached_keys() {
    let issuer = TestIssuer::start().await;
    let proxy = TcpProxy::start(issuer.addr()).await;
    let settings = VerifierSettings {
        jwks_url: Some(format!("http://{}/.well-known/jwks.json", proxy.addr())),
        jwks_refresh_interval: Duration::from_millis(100),
        ..issuer.verifier_settings()
    };
    let verifier = Verifier::remote(settings).unwrap();
    let token = issuer.token(Uuid::now_v7(), Role::User);
    verifier.verify(&token).await.unwrap();

    proxy.cut();
    tokio::time::sleep(Duration::from_millis(200)).await;

    assert!(verifier.verify(&token).await.is_ok());
    assert_eq!(issuer.fetches(), 1);
}

#[tokio::test]
async fn a_remote_verifier_needs_a_jwks_url() {
    let settings = VerifierSettings::new(TestIssuer::ISSUER, TestIssuer::AUDIENCE);

    assert!(matches!(
        Verifier::remote(settings),
        Err(KeyError::NoJwksUrl)
    ));
}
