//! Waiting for a held lock: [`Waiter`], the state machine that
//! [`Lock::acquire`](crate::Lock::acquire) steps until it has the lock.
//!
//! A waiter does not poll. It is woken when the lock changes (the backend's feed, shared by
//! every lock of the process) and when a blocking lease or queue entry can have ended; it
//! decides on what the feed showed, without reading the lock again. Without a feed it polls
//! with backoff, and so it does while its feed's watch is interrupted: it reads the lock at
//! once, and again and again until the watch delivers, so that a lock handed over to it then
//! is seen at its next read rather than when the watch comes back.
//!
//! A blocked waiter first waits for its turn among the waiters of the lock in its process,
//! then takes a place at the end of the lock's queue (see [`rules`](crate::rules)) and waits
//! for the lock to be handed over to it, or, at the head of the queue, for the lock to be free
//! to take. A waiter that does not wait fairly instead spreads its write over a short random
//! delay when woken with others, so that a release is followed by one write that takes the
//! lock rather than one per waiter.

use std::mem;
use std::time::Duration;

use tokio::sync::OwnedMutexGuard;
use tokio::time::Instant;

use super::backoff::{self, Backoff};
use super::cleanup::{Pending, Undo};
use super::settings::{Intent, Settings};
use super::take::{self, Acquired, Begin, Decided, Taken};
use super::watched::Watched;
use crate::backend::{Backend, Changes, Record, Snapshot, Start};
use crate::error::Error;
use crate::info::{Holder, Waiting};
use crate::rules::{self, Acquire, Blocked};

/// How long a waiter waits for a starting feed's first view before it reads the lock.
const LISTEN: Duration = Duration::from_secs(1);

/// The longest pause after failed requests.
const MAX_FAILURE_PAUSE: Duration = Duration::from_secs(10);

/// The smallest and largest random spread of the writes of woken waiters.
const SPREAD_MIN: Duration = Duration::from_millis(25);
const SPREAD_MAX: Duration = Duration::from_secs(1);

/// Where a waiter is.
enum State<V> {
    /// Look at the lock as the feed shows it, or read it.
    Look,
    /// The feed knows nothing yet (its watch is starting): wait a moment for its first view
    /// rather than read the lock (a thousand waiters starting together read it once).
    Listen,
    /// Read the lock.
    Read,
    /// Decide on the lock as known (`None`: not stored).
    Decide(Option<Record<V>>),
    /// Blocked: first wait for this process's turn among its waiters of the lock.
    Turn(Blocked),
    /// The lock looks free, but other waiters were woken by the same change: pause a random
    /// moment, then look again (unfair waiting only).
    Spread,
    /// The rules allow taking the lock, or queueing, as decided: write that.
    Take(Box<Decided<V>>),
    /// The lock was handed over to this waiter too long ago to trust the handed lease as it is
    /// (by this waiter's clock): take it with a write while that lease is still there.
    Claim(Record<V>),
    /// Someone else holds the lock, or waiters are ahead: wait for a change, for a blocking
    /// lease or entry to end, for the place in the queue to need refreshing, or to poll.
    Blocked(Blocked),
    /// A transient failure: wait this long, then read the lock.
    Backoff(Duration),
}

/// One waiting acquire. Dropping it (the acquire failed, timed out or was cancelled) removes
/// what it may have written: its place in the queue, leases of writes whose outcome is
/// unknown.
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
    /// After failed writes: up to [`MAX_FAILURE_PAUSE`].
    failures: Backoff,
    /// After failed reads: up to the retry interval (at least 1 s), so that a waiter whose
    /// reads keep failing (a run of 5xx that it meets while its watch is down) is not blind
    /// to the lock handed over to it much longer than the reads fail.
    read_failures: Backoff,
    polls: Backoff,
    watched: Watched,
    /// Whether the waiter has waited for the feed's first view already.
    listened: bool,
    /// The lock's fencing counter when this waiter first queued: a lease of its own with a
    /// higher token was handed over to it.
    floor: Option<u64>,
    /// The ids this waiter wrote its place with (a handover passes the place's id on to the
    /// lease it writes).
    places: Vec<String>,
    /// What this acquire waits for, as last seen (for the observer and a timeout's error).
    waiting: Waiting,
    /// What this acquire may have written, removed unless it takes the lock.
    pending: Pending<L>,
}

