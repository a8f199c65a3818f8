//! A lock's stored state: Go lockheed's JSON document, plus the keys this crate adds; the
//! bottom layer, which every other one reads. Beside it, in this folder: `gotime` (Go's time
//! format, and Go's "no expiry") and `kind` (the kinds of lock and how they are stored).

pub(crate) mod gotime;
pub(crate) mod kind;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use chrono::{DateTime, Utc};

use self::gotime::GoTime;
use self::kind::{MUTEX, SEMAPHORE};

/// One holder's lease, as Go lockheed writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The holder (Go's instance id).
    #[serde(rename = "instanceID")]
    pub(crate) instance_id: String,
    /// When the lease ends: it is live while `now < expires`.
    pub(crate) expires: GoTime,
    /// How long the lease was taken for, in milliseconds (added by this crate; Go leases do
    /// not say). Contenders use it to judge expiry by their own elapsed time.
    #[serde(
        rename = "durationMillis",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub(crate) duration_millis: Option<u64>,
    /// The fencing token of the acquisition that wrote this lease (added by this crate).
    #[serde(
        rename = "fencingToken",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub(crate) token: Option<u64>,
    /// When the holder took the lock (renewals keep it; added by this crate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) since: Option<GoTime>,
    /// Why the holder took the lock, if it said (added by this crate; kube-lock's `reason`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) reason: Option<String>,
    /// `true` for a shared holder of a read/write lock (added by this crate).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) shared: bool,
    /// A random id of the attempt that wrote the lease (added by this crate): the clean-up of
    /// an attempt whose write's outcome is unknown removes the lease only if it is that
    /// attempt's, never a later attempt's with the same token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) nonce: Option<String>,
    /// Keys written by other versions, kept so that a rewrite does not lose them.
    #[serde(flatten)]
    pub(crate) extra: Map<String, Value>,
}

impl Lease {
    /// A lease of `holder` until `expires` (`None`: no expiry, stored as Go's
    /// `9999-12-31T23:59:59Z`), with nothing else recorded.
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed::backend::{Lease, LockState};
    ///
    /// // A backend that keeps holders in another format builds its leases with this.
    /// let lease = Lease::new("holder-1", None);
    /// let state = LockState::semaphore("lock", 1, [lease]);
    /// assert_eq!(state.leases()["holder-1"].expires(), None);
    /// ```
    #[must_use]
    pub fn new(holder: impl Into<String>, expires: Option<DateTime<Utc>>) -> Self {
        Self::until(holder, expires.map_or_else(GoTime::forever, GoTime::from))
    }

    /// A lease of `holder` until `expires`, with nothing else recorded.
    pub(crate) fn until(holder: impl Into<String>, expires: GoTime) -> Self {
        Self {
            instance_id: holder.into(),
            expires,
            duration_millis: None,
            token: None,
            since: None,
            reason: None,
            shared: false,
            nonce: None,
            extra: Map::new(),
        }
    }

    /// The holder.
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed::backend::LockState;
    ///
    /// let state = LockState::from_json(r#"{"name":"db","lockType":"mutex","leases":{"a":{"instanceID":"a","expires":"2099-01-01T00:00:00Z"}},"tags":["prod"]}"#).unwrap();
    /// let lease = &state.leases()["a"];
    /// assert_eq!(lease.holder(), "a");
    /// ```
    #[must_use]
    pub fn holder(&self) -> &str {
        &self.instance_id
    }

    /// When the lease ends.
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed::backend::LockState;
    ///
    /// let state = LockState::from_json(r#"{"name":"db","lockType":"mutex","leases":{"a":{"instanceID":"a","expires":"2099-01-01T00:00:00Z"}},"tags":["prod"]}"#).unwrap();
    /// let lease = &state.leases()["a"];
    /// assert_eq!(lease.expires().unwrap().to_rfc3339(), "2099-01-01T00:00:00+00:00");
    /// ```
    #[must_use]
    pub fn expires(&self) -> Option<DateTime<Utc>> {
        (!self.expires.is_forever()).then(|| self.expires.to_utc())
    }

