//! The [`Locker`] trait: what a backend does. It stores and compares-and-swaps records; the
//! locking rules (who may take a lock, expiry, tags, force, fencing) live in the crate and are
//! the same for every backend.

use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::clock::Clock;
use crate::condition::Condition;
use crate::error::Error;
use crate::feed::Changes;
use crate::info::LockInfo;
use crate::state::LockState;

/// Every lock of a backend by name: its state, or the error that says why it cannot be read.
pub type StoredStates = Vec<(String, Result<LockState, Error>)>;

/// A lock's state as a backend read it, with the version to compare against when writing.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Record<V> {
    /// The state ([`LockState::empty`] for an object that exists without one).
    pub state: LockState,
    /// What the next write must find unchanged (a resourceVersion, a counter, ...).
    pub version: V,
    /// Another tool's write in progress, which makes the lock busy until it ends or the
    /// version changes (Go lockheed's `reserved/by` annotation).
    pub reservation: Option<Reservation>,
}

impl<V> Record<V> {
    /// A record without a reservation.
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed::{LockState, Record};
    ///
    /// // What a backend's read returns for a lock stored at version 7.
    /// let record = Record::new(LockState::empty("db"), 7_u64);
    /// assert!(record.reservation.is_none());
    /// ```
    pub fn new(state: LockState, version: V) -> Self {
        Self {
            state,
            version,
            reservation: None,
        }
    }
}

/// A write in progress by another client.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Reservation {
    /// Who reserved the lock.
    pub by: String,
    /// Until when.
    pub until: DateTime<Utc>,
}

impl Reservation {
    /// A reservation by `by` until `until`.
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed::Reservation;
    ///
    /// // A Go lockheed writer's `reserved/by` annotation, as a backend reports it.
    /// let until = chrono::Utc::now() + chrono::Duration::seconds(30);
    /// let reservation = Reservation::new("6f1d2c3e-go-instance", until);
    /// assert_eq!(reservation.by, "6f1d2c3e-go-instance");
    /// ```
    #[must_use]
    pub fn new(by: impl Into<String>, until: DateTime<Utc>) -> Self {
        Self {
            by: by.into(),
            until,
        }
    }
}

/// The outcome of a compare-and-swap write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Written<V> {
    /// Stored; the new version to compare against next time.
    Stored(V),
    /// The stored version was not the expected one (or an object to create already exists):
    /// nothing was written. The caller re-reads and decides again.
    Conflict,
}

/// All locks of a backend, as listed.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct LockList {
    /// The locks that could be read (and met the condition, if one was given).
    pub locks: Vec<LockInfo>,
    /// Locks whose state could not be read, each an [`Error::Corrupt`] that names its object.
    /// They never hide the others.
    pub unreadable: Vec<Error>,
}

