//! How lock states are kept in ConfigMaps: Go lockheed's format (`data["lock"]`) and
//! kube-lock's (`metadata.annotations["kube-lock"]`). Decoding never panics on what the cluster
//! holds; encoding keeps every key, label and annotation it does not own.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Utc};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::ListParams;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::keys::{
    DEFAULT_PREFIX, FENCING_ANNOTATION, KUBE_LOCK_ANNOTATION, LOCK_LABEL, QUEUE_ANNOTATION,
    STATE_KEY,
};
use crate::backend::{Record, Reservation};
use crate::error::Error;
use crate::kubernetes::limits::{MAX_ANNOTATION_BYTES, MAX_DATA_BYTES, check_state_size};
use crate::state::gotime::GoTime;
use crate::state::kind::{LockKind, SEMAPHORE};
use crate::state::{Lease, LockState};

const RESERVED_BY: &str = "reserved/by";
const ONLY_SEMAPHORES: &str =
    "kube-lock's format keeps only semaphores: take the lock with with_max_holders";
const NEVER_EXPIRE: &str = "kube-lock's holders never expire: take the lock with a zero duration";
const RESERVED_EXPIRES: &str = "reserved/expires";
/// kube-lock's `date` layout: Go's `2006-01-02T15:04:05Z`, a literal `Z`.
const KUBE_LOCK_DATE: &str = "%Y-%m-%dT%H:%M:%SZ";

/// Which format a [`KubeLocker`](super::KubeLocker) keeps its locks in
/// ([`KubeLocker::with_format`](super::KubeLocker::with_format)).
///
/// # Examples
///
/// ```no_run
/// use lockheed::KubeLocker;
/// use lockheed::configmap::Format;
///
/// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
/// let client = kube::Client::try_default().await?;
/// let locker = KubeLocker::new(client, "default").with_format(Format::KubeLock);
/// assert_eq!(locker.object_name("lock"), "lock"); // kube-lock's ConfigMaps have any name
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Format {
    /// Go lockheed's (the default): lock `name` is the ConfigMap `lockheed-<name>`
    /// ([`DEFAULT_PREFIX`](super::DEFAULT_PREFIX)), labelled `lockheed/lock`, its state a JSON
    /// document in `data["lock"]`; shared with Go lockheed v0.5.3 clients. Every kind of lock.
    #[default]
    Lockheed,
    /// The Go kube-lock tool's, so that the tool and this crate share its semaphores: lock
    /// `name` is the ConfigMap `name` itself (no prefix, no label), its state the JSON in the
    /// annotation `kube-lock` (`{"max":N,"holders":{"<holder>":{"date":..,"reason":..}}}`).
    ///
    /// Differences from the lockheed format, which come from kube-lock's:
    /// - only semaphores ([`Lock::with_max_holders`](crate::Lock::with_max_holders)) can be
    ///   kept, and **holders never expire**: take them with a zero
    ///   [duration](crate::Lock::with_duration), and remove them with
    ///   [`release`](crate::LockGuard::release) or [`Locker::evict`](crate::Locker::evict)
    ///   (kube-lock's `--unlock`). Other kinds, finite leases and tags are refused with
    ///   [`Error::InvalidConfig`];
    /// - a missing ConfigMap is not created unless
    ///   [`with_create`](super::KubeLocker::with_create) allows it (kube-lock's
    ///   `--create-configmap`): acquiring fails with [`Error::Missing`];
    /// - kube-lock records no fencing token per holder: guards still get increasing tokens
    ///   (the counter is kept in the `lockheed/fencing-token` annotation), but a holder's
    ///   release is matched by its name alone, as kube-lock's `--unlock` does;
    /// - its ConfigMaps carry no label, so they are watched one by one, never by the
    ///   namespace watch.
    ///
    /// Unlike the Go tool, which patches the annotation without a resourceVersion (two
    /// writers can lose a holder), every write here is a compare-and-swap on the
    /// resourceVersion read. A ConfigMap without the annotation is an empty semaphore whose
    /// capacity comes from the first caller; the stored `max` wins afterwards.
    ///
    /// [`list`](crate::Locker::list) returns the ConfigMaps of the namespace that carry the
    /// annotation (it needs `list` on all ConfigMaps).
    KubeLock,
}

/// kube-lock's annotation, as its Go tool marshals it.
#[derive(Debug, Serialize, Deserialize)]
struct KubeLockDoc {
    max: u32,
    #[serde(default, deserialize_with = "null_as_empty")]
    holders: BTreeMap<String, KubeLockHolder>,
    /// Keys a later kube-lock may add: kept.
    #[serde(flatten)]
    extra: Map<String, Value>,
}

