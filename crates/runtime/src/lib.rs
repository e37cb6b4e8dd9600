//! One way for a tessera service to boot, serve and stop.
//!
//! A service is a type implementing [`Service`]; its `main` is one call:
//!
//! ```no_run
//! use tessera_runtime::{BoxError, Context, Endpoints, NoSettings, Service, ServiceSpec, Task};
//!
//! struct Hello;
//!
//! impl Service for Hello {
//!     const SPEC: &'static ServiceSpec = &ServiceSpec {
//!         name: "hello",
//!         env_prefix: "HELLO_",
//!         default_http_port: 8080,
//!         default_grpc_port: 50050,
//!         migrator: &sqlx::migrate::Migrator::DEFAULT,
//!         descriptors: &[],
//!         grpc_callers: &[],
//!     };
//!     type Settings = NoSettings;
//!
//!     async fn build(context: Context, _: NoSettings) -> Result<Endpoints, BoxError> {
//!         let routes = axum::Router::new().route("/api/v1/hello", axum::routing::get(|| async { "hello" }));
//!         let stop = context.shutdown.clone();
//!         Ok(Endpoints {
//!             http: routes,
//!             tasks: vec![Task::lifelong("heartbeat", async move {
//!                 while tokio::time::timeout(std::time::Duration::from_secs(60), stop.cancelled()).await.is_err() {
//!                     tracing::info!("still here");
//!                 }
//!             })],
//!             ..Endpoints::default()
//!         })
//!     }
//! }
//!
//! fn main() -> std::process::ExitCode {
//!     tessera_runtime::main::<Hello>()
//! }
//! ```
//!
//! [`main`] parses the command line (`serve`, `migrate` or `healthcheck`), loads [`RuntimeConfig`] and the
//! service's settings from its `<PREFIX>*` variables, sets up logging, and then, for `serve`:
//!
//! 1. opens the pools: PostgreSQL (lazy, with acquire and statement timeouts), Redis
//!    (deadpool, bounded waits) and the broker connection (reconnecting in the background);
//! 2. applies migrations, creating the database if it does not exist;
//! 3. asks the service for its [`Endpoints`], given a [`Context`] holding those pools;
//! 4. serves REST (axum) and gRPC (tonic, with `grpc.health.v1` and reflection) on their own
//!    ports, with request timeouts, a body limit and load shedding on by default, and runs
//!    the outbox relay, the service's consumer and its [`Task`]s, watching them;
//! 5. on SIGTERM/SIGINT (or when a task fails): turns readiness false, keeps serving for
//!    `shutdown_delay_ms`, stops accepting, lets in-flight requests finish within
//!    `shutdown_timeout_ms`, then detached work and the tasks within another, closes the
//!    pools and exits (0, or 1 after a task failure).
//!
//! A configuration error stops the process before anything starts, with one line naming the
//! variable.

mod cache;
mod cli;
mod config;
mod database;
mod error;
mod events;
mod grpc;
mod healthcheck;
mod http;
mod limits;
pub mod openapi;
mod serve;
mod service;
mod shutdown;
mod tasks;

use std::process::ExitCode;

pub use cache::{
    CacheMetrics, JsonCache, NearCache, NearCacheSync, SharedRedis, Snapshot,
    shared as shared_redis,
};
pub use cli::Command;
pub use config::RuntimeConfig;
pub use error::RunError;
pub use grpc::{Grants, GrpcServices, GrpcTls};
use opentelemetry_sdk::trace::SdkTracerProvider;
pub use serve::{Listeners, serve};
pub use service::{Context, Detacher, Endpoints, NoSettings, Service, ServiceSpec};
pub use shutdown::signal as shutdown_signal;
pub use tasks::{Task, TaskFailure};
use tessera_config::ConfigError;
pub use tessera_errors::BoxError;
use tessera_observability::otlp::{self, ExportError, ExportSettings};

