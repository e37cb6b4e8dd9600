//! Delays between attempts to reach something that is down.

use std::time::Duration;

use rand::Rng;

/// Exponential backoff with full jitter: a random delay up to `min * 2^failures`, capped at
/// `max`, so replicas that lost a dependency together do not come back in lockstep.
pub fn backoff(failures: u32, min: Duration, max: Duration) -> Duration {
    let ceiling = min
        .saturating_mul(2u32.saturating_pow(failures.min(16)))
        .min(max);
    let floor = min.min(ceiling);
    rand::rng().random_range(floor..=ceiling)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let min = Duration::from_millis(100);
        let max = Duration::from_secs(5);
        for failures in 0..40 {
            let delay = backoff(failures, min, max);
            assert!(delay >= min && delay <= max, "{failures}: {delay:?}");
            assert!(
                delay <= min * 2u32.pow(failures.min(6)),
                "{failures}: {delay:?}"
            );
        }
    }
}
