//! The take step: decide on a lock's record and write what takes it. A single
//! [`try_acquire`](crate::Lock::try_acquire) is one take; a waiting
//! [`acquire`](crate::Lock::acquire) takes once each time the lock may have become free.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::backend::{Backend, Decision, OnUnknown, Record, Start, Swapped, compare_and_swap};
use crate::cleanup::{self, Undo};
use crate::error::Error;
use crate::gotime::GoTime;
use crate::rules::{self, Acquire, Blocked};
use crate::settings::Settings;
use crate::state::LockState;
use crate::watched::Watched;

/// The write that took a lock.
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
pub(crate) enum Taken<V> {
    /// The lock is taken.
    Acquired(Acquired<V>),
    /// Someone else holds it.
    Busy(Blocked),
    /// Someone else holds it, and this waiting writer's intent is now recorded in `record`.
    /// `withdraw` removes the intent when dropped armed: keep it until the acquire ends.
    Announced {
        blocked: Blocked,
        record: Record<V>,
        withdraw: OnUnknown,
    },
    /// The write failed and may have happened all the same (a timeout, a 5xx). `cleanup`
    /// removes what it may have written when dropped armed: at once if the acquire gives up,
    /// or when it ends without the lock; a later take that succeeds disarms it.
    Unknown { error: Error, cleanup: OnUnknown },
}

/// What a decision to write will have done, once written.
enum Write {
    Take {
        token: u64,
        expires: GoTime,
        reentry: bool,
    },
    Announce(Blocked),
}

/// Decides an acquire by `settings` on `record` (`None`: the lock is not stored) at `now`.
/// `unchanged_for` and `announce` are as in [`Settings::request`].
///
/// # Errors
///
/// The rules' errors: a lock of another kind, a token that cannot advance.
pub(crate) fn decide<V>(
    settings: &Settings,
    record: Option<&Record<V>>,
    now: DateTime<Utc>,
    unchanged_for: Option<&BTreeMap<String, Duration>>,
    announce: bool,
) -> Result<Acquire, Error> {
    let empty;
    let (state, reservation) = if let Some(r) = record {
        (&r.state, r.reservation.as_ref())
    } else {
        empty = LockState::empty(&settings.name);
        (&empty, None)
    };
    let request = settings.request(unchanged_for, announce);
    rules::acquire(&settings.name, state, reservation, request, now)
}

/// Takes the lock if the rules allow it on its current record (read first, or as `start`
/// knows it), writing by compare-and-swap; a conflict reads again and decides again. A waiter
/// passes what it has `watched` of the other holders' leases (a single attempt has seen
/// nothing), and `announce`s its intent if it is a blocked writer.
///
/// # Errors
///
/// The rules' errors; the backend's permanent errors; [`Error::Contended`].
///
/// # Cancel safety
///
/// If the future is dropped while a write that takes the lock is in flight, what it may have
/// written is removed in the background.
pub(crate) async fn take<L: Backend>(
    locker: &L,
    settings: &Settings,
    start: Start<L::Version>,
    mut watched: Option<&mut Watched>,
    announce: bool,
) -> Result<Taken<L::Version>, Error> {
    let clock = locker.clock();
    let decision = |record: Option<&Record<L::Version>>| {
        let unchanged = watched
            .as_deref_mut()
            .map(|w| w.observe(record, &settings.holder));
        let acquire = decide(settings, record, clock.now(), unchanged.as_ref(), announce)?;
        Ok(to_write(locker, settings, acquire))
    };
    let swapped = compare_and_swap(locker, &settings.name, start, decision).await?;
    Ok(taken(locker, settings, swapped))
}

/// What to write for a decision, and what to undo if the write's outcome stays unknown.
fn to_write<L: Backend>(
    locker: &L,
    settings: &Settings,
    acquire: Acquire,
) -> Decision<Write, Blocked> {
    match acquire {
        Acquire::Busy(blocked) => Decision::Done(blocked),
        Acquire::Announce { state, blocked } => Decision::Write {
            state,
            value: Write::Announce(blocked),
            on_unknown: OnUnknown::nothing(),
        },
        Acquire::Take {
            state,
            token,
            expires,
            reentry,
        } => Decision::Write {
            state,
            value: Write::Take {
                token,
                expires,
                reentry,
            },
            on_unknown: cleanup::on_unknown(locker, settings, Undo::Lease { token, reentry }),
        },
    }
}

/// What a take did, from how its compare-and-swap ended. A writer's intent, once written or
/// perhaps written, is withdrawn unless the acquire takes the lock.
fn taken<L: Backend>(
    locker: &L,
    settings: &Settings,
    swapped: Swapped<L::Version, Write, Blocked>,
) -> Taken<L::Version> {
    match swapped {
        Swapped::Stored {
            version,
            state,
            value:
                Write::Take {
                    token,
                    expires,
                    reentry,
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
            value: Write::Announce(blocked),
        } => Taken::Announced {
            blocked,
            record: Record::new(state, version),
            withdraw: cleanup::on_unknown(locker, settings, Undo::Intent),
        },
        Swapped::Unknown {
            error,
            value: Write::Announce(_),
            pending,
        } => {
            pending.disarm();
            Taken::Unknown {
                error,
                cleanup: cleanup::on_unknown(locker, settings, Undo::Intent),
            }
        }
        Swapped::Unknown { error, pending, .. } => Taken::Unknown {
            error,
            cleanup: pending,
        },
        Swapped::Done(blocked) => Taken::Busy(blocked),
    }
}
