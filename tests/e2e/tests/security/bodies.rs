//! Every route that takes a body, as the OpenAPI documents declare them, answers a body that
//! is too large or malformed with a 4xx problem, never a 5xx, and acts on none of them.
//!
//! orders' own tests (`orders/validation.rs`) name the field at fault for each invalid order;
//! here the same kinds of damage are swept over every route of every service.

use std::time::Duration;

use serde_json::{Value, json};
use tessera_e2e::stack::{Account, Service, Session, Stack};
use tessera_testkit::openapi::Operation;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{Answer, Callers, Failures, Sample, operations, prepare, sample, truncated};

/// Beyond the services' default body limit (64 KiB).
const TOO_LARGE: usize = 70 * 1024;

/// What is sent: a content type (none when `None`) and the bytes.
struct Body {
    content_type: Option<&'static str>,
    bytes: Vec<u8>,
}

fn json_bytes(bytes: impl Into<Vec<u8>>) -> Body {
    Body {
        content_type: Some("application/json"),
        bytes: bytes.into(),
    }
}

/// What must come back.
#[derive(Clone, Copy)]
enum Expect {
    Status(u16),
    /// A 422 whose `errors` name this field.
    Field422,
    ClientError,
}

/// The damaged bodies for a route whose valid body is `sample`, each with what is wrong and
/// what it must be answered with.
fn damaged(sample: &Sample) -> Vec<(String, Body, Expect)> {
    let valid = sample.body.to_string();
    let first_field = sample
        .body
        .as_object()
        .and_then(|fields| fields.keys().next())
        .expect("a sample body is an object with fields")
        .clone();
    let mut padded = sample.body.clone();
    padded["padding"] = json!("x".repeat(TOO_LARGE));
    let mut duplicated = valid.clone();
    duplicated.insert_str(
        1,
        &format!("{:?}:{},", first_field, sample.body[&first_field]),
    );
    let mut unknown = sample.body.clone();
    unknown["unexpected"] = json!(true);
    let mut cases = vec![
        ("empty".to_owned(), json_bytes(""), Expect::Status(400)),
        // A known field first: an unknown one would be refused before the JSON is.
        (
            "cut short".to_owned(),
            json_bytes(format!("{{{first_field:?}:")),
            Expect::Status(400),
        ),
        (
            "trailing garbage".to_owned(),
            json_bytes(format!("{valid} x")),
            Expect::Status(400),
        ),
        (
            "invalid UTF-8".to_owned(),
            json_bytes([format!("{{{first_field:?}:\"").as_bytes(), b"\xff\xfe\"}"].concat()),
            Expect::Status(400),
        ),
        (
            "nested 20,000 deep".to_owned(),
            json_bytes(format!("{{{first_field:?}:{}", "[".repeat(20_000))),
            Expect::ClientError,
        ),
        (
            "too large".to_owned(),
            json_bytes(padded.to_string()),
            Expect::Status(413),
        ),
        (
            "text/plain".to_owned(),
            Body {
                content_type: Some("text/plain"),
                bytes: valid.clone().into_bytes(),
            },
            Expect::Status(415),
        ),
        (
            "form-encoded".to_owned(),
            Body {
                content_type: Some("application/x-www-form-urlencoded"),
                bytes: b"a=b".to_vec(),
            },
            Expect::Status(415),
        ),
        (
            "no content type".to_owned(),
            Body {
                content_type: None,
                bytes: valid.clone().into_bytes(),
            },
            Expect::Status(415),
        ),
        ("null".to_owned(), json_bytes("null"), Expect::ClientError),
        ("a number".to_owned(), json_bytes("42"), Expect::ClientError),
        (
            "a string".to_owned(),
            json_bytes(r#""x""#),
            Expect::ClientError,
        ),
        (
            "an empty array".to_owned(),
            json_bytes("[]"),
            Expect::ClientError,
        ),
        (
            "the body inside an array".to_owned(),
            json_bytes(json!([sample.body]).to_string()),
            Expect::ClientError,
        ),
        (
            format!("{first_field} twice"),
            json_bytes(duplicated),
            Expect::ClientError,
        ),
        (
            "an unknown field".to_owned(),
            json_bytes(unknown.to_string()),
            Expect::Field422,
        ),
    ];
    for (field, value) in sample.body.as_object().unwrap() {
        let mut body = sample.body.clone();
        body[field] = wrong_type(value);
        cases.push((
            format!("{field} of the wrong type"),
            json_bytes(body.to_string()),
            Expect::Field422,
        ));
    }
    // Last: should one be taken for the object it spells, the others meet its effects.
    for (what, body) in &sample.positional {
        cases.push((
            (*what).to_owned(),
            json_bytes(body.to_string()),
            Expect::ClientError,
        ));
    }
    cases
}

/// A JSON value of another type than `value`.
fn wrong_type(value: &Value) -> Value {
    match value {
        Value::String(_) | Value::Null => json!(12345),
        Value::Number(_) => json!("12"),
        Value::Array(_) => json!({ "not": "a list" }),
        Value::Object(_) | Value::Bool(_) => json!(["not", "an object"]),
    }
}

/// The sessions a body may name (see [`Callers`]): for a route that acts on the one named, new
/// ones for every request, so that a body wrongly taken (a refresh, a logout) cannot spoil the
/// requests after it.
async fn sessions(
    stack: &Stack,
    operation: &Operation,
    account: &Account,
    own: &Session,
) -> (Session, Session) {
    let names_a_session =
        ["/api/v1/auth/refresh", "/api/v1/auth/logout"].contains(&operation.path.as_str());
    if names_a_session {
        (stack.login(account).await, stack.login(account).await)
    } else {
        (own.clone(), own.clone())
    }
}

/// The access token to send: logout's is of the session its body names.
fn bearer<'a>(operation: &Operation, own: &'a Session, logout: &'a Session) -> &'a str {
    if operation.path == "/api/v1/auth/logout" {
        &logout.access
    } else {
        &own.access
    }
}

fn callers<'a>(account: &'a Account, refreshable: &'a Session, logout: &'a Session) -> Callers<'a> {
    Callers {
        account,
        refreshable,
        logout,
    }
}