#[derive(Debug, Serialize, Deserialize)]
struct KubeLockHolder {
    #[serde(default)]
    date: String,
    #[serde(default)]
    reason: String,
    #[serde(flatten)]
    extra: Map<String, Value>,
}

fn null_as_empty<'de, D>(deserializer: D) -> Result<BTreeMap<String, KubeLockHolder>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    Ok(Option::deserialize(deserializer)?.unwrap_or_default())
}

impl Format {
    /// The prefix of lock ConfigMap names unless a locker says otherwise.
    pub(crate) fn default_prefix(self) -> &'static str {
        match self {
            Self::Lockheed => DEFAULT_PREFIX,
            Self::KubeLock => "",
        }
    }

    /// Whether a missing ConfigMap is created unless a locker says otherwise: kube-lock's
    /// tool creates none without `--create-configmap`.
    pub(crate) fn creates(self) -> bool {
        match self {
            Self::Lockheed => true,
            Self::KubeLock => false,
        }
    }

    /// Whether a label selects every lock of the namespace, so that one watch serves them
    /// all; kube-lock's format labels nothing.
    pub(crate) fn is_labelled(self) -> bool {
        match self {
            Self::Lockheed => true,
            Self::KubeLock => false,
        }
    }

    /// What lists a namespace's locks: the label for lockheed's format; for kube-lock's,
    /// which labels nothing, every ConfigMap (then filtered by [`is_lock`](Self::is_lock)).
    pub(crate) fn list_params(self) -> ListParams {
        match self {
            Self::Lockheed => ListParams::default().labels(LOCK_LABEL),
            Self::KubeLock => ListParams::default(),
        }
    }

    /// Whether a listed ConfigMap is a lock of this format: for kube-lock's, one that carries
    /// its annotation.
    pub(crate) fn is_lock(self, cm: &ConfigMap) -> bool {
        match self {
            Self::Lockheed => true,
            Self::KubeLock => cm
                .metadata
                .annotations
                .as_ref()
                .is_some_and(|a| a.contains_key(KUBE_LOCK_ANNOTATION)),
        }
    }

    /// Checks that this format can keep lock `name` as a `kind` lock with leases of
    /// `duration`: kube-lock's keeps only semaphores whose holders never expire.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] saying what the format cannot keep.
    pub(crate) fn check_lock(
        self,
        name: &str,
        kind: &LockKind,
        duration: Duration,
    ) -> Result<(), Error> {
        let refuse = |reason: &str| {
            Err(Error::InvalidConfig {
                lock: name.to_owned(),
                reason: reason.to_owned(),
            })
        };
        match self {
            Self::KubeLock if *kind != LockKind::Semaphore => refuse(ONLY_SEMAPHORES),
            Self::KubeLock if !duration.is_zero() => refuse(NEVER_EXPIRE),
            _ => Ok(()),
        }
    }

    /// Reads lock `name` from its ConfigMap; `object` names it in errors.
    pub(crate) fn decode(
        self,
        name: &str,
        object: &str,
        cm: ConfigMap,
    ) -> Result<Record<ConfigMap>, Error> {
        let corrupt = |reason: String| Error::Corrupt {
            object: object.to_owned(),
            reason,
        };
        let annotations = cm.metadata.annotations.as_ref();
        let mut state = match self {
            Self::Lockheed => match cm.data.as_ref().and_then(|d| d.get(STATE_KEY)) {
                Some(json) => LockState::from_json(json).map_err(|e| corrupt(e.to_string()))?,
                None => LockState::empty(name),
            },
            Self::KubeLock => {
                let mut state = match annotations.and_then(|a| a.get(KUBE_LOCK_ANNOTATION)) {
                    Some(json) => decode_kube_lock(name, json).map_err(corrupt)?,
                    None => LockState::empty(name),
                };
                if let Some(json) = annotations.and_then(|a| a.get(QUEUE_ANNOTATION)) {
                    state.queue = serde_json::from_str(json).map_err(|e| {
                        corrupt(format!("annotation {QUEUE_ANNOTATION} is not a queue: {e}"))
                    })?;
                }
                state
            }
        };
        if let Some(token) = annotations.and_then(|a| a.get(FENCING_ANNOTATION)) {
            let token = token.parse::<u64>().map_err(|_| {
                corrupt(format!(
                    "annotation {FENCING_ANNOTATION} is not a number: {token:?}"
                ))
            })?;
            state.raise_fencing_token(token);
        }
        let reservation = match self {
            Self::Lockheed => annotations.and_then(|a| {
                let by = a.get(RESERVED_BY).filter(|b| !b.is_empty())?;
                // An unreadable expiry cannot make the lock busy forever: ignore it.
                let until = GoTime::parse(a.get(RESERVED_EXPIRES)?).ok()?;
                Some(Reservation::new(by.clone(), until.to_utc()))
            }),
            Self::KubeLock => None,
        };
        Ok(Record {
            state,
            version: cm,
            reservation,
        })
    }

    /// Writes `state` into `cm`, keeping everything else it holds; `name` and `object` name
    /// the lock in errors.
    pub(crate) fn encode(
        self,
        name: &str,
        object: &str,
        mut cm: ConfigMap,
        state: &LockState,
    ) -> Result<ConfigMap, Error> {
        match self {
            Self::Lockheed => {
                let json = state.to_json();
                let data = cm.data.get_or_insert_with(BTreeMap::new);
                let others: usize = data
                    .iter()
                    .filter(|(k, _)| *k != STATE_KEY)
                    .map(|(_, v)| v.len())
                    .sum();
                check_state_size(object, others + json.len(), MAX_DATA_BYTES)?;
                data.insert(STATE_KEY.to_owned(), json);
                cm.metadata
                    .labels
                    .get_or_insert_with(BTreeMap::new)
                    .entry(LOCK_LABEL.to_owned())
                    .or_default();
            }
            Self::KubeLock => {
                let previous = cm
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(KUBE_LOCK_ANNOTATION));
                let json = encode_kube_lock(name, previous.map(String::as_str), state)?;
                let annotations = cm.metadata.annotations.get_or_insert_with(BTreeMap::new);
                annotations.insert(KUBE_LOCK_ANNOTATION.to_owned(), json);
                if state.queue.is_empty() {
                    annotations.remove(QUEUE_ANNOTATION);
                } else {
                    let queue =
                        serde_json::to_string(&state.queue).expect("a queue always serializes");
                    annotations.insert(QUEUE_ANNOTATION.to_owned(), queue);
                }
            }
        }
        if state.fencing_token() > 0 {
            cm.metadata
                .annotations
                .get_or_insert_with(BTreeMap::new)
                .insert(
                    FENCING_ANNOTATION.to_owned(),
                    state.fencing_token().to_string(),
                );
        }
        let size: usize = cm
            .metadata
            .annotations
            .iter()
            .flatten()
            .map(|(k, v)| k.len() + v.len())
            .sum();
        check_state_size(object, size, MAX_ANNOTATION_BYTES)?;
        Ok(cm)
    }
}

