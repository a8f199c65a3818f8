//! The take step: decide on a lock's record and write what takes it, or what queues the
//! caller. A single [`try_acquire`](crate::Lock::try_acquire) is one take; a waiting
//! [`acquire`](crate::Lock::acquire) takes once each time the lock may have become free.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};

use super::cleanup::{Armed, Undo};
use super::settings::{Intent, Settings};
use super::watched::Watched;
use crate::backend::{
    Backend, Changes, Decision, Record, Snapshot, Start, Swapped, compare_and_swap,
};
use crate::error::Error;
use crate::info::Holder;
use crate::rules::{self, Acquire, Blocked, Unchanged};
use crate::state::LockState;
use crate::state::gotime::GoTime;

/// The write that took a lock (or the lease handed over to a waiter).
#[derive(Debug)]
pub(crate) struct Acquired<V> {
    /// The version written, to compare against at the first renewal.
    pub(crate) version: V,
    pub(crate) state: LockState,
    pub(crate) token: u64,
    pub(crate) expires: GoTime,
    /// The holder already held the lock: this acquisition replaced its lease.
    pub(crate) reentry: bool,
}

/// What a take did.
#[derive(Debug)]
pub(crate) enum Taken<L: Backend> {
    /// The lock is taken.
    Acquired(Acquired<L::Version>),
    /// Someone else holds it, or waiters are ahead.
    Busy(Blocked),
    /// The lock was handed over to the waiting caller meanwhile, as `record` shows: it takes
    /// it from there (see [`rules::handed_over`]), instead of deciding as a newcomer would.
    /// The ids are those its place may carry now (the caller's and this take's).
    Handed(Record<L::Version>, Vec<String>),
    /// Someone else holds it, and the caller's place in the queue is now recorded in
    /// `record`: it waits for its turn, or for the lock to be handed over to it (a lease of its
    /// own with a token above `floor`). Until the acquire ends, it keeps `Undo::Queue` to
    /// withdraw.
    Queued {
        blocked: Blocked,
        record: Record<L::Version>,
        floor: u64,
        /// The id the place was written with.
        nonce: String,
    },
    /// The write failed and may have happened all the same (a timeout, a 5xx). `cleanup`
    /// removes what it may have written when dropped armed; a waiter disarms it and keeps its
    /// undo with its other pending clean-ups instead.
    Unknown { error: Error, cleanup: Armed<L> },
}

/// What a decision to write will have done, once written.
enum Write {
    Take {
        token: u64,
        expires: GoTime,
        reentry: bool,
        nonce: String,
        /// The live holders a forced takeover removes.
        taken_over: Vec<Holder>,
    },
    Queue {
        blocked: Blocked,
        floor: u64,
        nonce: String,
    },
}

impl Write {
    /// What removes what this write may have written.
    fn undo(&self) -> Undo {
        match self {
            Self::Take {
                token,
                reentry,
                nonce,
                ..
            } => Undo::Lease {
                token: *token,
                nonce: nonce.clone(),
                reentry: *reentry,
            },
            Self::Queue { floor, nonce, .. } => Undo::Queue {
                floor: *floor,
                nonce: nonce.clone(),
            },
        }
    }
}

/// Where a take starts.
pub(crate) enum Begin<V> {
    /// Read the lock, or decide on it as known (see [`Start`]).
    Start(Start<V>),
    /// The lock as known and what the caller (a waiter) already decided on it: the first
    /// attempt writes that, and only a conflict decides again.
    Decided(Box<Decided<V>>),
}

/// What a waiter decided on the lock as it knows it, to write as it is (boxed where it waits:
/// a waiter's state lives across its awaits).
#[derive(Debug)]
pub(crate) struct Decided<V> {
    /// The lock as known (`None`: not stored).
    pub(crate) record: Option<Record<V>>,
    /// What the rules decided on it: a take, or a place in the queue.
    pub(crate) acquire: Acquire,
    /// The nonce it was decided with.
    pub(crate) nonce: String,
}

