//! The users service against the real PostgreSQL, Redis and RabbitMQ, one fresh database per
//! test, served in-process on free ports and driven through REST and a tonic client.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cache;
mod events;
mod grpc;
mod grpc_tls;
mod helpers;
mod rest;
