//! Prometheus metrics of the event pipeline.

use prometheus::{Gauge, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// Counters and gauges for the broker connection, the relay and the consumers.
#[derive(Clone)]
pub struct MessagingMetrics {
    /// 1 while connected to the broker.
    pub connection_up: IntGauge,
    /// Outbox rows not yet confirmed by the broker.
    pub outbox_backlog: IntGauge,
    /// Age in seconds of the oldest pending outbox row (0 when none).
    pub outbox_oldest_pending_seconds: Gauge,
    /// Events handed to the broker.
    pub published: IntCounter,
    /// Events the broker confirmed (and were then marked sent).
    pub confirmed: IntCounter,
    /// Publishes that failed or were refused by the broker.
    pub publish_failures: IntCounter,
    /// Outbox rows set aside after the broker refused them too often (kept, not published).
    pub outbox_poisoned: IntGauge,
    /// Deliveries by consumer and outcome: processed, duplicate, retried, dead_lettered, and
    /// deferred (held back while the consumer's database did not answer).
    pub consumed: IntCounterVec,
}

impl MessagingMetrics {
    /// Creates the metrics and registers them on `registry`.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let metrics = Self {
            connection_up: IntGauge::new(
                "messaging_connection_up",
                "1 while connected to the broker.",
            )?,
            outbox_backlog: IntGauge::new(
                "messaging_outbox_backlog",
                "Outbox events not yet confirmed by the broker.",
            )?,
            outbox_oldest_pending_seconds: Gauge::new(
                "messaging_outbox_oldest_pending_seconds",
                "Age of the oldest unpublished outbox event, in seconds.",
            )?,
            published: IntCounter::new(
                "messaging_outbox_published_total",
                "Outbox events handed to the broker.",
            )?,
            confirmed: IntCounter::new(
                "messaging_outbox_confirmed_total",
                "Outbox events confirmed by the broker.",
            )?,
            publish_failures: IntCounter::new(
                "messaging_outbox_publish_failures_total",
                "Outbox publishes that failed or that the broker refused.",
            )?,
            outbox_poisoned: IntGauge::new(
                "messaging_outbox_poisoned",
                "Outbox events set aside after the broker refused them too often.",
            )?,
            consumed: IntCounterVec::new(
                Opts::new(
                    "messaging_consumed_total",
                    "Event deliveries handled, by consumer and outcome.",
                ),
                &["consumer", "outcome"],
            )?,
        };
        registry.register(Box::new(metrics.connection_up.clone()))?;
        registry.register(Box::new(metrics.outbox_backlog.clone()))?;
        registry.register(Box::new(metrics.outbox_oldest_pending_seconds.clone()))?;
        registry.register(Box::new(metrics.published.clone()))?;
        registry.register(Box::new(metrics.confirmed.clone()))?;
        registry.register(Box::new(metrics.publish_failures.clone()))?;
        registry.register(Box::new(metrics.outbox_poisoned.clone()))?;
        registry.register(Box::new(metrics.consumed.clone()))?;
        Ok(metrics)
    }

    /// Metrics registered nowhere, for code that is not exported (tests, tools).
    pub fn unregistered() -> Self {
        // Registration on a fresh registry cannot collide.
        Self::register(&Registry::new())
            .unwrap_or_else(|error| unreachable!("fresh registry: {error}"))
    }
}
