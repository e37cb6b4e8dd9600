//! An OTLP/gRPC trace receiver in the test process: services export their spans to it, as
//! they would to a collector, and tests assert on the traces that arrive.

use std::collections::BTreeMap;
use std::fmt;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, Span};
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

pub use opentelemetry_proto::tonic::trace::v1::span::SpanKind;

/// One received span, flattened out of the resource and scope it was sent under.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedSpan {
    /// The `service.name` of the resource that sent it (empty if it had none).
    pub service: String,
    /// The span's name (`POST /api/v1/orders`).
    pub name: String,
    /// Its kind; an unknown value reads as unspecified.
    pub kind: SpanKind,
    /// 32 lowercase hex digits.
    pub trace_id: String,
    /// 16 lowercase hex digits.
    pub span_id: String,
    /// The parent's span id; `None` for a root span.
    pub parent_span_id: Option<String>,
    /// Attribute values as text: strings as they are, numbers and booleans as Rust prints
    /// them, arrays as `[a, b]`, bytes as hex.
    pub attributes: BTreeMap<String, String>,
    /// The `(trace_id, span_id)` of each linked span.
    pub links: Vec<(String, String)>,
}

impl ReceivedSpan {
    /// The value of attribute `key`, if the span has it.
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

impl fmt::Display for ReceivedSpan {
    /// One line: who, what, and where in its trace.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = self.kind.as_str_name().trim_start_matches("SPAN_KIND_");
        let parent = self.parent_span_id.as_deref().unwrap_or("-");
        write!(
            f,
            "{} {kind} {:?} trace={} span={} parent={parent}",
            self.service, self.name, self.trace_id, self.span_id
        )
    }
}

/// `spans`, one per line, for failure messages.
pub fn dump(spans: &[ReceivedSpan]) -> String {
    spans.iter().fold(String::new(), |mut out, span| {
        let _ = writeln!(out, "  {span}");
        out
    })
}

/// A trace receiver on 127.0.0.1:<free port>, keeping every span it is sent; stopped when
/// dropped.
pub struct OtlpReceiver {
    addr: SocketAddr,
    spans: Arc<Mutex<Vec<ReceivedSpan>>>,
    server: tokio::task::JoinHandle<()>,
}

impl OtlpReceiver {
    /// Starts serving `opentelemetry.proto.collector.trace.v1.TraceService`.
    pub async fn start() -> Self {
        let spans = Arc::new(Mutex::new(Vec::new()));
        let service = TraceServiceServer::new(Collector {
            spans: Arc::clone(&spans),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            Server::builder()
                .add_service(service)
                .serve_with_incoming(TcpIncoming::from(listener))
                .await
                .unwrap();
        });
        Self {
            addr,
            spans,
            server,
        }
    }

