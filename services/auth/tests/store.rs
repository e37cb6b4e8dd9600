//! The repository against a fresh auth database: what no request can reach, such as the
//! janitor's sweep or a credential deleted between two of a login's steps.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use auth::domain::{AccessGrant, RefreshToken, Rotation, SessionPolicy};
use auth::repository::{AccountRepository, Postgres, RepositoryError};
use chrono::{TimeDelta, Utc};
use tessera_domain::{Email, Role};
use tessera_jwt::{Signer, SigningKey};
use tessera_testkit::database::TestDatabase;

/// An access token issued now, as a login remembers it.
fn access() -> AccessGrant {
    AccessGrant {
        jti: uuid::Uuid::now_v7(),
        expires_at: Utc::now() + TimeDelta::minutes(15),
    }
}

/// Signs access tokens as auth does.
fn signer() -> Signer {
    Signer::new(
        vec![SigningKey::generate("test-1")],
        "tessera-auth",
        "tessera",
        Duration::from_secs(900),
    )
    .unwrap()
}

fn refresh_expiry() -> chrono::DateTime<Utc> {
    Utc::now() + TimeDelta::days(1)
}

/// An active credential, as a completed registration leaves it.
async fn registered(store: &Postgres) -> uuid::Uuid {
    let email = Email::parse(&format!(
        "user-{}@example.com",
        uuid::Uuid::now_v7().simple()
    ))
    .unwrap();
    let pending = store
        .reserve(&email, "x", Role::User, Duration::from_secs(600))
        .await
        .unwrap()
        .unwrap();
    assert!(store.activate(pending, pending, Role::User).await.unwrap());
    pending
}

async fn credentials_for(db: &sqlx::PgPool, email: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM credentials WHERE email = $1")
        .bind(email)
        .fetch_one(db)
        .await
        .unwrap()
}

#[tokio::test]
async fn the_janitor_sweeps_dead_sessions_tokens_and_registrations() {
    let database = TestDatabase::migrated(&auth::MIGRATOR).await;
    let db = sqlx::PgPool::connect(database.url()).await.unwrap();
    let store = Postgres::new(db.clone());
    let user = registered(&store).await;
    let (live, ended) = (RefreshToken::generate(), RefreshToken::generate());
    for refresh in [&live, &ended] {
        let opened = store.open_session(user, access(), refresh, refresh_expiry());
        assert!(opened.await.unwrap());
    }
    assert_eq!(
        store
            .revoke_session(&ended, user, access())
            .await
            .unwrap()
            .len(),
        2,
        "the caller's token and the session's"
    );
    // Let every access token expire, and leave an abandoned registration behind.
    for sql in [
        "UPDATE session_access_tokens SET expires_at = now() - interval '1 minute'",
        "INSERT INTO credentials (user_id, email, password_hash, created_at) \
         VALUES (gen_random_uuid(), 'abandoned@example.com', 'x', now() - interval '1 hour')",
    ] {
        sqlx::query(sql).execute(&db).await.unwrap();
    }

    let removed = store.sweep(Duration::from_secs(600)).await.unwrap();

    assert_eq!(
        removed, 3,
        "the ended session (with its tokens), the live session's expired access token and \
         the abandoned registration"
    );
    assert_eq!(credentials_for(&db, "abandoned@example.com").await, 0);
    let signer = signer();
    let rotation = store
        .rotate(
            &live,
            &RefreshToken::generate(),
            refresh_expiry(),
            POLICY,
            |user_id, role| Ok::<_, RepositoryError>(signer.issue(user_id, role).unwrap()),
        )
        .await
        .unwrap();
    assert!(matches!(rotation, Rotation::Rotated(_)), "{rotation:?}");
    db.close().await;
}

/// Thirty-day sessions, a refresh token presented twice within 30 s being a retry.
const POLICY: SessionPolicy = SessionPolicy {
    lifetime: TimeDelta::days(30),
    reuse_grace: TimeDelta::seconds(30),
};

#[tokio::test]
async fn two_refreshes_of_one_token_at_once_rotate_it_once_and_keep_the_session() {
    let database = TestDatabase::migrated(&auth::MIGRATOR).await;
    let db = sqlx::PgPool::connect(database.url()).await.unwrap();
    let store = Postgres::new(db.clone());
    let user = registered(&store).await;
    let presented = RefreshToken::generate();
    assert!(
        store
            .open_session(user, access(), &presented, refresh_expiry())
            .await
            .unwrap()
    );
    let signer = signer();
    let (next_a, next_b, next_c) = (
        RefreshToken::generate(),
        RefreshToken::generate(),
        RefreshToken::generate(),
    );
    let rotate = |next, policy| {
        store.rotate(
            &presented,
            next,
            refresh_expiry(),
            policy,
            |user_id, role| Ok::<_, RepositoryError>(signer.issue(user_id, role).unwrap()),
        )
    };

    let (first, second) = tokio::join!(rotate(&next_a, POLICY), rotate(&next_b, POLICY));
    let mut outcomes = [first.unwrap(), second.unwrap()]
        .map(|rotation| match rotation {
            Rotation::Rotated(_) => "rotated",
            Rotation::JustRotated => "just rotated",
            other => panic!("{other:?}"),
        })
        .to_vec();
    outcomes.sort_unstable();
    assert_eq!(outcomes, ["just rotated", "rotated"]);
    let revoked: i64 =
        sqlx::query_scalar("SELECT count(*) FROM sessions WHERE revoked_at IS NOT NULL")
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!(revoked, 0, "a retry is no replay");

    // Past the grace, presenting it again is a replay: the session ends.
    let no_grace = SessionPolicy {
        reuse_grace: TimeDelta::zero(),
        ..POLICY
    };
    assert!(matches!(
        rotate(&next_c, no_grace).await.unwrap(),
        Rotation::Reused(_)
    ));
    db.close().await;
}

#[tokio::test]
async fn no_session_opens_for_a_credential_deleted_meanwhile() {
    // A login whose user is deleted between its password check and its session: the
    // session's insert finds no credential, and the login is an ordinary failure.
    let database = TestDatabase::migrated(&auth::MIGRATOR).await;
    let db = sqlx::PgPool::connect(database.url()).await.unwrap();
    let store = Postgres::new(db.clone());
    let access = AccessGrant {
        jti: uuid::Uuid::now_v7(),
        expires_at: chrono::Utc::now() + chrono::TimeDelta::minutes(15),
    };

    let opened = store
        .open_session(
            uuid::Uuid::now_v7(),
            access,
            &RefreshToken::generate(),
            chrono::Utc::now() + chrono::TimeDelta::days(1),
        )
        .await
        .unwrap();

    assert!(!opened);
    db.close().await;
}
