//! Ed25519 keys: private ones to sign with, public ones (JWKs) to verify with.

use std::collections::HashMap;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ed25519_dalek::pkcs8::DecodePrivateKey as _;
use jsonwebtoken::jwk::{
    AlgorithmParameters, CommonParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm,
    OctetKeyPairParameters, OctetKeyPairType, PublicKeyUse,
};
use jsonwebtoken::{DecodingKey, EncodingKey};
use secrecy::SecretString;

use crate::KeyError;

/// An Ed25519 private key with its `kid`. Its `Debug` output shows only the `kid`.
#[derive(Clone)]
pub struct SigningKey {
    kid: String,
    key: ed25519_dalek::SigningKey,
    encoding: EncodingKey,
}

impl SigningKey {
    /// Reads a PKCS#8 PEM private key (`-----BEGIN PRIVATE KEY-----`), e.g. from
    /// `openssl genpkey -algorithm ed25519`.
    pub fn from_pem(kid: impl Into<String>, pkcs8_pem: &str) -> Result<Self, KeyError> {
        let key = ed25519_dalek::SigningKey::from_pkcs8_pem(pkcs8_pem).map_err(KeyError::Pem)?;
        Ok(Self::new(kid.into(), key))
    }

    /// A fresh random key, for development and tests.
    pub fn generate(kid: impl Into<String>) -> Self {
        // ThreadRng is a CSPRNG seeded from the operating system.
        let seed: [u8; 32] = rand::random();
        Self::new(kid.into(), ed25519_dalek::SigningKey::from_bytes(&seed))
    }

    fn new(kid: String, key: ed25519_dalek::SigningKey) -> Self {
        crate::crypto::install();
        let encoding = EncodingKey::from_ed_der(&pkcs8_der(&key));
        Self { kid, key, encoding }
    }

    /// The key as PKCS#8 PEM, e.g. for tests that write key files.
    pub fn to_pem(&self) -> SecretString {
        let body = STANDARD.encode(pkcs8_der(&self.key));
        format!("-----BEGIN PRIVATE KEY-----\n{body}\n-----END PRIVATE KEY-----\n").into()
    }

