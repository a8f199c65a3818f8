//! What a [`LockGuard`](crate::LockGuard) holds: its acquisition, the state it last wrote, and
//! the two writes it makes, renewing the lease and releasing it.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use super::backoff::Backoff;
use super::settings::Settings;
use super::take::Acquired;
use crate::backend::{
    Backend, Changes, Decision, Known, OnUnknown, Record, Snapshot, Start, Swapped,
    compare_and_swap,
};
use crate::clock::Clock;
use crate::error::Error;
use crate::info::LockInfo;
use crate::rules;
use crate::state::LockState;
use crate::state::gotime::GoTime;

/// How a renewal ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Renewed {
    /// The lease was extended.
    Extended,
    /// The lock's record prefers another holder: this one gives the lock up instead.
    Yielded,
}

/// The last state this holder wrote, and the version to compare against next.
pub(crate) struct Held<V> {
    pub(crate) version: V,
    pub(crate) state: LockState,
    pub(crate) expires: GoTime,
}

/// A held lock, shared by its guard and the guard's background task.
pub(crate) struct Holding<L: Backend> {
    pub(crate) settings: Settings,
    pub(crate) token: u64,
    /// The lock as this acquisition wrote it.
    pub(crate) taken: LockInfo,
    pub(crate) reentry: bool,
    pub(crate) locker: L,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) held: Mutex<Held<L::Version>>,
    /// The lock as this process last saw it change (waiters queueing, others holding): the
    /// next write starts from it when it still holds this lease, instead of conflicting.
    view: Option<Changes<L::Version>>,
    /// When this holder stops trusting its lease, in Unix milliseconds (`i64::MAX`: never);
    /// kept outside `held` so that `is_lost` can read it without waiting.
    give_up_ms: AtomicI64,
    /// Fires when the lock can no longer be trusted.
    pub(crate) lost: CancellationToken,
    /// Stops the background task.
    pub(crate) stop: CancellationToken,
}

impl<L: Backend> Holding<L> {
    /// A held lock; `view` is the lock's feed, when the process watches it already.
    pub(crate) fn new(
        settings: Settings,
        locker: L,
        acquired: Acquired<L::Version>,
        view: Option<Changes<L::Version>>,
    ) -> Self {
        let clock = locker.clock();
        Self {
            token: acquired.token,
            taken: LockInfo::from_state(&settings.name, &acquired.state, clock.now()),
            reentry: acquired.reentry,
            give_up_ms: AtomicI64::new(rules::give_up_ms(acquired.expires, settings.duration)),
            clock,
            locker,
            held: Mutex::new(Held {
                version: acquired.version,
                state: acquired.state,
                expires: acquired.expires,
            }),
            lost: CancellationToken::new(),
            stop: CancellationToken::new(),
            view,
            settings,
        }
    }

    /// Where this holder's next write starts: the lock as last seen changing, if that still
    /// holds this lease (waiters may have queued since this holder wrote), or as it wrote it.
    fn current(&self, held: &Held<L::Version>) -> Record<L::Version> {
        if let (Some(Snapshot::Present(seen)), Some(ours)) = (
            self.view.as_ref().map(Changes::peek),
            held.state.leases.get(&self.settings.holder),
        ) && rules::holds(&seen.state, ours, self.token, self.clock.now())
        {
            return seen;
        }
        Record::new(held.state.clone(), held.version.clone())
    }

    /// Runs `decide` on the lock by compare-and-swap, starting from `known`.
    async fn write<W, D>(
        &self,
        known: Record<L::Version>,
        decide: impl FnMut(Option<&Record<L::Version>>) -> Result<Decision<W, D>, Error>,
    ) -> Result<Swapped<L::Version, W, D>, Error> {
        let start = Start::Known(Some(known));
        let view = self.view.as_ref();
        compare_and_swap(&self.locker, &self.settings.name, start, view, decide).await
    }

    fn lost_error(&self) -> Error {
        Error::Lost {
            lock: self.settings.name.clone(),
        }
    }

    /// The moment this holder stops trusting its lease (see [`rules::give_up_ms`]).
    pub(crate) fn give_up_at(&self) -> DateTime<Utc> {
        let ms = self.give_up_ms.load(Ordering::Acquire);
        DateTime::from_timestamp_millis(ms).unwrap_or(DateTime::<Utc>::MAX_UTC)
    }

