//! An in-process cache in front of a [`JsonCache`], coherent across instances through
//! invalidations published on Redis.
//!
//! Each instance follows the cache's invalidation channel and, on a channel of its own,
//! heartbeats it publishes itself every [`HEARTBEAT_EVERY`]. Redis delivers what a
//! connection subscribed to in the order it was published, so once a heartbeat sent at
//! `s` has arrived, every invalidation acknowledged before `s` has arrived too. Memory is
//! served only while such a heartbeat is younger than [`NearCache::COHERENCE_BOUND`]: a
//! write acknowledged at `t` is seen everywhere by `t + COHERENCE_BOUND`, and an instance
//! that stops hearing itself (Redis restarted, the subscription lost or silently stalled)
//! falls back to asking Redis within that bound. On (re)subscribing it forgets everything
//! it holds, since it may have missed invalidations meanwhile.

use std::fmt::Display;
use std::hash::Hash;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use deadpool_redis::redis::{self, AsyncCommands};
use futures::StreamExt;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use super::{JsonCache, Snapshot};

/// See [`NearCache::COHERENCE_BOUND`].
const COHERENCE_BOUND: Duration = Duration::from_secs(1);

/// How often an instance sends itself a heartbeat over the invalidation connection.
const HEARTBEAT_EVERY: Duration = Duration::from_millis(250);

/// How long without one of its own heartbeats before an instance drops its subscription
/// and makes a new one: the connection is taken as stalled.
const SILENCE_LIMIT: Duration = Duration::from_secs(3);

/// How long to wait before subscribing again after a failure.
const RESUBSCRIBE_AFTER: Duration = Duration::from_secs(1);

/// Values kept in this process in front of a [`JsonCache`], read through
/// [`NearCache::get_or_load`] and dropped everywhere by [`NearCache::invalidate`].
///
/// The writer's own instance reads its write at once; other instances within
/// [`Self::COHERENCE_BOUND`] (see the module's documentation). Memory is only served while
/// [`NearCacheSync`] runs and hears itself; otherwise every read goes to Redis as it would
/// without this cache. A value read from Redis or the source is kept only if no
/// invalidation arrived while it was being read, so a read racing a write never leaves
/// the old value behind.
pub struct NearCache<K, V> {
    local: moka::sync::Cache<K, Snapshot<V>>,
    remote: JsonCache,
    coherence: Arc<Coherence>,
    near_hits: prometheus::IntCounter,
}

impl<K, V> Clone for NearCache<K, V> {
    fn clone(&self) -> Self {
        Self {
            local: self.local.clone(),
            remote: self.remote.clone(),
            coherence: Arc::clone(&self.coherence),
            near_hits: self.near_hits.clone(),
        }
    }
}

impl<K, V> NearCache<K, V>
where
    K: Hash + Eq + Clone + Display + FromStr + Send + Sync + 'static,
    V: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    /// The longest another instance may go on serving a value from memory after a write
    /// was acknowledged.
    pub const COHERENCE_BOUND: Duration = COHERENCE_BOUND;

    /// A near cache of at most `capacity` values, each kept at most as long as `remote`
    /// keeps it, and the task that keeps it coherent (subscribing through `client`).
    pub(crate) fn new(
        remote: JsonCache,
        ttl: Duration,
        capacity: u64,
        client: redis::Client,
    ) -> (Self, NearCacheSync<K, V>) {
        let channels = Channels::new(remote.name());
        let remote = remote.announcing_to(&channels.invalidations);
        let cache = Self {
            local: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl)
                .build(),
            near_hits: remote
                .metrics()
                .lookups
                .with_label_values(&[remote.name(), "near"]),
            remote,
            coherence: Arc::new(Coherence::new()),
        };
        let sync = NearCacheSync {
            cache: cache.clone(),
            client,
            channels,
        };
        (cache, sync)
    }

    /// The value under `key`: from memory, else from Redis, else from `load` (the source of
    /// truth), whose answer is then cached.
    pub async fn get_or_load<E>(
        &self,
        key: &K,
        load: impl AsyncFnOnce() -> Result<Option<Snapshot<V>>, E>,
    ) -> Result<Option<Snapshot<V>>, E> {
        let epoch = self.coherence.epoch();
        if self.coherence.serving()
            && let Some(value) = self.local.get(key)
        {
            self.near_hits.inc();
            return Ok(Some(value));
        }
        let remote_key = key.to_string();
        if let Some(value) = self.remote.get::<V>(&remote_key).await {
            let value = Snapshot::new(value);
            self.keep(key, epoch, &value);
            return Ok(Some(value));
        }
        let Some(value) = load().await? else {
            return Ok(None);
        };
        // A write that landed meanwhile may be newer than what was loaded: leave it to the
        // next reader.
        if self.coherence.epoch() == epoch {
            self.remote.put(&remote_key, &*value).await;
            self.keep(key, epoch, &value);
        }
        Ok(Some(value))
    }

    /// Drops `key` here, in Redis, and (through the channel) in every other instance, after
    /// its source changed.
    pub async fn invalidate(&self, key: &K) {
        self.forget(key);
        self.remote.invalidate(&key.to_string()).await;
        // A read here that raced the deletion may have kept the old value meanwhile.
        self.forget(key);
    }

    /// Keeps `value`, read since `epoch`, unless an invalidation arrived since.
    fn keep(&self, key: &K, epoch: u64, value: &Snapshot<V>) {
        if self.coherence.epoch() != epoch || self.local.policy().max_capacity() == Some(0) {
            return;
        }
        self.local.insert(key.clone(), value.clone());
        // An invalidation between the check and the insert bumped the epoch first; take
        // the value back out (at worst dropping a newer one: a miss, never a stale hit).
        if self.coherence.epoch() != epoch {
            self.local.invalidate(key);
        }
    }

    fn forget(&self, key: &K) {
        self.coherence.bump();
        self.local.invalidate(key);
    }

    fn forget_all(&self) {
        self.coherence.bump();
        self.local.invalidate_all();
    }
}

