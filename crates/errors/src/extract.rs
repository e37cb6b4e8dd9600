//! Extractors whose rejections are [`Error`]s, so bad input is answered with problem+json.
//!
//! Use these instead of axum's own `Json`, `Path` and `Query`: axum answers rejections with
//! plain text and no field name.

use axum::body::Bytes;
use axum::extract::path::ErrorKind;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{FromRequest, FromRequestParts, RawPathParams, Request};
use axum::response::{IntoResponse, Response};
use http::request::Parts;
use http::{HeaderMap, header};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::as_schema::AsSchema;
use crate::{Error, FieldError};

/// A JSON request body (which must be `application/json` or `*+json`) or a JSON response.
///
/// A body that is not JSON is a 400; JSON that does not fit `T` (wrong type, missing or
/// unknown field — derive `deny_unknown_fields` on request types) is a 422 naming the field.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(request.headers()) {
            return Err(Error::UnsupportedMediaType(
                "expected a request body with content-type application/json".to_owned(),
            ));
        }
        let bytes =
            Bytes::from_request(request, state)
                .await
                .map_err(|rejection| match rejection {
                    BytesRejection::FailedToBufferBody(failure)
                        if failure.status() == http::StatusCode::PAYLOAD_TOO_LARGE =>
                    {
                        Error::PayloadTooLarge
                    }
                    other => Error::BadRequest(format!(
                        "cannot read the request body: {}",
                        other.body_text()
                    )),
                })?;
        parse_json(&bytes).map(Json)
    }
}

impl<T: Serialize> IntoResponse for Json<T> {
    /// `T` as `application/json`. A value that cannot be written as JSON (a map with
    /// non-string keys, a failing `Serialize`) is a bug: a 500 problem.
    fn into_response(self) -> Response {
        /// Room for a typical resource at once: axum's own `Json` starts at 128 bytes and,
        /// for any longer body, grows and copies it while writing.
        const CAPACITY: usize = 512;
        let mut body = Vec::with_capacity(CAPACITY);
        match serde_json::to_writer(&mut body, &self.0) {
            Ok(()) => (
                [(
                    header::CONTENT_TYPE,
                    http::HeaderValue::from_static("application/json"),
                )],
                body,
            )
                .into_response(),
            Err(error) => Error::internal(error).into_response(),
        }
    }
}

/// A JSON document rendered earlier (a cached one), answered as `application/json` as it is.
#[derive(Debug, Clone)]
pub struct JsonBody(pub Bytes);

impl IntoResponse for JsonBody {
    fn into_response(self) -> Response {
        (
            [(
                header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            )],
            self.0,
        )
            .into_response()
    }
}

/// Deserializes a JSON document, naming the offending field on failure.
///
/// Structs are read from JSON objects only, never from arrays of their fields; a number with
/// no fractional part is an integer (`2.0` is `2`); nothing but whitespace may follow the
/// document.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(AsSchema(&mut deserializer)).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        match inner.classify() {
            serde_json::error::Category::Data => {
                let message = strip_position(&inner.to_string());
                Error::InvalidInput(vec![FieldError::new(field_name(&path, &message), message)])
            }
            _ => not_json(&inner),
        }
    })?;
    deserializer.end().map_err(|error| not_json(&error))?;
    Ok(value)
}

fn not_json(error: &serde_json::Error) -> Error {
    Error::BadRequest(format!("the body is not valid JSON: {error}"))
}

/// The field a serde data error is about. A missing field is reported at its parent's path,
/// with the name only in the message.
fn field_name(path: &str, message: &str) -> String {
    let missing = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split_once('`'))
        .map(|(name, _)| name);
    match (path, missing) {
        (".", Some(name)) => name.to_owned(),
        (parent, Some(name)) => format!("{parent}.{name}"),
        (path, None) => path.to_owned(),
    }
}

/// serde_json appends "at line 1 column 17" to data errors; the field name says more.
fn strip_position(message: &str) -> String {
    match message.rsplit_once(" at line ") {
        Some((head, _)) => head.to_owned(),
        None => message.to_owned(),
    }
}

