//! What every tessera service exposes about itself: logs, request ids, metrics and health.
//!
//! - [`logging`]: `tracing` set up once, JSON or pretty, filtered by directives.
//! - [`access_log`]: the span and the log line of every API request.
//! - [`request_id`]: accept an incoming `x-request-id` or make one, and echo it back.
//! - [`metrics`]: Prometheus RED metrics for HTTP (by route template) and gRPC (by method),
//!   and the `/metrics` handler.
//! - [`trace_context`]: spans as OpenTelemetry spans, W3C `traceparent` across every hop.
//! - [`otlp`]: span export over OTLP when a collector is configured.
//! - [`health`]: liveness, readiness and startup endpoints built from dependency checks.

pub mod access_log;
pub mod health;
mod json_lines;
mod log_filter;
pub mod logging;
pub mod metrics;
pub mod otlp;
pub mod request_id;
mod stdout;
pub mod trace_context;

pub use health::{Criticality, Health, HealthCheck};
pub use logging::LogFormat;
pub use metrics::Metrics;
