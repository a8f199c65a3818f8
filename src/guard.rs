//! [`LockGuard`]: a held lock, its renewal, its lost-lock signal and its release.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tracing::Instrument;

use crate::backoff::Backoff;
use crate::clock::Clock;
use crate::error::Error;
use crate::gotime::GoTime;
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
}

/// The write that took the lock.
#[derive(Debug)]
pub(crate) struct Acquired<V> {
    pub(crate) version: V,
    pub(crate) state: LockState,
    pub(crate) token: u64,
    pub(crate) expires: GoTime,
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
    max_holders: Option<u32>,
    locker: L,
    clock: Arc<dyn Clock>,
    held: Mutex<Held<L::Version>>,
    /// Fires when the lock can no longer be trusted.
    lost: CancellationToken,
    /// Stops the renewal task.
    stop: CancellationToken,
}

/// A held lock. Dropping it releases the lock in the background; [`release`](Self::release)
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
        let shared = Arc::new(Shared {
            token: acquired.token,
            max_holders: crate::kind::capacity(&acquired.state),
            clock: locker.clock(),
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
        let renewal = (!acquired.expires.is_forever()).then(|| {
            let span = tracing::info_span!(
                "lockheed.renew",
                lock = %shared.settings.name,
                holder = %shared.settings.holder,
                token = shared.token,
            );
            tokio::spawn(keep_alive(Arc::clone(&shared)).instrument(span))
        });
        Self {
            shared,
            renewal,
            released: false,
        }
    }

    /// The fencing token of this acquisition: it strictly increases with every acquisition of
    /// the lock by anyone, so a resource that remembers the largest token it has seen can
    /// refuse a holder that lost the lock.
    #[must_use]
    pub fn token(&self) -> u64 {
        self.shared.token
    }

    /// The most holders the lock admits at once, as stored when this guard took it: 1 for a
    /// mutex, the capacity of a semaphore (the stored one, which wins over the caller's
    /// [`with_max_holders`](crate::Lock::with_max_holders)), `None` for a read/write lock.
    #[must_use]
    pub fn max_holders(&self) -> Option<u32> {
        self.shared.max_holders
    }

    /// The lock's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.shared.settings.name
    }

    /// The holder identity.
    #[must_use]
    pub fn holder(&self) -> &str {
        &self.shared.settings.holder
    }

    /// When the current lease ends (`None`: never), as last written.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads (it waits for a renewal in flight to finish).
    pub async fn expires(&self) -> Option<DateTime<Utc>> {
        let expires = self.shared.held.lock().await.expires;
        (!expires.is_forever()).then(|| expires.to_utc())
    }

    /// Resolves when the lock can no longer be trusted: its lease could not be renewed before
    /// it ended (the guard gives up a tenth of the duration early, so that this fires before
    /// another holder can take the lock), or another holder took it over by force. It never
    /// resolves for a guard that keeps its lock.
    ///
    /// A lease without expiry (zero duration) is never renewed, so nothing notices a forced
    /// takeover of it: `lost` does not fire then. Use a finite duration where that matters.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only waits.
    pub fn lost(&self) -> WaitForCancellationFutureOwned {
        self.shared.lost.clone().cancelled_owned()
    }

    /// Whether [`lost`](Self::lost) has fired.
    #[must_use]
    pub fn is_lost(&self) -> bool {
        self.shared.lost.is_cancelled()
    }

    /// A token cancelled when the lock is lost, to hand to tasks of the critical section
    /// (cancelling it does not affect the guard).
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
            runtime.spawn(
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

/// The moment this holder stops trusting its lease: a tenth of the duration before it ends,
/// so that `lost` fires before another holder can take the lock.
async fn give_up_at<L: Locker>(shared: &Shared<L>) -> DateTime<Utc> {
    let expires = shared.held.lock().await.expires.to_utc();
    let margin = chrono::Duration::from_std(shared.settings.duration / 10).unwrap_or_default();
    expires - margin
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
        let deadline = give_up_at(&shared).await;
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

fn lose<L: Locker>(shared: &Shared<L>, why: &str) {
    tracing::warn!(reason = why, "lock lost");
    shared.lost.cancel();
}