/// The whole life of a service binary: parse the command, configure, run, report.
///
/// Errors are printed as one line on stderr (and logged when logging is up); the exit code
/// is 0 on a clean stop, 2 for usage or configuration errors, 1 otherwise.
pub fn main<S: Service>() -> ExitCode {
    let spec = S::SPEC;
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
    // `migrate` needs only the runtime's settings (the deploy step need not know the
    // service's secrets); `serve` needs the service's too.
    let vars = match tessera_config::load_dotenv().map(|()| tessera_config::vars()) {
        Ok(vars) => vars,
        Err(error) => return config_failure(spec, &error),
    };
    if command == Command::Healthcheck {
        return healthcheck(spec, &vars);
    }
    let export: ExportSettings = match tessera_config::from_vars("OTEL_", vars.clone()) {
        Ok(export) => export,
        Err(error) => return config_failure(spec, &error),
    };
    let configured = match command {
        Command::Migrate => tessera_config::from_vars(spec.env_prefix, vars).map(|c| (c, None)),
        _ => configure::<S>(vars).map(|(config, settings)| (config, Some(settings))),
    };
    let (config, settings): (RuntimeConfig, _) = match configured {
        Ok(configured) => configured,
        Err(error) => return config_failure(spec, &error),
    };
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
    let detail = export.detail();
    // The exporter's gRPC client lives on the runtime, so the provider is made inside it.
    let traces = match runtime.block_on(async { tracer_provider(spec, export) }) {
        Ok(traces) => traces,
        Err(error) => return config_failure(spec, &error),
    };
    if let Err(error) =
        tessera_observability::logging::init(config.log_format, &config.log_filter, &traces, detail)
    {
        eprintln!("{}: {error}", spec.name);
        return ExitCode::from(2);
    }
    let outcome = runtime.block_on(async {
        match settings {
            None => migrate(spec, &config).await,
            Some(settings) => serve::<S>(config, settings, None, shutdown::signal()).await,
        }
    });
    // Spans still queued go out before the runtime (and the exporter's client) ends.
    if let Err(error) = traces.shutdown() {
        eprintln!("{}: cannot flush traces: {error}", spec.name);
    }
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

/// The `healthcheck` command: exit 0 when the service on this host is ready, 1 (with the
/// reason on stderr) when it is not.
fn healthcheck(spec: &ServiceSpec, vars: &[(String, String)]) -> ExitCode {
    let port = match healthcheck::port(spec.env_prefix, spec.default_http_port, vars) {
        Ok(port) => port,
        Err(error) => return config_failure(spec, &error),
    };
    match healthcheck::check(port) {
        Ok(()) => ExitCode::SUCCESS,
        Err(reason) => {
            eprintln!("{}: not ready: {reason}", spec.name);
            ExitCode::FAILURE
        }
    }
}

/// Spans of `spec`'s service, exported as `export` says.
fn tracer_provider(
    spec: &ServiceSpec,
    export: ExportSettings,
) -> Result<SdkTracerProvider, ConfigError> {
    otlp::provider(spec.name, env!("CARGO_PKG_VERSION"), &export).map_err(|error| {
        let variable = match error {
            ExportError::Ratio(_) => "traces_sampler_arg",
            ExportError::Exporter(_) => "exporter_otlp_endpoint",
        };
        ConfigError::setting(variable, error.to_string()).in_scope("OTEL_")
    })
}

fn config_failure(spec: &ServiceSpec, error: &ConfigError) -> ExitCode {
    eprintln!("{}: {error}", spec.name);
    ExitCode::from(2)
}

/// The runtime's and `S`'s settings from `vars` (`<PREFIX>*` variables; others are ignored).
pub fn configure<S: Service>(
    vars: impl IntoIterator<Item = (String, String)> + Clone,
) -> Result<(RuntimeConfig, S::Settings), ConfigError> {
    let prefix = S::SPEC.env_prefix;
    let mut config: RuntimeConfig = tessera_config::from_vars(prefix, vars.clone())?;
    config
        .load_grpc_tls()
        .map_err(|error| error.in_scope(prefix))?;
    config.in_kubernetes = vars
        .clone()
        .into_iter()
        .any(|(name, _)| name == "KUBERNETES_SERVICE_HOST");
    let settings = tessera_config::from_vars(prefix, vars)?;
    Ok((config, settings))
}

/// The `migrate` command: create the database if needed, apply pending migrations, and
/// declare the queues of every event subscription (waiting up to a minute for each of
/// PostgreSQL and the broker).
pub async fn migrate(spec: &ServiceSpec, config: &RuntimeConfig) -> Result<(), RunError> {
    let db = database::pool(config)?;
    let migrated = database::migrate(config, &db, spec.migrator).await;
    db.close().await;
    migrated?;
    events::declare_subscriptions(spec, config, database::AVAILABILITY_WAIT).await
}
