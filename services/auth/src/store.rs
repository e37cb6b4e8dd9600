//! Credentials and sessions in PostgreSQL.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use tessera_domain::{Email, Role};
use tessera_jwt::IssuedToken;
use uuid::Uuid;

use crate::refresh::RefreshToken;

/// A credential that can log in.
#[derive(Debug, Clone)]
pub struct Credential {
    /// The user (and profile) id.
    pub user_id: Uuid,
    /// The argon2id PHC string.
    pub password_hash: String,
    /// The role tokens carry.
    pub role: Role,
}

/// An access token to remember for a session: revoking the session denylists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccessGrant {
    /// The token's `jti`.
    pub jti: Uuid,
    /// Its `exp`.
    pub expires_at: DateTime<Utc>,
}

impl From<&IssuedToken> for AccessGrant {
    fn from(token: &IssuedToken) -> Self {
        Self {
            jti: token.jti,
            expires_at: token.expires_at,
        }
    }
}

/// What presenting a refresh token came to.
#[derive(Debug)]
pub enum Rotation<T> {
    /// The token was current: it is now used, and `next` replaces it.
    Rotated(T),
    /// The token was already rotated: someone replays it, so its whole session is now
    /// revoked; the session's unexpired access tokens are returned to be denylisted.
    Reused(Vec<AccessGrant>),
    /// Unknown, expired, or its session is revoked.
    Refused,
}

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// A stored role is not one this build knows.
    #[error("credential {user_id} has an unknown role {role:?}")]
    CorruptRole {
        /// Whose.
        user_id: Uuid,
        /// What is stored.
        role: String,
    },
}

/// The auth database.
#[derive(Debug, Clone)]
pub struct Store {
    db: PgPool,
}

impl Store {
    /// A store over `db`.
    pub fn new(db: PgPool) -> Self {
        Self { db }
    }

