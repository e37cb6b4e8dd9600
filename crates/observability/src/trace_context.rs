//! W3C trace context: spans that carry OpenTelemetry contexts, and `traceparent` across hops.
//!
//! [`layer`] gives `tracing` spans at INFO or above a trace context, so a trace id follows a
//! request across HTTP, gRPC and the broker and names the trace of its log lines. When spans
//! are exported they are OpenTelemetry spans, sent to the exporter of the provider it is
//! given ([`crate::otlp`]), and calls to data stores get one too ([`Detail`]); when nothing
//! is exported a span holds only its ids. Span names and attributes follow the OpenTelemetry
//! semantic conventions, set through the `otel.name`, `otel.kind` and dotted fields.

use std::collections::HashMap;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, TraceContextExt, TraceFlags, TraceId, TracerProvider as _,
};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    IdGenerator, RandomIdGenerator, Sampler, SamplingDecision, SdkTracerProvider, ShouldSample,
};
use tracing::span::{Attributes, Id};
use tracing::{Level, Metadata, Subscriber};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::{LookupSpan, Registry, SpanRef};

/// The header (and map key) carrying the trace context.
pub const TRACEPARENT: &str = "traceparent";

/// Which spans become OpenTelemetry spans.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Detail {
    /// Every span at INFO and above is an OpenTelemetry span: for a process that exports
    /// its spans.
    Full,
    /// Spans carry only their trace context (ids and the sampled flag), and calls to data
    /// stores ([`is_data_store_call`]) none. A process that exports nothing needs spans only
    /// to carry trace context across hops and to name the trace of its log lines; building
    /// OpenTelemetry spans nobody receives (their attributes, timings, the SDK's span at
    /// close) was a sixth of a cached read's instructions.
    ContextOnly {
        /// The share of traces started here marked sampled for the services downstream,
        /// 0 to 1, decided as the exporter's sampler would (`OTEL_TRACES_SAMPLER_ARG`).
        sampled: f64,
    },
}

/// Whether `metadata` is a span of a call to a data store (PostgreSQL, Redis): one with the
/// `db.system.name` attribute, as [`redis_span`] and the repositories' spans have.
pub fn is_data_store_call(metadata: &Metadata<'_>) -> bool {
    metadata.is_span() && metadata.fields().field("db.system.name").is_some()
}

/// The layer that gives `tracing` spans their trace context, at `detail`: as OpenTelemetry
/// spans of `provider`, or as ids alone.
///
/// It sees spans at INFO and above and events at WARN and above (recorded on their span),
/// whatever the log filter says: how much is logged must not decide what is traced.
pub fn layer<S>(provider: &SdkTracerProvider, detail: Detail) -> Box<dyn Layer<S> + Send + Sync>
where
    S: Subscriber + Send + Sync + for<'span> LookupSpan<'span>,
{
    match detail {
        Detail::Full => tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("tessera"))
            // Built lazily (when a context is asked for, or at close) rather than on first
            // entry, so a request span can still be named after its route once routing is
            // done.
            .with_context_activation(false)
            // Source locations, targets, thread names and busy/idle timings on every span
            // cost time on the hot path and tell a trace reader nothing the span name does not.
            .with_location(false)
            .with_target(false)
            .with_threads(false)
            .with_tracked_inactivity(false)
            .with_filter(filter_fn(move |metadata| traces(detail, metadata)))
            .boxed(),
        Detail::ContextOnly { sampled } => Ids::new(sampled)
            .with_filter(filter_fn(move |metadata| traces(detail, metadata)))
            .boxed(),
    }
}

/// Whether the trace layer at `detail` wants `metadata`.
pub(crate) fn traces(detail: Detail, metadata: &Metadata<'_>) -> bool {
    match detail {
        Detail::Full => is_exported(metadata),
        Detail::ContextOnly { .. } => has_ids(metadata),
    }
}

/// What [`Detail::Full`] exports: spans at INFO and above, and events at WARN and above
/// (recorded on their span).
fn is_exported(metadata: &Metadata<'_>) -> bool {
    let least = if metadata.is_span() {
        Level::INFO
    } else {
        Level::WARN
    };
    *metadata.level() <= least && !is_exporters_own(metadata)
}

