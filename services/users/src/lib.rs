//! The users service: user profiles over REST (end users) and gRPC (other services).
//!
//! - [`domain`]: a profile and its changes; [`profiles`]: who may see and change which.
//! - [`repository`]: PostgreSQL storage (with `user.*` events in the same transactions)
//!   behind a trait, and a cache-aside decorator (in process, then Redis).
//! - [`http`]: `/api/v1/users` and its OpenAPI document; [`grpc`]: `UserService`.

pub mod domain;
pub mod grpc;
pub mod http;
pub mod profiles;
pub mod repository;
pub mod settings;

use std::sync::Arc;

use sqlx::migrate::Migrator;
use tessera_jwt::{Denylist, Verifier};
use tessera_runtime::{BoxError, Context, Endpoints, GrpcServices, Service, ServiceSpec};

pub use settings::Settings;

/// The users database's migrations.
pub static MIGRATOR: Migrator = sqlx::migrate!("../../migrations/users");

/// The users service, as the runtime boots it.
pub struct Users;

impl Service for Users {
    const SPEC: &'static ServiceSpec = &ServiceSpec {
        name: "users",
        env_prefix: "USERS_",
        default_http_port: 8082,
        default_grpc_port: 50052,
        migrator: &MIGRATOR,
        descriptors: &[tessera_proto::FILE_DESCRIPTOR_SET],
        grpc_callers: tessera_proto::callers::GRANTS,
    };
    type Settings = Settings;

    async fn build(context: Context, settings: Settings) -> Result<Endpoints, BoxError> {
        let verifier = Verifier::remote(settings.keys.verifier()?)?
            .with_denylist(Denylist::new(context.shared_redis.clone()));
        let (cache, cache_sync) = context.near_cache("users");
        let repository = repository::Cached::new(
            repository::Postgres::new(context.db.clone(), context.outbox.clone()),
            cache,
        );
        let profiles = Arc::new(profiles::Profiles::new(repository));
        let state = http::AppState {
            profiles: Arc::clone(&profiles),
            verifier,
        };
        Ok(Endpoints {
            http: http::router(state),
            grpc: GrpcServices::default().with(grpc::UserGrpc::new(profiles)),
            tasks: vec![cache_sync],
            ..Endpoints::default()
        })
    }
}
