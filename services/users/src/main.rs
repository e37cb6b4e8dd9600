//! The users service: user profiles.

use std::process::ExitCode;

use sqlx::migrate::Migrator;
use tessera_runtime::{Endpoints, ServiceSpec};

static MIGRATOR: Migrator = sqlx::migrate!("../../migrations/users");

static SPEC: ServiceSpec = ServiceSpec {
    name: "users",
    env_prefix: "USERS_",
    default_http_port: 8082,
    default_grpc_port: 50052,
    migrator: &MIGRATOR,
    descriptors: &[tessera_proto::FILE_DESCRIPTOR_SET],
};

fn main() -> ExitCode {
    tessera_runtime::main(&SPEC, |_context| async { Ok(Endpoints::default()) })
}
