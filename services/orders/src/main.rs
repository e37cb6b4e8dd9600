//! The orders service: orders and their lifecycle.

use std::process::ExitCode;

use sqlx::migrate::Migrator;
use tessera_runtime::{Endpoints, ServiceSpec};

static MIGRATOR: Migrator = sqlx::migrate!("../../migrations/orders");

static SPEC: ServiceSpec = ServiceSpec {
    name: "orders",
    env_prefix: "ORDERS_",
    default_http_port: 8083,
    default_grpc_port: 50053,
    migrator: &MIGRATOR,
    descriptors: &[tessera_proto::FILE_DESCRIPTOR_SET],
};

fn main() -> ExitCode {
    tessera_runtime::main(&SPEC, |_context| async { Ok(Endpoints::default()) })
}
