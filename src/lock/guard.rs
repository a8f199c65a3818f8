//! [`LockGuard`]: a held lock, its lost-lock signal and its release.

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::task::JoinHandle;
use tracing::Instrument;

use super::holding::Holding;
use super::keepalive::{keep_alive, watch_unexpiring};
use super::settings::Settings;
use super::take::Acquired;
use crate::backend::Changes;
use crate::error::Error;
use crate::info::LockInfo;
use crate::locker::Locker;
use crate::metrics;

/// A held lock. Dropping it releases the lock in the background (a program about to exit
/// waits for that with [`Lock::settle`](crate::Lock::settle)); [`release`](Self::release)
/// does it and says how it went.
///
/// While it lives, a task renews the lease every renew interval. If the lease cannot be
/// renewed before it ends, or another holder takes the lock over by force,
/// [`lost`](Self::lost) fires: from then on the critical section is no longer protected.
/// Pass [`token`](Self::token) to the resources the lock protects, so that they can refuse a
/// holder that lost the lock without knowing it (a fencing token).
///
/// # Examples
///
/// ```
/// use lockheed::{Lock, MemoryLocker};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), lockheed::Error> {
/// let guard = Lock::new("ledger", MemoryLocker::new()).acquire().await?;
/// let work = async {
///     // Write to the ledger, passing `guard.token()` along so it can refuse stale writers.
/// };
/// tokio::select! {
///     () = guard.lost() => return Err(lockheed::Error::Lost { lock: "ledger".into() }),
///     () = work => {}
/// }
/// guard.release().await
/// # }
/// ```
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct LockGuard<L: Locker> {
    shared: Arc<Holding<L>>,
    renewal: Option<JoinHandle<()>>,
    released: bool,
}

impl<L: Locker> fmt::Debug for LockGuard<L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockGuard")
            .field("lock", &self.shared.settings.name)
            .field("holder", &self.shared.settings.holder)
            .field("token", &self.shared.token)
            .field("lost", &self.shared.lost.is_cancelled())
            .finish_non_exhaustive()
    }
}

impl<L: Locker> LockGuard<L> {
    /// Starts holding what `acquired` took; `view` is the lock's feed when the process
    /// watches the lock already (the guard's writes start from it).
    pub(crate) fn start(
        settings: Settings,
        locker: L,
        acquired: Acquired<L::Version>,
        view: Option<Changes<L::Version>>,
    ) -> Self {
        tracing::debug!(token = acquired.token, reentry = acquired.reentry, expires = %acquired.expires, "lock taken");
        let forever = acquired.expires.is_forever();
        let shared = Arc::new(Holding::new(settings, locker, acquired, view));
        let span = tracing::info_span!(
            "lockheed.renew",
            lock = %shared.settings.name,
            holder = %shared.settings.holder,
            token = shared.token,
        );
        let (name, lost) = (&shared.settings.name, &shared.lost);
        let renewal = if forever {
            let task = metrics::holding(name, lost, watch_unexpiring(Arc::clone(&shared)));
            tokio::spawn(task.instrument(span))
        } else {
            let task = metrics::holding(name, lost, keep_alive(Arc::clone(&shared)));
            tokio::spawn(task.instrument(span))
        };
        Self {
            shared,
            renewal: Some(renewal),
            released: false,
        }
    }

