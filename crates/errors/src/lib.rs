//! The errors a tessera service can answer with, mapped in one place to HTTP and gRPC.
//!
//! Handlers return [`Error`]; its [`IntoResponse`](axum::response::IntoResponse) impl writes an
//! RFC 9457 `application/problem+json` body, and `From<Error> for tonic::Status` gives the gRPC
//! equivalent. [`Error::Internal`] carries the real cause for the logs: it is written to the
//! current span (which holds the request id) and replaced by a generic message on the wire.
//!
//! The [`extract`] module has `Json`, `Path` and `Query` extractors whose rejections are
//! [`Error`]s too, so malformed input gets the same problem shape, naming the field.

mod as_schema;
pub mod extract;
mod problem;
#[cfg(feature = "storage")]
pub mod storage;

pub use problem::PROBLEM_JSON;

use std::time::Duration;

pub use problem::{FieldError, Problem};

/// A boxed error: the cause carried by [`Error::Internal`], and the one error type for code
/// that only reports (set-up, handlers of events, background work).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything a request can fail with, as the client should see it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is well-formed but some fields hold invalid values (HTTP 422).
    #[error("invalid input")]
    InvalidInput(Vec<FieldError>),
    /// The request cannot be parsed: malformed JSON, a bad path or query parameter (HTTP 400).
    #[error("{0}")]
    BadRequest(String),
    /// No valid credentials came with the request (HTTP 401).
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller is known but may not do this (HTTP 403).
    #[error("{0}")]
    PermissionDenied(String),
    /// The resource does not exist, or the caller may not know that it does (HTTP 404).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The route exists but does not take this method (HTTP 405).
    #[error("this route does not take that method")]
    MethodNotAllowed,
    /// The resource already exists, e.g. a duplicate email (HTTP 409).
    #[error("{0}")]
    AlreadyExists(String),
    /// The resource is in a state that forbids this operation (HTTP 409).
    #[error("{0}")]
    Conflict(String),
    /// The request body is larger than the service accepts (HTTP 413).
    #[error("request body is too large")]
    PayloadTooLarge,
    /// The request body has a media type the endpoint does not take (HTTP 415).
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// Too many requests; retry after the given delay (HTTP 429).
    #[error("too many requests")]
    RateLimited {
        /// When the client may try again.
        retry_after: Duration,
    },
    /// The service or one of its dependencies cannot serve now (HTTP 503).
    #[error("{0}")]
    Unavailable(String),
    /// The request did not finish within its deadline (HTTP 504).
    #[error("the request did not complete in time")]
    Timeout,
    /// A failure the client cannot act on (HTTP 500). The cause is logged, never sent.
    #[error("internal error")]
    Internal(#[source] BoxError),
}

/// The result type of handlers and services.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps any error as an internal one.
    pub fn internal(cause: impl Into<BoxError>) -> Self {
        Self::Internal(cause.into())
    }

    /// One invalid field.
    pub fn invalid_field(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::InvalidInput(vec![FieldError::new(field, message)])
    }

    /// The stable, machine-readable name of this kind of error.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidInput(_) => "invalid-input",
            Self::BadRequest(_) => "bad-request",
            Self::Unauthenticated(_) => "unauthenticated",
            Self::PermissionDenied(_) => "permission-denied",
            Self::NotFound(_) => "not-found",
            Self::MethodNotAllowed => "method-not-allowed",
            Self::AlreadyExists(_) => "already-exists",
            Self::Conflict(_) => "conflict",
            Self::PayloadTooLarge => "payload-too-large",
            Self::UnsupportedMediaType(_) => "unsupported-media-type",
            Self::RateLimited { .. } => "rate-limited",
            Self::Unavailable(_) => "unavailable",
            Self::Timeout => "timeout",
            Self::Internal(_) => "internal",
        }
    }

    /// The HTTP status this error is answered with.
    pub fn http_status(&self) -> http::StatusCode {
        use http::StatusCode as S;
        match self {
            Self::InvalidInput(_) => S::UNPROCESSABLE_ENTITY,
            Self::BadRequest(_) => S::BAD_REQUEST,
            Self::Unauthenticated(_) => S::UNAUTHORIZED,
            Self::PermissionDenied(_) => S::FORBIDDEN,
            Self::NotFound(_) => S::NOT_FOUND,
            Self::MethodNotAllowed => S::METHOD_NOT_ALLOWED,
            Self::AlreadyExists(_) | Self::Conflict(_) => S::CONFLICT,
            Self::PayloadTooLarge => S::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => S::UNSUPPORTED_MEDIA_TYPE,
            Self::RateLimited { .. } => S::TOO_MANY_REQUESTS,
            Self::Unavailable(_) => S::SERVICE_UNAVAILABLE,
            Self::Timeout => S::GATEWAY_TIMEOUT,
            Self::Internal(_) => S::INTERNAL_SERVER_ERROR,
        }
    }

    /// The gRPC status code this error is answered with.
    pub fn grpc_code(&self) -> tonic::Code {
        use tonic::Code as C;
        match self {
            Self::InvalidInput(_) | Self::BadRequest(_) | Self::UnsupportedMediaType(_) => {
                C::InvalidArgument
            }
            Self::Unauthenticated(_) => C::Unauthenticated,
            Self::PermissionDenied(_) => C::PermissionDenied,
            Self::NotFound(_) => C::NotFound,
            Self::MethodNotAllowed => C::Unimplemented,
            Self::AlreadyExists(_) => C::AlreadyExists,
            Self::Conflict(_) => C::FailedPrecondition,
            Self::PayloadTooLarge | Self::RateLimited { .. } => C::ResourceExhausted,
            Self::Unavailable(_) => C::Unavailable,
            Self::Timeout => C::DeadlineExceeded,
            Self::Internal(_) => C::Internal,
        }
    }

    /// The message a client may see. For internal errors it says nothing of the cause.
    pub fn public_message(&self) -> String {
        match self {
            Self::InvalidInput(fields) => fields
                .iter()
                .map(|f| format!("{}: {}", f.field, f.message))
                .collect::<Vec<_>>()
                .join("; "),
            other => other.to_string(),
        }
    }

    /// Logs what the operator needs to know: the cause of internal errors, in the current
    /// span so the line carries the request id. Client errors are not worth an error line.
    fn log(&self) {
        match self {
            Self::Internal(cause) => {
                tracing::error!(error = %error_chain(cause.as_ref()), "request failed with an internal error");
            }
            Self::Unavailable(message) => tracing::warn!(%message, "request failed: unavailable"),
            _ => {}
        }
    }
}

