//! Prometheus RED metrics: rate, errors and duration of HTTP routes and gRPC methods.
//!
//! HTTP requests are labelled by the axum route *template* (`/api/v1/users/{id}`), never the
//! raw path, so the number of series stays bounded whatever clients send. gRPC calls are
//! labelled by service and method; calls to unknown methods share one label.

use std::marker::PhantomData;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, Method, StatusCode, header};
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Latency buckets in seconds: fine-grained below 10 ms, where healthy requests live.
const LATENCY_BUCKETS: &[f64] = &[
    0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Route label of requests that matched no route (404s), kept apart so random paths do not
/// create series.
const UNMATCHED_ROUTE: &str = "unmatched";

/// The metrics registry of one service, with the HTTP and gRPC families registered.
///
/// Other components (pools, caches, the outbox relay) register their own collectors on
/// [`Metrics::registry`]; `/metrics` exposes them all.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    http_requests: IntCounterVec,
    http_duration: HistogramVec,
    http_in_flight: IntGaugeVec,
    http_shed: IntCounterVec,
    grpc_handled: IntCounterVec,
    grpc_duration: HistogramVec,
}

impl Metrics {
    /// A fresh registry with the request metrics registered.
    pub fn new() -> Result<Arc<Self>, prometheus::Error> {
        let registry = Registry::new();
        let http_requests = IntCounterVec::new(
            Opts::new(
                "http_requests_total",
                "HTTP requests handled, by route template and status.",
            ),
            &["method", "route", "status"],
        )?;
        let http_duration = HistogramVec::new(
            HistogramOpts::new(
                "http_request_duration_seconds",
                "HTTP request latency in seconds.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["method", "route", "status"],
        )?;
        let http_in_flight = IntGaugeVec::new(
            Opts::new(
                "http_requests_in_flight",
                "HTTP requests being handled now.",
            ),
            &["route"],
        )?;
        let http_shed = IntCounterVec::new(
            Opts::new(
                "http_requests_rejected_total",
                "HTTP requests refused before routing, by reason (overloaded, timeout).",
            ),
            &["reason"],
        )?;
        let grpc_handled = IntCounterVec::new(
            Opts::new(
                "grpc_server_handled_total",
                "gRPC calls completed, by method and status code.",
            ),
            &["grpc_service", "grpc_method", "grpc_code"],
        )?;
        let grpc_duration = HistogramVec::new(
            HistogramOpts::new(
                "grpc_server_handling_seconds",
                "gRPC call latency in seconds.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["grpc_service", "grpc_method"],
        )?;
        registry.register(Box::new(http_requests.clone()))?;
        registry.register(Box::new(http_duration.clone()))?;
        registry.register(Box::new(http_in_flight.clone()))?;
        registry.register(Box::new(http_shed.clone()))?;
        registry.register(Box::new(grpc_handled.clone()))?;
        registry.register(Box::new(grpc_duration.clone()))?;
        Ok(Arc::new(Self {
            registry,
            http_requests,
            http_duration,
            http_in_flight,
            http_shed,
            grpc_handled,
            grpc_duration,
        }))
    }

    /// The registry to add further collectors to.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Counts a request refused before its handler answered (load shedding, timeout).
    pub fn record_rejected(&self, reason: &str) {
        self.http_shed.with_label_values(&[reason]).inc();
    }

    /// Everything registered, in the Prometheus text exposition format.
    pub fn render(&self) -> Result<String, prometheus::Error> {
        let mut buffer = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buffer)?;
        String::from_utf8(buffer).map_err(|e| prometheus::Error::Msg(e.to_string()))
    }

    /// A layer that records HTTP requests by route, for `Router::layer` (see
    /// [`Http`]).
    pub fn http_layer(self: &Arc<Self>) -> MetricsLayer<Http> {
        MetricsLayer::of(self)
    }

    /// A layer that records gRPC calls, for `tonic::transport::Server::layer`.
    pub fn grpc_layer(self: &Arc<Self>) -> MetricsLayer<Grpc> {
        MetricsLayer::of(self)
    }
}

/// Records RED metrics of the calls it wraps, labelled as protocol `P` names them: [`Http`]
/// requests by route template, [`Grpc`] calls by service, method and status code. Made by
/// [`Metrics::http_layer`] and [`Metrics::grpc_layer`].
pub struct MetricsLayer<P> {
    metrics: Arc<Metrics>,
    protocol: PhantomData<fn() -> P>,
}

impl<P> MetricsLayer<P> {
    fn of(metrics: &Arc<Metrics>) -> Self {
        Self {
            metrics: Arc::clone(metrics),
            protocol: PhantomData,
        }
    }
}

impl<P> Clone for MetricsLayer<P> {
    fn clone(&self) -> Self {
        Self::of(&self.metrics)
    }
}

impl<S, P: Protocol> tower::Layer<S> for MetricsLayer<P> {
    type Service = MetricsService<S, P>;

