//! Process-wide `tracing` set-up.

use std::sync::{Arc, OnceLock};

use opentelemetry::trace::{SpanId, TraceContextExt, TraceId};
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
                TraceOnlyRecordsSkipped(json_layer(&dispatch).with_writer(writer))
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
                let _ = writer.write_field("trace_id", hex(&trace_id.to_bytes(), &mut [0; 32]));
                let _ = writer.write_field("span_id", hex(&span_id.to_bytes(), &mut [0; 16]));
            }
        });
    layer
}

/// The trace and span id of the span `event` happened in, if it has one.
fn trace_ids<S>(
    dispatch: &DispatchSlot,
    event: &tracing::Event<'_>,
    context: &Context<'_, S>,
) -> Option<(TraceId, SpanId)>
where
    S: tracing::Subscriber + for<'span> LookupSpan<'span>,
{
    let span = context.event_span(event)?;
    let dispatch = dispatch.0.get()?.upgrade()?;
    let otel = tracing_opentelemetry::get_otel_context(&span.id(), &dispatch)?;
    let span = otel.span();
    let span_context = span.span_context();
    span_context
        .is_valid()
        .then(|| (span_context.trace_id(), span_context.span_id()))
}

/// `bytes` in lower-case hex, written into `buffer` (twice their length): an id per log line
/// without the formatting machinery or an allocation.
fn hex<'b>(bytes: &[u8], buffer: &'b mut [u8]) -> &'b str {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (pair, byte) in buffer.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(byte >> 4)];
        pair[1] = DIGITS[usize::from(byte & 0xf)];
    }
    std::str::from_utf8(&buffer[..bytes.len() * 2]).unwrap_or_default()
}

/// A layer that does not hear records of fields only tracing reads (`otel.*`, the response
/// status, which the request's own log line carries): the JSON layer serialises all of a
/// span's fields again on every record, and the request span gets them on every request.
struct TraceOnlyRecordsSkipped<L>(L);

/// Whether `values` record any field a log line shows.
fn records_for_logs(values: &tracing::span::Record<'_>) -> bool {
    struct AnyForLogs(bool);
    impl tracing::field::Visit for AnyForLogs {
        fn record_debug(&mut self, field: &tracing::field::Field, _: &dyn std::fmt::Debug) {
            let name = field.name();
            self.0 |= !(name.starts_with("otel.") || name == "http.response.status_code");
        }
    }
    let mut any = AnyForLogs(false);
    values.record(&mut any);
    any.0
}

impl<S, L> Layer<S> for TraceOnlyRecordsSkipped<L>
where
    S: tracing::Subscriber,
    L: Layer<S>,
{
    fn on_register_dispatch(&self, subscriber: &Dispatch) {
        self.0.on_register_dispatch(subscriber);
    }

    fn on_layer(&mut self, subscriber: &mut S) {
        self.0.on_layer(subscriber);
    }

    fn register_callsite(
        &self,
        metadata: &'static tracing::Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        self.0.register_callsite(metadata)
    }

    fn enabled(&self, metadata: &tracing::Metadata<'_>, ctx: Context<'_, S>) -> bool {
        self.0.enabled(metadata, ctx)
    }

    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: Context<'_, S>,
    ) {
        self.0.on_new_span(attrs, id, ctx);
    }

    fn max_level_hint(&self) -> Option<tracing_subscriber::filter::LevelFilter> {
        self.0.max_level_hint()
    }

    fn on_record(
        &self,
        span: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        ctx: Context<'_, S>,
    ) {
        if records_for_logs(values) {
            self.0.on_record(span, values, ctx);
        }
    }

    fn on_follows_from(
        &self,
        span: &tracing::span::Id,
        follows: &tracing::span::Id,
        ctx: Context<'_, S>,
    ) {
        self.0.on_follows_from(span, follows, ctx);
    }

    fn event_enabled(&self, event: &tracing::Event<'_>, ctx: Context<'_, S>) -> bool {
        self.0.event_enabled(event, ctx)
    }

    fn on_event(&self, event: &tracing::Event<'_>, ctx: Context<'_, S>) {
        self.0.on_event(event, ctx);
    }

    fn on_enter(&self, id: &tracing::span::Id, ctx: Context<'_, S>) {
        self.0.on_enter(id, ctx);
    }

    fn on_exit(&self, id: &tracing::span::Id, ctx: Context<'_, S>) {
        self.0.on_exit(id, ctx);
    }

    fn on_close(&self, id: tracing::span::Id, ctx: Context<'_, S>) {
        self.0.on_close(id, ctx);
    }

    fn on_id_change(&self, old: &tracing::span::Id, new: &tracing::span::Id, ctx: Context<'_, S>) {
        self.0.on_id_change(old, new, ctx);
    }
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
    fn ids_are_written_as_opentelemetry_formats_them() {
        let trace = TraceId::from_hex("0af7651916cd43dd8448eb211c80319c").unwrap();
        let span = SpanId::from_hex("00f067aa0ba902b7").unwrap();
        assert_eq!(hex(&trace.to_bytes(), &mut [0; 32]), trace.to_string());
        assert_eq!(hex(&span.to_bytes(), &mut [0; 16]), span.to_string());
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