impl<'a, L: Backend> Waiter<'a, L> {
    pub(crate) fn new(locker: &'a L, settings: &'a Settings) -> Self {
        Self {
            locker,
            settings,
            state: State::Look,
            feed: locker.changes(&settings.name),
            turn: None,
            started: Instant::now(),
            woken: false,
            spread: SPREAD_MIN,
            failures: Backoff::new(Duration::from_millis(100), MAX_FAILURE_PAUSE),
            read_failures: Backoff::new(
                Duration::from_millis(100),
                settings
                    .retry_interval
                    .clamp(Duration::from_secs(1), MAX_FAILURE_PAUSE),
            ),
            polls: Backoff::new(
                settings.retry_interval.min(Duration::from_millis(100)),
                settings.retry_interval,
            ),
            watched: Watched::default(),
            listened: false,
            floor: None,
            places: Vec::new(),
            waiting: Waiting::new(&settings.name),
            pending: Pending::new(locker, settings),
        }
    }

    /// Steps until the lock is taken, waiting at most until `deadline`. The deadline bounds
    /// the waiting, never a read or a write in flight: a lock found free is taken however
    /// slowly the backend answers.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] at the deadline; permanent errors (of the rules or the backend).
    /// Transient errors make it wait.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: what the waiter may have written is cleaned up when it is dropped.
    pub(crate) async fn run(
        &mut self,
        deadline: Option<Instant>,
    ) -> Result<Acquired<L::Version>, Error> {
        loop {
            if let Some(acquired) = self.step(deadline).await? {
                self.pending.disarm();
                return Ok(acquired);
            }
        }
    }

    /// The lock's feed, for the guard that takes over from this waiter.
    pub(crate) fn into_feed(mut self) -> Option<Changes<L::Version>> {
        self.feed.take()
    }

    /// The error of an acquire that timed out while waiting here.
    fn timeout(&self) -> Error {
        Error::Timeout {
            lock: self.settings.name.clone(),
            waited: self.started.elapsed(),
            holders: self.waiting.holders.clone(),
            max_holders: self.waiting.max_holders,
        }
    }

    /// Makes one transition; returns the acquisition once the lock is taken.
    async fn step(
        &mut self,
        deadline: Option<Instant>,
    ) -> Result<Option<Acquired<L::Version>>, Error> {
        match mem::replace(&mut self.state, State::Look) {
            State::Look => self.state = self.look(),
            State::Listen => {
                self.listened = true;
                if let Some(feed) = self.feed.as_mut() {
                    let first = tokio::time::timeout(LISTEN, feed.changed());
                    until(deadline, first)
                        .await
                        .ok_or_else(|| self.timeout())?
                        .ok();
                }
                self.state = self.look();
            }
            State::Read => {
                self.state = match self.locker.read(&self.settings.name).await {
                    Ok(record) => {
                        self.read_failures.reset();
                        State::Decide(record)
                    }
                    Err(err) if err.is_transient() => {
                        tracing::debug!(error = %err, "reading the lock failed; retrying");
                        State::Backoff(self.read_failures.after(&err))
                    }
                    Err(err) => return Err(err),
                };
            }
            State::Decide(record) => return self.decide(record),
            State::Turn(blocked) => {
                self.see(&blocked);
                if let Some(feed) = &self.feed {
                    let turn = until(deadline, feed.turn()).await;
                    self.turn = Some(turn.ok_or_else(|| self.timeout())?);
                }
                // Others of this process may have changed the lock meanwhile.
                self.state = State::Look;
            }
            State::Spread => {
                self.woken = false;
                let pause = tokio::time::sleep(backoff::spread(self.spread));
                until(deadline, pause).await.ok_or_else(|| self.timeout())?;
                self.state = self.look();
            }
            State::Take(decided) => return self.take(Begin::Decided(decided), Intent::Waits).await,
            State::Claim(record) => {
                let begin = Begin::Start(Start::Known(Some(record)));
                return self.take(begin, Intent::Claims).await;
            }
            State::Blocked(blocked) => {
                self.see(&blocked);
                let woken = until(deadline, self.wake(&blocked)).await;
                woken.ok_or_else(|| self.timeout())?;
                self.woken = true;
                self.state = self.look();
            }
            State::Backoff(delay) => {
                let paused = until(deadline, self.pause(delay)).await;
                let handed = paused.ok_or_else(|| self.timeout())?;
                self.state = handed.map_or(State::Read, |record| State::Decide(Some(record)));
            }
        }
        Ok(None)
    }