    /// How long the lease was taken for, when the writer said (this crate does; Go does not).
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed::backend::LockState;
    ///
    /// let state = LockState::from_json(r#"{"name":"db","lockType":"mutex","leases":{"a":{"instanceID":"a","expires":"2099-01-01T00:00:00Z"}},"tags":["prod"]}"#).unwrap();
    /// let lease = &state.leases()["a"];
    /// assert_eq!(lease.duration(), None); // Go lockheed does not record it
    /// ```
    #[must_use]
    pub fn duration(&self) -> Option<std::time::Duration> {
        self.duration_millis.map(std::time::Duration::from_millis)
    }

    /// The fencing token of the acquisition that wrote the lease, when the writer recorded it
    /// (this crate does; Go lockheed and kube-lock do not).
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed::backend::LockState;
    ///
    /// let state = LockState::from_json(r#"{"name":"db","lockType":"mutex","leases":{"a":{"instanceID":"a","expires":"2099-01-01T00:00:00Z"}},"tags":["prod"]}"#).unwrap();
    /// let lease = &state.leases()["a"];
    /// assert_eq!(lease.token(), None); // written by Go, which keeps no tokens
    /// ```
    #[must_use]
    pub fn token(&self) -> Option<u64> {
        self.token
    }

    /// When the holder took the lock, when the writer recorded it.
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed::backend::LockState;
    ///
    /// let state = LockState::from_json(r#"{"name":"db","lockType":"mutex","leases":{"a":{"instanceID":"a","expires":"2099-01-01T00:00:00Z"}},"tags":["prod"]}"#).unwrap();
    /// let lease = &state.leases()["a"];
    /// assert_eq!(lease.since(), None);
    /// ```
    #[must_use]
    pub fn since(&self) -> Option<DateTime<Utc>> {
        self.since.map(GoTime::to_utc)
    }

    /// Why the holder took the lock, when it said.
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed::backend::LockState;
    ///
    /// let state = LockState::from_json(r#"{"name":"db","lockType":"mutex","leases":{"a":{"instanceID":"a","expires":"2099-01-01T00:00:00Z"}},"tags":["prod"]}"#).unwrap();
    /// let lease = &state.leases()["a"];
    /// assert_eq!(lease.reason(), None);
    /// ```
    #[must_use]
    pub fn reason(&self) -> Option<&str> {
        self.reason.as_deref()
    }

    /// Whether this is a shared holder of a read/write lock.
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed::backend::LockState;
    ///
    /// let state = LockState::from_json(r#"{"name":"db","lockType":"mutex","leases":{"a":{"instanceID":"a","expires":"2099-01-01T00:00:00Z"}},"tags":["prod"]}"#).unwrap();
    /// let lease = &state.leases()["a"];
    /// assert!(!lease.is_shared()); // a mutex holder
    /// ```
    #[must_use]
    pub fn is_shared(&self) -> bool {
        self.shared
    }

    /// Records when the lease was taken and why (a backend that keeps these elsewhere, like
    /// kube-lock's annotation, calls this after reading).
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed::backend::Lease;
    ///
    /// let since = "2018-08-19T19:14:24Z".parse().unwrap();
    /// let lease = Lease::new("holder-1", None).with_since(Some(since), Some("db restart".into()));
    /// assert_eq!(lease.reason(), Some("db restart"));
    /// ```
    #[must_use]
    pub fn with_since(mut self, since: Option<DateTime<Utc>>, reason: Option<String>) -> Self {
        self.since = since.map(GoTime::from);
        self.reason = reason;
        self
    }
}