fn is_json(headers: &HeaderMap) -> bool {
    let Some(content_type) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Path parameters; a value that does not parse is a 422 naming the parameter.
#[derive(Debug, Clone, Copy, Default)]
pub struct Path<T>(pub T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Path(value)),
            Err(PathRejection::FailedToDeserializePathParams(error)) => {
                // A lone parameter's parse error does not carry its name; the raw params do.
                let only_key = RawPathParams::from_request_parts(parts, state)
                    .await
                    .ok()
                    .and_then(|params| match params.iter().collect::<Vec<_>>()[..] {
                        [(key, _)] => Some(key.to_owned()),
                        _ => None,
                    });
                Err(path_error(error.into_kind(), only_key))
            }
            Err(other) => Err(Error::internal(other)),
        }
    }
}

fn path_error(kind: ErrorKind, only_key: Option<String>) -> Error {
    let not_a = |expected: &str| format!("not a valid {}", type_name(expected));
    match (kind, only_key) {
        (
            ErrorKind::ParseErrorAtKey {
                key, expected_type, ..
            },
            _,
        )
        | (ErrorKind::ParseError { expected_type, .. }, Some(key)) => {
            Error::invalid_field(key, not_a(expected_type))
        }
        (ErrorKind::DeserializeError { key, message, .. }, _)
        | (ErrorKind::Message(message), Some(key)) => Error::invalid_field(key, message),
        (ErrorKind::InvalidUtf8InPathParam { key }, _) => {
            Error::invalid_field(key, "not valid UTF-8")
        }
        (other, _) => Error::BadRequest(format!("invalid path parameter: {other}")),
    }
}

/// `uuid::Uuid` → `uuid`, `u32` → `u32`: enough for a client, without module paths.
fn type_name(expected: &str) -> String {
    expected
        .rsplit("::")
        .next()
        .unwrap_or(expected)
        .to_ascii_lowercase()
}

/// The query string; a parameter that does not fit `T` (derive `deny_unknown_fields` to
/// refuse unknown ones) is a 422 naming it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Query<T>(pub T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parse_query(parts.uri.query().unwrap_or_default()).map(Query)
    }
}

