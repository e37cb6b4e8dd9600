//! Liveness, readiness and startup endpoints, built from pluggable dependency checks.
//!
//! - `GET /health/live`: the process is up and serving HTTP. Always 200 while it answers.
//! - `GET /health/startup`: 200 once the service finished starting (migrations applied),
//!   503 before.
//! - `GET /health/ready`: runs every check concurrently, each bounded by a timeout. 503 while
//!   starting, while draining for shutdown, or when a [`Criticality::Required`] dependency is
//!   down; 200 otherwise, with `"status": "degraded"` when only optional ones are down.
//!
//! Each answer is a JSON body listing every dependency, so an operator sees what is wrong.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::future::{BoxFuture, join_all};
use serde::Serialize;

/// Whether a dependency being down takes the service out of rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Criticality {
    /// Without it the service cannot do its job: readiness fails (PostgreSQL).
    Required,
    /// The service works around its absence: reported as degraded (Redis, the broker).
    Optional,
}

/// A probe of one dependency.
pub trait HealthCheck: Send + Sync + 'static {
    /// The dependency's name in reports (`postgres`, `redis`, `rabbitmq`).
    fn name(&self) -> &'static str;
    /// What its failure means for readiness.
    fn criticality(&self) -> Criticality;
    /// Probes the dependency; the error says what is wrong.
    fn check(&self) -> BoxFuture<'_, Result<(), String>>;
}

/// The lifecycle phase of the service, as health endpoints report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Phase {
    Starting = 0,
    Running = 1,
    Draining = 2,
}

/// The health state of one service: its checks and its lifecycle phase.
pub struct Health {
    checks: Vec<Arc<dyn HealthCheck>>,
    timeout: Duration,
    phase: AtomicU8,
}

/// The overall readiness verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Every dependency answers.
    Ready,
    /// Required dependencies answer; some optional ones do not.
    Degraded,
    /// Not accepting traffic: starting, draining, or a required dependency is down.
    NotReady,
}

/// The result of running the checks.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The verdict.
    pub status: Status,
    /// Why the service is not ready even before checking dependencies, if it is not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    /// One entry per dependency.
    pub checks: Vec<CheckReport>,
}

/// The result of one check.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    /// The dependency.
    pub name: &'static str,
    /// `up` or `down`.
    pub status: &'static str,
    /// Whether readiness depends on it.
    pub criticality: Criticality,
    /// How long the probe took.
    pub latency_ms: u64,
    /// What is wrong, when down.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Health {
    /// No checks yet; each probe is abandoned as failed after `timeout`.
    pub fn new(timeout: Duration) -> Self {
        Self {
            checks: Vec::new(),
            timeout,
            phase: AtomicU8::new(Phase::Starting as u8),
        }
    }

    /// Adds a dependency check.
    #[must_use]
    pub fn with_check(mut self, check: impl HealthCheck) -> Self {
        self.checks.push(Arc::new(check));
        self
    }

    /// The service finished starting: startup probes pass, readiness depends on the checks.
    pub fn mark_started(&self) {
        self.phase.store(Phase::Running as u8, Ordering::SeqCst);
    }

    /// The service is shutting down: readiness fails from now on, so load balancers stop
    /// sending new requests while in-flight ones finish.
    pub fn mark_draining(&self) {
        self.phase.store(Phase::Draining as u8, Ordering::SeqCst);
    }

    fn phase(&self) -> Phase {
        match self.phase.load(Ordering::SeqCst) {
            0 => Phase::Starting,
            1 => Phase::Running,
            _ => Phase::Draining,
        }
    }

    /// Whether the service has finished starting.
    pub fn is_started(&self) -> bool {
        self.phase() != Phase::Starting
    }

    /// Runs every check concurrently and judges readiness.
    pub async fn report(&self) -> Report {
        let checks = join_all(self.checks.iter().map(|check| self.run(check.as_ref()))).await;
        let reason = match self.phase() {
            Phase::Starting => Some("starting"),
            Phase::Draining => Some("shutting down"),
            Phase::Running => None,
        };
        let down = |criticality| {
            checks
                .iter()
                .any(|c| c.criticality == criticality && c.error.is_some())
        };
        let status = if reason.is_some() || down(Criticality::Required) {
            Status::NotReady
        } else if down(Criticality::Optional) {
            Status::Degraded
        } else {
            Status::Ready
        };
        Report {
            status,
            reason,
            checks,
        }
    }

    async fn run(&self, check: &dyn HealthCheck) -> CheckReport {
        let started = Instant::now();
        let outcome = match tokio::time::timeout(self.timeout, check.check()).await {
            Ok(result) => result,
            Err(_) => Err(format!("no answer within {} ms", self.timeout.as_millis())),
        };
        CheckReport {
            name: check.name(),
            status: if outcome.is_ok() { "up" } else { "down" },
            criticality: check.criticality(),
            latency_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            error: outcome.err(),
        }
    }

    /// The `/health/*` routes.
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/health/live", get(live))
            .route("/health/startup", get(startup))
            .route("/health/ready", get(ready))
            .with_state(Arc::clone(self))
    }
}

