//! Who consumes what: the queues of the event contract and the types bound to each.
//!
//! The broker keeps a message only if a queue is bound to its type when it is published, so
//! the subscriptions are part of the contract rather than something each consumer sets up
//! for itself when it first runs. Every service declares all of them (in `migrate` and before
//! its relay publishes anything): whichever service comes up first, an event for a consumer
//! that has never run waits in that consumer's queue.

use crate::Event;
use crate::users::{UserDeleted, UserUpdated};

/// A service's standing subscription: its queue and the event types bound to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subscription {
    /// The consuming service (`auth`).
    pub service: &'static str,
    /// The event types routed to its queue.
    pub event_types: &'static [&'static str],
}

impl Subscription {
    /// The service's queue.
    pub fn queue(&self) -> String {
        queue_of(self.service)
    }
}

/// The queue `service` consumes from: `<service>.events`.
pub fn queue_of(service: &str) -> String {
    format!("{service}.events")
}

/// Every subscription of the system.
pub const SUBSCRIPTIONS: &[Subscription] = &[
    // A deleted user loses their credential and sessions; a new role ends old sessions.
    Subscription {
        service: "auth",
        event_types: &[UserDeleted::TYPE, UserUpdated::TYPE],
    },
    // A deleted user's open orders are cancelled.
    Subscription {
        service: "orders",
        event_types: &[UserDeleted::TYPE],
    },
];

/// The subscription of `service`, if it consumes events.
pub fn of(service: &str) -> Option<&'static Subscription> {
    SUBSCRIPTIONS
        .iter()
        .find(|subscription| subscription.service == service)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_service_has_at_most_one_subscription_and_no_type_twice() {
        for (index, subscription) in SUBSCRIPTIONS.iter().enumerate() {
            assert_eq!(of(subscription.service), Some(subscription));
            assert!(
                !SUBSCRIPTIONS[..index]
                    .iter()
                    .any(|earlier| earlier.service == subscription.service)
            );
            let mut types = subscription.event_types.to_vec();
            types.sort_unstable();
            types.dedup();
            assert_eq!(types.len(), subscription.event_types.len());
        }
        assert_eq!(of("users"), None);
        assert_eq!(
            of("auth").map(Subscription::queue).as_deref(),
            Some("auth.events")
        );
    }
}
