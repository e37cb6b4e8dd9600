//! The REST side: the service's routes behind the default limits, next to the ops routes.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use tessera_errors::Error;
use tessera_observability::{Health, Metrics, access_log, metrics, request_id};
use tower::ServiceBuilder;

use crate::limits::LimitLayer;

/// Limits applied to every API request.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Longest a request may take (504 beyond).
    pub request_timeout: Duration,
    /// Largest body accepted (413 beyond).
    pub body_limit_bytes: usize,
    /// Most requests in progress; more are shed with 503 at once.
    pub concurrency: usize,
}

/// Builds the HTTP application.
///
/// One router. The API routes and its fallbacks get, from the outside in: a body limit, a
/// request id, a span and the request's log line, load shedding with a concurrency limit, a
/// timeout, and RED metrics by route template. Added per route, these run once routing
/// matched, so the span is named after the route from the start and no second router or
/// boxed service stands in front of the API. The ops routes (`/health/*`, `/metrics`),
/// merged in after, get none of them: probes keep answering under overload and do not
/// flood the logs. Unknown routes and methods answer problem+json.
pub fn app(api: Router, health: &Arc<Health>, metrics: &Arc<Metrics>, limits: Limits) -> Router {
    let layers = ServiceBuilder::new()
        .layer(DefaultBodyLimit::max(limits.body_limit_bytes))
        .layer(request_id::layer())
        .layer(access_log::layer())
        .layer(LimitLayer::new(
            limits.concurrency,
            limits.request_timeout,
            Arc::clone(metrics),
        ))
        .layer(metrics.http_layer());
    let ops = health
        .router()
        .route(
            "/metrics",
            get(metrics::handler).with_state(Arc::clone(metrics)),
        )
        .method_not_allowed_fallback(|| async { Error::MethodNotAllowed });

    api.fallback(|| async { Error::NotFound("route") })
        .method_not_allowed_fallback(|| async { Error::MethodNotAllowed })
        .layer(layers)
        .merge(ops)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use axum::body::Body;
    use http::{Method, Request, StatusCode};
    use tessera_observability::request_id::REQUEST_ID_HEADER;
    use tower::ServiceExt;

    use super::*;

    #[tokio::test]
    async fn api_routes_and_their_fallbacks_carry_the_stack_ops_routes_do_not() {
        let metrics = Metrics::new().unwrap();
        let health = Arc::new(Health::new(Duration::from_secs(1)));
        let api = Router::new().route("/things/{id}", get(|| async { "thing" }));
        let limits = Limits {
            request_timeout: Duration::from_secs(5),
            body_limit_bytes: 1024,
            concurrency: 8,
        };
        let app = app(api, &health, &metrics, limits);
        let call = |method: Method, path: &str| {
            let request = Request::builder()
                .method(method)
                .uri(path)
                .body(Body::empty())
                .unwrap();
            app.clone().oneshot(request)
        };

        for (method, path, status) in [
            (Method::GET, "/things/1", StatusCode::OK),
            (Method::GET, "/nowhere", StatusCode::NOT_FOUND),
            (Method::DELETE, "/things/1", StatusCode::METHOD_NOT_ALLOWED),
        ] {
            let response = call(method.clone(), path).await.unwrap();
            assert_eq!(response.status(), status, "{method} {path}");
            assert!(
                response.headers().contains_key(REQUEST_ID_HEADER),
                "{method} {path} went through the API stack"
            );
        }
        for path in ["/health/live", "/metrics"] {
            let response = call(Method::GET, path).await.unwrap();
            assert_eq!(response.status(), StatusCode::OK, "{path}");
            assert!(
                !response.headers().contains_key(REQUEST_ID_HEADER),
                "{path} sits outside the API stack"
            );
        }
        let response = call(Method::POST, "/health/live").await.unwrap();
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );

        let text = metrics.render().unwrap();
        for series in [
            r#"http_requests_total{method="GET",route="/things/{id}",status="200"} 1"#,
            r#"http_requests_total{method="GET",route="unmatched",status="404"} 1"#,
            r#"http_requests_total{method="DELETE",route="/things/{id}",status="405"} 1"#,
        ] {
            assert!(text.contains(series), "{series} in {text}");
        }
        assert!(!text.contains("/health"), "{text}");
        assert!(!text.contains(r#"route="/metrics""#), "{text}");
    }
}
