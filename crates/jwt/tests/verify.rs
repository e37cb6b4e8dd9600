//! What a verifier accepts and refuses: signature, algorithm, header and claims.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::Utc;
use jsonwebtoken::jwk::AlgorithmParameters;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use secrecy::ExposeSecret as _;
use serde_json::json;
use tessera_jwt::{JwkSet, Principal, Role, Signer, SigningKey, TokenError, Verifier};
use tessera_testkit::jwks::TestIssuer;
use uuid::Uuid;

const ISSUER: &str = TestIssuer::ISSUER;
const AUDIENCE: &str = TestIssuer::AUDIENCE;

/// A key and a verifier that knows exactly that key.
fn fixed() -> (SigningKey, Verifier) {
    let key = SigningKey::generate("k1");
    let jwks = JwkSet {
        keys: vec![key.public_jwk()],
    };
    (key, Verifier::from_jwks(jwks, ISSUER, AUDIENCE))
}

fn valid_claims() -> serde_json::Value {
    let now = Utc::now().timestamp();
    json!({
        "iss": ISSUER, "aud": AUDIENCE, "sub": Uuid::now_v7(), "role": "user",
        "iat": now, "exp": now + 900, "jti": Uuid::now_v7(),
    })
}

/// Signs anything with `key` under any header: what an attacker holding the key could make.
fn sign(key: &SigningKey, header: &Header, claims: &serde_json::Value) -> String {
    let pem = key.to_pem();
    let encoding = EncodingKey::from_ed_pem(pem.expose_secret().as_bytes()).unwrap();
    jsonwebtoken::encode(header, claims, &encoding).unwrap()
}

fn eddsa_header(kid: Option<&str>) -> Header {
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = kid.map(str::to_owned);
    header
}

fn b64(json: &serde_json::Value) -> String {
    URL_SAFE_NO_PAD.encode(json.to_string())
}

#[tokio::test]
async fn valid_token_verifies_to_its_principal() {
    let issuer = TestIssuer::start().await;
    let verifier = Verifier::remote(issuer.verifier_settings()).unwrap();
    let user = Uuid::now_v7();
    let claims = issuer.claims(user, Role::Admin);

    let principal = verifier.verify(&issuer.token_with(&claims)).await.unwrap();

    assert_eq!(
        principal,
        Principal {
            user_id: user,
            role: Role::Admin,
            jti: claims.jti,
            expires_at: chrono::DateTime::from_timestamp(claims.exp, 0).unwrap(),
        }
    );
}

#[tokio::test]
async fn a_signer_s_own_key_set_verifies_its_tokens() {
    let keys = vec![SigningKey::generate("k1")];
    let signer = Signer::new(keys, ISSUER, AUDIENCE, TestIssuer::TTL).unwrap();
    let verifier = Verifier::from_jwks(signer.jwks(), ISSUER, AUDIENCE);
    let user = Uuid::now_v7();

    let issued = signer.issue(user, Role::User).unwrap();
    let principal = verifier.verify(&issued.token).await.unwrap();

    assert_eq!(principal.user_id, user);
    assert_eq!(principal.jti, issued.jti);
    assert_eq!(principal.expires_at, issued.expires_at);
}

#[tokio::test]
async fn tampered_payload_is_rejected() {
    let (key, verifier) = fixed();
    let token = sign(&key, &eddsa_header(Some("k1")), &valid_claims());
    let mut promoted = valid_claims();
    promoted["role"] = json!("admin");
    let parts: Vec<&str> = token.split('.').collect();
    let tampered = format!("{}.{}.{}", parts[0], b64(&promoted), parts[2]);

    let error = verifier.verify(&tampered).await.unwrap_err();

    assert!(
        matches!(&error, TokenError::Invalid(reason) if reason == "bad signature"),
        "{error:?}"
    );
}

#[tokio::test]
async fn expired_token_is_rejected() {
    let (key, verifier) = fixed();
    let mut claims = valid_claims();
    let now = Utc::now().timestamp();
    claims["iat"] = json!(now - 1000);
    claims["exp"] = json!(now - 31 - 5);

    let error = verifier
        .verify(&sign(&key, &eddsa_header(Some("k1")), &claims))
        .await;

    assert!(matches!(error, Err(TokenError::Expired)), "{error:?}");
}

#[tokio::test]
async fn token_expired_within_the_leeway_is_accepted() {
    let (key, verifier) = fixed();
    let mut claims = valid_claims();
    claims["exp"] = json!(Utc::now().timestamp() - 10);

    let verified = verifier
        .verify(&sign(&key, &eddsa_header(Some("k1")), &claims))
        .await;

    assert!(verified.is_ok(), "{verified:?}");
}