    /// The value for `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every span received so far, in the order they arrived.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.spans.lock().unwrap().clone()
    }

    /// The spans received once `done` holds for them, checked every 50 ms; panics with what
    /// did arrive if it does not within `timeout`.
    pub async fn wait_for(
        &self,
        done: impl Fn(&[ReceivedSpan]) -> bool,
        timeout: Duration,
    ) -> Vec<ReceivedSpan> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let spans = self.spans();
            if done(&spans) {
                return spans;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "the spans awaited did not arrive within {timeout:?}; received {}:\n{}",
                    spans.len(),
                    dump(&spans)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// The gRPC service behind [`OtlpReceiver`].
struct Collector {
    spans: Arc<Mutex<Vec<ReceivedSpan>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let received = request
            .into_inner()
            .resource_spans
            .iter()
            .flat_map(flatten)
            .collect::<Vec<_>>();
        self.spans.lock().unwrap().extend(received);
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// The spans of every scope in `resource_spans`, each tagged with the resource's service.
fn flatten(resource_spans: &ResourceSpans) -> Vec<ReceivedSpan> {
    let service = resource_spans
        .resource
        .as_ref()
        .and_then(|resource| attributes(&resource.attributes).remove("service.name"))
        .unwrap_or_default();
    resource_spans
        .scope_spans
        .iter()
        .flat_map(|scope| &scope.spans)
        .map(|span| received(&service, span))
        .collect()
}

fn received(service: &str, span: &Span) -> ReceivedSpan {
    ReceivedSpan {
        service: service.to_owned(),
        name: span.name.clone(),
        kind: SpanKind::try_from(span.kind).unwrap_or(SpanKind::Unspecified),
        trace_id: hex(&span.trace_id),
        span_id: hex(&span.span_id),
        // OTLP sends a root's parent as no bytes; some exporters send zeros.
        parent_span_id: span
            .parent_span_id
            .iter()
            .any(|byte| *byte != 0)
            .then(|| hex(&span.parent_span_id)),
        attributes: attributes(&span.attributes),
        links: span
            .links
            .iter()
            .map(|link| (hex(&link.trace_id), hex(&link.span_id)))
            .collect(),
    }
}

fn attributes(pairs: &[KeyValue]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|pair| (pair.key.clone(), text(pair.value.as_ref())))
        .collect()
}

/// An attribute value as text; what a test compares with a literal.
fn text(value: Option<&AnyValue>) -> String {
    match value.and_then(|value| value.value.as_ref()) {
        None => String::new(),
        Some(Value::StringValue(text)) => text.clone(),
        Some(Value::BoolValue(flag)) => flag.to_string(),
        Some(Value::IntValue(number)) => number.to_string(),
        Some(Value::DoubleValue(number)) => number.to_string(),
        Some(Value::BytesValue(bytes)) => hex(bytes),
        Some(Value::ArrayValue(array)) => {
            let items: Vec<String> = array.values.iter().map(|v| text(Some(v))).collect();
            format!("[{}]", items.join(", "))
        }
        Some(Value::KvlistValue(list)) => format!("{:?}", attributes(&list.values)),
        // A profiling-only reference into a table traces do not have.
        Some(Value::StringValueStrindex(index)) => format!("strindex:{index}"),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut out, byte| {
        let _ = write!(out, "{byte:02x}");
        out
    })
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::ScopeSpans;
    use opentelemetry_proto::tonic::trace::v1::span::Link;

    use super::*;

    fn attribute(key: &str, value: Value) -> KeyValue {
        KeyValue {
            key: key.to_owned(),
            value: Some(AnyValue { value: Some(value) }),
            ..KeyValue::default()
        }
    }

    fn string(key: &str, value: &str) -> KeyValue {
        attribute(key, Value::StringValue(value.to_owned()))
    }

    /// A span of `service` with a parent and a link, as an SDK would export it.
    fn span(service: &str, parent_span_id: Vec<u8>) -> ResourceSpans {
        let span = Span {
            trace_id: (1..=16).collect(),
            span_id: vec![0xab; 8],
            parent_span_id,
            name: "POST /api/v1/orders".to_owned(),
            kind: SpanKind::Server.into(),
            attributes: vec![
                string("http.request.method", "POST"),
                attribute("http.response.status_code", Value::IntValue(201)),
            ],
            links: vec![Link {
                trace_id: vec![0xef; 16],
                span_id: vec![0x12; 8],
                ..Link::default()
            }],
            ..Span::default()
        };
        ResourceSpans {
            resource: Some(Resource {
                attributes: vec![string("service.name", service)],
                ..Resource::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: vec![span],
                ..ScopeSpans::default()
            }],
            ..ResourceSpans::default()
        }
    }

    async fn export(receiver: &OtlpReceiver, resource_spans: ResourceSpans) {
        let mut client = TraceServiceClient::connect(receiver.endpoint())
            .await
            .unwrap();
        client
            .export(ExportTraceServiceRequest {
                resource_spans: vec![resource_spans],
            })
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn an_exported_span_comes_back_flattened() {
        let receiver = OtlpReceiver::start().await;

        export(&receiver, span("orders", vec![0xcd; 8])).await;

        let spans = receiver
            .wait_for(|spans| !spans.is_empty(), Duration::from_secs(5))
            .await;
        let expected = ReceivedSpan {
            service: "orders".to_owned(),
            name: "POST /api/v1/orders".to_owned(),
            kind: SpanKind::Server,
            trace_id: "0102030405060708090a0b0c0d0e0f10".to_owned(),
            span_id: "abababababababab".to_owned(),
            parent_span_id: Some("cdcdcdcdcdcdcdcd".to_owned()),
            attributes: BTreeMap::from([
                ("http.request.method".to_owned(), "POST".to_owned()),
                ("http.response.status_code".to_owned(), "201".to_owned()),
            ]),
            links: vec![(
                "efefefefefefefefefefefefefefefef".to_owned(),
                "1212121212121212".to_owned(),
            )],
        };
        assert_eq!(spans, vec![expected]);
    }

    #[tokio::test]
    async fn a_root_span_has_no_parent() {
        let receiver = OtlpReceiver::start().await;

        export(&receiver, span("users", Vec::new())).await;

        let spans = receiver
            .wait_for(|spans| !spans.is_empty(), Duration::from_secs(5))
            .await;
        assert_eq!(spans[0].parent_span_id, None);
    }

    #[tokio::test]
    #[should_panic(expected = "users SERVER \"POST /api/v1/orders\"")]
    async fn waiting_in_vain_names_what_arrived() {
        let receiver = OtlpReceiver::start().await;
        export(&receiver, span("users", Vec::new())).await;

        receiver
            .wait_for(|spans| spans.len() > 1, Duration::from_millis(300))
            .await;
    }
}
