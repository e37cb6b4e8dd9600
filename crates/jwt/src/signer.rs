//! Issuing access tokens and publishing the keys that verify them.

use std::collections::HashSet;
use std::fmt;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, Header};
use uuid::Uuid;

use crate::{Claims, KeyError, Role, SigningKey, TokenError};

/// Issues access tokens with the first ("active") key and publishes all keys' public halves.
///
/// Rotation: put the new key first and keep the old one after it (or only its public half,
/// through [`Signer::with_published`]) until the old key's last tokens have expired.
pub struct Signer {
    keys: Vec<SigningKey>,
    jwks: JwkSet,
    issuer: String,
    audience: String,
    ttl: TimeDelta,
}

/// A freshly signed access token.
#[derive(Clone)]
pub struct IssuedToken {
    /// The compact JWT, for the `Authorization: Bearer` header.
    pub token: String,
    /// The token's id (`jti`), to revoke it.
    pub jti: Uuid,
    /// When it expires (`exp`).
    pub expires_at: DateTime<Utc>,
}

impl fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedToken")
            .field("jti", &self.jti)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// A signer whose tokens name `issuer` and `audience` and live for `ttl`. `keys` must not
    /// be empty and their kids must be distinct; the first key signs.
    pub fn new(
        keys: Vec<SigningKey>,
        issuer: impl Into<String>,
        audience: impl Into<String>,
        ttl: Duration,
    ) -> Result<Self, KeyError> {
        if keys.is_empty() {
            return Err(KeyError::NoSigningKey);
        }
        let mut kids = HashSet::new();
        if let Some(key) = keys.iter().find(|key| !kids.insert(key.kid())) {
            return Err(KeyError::DuplicateKid(key.kid().to_owned()));
        }
        let ttl = TimeDelta::from_std(ttl)
            .ok()
            .filter(|ttl| *ttl >= TimeDelta::seconds(1) && *ttl <= TimeDelta::days(365 * 100))
            .ok_or(KeyError::InvalidTtl)?;
        let jwks = JwkSet {
            keys: keys.iter().map(SigningKey::public_jwk).collect(),
        };
        Ok(Self {
            keys,
            jwks,
            issuer: issuer.into(),
            audience: audience.into(),
            ttl,
        })
    }

    /// Also publishes `extra` public keys, e.g. retired keys whose tokens are still live.
    /// A key whose kid is already published is skipped, so a kid names one key.
    pub fn with_published(mut self, extra: Vec<Jwk>) -> Self {
        for jwk in extra {
            let kid = jwk.common.key_id.as_deref();
            if kid.is_some_and(|kid| self.jwks.find(kid).is_some()) {
                tracing::warn!(kid, "extra JWK skipped: its kid is already published");
                continue;
            }
            self.jwks.keys.push(jwk);
        }
        self
    }

    /// A token for `subject` with `role`: a new `jti` (UUIDv7), issued now, expiring after the
    /// signer's lifetime.
    pub fn issue(&self, subject: Uuid, role: Role) -> Result<IssuedToken, TokenError> {
        let now = Utc::now();
        let expires_at = now + self.ttl;
        let claims = Claims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub: subject,
            role,
            iat: now.timestamp(),
            exp: expires_at.timestamp(),
            jti: Uuid::now_v7(),
        };
        Ok(IssuedToken {
            token: self.sign(&claims)?,
            jti: claims.jti,
            // The second the token says, not the instant computed above.
            expires_at: DateTime::from_timestamp(claims.exp, 0).unwrap_or(expires_at),
        })
    }

    /// Signs `claims` as they are with the active key (header `alg: EdDSA, typ: JWT, kid`).
    /// [`Signer::issue`] is the usual way; this is for tests and special tokens.
    pub fn sign(&self, claims: &Claims) -> Result<String, TokenError> {
        // `new` guarantees at least one key; an empty list would be a bug, not a panic here.
        let Some(active) = self.keys.first() else {
            return Err(TokenError::Signing(
                jsonwebtoken::errors::ErrorKind::InvalidEddsaKey.into(),
            ));
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(active.kid().to_owned());
        jsonwebtoken::encode(&header, claims, active.encoding_key()).map_err(TokenError::Signing)
    }

    /// The kid of the key that signs.
    pub fn active_kid(&self) -> &str {
        self.keys.first().map_or("", SigningKey::kid)
    }

    /// The public keys to serve at `/.well-known/jwks.json`: every signing key's, then the
    /// extra published ones.
    pub fn jwks(&self) -> JwkSet {
        self.jwks.clone()
    }
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("keys", &self.keys)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer(keys: Vec<SigningKey>) -> Result<Signer, KeyError> {
        Signer::new(keys, "iss", "aud", Duration::from_secs(900))
    }

    #[test]
    fn a_signer_needs_a_key() {
        assert!(matches!(signer(vec![]), Err(KeyError::NoSigningKey)));
    }

    #[test]
    fn a_signer_refuses_two_keys_with_one_kid() {
        let keys = vec![SigningKey::generate("a"), SigningKey::generate("a")];
        assert!(matches!(signer(keys), Err(KeyError::DuplicateKid(kid)) if kid == "a"));
    }

    #[test]
    fn a_signer_refuses_a_lifetime_under_a_second() {
        let keys = vec![SigningKey::generate("a")];
        let signer = Signer::new(keys, "iss", "aud", Duration::from_millis(999));
        assert!(matches!(signer, Err(KeyError::InvalidTtl)));
    }

    #[test]
    fn issued_tokens_carry_eddsa_jwt_and_the_active_kid_in_the_header() {
        let signer = signer(vec![
            SigningKey::generate("new"),
            SigningKey::generate("old"),
        ])
        .unwrap();
        let issued = signer.issue(Uuid::now_v7(), Role::User).unwrap();
        let header = jsonwebtoken::decode_header(&issued.token).unwrap();
        assert_eq!(header.alg, Algorithm::EdDSA);
        assert_eq!(header.typ.as_deref(), Some("JWT"));
        assert_eq!(header.kid.as_deref(), Some("new"));
        assert_eq!(signer.active_kid(), "new");
        assert!(!format!("{issued:?}").contains(&issued.token));
    }

    #[test]
    fn issued_tokens_expire_after_the_lifetime_with_a_fresh_v7_jti() {
        let signer = signer(vec![SigningKey::generate("a")]).unwrap();
        let before = Utc::now();
        let first = signer.issue(Uuid::now_v7(), Role::User).unwrap();
        let second = signer.issue(Uuid::now_v7(), Role::User).unwrap();
        assert_ne!(first.jti, second.jti);
        assert_eq!(first.jti.get_version_num(), 7);
        let lifetime = first.expires_at - before;
        assert!(lifetime > TimeDelta::seconds(898) && lifetime <= TimeDelta::seconds(900));
    }

    #[test]
    fn jwks_lists_every_signing_key_then_the_extra_ones_once() {
        let retired = SigningKey::generate("retired").public_jwk();
        let clash = SigningKey::generate("a").public_jwk();
        let signer = signer(vec![SigningKey::generate("a"), SigningKey::generate("b")])
            .unwrap()
            .with_published(vec![retired, clash]);
        let kids: Vec<_> = signer
            .jwks()
            .keys
            .iter()
            .map(|jwk| jwk.common.key_id.clone().unwrap())
            .collect();
        assert_eq!(kids, ["a", "b", "retired"]);
    }
}
