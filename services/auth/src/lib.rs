//! The auth service: accounts, sessions and access tokens.
//!
//! - [`domain`]: accounts, credentials, passwords (the policy) and refresh tokens; no I/O.
//! - [`accounts`]: what auth does — registration (a saga over the users service), login,
//!   refresh, logout, token validation; HTTP and gRPC only translate to and from it.
//! - [`repository`]: credentials and sessions in PostgreSQL, behind a trait.
//! - [`hashing`]: argon2id on the blocking pool; [`limiter`]: login and registration limits
//!   in Redis; [`users`]: the users service client.
//! - [`events`]: `user.deleted` and `user.updated`; [`background`]: the admin bootstrap and
//!   the janitor.
//! - [`http`]: `/api/v1/auth`, `/.well-known/jwks.json`, OpenAPI; [`grpc`]: `AuthService`.

pub mod accounts;
pub mod background;
pub mod domain;
pub mod events;
pub mod grpc;
pub mod hashing;
pub mod http;
pub mod limiter;
pub mod repository;
pub mod settings;
pub mod users;

use std::sync::Arc;
use std::time::Duration;

use sqlx::migrate::Migrator;
use tessera_jwt::{Denylist, Verifier};
use tessera_runtime::{BoxError, Context, Endpoints, GrpcServices, Service, ServiceSpec};

use crate::repository::Repository;

pub use settings::Settings;

/// The auth database's migrations.
pub static MIGRATOR: Migrator = sqlx::migrate!("../../migrations/auth");

/// The auth service, as the runtime boots it.
pub struct Auth;

impl Service for Auth {
    const SPEC: &'static ServiceSpec = &ServiceSpec {
        name: "auth",
        env_prefix: "AUTH_",
        default_http_port: 8081,
        default_grpc_port: 50051,
        migrator: &MIGRATOR,
        descriptors: &[tessera_proto::FILE_DESCRIPTOR_SET],
        grpc_callers: tessera_proto::callers::GRANTS,
    };
    type Settings = Settings;

    async fn build(context: Context, settings: Settings) -> Result<Endpoints, BoxError> {
        let signer = Arc::new(settings.signer()?);
        let denylist = Denylist::new(context.shared_redis.clone());
        let verifier =
            Verifier::from_jwks(signer.jwks(), &settings.jwt_issuer, &settings.jwt_audience)
                .with_denylist(denylist.clone());
        let repository = Repository::new(context.db.clone());
        let accounts = Arc::new(accounts::Accounts {
            repository: repository.clone(),
            hasher: hashing::Hasher::new(settings.hashing(), context.metrics.registry()).await?,
            signer: Arc::clone(&signer),
            verifier: verifier.clone(),
            users: users::UsersClient::new(
                context.grpc_endpoint("users_grpc_url", &settings.users_grpc_url, "users")?,
                settings.users_timeout(),
            ),
            denylist: denylist.clone(),
            limiter: limiter::Limiter::new(
                context.redis.clone(),
                settings.limits(),
                Duration::from_millis(context.config.redis_timeout_ms),
                settings.login_limits_key_prefix.clone(),
            ),
            refresh_ttl: settings.refresh_token_ttl()?,
            sessions: settings.sessions()?,
            detacher: context.detacher(),
        });

        let mut tasks = vec![
            background::janitor(repository.clone(), context.shutdown.clone()),
            background::denylist_sync(
                repository.clone(),
                denylist.clone(),
                context.shutdown.clone(),
            ),
        ];
        if let Some(admin) = settings.admin_account()? {
            tasks.push(background::admin_bootstrap(
                Arc::clone(&accounts),
                admin,
                context.shutdown.clone(),
            ));
        }
        let state = http::AppState {
            accounts: Arc::clone(&accounts),
            verifier,
            jwks: http::Jwks::new(&signer.jwks())?,
            trusted_proxy_hops: settings.trusted_proxy_hops,
        };
        Ok(Endpoints {
            http: http::router(state),
            grpc: GrpcServices::default().with(grpc::AuthGrpc::new(accounts)),
            consumer: Some(events::consumer(&context, &repository, &denylist)),
            tasks,
            // Logins are limited by client address.
            peer_addresses: true,
        })
    }
}