#[tokio::test]
async fn tokens_issued_or_valid_only_in_the_future_are_rejected() {
    let (key, verifier) = fixed();
    let now = Utc::now().timestamp();
    for (claim, value, reason) in [
        ("iat", now + 31 + 5, "issued in the future"),
        ("nbf", now + 31 + 5, "not yet valid"),
    ] {
        let mut claims = valid_claims();
        claims[claim] = json!(value);
        let error = verifier
            .verify(&sign(&key, &eddsa_header(Some("k1")), &claims))
            .await;
        assert!(
            matches!(&error, Err(TokenError::Invalid(r)) if r == reason),
            "{claim}: {error:?}"
        );
    }
    // Within the leeway, a clock a little ahead is forgiven.
    for claim in ["iat", "nbf"] {
        let mut claims = valid_claims();
        claims[claim] = json!(now + 10);
        let verified = verifier
            .verify(&sign(&key, &eddsa_header(Some("k1")), &claims))
            .await;
        assert!(verified.is_ok(), "{claim}: {verified:?}");
    }
}

#[tokio::test]
async fn wrong_issuer_is_rejected() {
    let (key, verifier) = fixed();
    let mut claims = valid_claims();
    claims["iss"] = json!("someone-else");

    let error = verifier
        .verify(&sign(&key, &eddsa_header(Some("k1")), &claims))
        .await;

    assert!(
        matches!(&error, Err(TokenError::Invalid(reason)) if reason == "wrong issuer"),
        "{error:?}"
    );
}

#[tokio::test]
async fn wrong_audience_is_rejected() {
    let (key, verifier) = fixed();
    let mut claims = valid_claims();
    claims["aud"] = json!("another-system");

    let error = verifier
        .verify(&sign(&key, &eddsa_header(Some("k1")), &claims))
        .await;

    assert!(
        matches!(&error, Err(TokenError::Invalid(reason)) if reason == "wrong audience"),
        "{error:?}"
    );
}

#[tokio::test]
async fn token_missing_a_required_claim_is_rejected() {
    let (key, verifier) = fixed();
    for claim in ["iss", "aud", "sub", "role", "iat", "exp", "jti"] {
        let mut claims = valid_claims();
        claims.as_object_mut().unwrap().remove(claim);

        let error = verifier
            .verify(&sign(&key, &eddsa_header(Some("k1")), &claims))
            .await;

        assert!(
            matches!(error, Err(TokenError::Invalid(_))),
            "{claim}: {error:?}"
        );
    }
}

#[tokio::test]
async fn alg_none_token_is_rejected() {
    let (_, verifier) = fixed();
    let header = json!({"alg": "none", "typ": "JWT", "kid": "k1"});
    let token = format!("{}.{}.", b64(&header), b64(&valid_claims()));

    let error = verifier.verify(&token).await;

    // jsonwebtoken has no "none" algorithm: the header does not even parse.
    assert!(matches!(error, Err(TokenError::Malformed)), "{error:?}");
}

#[tokio::test]
async fn hs256_token_keyed_with_the_public_key_is_rejected() {
    let (key, verifier) = fixed();
    let jwk = key.public_jwk();
    let AlgorithmParameters::OctetKeyPair(okp) = &jwk.algorithm else {
        panic!("not an OKP key: {jwk:?}");
    };
    let raw = URL_SAFE_NO_PAD.decode(&okp.x).unwrap();

    // Both the raw public key and its base64url text, the two ways a confused verifier
    // might use a public key as an HMAC secret.
    for secret in [raw.as_slice(), okp.x.as_bytes()] {
        let token = tessera_testkit::forge::hs256("k1", &valid_claims(), secret);

        let error = verifier.verify(&token).await;

        assert!(
            matches!(&error, Err(TokenError::Invalid(reason)) if reason == "algorithm not allowed"),
            "{error:?}"
        );
    }
}

#[tokio::test]
async fn token_without_kid_is_rejected() {
    let (key, verifier) = fixed();

    let error = verifier
        .verify(&sign(&key, &eddsa_header(None), &valid_claims()))
        .await;

    assert!(matches!(error, Err(TokenError::Invalid(_))), "{error:?}");
}

#[tokio::test]
async fn token_naming_an_absent_kid_is_rejected_even_if_a_known_key_verifies_it() {
    let (key, verifier) = fixed();

    let error = verifier
        .verify(&sign(&key, &eddsa_header(Some("k2")), &valid_claims()))
        .await;

    assert!(
        matches!(&error, Err(TokenError::UnknownKey { kid }) if kid == "k2"),
        "{error:?}"
    );
}

#[tokio::test]
async fn token_signed_by_another_key_under_a_known_kid_is_rejected() {
    let (_, verifier) = fixed();
    let impostor = SigningKey::generate("k1");

    let error = verifier
        .verify(&sign(&impostor, &eddsa_header(Some("k1")), &valid_claims()))
        .await;

    assert!(
        matches!(&error, Err(TokenError::Invalid(reason)) if reason == "bad signature"),
        "{error:?}"
    );
}

#[tokio::test]
async fn text_that_is_not_a_jwt_is_malformed() {
    let (_, verifier) = fixed();
    for garbage in ["", "abc", "a.b", "a.b.c", "..", "ey.ey.ey"] {
        let error = verifier.verify(garbage).await;

        assert!(
            matches!(error, Err(TokenError::Malformed)),
            "{garbage:?}: {error:?}"
        );
    }
}
