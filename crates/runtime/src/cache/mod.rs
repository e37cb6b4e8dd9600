//! The service's Redis: its pool, the connection requests share, its health check, and the
//! caches on top of it ([`JsonCache`] in Redis, [`NearCache`] in process in front of it).

mod json;
mod near;
mod snapshot;

use std::time::Duration;

use deadpool_redis::redis::RedisResult;
use deadpool_redis::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use deadpool_redis::{Config, Pool, PoolConfig, Runtime, Timeouts};
use futures::future::BoxFuture;
use secrecy::ExposeSecret;
use tessera_observability::{Criticality, HealthCheck};

use crate::config::RuntimeConfig;

pub use json::JsonCache;
pub use near::{NearCache, NearCacheSync};
pub use snapshot::Snapshot;

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

/// One multiplexed connection for the commands requests send (the denylist check, the
/// cache): concurrent requests share it, their commands pipelined, with no checkout and no
/// recycling per command (a pooled connection is recycled with `UNWATCH` and `PING`, two
/// more round trips for each command). It connects on first use and again after a failure;
/// each connection attempt and each answer is bounded by `timeout`.
pub type SharedRedis = ConnectionManager;

/// The [`SharedRedis`] of the Redis at `url`; connects on first use.
pub fn shared(url: &str, timeout: Duration) -> RedisResult<SharedRedis> {
    shared_through(deadpool_redis::redis::Client::open(url)?, timeout)
}

/// The [`SharedRedis`] of `client`'s Redis; connects on first use.
pub(crate) fn shared_through(
    client: deadpool_redis::redis::Client,
    timeout: Duration,
) -> RedisResult<SharedRedis> {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout))
        // A lost connection is made again by the next command, once: a command waits at
        // most about one timeout for an absent Redis, never a series of backed-off retries.
        .set_number_of_retries(0);
    ConnectionManager::new_lazy_with_config(client, config)
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

/// Counts of cache lookups by outcome, shared by every [`JsonCache`] of a service.
#[derive(Clone)]
pub struct CacheMetrics {
    lookups: prometheus::IntCounterVec,
    failures: prometheus::IntCounterVec,
}

impl CacheMetrics {
    /// Registers `cache_lookups_total{cache,result}` and `cache_failures_total{cache,operation}`.
    pub fn register(registry: &prometheus::Registry) -> Result<Self, prometheus::Error> {
        let lookups = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "cache_lookups_total",
                "Cache reads by outcome: near (answered in process), hit (from Redis), miss, or \
                 error (both answered from the source).",
            ),
            &["cache", "result"],
        )?;
        let failures = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "cache_failures_total",
                "Cache operations that failed and were skipped, by operation.",
            ),
            &["cache", "operation"],
        )?;
        registry.register(Box::new(lookups.clone()))?;
        registry.register(Box::new(failures.clone()))?;
        Ok(Self { lookups, failures })
    }

    fn lookup(&self, cache: &str, result: &str) {
        self.lookups.with_label_values(&[cache, result]).inc();
    }

    fn failure(&self, cache: &str, operation: &str) {
        self.failures.with_label_values(&[cache, operation]).inc();
    }
}