/// What gets ids under [`Detail::ContextOnly`]: spans at INFO and above but store calls.
fn has_ids(metadata: &Metadata<'_>) -> bool {
    metadata.is_span()
        && *metadata.level() <= Level::INFO
        && !is_data_store_call(metadata)
        && !is_exporters_own(metadata)
}

/// The exporter's own complaints are logged, not traced: recording them on a span would
/// feed the exporter what it reports about.
fn is_exporters_own(metadata: &Metadata<'_>) -> bool {
    metadata.target().starts_with("opentelemetry")
}

/// The layer of [`Detail::ContextOnly`]: each span's [`SpanContext`] in its extensions,
/// continuing its parent's trace or starting one (sampled by `sampler`). It skips the spans
/// [`has_ids`] leaves out itself, so it needs no per-layer filter.
pub(crate) struct Ids {
    sampler: Sampler,
}

impl<S> Layer<S> for Ids
where
    S: Subscriber + for<'span> LookupSpan<'span>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if !has_ids(attrs.metadata()) {
            return;
        }
        let Some(span) = ctx.span(id) else { return };
        let parent = if let Some(parent) = attrs.parent() {
            ctx.span(parent)
        } else if attrs.is_contextual() {
            ctx.lookup_current()
        } else {
            None
        };
        let inherited = parent.and_then(|parent| nearest_context(&parent));
        let ids = RandomIdGenerator::default();
        let context = match inherited {
            Some(parent) => SpanContext::new(
                parent.trace_id(),
                ids.new_span_id(),
                parent.trace_flags(),
                false,
                parent.trace_state().clone(),
            ),
            None => self.root(
                ids.new_trace_id(),
                ids.new_span_id(),
                attrs.metadata().name(),
            ),
        };
        span.extensions_mut().insert(context);
    }
}

impl Ids {
    /// Ids for spans, a share `sampled` of new traces sampled.
    pub(crate) fn new(sampled: f64) -> Self {
        Self {
            sampler: Sampler::TraceIdRatioBased(sampled),
        }
    }

    /// The context of a span starting a trace: sampled as the exporter's sampler would.
    fn root(&self, trace_id: TraceId, span_id: SpanId, name: &str) -> SpanContext {
        let decision = self
            .sampler
            .should_sample(None, trace_id, name, &SpanKind::Internal, &[], &[])
            .decision;
        let flags = if decision == SamplingDecision::RecordAndSample {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        };
        SpanContext::new(trace_id, span_id, flags, false, Default::default())
    }
}

