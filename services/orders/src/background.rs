//! Work the service does on its own: the janitor.

use std::time::Duration;

use tessera_runtime::Task;
use tokio_util::sync::CancellationToken;

use crate::repository::OrderRepository;

/// How often the janitor runs.
const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// Most rows one delete removes, so a backlog never becomes one long lock.
const BATCH: u32 = 1000;

/// The lifelong task that deletes expired idempotency keys and old deletion records.
pub fn janitor<R: OrderRepository>(repository: R, stop: CancellationToken) -> Task {
    Task::lifelong("janitor", async move {
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(SWEEP_EVERY) => {}
            }
            // Whole batches mean more is waiting: go on at once, until a short one.
            loop {
                match repository.sweep(BATCH).await {
                    Ok(removed) if removed >= u64::from(BATCH) && !stop.is_cancelled() => {}
                    Ok(removed) => {
                        if removed > 0 {
                            tracing::debug!(removed, "swept expired idempotency keys");
                        }
                        break;
                    }
                    Err(error) => {
                        tracing::warn!(%error, "cannot sweep expired idempotency keys; will retry");
                        break;
                    }
                }
            }
        }
    })
}
