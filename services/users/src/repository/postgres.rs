//! Profiles in PostgreSQL, with their events in the same transactions.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tessera_domain::{DisplayName, Email};
use tessera_events::users::{UserCreated, UserDeleted, UserUpdated};
use tessera_messaging::Outbox;
use tessera_runtime::Snapshot;
use uuid::Uuid;

use super::{RepositoryError, UserRepository};
use crate::domain::{Creation, NewUser, User, UserChanges};

/// The PostgreSQL repository.
#[derive(Clone)]
pub struct Postgres {
    db: PgPool,
    outbox: Outbox,
}

impl Postgres {
    /// A repository over `db` that writes events to `outbox`.
    pub fn new(db: PgPool, outbox: Outbox) -> Self {
        Self { db, outbox }
    }

    async fn find_by_email(&self, email: &Email) -> Result<Option<User>, RepositoryError> {
        sqlx::query_as!(
            Row,
            "SELECT id, email, display_name, role, created_at, updated_at, version FROM users WHERE email = $1",
            email.as_str()
        )
        .fetch_optional(&self.db)
        .await?
        .map(User::try_from)
        .transpose()
    }
}

/// A `users` row as stored.
struct Row {
    id: Uuid,
    email: String,
    display_name: String,
    role: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    version: i64,
}

impl TryFrom<Row> for User {
    type Error = RepositoryError;

    fn try_from(row: Row) -> Result<Self, Self::Error> {
        let corrupt = |reason: String| RepositoryError::Corrupt { id: row.id, reason };
        Ok(Self {
            id: row.id,
            email: Email::parse(&row.email).map_err(|e| corrupt(format!("email {e}")))?,
            display_name: DisplayName::parse(&row.display_name)
                .map_err(|e| corrupt(format!("display name {e}")))?,
            role: row.role.parse().map_err(|e| corrupt(format!("role {e}")))?,
            created_at: row.created_at,
            updated_at: row.updated_at,
            version: row.version,
        })
    }
}

impl UserRepository for Postgres {
    #[tracing::instrument(
        name = "users.create",
        skip_all,
        fields(otel.kind = "client", db.system.name = "postgresql")
    )]
    async fn create(&self, user: NewUser) -> Result<Creation, RepositoryError> {
        let mut tx = self.db.begin().await?;
        // No conflict target: a clash on the email or on the id both leave the row alone,
        // and the lookup below tells which it was.
        let inserted = sqlx::query_as!(
            Row,
            "INSERT INTO users (id, email, display_name, role) VALUES ($1, $2, $3, $4) \
             ON CONFLICT DO NOTHING \
             RETURNING id, email, display_name, role, created_at, updated_at, version",
            user.id,
            user.email.as_str(),
            user.display_name.as_str(),
            user.role.as_str()
        )
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(row) = inserted {
            let created = User::try_from(row)?;
            self.outbox
                .enqueue(&mut tx, &UserCreated::from(&created))
                .await?;
            tx.commit().await?;
            return Ok(Creation::Created(created));
        }
        tx.rollback().await?;
        match self.find_by_email(&user.email).await? {
            Some(existing) => Ok(Creation::Existing(existing)),
            None => Err(RepositoryError::IdTaken(user.id)),
        }
    }

    #[tracing::instrument(
        name = "users.find",
        skip_all,
        fields(otel.kind = "client", db.system.name = "postgresql")
    )]
    async fn find(&self, id: Uuid) -> Result<Option<Snapshot<User>>, RepositoryError> {
        sqlx::query_as!(
            Row,
            "SELECT id, email, display_name, role, created_at, updated_at, version FROM users WHERE id = $1",
            id
        )
        .fetch_optional(&self.db)
        .await?
        .map(|row| User::try_from(row).map(Snapshot::new))
        .transpose()
    }

    #[tracing::instrument(
        name = "users.find_many",
        skip_all,
        fields(otel.kind = "client", db.system.name = "postgresql")
    )]
    async fn find_many(&self, ids: &[Uuid]) -> Result<Vec<User>, RepositoryError> {
        sqlx::query_as!(
            Row,
            "SELECT id, email, display_name, role, created_at, updated_at, version FROM users \
             WHERE id = ANY($1) ORDER BY id",
            ids
        )
        .fetch_all(&self.db)
        .await?
        .into_iter()
        .map(User::try_from)
        .collect()
    }

    #[tracing::instrument(
        name = "users.list",
        skip_all,
        fields(otel.kind = "client", db.system.name = "postgresql")
    )]
    async fn list(&self, after: Option<Uuid>, limit: u32) -> Result<Vec<User>, RepositoryError> {
        sqlx::query_as!(
            Row,
            "SELECT id, email, display_name, role, created_at, updated_at, version FROM users \
             WHERE $1::uuid IS NULL OR id > $1 ORDER BY id LIMIT $2",
            after,
            i64::from(limit)
        )
        .fetch_all(&self.db)
        .await?
        .into_iter()
        .map(User::try_from)
        .collect()
    }

    #[tracing::instrument(
        name = "users.update",
        skip_all,
        fields(otel.kind = "client", db.system.name = "postgresql")
    )]
    async fn update(
        &self,
        id: Uuid,
        changes: UserChanges,
    ) -> Result<Option<User>, RepositoryError> {
        let mut tx = self.db.begin().await?;
        let updated = sqlx::query_as!(
            Row,
            "UPDATE users SET display_name = COALESCE($2, display_name), \
             role = COALESCE($3, role), updated_at = now(), version = version + 1 \
             WHERE id = $1 \
             RETURNING id, email, display_name, role, created_at, updated_at, version",
            id,
            changes.display_name.as_ref().map(DisplayName::as_str),
            changes.role.map(|role| role.as_str())
        )
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = updated else {
            return Ok(None);
        };
        let user = User::try_from(row)?;
        self.outbox
            .enqueue(&mut tx, &UserUpdated::from(&user))
            .await?;
        tx.commit().await?;
        Ok(Some(user))
    }

    #[tracing::instrument(
        name = "users.delete",
        skip_all,
        fields(otel.kind = "client", db.system.name = "postgresql")
    )]
    async fn delete(&self, id: Uuid) -> Result<bool, RepositoryError> {
        let mut tx = self.db.begin().await?;
        let deleted = sqlx::query_scalar!("DELETE FROM users WHERE id = $1 RETURNING id", id)
            .fetch_optional(&mut *tx)
            .await?;
        if deleted.is_none() {
            return Ok(false);
        }
        self.outbox.enqueue(&mut tx, &UserDeleted { id }).await?;
        tx.commit().await?;
        Ok(true)
    }
}

impl From<&User> for UserCreated {
    fn from(user: &User) -> Self {
        Self {
            id: user.id,
            email: user.email.to_string(),
            display_name: user.display_name.to_string(),
            role: user.role,
            created_at: user.created_at,
        }
    }
}

impl From<&User> for UserUpdated {
    fn from(user: &User) -> Self {
        Self {
            id: user.id,
            email: user.email.to_string(),
            display_name: user.display_name.to_string(),
            role: user.role,
            updated_at: user.updated_at,
            version: user.version,
        }
    }
}
