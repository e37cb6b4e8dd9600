//! Credentials and sessions in PostgreSQL.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use tessera_domain::{Email, Role};
use tessera_jwt::IssuedToken;
use uuid::Uuid;

use super::{AccountRepository, RepositoryError};
use crate::domain::{AccessGrant, Credential, RefreshToken, Rotation, SessionPolicy};

/// The auth database.
#[derive(Debug, Clone)]
pub struct Postgres {
    db: PgPool,
}

impl Postgres {
    /// A repository over `db`.
    pub fn new(db: PgPool) -> Self {
        Self { db }
    }
}

impl AccountRepository for Postgres {
    #[tracing::instrument(
        name = "accounts.reserve",
        skip_all,
        fields(otel.kind = "client", db.system.name = "postgresql")
    )]
    async fn reserve(
        &self,
        email: &Email,
        password_hash: &str,
        role: Role,
        abandoned_after: Duration,
    ) -> Result<Option<Uuid>, RepositoryError> {
        let reserved = sqlx::query_scalar!(
            "INSERT INTO credentials (user_id, email, password_hash, role) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (email) DO UPDATE \
                SET password_hash = EXCLUDED.password_hash, role = EXCLUDED.role, \
                    created_at = now(), updated_at = now() \
                WHERE credentials.status = 'pending' \
                  AND credentials.created_at < now() - make_interval(secs => $5) \
             RETURNING user_id",
            Uuid::now_v7(),
            email.as_str(),
            password_hash,
            role.as_str(),
            abandoned_after.as_secs_f64()
        )
        .fetch_optional(&self.db)
        .await?;
        Ok(reserved)
    }

    #[tracing::instrument(
        name = "accounts.activate",
        skip_all,
        fields(otel.kind = "client", db.system.name = "postgresql")
    )]
    async fn activate(
        &self,
        pending: Uuid,
        user_id: Uuid,
        role: Role,
    ) -> Result<bool, RepositoryError> {
        let updated = sqlx::query!(
            "UPDATE credentials SET user_id = $2, role = $3, status = 'active', updated_at = now() \
             WHERE user_id = $1 AND status = 'pending'",
            pending,
            user_id,
            role.as_str()
        )
        .execute(&self.db)
        .await?;
        Ok(updated.rows_affected() == 1)
    }

    #[tracing::instrument(
        name = "accounts.discard",
        skip_all,
        fields(otel.kind = "client", db.system.name = "postgresql")
    )]
    async fn discard(&self, pending: Uuid) -> Result<(), RepositoryError> {
        sqlx::query!(
            "DELETE FROM credentials WHERE user_id = $1 AND status = 'pending'",
            pending
        )
        .execute(&self.db)
        .await?;
        Ok(())
    }

    #[tracing::instrument(
        name = "accounts.find_active",
        skip_all,
        fields(otel.kind = "client", db.system.name = "postgresql")
    )]
    async fn find_active(&self, email: &Email) -> Result<Option<Credential>, RepositoryError> {
        let Some(row) = sqlx::query!(
            "SELECT user_id, password_hash, role FROM credentials \
             WHERE email = $1 AND status = 'active'",
            email.as_str()
        )
        .fetch_optional(&self.db)
        .await?
        else {
            return Ok(None);
        };
        Ok(Some(Credential {
            user_id: row.user_id,
            password_hash: row.password_hash,
            role: parse_role(row.user_id, row.role)?,
        }))
    }

    #[tracing::instrument(
        name = "accounts.role_of",
        skip_all,
        fields(otel.kind = "client", db.system.name = "postgresql")
    )]
    async fn role_of(&self, email: &Email) -> Result<Option<Role>, RepositoryError> {
        let Some(row) = sqlx::query!(
            "SELECT user_id, role FROM credentials WHERE email = $1 AND status = 'active'",
            email.as_str()
        )
        .fetch_optional(&self.db)
        .await?
        else {
            return Ok(None);
        };
        parse_role(row.user_id, row.role).map(Some)
    }

    #[tracing::instrument(
        name = "accounts.replace_hash",
        skip_all,
        fields(otel.kind = "client", db.system.name = "postgresql")
    )]
    async fn replace_hash(
        &self,
        user_id: Uuid,
        password_hash: &str,
    ) -> Result<(), RepositoryError> {
        sqlx::query!(
            "UPDATE credentials SET password_hash = $2, updated_at = now() WHERE user_id = $1",
            user_id,
            password_hash
        )
        .execute(&self.db)
        .await?;
        Ok(())
    }

    #[tracing::instrument(
        name = "accounts.open_session",
        skip_all,
        fields(otel.kind = "client", db.system.name = "postgresql")
    )]
    async fn open_session(
        &self,
        user_id: Uuid,
        access: AccessGrant,
        refresh: &RefreshToken,
        refresh_expires_at: DateTime<Utc>,
    ) -> Result<bool, RepositoryError> {
        let session_id = Uuid::now_v7();
        let mut tx = self.db.begin().await?;
        let opened = sqlx::query!(
            "INSERT INTO sessions (id, user_id, expires_at) VALUES ($1, $2, $3)",
            session_id,
            user_id,
            refresh_expires_at
        )
        .execute(&mut *tx)
        .await;
        match opened {
            Err(sqlx::Error::Database(error)) if error.is_foreign_key_violation() => {
                return Ok(false);
            }
            opened => opened?,
        };
        remember_access(&mut tx, session_id, access).await?;
        sqlx::query!(
            "INSERT INTO refresh_tokens (token_hash, session_id, expires_at) VALUES ($1, $2, $3)",
            &refresh.digest()[..],
            session_id,
            refresh_expires_at
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    #[tracing::instrument(
        name = "accounts.rotate",
        skip_all,
        fields(otel.kind = "client", db.system.name = "postgresql")
    )]
    async fn rotate<E: From<RepositoryError> + Send>(
        &self,
        presented: &RefreshToken,
        next: &RefreshToken,
        next_expires_at: DateTime<Utc>,
        policy: SessionPolicy,
        issue: impl FnOnce(Uuid, Role) -> Result<IssuedToken, E> + Send,
    ) -> Result<Rotation<IssuedToken>, E> {
        let digest = presented.digest();
        let mut tx = self.db.begin().await.map_err(RepositoryError::from)?;
        let Some(row) = sqlx::query!(
            "SELECT t.session_id, t.used_at, t.expires_at, s.user_id, s.revoked_at, \
                    s.created_at AS session_created_at, c.role, \
                    coalesce(t.used_at > now() - make_interval(secs => $2), false) AS \"just_used!\" \
             FROM refresh_tokens t \
             JOIN sessions s ON s.id = t.session_id \
             JOIN credentials c ON c.user_id = s.user_id \
             WHERE t.token_hash = $1 \
             FOR UPDATE OF s, t",
            &digest[..],
            policy.reuse_grace.as_seconds_f64()
        )
        .fetch_optional(&mut *tx)
        .await
        .map_err(RepositoryError::from)?
        else {
            return Ok(Rotation::Refused);
        };
        let session_ends = row.session_created_at + policy.lifetime;
        if row.revoked_at.is_some() || row.expires_at <= Utc::now() || session_ends <= Utc::now() {
            return Ok(Rotation::Refused);
        }
        let next_expires_at = next_expires_at.min(session_ends);
        if row.just_used {
            return Ok(Rotation::JustRotated);
        }
        if row.used_at.is_some() {
            sqlx::query!(
                "UPDATE sessions SET revoked_at = now() WHERE id = $1",
                row.session_id
            )
            .execute(&mut *tx)
            .await
            .map_err(RepositoryError::from)?;
            let live = live_access(&mut tx, row.session_id).await?;
            tx.commit().await.map_err(RepositoryError::from)?;
            return Ok(Rotation::Reused(live));
        }
        let access = issue(row.user_id, parse_role(row.user_id, row.role)?)?;
        sqlx::query!(
            "UPDATE refresh_tokens SET used_at = now() WHERE token_hash = $1",
            &digest[..]
        )
        .execute(&mut *tx)
        .await
        .map_err(RepositoryError::from)?;
        sqlx::query!(
            "INSERT INTO refresh_tokens (token_hash, session_id, expires_at) VALUES ($1, $2, $3)",
            &next.digest()[..],
            row.session_id,
            next_expires_at
        )
        .execute(&mut *tx)
        .await
        .map_err(RepositoryError::from)?;
        sqlx::query!(
            "UPDATE sessions SET expires_at = $2 WHERE id = $1",
            row.session_id,
            next_expires_at
        )
        .execute(&mut *tx)
        .await
        .map_err(RepositoryError::from)?;
        remember_access(&mut tx, row.session_id, AccessGrant::from(&access)).await?;
        tx.commit().await.map_err(RepositoryError::from)?;
        Ok(Rotation::Rotated(access))
    }

    #[tracing::instrument(
        name = "accounts.revoke_session",
        skip_all,
        fields(otel.kind = "client", db.system.name = "postgresql")
    )]
    async fn revoke_session(
        &self,
        presented: &RefreshToken,
        user_id: Uuid,
        caller: AccessGrant,
    ) -> Result<Vec<AccessGrant>, RepositoryError> {
        let mut tx = self.db.begin().await?;
        sqlx::query!(
            "INSERT INTO revoked_access_tokens (jti, expires_at) VALUES ($1, $2) \
             ON CONFLICT (jti) DO NOTHING",
            caller.jti,
            caller.expires_at
        )
        .execute(&mut *tx)
        .await?;
        let mut revoked = vec![caller];
        // The row lock waits for a refresh in flight, whose access token is then seen.
        if let Some(session) = sqlx::query_scalar!(
            "UPDATE sessions s SET revoked_at = coalesce(s.revoked_at, now()) \
             FROM refresh_tokens t \
             WHERE t.token_hash = $1 AND s.id = t.session_id AND s.user_id = $2 \
             RETURNING s.id",
            &presented.digest()[..],
            user_id
        )
        .fetch_optional(&mut *tx)
        .await?
        {
            revoked.extend(
                live_access(&mut tx, session)
                    .await?
                    .into_iter()
                    .filter(|grant| grant.jti != caller.jti),
            );
        }
        tx.commit().await?;
        Ok(revoked)
    }

    #[tracing::instrument(
        name = "accounts.unpushed_revocations",
        skip_all,
        fields(otel.kind = "client", db.system.name = "postgresql")
    )]
    async fn unpushed_revocations(&self, limit: i64) -> Result<Vec<AccessGrant>, RepositoryError> {
        Ok(sqlx::query_as!(
            AccessGrant,
            "SELECT jti, expires_at FROM revoked_access_tokens \
             WHERE pushed_at IS NULL AND expires_at > now() \
             ORDER BY expires_at LIMIT $1",
            limit
        )
        .fetch_all(&self.db)
        .await?)
    }

    #[tracing::instrument(
        name = "accounts.unmark_pushed",
        skip_all,
        fields(otel.kind = "client", db.system.name = "postgresql")
    )]
    async fn unmark_pushed(&self) -> Result<(), RepositoryError> {
        sqlx::query!(
            "UPDATE revoked_access_tokens SET pushed_at = NULL \
             WHERE pushed_at IS NOT NULL AND expires_at > now()"
        )
        .execute(&self.db)
        .await?;
        Ok(())
    }

    #[tracing::instrument(
        name = "accounts.mark_pushed",
        skip_all,
        fields(otel.kind = "client", db.system.name = "postgresql")
    )]
    async fn mark_pushed(&self, jtis: &[Uuid]) -> Result<(), RepositoryError> {
        sqlx::query!(
            "UPDATE revoked_access_tokens SET pushed_at = now() WHERE jti = ANY($1)",
            jtis
        )
        .execute(&self.db)
        .await?;
        Ok(())
    }

    #[tracing::instrument(
        name = "accounts.sweep",
        skip_all,
        fields(otel.kind = "client", db.system.name = "postgresql")
    )]
    async fn sweep(&self, abandoned_after: Duration) -> Result<u64, RepositoryError> {
        const BATCH: i64 = 1_000;
        let mut removed = 0;
        loop {
            let batches = [
                // The conditions are repeated outside: a registration that takes over an
                // abandoned row meanwhile makes it young again, and must keep it.
                sqlx::query!(
                    "DELETE FROM credentials WHERE user_id IN ( \
                        SELECT user_id FROM credentials \
                        WHERE status = 'pending' AND created_at < now() - make_interval(secs => $1) \
                        LIMIT $2) \
                     AND status = 'pending' AND created_at < now() - make_interval(secs => $1)",
                    abandoned_after.as_secs_f64(),
                    BATCH
                )
                .execute(&self.db)
                .await?,
                sqlx::query!(
                    "DELETE FROM sessions WHERE id IN ( \
                        SELECT id FROM sessions WHERE expires_at < now() LIMIT $1)",
                    BATCH
                )
                .execute(&self.db)
                .await?,
                sqlx::query!(
                    "DELETE FROM sessions WHERE id IN ( \
                        SELECT s.id FROM sessions s \
                        WHERE s.revoked_at IS NOT NULL AND NOT EXISTS ( \
                            SELECT 1 FROM session_access_tokens a \
                            WHERE a.session_id = s.id AND a.expires_at >= now()) \
                        LIMIT $1)",
                    BATCH
                )
                .execute(&self.db)
                .await?,
                sqlx::query!(
                    "DELETE FROM session_access_tokens WHERE jti IN ( \
                        SELECT jti FROM session_access_tokens WHERE expires_at < now() LIMIT $1)",
                    BATCH
                )
                .execute(&self.db)
                .await?,
                sqlx::query!(
                    "DELETE FROM refresh_tokens WHERE token_hash IN ( \
                        SELECT token_hash FROM refresh_tokens WHERE expires_at < now() LIMIT $1)",
                    BATCH
                )
                .execute(&self.db)
                .await?,
                sqlx::query!(
                    "DELETE FROM revoked_access_tokens WHERE jti IN ( \
                        SELECT jti FROM revoked_access_tokens WHERE expires_at < now() LIMIT $1)",
                    BATCH
                )
                .execute(&self.db)
                .await?,
            ];
            let counts = batches.map(|done| done.rows_affected());
            removed += counts.iter().sum::<u64>();
            if counts.iter().all(|count| *count < BATCH as u64) {
                return Ok(removed);
            }
        }
    }

    #[tracing::instrument(
        name = "accounts.forget_user",
        skip_all,
        fields(otel.kind = "client", db.system.name = "postgresql")
    )]
    async fn forget_user(
        &self,
        connection: &mut PgConnection,
        user_id: Uuid,
    ) -> Result<Vec<AccessGrant>, RepositoryError> {
        sqlx::query!(
            "SELECT user_id FROM credentials WHERE user_id = $1 FOR UPDATE",
            user_id
        )
        .fetch_optional(&mut *connection)
        .await?;
        let live = live_access_of_user(connection, user_id).await?;
        // Sessions, their access and refresh tokens go with it (ON DELETE CASCADE).
        sqlx::query!("DELETE FROM credentials WHERE user_id = $1", user_id)
            .execute(&mut *connection)
            .await?;
        Ok(live)
    }

    #[tracing::instrument(
        name = "accounts.apply_role",
        skip_all,
        fields(otel.kind = "client", db.system.name = "postgresql")
    )]
    async fn apply_role(
        &self,
        connection: &mut PgConnection,
        user_id: Uuid,
        role: Role,
        version: i64,
    ) -> Result<Vec<AccessGrant>, RepositoryError> {
        let Some(before) = sqlx::query_scalar!(
            "SELECT role FROM credentials WHERE user_id = $1 FOR UPDATE",
            user_id
        )
        .fetch_optional(&mut *connection)
        .await?
        else {
            return Ok(Vec::new());
        };
        let updated = sqlx::query!(
            "UPDATE credentials SET role = $2, profile_version = $3, updated_at = now() \
             WHERE user_id = $1 AND (profile_version IS NULL OR profile_version < $3)",
            user_id,
            role.as_str(),
            version
        )
        .execute(&mut *connection)
        .await?;
        if updated.rows_affected() == 0 || before == role.as_str() {
            return Ok(Vec::new());
        }
        // A demoted admin's tokens must not outlive the demotion (nor a promoted user's
        // carry the old role): the sessions end, their access tokens are denylisted.
        let live = live_access_of_user(connection, user_id).await?;
        sqlx::query!(
            "UPDATE sessions SET revoked_at = now() WHERE user_id = $1 AND revoked_at IS NULL",
            user_id
        )
        .execute(&mut *connection)
        .await?;
        Ok(live)
    }
}

