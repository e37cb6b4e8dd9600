//! Test support shared by every tessera crate and service.
//!
//! - [`app`]: a service served in the test process on free ports.
//! - [`broker`]: a RabbitMQ virtual host per test, deleted afterwards.
//! - [`database`]: a fresh PostgreSQL database per test, dropped afterwards.
//! - [`events`]: a private queue on the event exchange, to see what was published.
//! - [`forge`]: forged, tampered and stale access tokens, which every verifier must refuse.
//! - [`jwks`]: a token issuer with a JWKS endpoint, to test token verification end to end.
//! - [`openapi`]: a service's operations read from its `/openapi.json`, to sweep every route.
//! - [`otlp`]: an OTLP trace receiver, to see the spans services export.
//! - [`pki`]: a CA of the test's own, for internal gRPC over mutual TLS.
//! - [`process`]: a service binary started as a real process on free ports.
//! - [`proxy`]: a TCP proxy that can cut a dependency off and bring it back.
//! - [`prometheus`]: reading `/metrics` (a counter's value) and checking its exposition text.
//! - [`smoke`]: the boot checks every service binary must pass.
//!
//! Tests talk to the shared local PostgreSQL, Redis and RabbitMQ; everything made here has
//! a unique name so tests run in parallel. Override the servers with `TEST_DATABASE_URL`,
//! `TEST_REDIS_URL` and `TEST_AMQP_URL`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test support: failing loudly is the point

pub mod app;
pub mod broker;
pub mod database;
pub mod events;
pub mod forge;
pub mod jwks;
pub mod openapi;
pub mod otlp;
pub mod pki;
pub mod process;
pub mod prometheus;
pub mod proxy;
pub mod smoke;

/// Asserts a problem+json answer with `status`, naming `field` in `errors` when given;
/// returns the body.
pub async fn assert_problem(
    response: reqwest::Response,
    status: u16,
    field: Option<&str>,
) -> serde_json::Value {
    let actual = response.status().as_u16();
    let content_type = response.headers()["content-type"].clone();
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(actual, status, "{body}");
    assert_eq!(content_type, "application/problem+json");
    assert_eq!(body["status"], status, "{body}");
    if let Some(field) = field {
        let named = body["errors"]
            .as_array()
            .is_some_and(|errors| errors.iter().any(|e| e["field"] == field));
        assert!(named, "expected field {field} to be named: {body}");
    }
    body
}

/// The directory of the package under test: `CARGO_MANIFEST_DIR` as cargo (or nextest) sets
/// it for the running test, else `compiled` (the `env!` of the caller). Test code compiled
/// in one checkout is reused by another of the same workspace sharing the target directory,
/// so a path baked in at compile time may name a checkout that is gone.
pub fn manifest_dir(compiled: &str) -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| compiled.into(), Into::into)
}

/// The PostgreSQL server tests use, as an URL to its maintenance database.
pub fn postgres_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// The Redis server tests use.
pub fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".to_owned())
}

/// The RabbitMQ server tests use.
pub fn amqp_url() -> String {
    std::env::var("TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

/// A TCP port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Sets `<prefix><name>` in a [`service_env`] list, replacing any value it had.
pub fn set_var(
    env: &mut Vec<(String, String)>,
    prefix: &str,
    name: &str,
    value: impl Into<String>,
) {
    let name = format!("{prefix}{name}");
    env.retain(|(key, _)| *key != name);
    env.push((name, value.into()));
}

/// An HTTP client for tests. reqwest's TLS carries no crypto provider of its own here (the
/// services' JWKS client configures one explicitly), so this installs ring first.
pub fn http_client() -> reqwest::Client {
    install_tls_provider();
    reqwest::Client::new()
}

/// `GET url` with an [`http_client`].
pub async fn get(url: impl reqwest::IntoUrl) -> reqwest::Result<reqwest::Response> {
    http_client().get(url).send().await
}

/// Makes ring the process's rustls provider, which reqwest clients built here need.
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Runs `act` every 20 ms until `count` has grown, failing after 10 s with `what` never
/// having happened: how tests wait for a cache to answer from memory, say.
pub async fn until_grows(
    mut count: impl AsyncFnMut() -> f64,
    mut act: impl AsyncFnMut(),
    what: &str,
) {
    let before = count().await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while count().await <= before {
        assert!(
            std::time::Instant::now() < deadline,
            "{what} never happened"
        );
        act().await;
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Reads with `read` until it returns `expected`, failing if a read sent `bound` or more
/// after `since` (a write) still returned something else: how tests hold a cache to its
/// coherence bound.
pub async fn seen_within<T: PartialEq + std::fmt::Debug>(
    since: std::time::Instant,
    bound: std::time::Duration,
    expected: T,
    mut read: impl AsyncFnMut() -> T,
) {
    loop {
        let sent = std::time::Instant::now();
        let seen = read().await;
        if seen == expected {
            return;
        }
        let after = sent.duration_since(since);
        assert!(after < bound, "still {seen:?} {after:?} after the write");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// The environment a service needs to run against the test servers: `<prefix>DATABASE_URL`,
/// the broker and virtual host at `amqp_url` (a [`broker::TestBroker`]'s), terse logs. Ports
/// are chosen where the service is started ([`app::InProcess`], [`process::ServiceProcess`]).
pub fn service_env(prefix: &str, database_url: &str, amqp_url: &str) -> Vec<(String, String)> {
    let var = |name: &str, value: String| (format!("{prefix}{name}"), value);
    vec![
        var("HOST", "127.0.0.1".to_owned()),
        var("DATABASE_URL", database_url.to_owned()),
        var("REDIS_URL", redis_url()),
        var("AMQP_URL", amqp_url.to_owned()),
        var("LOG_FORMAT", "pretty".to_owned()),
        var(
            "LOG_FILTER",
            std::env::var("TEST_LOG").unwrap_or_else(|_| "warn".to_owned()),
        ),
    ]
}