    fn layer(&self, inner: S) -> Self::Service {
        MetricsService {
            inner,
            series: P::series(&self.metrics),
        }
    }
}

/// A protocol [`MetricsLayer`] records, and what each service it makes keeps to do so.
pub trait Protocol {
    /// Kept by a [`MetricsService`], shared by its clones.
    type Series: Clone;

    /// The series of a new service recording into `metrics`.
    fn series(metrics: &Arc<Metrics>) -> Self::Series;
}

/// HTTP requests, by the route template routing matched. Add the layer with
/// `Router::layer`, so it runs after routing and sees the route: a layer of its own rather
/// than an axum `from_fn` middleware, which boxes two futures and clones the routes'
/// service on every request.
#[derive(Debug)]
pub enum Http {}

impl Protocol for Http {
    type Series = Arc<RouteSeries>;

    fn series(metrics: &Arc<Metrics>) -> Self::Series {
        Arc::new(RouteSeries {
            metrics: Arc::clone(metrics),
            known: OnceLock::new(),
        })
    }
}

/// gRPC calls, by service and method; calls to unknown methods share one label.
#[derive(Debug)]
pub enum Grpc {}

impl Protocol for Grpc {
    type Series = Arc<Metrics>;

    fn series(metrics: &Arc<Metrics>) -> Self::Series {
        Arc::clone(metrics)
    }
}

/// The service made by [`MetricsLayer`].
pub struct MetricsService<S, P: Protocol> {
    inner: S,
    series: P::Series,
}

impl<S: Clone, P: Protocol> Clone for MetricsService<S, P> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            series: self.series.clone(),
        }
    }
}

/// The series of one route's requests, found once. Looking a series up by its labels
/// hashes them and takes the family's lock, which every request of every route would
/// share. `Router::layer` makes one [`MetricsService`] per route (cloned per request), so
/// the route its first request names is the route of all; a request naming another (the
/// layer used outside routing, say) is recorded by label.
pub struct RouteSeries {
    metrics: Arc<Metrics>,
    known: OnceLock<Arc<KnownRoute>>,
}

struct KnownRoute {
    metrics: Arc<Metrics>,
    route: Box<str>,
    in_flight: IntGauge,
    /// The counter and histogram of each (method, status) answered, in the order first seen.
    answered: [OnceLock<Answered>; ANSWER_KINDS],
}

/// How many (method, status) pairs of a route keep their series at hand: those of its
/// method's answers and errors. Further pairs are recorded by label.
const ANSWER_KINDS: usize = 8;

struct Answered {
    method: &'static str,
    status: StatusCode,
    requests: IntCounter,
    duration: Histogram,
}

impl RouteSeries {
    /// The series a request on `route` is recorded under.
    fn of(&self, route: &str) -> CallSeries {
        let known = self.known.get_or_init(|| {
            Arc::new(KnownRoute {
                metrics: Arc::clone(&self.metrics),
                route: route.into(),
                in_flight: self.metrics.http_in_flight.with_label_values(&[route]),
                answered: [const { OnceLock::new() }; ANSWER_KINDS],
            })
        });
        if *known.route == *route {
            CallSeries::Known(Arc::clone(known))
        } else {
            CallSeries::ByLabel {
                metrics: Arc::clone(&self.metrics),
                in_flight: self.metrics.http_in_flight.with_label_values(&[route]),
                route: route.to_owned(),
            }
        }
    }
}

