//! The REST side: the service's routes behind the default limits, next to the ops routes.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use tessera_errors::Error;
use tessera_observability::{Health, Metrics, access_log, metrics, request_id, trace_context};
use tower::ServiceBuilder;
use tower::ServiceExt;

use crate::limits::LimitLayer;

/// Limits applied to every API request.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Longest a request may take (504 beyond).
    pub request_timeout: Duration,
    /// Largest body accepted (413 beyond).
    pub body_limit_bytes: usize,
    /// Most requests in progress; more are shed with 503 at once.
    pub concurrency: usize,
}

/// Builds the HTTP application.
///
/// The ops routes (`/health/*`, `/metrics`) sit outside the limits and the request log, so
/// probes keep answering under overload and do not flood the logs. API routes get, from the
/// outside in: a body limit, a request id, a span and the request's log line, load shedding with a concurrency limit, a
/// timeout, then after routing the span's name and RED metrics by route template. Unknown
/// routes and methods answer problem+json.
pub fn app(api: Router, health: &Arc<Health>, metrics: &Arc<Metrics>, limits: Limits) -> Router {
    let api = api
        .fallback(|| async { Error::NotFound("route") })
        .method_not_allowed_fallback(|| async { Error::MethodNotAllowed })
        .layer(
            ServiceBuilder::new()
                .map_request(name_span)
                .layer(metrics.http_layer()),
        );

    // The body limit is an extension extractors read: set outside the router, it costs no
    // layer around every route (each boxes its future and clones its service per request).
    let api = ServiceBuilder::new()
        .layer(DefaultBodyLimit::max(limits.body_limit_bytes))
        .layer(request_id::layer())
        .layer(access_log::layer())
        .layer(LimitLayer::new(
            limits.concurrency,
            limits.request_timeout,
            Arc::clone(metrics),
        ))
        .service(api)
        .map_err(|never| match never {});

    health
        .router()
        .route(
            "/metrics",
            get(metrics::handler).with_state(Arc::clone(metrics)),
        )
        .method_not_allowed_fallback(|| async { Error::MethodNotAllowed })
        .fallback_service(api)
}

/// Once routing matched a route, names the request's span after it (RED metrics are
/// recorded under it by the layer after this one). Layers on the routes, not axum `from_fn`
/// middleware: those box their futures and clone the routes' service on every request.
fn name_span(request: axum::extract::Request) -> axum::extract::Request {
    trace_context::name_http_span(&request);
    request
}
