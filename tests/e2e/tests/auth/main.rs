//! The auth binary against the real PostgreSQL, Redis and RabbitMQ and the users binary,
//! each a child process on a fresh database and free ports, driven through REST and tonic
//! clients.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod first_deploy;
mod helpers;
mod login;
mod register;
mod sessions;
mod tokens;
