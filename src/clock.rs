//! Wall-clock time, injectable so that expiry and clock skew are tested without sleeping.
//!
//! Leases store absolute times (`expires`), so the crate needs the wall clock, not only
//! [`tokio::time::Instant`]. Everything that reads the time takes an `Arc<dyn Clock>`:
//! [`SystemClock`] in production, [`ManualClock`] when a test wants to set the time by hand
//! (for example to put one contender's clock ahead of another's), and [`TokioClock`] when a
//! test runs on Tokio's paused clock and wants wall time to move with it.

use std::fmt::Debug;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};

/// A source of wall-clock time.
pub trait Clock: Debug + Send + Sync {
    /// The current time.
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed::clock::{Clock, SystemClock};
    ///
    /// let before = chrono::Utc::now();
    /// assert!(SystemClock.now() >= before);
    /// ```
    fn now(&self) -> DateTime<Utc>;
}

/// The machine's clock ([`Utc::now`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that only moves when told to. Clones share the same time.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use lockheed::clock::{Clock, ManualClock};
///
/// let clock = ManualClock::new("2026-11-22T10:00:00Z".parse().unwrap());
/// clock.advance(Duration::from_secs(30));
/// assert_eq!(clock.now().to_rfc3339(), "2026-11-22T10:00:30+00:00");
/// ```
#[derive(Debug, Clone)]
pub struct ManualClock {
    now: Arc<Mutex<DateTime<Utc>>>,
}

impl ManualClock {
    /// A clock stopped at `start`.
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed::clock::{Clock, ManualClock};
    ///
    /// let clock = ManualClock::new(chrono::DateTime::UNIX_EPOCH);
    /// assert_eq!(clock.now().timestamp(), 0);
    /// ```
    #[must_use]
    pub fn new(start: DateTime<Utc>) -> Self {
        Self {
            now: Arc::new(Mutex::new(start)),
        }
    }

    /// Moves the clock forward by `by`.
    ///
    /// # Panics
    ///
    /// When the result is past the end of [`DateTime<Utc>`]'s range (year 262143).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use lockheed::clock::{Clock, ManualClock};
    ///
    /// let clock = ManualClock::new(chrono::DateTime::UNIX_EPOCH);
    /// let other = clock.clone(); // clones share the time
    /// clock.advance(Duration::from_secs(90));
    /// assert_eq!(other.now().timestamp(), 90);
    /// ```
    pub fn advance(&self, by: Duration) {
        let by = chrono::Duration::from_std(by).expect("duration within chrono's range");
        let mut now = self.now.lock().unwrap_or_else(PoisonError::into_inner);
        *now = now
            .checked_add_signed(by)
            .expect("time within chrono's range");
    }

    /// Sets the clock to `to` (which may be in the past: real clocks are stepped backwards too).
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed::clock::{Clock, ManualClock};
    ///
    /// let clock = ManualClock::new("2026-11-22T10:00:00Z".parse().unwrap());
    /// clock.set("2026-11-22T09:59:00Z".parse().unwrap()); // stepped back a minute
    /// assert_eq!(clock.now().to_rfc3339(), "2026-11-22T09:59:00+00:00");
    /// ```
    pub fn set(&self, to: DateTime<Utc>) {
        *self.now.lock().unwrap_or_else(PoisonError::into_inner) = to;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.now.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Wall time that follows Tokio's clock: the system time when it was created, plus the
/// [`tokio::time::Instant`] time elapsed since. Under `#[tokio::test(start_paused = true)]`,
/// `tokio::time::advance` and auto-advance move it too.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    origin_wall: DateTime<Utc>,
    origin: tokio::time::Instant,
}

impl TokioClock {
    /// Starts at the current system time.
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed::clock::{Clock, TokioClock};
    ///
    /// let clock = TokioClock::new();
    /// let drift = clock.now() - chrono::Utc::now();
    /// assert!(drift.num_seconds().abs() < 5);
    /// ```
    #[must_use]
    pub fn new() -> Self {
        Self::starting_at(Utc::now())
    }

    /// Starts at `wall`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use lockheed::clock::{Clock, TokioClock};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let clock = TokioClock::starting_at("2026-11-22T10:00:00Z".parse().unwrap());
    /// tokio::time::sleep(Duration::from_secs(90)).await; // instant: Tokio's clock is paused
    /// assert_eq!(clock.now().to_rfc3339(), "2026-11-22T10:01:30+00:00");
    /// # }
    /// ```
    #[must_use]
    pub fn starting_at(wall: DateTime<Utc>) -> Self {
        Self {
            origin_wall: wall,
            origin: tokio::time::Instant::now(),
        }
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for TokioClock {
    fn now(&self) -> DateTime<Utc> {
        let elapsed =
            chrono::Duration::from_std(self.origin.elapsed()).unwrap_or(chrono::Duration::MAX);
        self.origin_wall
            .checked_add_signed(elapsed)
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }
}

/// lockheed's clocks drive the fake API server too, so that one clock stamps the server's
/// objects and judges the leases under test.
#[cfg(feature = "testing")]
mod fake_server {
    use chrono::{DateTime, Utc};

    macro_rules! server_clock {
        ($($clock:ty),*) => {$(
            impl lockheed_fake_apiserver::Clock for $clock {
                fn now(&self) -> DateTime<Utc> {
                    super::Clock::now(self)
                }
            }
        )*};
    }

    server_clock!(super::SystemClock, super::ManualClock, super::TokioClock);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_is_shared_by_clones() {
        let a = ManualClock::new(DateTime::UNIX_EPOCH);
        let b = a.clone();
        a.advance(Duration::from_secs(5));
        assert_eq!(b.now().timestamp(), 5);
        b.set(DateTime::UNIX_EPOCH);
        assert_eq!(a.now().timestamp(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn tokio_clock_follows_paused_time() {
        let clock = TokioClock::starting_at(DateTime::UNIX_EPOCH);
        tokio::time::advance(Duration::from_secs(90)).await;
        assert_eq!(clock.now().timestamp(), 90);
    }
}
