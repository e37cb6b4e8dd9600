//! The binary boots on the local infrastructure, answers its probes, and refuses bad config.

use tessera_testkit::smoke;

const BINARY: &str = env!("CARGO_BIN_EXE_users");

#[tokio::test]
async fn serves_health_metrics_and_grpc_health() {
    smoke::serves_health_metrics_and_grpc_health(BINARY, "USERS_").await;
}

#[tokio::test]
async fn bad_environment_variable_stops_startup_naming_it() {
    smoke::bad_environment_variable_stops_startup_naming_it(BINARY, "USERS_").await;
}

#[tokio::test]
async fn migrate_creates_the_database_and_exits() {
    smoke::migrate_creates_the_database_and_exits(BINARY, "USERS_").await;
}
