//! The [`Backend`] trait: what a place that keeps locks must do. It stores records and
//! compares-and-swaps them; it never decides who holds a lock.

use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use super::feed::{Changes, Snapshot};
use super::record::{Record, StoredStates, Written};
use crate::clock::Clock;
use crate::error::Error;
use crate::state::LockState;
use crate::state::kind::LockKind;

/// A place where locks are kept: the Kubernetes API ([`KubeLocker`](crate::KubeLocker)),
/// process memory ([`MemoryLocker`](crate::MemoryLocker)), or a store of your own.
///
/// A backend stores one [`LockState`] per lock name and writes it only by compare-and-swap;
/// it never decides who holds a lock. Every backend is a [`Locker`](crate::Locker) (a blanket
/// implementation): the locking rules, and the operations that carry them (taking, renewing,
/// releasing, [`get`](crate::Locker::get), [`list`](crate::Locker::list),
/// [`evict`](crate::Locker::evict)), are the crate's and the same for every backend.
///
/// Implement it with plain `async fn`s; the futures must be `Send`, as locks renew from
/// spawned tasks.
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
/// use lockheed::backend::{Backend, LockState, Record, StoredStates, Written};
/// use lockheed::{Error, Lock};
///
/// #[derive(Debug, Clone, Default)]
/// struct MapLocker(Arc<Mutex<HashMap<String, (String, u64)>>>);
///
/// impl Backend for MapLocker {
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
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Error> {
/// // Every backend is a Locker: locks, listing and eviction work on it at once.
/// let guard = Lock::new("db", MapLocker::default()).try_acquire().await?;
/// guard.release().await?;
/// # Ok(())
/// # }
/// ```
pub trait Backend: Debug + Clone + Send + Sync + 'static {
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

    /// Checks that this backend can keep lock `name` as a lock of `kind` taken with leases of
    /// `duration` (zero: no expiry), before any request is made: a format that keeps only
    /// some kinds refuses the others here rather than after a read. Default: any.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] saying what the backend cannot keep.
    fn check_lock(&self, name: &str, kind: &LockKind, duration: Duration) -> Result<(), Error> {
        let _ = (name, kind, duration);
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
    /// A state the backend cannot store (too large, a shape its format cannot express) is
    /// refused before any request, with the error the store itself would have caused
    /// ([`Error::TooLarge`], [`Error::InvalidConfig`]).
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

    /// Whether `version` was stored after `than` (`None`: this backend cannot tell). A write
    /// that lost a race decides again on the state the lock's feed shows only once the feed
    /// shows a newer one than the write was decided on (a watch that resumes replays older
    /// states first); without an answer, it reads the lock. Default: `None`.
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed::MemoryLocker;
    /// use lockheed::backend::Backend;
    ///
    /// assert_eq!(MemoryLocker::new().is_newer(&8, &7), Some(true));
    /// ```
    fn is_newer(&self, version: &Self::Version, than: &Self::Version) -> Option<bool> {
        let _ = (version, than);
        None
    }

    /// What the backend knows of lock `name` without a request, from a watch it runs anyway
    /// ([`Snapshot::Unknown`] when it knows nothing). A single attempt to take the lock starts
    /// from this instead of reading; the compare-and-swap catches a view that was stale.
    /// Default: [`Snapshot::Unknown`].
    fn known(&self, name: &str) -> Snapshot<Self::Version> {
        let _ = name;
        Snapshot::Unknown
    }

    /// The feed of lock `name`, if the backend can give it at no cost: its watch runs already
    /// (for other locks, say). A lock taken without waiting joins it, so that its guard's
    /// writes start from the lock as it changes. Default: `None`.
    fn watched(&self, name: &str) -> Option<Changes<Self::Version>> {
        let _ = name;
        None
    }

    /// A feed of the changes of lock `name`, shared by every waiter and holder of that lock in
    /// this process (see [`Feeds`](super::Feeds)); `None` when the backend cannot notify, and
    /// waiters poll. Default: `None`.
    fn changes(&self, name: &str) -> Option<Changes<Self::Version>> {
        let _ = name;
        None
    }
}
