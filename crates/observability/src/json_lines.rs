//! The JSON log line layer: one object per event, written straight into a reused buffer.
//!
//! A span's fields are rendered to JSON once, when the span is made or a field recorded, and
//! copied into each line logged inside it. A general-purpose JSON layer builds a value tree
//! per line and serialises every field of the span again on each record; on a cached read
//! that was a fifth of the request's instructions.
//!
//! A line: `{"timestamp", "level", "target", the event's fields flattened ("message" among
//! them), "span": the innermost span, "spans": the spans from the root in, "trace_id",
//! "span_id"}`. Each span object holds its `name` and fields.

use std::cell::RefCell;
use std::fmt::{self, Write as _};
use std::io::Write as _;
use std::sync::OnceLock;

use opentelemetry::trace::{SpanId, TraceContextExt, TraceId};
use tessera_domain::timestamp::Rfc3339;
use tracing::dispatcher::WeakDispatch;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Dispatch, Event, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::Layer;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::{LookupSpan, SpanRef};

use crate::log_filter::Logged;

/// Writes each event it hears that is [`Logged`] as one JSON line to `make_writer`, with
/// the logged spans it is in.
pub(crate) struct JsonLines<W> {
    make_writer: W,
    logged: Logged,
    /// The dispatcher this layer became part of, for the trace ids: it cannot be looked up
    /// while an event is being dispatched, so it is kept from registration.
    dispatch: OnceLock<WeakDispatch>,
}

impl<W> JsonLines<W> {
    /// A layer writing what is `logged` to `make_writer`.
    pub(crate) fn new(make_writer: W, logged: Logged) -> Self {
        Self {
            make_writer,
            logged,
            dispatch: OnceLock::new(),
        }
    }
}

impl<S, W> Layer<S> for JsonLines<W>
where
    S: Subscriber + for<'span> LookupSpan<'span>,
    W: for<'writer> MakeWriter<'writer> + 'static,
{
    fn on_register_dispatch(&self, dispatch: &Dispatch) {
        let _ = self.dispatch.set(dispatch.downgrade());
    }

    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        // A span not logged has no fields here, which is how lines leave it out.
        if !self.logged.logs(attrs.metadata()) {
            return;
        }
        let Some(span) = ctx.span(id) else { return };
        // Room for the usual few short fields at once, rather than growing a byte at a time.
        let mut fields = SpanFields {
            json: Vec::with_capacity(attrs.fields().len() * 32),
            starts: Vec::with_capacity(attrs.fields().len()),
        };
        attrs.record(&mut FieldVisitor(&mut fields));
        span.extensions_mut().insert(fields);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut extensions = span.extensions_mut();
        if let Some(fields) = extensions.get_mut::<SpanFields>() {
            values.record(&mut FieldVisitor(fields));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        if !self.logged.logs(event.metadata()) {
            return;
        }
        with_buffer(|line| {
            self.format(event, &ctx, line);
            // A line that cannot be written has nowhere better to go.
            let _ = self
                .make_writer
                .make_writer_for(event.metadata())
                .write_all(line);
        });
    }
}

impl<W> JsonLines<W> {
    fn format<S>(&self, event: &Event<'_>, ctx: &Context<'_, S>, line: &mut Vec<u8>)
    where
        S: Subscriber + for<'span> LookupSpan<'span>,
    {
        let normalized = event.normalized_metadata();
        let metadata = normalized.as_ref().unwrap_or_else(|| event.metadata());
        line.extend_from_slice(b"{\"timestamp\":\"");
        line.extend_from_slice(Rfc3339::now().as_str().as_bytes());
        line.extend_from_slice(b"\",\"level\":\"");
        line.extend_from_slice(metadata.level().as_str().as_bytes());
        line.extend_from_slice(b"\",\"target\":");
        json_string(line, metadata.target());
        event.record(&mut FieldVisitor(&mut EventFields(line)));

        let current = ctx
            .event_span(event)
            .and_then(|span| span.scope().find(is_logged));
        if let Some(current) = &current {
            line.extend_from_slice(b",\"span\":");
            span_object(line, current);
            line.extend_from_slice(b",\"spans\":[");
            for (index, span) in current.scope().from_root().filter(is_logged).enumerate() {
                if index > 0 {
                    line.push(b',');
                }
                span_object(line, &span);
            }
            line.push(b']');
        }
        if let Some((trace_id, span_id)) = current.as_ref().and_then(|span| self.trace_ids(span)) {
            line.extend_from_slice(b",\"trace_id\":\"");
            line.extend_from_slice(hex(&trace_id.to_bytes(), &mut [0; 32]).as_bytes());
            line.extend_from_slice(b"\",\"span_id\":\"");
            line.extend_from_slice(hex(&span_id.to_bytes(), &mut [0; 16]).as_bytes());
            line.push(b'"');
        }
        line.extend_from_slice(b"}\n");
    }

