//! `spawn_stack()`: auth, users and orders wired together as in production, all exporting
//! their spans to one receiver in the test; and the lookups that read a trace back.

use std::time::Duration;

use reqwest::StatusCode;
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use tessera_e2e::binary;
use tessera_jwt::SigningKey;
use tessera_testkit::database::TestDatabase;
use tessera_testkit::otlp::{OtlpReceiver, ReceivedSpan, SpanKind, dump};
use tessera_testkit::process::ServiceProcess;
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

const PASSWORD: &str = "correct horse battery staple";
const KID: &str = "test-1";
/// How long a story's spans may take to be exported and arrive.
const ARRIVAL: Duration = Duration::from_secs(20);

/// The three services, their databases, and the receiver their spans go to.
pub struct Stack {
    pub receiver: OtlpReceiver,
    pub auth: ServiceProcess,
    pub users: ServiceProcess,
    pub orders: ServiceProcess,
    _databases: [TestDatabase; 3],
    _keys: tempfile::TempDir,
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

/// Starts auth, users and orders against fresh databases, each with its own queue and all
/// exporting to a new receiver.
pub async fn spawn_stack() -> Stack {
    let receiver = OtlpReceiver::start().await;
    let keys = tempfile::tempdir().unwrap();
    let pem = SigningKey::generate(KID).to_pem();
    std::fs::write(keys.path().join(format!("{KID}.pem")), pem.expose_secret()).unwrap();
    // Empty: each binary applies its own migrations as it starts.
    let databases = [
        TestDatabase::empty().await,
        TestDatabase::empty().await,
        TestDatabase::empty().await,
    ];
    let [auth_db, users_db, orders_db] = &databases;
    let (auth, users) = start_auth_and_users(&receiver, &keys, auth_db, users_db).await;
    let jwks_url = format!("{}/.well-known/jwks.json", auth.http_url());
    let orders = start_orders(&receiver, orders_db, &jwks_url, users.grpc_url()).await;
    Stack {
        receiver,
        auth,
        users,
        orders,
        _databases: databases,
        _keys: keys,
        client: reqwest::Client::new(),
    }
}

/// users, told where auth's JWKS will be, then auth on those ports. Another process can
/// take the ports meanwhile; then auth exits, and the pair starts again.
async fn start_auth_and_users(
    receiver: &OtlpReceiver,
    keys: &tempfile::TempDir,
    auth_db: &TestDatabase,
    users_db: &TestDatabase,
) -> (ServiceProcess, ServiceProcess) {
    let queue = queue("auth");
    for attempt in 1..=3 {
        let auth_ports = (tessera_testkit::free_port(), tessera_testkit::free_port());
        let users = start_users(receiver, users_db, auth_ports.0).await;
        let env = auth_env(receiver, keys, auth_db, users.grpc_url(), &queue);
        match ServiceProcess::start_on(binary("auth"), &[], "AUTH_", &env, auth_ports).await {
            Ok(auth) => {
                tessera_testkit::events::wait_for_queue(&queue).await;
                return (auth, users);
            }
            Err(status) if attempt < 3 => {
                eprintln!("auth exited before it was ready ({status}); starting both again");
            }
            Err(status) => panic!("auth exited before it was ready: {status}"),
        }
    }
    unreachable!("the last attempt returns or panics")
}

/// users, trusting the JWKS auth will serve on `auth_http_port`.
async fn start_users(
    receiver: &OtlpReceiver,
    database: &TestDatabase,
    auth_http_port: u16,
) -> ServiceProcess {
    let jwks_url = format!("http://127.0.0.1:{auth_http_port}/.well-known/jwks.json");
    let mut env = traced_env("USERS_", database, receiver);
    tessera_testkit::set_var(&mut env, "USERS_", "JWKS_URL", jwks_url);
    ServiceProcess::start(binary("users"), &[], "USERS_", &env).await
}

fn auth_env(
    receiver: &OtlpReceiver,
    keys: &tempfile::TempDir,
    database: &TestDatabase,
    users_grpc_url: &str,
    queue: &str,
) -> Vec<(String, String)> {
    let mut env = traced_env("AUTH_", database, receiver);
    for (name, value) in [
        ("SIGNING_KEYS_DIR", keys.path().display().to_string()),
        ("USERS_GRPC_URL", users_grpc_url.to_owned()),
        // Small but real costs: the defaults would make registering slow.
        ("ARGON2_MEMORY_KIB", "4096".to_owned()),
        ("ARGON2_ITERATIONS", "1".to_owned()),
        // Every test logs in from 127.0.0.1: its own counters, or they would add up.
        ("LOGIN_LIMITS_KEY_PREFIX", format!("test:{queue}")),
    ] {
        tessera_testkit::set_var(&mut env, "AUTH_", name, value);
    }
    with_queue(&mut env, "AUTH_", queue);
    env
}

async fn start_orders(
    receiver: &OtlpReceiver,
    database: &TestDatabase,
    jwks_url: &str,
    users_grpc_url: &str,
) -> ServiceProcess {
    let queue = queue("orders");
    let mut env = traced_env("ORDERS_", database, receiver);
    tessera_testkit::set_var(&mut env, "ORDERS_", "JWKS_URL", jwks_url);
    tessera_testkit::set_var(&mut env, "ORDERS_", "USERS_GRPC_URL", users_grpc_url);
    with_queue(&mut env, "ORDERS_", &queue);
    let orders = ServiceProcess::start(binary("orders"), &[], "ORDERS_", &env).await;
    tessera_testkit::events::wait_for_queue(&queue).await;
    orders
}

/// A service's test settings, exporting its spans to `receiver` every 100 ms rather than
/// the SDK's 5 s, so a test waits for its spans no longer than it must.
fn traced_env(
    prefix: &str,
    database: &TestDatabase,
    receiver: &OtlpReceiver,
) -> Vec<(String, String)> {
    let mut env = tessera_testkit::service_env(prefix, database.url());
    env.push((
        "OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(),
        receiver.endpoint(),
    ));
    env.push(("OTEL_BSP_SCHEDULE_DELAY".to_owned(), "100".to_owned()));
    env
}

/// A consumer queue of the test's own, deleted by the broker once the test is over.
fn queue(service: &str) -> String {
    format!("{service}-tracing-test-{}", Uuid::now_v7().simple())
}

fn with_queue(env: &mut Vec<(String, String)>, prefix: &str, queue: &str) {
    tessera_testkit::set_var(env, prefix, "EVENTS_QUEUE", queue);
    tessera_testkit::set_var(env, prefix, "EVENTS_QUEUE_EXPIRES_SECS", "120");
}

impl Stack {
    /// Registers a new account under `parent` and logs it in.
    pub async fn register(&self, parent: &RemoteParent) -> User {
        let email = format!("trace-{}@example.com", Uuid::now_v7().simple());
        let body = json!({ "email": email, "password": PASSWORD, "display_name": "Ada" });
        let request = self
            .client
            .post(format!("{}/api/v1/auth/register", self.auth.http_url()))
            .json(&body);
        let registered = send(request, parent, StatusCode::CREATED).await;
        let login = self
            .client
            .post(format!("{}/api/v1/auth/login", self.auth.http_url()))
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
            .post(format!("{}/api/v1/orders", self.orders.http_url()))
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
            .delete(format!(
                "{}/api/v1/users/{}",
                self.users.http_url(),
                user.id
            ))
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
