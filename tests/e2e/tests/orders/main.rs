//! The orders binary against the real PostgreSQL, Redis and RabbitMQ and the users binary,
//! each a child process on a fresh database, its own queue and free ports.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cache;
mod events;
mod grpc;
mod helpers;
mod lifecycle;
mod listing;
mod placing;
mod users_down;
mod validation;
