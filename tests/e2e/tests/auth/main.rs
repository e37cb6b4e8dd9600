//! The auth service against the real PostgreSQL, Redis and RabbitMQ and a real users service,
//! each on a fresh database, served in-process on free ports and driven through REST and
//! tonic clients.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod helpers;
mod login;
mod register;
mod sessions;
mod tokens;
