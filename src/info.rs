//! What a caller learns about a lock: its holders, tags and fencing token.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::gotime::GoTime;
use crate::kind;
use crate::state::{Lease, LockState};

/// A holder of a lock and its lease (or a writer waiting for a read/write lock).
///
/// It serializes (for command lines and scripts) with camelCase keys, times in RFC 3339.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Holder {
    /// The holder's identity (Go's instance id; by default a random UUID per [`Lock`](crate::Lock)).
    pub id: String,
    /// When the lease ends, or `None` for a lock taken with a zero duration (no expiry).
    pub expires: Option<DateTime<Utc>>,
    /// When the holder took the lock, if the writer recorded it (this crate and kube-lock do).
    pub since: Option<DateTime<Utc>>,
    /// Why the holder took the lock, if it said.
    pub reason: Option<String>,
    /// The fencing token of the holder's acquisition, if the writer recorded it.
    pub token: Option<u64>,
    /// A shared holder of a read/write lock.
    pub shared: bool,
    /// Not a holder yet: a writer waiting for a read/write lock, which keeps new shared
    /// holders out until it has had its turn (or until its intent ends).
    pub waiting: bool,
}

impl Holder {
    pub(crate) fn from_lease(lease: &Lease, waiting: bool) -> Self {
        Self {
            id: lease.instance_id.clone(),
            expires: forever_is_none(lease.expires),
            since: lease.since.map(GoTime::to_utc),
            reason: lease.reason.clone(),
            token: lease.token,
            shared: lease.shared,
            waiting,
        }
    }

    /// A Go lockheed client in the middle of a write, seen as holding until `until`.
    pub(crate) fn reserved(by: &str, until: DateTime<Utc>) -> Self {
        Self {
            id: by.to_owned(),
            expires: Some(until),
            since: None,
            reason: None,
            token: None,
            shared: false,
            waiting: false,
        }
    }
}

fn forever_is_none(expires: GoTime) -> Option<DateTime<Utc>> {
    (!expires.is_forever()).then(|| expires.to_utc())
}

/// A lock as seen at one moment.
///
/// It serializes (for command lines and scripts) with camelCase keys:
///
/// ```
/// use lockheed::{Lock, Locker, MemoryLocker};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let locker = MemoryLocker::new();
/// let guard = Lock::new("jobs", locker.clone()).with_holder("worker-1").try_acquire().await?;
/// let json = serde_json::to_value(locker.get("jobs").await?.unwrap())?;
/// assert_eq!(json["holders"][0]["id"], "worker-1");
/// assert_eq!((&json["kind"], &json["maxHolders"], &json["fencingToken"]), (&"mutex".into(), &1.into(), &1.into()));
/// # guard.release().await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct LockInfo {
    /// The lock's name (without the backend's prefix).
    pub name: String,
    /// The kind of lock (`mutex`, `semaphore`, `rwlock`), or `""` for one never acquired.
    pub kind: String,
    /// The holders whose leases are live, in holder order.
    pub holders: Vec<Holder>,
    /// The most holders the lock admits at once: 1 for a mutex, the capacity of a semaphore,
    /// `None` for a read/write lock (any number of shared holders) or a lock never acquired.
    pub max_holders: Option<u32>,
    /// Writers waiting for a read/write lock whose intent is live.
    pub waiting_writers: Vec<Holder>,
    /// The lock's tags.
    pub tags: Vec<String>,
    /// The fencing token of the latest acquisition (0: never acquired by this crate).
    pub fencing_token: u64,
}

impl LockInfo {
    /// Reads `state` at `now`: leases that ended before `now` are not holders.
    pub(crate) fn from_state(name: &str, state: &LockState, now: DateTime<Utc>) -> Self {
        let live = |lease: &&Lease| lease.expires.to_utc() > now;
        Self {
            name: name.to_owned(),
            kind: state.lock_type.clone(),
            holders: state
                .leases
                .values()
                .filter(live)
                .map(|lease| Holder::from_lease(lease, false))
                .collect(),
            max_holders: kind::capacity(state),
            waiting_writers: state
                .waiting_writers
                .values()
                .filter(live)
                .map(|lease| Holder::from_lease(lease, true))
                .collect(),
            tags: state.tags.clone(),
            fencing_token: state.fencing_token,
        }
    }

    /// Whether anyone holds the lock.
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed::{Lock, Locker, MemoryLocker};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), lockheed::Error> {
    /// let locker = MemoryLocker::new();
    /// let guard = Lock::new("db", locker.clone()).try_acquire().await?;
    /// assert!(locker.get("db").await?.unwrap().is_held());
    /// guard.release().await?;
    /// assert!(!locker.get("db").await?.unwrap().is_held()); // stored, but free
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn is_held(&self) -> bool {
        !self.holders.is_empty()
    }
}

/// What a waiting [`acquire`](crate::Lock::acquire) waits for, as its
/// [observer](crate::Lock::on_wait) sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Waiting {
    /// The lock's name.
    pub lock: String,
    /// The holders in the way: every other holder of a full mutex or semaphore; the exclusive
    /// holder, or writers waiting ahead ([`Holder::waiting`]), of a read/write lock; a Go
    /// lockheed client in the middle of a write.
    pub holders: Vec<Holder>,
    /// The most holders the lock admits at once: 1 for a mutex, a semaphore's stored
    /// capacity, `None` for a read/write lock.
    pub max_holders: Option<u32>,
    /// How long the acquire has waited so far.
    pub waited: Duration,
}

impl Waiting {
    pub(crate) fn new(lock: &str) -> Self {
        Self {
            lock: lock.to_owned(),
            holders: Vec::new(),
            max_holders: None,
            waited: Duration::ZERO,
        }
    }
}
