//! Verifying access tokens against fixed keys or a remote JWKS.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, Validation};
use tokio::sync::{Mutex, MutexGuard};
use tokio::time::Instant;

use crate::keys::KeySet;
use crate::{Claims, Denylist, KeyError, Principal, TokenError};

/// How many verified tokens a verifier remembers (about half a kilobyte each).
const VERIFIED_CAPACITY: usize = 1024;

/// How a [`Verifier`] checks tokens and where it gets its keys.
#[derive(Debug, Clone)]
pub struct VerifierSettings {
    /// The only accepted `iss`.
    pub issuer: String,
    /// The only accepted `aud`.
    pub audience: String,
    /// Clock skew allowed on `exp`. Default 30 s.
    pub leeway: Duration,
    /// Where the JWKS is served, e.g. `http://auth:8081/.well-known/jwks.json`.
    pub jwks_url: Option<String>,
    /// Keys older than this are refetched on next use. Default 5 min.
    pub jwks_refresh_interval: Duration,
    /// At most one fetch per this interval, however many unknown kids arrive; also spaces out
    /// retries after a failed fetch. Default 10 s.
    pub jwks_min_refetch: Duration,
    /// Time limit of one JWKS fetch. Default 2 s.
    pub http_timeout: Duration,
    /// CA certificates (PEM) to trust for an https JWKS besides the public roots.
    pub jwks_ca_pem: Option<String>,
}

impl VerifierSettings {
    /// Settings for `issuer` and `audience` with the defaults and no JWKS URL.
    pub fn new(issuer: impl Into<String>, audience: impl Into<String>) -> Self {
        Self {
            issuer: issuer.into(),
            audience: audience.into(),
            leeway: Duration::from_secs(30),
            jwks_url: None,
            jwks_refresh_interval: Duration::from_secs(5 * 60),
            jwks_min_refetch: Duration::from_secs(10),
            http_timeout: Duration::from_secs(2),
            jwks_ca_pem: None,
        }
    }
}

/// Verifies access tokens. Clone-cheap (Arc inside).
///
/// A token passes if its header says `alg: EdDSA` and names a known `kid`, its signature
/// verifies with that key, its `iss` and `aud` are the expected ones, it has not expired
/// (give or take the leeway), it carries every [`Claims`] field, and its `jti` is not on the
/// denylist (when one is set).
///
/// Tokens that passed are remembered (see [`Verified`]), so the same token on a client's next
/// request skips the signature check; expiry, the key and the denylist are still checked.
///
/// A clone shares everything, through one reference count: handlers may clone it per request.
#[derive(Clone)]
pub struct Verifier(Arc<Checks>);

/// What a [`Verifier`] checks against.
#[derive(Clone)]
struct Checks {
    keys: Arc<KeySource>,
    validation: Arc<Validation>,
    denylist: Option<Denylist>,
    verified: Arc<Verified>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys = match &*self.0.keys {
            KeySource::Fixed(_) => "fixed",
            KeySource::Remote(remote) => &remote.url,
        };
        f.debug_struct("Verifier")
            .field("keys", &keys)
            .field("denylist", &self.0.denylist.is_some())
            .finish_non_exhaustive()
    }
}

enum KeySource {
    Fixed(Arc<KeySet>),
    Remote(RemoteKeys),
}

impl KeySource {
    /// The key set in use now, if it has `kid` (fetching a remote one as needed).
    async fn with_kid(&self, kid: &str) -> Result<Option<Arc<KeySet>>, TokenError> {
        match self {
            Self::Fixed(keys) => Ok(having(keys, kid)),
            Self::Remote(remote) => remote.with_kid(kid).await,
        }
    }
}

/// `keys`, if it has `kid`.
fn having(keys: &Arc<KeySet>, kid: &str) -> Option<Arc<KeySet>> {
    keys.get(kid).is_some().then(|| Arc::clone(keys))
}

