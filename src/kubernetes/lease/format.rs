//! How a lock's state is kept in a `coordination.k8s.io/v1` Lease: the holder in client-go's
//! record (`spec`), exactly as client-go writes it, and what client-go has no room for (the
//! fencing counter, the holder's token, tags, the waiters' queue) in `lockheed/…` annotations,
//! which client-go keeps as it read them. Decoding never panics on what the cluster holds;
//! encoding keeps every field, label and annotation it does not own.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::api::coordination::v1::{Lease as KubeLease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::keys::{FENCING_ANNOTATION, HOLDER_ANNOTATION, QUEUE_ANNOTATION, TAGS_ANNOTATION};
use crate::error::Error;
use crate::kubernetes::limits::{MAX_ANNOTATION_BYTES, check_state_size};
use crate::state::gotime::GoTime;
use crate::state::kind::{LockKind, MUTEX};
use crate::state::{Lease, LockState, QueueEntry};

/// What client-go's `ReleaseOnCancel` writes as `leaseDurationSeconds` when it lets go.
const RELEASED_DURATION_SECONDS: i32 = 1;

/// The lockheed fields of the current holder's lease, kept in [`HOLDER_ANNOTATION`]: they
/// apply only while `instanceID` is the Lease's `holderIdentity` (a Go leader that takes the
/// Lease over leaves the annotation of the previous holder behind, which then means nothing).
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct HolderFields {
    #[serde(rename = "instanceID")]
    instance_id: String,
    fencing_token: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    nonce: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    /// The lease's end and start to the nanosecond, as the rules wrote them (client-go's
    /// `MicroTime`s keep microseconds): they count while the record's times are these,
    /// truncated, so that a lease reads back exactly as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires: Option<GoTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    since: Option<GoTime>,
}

/// `exact` when the record's `micro` is `exact` truncated to the microsecond.
fn finer(micro: GoTime, exact: Option<GoTime>) -> GoTime {
    let within = |exact: &GoTime| {
        (exact.to_utc() - micro.to_utc())
            .num_nanoseconds()
            .is_some_and(|n| (0..1000).contains(&n))
    };
    exact.filter(within).unwrap_or(micro)
}

/// A Lease's time as UTC (microseconds, as the API keeps them).
fn utc(time: &MicroTime) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_micros(time.0.as_microsecond())
}

/// `time` as a Lease's `MicroTime`: RFC 3339 in UTC with exactly six fraction digits when
/// serialized (microseconds; what is finer is dropped, as client-go's `metav1.MicroTime` does).
pub(crate) fn micro_time(time: DateTime<Utc>) -> MicroTime {
    let micros = Timestamp::from_microsecond(time.timestamp_micros()).unwrap_or(Timestamp::MAX);
    MicroTime(micros)
}

/// `seconds` of a Lease's `leaseDurationSeconds` (negative counts as 0: ended at once).
fn seconds(value: Option<i32>) -> Duration {
    Duration::from_secs(value.map_or(0, |s| u64::try_from(s).unwrap_or(0)))
}

/// `leaseDurationSeconds` for a lease of `millis`: whole seconds, rounded up (so that others
/// never count the lease as ended before its holder does), at least 1.
fn duration_seconds(millis: u64) -> i32 {
    i32::try_from(millis.div_ceil(1000).max(1)).unwrap_or(i32::MAX)
}

/// `start + duration`, or the end of times.
fn after(start: DateTime<Utc>, duration: Duration) -> GoTime {
    chrono::Duration::from_std(duration)
        .ok()
        .and_then(|d| start.checked_add_signed(d))
        .map_or_else(GoTime::forever, GoTime::from)
}

/// When the record's term ends by its writer's clock: `renewTime` (else `acquireTime`, else
/// long ago) plus `leaseDurationSeconds`, and that duration.
fn term(spec: &LeaseSpec) -> (GoTime, Duration, DateTime<Utc>) {
    let renewed = spec
        .renew_time
        .as_ref()
        .or(spec.acquire_time.as_ref())
        .and_then(utc)
        .unwrap_or(DateTime::UNIX_EPOCH);
    let duration = seconds(spec.lease_duration_seconds);
    (after(renewed, duration), duration, renewed)
}