async fn live() -> Response {
    axum::Json(serde_json::json!({ "status": "up" })).into_response()
}

async fn startup(State(health): State<Arc<Health>>) -> Response {
    if health.is_started() {
        (
            StatusCode::OK,
            axum::Json(serde_json::json!({ "status": "started" })),
        )
            .into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({ "status": "starting" })),
        )
            .into_response()
    }
}

async fn ready(State(health): State<Arc<Health>>) -> Response {
    let report = health.report().await;
    let status = match report.status {
        Status::Ready | Status::Degraded => StatusCode::OK,
        Status::NotReady => StatusCode::SERVICE_UNAVAILABLE,
    };
    (status, axum::Json(report)).into_response()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use axum::body::Body;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;

    struct Switch {
        name: &'static str,
        criticality: Criticality,
        up: Arc<AtomicBool>,
    }

    impl HealthCheck for Switch {
        fn name(&self) -> &'static str {
            self.name
        }
        fn criticality(&self) -> Criticality {
            self.criticality
        }
        fn check(&self) -> BoxFuture<'_, Result<(), String>> {
            let up = self.up.load(Ordering::SeqCst);
            Box::pin(async move {
                if up {
                    Ok(())
                } else {
                    Err("unreachable".into())
                }
            })
        }
    }

    struct Hangs;

    impl HealthCheck for Hangs {
        fn name(&self) -> &'static str {
            "hangs"
        }
        fn criticality(&self) -> Criticality {
            Criticality::Required
        }
        fn check(&self) -> BoxFuture<'_, Result<(), String>> {
            Box::pin(futures::future::pending())
        }
    }

    fn switch(name: &'static str, criticality: Criticality) -> (Switch, Arc<AtomicBool>) {
        let up = Arc::new(AtomicBool::new(true));
        (
            Switch {
                name,
                criticality,
                up: Arc::clone(&up),
            },
            up,
        )
    }

    async fn get(health: &Arc<Health>, path: &str) -> (StatusCode, serde_json::Value) {
        let response = health
            .router()
            .oneshot(http::Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&body).unwrap())
    }

    #[tokio::test]
    async fn readiness_follows_the_phase_and_required_dependencies() {
        let (db, db_up) = switch("postgres", Criticality::Required);
        let health = Arc::new(Health::new(Duration::from_secs(1)).with_check(db));

        assert_eq!(get(&health, "/health/ready").await.0, 503, "starting");
        assert_eq!(get(&health, "/health/startup").await.0, 503);
        assert_eq!(get(&health, "/health/live").await.0, 200);

        health.mark_started();
        assert_eq!(get(&health, "/health/startup").await.0, 200);
        let (status, body) = get(&health, "/health/ready").await;
        assert_eq!(
            (status, body["status"].as_str()),
            (StatusCode::OK, Some("ready"))
        );

        db_up.store(false, Ordering::SeqCst);
        let (status, body) = get(&health, "/health/ready").await;
        assert_eq!(status, 503);
        assert_eq!(body["checks"][0]["status"], "down");
        assert_eq!(body["checks"][0]["error"], "unreachable");

        db_up.store(true, Ordering::SeqCst);
        assert_eq!(get(&health, "/health/ready").await.0, 200);

        health.mark_draining();
        let (status, body) = get(&health, "/health/ready").await;
        assert_eq!(
            (status, body["reason"].as_str()),
            (StatusCode::SERVICE_UNAVAILABLE, Some("shutting down"))
        );
    }

    #[tokio::test]
    async fn optional_dependency_down_is_degraded_but_ready() {
        let (cache, cache_up) = switch("redis", Criticality::Optional);
        let health = Arc::new(Health::new(Duration::from_secs(1)).with_check(cache));
        health.mark_started();
        cache_up.store(false, Ordering::SeqCst);
        let (status, body) = get(&health, "/health/ready").await;
        assert_eq!(
            (status, body["status"].as_str()),
            (StatusCode::OK, Some("degraded"))
        );
    }

    #[tokio::test]
    async fn a_hanging_check_counts_as_down_after_the_timeout() {
        let health = Arc::new(Health::new(Duration::from_millis(50)).with_check(Hangs));
        health.mark_started();
        let (status, body) = get(&health, "/health/ready").await;
        assert_eq!(status, 503);
        assert!(
            body["checks"][0]["error"]
                .as_str()
                .unwrap()
                .contains("no answer")
        );
    }
}
