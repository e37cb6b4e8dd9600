//! `spawn_stack()`: auth, users and orders wired together as in production, all exporting
//! their spans to one receiver in the test; and the lookups that read a trace back.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tessera_e2e::stack::{self, PASSWORD};
use tessera_testkit::otlp::{OtlpReceiver, ReceivedSpan, SpanKind, dump};
use uuid::Uuid;

/// auth's `service.name`.
pub const AUTH: &str = "auth";
/// users' `service.name`.
pub const USERS: &str = "users";
/// orders' `service.name`.
pub const ORDERS: &str = "orders";
/// The span name of users' gRPC `CreateUser`, on the client and the server.
pub const CREATE_USER: &str = "tessera.users.v1.UserService/CreateUser";
/// The span name of users' gRPC `GetUser`, on the client and the server.
pub const GET_USER: &str = "tessera.users.v1.UserService/GetUser";

/// How long a story's spans may take to be exported and arrive.
const ARRIVAL: Duration = Duration::from_secs(20);

/// The three services and the receiver their spans go to.
pub struct Stack {
    pub receiver: OtlpReceiver,
    pub services: stack::Stack,
    client: reqwest::Client,
}

/// A registered, logged-in user.
pub struct User {
    pub id: Uuid,
    pub token: String,
}

/// The W3C context a test sends with one request: the trace it starts, and the remote span
/// the service's server span must hang from.
pub struct RemoteParent {
    pub trace_id: String,
    pub span_id: String,
}

impl RemoteParent {
    /// Fresh random ids, so the test alone knows this trace.
    pub fn fresh() -> Self {
        let span = Uuid::new_v4().simple().to_string();
        Self {
            trace_id: Uuid::new_v4().simple().to_string(),
            span_id: span[..16].to_owned(),
        }
    }

    /// The `traceparent` header value, sampled.
    pub fn header(&self) -> String {
        format!("00-{}-{}-01", self.trace_id, self.span_id)
    }
}

/// Starts auth, users and orders, all exporting to a new receiver every 100 ms rather than
/// the SDK's 5 s, so a test waits for its spans no longer than it must.
pub async fn spawn_stack() -> Stack {
    let receiver = OtlpReceiver::start().await;
    let services = stack::Stack::builder()
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint())
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .start()
        .await;
    Stack {
        receiver,
        services,
        client: tessera_testkit::http_client(),
    }
}

impl Stack {
    /// Registers a new account under `parent` and logs it in.
    pub async fn register(&self, parent: &RemoteParent) -> User {
        let email = format!("trace-{}@example.com", Uuid::now_v7().simple());
        let body = json!({ "email": email, "password": PASSWORD, "display_name": "Ada" });
        let request = self
            .client
            .post(
                self.services
                    .url(stack::Service::Auth, "/api/v1/auth/register"),
            )
            .json(&body);
        let registered = send(request, parent, StatusCode::CREATED).await;
        let login = self
            .client
            .post(
                self.services
                    .url(stack::Service::Auth, "/api/v1/auth/login"),
            )
            .json(&json!({ "email": email, "password": PASSWORD }));
        let response = login.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let session: Value = response.json().await.unwrap();
        User {
            id: registered["user_id"].as_str().unwrap().parse().unwrap(),
            token: session["access_token"].as_str().unwrap().to_owned(),
        }
    }

    /// Places an order for `user` under `parent`; returns its id.
    pub async fn place_order(&self, user: &User, parent: &RemoteParent) -> String {
        let body = json!({
            "currency": "EUR",
            "items": [{ "sku": "SKU-1", "quantity": 2, "unit_price_cents": 1250 }]
        });
        let request = self
            .client
            .post(self.services.url(stack::Service::Orders, "/api/v1/orders"))
            .bearer_auth(&user.token)
            .header("idempotency-key", Uuid::now_v7().to_string())
            .json(&body);
        let order = send(request, parent, StatusCode::CREATED).await;
        order["id"].as_str().unwrap().to_owned()
    }

    /// Deletes `user`'s profile at users, as the user, under `parent`.
    pub async fn delete_user(&self, user: &User, parent: &RemoteParent) {
        let request = self
            .client
            .delete(
                self.services
                    .url(stack::Service::Users, &format!("/api/v1/users/{}", user.id)),
            )
            .bearer_auth(&user.token);
        send(request, parent, StatusCode::NO_CONTENT).await;
    }

    /// The spans of `parent`'s trace, once each of `expected` (service, kind, name) is among
    /// them.
    pub async fn trace(&self, parent: &RemoteParent, expected: &[(&str, SpanKind, &str)]) -> Trace {
        let id = parent.trace_id.clone();
        let arrived = |spans: &[ReceivedSpan]| {
            expected.iter().all(|&(service, kind, name)| {
                spans
                    .iter()
                    .any(|span| span.trace_id == id && is(span, service, kind, name))
            })
        };
        // Printed first, so that the dump of what arrived, should it not, reads against it.
        eprintln!("awaiting in trace {id}: {expected:?}");
        let spans = self.receiver.wait_for(arrived, ARRIVAL).await;
        Trace {
            spans: spans
                .into_iter()
                .filter(|span| span.trace_id == id)
                .collect(),
        }
    }

