//! Calls to another service that fail fast instead of piling up when it is sick.
//!
//! A [`Guarded`] wraps one kind of gRPC call with, from the outside in:
//!
//! - a **deadline** for the whole call, retries included, so the caller's own request can
//!   answer within a known time;
//! - **retries** with exponential backoff and jitter, for calls the caller says are idempotent,
//!   drawn from a **retry budget** (at most a share of recent calls, plus a small floor), so
//!   that retries cannot multiply the load on a service that is already failing;
//! - a **circuit breaker** (closed → open → half-open): once most recent attempts failed, calls
//!   are refused on the spot for a cool-down, then one probe decides whether to close again;
//! - a **timeout per attempt**, never past the deadline.
//!
//! The breaker is `tower-resilience-circuitbreaker` and the backoff and budget are tower's:
//! a breaker's state machine is easy to get subtly wrong under concurrency (half-open probes
//! racing, permits leaked by cancelled calls), and these are maintained, tested building
//! blocks rather than a hand-rolled copy. State, transitions, retries and outcomes are
//! Prometheus metrics ([`ClientMetrics`]).
//!
//! [`backoff`] spaces the attempts of anything that waits for a dependency to come back
//! (the broker connection, the database at start-up).

mod backoff;
mod metrics;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::time::Instant;
use tonic::{Code, Status};
use tower::ServiceExt;
use tower::retry::backoff::{Backoff, ExponentialBackoffMaker, MakeBackoff};
use tower::retry::budget::{Budget, TpsBudget};
use tower::util::ServiceFn;
use tower::util::rng::HasherRng;
use tower_resilience_circuitbreaker::{
    CircuitBreaker, CircuitBreakerError, CircuitBreakerLayer, FnClassifier, SlidingWindowType,
};

pub use backoff::backoff;
pub use metrics::ClientMetrics;

/// How a guarded call behaves. [`CallPolicy::default`] suits a fast internal read.
#[derive(Debug, Clone)]
pub struct CallPolicy {
    /// Longest the whole call may take, retries and backoff included.
    pub deadline: Duration,
    /// Longest one attempt may take (cut to what is left of the deadline).
    pub attempt_timeout: Duration,
    /// Most retries after the first attempt.
    pub retries: u32,
    /// First backoff; each next one doubles, plus up to as much again of jitter.
    pub backoff: Duration,
    /// Longest backoff.
    pub max_backoff: Duration,
    /// Retries allowed as a share of calls in the last ten seconds (0.2 = one in five).
    pub retry_ratio: f32,
    /// Retries allowed per second whatever the traffic, so a quiet client may still retry.
    pub min_retries_per_second: u32,
    /// The circuit breaker.
    pub breaker: BreakerPolicy,
}

impl Default for CallPolicy {
    fn default() -> Self {
        Self {
            deadline: Duration::from_secs(1),
            attempt_timeout: Duration::from_millis(300),
            retries: 2,
            backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(200),
            retry_ratio: 0.2,
            min_retries_per_second: 10,
            breaker: BreakerPolicy::default(),
        }
    }
}

/// When the circuit opens and for how long.
#[derive(Debug, Clone)]
pub struct BreakerPolicy {
    /// Open when at least this share of the attempts in the window failed (0, 1].
    pub failure_rate: f64,
    /// How far back the failure rate looks.
    pub window: Duration,
    /// Fewest attempts in the window before the rate counts, so one early failure does not
    /// open the circuit.
    pub minimum_calls: usize,
    /// How long the circuit stays open before a probe is let through.
    pub open_for: Duration,
}

impl Default for BreakerPolicy {
    fn default() -> Self {
        Self {
            failure_rate: 0.5,
            window: Duration::from_secs(10),
            minimum_calls: 5,
            open_for: Duration::from_secs(5),
        }
    }
}

/// Why a guarded call has no answer.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The service could not be reached, did not answer in time, failed internally, or the
    /// circuit is open: the caller should answer "unavailable, retry later".
    #[error("{target} is unavailable: {reason}")]
    Unavailable {
        /// The service called.
        target: &'static str,
        /// What happened, for the logs.
        reason: String,
    },
    /// The service answered, and the answer is an error (not found, invalid argument, …).
    #[error("{target} answered {}: {}", .status.code(), .status.message())]
    Answered {
        /// The service called.
        target: &'static str,
        /// Its answer.
        status: Status,
    },
}

