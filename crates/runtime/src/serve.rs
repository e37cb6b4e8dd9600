//! The `serve` command: open the pools, build the service, serve, and stop gracefully.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use secrecy::ExposeSecret as _;
use sqlx::PgPool;
use tessera_messaging::{Broker, MessagingMetrics, Outbox, Relay};
use tessera_observability::{Health, Metrics};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cache::{self, CacheMetrics};
use crate::config::RuntimeConfig;
use crate::error::RunError;
use crate::service::{Context, Endpoints, Service, ServiceSpec};
use crate::tasks::{Supervisor, Task};
use crate::{database, events, grpc, http};

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

impl Listeners {
    /// The REST and gRPC addresses they listen on.
    fn addresses(&self) -> Result<(SocketAddr, SocketAddr), RunError> {
        let http = self.http.local_addr().map_err(RunError::other)?;
        let grpc = self.grpc.local_addr().map_err(RunError::other)?;
        Ok((http, grpc))
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, RunError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| RunError::Bind { addr, source })
}

/// Runs `S` until `stop` completes (or one of its tasks fails), then shuts down gracefully.
///
/// `listeners`: where to serve; `None` binds the configured addresses once the service is
/// built, so nothing connects before it can answer. Tests bind port 0 themselves and pass
/// the sockets, so no two services can ever race for one port.
pub async fn serve<S: Service>(
    config: RuntimeConfig,
    settings: S::Settings,
    listeners: Option<Listeners>,
    stop: impl Future<Output = ()>,
) -> Result<(), RunError> {
    let spec = S::SPEC;
    let resources = Resources::open(spec, config).await?;
    let mut supervisor = Supervisor::new(resources.metrics.registry(), resources.shutdown.clone())
        .map_err(RunError::other)?;
    let health = Arc::new(resources.health(&supervisor));
    let detached = TaskTracker::new();
    let context = resources.context(spec, detached.clone());
    let endpoints = match S::build(context, settings).await {
        Ok(endpoints) => endpoints,
        Err(error) => {
            resources.close().await;
            return Err(service_error(error, spec));
        }
    };
    let Endpoints {
        http: routes,
        grpc: grpc_services,
        consumer,
        tasks,
        peer_addresses,
    } = endpoints;
    if let Err(error) = events::check_subscription(spec, consumer.as_ref()) {
        resources.close().await;
        return Err(error);
    }

    let bound = match listeners {
        Some(listeners) => Ok(listeners),
        None => Listeners::bind(spec, &resources.config).await,
    }
    .and_then(|listeners| Ok((listeners.addresses()?, listeners)));
    let (addresses, listeners) = match bound {
        Ok(bound) => bound,
        Err(error) => {
            resources.close().await;
            return Err(error);
        }
    };

    // Every service has an outbox; its relay and consumer run until the requests in flight
    // are done, so the events those requests write are still published.
    supervisor.start(Task::lifelong(
        "relay",
        resources.relay().run(resources.shutdown.clone()),
    ));
    if let Some(consumer) = consumer {
        supervisor.start(Task::lifelong(
            "consumer",
            consumer.run(resources.shutdown.clone()),
        ));
    }
    for task in tasks {
        supervisor.start(task);
    }

    let rest = HttpEndpoint {
        routes,
        peer_addresses,
    };
    let servers = Servers::start(spec, &resources, &health, rest, grpc_services, listeners);
    health.mark_started();
    let (http_addr, grpc_addr) = addresses;
    tracing::info!(%http_addr, %grpc_addr, "{} is serving", spec.name);
    // Say who may reach internal gRPC, so an exposed port is seen.
    if let Some(tls) = &resources.config.grpc_tls {
        tracing::info!(
            %grpc_addr,
            identity = tls.name(),
            "gRPC over mutual TLS: callers need a certificate of the CA and a grant per method"
        );
    } else if grpc_addr.ip().is_loopback() {
        tracing::info!(%grpc_addr, "gRPC without TLS, on the loopback interface only");
    } else {
        tracing::warn!(
            %grpc_addr,
            "gRPC without TLS beyond loopback: only a closed network may reach it"
        );
    }

    let failure = tokio::select! {
        () = stop => None,
        failure = supervisor.first_failure() => Some(failure),
    };
    tracing::info!("shutting down: readiness is now false");
    health.mark_draining();
    let drained = servers.drain(&resources.config).await;

    // Detached work and then the tasks share one more `shutdown_timeout`, as the relay and
    // consumer alone had before: the orchestrator's grace period must cover two of them.
    let limit = Duration::from_millis(resources.config.shutdown_timeout_ms);
    let deadline = tokio::time::Instant::now() + limit;
    detached.close();
    if tokio::time::timeout_at(deadline, detached.wait())
        .await
        .is_err()
    {
        tracing::warn!("detached work did not finish within {limit:?}");
    }
    resources.shutdown.cancel();
    let late_failure = match tokio::time::timeout_at(deadline, supervisor.join()).await {
        Ok(failure) => failure,
        Err(_) => {
            tracing::warn!("background tasks did not stop within {limit:?}");
            None
        }
    };
    resources.close().await;

    drained?;
    if let Some(failure) = failure.or(late_failure) {
        return Err(RunError::TaskFailed(failure));
    }
    tracing::info!("{} stopped cleanly", spec.name);
    Ok(())
}

