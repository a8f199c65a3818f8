//! Waiting between retries: exponential backoff with jitter (`backon`'s), honouring
//! `Retry-After`, and the random spread that keeps waiters from all writing at once.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

use crate::error::Error;

/// Exponential backoff from `initial` up to `max`, each delay jittered within
/// `[step / 2, step)` so that retries spread out but never come back at once.
#[derive(Debug)]
pub(crate) struct Backoff {
    builder: ExponentialBuilder,
    steps: ExponentialBackoff,
    max: Duration,
}

impl Backoff {
    pub(crate) fn new(initial: Duration, max: Duration) -> Self {
        // backon adds a random part of the step to the step: start and cap at half.
        let builder = ExponentialBuilder::default()
            .with_min_delay(initial / 2)
            .with_max_delay(max / 2)
            .with_jitter()
            .without_max_times();
        Self {
            builder,
            steps: builder.build(),
            max,
        }
    }

    /// The next delay of the backoff.
    pub(crate) fn next(&mut self) -> Duration {
        // Without a limit on attempts, the steps never run out.
        self.steps.next().unwrap_or(self.max)
    }

    /// The wait before retrying after `err`: the server's `Retry-After` when it gave one,
    /// otherwise the next delay of the backoff.
    pub(crate) fn after(&mut self, err: &Error) -> Duration {
        err.retry_after().unwrap_or_else(|| self.next())
    }

    /// Back to the first step, after a success.
    pub(crate) fn reset(&mut self) {
        self.steps = self.builder.build();
    }
}

/// A random pause in `0..=max`, to spread the writes of waiters woken by the same change.
pub(crate) fn spread(max: Duration) -> Duration {
    let nanos = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(fastrand::u64(0..=nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transient() -> Error {
        Error::Contended {
            lock: "x".into(),
            attempts: 1,
        }
    }

    #[test]
    fn grows_to_the_cap_with_jitter_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let delays: Vec<_> = (0..8).map(|_| b.after(&transient())).collect();
        assert!(delays[0] >= Duration::from_millis(50) && delays[0] <= Duration::from_millis(100));
        assert!(delays[3] >= Duration::from_millis(400) && delays[3] <= Duration::from_millis(800));
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(2)));
        assert!(delays[7] >= Duration::from_secs(1));
        b.reset();
        assert!(b.after(&transient()) <= Duration::from_millis(100));
    }

    #[test]
    fn retry_after_wins() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let status: kube::core::Status = serde_json::from_value(serde_json::json!({
            "status": "Failure", "message": "slow down", "reason": "TooManyRequests",
            "code": 429, "details": { "retryAfterSeconds": 3 },
        }))
        .unwrap();
        let err = Error::Kube {
            object: "default/x".into(),
            source: kube::Error::Api(Box::new(status)),
        };
        assert_eq!(b.after(&err), Duration::from_secs(3));
    }

    #[test]
    fn spread_stays_in_range() {
        assert!((0..1000).all(|_| spread(Duration::from_millis(5)) <= Duration::from_millis(5)));
        assert_eq!(spread(Duration::ZERO), Duration::ZERO);
    }
}
