//! [`LockGuard`]: a held lock, its renewal, its lost-lock signal and its release.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tracing::Instrument;

use crate::background::Background;
use crate::backoff::Backoff;
use crate::clock::Clock;
use crate::error::Error;
use crate::feed::{Changes, Snapshot};
use crate::gotime::GoTime;
use crate::info::LockInfo;
use crate::lock::MAX_CAS_ATTEMPTS;
use crate::locker::{Locker, Written};
use crate::rules;
use crate::state::LockState;

/// What a guard keeps of its lock's settings.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) name: String,
    pub(crate) holder: String,
    pub(crate) duration: Duration,
    pub(crate) renew_interval: Option<Duration>,
    pub(crate) tags: Vec<String>,
    pub(crate) reset_tags: bool,
    /// Where a dropped guard's release runs, counted for [`Lock::settle`](crate::Lock::settle).
    pub(crate) background: Background,
}

/// The write that took the lock.
#[derive(Debug)]
pub(crate) struct Acquired<V> {
    pub(crate) version: V,
    pub(crate) state: LockState,
    pub(crate) token: u64,
    pub(crate) expires: GoTime,
    /// The holder already held the lock (a re-entry).
    pub(crate) renewed: bool,
}

/// The last state this holder wrote, and the version to compare against next.
struct Held<V> {
    version: V,
    state: LockState,
    expires: GoTime,
}