    /// What to do about the lock as known: it was handed over, or take it, queue, wait.
    fn decide(
        &mut self,
        record: Option<Record<L::Version>>,
    ) -> Result<Option<Acquired<L::Version>>, Error> {
        let now = self.locker.clock().now();
        if let (Some(record), Some(floor)) = (&record, self.floor)
            && let Some((token, expires)) =
                rules::handed_over(&record.state, &self.settings.holder, (floor, &self.places))
        {
            if now.timestamp_millis() < rules::give_up_ms(expires, self.settings.duration) {
                tracing::debug!(token, "the lock was handed over");
                return Ok(Some(Acquired {
                    version: record.version.clone(),
                    state: record.state.clone(),
                    token,
                    expires,
                    reentry: false,
                }));
            }
            tracing::debug!(
                token,
                "the lock was handed over too long ago to trust; claiming it"
            );
            self.state = State::Claim(record.clone());
            return Ok(None);
        }
        let watched = Some(&mut self.watched);
        // What is decided here is what the take writes (with this nonce).
        let (decision, nonce) =
            take::decide(self.settings, record.as_ref(), now, watched, Intent::Waits)?;
        let needs_turn = self.turn.is_none() && self.feed.is_some();
        self.state = match decision {
            Acquire::Busy(blocked) => {
                self.failures.reset();
                if needs_turn {
                    State::Turn(blocked)
                } else {
                    State::Blocked(blocked)
                }
            }
            // One waiter of this process at a time holds its place in the queue.
            Acquire::Queue { blocked, .. } if needs_turn => State::Turn(blocked),
            Acquire::Take { .. } if self.woken && self.feed.is_some() && !self.settings.fifo => {
                State::Spread
            }
            acquire @ (Acquire::Take { .. } | Acquire::Queue { .. }) => {
                State::Take(Box::new(Decided {
                    record,
                    acquire,
                    nonce,
                }))
            }
        };
        Ok(None)
    }

    /// Writes what takes the lock, or what queues this waiter, or what claims the lock handed
    /// over to it.
    async fn take(
        &mut self,
        begin: Begin<L::Version>,
        intent: Intent,
    ) -> Result<Option<Acquired<L::Version>>, Error> {
        // A claim takes a lock handed over already; queueing must stop if it is.
        let handed = self
            .floor
            .filter(|_| intent == Intent::Waits)
            .map(|floor| (floor, self.places.as_slice()));
        let taken = take::take(
            self.locker,
            self.settings,
            begin,
            Some(&mut self.watched),
            self.feed.as_ref(),
            intent,
            handed,
        );
        self.state = match taken.await {
            Ok(Taken::Acquired(acquired)) => return Ok(Some(acquired)),
            Ok(Taken::Handed(record, places)) => {
                for place in places {
                    if !self.places.contains(&place) {
                        self.places.push(place);
                    }
                }
                State::Decide(Some(record))
            }
            Ok(Taken::Busy(blocked)) => {
                // Another waiter wrote first: spread further next time.
                self.spread = (self.spread * 2).min(SPREAD_MAX);
                self.failures.reset();
                tracing::debug!("the lock was taken by another waiter first");
                State::Blocked(blocked)
            }
            Ok(Taken::Queued {
                blocked,
                record,
                floor,
                nonce,
            }) => {
                let floor = *self.floor.get_or_insert(floor);
                self.places.push(nonce.clone());
                self.pending.queued(Undo::Queue { floor, nonce });
                self.failures.reset();
                tracing::debug!(?blocked.retry_in, "queued for the lock");
                self.see(&blocked);
                State::Decide(Some(record))
            }
            Ok(Taken::Unknown { error, cleanup }) => {
                // The write may have happened: the next attempt finds out (and carries on
                // from there); if the acquire ends first, the clean-up removes it.
                tracing::debug!(%error, "writing the lock failed; retrying");
                let undo = cleanup.disarm();
                match &undo {
                    Undo::Queue { floor, nonce } => {
                        self.floor.get_or_insert(*floor);
                        self.places.push(nonce.clone());
                    }
                    // A claim that happened is a lease handed over to this wait, in effect.
                    Undo::Lease { nonce, .. } if intent == Intent::Claims => {
                        self.places.push(nonce.clone());
                    }
                    Undo::Lease { .. } => {}
                }
                self.pending.add(undo);
                State::Backoff(self.failures.after(&error))
            }
            Err(error) if error.is_transient() => {
                tracing::debug!(%error, "taking the lock failed; retrying");
                State::Backoff(self.failures.after(&error))
            }
            Err(error) => return Err(error),
        };
        Ok(None)
    }

