//! What a service is to the runtime: a type with a spec, settings and one `build`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use tessera_errors::BoxError;
use tessera_messaging::{Broker, Consumer, MessagingMetrics, Outbox};
use tessera_observability::Metrics;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::cache::{CacheMetrics, JsonCache, NearCache, SharedRedis};
use crate::config::RuntimeConfig;
use crate::grpc::{self, Grants, GrpcServices};
use crate::tasks::Task;

/// A tessera service: what the runtime needs to boot it. `main` is then
/// `tessera_runtime::main::<Users>()`, and tests start the same type in-process.
pub trait Service: Send + 'static {
    /// Its name, ports, migrations and gRPC descriptors.
    const SPEC: &'static ServiceSpec;

    /// Its own settings, read from its `<PREFIX>*` variables next to the runtime's.
    type Settings: DeserializeOwned + Send + 'static;

    /// Builds what it serves and runs from the runtime's resources and its settings. A
    /// [`tessera_config::ConfigError`] returned here stops the process as a configuration
    /// error, its variable named with the service's prefix.
    fn build(
        context: Context,
        settings: Self::Settings,
    ) -> impl Future<Output = Result<Endpoints, BoxError>> + Send;
}

/// What the runtime needs to know about a service.
pub struct ServiceSpec {
    /// Short name, used in logs and connection names (`users`).
    pub name: &'static str,
    /// Prefix of its environment variables, separator included (`USERS_`).
    pub env_prefix: &'static str,
    /// REST port when `<PREFIX>HTTP_PORT` is unset.
    pub default_http_port: u16,
    /// gRPC port when `<PREFIX>GRPC_PORT` is unset.
    pub default_grpc_port: u16,
    /// Its migrations: `sqlx::migrate!("../../migrations/<name>")`.
    pub migrator: &'static Migrator,
    /// Encoded file descriptor sets of its gRPC services, for reflection.
    pub descriptors: &'static [&'static [u8]],
    /// Over mutual TLS, the identities allowed to call each of its methods
    /// (`package.Service/Method`, e.g. `tessera_proto::callers::GRANTS`); a method not
    /// listed is refused to every caller. Without TLS nothing is checked.
    pub grpc_callers: Grants,
}

/// Settings with no variables, for a service that has none of its own.
#[derive(Debug, Clone, Copy, Default, serde::Deserialize)]
pub struct NoSettings {}

/// What a service gets to build its endpoints: configuration and shared resources.
#[derive(Clone)]
pub struct Context {
    pub(crate) name: &'static str,
    /// The runtime settings.
    pub config: Arc<RuntimeConfig>,
    /// The service's PostgreSQL pool.
    pub db: PgPool,
    /// The service's Redis pool (deadpool); requests' own commands go over `shared_redis`.
    pub redis: deadpool_redis::Pool,
    /// The connection requests share for their Redis commands (see [`SharedRedis`]).
    pub shared_redis: SharedRedis,
    /// The Redis server, for connections of their own (a near cache's subscription).
    pub(crate) redis_client: deadpool_redis::redis::Client,
    /// The service's broker connection.
    pub broker: Broker,
    /// Writes the service's events inside its transactions.
    pub outbox: Outbox,
    /// Metrics of the event pipeline.
    pub messaging: MessagingMetrics,
    /// Metrics shared by the service's caches.
    pub cache_metrics: CacheMetrics,
    /// The metrics registry; register service-specific collectors here.
    pub metrics: Arc<Metrics>,
    /// Cancelled when the service starts shutting down; lifelong tasks watch it.
    pub shutdown: CancellationToken,
    pub(crate) detached: TaskTracker,
}

impl Context {
    /// A Redis cache-aside store named `name` whose entries live for `ttl`; its operations
    /// are bounded by `redis_timeout_ms`.
    pub fn cache(&self, name: &'static str, ttl: Duration) -> JsonCache {
        JsonCache::new(
            self.shared_redis.clone(),
            name,
            ttl,
            Duration::from_millis(self.config.redis_timeout_ms),
            self.cache_metrics.clone(),
        )
    }

