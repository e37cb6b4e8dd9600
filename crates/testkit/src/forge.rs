//! Access tokens every verifier must refuse, each a genuine one changed the way an attacker
//! would change it: a tampered claim or signature, a stale or misdirected token, an algorithm
//! the verifier must never accept, a key it does not know.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::Utc;
use hmac::Mac as _;
use serde_json::{Value, json};
use tessera_jwt::{Claims, Role, Signer, SigningKey};

/// A token that must be refused, and what is wrong with it (for assertion messages).
#[derive(Debug, Clone)]
pub struct Forgery {
    /// What was changed, e.g. `"alg none"`.
    pub what: &'static str,
    /// The compact JWT.
    pub token: String,
}

/// Forgeries of a token `signer` (the issuer's real key) would issue with `claims` (valid ones
/// for a live user, which as they are must verify).
pub fn forgeries(signer: &Signer, claims: &Claims) -> Vec<Forgery> {
    let genuine = signer.sign(claims).unwrap();
    let [header, payload, signature] = parts(&genuine);
    let kid = signer.active_kid().to_owned();
    let mut forged = Vec::new();
    let mut add = |what, token| forged.push(Forgery { what, token });

    let mut escalated: Value = decode(payload);
    escalated["role"] = json!(match claims.role {
        Role::User => "admin",
        Role::Admin => "user",
    });
    add(
        "tampered payload",
        format!("{header}.{}.{signature}", encode(&escalated)),
    );
    let flipped = if signature.starts_with('A') { "B" } else { "A" };
    add(
        "tampered signature",
        format!("{header}.{payload}.{flipped}{}", &signature[1..]),
    );
    add("signature stripped", format!("{header}.{payload}."));

    let now = Utc::now().timestamp();
    let changed = |change: &dyn Fn(&mut Claims)| {
        let mut claims = claims.clone();
        change(&mut claims);
        signer.sign(&claims).unwrap()
    };
    // An hour: far beyond any verifier's leeway for clock skew.
    add(
        "expired",
        changed(&|c| {
            c.iat = now - 7_200;
            c.exp = now - 3_600;
        }),
    );
    add(
        "wrong issuer",
        changed(&|c| c.iss = "someone-else".to_owned()),
    );
    add(
        "wrong audience",
        changed(&|c| c.aud = "another-system".to_owned()),
    );

    let none = encode(&json!({ "alg": "none", "typ": "JWT", "kid": kid }));
    add("alg none", format!("{none}.{payload}."));
    add(
        "alg none with the genuine signature",
        format!("{none}.{payload}.{signature}"),
    );

    // The classic confusion: an HMAC keyed with the published public key, raw or as served.
    let public_x = public_x(signer, &kid);
    for (what, secret) in [
        (
            "HS256 keyed with the public key",
            URL_SAFE_NO_PAD.decode(&public_x).unwrap(),
        ),
        (
            "HS256 keyed with the public key as published",
            public_x.into_bytes(),
        ),
    ] {
        add(what, hs256(&kid, claims, &secret));
    }

    for (what, kid) in [
        (
            "unknown kid",
            format!("unknown-{}", uuid::Uuid::new_v4().simple()),
        ),
        ("known kid, another key", kid),
    ] {
        let stranger = Signer::new(
            vec![SigningKey::generate(kid)],
            &claims.iss,
            &claims.aud,
            Duration::from_secs(900),
        )
        .unwrap();
        add(what, stranger.sign(claims).unwrap());
    }
    forged
}

/// A token signed with HMAC-SHA256 under `secret`, header `{"alg":"HS256","typ":"JWT","kid":kid}`:
/// what an attacker makes who hopes a verifier will take a public key as an HMAC secret.
/// Made by hand, as the token library here signs EdDSA alone.
pub fn hs256(kid: &str, claims: &impl serde::Serialize, secret: &[u8]) -> String {
    let header = encode(&json!({ "alg": "HS256", "typ": "JWT", "kid": kid }));
    let payload = encode(&serde_json::to_value(claims).unwrap());
    let signing_input = format!("{header}.{payload}");
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).unwrap();
    mac.update(signing_input.as_bytes());
    let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{signing_input}.{signature}")
}

fn parts(token: &str) -> [&str; 3] {
    let parts: Vec<&str> = token.split('.').collect();
    parts.try_into().expect("a compact JWT has three parts")
}

fn decode(part: &str) -> Value {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

fn encode(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}

/// The `x` (base64url public key) of `kid` in the signer's JWKS.
fn public_x(signer: &Signer, kid: &str) -> String {
    let jwks = serde_json::to_value(signer.jwks()).unwrap();
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|key| key["kid"] == kid)
        .and_then(|key| key["x"].as_str())
        .expect("the active key is published")
        .to_owned()
}
