//! A panic becomes an ERROR log event with its message, location and thread.
//!
//! Its own binary: the panic hook is process-wide, and in a binary shared with other tests it
//! would swallow their failure messages.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use tracing_subscriber::layer::SubscriberExt;

use crate::support::Events;

#[test]
fn a_panic_is_logged_as_an_error_with_its_message_location_and_thread() {
    let events = Events::default();
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(events.clone()))
        .unwrap();
    tessera_observability::logging::log_panics();

    let line = line!() + 3;
    let worker = std::thread::Builder::new()
        .name("worker-7".to_owned())
        .spawn(|| panic!("the ledger does not balance: {}", 42))
        .unwrap();
    assert!(worker.join().is_err());

    let events = events.recorded();
    let [(level, target, fields)] = events.as_slice() else {
        panic!("expected one event, got {events:?}");
    };
    assert_eq!(*level, tracing::Level::ERROR);
    assert_eq!(target, "panic");
    assert_eq!(fields["message"], "panicked");
    assert_eq!(fields["panic.message"], "the ledger does not balance: 42");
    assert_eq!(
        fields["panic.location"],
        format!("{}:{line}:19", file!()),
        "{fields:?}"
    );
    assert_eq!(fields["thread"], "worker-7");
}