impl KnownRoute {
    /// Counts a request answered with `status` after `seconds`.
    fn answered(&self, method: &'static str, status: StatusCode, seconds: f64) {
        for slot in &self.answered {
            // Two first answers of different kinds may race for a slot: the one that loses
            // goes on to the next.
            let answered = slot.get_or_init(|| {
                let labels = [method, &self.route, status.as_str()];
                Answered {
                    method,
                    status,
                    requests: self.metrics.http_requests.with_label_values(&labels),
                    duration: self.metrics.http_duration.with_label_values(&labels),
                }
            });
            if answered.method == method && answered.status == status {
                answered.requests.inc();
                answered.duration.observe(seconds);
                return;
            }
        }
        record_by_labels(&self.metrics, method, &self.route, status, seconds);
    }
}

/// The series one request is recorded under: its route's, kept at hand, or found by label.
enum CallSeries {
    Known(Arc<KnownRoute>),
    ByLabel {
        metrics: Arc<Metrics>,
        route: String,
        in_flight: IntGauge,
    },
}

impl CallSeries {
    fn in_flight(&self) -> &IntGauge {
        match self {
            Self::Known(known) => &known.in_flight,
            Self::ByLabel { in_flight, .. } => in_flight,
        }
    }

    /// Counts a request answered with `status` after `seconds`.
    fn answered(&self, method: &'static str, status: StatusCode, seconds: f64) {
        match self {
            Self::Known(known) => known.answered(method, status, seconds),
            Self::ByLabel { metrics, route, .. } => {
                record_by_labels(metrics, method, route, status, seconds);
            }
        }
    }
}

/// Counts a request answered with `status` after `seconds`, finding its series by label.
fn record_by_labels(
    metrics: &Metrics,
    method: &'static str,
    route: &str,
    status: StatusCode,
    seconds: f64,
) {
    let labels = [method, route, status.as_str()];
    metrics.http_requests.with_label_values(&labels).inc();
    metrics
        .http_duration
        .with_label_values(&labels)
        .observe(seconds);
}

impl<S, ResBody> tower::Service<Request> for MetricsService<S, Http>
where
    S: tower::Service<Request, Response = http::Response<ResBody>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = MetricsFuture<S::Future, HttpCall>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let route = request
            .extensions()
            .get::<MatchedPath>()
            .map_or(UNMATCHED_ROUTE, MatchedPath::as_str);
        let series = self.series.of(route);
        series.in_flight().inc();
        let call = HttpCall {
            series,
            method: method_label(request.method()),
            started: Instant::now(),
        };
        MetricsFuture {
            inner: self.inner.call(request),
            call: Some(call),
        }
    }
}

impl<S, B, ResBody> tower::Service<http::Request<B>> for MetricsService<S, Grpc>
where
    S: tower::Service<http::Request<B>, Response = http::Response<ResBody>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = MetricsFuture<S::Future, GrpcCall>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        // Paths are `/package.Service/Method`.
        let path = request.uri().path().trim_start_matches('/');
        let (service, method) = path.split_once('/').unwrap_or((path, ""));
        let call = GrpcCall {
            metrics: Arc::clone(&self.series),
            service: service.to_owned(),
            method: method.to_owned(),
            started: Instant::now(),
        };
        MetricsFuture {
            inner: self.inner.call(request),
            call: Some(call),
        }
    }
}

/// A call being measured, recorded once its response (or failure) is known.
pub trait Measured {
    /// Records the call's outcome.
    fn record<B, E>(self, result: &Result<http::Response<B>, E>);
}

pin_project_lite::pin_project! {
    /// The response future of a [`MetricsService`].
    pub struct MetricsFuture<F, C> {
        #[pin]
        inner: F,
        call: Option<C>,
    }
}

impl<F, C, ResBody, E> std::future::Future for MetricsFuture<F, C>
where
    F: std::future::Future<Output = Result<http::Response<ResBody>, E>>,
    C: Measured,
{
    type Output = F::Output;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = std::task::ready!(this.inner.poll(cx));
        if let Some(call) = this.call.take() {
            call.record(&result);
        }
        Poll::Ready(result)
    }
}

/// One request in progress: counted in flight until it is answered or given up.
pub struct HttpCall {
    series: CallSeries,
    method: &'static str,
    started: Instant,
}

impl Measured for HttpCall {
    /// Counts an answered request by its status; one that failed below HTTP (its connection
    /// gone) only leaves the in-flight gauge.
    fn record<B, E>(self, result: &Result<http::Response<B>, E>) {
        let Ok(response) = result else { return };
        let seconds = self.started.elapsed().as_secs_f64();
        self.series
            .answered(self.method, response.status(), seconds);
    }
}