/// Whether memory may be served, and the count of invalidations seen.
#[derive(Debug)]
struct Coherence {
    /// Bumped before every invalidation is applied and at every (re)subscription: a value
    /// read before a bump is not kept.
    epoch: AtomicU64,
    /// Until when memory may be served, in nanoseconds since `origin`; 0 when not in sync.
    serve_until: AtomicU64,
    origin: Instant,
}

impl Coherence {
    fn new() -> Self {
        Self {
            epoch: AtomicU64::new(0),
            serve_until: AtomicU64::new(0),
            origin: Instant::now(),
        }
    }

    fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    fn bump(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
    }

    fn serving(&self) -> bool {
        self.now() < self.serve_until.load(Ordering::Acquire)
    }

    /// Every invalidation published before `sent` (a time from [`Self::now`]) has arrived.
    fn heard_as_of(&self, sent: u64) {
        let until = sent.saturating_add(saturating_nanos(COHERENCE_BOUND));
        self.serve_until.fetch_max(until, Ordering::AcqRel);
    }

    /// Invalidations may be going unheard from now on.
    fn deaf(&self) {
        self.serve_until.store(0, Ordering::Release);
    }

    fn now(&self) -> u64 {
        saturating_nanos(self.origin.elapsed())
    }
}

fn saturating_nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// The channels one instance follows.
struct Channels {
    /// Every instance's invalidations: `cache:<name>:invalidations`, the key as payload.
    invalidations: String,
    /// This instance's own heartbeats: `cache:<name>:heartbeat:<instance>`, the time sent.
    heartbeats: String,
}

impl Channels {
    fn new(cache: &str) -> Self {
        Self {
            invalidations: format!("cache:{cache}:invalidations"),
            heartbeats: format!("cache:{cache}:heartbeat:{}", uuid::Uuid::new_v4().simple()),
        }
    }
}

/// Keeps a [`NearCache`] coherent; run it for the life of the service (its
/// [`NearCacheSync::run`] as a lifelong task). Until it hears itself, the cache serves
/// nothing from memory.
pub struct NearCacheSync<K, V> {
    cache: NearCache<K, V>,
    client: redis::Client,
    channels: Channels,
}

impl<K, V> NearCacheSync<K, V>
where
    K: Hash + Eq + Clone + Display + FromStr + Send + Sync + 'static,
    V: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    /// Follows the invalidations until `shutdown`, subscribing again whenever the
    /// subscription is lost.
    pub async fn run(self, shutdown: CancellationToken) {
        let name = self.cache.remote.name();
        loop {
            match self.subscribe().await {
                Ok(messages) => {
                    self.cache.forget_all();
                    tracing::info!(cache = name, "near cache following its invalidations");
                    let lost = tokio::select! {
                        () = shutdown.cancelled() => None,
                        lost = self.follow(messages) => Some(lost),
                    };
                    self.cache.coherence.deaf();
                    let Some(lost) = lost else { return };
                    tracing::warn!(
                        cache = name,
                        reason = lost,
                        "near cache lost its invalidations; reading from Redis until subscribed again"
                    );
                }
                Err(error) => {
                    tracing::warn!(cache = name, %error, "near cache could not subscribe to its invalidations; reading from Redis");
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(RESUBSCRIBE_AFTER) => {}
            }
        }
    }

    async fn subscribe(&self) -> Result<redis::aio::PubSubStream, String> {
        let timeout = self.cache.remote.timeout();
        let subscribing = async {
            let mut pubsub = self.client.get_async_pubsub().await?;
            pubsub.subscribe(&self.channels.invalidations).await?;
            pubsub.subscribe(&self.channels.heartbeats).await?;
            Ok::<_, redis::RedisError>(pubsub.into_on_message())
        };
        match tokio::time::timeout(timeout, subscribing).await {
            Ok(subscribed) => subscribed.map_err(|error| error.to_string()),
            Err(_) => Err(format!("no answer within {timeout:?}")),
        }
    }

    /// Applies invalidations and heartbeats as they arrive; returns why it stopped.
    async fn follow(&self, mut messages: redis::aio::PubSubStream) -> &'static str {
        let coherence = &self.cache.coherence;
        let mut beat = tokio::time::interval(HEARTBEAT_EVERY);
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_heard = Instant::now();
        loop {
            tokio::select! {
                _ = beat.tick() => {
                    if last_heard.elapsed() > SILENCE_LIMIT {
                        return "no heartbeat came back";
                    }
                    self.send_heartbeat(coherence.now()).await;
                }
                message = messages.next() => {
                    let Some(message) = message else {
                        return "the connection closed";
                    };
                    if message.get_channel_name() == self.channels.heartbeats {
                        if let Some(sent) = parse::<u64>(message.get_payload_bytes()) {
                            coherence.heard_as_of(sent);
                            last_heard = Instant::now();
                        }
                    } else {
                        match parse::<K>(message.get_payload_bytes()) {
                            Some(key) => self.cache.forget(&key),
                            // Not a key of this cache (another version's?): to be safe,
                            // forget everything.
                            None => self.cache.forget_all(),
                        }
                    }
                }
            }
        }
    }

    /// Publishes `sent` on this instance's heartbeat channel; a failure only means this
    /// beat is not heard.
    async fn send_heartbeat(&self, sent: u64) {
        let mut connection = self.cache.remote.redis().clone();
        let publish = connection.publish::<_, _, ()>(&self.channels.heartbeats, sent);
        let _ = tokio::time::timeout(HEARTBEAT_EVERY, publish).await;
    }
}

