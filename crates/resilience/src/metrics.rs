//! The metrics of guarded calls, labelled by the service called.

use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};
use tower_resilience_circuitbreaker::CircuitState;

/// Counters and gauges shared by every [`crate::Guarded`] of a process.
#[derive(Debug, Clone)]
pub struct ClientMetrics {
    state: IntGaugeVec,
    transitions: IntCounterVec,
    calls: IntCounterVec,
    retries: IntCounterVec,
}

impl ClientMetrics {
    /// Registers the metrics in `registry`; call once per registry.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let state = IntGaugeVec::new(
            Opts::new(
                "client_circuit_state",
                "State of the circuit breaker towards a service: 0 closed, 1 open, 2 half-open.",
            ),
            &["target"],
        )?;
        let transitions = IntCounterVec::new(
            Opts::new(
                "client_circuit_transitions_total",
                "Circuit breaker state changes, by the state entered.",
            ),
            &["target", "to"],
        )?;
        let calls = IntCounterVec::new(
            Opts::new(
                "client_calls_total",
                "Guarded calls by outcome: ok, answered (an error answer), failed, timeout, \
                 short_circuited (refused by the open circuit).",
            ),
            &["target", "outcome"],
        )?;
        let retries = IntCounterVec::new(
            Opts::new(
                "client_retries_total",
                "Attempts made after a first one failed.",
            ),
            &["target"],
        )?;
        registry.register(Box::new(state.clone()))?;
        registry.register(Box::new(transitions.clone()))?;
        registry.register(Box::new(calls.clone()))?;
        registry.register(Box::new(retries.clone()))?;
        Ok(Self {
            state,
            transitions,
            calls,
            retries,
        })
    }

    /// Creates `target`'s series at their starting values, so dashboards and alerts have
    /// them before anything happens.
    pub(crate) fn start(&self, target: &str) {
        self.state.with_label_values(&[target]).set(0);
        for to in ["closed", "open", "half_open"] {
            self.transitions.with_label_values(&[target, to]);
        }
        for outcome in ["ok", "answered", "failed", "timeout", "short_circuited"] {
            self.calls.with_label_values(&[target, outcome]);
        }
        self.retries.with_label_values(&[target]);
    }

    pub(crate) fn transition(&self, target: &str, from: CircuitState, to: CircuitState) {
        let (value, name) = match to {
            CircuitState::Closed => (0, "closed"),
            CircuitState::Open => (1, "open"),
            CircuitState::HalfOpen => (2, "half_open"),
        };
        self.state.with_label_values(&[target]).set(value);
        self.transitions.with_label_values(&[target, name]).inc();
        if to == CircuitState::Open {
            tracing::warn!(
                target_service = target,
                ?from,
                "circuit opened: calls fail fast"
            );
        } else {
            tracing::info!(target_service = target, ?from, ?to, "circuit changed state");
        }
    }

    pub(crate) fn outcome(&self, target: &str, outcome: &str) {
        self.calls.with_label_values(&[target, outcome]).inc();
    }

    pub(crate) fn retry(&self, target: &str) {
        self.retries.with_label_values(&[target]).inc();
    }
}
