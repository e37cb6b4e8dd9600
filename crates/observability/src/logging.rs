//! Process-wide `tracing` set-up.

use opentelemetry_sdk::trace::SdkTracerProvider;
use serde::Deserialize;
use tracing::Dispatch;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{Targets, filter_fn};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::json_lines::JsonLines;
use crate::log_filter::Logged;
use crate::stdout::Lines;
use crate::trace_context::{self, Detail};

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
/// (`info,sqlx=warn`: a default level and levels by target), and spans at `detail` for `traces` (see
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
    let targets = filter
        .parse::<Targets>()
        .map_err(|source| LoggingError::Filter {
            filter: filter.to_owned(),
            source,
        })?;
    subscriber(format, targets, traces, detail, Lines::stdout()).try_init()?;
    log_panics();
    Ok(())
}

/// Makes every panic an ERROR event of target `panic` (its message, where it happened, the
/// thread, and the backtrace when `RUST_BACKTRACE` asks for one) instead of the default
/// hook's plain text on stderr, so it reaches the log pipeline like any other line. Release
/// builds then abort (see the workspace's Cargo.toml): this line is the process's last word.
pub fn log_panics() {
    std::panic::set_hook(Box::new(|info| {
        let backtrace = std::backtrace::Backtrace::capture();
        let backtrace = (backtrace.status() == std::backtrace::BacktraceStatus::Captured)
            .then(|| tracing::field::display(backtrace));
        tracing::error!(
            target: "panic",
            thread = std::thread::current().name().unwrap_or("(unnamed)"),
            panic.message = info.payload_as_str().unwrap_or("(not a string)"),
            panic.location = info.location().map(tracing::field::display),
            backtrace,
            "panicked"
        );
    }));
}

