//! Waiting between retries: exponential backoff with jitter, honouring `Retry-After`, and the
//! random spread that keeps waiters from all writing at once.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use crate::error::Error;

/// A small random source for jitter, seeded from the process's hash randomness.
#[derive(Debug, Clone)]
pub(crate) struct Jitter(u64);

impl Jitter {
    pub(crate) fn new() -> Self {
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u64(0x6c6f_636b_6865_6564);
        Self(hasher.finish() | 1)
    }

    /// Uniform in `0..=max`.
    pub(crate) fn upto(&mut self, max: Duration) -> Duration {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        let nanos = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(if nanos == 0 {
            0
        } else {
            x % nanos.saturating_add(1)
        })
    }
}

/// Exponential backoff with "equal jitter": each delay is half the current step plus a random
/// part of the other half, so retries spread out but never come back at once.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    initial: Duration,
    step: Duration,
    max: Duration,
    jitter: Jitter,
}

impl Backoff {
    pub(crate) fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            step: initial,
            max,
            jitter: Jitter::new(),
        }
    }

    /// The wait before retrying after `err`: the server's `Retry-After` when it gave one,
    /// otherwise the next step of the backoff.
    pub(crate) fn after(&mut self, err: &Error) -> Duration {
        if let Some(asked) = err.retry_after() {
            return asked;
        }
        let half = self.step / 2;
        let delay = half + self.jitter.upto(half);
        self.step = (self.step * 2).min(self.max);
        delay
    }

    /// Back to the first step, after a success.
    pub(crate) fn reset(&mut self) {
        self.step = self.initial;
    }
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
    fn jitter_stays_in_range() {
        let mut j = Jitter::new();
        assert!((0..1000).all(|_| j.upto(Duration::from_millis(5)) <= Duration::from_millis(5)));
        assert_eq!(j.upto(Duration::ZERO), Duration::ZERO);
    }
}
