//! A service's background work, started, watched and joined by the runtime.
//!
//! A task that ends when it should not (a lifelong one returning before shutdown, any one
//! failing or panicking) is never silently gone: it is logged, counted in
//! `service_task_failures_total{task}`, fails readiness, and stops the service with an error,
//! so the orchestrator restarts it.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

use futures::FutureExt;
use futures::future::BoxFuture;
use prometheus::{IntCounterVec, Opts, Registry};
use tessera_errors::BoxError;
use tessera_observability::{Criticality, HealthCheck};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// How a task is meant to end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// Only when the service shuts down (it watches [`crate::Context::shutdown`]).
    AtShutdown,
    /// When its work is done (a bootstrap).
    WhenDone,
}

/// Background work of a service, named for logs and metrics.
pub struct Task {
    name: &'static str,
    ending: Ending,
    work: BoxFuture<'static, Result<(), BoxError>>,
}

impl Task {
    /// Work that runs for the life of the service (a janitor, a consumer): it returns once
    /// [`crate::Context::shutdown`] is cancelled, and returning before that is a failure.
    pub fn lifelong(name: &'static str, work: impl Future<Output = ()> + Send + 'static) -> Self {
        Self {
            name,
            ending: Ending::AtShutdown,
            work: work.map(Ok).boxed(),
        }
    }

    /// Work that runs to its end (a bootstrap that retries until it succeeds or the service
    /// stops); an error is a failure.
    pub fn once(
        name: &'static str,
        work: impl Future<Output = Result<(), BoxError>> + Send + 'static,
    ) -> Self {
        Self {
            name,
            ending: Ending::WhenDone,
            work: work.boxed(),
        }
    }
}

/// A task that ended when it should not have.
#[derive(Debug, thiserror::Error)]
#[error("background task {task} failed: {reason}")]
pub struct TaskFailure {
    /// The task's name.
    pub task: &'static str,
    /// What happened.
    pub reason: String,
}

/// The running tasks of a service.
pub(crate) struct Supervisor {
    running: JoinSet<Ended>,
    /// Names by task id, for a task whose end cannot be observed (the runtime aborted it).
    names: HashMap<tokio::task::Id, &'static str>,
    failed: Arc<Mutex<Option<&'static str>>>,
    failures: IntCounterVec,
    shutdown: CancellationToken,
}

/// How a task ended, recorded the moment it did.
struct Ended {
    name: &'static str,
    ending: Ending,
    outcome: Outcome,
    /// Whether shutdown had begun when it ended: a lifelong task that returned earlier
    /// failed, however long it then waits to be joined.
    during_shutdown: bool,
}

enum Outcome {
    Returned(Result<(), BoxError>),
    Panicked(String),
    Vanished(String),
}

impl Supervisor {
    /// Registers `service_task_failures_total` in `registry`; lifelong tasks end after
    /// `shutdown` is cancelled.
    pub(crate) fn new(
        registry: &Registry,
        shutdown: CancellationToken,
    ) -> Result<Self, prometheus::Error> {
        let failures = IntCounterVec::new(
            Opts::new(
                "service_task_failures_total",
                "Background tasks that failed, panicked or ended before shutdown, by task.",
            ),
            &["task"],
        )?;
        registry.register(Box::new(failures.clone()))?;
        Ok(Self {
            running: JoinSet::new(),
            names: HashMap::new(),
            failed: Arc::default(),
            failures,
            shutdown,
        })
    }

    /// The readiness check that fails once a task has failed.
    pub(crate) fn health_check(&self) -> TasksCheck {
        TasksCheck(Arc::clone(&self.failed))
    }

    /// Starts `task`.
    pub(crate) fn start(&mut self, task: Task) {
        let Task { name, ending, work } = task;
        let shutdown = self.shutdown.clone();
        let handle = self.running.spawn(async move {
            // Caught here rather than from the JoinError, so the panic message is kept.
            let outcome = match std::panic::AssertUnwindSafe(work).catch_unwind().await {
                Ok(result) => Outcome::Returned(result),
                Err(panic) => Outcome::Panicked(panic_message(panic.as_ref())),
            };
            Ended {
                name,
                ending,
                outcome,
                during_shutdown: shutdown.is_cancelled(),
            }
        });
        self.names.insert(handle.id(), name);
        // Every task's series exists from the start, at 0, so an alert on its increase has
        // something to compare with.
        self.failures.with_label_values(&[name]);
    }

    /// Completes with the first failure; pending forever while every task is well.
    pub(crate) async fn first_failure(&mut self) -> TaskFailure {
        loop {
            let Some(joined) = self.running.join_next_with_id().await else {
                return std::future::pending().await;
            };
            if let Some(failure) = self.judge(joined) {
                return failure;
            }
        }
    }

    /// Waits for every task to end (after shutdown was cancelled); failures are still
    /// reported, the first one returned.
    pub(crate) async fn join(mut self) -> Option<TaskFailure> {
        let mut first = None;
        while let Some(joined) = self.running.join_next_with_id().await {
            if let Some(failure) = self.judge(joined) {
                first.get_or_insert(failure);
            }
        }
        first
    }

    fn judge(
        &self,
        joined: Result<(tokio::task::Id, Ended), tokio::task::JoinError>,
    ) -> Option<TaskFailure> {
        let ended = match joined {
            Ok((_, ended)) => ended,
            // Panics are caught inside the task, so only an abort (the runtime going away)
            // ends up here; it is a failure all the same.
            Err(error) => Ended {
                name: self.names.get(&error.id()).copied().unwrap_or("unknown"),
                ending: Ending::AtShutdown,
                outcome: Outcome::Vanished(error.to_string()),
                during_shutdown: false,
            },
        };
        let Ended {
            name,
            ending,
            outcome,
            during_shutdown,
        } = ended;
        let reason = match outcome {
            Outcome::Returned(Ok(())) if ending == Ending::WhenDone || during_shutdown => {
                return None;
            }
            Outcome::Returned(Ok(())) => "it ended before the service shut down".to_owned(),
            Outcome::Returned(Err(error)) => tessera_errors::error_chain(error.as_ref()),
            Outcome::Panicked(message) => format!("it panicked: {message}"),
            Outcome::Vanished(error) => format!("it vanished: {error}"),
        };
        tracing::error!(task = name, %reason, "background task failed");
        self.failures.with_label_values(&[name]).inc();
        self.failed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_or_insert(name);
        Some(TaskFailure { task: name, reason })
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_owned())
}

/// `tasks` in the readiness report: down once a background task has failed.
pub(crate) struct TasksCheck(Arc<Mutex<Option<&'static str>>>);

impl HealthCheck for TasksCheck {
    fn name(&self) -> &'static str {
        "tasks"
    }

    fn criticality(&self) -> Criticality {
        Criticality::Required
    }

    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        let failed = *self.0.lock().unwrap_or_else(PoisonError::into_inner);
        async move {
            match failed {
                None => Ok(()),
                Some(task) => Err(format!("background task {task} failed")),
            }
        }
        .boxed()
    }
}
