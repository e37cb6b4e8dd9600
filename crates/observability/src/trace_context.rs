//! W3C trace context: spans that carry OpenTelemetry contexts, and `traceparent` across hops.
//!
//! [`layer`] gives `tracing` spans at INFO or above an OpenTelemetry span, so a trace id
//! follows a request across HTTP, gRPC and the broker, and the spans reach the exporter of the
//! provider it is given ([`crate::otlp`]). Calls to data stores get one only when spans are
//! exported ([`Detail`]). Span names and attributes follow the OpenTelemetry
//! semantic conventions, set through the `otel.name`, `otel.kind` and dotted fields.

use std::collections::HashMap;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::{Level, Metadata};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::registry::LookupSpan;

/// The header (and map key) carrying the trace context.
pub const TRACEPARENT: &str = "traceparent";

/// Which spans become OpenTelemetry spans.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detail {
    /// Every span at INFO and above: for a process that exports its spans.
    Full,
    /// All but the calls to data stores ([`is_data_store_call`]). A process that exports
    /// nothing needs spans only to carry trace context across hops and to name the trace of
    /// its log lines; the two to four store calls of a request are leaves of the trace and
    /// most of its spans, so leaving them out keeps tracing off the hot path's bill.
    ContextOnly,
}

/// Whether `metadata` is a span of a call to a data store (PostgreSQL, Redis): one with the
/// `db.system.name` attribute, as [`redis_span`] and the repositories' spans have.
pub fn is_data_store_call(metadata: &Metadata<'_>) -> bool {
    metadata.is_span() && metadata.fields().field("db.system.name").is_some()
}

/// The layer that makes `tracing` spans OpenTelemetry spans of `provider`, at `detail`.
///
/// It sees spans at INFO and above and events at WARN and above (recorded on their span),
/// whatever the log filter says: how much is logged must not decide what is traced.
pub fn layer<S>(provider: &SdkTracerProvider, detail: Detail) -> impl Layer<S>
where
    S: tracing::Subscriber + for<'span> LookupSpan<'span>,
{
    tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("tessera"))
        // Built lazily (when a context is asked for, or at close) rather than on first
        // entry, so a request span can still be named after its route once routing is done.
        .with_context_activation(false)
        // Source locations, targets, thread names and busy/idle timings on every span cost
        // time on the hot path and tell a trace reader nothing the span name does not.
        .with_location(false)
        .with_target(false)
        .with_threads(false)
        .with_tracked_inactivity(false)
        .with_filter(filter_fn(move |metadata| {
            let least = if metadata.is_span() {
                Level::INFO
            } else {
                Level::WARN
            };
            *metadata.level() <= least
                && (detail == Detail::Full || !is_data_store_call(metadata))
                // The exporter's own complaints are logged, not traced: recording them on
                // a span would feed the exporter what it reports about.
                && !metadata.target().starts_with("opentelemetry")
        }))
}

/// The `traceparent` of the current span, if it is being traced.
pub fn current_traceparent() -> Option<String> {
    let context = tracing::Span::current().context();
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&context, &mut carrier);
    carrier.remove(TRACEPARENT)
}

/// Makes `span` a child of the remote span named by `traceparent`. A malformed value is
/// ignored: the span then starts a trace of its own.
pub fn set_remote_parent(span: &tracing::Span, traceparent: &str) {
    let carrier = HashMap::from([(TRACEPARENT.to_owned(), traceparent.to_owned())]);
    let parent = TraceContextPropagator::new().extract(&carrier);
    if let Err(error) = span.set_parent(parent) {
        tracing::debug!(%error, "cannot attach the remote trace context");
    }
}

/// Continues the caller's trace on `span` when the request `headers` (HTTP, or gRPC
/// metadata) carry a `traceparent`.
pub fn continue_from(span: &tracing::Span, headers: &http::HeaderMap) {
    if let Some(traceparent) = headers
        .get(TRACEPARENT)
        .and_then(|value| value.to_str().ok())
    {
        set_remote_parent(span, traceparent);
    }
}

/// Names the current span, a request's, after the route template routing matched
/// (`GET /users/{id}`), as the semantic conventions ask; never after the raw path, which
/// would make every span name unique. Call it from a `Router::layer` middleware, which runs
/// after routing; a request no route matched keeps its span's name.
pub fn name_http_span<B>(request: &http::Request<B>) {
    let Some(route) = request.extensions().get::<axum::extract::MatchedPath>() else {
        return;
    };
    let span = tracing::Span::current();
    if let Some(fields) = span.metadata().map(tracing::Metadata::fields)
        && let (Some(route_field), Some(name_field)) =
            (fields.field("http.route"), fields.field("otel.name"))
    {
        // One record of both: each record makes every layer handle the span again
        // (the JSON log layer renders the recorded fields anew).
        let name = format_args!("{} {}", request.method(), route.as_str());
        span.record_all(&fields.value_set(&[
            (&route_field, Some(&route.as_str() as &dyn tracing::Value)),
            (&name_field, Some(&name as &dyn tracing::Value)),
        ]));
    }
}

/// Records the response status on a request's span; a 5xx marks it failed (a 4xx is the
/// client's error, not the server's).
pub fn record_http_status(span: &tracing::Span, status: http::StatusCode) {
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
}

/// A CLIENT span for a Redis command (or pipeline) `operation` (`"GET"`, `"MULTI"`).
pub fn redis_span(operation: &'static str) -> tracing::Span {
    tracing::info_span!(
        "redis",
        otel.name = format_args!("redis {operation}"),
        otel.kind = "client",
        db.system.name = "redis",
        db.operation.name = operation,
    )
}