/// kube-lock's annotation as a semaphore whose holders never expire.
fn decode_kube_lock(name: &str, json: &str) -> Result<LockState, String> {
    let doc: KubeLockDoc = serde_json::from_str(json)
        .map_err(|e| format!("annotation {KUBE_LOCK_ANNOTATION} is not kube-lock's JSON: {e}"))?;
    if doc.max == 0 {
        return Err(format!(
            "annotation {KUBE_LOCK_ANNOTATION} has a max of 0 holders"
        ));
    }
    let mut leases = Vec::with_capacity(doc.holders.len());
    for (holder, entry) in doc.holders {
        let since = if entry.date.is_empty() {
            None
        } else {
            let date = NaiveDateTime::parse_from_str(&entry.date, KUBE_LOCK_DATE).map_err(|e| {
                format!(
                    "holder {holder:?} has a date {:?} that is not 2006-01-02T15:04:05Z: {e}",
                    entry.date
                )
            })?;
            Some(GoTime::from(date.and_utc()))
        };
        let reason = (!entry.reason.is_empty()).then_some(entry.reason);
        let mut lease = Lease::until(holder, GoTime::forever());
        (lease.since, lease.reason) = (since, reason);
        lease.extra = entry.extra;
        leases.push(lease);
    }
    let mut state = LockState::semaphore(name, doc.max, leases);
    state.extra = doc.extra;
    Ok(state)
}

