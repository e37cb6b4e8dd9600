//! Security across the three binaries, each a child process on a fresh database and free
//! ports: no route without a live token, no forged token anywhere, no user on another's data,
//! no malformed body answered with a 5xx, and internal gRPC kept off the public side.
//!
//! Sweeps take their routes from each service's `/openapi.json`, so a route added later is
//! swept too. Login brute force is `auth/login.rs`'s (limits per email with `Retry-After`,
//! per client address, behind a trusted proxy, under racing guesses), and registration's
//! limit `auth/register.rs`'s.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod authentication;
mod bodies;
mod grpc;
mod helpers;
mod isolation;