/// A waiter's place in a lock's queue (added by this crate; Go lockheed ignores the key, and
/// drops it when it rewrites the state).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct QueueEntry {
    /// The waiter.
    #[serde(rename = "instanceID")]
    pub(crate) instance_id: String,
    /// When the entry ends unless its waiter refreshes it (it does while it waits).
    pub(crate) expires: GoTime,
    /// How long the entry lasts from each refresh, in milliseconds: contenders judge its end
    /// by their own elapsed time too, as they do leases'.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) duration_millis: Option<u64>,
    /// When the waiter queued.
    pub(crate) since: GoTime,
    /// The lease the waiter asks for, in milliseconds: whoever frees the lock may hand it
    /// that lease directly. `None`: a lease without expiry, which is never handed over (a
    /// waiter that died would hold it forever); the waiter takes it itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) lease_millis: Option<u64>,
    /// Why the waiter wants the lock, if it said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) reason: Option<String>,
    /// A shared holder of a read/write lock (`false`: exclusive, or another kind).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) shared: bool,
    /// The tags the waiter adds when it takes the lock (applied by whoever hands it over).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) tags: Vec<String>,
    /// Whether those tags replace the lock's.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) reset_tags: bool,
    /// The lock's record prefers this waiter as its next holder (a Lease's `preferredHolder`,
    /// Kubernetes coordinated leader election): every other holder gives the lock up at its
    /// next renewal (see [`rules::yields`](crate::rules::yields)).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) preferred: bool,
    /// A random id of the write that last queued or refreshed the entry, which a handover
    /// passes on to the lease it writes: the clean-up of a wait that ended withdraws the
    /// entry, and a lease handed over to it, only while they carry its id, never a later
    /// wait's or acquisition's by the same holder identity. (`None`: written by a version
    /// that kept none.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) nonce: Option<String>,
    /// Keys written by other versions, kept so that a rewrite does not lose them.
    #[serde(flatten)]
    pub(crate) extra: Map<String, Value>,
}

impl QueueEntry {
    /// `instance_id`'s place, taken `since` and live until `expires`; nothing else said.
    pub(crate) fn new(instance_id: &str, expires: GoTime, since: GoTime) -> Self {
        Self {
            instance_id: instance_id.to_owned(),
            expires,
            duration_millis: None,
            since,
            lease_millis: None,
            reason: None,
            shared: false,
            tags: Vec::new(),
            reset_tags: false,
            preferred: false,
            nonce: None,
            extra: Map::new(),
        }
    }

    /// How long the entry lasts from each refresh, when its writer said.
    pub(crate) fn duration(&self) -> Option<std::time::Duration> {
        self.duration_millis.map(std::time::Duration::from_millis)
    }
}

/// The state of one lock, as stored (`data["lock"]` of a lockheed ConfigMap).
///
/// The keys Go lockheed v0.5.3 writes come first and keep its meaning: `name`, `lockType`,
/// `leases` (`null` is an empty map) and `tags` (left out when empty). This crate adds
/// `fencingToken`; a Go client that rewrites the state drops it, so backends also keep the
/// counter where Go does not touch it (see [`KubeLocker`](crate::KubeLocker)) and take the
/// larger of the two. Keys neither knows are kept as they are.
///
/// Backends store and return it as an opaque document ([`LockState::to_json`],
/// [`LockState::from_json`]); only the crate's locking rules change it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LockState {
    #[serde(default)]
    pub(crate) name: String,
    #[serde(rename = "lockType", default)]
    pub(crate) lock_type: String,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub(crate) leases: BTreeMap<String, Lease>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) tags: Vec<String>,
    /// The fencing token of the latest acquisition (0: never acquired by this crate).
    #[serde(rename = "fencingToken", default, skip_serializing_if = "is_zero")]
    pub(crate) fencing_token: u64,
    /// A semaphore's capacity (0 for other kinds).
    #[serde(rename = "maxHolders", default, skip_serializing_if = "is_zero_u32")]
    pub(crate) max_holders: u32,
    /// The waiters, in the order they came (added by this crate): each takes its turn after
    /// those ahead of it, and an entry ends by itself if its waiter dies.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_none"
    )]
    pub(crate) queue: Vec<QueueEntry>,
    /// Keys written by other versions or tools, kept so that a rewrite does not lose them.
    #[serde(flatten)]
    pub(crate) extra: Map<String, Value>,
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if passes a reference.
fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[allow(clippy::trivially_copy_pass_by_ref)] // As above.
fn is_zero_u32(n: &u32) -> bool {
    *n == 0
}

fn null_as_empty<'de, D>(deserializer: D) -> Result<BTreeMap<String, Lease>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    Ok(Option::deserialize(deserializer)?.unwrap_or_default())
}

fn null_as_none<'de, D>(deserializer: D) -> Result<Vec<QueueEntry>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    Ok(Option::deserialize(deserializer)?.unwrap_or_default())
}

