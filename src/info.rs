//! What a caller learns about a lock: its holders, tags and fencing token.

use chrono::{DateTime, Utc};

use crate::gotime::GoTime;
use crate::state::LockState;

/// A holder of a lock and its lease.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Holder {
    /// The holder's identity (Go's instance id; by default a random UUID per [`Lock`](crate::Lock)).
    pub id: String,
    /// When the lease ends, or `None` for a lock taken with a zero duration (no expiry).
    pub expires: Option<DateTime<Utc>>,
}

impl Holder {
    pub(crate) fn new(id: &str, expires: GoTime) -> Self {
        Self {
            id: id.to_owned(),
            expires: (!expires.is_forever()).then(|| expires.to_utc()),
        }
    }
}

/// A lock as seen at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LockInfo {
    /// The lock's name (without the backend's prefix).
    pub name: String,
    /// The kind of lock (`mutex`), or `""` for one that was never acquired.
    pub kind: String,
    /// The holders whose leases are live, in holder order.
    pub holders: Vec<Holder>,
    /// The lock's tags.
    pub tags: Vec<String>,
    /// The fencing token of the latest acquisition (0: never acquired by this crate).
    pub fencing_token: u64,
}

impl LockInfo {
    /// Reads `state` at `now`: leases that ended before `now` are not holders.
    pub(crate) fn from_state(name: &str, state: &LockState, now: DateTime<Utc>) -> Self {
        Self {
            name: name.to_owned(),
            kind: state.lock_type.clone(),
            holders: live_holders(state, now),
            tags: state.tags.clone(),
            fencing_token: state.fencing_token,
        }
    }

    /// Whether anyone holds the lock.
    #[must_use]
    pub fn is_held(&self) -> bool {
        !self.holders.is_empty()
    }
}

/// Holders of `state` whose lease is live at `now` (`now < expires`, as in Go lockheed).
pub(crate) fn live_holders(state: &LockState, now: DateTime<Utc>) -> Vec<Holder> {
    state
        .leases
        .values()
        .filter(|lease| lease.expires.to_utc() > now)
        .map(|lease| Holder::new(&lease.instance_id, lease.expires))
        .collect()
}