    /// Whether the wall clock is past the moment this holder gives up its lease.
    pub(crate) fn past_give_up(&self) -> bool {
        let give_up = self.give_up_ms.load(Ordering::Acquire);
        give_up != i64::MAX && self.clock.now().timestamp_millis() >= give_up
    }

    /// How long until this holder first renews, given when it would (`spread`, `None`:
    /// never): then, unless it trusts its lease for less than three quarters of the duration
    /// (a lease handed over to it, which lasts only the claim window until claimed; or a
    /// write that took long): such a lease is renewed within three quarters of the time it is
    /// trusted, and once even by a holder that never renews, so that it lasts the duration.
    pub(crate) fn first_renewal(&self, spread: Option<Duration>) -> Option<Duration> {
        let trusted = (self.give_up_at() - self.clock.now())
            .to_std()
            .unwrap_or(Duration::ZERO);
        if trusted >= self.settings.duration * 3 / 4 {
            return spread;
        }
        let claim = trusted * 3 / 4;
        Some(spread.map_or(claim, |spread| spread.min(claim)))
    }

    /// Fires `lost`, saying why.
    pub(crate) fn lose(&self, why: &str) {
        tracing::warn!(reason = why, "lock lost");
        self.lost.cancel();
    }

    /// Extends this holder's lease once: one write when nothing changed, a read and a write
    /// when something did. Writes nothing, and says [`Renewed::Yielded`], when the lock's
    /// record prefers another holder (see [`rules::yields`]).
    ///
    /// # Errors
    ///
    /// [`Error::Lost`] when the lease is gone; the backend's errors (a transient one leaves
    /// the renewal's outcome unknown: the next renewal finds out).
    pub(crate) async fn renew(&self) -> Result<Renewed, Error> {
        let settings = &self.settings;
        let mut held = self.held.lock().await;
        let known = self.current(&held);
        let decide = |record: Option<&Record<L::Version>>| {
            let record = record.ok_or_else(|| self.lost_error())?;
            let (state, expires) = rules::renew(
                &settings.name,
                &record.state,
                &settings.holder,
                self.token,
                settings.duration,
                self.clock.now(),
            )?;
            if rules::yields(&record.state, &settings.holder) {
                return Ok(Decision::Done(Renewed::Yielded));
            }
            Ok(Decision::Write {
                state,
                value: expires,
                on_unknown: OnUnknown::nothing(),
            })
        };
        let swapped = self.write(known, decide).await?;
        let (version, state, expires) = match swapped.known()? {
            Known::Stored {
                version,
                state,
                value,
            } => (version, state, value),
            Known::Done(yielded) => return Ok(yielded),
        };
        *held = Held {
            version,
            state,
            expires,
        };
        self.give_up_ms.store(
            rules::give_up_ms(expires, settings.duration),
            Ordering::Release,
        );
        tracing::trace!(%expires, "lease renewed");
        Ok(Renewed::Extended)
    }

    /// Until when a release that meets transient failures tries again: until the lease ending
    /// at `expires` has ended for every contender (its end and the skew allowance), since the
    /// lock is taken over anyway after that and handed over sooner before; a lease without
    /// expiry, for [`RELEASE_RETRY_FOR`]. Releasing a lease past its end is safe: the write
    /// removes it only while it is still there, untaken.
    fn release_deadline(&self, expires: GoTime) -> DateTime<Utc> {
        let after = |at: DateTime<Utc>, wait: Duration| {
            chrono::Duration::from_std(wait)
                .ok()
                .and_then(|wait| at.checked_add_signed(wait))
                .unwrap_or(DateTime::<Utc>::MAX_UTC)
        };
        if expires.is_forever() {
            after(self.clock.now(), RELEASE_RETRY_FOR)
        } else {
            after(expires.to_utc(), self.settings.skew_allowance)
        }
    }