/// Tokens that passed every check but the denylist, by their full text, with the key set
/// that verified them. An entry stands in for the signature check only while its token has
/// not expired and that same key set is still the one in use: a refetched JWKS (one that
/// dropped a leaked key, say) sends every token through the full check again.
#[derive(Default)]
struct Verified {
    entries: std::sync::Mutex<TokenMap>,
}

/// Entries by token, hashed by [`SignatureHash`].
type TokenMap = HashMap<Box<str>, Entry, SignatureHash>;

/// Hashes a token by its last bytes alone, with foldhash seeded per process: a token is a
/// few hundred bytes looked up on every request, and tokens differ in their signature, the
/// last segment. Lookups still compare whole tokens, and only verified tokens are inserted,
/// so no one can fill a bucket with tokens that end alike.
#[derive(Default)]
struct SignatureHash(foldhash::fast::RandomState);

/// How many of a token's last bytes are hashed: 24 bytes of an Ed25519 signature.
const HASHED_TAIL: usize = 32;

impl std::hash::BuildHasher for SignatureHash {
    type Hasher = TailHasher;

    fn build_hasher(&self) -> TailHasher {
        TailHasher(self.0.build_hasher())
    }
}

/// See [`SignatureHash`].
struct TailHasher(foldhash::fast::FoldHasher<'static>);

impl std::hash::Hasher for TailHasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0
            .write(&bytes[bytes.len().saturating_sub(HASHED_TAIL)..]);
    }

    fn finish(&self) -> u64 {
        self.0.finish()
    }
}

#[derive(Clone)]
struct Entry {
    kid: Arc<str>,
    keys: Arc<KeySet>,
    principal: Principal,
}

impl Verified {
    fn get(&self, token: &str) -> Option<Entry> {
        self.lock().get(token).cloned()
    }

