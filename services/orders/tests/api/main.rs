//! The orders service in process, against real PostgreSQL, Redis, RabbitMQ and a real users
//! service: each test on its own database and queue.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod events;
mod grpc;
mod helpers;
mod lifecycle;
mod listing;
mod placing;
mod users_down;
mod validation;