    /// A [`NearCache`] in front of the Redis cache named `name`, sized by the
    /// `<PREFIX>CACHE_TTL_SECS` and `<PREFIX>NEAR_CACHE_CAPACITY` settings, and the lifelong
    /// task that keeps it coherent with other instances: hand it over in
    /// [`Endpoints::tasks`] (until it runs, the cache answers from Redis only).
    pub fn near_cache<K, V>(&self, name: &'static str) -> (NearCache<K, V>, Task)
    where
        K: std::hash::Hash
            + Eq
            + Clone
            + std::fmt::Display
            + std::str::FromStr
            + Send
            + Sync
            + 'static,
        V: serde::Serialize + DeserializeOwned + Send + Sync + 'static,
    {
        let ttl = Duration::from_secs(self.config.cache_ttl_secs);
        let capacity = self.config.near_cache_capacity;
        let client = self.redis_client.clone();
        let (cache, sync) = NearCache::new(self.cache(name, ttl), ttl, capacity, client);
        let shutdown = self.shutdown.clone();
        (cache, Task::lifelong("near_cache_sync", sync.run(shutdown)))
    }

    /// The service's event consumer, on the queue the event contract names for it
    /// (`<service>.events`) with the `<PREFIX>EVENTS_*` settings; add its handlers with
    /// [`Consumer::on`] and hand it over in [`Endpoints::consumer`]. They must handle exactly
    /// the types `tessera_events::subscriptions` routes to the service: it refuses to start
    /// otherwise.
    ///
    /// `name` is the consumer's lasting identity: the key of its processed-event records
    /// (so a duplicate is known as one) and the `consumer` label of its metrics. Never
    /// rename a deployed consumer.
    pub fn consumer(&self, name: &str) -> Consumer {
        Consumer::new(
            self.config.consumer(self.name, name),
            self.db.clone(),
            self.broker.clone(),
            self.messaging.clone(),
        )
    }

    /// The endpoint of calls to the internal gRPC service `server` (its identity: `users`)
    /// at `url`, the value of the setting `setting` (`users_grpc_url`). With this service's
    /// mutual TLS configured, `url` must be `https://` and the peer must present the CA's
    /// certificate for `server`, whatever address `url` names; without, it must be
    /// `http://`.
    pub fn grpc_endpoint(
        &self,
        setting: &str,
        url: &str,
        server: &str,
    ) -> Result<tonic::transport::Endpoint, tessera_config::ConfigError> {
        grpc::endpoint(self.config.grpc_tls.as_ref(), setting, url, server)
    }

    /// Runs work to its end even when the request that started it goes away (a client
    /// hanging up must not stop a saga half-way); the runtime waits for such work at
    /// shutdown, before closing the pools.
    pub fn detacher(&self) -> Detacher {
        Detacher(self.detached.clone())
    }
}

/// Runs work to its end regardless of its caller; see [`Context::detacher`].
#[derive(Clone)]
pub struct Detacher(TaskTracker);

impl Detacher {
    /// Runs `work` on its own, in the caller's span (its trace goes on); the runtime waits
    /// for it at shutdown.
    pub fn spawn<T: Send + 'static>(
        &self,
        work: impl Future<Output = T> + Send + 'static,
    ) -> JoinHandle<T> {
        self.0.spawn(work.instrument(tracing::Span::current()))
    }
}

/// What a service serves and runs.
#[derive(Default)]
pub struct Endpoints {
    /// REST routes, under `/api/...` by convention.
    pub http: axum::Router,
    /// gRPC services.
    pub grpc: GrpcServices,
    /// Its event consumer (from [`Context::consumer`]), if it consumes any.
    pub consumer: Option<Consumer>,
    /// Its own background work.
    pub tasks: Vec<Task>,
    /// Whether its handlers read the TCP peer's address (axum's `ConnectInfo<SocketAddr>`).
    /// Only then is it recorded: it costs every request an extension, an allocation and a
    /// growth of the request's extensions map.
    pub peer_addresses: bool,
}