/// The holder's lease as client-go's record says (`None`: nobody holds the Lease).
fn holder_lease(spec: &LeaseSpec) -> Option<Lease> {
    let holder = spec.holder_identity.as_deref().filter(|h| !h.is_empty())?;
    let (expires, duration, _) = term(spec);
    let mut lease = Lease::until(holder, expires);
    lease.duration_millis = Some(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX));
    lease.since = spec.acquire_time.as_ref().and_then(utc).map(GoTime::from);
    Some(lease)
}

/// Reads annotation `key` as JSON.
fn annotation<T: serde::de::DeserializeOwned>(
    annotations: Option<&BTreeMap<String, String>>,
    key: &str,
    what: &str,
) -> Result<Option<T>, String> {
    annotations
        .and_then(|a| a.get(key))
        .map(|json| {
            serde_json::from_str(json).map_err(|e| format!("annotation {key} is not {what}: {e}"))
        })
        .transpose()
}

/// Lock `name`'s state, read from `lease`; `object` names it in errors.
///
/// # Errors
///
/// [`Error::Corrupt`] naming the object when an annotation of this crate does not parse.
pub(crate) fn decode(name: &str, object: &str, lease: &KubeLease) -> Result<LockState, Error> {
    let corrupt = |reason: String| Error::Corrupt {
        object: object.to_owned(),
        reason,
    };
    let annotations = lease.metadata.annotations.as_ref();
    let no_spec = LeaseSpec::default();
    let spec = lease.spec.as_ref().unwrap_or(&no_spec);
    let mut state = LockState::empty(name);
    MUTEX.clone_into(&mut state.lock_type);
    if let Some(token) = annotations.and_then(|a| a.get(FENCING_ANNOTATION)) {
        state.fencing_token = token.parse().map_err(|_| {
            corrupt(format!(
                "annotation {FENCING_ANNOTATION} is not a number: {token:?}"
            ))
        })?;
    }
    state.tags = annotation(annotations, TAGS_ANNOTATION, "a list of tags")
        .map_err(corrupt)?
        .unwrap_or_default();
    state.queue = annotation(annotations, QUEUE_ANNOTATION, "a queue")
        .map_err(corrupt)?
        .unwrap_or_default();
    let fields: Option<HolderFields> =
        annotation(annotations, HOLDER_ANNOTATION, "a holder's fields").map_err(corrupt)?;
    if let Some(mut lease) = holder_lease(spec) {
        if let Some(fields) = fields.filter(|f| f.instance_id == lease.instance_id) {
            lease.token = Some(fields.fencing_token);
            (lease.nonce, lease.reason) = (fields.nonce, fields.reason);
            lease.expires = finer(lease.expires, fields.expires);
            lease.since = lease.since.map(|since| finer(since, fields.since));
        }
        state.leases.insert(lease.instance_id.clone(), lease);
    }
    prefer(&mut state, spec);
    Ok(state)
}

/// Puts the record's `preferredHolder`, when it names someone other than the holder, at the
/// head of the queue, marked preferred (its own entry if it waits in this crate's queue, or
/// one that lasts as long as the record's term): other contenders let it come first, and the
/// holder gives the lock up at its next renewal (see `rules::yields`).
fn prefer(state: &mut LockState, spec: &LeaseSpec) {
    let Some(preferred) = spec.preferred_holder.as_deref().filter(|p| !p.is_empty()) else {
        return;
    };
    if spec.holder_identity.as_deref() == Some(preferred) {
        return;
    }
    let entry = if let Some(place) = state.queue.iter().position(|e| e.instance_id == preferred) {
        state.queue.remove(place)
    } else {
        let (expires, duration, since) = term(spec);
        QueueEntry {
            duration_millis: Some(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)),
            ..QueueEntry::new(preferred, expires, GoTime::from(since))
        }
    };
    state.queue.insert(
        0,
        QueueEntry {
            preferred: true,
            ..entry
        },
    );
}

