//! The kinds of lock: mutex, semaphore, and shared/exclusive (read/write).

use std::fmt;

use crate::error::Error;
use crate::state::{LockState, MUTEX, RWLOCK, SEMAPHORE};

/// How a holder takes a read/write lock ([`Lock::with_access`](crate::Lock::with_access)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// Together with other shared holders, never with an exclusive one (a reader).
    Shared,
    /// Alone (a writer). A waiting exclusive holder makes new shared holders wait, so that
    /// a steady stream of readers cannot starve it.
    Exclusive,
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Shared => "shared",
            Self::Exclusive => "exclusive",
        })
    }
}

/// What kind of lock a caller wants (set by the `Lock` builders).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Want {
    Mutex,
    /// A semaphore; the capacity applies only if the lock does not have one yet.
    Semaphore(u32),
    ReadWrite(Access),
}

impl Want {
    /// The stored `lockType` of this kind.
    pub(crate) fn lock_type(self) -> &'static str {
        match self {
            Self::Mutex => MUTEX,
            Self::Semaphore(_) => SEMAPHORE,
            Self::ReadWrite(_) => RWLOCK,
        }
    }
}

/// A lock's kind as it will be after an acquire: the stored kind wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Mutex,
    Semaphore(u32),
    ReadWrite(Access),
}

impl Kind {
    /// The most holders a lock of this kind admits at once (`None`: any number of shared
    /// holders of a read/write lock).
    pub(crate) fn capacity(self) -> Option<u32> {
        match self {
            Self::Mutex => Some(1),
            Self::Semaphore(max) => Some(max),
            Self::ReadWrite(_) => None,
        }
    }

    /// The stored `lockType` of this kind.
    pub(crate) fn lock_type(self) -> &'static str {
        match self {
            Self::Mutex => MUTEX,
            Self::Semaphore(_) => SEMAPHORE,
            Self::ReadWrite(_) => RWLOCK,
        }
    }
}

/// The kind lock `name` has for a caller that wants `want`: a lock that was never acquired
/// (`lockType` `""`) takes the caller's kind; otherwise the stored kind must match, and a
/// semaphore's stored capacity wins over the caller's.
///
/// # Errors
///
/// [`Error::WrongKind`] when the stored kind differs (the lock is never overwritten);
/// [`Error::Corrupt`] for a semaphore stored without a capacity.
pub(crate) fn resolve(name: &str, state: &LockState, want: Want) -> Result<Kind, Error> {
    let stored = state.lock_type.as_str();
    if !stored.is_empty() && stored != want.lock_type() {
        return Err(Error::WrongKind {
            lock: name.to_owned(),
            kind: stored.to_owned(),
            wanted: want.lock_type(),
        });
    }
    Ok(match want {
        Want::Mutex => Kind::Mutex,
        Want::ReadWrite(access) => Kind::ReadWrite(access),
        Want::Semaphore(_) if stored == SEMAPHORE && state.max_holders == 0 => {
            return Err(Error::Corrupt {
                object: name.to_owned(),
                reason: "a semaphore must have a capacity (maxHolders) of at least 1".to_owned(),
            });
        }
        Want::Semaphore(_) if stored == SEMAPHORE => Kind::Semaphore(state.max_holders),
        Want::Semaphore(max) => Kind::Semaphore(max),
    })
}

/// The most holders a lock of kind `lock_type` admits at once (`None`: no limit, for the
/// shared holders of a read/write lock; also `None` for a lock never acquired).
pub(crate) fn capacity(state: &LockState) -> Option<u32> {
    match state.lock_type.as_str() {
        MUTEX => Some(1),
        SEMAPHORE => Some(state.max_holders),
        _ => None,
    }
}