/// The unexpired access tokens of all `user_id`'s sessions, with the credential already
/// locked by the caller. Locking the credential waits for logins in flight (their new session
/// holds a key lock on it) and keeps new ones out; locking the sessions here waits for
/// refreshes in flight, so the tokens they issued are seen.
async fn live_access_of_user(
    connection: &mut PgConnection,
    user_id: Uuid,
) -> Result<Vec<AccessGrant>, RepositoryError> {
    sqlx::query!(
        "SELECT id FROM sessions WHERE user_id = $1 FOR UPDATE",
        user_id
    )
    .fetch_all(&mut *connection)
    .await?;
    Ok(sqlx::query_as!(
        AccessGrant,
        "INSERT INTO revoked_access_tokens (jti, expires_at) \
         SELECT a.jti, a.expires_at FROM session_access_tokens a \
         JOIN sessions s ON s.id = a.session_id \
         WHERE s.user_id = $1 AND a.expires_at > now() \
         ON CONFLICT (jti) DO UPDATE SET expires_at = EXCLUDED.expires_at \
         RETURNING jti, expires_at",
        user_id
    )
    .fetch_all(&mut *connection)
    .await?)
}

/// Records an access token `session` issued.
async fn remember_access(
    connection: &mut PgConnection,
    session: Uuid,
    access: AccessGrant,
) -> Result<(), RepositoryError> {
    sqlx::query!(
        "INSERT INTO session_access_tokens (jti, session_id, expires_at) VALUES ($1, $2, $3)",
        access.jti,
        session,
        access.expires_at
    )
    .execute(connection)
    .await?;
    Ok(())
}

/// Records the access tokens `session` issued that have not expired as revoked, and returns
/// them.
async fn live_access(
    connection: &mut PgConnection,
    session: Uuid,
) -> Result<Vec<AccessGrant>, RepositoryError> {
    Ok(sqlx::query_as!(
        AccessGrant,
        "INSERT INTO revoked_access_tokens (jti, expires_at) \
         SELECT jti, expires_at FROM session_access_tokens \
         WHERE session_id = $1 AND expires_at > now() \
         ON CONFLICT (jti) DO UPDATE SET expires_at = EXCLUDED.expires_at \
         RETURNING jti, expires_at",
        session
    )
    .fetch_all(connection)
    .await?)
}

fn parse_role(user_id: Uuid, role: String) -> Result<Role, RepositoryError> {
    role.parse()
        .map_err(|_| RepositoryError::CorruptRole { user_id, role })
}
