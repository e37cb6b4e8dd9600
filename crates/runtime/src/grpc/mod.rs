//! The gRPC side: the service's services plus `grpc.health.v1` and reflection, over mutual
//! TLS with per-method callers when configured.

mod callers;
mod tls;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use tessera_config::ConfigError;
use tessera_observability::health::Status;
use tessera_observability::{Health, Metrics, request_id, trace_context};
use tokio_util::sync::CancellationToken;
use tonic::body::Body;
use tonic::server::NamedService;
use tonic::service::Routes;
use tonic_health::ServingStatus;
use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::HealthReporter;
use tower::ServiceBuilder;

pub(crate) use callers::CallerCheck;
pub use callers::Grants;
pub use tls::GrpcTls;

/// The gRPC services a service offers, with their names for `grpc.health.v1`.
#[derive(Default)]
pub struct GrpcServices {
    routes: Routes,
    names: Vec<&'static str>,
}

impl GrpcServices {
    /// Adds a generated tonic server (`UserServiceServer::new(..)`).
    #[must_use]
    pub fn with<S>(mut self, service: S) -> Self
    where
        S: tower::Service<http::Request<Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Response: axum::response::IntoResponse,
        S::Future: Send + 'static,
    {
        self.routes = self.routes.add_service(service);
        self.names.push(S::NAME);
        self
    }

    /// The names of the services added, as `grpc.health.v1` knows them.
    pub fn names(&self) -> &[&'static str] {
        &self.names
    }
}

/// The standard health service's name.
const HEALTH_SERVICE: &str = "grpc.health.v1.Health";

/// Longest a TLS handshake may take before the connection is closed: far beyond any honest
/// peer's, short enough that stalled connections cannot pile up.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How often readiness is re-evaluated for `grpc.health.v1`.
const HEALTH_SYNC_INTERVAL: Duration = Duration::from_secs(5);

/// Settings of the gRPC server.
pub struct GrpcSettings {
    /// Deadline applied when the client sets none (or a longer one).
    pub request_timeout: Duration,
    /// Most concurrent calls per connection; more are shed with UNAVAILABLE.
    pub concurrency: usize,
    /// Encoded file descriptor sets of the offered services, for reflection.
    pub descriptors: &'static [&'static [u8]],
    /// Mutual TLS, and who may call each method over it; plaintext when `None`.
    pub tls: Option<(GrpcTls, Grants)>,
}

/// Serves `services` with health and reflection on `listener` until `shutdown` fires, then
/// drains in-flight calls.
pub async fn serve(
    listener: tokio::net::TcpListener,
    services: GrpcServices,
    settings: GrpcSettings,
    metrics: &Arc<Metrics>,
    health_service: HealthServer<impl tonic_health::pb::health_server::Health>,
    shutdown: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    // Both reflection versions: grpcurl and most tools speak v1, some clients only v1alpha.
    let reflection_v1 = reflection(
        &settings,
        &services.names,
        tonic_reflection::pb::v1::server_reflection_server::SERVICE_NAME,
    )
    .build_v1()
    .inspect_err(|error| tracing::warn!(%error, "gRPC reflection v1 is unavailable"))
    .ok();
    let reflection_v1alpha = reflection(
        &settings,
        &services.names,
        tonic_reflection::pb::v1alpha::server_reflection_server::SERVICE_NAME,
    )
    .build_v1alpha()
    .inspect_err(|error| tracing::warn!(%error, "gRPC reflection v1alpha is unavailable"))
    .ok();
    let layers = ServiceBuilder::new()
        .layer(request_id::layer())
        .layer(metrics.grpc_layer())
        .layer(CallerCheck::new(
            settings.tls.as_ref().map(|(_, grants)| *grants),
        ));
    let router = tonic::transport::Server::builder()
        .timeout(settings.request_timeout)
        .concurrency_limit_per_connection(settings.concurrency)
        .load_shed(true)
        .trace_fn(call_span)
        .layer(layers)
        .add_routes(services.routes)
        .add_service(health_service)
        .add_optional_service(reflection_v1)
        .add_optional_service(reflection_v1alpha);
    match &settings.tls {
        Some((tls, _)) => {
            let incoming = tls.incoming(listener, TLS_HANDSHAKE_TIMEOUT, shutdown.clone());
            router
                .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
                .await
        }
        None => {
            let incoming = tonic::transport::server::TcpIncoming::from(listener);
            router
                .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
                .await
        }
    }
}