struct Shared<L: Locker> {
    settings: Settings,
    token: u64,
    /// The lock as this acquisition wrote it.
    taken: LockInfo,
    reentered: bool,
    locker: L,
    clock: Arc<dyn Clock>,
    held: Mutex<Held<L::Version>>,
    /// When this holder stops trusting its lease, in Unix milliseconds (`i64::MAX`: never);
    /// kept outside `held` so that `is_lost` can read it without waiting.
    give_up_ms: AtomicI64,
    /// Fires when the lock can no longer be trusted.
    lost: CancellationToken,
    /// Stops the renewal task.
    stop: CancellationToken,
}

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
    shared: Arc<Shared<L>>,
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
    pub(crate) fn start(settings: Settings, locker: L, acquired: Acquired<L::Version>) -> Self {
        let clock = locker.clock();
        let shared = Arc::new(Shared {
            token: acquired.token,
            taken: LockInfo::from_state(&settings.name, &acquired.state, clock.now()),
            reentered: acquired.renewed,
            give_up_ms: AtomicI64::new(give_up_ms(acquired.expires, settings.duration)),
            clock,
            locker,
            held: Mutex::new(Held {
                version: acquired.version,
                state: acquired.state,
                expires: acquired.expires,
            }),
            lost: CancellationToken::new(),
            stop: CancellationToken::new(),
            settings,
        });
        let span = tracing::info_span!(
            "lockheed.renew",
            lock = %shared.settings.name,
            holder = %shared.settings.holder,
            token = shared.token,
        );
        let renewal = if acquired.expires.is_forever() {
            tokio::spawn(watch_unexpiring(Arc::clone(&shared)).instrument(span))
        } else {
            tokio::spawn(keep_alive(Arc::clone(&shared)).instrument(span))
        };
        Self {
            shared,
            renewal: Some(renewal),
            released: false,
        }
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
    pub fn lost(&self) -> WaitForCancellationFutureOwned {
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
        let give_up = self.shared.give_up_ms.load(Ordering::Acquire);
        if give_up != i64::MAX && self.shared.clock.now().timestamp_millis() >= give_up {
            lose(&self.shared, "the lease ended before it could be renewed");
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

    /// Whether this holder already held the lock when this guard took it (a re-entry, which
    /// renewed its lease with a new token: see [`Lock::try_acquire`](crate::Lock::try_acquire)).
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
    /// let again = lock.try_acquire().await?; // the same holder: its lease is taken again
    /// assert!(!first.reentered() && again.reentered());
    /// # drop(first); again.release().await?;
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn reentered(&self) -> bool {
        self.shared.reentered
    }

    /// A token cancelled when the lock is lost, to hand to tasks of the critical section
    /// (cancelling it does not affect the guard).
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed::{Lock, MemoryLocker};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), lockheed::Error> {
    /// let guard = Lock::new("ledger", MemoryLocker::new()).try_acquire().await?;
    /// let cancel = guard.lost_token();
    /// let worker = tokio::spawn(async move {
    ///     tokio::select! {
    ///         () = cancel.cancelled() => "stopped: the lock was lost",
    ///         () = async { /* work */ } => "done",
    ///     }
    /// });
    /// assert_eq!(worker.await.unwrap(), "done");
    /// guard.release().await?;
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn lost_token(&self) -> CancellationToken {
        self.shared.lost.child_token()
    }

    /// Stops renewing and releases the lock: the lease is removed and the lock's tags updated,
    /// so a waiter can take it at once.
    ///
    /// # Errors
    ///
    /// [`Error::Lost`] when the lease was already gone (taken over by force, or expired and
    /// taken by another holder): there was nothing to release. The backend's errors; the
    /// lease then expires by itself.
    ///
    /// # Cancel safety
    ///
    /// If the future is dropped before it completes, the release may or may not have been
    /// written; renewal has stopped either way, so the lease ends by itself.
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
        release(&self.shared).instrument(span).await
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
                    if let Err(err) = release(&shared).await {
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

/// Removes this holder's lease, re-reading on conflicts.
async fn release<L: Locker>(shared: &Shared<L>) -> Result<(), Error> {
    let settings = &shared.settings;
    let mut held = shared.held.lock().await;
    for _ in 0..MAX_CAS_ATTEMPTS {
        let Some(next) = rules::release(
            &held.state,
            &settings.holder,
            shared.token,
            &settings.tags,
            settings.reset_tags,
        ) else {
            return Err(Error::Lost {
                lock: settings.name.clone(),
            });
        };
        match shared
            .locker
            .write(&settings.name, Some(&held.version), &next)
            .await?
        {
            Written::Stored(_) => {
                tracing::debug!("lock released");
                return Ok(());
            }
            Written::Conflict => match shared.locker.read(&settings.name).await? {
                Some(record) => {
                    held.version = record.version;
                    held.state = record.state;
                }
                // Deleted by someone: nothing is held any more.
                None => return Ok(()),
            },
        }
    }
    Err(Error::Contended {
        lock: settings.name.clone(),
        attempts: MAX_CAS_ATTEMPTS,
    })
}

/// Extends this holder's lease once: one write when nothing changed, a read and a write when
/// something did.
async fn renew<L: Locker>(shared: &Shared<L>) -> Result<(), Error> {
    let settings = &shared.settings;
    let mut held = shared.held.lock().await;
    for _ in 0..MAX_CAS_ATTEMPTS {
        let (next, expires) = rules::renew(
            &settings.name,
            &held.state,
            &settings.holder,
            shared.token,
            settings.duration,
            shared.clock.now(),
        )?;
        match shared
            .locker
            .write(&settings.name, Some(&held.version), &next)
            .await?
        {
            Written::Stored(version) => {
                *held = Held {
                    version,
                    state: next,
                    expires,
                };
                shared
                    .give_up_ms
                    .store(give_up_ms(expires, settings.duration), Ordering::Release);
                tracing::trace!(%expires, "lease renewed");
                return Ok(());
            }
            Written::Conflict => match shared.locker.read(&settings.name).await? {
                Some(record) => {
                    held.version = record.version;
                    held.state = record.state;
                }
                None => {
                    return Err(Error::Lost {
                        lock: settings.name.clone(),
                    });
                }
            },
        }
    }
    Err(Error::Contended {
        lock: settings.name.clone(),
        attempts: MAX_CAS_ATTEMPTS,
    })
}

/// The moment a holder stops trusting its lease that ends at `expires`, in Unix milliseconds:
/// a tenth of the duration before it ends, so that `lost` fires before another holder can take
/// the lock (`i64::MAX` for a lease without expiry).
fn give_up_ms(expires: GoTime, duration: Duration) -> i64 {
    if expires.is_forever() {
        return i64::MAX;
    }
    let margin = i64::try_from((duration / 10).as_millis()).unwrap_or(i64::MAX);
    expires.to_utc().timestamp_millis().saturating_sub(margin)
}

/// The moment this holder stops trusting its lease (see [`give_up_ms`]).
fn give_up_at<L: Locker>(shared: &Shared<L>) -> DateTime<Utc> {
    let ms = shared.give_up_ms.load(Ordering::Acquire);
    DateTime::from_timestamp_millis(ms).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

fn until(clock: &dyn Clock, at: DateTime<Utc>) -> Duration {
    (at - clock.now()).to_std().unwrap_or(Duration::ZERO)
}

/// Renews the lease every renew interval (retrying failures sooner) until stopped; fires
/// `lost` when the lease is taken over or cannot be renewed in time. Without a renew
/// interval, only fires `lost` when the lease ends.
async fn keep_alive<L: Locker>(shared: Arc<Shared<L>>) {
    let interval = shared.settings.renew_interval;
    // Failed renewals are retried sooner than the interval, backing off (with jitter, and
    // honouring Retry-After) so that an overloaded server is not hammered; the deadline
    // below bounds it all.
    let mut backoff = interval.map(|i| {
        Backoff::new(
            (i / 8).clamp(Duration::from_millis(10), Duration::from_millis(200)),
            i,
        )
    });
    let mut wait = interval;
    loop {
        let deadline = give_up_at(&shared);
        let give_up = tokio::time::sleep(until(shared.clock.as_ref(), deadline));
        tokio::pin!(give_up);
        let next = async {
            match wait {
                Some(wait) => tokio::time::sleep(wait).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            () = shared.stop.cancelled() => return,
            () = &mut give_up => return lose(&shared, "the lease could not be renewed before it ended"),
            () = next => {}
        }
        let outcome = tokio::select! {
            biased;
            () = shared.stop.cancelled() => return,
            () = &mut give_up => return lose(&shared, "the lease could not be renewed before it ended"),
            outcome = renew(&shared) => outcome,
        };
        match outcome {
            Ok(()) => {
                wait = interval;
                if let Some(backoff) = backoff.as_mut() {
                    backoff.reset();
                }
            }
            Err(Error::Lost { .. }) => {
                return lose(
                    &shared,
                    "the lease is gone: taken over, or expired and taken",
                );
            }
            Err(err) => {
                if err.is_transient() {
                    tracing::warn!(error = %err, "renewing the lease failed; retrying");
                } else {
                    // A 403 may be fixed by an administrator before the deadline: keep trying.
                    tracing::error!(error = %err, "renewing the lease failed and may keep failing; retrying until the lease ends");
                }
                wait = backoff.as_mut().map(|b| b.after(&err));
            }
        }
    }
}

/// How often a lease without expiry is checked when the backend sends no changes.
const UNEXPIRING_CHECK: Duration = Duration::from_secs(10);

/// Watches a lease without expiry, which is never renewed, until stopped; fires `lost` when
/// the lease is gone: taken over by force, or removed by an operator. Woken by the backend's
/// change feed; without one, it reads the lock every [`UNEXPIRING_CHECK`].
///
/// A feed may show the lock as it was before this acquisition (other waiters opened it
/// earlier), or skip states (it keeps only the latest). So a state from the feed that lacks
/// this lease is only a hint, confirmed by reading the lock before `lost` fires; a read is
/// the truth. Leases are recognised by their fencing token (or, in formats that keep none,
/// by when they were taken), never by comparing counters, which restart if the lock's object
/// is deleted.
async fn watch_unexpiring<L: Locker>(shared: Arc<Shared<L>>) {
    #[derive(PartialEq)]
    enum Check {
        /// The lease is there (or nothing says otherwise yet): wait for a change.
        Holds,
        /// The lock could not be read: try again after a while.
        Failed,
    }

    let settings = &shared.settings;
    let ours = shared
        .held
        .lock()
        .await
        .state
        .leases
        .get(&settings.holder)
        .cloned();
    let Some(ours) = ours else {
        return lose(&shared, "the lease was not in the state written");
    };
    let holds = |state: Option<&LockState>| {
        state.is_some_and(|s| rules::holds(s, &ours, shared.token, shared.clock.now()))
    };
    let mut feed = shared.locker.changes(&settings.name);
    loop {
        let check = match feed.as_mut().map(Changes::latest) {
            Some(Snapshot::Unavailable) => {
                feed = None;
                continue;
            }
            Some(Snapshot::Present(record)) if holds(Some(&record.state)) => Check::Holds,
            // A hint that the lease is gone (or no feed at all): read the lock to be sure.
            Some(Snapshot::Present(_) | Snapshot::Absent) | None => {
                match shared.locker.read(&settings.name).await {
                    Ok(record) if holds(record.as_ref().map(|r| &r.state)) => Check::Holds,
                    Ok(_) => return lose(&shared, "the lease is gone: taken over, or removed"),
                    Err(err) => {
                        tracing::debug!(error = %err, "checking the lease failed; trying again later");
                        Check::Failed
                    }
                }
            }
            // Nothing known yet: the feed's first state comes soon.
            Some(_) => Check::Holds,
        };
        let next = async {
            match feed.as_mut() {
                Some(feed) if check == Check::Holds => feed.changed().await,
                _ => tokio::time::sleep(UNEXPIRING_CHECK).await,
            }
        };
        tokio::select! {
            biased;
            () = shared.stop.cancelled() => return,
            () = next => {}
        }
    }
}

fn lose<L: Locker>(shared: &Shared<L>, why: &str) {
    tracing::warn!(reason = why, "lock lost");
    shared.lost.cancel();
}
