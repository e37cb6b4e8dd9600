//! The auth service: identities, credentials and tokens.

use std::process::ExitCode;

use sqlx::migrate::Migrator;
use tessera_runtime::{Endpoints, ServiceSpec};

static MIGRATOR: Migrator = sqlx::migrate!("../../migrations/auth");

static SPEC: ServiceSpec = ServiceSpec {
    name: "auth",
    env_prefix: "AUTH_",
    default_http_port: 8081,
    default_grpc_port: 50051,
    migrator: &MIGRATOR,
    descriptors: &[tessera_proto::FILE_DESCRIPTOR_SET],
};

fn main() -> ExitCode {
    tessera_runtime::main(&SPEC, |_context| async { Ok(Endpoints::default()) })
}
