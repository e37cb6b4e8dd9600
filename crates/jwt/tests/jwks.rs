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

/// Serves `target` (plain HTTP) over TLS, with a certificate for 127.0.0.1 and localhost
/// from a CA of its own. Returns where it listens and the CA certificate (PEM).
async fn tls_in_front_of(target: std::net::SocketAddr) -> (std::net::SocketAddr, String) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    use tokio_rustls::rustls;

    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .unwrap()
        .signed_by(&server_key, &ca)
        .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![server.der().clone()],
        rustls::pki_types::PrivateKeyDer::Pkcs8(server_key.serialize_der().into()),
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(client).await else {
                    return;
                };
                let mut upstream = tokio::net::TcpStream::connect(target).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut upstream).await;
            });
        }
    });
    (addr, ca.pem())
}

#[tokio::test]
async fn keys_come_over_https_from_a_server_the_configured_ca_vouches_for() {
    let issuer = TestIssuer::start().await;
    let (tls_addr, ca_pem) = tls_in_front_of(issuer.addr()).await;
    let https_url = issuer.jwks_url().replace(
        &format!("http://{}", issuer.addr()),
        &format!("https://{tls_addr}"),
    );
    let token = issuer.token(Uuid::now_v7(), Role::User);

    let trusting = Verifier::remote(VerifierSettings {
        jwks_url: Some(https_url.clone()),
        jwks_ca_pem: Some(ca_pem),
        ..issuer.verifier_settings()
    })
    .unwrap();
    trusting.verify(&token).await.unwrap();

    // The public roots alone do not vouch for that server: no keys, no token.
    let distrusting = Verifier::remote(VerifierSettings {
        jwks_url: Some(https_url),
        ..issuer.verifier_settings()
    })
    .unwrap();
    let refused = distrusting.verify(&token).await;
    assert!(
        matches!(refused, Err(TokenError::KeysUnavailable(_))),
        "{refused:?}"
    );
}

#[test]
fn a_ca_file_without_a_certificate_is_refused() {
    let settings = VerifierSettings {
        jwks_url: Some("https://auth.example.com/jwks".to_owned()),
        jwks_ca_pem: Some("not a certificate".to_owned()),
        ..VerifierSettings::new("i", "a")
    };
    assert!(matches!(Verifier::remote(settings), Err(KeyError::Tls(_))));
}
