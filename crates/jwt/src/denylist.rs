//! Revoked access tokens, by `jti`, in Redis.

use chrono::{DateTime, TimeDelta, Utc};
use deadpool_redis::redis;
use deadpool_redis::redis::aio::ConnectionManager;
use tessera_observability::trace_context;
use tracing::Instrument;
use uuid::Uuid;

/// Revoked access-token ids in Redis, each kept until the token would have expired anyway
/// (plus [`Denylist::EXPIRY_MARGIN`]), so the list never outgrows the tokens alive.
///
/// Every request asks it, so it sends its commands over one multiplexed connection shared
/// with the request's other Redis work (no checkout per command); a call waits as long as
/// that connection's timeouts allow (the runtime's `SharedRedis` bounds connecting and each
/// answer).
#[derive(Clone)]
pub struct Denylist {
    redis: ConnectionManager,
}

impl std::fmt::Debug for Denylist {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Denylist").finish_non_exhaustive()
    }
}

/// Redis could not be asked.
#[derive(Debug, thiserror::Error)]
#[error("the token denylist command failed")]
pub struct DenylistError(#[from] redis::RedisError);

impl Denylist {
    /// How long past its `exp` a revoked token stays listed: longer than a verifier's leeway
    /// (30 s by default), during which the token would otherwise still be accepted.
    pub const EXPIRY_MARGIN: TimeDelta = TimeDelta::seconds(60);

    /// A denylist in the Redis behind `redis`, under keys `tessera:jwt:denylist:{jti}`.
    pub fn new(redis: ConnectionManager) -> Self {
        Self { redis }
    }

    /// Lists `jti` until `until` (the token's expiry) plus [`Self::EXPIRY_MARGIN`]; nothing to do
    /// for a token already past that.
    pub async fn revoke(&self, jti: Uuid, until: DateTime<Utc>) -> Result<(), DenylistError> {
        self.revoke_all(&[(jti, until)]).await
    }

    /// [`Self::revoke`] for each `(jti, until)`, in one round trip.
    pub async fn revoke_all(&self, tokens: &[(Uuid, DateTime<Utc>)]) -> Result<(), DenylistError> {
        let mut pipe = redis::pipe();
        for (jti, until) in tokens {
            let listed_until = until
                .checked_add_signed(Self::EXPIRY_MARGIN)
                .unwrap_or(*until);
            let left = (listed_until - Utc::now()).num_milliseconds();
            if left > 0 {
                // Round up: a key that expires a fraction early would let the token back in.
                let seconds = (left + 999) / 1000;
                pipe.cmd("SET")
                    .arg(key(*jti))
                    .arg(1)
                    .arg("EX")
                    .arg(seconds)
                    .ignore();
            }
        }
        if pipe.is_empty() {
            return Ok(());
        }
        let mut connection = self.redis.clone();
        pipe.query_async::<()>(&mut connection)
            .instrument(trace_context::redis_span("SET"))
            .await?;
        Ok(())
    }

    /// Whether this Redis holds every revocation pushed since [`Self::mark_complete`]: false
    /// when it has lost its data (a restart without persistence, a flush) or never had it,
    /// and then every revocation still in force must be pushed again.
    pub async fn is_complete(&self) -> Result<bool, DenylistError> {
        self.exists(COMPLETE_KEY).await
    }

    /// Records that every revocation in force has been pushed to this Redis.
    pub async fn mark_complete(&self) -> Result<(), DenylistError> {
        let mut connection = self.redis.clone();
        redis::cmd("SET")
            .arg(COMPLETE_KEY)
            .arg(1)
            .query_async::<()>(&mut connection)
            .instrument(trace_context::redis_span("SET"))
            .await?;
        Ok(())
    }

    /// Whether `jti` was revoked.
    pub async fn is_revoked(&self, jti: Uuid) -> Result<bool, DenylistError> {
        self.exists(&key(jti)).await
    }

    async fn exists(&self, key: &str) -> Result<bool, DenylistError> {
        let mut connection = self.redis.clone();
        let exists = redis::cmd("EXISTS")
            .arg(key)
            .query_async::<bool>(&mut connection)
            .instrument(trace_context::redis_span("EXISTS"))
            .await?;
        Ok(exists)
    }
}

/// Set once the denylist holds every revocation in force; gone with the rest of Redis' data.
const COMPLETE_KEY: &str = "tessera:jwt:denylist:complete";

fn key(jti: Uuid) -> String {
    format!("tessera:jwt:denylist:{jti}")
}
