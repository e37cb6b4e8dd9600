//! The binary boots on the local infrastructure, answers its probes, and refuses bad config.

use std::process::Command;

use tessera_jwt::SigningKey;
use tessera_testkit::smoke;

const BINARY: &str = env!("CARGO_BIN_EXE_auth");

#[tokio::test]
async fn serves_health_metrics_and_grpc_health() {
    let keys = tempfile::tempdir().unwrap();
    SigningKey::generate("boot").write_pem(keys.path()).unwrap();
    smoke::serves_health_metrics_and_grpc_health_with(
        BINARY,
        "AUTH_",
        vec![("SIGNING_KEYS_DIR", keys.path().display().to_string())],
    )
    .await;
}

#[tokio::test]
async fn bad_environment_variable_stops_startup_naming_it() {
    smoke::bad_environment_variable_stops_startup_naming_it(BINARY, "AUTH_").await;
}

#[tokio::test]
async fn no_signing_key_stops_startup_naming_the_variable() {
    let empty = tempfile::tempdir().unwrap();
    let database = tessera_testkit::database::TestDatabase::empty().await;
    let mut env =
        tessera_testkit::service_env("AUTH_", database.url(), &tessera_testkit::amqp_url());
    tessera_testkit::set_var(
        &mut env,
        "AUTH_",
        "SIGNING_KEYS_DIR",
        empty.path().display().to_string(),
    );
    let output = Command::new(BINARY).envs(env).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("AUTH_SIGNING_KEYS_DIR"), "{stderr}");
}

#[tokio::test]
async fn migrate_creates_the_database_and_exits() {
    smoke::migrate_creates_the_database_and_exits(BINARY, "AUTH_").await;
}