/// The trace context [`Detail::ContextOnly`] keeps on `span`, or else on the nearest span
/// above it that has one (a span below INFO, made because the log filter wants it, has none).
fn nearest_context<S>(span: &SpanRef<'_, S>) -> Option<SpanContext>
where
    S: Subscriber + for<'span> LookupSpan<'span>,
{
    span.scope()
        .find_map(|span| span.extensions().get::<SpanContext>().cloned())
}

/// Runs `f` on the registry's record of `span`; `None` when `span` is disabled or the
/// subscriber has no [`Registry`].
fn in_registry<T>(
    span: &tracing::Span,
    f: impl FnOnce(SpanRef<'_, Registry>) -> Option<T>,
) -> Option<T> {
    span.with_subscriber(|(id, dispatch)| f(dispatch.downcast_ref::<Registry>()?.span(id)?))
        .flatten()
}

/// Runs `f` on the trace context [`Detail::ContextOnly`] keeps on `span`; `None` when the
/// span is traced otherwise or not at all.
fn with_ids<T>(span: &tracing::Span, f: impl FnOnce(&mut SpanContext) -> T) -> Option<T> {
    in_registry(span, |span| {
        span.extensions_mut().get_mut::<SpanContext>().map(f)
    })
}

/// The trace and span id of `span` under [`Detail::ContextOnly`], for its log lines; `None`
/// when it is traced otherwise (see `tracing_opentelemetry::get_otel_context`) or not at all.
pub(crate) fn ids_in<S>(span: &SpanRef<'_, S>) -> Option<(TraceId, SpanId)>
where
    S: Subscriber + for<'span> LookupSpan<'span>,
{
    let extensions = span.extensions();
    let context = extensions.get::<SpanContext>()?;
    Some((context.trace_id(), context.span_id()))
}

/// The OpenTelemetry context of `span`, however it is traced.
fn context_of(span: &tracing::Span) -> opentelemetry::Context {
    match in_registry(span, |span| nearest_context(&span)) {
        Some(ids) => opentelemetry::Context::new().with_remote_span_context(ids),
        None => span.context(),
    }
}

/// The `traceparent` of the current span, if it is being traced.
pub fn current_traceparent() -> Option<String> {
    let context = context_of(&tracing::Span::current());
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&context, &mut carrier);
    carrier.remove(TRACEPARENT)
}

/// Makes `span` a child of the remote span named by `traceparent`. A malformed value is
/// ignored: the span then starts a trace of its own.
pub fn set_remote_parent(span: &tracing::Span, traceparent: &str) {
    let carrier = HashMap::from([(TRACEPARENT.to_owned(), traceparent.to_owned())]);
    let parent = TraceContextPropagator::new().extract(&carrier);
    let remote = parent.span().span_context().clone();
    let ours = with_ids(span, |ours| {
        if remote.is_valid() {
            *ours = SpanContext::new(
                remote.trace_id(),
                ours.span_id(),
                remote.trace_flags(),
                false,
                remote.trace_state().clone(),
            );
        }
    });
    if ours.is_some() {
        return;
    }
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

    /// Both ways of tracing: what holds of trace context holds in each.
    const DETAILS: [Detail; 2] = [Detail::Full, Detail::ContextOnly { sampled: 1.0 }];

    /// Runs `check` inside a subscriber tracing at `detail`.
    fn traced<T>(detail: Detail, check: impl FnOnce() -> T) -> T {
        let provider = SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry().with(layer(&provider, detail));
        tracing::subscriber::with_default(subscriber, check)
    }

    /// The trace id, span id and flags of a `traceparent`.
    fn parts(traceparent: &str) -> (String, String, String) {
        let parts: Vec<_> = traceparent.split('-').map(str::to_owned).collect();
        assert_eq!(parts.len(), 4, "{traceparent}");
        (parts[1].clone(), parts[2].clone(), parts[3].clone())
    }

    #[test]
    fn a_child_of_a_remote_parent_continues_its_trace() {
        for detail in DETAILS {
            traced(detail, || {
                let root = tracing::info_span!("request");
                let parent = root.in_scope(current_traceparent).unwrap();
                assert_eq!(parent.len(), 55, "{parent}");
                assert!(
                    parent.starts_with("00-") && parent.ends_with("-01"),
                    "{parent}"
                );

                let consumer = tracing::info_span!("consume");
                set_remote_parent(&consumer, &parent);
                let child = consumer.in_scope(current_traceparent).unwrap();
                assert_eq!(parts(&child).0, parts(&parent).0, "{detail:?}");
                assert_ne!(child, parent, "{detail:?}");
            });
        }
    }

    const REMOTE: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    #[test]
    fn a_request_with_a_traceparent_continues_the_callers_trace() {
        for detail in DETAILS {
            traced(detail, || {
                let mut headers = http::HeaderMap::new();
                headers.insert(TRACEPARENT, REMOTE.parse().unwrap());
                let span = tracing::info_span!("http_request");
                continue_from(&span, &headers);
                let ours = span.in_scope(current_traceparent).unwrap();
                assert_eq!(parts(&ours).0, parts(REMOTE).0, "{detail:?}");
                assert_ne!(parts(&ours).1, parts(REMOTE).1, "{detail:?}");
                // A span made inside it belongs to the same trace.
                let inner =
                    span.in_scope(|| tracing::info_span!("step").in_scope(current_traceparent));
                assert_eq!(parts(&inner.unwrap()).0, parts(REMOTE).0, "{detail:?}");

                let fresh = tracing::info_span!("http_request");
                continue_from(&fresh, &http::HeaderMap::new());
                let unrelated = fresh.in_scope(current_traceparent).unwrap();
                assert_ne!(parts(&unrelated).0, parts(REMOTE).0, "{detail:?}");
            });
        }
    }

    #[test]
    fn a_malformed_traceparent_leaves_the_span_its_own_trace() {
        for detail in DETAILS {
            traced(detail, || {
                let span = tracing::info_span!("http_request");
                set_remote_parent(&span, "00-not-a-trace-01");
                let ours = span.in_scope(current_traceparent).unwrap();
                assert_eq!(parts(&ours).0.len(), 32, "{detail:?}: {ours}");
                assert_ne!(parts(&ours).0, "0".repeat(32), "{detail:?}");
            });
        }
    }

    #[test]
    fn the_callers_sampling_decision_is_followed() {
        let unsampled = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00";
        for detail in DETAILS {
            traced(detail, || {
                let span = tracing::info_span!("http_request");
                set_remote_parent(&span, unsampled);
                let child =
                    span.in_scope(|| tracing::info_span!("step").in_scope(current_traceparent));
                assert_eq!(parts(&child.unwrap()).2, "00", "{detail:?}");
            });
        }
    }

    #[test]
    fn traces_started_here_are_sampled_at_the_configured_share() {
        let sampled_of = |share: f64| {
            traced(Detail::ContextOnly { sampled: share }, || {
                (0..200)
                    .filter(|_| {
                        let traceparent =
                            tracing::info_span!("request").in_scope(current_traceparent);
                        parts(&traceparent.unwrap()).2 == "01"
                    })
                    .count()
            })
        };
        assert_eq!(sampled_of(1.0), 200);
        assert_eq!(sampled_of(0.0), 0);
        let half = sampled_of(0.5);
        assert!((40..160).contains(&half), "{half} of 200");
    }

    #[test]
    fn a_grpc_call_carries_the_current_span_as_its_parent() {
        for detail in DETAILS {
            traced(detail, || {
                let span = grpc_client_span("tessera.users.v1.UserService", "GetUser");
                let _entered = span.enter();
                let request = propagate(tonic::Request::new(())).unwrap();
                let sent = request
                    .metadata()
                    .get(TRACEPARENT)
                    .unwrap()
                    .to_str()
                    .unwrap();
                assert_eq!(Some(sent.to_owned()), current_traceparent(), "{detail:?}");
            });
        }
        let untraced = propagate(tonic::Request::new(())).unwrap();
        assert!(untraced.metadata().get(TRACEPARENT).is_none());
    }

    #[test]
    fn data_store_calls_are_spans_of_their_own_only_in_full_detail() {
        for (detail, own_span) in DETAILS.into_iter().zip([true, false]) {
            traced(detail, || {
                let request = tracing::info_span!("request");
                let _entered = request.enter();
                let outer = current_traceparent().unwrap();
                let inner = redis_span("GET").in_scope(current_traceparent).unwrap();
                assert_eq!(inner != outer, own_span, "{detail:?}");
                assert_eq!(parts(&inner).0, parts(&outer).0);
            });
        }
    }

    #[test]
    fn no_traceparent_outside_a_span() {
        for detail in DETAILS {
            traced(detail, || {
                assert_eq!(current_traceparent(), None, "{detail:?}")
            });
        }
    }

    #[test]
    fn a_span_below_info_passes_on_the_context_above_it() {
        let provider = SdkTracerProvider::builder().build();
        // A log layer that wants every span, as one filtered at DEBUG would.
        let subscriber = tracing_subscriber::registry()
            .with(layer(&provider, Detail::ContextOnly { sampled: 1.0 }))
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::sink));
        tracing::subscriber::with_default(subscriber, || {
            let request = tracing::info_span!("request");
            let _entered = request.enter();
            let outer = current_traceparent().unwrap();
            let detail = tracing::debug_span!("detail");
            assert!(!detail.is_disabled());
            assert_eq!(detail.in_scope(current_traceparent), Some(outer));
        });
    }
}
