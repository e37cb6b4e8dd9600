//! A panic becomes an ERROR log event with its message, location and thread.
//!
//! Its own binary: the panic hook is process-wide, and in a binary shared with other tests it
//! would swallow their failure messages.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::{Context, SubscriberExt};

/// An event's level, target and fields (as text).
type Recorded = (tracing::Level, String, BTreeMap<String, String>);

/// Every event seen.
#[derive(Clone, Default)]
struct Events(Arc<Mutex<Vec<Recorded>>>);

impl<S: tracing::Subscriber> Layer<S> for Events {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        struct Fields(BTreeMap<String, String>);
        impl Visit for Fields {
            fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
                self.0.insert(field.name().to_owned(), format!("{value:?}"));
            }
            fn record_str(&mut self, field: &Field, value: &str) {
                self.0.insert(field.name().to_owned(), value.to_owned());
            }
        }
        let mut fields = Fields(BTreeMap::new());
        event.record(&mut fields);
        let metadata = event.metadata();
        self.0
            .lock()
            .unwrap()
            .push((*metadata.level(), metadata.target().to_owned(), fields.0));
    }
}

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

    let events = events.0.lock().unwrap();
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
