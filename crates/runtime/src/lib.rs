//! One way for a tessera service to boot, serve and stop.
//!
//! A service's `main` is one call:
//!
//! ```ignore
//! fn main() -> std::process::ExitCode {
//!     tessera_runtime::main(&users::SPEC, users::endpoints)
//! }
//! ```
//!
//! [`main`] parses the command line (`serve` or `migrate`), loads [`RuntimeConfig`] from the
//! service's `<PREFIX>_*` variables, sets up logging, and then, for `serve`:
//!
//! 1. opens the pools: PostgreSQL (lazy, with acquire and statement timeouts), Redis
//!    (deadpool, bounded waits) and the broker connection (reconnecting in the background);
//! 2. applies migrations, creating the database if it does not exist;
//! 3. asks the service for its [`Endpoints`], given a [`Context`] holding those pools;
//! 4. serves REST (axum) and gRPC (tonic, with `grpc.health.v1` and reflection) on their own
//!    ports, with request timeouts, a body limit and load shedding on by default;
//! 5. on SIGTERM/SIGINT: turns readiness false, keeps serving for `shutdown_delay_ms`, stops
//!    accepting, lets in-flight requests finish within `shutdown_timeout_ms`, closes the
//!    pools and exits 0.
//!
//! A configuration error stops the process before anything starts, with one line naming the
//! variable.

mod cache;
mod cli;
mod config;
mod database;
mod grpc;
mod http;
pub mod openapi;
mod shutdown;

use std::future::Future;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use secrecy::ExposeSecret;
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use tessera_messaging::{
    Broker, BrokerSettings, Consumer, MessagingMetrics, Outbox, Relay, RelaySettings,
};
use tessera_observability::{Health, Metrics};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use cache::{CacheMetrics, JsonCache};
pub use cli::Command;
pub use config::RuntimeConfig;
pub use grpc::GrpcServices;
pub use shutdown::signal as shutdown_signal;

/// A boxed error from a service's set-up code.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

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
}

/// What a service gets to build its endpoints: configuration and shared resources.
#[derive(Clone)]
pub struct Context {
    /// The runtime settings.
    pub config: Arc<RuntimeConfig>,
    /// The service's PostgreSQL pool.
    pub db: PgPool,
    /// The service's Redis pool.
    pub redis: deadpool_redis::Pool,
    /// The service's broker connection.
    pub broker: Broker,
    /// Writes the service's events inside its transactions.
    pub outbox: Outbox,
    /// Metrics of the event pipeline, for the service's consumers.
    pub messaging: MessagingMetrics,
    /// Metrics shared by the service's caches.
    pub cache_metrics: CacheMetrics,
    /// The metrics registry; register service-specific collectors here.
    pub metrics: Arc<Metrics>,
    /// Cancelled when the service starts shutting down; background tasks watch it.
    pub shutdown: CancellationToken,
}

impl Context {
    /// A Redis cache-aside store named `name` whose entries live for `ttl`; its operations
    /// are bounded by `redis_timeout_ms`.
    pub fn cache(&self, name: &'static str, ttl: Duration) -> JsonCache {
        JsonCache::new(
            self.redis.clone(),
            name,
            ttl,
            Duration::from_millis(self.config.redis_timeout_ms),
            self.cache_metrics.clone(),
        )
    }
}

/// What a service serves.
#[derive(Default)]
pub struct Endpoints {
    /// REST routes, under `/api/...` by convention.
    pub http: axum::Router,
    /// gRPC services.
    pub grpc: GrpcServices,
    /// Event consumers; run until shutdown.
    pub consumers: Vec<Consumer>,
}