/// `lease` (as read, or a new one) with lock `name`'s `state` written into it at `now`;
/// `object` names it in errors. The holder goes into client-go's record exactly as client-go
/// writes it; everything else of the Lease is kept.
///
/// # Errors
///
/// [`Error::InvalidConfig`] for a state a Lease cannot keep (more than one holder, a lease
/// without expiry); [`Error::TooLarge`] when the annotations would pass the API's limit.
pub(crate) fn encode(
    name: &str,
    object: &str,
    mut lease: KubeLease,
    state: &LockState,
    now: DateTime<Utc>,
) -> Result<KubeLease, Error> {
    let refuse = |reason: &str| Error::InvalidConfig {
        lock: name.to_owned(),
        reason: reason.to_owned(),
    };
    if state.leases.len() > 1 || state.lock_type != MUTEX {
        return Err(refuse(ONLY_MUTEXES));
    }
    let holder = state.leases.values().next();
    if holder.is_some_and(|l| l.duration_millis.is_none() || l.expires.is_forever()) {
        return Err(refuse(MUST_EXPIRE));
    }
    let spec = lease.spec.take().unwrap_or_default();
    lease.spec = Some(record(spec, holder, now));
    let annotations = lease.metadata.annotations.get_or_insert_with(BTreeMap::new);
    write_annotations(annotations, state, holder);
    let size: usize = annotations.iter().map(|(k, v)| k.len() + v.len()).sum();
    check_state_size(object, size, MAX_ANNOTATION_BYTES)?;
    Ok(lease)
}

/// Whether writing `next` over `read` (the Lease as read) would do nothing but add or refresh
/// places in the waiters' queue of a Lease whose holder is not a lockheed client (client-go,
/// kube-lease-manager, kubert: a `holderIdentity` that [`HOLDER_ANNOTATION`] does not name).
///
/// Such a holder never hands the Lease over to the queue, so the place is worth nothing to it,
/// and the write costs it: a client-go leader up to v0.33 releases with the Lease it last
/// wrote, so any write since its last renewal makes its release a 409 Conflict, and the Lease
/// is then taken only once it expires (v0.34 to v0.36 read first, and still conflict on a
/// write between their read and their release). A waiter behind such a holder keeps its place
/// to itself and waits for the release by watching. Writes that change anything else (the
/// record, tags, an entry withdrawn or dropped) are made.
pub(crate) fn only_queues_behind_a_stranger(read: &KubeLease, next: &KubeLease) -> bool {
    let Some(holder) = read
        .spec
        .as_ref()
        .and_then(|s| s.holder_identity.as_deref())
        .filter(|h| !h.is_empty())
    else {
        return false;
    };
    if read.spec != next.spec {
        return false;
    }
    let none = BTreeMap::new();
    let before = read.metadata.annotations.as_ref().unwrap_or(&none);
    let after = next.metadata.annotations.as_ref().unwrap_or(&none);
    let ours = annotation::<HolderFields>(Some(before), HOLDER_ANNOTATION, "")
        .ok()
        .flatten()
        .is_some_and(|fields| fields.instance_id == holder);
    let rest = |a: &BTreeMap<String, String>| {
        a.iter()
            .filter(|(key, _)| key.as_str() != QUEUE_ANNOTATION)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<BTreeMap<_, _>>()
    };
    let queue = |a: &BTreeMap<String, String>| {
        annotation::<Vec<QueueEntry>>(Some(a), QUEUE_ANNOTATION, "")
            .ok()
            .map(Option::unwrap_or_default)
    };
    let (Some(queued), Some(queueing)) = (queue(before), queue(after)) else {
        return false;
    };
    !ours
        && rest(before) == rest(after)
        && queued
            .iter()
            .all(|entry| queueing.iter().any(|e| e.instance_id == entry.instance_id))
}

