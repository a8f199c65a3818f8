//! The kinds of lock: mutex, semaphore, and shared/exclusive (read/write).

use std::fmt;

use serde::Serialize;

/// `lockType` of a mutex, the only kind Go lockheed accepts.
pub(crate) const MUTEX: &str = "mutex";
/// `lockType` of a semaphore (N holders). Go lockheed refuses it, so it never rewrites one.
pub(crate) const SEMAPHORE: &str = "semaphore";
/// `lockType` of a shared/exclusive lock. Go lockheed refuses it too.
pub(crate) const RWLOCK: &str = "rwlock";

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

/// The kind of a stored lock, as [`LockInfo::kind`](crate::LockInfo::kind) reports it.
///
/// It serializes (and displays) as the `lockType` stored with the lock: `mutex`, `semaphore`,
/// `rwlock`, or whatever a newer writer stored.
///
/// # Examples
///
/// ```
/// use lockheed::{Lock, LockKind, Locker, MemoryLocker};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), lockheed::Error> {
/// let locker = MemoryLocker::new();
/// let guard = Lock::new("gpu", locker.clone()).with_max_holders(2).try_acquire().await?;
/// let info = locker.get("gpu").await?.unwrap();
/// assert_eq!(info.kind, Some(LockKind::Semaphore));
/// assert_eq!(LockKind::Semaphore.to_string(), "semaphore");
/// # guard.release().await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LockKind {
    /// One holder at a time (Go lockheed's only kind).
    Mutex,
    /// Up to [`LockInfo::max_holders`](crate::LockInfo::max_holders) holders at once.
    Semaphore,
    /// Any number of shared holders, or one exclusive holder.
    ReadWrite,
    /// A kind this version does not know (written by a newer one): never taken or overwritten.
    Other(String),
}

impl LockKind {
    /// The kind stored as `lock_type` (`None` for `""`: a lock never acquired).
    pub(crate) fn from_lock_type(lock_type: &str) -> Option<Self> {
        match lock_type {
            "" => None,
            MUTEX => Some(Self::Mutex),
            SEMAPHORE => Some(Self::Semaphore),
            RWLOCK => Some(Self::ReadWrite),
            other => Some(Self::Other(other.to_owned())),
        }
    }

    /// The stored `lockType`.
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed::LockKind;
    ///
    /// assert_eq!(LockKind::ReadWrite.as_str(), "rwlock");
    /// ```
    #[must_use]
    pub fn as_str(&self) -> &str {
        match self {
            Self::Mutex => MUTEX,
            Self::Semaphore => SEMAPHORE,
            Self::ReadWrite => RWLOCK,
            Self::Other(other) => other,
        }
    }
}

impl fmt::Display for LockKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for LockKind {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// The kind of lock a caller asks for (from the `Lock` builders), and the kind a lock has once
/// the stored one is taken into account ([`resolve`](crate::rules) makes the second from the
/// first): a semaphore's capacity is the caller's until one is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Mutex,
    Semaphore(u32),
    ReadWrite(Access),
}

impl Kind {
    /// The kind as users name it.
    pub(crate) fn public(self) -> LockKind {
        match self {
            Self::Mutex => LockKind::Mutex,
            Self::Semaphore(_) => LockKind::Semaphore,
            Self::ReadWrite(_) => LockKind::ReadWrite,
        }
    }

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
