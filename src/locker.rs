//! The [`Locker`] trait: what every backend offers its users. It is implemented for every
//! [`Backend`], and its operations apply the crate's rules, which a backend cannot change.

use std::future::Future;

use chrono::{DateTime, Utc};

use crate::backend::{Backend, Decision, Known, Start, compare_and_swap};
use crate::condition::Condition;
use crate::error::Error;
use crate::info::{Holder, LockInfo};
use crate::rules;

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

/// Which holders an operator removes ([`Locker::evict`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Evict<'a> {
    /// This holder's lease and its place in the queue, whatever their fencing token.
    Holder(&'a str),
    /// Every lease and every waiter's place.
    All,
}

/// A place where locks are kept, as its users see it: [`KubeLocker`](crate::KubeLocker),
/// [`MemoryLocker`](crate::MemoryLocker), or any [`Backend`] (every backend is a `Locker`).
///
/// Take locks with [`Lock::new(name, locker)`](crate::Lock::new); look at them with
/// [`get`](Self::get) and [`list`](Self::list); remove dead holders with
/// [`evict`](Self::evict); read the time leases are judged by with [`now`](Self::now). A user
/// of a locker needs nothing from [`Backend`], which is for those who write one. These
/// operations follow the crate's locking rules whatever the
/// backend: they are provided for every backend and cannot be overridden.
///
/// # Examples
///
/// ```
/// use lockheed::{Condition, Lock, Locker, MemoryLocker};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), lockheed::Error> {
/// // Code that takes any locker works with the Kubernetes one and the in-memory one alike.
/// async fn held_reports(locker: &impl Locker) -> Result<usize, lockheed::Error> {
///     let held = Condition::and([Condition::tags_contain("reports"), Condition::acquired(true)]);
///     Ok(locker.list(Some(&held)).await?.locks.len())
/// }
///
/// let locker = MemoryLocker::new();
/// let guard = Lock::new("nightly", locker.clone()).with_tags(["reports"]).try_acquire().await?;
/// assert_eq!(held_reports(&locker).await?, 1);
/// # guard.release().await?;
/// # Ok(())
/// # }
/// ```
pub trait Locker: Backend {
    /// What time it is by this locker's clock (the system clock unless the locker was given
    /// another, as `with_clock` does): the time every lease of this locker is judged by.
    /// Compare a guard's [`expires`](crate::LockGuard::expires) or a [`Holder`]'s times with
    /// it.
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
    /// let guard = Lock::new("db", locker.clone()).with_duration(Duration::from_secs(30)).try_acquire().await?;
    /// let left = guard.expires().await.unwrap() - locker.now();
    /// assert_eq!(left, chrono::Duration::seconds(30)); // the manual clock has not moved
    /// # guard.release().await?;
    /// # Ok(())
    /// # }
    /// ```
    fn now(&self) -> DateTime<Utc> {
        self.clock().now()
    }

    /// What lock `name` looks like now (`None`: it has never been stored).
    ///
    /// # Errors
    ///
    /// As [`Backend::read`].
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
        which: Evict<'_>,
    ) -> impl Future<Output = Result<Vec<Holder>, Error>> + Send {
        async move {
            self.check_name(name)?;
            let holder = match which {
                Evict::Holder(holder) => Some(holder),
                Evict::All => None,
            };
            let decide = |record: Option<&crate::backend::Record<Self::Version>>| {
                Ok(match record.and_then(|r| rules::evict(&r.state, holder)) {
                    Some((state, removed)) => Decision::Write {
                        state,
                        value: removed,
                        on_unknown: crate::backend::OnUnknown::nothing(),
                    },
                    None => Decision::Done(Vec::new()),
                })
            };
            let swapped = compare_and_swap(self, name, Start::Read, None, decide).await?;
            Ok(match swapped.known()? {
                Known::Stored { value: removed, .. } => {
                    // Their critical sections are no longer protected: say so, and whom.
                    let removed_text: Vec<String> =
                        removed.iter().map(ToString::to_string).collect();
                    tracing::warn!(
                        lock = %name,
                        removed = ?removed_text,
                        "holders removed from lock {name:?} by an operator's eviction: {}",
                        removed_text.join("; ")
                    );
                    removed
                }
                Known::Done(removed) => removed,
            })
        }
    }

    /// Every lock that meets `condition` (all with `None`), by name; locks whose state cannot
    /// be read are reported in [`LockList::unreadable`] instead of failing the listing.
    ///
    /// # Errors
    ///
    /// As [`Backend::read_all`].
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

impl<B: Backend> Locker for B {}