impl<V> Begin<V> {
    /// Where the compare-and-swap starts, and the decision its first attempt writes, if made.
    fn split(self) -> (Start<V>, Option<Box<Decided<V>>>) {
        match self {
            Self::Start(start) => (start, None),
            Self::Decided(mut decided) => (Start::Known(decided.record.take()), Some(decided)),
        }
    }
}

/// A random id for one attempt's lease (see [`rules::undo_take`]).
fn nonce() -> String {
    format!("{:016x}", fastrand::u64(..))
}

/// Decides an acquire by `settings` on `record` (`None`: the lock is not stored) at `now`,
/// for `intent` (as in [`Settings::request`]), with a fresh nonce, returned with the decision
/// for its write. A waiter first notes in what it has `watched` what `record` shows.
///
/// # Errors
///
/// The rules' errors: a lock of another kind, a token that cannot advance.
pub(crate) fn decide<V>(
    settings: &Settings,
    record: Option<&Record<V>>,
    now: DateTime<Utc>,
    watched: Option<&mut Watched>,
    intent: Intent,
) -> Result<(Acquire, String), Error> {
    let unchanged = watched.map(|w| w.observe(record, &settings.holder));
    let unchanged = unchanged.as_ref().map(|u| u as &dyn Unchanged);
    let nonce = nonce();
    let empty;
    let (state, reservation) = if let Some(r) = record {
        (&r.state, r.reservation.as_ref())
    } else {
        empty = LockState::empty(&settings.name);
        (&empty, None)
    };
    let request = settings.request(unchanged, intent, &nonce);
    let acquire = rules::acquire(&settings.name, state, reservation, request, now)?;
    Ok((acquire, nonce))
}

/// Takes the lock if the rules allow it on its current record (read first, or as `begin`
/// knows it, decided on already or not), writing by compare-and-swap; a conflict reads again
/// (from `view`, the lock's feed, when there is one) and decides again. A waiter passes what
/// it has `watched` of the other leases and entries (a single attempt has seen nothing), the
/// take's `intent` (a waiter queues when the lock is busy; a claim ignores the queue), and
/// what tells the lock handed over to it (`handed`: its floor and the ids of its place), which stops the take:
/// a waiter whose write lost the race to the handover must not queue again behind its own
/// handed lease.
///
/// # Errors
///
/// The rules' errors; the backend's errors (a transient one after a write's outcome became
/// known); [`Error::Contended`].
///
/// # Cancel safety
///
/// If the future is dropped while a write is in flight, what it may have written is removed
/// in the background.
pub(crate) async fn take<L: Backend>(
    locker: &L,
    settings: &Settings,
    begin: Begin<L::Version>,
    mut watched: Option<&mut Watched>,
    view: Option<&Changes<L::Version>>,
    intent: Intent,
    handed: Option<(u64, &[String])>,
) -> Result<Taken<L>, Error> {
    let clock = locker.clock();
    // The ids this take writes its place or lease with: a handover to a place it wrote
    // carries one of them.
    let written = Mutex::new(Vec::new());
    // Set when the lock was handed over to the caller while a write was in flight: the write
    // no longer matters, and what it may have written is the caller's (see `abandon`).
    let kept = Arc::new(AtomicBool::new(false));
    let is_handed = |record: &Record<L::Version>| {
        let (floor, places) = handed?;
        let mut ids = places.to_vec();
        ids.extend(lock(&written).iter().cloned());
        rules::handed_over(&record.state, &settings.holder, (floor, &ids)).map(|_| ids)
    };
    let (start, mut decided) = begin.split();
    let decision = |record: Option<&Record<L::Version>>| {
        if let Some(record) = record
            && let Some(places) = is_handed(record)
        {
            return Ok(Decision::Done(Unwritten::Handed(record.clone(), places)));
        }
        let (acquire, nonce) = match decided.take() {
            Some(decided) => (decided.acquire, decided.nonce),
            None => decide(
                settings,
                record,
                clock.now(),
                watched.as_deref_mut(),
                intent,
            )?,
        };
        lock(&written).push(nonce.clone());
        Ok(to_write(locker, settings, acquire, nonce, &kept))
    };
    let swapped = compare_and_swap(locker, &settings.name, start, view, decision);
    let swapped = match (view, handed) {
        (Some(view), Some(_)) => {
            let mut follow = view.follow();
            let shown = async {
                loop {
                    follow.changed().await;
                    if let Snapshot::Present(record) = follow.peek()
                        && let Some(places) = is_handed(&record)
                    {
                        // Before the write is dropped, which select! does first.
                        abandon(&kept);
                        return (record, places);
                    }
                }
            };
            tokio::select! {
                biased;
                swapped = swapped => swapped?,
                (record, places) = shown => return Ok(Taken::Handed(record, places)),
            }
        }
        _ => swapped.await?,
    };
    if let Swapped::Stored {
        value: Write::Take {
            token, taken_over, ..
        },
        ..
    } = &swapped
        && !taken_over.is_empty()
    {
        warn_taken_over(settings, *token, taken_over);
    }
    Ok(taken(swapped))
}

