//! client-go's leader election, transcribed to Rust so that tests can run it against
//! `LeaseLocker` on the fake API server: a Go replica of a controller, as it behaves.
//!
//! It follows client-go v0.31 (Kubernetes 1.31), `tools/leaderelection/leaderelection.go`:
//! `tryAcquireOrRenew` (with its optimistic fast path for the leader, its observed-time rule,
//! and `leaseTransitions` + 1 for a new holder), `release` (the `ReleaseOnCancel` record),
//! `acquire` (`wait.JitterUntil(RetryPeriod, JitterFactor 1.2, sliding)`) and `renew`
//! (`wait.Until(RetryPeriod)` of `wait.PollImmediateUntil(RetryPeriod)` within
//! `RenewDeadline`); and `resourcelock/leaselock.go`: `Get` (the record, and its JSON as the
//! "raw record" whose change resets the observed time), `Create`, and `Update`, which PUTs the
//! last Lease it read or wrote with the whole spec replaced, so it carries that
//! resourceVersion and keeps the metadata (annotations included) as read.
//!
//! Go's `time.Time` carries a monotonic reading: observed times and lease validity are
//! measured here on Tokio's clock (`Instant`), record times on the injected wall clock.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, PostParams};
use lockheed::clock::Clock;
use serde::Serialize;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// client-go's `JitterFactor`.
const JITTER_FACTOR: f64 = 1.2;

/// `LeaderElectionConfig`'s timings and the lock's identity.
#[derive(Debug, Clone)]
pub struct Config {
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

impl Config {
    /// client-go's defaults ("core clients default this value to ..."): 15 s, 10 s, 2 s.
    pub fn new(identity: &str) -> Self {
        Self {
            identity: identity.to_owned(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// `resourcelock.LeaderElectionRecord`, as `json.Marshal` writes it (the raw record).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    pub holder_identity: String,
    pub lease_duration_seconds: i32,
    #[serde(serialize_with = "go_time")]
    pub acquire_time: Option<DateTime<Utc>>,
    #[serde(serialize_with = "go_time")]
    pub renew_time: Option<DateTime<Utc>>,
    pub leader_transitions: i32,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub strategy: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub preferred_holder: String,
}

/// `metav1.Time`'s JSON: RFC 3339 to the second, `null` for the zero time.
#[allow(clippy::ref_option)] // serde's serialize_with passes a reference.
fn go_time<S: serde::Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_str(&t.format("%Y-%m-%dT%H:%M:%SZ").to_string()),
        None => s.serialize_none(),
    }
}

fn utc(t: &MicroTime) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(t.0.as_microsecond()).unwrap()
}

fn micro(t: DateTime<Utc>) -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::from_microsecond(t.timestamp_micros()).unwrap())
}

/// `LeaseSpecToLeaderElectionRecord`.
fn to_record(spec: &LeaseSpec) -> Record {
    Record {
        holder_identity: spec.holder_identity.clone().unwrap_or_default(),
        lease_duration_seconds: spec.lease_duration_seconds.unwrap_or(0),
        acquire_time: spec.acquire_time.as_ref().map(utc),
        renew_time: spec.renew_time.as_ref().map(utc),
        leader_transitions: spec.lease_transitions.unwrap_or(0),
        strategy: spec.strategy.clone().unwrap_or_default(),
        preferred_holder: spec.preferred_holder.clone().unwrap_or_default(),
    }
}

/// `LeaderElectionRecordToLeaseSpec`: the whole spec, `holderIdentity` always set.
fn to_spec(record: &Record) -> LeaseSpec {
    LeaseSpec {
        holder_identity: Some(record.holder_identity.clone()),
        lease_duration_seconds: Some(record.lease_duration_seconds),
        acquire_time: record.acquire_time.map(micro),
        renew_time: record.renew_time.map(micro),
        lease_transitions: Some(record.leader_transitions),
        strategy: (!record.strategy.is_empty()).then(|| record.strategy.clone()),
        preferred_holder: (!record.preferred_holder.is_empty())
            .then(|| record.preferred_holder.clone()),
    }
}

/// `resourcelock.LeaseLock`.
struct LeaseLock {
    api: Api<Lease>,
    name: String,
    lease: Option<Lease>,
}

impl LeaseLock {
    async fn get(&mut self) -> Result<(Record, String), kube::Error> {
        let lease = self.api.get(&self.name).await?;
        let record = to_record(&lease.spec.clone().unwrap_or_default());
        self.lease = Some(lease);
        let raw = serde_json::to_string(&record).unwrap();
        Ok((record, raw))
    }

    async fn create(&mut self, record: &Record) -> Result<(), kube::Error> {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(to_spec(record)),
        };
        self.lease = Some(self.api.create(&PostParams::default(), &lease).await?);
        Ok(())
    }

    async fn update(&mut self, record: &Record) -> Result<(), kube::Error> {
        let Some(lease) = self.lease.as_mut() else {
            panic!("lease not initialized, call get or create first");
        };
        lease.spec = Some(to_spec(record));
        let written = self
            .api
            .replace(&self.name, &PostParams::default(), lease)
            .await?;
        self.lease = Some(written);
        Ok(())
    }
}

/// `LeaderElector`.
pub struct Elector {
    pub config: Config,
    lock: LeaseLock,
    clock: Arc<dyn Clock>,
    observed_record: Record,
    observed_raw: String,
    observed_time: Option<Instant>,
    rng: fastrand::Rng,
}

