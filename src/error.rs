//! The crate's error type.

use crate::info::Holder;

/// Why a lock operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The lock name cannot be used: it would not form a valid object name for the backend.
    /// Checked before any request.
    #[error("invalid lock name {name:?}: {reason}")]
    InvalidName {
        /// The name as given.
        name: String,
        /// What is wrong with it.
        reason: String,
    },

    /// The lock's configuration is inconsistent (a renew interval not shorter than the
    /// duration, an empty tag). Checked before any request.
    #[error("invalid configuration of lock {lock:?}: {reason}")]
    InvalidConfig {
        /// The lock's name.
        lock: String,
        /// What is wrong.
        reason: String,
    },

    /// The lock is held by someone else (only from `try_acquire`; `acquire` waits instead).
    #[error("lock {lock:?} is {}", busy_with(holders))]
    Held {
        /// The lock's name.
        lock: String,
        /// Who holds it now, and the waiters queued ahead ([`Holder::waiting`]): a caller
        /// takes its turn after them.
        holders: Vec<Holder>,
        /// The most holders it admits at once: 1 for a mutex, a semaphore's stored capacity,
        /// `None` for a read/write lock.
        max_holders: Option<u32>,
    },

    /// The lock is of a kind this operation cannot take (written by a newer version of this
    /// crate or by another tool). It is never overwritten.
    #[error("lock {lock:?} is a {kind:?} lock, not a {wanted}")]
    WrongKind {
        /// The lock's name.
        lock: String,
        /// The stored `lockType`.
        kind: String,
        /// The kind the caller asked for (`mutex`, `semaphore` or `rwlock`).
        wanted: &'static str,
    },

    /// The stored state does not parse. The object is never overwritten by an acquire.
    #[error("the lock state in {object} is corrupt: {reason}")]
    Corrupt {
        /// The object that holds it, as `namespace/name` (or the backend's own naming).
        object: String,
        /// What is wrong with it.
        reason: String,
    },

    /// The state to write is larger than the backend can store.
    #[error("the lock state for {object} would be {size} bytes, over the limit of {limit}")]
    TooLarge {
        /// The object that would hold it.
        object: String,
        /// The size of the state.
        size: usize,
        /// The backend's limit.
        limit: usize,
    },

    /// The lock was lost: the lease ended before it could be renewed, or another holder took
    /// it over by force.
    #[error("lock {lock:?} was lost")]
    Lost {
        /// The lock's name.
        lock: String,
    },

    /// Other writers kept changing the lock between this caller's read and write, more times
    /// in a row than it retries.
    #[error("lock {lock:?} changed under every one of {attempts} attempts to write it")]
    Contended {
        /// The lock's name.
        lock: String,
        /// How many compare-and-swap attempts failed.
        attempts: u32,
    },

    /// The lock's object does not exist and the backend may not create it (kube-lock's
    /// format without `--create-configmap`: see
    /// [`KubeLocker::with_create`](crate::KubeLocker::with_create)).
    #[error("{object} does not exist, and creating it is not allowed")]
    Missing {
        /// The object, as `namespace/name`.
        object: String,
    },

    /// A request to the Kubernetes API failed.
    #[error("kubernetes request for {object} failed")]
    Kube {
        /// The object the request was about, as `namespace/name` (or `namespace` for a list).
        object: String,
        /// What the client said.
        #[source]
        source: kube::Error,
    },

    /// A backend other than the built-in ones failed.
    #[error("lock backend failed for {object}")]
    Backend {
        /// The object the operation was about.
        object: String,
        /// Whether trying again later may succeed (an unreachable store, an overload), as
        /// opposed to a failure that repeats (a permission, a bad request).
        transient: bool,
        /// The backend's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// [`Lock::acquire_timeout`](crate::Lock::acquire_timeout) (or the lock's
    /// [acquire timeout](crate::Lock::with_acquire_timeout)) ran out while the lock was held.
    #[error(
        "gave up waiting for lock {lock:?} after {}; {}",
        rounded(*waited),
        timeout_cause(holders)
    )]
    Timeout {
        /// The lock's name.
        lock: String,
        /// How long the caller waited.
        waited: std::time::Duration,
        /// Who held the lock when last seen.
        holders: Vec<Holder>,
        /// The most holders it admits at once, when last seen (as in [`Error::Held`]).
        max_holders: Option<u32>,
    },
}

