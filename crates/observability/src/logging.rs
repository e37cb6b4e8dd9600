//! Process-wide `tracing` set-up.

use std::sync::{Arc, OnceLock};

use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::trace::SdkTracerProvider;
use serde::Deserialize;
use tracing::Dispatch;
use tracing::dispatcher::WeakDispatch;
use tracing_subscriber::filter::{FilterExt, filter_fn};
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::trace_context::{Detail, is_data_store_call};

/// How log lines are written to stdout.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line, for log shippers.
    #[default]
    Json,
    /// Human-readable, coloured lines, for a terminal.
    Pretty,
}

/// Logging could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    /// The filter directives do not parse.
    #[error("invalid log filter {filter:?}: {source}")]
    Filter {
        /// The directives as given.
        filter: String,
        /// Why they do not parse.
        source: tracing_subscriber::filter::ParseError,
    },
    /// A global subscriber was installed already.
    #[error("logging is already initialised: {0}")]
    AlreadySet(#[from] tracing_subscriber::util::TryInitError),
}

/// Installs the global subscriber: `format` output filtered by `filter` directives
/// (`info,sqlx=warn`, the `RUST_LOG` syntax), and spans at `detail` for `traces` (see
/// [`crate::trace_context::layer`]). Spans of data store calls are traced, not logged: a
/// line logged inside one names the enclosing request's span.
///
/// JSON lines carry the fields of the enclosing spans, so the request id recorded on the
/// request span appears on every line logged while handling that request, and the
/// `trace_id` and `span_id` of that span, so a log line leads to its trace.
pub fn init(
    format: LogFormat,
    filter: &str,
    traces: &SdkTracerProvider,
    detail: Detail,
) -> Result<(), LoggingError> {
    let env_filter = EnvFilter::try_new(filter).map_err(|source| LoggingError::Filter {
        filter: filter.to_owned(),
        source,
    })?;
    subscriber(
        format,
        env_filter,
        traces,
        detail,
        BoxMakeWriter::new(std::io::stdout),
    )
    .try_init()?;
    Ok(())
}

/// The subscriber [`init`] installs, writing to `writer`. A `Dispatch` rather than a boxed
/// subscriber: only a concrete one hears which dispatcher it became ([`DispatchSlot`]).
fn subscriber(
    format: LogFormat,
    env_filter: EnvFilter,
    traces: &SdkTracerProvider,
    detail: Detail,
    writer: BoxMakeWriter,
) -> Dispatch {
    // A span no layer wants is never made: so a store call's span costs nothing unless traced.
    let env_filter = env_filter.and(filter_fn(|metadata| !is_data_store_call(metadata)));
    let dispatch = DispatchSlot::default();
    let registry = tracing_subscriber::registry()
        .with(crate::trace_context::layer(traces, detail))
        .with(dispatch.clone().with_filter(filter_fn(|_| false)));
    match format {
        LogFormat::Json => Dispatch::new(
            registry.with(
                json_layer(&dispatch)
                    .with_writer(writer)
                    .with_filter(env_filter),
            ),
        ),
        LogFormat::Pretty => Dispatch::new(
            registry.with(
                tracing_subscriber::fmt::layer()
                    .with_writer(writer)
                    .with_filter(env_filter),
            ),
        ),
    }
}

/// One JSON object per event: its fields flattened, the current span and the span list, and
/// the OpenTelemetry ids of the span it happened in.
///
/// The ids come from the OpenTelemetry layer through the dispatcher, which cannot be looked
/// up while an event is being dispatched; [`DispatchSlot`], registered beside this layer,
/// hands it over.
fn json_layer<S>(dispatch: &DispatchSlot) -> json_subscriber::fmt::Layer<S>
where
    S: tracing::Subscriber + for<'span> LookupSpan<'span>,
{
    let mut layer = json_subscriber::fmt::layer()
        .flatten_event(true)
        .with_current_span(true)
        .with_span_list(true);
    let dispatch = dispatch.clone();
    layer
        .inner_layer_mut()
        .add_multiple_dynamic_fields(move |event, context, writer| {
            if let Some((trace_id, span_id)) = trace_ids(&dispatch, event, context) {
                let _ = writer.write_field("trace_id", trace_id);
                let _ = writer.write_field("span_id", span_id);
            }
        });
    layer
}