/// One attempt, as the breaker sees it.
type Attempt<T> = BoxFuture<'static, Result<T, Status>>;
type Breaker<T> = CircuitBreaker<
    ServiceFn<fn(Attempt<T>) -> Attempt<T>>,
    FnClassifier<fn(&Result<T, Status>) -> bool>,
>;

/// One kind of call to one service, guarded. Cheap to share behind an `Arc`; every clone of
/// the breaker shares one circuit.
pub struct Guarded<T> {
    target: &'static str,
    policy: CallPolicy,
    breaker: Breaker<T>,
    budget: Arc<TpsBudget>,
    backoff: ExponentialBackoffMaker,
    metrics: ClientMetrics,
}

impl<T: Send + 'static> Guarded<T> {
    /// Calls to `target` (the name in logs and metrics) under `policy`.
    pub fn new(
        target: &'static str,
        policy: CallPolicy,
        metrics: &ClientMetrics,
    ) -> Result<Self, String> {
        let breaker_policy = &policy.breaker;
        let transitions = metrics.clone();
        let layer = CircuitBreakerLayer::builder()
            .name(target)
            .failure_rate_threshold(breaker_policy.failure_rate)
            .sliding_window_type(SlidingWindowType::TimeBased)
            .sliding_window_duration(breaker_policy.window)
            .minimum_number_of_calls(breaker_policy.minimum_calls)
            .wait_duration_in_open(breaker_policy.open_for)
            .permitted_calls_in_half_open(1)
            .failure_classifier(is_failure::<T> as fn(&Result<T, Status>) -> bool)
            .on_state_transition(move |from, to| transitions.transition(target, from, to))
            .build()
            .map_err(|error| format!("invalid circuit breaker settings: {error}"))?;
        let breaker = layer.layer_fn(tower::service_fn(pass_through::<T> as fn(_) -> _));
        let backoff = ExponentialBackoffMaker::new(
            policy.backoff,
            policy.max_backoff.max(policy.backoff),
            1.0,
            HasherRng::default(),
        )
        .map_err(|error| format!("invalid backoff settings: {error:?}"))?;
        // Deposits are remembered for ten seconds: the budget follows recent traffic.
        let budget = Arc::new(TpsBudget::new(
            Duration::from_secs(10),
            policy.min_retries_per_second,
            policy.retry_ratio,
        ));
        metrics.start(target);
        Ok(Self {
            target,
            policy,
            breaker,
            budget,
            backoff,
            metrics: metrics.clone(),
        })
    }

    /// Runs `attempt` until it answers, within the policy. `attempt` gets the time it may
    /// take (to send as the gRPC deadline) and must be idempotent: it may run more than once.
    pub async fn call<F, Fut>(&self, mut attempt: F) -> Result<T, CallError>
    where
        F: FnMut(Duration) -> Fut,
        Fut: Future<Output = Result<T, Status>> + Send + 'static,
    {
        let deadline = Instant::now() + self.policy.deadline;
        let mut backoff = self.backoff.clone().make_backoff();
        let mut retries = 0;
        self.budget.deposit();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let limit = left.min(self.policy.attempt_timeout);
            if limit.is_zero() {
                return Err(self.unavailable("timeout", self.out_of_time()));
            }
            let call = attempt(limit);
            let timed: Attempt<T> = Box::pin(async move {
                tokio::time::timeout(limit, call).await.unwrap_or_else(|_| {
                    Err(Status::deadline_exceeded(format!(
                        "no answer within {limit:?}"
                    )))
                })
            });
            let status = match self.through_breaker(timed).await {
                Ok(answer) => {
                    self.metrics.outcome(self.target, "ok");
                    return Ok(answer);
                }
                Err(CircuitBreakerError::OpenCircuit) => {
                    return Err(self.unavailable("short_circuited", "the circuit is open".into()));
                }
                Err(CircuitBreakerError::Inner(status)) => status,
            };
            if !is_failure(&Err::<T, _>(status.clone())) {
                self.metrics.outcome(self.target, "answered");
                return Err(CallError::Answered {
                    target: self.target,
                    status,
                });
            }
            let reason = format!("{}: {}", status.code(), status.message());
            if !is_retryable(&status) || retries >= self.policy.retries {
                return Err(self.unavailable("failed", reason));
            }
            if !self.budget.withdraw() {
                return Err(self.unavailable("failed", format!("{reason} (retry budget spent)")));
            }
            if tokio::time::timeout_at(deadline, backoff.next_backoff())
                .await
                .is_err()
            {
                return Err(self.unavailable("timeout", self.out_of_time()));
            }
            retries += 1;
            self.metrics.retry(self.target);
            tracing::debug!(target_service = self.target, %reason, retries, "retrying");
        }
    }

    /// The attempt, if the breaker lets it run. Boxed here, outside any `async` body: the
    /// breaker's future named inside one would make every caller's future prove `Send` for
    /// all lifetimes of the breaker's function type, which the compiler cannot.
    fn through_breaker(
        &self,
        attempt: Attempt<T>,
    ) -> BoxFuture<'static, Result<T, CircuitBreakerError<Status>>> {
        Box::pin(self.breaker.clone().oneshot(attempt))
    }

    fn unavailable(&self, outcome: &str, reason: String) -> CallError {
        self.metrics.outcome(self.target, outcome);
        CallError::Unavailable {
            target: self.target,
            reason,
        }
    }

    fn out_of_time(&self) -> String {
        format!(
            "no answer within the deadline of {:?}",
            self.policy.deadline
        )
    }
}

