//! The orders service's own settings (`ORDERS_*`), next to the runtime's.

use std::time::Duration;

use serde::Deserialize;
use tessera_jwt::RemoteKeys;
use tessera_resilience::{BreakerPolicy, CallPolicy};

/// Settings read from `ORDERS_*` variables; everything has a default.
#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    /// Where the token keys come from (`JWKS_URL`, `JWT_ISSUER`, `JWT_AUDIENCE`).
    #[serde(flatten)]
    pub keys: RemoteKeys,
    /// The users service's gRPC endpoint, asked whether a caller is a live user.
    #[serde(default = "defaults::users_grpc_url")]
    pub users_grpc_url: String,
    /// Longest a check with users may take, retries included; past it the order is refused
    /// with 503.
    #[serde(default = "defaults::users_deadline_ms")]
    pub users_deadline_ms: u64,
    /// Longest one attempt of that check may take.
    #[serde(default = "defaults::users_attempt_timeout_ms")]
    pub users_attempt_timeout_ms: u64,
    /// Most retries of one check.
    #[serde(default = "defaults::users_retries")]
    pub users_retries: u32,
    /// Share of recent attempts that must fail (in percent) for the circuit to open.
    #[serde(default = "defaults::users_breaker_failure_percent")]
    pub users_breaker_failure_percent: u8,
    /// Fewest recent attempts before the circuit may open.
    #[serde(default = "defaults::users_breaker_minimum_calls")]
    pub users_breaker_minimum_calls: usize,
    /// How long an open circuit refuses calls before one probe is let through.
    #[serde(default = "defaults::users_breaker_open_ms")]
    pub users_breaker_open_ms: u64,
    /// How long an `Idempotency-Key` is remembered (and its answer replayed).
    #[serde(default = "defaults::idempotency_ttl_secs")]
    pub idempotency_ttl_secs: u64,
}

impl Settings {
    /// The policy of calls to users.
    pub fn users_policy(&self) -> CallPolicy {
        CallPolicy {
            deadline: Duration::from_millis(self.users_deadline_ms),
            attempt_timeout: Duration::from_millis(self.users_attempt_timeout_ms),
            retries: self.users_retries,
            breaker: BreakerPolicy {
                failure_rate: f64::from(self.users_breaker_failure_percent.clamp(1, 100)) / 100.0,
                minimum_calls: self.users_breaker_minimum_calls.max(1),
                open_for: Duration::from_millis(self.users_breaker_open_ms),
                ..BreakerPolicy::default()
            },
            ..CallPolicy::default()
        }
    }

    /// How long idempotency keys live.
    pub fn idempotency_ttl(&self) -> Duration {
        Duration::from_secs(self.idempotency_ttl_secs)
    }
}

mod defaults {
    pub fn users_grpc_url() -> String {
        "http://127.0.0.1:50052".to_owned()
    }
    pub fn users_deadline_ms() -> u64 {
        1000
    }
    pub fn users_attempt_timeout_ms() -> u64 {
        300
    }
    pub fn users_retries() -> u32 {
        2
    }
    pub fn users_breaker_failure_percent() -> u8 {
        50
    }
    pub fn users_breaker_minimum_calls() -> usize {
        5
    }
    pub fn users_breaker_open_ms() -> u64 {
        5000
    }
    pub fn idempotency_ttl_secs() -> u64 {
        24 * 60 * 60
    }
}