/// The trace and span id (hex) of the span `event` happened in, if it has one.
fn trace_ids<S>(
    dispatch: &DispatchSlot,
    event: &tracing::Event<'_>,
    context: &Context<'_, S>,
) -> Option<(String, String)>
where
    S: tracing::Subscriber + for<'span> LookupSpan<'span>,
{
    let span = context.event_span(event)?;
    let dispatch = dispatch.0.get()?.upgrade()?;
    let otel = tracing_opentelemetry::get_otel_context(&span.id(), &dispatch)?;
    let span_context = otel.span().span_context().clone();
    span_context.is_valid().then(|| {
        (
            span_context.trace_id().to_string(),
            span_context.span_id().to_string(),
        )
    })
}

/// A layer that only remembers the dispatcher it is part of. Give it a filter that lets
/// nothing through: unfiltered, it would make every span wanted.
#[derive(Clone, Default)]
struct DispatchSlot(Arc<OnceLock<WeakDispatch>>);

impl<S: tracing::Subscriber> Layer<S> for DispatchSlot {
    fn on_register_dispatch(&self, dispatch: &tracing::Dispatch) {
        let _ = self.0.set(dispatch.downgrade());
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::io::Write;
    use std::sync::Mutex;

    use super::*;

    /// Log output collected in memory.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Buffer {
        fn lines(&self) -> Vec<serde_json::Value> {
            let bytes = self.0.lock().unwrap().clone();
            String::from_utf8(bytes)
                .unwrap()
                .lines()
                .map(|line| serde_json::from_str(line).unwrap())
                .collect()
        }
    }

    #[test]
    fn a_json_line_inside_a_span_names_its_trace_and_span() {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let provider = SdkTracerProvider::builder().build();
        let subscriber = subscriber(
            LogFormat::Json,
            EnvFilter::new("info"),
            &provider,
            Detail::Full,
            BoxMakeWriter::new(move || writer.clone()),
        );
        let traceparent = tracing::dispatcher::with_default(&subscriber, || {
            tracing::info!("outside");
            let span = tracing::info_span!("request", request_id = "r-1");
            let _entered = span.enter();
            tracing::info!(answer = 42, "inside");
            crate::trace_context::current_traceparent().unwrap()
        });

        let lines = buffer.lines();
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(lines[0].get("trace_id").is_none(), "{}", lines[0]);
        let inside = &lines[1];
        assert_eq!(inside["message"], "inside");
        assert_eq!(inside["answer"], 42);
        assert_eq!(inside["span"]["request_id"], "r-1", "{inside}");
        let trace_id = traceparent.split('-').nth(1).unwrap();
        let span_id = traceparent.split('-').nth(2).unwrap();
        assert_eq!(inside["trace_id"], trace_id, "{inside}");
        assert_eq!(inside["span_id"], span_id, "{inside}");
    }

    #[test]
    fn a_store_call_is_no_span_at_all_unless_traced() {
        let provider = SdkTracerProvider::builder().build();
        for (detail, made) in [(Detail::Full, true), (Detail::ContextOnly, false)] {
            let subscriber = subscriber(
                LogFormat::Json,
                EnvFilter::new("info"),
                &provider,
                detail,
                BoxMakeWriter::new(std::io::sink),
            );
            tracing::dispatcher::with_default(&subscriber, || {
                let request = tracing::info_span!("request");
                let call = crate::trace_context::redis_span("GET");
                assert!(!request.is_disabled(), "{detail:?}");
                assert_eq!(!call.is_disabled(), made, "{detail:?}");
            });
        }
    }
}
