//! What a caller learns about a lock: its holders, tags and fencing token.

use std::fmt::{self, Write as _};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Serialize, Serializer};

use crate::state::gotime::GoTime;
use crate::state::kind::LockKind;
use crate::state::{Lease, LockState, QueueEntry};
use crate::text::printable;

/// A holder of a lock and its lease, or a waiter queued for it ([`Holder::waiting`]).
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
    /// Not a holder yet: a waiter queued for the lock, which keeps those who came after it
    /// out until it has had its turn (or until its place ends: see
    /// [`LockInfo::waiters`]). Its `expires` is when its place ends unless it refreshes it.
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

    /// Describes the holder in one line for people, with times relative to `now`: `worker-1
    /// (since 2026-11-23T09:59:30Z (20s ago), token 7, lease ends in 40s, reason "db
    /// restart")`. The command lines show holders this way; the holder's
    /// [`Display`](fmt::Display) is the same line with absolute times (`until ...` instead
    /// of `lease ends in ...`), as error messages show it.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use lockheed::{Lock, Locker, MemoryLocker};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), lockheed::Error> {
    /// let locker = MemoryLocker::new();
    /// let guard = Lock::new("db", locker.clone())
    ///     .with_holder("worker-1")
    ///     .with_duration(Duration::ZERO)
    ///     .with_reason("db restart")
    ///     .try_acquire()
    ///     .await?;
    /// let holder = &locker.get("db").await?.unwrap().holders[0];
    /// let now = holder.since.unwrap() + chrono::Duration::seconds(20);
    /// assert!(holder.describe(now).ends_with(
    ///     r#"(20s ago), token 1, no expiry, reason "db restart")"#
    /// ));
    /// # guard.release().await?;
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn describe(&self, now: DateTime<Utc>) -> String {
        self.line(Some(now))
    }

    /// The holder in one line: times relative to `now`, or absolute without it.
    fn line(&self, now: Option<DateTime<Utc>>) -> String {
        let mut parts = Vec::new();
        if self.waiting {
            parts.push("waiting for its turn".to_owned());
        }
        if self.shared {
            parts.push("shared".to_owned());
        }
        if let Some(since) = self.since {
            let mut part = format!("since {}", since.to_rfc3339_opts(SecondsFormat::Secs, true));
            if let Some(now) = now {
                let _ = write!(part, " ({} ago)", short(now - since));
            }
            parts.push(part);
        }
        if let Some(token) = self.token {
            parts.push(format!("token {token}"));
        }
        if !self.waiting {
            parts.push(match (self.expires, now) {
                (None, _) => "no expiry".to_owned(),
                (Some(at), None) => {
                    format!("until {}", at.to_rfc3339_opts(SecondsFormat::Secs, true))
                }
                (Some(at), Some(now)) if at <= now => {
                    format!("lease ended {} ago", short(now - at))
                }
                (Some(at), Some(now)) => format!("lease ends in {}", short(at - now)),
            });
        }
        if let Some(reason) = &self.reason {
            parts.push(format!("reason {reason:?}"));
        }
        let id = printable(&self.id);
        if parts.is_empty() {
            id.into_owned()
        } else {
            format!("{id} ({})", parts.join(", "))
        }
    }

    /// A waiter queued for the lock.
    pub(crate) fn from_entry(entry: &QueueEntry) -> Self {
        Self {
            id: entry.instance_id.clone(),
            expires: forever_is_none(entry.expires),
            since: Some(entry.since.to_utc()),
            reason: entry.reason.clone(),
            token: None,
            shared: entry.shared,
            waiting: true,
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

impl fmt::Display for Holder {
    /// The holder in one line, with absolute times: `worker-1 (since
    /// 2026-11-23T09:59:30Z, token 7, until 2026-11-23T10:00:30Z, reason "db restart")`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.line(None))
    }
}

fn forever_is_none(expires: GoTime) -> Option<DateTime<Utc>> {
    (!expires.is_forever()).then(|| expires.to_utc())
}

/// A span of time for people: `12s`, `3m05s`, `1h02m`.
fn short(span: chrono::Duration) -> String {
    let secs = span.num_seconds().max(0);
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m{:02}s", secs / 60, secs % 60),
        _ => format!("{}h{:02}m", secs / 3600, secs / 60 % 60),
    }
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
    /// The kind of lock, `None` for one never acquired. Serialized as the stored `lockType`
    /// (`mutex`, `semaphore`, `rwlock`; `""` for `None`).
    #[serde(serialize_with = "kind_or_empty")]
    pub kind: Option<LockKind>,
    /// The holders whose leases are live, in holder order.
    pub holders: Vec<Holder>,
    /// The most holders the lock admits at once: 1 for a mutex, the capacity of a semaphore,
    /// `None` for a read/write lock (any number of shared holders) or a lock never acquired.
    pub max_holders: Option<u32>,
    /// The waiters queued for the lock whose place is live, in the order they came (first
    /// come, first served; each marked [`Holder::waiting`]).
    pub waiters: Vec<Holder>,
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
            kind: LockKind::from_lock_type(&state.lock_type),
            holders: state
                .leases
                .values()
                .filter(live)
                .map(|lease| Holder::from_lease(lease, false))
                .collect(),
            max_holders: state.capacity(),
            waiters: state
                .queue
                .iter()
                .filter(|entry| entry.expires.to_utc() > now)
                .map(Holder::from_entry)
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

#[allow(clippy::ref_option)] // serde's serialize_with passes a reference.
fn kind_or_empty<S: Serializer>(kind: &Option<LockKind>, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(kind.as_ref().map_or("", LockKind::as_str))
}

/// What a waiting [`acquire`](crate::Lock::acquire) waits for, as its
/// [observer](crate::Lock::on_wait) sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Waiting {
    /// The lock's name.
    pub lock: String,
    /// What is in the way: the holders of a full mutex or semaphore, the exclusive holder of
    /// a read/write lock (or its shared ones, for a writer), the waiters queued ahead
    /// ([`Holder::waiting`]), or a Go lockheed client in the middle of a write.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Lease;

    #[test]
    fn holders_from_the_cluster_print_without_control_characters() {
        let sneaky = Holder::from_lease(&Lease::new("esc \u{1b}[2J\u{202e}x", None), false);
        let line = sneaky.to_string();
        assert_eq!(line, r#""esc \u{1b}[2J\u{202e}x" (no expiry)"#);
        let plain = Holder::from_lease(&Lease::new("wörker-1 🔒", None), false);
        assert_eq!(plain.to_string(), "wörker-1 🔒 (no expiry)");
        // The identity itself is kept exactly.
        assert_eq!(sneaky.id, "esc \u{1b}[2J\u{202e}x");
    }
}
