//! Database failures, produced by a real PostgreSQL, map to what a client should see.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use sqlx::{Connection, PgConnection};
use tessera_errors::Error;
use tessera_errors::storage::database_error;

fn postgres_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A connection with a temporary table holding one row, `taken@example.com`.
async fn connection_with_a_taken_email() -> PgConnection {
    let mut connection = PgConnection::connect(&postgres_url()).await.unwrap();
    sqlx::query(
        "CREATE TEMP TABLE accounts (email text CONSTRAINT accounts_email_key UNIQUE, \
         nickname text UNIQUE)",
    )
    .execute(&mut connection)
    .await
    .unwrap();
    sqlx::query("INSERT INTO accounts VALUES ('taken@example.com', 'ada')")
        .execute(&mut connection)
        .await
        .unwrap();
    connection
}

#[tokio::test]
async fn a_named_unique_violation_is_a_conflict_in_its_words_and_any_other_a_bug() {
    let mut connection = connection_with_a_taken_email().await;
    let error = sqlx::query("INSERT INTO accounts VALUES ('taken@example.com', 'bob')")
        .execute(&mut connection)
        .await
        .unwrap_err();
    let mapped = database_error(
        error,
        &[("accounts_email_key", "an account with this email exists")],
    );
    assert_eq!(mapped.http_status(), 409);
    assert_eq!(mapped.public_message(), "an account with this email exists");

    // A constraint the service gave no words for was never expected to clash: a bug.
    let error = sqlx::query("INSERT INTO accounts VALUES ('new@example.com', 'ada')")
        .execute(&mut connection)
        .await
        .unwrap_err();
    assert!(matches!(Error::from(error), Error::Internal(_)));
}

#[tokio::test]
async fn an_unreachable_database_is_unavailable_and_a_broken_query_internal() {
    let refused = PgConnection::connect("postgres://postgres@127.0.0.1:1/postgres")
        .await
        .unwrap_err();
    assert_eq!(Error::from(refused).http_status(), 503);

    let mut connection = connection_with_a_taken_email().await;
    let broken = sqlx::query("SELECT no_such_column FROM accounts")
        .execute(&mut connection)
        .await
        .unwrap_err();
    assert_eq!(Error::from(broken).http_status(), 500);
}
