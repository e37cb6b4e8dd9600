//! The checks every service binary must pass, shared so each service states them in one line.

use std::process::{Command, Stdio};

use crate::broker::TestBroker;
use crate::database::TestDatabase;
use crate::process::ServiceProcess;

/// `grpc.health.v1` SERVING.
const SERVING: i32 = 1;

/// The binary starts on the local infrastructure; `/health/ready` answers 200 with every
/// dependency up, `/metrics` is valid Prometheus text, and gRPC health reports SERVING.
pub async fn serves_health_metrics_and_grpc_health(binary: &str, prefix: &str) {
    serves_health_metrics_and_grpc_health_with(binary, prefix, Vec::new()).await;
}

/// [`serves_health_metrics_and_grpc_health`] for a service that needs more settings than the
/// shared ones: `extra` are `<prefix><name>` pairs (names without the prefix).
pub async fn serves_health_metrics_and_grpc_health_with(
    binary: &str,
    prefix: &str,
    extra: Vec<(&str, String)>,
) {
    let database = TestDatabase::empty().await;
    let broker = TestBroker::isolated().await;
    let mut env = crate::service_env(prefix, database.url(), broker.amqp_url());
    for (name, value) in extra {
        crate::set_var(&mut env, prefix, name, value);
    }
    let service = ServiceProcess::start(binary, &[], prefix, &env).await;
    let client = crate::http_client();

    let ready = client
        .get(format!("{}/health/ready", service.http_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let report: serde_json::Value = ready.json().await.unwrap();
    for check in report["checks"].as_array().unwrap() {
        // The broker connects in the background; the rest must be up at once.
        if check["name"] != "rabbitmq" {
            assert_eq!(check["status"], "up", "{report}");
        }
    }
    for probe in ["live", "startup"] {
        let response = client
            .get(format!("{}/health/{probe}", service.http_url()))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "/health/{probe}");
    }

    // `healthcheck`, for images without a shell, asks the same readiness on the same port;
    // on a port where nothing listens it fails.
    let healthcheck = |port: u16| {
        Command::new(binary)
            .arg("healthcheck")
            .env(format!("{prefix}HTTP_PORT"), port.to_string())
            .output()
            .unwrap()
    };
    let healthy = healthcheck(service.ports().0);
    assert!(healthy.status.success(), "{healthy:?}");
    let nobody = healthcheck(crate::free_port());
    assert_eq!(nobody.status.code(), Some(1), "{nobody:?}");
    assert!(String::from_utf8_lossy(&nobody.stderr).contains("not ready"));

    // An unknown route is a problem+json 404, and shows up in the metrics below.
    let missing = client
        .get(format!("{}/api/v1/nothing-here", service.http_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(
        missing.headers()["content-type"],
        "application/problem+json"
    );
    assert!(missing.headers().contains_key("x-request-id"));

    let metrics = client
        .get(format!("{}/metrics", service.http_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), 200);
    let text = metrics.text().await.unwrap();
    crate::prometheus::validate(&text).unwrap();
    for family in ["messaging_outbox_backlog", "messaging_connection_up"] {
        assert!(text.contains(family), "{family} missing from {text}");
    }
    assert!(
        text.contains(r#"http_requests_total{method="GET",route="unmatched",status="404"} 1"#),
        "{text}"
    );

    assert_eq!(service.grpc_health("").await.unwrap(), SERVING);
    let advertised = service.grpc_reflection_services().await;
    for expected in [
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
    ] {
        assert!(
            advertised.iter().any(|name| name == expected),
            "{advertised:?}"
        );
    }
}

/// A malformed variable makes the binary exit non-zero at once, with a message naming it.
pub async fn bad_environment_variable_stops_startup_naming_it(binary: &str, prefix: &str) {
    let variable = format!("{prefix}HTTP_PORT");
    let mut env = crate::service_env(prefix, "postgres://unused/unused", &crate::amqp_url());
    env.retain(|(name, _)| *name != variable);
    env.push((variable.clone(), "not-a-port".to_owned()));
    let output = Command::new(binary)
        .envs(env)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&variable) && stderr.contains("not-a-port"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");

    // A missing secret is named too.
    let secret = format!("{prefix}DATABASE_URL");
    let mut env = crate::service_env(prefix, "unused", &crate::amqp_url());
    env.retain(|(name, _)| *name != secret);
    let output = Command::new(binary).env_clear().envs(env).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(&secret), "{stderr}");

    // So is a standard OpenTelemetry variable out of its range (`migrate`: no service
    // settings needed to get there).
    let output = Command::new(binary)
        .arg("migrate")
        .envs(crate::service_env(
            prefix,
            "postgres://unused/unused",
            &crate::amqp_url(),
        ))
        .env("OTEL_TRACES_SAMPLER_ARG", "1.5")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("OTEL_TRACES_SAMPLER_ARG"), "{stderr}");
}

/// `migrate` creates the service's database when it is missing, applies the migrations,
/// declares the queue of every subscription of the event contract, and exits 0.
pub async fn migrate_creates_the_database_and_exits(binary: &str, prefix: &str) {
    let database = TestDatabase::not_yet_created();
    let broker = TestBroker::isolated().await;
    let env = crate::service_env(prefix, database.url(), broker.amqp_url());
    let output = Command::new(binary)
        .arg("migrate")
        .envs(env)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let mut connection = <sqlx::PgConnection as sqlx::Connection>::connect(database.url())
        .await
        .unwrap();
    // The service's own migrations and the messaging tables every service carries.
    for table in [
        "_sqlx_migrations",
        "messaging_outbox",
        "messaging_processed_events",
    ] {
        let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
            .bind(table)
            .fetch_one(&mut connection)
            .await
            .unwrap();
        assert!(exists, "{table} is missing after migrate");
    }

    // Whichever service is deployed first, no event it publishes is dropped for want of a
    // queue: `migrate` made them all.
    for subscription in tessera_events::subscriptions::SUBSCRIPTIONS {
        crate::events::queue_depth_at(broker.amqp_url(), &subscription.queue())
            .await
            .unwrap_or_else(|| panic!("migrate did not declare {}", subscription.queue()));
    }
}