/// A place where locks are kept: the Kubernetes API ([`KubeLocker`](crate::KubeLocker)),
/// process memory ([`MemoryLocker`](crate::MemoryLocker)), or a store of your own.
///
/// A backend stores one [`LockState`] per lock name and writes it only by compare-and-swap;
/// it never decides who holds a lock. Implement it with plain `async fn`s; the futures must be
/// `Send`, as locks renew from spawned tasks.
///
/// # Cancel safety
///
/// The crate may drop any of these futures at an await point (a caller's timeout). A write
/// that was dropped may or may not have happened, exactly as with a lost answer from a
/// server: the next read tells.
///
/// # Examples
///
/// A backend over a shared map (this is what [`MemoryLocker`](crate::MemoryLocker) does):
///
/// ```
/// use std::collections::HashMap;
/// use std::sync::{Arc, Mutex};
/// use lockheed::{Error, LockState, Locker, Record, StoredStates, Written};
///
/// #[derive(Clone, Default)]
/// struct MapLocker(Arc<Mutex<HashMap<String, (String, u64)>>>);
///
/// impl Locker for MapLocker {
///     type Version = u64;
///
///     async fn read(&self, name: &str) -> Result<Option<Record<u64>>, Error> {
///         let map = self.0.lock().unwrap();
///         let Some((json, version)) = map.get(name) else { return Ok(None) };
///         let state = LockState::from_json(json)
///             .map_err(|e| Error::Corrupt { object: name.into(), reason: e.to_string() })?;
///         Ok(Some(Record::new(state, *version)))
///     }
///
///     async fn write(&self, name: &str, expected: Option<&u64>, state: &LockState)
///         -> Result<Written<u64>, Error>
///     {
///         let mut map = self.0.lock().unwrap();
///         let current = map.get(name).map(|(_, v)| *v);
///         if current.as_ref() != expected {
///             return Ok(Written::Conflict);
///         }
///         let next = current.unwrap_or(0) + 1;
///         map.insert(name.to_owned(), (state.to_json(), next));
///         Ok(Written::Stored(next))
///     }
///
///     async fn read_all(&self) -> Result<StoredStates, Error> {
///         let map = self.0.lock().unwrap();
///         Ok(map.iter().map(|(name, (json, _))| {
///             let state = LockState::from_json(json)
///                 .map_err(|e| Error::Corrupt { object: name.clone(), reason: e.to_string() });
///             (name.clone(), state)
///         }).collect())
///     }
/// }
/// # impl std::fmt::Debug for MapLocker {
/// #     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { f.write_str("MapLocker") }
/// # }
/// ```
pub trait Locker: Debug + Clone + Send + Sync + 'static {
    /// What a write compares against.
    type Version: Clone + Debug + Send + Sync + 'static;

    /// The clock leases are judged by. Default: [`SystemClock`](crate::clock::SystemClock).
    fn clock(&self) -> Arc<dyn Clock> {
        Arc::new(crate::clock::SystemClock)
    }

    /// Checks that `name` can name a lock in this backend, before any request is made.
    /// Default: not empty.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`] saying why.
    fn check_name(&self, name: &str) -> Result<(), Error> {
        if name.is_empty() {
            return Err(Error::InvalidName {
                name: name.to_owned(),
                reason: "a lock name must not be empty".to_owned(),
            });
        }
        Ok(())
    }

    /// Reads the record of lock `name`: `None` when the lock has never been stored.
    ///
    /// # Errors
    ///
    /// [`Error::Corrupt`] when the stored state does not parse; the backend's own errors.
    fn read(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Option<Record<Self::Version>>, Error>> + Send;

    /// Stores `state` for lock `name` if its version is still `expected` (`None`: only if the
    /// lock has never been stored), keeping whatever else the backend keeps next to it.
    ///
    /// # Errors
    ///
    /// The backend's own errors; a version mismatch is [`Written::Conflict`], not an error.
    fn write(
        &self,
        name: &str,
        expected: Option<&Self::Version>,
        state: &LockState,
    ) -> impl Future<Output = Result<Written<Self::Version>, Error>> + Send;

    /// Reads every lock of the backend: each name with its state, or the error that names
    /// why it could not be read.
    ///
    /// # Errors
    ///
    /// When the backend cannot be listed at all.
    fn read_all(&self) -> impl Future<Output = Result<StoredStates, Error>> + Send;

    /// A feed of the changes of lock `name`, shared by every waiter of that lock in this
    /// process (see [`Feeds`](crate::Feeds)); `None` when the backend cannot notify, and
    /// waiters poll. Default: `None`.
    fn changes(&self, name: &str) -> Option<Changes<Self::Version>> {
        let _ = name;
        None
    }

    /// What lock `name` looks like now (`None`: it has never been stored).
    ///
    /// # Errors
    ///
    /// As [`read`](Self::read).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads.
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed::{Lock, Locker, MemoryLocker};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), lockheed::Error> {
    /// let locker = MemoryLocker::new();
    /// assert!(locker.get("db").await?.is_none()); // never stored
    /// let guard = Lock::new("db", locker.clone()).with_holder("a").try_acquire().await?;
    /// let info = locker.get("db").await?.unwrap();
    /// assert_eq!((info.holders[0].id.as_str(), info.fencing_token), ("a", guard.token()));
    /// # guard.release().await?;
    /// # Ok(())
    /// # }
    /// ```
    fn get(&self, name: &str) -> impl Future<Output = Result<Option<LockInfo>, Error>> + Send {
        async move {
            self.check_name(name)?;
            let now = self.clock().now();
            Ok(self
                .read(name)
                .await?
                .map(|record| LockInfo::from_state(name, &record.state, now)))
        }
    }

    /// Removes holders from lock `name` whatever their leases say: `which` names one holder
    /// (its lease, and its intent if it is a waiting writer) or all of them. This is for an
    /// operator removing a dead holder (a kube-lock `--unlock`, `lockheed release`); the
    /// removed holders' guards, if they still run, see [`LockGuard::lost`](crate::LockGuard::lost)
    /// fire at their next renewal. Returns the holders removed (none when there was nothing
    /// to remove, or the lock does not exist); the lock's tags and fencing counter stay.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`] before any request; [`Error::Corrupt`] for a state that does not
    /// parse (never overwritten); [`Error::Contended`] when other writers kept changing the
    /// lock; the backend's errors.
    ///
    /// # Cancel safety
    ///
    /// Each write is one compare-and-swap: if the future is dropped, the holders were either
    /// all removed or not at all.
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed::{Evict, Lock, Locker, MemoryLocker};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), lockheed::Error> {
    /// let locker = MemoryLocker::new();
    /// let guard = Lock::new("db", locker.clone()).with_holder("crashed-job").acquire().await?;
    /// guard.forget(); // as if its process had died
    /// let removed = locker.evict("db", Evict::Holder("crashed-job")).await?;
    /// assert_eq!(removed[0].id, "crashed-job");
    /// assert!(!locker.get("db").await?.unwrap().is_held());
    /// # Ok(())
    /// # }
    /// ```
    fn evict(
        &self,
        name: &str,
        which: crate::rules::Evict<'_>,
    ) -> impl Future<Output = Result<Vec<crate::info::Holder>, Error>> + Send {
        async move {
            self.check_name(name)?;
            for _ in 0..crate::lock::MAX_CAS_ATTEMPTS {
                let Some(record) = self.read(name).await? else {
                    return Ok(Vec::new());
                };
                let Some((next, removed)) = crate::rules::evict(&record.state, which) else {
                    return Ok(Vec::new());
                };
                match self.write(name, Some(&record.version), &next).await? {
                    Written::Stored(_) => return Ok(removed),
                    Written::Conflict => {}
                }
            }
            Err(Error::Contended {
                lock: name.to_owned(),
                attempts: crate::lock::MAX_CAS_ATTEMPTS,
            })
        }
    }

    /// Every lock that meets `condition` (all with `None`), by name; locks whose state cannot
    /// be read are reported in [`LockList::unreadable`] instead of failing the listing.
    ///
    /// # Errors
    ///
    /// As [`read_all`](Self::read_all).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads.
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed::{Condition, Lock, Locker, MemoryLocker};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), lockheed::Error> {
    /// let locker = MemoryLocker::new();
    /// let db = Lock::new("db", locker.clone()).with_tags(["prod"]).try_acquire().await?;
    /// Lock::new("cache", locker.clone()).with_tags(["prod"]).try_acquire().await?.release().await?;
    /// locker.insert_raw("broken", "{not json");
    /// let free_prod = Condition::and([Condition::tags_contain("prod"), Condition::acquired(false)]);
    /// let list = locker.list(Some(&free_prod)).await?;
    /// assert_eq!(list.locks.iter().map(|l| l.name.as_str()).collect::<Vec<_>>(), ["cache"]);
    /// assert_eq!(list.unreadable.len(), 1); // reported, never hiding the others
    /// # db.release().await?;
    /// # Ok(())
    /// # }
    /// ```
    fn list(
        &self,
        condition: Option<&Condition>,
    ) -> impl Future<Output = Result<LockList, Error>> + Send {
        async move {
            let now = self.clock().now();
            let mut list = LockList::default();
            for (name, state) in self.read_all().await? {
                match state {
                    Ok(state) => {
                        let info = LockInfo::from_state(&name, &state, now);
                        if condition.is_none_or(|c| c.matches(&info)) {
                            list.locks.push(info);
                        }
                    }
                    Err(err) => list.unreadable.push(err),
                }
            }
            list.locks.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(list)
        }
    }
}
