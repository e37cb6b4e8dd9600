//! The service's PostgreSQL pool, its migrations and its health check.

use std::time::Duration;

use futures::future::BoxFuture;
use secrecy::ExposeSecret;
use sqlx::migrate::{MigrateDatabase, MigrateError, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgPool, Postgres};
use tessera_errors::storage::is_unreachable;
use tessera_observability::{Criticality, HealthCheck};
use tessera_resilience::backoff;
use tokio::time::Instant;

use crate::config::RuntimeConfig;

/// Why the database could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum DatabaseError {
    /// The URL does not parse.
    #[error("invalid database URL: {0}")]
    Url(#[source] sqlx::Error),
    /// The database does not exist and cannot be created.
    #[error("cannot create the database: {0}")]
    Create(#[source] sqlx::Error),
    /// Applying migrations failed.
    #[error("cannot apply migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// A pool that connects on first use, with acquire and statement timeouts, so a slow or
/// absent database makes requests fail fast instead of piling up.
pub fn pool(config: &RuntimeConfig) -> Result<PgPool, DatabaseError> {
    let options: PgConnectOptions = config
        .database_url
        .expose_secret()
        .parse()
        .map_err(DatabaseError::Url)?;
    let statement_timeout = format!("{}ms", config.db_statement_timeout_ms);
    let options = options.options([("statement_timeout", statement_timeout.as_str())]);
    Ok(PgPoolOptions::new()
        .max_connections(config.db_max_connections)
        .acquire_timeout(Duration::from_millis(config.db_acquire_timeout_ms))
        // A ping before every acquire is a round trip per transaction. A connection used in
        // the last half second is as good as pinged (HikariCP's "alive bypass window"); one
        // idle for longer is checked, so a restarted server fails no request after a lull.
        .test_before_acquire(false)
        .before_acquire(|connection, meta| {
            Box::pin(async move {
                if meta.idle_for >= UNCHECKED_IDLE {
                    connection.ping().await?;
                }
                Ok(true)
            })
        })
        .connect_lazy_with(options))
}

/// How long a pooled connection may sit idle and still be handed out without a ping.
const UNCHECKED_IDLE: Duration = Duration::from_millis(500);

/// Creates the service's database if it does not exist, then applies pending migrations:
/// the service's own and the messaging tables.
///
/// A database that cannot be reached (refused, timed out, still starting up) is waited for,
/// with backoff, for up to [`AVAILABILITY_WAIT`]: a deploy step started beside its database
/// (compose, an init container) must not fail because the server answered a moment later.
/// sqlx takes an advisory lock while migrating, so replicas starting together are safe.
pub async fn migrate(
    config: &RuntimeConfig,
    pool: &PgPool,
    migrator: &Migrator,
) -> Result<(), DatabaseError> {
    let deadline = Instant::now() + AVAILABILITY_WAIT;
    let mut failures = 0;
    loop {
        match prepare(config, pool, migrator).await {
            Err(error) if error.is_unreachable() && Instant::now() < deadline => {
                failures += 1;
                tracing::warn!(
                    error = %tessera_errors::error_chain(&error),
                    attempt = failures,
                    "cannot reach the database; retrying"
                );
                tokio::time::sleep(backoff(failures, RETRY_MIN, RETRY_MAX)).await;
            }
            outcome => return outcome,
        }
    }
}

/// How long [`migrate`] waits for the database to be reachable.
pub const AVAILABILITY_WAIT: Duration = Duration::from_secs(60);
const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);

async fn prepare(
    config: &RuntimeConfig,
    pool: &PgPool,
    migrator: &Migrator,
) -> Result<(), DatabaseError> {
    let url = config.database_url.expose_secret();
    if !Postgres::database_exists(url)
        .await
        .map_err(DatabaseError::Create)?
    {
        tracing::info!("creating the service database");
        if let Err(error) = Postgres::create_database(url).await {
            // Another replica may have created it in the meantime.
            if !Postgres::database_exists(url).await.unwrap_or(false) {
                return Err(DatabaseError::Create(error));
            }
        }
    }
    migrator.run(pool).await?;
    // The outbox and processed-event tables, with their own history table.
    tessera_messaging::MIGRATOR.run(pool).await?;
    tracing::info!(
        migrations = migrator.iter().count(),
        "database schema is up to date"
    );
    Ok(())
}

impl DatabaseError {
    /// Whether the database could not be reached, as opposed to refusing what was asked.
    fn is_unreachable(&self) -> bool {
        match self {
            Self::Url(_) => false,
            Self::Create(error)
            | Self::Migrate(MigrateError::Execute(error))
            | Self::Migrate(MigrateError::ExecuteMigration(error, _)) => is_unreachable(error),
            Self::Migrate(_) => false,
        }
    }
}

/// Readiness check: the service cannot work without its database.
pub struct PostgresCheck(pub PgPool);

impl HealthCheck for PostgresCheck {
    fn name(&self) -> &'static str {
        "postgres"
    }

    fn criticality(&self) -> Criticality {
        Criticality::Required
    }

    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            sqlx::query("SELECT 1")
                .execute(&self.0)
                .await
                .map(drop)
                .map_err(|error| error.to_string())
        })
    }
}
