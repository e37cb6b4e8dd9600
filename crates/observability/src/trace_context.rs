//! W3C trace context: the `traceparent` of the current span, and a parent from one.
//!
//! [`layer`] gives every `tracing` span an OpenTelemetry span context, so a trace id follows
//! a request across HTTP, gRPC and the broker. Exporting spans over OTLP is separate; without
//! an exporter the ids are still made and propagated.

use std::collections::HashMap;
use std::sync::OnceLock;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::registry::LookupSpan;

/// The header (and map key) carrying the trace context.
pub const TRACEPARENT: &str = "traceparent";

/// The layer that attaches OpenTelemetry span contexts to `tracing` spans.
pub fn layer<S>() -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'span> LookupSpan<'span>,
{
    static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();
    let provider = PROVIDER.get_or_init(|| SdkTracerProvider::builder().build());
    tracing_opentelemetry::layer().with_tracer(provider.tracer("tessera"))
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

#[cfg(test)]
mod tests {
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    #[test]
    fn a_child_of_a_remote_parent_continues_its_trace() {
        let subscriber = tracing_subscriber::registry().with(layer());
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

    #[test]
    fn no_traceparent_outside_a_span() {
        let subscriber = tracing_subscriber::registry().with(layer());
        tracing::subscriber::with_default(subscriber, || assert_eq!(current_traceparent(), None));
    }
}