/// See [`crate::Context::grpc_endpoint`].
pub(crate) fn endpoint(
    tls: Option<&GrpcTls>,
    setting: &str,
    url: &str,
    server: &str,
) -> Result<tonic::transport::Endpoint, ConfigError> {
    let invalid = |problem: String| ConfigError::setting(setting, problem);
    let endpoint = tonic::transport::Endpoint::from_shared(url.to_owned())
        .map_err(|error| invalid(format!("not a valid URL: {error}")))?;
    match (tls, endpoint.uri().scheme_str()) {
        (Some(tls), Some("https")) => endpoint
            .tls_config(tls.client(server))
            .map_err(|error| invalid(format!("TLS: {error}"))),
        (None, Some("http")) => Ok(endpoint),
        (Some(_), _) => Err(invalid(format!(
            "{url} is not https://: with GRPC_TLS_* set, calls go over mutual TLS"
        ))),
        (None, _) => Err(invalid(format!(
            "{url} is not http://: calls over TLS need this service's GRPC_TLS_CERT, \
             GRPC_TLS_KEY and GRPC_TLS_CA"
        ))),
    }
}

/// The SERVER span of one call, named `package.Service/Method`, continuing the caller's
/// trace. Its status code is recorded by the metrics layer, which sees the answer.
fn call_span(request: &http::Request<()>) -> tracing::Span {
    let path = request.uri().path().trim_start_matches('/');
    let (service, method) = path.split_once('/').unwrap_or((path, ""));
    let span = tracing::info_span!(
        "grpc_request",
        otel.name = path,
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        rpc.system = "grpc",
        rpc.service = service,
        rpc.method = method,
        rpc.grpc.status_code = tracing::field::Empty,
        request_id = %request_id::of(request),
    );
    trace_context::continue_from(&span, request.headers());
    span
}

/// A reflection builder that advertises exactly the services served: the service's own,
/// health, and the reflection service itself (`reflection_name`).
fn reflection<'a>(
    settings: &'a GrpcSettings,
    names: &[&'static str],
    reflection_name: &'static str,
) -> tonic_reflection::server::Builder<'a> {
    let mut builder = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .with_service_name(HEALTH_SERVICE)
        .with_service_name(reflection_name);
    for descriptor in settings.descriptors {
        builder = builder.register_encoded_file_descriptor_set(descriptor);
    }
    for name in names {
        builder = builder.with_service_name(*name);
    }
    builder
}

/// Keeps `grpc.health.v1` in step with readiness: the overall status (`""`) and each named
/// service are SERVING exactly when `/health/ready` would answer 200.
pub async fn sync_health(
    health: Arc<Health>,
    reporter: HealthReporter,
    names: Vec<&'static str>,
    stop: CancellationToken,
) {
    loop {
        let status = match health.report().await.status {
            Status::Ready | Status::Degraded => ServingStatus::Serving,
            Status::NotReady => ServingStatus::NotServing,
        };
        set_all(&reporter, &names, status).await;
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(HEALTH_SYNC_INTERVAL) => {}
        }
    }
    set_all(&reporter, &names, ServingStatus::NotServing).await;
}

async fn set_all(reporter: &HealthReporter, names: &[&'static str], status: ServingStatus) {
    reporter.set_service_status("", status).await;
    for name in names {
        reporter.set_service_status(*name, status).await;
    }
}