fn is_not_found(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(s) if s.code == 404)
}

impl Elector {
    /// An elector for Lease `name` through `api`, writing times from `clock`.
    pub fn new(api: Api<Lease>, name: &str, config: Config, clock: Arc<dyn Clock>) -> Self {
        Self {
            config,
            lock: LeaseLock {
                api,
                name: name.to_owned(),
                lease: None,
            },
            clock,
            observed_record: Record::default(),
            observed_raw: String::new(),
            observed_time: None,
            rng: fastrand::Rng::with_seed(7),
        }
    }

    /// Seeds the retry jitter.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.rng = fastrand::Rng::with_seed(seed);
        self
    }

    /// `IsLeader`: the last observed record names this client.
    pub fn is_leader(&self) -> bool {
        self.observed_record.holder_identity == self.config.identity
    }

    /// `GetLeader`.
    pub fn leader(&self) -> &str {
        &self.observed_record.holder_identity
    }

    /// `isLeaseValid`: observed time plus the observed record's duration is after `now`.
    fn is_lease_valid(&self, now: Instant) -> bool {
        let duration = Duration::from_secs(
            u64::try_from(self.observed_record.lease_duration_seconds).unwrap_or(0),
        );
        self.observed_time.is_some_and(|t| t + duration > now)
    }

    fn set_observed_record(&mut self, record: Record) {
        self.observed_record = record;
        self.observed_time = Some(Instant::now());
    }

    /// `tryAcquireOrRenew`.
    pub async fn try_acquire_or_renew(&mut self) -> bool {
        let (wall, now) = (self.clock.now(), Instant::now());
        let mut record = Record {
            holder_identity: self.config.identity.clone(),
            lease_duration_seconds: i32::try_from(self.config.lease_duration.as_secs()).unwrap(),
            renew_time: Some(wall),
            acquire_time: Some(wall),
            ..Record::default()
        };
        // 1. fast path for the leader to update optimistically assuming that the record
        // observed last time is the current version.
        if self.is_leader() && self.is_lease_valid(now) {
            record.acquire_time = self.observed_record.acquire_time;
            record.leader_transitions = self.observed_record.leader_transitions;
            if self.lock.update(&record).await.is_ok() {
                self.set_observed_record(record);
                return true;
            }
        }
        // 2. obtain or create the ElectionRecord
        let (old, raw) = match self.lock.get().await {
            Ok(got) => got,
            Err(err) if is_not_found(&err) => {
                if self.lock.create(&record).await.is_err() {
                    return false;
                }
                self.set_observed_record(record);
                return true;
            }
            Err(_) => return false,
        };
        // 3. Record obtained, check the Identity & Time
        if self.observed_raw != raw {
            self.set_observed_record(old.clone());
            self.observed_raw = raw;
        }
        if !old.holder_identity.is_empty() && self.is_lease_valid(now) && !self.is_leader() {
            return false;
        }
        // 4. We're going to try to update.
        if self.is_leader() {
            record.acquire_time = old.acquire_time;
            record.leader_transitions = old.leader_transitions;
        } else {
            record.leader_transitions = old.leader_transitions + 1;
        }
        if self.lock.update(&record).await.is_err() {
            return false;
        }
        self.set_observed_record(record);
        true
    }

    /// `release` (`ReleaseOnCancel`): an update of the last Lease read or written.
    pub async fn release(&mut self) -> bool {
        if !self.is_leader() {
            return true;
        }
        let wall = self.clock.now();
        let record = Record {
            leader_transitions: self.observed_record.leader_transitions,
            lease_duration_seconds: 1,
            renew_time: Some(wall),
            acquire_time: Some(wall),
            ..Record::default()
        };
        if self.lock.update(&record).await.is_err() {
            return false;
        }
        self.set_observed_record(record);
        true
    }

    /// `wait.Jitter(RetryPeriod, JitterFactor)`.
    fn jittered(&mut self) -> Duration {
        self.config
            .retry_period
            .mul_f64(1.0 + self.rng.f64() * JITTER_FACTOR)
    }

    /// `acquire`: tries at once, then every jittered retry period, until it leads (`true`)
    /// or `stop` fires (`false`).
    pub async fn acquire(&mut self, stop: &CancellationToken) -> bool {
        loop {
            if stop.is_cancelled() {
                return false;
            }
            if self.try_acquire_or_renew().await {
                return true;
            }
            let pause = self.jittered();
            tokio::select! {
                () = stop.cancelled() => return false,
                () = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// `renew`: renews every retry period until a renewal keeps failing for the renew
    /// deadline (leadership lost) or `stop` fires; returns when this client stops leading.
    pub async fn renew(&mut self, stop: &CancellationToken) {
        loop {
            let (deadline, retry) = (self.config.renew_deadline, self.config.retry_period);
            let poll = async {
                loop {
                    if self.try_acquire_or_renew().await {
                        return;
                    }
                    tokio::time::sleep(retry).await;
                }
            };
            let renewed = tokio::select! {
                () = stop.cancelled() => return,
                renewed = tokio::time::timeout(deadline, poll) => renewed.is_ok(),
            };
            if !renewed {
                return;
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(retry) => {}
            }
        }
    }
}