/// Deserializes a query string, naming the offending parameter on failure.
pub fn parse_query<T: DeserializeOwned>(query: &str) -> Result<T, Error> {
    let deserializer =
        serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
    serde_path_to_error::deserialize(deserializer).map_err(|error| {
        let path = error.path().to_string();
        let message = error.into_inner().to_string();
        Error::invalid_field(field_name(&path, &message), message)
    })
}

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::body::Body;
    use axum::extract::DefaultBodyLimit;
    use axum::routing::{get, post};
    use http_body_util::BodyExt;
    use serde::Deserialize;
    use tower::ServiceExt;

    use super::*;
    use crate::Problem;

    #[derive(Debug, Deserialize, Serialize)]
    #[serde(deny_unknown_fields)]
    struct Input {
        name: String,
        count: u8,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Page {
        limit: u8,
    }

    fn app() -> Router {
        Router::new()
            .route(
                "/echo",
                post(|Json(input): Json<Input>| async move { Json(input) }),
            )
            .route(
                "/items/{id}",
                get(|Path(id): Path<u32>| async move { id.to_string() }),
            )
            .route(
                "/page",
                get(|Query(page): Query<Page>| async move { page.limit.to_string() }),
            )
            .layer(DefaultBodyLimit::max(64))
    }

    async fn send(request: http::Request<Body>) -> (http::StatusCode, Option<Problem>) {
        let response = app().oneshot(request).await.unwrap();
        let status = response.status();
        let is_problem = response
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v == crate::problem::PROBLEM_JSON);
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            is_problem.then(|| serde_json::from_slice(&bytes).unwrap()),
        )
    }

    fn post_json(body: &str) -> http::Request<Body> {
        http::Request::post("/echo")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_owned()))
            .unwrap()
    }

    #[tokio::test]
    async fn a_json_response_is_the_value_as_application_json() {
        let value = serde_json::json!({ "name": "a".repeat(1000), "count": 3, "none": null });
        let response = Json(&value).into_response();
        assert_eq!(response.status(), http::StatusCode::OK);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(bytes, serde_json::to_vec(&value).unwrap());
    }

    #[tokio::test]
    async fn a_value_json_cannot_write_is_a_500_problem() {
        let keys_not_strings = std::collections::HashMap::from([((1, 2), "pair")]);
        let response = Json(keys_not_strings).into_response();
        assert_eq!(response.status(), http::StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            crate::problem::PROBLEM_JSON
        );
    }

    #[tokio::test]
    async fn valid_json_is_accepted() {
        let (status, problem) = send(post_json(r#"{"name":"a","count":3}"#)).await;
        assert_eq!((status, problem), (http::StatusCode::OK, None));
    }

    #[tokio::test]
    async fn malformed_json_is_a_bad_request() {
        let (status, problem) = send(post_json(r#"{"name":"#)).await;
        assert_eq!(status, 400);
        assert_eq!(problem.unwrap().kind, "urn:tessera:problem:bad-request");
    }

    #[tokio::test]
    async fn wrong_type_names_the_field() {
        let (status, problem) = send(post_json(r#"{"name":"a","count":300}"#)).await;
        assert_eq!(status, 422);
        assert_eq!(problem.unwrap().errors[0].field, "count");
    }

    #[tokio::test]
    async fn missing_field_names_the_field() {
        let (status, problem) = send(post_json(r#"{"count":1}"#)).await;
        assert_eq!(status, 422);
        assert_eq!(problem.unwrap().errors[0].field, "name");
    }

    #[tokio::test]
    async fn unknown_field_names_the_field() {
        let (status, problem) = send(post_json(r#"{"name":"a","count":1,"admin":true}"#)).await;
        assert_eq!(status, 422);
        let problem = problem.unwrap();
        assert_eq!(problem.errors[0].field, "admin");
        assert!(
            problem.errors[0].message.contains("unknown field"),
            "{problem:?}"
        );
    }

    #[tokio::test]
    async fn an_array_is_not_a_struct_at_any_depth() {
        let (status, problem) = send(post_json(r#"["a",3]"#)).await;
        assert_eq!(status, 422);
        assert!(problem.unwrap().errors[0].message.contains("sequence"));

        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct Outer {
            inner: Input,
            many: Vec<Input>,
            maybe: Option<Input>,
        }
        let parsed = |body: &str| parse_json::<Outer>(body.as_bytes());
        let object = r#"{"name":"a","count":1}"#;
        assert!(
            parsed(&format!(
                r#"{{"inner":{object},"many":[{object}],"maybe":{object}}}"#
            ))
            .is_ok()
        );
        for (body, field) in [
            (
                r#"{"inner":["a",1],"many":[],"maybe":null}"#.to_owned(),
                "inner",
            ),
            (
                format!(r#"{{"inner":{object},"many":[["a",1]],"maybe":null}}"#),
                "many[0]",
            ),
            (
                format!(r#"{{"inner":{object},"many":[],"maybe":["a",1]}}"#),
                "maybe",
            ),
        ] {
            let Err(Error::InvalidInput(errors)) = parsed(&body) else {
                panic!("{body} was not refused as invalid input");
            };
            assert_eq!(errors[0].field, field, "{body}");
        }
    }

    #[test]
    fn struct_variants_are_objects_only_too() {
        #[derive(Debug, Deserialize, PartialEq)]
        enum Shape {
            Circle { radius: u8 },
            Square(u8),
            Empty,
        }
        let parsed = |body: &str| parse_json::<Shape>(body.as_bytes());
        assert_eq!(
            parsed(r#"{"Circle":{"radius":2}}"#).unwrap(),
            Shape::Circle { radius: 2 }
        );
        assert_eq!(parsed(r#"{"Square":3}"#).unwrap(), Shape::Square(3));
        assert_eq!(parsed(r#""Empty""#).unwrap(), Shape::Empty);
        assert!(matches!(
            parsed(r#"{"Circle":[2]}"#),
            Err(Error::InvalidInput(_))
        ));
        for wrong_type in [
            "12345",
            "true",
            "null",
            "[]",
            r#"["Empty"]"#,
            r#""Triangle""#,
        ] {
            assert!(
                matches!(parsed(wrong_type), Err(Error::InvalidInput(_))),
                "{wrong_type}"
            );
        }

        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct Holder {
            shape: Shape,
        }
        let Err(Error::InvalidInput(errors)) = parse_json::<Holder>(br#"{"shape": 12345}"#) else {
            panic!("a number was taken for an enum");
        };
        assert_eq!(errors[0].field, "shape");
    }

    #[test]
    fn integral_numbers_are_integers_whatever_their_notation() {
        #[derive(Debug, Deserialize, PartialEq)]
        struct Numbers {
            small: u8,
            signed: i64,
            big: u64,
            real: f64,
        }
        let parsed = |body: &str| parse_json::<Numbers>(body.as_bytes());
        assert_eq!(
            parsed(r#"{"small":7.0,"signed":-3.0,"big":1e19,"real":2}"#).unwrap(),
            Numbers {
                small: 7,
                signed: -3,
                big: 10_000_000_000_000_000_000,
                real: 2.0
            }
        );
        for (body, field) in [
            (r#"{"small":7.5,"signed":0,"big":0,"real":0}"#, "small"),
            (r#"{"small":256.0,"signed":0,"big":0,"real":0}"#, "small"),
            (r#"{"small":1,"signed":1e19,"big":0,"real":0}"#, "signed"),
            (r#"{"small":1,"signed":0,"big":-1.0,"real":0}"#, "big"),
            (r#"{"small":1,"signed":0,"big":1e20,"real":0}"#, "big"),
        ] {
            let Err(Error::InvalidInput(errors)) = parsed(body) else {
                panic!("{body} was not refused as invalid input");
            };
            assert_eq!(errors[0].field, field, "{body}");
        }
    }

    #[tokio::test]
    async fn trailing_characters_are_a_bad_request() {
        let (status, problem) = send(post_json(r#"{"name":"a","count":3} {}"#)).await;
        assert_eq!(status, 400);
        assert!(problem.unwrap().detail.contains("trailing"));
        let (status, _) = send(post_json("{\"name\":\"a\",\"count\":3}\n ")).await;
        assert_eq!(status, 200);
    }

    #[tokio::test]
    async fn oversized_body_is_413() {
        let body = format!(r#"{{"name":"{}","count":1}}"#, "x".repeat(100));
        let (status, problem) = send(post_json(&body)).await;
        assert_eq!(status, 413);
        assert_eq!(
            problem.unwrap().kind,
            "urn:tessera:problem:payload-too-large"
        );
    }

    #[tokio::test]
    async fn wrong_content_type_is_415() {
        let request = http::Request::post("/echo")
            .header(header::CONTENT_TYPE, "text/plain")
            .body(Body::from(r#"{"name":"a","count":1}"#))
            .unwrap();
        let (status, problem) = send(request).await;
        assert_eq!(status, 415);
        assert!(problem.is_some());
    }

    #[tokio::test]
    async fn bad_path_parameter_is_invalid_input_naming_it() {
        let request = http::Request::get("/items/abc")
            .body(Body::empty())
            .unwrap();
        let (status, problem) = send(request).await;
        assert_eq!(status, 422);
        assert_eq!(
            problem.unwrap().errors,
            vec![FieldError::new("id", "not a valid u32")]
        );
    }

    #[tokio::test]
    async fn bad_query_parameter_is_invalid_input_naming_it() {
        let request = http::Request::get("/page?limit=many")
            .body(Body::empty())
            .unwrap();
        let (status, problem) = send(request).await;
        assert_eq!(status, 422);
        assert_eq!(problem.unwrap().errors[0].field, "limit");
    }

    #[tokio::test]
    async fn unknown_query_parameter_is_invalid_input_naming_it() {
        let request = http::Request::get("/page?limit=2&offset=3")
            .body(Body::empty())
            .unwrap();
        let (status, problem) = send(request).await;
        assert_eq!(status, 422);
        assert!(problem.unwrap().errors[0].message.contains("offset"));
    }
}