impl Drop for HttpCall {
    fn drop(&mut self) {
        self.series.in_flight().dec();
    }
}

/// Methods outside the standard set share one label, so clients cannot invent series.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

/// The `/metrics` handler.
pub async fn handler(State(metrics): State<Arc<Metrics>>) -> Response {
    match metrics.render() {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            )],
            text,
        )
            .into_response(),
        Err(error) => {
            tracing::error!(%error, "cannot render metrics");
            http::StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// One gRPC call in progress.
pub struct GrpcCall {
    metrics: Arc<Metrics>,
    service: String,
    method: String,
    started: Instant,
}

impl Measured for GrpcCall {
    fn record<B, E>(self, result: &Result<http::Response<B>, E>) {
        // A failed unary call is answered "trailers-only": grpc-status sits in the
        // headers. A successful one sends it in trailers after the body, so a response
        // without it in the headers is a success.
        let code = match result {
            Ok(response) => response
                .headers()
                .get("grpc-status")
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.parse::<i32>().ok())
                .map_or(tonic::Code::Ok, tonic::Code::from_i32),
            Err(_) => tonic::Code::Unknown,
        };
        // Polled inside the call's span (the server's `trace_fn`), which takes the code too.
        crate::trace_context::record_grpc_code(&tracing::Span::current(), code);
        // Unknown methods are answered UNIMPLEMENTED: fold their names into one series.
        let (service, method) = if code == tonic::Code::Unimplemented {
            ("unknown", "unknown")
        } else {
            (self.service.as_str(), self.method.as_str())
        };
        let code = format!("{code:?}");
        self.metrics
            .grpc_handled
            .with_label_values(&[service, method, code.as_str()])
            .inc();
        self.metrics
            .grpc_duration
            .with_label_values(&[service, method])
            .observe(self.started.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::body::Body;
    use axum::routing::get;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;

    fn app(metrics: &Arc<Metrics>) -> Router {
        Router::new()
            .route("/items/{id}", get(|| async { "item" }))
            .layer(metrics.http_layer())
            .route("/metrics", get(handler).with_state(Arc::clone(metrics)))
    }

    async fn get_path(app: &Router, path: &str) -> (http::StatusCode, String) {
        let response = app
            .clone()
            .oneshot(http::Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn two_ids_make_one_series_labelled_by_route_template() {
        let metrics = Metrics::new().unwrap();
        let app = app(&metrics);
        get_path(&app, "/items/1").await;
        get_path(&app, "/items/2").await;

        let (_, text) = get_path(&app, "/metrics").await;
        let series: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("http_requests_total{"))
            .collect();
        assert_eq!(
            series,
            vec![r#"http_requests_total{method="GET",route="/items/{id}",status="200"} 2"#],
            "{text}"
        );
        assert!(
            !text.contains("/items/1") && !text.contains("/items/2"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn every_kind_of_answer_is_counted_beyond_those_kept_at_hand() {
        let metrics = Metrics::new().unwrap();
        let statuses: Vec<u16> = (0..ANSWER_KINDS as u16 + 4).map(|n| 400 + n).collect();
        let app = Router::new()
            .route(
                "/status/{code}",
                get(
                    |axum::extract::Path(code): axum::extract::Path<u16>| async move {
                        StatusCode::from_u16(code).unwrap()
                    },
                )
                .post(|| async { "posted" }),
            )
            .layer(metrics.http_layer());
        let requests = statuses
            .iter()
            .chain(&statuses)
            .map(|status| (Method::GET, format!("/status/{status}")))
            .chain(std::iter::repeat_n(
                (Method::POST, "/status/0".to_owned()),
                3,
            ));
        for (method, path) in requests {
            let request = http::Request::builder()
                .method(method)
                .uri(path)
                .body(Body::empty())
                .unwrap();
            app.clone().oneshot(request).await.unwrap();
        }

        let text = metrics.render().unwrap();
        let counted: u64 = text
            .lines()
            .filter(|line| line.starts_with("http_requests_total{"))
            .map(|line| line.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
            .sum();
        assert_eq!(counted, 2 * statuses.len() as u64 + 3, "{text}");
        for status in &statuses {
            let series = format!(r#"{{method="GET",route="/status/{{code}}",status="{status}"}}"#);
            assert!(
                text.contains(&format!("http_requests_total{series} 2")),
                "{status}: {text}"
            );
            assert!(
                text.contains(&format!("http_request_duration_seconds_count{series} 2")),
                "{text}"
            );
        }
        assert!(
            text.contains(r#"method="POST",route="/status/{code}",status="200"} 3"#),
            "{text}"
        );
        assert!(
            text.contains(r#"http_requests_in_flight{route="/status/{code}"} 0"#),
            "{text}"
        );
    }

    #[test]
    fn a_route_other_than_the_first_seen_is_recorded_by_its_labels() {
        let metrics = Metrics::new().unwrap();
        let series = Http::series(&metrics);
        series.of("/first").answered("GET", StatusCode::OK, 0.001);
        series.of("/second").answered("GET", StatusCode::OK, 0.001);
        series.of("/first").answered("GET", StatusCode::OK, 0.001);

        let text = metrics.render().unwrap();
        for (route, count) in [("/first", 2), ("/second", 1)] {
            let line = format!(
                r#"http_requests_total{{method="GET",route="{route}",status="200"}} {count}"#
            );
            assert!(text.contains(&line), "{line} in {text}");
        }
    }

    #[tokio::test]
    async fn a_request_given_up_before_its_answer_is_no_longer_in_flight() {
        use futures::FutureExt;

        let metrics = Metrics::new().unwrap();
        let app = Router::new()
            .route("/slow", get(std::future::pending::<&'static str>))
            .layer(metrics.http_layer());
        let mut request = app
            .oneshot(http::Request::get("/slow").body(Body::empty()).unwrap())
            .boxed();
        assert!((&mut request).now_or_never().is_none());
        let in_flight = r#"http_requests_in_flight{route="/slow"}"#;
        assert!(
            metrics
                .render()
                .unwrap()
                .contains(&format!("{in_flight} 1"))
        );

        // The client went away: hyper drops the response future.
        drop(request);
        let text = metrics.render().unwrap();
        assert!(text.contains(&format!("{in_flight} 0")), "{text}");
        assert!(!text.contains("http_requests_total{"), "{text}");
    }

    #[tokio::test]
    async fn unmatched_paths_share_one_label() {
        let metrics = Metrics::new().unwrap();
        let app = app(&metrics);
        get_path(&app, "/nope/1").await;
        get_path(&app, "/nope/2").await;
        let text = metrics.render().unwrap();
        assert!(
            text.contains(r#"http_requests_total{method="GET",route="unmatched",status="404"} 2"#),
            "{text}"
        );
    }

    #[tokio::test]
    async fn metrics_endpoint_speaks_the_text_format() {
        let metrics = Metrics::new().unwrap();
        let app = app(&metrics);
        get_path(&app, "/items/7").await;
        let response = app
            .clone()
            .oneshot(http::Request::get("/metrics").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert!(
            response.headers()[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("text/plain; version=0.0.4")
        );
    }

    #[tokio::test]
    async fn grpc_calls_are_counted_by_method_and_code() {
        let metrics = Metrics::new().unwrap();
        let ok = tower::service_fn(|_: http::Request<()>| async {
            Ok::<_, std::convert::Infallible>(http::Response::new(()))
        });
        let not_found = tower::service_fn(|_: http::Request<()>| async {
            let mut response = http::Response::new(());
            response
                .headers_mut()
                .insert("grpc-status", HeaderValue::from_static("5"));
            Ok::<_, std::convert::Infallible>(response)
        });
        let layer = metrics.grpc_layer();
        let request = || {
            http::Request::post("/tessera.users.v1.UserService/GetUser")
                .body(())
                .unwrap()
        };
        tower::Layer::layer(&layer, ok)
            .oneshot(request())
            .await
            .unwrap();
        tower::Layer::layer(&layer, not_found)
            .oneshot(request())
            .await
            .unwrap();

        let text = metrics.render().unwrap();
        for code in ["Ok", "NotFound"] {
            let line = format!(
                r#"grpc_server_handled_total{{grpc_code="{code}",grpc_method="GetUser",grpc_service="tessera.users.v1.UserService"}} 1"#
            );
            assert!(text.contains(&line), "missing {line} in {text}");
        }
    }
}
