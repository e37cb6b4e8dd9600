//! Why a service stopped.

use std::time::Duration;

use tessera_errors::BoxError;

use crate::database;
use crate::tasks::TaskFailure;

/// Why the service stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] tessera_config::ConfigError),
    /// Logging could not be set up.
    #[error(transparent)]
    Logging(#[from] tessera_observability::logging::LoggingError),
    /// The database could not be prepared.
    #[error(transparent)]
    Database(#[from] database::DatabaseError),
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// Anything else that went wrong while starting or serving.
    #[error("{0}")]
    Other(BoxError),
    /// A background task failed, so the service stopped.
    #[error(transparent)]
    TaskFailed(#[from] TaskFailure),
    /// In-flight work did not finish within the shutdown timeout.
    #[error("in-flight requests did not finish within {0:?}; stopped anyway")]
    DrainTimeout(Duration),
}

impl RunError {
    pub(crate) fn other(error: impl Into<BoxError>) -> Self {
        Self::Other(error.into())
    }
}