/// A semaphore as kube-lock's annotation. Only what kube-lock can say is written: the
/// capacity, and each holder's date and reason.
fn encode_kube_lock(
    name: &str,
    previous: Option<&str>,
    state: &LockState,
) -> Result<String, Error> {
    let refuse = |reason: &str| Error::InvalidConfig {
        lock: name.to_owned(),
        reason: reason.to_owned(),
    };
    if state.lock_type() != SEMAPHORE {
        return Err(refuse(ONLY_SEMAPHORES));
    }
    if state.leases.values().any(|l| !l.expires.is_forever()) {
        return Err(refuse(NEVER_EXPIRE));
    }
    if !state.tags().is_empty() {
        return Err(refuse("kube-lock's format has no tags"));
    }
    // Keep what a later kube-lock wrote next to max and holders.
    let mut extra = state.extra.clone();
    if let Some(previous) = previous.and_then(|p| serde_json::from_str::<KubeLockDoc>(p).ok()) {
        for (key, value) in previous.extra {
            extra.entry(key).or_insert(value);
        }
    }
    let doc = KubeLockDoc {
        max: state.max_holders(),
        holders: state
            .leases()
            .values()
            .map(|lease| {
                let date = lease
                    .since
                    .map(|since| kube_lock_date(since.to_utc()))
                    .unwrap_or_default();
                let holder = KubeLockHolder {
                    date,
                    reason: lease.reason().unwrap_or_default().to_owned(),
                    extra: lease.extra.clone(),
                };
                (lease.holder().to_owned(), holder)
            })
            .collect(),
        extra,
    };
    Ok(serde_json::to_string(&doc).expect("kube-lock's document always serializes"))
}

fn kube_lock_date(time: DateTime<Utc>) -> String {
    time.format(KUBE_LOCK_DATE).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::api::ObjectMeta;

    fn cm(annotation: Option<&str>) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some("lock".into()),
                annotations: annotation
                    .map(|a| BTreeMap::from([(KUBE_LOCK_ANNOTATION.to_owned(), a.to_owned())])),
                ..ObjectMeta::default()
            },
            ..ConfigMap::default()
        }
    }

    #[test]
    fn kube_lock_round_trips_exactly() {
        let json = r#"{"max":1,"holders":{"holder-1":{"date":"2018-08-19T19:14:24Z","reason":"db restart"}}}"#;
        let record = Format::KubeLock
            .decode("lock", "default/lock", cm(Some(json)))
            .unwrap();
        let lease = &record.state.leases()["holder-1"];
        assert_eq!(lease.expires(), None);
        assert_eq!(lease.reason(), Some("db restart"));
        assert_eq!(
            lease.since().unwrap().to_rfc3339(),
            "2018-08-19T19:14:24+00:00"
        );
        assert_eq!(record.state.max_holders(), 1);
        let written = Format::KubeLock
            .encode("lock", "default/lock", record.version, &record.state)
            .unwrap();
        let annotations = written.metadata.annotations.unwrap();
        assert_eq!(annotations[KUBE_LOCK_ANNOTATION], json);
        assert!(written.metadata.labels.is_none(), "kube-lock adds no label");
    }

    #[test]
    fn kube_lock_corruption_is_an_error_naming_the_object() {
        for bad in [
            "not json",
            r#"{"max":0,"holders":{}}"#,
            r#"{"max":-1,"holders":{}}"#,
            r#"{"max":1,"holders":{"h":{"date":"yesterday","reason":""}}}"#,
        ] {
            let err = Format::KubeLock
                .decode("lock", "default/lock", cm(Some(bad)))
                .unwrap_err();
            assert!(err.to_string().contains("default/lock"), "{bad}: {err}");
        }
        // No annotation: an empty semaphore whose max comes from the caller.
        let record = Format::KubeLock
            .decode("lock", "default/lock", cm(None))
            .unwrap();
        assert_eq!(record.state.lock_type(), "");
        // holders: null, as a nil Go map marshals.
        let record = Format::KubeLock
            .decode(
                "lock",
                "default/lock",
                cm(Some(r#"{"max":2,"holders":null}"#)),
            )
            .unwrap();
        assert!(record.state.leases().is_empty());
    }

    #[test]
    fn kube_lock_refuses_what_it_cannot_store() {
        let mut mutex = LockState::empty("lock");
        mutex.lock_type = "mutex".into();
        let mut expiring =
            LockState::semaphore("lock", 2, [Lease::new("h", Some(DateTime::UNIX_EPOCH))]);
        let mut tagged = LockState::semaphore("lock", 2, []);
        tagged.tags = vec!["t".into()];
        for state in [&mutex, &expiring, &tagged] {
            assert!(matches!(
                Format::KubeLock.encode("lock", "default/lock", cm(None), state),
                Err(Error::InvalidConfig { .. })
            ));
        }
        expiring.leases.clear();
        assert!(
            Format::KubeLock
                .encode("lock", "default/lock", cm(None), &expiring)
                .is_ok()
        );
    }
}
