//! The orders service: orders and their lifecycle.
//!
//! - [`domain`]: orders, their lines and totals, the lifecycle, idempotency keys; no I/O.
//! - [`book`]: who may place, see and change which order; placing is idempotent per key.
//! - [`repository`]: PostgreSQL storage with `order.*` events in the same transactions, and
//!   reads by id cached in memory and Redis.
//! - [`users`]: the users service client (deadline, retries, circuit breaker).
//! - [`events`]: `user.deleted` cancels the user's open orders; [`background`]: the janitor.
//! - [`http`]: `/api/v1/orders` and its OpenAPI document; [`grpc`]: `OrderService`.

pub mod background;
pub mod book;
pub mod domain;
pub mod events;
pub mod grpc;
pub mod http;
pub mod repository;
pub mod settings;
pub mod users;

use std::sync::Arc;

use sqlx::migrate::Migrator;
use tessera_jwt::{Denylist, Verifier};
use tessera_resilience::ClientMetrics;
use tessera_runtime::{BoxError, Context, Endpoints, GrpcServices, Service, ServiceSpec};

pub use settings::Settings;

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
        grpc_callers: tessera_proto::callers::GRANTS,
    };
    type Settings = Settings;

    async fn build(context: Context, settings: Settings) -> Result<Endpoints, BoxError> {
        let verifier = Verifier::remote(settings.keys.verifier()?)?
            .with_denylist(Denylist::new(context.shared_redis.clone()));
        let client_metrics = ClientMetrics::register(context.metrics.registry())?;
        let users = users::UsersClient::new(
            context.grpc_endpoint("users_grpc_url", &settings.users_grpc_url, "users")?,
            settings.users_policy(),
            &client_metrics,
        )?;
        let (cache, cache_sync) = context.near_cache("orders");
        let repository = repository::Cached::new(
            repository::Postgres::new(context.db.clone(), context.outbox.clone()),
            cache,
        );
        let book = Arc::new(book::OrderBook::new(
            repository.clone(),
            users,
            settings.idempotency_ttl(),
        ));
        let state = http::AppState {
            book: Arc::clone(&book),
            verifier,
        };
        Ok(Endpoints {
            http: http::router(state),
            grpc: GrpcServices::default().with(grpc::OrderGrpc::new(book)),
            consumer: Some(events::consumer(&context, &repository)),
            tasks: vec![
                background::janitor(repository, context.shutdown.clone()),
                cache_sync,
            ],
            ..Endpoints::default()
        })
    }
}
