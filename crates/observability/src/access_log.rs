//! The span and the log line of every API request.
//!
//! One layer does what tower-http's `TraceLayer` did here, without what it cost on every
//! request and gave nothing back: a wrapper around each response body (to enter the span
//! while hyper polls it; the bodies here are whole, with no code of ours behind them) and a
//! classifier consulted per response.

use std::fmt::Display;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use axum::extract::MatchedPath;
use http::{Request, Response, StatusCode};
use tower::{Layer, Service};

use crate::{request_id, trace_context};

/// The message of the line written when a request is answered.
pub const FINISHED: &str = "finished processing request";

/// Runs each request inside a SERVER span continuing the caller's trace (see
/// [`request_span`]) and, once it is answered, records the status on the span and writes one
/// line: INFO with `latency_ms` and `status`, or ERROR for a 5xx or a request that failed
/// below HTTP. Put it on the routes (`Router::layer`), so it runs once routing matched, and
/// inside [`request_id::layer`], whose id the span carries.
#[derive(Debug, Clone, Copy, Default)]
pub struct AccessLogLayer;

/// An [`AccessLogLayer`] (the stacks' own spelling).
pub fn layer() -> AccessLogLayer {
    AccessLogLayer
}

impl<S> Layer<S> for AccessLogLayer {
    type Service = AccessLog<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AccessLog { inner }
    }
}

/// See [`AccessLogLayer`].
#[derive(Debug, Clone)]
pub struct AccessLog<S> {
    inner: S,
}

impl<S, B, R> Service<Request<B>> for AccessLog<S>
where
    S: Service<Request<B>, Response = Response<R>>,
    S::Error: Display,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = Answering<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let span = request_span(&request);
        let started = Instant::now();
        let response = span.in_scope(|| self.inner.call(request));
        Answering {
            response,
            span,
            started,
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of an [`AccessLog`]: the inner one, polled inside the span.
    pub struct Answering<F> {
        #[pin]
        response: F,
        span: tracing::Span,
        started: Instant,
    }
}

impl<F, R, E> Future for Answering<F>
where
    F: Future<Output = Result<Response<R>, E>>,
    E: Display,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let _entered = this.span.enter();
        let result = ready!(this.response.poll(cx));
        let latency = this.started.elapsed();
        match &result {
            Ok(response) => answered(this.span, response.status(), latency),
            Err(error) => {
                tracing::error!(latency_ms = millis(latency), %error, "request failed");
            }
        }
        Poll::Ready(result)
    }
}

/// Records `status` on the request's span and writes the request's line.
fn answered(span: &tracing::Span, status: StatusCode, latency: Duration) {
    trace_context::record_http_status(span, status);
    let (latency_ms, status) = (millis(latency), status.as_u16());
    // Numbers, not TraceLayer's "1 ms" text, and the message as a plain string: no
    // formatter runs per request.
    if status >= 500 {
        tracing::error!(latency_ms, status, message = FINISHED);
    } else {
        tracing::info!(latency_ms, status, message = FINISHED);
    }
}

fn millis(latency: Duration) -> f64 {
    latency.as_secs_f64() * 1000.0
}

/// The SERVER span of one API request, continuing the caller's trace, named after the route
/// template routing matched (`GET /users/{id}`), as the semantic conventions ask; never
/// after the raw path, which would make every span name unique. A request no route matched
/// is named by its method alone.
pub fn request_span<B>(request: &Request<B>) -> tracing::Span {
    // Plain strings, not `%` (Display), for the fields logged: every layer would run the
    // formatter for each. The name is read by tracing alone, which formats it when exporting.
    let method = request.method().as_str();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(MatchedPath::as_str);
    let span = tracing::info_span!(
        "http_request",
        otel.name = %SpanName { method, route },
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = method,
        http.route = route,
        http.response.status_code = tracing::field::Empty,
        url.path = request.uri().path(),
        request_id = request_id::of(request),
    );
    trace_context::continue_from(&span, request.headers());
    span
}

/// `GET /users/{id}`, or `GET` for a request no route matched.
struct SpanName<'a> {
    method: &'a str,
    route: Option<&'a str>,
}

