//! RFC 9457 problem details, the body of every HTTP error.

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, header};
use serde::{Deserialize, Serialize};

use crate::Error;

/// The media type of problem bodies.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// The `Retry-After` of every 503: each of its causes (overload, a dependency down) is
/// transient, and a client told when to come back does not retry in a tight loop.
const UNAVAILABLE_RETRY_AFTER_SECS: u64 = 1;

/// An RFC 9457 problem details object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem: `urn:tessera:problem:<code>`.
    #[serde(rename = "type")]
    pub kind: String,
    /// A short summary of the kind of problem; the same for every occurrence.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong with this request.
    pub detail: String,
    /// The invalid fields, for input errors.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
}

/// One invalid field of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FieldError {
    /// The field's path in the request, e.g. `items[2].quantity`.
    pub field: String,
    /// Why its value was refused.
    pub message: String,
}

impl FieldError {
    /// A field and why it was refused.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl Problem {
    /// The problem a client sees for `error`: no internal detail ever reaches it.
    pub fn from_error(error: &Error) -> Self {
        let status = error.http_status();
        Self {
            kind: format!("urn:tessera:problem:{}", error.code()),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: match error {
                Error::InvalidInput(_) => "the request has invalid fields".to_owned(),
                other => other.public_message(),
            },
            errors: match error {
                Error::InvalidInput(fields) => fields.clone(),
                _ => Vec::new(),
            },
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        self.log();
        let problem = Problem::from_error(&self);
        // Serializing a struct of strings cannot fail; fall back to a fixed body regardless.
        let body = serde_json::to_vec(&problem).unwrap_or_else(|_| b"{}".to_vec());
        let mut response = (self.http_status(), body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        match &self {
            Self::RateLimited { retry_after } => {
                // Round up: "retry after 0 seconds" would invite an immediate retry.
                let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
                headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
            }
            Self::Unavailable(_) => {
                headers.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(UNAVAILABLE_RETRY_AFTER_SECS),
                );
            }
            Self::Unauthenticated(_) => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            _ => {}
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http_body_util::BodyExt;

    use super::*;

    async fn render(error: Error) -> (Response, Problem) {
        let response = error.into_response();
        let (parts, body) = response.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        let problem = serde_json::from_slice(&bytes).unwrap();
        (
            Response::from_parts(parts, axum::body::Body::empty()),
            problem,
        )
    }

    #[tokio::test]
    async fn problem_has_the_rfc_9457_shape() {
        let (response, problem) = render(Error::NotFound("user")).await;
        assert_eq!(response.status(), 404);
        assert_eq!(response.headers()[header::CONTENT_TYPE], PROBLEM_JSON);
        assert_eq!(
            problem,
            Problem {
                kind: "urn:tessera:problem:not-found".into(),
                title: "Not Found".into(),
                status: 404,
                detail: "user not found".into(),
                errors: vec![],
            }
        );
    }

    #[tokio::test]
    async fn internal_errors_leak_nothing() {
        let cause =
            std::io::Error::other("connect to 10.1.2.3:5432: password authentication failed");
        let (response, problem) = render(Error::internal(cause)).await;
        assert_eq!(response.status(), 500);
        assert_eq!(problem.detail, "internal error");
        let text = serde_json::to_string(&problem).unwrap();
        assert!(
            !text.contains("10.1.2.3") && !text.contains("password"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn invalid_input_lists_the_fields() {
        let (response, problem) =
            render(Error::invalid_field("display_name", "must not be empty")).await;
        assert_eq!(response.status(), 422);
        assert_eq!(
            problem.errors,
            vec![FieldError::new("display_name", "must not be empty")]
        );
    }

    #[tokio::test]
    async fn rate_limited_carries_retry_after_rounded_up() {
        let (response, _) = render(Error::RateLimited {
            retry_after: Duration::from_millis(1500),
        })
        .await;
        assert_eq!(response.status(), 429);
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
    }

    #[tokio::test]
    async fn unavailable_says_when_to_retry() {
        let (response, _) = render(Error::Unavailable("down".into())).await;
        assert_eq!(response.status(), 503);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
    }

    #[tokio::test]
    async fn unauthenticated_asks_for_a_bearer_token() {
        let (response, _) = render(Error::Unauthenticated("missing token".into())).await;
        assert_eq!(response.headers()[header::WWW_AUTHENTICATE], "Bearer");
    }
}
