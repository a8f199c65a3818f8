//! [`MemoryLocker`]: the same locks in process memory, for tests of code that takes locks.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use crate::backend::{Backend, Changes, Feeds, Record, Snapshot, StoredStates, Written};
use crate::clock::{Clock, SystemClock};
use crate::error::Error;
use crate::kubernetes::{DEFAULT_PREFIX, MAX_DATA_BYTES, check_name, check_state_size};
use crate::state::LockState;

/// Locks kept in this process's memory, with the same rules as every other backend. Clones
/// share the same locks.
///
/// Use it to test code that takes locks without a cluster: it behaves like
/// [`KubeLocker`](crate::KubeLocker) on a healthy API server, and its clock can be injected
/// ([`with_clock`](Self::with_clock)) so that expiry is tested without sleeping. States are
/// stored as the same JSON documents a ConfigMap holds.
///
/// It refuses what `KubeLocker` refuses, with the same errors, before storing anything: a lock
/// name that cannot form a ConfigMap name `lockheed-<name>` ([`Error::InvalidName`]; another
/// prefix with [`with_prefix`](Self::with_prefix), as `KubeLocker`'s), and a state larger than
/// a ConfigMap can hold ([`Error::TooLarge`]). Tests that pass on it do not fail in production
/// for these reasons. A store with other rules can turn the checks off, explicitly:
/// [`with_kubernetes_limits(false)`](Self::with_kubernetes_limits).
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
    /// The ConfigMap name prefix whose rules lock names follow, as in a `KubeLocker`.
    prefix: String,
    /// Whether names and sizes are checked as a `KubeLocker` checks them; if not, any
    /// non-empty name, and states of any size.
    kubernetes_limits: bool,
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
            prefix: DEFAULT_PREFIX.to_owned(),
            kubernetes_limits: true,
        }
    }

    /// Checks lock names as a [`KubeLocker::with_prefix`](crate::KubeLocker::with_prefix)
    /// with this prefix would (the default is `lockheed-`, as `KubeLocker`'s).
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed::{Error, Lock, MemoryLocker};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// // 250 characters fit in a ConfigMap name, but not after "lockheed-".
    /// let name = "a".repeat(250);
    /// let err = Lock::new(&name, MemoryLocker::new()).try_acquire().await.unwrap_err();
    /// assert!(matches!(err, Error::InvalidName { .. }));
    /// assert!(Lock::new(&name, MemoryLocker::new().with_prefix("")).try_acquire().await.is_ok());
    /// # }
    /// ```
    #[must_use]
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Whether lock names and state sizes are checked as a [`KubeLocker`](crate::KubeLocker)
    /// checks them. Default: `true`. With `false`, any non-empty lock name and states of any
    /// size are accepted: for tests of code meant for another store, never for code that runs
    /// on Kubernetes.
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed::{Lock, MemoryLocker};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), lockheed::Error> {
    /// let locker = MemoryLocker::new().with_kubernetes_limits(false);
    /// let guard = Lock::new("Not A Valid/Name", locker).try_acquire().await?;
    /// # guard.release().await?;
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn with_kubernetes_limits(mut self, check: bool) -> Self {
        self.kubernetes_limits = check;
        self
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

impl Backend for MemoryLocker {
    type Version = u64;

    fn clock(&self) -> Arc<dyn Clock> {
        Arc::clone(&self.clock)
    }

    fn check_name(&self, name: &str) -> Result<(), Error> {
        if self.kubernetes_limits {
            check_name(&self.prefix, name)
        } else if name.is_empty() {
            Err(Error::InvalidName {
                name: name.to_owned(),
                reason: "a lock name must not be empty".to_owned(),
            })
        } else {
            Ok(())
        }
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
        let json = state.to_json();
        if self.kubernetes_limits {
            // What a ConfigMap's data can hold (the state is its only data key here).
            check_state_size(&format!("memory/{name}"), json.len(), MAX_DATA_BYTES)?;
        }
        let mut locks = self.locks.lock().unwrap_or_else(PoisonError::into_inner);
        let current = locks.get(name).map(|(_, v)| *v);
        if current.as_ref() != expected {
            return Ok(Written::Conflict);
        }
        let next = current.unwrap_or(0) + 1;
        locks.insert(name.to_owned(), (json, next));
        // Published while the map is locked, so that feeds see writes in their order.
        self.feeds
            .publish(name, Snapshot::Present(Record::new(state.clone(), next)));
        Ok(Written::Stored(next))
    }

    fn is_newer(&self, version: &u64, than: &u64) -> Option<bool> {
        Some(version > than)
    }

    fn watched(&self, name: &str) -> Option<Changes<u64>> {
        // In memory, a feed costs nothing.
        self.changes(name)
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