impl Display for SpanName<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.route {
            Some(route) => write!(f, "{} {route}", self.method),
            None => f.write_str(self.method),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use tower::ServiceExt;

    use super::*;
    use crate::logging::tests::json_lines_of;

    /// The JSON lines written while `request` goes through the layer to a service answering
    /// `answer` (after logging a line of its own).
    fn lines_of(
        request: Request<()>,
        answer: Result<StatusCode, std::io::Error>,
    ) -> Vec<serde_json::Value> {
        let service = tower::service_fn(move |_: Request<()>| {
            tracing::info!("handling");
            let answer = match &answer {
                Ok(status) => Ok(Response::builder().status(*status).body(()).unwrap()),
                Err(error) => Err(std::io::Error::new(error.kind(), error.to_string())),
            };
            std::future::ready(answer)
        });
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let (lines, _) =
            json_lines_of(|| runtime.block_on(layer().layer(service).oneshot(request)));
        lines
    }

    fn get(path: &str) -> http::request::Builder {
        Request::get(path).header(request_id::REQUEST_ID_HEADER, "r-7")
    }

    #[test]
    fn an_answered_request_is_one_line_in_its_span_continuing_the_callers_trace() {
        let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
        let request = get("/users/42")
            .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
            .body(())
            .unwrap();

        let lines = lines_of(request, Ok(StatusCode::OK));

        assert_eq!(lines.len(), 2, "{lines:?}");
        let (handling, finished) = (&lines[0], &lines[1]);
        assert_eq!(handling["message"], "handling");
        assert_eq!(handling["span"]["name"], "http_request", "{handling}");
        assert_eq!(handling["span"]["request_id"], "r-7", "{handling}");
        assert_eq!(handling["span"]["url.path"], "/users/42", "{handling}");
        assert_eq!(handling["trace_id"], trace_id, "{handling}");
        assert_eq!(finished["message"], FINISHED);
        assert_eq!(finished["level"], "INFO");
        assert_eq!(finished["status"], 200);
        assert!(
            finished["latency_ms"].as_f64().unwrap() >= 0.0,
            "{finished}"
        );
        assert_eq!(finished["trace_id"], trace_id, "{finished}");
    }

    #[test]
    fn a_server_error_is_an_error_line_a_client_error_is_not() {
        for (status, level) in [
            (StatusCode::NOT_FOUND, "INFO"),
            (StatusCode::INTERNAL_SERVER_ERROR, "ERROR"),
            (StatusCode::GATEWAY_TIMEOUT, "ERROR"),
        ] {
            let lines = lines_of(get("/").body(()).unwrap(), Ok(status));

            let finished = lines.last().unwrap();
            assert_eq!(finished["message"], FINISHED, "{lines:?}");
            assert_eq!(finished["level"], level, "{finished}");
            assert_eq!(finished["status"], status.as_u16(), "{finished}");
        }
    }

    #[test]
    fn a_request_failing_below_http_is_an_error_line() {
        let lines = lines_of(
            get("/").body(()).unwrap(),
            Err(std::io::Error::other("connection reset")),
        );

        let failed = lines.last().unwrap();
        assert_eq!(failed["message"], "request failed", "{lines:?}");
        assert_eq!(failed["level"], "ERROR");
        assert_eq!(failed["error"], "connection reset");
        assert_eq!(failed["span"]["request_id"], "r-7");
    }

    #[test]
    fn on_a_route_the_span_carries_the_routes_template() {
        let app = axum::Router::new()
            .route(
                "/users/{id}",
                axum::routing::get(|| async {
                    tracing::info!("handling");
                }),
            )
            .fallback(|| async {
                tracing::info!("handling");
                StatusCode::NOT_FOUND
            })
            .layer(layer());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();

        for (path, route) in [("/users/42", Some("/users/{id}")), ("/nowhere", None)] {
            let request = get(path).body(axum::body::Body::empty()).unwrap();
            let (lines, _) =
                json_lines_of(|| runtime.block_on(app.clone().oneshot(request)).unwrap());

            let handling = &lines[0];
            assert_eq!(handling["message"], "handling", "{lines:?}");
            assert_eq!(handling["span"]["url.path"], path, "{handling}");
            assert_eq!(handling["span"]["http.route"].as_str(), route, "{handling}");
        }
    }
}
