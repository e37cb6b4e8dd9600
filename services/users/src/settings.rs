//! The users service's own settings (`USERS_*`), next to the runtime's.

use std::time::Duration;

use serde::Deserialize;
use tessera_jwt::RemoteKeys;

/// Settings read from `USERS_*` variables; everything has a default.
#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    /// Where the token keys come from (`JWKS_URL`, `JWT_ISSUER`, `JWT_AUDIENCE`).
    #[serde(flatten)]
    pub keys: RemoteKeys,
    /// How long a profile stays in the Redis cache; also the most an entry can lag behind
    /// PostgreSQL if an invalidation is lost while Redis is unreachable.
    #[serde(default = "defaults::cache_ttl_secs")]
    pub cache_ttl_secs: u64,
    /// Most profiles kept in process memory in front of Redis (each a few hundred bytes);
    /// 0 keeps none.
    #[serde(default = "defaults::near_cache_capacity")]
    pub near_cache_capacity: u64,
}

impl Settings {
    /// The cache's time to live.
    pub fn cache_ttl(&self) -> Duration {
        Duration::from_secs(self.cache_ttl_secs)
    }
}

mod defaults {
    pub fn cache_ttl_secs() -> u64 {
        60
    }

    pub fn near_cache_capacity() -> u64 {
        10_000
    }
}