    /// The trace and span id of `span`, if it is traced: kept on the span itself when only
    /// the context is traced, else from the OpenTelemetry layer through the dispatcher this
    /// layer was registered with.
    fn trace_ids<S>(&self, span: &SpanRef<'_, S>) -> Option<(TraceId, SpanId)>
    where
        S: Subscriber + for<'span> LookupSpan<'span>,
    {
        if let Some(ids) = crate::trace_context::ids_in(span) {
            return Some(ids);
        }
        let dispatch = self.dispatch.get()?.upgrade()?;
        let otel = tracing_opentelemetry::get_otel_context(&span.id(), &dispatch)?;
        let span = otel.span();
        let span_context = span.span_context();
        span_context
            .is_valid()
            .then(|| (span_context.trace_id(), span_context.span_id()))
    }
}

/// Runs `write` on this thread's line buffer, emptied first; a fresh one if the buffer is in
/// use already (an event logged while formatting another, from a field's `Debug`).
fn with_buffer(write: impl FnOnce(&mut Vec<u8>)) {
    thread_local! {
        static BUFFER: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    }
    /// Larger buffers are dropped after use rather than kept by every thread for good.
    const KEPT_CAPACITY: usize = 16 * 1024;
    BUFFER.with(|buffer| match buffer.try_borrow_mut() {
        Ok(mut line) => {
            line.clear();
            write(&mut line);
            if line.capacity() > KEPT_CAPACITY {
                *line = Vec::new();
            }
        }
        Err(_) => write(&mut Vec::new()),
    });
}

/// Whether `span` is logged: only those have their fields rendered here.
fn is_logged<S>(span: &SpanRef<'_, S>) -> bool
where
    S: Subscriber + for<'span> LookupSpan<'span>,
{
    span.extensions().get::<SpanFields>().is_some()
}

/// `{"name":…, fields…}` of one span.
fn span_object<S>(line: &mut Vec<u8>, span: &SpanRef<'_, S>)
where
    S: Subscriber + for<'span> LookupSpan<'span>,
{
    line.extend_from_slice(b"{\"name\":");
    json_string(line, span.name());
    if let Some(fields) = span.extensions().get::<SpanFields>() {
        line.extend_from_slice(&fields.json);
    }
    line.push(b'}');
}

/// A span's fields as JSON members, each with its leading comma (`,"key":value`), and where
/// each one starts, so a field recorded again replaces its earlier value.
#[derive(Default)]
struct SpanFields {
    json: Vec<u8>,
    starts: Vec<(&'static str, usize)>,
}

impl SpanFields {
    /// Drops the member `name` if present, keeping the others' starts right.
    fn remove(&mut self, name: &str) {
        let Some(index) = self.starts.iter().position(|(field, _)| *field == name) else {
            return;
        };
        let start = self.starts[index].1;
        let end = self
            .starts
            .get(index + 1)
            .map_or(self.json.len(), |(_, at)| *at);
        self.json.drain(start..end);
        self.starts.remove(index);
        for (_, at) in &mut self.starts[index..] {
            *at -= end - start;
        }
    }

    /// Sets the member `name` to `value`.
    fn set(&mut self, name: &'static str, value: &(impl WriteJson + ?Sized)) {
        self.remove(name);
        self.starts.push((name, self.json.len()));
        self.json.push(b',');
        json_string(&mut self.json, name);
        self.json.push(b':');
        value.write_json(&mut self.json);
    }
}

/// Where a [`FieldVisitor`] puts the fields it is shown: a span's rendered fields, or the
/// line being written.
trait Members {
    /// Whether `field` is written at all; asked before its value is formatted.
    fn shows(&self, field: &Field) -> bool;

    /// Writes the member `name` with `value`.
    fn put(&mut self, name: &'static str, value: &(impl WriteJson + ?Sized));
}

/// A span's fields, leaving out the ones only tracing reads: `otel.*`, and the response
/// status, which the request's own log line carries.
impl Members for SpanFields {
    fn shows(&self, field: &Field) -> bool {
        let name = field.name();
        !(name.starts_with("otel.") || name == "http.response.status_code")
    }

    fn put(&mut self, name: &'static str, value: &(impl WriteJson + ?Sized)) {
        self.set(name, value);
    }
}

/// An event's fields on its line; `log.*` fields of events from the `log` crate are left
/// out, their target having become the line's.
struct EventFields<'a>(&'a mut Vec<u8>);

impl Members for EventFields<'_> {
    fn shows(&self, field: &Field) -> bool {
        !field.name().starts_with("log.")
    }

    fn put(&mut self, name: &'static str, value: &(impl WriteJson + ?Sized)) {
        self.0.push(b',');
        json_string(self.0, name);
        self.0.push(b':');
        value.write_json(self.0);
    }
}

/// Writes the fields a [`Members`] shows into it.
struct FieldVisitor<'a, M>(&'a mut M);

impl<M: Members> Visit for FieldVisitor<'_, M> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if self.0.shows(field) {
            self.0.put(field.name(), value);
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if self.0.shows(field) {
            self.0.put(field.name(), &value);
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if self.0.shows(field) {
            self.0.put(field.name(), &value);
        }
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        if self.0.shows(field) {
            self.0.put(field.name(), &value);
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if self.0.shows(field) {
            self.0.put(field.name(), &value);
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        if self.0.shows(field) {
            self.0.put(field.name(), value.to_string().as_str());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if !self.0.shows(field) {
            return;
        }
        // Formatted through a reused string: most messages are a literal or a short format.
        thread_local! {
            static TEXT: RefCell<String> = const { RefCell::new(String::new()) };
        }
        TEXT.with(|text| match text.try_borrow_mut() {
            Ok(mut text) => {
                text.clear();
                let _ = write!(text, "{value:?}");
                self.0.put(field.name(), text.as_str());
                if text.capacity() > 4096 {
                    *text = String::new();
                }
            }
            Err(_) => self.0.put(field.name(), format!("{value:?}").as_str()),
        });
    }
}

/// A field's value as JSON, appended to a line.
trait WriteJson {
    fn write_json(&self, line: &mut Vec<u8>);
}

impl WriteJson for str {
    fn write_json(&self, line: &mut Vec<u8>) {
        json_string(line, self);
    }
}

/// Numbers and booleans as serde_json writes them (a non-finite float as `null`).
macro_rules! write_json_by_serde {
    ($($type:ty),*) => {$(
        impl WriteJson for $type {
            fn write_json(&self, line: &mut Vec<u8>) {
                let _ = serde_json::to_writer(line, self);
            }
        }
    )*};
}

write_json_by_serde!(i64, u64, f64, bool);

/// `value` as a JSON string, escaped as serde_json escapes, appended to `line`. Written out
/// here because it runs for every string on every line: most need no escape at all, and
/// serde_json's general path cost several times the copy.
fn json_string(line: &mut Vec<u8>, value: &str) {
    let bytes = value.as_bytes();
    line.reserve(bytes.len() + 2);
    line.push(b'"');
    if has_escaped(bytes) {
        let mut copied = 0;
        for (at, &byte) in bytes.iter().enumerate() {
            if is_escaped(byte) {
                line.extend_from_slice(&bytes[copied..at]);
                copied = at + 1;
                escape(line, byte);
            }
        }
        line.extend_from_slice(&bytes[copied..]);
    } else {
        line.extend_from_slice(bytes);
    }
    line.push(b'"');
}

/// Whether any of `bytes` [`is_escaped`], sixteen at a time: over a fixed-size run the test
/// compiles to a few vector compares instead of a branch per byte. The last, shorter run is
/// padded with a byte that needs no escape.
fn has_escaped(bytes: &[u8]) -> bool {
    const RUN: usize = 16;
    fn any_in(run: &[u8; RUN]) -> bool {
        run.iter().fold(false, |any, &byte| any | is_escaped(byte))
    }
    let mut runs = bytes.chunks_exact(RUN);
    if runs.by_ref().any(|run| run.try_into().is_ok_and(any_in)) {
        return true;
    }
    let rest = runs.remainder();
    let mut last = [b' '; RUN];
    last[..rest.len()].copy_from_slice(rest);
    any_in(&last)
}

/// Whether JSON escapes `byte`: `"`, `\` and the control characters.
fn is_escaped(byte: u8) -> bool {
    byte < 0x20 || byte == b'"' || byte == b'\\'
}

/// The escape of a byte [`is_escaped`] names.
fn escape(line: &mut Vec<u8>, byte: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    match byte {
        b'"' => line.extend_from_slice(b"\\\""),
        b'\\' => line.extend_from_slice(b"\\\\"),
        b'\n' => line.extend_from_slice(b"\\n"),
        b'\r' => line.extend_from_slice(b"\\r"),
        b'\t' => line.extend_from_slice(b"\\t"),
        0x08 => line.extend_from_slice(b"\\b"),
        0x0c => line.extend_from_slice(b"\\f"),
        _ => line.extend_from_slice(&[
            b'\\',
            b'u',
            b'0',
            b'0',
            HEX[usize::from(byte >> 4)],
            HEX[usize::from(byte & 0xf)],
        ]),
    }
}

/// `bytes` in lower-case hex, written into `buffer` (twice their length): an id per log line
/// without the formatting machinery or an allocation.
pub(crate) fn hex<'b>(bytes: &[u8], buffer: &'b mut [u8]) -> &'b str {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (pair, byte) in buffer.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(byte >> 4)];
        pair[1] = DIGITS[usize::from(byte & 0xf)];
    }
    std::str::from_utf8(&buffer[..bytes.len() * 2]).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn ids_are_written_as_opentelemetry_formats_them() {
        let trace = TraceId::from_hex("0af7651916cd43dd8448eb211c80319c").unwrap();
        let span = SpanId::from_hex("00f067aa0ba902b7").unwrap();
        assert_eq!(hex(&trace.to_bytes(), &mut [0; 32]), trace.to_string());
        assert_eq!(hex(&span.to_bytes(), &mut [0; 16]), span.to_string());
    }

    proptest::proptest! {
        #[test]
        fn strings_are_escaped_as_serde_json_escapes_them(
            // Any text; and long runs with an escape here and there, across run boundaries.
            text in "\\PC*|[\\x00-\\x7f]*|([a-z/é]{0,20}[\\x00-\\x1f\"\\\\]?){0,8}"
        ) {
            let mut ours = Vec::new();
            json_string(&mut ours, &text);
            proptest::prop_assert_eq!(
                String::from_utf8(ours).unwrap(),
                serde_json::to_string(&text).unwrap()
            );
        }
    }

    #[test]
    fn a_field_set_again_replaces_its_value_and_keeps_the_others() {
        let mut fields = SpanFields::default();
        fields.set("a", "one");
        fields.set("b", &2_i64);
        fields.set("c", "three");
        fields.set("a", "uno");
        fields.set("b", &20_i64);
        let json = format!(
            "{{\"name\":\"s\"{}}}",
            String::from_utf8(fields.json).unwrap()
        );
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(
            value,
            serde_json::json!({"name": "s", "a": "uno", "b": 20, "c": "three"})
        );
    }
}