    /// How long one try of a release may go unanswered before it is made again: the lease's
    /// [safety margin](rules::safety_margin) (a tenth), between [`MIN_RELEASE_TRY`] and [`MAX_RELEASE_TRY`] (the most for a lease without
    /// expiry). A release in flight keeps every waiter out, and a request can be held back
    /// long: a connection lost without a reset, or kube's client waiting out a 429's
    /// `Retry-After` (a second, again and again while the server keeps answering 429; issue
    /// 18's gaps of 2 to 4 s). The write is a compare-and-swap: a try given up that lands
    /// after all is either refused, or is the release.
    fn release_try(&self) -> Duration {
        if self.settings.duration.is_zero() {
            MAX_RELEASE_TRY
        } else {
            rules::safety_margin(self.settings.duration).clamp(MIN_RELEASE_TRY, MAX_RELEASE_TRY)
        }
    }

    /// The error of a release try that was not answered in time (transient: tried again).
    fn unanswered(&self) -> Error {
        Error::Backend {
            object: self.settings.name.clone(),
            transient: true,
            source: format!("no answer within {:?}", self.release_try()).into(),
        }
    }

    /// Removes this holder's lease and applies its tags, handing the lock over to the waiters
    /// whose turn it is.
    ///
    /// # Errors
    ///
    /// [`Error::Lost`] when the lease was already gone; the backend's errors.
    pub(crate) async fn release(&self) -> Result<(), Error> {
        let settings = &self.settings;
        let held = self.held.lock().await;
        let mut start = Start::Known(Some(self.current(&held)));
        let mut failures = Backoff::new(RELEASE_RETRY, MAX_RELEASE_RETRY);
        let deadline = self.release_deadline(held.expires);
        // A holder that gave its lease up before it released learns at the end that it lost it
        // (as a refused write and a read would tell it), unless its release got through.
        let lost_before = self.past_give_up();
        let mut tries = 1;
        loop {
            // After a failure whose outcome is unknown, a lease found gone was most likely
            // removed by the write that failed: the release is done, not lost.
            let failed = tries > 1;
            let decide = |record: Option<&Record<L::Version>>| {
                // Deleted by someone since this holder wrote it: nothing is held any more.
                let Some(record) = record else {
                    return Ok(Decision::Done(()));
                };
                let Some(state) = rules::release(
                    &record.state,
                    &settings.holder,
                    self.token,
                    &settings.tags,
                    settings.reset_tags,
                    self.clock.now(),
                    settings.skew_allowance,
                ) else {
                    return if failed {
                        Ok(Decision::Done(()))
                    } else {
                        Err(self.lost_error())
                    };
                };
                Ok(Decision::Write {
                    state,
                    value: (),
                    on_unknown: OnUnknown::nothing(),
                })
            };
            let view = self.view.as_ref();
            let swapped = compare_and_swap(&self.locker, &settings.name, start, view, decide);
            let swapped = tokio::time::timeout(self.release_try(), swapped)
                .await
                .unwrap_or_else(|_| Err(self.unanswered()));
            let error = match swapped.and_then(Swapped::known) {
                Ok(Known::Stored { .. }) => {
                    tracing::debug!("lock released");
                    return Ok(());
                }
                Ok(Known::Done(())) => {
                    tracing::debug!(
                        "nothing to release: the lock was deleted, or released already"
                    );
                    return Ok(());
                }
                Err(err) => err,
            };
            // A transient failure (a 5xx, a reset connection, a 429) is retried until the
            // lease has ended for everyone: a release left undone keeps every waiter out until
            // then (issue 18 saw 6 s idle locks after releases that gave up after four tries, a
            // quarter of a second, under 500s).
            let pause = failures.after(&error);
            let in_time = self.clock.now() + pause < deadline;
            if !error.is_transient() {
                return Err(error);
            }
            if !in_time {
                return Err(if lost_before {
                    self.lost_error()
                } else {
                    error
                });
            }
            tracing::debug!(error = %error, "releasing the lease failed; retrying");
            tries += 1;
            start = Start::Read;
            tokio::time::sleep(pause).await;
        }
    }
}

/// The first pause between two tries of a release (then doubling, with jitter).
const RELEASE_RETRY: Duration = Duration::from_millis(50);
/// The longest pause between two tries of a release.
const MAX_RELEASE_RETRY: Duration = Duration::from_secs(1);
/// The shortest and longest wait for the answer to one try of a release.
const MIN_RELEASE_TRY: Duration = Duration::from_millis(200);
const MAX_RELEASE_TRY: Duration = Duration::from_secs(1);
/// How long a release of a lease without expiry tries again after transient failures.
const RELEASE_RETRY_FOR: Duration = Duration::from_secs(30);