/// A wait as people read it: to the millisecond (`3.001s`, not `3.00140275s`).
fn rounded(waited: std::time::Duration) -> String {
    let millis = u64::try_from(waited.as_millis()).unwrap_or(u64::MAX);
    format!("{:?}", std::time::Duration::from_millis(millis))
}

/// Why a timed-out acquire waited: the holders it saw, or, when it saw none, what kept it.
fn timeout_cause(holders: &[Holder]) -> String {
    if holders.is_empty() {
        "it saw no holder: other waiters of this process were ahead, or the lock could not be \
         read"
            .to_owned()
    } else {
        format!("it is {}", busy_with(holders))
    }
}

/// What keeps a lock busy: `held by a (...)`, `held by a (...), and b (...) waits ahead`,
/// `free, but b (...) waits ahead`.
fn busy_with(holders: &[Holder]) -> String {
    let list = |holders: &[&Holder]| {
        holders
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (waiting, held): (Vec<&Holder>, Vec<&Holder>) = holders.iter().partition(|h| h.waiting);
    let ahead = match waiting.len() {
        0 => String::new(),
        1 => format!("{} waits ahead", list(&waiting)),
        _ => format!("{} wait ahead", list(&waiting)),
    };
    match (held.is_empty(), ahead.is_empty()) {
        (true, true) => "held by a writer that is changing it".to_owned(),
        (false, true) => format!("held by {}", list(&held)),
        (false, false) => format!("held by {}, and {ahead}", list(&held)),
        (true, false) => format!("free, but {ahead}"),
    }
}

impl Error {
    /// Whether the lock is held by someone else ([`Error::Held`]).
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
    /// let err = Lock::new("jobs", locker).try_acquire().await.unwrap_err();
    /// assert!(err.is_held());
    /// # guard.release().await?;
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn is_held(&self) -> bool {
        matches!(self, Self::Held { .. })
    }

    /// The current holders, for [`Error::Held`] and [`Error::Timeout`].
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed::{Lock, MemoryLocker};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), lockheed::Error> {
    /// let locker = MemoryLocker::new();
    /// let guard = Lock::new("jobs", locker.clone()).with_holder("worker-1").try_acquire().await?;
    /// let err = Lock::new("jobs", locker).try_acquire().await.unwrap_err();
    /// assert_eq!(err.holders().unwrap()[0].id, "worker-1");
    /// # guard.release().await?;
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn holders(&self) -> Option<&[Holder]> {
        match self {
            Self::Held { holders, .. } | Self::Timeout { holders, .. } => Some(holders),
            _ => None,
        }
    }

    /// The most holders the lock admits at once, for [`Error::Held`] and [`Error::Timeout`]:
    /// with [`holders`](Self::holders), what a message like "1/1 holders" needs.
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed::{Lock, MemoryLocker};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), lockheed::Error> {
    /// let locker = MemoryLocker::new();
    /// let guard = Lock::new("gpu", locker.clone()).with_max_holders(1).try_acquire().await?;
    /// let err = Lock::new("gpu", locker).with_max_holders(1).try_acquire().await.unwrap_err();
    /// let (held, max) = (err.holders().unwrap().len(), err.max_holders().unwrap());
    /// assert_eq!(format!("{held}/{max} holders"), "1/1 holders");
    /// # guard.release().await?;
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn max_holders(&self) -> Option<u32> {
        match self {
            Self::Held { max_holders, .. } | Self::Timeout { max_holders, .. } => *max_holders,
            _ => None,
        }
    }

    /// Whether the same request may succeed later: the API server was unreachable, overloaded
    /// (429) or failing (5xx), or other writers kept winning. Permanent failures (403, 404,
    /// 422, a corrupt state, invalid input) are not transient: retrying cannot help.
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed::Error;
    ///
    /// let contended = Error::Contended { lock: "jobs".into(), attempts: 5 };
    /// assert!(contended.is_transient()); // others kept winning: try again later
    /// let corrupt = Error::Corrupt { object: "default/lockheed-jobs".into(), reason: "".into() };
    /// assert!(!corrupt.is_transient()); // it stays corrupt
    /// ```
    #[must_use]
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Kube { source, .. } => kube_error_is_transient(source),
            Self::Backend { transient, .. } => *transient,
            Self::Contended { .. } => true,
            _ => false,
        }
    }

    /// How long the server asked the client to wait before retrying (a 429's
    /// `Retry-After`), when it said.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use lockheed::Error;
    ///
    /// // A 429 as kube-apiserver answers it when overloaded.
    /// let status: kube::core::Status = serde_json::from_str(
    ///     r#"{"code":429,"reason":"TooManyRequests","details":{"retryAfterSeconds":2}}"#,
    /// ).unwrap();
    /// let source = kube::Error::Api(Box::new(status));
    /// let err = Error::Kube { object: "default/lockheed-jobs".into(), source };
    /// assert_eq!(err.retry_after(), Some(Duration::from_secs(2)));
    /// ```
    #[must_use]
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            Self::Kube {
                source: kube::Error::Api(status),
                ..
            } => status
                .details
                .as_ref()
                .map(|d| d.retry_after_seconds)
                .filter(|s| *s > 0)
                .map(|s| std::time::Duration::from_secs(u64::from(s))),
            _ => None,
        }
    }
}