/// A CLIENT span for a call to gRPC method `method` (`"GetUser"`) of `service`
/// (`"tessera.users.v1.UserService"`); instrument the call with it and send through
/// [`propagate`] so the server continues the trace.
pub fn grpc_client_span(service: &'static str, method: &'static str) -> tracing::Span {
    tracing::info_span!(
        "grpc_client",
        otel.name = format_args!("{service}/{method}"),
        otel.kind = "client",
        otel.status_code = tracing::field::Empty,
        rpc.system = "grpc",
        rpc.service = service,
        rpc.method = method,
        rpc.grpc.status_code = tracing::field::Empty,
    )
}

/// Records the outcome of a gRPC call on its span (client or server): the status code, and
/// an error status for the codes that mean the call failed rather than answered.
pub fn record_grpc_code(span: &tracing::Span, code: tonic::Code) {
    span.record("rpc.grpc.status_code", code as i32);
    if matches!(
        code,
        tonic::Code::Unknown
            | tonic::Code::DeadlineExceeded
            | tonic::Code::Unimplemented
            | tonic::Code::Internal
            | tonic::Code::Unavailable
            | tonic::Code::DataLoss
    ) {
        span.record("otel.status_code", "ERROR");
    }
}

/// A tonic interceptor that sends the current span's `traceparent` with each call.
pub fn propagate(mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
    if let Some(value) = current_traceparent().and_then(|value| value.parse().ok()) {
        request.metadata_mut().insert(TRACEPARENT, value);
    }
    Ok(request)
}

/// A gRPC channel whose calls carry the trace context ([`propagate`]).
pub type TracedChannel = tonic::service::interceptor::InterceptedService<
    tonic::transport::Channel,
    fn(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status>,
>;

/// `channel`, sending the trace context with every call.
pub fn traced(channel: tonic::transport::Channel) -> TracedChannel {
    tonic::service::interceptor::InterceptedService::new(channel, propagate)
}

#[cfg(test)]
mod tests {
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    fn provider() -> SdkTracerProvider {
        SdkTracerProvider::builder().build()
    }

    #[test]
    fn a_child_of_a_remote_parent_continues_its_trace() {
        let subscriber = tracing_subscriber::registry().with(layer(&provider(), Detail::Full));
        tracing::subscriber::with_default(subscriber, || {
            let root = tracing::info_span!("request");
            let parent = root.in_scope(current_traceparent).unwrap();
            let trace_id = parent.split('-').nth(1).unwrap().to_owned();
            assert_eq!(parent.len(), 55, "{parent}");

            let consumer = tracing::info_span!("consume");
            set_remote_parent(&consumer, &parent);
            let child = consumer.in_scope(current_traceparent).unwrap();
            assert_eq!(child.split('-').nth(1).unwrap(), trace_id);
            assert_ne!(child, parent);
        });
    }

    const REMOTE: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    #[test]
    fn a_request_with_a_traceparent_continues_the_callers_trace() {
        let subscriber = tracing_subscriber::registry().with(layer(&provider(), Detail::Full));
        tracing::subscriber::with_default(subscriber, || {
            let mut headers = http::HeaderMap::new();
            headers.insert(TRACEPARENT, REMOTE.parse().unwrap());
            let span = tracing::info_span!("http_request");
            continue_from(&span, &headers);
            let ours = span.in_scope(current_traceparent).unwrap();
            assert_eq!(ours.split('-').nth(1), REMOTE.split('-').nth(1));
            assert_ne!(ours.split('-').nth(2), REMOTE.split('-').nth(2));

            let fresh = tracing::info_span!("http_request");
            continue_from(&fresh, &http::HeaderMap::new());
            let unrelated = fresh.in_scope(current_traceparent).unwrap();
            assert_ne!(unrelated.split('-').nth(1), REMOTE.split('-').nth(1));
        });
    }

    #[test]
    fn a_grpc_call_carries_the_current_span_as_its_parent() {
        let subscriber = tracing_subscriber::registry().with(layer(&provider(), Detail::Full));
        tracing::subscriber::with_default(subscriber, || {
            let span = grpc_client_span("tessera.users.v1.UserService", "GetUser");
            let _entered = span.enter();
            let request = propagate(tonic::Request::new(())).unwrap();
            let sent = request
                .metadata()
                .get(TRACEPARENT)
                .unwrap()
                .to_str()
                .unwrap();
            assert_eq!(Some(sent.to_owned()), current_traceparent());
        });
        let untraced = propagate(tonic::Request::new(())).unwrap();
        assert!(untraced.metadata().get(TRACEPARENT).is_none());
    }

    #[test]
    fn data_store_calls_are_spans_of_their_own_only_in_full_detail() {
        for (detail, own_span) in [(Detail::Full, true), (Detail::ContextOnly, false)] {
            let subscriber = tracing_subscriber::registry().with(layer(&provider(), detail));
            tracing::subscriber::with_default(subscriber, || {
                let request = tracing::info_span!("request");
                let _entered = request.enter();
                let outer = current_traceparent().unwrap();
                let inner = redis_span("GET").in_scope(current_traceparent).unwrap();
                assert_eq!(inner != outer, own_span, "{detail:?}");
                assert_eq!(inner.split('-').nth(1), outer.split('-').nth(1));
            });
        }
    }

    #[test]
    fn no_traceparent_outside_a_span() {
        let subscriber = tracing_subscriber::registry().with(layer(&provider(), Detail::Full));
        tracing::subscriber::with_default(subscriber, || assert_eq!(current_traceparent(), None));
    }
}