    /// Asserts every span received came from one of the three services, named.
    pub fn assert_every_span_names_its_service(&self) {
        let spans = self.receiver.spans();
        let unnamed: Vec<ReceivedSpan> = spans
            .iter()
            .filter(|span| ![AUTH, USERS, ORDERS].contains(&span.service.as_str()))
            .cloned()
            .collect();
        assert!(
            unnamed.is_empty(),
            "spans of no known service:\n{}",
            dump(&unnamed)
        );
    }
}

/// Sends `request` with `parent`'s `traceparent`; asserts the answer's status, returns its
/// body (`null` if it has none).
async fn send(
    request: reqwest::RequestBuilder,
    parent: &RemoteParent,
    status: StatusCode,
) -> Value {
    let response = request
        .header("traceparent", parent.header())
        .send()
        .await
        .unwrap();
    let actual = response.status();
    let text = response.text().await.unwrap();
    assert_eq!(actual, status, "{text}");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

fn is(span: &ReceivedSpan, service: &str, kind: SpanKind, name: &str) -> bool {
    span.service == service && span.kind == kind && span.name == name
}

/// Whether `ancestor` is `child`'s parent, or its parent's, and so on up the trace.
pub fn descends_from(
    spans: &[ReceivedSpan],
    child: &ReceivedSpan,
    ancestor: &ReceivedSpan,
) -> bool {
    let mut parent = child.parent_span_id.as_deref();
    // Each step climbs one span; more steps than spans would mean a cycle.
    for _ in 0..=spans.len() {
        let Some(id) = parent else {
            return false;
        };
        if child.trace_id == ancestor.trace_id && id == ancestor.span_id {
            return true;
        }
        parent = spans
            .iter()
            .find(|span| span.trace_id == child.trace_id && span.span_id == id)
            .and_then(|span| span.parent_span_id.as_deref());
    }
    false
}

/// The spans of one trace, with assertions that print the whole trace when they fail.
pub struct Trace {
    spans: Vec<ReceivedSpan>,
}

impl Trace {
    /// The one span `service` reported as `kind` `name`.
    pub fn span(&self, service: &str, kind: SpanKind, name: &str) -> &ReceivedSpan {
        let mut found = self
            .spans
            .iter()
            .filter(|span| is(span, service, kind, name));
        let span = found
            .next()
            .unwrap_or_else(|| panic!("no {service} {kind:?} span {name:?} in\n{self}"));
        assert!(
            found.next().is_none(),
            "more than one {service} {kind:?} span {name:?} in\n{self}"
        );
        span
    }

    /// `service`'s REST server span for `method` `route`, checked: its semantic attributes,
    /// answered `status`, and a child of the span the test sent.
    pub fn rest_server(
        &self,
        service: &str,
        (method, route): (&str, &str),
        status: StatusCode,
        parent: &RemoteParent,
    ) -> &ReceivedSpan {
        let span = self.span(service, SpanKind::Server, &format!("{method} {route}"));
        self.assert_attribute(span, "http.request.method", method);
        self.assert_attribute(span, "http.route", route);
        self.assert_attribute(span, "http.response.status_code", status.as_str());
        assert_eq!(
            span.parent_span_id.as_deref(),
            Some(parent.span_id.as_str()),
            "{span} does not hang from the span the test sent in\n{self}"
        );
        span
    }

    /// `service`'s gRPC span of `kind` for `method`, checked.
    pub fn grpc(&self, service: &str, kind: SpanKind, method: &str) -> &ReceivedSpan {
        let span = self.span(service, kind, method);
        self.assert_attribute(span, "rpc.system", "grpc");
        span
    }

    /// `service`'s relay span publishing `event` (its envelope), checked.
    pub fn publish(&self, service: &str, event: &Value) -> &ReceivedSpan {
        let event_type = event["type"].as_str().unwrap();
        let span = self.span(
            service,
            SpanKind::Producer,
            &format!("publish {event_type}"),
        );
        self.assert_attribute(span, "messaging.system", "rabbitmq");
        self.assert_attribute(span, "messaging.destination.name", "tessera.events");
        self.assert_attribute(span, "messaging.message.id", event["id"].as_str().unwrap());
        span
    }

    /// `service`'s consumer span processing an event of `event_type`, checked.
    pub fn process(&self, service: &str, event_type: &str) -> &ReceivedSpan {
        let span = self.span(
            service,
            SpanKind::Consumer,
            &format!("process {event_type}"),
        );
        self.assert_attribute(span, "messaging.system", "rabbitmq");
        span
    }

    /// Asserts `child`'s parent is `parent`.
    pub fn assert_child(&self, child: &ReceivedSpan, parent: &ReceivedSpan) {
        assert_eq!(
            child.parent_span_id.as_deref(),
            Some(parent.span_id.as_str()),
            "{child}\nis not a child of\n{parent}\nin\n{self}"
        );
    }

    /// Asserts `ancestor` is above `descendant` in the trace.
    pub fn assert_descends(&self, descendant: &ReceivedSpan, ancestor: &ReceivedSpan) {
        assert!(
            descends_from(&self.spans, descendant, ancestor),
            "{descendant}\ndoes not descend from\n{ancestor}\nin\n{self}"
        );
    }

    fn assert_attribute(&self, span: &ReceivedSpan, key: &str, value: &str) {
        assert_eq!(
            span.attribute(key),
            Some(value),
            "{span} has {:?}; in\n{self}",
            span.attributes
        );
    }
}

impl std::fmt::Display for Trace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&dump(&self.spans))
    }
}
