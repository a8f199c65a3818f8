//! [`MemoryLocker`]: the same locks in process memory, for tests of code that takes locks.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use crate::clock::{Clock, SystemClock};
use crate::error::Error;
use crate::feed::{Changes, Feeds, Snapshot};
use crate::locker::{Locker, Record, StoredStates, Written};
use crate::state::LockState;

/// Locks kept in this process's memory, with the same rules as every other backend. Clones
/// share the same locks.
///
/// Use it to test code that takes locks without a cluster: it behaves like
/// [`KubeLocker`](crate::KubeLocker) on a healthy API server, and its clock can be injected
/// ([`with_clock`](Self::with_clock)) so that expiry is tested without sleeping. States are
/// stored as the same JSON documents a ConfigMap holds.
///
/// # Examples
///
/// ```
/// use lockheed::{Lock, MemoryLocker};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), lockheed::Error> {
/// let locker = MemoryLocker::new();
/// let guard = Lock::new("jobs", locker.clone()).try_acquire().await?;
/// assert!(Lock::new("jobs", locker.clone()).try_acquire().await.unwrap_err().is_held());
/// guard.release().await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct MemoryLocker {
    locks: Arc<Mutex<BTreeMap<String, (String, u64)>>>,
    clock: Arc<dyn Clock>,
    feeds: Feeds<u64>,
}

impl Default for MemoryLocker {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryLocker {
    /// An empty locker on the system clock.
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed::{Locker, MemoryLocker};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), lockheed::Error> {
    /// let locker = MemoryLocker::new();
    /// assert!(locker.list(None).await?.locks.is_empty());
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn new() -> Self {
        Self {
            locks: Arc::default(),
            clock: Arc::new(SystemClock),
            feeds: Feeds::new(),
        }
    }

    /// Judges leases by `clock` instead of the system clock.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::{sync::Arc, time::Duration};
    /// use lockheed::{clock::ManualClock, Lock, Locker, MemoryLocker};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), lockheed::Error> {
    /// let clock = ManualClock::new(chrono::Utc::now());
    /// let locker = MemoryLocker::new().with_clock(Arc::new(clock.clone()));
    /// let lock = Lock::new("jobs", locker.clone()).with_duration(Duration::from_secs(30));
    /// lock.try_acquire().await?.forget(); // stop renewing, leave the lease
    /// clock.advance(Duration::from_secs(31));
    /// assert!(!locker.get("jobs").await?.unwrap().is_held()); // expired, without sleeping
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Stores a raw state document for `name`, as another tool (or a corruption) would; for
    /// tests of how locks react to what they find.
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed::{Error, Lock, MemoryLocker};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let locker = MemoryLocker::new();
    /// locker.insert_raw("jobs", "{not json");
    /// let err = Lock::new("jobs", locker).try_acquire().await.unwrap_err();
    /// assert!(matches!(err, Error::Corrupt { .. }));
    /// # }
    /// ```
    pub fn insert_raw(&self, name: &str, json: &str) {
        let mut locks = self.locks.lock().unwrap_or_else(PoisonError::into_inner);
        let version = locks.get(name).map_or(1, |(_, v)| v + 1);
        locks.insert(name.to_owned(), (json.to_owned(), version));
        self.feeds.publish(name, Snapshot::Unknown);
        drop(locks);
    }

    fn snapshot(locks: &BTreeMap<String, (String, u64)>, name: &str) -> Snapshot<u64> {
        match locks.get(name) {
            None => Snapshot::Absent,
            Some((json, version)) => match Self::parse(name, json) {
                Ok(state) => Snapshot::Present(Record::new(state, *version)),
                Err(_) => Snapshot::Unknown,
            },
        }
    }

    fn parse(name: &str, json: &str) -> Result<LockState, Error> {
        LockState::from_json(json).map_err(|e| Error::Corrupt {
            object: format!("memory/{name}"),
            reason: e.to_string(),
        })
    }
}

impl Locker for MemoryLocker {
    type Version = u64;

    fn clock(&self) -> Arc<dyn Clock> {
        Arc::clone(&self.clock)
    }

    async fn read(&self, name: &str) -> Result<Option<Record<u64>>, Error> {
        let locks = self.locks.lock().unwrap_or_else(PoisonError::into_inner);
        locks
            .get(name)
            .map(|(json, version)| Ok(Record::new(Self::parse(name, json)?, *version)))
            .transpose()
    }

    async fn write(
        &self,
        name: &str,
        expected: Option<&u64>,
        state: &LockState,
    ) -> Result<Written<u64>, Error> {
        let mut locks = self.locks.lock().unwrap_or_else(PoisonError::into_inner);
        let current = locks.get(name).map(|(_, v)| *v);
        if current.as_ref() != expected {
            return Ok(Written::Conflict);
        }
        let next = current.unwrap_or(0) + 1;
        locks.insert(name.to_owned(), (state.to_json(), next));
        // Published while the map is locked, so that feeds see writes in their order.
        self.feeds
            .publish(name, Snapshot::Present(Record::new(state.clone(), next)));
        Ok(Written::Stored(next))
    }

    fn changes(&self, name: &str) -> Option<Changes<u64>> {
        // Under the map's lock, so that no write slips between the snapshot and the feed.
        let locks = self.locks.lock().unwrap_or_else(PoisonError::into_inner);
        let current = Self::snapshot(&locks, name);
        Some(self.feeds.subscribe(name, move |publisher| {
            publisher.publish(current);
            None
        }))
    }

    async fn read_all(&self) -> Result<StoredStates, Error> {
        let locks = self.locks.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(locks
            .iter()
            .map(|(name, (json, _))| (name.clone(), Self::parse(name, json)))
            .collect())
    }
}