/// Why the service stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] tessera_config::ConfigError),
    /// Logging could not be set up.
    #[error(transparent)]
    Logging(#[from] tessera_observability::logging::LoggingError),
    /// The database could not be prepared.
    #[error(transparent)]
    Database(#[from] database::DatabaseError),
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// Anything else that went wrong while starting or serving.
    #[error("{0}")]
    Other(BoxError),
    /// In-flight work did not finish within the shutdown timeout.
    #[error("in-flight requests did not finish within {0:?}; stopped anyway")]
    DrainTimeout(Duration),
}

impl RunError {
    fn other(error: impl Into<BoxError>) -> Self {
        Self::Other(error.into())
    }
}

/// The whole life of a service binary: parse the command, configure, run, report.
///
/// Errors are printed as one line on stderr (and logged when logging is up); the exit code
/// is 0 on a clean stop, 2 for usage or configuration errors, 1 otherwise.
pub fn main<B, Fut>(spec: &'static ServiceSpec, build: B) -> ExitCode
where
    B: FnOnce(Context) -> Fut,
    Fut: Future<Output = Result<Endpoints, BoxError>>,
{
    // rustls (sqlx, lapin) needs one process-wide crypto provider; a second install is a no-op.
    let _ = rustls::crypto::ring::default_provider().install_default();

    let command = match Command::parse(std::env::args().skip(1)) {
        Ok(Command::Help) => {
            print!("{}", Command::usage(spec.name, spec.env_prefix));
            return ExitCode::SUCCESS;
        }
        Ok(command) => command,
        Err(message) => {
            eprintln!(
                "{}: {message}\n\n{}",
                spec.name,
                Command::usage(spec.name, spec.env_prefix)
            );
            return ExitCode::from(2);
        }
    };
    let config = match tessera_config::load_dotenv()
        .and_then(|()| tessera_config::load::<RuntimeConfig>(spec.env_prefix))
    {
        Ok(config) => config,
        Err(error) => {
            eprintln!("{}: {error}", spec.name);
            return ExitCode::from(2);
        }
    };
    if let Err(error) = tessera_observability::logging::init(config.log_format, &config.log_filter)
    {
        eprintln!("{}: {error}", spec.name);
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("{}: cannot start the async runtime: {error}", spec.name);
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        match command {
            Command::Migrate => migrate(spec, &config).await,
            _ => serve(spec, config, build, shutdown::signal()).await,
        }
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let code = if matches!(error, RunError::Config(_)) {
                2
            } else {
                1
            };
            tracing::error!(error = %tessera_errors::error_chain(&error), "{} stopped with an error", spec.name);
            eprintln!("{}: {}", spec.name, tessera_errors::error_chain(&error));
            ExitCode::from(code)
        }
    }
}

/// The `migrate` command: create the database if needed and apply pending migrations.
pub async fn migrate(spec: &ServiceSpec, config: &RuntimeConfig) -> Result<(), RunError> {
    let db = database::pool(config)?;
    database::migrate(config, &db, spec.migrator).await?;
    db.close().await;
    Ok(())
}

/// The `serve` command: runs the service until `stop` completes, then shuts down gracefully.
///
/// The configured ports are bound once the service is built, so nothing connects before
/// it can answer.
pub async fn serve<B, Fut>(
    spec: &ServiceSpec,
    config: RuntimeConfig,
    build: B,
    stop: impl Future<Output = ()>,
) -> Result<(), RunError>
where
    B: FnOnce(Context) -> Fut,
    Fut: Future<Output = Result<Endpoints, BoxError>>,
{
    run(spec, config, None, build, stop).await
}

/// [`serve`] on listeners the caller bound. Tests bind port 0 and start services side by
/// side, so no two of them can ever race for the same port.
pub async fn serve_on<B, Fut>(
    spec: &ServiceSpec,
    config: RuntimeConfig,
    listeners: Listeners,
    build: B,
    stop: impl Future<Output = ()>,
) -> Result<(), RunError>
where
    B: FnOnce(Context) -> Fut,
    Fut: Future<Output = Result<Endpoints, BoxError>>,
{
    run(spec, config, Some(listeners), build, stop).await
}

/// The REST and gRPC listening sockets of a service.
pub struct Listeners {
    /// Where REST (and health, metrics) is served.
    pub http: TcpListener,
    /// Where gRPC is served.
    pub grpc: TcpListener,
}

impl Listeners {
    /// Binds the addresses `config` names, `spec`'s default ports where it names none.
    pub async fn bind(spec: &ServiceSpec, config: &RuntimeConfig) -> Result<Self, RunError> {
        Ok(Self {
            http: bind(config.http_addr(spec.default_http_port)).await?,
            grpc: bind(config.grpc_addr(spec.default_grpc_port)).await?,
        })
    }
}

async fn run<B, Fut>(
    spec: &ServiceSpec,
    config: RuntimeConfig,
    listeners: Option<Listeners>,
    build: B,
    stop: impl Future<Output = ()>,
) -> Result<(), RunError>
where
    B: FnOnce(Context) -> Fut,
    Fut: Future<Output = Result<Endpoints, BoxError>>,
{
    let config = Arc::new(config);
    let metrics = Metrics::new().map_err(RunError::other)?;
    let db = database::pool(&config)?;
    if config.run_migrations {
        database::migrate(&config, &db, spec.migrator).await?;
    }
    let redis = cache::pool(&config).map_err(RunError::other)?;
    let messaging = MessagingMetrics::register(metrics.registry()).map_err(RunError::other)?;
    let cache_metrics = CacheMetrics::register(metrics.registry()).map_err(RunError::other)?;
    let broker = Broker::start(
        BrokerSettings {
            url: config.amqp_url.expose_secret().to_owned().into(),
            connection_name: spec.name.to_owned(),
            min_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(10),
        },
        messaging.connection_up.clone(),
    );
    let health = Arc::new(
        Health::new(Duration::from_millis(config.health_check_timeout_ms))
            .with_check(database::PostgresCheck(db.clone()))
            .with_check(cache::RedisCheck(redis.clone()))
            .with_check(broker.health_check()),
    );
    let shutdown = CancellationToken::new();
    let context = Context {
        config: Arc::clone(&config),
        db: db.clone(),
        redis: redis.clone(),
        broker: broker.clone(),
        outbox: Outbox::new(spec.name),
        metrics: Arc::clone(&metrics),
        messaging: messaging.clone(),
        cache_metrics,
        shutdown: shutdown.clone(),
    };
    let mut endpoints = build(context).await.map_err(service_error)?;

    // Every service has an outbox; its relay and the service's consumers run until the
    // requests in flight are done, so the events those requests write are still published.
    let relay = Relay::new(
        db.clone(),
        broker.clone(),
        RelaySettings::default(),
        messaging,
    );
    let mut messaging_tasks = vec![tokio::spawn(relay.run(shutdown.clone()))];
    for consumer in std::mem::take(&mut endpoints.consumers) {
        messaging_tasks.push(tokio::spawn(consumer.run(shutdown.clone())));
    }

    let Listeners {
        http: http_listener,
        grpc: grpc_listener,
    } = match listeners {
        Some(listeners) => listeners,
        None => Listeners::bind(spec, &config).await?,
    };
    let http_addr = http_listener.local_addr().map_err(RunError::other)?;
    let grpc_addr = grpc_listener.local_addr().map_err(RunError::other)?;

    let app = http::app(
        endpoints.http,
        &health,
        &metrics,
        http::Limits {
            request_timeout: config.request_timeout(),
            body_limit_bytes: config.body_limit_bytes,
            concurrency: config.concurrency_limit,
        },
    );
    // Listeners close when `listeners` is cancelled; `shutdown` (seen by the service's own
    // tasks) is cancelled only after in-flight requests are done, so they can still use them.
    let listeners = CancellationToken::new();
    let http_server = tokio::spawn(
        // Peer addresses are recorded for handlers that limit by client (auth's logins).
        axum::serve(
            http_listener,
            app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .with_graceful_shutdown(listeners.clone().cancelled_owned())
        .into_future(),
    );
    let grpc_names = endpoints.grpc.names().to_vec();
    let (reporter, health_service) = tonic_health::server::health_reporter();
    let grpc_server = tokio::spawn({
        let metrics = Arc::clone(&metrics);
        let listeners = listeners.clone();
        let settings = grpc::GrpcSettings {
            request_timeout: config.request_timeout(),
            concurrency: config.concurrency_limit,
            descriptors: spec.descriptors,
        };
        async move {
            grpc::serve(
                grpc_listener,
                endpoints.grpc,
                settings,
                &metrics,
                health_service,
                listeners,
            )
            .await
        }
    });
    health.mark_started();
    let draining = CancellationToken::new();
    let health_sync = tokio::spawn(grpc::sync_health(
        Arc::clone(&health),
        reporter,
        grpc_names,
        draining.clone(),
    ));
    tracing::info!(%http_addr, %grpc_addr, "{} is serving", spec.name);

    stop.await;
    tracing::info!("shutting down: readiness is now false");
    health.mark_draining();
    draining.cancel();
    let _ = health_sync.await;
    tokio::time::sleep(Duration::from_millis(config.shutdown_delay_ms)).await;
    listeners.cancel();

    let drain_limit = Duration::from_millis(config.shutdown_timeout_ms);
    let drained = tokio::time::timeout(drain_limit, async {
        let (http_result, grpc_result) = tokio::join!(http_server, grpc_server);
        flatten(http_result.map(|r| r.map_err(RunError::other)))?;
        flatten(grpc_result.map(|r| r.map_err(RunError::other)))
    })
    .await;
    shutdown.cancel();
    let flushed =
        tokio::time::timeout(drain_limit, futures::future::join_all(messaging_tasks)).await;
    if flushed.is_err() {
        tracing::warn!("the outbox relay or a consumer did not stop within {drain_limit:?}");
    }
    broker.close().await;
    redis.close();
    db.close().await;
    match drained {
        Ok(result) => {
            result?;
            tracing::info!("{} stopped cleanly", spec.name);
            Ok(())
        }
        Err(_) => Err(RunError::DrainTimeout(drain_limit)),
    }
}

async fn bind(addr: std::net::SocketAddr) -> Result<TcpListener, RunError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| RunError::Bind { addr, source })
}

/// A service's own settings are loaded in its `build`; their errors stay configuration errors
/// (exit code 2, the variable named).
fn service_error(error: BoxError) -> RunError {
    match error.downcast::<tessera_config::ConfigError>() {
        Ok(config) => RunError::Config(*config),
        Err(other) => RunError::Other(other),
    }
}

fn flatten(joined: Result<Result<(), RunError>, tokio::task::JoinError>) -> Result<(), RunError> {
    joined.map_err(RunError::other)?
}
