//! A cache-aside store of JSON documents in Redis.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadpool_redis::redis::{AsyncCommands, RedisResult};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tessera_observability::trace_context;
use tracing::Instrument;

use super::{CacheMetrics, SharedRedis};

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
///
/// When other processes keep copies in memory ([`super::NearCache`]), each invalidation is
/// also published, with the deletion, on the cache's channel.
#[derive(Clone)]
pub struct JsonCache {
    redis: SharedRedis,
    name: &'static str,
    ttl: Duration,
    timeout: Duration,
    metrics: CacheMetrics,
    /// Where invalidations are announced, if anyone listens.
    channel: Option<Arc<str>>,
    /// Keys (without the cache's prefix) whose invalidation has yet to reach Redis.
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
            channel: None,
            pending: Arc::default(),
        }
    }

    /// This cache, publishing each invalidated key on `channel` as it deletes it.
    pub(super) fn announcing_to(mut self, channel: &str) -> Self {
        self.channel = Some(channel.into());
        self
    }

    /// Its name, the `cache` label of its metrics.
    pub fn name(&self) -> &'static str {
        self.name
    }

    pub(super) fn metrics(&self) -> &CacheMetrics {
        &self.metrics
    }

    pub(super) fn timeout(&self) -> Duration {
        self.timeout
    }

    pub(super) fn redis(&self) -> &SharedRedis {
        &self.redis
    }

    /// The cached value under `key`, if there is one and Redis answered in time.
    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Option<T> {
        let key = self.key(key);
        let pending = self.pending_invalidations();
        let found = self
            .run(Operation::Get, async |connection| {
                if !pending.is_empty() {
                    self.invalidation(&pending)
                        .query_async::<()>(&mut *connection)
                        .await?;
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
        self.metrics.lookup(self.name, result);
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

    /// Removes `key`, after the source of truth changed (and announces it, if announcing).
    pub async fn invalidate(&self, key: &str) {
        let keys = [key.to_owned()];
        let deleted = self
            .run(Operation::Invalidate, async |connection| {
                self.invalidation(&keys)
                    .query_async::<()>(&mut *connection)
                    .await
            })
            .await;
        if deleted.is_err() {
            let [key] = keys;
            self.lock_pending().insert(key);
        }
    }

    /// Deletes `keys` and, if announcing, publishes each: one round trip.
    fn invalidation(&self, keys: &[String]) -> deadpool_redis::redis::Pipeline {
        let mut pipe = deadpool_redis::redis::pipe();
        pipe.del(keys.iter().map(|key| self.key(key)).collect::<Vec<_>>())
            .ignore();
        if let Some(channel) = &self.channel {
            for key in keys {
                pipe.publish(&**channel, key).ignore();
            }
        }
        pipe
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
            self.metrics.failure(self.name, operation.as_str());
        })
    }
}