impl LockState {
    /// The state of a lock that exists but was never acquired.
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed::backend::LockState;
    ///
    /// let state = LockState::empty("db");
    /// assert_eq!(state.to_json(), r#"{"name":"db","lockType":"","leases":{}}"#);
    /// ```
    #[must_use]
    pub fn empty(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            lock_type: String::new(),
            leases: BTreeMap::new(),
            tags: Vec::new(),
            fencing_token: 0,
            max_holders: 0,
            queue: Vec::new(),
            extra: Map::new(),
        }
    }

    /// Parses a stored document.
    ///
    /// # Errors
    ///
    /// When `json` is not a lock state (the message says why).
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed::backend::LockState;
    ///
    /// // What Go lockheed writes for a lock created but never acquired.
    /// let state = LockState::from_json(r#"{"name":"db","lockType":"","leases":null}"#).unwrap();
    /// assert!(state.leases().is_empty());
    /// assert!(LockState::from_json("{not json").is_err());
    /// ```
    pub fn from_json(json: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(json)
    }

    /// The document to store.
    ///
    /// # Panics
    ///
    /// Never: a lock state always serializes.
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed::backend::LockState;
    ///
    /// let json = r#"{"name":"db","lockType":"","leases":{},"addedByANewerVersion":true}"#;
    /// assert_eq!(LockState::from_json(json).unwrap().to_json(), json); // unknown keys are kept
    /// ```
    #[must_use]
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("lock state always serializes")
    }

    /// The lock's name (without any backend prefix).
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed::backend::LockState;
    ///
    /// let state = LockState::from_json(r#"{"name":"db","lockType":"mutex","leases":{"a":{"instanceID":"a","expires":"2099-01-01T00:00:00Z"}},"tags":["prod"]}"#).unwrap();
    /// assert_eq!(state.name(), "db");
    /// ```
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `mutex`, `semaphore`, `rwlock`, or `""` for a lock that was created but never acquired.
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed::backend::LockState;
    ///
    /// let state = LockState::from_json(r#"{"name":"db","lockType":"mutex","leases":{"a":{"instanceID":"a","expires":"2099-01-01T00:00:00Z"}},"tags":["prod"]}"#).unwrap();
    /// assert_eq!(state.lock_type(), "mutex");
    /// ```
    #[must_use]
    pub fn lock_type(&self) -> &str {
        &self.lock_type
    }

    /// Every lease, live or expired, by holder.
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed::backend::LockState;
    ///
    /// let state = LockState::from_json(r#"{"name":"db","lockType":"mutex","leases":{"a":{"instanceID":"a","expires":"2099-01-01T00:00:00Z"}},"tags":["prod"]}"#).unwrap();
    /// assert_eq!(state.leases().keys().collect::<Vec<_>>(), ["a"]);
    /// ```
    #[must_use]
    pub fn leases(&self) -> &BTreeMap<String, Lease> {
        &self.leases
    }

    /// The lock's tags.
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed::backend::LockState;
    ///
    /// let state = LockState::from_json(r#"{"name":"db","lockType":"mutex","leases":{"a":{"instanceID":"a","expires":"2099-01-01T00:00:00Z"}},"tags":["prod"]}"#).unwrap();
    /// assert_eq!(state.tags(), ["prod"]);
    /// ```
    #[must_use]
    pub fn tags(&self) -> &[String] {
        &self.tags
    }

    /// The fencing token of the latest acquisition this crate recorded (0: none).
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed::backend::LockState;
    ///
    /// let state = LockState::from_json(r#"{"name":"db","lockType":"mutex","leases":{"a":{"instanceID":"a","expires":"2099-01-01T00:00:00Z"}},"tags":["prod"]}"#).unwrap();
    /// assert_eq!(state.fencing_token(), 0); // Go lockheed records none
    /// ```
    #[must_use]
    pub fn fencing_token(&self) -> u64 {
        self.fencing_token
    }

    /// A semaphore's capacity (0 for other kinds).
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed::backend::LockState;
    ///
    /// let state = LockState::from_json(r#"{"name":"db","lockType":"mutex","leases":{"a":{"instanceID":"a","expires":"2099-01-01T00:00:00Z"}},"tags":["prod"]}"#).unwrap();
    /// assert_eq!(state.max_holders(), 0); // not a semaphore
    /// ```
    #[must_use]
    pub fn max_holders(&self) -> u32 {
        self.max_holders
    }

    /// The waiters queued for the lock, by holder, in the order they came (each until its
    /// entry ends: see [`LockInfo::waiters`](crate::LockInfo::waiters)).
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed::backend::LockState;
    ///
    /// let state = LockState::from_json(r#"{"name":"db","lockType":"mutex","leases":{},"queue":[{"instanceID":"w","expires":"2099-01-01T00:00:00Z","since":"2098-12-31T23:59:30Z"}]}"#).unwrap();
    /// assert_eq!(state.waiters().collect::<Vec<_>>(), ["w"]);
    /// ```
    pub fn waiters(&self) -> impl Iterator<Item = &str> {
        self.queue.iter().map(|entry| entry.instance_id.as_str())
    }

    /// A semaphore of `max_holders` with these holders (a backend that keeps semaphores in
    /// another format, like kube-lock's annotation, builds its state with this).
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed::backend::{Lease, LockState};
    ///
    /// let state = LockState::semaphore("lock", 3, [Lease::new("holder-1", None)]);
    /// assert_eq!((state.lock_type(), state.max_holders()), ("semaphore", 3));
    /// ```
    #[must_use]
    pub fn semaphore(
        name: &str,
        max_holders: u32,
        leases: impl IntoIterator<Item = Lease>,
    ) -> Self {
        let mut state = Self::empty(name);
        SEMAPHORE.clone_into(&mut state.lock_type);
        state.max_holders = max_holders;
        state.leases = leases
            .into_iter()
            .map(|lease| (lease.instance_id.clone(), lease))
            .collect();
        state
    }

    /// Raises the fencing token to at least `floor` (a backend that keeps the counter in a
    /// second place, out of reach of Go clients, calls this after reading).
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed::backend::LockState;
    ///
    /// // A Go client rewrote the state and dropped the counter; the backend kept 41 elsewhere.
    /// let mut state = LockState::from_json(r#"{"name":"db","lockType":"mutex","leases":{}}"#).unwrap();
    /// state.raise_fencing_token(41);
    /// state.raise_fencing_token(7); // never lowers it
    /// assert_eq!(state.fencing_token(), 41);
    /// ```
    pub fn raise_fencing_token(&mut self, floor: u64) {
        self.fencing_token = self.fencing_token.max(floor);
    }

    /// The most holders the lock admits at once (`None`: no limit, for the shared holders of
    /// a read/write lock; also `None` for a lock never acquired).
    pub(crate) fn capacity(&self) -> Option<u32> {
        match self.lock_type.as_str() {
            MUTEX => Some(1),
            SEMAPHORE => Some(self.max_holders),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_go_writes() {
        let never = r#"{"name":"testlock","lockType":"","leases":null,"tags":["testtag"]}"#;
        let state = LockState::from_json(never).unwrap();
        assert_eq!(state.name(), "testlock");
        assert!(state.leases().is_empty());
        assert_eq!(state.tags(), ["testtag"]);
        assert_eq!(state.fencing_token(), 0);
    }

    #[test]
    fn writes_go_field_order_and_keeps_unknown_keys() {
        let json = r#"{"name":"a","lockType":"mutex","leases":{"h":{"instanceID":"h","expires":"2026-11-22T11:00:30.5+01:00"}},"future":{"x":1}}"#;
        let mut state = LockState::from_json(json).unwrap();
        state.fencing_token = 3;
        assert_eq!(
            state.to_json(),
            r#"{"name":"a","lockType":"mutex","leases":{"h":{"instanceID":"h","expires":"2026-11-22T11:00:30.5+01:00"}},"fencingToken":3,"future":{"x":1}}"#
        );
        assert_eq!(
            LockState::empty("b").to_json(),
            r#"{"name":"b","lockType":"","leases":{}}"#
        );
    }

    #[test]
    fn corrupt_documents_are_errors() {
        for bad in [
            "",
            "[]",
            r#"{"leases":{"x":{"instanceID":"x","expires":"not a time"}}}"#,
            r#"{"tags":"x"}"#,
        ] {
            assert!(LockState::from_json(bad).is_err(), "{bad}");
        }
    }
}
