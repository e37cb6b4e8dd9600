//! The auth service: accounts, sessions and access tokens.
//!
//! - [`accounts`]: registration (a saga over the users service), login, refresh, logout.
//! - [`passwords`]: password rules and argon2id hashing; [`refresh`]: refresh tokens;
//!   [`limiter`]: failed-login limits in Redis.
//! - [`store`]: credentials and sessions in PostgreSQL; [`users`]: the users service client.
//! - [`events`]: `user.deleted` and `user.updated`; [`background`]: the admin bootstrap and
//!   the janitor.
//! - [`http`]: `/api/v1/auth`, `/.well-known/jwks.json`, OpenAPI; [`grpc`]: `AuthService`.

pub mod accounts;
pub mod background;
pub mod events;
pub mod grpc;
pub mod http;
pub mod limiter;
pub mod passwords;
pub mod refresh;
pub mod settings;
pub mod store;
pub mod users;

use std::sync::Arc;
use std::time::Duration;

use secrecy::ExposeSecret;
use sqlx::migrate::Migrator;
use tessera_domain::{DisplayName, Email, Role};
use tessera_jwt::{Denylist, Verifier};
use tessera_runtime::{BoxError, Context, Endpoints, GrpcServices, ServiceSpec};

pub use settings::Settings;

/// The auth database's migrations.
pub static MIGRATOR: Migrator = sqlx::migrate!("../../migrations/auth");

/// How the runtime runs this service.
pub static SPEC: ServiceSpec = ServiceSpec {
    name: "auth",
    env_prefix: "AUTH_",
    default_http_port: 8081,
    default_grpc_port: 50051,
    migrator: &MIGRATOR,
    descriptors: &[tessera_proto::FILE_DESCRIPTOR_SET],
};

/// Builds the service's endpoints from the runtime's resources and its settings, and starts
/// its background work (the janitor; the admin bootstrap when configured).
pub async fn endpoints(context: Context, settings: Settings) -> Result<Endpoints, BoxError> {
    let signer = Arc::new(settings.signer()?);
    let refresh_ttl = settings.refresh_token_ttl()?;
    let admin = admin_account(&settings)?;
    let denylist = Denylist::new(context.redis.clone());
    let verifier = Verifier::from_jwks(signer.jwks(), &settings.jwt_issuer, &settings.jwt_audience)
        .with_denylist(denylist.clone());
    let hasher = passwords::Hasher::new(settings.hashing(), context.metrics.registry()).await?;
    let store = store::Store::new(context.db.clone());
    let limiter = limiter::Limiter::new(
        context.redis.clone(),
        limiter::Limits {
            per_email: settings.login_max_failures_per_email,
            per_client: settings.login_max_failures_per_client,
            window: Duration::from_secs(settings.login_failure_window_secs),
            registrations_per_client: settings.registrations_per_client,
            registration_window: Duration::from_secs(settings.registration_window_secs),
        },
        Duration::from_millis(context.config.redis_timeout_ms),
        settings.login_limits_key_prefix.clone(),
    );
    let accounts = Arc::new(accounts::Accounts::new(
        store.clone(),
        hasher,
        Arc::clone(&signer),
        users::UsersClient::new(&settings.users_grpc_url, settings.users_timeout())?,
        denylist,
        limiter,
        refresh_ttl,
    ));

    tokio::spawn(background::janitor(store, context.shutdown.clone()));
    if let Some(admin) = admin {
        tokio::spawn(background::bootstrap_admin(
            Arc::clone(&accounts),
            admin,
            context.shutdown.clone(),
        ));
    }

    let consumer = events::consumer(
        &context,
        settings.events_queue.clone(),
        settings.events_queue_expires_secs.map(Duration::from_secs),
    );
    let state = http::AppState {
        accounts,
        verifier: verifier.clone(),
        jwks: http::Jwks::new(&signer.jwks())?,
        trust_forwarded_for: settings.trust_forwarded_for,
    };
    Ok(Endpoints {
        http: http::router(state),
        grpc: GrpcServices::default().with(grpc::AuthGrpc::new(verifier)),
        consumers: vec![consumer],
    })
}

/// The admin account to bootstrap, validated like any registration.
fn admin_account(settings: &Settings) -> Result<Option<accounts::NewAccount>, BoxError> {
    let Some((email, password)) = settings.admin()? else {
        return Ok(None);
    };
    let invalid = |variable: &str, problem: String| tessera_config::ConfigError {
        variable: variable.to_owned(),
        problem,
    };
    let email = Email::parse(&email).map_err(|e| invalid("AUTH_ADMIN_EMAIL", e.0))?;
    let password = passwords::Password::new_for(password.expose_secret(), &email)
        .map_err(|e| invalid("AUTH_ADMIN_PASSWORD", format!("the password {}", e.0)))?;
    let display_name = DisplayName::parse(&settings.admin_display_name)
        .map_err(|e| invalid("AUTH_ADMIN_DISPLAY_NAME", e.0))?;
    Ok(Some(accounts::NewAccount {
        email,
        password,
        display_name,
        role: Role::Admin,
    }))
}