fn kube_error_is_transient(err: &kube::Error) -> bool {
    match err {
        kube::Error::Api(status) => matches!(status.code, 429 | 500 | 502 | 503 | 504),
        // Connections refused, reset or timed out; the service layer's own failures.
        kube::Error::HyperError(_) | kube::Error::Service(_) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_lowercase_and_name_things() {
        let held = Error::Held {
            lock: "db".into(),
            holders: vec![Holder::from_lease(
                &crate::state::Lease::new("a", None),
                false,
            )],
            max_holders: Some(1),
        };
        assert_eq!(held.max_holders(), Some(1));
        assert_eq!(held.to_string(), "lock \"db\" is held by a (no expiry)");
        assert!(held.is_held());
        let corrupt = Error::Corrupt {
            object: "default/lockheed-broken".into(),
            reason: "expected value".into(),
        };
        assert_eq!(
            corrupt.to_string(),
            "the lock state in default/lockheed-broken is corrupt: expected value"
        );
    }

    #[test]
    fn a_busy_lock_names_its_holders_then_the_waiters_ahead() {
        let holder = Holder::from_lease(&crate::state::Lease::new("a", None), false);
        let mut waiter = holder.clone();
        waiter.id = "b".into();
        waiter.waiting = true;
        let held = |holders: Vec<Holder>| Error::Held {
            lock: "db".into(),
            holders,
            max_holders: Some(1),
        };
        assert_eq!(
            held(vec![holder.clone(), waiter.clone()]).to_string(),
            "lock \"db\" is held by a (no expiry), and b (waiting for its turn) waits ahead"
        );
        assert_eq!(
            held(vec![waiter.clone()]).to_string(),
            "lock \"db\" is free, but b (waiting for its turn) waits ahead"
        );
    }

    #[test]
    fn a_timeout_says_how_long_to_the_millisecond() {
        let timeout = Error::Timeout {
            lock: "db".into(),
            waited: std::time::Duration::from_nanos(3_001_402_750),
            holders: Vec::new(),
            max_holders: Some(1),
        };
        assert_eq!(
            timeout.to_string(),
            "gave up waiting for lock \"db\" after 3.001s; it saw no holder: other waiters of this process were ahead, or the lock could not be read"
        );
    }

    #[test]
    fn transient_or_not() {
        let api = |code: u16| Error::Kube {
            object: "default/x".into(),
            source: kube::Error::Api(Box::new(
                kube::core::Status::failure("boom", "X").with_code(code),
            )),
        };
        for code in [429, 500, 502, 503, 504] {
            assert!(api(code).is_transient(), "{code}");
        }
        for code in [400, 401, 403, 404, 409, 422] {
            assert!(!api(code).is_transient(), "{code}");
        }
        assert!(
            !Error::Corrupt {
                object: "x".into(),
                reason: "y".into()
            }
            .is_transient()
        );
        assert!(
            Error::Contended {
                lock: "x".into(),
                attempts: 3
            }
            .is_transient()
        );
    }

    #[test]
    fn bounds() {
        fn assert_send_sync<T: Send + Sync + 'static>() {}
        assert_send_sync::<Error>();
    }
}