/// Sends `body` to `operation` (with `token` if it is secured) and checks the answer.
async fn check(
    stack: &Stack,
    (service, operation): (Service, &Operation),
    token: &str,
    own_id: &str,
    (what, body, expect): (&str, Body, Expect),
) -> Result<(), String> {
    let mut request = prepare(stack, service, operation, |_| own_id.to_owned());
    if operation.secured {
        request = request.bearer_auth(token);
    }
    if let Some(content_type) = body.content_type {
        request = request.header("content-type", content_type);
    }
    let answer = Answer::of(request.body(body.bytes).send().await.unwrap()).await;
    let what = format!("{} with a body {what}", operation.name());
    match expect {
        Expect::Status(status) => answer.problem(status, &what),
        Expect::ClientError => answer.client_error(&what),
        Expect::Field422 => {
            answer.problem(422, &what)?;
            let problem: Value = serde_json::from_str(&answer.body).unwrap();
            match problem["errors"].as_array() {
                Some(errors) if !errors.is_empty() => Ok(()),
                _ => Err(format!("{what}: no field named in {problem}")),
            }
        }
    }
}

/// A JSON body beyond the limit sent chunked, with no `Content-Length` to refuse it by: the
/// answer's status, read off the wire.
async fn chunked_status(
    stack: &Stack,
    (service, operation): (Service, &Operation),
    path: &str,
    token: &str,
) -> u16 {
    let addr = stack
        .process(service)
        .http_url()
        .trim_start_matches("http://")
        .to_owned();
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "{} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nIdempotency-Key: {}\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        operation.method,
        uuid::Uuid::now_v7()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let chunk = format!("{:x}\r\n{}\r\n", 16 * 1024, " ".repeat(16 * 1024));
    // The server may answer and stop reading before the end; what it answered is the point.
    for _ in 0..TOO_LARGE / (16 * 1024) + 1 {
        if stream.write_all(chunk.as_bytes()).await.is_err() {
            break;
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer));
    // A reset after the answer arrived leaves it read.
    let _ = read.await.expect("no answer to a chunked body within 10 s");
    let text = String::from_utf8_lossy(&answer);
    text.strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|status| status.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {}", truncated(&text)))
}

#[tokio::test]
async fn every_route_with_a_body_refuses_oversized_and_malformed_ones_with_a_4xx() {
    let stack = Stack::builder().start().await;
    let account = stack.register().await;
    let own = stack.login(&account).await;
    let own_id = account.id.to_string();
    let with_bodies: Vec<(Service, Operation)> = operations(&stack)
        .await
        .into_iter()
        .filter(|(_, operation)| operation.has_body)
        .collect();
    let names: Vec<String> = with_bodies.iter().map(|(_, o)| o.name()).collect();
    for known in ["POST /api/v1/auth/register", "POST /api/v1/orders"] {
        assert!(names.iter().any(|n| n == known), "{known} not in {names:?}");
    }
    let mut failures = Failures::default();

    for (service, operation) in &with_bodies {
        let target = (*service, operation);
        let cases = damaged(&sample(operation, &callers(&account, &own, &own))).len();
        for case in 0..cases {
            let (refreshable, logout) = sessions(&stack, operation, &account, &own).await;
            let sample = sample(operation, &callers(&account, &refreshable, &logout));
            let (what, body, expect) = damaged(&sample).swap_remove(case);
            let token = bearer(operation, &own, &logout);
            let case = (what.as_str(), body, expect);
            failures.record(check(&stack, target, token, &own_id, case).await);
        }
        let (_, logout) = sessions(&stack, operation, &account, &own).await;
        let path = operation.path_with(|_| own_id.clone());
        let token = bearer(operation, &own, &logout);
        let status = chunked_status(&stack, target, &path, token).await;
        if status != 413 {
            let name = operation.name();
            failures.record(Err(format!(
                "{name}: a too large chunked body got {status}"
            )));
        }
    }

    failures.assert_none("oversized and malformed bodies");
    // Nothing was acted on: no order placed, the profile as it was.
    let orders: Value = stack
        .get(Service::Orders, "/api/v1/orders", &own.access)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(orders["items"], json!([]), "{orders}");
    let me: Value = stack
        .get(Service::Users, "/api/v1/users/me", &own.access)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["display_name"], "Ada Lovelace");
}