/// The lock was handed over to a waiter while its write was in flight (a write a kube client
/// can hold back for seconds, retrying a 429): the waiter takes the handover at once, and the
/// write, dropped, removes nothing. It was decided on a version before the handover, so it is
/// refused if it comes after; if it came before, it wrote the place the handover fulfilled.
fn abandon(kept: &AtomicBool) {
    tracing::debug!("the lock was handed over while a write was in flight");
    kept.store(true, Ordering::Release);
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Says, at warn level, that the caller took the lock over by force and whom it removed:
/// their critical sections are no longer protected (they learn it at their next renewal).
fn warn_taken_over(settings: &Settings, token: u64, taken_over: &[Holder]) {
    let removed: Vec<String> = taken_over.iter().map(ToString::to_string).collect();
    tracing::warn!(
        lock = %settings.name,
        holder = %settings.holder,
        token,
        removed = ?removed,
        "{} took lock {:?} over by force, removing {}",
        crate::text::printable(&settings.holder),
        settings.name,
        removed.join("; ")
    );
}

/// Why a take wrote nothing.
enum Unwritten<V> {
    Busy(Blocked),
    Handed(Record<V>, Vec<String>),
}

/// What to write for a decision, and what to undo if the write's outcome stays unknown.
fn to_write<L: Backend>(
    locker: &L,
    settings: &Settings,
    acquire: Acquire,
    nonce: String,
    kept: &Arc<AtomicBool>,
) -> Decision<Write, Unwritten<L::Version>, Armed<L>> {
    let (state, value) = match acquire {
        Acquire::Busy(blocked) => return Decision::Done(Unwritten::Busy(blocked)),
        Acquire::Queue {
            state,
            blocked,
            floor,
        } => (
            state,
            Write::Queue {
                blocked,
                floor,
                nonce,
            },
        ),
        Acquire::Take {
            state,
            token,
            expires,
            reentry,
            taken_over,
        } => (
            state,
            Write::Take {
                token,
                expires,
                reentry,
                nonce,
                taken_over,
            },
        ),
    };
    Decision::Write {
        on_unknown: Armed::new(locker, settings, value.undo(), kept),
        state,
        value,
    }
}

/// What a take did, from how its compare-and-swap ended.
fn taken<L: Backend>(
    swapped: Swapped<L::Version, Write, Unwritten<L::Version>, Armed<L>>,
) -> Taken<L> {
    match swapped {
        Swapped::Stored {
            version,
            state,
            value:
                Write::Take {
                    token,
                    expires,
                    reentry,
                    ..
                },
        } => Taken::Acquired(Acquired {
            version,
            state,
            token,
            expires,
            reentry,
        }),
        Swapped::Stored {
            version,
            state,
            value:
                Write::Queue {
                    blocked,
                    floor,
                    nonce,
                },
        } => Taken::Queued {
            blocked,
            record: Record::new(state, version),
            floor,
            nonce,
        },
        Swapped::Unknown { error, pending, .. } => Taken::Unknown {
            error,
            cleanup: pending,
        },
        Swapped::Done(Unwritten::Busy(blocked)) => Taken::Busy(blocked),
        Swapped::Done(Unwritten::Handed(record, places)) => Taken::Handed(record, places),
    }
}