    /// Remembers `token`. When full, expired entries go first; if every entry is live, the
    /// one closest to expiry makes room, so a flood of new tokens never sends every client's
    /// next request through the signature check at once.
    fn insert(&self, token: &str, entry: Entry) {
        let mut entries = self.lock();
        if entries.len() >= VERIFIED_CAPACITY && !entries.contains_key(token) {
            let now = Utc::now();
            entries.retain(|_, entry| entry.principal.expires_at > now);
            if entries.len() >= VERIFIED_CAPACITY
                && let Some(soonest) = entries
                    .iter()
                    .min_by_key(|(_, entry)| entry.principal.expires_at)
                    .map(|(token, _)| token.clone())
            {
                entries.remove(&soonest);
            }
        }
        entries.insert(token.into(), entry);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TokenMap> {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// TLS for the JWKS: the public roots (webpki-roots) and `extra_ca_pem`, on ring, whatever
/// crypto provider the process may have installed.
fn tls_config(extra_ca_pem: Option<&str>) -> Result<rustls::ClientConfig, KeyError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;

    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(pem) = extra_ca_pem {
        let mut added = 0;
        for certificate in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            let certificate =
                certificate.map_err(|error| KeyError::Tls(format!("CA file: {error}")))?;
            roots
                .add(certificate)
                .map_err(|error| KeyError::Tls(format!("CA file: {error}")))?;
            added += 1;
        }
        if added == 0 {
            return Err(KeyError::Tls("the CA file holds no certificate".to_owned()));
        }
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| KeyError::Tls(error.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

impl Verifier {
    /// A verifier whose keys come from `settings.jwks_url`, fetched on first use.
    pub fn remote(settings: VerifierSettings) -> Result<Self, KeyError> {
        let url = settings.jwks_url.clone().ok_or(KeyError::NoJwksUrl)?;
        let client = reqwest::Client::builder()
            .timeout(settings.http_timeout)
            .tls_backend_preconfigured(tls_config(settings.jwks_ca_pem.as_deref())?)
            .build()
            .map_err(KeyError::HttpClient)?;
        let remote = RemoteKeys {
            url,
            client,
            refresh_interval: settings.jwks_refresh_interval,
            min_refetch: settings.jwks_min_refetch,
            cached: RwLock::new(None),
            last_fetch: Mutex::new(None),
        };
        Ok(Self::with_keys(KeySource::Remote(remote), &settings))
    }

    /// A verifier with fixed keys, e.g. auth checking its own tokens against
    /// [`Signer::jwks`](crate::Signer::jwks). Default leeway.
    pub fn from_jwks(jwks: JwkSet, issuer: impl Into<String>, audience: impl Into<String>) -> Self {
        let settings = VerifierSettings::new(issuer, audience);
        Self::with_keys(
            KeySource::Fixed(Arc::new(KeySet::from_jwks(&jwks))),
            &settings,
        )
    }

    fn with_keys(keys: KeySource, settings: &VerifierSettings) -> Self {
        crate::crypto::install();
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.leeway = settings.leeway.as_secs();
        validation.set_issuer(&[&settings.issuer]);
        validation.set_audience(&[&settings.audience]);
        // jsonwebtoken checks presence only for these; `iat`, `jti` and `role` are required
        // by `Claims` itself, which has no optional field.
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        // A token not yet valid is refused like an expired one (`nbf`, when present).
        validation.validate_nbf = true;
        Self(Arc::new(Checks {
            keys: Arc::new(keys),
            validation: Arc::new(validation),
            denylist: None,
            verified: Arc::default(),
        }))
    }

    /// Also rejects tokens whose `jti` is on `denylist`.
    ///
    /// If Redis cannot answer, the token is accepted (fail open) and a warning logged: access
    /// tokens live minutes, and a Redis outage must not log every user out. What is lost
    /// meanwhile is only the early end of logged-out tokens.
    pub fn with_denylist(self, denylist: Denylist) -> Self {
        let mut checks = Arc::unwrap_or_clone(self.0);
        checks.denylist = Some(denylist);
        Self(Arc::new(checks))
    }

    /// Checks `token` and says who it speaks for.
    pub async fn verify(&self, token: &str) -> Result<Principal, TokenError> {
        let principal = match self.remembered(token).await? {
            Some(principal) => principal,
            None => self.check(token).await?,
        };
        self.check_denylist(principal.jti).await?;
        Ok(principal)
    }

    /// Who `token` speaks for, if it was verified before with the key set in use now and has
    /// not expired since.
    async fn remembered(&self, token: &str) -> Result<Option<Principal>, TokenError> {
        let Some(entry) = self.0.verified.get(token) else {
            return Ok(None);
        };
        let current = self.0.keys.with_kid(&entry.kid).await?;
        let same_keys = current.is_some_and(|keys| Arc::ptr_eq(&keys, &entry.keys));
        Ok((same_keys && entry.principal.expires_at > Utc::now()).then_some(entry.principal))
    }

    /// Every check but the denylist, in full; a token that passes is remembered.
    async fn check(&self, token: &str) -> Result<Principal, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        if header.alg != Algorithm::EdDSA {
            return Err(TokenError::Invalid("algorithm not allowed".to_owned()));
        }
        let kid = header
            .kid
            .ok_or_else(|| TokenError::Invalid("no kid in the header".to_owned()))?;
        let unknown = || TokenError::UnknownKey { kid: kid.clone() };
        let keys = self.0.keys.with_kid(&kid).await?.ok_or_else(unknown)?;
        let key = keys.get(&kid).ok_or_else(unknown)?;
        let claims = jsonwebtoken::decode::<Claims>(token, key, &self.0.validation)
            .map_err(rejection)?
            .claims;
        // Issued in the future beyond the leeway: a clock far off or a forged stamp, and a
        // stamp that would let the token outlive what its issuer meant.
        let leeway = i64::try_from(self.0.validation.leeway).unwrap_or(i64::MAX);
        if claims.iat > Utc::now().timestamp().saturating_add(leeway) {
            return Err(TokenError::Invalid("issued in the future".to_owned()));
        }
        let expires_at = DateTime::from_timestamp(claims.exp, 0)
            .ok_or_else(|| TokenError::Invalid("exp out of range".to_owned()))?;
        let principal = Principal {
            user_id: claims.sub,
            role: claims.role,
            jti: claims.jti,
            expires_at,
        };
        let entry = Entry {
            kid: kid.as_str().into(),
            keys: Arc::clone(&keys),
            principal,
        };
        self.0.verified.insert(token, entry);
        Ok(principal)
    }

    async fn check_denylist(&self, jti: uuid::Uuid) -> Result<(), TokenError> {
        let Some(denylist) = &self.0.denylist else {
            return Ok(());
        };
        match denylist.is_revoked(jti).await {
            Ok(false) => Ok(()),
            Ok(true) => Err(TokenError::Revoked),
            Err(error) => {
                tracing::warn!(
                    error = %tessera_errors::error_chain(&error),
                    %jti,
                    "token denylist unavailable; accepting the token (fail open)"
                );
                Ok(())
            }
        }
    }
}

/// The token error for a jsonwebtoken failure.
fn rejection(error: jsonwebtoken::errors::Error) -> TokenError {
    let reason = match error.kind() {
        ErrorKind::ExpiredSignature => return TokenError::Expired,
        ErrorKind::InvalidToken | ErrorKind::Base64(_) | ErrorKind::Utf8(_) => {
            return TokenError::Malformed;
        }
        ErrorKind::InvalidSignature => "bad signature",
        ErrorKind::InvalidAlgorithm => "algorithm not allowed",
        ErrorKind::InvalidIssuer => "wrong issuer",
        ErrorKind::InvalidAudience => "wrong audience",
        ErrorKind::ImmatureSignature => "not yet valid",
        ErrorKind::MissingRequiredClaim(_)
        | ErrorKind::InvalidClaimFormat(_)
        | ErrorKind::Json(_) => "claims missing or malformed",
        _ => "rejected",
    };
    TokenError::Invalid(reason.to_owned())
}

/// Keys from a JWKS URL: cached, refreshed when old, refetched (rate limited) on an unknown kid.
struct RemoteKeys {
    url: String,
    client: reqwest::Client,
    refresh_interval: Duration,
    min_refetch: Duration,
    /// The last good fetch. A std lock: held only to clone the `Arc`, never across an await.
    cached: RwLock<Option<Arc<Fetched>>>,
    /// When the last fetch started. Held across the fetch, so concurrent callers share it.
    last_fetch: Mutex<Option<Instant>>,
}

struct Fetched {
    keys: Arc<KeySet>,
    at: Instant,
}

impl RemoteKeys {
    /// The key set, if it has `kid`, fetching the JWKS when there is none yet, when it is
    /// stale, or when it lacks `kid`. `None` if the key is still unknown after that.
    async fn with_kid(&self, kid: &str) -> Result<Option<Arc<KeySet>>, TokenError> {
        let seen = self.cached();
        if let Some(fetched) = &seen
            && fetched.keys.get(kid).is_some()
        {
            if fetched.at.elapsed() < self.refresh_interval {
                return Ok(Some(Arc::clone(&fetched.keys)));
            }
            // Stale but known: refresh unless someone already is; never wait for it.
            let Ok(last_fetch) = self.last_fetch.try_lock() else {
                return Ok(Some(Arc::clone(&fetched.keys)));
            };
            let fresh = self.refresh(last_fetch, seen.as_ref()).await?;
            // A key the fresh set dropped is refused from now on.
            return Ok(having(&fresh.keys, kid));
        }
        let last_fetch = self.last_fetch.lock().await;
        let fresh = self.refresh(last_fetch, seen.as_ref()).await?;
        Ok(having(&fresh.keys, kid))
    }

    fn cached(&self) -> Option<Arc<Fetched>> {
        self.cached
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Fetches the JWKS unless another caller did since `seen` was read or the last fetch is
    /// more recent than `min_refetch`. A failed fetch keeps the cached keys, if any.
    async fn refresh(
        &self,
        mut last_fetch: MutexGuard<'_, Option<Instant>>,
        seen: Option<&Arc<Fetched>>,
    ) -> Result<Arc<Fetched>, TokenError> {
        let current = self.cached();
        let replaced = match (&current, seen) {
            (Some(current), Some(seen)) => !Arc::ptr_eq(current, seen),
            (current, seen) => current.is_some() != seen.is_some(),
        };
        let too_soon = last_fetch.is_some_and(|at| at.elapsed() < self.min_refetch);
        if replaced || too_soon {
            return current.ok_or_else(|| {
                TokenError::KeysUnavailable("the last JWKS fetch failed".to_owned())
            });
        }
        *last_fetch = Some(Instant::now());
        match self.fetch().await {
            Ok(keys) => {
                let fresh = Arc::new(Fetched {
                    keys: Arc::new(keys),
                    at: Instant::now(),
                });
                *self
                    .cached
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(fresh.clone());
                Ok(fresh)
            }
            Err(error) => {
                tracing::warn!(url = %self.url, %error, "cannot fetch the JWKS");
                current.ok_or(TokenError::KeysUnavailable(error))
            }
        }
    }

    async fn fetch(&self) -> Result<KeySet, String> {
        let fetched = async {
            self.client
                .get(&self.url)
                .send()
                .await?
                .error_for_status()?
                .json::<JwkSet>()
                .await
        };
        let jwks = fetched
            .await
            .map_err(|error| tessera_errors::error_chain(&error))?;
        let keys = KeySet::from_jwks(&jwks);
        // An empty set would reject every token; keeping the old keys is the safer mistake.
        if keys.is_empty() {
            return Err("the JWKS has no usable Ed25519 key".to_owned());
        }
        Ok(keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(expires_in: chrono::TimeDelta) -> Entry {
        Entry {
            kid: Arc::from("k"),
            keys: Arc::new(KeySet::default()),
            principal: Principal {
                user_id: uuid::Uuid::now_v7(),
                role: tessera_domain::Role::User,
                jti: uuid::Uuid::now_v7(),
                expires_at: Utc::now() + expires_in,
            },
        }
    }

    #[test]
    fn a_full_memo_of_live_tokens_makes_room_one_at_a_time() {
        let verified = Verified::default();
        for n in 0..VERIFIED_CAPACITY {
            let minutes = i64::try_from(n).unwrap() + 1;
            verified.insert(
                &format!("token-{n}"),
                entry(chrono::TimeDelta::minutes(minutes)),
            );
        }
        verified.insert("newcomer", entry(chrono::TimeDelta::minutes(15)));

        assert_eq!(verified.lock().len(), VERIFIED_CAPACITY);
        assert!(verified.get("newcomer").is_some());
        assert!(
            verified.get("token-0").is_none(),
            "the soonest to expire made room"
        );
        assert!(verified.get("token-1").is_some() && verified.get("token-1023").is_some());
    }

    #[test]
    fn tokens_ending_alike_are_told_apart() {
        let verified = Verified::default();
        let signature = "s".repeat(HASHED_TAIL * 2);
        let first = entry(chrono::TimeDelta::minutes(15));
        let user = first.principal.user_id;
        verified.insert(&format!("header.claims-of-one.{signature}"), first);

        assert!(
            verified
                .get(&format!("header.claims-of-another.{signature}"))
                .is_none()
        );
        let found = verified.get(&format!("header.claims-of-one.{signature}"));
        assert_eq!(found.map(|entry| entry.principal.user_id), Some(user));
    }

    #[test]
    fn expired_entries_make_room_first() {
        let verified = Verified::default();
        for n in 0..VERIFIED_CAPACITY {
            let expires_in = if n < 10 {
                chrono::TimeDelta::seconds(-1)
            } else {
                chrono::TimeDelta::minutes(15)
            };
            verified.insert(&format!("token-{n}"), entry(expires_in));
        }
        verified.insert("newcomer", entry(chrono::TimeDelta::minutes(15)));
        assert_eq!(verified.lock().len(), VERIFIED_CAPACITY - 10 + 1);
    }
}
