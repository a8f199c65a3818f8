//! Waiting for a held lock: [`Waiter`], the state machine that
//! [`Lock::acquire`](crate::Lock::acquire) steps until it has taken the lock.
//!
//! A waiter does not poll. It is woken when the lock changes (the backend's feed, one per lock
//! for every waiter in the process) and when a blocking lease can have ended; it decides on
//! what the feed showed, without reading the lock again. Without a feed it polls with
//! backoff. The waiters of a lock in one process take turns; waiters in different processes,
//! woken by the same change, each pause a short random moment before writing, so that a
//! release is followed by one write that takes the lock rather than one per waiter.

use std::mem;
use std::time::Duration;

use tokio::sync::OwnedMutexGuard;
use tokio::time::Instant;

use crate::backend::{Backend, Changes, OnUnknown, Record, Snapshot, Start};
use crate::backoff::{self, Backoff};
use crate::error::Error;
use crate::info::{Holder, Waiting};
use crate::rules::{Acquire, Blocked};
use crate::settings::Settings;
use crate::take::{self, Acquired, Taken};
use crate::watched::Watched;

/// The smallest and largest random spread of the writes of woken waiters.
const SPREAD_MIN: Duration = Duration::from_millis(25);
const SPREAD_MAX: Duration = Duration::from_secs(1);

/// Where a waiter is.
enum State<V> {
    /// Waiting for its turn among the waiters of the lock in this process.
    Queued,
    /// Knows nothing of the lock: read it.
    Read,
    /// Decide on the lock as known (`None`: not stored).
    Decide(Option<Record<V>>),
    /// The lock looks free, but other waiters were woken by the same change: pause a random
    /// moment, then look again.
    Spread,
    /// The rules allow taking the lock (or recording this writer's intent): write.
    Take(Option<Record<V>>),
    /// Someone else holds the lock: wait for a change, for a blocking lease to end, or to
    /// poll again.
    Blocked(Blocked),
    /// A transient failure: wait this long, then read the lock.
    Backoff(Duration),
}

/// One waiting acquire. Dropping it (the acquire failed, timed out or was cancelled) runs the
/// clean-ups of what it may have written.
pub(crate) struct Waiter<'a, L: Backend> {
    locker: &'a L,
    settings: &'a Settings,
    state: State<L::Version>,
    /// The lock's changes, while the backend can send them.
    feed: Option<Changes<L::Version>>,
    /// This waiter's turn among the waiters of the lock in this process, once it has it.
    turn: Option<OwnedMutexGuard<()>>,
    started: Instant,
    /// Woken by a change that other waiters saw too.
    woken: bool,
    /// How long a woken waiter pauses at most before writing; it grows with each lost race.
    spread: Duration,
    failures: Backoff,
    polls: Backoff,
    watched: Watched,
    /// What this acquire waits for, as last seen (for the observer and a timeout's error).
    waiting: Waiting,
    /// Removes what writes whose outcome is unknown may have left, unless the lock is taken.
    pending: Vec<OnUnknown>,
    /// Withdraws this writer's recorded intent, unless the lock is taken.
    intent: Option<OnUnknown>,
}

impl<'a, L: Backend> Waiter<'a, L> {
    pub(crate) fn new(locker: &'a L, settings: &'a Settings) -> Self {
        let feed = locker.changes(&settings.name);
        Self {
            locker,
            settings,
            state: if feed.is_some() {
                State::Queued
            } else {
                State::Read
            },
            feed,
            turn: None,
            started: Instant::now(),
            woken: false,
            spread: SPREAD_MIN,
            failures: Backoff::new(Duration::from_millis(100), Duration::from_secs(10)),
            polls: Backoff::new(
                settings.retry_interval.min(Duration::from_millis(100)),
                settings.retry_interval,
            ),
            watched: Watched::default(),
            waiting: Waiting::new(&settings.name),
            pending: Vec::new(),
            intent: None,
        }
    }

    /// Steps until the lock is taken.
    ///
    /// # Errors
    ///
    /// Permanent errors (of the rules or the backend); transient ones make it wait.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: what the waiter may have written is cleaned up when it is dropped.
    pub(crate) async fn run(&mut self) -> Result<Acquired<L::Version>, Error> {
        loop {
            if let Some(acquired) = self.step().await? {
                // Taking the lock replaced any lease an earlier, ambiguous write made, and
                // fulfilled this writer's intent: nothing is left to clean up.
                self.pending.drain(..).for_each(OnUnknown::disarm);
                if let Some(intent) = self.intent.take() {
                    intent.disarm();
                }
                return Ok(acquired);
            }
        }
    }

    /// The error of an acquire that timed out while waiting here.
    pub(crate) fn timeout(&self) -> Error {
        Error::Timeout {
            lock: self.settings.name.clone(),
            waited: self.started.elapsed(),
            holders: self.waiting.holders.clone(),
            max_holders: self.waiting.max_holders,
        }
    }

