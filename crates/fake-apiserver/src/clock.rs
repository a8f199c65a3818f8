//! The wall clock the server stamps objects with, injectable by tests.

use std::fmt::Debug;

use chrono::{DateTime, Utc};

/// A source of wall-clock time for `creationTimestamp`, `managedFields` times and the commit
/// log. Timers (latency, watch timeouts, bookmarks, partitions) run on Tokio's clock instead, so
/// a paused Tokio clock controls those.
///
/// Implement it to share one clock between the server and the code under test (lockheed's
/// clocks implement it when its `testing` feature is on).
///
/// # Examples
///
/// ```
/// use chrono::{DateTime, Utc};
/// use lockheed_fake_apiserver::Clock;
///
/// /// A clock stopped at one instant.
/// #[derive(Debug)]
/// struct Frozen(DateTime<Utc>);
///
/// impl Clock for Frozen {
///     fn now(&self) -> DateTime<Utc> {
///         self.0
///     }
/// }
/// ```
pub trait Clock: Debug + Send + Sync {
    /// The current time.
    fn now(&self) -> DateTime<Utc>;
}

/// The machine's clock ([`Utc::now`]), the default.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}