/// The pools and registries a service runs on.
struct Resources {
    config: Arc<RuntimeConfig>,
    metrics: Arc<Metrics>,
    db: PgPool,
    redis: deadpool_redis::Pool,
    redis_client: deadpool_redis::redis::Client,
    shared_redis: cache::SharedRedis,
    broker: Broker,
    messaging: MessagingMetrics,
    cache_metrics: CacheMetrics,
    /// Cancelled once in-flight requests are done: lifelong tasks then stop.
    shutdown: CancellationToken,
}

impl Resources {
    /// Opens the pools (PostgreSQL lazily, the broker in the background) and applies the
    /// migrations when configured to.
    async fn open(spec: &ServiceSpec, config: RuntimeConfig) -> Result<Self, RunError> {
        let config = Arc::new(config);
        let metrics = Metrics::new().map_err(RunError::other)?;
        let db = database::pool(&config)?;
        if config.run_migrations {
            database::migrate(&config, &db, spec.migrator).await?;
        }
        let redis = cache::pool(&config).map_err(RunError::other)?;
        let redis_client = deadpool_redis::redis::Client::open(config.redis_url.expose_secret())
            .map_err(RunError::other)?;
        let shared_redis = cache::shared_through(
            redis_client.clone(),
            Duration::from_millis(config.redis_timeout_ms),
        )
        .map_err(RunError::other)?;
        let messaging = MessagingMetrics::register(metrics.registry()).map_err(RunError::other)?;
        let cache_metrics = CacheMetrics::register(metrics.registry()).map_err(RunError::other)?;
        let broker = Broker::start(
            events::broker_settings(spec, &config, None),
            messaging.connection_up.clone(),
        );
        Ok(Self {
            config,
            metrics,
            db,
            redis,
            redis_client,
            shared_redis,
            broker,
            messaging,
            cache_metrics,
            shutdown: CancellationToken::new(),
        })
    }

    fn health(&self, supervisor: &Supervisor) -> Health {
        Health::new(Duration::from_millis(self.config.health_check_timeout_ms))
            .with_check(database::PostgresCheck(self.db.clone()))
            .with_check(cache::RedisCheck(self.redis.clone()))
            .with_check(self.broker.health_check())
            .with_check(supervisor.health_check())
    }

    fn context(&self, spec: &'static ServiceSpec, detached: TaskTracker) -> Context {
        Context {
            name: spec.name,
            config: Arc::clone(&self.config),
            db: self.db.clone(),
            redis: self.redis.clone(),
            redis_client: self.redis_client.clone(),
            shared_redis: self.shared_redis.clone(),
            broker: self.broker.clone(),
            outbox: Outbox::new(spec.name),
            messaging: self.messaging.clone(),
            cache_metrics: self.cache_metrics.clone(),
            metrics: Arc::clone(&self.metrics),
            shutdown: self.shutdown.clone(),
            detached,
        }
    }

    fn relay(&self) -> Relay {
        Relay::new(
            self.db.clone(),
            self.broker.clone(),
            events::relay_settings(),
            self.messaging.clone(),
        )
    }