    /// Makes one transition; returns the acquisition once the lock is taken.
    async fn step(&mut self) -> Result<Option<Acquired<L::Version>>, Error> {
        match mem::replace(&mut self.state, State::Read) {
            State::Queued => {
                if let Some(feed) = &self.feed {
                    self.turn = Some(feed.turn().await);
                }
                // A feed that other waiters of this process opened already knows the lock.
                self.state = self.as_fed();
            }
            State::Read => {
                self.state = match self.locker.read(&self.settings.name).await {
                    Ok(record) => State::Decide(record),
                    Err(err) if err.is_transient() => {
                        tracing::debug!(error = %err, "reading the lock failed; retrying");
                        State::Backoff(self.failures.after(&err))
                    }
                    Err(err) => return Err(err),
                };
            }
            State::Decide(record) => self.state = self.decide(record)?,
            State::Spread => {
                self.woken = false;
                tokio::time::sleep(backoff::spread(self.spread)).await;
                self.state = self.as_fed();
            }
            State::Take(record) => return self.take(record).await,
            State::Blocked(blocked) => self.wait(blocked).await,
            State::Backoff(delay) => tokio::time::sleep(delay).await,
        }
        Ok(None)
    }

    /// What to do about the lock as known: wait, spread, or write.
    fn decide(&mut self, record: Option<Record<L::Version>>) -> Result<State<L::Version>, Error> {
        self.failures.reset();
        let unchanged = self.watched.observe(record.as_ref(), &self.settings.holder);
        let now = self.locker.clock().now();
        Ok(
            match take::decide(self.settings, record.as_ref(), now, Some(&unchanged), true)? {
                Acquire::Busy(blocked) => State::Blocked(blocked),
                Acquire::Take { .. } if self.woken && self.feed.is_some() => State::Spread,
                Acquire::Take { .. } | Acquire::Announce { .. } => State::Take(record),
            },
        )
    }

    /// Writes what takes the lock, or records this writer's intent.
    async fn take(
        &mut self,
        record: Option<Record<L::Version>>,
    ) -> Result<Option<Acquired<L::Version>>, Error> {
        let start = Start::Known(record);
        let taken = take::take(
            self.locker,
            self.settings,
            start,
            Some(&mut self.watched),
            true,
        )
        .await?;
        self.state = match taken {
            Taken::Acquired(acquired) => return Ok(Some(acquired)),
            Taken::Busy(blocked) => {
                // Another waiter wrote first: spread further next time.
                self.spread = (self.spread * 2).min(SPREAD_MAX);
                tracing::debug!("the lock was taken by another waiter first");
                State::Blocked(blocked)
            }
            Taken::Announced {
                blocked,
                record,
                withdraw,
            } => {
                tracing::debug!("waiting as a writer; new shared holders wait behind");
                match &self.intent {
                    Some(_) => withdraw.disarm(),
                    None => self.intent = Some(withdraw),
                }
                self.see(&blocked);
                State::Decide(Some(record))
            }
            Taken::Unknown { error, cleanup } => {
                // The write may have happened: the next attempt finds out (and carries on
                // with that lease); if the acquire ends first, the clean-up removes it.
                tracing::debug!(%error, "writing the lock failed; retrying");
                self.pending.push(cleanup);
                State::Backoff(self.failures.after(&error))
            }
        };
        Ok(None)
    }

    /// Waits until the lock changes, a blocking lease can have ended, or it is time to poll.
    async fn wait(&mut self, blocked: Blocked) {
        self.see(&blocked);
        let lease_end = blocked.retry_in.map(|d| d + Duration::from_millis(1));
        let poll = self.feed.is_none().then(|| self.polls.next());
        tracing::debug!(held_by = ?self.waiting.holders.iter().map(|h| &h.id).collect::<Vec<_>>(), ?lease_end, "lock is held; waiting");
        let changed = async {
            match self.feed.as_mut() {
                Some(feed) => feed.changed().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = changed => {}
            () = sleep_for(lease_end) => {}
            () = sleep_for(poll) => {}
        }
        self.woken = true;
        self.state = self.as_fed();
    }

    /// The lock as the feed last showed it; without a feed (or if it showed nothing usable),
    /// read it.
    fn as_fed(&mut self) -> State<L::Version> {
        match self.feed.as_mut().map(Changes::latest) {
            Some(Snapshot::Present(record)) => State::Decide(Some(record)),
            Some(Snapshot::Absent) => State::Decide(None),
            Some(Snapshot::Unavailable) => {
                // The backend cannot send changes (a forbidden watch): poll from now on.
                self.feed = None;
                State::Read
            }
            _ => State::Read,
        }
    }

    /// Records what this acquire found in its way, and tells the observer when the holders
    /// changed (who they are, not their renewals).
    fn see(&mut self, blocked: &Blocked) {
        let ids = |holders: &[Holder]| {
            holders
                .iter()
                .map(|h| (h.id.clone(), h.waiting))
                .collect::<Vec<_>>()
        };
        let waiting = &mut self.waiting;
        let changed = waiting.holders.is_empty()
            || ids(&waiting.holders) != ids(&blocked.holders)
            || waiting.max_holders != blocked.max_holders;
        waiting.holders.clone_from(&blocked.holders);
        waiting.max_holders = blocked.max_holders;
        waiting.waited = self.started.elapsed();
        if changed && let Some(observer) = &self.settings.on_wait {
            (observer.0)(waiting);
        }
    }
}

async fn sleep_for(duration: Option<Duration>) {
    match duration {
        Some(duration) => tokio::time::sleep(duration).await,
        None => std::future::pending().await,
    }
}
