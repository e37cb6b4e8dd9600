//! What is logged: the log filter's directives, less spans of store calls.

use tracing::Metadata;
use tracing_subscriber::filter::Targets;

use crate::trace_context::is_data_store_call;

/// What the log filter lets through, but spans of store calls: those are traced, not
/// logged, and a line logged inside one names the enclosing request's span.
#[derive(Debug, Clone)]
pub(crate) struct Logged(Targets);

impl Logged {
    /// What `targets` lets through.
    pub(crate) fn new(targets: Targets) -> Self {
        Self(targets)
    }

    /// Whether `metadata`'s spans or events are logged.
    pub(crate) fn logs(&self, metadata: &Metadata<'_>) -> bool {
        self.0.would_enable(metadata.target(), metadata.level()) && !is_data_store_call(metadata)
    }
}
