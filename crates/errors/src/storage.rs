//! What a database failure means to a client, decided once for every service.
//!
//! - The database cannot be reached (pool timeout, connection refused or lost, the server
//!   shutting down or out of connections): [`Error::Unavailable`], 503 with `Retry-After`.
//!   The request may succeed in a moment; nothing about it was wrong.
//! - A unique constraint the service named refused the write: [`Error::AlreadyExists`], 409,
//!   in the words it gave that constraint. One it did not name is a write it never expected
//!   to clash: a bug, like the rest.
//! - Anything else is a bug or corrupt data: [`Error::Internal`], 500, the cause logged.

use crate::Error;

/// What the client is told when a unique constraint refuses a write: `(constraint name,
/// message)` pairs, e.g. `("credentials_email_key", "an account with this email exists")`.
pub type UniqueConstraints = [(&'static str, &'static str)];

/// Whether `error` says the database cannot be reached now, rather than that the query or
/// the data is wrong: worth retrying later, never the request's fault.
pub fn is_unreachable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => true,
        // What a connection closed before the server spoke looks like: a proxy or load
        // balancer in front of a database that is down.
        sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(error) => error.code().is_some_and(|code| is_unreachable_code(&code)),
        _ => false,
    }
}

/// Whether a PostgreSQL error `code` says the server cannot be used now. Class 08:
/// connection exceptions; 57P01-57P03: the server is shutting down or not accepting
/// connections; 53300: too many connections.
pub fn is_unreachable_code(code: &str) -> bool {
    code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03" | "53300")
}

/// Maps `error` to what the client sees; unique violations are named by `unique`.
pub fn database_error(error: sqlx::Error, unique: &UniqueConstraints) -> Error {
    if is_unreachable(&error) {
        tracing::warn!(%error, "the database is unreachable");
        return Error::Unavailable("the database is not answering; retry later".to_owned());
    }
    if let sqlx::Error::Database(database) = &error
        && database.is_unique_violation()
        && let Some(constraint) = database.constraint()
        && let Some((_, message)) = unique.iter().find(|(name, _)| *name == constraint)
    {
        return Error::AlreadyExists((*message).to_owned());
    }
    Error::internal(error)
}

impl From<sqlx::Error> for Error {
    /// [`database_error`] with no constraint named.
    fn from(error: sqlx::Error) -> Self {
        database_error(error, &[])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreachable_database_is_a_503_and_a_bad_query_a_500() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        for unreachable in [sqlx::Error::PoolTimedOut, sqlx::Error::Io(io)] {
            assert_eq!(Error::from(unreachable).http_status(), 503);
        }
        let bad = sqlx::Error::ColumnNotFound("nope".to_owned());
        assert_eq!(Error::from(bad).http_status(), 500);
    }
}
