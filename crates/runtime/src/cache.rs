//! The service's Redis pool, its health check, and a JSON cache on top of it.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadpool_redis::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use deadpool_redis::redis::{AsyncCommands, RedisResult};
use deadpool_redis::{Config, Pool, PoolConfig, Runtime, Timeouts};
use futures::future::BoxFuture;
use secrecy::ExposeSecret;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tessera_observability::trace_context;
use tessera_observability::{Criticality, HealthCheck};
use tracing::Instrument;

use crate::config::RuntimeConfig;

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
    let client = deadpool_redis::redis::Client::open(url)?;
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
                "Cache reads by outcome: hit, miss, or error (answered from the source).",
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
}

/// A cache-aside store of JSON documents in Redis, for values whose source of truth is
/// elsewhere (PostgreSQL).
///
/// The cache can only make things faster, never fail them: every operation is bounded by a
/// timeout, and an error is logged, counted and treated as a miss. A value that no longer
/// decodes (its type changed across a deploy) is a miss too and is overwritten on the next
/// `put`.
///
/// An invalidation that fails (Redis unreachable just after a write) is remembered, and the
/// cache serves nothing until every remembered key has been deleted: otherwise the entry
/// from before the write would be served again once Redis is back. Entries also expire after
/// `ttl`, which bounds staleness if the process dies with invalidations still pending.
#[derive(Clone)]
pub struct JsonCache {
    redis: SharedRedis,
    name: &'static str,
    ttl: Duration,
    timeout: Duration,
    metrics: CacheMetrics,
    pending: Arc<Mutex<HashSet<String>>>,
}

/// What a cache operation did, for the metrics.
#[derive(Debug, Clone, Copy)]
enum Operation {
    Get,
    Put,
    Invalidate,
}

impl Operation {
    /// The Redis command it sends, for its span.
    fn command(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Put => "SET",
            Self::Invalidate => "DEL",
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Get => "get",
            Self::Put => "put",
            Self::Invalidate => "invalidate",
        }
    }
}

impl JsonCache {
    /// A cache named `name` (its keys are `cache:<name>:<key>`).
    pub fn new(
        redis: SharedRedis,
        name: &'static str,
        ttl: Duration,
        timeout: Duration,
        metrics: CacheMetrics,
    ) -> Self {
        Self {
            redis,
            name,
            ttl,
            timeout,
            metrics,
            pending: Arc::default(),
        }
    }

    /// The cached value under `key`, if there is one and Redis answered in time.
    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Option<T> {
        let key = self.key(key);
        let pending = self.pending_invalidations();
        let found = self
            .run(Operation::Get, async |connection| {
                if !pending.is_empty() {
                    connection.del::<_, ()>(&pending).await?;
                }
                connection.get::<_, Option<Vec<u8>>>(&key).await
            })
            .await;
        if found.is_ok() {
            self.forget_pending(&pending);
        }
        let (result, value) = match found {
            Err(()) => ("error", None),
            Ok(None) => ("miss", None),
            Ok(Some(bytes)) => match serde_json::from_slice(&bytes) {
                Ok(value) => ("hit", Some(value)),
                Err(error) => {
                    tracing::warn!(cache = self.name, %error, "cached value does not decode; treating it as a miss");
                    ("miss", None)
                }
            },
        };
        self.metrics
            .lookups
            .with_label_values(&[self.name, result])
            .inc();
        value
    }

    /// Stores `value` under `key` for the cache's time to live.
    pub async fn put<T: Serialize>(&self, key: &str, value: &T) {
        let Ok(bytes) = serde_json::to_vec(value) else {
            return;
        };
        let key = self.key(key);
        let seconds = self.ttl.as_secs().max(1);
        let _ = self
            .run(Operation::Put, async |connection| {
                connection.set_ex::<_, _, ()>(&key, bytes, seconds).await
            })
            .await;
    }

    /// Removes `key`, after the source of truth changed.
    pub async fn invalidate(&self, key: &str) {
        let key = self.key(key);
        let deleted = self
            .run(Operation::Invalidate, async |connection| {
                connection.del::<_, ()>(&key).await
            })
            .await;
        if deleted.is_err() {
            self.lock_pending().insert(key);
        }
    }

    fn pending_invalidations(&self) -> Vec<String> {
        self.lock_pending().iter().cloned().collect()
    }

    fn forget_pending(&self, deleted: &[String]) {
        if !deleted.is_empty() {
            let mut pending = self.lock_pending();
            for key in deleted {
                pending.remove(key);
            }
        }
    }

    fn lock_pending(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        // The set holds plain keys; a panic elsewhere cannot leave it inconsistent.
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn key(&self, key: &str) -> String {
        format!("cache:{}:{key}", self.name)
    }

    /// Runs one command on the shared connection within the timeout; failures are logged
    /// and counted here so callers only see "no value".
    async fn run<T>(
        &self,
        operation: Operation,
        command: impl AsyncFnOnce(&mut SharedRedis) -> RedisResult<T>,
    ) -> Result<T, ()> {
        let attempt = async {
            let mut connection = self.redis.clone();
            command(&mut connection)
                .await
                .map_err(|error| error.to_string())
        };
        let attempt = attempt.instrument(trace_context::redis_span(operation.command()));
        let outcome = match tokio::time::timeout(self.timeout, attempt).await {
            Ok(outcome) => outcome,
            Err(_) => Err(format!("no answer within {:?}", self.timeout)),
        };
        outcome.map_err(|error| {
            tracing::warn!(cache = self.name, operation = operation.as_str(), %error, "cache operation failed; skipped");
            self.metrics
                .failures
                .with_label_values(&[self.name, operation.as_str()])
                .inc();
        })
    }
}
