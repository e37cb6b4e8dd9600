//! Faults the product must survive, injected into real processes under load: a broker cut
//! off, users frozen, orders killed or stopped, database connections terminated.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod broker_cut;
mod database_terminated;
mod delivery;
// The orders tests' `spawn_app`, so both targets start orders the same way; this one calls
// only part of it.
#[allow(dead_code)]
#[path = "../orders/helpers.rs"]
mod helpers;
mod load;
mod orders_killed;
mod orders_terminated;
mod users_frozen;