/// Why a Lease keeps only mutexes.
pub(crate) const ONLY_MUTEXES: &str = "a Lease has one holder: take it as a mutex (neither \
                                        with_max_holders nor with_access)";
/// Why a Lease's holder must expire.
pub(crate) const MUST_EXPIRE: &str = "a Lease always expires (client-go and kube-lease-manager \
                                       take a Lease that is not renewed): take it with a \
                                       duration of at least 1 s";

/// client-go's record in `spec` after the write: the holder's (as client-go's
/// `tryAcquireOrRenew` writes it), a release (as its `ReleaseOnCancel` writes it), or, when
/// neither the holder nor its term changed, the record as it was (a write of the queue or the
/// tags does not touch it).
fn record(mut spec: LeaseSpec, holder: Option<&Lease>, now: DateTime<Utc>) -> LeaseSpec {
    let before = holder_lease(&spec);
    let transitions = spec.lease_transitions.unwrap_or(0);
    match holder {
        Some(lease)
            if before.as_ref().is_some_and(|b| {
                b.instance_id == lease.instance_id
                    && b.expires == lease.expires
                    && b.since == lease.since
            }) => {}
        Some(lease) => {
            let changed = before.is_none_or(|b| b.instance_id != lease.instance_id);
            let seconds = duration_seconds(lease.duration_millis.unwrap_or(1000));
            let renewed = lease.expires.to_utc() - chrono::Duration::seconds(i64::from(seconds));
            spec.holder_identity = Some(lease.instance_id.clone());
            spec.lease_duration_seconds = Some(seconds);
            spec.acquire_time = Some(micro_time(lease.since.map_or(now, GoTime::to_utc)));
            spec.renew_time = Some(micro_time(renewed));
            spec.lease_transitions = Some(if changed {
                transitions.saturating_add(1)
            } else {
                transitions
            });
        }
        None if before.is_some() => {
            spec.holder_identity = Some(String::new());
            spec.lease_duration_seconds = Some(RELEASED_DURATION_SECONDS);
            spec.acquire_time = Some(micro_time(now));
            spec.renew_time = Some(micro_time(now));
            spec.lease_transitions = Some(transitions);
        }
        None => {}
    }
    spec
}

/// Writes what client-go's record has no room for into the Lease's annotations.
fn write_annotations(
    annotations: &mut BTreeMap<String, String>,
    state: &LockState,
    holder: Option<&Lease>,
) {
    let mut put = |key: &str, value: Option<String>| match value {
        Some(value) => {
            annotations.insert(key.to_owned(), value);
        }
        None => {
            annotations.remove(key);
        }
    };
    put(
        FENCING_ANNOTATION,
        (state.fencing_token > 0).then(|| state.fencing_token.to_string()),
    );
    put(
        TAGS_ANNOTATION,
        (!state.tags.is_empty()).then(|| json(&state.tags)),
    );
    // The preferred holder's place comes from the record's `preferredHolder`, not from here.
    let queue: Vec<QueueEntry> = state
        .queue
        .iter()
        .filter(|entry| !(entry.preferred && entry.lease_millis.is_none()))
        .map(|entry| QueueEntry {
            preferred: false,
            ..entry.clone()
        })
        .collect();
    put(QUEUE_ANNOTATION, (!queue.is_empty()).then(|| json(&queue)));
    match holder {
        Some(lease) => {
            if let Some(token) = lease.token {
                let fields = HolderFields {
                    instance_id: lease.instance_id.clone(),
                    fencing_token: token,
                    nonce: lease.nonce.clone(),
                    reason: lease.reason.clone(),
                    expires: Some(lease.expires),
                    since: lease.since,
                };
                put(HOLDER_ANNOTATION, Some(json(&fields)));
            }
        }
        None => put(HOLDER_ANNOTATION, None),
    }
}

/// JSON of what this module writes, which always serializes.
fn json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("lease annotations always serialize")
}