    /// Claims `email` for a registration with a `pending` credential and returns its user id,
    /// or `None` when the email is taken. A pending credential older than `abandoned_after`
    /// (its registration died mid-way) is taken over with its id, so a profile made for it
    /// is reused rather than orphaned.
    pub async fn reserve(
        &self,
        email: &Email,
        password_hash: &str,
        role: Role,
        abandoned_after: Duration,
    ) -> Result<Option<Uuid>, StoreError> {
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

    /// Turns the pending credential `pending` into an active one for the profile `user_id`
    /// (the same id, unless an existing profile was adopted) with `role`. False when the
    /// pending credential is gone.
    pub async fn activate(
        &self,
        pending: Uuid,
        user_id: Uuid,
        role: Role,
    ) -> Result<bool, StoreError> {
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

    /// Deletes the pending credential `pending`: the compensation of a failed registration.
    pub async fn discard(&self, pending: Uuid) -> Result<(), StoreError> {
        sqlx::query!(
            "DELETE FROM credentials WHERE user_id = $1 AND status = 'pending'",
            pending
        )
        .execute(&self.db)
        .await?;
        Ok(())
    }

    /// The active credential of `email`.
    pub async fn find_active(&self, email: &Email) -> Result<Option<Credential>, StoreError> {
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

    /// The role of the active credential of `email`.
    pub async fn role_of(&self, email: &Email) -> Result<Option<Role>, StoreError> {
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

    /// Replaces the password hash of `user_id` (after a login with outdated hash costs).
    pub async fn replace_hash(&self, user_id: Uuid, password_hash: &str) -> Result<(), StoreError> {
        sqlx::query!(
            "UPDATE credentials SET password_hash = $2, updated_at = now() WHERE user_id = $1",
            user_id,
            password_hash
        )
        .execute(&self.db)
        .await?;
        Ok(())
    }

    /// Starts a session for `user_id` with its first access and refresh tokens. `false` if
    /// the credential is gone (the user was deleted since the password was checked).
    pub async fn open_session(
        &self,
        user_id: Uuid,
        access: AccessGrant,
        refresh: &RefreshToken,
        refresh_expires_at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
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

    /// Exchanges `presented` for `next` (valid until `next_expires_at`) in one transaction.
    /// `issue` makes the new access token for the session's user and current role; its
    /// error aborts the exchange.
    ///
    /// Concurrent exchanges of one token are serialised by a row lock: the first rotates it,
    /// the others see it used and revoke the session, as a replay would.
    pub async fn rotate<E>(
        &self,
        presented: &RefreshToken,
        next: &RefreshToken,
        next_expires_at: DateTime<Utc>,
        issue: impl FnOnce(Uuid, Role) -> Result<IssuedToken, E>,
    ) -> Result<Rotation<IssuedToken>, E>
    where
        E: From<StoreError>,
    {
        let digest = presented.digest();
        let mut tx = self.db.begin().await.map_err(StoreError::from)?;
        let Some(row) = sqlx::query!(
            "SELECT t.session_id, t.used_at, t.expires_at, s.user_id, s.revoked_at, c.role \
             FROM refresh_tokens t \
             JOIN sessions s ON s.id = t.session_id \
             JOIN credentials c ON c.user_id = s.user_id \
             WHERE t.token_hash = $1 \
             FOR UPDATE OF s, t",
            &digest[..]
        )
        .fetch_optional(&mut *tx)
        .await
        .map_err(StoreError::from)?
        else {
            return Ok(Rotation::Refused);
        };
        if row.revoked_at.is_some() || row.expires_at <= Utc::now() {
            return Ok(Rotation::Refused);
        }
        if row.used_at.is_some() {
            sqlx::query!(
                "UPDATE sessions SET revoked_at = now() WHERE id = $1",
                row.session_id
            )
            .execute(&mut *tx)
            .await
            .map_err(StoreError::from)?;
            let live = live_access(&mut tx, row.session_id).await?;
            tx.commit().await.map_err(StoreError::from)?;
            return Ok(Rotation::Reused(live));
        }
        let access = issue(row.user_id, parse_role(row.user_id, row.role)?)?;
        sqlx::query!(
            "UPDATE refresh_tokens SET used_at = now() WHERE token_hash = $1",
            &digest[..]
        )
        .execute(&mut *tx)
        .await
        .map_err(StoreError::from)?;
        sqlx::query!(
            "INSERT INTO refresh_tokens (token_hash, session_id, expires_at) VALUES ($1, $2, $3)",
            &next.digest()[..],
            row.session_id,
            next_expires_at
        )
        .execute(&mut *tx)
        .await
        .map_err(StoreError::from)?;
        sqlx::query!(
            "UPDATE sessions SET expires_at = $2 WHERE id = $1",
            row.session_id,
            next_expires_at
        )
        .execute(&mut *tx)
        .await
        .map_err(StoreError::from)?;
        remember_access(&mut tx, row.session_id, AccessGrant::from(&access)).await?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok(Rotation::Rotated(access))
    }

    /// Revokes the session `presented` belongs to, if it is `user_id`'s; returns its
    /// unexpired access tokens. A session revoked already answers them too, so a logout
    /// retried after its denylisting failed denylists them after all.
    pub async fn revoke_session(
        &self,
        presented: &RefreshToken,
        user_id: Uuid,
    ) -> Result<Vec<AccessGrant>, StoreError> {
        let mut tx = self.db.begin().await?;
        // The row lock waits for a refresh in flight, whose access token is then seen.
        let Some(session) = sqlx::query_scalar!(
            "UPDATE sessions s SET revoked_at = coalesce(s.revoked_at, now()) \
             FROM refresh_tokens t \
             WHERE t.token_hash = $1 AND s.id = t.session_id AND s.user_id = $2 \
             RETURNING s.id",
            &presented.digest()[..],
            user_id
        )
        .fetch_optional(&mut *tx)
        .await?
        else {
            return Ok(Vec::new());
        };
        let live = live_access(&mut tx, session).await?;
        tx.commit().await?;
        Ok(live)
    }

    /// Deletes pending credentials older than `abandoned_after`, expired sessions, revoked
    /// ones whose access tokens have all expired, expired access tokens and expired refresh
    /// tokens (a used one is kept until then, to recognise its reuse), a batch at a time.
    /// Returns how many rows went.
    pub async fn sweep(&self, abandoned_after: Duration) -> Result<u64, StoreError> {
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
            ];
            let counts = batches.map(|done| done.rows_affected());
            removed += counts.iter().sum::<u64>();
            if counts.iter().all(|count| *count < BATCH as u64) {
                return Ok(removed);
            }
        }
    }
}

/// Deletes `user_id`'s credential and sessions through `connection` (inside the consumer's
/// transaction); returns the sessions' unexpired access tokens, to denylist.
pub async fn forget_user(
    connection: &mut PgConnection,
    user_id: Uuid,
) -> Result<Vec<AccessGrant>, StoreError> {
    // Locking the credential waits for logins in flight (their new session holds a key lock
    // on it) and keeps new ones out; locking the sessions waits for refreshes in flight. The
    // tokens they issued are then seen by the next statement.
    sqlx::query!(
        "SELECT user_id FROM credentials WHERE user_id = $1 FOR UPDATE",
        user_id
    )
    .fetch_optional(&mut *connection)
    .await?;
    sqlx::query!(
        "SELECT id FROM sessions WHERE user_id = $1 FOR UPDATE",
        user_id
    )
    .fetch_all(&mut *connection)
    .await?;
    let live = sqlx::query_as!(
        AccessGrant,
        "SELECT a.jti, a.expires_at FROM session_access_tokens a \
         JOIN sessions s ON s.id = a.session_id \
         WHERE s.user_id = $1 AND a.expires_at > now()",
        user_id
    )
    .fetch_all(&mut *connection)
    .await?;
    // Sessions, their access and refresh tokens go with it (ON DELETE CASCADE).
    sqlx::query!("DELETE FROM credentials WHERE user_id = $1", user_id)
        .execute(&mut *connection)
        .await?;
    Ok(live)
}

/// Records an access token `session` issued.
async fn remember_access(
    connection: &mut PgConnection,
    session: Uuid,
    access: AccessGrant,
) -> Result<(), StoreError> {
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

/// The access tokens `session` issued that have not expired.
async fn live_access(
    connection: &mut PgConnection,
    session: Uuid,
) -> Result<Vec<AccessGrant>, StoreError> {
    Ok(sqlx::query_as!(
        AccessGrant,
        "SELECT jti, expires_at FROM session_access_tokens \
         WHERE session_id = $1 AND expires_at > now()",
        session
    )
    .fetch_all(connection)
    .await?)
}

/// Applies a profile's role as of `changed_at` through `connection`, unless a later change
/// was applied already. Returns whether the role was written.
pub async fn apply_role(
    connection: &mut PgConnection,
    user_id: Uuid,
    role: Role,
    changed_at: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let updated = sqlx::query!(
        "UPDATE credentials SET role = $2, profile_updated_at = $3, updated_at = now() \
         WHERE user_id = $1 AND (profile_updated_at IS NULL OR profile_updated_at < $3)",
        user_id,
        role.as_str(),
        changed_at
    )
    .execute(&mut *connection)
    .await?;
    Ok(updated.rows_affected() == 1)
}

fn parse_role(user_id: Uuid, role: String) -> Result<Role, StoreError> {
    role.parse()
        .map_err(|_| StoreError::CorruptRole { user_id, role })
}