    /// Writes the key to `<dir>/<kid>.pem`, readable by its owner only (auth refuses a key
    /// file others can read); returns the path.
    pub fn write_pem(&self, dir: &std::path::Path) -> std::io::Result<std::path::PathBuf> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let path = dir.join(format!("{}.pem", self.kid));
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)?
            .write_all(secrecy::ExposeSecret::expose_secret(&self.to_pem()).as_bytes())?;
        Ok(path)
    }

    /// The key's id, carried in the header of every token it signs.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public half as a JWK: `kty: OKP`, `crv: Ed25519`, `alg: EdDSA`, `use: sig`, `kid`.
    pub fn public_jwk(&self) -> Jwk {
        Jwk {
            common: CommonParameters {
                public_key_use: Some(PublicKeyUse::Signature),
                key_algorithm: Some(KeyAlgorithm::EdDSA),
                key_id: Some(self.kid.clone()),
                ..CommonParameters::default()
            },
            algorithm: AlgorithmParameters::OctetKeyPair(OctetKeyPairParameters {
                key_type: OctetKeyPairType::OctetKeyPair,
                curve: EllipticCurve::Ed25519,
                x: URL_SAFE_NO_PAD.encode(self.key.verifying_key().as_bytes()),
            }),
        }
    }

    pub(crate) fn encoding_key(&self) -> &EncodingKey {
        &self.encoding
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// The PKCS#8 v1 encoding of an Ed25519 private key (RFC 8410 §7): a fixed 16-byte prefix
/// and the 32-byte seed. Built by hand because it cannot fail, unlike the generic encoder.
fn pkcs8_der(key: &ed25519_dalek::SigningKey) -> Vec<u8> {
    const PREFIX: [u8; 16] = [
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    [PREFIX.as_slice(), key.as_bytes()].concat()
}

/// Public keys by `kid`, the ones a verifier accepts.
#[derive(Clone, Default)]
pub(crate) struct KeySet(HashMap<String, DecodingKey>);

impl KeySet {
    /// The usable keys of `jwks`; the others are skipped with a warning.
    pub(crate) fn from_jwks(jwks: &JwkSet) -> Self {
        let mut keys = HashMap::new();
        for jwk in &jwks.keys {
            let kid = jwk.common.key_id.as_deref().unwrap_or("");
            match verification_key(jwk) {
                Ok(_) if keys.contains_key(kid) => {
                    tracing::warn!(kid, "JWKS key skipped: its kid is already taken");
                }
                Ok(key) => {
                    keys.insert(kid.to_owned(), key);
                }
                Err(reason) => tracing::warn!(kid, reason, "JWKS key skipped"),
            }
        }
        Self(keys)
    }

    pub(crate) fn get(&self, kid: &str) -> Option<&DecodingKey> {
        self.0.get(kid)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The verification key of a JWK, if it is an Ed25519 signing key with a `kid`.
fn verification_key(jwk: &Jwk) -> Result<DecodingKey, &'static str> {
    if jwk.common.key_id.as_deref().is_none_or(str::is_empty) {
        return Err("no kid");
    }
    if jwk
        .common
        .key_algorithm
        .is_some_and(|alg| alg != KeyAlgorithm::EdDSA)
    {
        return Err("alg is not EdDSA");
    }
    if jwk
        .common
        .public_key_use
        .as_ref()
        .is_some_and(|usage| *usage != PublicKeyUse::Signature)
    {
        return Err("use is not sig");
    }
    let AlgorithmParameters::OctetKeyPair(okp) = &jwk.algorithm else {
        return Err("kty is not OKP");
    };
    if okp.curve != EllipticCurve::Ed25519 {
        return Err("crv is not Ed25519");
    }
    // Checked here because the verifier would panic on a key shorter than 32 bytes.
    let bytes = URL_SAFE_NO_PAD
        .decode(&okp.x)
        .map_err(|_| "x is not base64url")?;
    let bytes: [u8; 32] = bytes.try_into().map_err(|_| "x is not 32 bytes")?;
    let public = ed25519_dalek::VerifyingKey::from_bytes(&bytes).map_err(|_| "x is not a point")?;
    if public.is_weak() {
        return Err("x is a weak key");
    }
    Ok(DecodingKey::from_ed_der(public.as_bytes()))
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret as _;

    use super::*;

    #[test]
    fn a_key_written_as_pem_reads_back_as_the_same_key() {
        let key = SigningKey::generate("k1");
        let pem = key.to_pem();
        assert!(
            pem.expose_secret()
                .starts_with("-----BEGIN PRIVATE KEY-----\n")
        );
        let read = SigningKey::from_pem("k1", pem.expose_secret()).unwrap();
        assert_eq!(read.public_jwk(), key.public_jwk());
    }

    #[test]
    fn a_pem_that_is_not_an_ed25519_key_is_refused() {
        let error = SigningKey::from_pem(
            "k1",
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        );
        assert!(matches!(error, Err(KeyError::Pem(_))));
        assert!(SigningKey::from_pem("k1", "not a key").is_err());
    }

    #[test]
    fn debug_output_shows_the_kid_but_not_the_key() {
        let key = SigningKey::generate("k1");
        let debug = format!("{key:?}");
        assert!(debug.contains("k1"));
        let pem = key.to_pem();
        let body = pem.expose_secret().lines().nth(1).unwrap();
        assert!(!debug.contains(body));
    }

    #[test]
    fn the_public_jwk_is_an_ed25519_signing_key() {
        let jwk = serde_json::to_value(SigningKey::generate("k1").public_jwk()).unwrap();
        assert_eq!(jwk["kty"], "OKP");
        assert_eq!(jwk["crv"], "Ed25519");
        assert_eq!(jwk["alg"], "EdDSA");
        assert_eq!(jwk["use"], "sig");
        assert_eq!(jwk["kid"], "k1");
        assert_eq!(jwk["x"].as_str().unwrap().len(), 43);
    }

    #[test]
    fn key_sets_keep_only_usable_ed25519_keys() {
        let good = SigningKey::generate("good").public_jwk();
        let mut short = SigningKey::generate("short").public_jwk();
        if let AlgorithmParameters::OctetKeyPair(okp) = &mut short.algorithm {
            okp.x = URL_SAFE_NO_PAD.encode([7u8; 16]);
        }
        let mut no_kid = SigningKey::generate("x").public_jwk();
        no_kid.common.key_id = None;
        let mut wrong_alg = SigningKey::generate("rs").public_jwk();
        wrong_alg.common.key_algorithm = Some(KeyAlgorithm::RS256);
        let hmac: Jwk = serde_json::from_value(serde_json::json!({
            "kty": "oct", "kid": "hmac", "k": "c2VjcmV0"
        }))
        .unwrap();
        let mut duplicate = SigningKey::generate("good").public_jwk();
        duplicate.common.key_id = Some("good".to_owned());

        let keys = KeySet::from_jwks(&JwkSet {
            keys: vec![good, short, no_kid, wrong_alg, hmac, duplicate],
        });
        assert!(keys.get("good").is_some());
        for skipped in ["short", "x", "", "rs", "hmac"] {
            assert!(keys.get(skipped).is_none(), "{skipped}");
        }
        assert_eq!(keys.0.len(), 1);
    }
}