    /// A reader of the moment this guard stops trusting its lease (it moves with each
    /// renewal), that outlives the guard: what a leader election's health check looks at.
    pub(crate) fn give_up_reader(&self) -> impl Fn() -> DateTime<Utc> + Send + Sync + 'static {
        let shared = Arc::clone(&self.shared);
        move || shared.give_up_at()
    }

    /// The fencing token of this acquisition: it strictly increases with every acquisition of
    /// the lock by anyone, so a resource that remembers the largest token it has seen can
    /// refuse a holder that lost the lock. The counter is kept with the lock: deleting the
    /// lock's object (its ConfigMap) starts it again at 1 (see
    /// [`KubeLocker`](crate::KubeLocker)).
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed::{Lock, MemoryLocker};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), lockheed::Error> {
    /// let locker = MemoryLocker::new();
    /// let first = Lock::new("ledger", locker.clone()).try_acquire().await?;
    /// let t1 = first.token();
    /// first.release().await?;
    /// let second = Lock::new("ledger", locker).try_acquire().await?;
    /// assert!(second.token() > t1); // a write carrying t1 can now be refused
    /// # second.release().await?;
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn token(&self) -> u64 {
        self.shared.token
    }

    /// The most holders the lock admits at once, as stored when this guard took it: 1 for a
    /// mutex, the capacity of a semaphore (the stored one, which wins over the caller's
    /// [`with_max_holders`](crate::Lock::with_max_holders)), `None` for a read/write lock.
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed::{Lock, MemoryLocker};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), lockheed::Error> {
    /// let locker = MemoryLocker::new();
    /// let a = Lock::new("gpu", locker.clone()).with_max_holders(4).try_acquire().await?;
    /// let b = Lock::new("gpu", locker).with_max_holders(8).try_acquire().await?;
    /// assert_eq!(b.max_holders(), Some(4)); // the capacity stored first wins
    /// # drop((a, b));
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn max_holders(&self) -> Option<u32> {
        self.shared.taken.max_holders
    }

    /// The lock's name.
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed::{Lock, MemoryLocker};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), lockheed::Error> {
    /// let guard = Lock::new("ledger", MemoryLocker::new()).try_acquire().await?;
    /// assert_eq!(guard.name(), "ledger");
    /// # guard.release().await?;
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn name(&self) -> &str {
        &self.shared.settings.name
    }

    /// The holder identity.
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed::{Lock, MemoryLocker};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), lockheed::Error> {
    /// let guard = Lock::new("ledger", MemoryLocker::new()).with_holder("worker-1").try_acquire().await?;
    /// assert_eq!(guard.holder(), "worker-1");
    /// # guard.release().await?;
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn holder(&self) -> &str {
        &self.shared.settings.holder
    }

    /// When the current lease ends (`None`: never), as last written.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads (it waits for a renewal in flight to finish).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use lockheed::{Lock, MemoryLocker};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), lockheed::Error> {
    /// let guard = Lock::new("ledger", MemoryLocker::new())
    ///     .with_duration(Duration::from_secs(30))
    ///     .try_acquire()
    ///     .await?;
    /// let left = guard.expires().await.unwrap() - chrono::Utc::now();
    /// assert!(left <= chrono::Duration::seconds(30));
    /// # guard.release().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn expires(&self) -> Option<DateTime<Utc>> {
        let expires = self.shared.held.lock().await.expires;
        (!expires.is_forever()).then(|| expires.to_utc())
    }

    /// Resolves when the lock can no longer be trusted: its lease could not be renewed before
    /// it ended (the guard gives up a tenth of the duration early, so that this fires before
    /// another holder can take the lock), or another holder took it over by force. It never
    /// resolves for a guard that keeps its lock.
    ///
    /// A lease without expiry (zero duration) is never renewed; the guard watches the lock
    /// instead (through the backend's change feed, the watch that waiters share; without one
    /// it reads the lock every 10 s) and `lost` fires when the lease is taken over or removed
    /// by an operator ([`Locker::evict`](crate::Locker::evict)).
    ///
    /// The future is `Send`, `Sync` and `'static`, and holds no borrow of the guard: move it
    /// into a task of the critical section (one call per task), or turn it into the
    /// cancellation signal your tasks already use.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only waits.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use lockheed::{Condition, Lock, MemoryLocker};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), lockheed::Error> {
    /// let locker = MemoryLocker::new().with_clock(std::sync::Arc::new(lockheed::clock::TokioClock::new()));
    /// let guard = Lock::new("ledger", locker.clone()).with_tags(["preemptible"]).acquire().await?;
    /// // Someone takes the lock over by force...
    /// let _other = Lock::new("ledger", locker)
    ///     .with_force(Condition::tags_contain("preemptible"))
    ///     .try_acquire()
    ///     .await?;
    /// // ...and the critical section learns it at the guard's next renewal (10 s by default).
    /// tokio::select! {
    ///     () = guard.lost() => println!("lost the lock: stop writing"),
    ///     () = tokio::time::sleep(Duration::from_secs(60)) => unreachable!(),
    /// }
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// A task of the critical section takes its own:
    ///
    /// ```
    /// use lockheed::{Lock, MemoryLocker};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), lockheed::Error> {
    /// let guard = Lock::new("ledger", MemoryLocker::new()).try_acquire().await?;
    /// let lost = guard.lost();
    /// let worker = tokio::spawn(async move {
    ///     tokio::select! {
    ///         () = lost => "stopped: the lock was lost",
    ///         () = async { /* work */ } => "done",
    ///     }
    /// });
    /// assert_eq!(worker.await.unwrap(), "done");
    /// guard.release().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn lost(&self) -> impl Future<Output = ()> + Send + Sync + 'static + use<L> {
        self.shared.lost.clone().cancelled_owned()
    }

    /// Whether the lock can no longer be trusted: [`lost`](Self::lost) has fired, or the
    /// wall clock is past the moment this guard gives up its lease. The second check matters
    /// after the process was suspended (a paused VM, a laptop lid): timers may not have caught
    /// up yet, and a lease that ended during the pause must not be trusted. It then fires
    /// `lost` too.
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed::{Lock, MemoryLocker};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), lockheed::Error> {
    /// let guard = Lock::new("ledger", MemoryLocker::new()).try_acquire().await?;
    /// for batch in 0..3 {
    ///     if guard.is_lost() {
    ///         break; // check before each step that must not run without the lock
    ///     }
    ///     # let _ = batch;
    /// }
    /// # guard.release().await?;
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn is_lost(&self) -> bool {
        if self.shared.lost.is_cancelled() {
            return true;
        }
        if self.shared.past_give_up() {
            self.shared
                .lose("the lease ended before it could be renewed");
            return true;
        }
        false
    }

    /// The lock as this guard took it: its holders (this one among them), capacity, tags and
    /// fencing token at that moment. It is not updated afterwards:
    /// [`Locker::get`](crate::Locker::get) reads the lock as it is now.
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed::{Lock, MemoryLocker};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), lockheed::Error> {
    /// let locker = MemoryLocker::new();
    /// let a = Lock::new("pool", locker.clone()).with_holder("a").with_max_holders(3).try_acquire().await?;
    /// let b = Lock::new("pool", locker).with_holder("b").with_max_holders(3).try_acquire().await?;
    /// let taken = b.acquired();
    /// assert_eq!(format!("{}/{}", taken.holders.len(), taken.max_holders.unwrap()), "2/3");
    /// # drop((a, b));
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn acquired(&self) -> &LockInfo {
        &self.shared.taken
    }

    /// Whether this acquisition was a re-entry: this holder already held the lock, and this
    /// guard's lease replaced its earlier one, with a new token (see
    /// [`Lock::try_acquire`](crate::Lock::try_acquire), its re-entry section).
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed::{Lock, MemoryLocker};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), lockheed::Error> {
    /// let lock = Lock::new("pool", MemoryLocker::new()).with_holder("job-7");
    /// let first = lock.try_acquire().await?;
    /// let again = lock.try_acquire().await?; // the same holder: a re-entry
    /// assert!(!first.is_reentry() && again.is_reentry());
    /// # drop(first); again.release().await?;
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn is_reentry(&self) -> bool {
        self.shared.reentry
    }

    /// Stops renewing and releases the lock: the lease is removed and the lock's tags updated,
    /// so a waiter can take it at once.
    ///
    /// # Errors
    ///
    /// [`Error::Lost`] when the lease was already gone (taken over by force, or expired and
    /// taken by another holder): there was nothing to release. The backend's errors; the
    /// lease then expires by itself. A transient failure (a 5xx, a lost connection, a 429) is
    /// first tried again, with backoff (from 50 ms, doubling up to 1 s, or as a 429 asks),
    /// until the lease has ended for every contender (its end and the
    /// [skew allowance](crate::Lock::with_clock_skew_allowance); 30 s for a lease without
    /// expiry): a release left undone keeps every waiter out until then, so against a server
    /// that keeps failing this returns only then. A lease found gone after such a failure was
    /// most likely removed by the write that failed, and counts as released.
    ///
    /// # Cancel safety
    ///
    /// If the future is dropped before it completes, the release may or may not have been
    /// written; renewal has stopped either way, so the lease ends by itself. Wrap it in a
    /// timeout to give up sooner on a server that keeps failing.
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed::{Error, Lock, MemoryLocker};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), lockheed::Error> {
    /// let locker = MemoryLocker::new();
    /// let guard = Lock::new("ledger", locker.clone()).try_acquire().await?;
    /// match guard.release().await {
    ///     Ok(()) => {}
    ///     Err(Error::Lost { .. }) => eprintln!("someone had taken it over: nothing to release"),
    ///     Err(err) => eprintln!("release failed ({err}); the lease ends by itself"),
    /// }
    /// assert!(Lock::new("ledger", locker).try_acquire().await.is_ok());
    /// # Ok(())
    /// # }
    /// ```
    pub async fn release(mut self) -> Result<(), Error> {
        self.released = true;
        self.shared.stop.cancel();
        if let Some(renewal) = self.renewal.take() {
            // It stops at its next await (a renewal in flight is abandoned: its write either
            // happened, and the release below sees it, or did not).
            let _ = renewal.await;
        }
        let span = tracing::info_span!(
            "lockheed.release",
            lock = %self.shared.settings.name,
            holder = %self.shared.settings.holder,
        );
        self.shared.release().instrument(span).await
    }

    /// Stops renewing and leaves the lease to expire by itself, without releasing it.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use lockheed::{Lock, Locker, MemoryLocker};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), lockheed::Error> {
    /// let locker = MemoryLocker::new();
    /// // Hold the lock beyond this process, as kube-lock does: the lease is left as it is.
    /// Lock::new("maintenance", locker.clone())
    ///     .with_duration(Duration::ZERO)
    ///     .try_acquire()
    ///     .await?
    ///     .forget();
    /// assert!(locker.get("maintenance").await?.unwrap().is_held());
    /// # Ok(())
    /// # }
    /// ```
    pub fn forget(mut self) {
        self.released = true;
        self.shared.stop.cancel();
    }
}

impl<L: Locker> Drop for LockGuard<L> {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        self.shared.stop.cancel();
        let shared = Arc::clone(&self.shared);
        let span = tracing::info_span!(
            "lockheed.release",
            lock = %shared.settings.name,
            holder = %shared.settings.holder,
        );
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let background = shared.settings.background.clone();
            background.spawn(
                &runtime,
                async move {
                    if let Err(err) = shared.release().await {
                        tracing::warn!(error = %err, "releasing a dropped lock guard failed; the lease ends by itself");
                    }
                }
                .instrument(span),
            );
        } else {
            let _entered = span.enter();
            tracing::warn!("lock guard dropped outside a Tokio runtime; the lease ends by itself");
        }
    }
}