fn parse<T: FromStr>(payload: &[u8]) -> Option<T> {
    std::str::from_utf8(payload).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_is_served_only_within_the_bound_of_the_last_heartbeat_heard() {
        let coherence = Coherence::new();
        assert!(!coherence.serving(), "not before the first heartbeat");

        coherence.heard_as_of(coherence.now());
        assert!(coherence.serving());

        let old = Coherence {
            origin: Instant::now() - 5 * COHERENCE_BOUND,
            ..Coherence::new()
        };
        old.heard_as_of(old.now() - saturating_nanos(COHERENCE_BOUND) - 1);
        assert!(!old.serving(), "a heartbeat older than the bound");

        coherence.deaf();
        assert!(!coherence.serving(), "not once the subscription is lost");
    }

    fn near_cache() -> NearCache<u32, String> {
        near_cache_of(100)
    }

    fn near_cache_of(capacity: u64) -> NearCache<u32, String> {
        let url = "redis://127.0.0.1:1/0";
        let metrics = crate::cache::CacheMetrics::register(&prometheus::Registry::new()).unwrap();
        let redis = crate::cache::shared(url, Duration::from_millis(10)).unwrap();
        let remote = JsonCache::new(
            redis,
            "test",
            Duration::from_secs(60),
            Duration::from_millis(10),
            metrics,
        );
        let client = redis::Client::open(url).unwrap();
        NearCache::new(remote, Duration::from_secs(60), capacity, client).0
    }

    #[tokio::test]
    async fn a_capacity_of_zero_keeps_nothing() {
        let cache = near_cache_of(0);
        let read_since = cache.coherence.epoch();
        cache.keep(&1, read_since, &Snapshot::new("value".to_owned()));
        assert!(cache.local.get(&1).is_none());
    }

    #[tokio::test]
    async fn a_value_read_before_an_invalidation_is_not_kept() {
        let cache = near_cache();
        let read_since = cache.coherence.epoch();
        cache.forget(&7);
        cache.keep(&7, read_since, &Snapshot::new("old".to_owned()));
        assert!(cache.local.get(&7).is_none());

        let read_since = cache.coherence.epoch();
        cache.keep(&7, read_since, &Snapshot::new("new".to_owned()));
        assert_eq!(
            cache.local.get(&7).as_deref().map(String::as_str),
            Some("new")
        );
    }

    #[tokio::test]
    async fn subscribing_again_forgets_everything_and_refuses_reads_begun_before() {
        let cache = near_cache();
        let read_since = cache.coherence.epoch();
        cache.keep(&1, read_since, &Snapshot::new("held".to_owned()));
        cache.forget_all();
        cache.local.run_pending_tasks();
        assert!(cache.local.get(&1).is_none());
        cache.keep(&2, read_since, &Snapshot::new("read before".to_owned()));
        assert!(cache.local.get(&2).is_none());
    }

    #[test]
    fn an_older_heartbeat_arriving_late_does_not_shorten_the_window() {
        let coherence = Coherence::new();
        let now = coherence.now();
        coherence.heard_as_of(now);
        let until = coherence.serve_until.load(Ordering::Acquire);
        coherence.heard_as_of(now.saturating_sub(1_000));
        assert_eq!(coherence.serve_until.load(Ordering::Acquire), until);
    }
}