fn pass_through<T>(attempt: Attempt<T>) -> Attempt<T> {
    attempt
}

/// Whether an attempt's outcome says the service is unwell (counted by the breaker). An answer
/// such as NOT_FOUND or INVALID_ARGUMENT is the service working. CANCELLED is the transport's
/// word for a connection that closed or never opened in time: an attempt this crate gives up
/// on is dropped, never answered with a status.
fn is_failure<T>(outcome: &Result<T, Status>) -> bool {
    match outcome {
        Ok(_) => false,
        Err(status) => matches!(
            status.code(),
            Code::Unavailable
                | Code::Cancelled
                | Code::DeadlineExceeded
                | Code::ResourceExhausted
                | Code::Aborted
                | Code::Internal
                | Code::Unknown
                | Code::DataLoss
        ),
    }
}

/// Whether another attempt may succeed where this one failed: the service was unreachable,
/// its connection broke, it was too slow, or it shed load. An internal error would most likely repeat.
fn is_retryable(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable
            | Code::Cancelled
            | Code::DeadlineExceeded
            | Code::ResourceExhausted
            | Code::Aborted
    )
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    fn policy() -> CallPolicy {
        CallPolicy {
            deadline: Duration::from_millis(400),
            attempt_timeout: Duration::from_millis(100),
            backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(5),
            breaker: BreakerPolicy {
                failure_rate: 0.5,
                window: Duration::from_secs(10),
                minimum_calls: 4,
                open_for: Duration::from_millis(200),
            },
            ..CallPolicy::default()
        }
    }

    fn guarded(policy: CallPolicy) -> (Guarded<u32>, prometheus::Registry) {
        let registry = prometheus::Registry::new();
        let metrics = ClientMetrics::register(&registry).unwrap();
        (Guarded::new("peer", policy, &metrics).unwrap(), registry)
    }

    fn value(registry: &prometheus::Registry, name: &str, label: &str) -> f64 {
        registry
            .gather()
            .iter()
            .filter(|family| family.name() == name)
            .flat_map(|family| family.get_metric().iter())
            .filter(|metric| {
                label.is_empty() || metric.get_label().iter().any(|l| l.value() == label)
            })
            .map(|metric| metric.get_gauge().get_value() + metric.get_counter().get_value())
            .sum()
    }

    /// An attempt that fails with `code` the first `failures` times, then answers 7.
    fn flaky(
        attempts: &Arc<AtomicU32>,
        failures: u32,
        code: Code,
    ) -> impl FnMut(Duration) -> BoxFuture<'static, Result<u32, Status>> {
        let attempts = Arc::clone(attempts);
        move |_| {
            let attempts = Arc::clone(&attempts);
            // Counted when the breaker lets it run, not when it is made.
            Box::pin(async move {
                if attempts.fetch_add(1, Ordering::SeqCst) < failures {
                    Err(Status::new(code, "down"))
                } else {
                    Ok(7)
                }
            })
        }
    }

    #[tokio::test]
    async fn transient_failures_are_retried_until_an_answer() {
        let (guarded, registry) = guarded(policy());
        let attempts = Arc::new(AtomicU32::new(0));
        let answer = guarded.call(flaky(&attempts, 2, Code::Unavailable)).await;
        assert_eq!(answer.unwrap(), 7);
        assert_eq!(attempts.load(Ordering::SeqCst), 3);
        assert_eq!(value(&registry, "client_retries_total", ""), 2.0);
    }

    #[tokio::test]
    async fn an_error_answer_is_returned_at_once_and_is_not_a_failure() {
        let (guarded, _) = guarded(policy());
        let attempts = Arc::new(AtomicU32::new(0));
        for _ in 0..10 {
            let answer = guarded.call(flaky(&attempts, 100, Code::NotFound)).await;
            assert!(
                matches!(answer, Err(CallError::Answered { ref status, .. }) if status.code() == Code::NotFound)
            );
        }
        assert_eq!(attempts.load(Ordering::SeqCst), 10, "not retried");
        // The breaker stayed closed: a healthy answer gets through.
        let answer = guarded.call(flaky(&attempts, 0, Code::NotFound)).await;
        assert_eq!(answer.unwrap(), 7);
    }

    #[tokio::test]
    async fn retries_stop_at_the_limit() {
        let (guarded, _) = guarded(CallPolicy {
            retries: 1,
            ..policy()
        });
        let attempts = Arc::new(AtomicU32::new(0));
        let answer = guarded.call(flaky(&attempts, 100, Code::Unavailable)).await;
        assert!(matches!(answer, Err(CallError::Unavailable { .. })));
        assert_eq!(attempts.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn an_empty_budget_allows_no_retry() {
        let (guarded, _) = guarded(CallPolicy {
            retry_ratio: 0.0,
            min_retries_per_second: 0,
            ..policy()
        });
        let attempts = Arc::new(AtomicU32::new(0));
        let answer = guarded.call(flaky(&attempts, 100, Code::Unavailable)).await;
        assert!(
            matches!(answer, Err(CallError::Unavailable { ref reason, .. }) if reason.contains("budget"))
        );
        assert_eq!(attempts.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_hanging_service_is_given_up_on_at_the_deadline() {
        let (guarded, registry) = guarded(CallPolicy {
            retries: 10,
            ..policy()
        });
        let started = std::time::Instant::now();
        let answer = guarded
            .call(|_| futures::future::pending::<Result<u32, Status>>())
            .await;
        assert!(matches!(answer, Err(CallError::Unavailable { .. })));
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(300),
            "gave up early: {took:?}"
        );
        assert!(
            took < Duration::from_secs(3),
            "the deadline did not hold: {took:?}"
        );
        assert_eq!(value(&registry, "client_calls_total", "timeout"), 1.0);
    }

    #[tokio::test]
    async fn the_circuit_opens_after_failures_and_closes_after_a_good_probe() {
        let (guarded, registry) = guarded(CallPolicy {
            retries: 0,
            ..policy()
        });
        let attempts = Arc::new(AtomicU32::new(0));
        for _ in 0..4 {
            let answer = guarded.call(flaky(&attempts, 100, Code::Unavailable)).await;
            assert!(matches!(answer, Err(CallError::Unavailable { .. })));
        }
        assert_eq!(
            value(&registry, "client_circuit_state", "peer"),
            1.0,
            "open"
        );

        // Open: refused without an attempt.
        let before = attempts.load(Ordering::SeqCst);
        let answer = guarded.call(flaky(&attempts, 0, Code::Unavailable)).await;
        assert!(
            matches!(answer, Err(CallError::Unavailable { ref reason, .. }) if reason.contains("open"))
        );
        assert_eq!(attempts.load(Ordering::SeqCst), before);

        // After the cool-down one probe goes through; it succeeds, so the circuit closes.
        tokio::time::sleep(Duration::from_millis(250)).await;
        let healthy = Arc::new(AtomicU32::new(0));
        assert_eq!(
            guarded
                .call(flaky(&healthy, 0, Code::Unavailable))
                .await
                .unwrap(),
            7
        );
        assert_eq!(
            value(&registry, "client_circuit_state", "peer"),
            0.0,
            "closed"
        );
        assert_eq!(
            value(&registry, "client_circuit_transitions_total", "half_open"),
            1.0
        );
    }

    #[tokio::test]
    async fn a_failed_probe_opens_the_circuit_again() {
        let (guarded, registry) = guarded(CallPolicy {
            retries: 0,
            ..policy()
        });
        let attempts = Arc::new(AtomicU32::new(0));
        for _ in 0..4 {
            let _ = guarded.call(flaky(&attempts, 100, Code::Unavailable)).await;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        let _ = guarded.call(flaky(&attempts, 100, Code::Unavailable)).await;
        assert_eq!(
            value(&registry, "client_circuit_state", "peer"),
            1.0,
            "open again"
        );
        assert_eq!(
            value(&registry, "client_circuit_transitions_total", "open"),
            2.0
        );
    }
}