/// Checks that a Lease can keep lock `name` as a `kind` lock with leases of `duration`.
///
/// # Errors
///
/// [`Error::InvalidConfig`] saying what a Lease cannot keep.
pub(crate) fn check_lock(name: &str, kind: &LockKind, duration: Duration) -> Result<(), Error> {
    let refuse = |reason: &str| {
        Err(Error::InvalidConfig {
            lock: name.to_owned(),
            reason: reason.to_owned(),
        })
    };
    if *kind != LockKind::Mutex {
        return refuse(ONLY_MUTEXES);
    }
    if duration.is_zero() {
        return refuse(MUST_EXPIRE);
    }
    if duration.subsec_nanos() != 0 || duration.as_secs() > u64::from(i32::MAX.unsigned_abs()) {
        return refuse(
            "a Lease's leaseDurationSeconds counts whole seconds: take it with a duration of \
             whole seconds",
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::api::ObjectMeta;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn lease(spec: serde_json::Value, annotations: &[(&str, &str)]) -> KubeLease {
        KubeLease {
            metadata: ObjectMeta {
                name: Some("x".into()),
                annotations: Some(
                    annotations
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect(),
                ),
                ..ObjectMeta::default()
            },
            spec: Some(serde_json::from_value(spec).unwrap()),
        }
    }

    fn spec_json(lease: &KubeLease) -> serde_json::Value {
        serde_json::to_value(lease.spec.as_ref().unwrap()).unwrap()
    }

    fn held_by_go() -> KubeLease {
        lease(
            serde_json::json!({
                "holderIdentity": "go-1",
                "leaseDurationSeconds": 15,
                "acquireTime": "2026-11-30T08:00:00.000000Z",
                "renewTime": "2026-11-30T09:00:00.250000Z",
                "leaseTransitions": 4,
            }),
            &[("lockheed/fencing-token", "7")],
        )
    }

    #[test]
    fn client_go_records_read_as_a_held_mutex() {
        let state = decode("x", "default/x", &held_by_go()).unwrap();
        let holder = &state.leases["go-1"];
        assert_eq!(holder.expires.to_string(), "2026-11-30T09:00:15.25Z");
        assert_eq!(holder.duration(), Some(Duration::from_secs(15)));
        assert_eq!(holder.since().unwrap(), t("2026-11-30T08:00:00Z"));
        assert_eq!(
            (
                holder.token(),
                state.fencing_token,
                state.lock_type.as_str()
            ),
            (None, 7, "mutex")
        );
        // Released by client-go (`""`) or by kube-lease-manager (fields removed): free.
        for spec in [
            serde_json::json!({"holderIdentity": "", "leaseDurationSeconds": 1}),
            serde_json::json!({"leaseTransitions": 2}),
        ] {
            assert!(
                decode("x", "default/x", &lease(spec, &[]))
                    .unwrap()
                    .leases
                    .is_empty()
            );
        }
    }

    #[test]
    fn a_take_writes_client_gos_record_and_a_renewal_keeps_acquire_time_and_transitions() {
        let now = t("2026-11-30T10:00:00.123456789Z");
        let mut state = LockState::empty("x");
        MUTEX.clone_into(&mut state.lock_type);
        let mut ours = Lease::until("rust-1", GoTime::from(now + chrono::Duration::seconds(30)));
        ours.duration_millis = Some(30_000);
        ours.token = Some(8);
        ours.since = Some(GoTime::from(now));
        state.leases.insert("rust-1".into(), ours.clone());
        state.fencing_token = 8;
        let taken = encode("x", "default/x", held_by_go(), &state, now).unwrap();
        assert_eq!(
            spec_json(&taken),
            serde_json::json!({
                "holderIdentity": "rust-1",
                "leaseDurationSeconds": 30,
                "acquireTime": "2026-11-30T10:00:00.123456Z",
                "renewTime": "2026-11-30T10:00:00.123456Z",
                "leaseTransitions": 5,
            })
        );
        let annotations = taken.metadata.annotations.as_ref().unwrap();
        assert_eq!(annotations["lockheed/fencing-token"], "8");
        assert_eq!(
            annotations["lockheed/holder"],
            r#"{"instanceID":"rust-1","fencingToken":8,"expires":"2026-11-30T10:00:30.123456789Z","since":"2026-11-30T10:00:00.123456789Z"}"#
        );
        // It reads back exactly as written, to the nanosecond the record cannot keep.
        let back = decode("x", "default/x", &taken).unwrap();
        assert_eq!(back, state);
        // A renewal 10 s later: renewTime moves, acquireTime and transitions stay.
        let later = now + chrono::Duration::seconds(10);
        ours.expires = GoTime::from(later + chrono::Duration::seconds(30));
        state.leases.insert("rust-1".into(), ours);
        let renewed = encode("x", "default/x", taken, &state, later).unwrap();
        let spec = spec_json(&renewed);
        assert_eq!(spec["renewTime"], "2026-11-30T10:00:10.123456Z");
        assert_eq!(spec["acquireTime"], "2026-11-30T10:00:00.123456Z");
        assert_eq!(spec["leaseTransitions"], 5);
    }

    #[test]
    fn a_place_in_the_queue_behind_a_client_go_holder_is_not_written() {
        let now = t("2026-11-30T09:00:01Z");
        let read = decode("x", "default/x", &held_by_go()).unwrap();
        let entry = |id: &str| {
            QueueEntry::new(
                id,
                GoTime::from(now + chrono::Duration::seconds(15)),
                GoTime::from(now),
            )
        };
        let mut queued = read.clone();
        queued.queue.push(entry("rust-1"));
        let next = encode("x", "default/x", held_by_go(), &queued, now).unwrap();
        assert!(only_queues_behind_a_stranger(&held_by_go(), &next));
        // A second waiter behind the first: the same.
        let mut second = queued.clone();
        second.queue.push(entry("rust-2"));
        let after = encode("x", "default/x", next.clone(), &second, now).unwrap();
        assert!(only_queues_behind_a_stranger(&next, &after));
        // Withdrawing a place that was written is written.
        assert!(!only_queues_behind_a_stranger(&after, &next));
        // Tags, or taking the Lease, are written.
        let mut tagged = queued.clone();
        tagged.tags = vec!["db".into()];
        let with_tags = encode("x", "default/x", held_by_go(), &tagged, now).unwrap();
        assert!(!only_queues_behind_a_stranger(&held_by_go(), &with_tags));
        let mut taken = read;
        taken.leases.clear();
        let released = encode("x", "default/x", held_by_go(), &taken, now).unwrap();
        assert!(!only_queues_behind_a_stranger(&held_by_go(), &released));
        // Behind a lockheed holder, the place is written: its release hands the lock over.
        let mut ours = Lease::until("rust-0", GoTime::from(now + chrono::Duration::seconds(15)));
        ours.duration_millis = Some(15_000);
        ours.token = Some(8);
        ours.since = Some(GoTime::from(now));
        let mut held = LockState::empty("x");
        MUTEX.clone_into(&mut held.lock_type);
        held.fencing_token = 8;
        held.leases.insert("rust-0".into(), ours);
        let held_by_us = encode("x", "default/x", held_by_go(), &held, now).unwrap();
        let mut behind = held;
        behind.queue.push(entry("rust-1"));
        let next = encode("x", "default/x", held_by_us.clone(), &behind, now).unwrap();
        assert!(!only_queues_behind_a_stranger(&held_by_us, &next));
    }

    #[test]
    fn a_release_writes_what_client_go_writes_and_other_writes_leave_the_record_alone() {
        let now = t("2026-11-30T10:00:00.5Z");
        let read = decode("x", "default/x", &held_by_go()).unwrap();
        // A waiter queueing behind the Go leader: its record is left exactly as it was.
        let mut queued = read.clone();
        queued.tags = vec!["db".into()];
        let written = encode("x", "default/x", held_by_go(), &queued, now).unwrap();
        assert_eq!(written.spec, held_by_go().spec);
        assert_eq!(
            written.metadata.annotations.as_ref().unwrap()["lockheed/tags"],
            r#"["db"]"#
        );
        // Evicted (or released): client-go's release record, transitions unchanged.
        let mut released = read;
        released.leases.clear();
        let written = encode("x", "default/x", held_by_go(), &released, now).unwrap();
        assert_eq!(
            spec_json(&written),
            serde_json::json!({
                "holderIdentity": "",
                "leaseDurationSeconds": 1,
                "acquireTime": "2026-11-30T10:00:00.500000Z",
                "renewTime": "2026-11-30T10:00:00.500000Z",
                "leaseTransitions": 4,
            })
        );
        // Released again: nothing changes in the record.
        let again = encode(
            "x",
            "default/x",
            written.clone(),
            &released,
            t("2026-12-01T00:00:00Z"),
        );
        assert_eq!(again.unwrap().spec, written.spec);
    }

    #[test]
    fn what_a_lease_cannot_keep_is_refused() {
        let mut two = LockState::semaphore("x", 2, [Lease::new("a", None), Lease::new("b", None)]);
        assert!(matches!(
            encode(
                "x",
                "default/x",
                held_by_go(),
                &two,
                t("2026-01-01T00:00:00Z")
            ),
            Err(Error::InvalidConfig { .. })
        ));
        MUTEX.clone_into(&mut two.lock_type);
        two.leases.remove("b");
        assert!(matches!(
            encode("x", "default/x", held_by_go(), &two, t("2026-01-01T00:00:00Z")),
            Err(Error::InvalidConfig { reason, .. }) if reason.contains("always expires")
        ));
        let ok = Duration::from_secs(15);
        assert!(check_lock("x", &LockKind::Mutex, ok).is_ok());
        for (kind, duration) in [
            (LockKind::Semaphore, ok),
            (LockKind::ReadWrite, ok),
            (LockKind::Mutex, Duration::ZERO),
            (LockKind::Mutex, Duration::from_millis(1500)),
        ] {
            assert!(
                check_lock("x", &kind, duration).is_err(),
                "{kind:?} {duration:?}"
            );
        }
    }

    #[test]
    fn corrupt_annotations_are_errors_that_name_the_lease() {
        for (key, value) in [
            ("lockheed/fencing-token", "seven"),
            ("lockheed/tags", "db"),
            ("lockheed/queue", "{}"),
            ("lockheed/holder", "[]"),
        ] {
            let err = decode(
                "x",
                "default/x",
                &lease(serde_json::json!({}), &[(key, value)]),
            )
            .unwrap_err();
            assert!(
                matches!(&err, Error::Corrupt { object, reason } if object == "default/x" && reason.contains(key)),
                "{err}"
            );
        }
    }

    #[test]
    fn a_preferred_holder_goes_first_and_is_not_written_to_the_queue() {
        let preferred = lease(
            serde_json::json!({
                "holderIdentity": "a",
                "leaseDurationSeconds": 15,
                "renewTime": "2026-11-30T09:00:00.000000Z",
                "strategy": "OldestEmulationVersion",
                "preferredHolder": "b",
            }),
            &[],
        );
        let state = decode("x", "default/x", &preferred).unwrap();
        let head = &state.queue[0];
        assert_eq!((head.instance_id.as_str(), head.preferred), ("b", true));
        assert_eq!(head.expires.to_string(), "2026-11-30T09:00:15Z");
        let written = encode(
            "x",
            "default/x",
            preferred.clone(),
            &state,
            t("2026-11-30T09:00:01Z"),
        );
        let written = written.unwrap();
        assert!(
            !written
                .metadata
                .annotations
                .unwrap()
                .contains_key("lockheed/queue")
        );
        let spec = written.spec.unwrap();
        assert_eq!(spec.preferred_holder.as_deref(), Some("b"), "kept as read");
        assert_eq!(spec.strategy.as_deref(), Some("OldestEmulationVersion"));
    }
}
