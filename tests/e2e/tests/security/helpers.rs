//! The routes under test, read from each service's `/openapi.json`; a valid body for each route
//! that takes one; and checks that collect every failure of a sweep instead of stopping at
//! the first.

use reqwest::{RequestBuilder, Response};
use serde_json::{Value, json};
use tessera_e2e::stack::{Account, PASSWORD, Service, Session, Stack, an_order};
use tessera_testkit::openapi::{self, Operation};
use uuid::Uuid;

/// Every operation of every service, as its OpenAPI document describes it.
pub async fn operations(stack: &Stack) -> Vec<(Service, Operation)> {
    let mut all = Vec::new();
    for service in Service::ALL {
        let operations = openapi::operations_of(stack.process(service).http_url()).await;
        all.extend(operations.into_iter().map(|operation| (service, operation)));
    }
    all
}

/// The operations that demand credentials; at least the ones named in `known`, so a document
/// that stopped declaring security cannot make a sweep vacuous.
pub async fn secured_operations(stack: &Stack, known: &[&str]) -> Vec<(Service, Operation)> {
    let secured: Vec<(Service, Operation)> = operations(stack)
        .await
        .into_iter()
        .filter(|(_, operation)| operation.secured)
        .collect();
    let names: Vec<String> = secured.iter().map(|(_, o)| o.name()).collect();
    for name in known {
        assert!(
            names.iter().any(|n| n == name),
            "{name} is not among the secured operations: {names:?}"
        );
    }
    secured
}

/// `operation` at `service` as a request: path parameters from `param`, and a fresh value for
/// each required header (such as an `Idempotency-Key`), so only what a test varies is at fault.
pub fn prepare(
    stack: &Stack,
    service: Service,
    operation: &Operation,
    param: impl Fn(&str) -> String,
) -> RequestBuilder {
    let path = operation.path_with(param);
    let mut request = stack.request(operation.method.clone(), service, &path);
    for header in &operation.required_headers {
        request = request.header(header, Uuid::now_v7().to_string());
    }
    request
}

/// A valid body for a route, and the same data written as JSON arrays where objects belong.
pub struct Sample {
    /// The body as the route documents it.
    pub body: Value,
    /// `(what, body)`: the body with an object written as the array of its values, in the
    /// order the service declares its fields: what a lenient deserializer takes as the object.
    pub positional: Vec<(&'static str, Value)>,
}

/// The callers and tokens whose data the sample bodies carry.
pub struct Callers<'a> {
    /// An account whose email and [`PASSWORD`] log in.
    pub account: &'a Account,
    /// A live session whose refresh token `POST /api/v1/auth/refresh` may get.
    pub refreshable: &'a Session,
    /// A live session whose refresh token `POST /api/v1/auth/logout` may get.
    pub logout: &'a Session,
}

/// A valid body for `operation`, or a panic naming it: a new route that takes a body needs a
/// sample here before it can be swept.
pub fn sample(operation: &Operation, callers: &Callers<'_>) -> Sample {
    let email = format!("user-{}@example.com", Uuid::now_v7().simple());
    match operation.name().as_str() {
        "POST /api/v1/auth/register" => Sample {
            body: json!({ "email": email, "password": PASSWORD, "display_name": "Eve" }),
            positional: vec![("fields as an array", json!([email, PASSWORD, "Eve"]))],
        },
        "POST /api/v1/auth/login" => Sample {
            body: json!({ "email": callers.account.email, "password": PASSWORD }),
            positional: vec![(
                "fields as an array",
                json!([callers.account.email, PASSWORD]),
            )],
        },
        "POST /api/v1/auth/refresh" => refresh_sample(&callers.refreshable.refresh),
        "POST /api/v1/auth/logout" => refresh_sample(&callers.logout.refresh),
        "PATCH /api/v1/users/{id}" => Sample {
            body: json!({ "display_name": "Renamed", "role": null }),
            positional: vec![("fields as an array", json!(["Renamed", null]))],
        },
        "POST /api/v1/orders" => {
            let order = an_order();
            Sample {
                positional: vec![
                    ("fields as an array", json!(["EUR", order["items"]])),
                    (
                        "an item's fields as an array",
                        json!({ "currency": "EUR", "items": [["BOOK-42", 2, 1250]] }),
                    ),
                ],
                body: order,
            }
        }
        other => panic!("no sample body for {other}: add one to security/helpers.rs"),
    }
}

fn refresh_sample(token: &str) -> Sample {
    Sample {
        body: json!({ "refresh_token": token }),
        positional: vec![("fields as an array", json!([token]))],
    }
}

/// The failures of a sweep, reported together at its end.
#[derive(Default)]
pub struct Failures(Vec<String>);

impl Failures {
    /// Records `failure`, if there is one.
    pub fn record(&mut self, failure: Result<(), String>) {
        if let Err(failure) = failure {
            self.0.push(failure);
        }
    }

    /// Panics listing every failure recorded.
    pub fn assert_none(self, what: &str) {
        assert!(
            self.0.is_empty(),
            "{what}: {} failures:\n{}",
            self.0.len(),
            self.0.join("\n")
        );
    }
}

/// What a client was told: the status, the content type and the body text.
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// The `Content-Type`, empty when there is none.
    pub content_type: String,
    /// The `WWW-Authenticate` header, if any.
    pub www_authenticate: Option<String>,
    /// The body.
    pub body: String,
}

impl Answer {
    /// Reads `response` whole.
    pub async fn of(response: Response) -> Self {
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .map(|value| value.to_str().unwrap_or_default().to_owned())
        };
        let content_type = header("content-type").unwrap_or_default();
        let www_authenticate = header("www-authenticate");
        Self {
            status: response.status().as_u16(),
            content_type,
            www_authenticate,
            body: response.text().await.unwrap_or_default(),
        }
    }

    /// Ok if this is a problem+json answer with `status`; otherwise what it was, for `what`.
    pub fn problem(&self, status: u16, what: &str) -> Result<(), String> {
        self.problem_where(|actual| actual == status, &status.to_string(), what)
    }

    /// Ok if this is a problem+json answer with a 4xx status.
    pub fn client_error(&self, what: &str) -> Result<(), String> {
        self.problem_where(|actual| (400..500).contains(&actual), "4xx", what)
    }

    fn problem_where(
        &self,
        expected: impl Fn(u16) -> bool,
        wanted: &str,
        what: &str,
    ) -> Result<(), String> {
        let body: Value = serde_json::from_str(&self.body).unwrap_or(Value::Null);
        if expected(self.status)
            && self.content_type == "application/problem+json"
            && body["status"] == self.status
        {
            Ok(())
        } else {
            Err(format!(
                "{what}: wanted a {wanted} problem, got {} {:?} {}",
                self.status,
                self.content_type,
                truncated(&self.body)
            ))
        }
    }
}

/// The first 300 characters of `text`.
pub fn truncated(text: &str) -> String {
    match text.char_indices().nth(300) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}
