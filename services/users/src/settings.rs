//! The users service's own settings (`USERS_*`), next to the runtime's.

use std::time::Duration;

use serde::Deserialize;
use tessera_jwt::VerifierSettings;

/// Settings read from `USERS_*` variables; everything has a default.
#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    /// Where the auth service publishes its signing keys.
    #[serde(default = "defaults::jwks_url")]
    pub jwks_url: String,
    /// The `iss` access tokens must carry.
    #[serde(default = "defaults::jwt_issuer")]
    pub jwt_issuer: String,
    /// The `aud` access tokens must carry.
    #[serde(default = "defaults::jwt_audience")]
    pub jwt_audience: String,
    /// How long a profile stays in the Redis cache; also the most an entry can lag behind
    /// PostgreSQL if an invalidation is lost while Redis is unreachable.
    #[serde(default = "defaults::cache_ttl_secs")]
    pub cache_ttl_secs: u64,
}

impl Settings {
    /// The token verifier's settings.
    pub fn verifier(&self) -> VerifierSettings {
        VerifierSettings {
            jwks_url: Some(self.jwks_url.clone()),
            ..VerifierSettings::new(&self.jwt_issuer, &self.jwt_audience)
        }
    }

    /// The cache's time to live.
    pub fn cache_ttl(&self) -> Duration {
        Duration::from_secs(self.cache_ttl_secs)
    }
}

mod defaults {
    pub fn jwks_url() -> String {
        "http://127.0.0.1:8081/.well-known/jwks.json".to_owned()
    }
    pub fn jwt_issuer() -> String {
        "tessera-auth".to_owned()
    }
    pub fn jwt_audience() -> String {
        "tessera".to_owned()
    }
    pub fn cache_ttl_secs() -> u64 {
        60
    }
}
