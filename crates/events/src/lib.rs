//! The event contract between tessera services.
//!
//! The publisher and every consumer use these types, so a payload change is a compile error
//! on both sides rather than a surprise in a dead-letter queue. Payloads accept unknown
//! fields (a newer publisher may add some) and bump [`Event::VERSION`] only on a breaking
//! change. Free-text fields are plain strings: an event records what was stored, and a later,
//! stricter validation rule must not make old events unreadable.
//!
//! [`subscriptions`] says which service consumes which types: the broker topology every
//! service declares, so no event is published before its queue exists.
//!
//! The crate does no I/O: it compiles with serde alone, so anything may depend on it.

mod event;
pub mod orders;
pub mod subscriptions;
pub mod users;

pub use event::{Envelope, Event};
