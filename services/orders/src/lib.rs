//! The orders service: orders and their lifecycle.

use sqlx::migrate::Migrator;
use tessera_runtime::{BoxError, Context, Endpoints, NoSettings, Service, ServiceSpec};

/// The orders database's migrations.
pub static MIGRATOR: Migrator = sqlx::migrate!("../../migrations/orders");

/// The orders service, as the runtime boots it.
pub struct Orders;

impl Service for Orders {
    const SPEC: &'static ServiceSpec = &ServiceSpec {
        name: "orders",
        env_prefix: "ORDERS_",
        default_http_port: 8083,
        default_grpc_port: 50053,
        migrator: &MIGRATOR,
        descriptors: &[tessera_proto::FILE_DESCRIPTOR_SET],
    };
    type Settings = NoSettings;

    async fn build(_: Context, _: NoSettings) -> Result<Endpoints, BoxError> {
        Ok(Endpoints::default())
    }
}