    /// Waits `delay` after a failure, unless the lock's feed shows the lock handed over to
    /// this waiter meanwhile: then returns what it shows at once. A waiter whose writes fail
    /// (say, the refresh of its place) may still see its turn come through its watch, and
    /// must not sit out a backoff of seconds on a lock that waits for it.
    async fn pause(&mut self, delay: Duration) -> Option<Record<L::Version>> {
        let pause = tokio::time::sleep(delay);
        tokio::pin!(pause);
        let Some(feed) = self.feed.as_mut() else {
            pause.await;
            return None;
        };
        let Some(floor) = self.floor else {
            pause.await;
            return None;
        };
        let holder = &self.settings.holder;
        loop {
            tokio::select! {
                () = &mut pause => return None,
                () = feed.changed() => {
                    if let Snapshot::Present(record) = feed.peek()
                        && rules::handed_over(&record.state, holder, (floor, &self.places)).is_some()
                    {
                        return Some(record);
                    }
                }
            }
        }
    }

    /// Waits until the lock changes, a blocking lease or entry can have ended, this waiter's
    /// place needs refreshing, or it is time to poll (without a feed, or while its watch is
    /// interrupted).
    async fn wake(&mut self, blocked: &Blocked) {
        let lease_end = blocked.retry_in.map(|d| d + Duration::from_millis(1));
        let polling = self.feed.as_ref().is_none_or(Changes::is_interrupted);
        if !polling {
            // The next interruption starts with quick reads again.
            self.polls.reset();
        }
        let poll = polling.then(|| self.polls.next());
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
    }

    /// The lock as the feed last showed it; without a feed (or if it showed nothing usable),
    /// read it.
    fn look(&mut self) -> State<L::Version> {
        match self.feed.as_mut().map(Changes::latest) {
            Some(Snapshot::Present(record)) => State::Decide(Some(record)),
            Some(Snapshot::Absent) => State::Decide(None),
            Some(Snapshot::Unavailable) => {
                // The backend cannot send changes (a forbidden watch): poll from now on.
                self.feed = None;
                State::Read
            }
            Some(Snapshot::Unknown) if !self.listened => State::Listen,
            // Unknown, or the watch is interrupted (see `wake`).
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

/// Runs `future` until `deadline`: `None` when the deadline came first.
async fn until<F: Future>(deadline: Option<Instant>, future: F) -> Option<F::Output> {
    match deadline {
        Some(deadline) => tokio::time::timeout_at(deadline, future).await.ok(),
        None => Some(future.await),
    }
}

async fn sleep_for(duration: Option<Duration>) {
    match duration {
        Some(duration) => tokio::time::sleep(duration).await,
        None => std::future::pending().await,
    }
}