impl From<Error> for tonic::Status {
    fn from(error: Error) -> Self {
        error.log();
        tonic::Status::new(error.grpc_code(), error.public_message())
    }
}

/// Renders an error and its sources as `outer: inner: innermost`.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("connection to 10.0.0.7:5432 refused (password=hunter2)")]
    struct SecretCause;

    #[test]
    fn grpc_status_uses_the_mapped_code_and_hides_internal_causes() {
        let status = tonic::Status::from(Error::internal(SecretCause));
        assert_eq!(status.code(), tonic::Code::Internal);
        assert_eq!(status.message(), "internal error");
    }

    #[test]
    fn grpc_status_for_invalid_input_names_the_fields() {
        let status = tonic::Status::from(Error::InvalidInput(vec![
            FieldError::new("email", "must contain @"),
            FieldError::new("display_name", "must not be empty"),
        ]));
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert_eq!(
            status.message(),
            "email: must contain @; display_name: must not be empty"
        );
    }

    #[test]
    fn every_error_maps_consistently() {
        use http::StatusCode as S;
        use tonic::Code as C;
        let cases = [
            (
                Error::BadRequest("x".into()),
                S::BAD_REQUEST,
                C::InvalidArgument,
            ),
            (
                Error::invalid_field("f", "m"),
                S::UNPROCESSABLE_ENTITY,
                C::InvalidArgument,
            ),
            (
                Error::Unauthenticated("x".into()),
                S::UNAUTHORIZED,
                C::Unauthenticated,
            ),
            (
                Error::PermissionDenied("x".into()),
                S::FORBIDDEN,
                C::PermissionDenied,
            ),
            (Error::NotFound("user"), S::NOT_FOUND, C::NotFound),
            (
                Error::MethodNotAllowed,
                S::METHOD_NOT_ALLOWED,
                C::Unimplemented,
            ),
            (
                Error::AlreadyExists("x".into()),
                S::CONFLICT,
                C::AlreadyExists,
            ),
            (
                Error::Conflict("x".into()),
                S::CONFLICT,
                C::FailedPrecondition,
            ),
            (
                Error::PayloadTooLarge,
                S::PAYLOAD_TOO_LARGE,
                C::ResourceExhausted,
            ),
            (
                Error::RateLimited {
                    retry_after: Duration::from_secs(1),
                },
                S::TOO_MANY_REQUESTS,
                C::ResourceExhausted,
            ),
            (
                Error::Unavailable("x".into()),
                S::SERVICE_UNAVAILABLE,
                C::Unavailable,
            ),
            (Error::Timeout, S::GATEWAY_TIMEOUT, C::DeadlineExceeded),
            (
                Error::internal(SecretCause),
                S::INTERNAL_SERVER_ERROR,
                C::Internal,
            ),
        ];
        for (error, http, grpc) in cases {
            assert_eq!(error.http_status(), http, "{error:?}");
            assert_eq!(error.grpc_code(), grpc, "{error:?}");
        }
    }

    #[test]
    fn error_chain_lists_every_cause() {
        let error = std::io::Error::other(SecretCause);
        assert!(error_chain(&error).contains("refused"));
    }
}