/// The subscriber [`init`] installs, writing to `writer`. A `Dispatch` rather than a boxed
/// subscriber: only a concrete one tells its layers which dispatcher it became, which the
/// JSON layer needs for the trace ids.
fn subscriber<W>(
    format: LogFormat,
    targets: Targets,
    traces: &SdkTracerProvider,
    detail: Detail,
    writer: W,
) -> Dispatch
where
    W: for<'writer> MakeWriter<'writer> + Send + Sync + 'static,
{
    // One filter in front decides what is made at all: what is logged or traced. A span no
    // layer wants is never made, so a store call's span costs nothing unless traced.
    let logged = Logged::new(targets);
    let wanted = {
        let logged = logged.clone();
        filter_fn(move |metadata| logged.logs(metadata) || trace_context::traces(detail, metadata))
    };
    let registry = tracing_subscriber::registry().with(wanted);
    // The JSON layer and the ids layer each skip what they do not want themselves: wrapped
    // in per-layer filters instead, every span's entry, exit and close would look the span
    // up once per layer to ask whether that layer wants it.
    match (format, detail) {
        (LogFormat::Json, Detail::ContextOnly { sampled }) => Dispatch::new(
            registry
                .with(trace_context::Ids::new(sampled))
                .with(JsonLines::new(writer, logged)),
        ),
        (LogFormat::Json, Detail::Full) => Dispatch::new(
            registry
                .with(trace_context::layer(traces, detail))
                .with(JsonLines::new(writer, logged)),
        ),
        (LogFormat::Pretty, _) => Dispatch::new(
            registry.with(trace_context::layer(traces, detail)).with(
                tracing_subscriber::fmt::layer()
                    .with_writer(writer)
                    .with_filter(filter_fn(move |metadata| logged.logs(metadata))),
            ),
        ),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used)]

    use std::io::Write;
    use std::sync::{Arc, Mutex};

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
        for detail in [Detail::Full, Detail::ContextOnly { sampled: 1.0 }] {
            let (lines, traceparent) = json_lines_at(detail, || {
                tracing::info!("outside");
                let span = tracing::info_span!("request", request_id = "r-1");
                let _entered = span.enter();
                tracing::info!(answer = 42, "inside");
                crate::trace_context::current_traceparent().unwrap()
            });

            assert_eq!(lines.len(), 2, "{lines:?}");
            assert!(lines[0].get("trace_id").is_none(), "{}", lines[0]);
            let inside = &lines[1];
            assert_eq!(inside["message"], "inside");
            assert_eq!(inside["answer"], 42);
            assert_eq!(inside["span"]["request_id"], "r-1", "{inside}");
            let trace_id = traceparent.split('-').nth(1).unwrap();
            let span_id = traceparent.split('-').nth(2).unwrap();
            assert_eq!(inside["trace_id"], trace_id, "{detail:?}: {inside}");
            assert_eq!(inside["span_id"], span_id, "{detail:?}: {inside}");
        }
    }

    /// The lines `log` writes as JSON inside `subscriber(LogFormat::Json, "info", …)`, and
    /// what it returns.
    pub(crate) fn json_lines_of<T>(log: impl FnOnce() -> T) -> (Vec<serde_json::Value>, T) {
        json_lines_at(Detail::Full, log)
    }

    /// [`json_lines_of`], tracing at `detail`.
    fn json_lines_at<T>(detail: Detail, log: impl FnOnce() -> T) -> (Vec<serde_json::Value>, T) {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let provider = SdkTracerProvider::builder().build();
        let subscriber = subscriber(
            LogFormat::Json,
            "info".parse().unwrap(),
            &provider,
            detail,
            move || writer.clone(),
        );
        let returned = tracing::dispatcher::with_default(&subscriber, log);
        (buffer.lines(), returned)
    }

    #[test]
    fn a_json_line_holds_its_fields_and_its_spans_from_the_root_in() {
        let (lines, ()) = json_lines_of(|| {
            let outer =
                tracing::info_span!("request", request_id = "r-1", route = tracing::field::Empty);
            let _outer = outer.enter();
            outer.record("route", "/users/{id}");
            let inner = tracing::info_span!("step", attempt = 1_u64, ok = true);
            let _inner = inner.enter();
            let error = std::io::Error::other("gone \"away\"\n");
            tracing::warn!(
                latency_ms = 1.5,
                error = &error as &dyn std::error::Error,
                "line \u{1}{}",
                2
            );
        });
        assert_eq!(lines.len(), 1, "{lines:?}");
        let line = &lines[0];
        assert_eq!(line["level"], "WARN");
        assert_eq!(line["target"], module_path!());
        assert_eq!(line["message"], "line \u{1}2");
        assert_eq!(line["latency_ms"], 1.5);
        assert_eq!(line["error"], "gone \"away\"\n");
        assert!(line["timestamp"].as_str().unwrap().ends_with('Z'), "{line}");
        assert_eq!(
            line["span"],
            serde_json::json!({"name": "step", "attempt": 1, "ok": true})
        );
        assert_eq!(
            line["spans"],
            serde_json::json!([
                {"name": "request", "request_id": "r-1", "route": "/users/{id}"},
                {"name": "step", "attempt": 1, "ok": true},
            ])
        );
    }

    #[test]
    fn a_line_inside_spans_not_logged_names_the_logged_span_around_them() {
        for detail in [Detail::Full, Detail::ContextOnly { sampled: 1.0 }] {
            let (lines, request_trace) = json_lines_at(detail, || {
                let request = tracing::info_span!("request", request_id = "r-1");
                let _request = request.enter();
                let trace = crate::trace_context::current_traceparent().unwrap();
                // Below the log filter's level, and a store call: neither is logged.
                let step = tracing::debug_span!("step", attempt = 1_u64);
                let _step = step.enter();
                let call = crate::trace_context::redis_span("GET");
                let _call = call.enter();
                tracing::info!("inside");
                trace
            });
            assert_eq!(lines.len(), 1, "{detail:?}: {lines:?}");
            let line = &lines[0];
            let request = serde_json::json!({"name": "request", "request_id": "r-1"});
            assert_eq!(line["span"], request, "{detail:?}: {line}");
            assert_eq!(
                line["spans"],
                serde_json::json!([request]),
                "{detail:?}: {line}"
            );
            assert_eq!(
                line["trace_id"],
                request_trace.split('-').nth(1).unwrap(),
                "{detail:?}: {line}"
            );
        }
    }

    #[test]
    fn fields_only_traces_read_stay_out_of_log_lines() {
        let (lines, ()) = json_lines_of(|| {
            let span = tracing::info_span!(
                "http_request",
                otel.name = "GET",
                http.response.status_code = tracing::field::Empty,
                url.path = "/x",
            );
            let _entered = span.enter();
            span.record("http.response.status_code", 200);
            tracing::info!(status = 200, "finished");
        });
        assert_eq!(
            lines[0]["span"],
            serde_json::json!({"name": "http_request", "url.path": "/x"})
        );
        assert_eq!(lines[0]["status"], 200);
    }

    #[test]
    fn a_store_call_is_no_span_at_all_unless_traced() {
        let provider = SdkTracerProvider::builder().build();
        for (detail, made) in [
            (Detail::Full, true),
            (Detail::ContextOnly { sampled: 1.0 }, false),
        ] {
            let subscriber = subscriber(
                LogFormat::Json,
                "info".parse().unwrap(),
                &provider,
                detail,
                std::io::sink,
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
