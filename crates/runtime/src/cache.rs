//! The service's Redis pool and its health check.

use std::time::Duration;

use deadpool_redis::{Config, Pool, PoolConfig, Runtime, Timeouts};
use futures::future::BoxFuture;
use secrecy::ExposeSecret;
use tessera_observability::{Criticality, HealthCheck};

use crate::RuntimeConfig;

/// A pool that connects on first use; every wait is bounded so an absent Redis costs a
/// request at most `redis_timeout_ms`.
pub fn pool(config: &RuntimeConfig) -> Result<Pool, deadpool_redis::CreatePoolError> {
    let timeout = Some(Duration::from_millis(config.redis_timeout_ms));
    let mut pool_config = PoolConfig::new(config.redis_max_connections);
    pool_config.timeouts = Timeouts {
        wait: timeout,
        create: timeout,
        recycle: timeout,
    };
    let mut redis = Config::from_url(config.redis_url.expose_secret());
    redis.pool = Some(pool_config);
    redis.create_pool(Some(Runtime::Tokio1))
}

/// Readiness check: optional, since the cache is only an accelerator.
pub struct RedisCheck(pub Pool);

impl HealthCheck for RedisCheck {
    fn name(&self) -> &'static str {
        "redis"
    }

    fn criticality(&self) -> Criticality {
        Criticality::Optional
    }

    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let mut connection = self.0.get().await.map_err(|error| error.to_string())?;
            deadpool_redis::redis::cmd("PING")
                .query_async::<String>(&mut connection)
                .await
                .map(drop)
                .map_err(|error| error.to_string())
        })
    }
}