    async fn close(self) {
        self.broker.close().await;
        self.redis.close();
        self.db.close().await;
    }
}

/// The REST and gRPC servers of a running service.
/// The REST side of what a service hands over.
struct HttpEndpoint {
    routes: axum::Router,
    /// Whether requests carry the peer's address (see [`Endpoints::peer_addresses`]).
    peer_addresses: bool,
}

struct Servers {
    http: JoinHandle<Result<(), RunError>>,
    grpc: JoinHandle<Result<(), RunError>>,
    health_sync: JoinHandle<()>,
    /// Closes the listeners.
    listening: CancellationToken,
    /// Tells gRPC health that the service is draining.
    draining: CancellationToken,
}

impl Servers {
    fn start(
        spec: &'static ServiceSpec,
        resources: &Resources,
        health: &Arc<Health>,
        rest: HttpEndpoint,
        services: grpc::GrpcServices,
        listeners: Listeners,
    ) -> Self {
        let config = &resources.config;
        let Listeners {
            http: http_listener,
            grpc: grpc_listener,
        } = listeners;
        let app = http::app(
            rest.routes,
            health,
            &resources.metrics,
            http::Limits {
                request_timeout: config.request_timeout(),
                body_limit_bytes: config.body_limit_bytes,
                concurrency: config.concurrency_limit,
            },
        );
        let listening = CancellationToken::new();
        let stopped = listening.clone().cancelled_owned();
        let http = if rest.peer_addresses {
            let app = app.into_make_service_with_connect_info::<SocketAddr>();
            let serving = axum::serve(http_listener, app).with_graceful_shutdown(stopped);
            tokio::spawn(async move { serving.await.map_err(RunError::other) })
        } else {
            let serving = axum::serve(http_listener, app).with_graceful_shutdown(stopped);
            tokio::spawn(async move { serving.await.map_err(RunError::other) })
        };
        let names = services.names().to_vec();
        let (reporter, health_service) = tonic_health::server::health_reporter();
        let grpc = tokio::spawn({
            let metrics = Arc::clone(&resources.metrics);
            let listening = listening.clone();
            let settings = grpc::GrpcSettings {
                request_timeout: config.request_timeout(),
                concurrency: config.concurrency_limit,
                descriptors: spec.descriptors,
                tls: config.grpc_tls.clone().map(|tls| (tls, spec.grpc_callers)),
            };
            async move {
                grpc::serve(
                    grpc_listener,
                    services,
                    settings,
                    &metrics,
                    health_service,
                    listening,
                )
                .await
                .map_err(RunError::other)
            }
        });
        let draining = CancellationToken::new();
        let health_sync = tokio::spawn(grpc::sync_health(
            Arc::clone(health),
            reporter,
            names,
            draining.clone(),
        ));
        Self {
            http,
            grpc,
            health_sync,
            listening,
            draining,
        }
    }

    /// Keeps serving for `shutdown_delay_ms` with readiness failing, closes the listeners,
    /// and waits up to `shutdown_timeout_ms` for the requests in flight.
    async fn drain(self, config: &RuntimeConfig) -> Result<(), RunError> {
        self.draining.cancel();
        let _ = self.health_sync.await;
        tokio::time::sleep(config.shutdown_delay()).await;
        self.listening.cancel();
        let limit = Duration::from_millis(config.shutdown_timeout_ms);
        let drained = tokio::time::timeout(limit, async {
            let (http, grpc) = tokio::join!(self.http, self.grpc);
            http.map_err(RunError::other)??;
            grpc.map_err(RunError::other)?
        })
        .await;
        drained.unwrap_or(Err(RunError::DrainTimeout(limit)))
    }
}

/// A service's own settings are checked in its `build`; their errors stay configuration
/// errors (exit code 2), the variable named with the service's prefix.
fn service_error(error: tessera_errors::BoxError, spec: &ServiceSpec) -> RunError {
    match error.downcast::<tessera_config::ConfigError>() {
        Ok(config) => RunError::Config(config.in_scope(spec.env_prefix)),
        Err(other) => RunError::Other(other),
    }
}
