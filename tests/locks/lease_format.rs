//! `LeaseLocker` and client-go's Lease records: every example object of `tests/fixtures`
//! (`lease-*.json`, copied from `../shared/formats`) with the reading the format notes give,
//! the record written exactly as client-go writes it, and a Go leader (client-go's algorithm,
//! transcribed in `client_go.rs`) sharing a Lease with Rust holders.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use lockheed::clock::TokioClock;
use lockheed::testing::{TestCluster, Verb};
use lockheed::{Error, LeaseLocker, Lock, Locker};
use serde_json::{Value, json};

use crate::client_go::{Config, Elector};

const SECOND: Duration = Duration::from_secs(1);

struct Cluster {
    cluster: TestCluster,
    clock: Arc<TokioClock>,
}

impl Cluster {
    async fn new() -> Self {
        Self {
            cluster: crate::harness::cluster().await,
            clock: Arc::new(TokioClock::new()),
        }
    }

    fn locker(&self) -> LeaseLocker {
        LeaseLocker::new(self.cluster.client(), self.cluster.namespace())
            .with_clock(self.clock.clone())
    }

    fn lock(&self, name: &str, holder: &str) -> Lock<LeaseLocker> {
        Lock::new(name, self.locker())
            .with_holder(holder)
            .with_duration(15 * SECOND)
    }

    fn api(&self) -> Api<Lease> {
        Api::namespaced(self.cluster.client(), self.cluster.namespace())
    }

    /// `name` qualified by the test's namespace, as errors name objects.
    fn object(&self, name: &str) -> String {
        format!("{}/{name}", self.cluster.namespace())
    }

    /// Stores a fixture as its writer created it.
    async fn load(&self, fixture: &str) -> Lease {
        let path = format!("{}/tests/fixtures/{fixture}", env!("CARGO_MANIFEST_DIR"));
        let mut lease: Lease =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        lease.metadata.resource_version = None;
        // In the test's namespace (the fixtures name `default` and `kube-system`).
        lease.metadata.namespace = Some(self.cluster.namespace().to_owned());
        self.api()
            .create(&PostParams::default(), &lease)
            .await
            .unwrap()
    }

    /// The Lease's spec exactly as the server keeps it (its JSON, times as written).
    async fn raw_spec(&self, name: &str) -> Value {
        let resource = ApiResource::erase::<Lease>(&());
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.cluster.client(), self.cluster.namespace(), &resource);
        api.get(name).await.unwrap().data["spec"].clone()
    }

    async fn annotations(&self, name: &str) -> Value {
        let lease = self.api().get(name).await.unwrap();
        serde_json::to_value(lease.metadata.annotations.unwrap_or_default()).unwrap()
    }

    fn go(&self, name: &str, identity: &str) -> Elector {
        Elector::new(self.api(), name, Config::new(identity), self.clock.clone())
    }
}

/// `2026-11-30T10:00:00.123456Z`: RFC 3339 in UTC with exactly six fraction digits.
fn is_micro_time(value: &Value) -> bool {
    let s = value.as_str().unwrap_or_default();
    s.len() == 27
        && s.ends_with('Z')
        && s.as_bytes()[19] == b'.'
        && s[20..26].bytes().all(|b| b.is_ascii_digit())
        && chrono::DateTime::parse_from_rfc3339(s).is_ok()
}

#[tokio::test(start_paused = true)]
async fn a_client_go_leader_is_never_taken_while_live() {
    let c = Cluster::new().await;
    let before = c.load("lease-client-go-held.json").await;
    let leader = "controller-7d9c8b6f5-x2k4q_6a1f8e3c-2b4d-4c7e-9f1a-0e5d3c2b1a09";
    let err = c
        .lock("example-controller", "rust-1")
        .try_acquire()
        .await
        .unwrap_err();
    assert_eq!(err.holders().expect("held")[0].id, leader);
    let info = c.locker().get("example-controller").await.unwrap().unwrap();
    assert_eq!(
        info.holders[0].token, None,
        "a Go leader's term has no token"
    );
    // A waiting acquire waits (it queues, in an annotation), and never touches the record.
    let waited = c
        .lock("example-controller", "rust-1")
        .acquire_timeout(60 * SECOND)
        .await
        .unwrap_err();
    assert!(matches!(waited, Error::Timeout { .. }), "{waited}");
    let after = c.api().get("example-controller").await.unwrap();
    assert_eq!(after.spec, before.spec);
    assert_eq!(after.spec.unwrap().lease_transitions, Some(4));
}

#[tokio::test(start_paused = true)]
async fn a_lease_released_by_client_go_is_free_at_once_and_transitions_count_on() {
    let c = Cluster::new().await;
    c.load("lease-client-go-released.json").await;
    let guard = c
        .lock("example-controller", "rust-1")
        .try_acquire()
        .await
        .unwrap();
    assert_eq!(guard.token(), 1);
    let spec = c.raw_spec("example-controller").await;
    assert_eq!(spec["holderIdentity"], "rust-1");
    assert_eq!(spec["leaseDurationSeconds"], 15);
    assert_eq!(spec["leaseTransitions"], 5);
    assert!(is_micro_time(&spec["acquireTime"]), "{spec}");
    assert!(is_micro_time(&spec["renewTime"]), "{spec}");
    assert_eq!(spec["acquireTime"], spec["renewTime"]);
    // Renewed every 5 s (a third of 15 s): renewTime moves, acquireTime and transitions stay.
    tokio::time::sleep(6 * SECOND).await;
    let renewed = c.raw_spec("example-controller").await;
    assert_ne!(renewed["renewTime"], spec["renewTime"]);
    assert!(is_micro_time(&renewed["renewTime"]));
    assert_eq!(renewed["acquireTime"], spec["acquireTime"]);
    assert_eq!(renewed["leaseTransitions"], 5);
    // A release writes client-go's ReleaseOnCancel record.
    guard.release().await.unwrap();
    let released = c.raw_spec("example-controller").await;
    assert_eq!(released["holderIdentity"], "");
    assert_eq!(released["leaseDurationSeconds"], 1);
    assert_eq!(released["leaseTransitions"], 5);
    assert_eq!(released["acquireTime"], released["renewTime"]);
    assert!(is_micro_time(&released["renewTime"]));
    assert!(released["renewTime"].as_str() > renewed["renewTime"].as_str());
}

#[tokio::test(start_paused = true)]
async fn a_lease_released_by_kube_lease_manager_is_free() {
    let c = Cluster::new().await;
    c.load("lease-kube-lease-manager-released.json").await;
    let info = c.locker().get("jobs-logger").await.unwrap().unwrap();
    assert!(!info.is_held());
    let guard = c.lock("jobs-logger", "rust-1").try_acquire().await.unwrap();
    let spec = c.raw_spec("jobs-logger").await;
    assert_eq!(spec["holderIdentity"], "rust-1");
    assert_eq!(spec["leaseTransitions"], 3);
    guard.release().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_holder_that_is_not_preferred_gives_the_lease_up() {
    let c = Cluster::new().await;
    c.load("lease-coordinated-preferred.json").await;
    let lock = |holder: &str| {
        Lock::new("kube-scheduler", c.locker())
            .with_holder(holder)
            .with_duration(15 * SECOND)
    };
    // scheduler-a holds it: nobody else takes it.
    assert!(
        lock("scheduler-c")
            .try_acquire()
            .await
            .unwrap_err()
            .is_held()
    );
    // scheduler-a (this process, under the same identity) holds it, and at its next
    // renewal gives it up instead of renewing.
    let a = lock("scheduler-a").try_acquire().await.unwrap();
    assert!(a.is_reentry());
    tokio::time::timeout(6 * SECOND, a.lost())
        .await
        .expect("a holder that is not preferred gives the lease up at its next renewal");
    // Until its guard is released (its work has stopped), the record still names it.
    let spec = c.raw_spec("kube-scheduler").await;
    assert_eq!(spec["holderIdentity"], "scheduler-a");
    a.release().await.unwrap();
    let spec = c.raw_spec("kube-scheduler").await;
    assert_eq!(spec["holderIdentity"], "");
    assert_eq!(spec["preferredHolder"], "scheduler-b", "kept");
    assert_eq!(spec["strategy"], "OldestEmulationVersion", "kept");
    // Free, but the preferred holder comes first: others wait for it...
    let err = lock("scheduler-c").try_acquire().await.unwrap_err();
    let waiting = &err.holders().unwrap()[0];
    assert!(waiting.id == "scheduler-b" && waiting.waiting, "{err}");
    // ...and it takes the lease, and keeps it.
    let b = lock("scheduler-b").try_acquire().await.unwrap();
    assert_eq!(c.raw_spec("kube-scheduler").await["leaseTransitions"], 2);
    tokio::time::sleep(30 * SECOND).await;
    assert!(!b.is_lost());
    b.release().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_go_leader_between_two_rust_holders_never_sets_tokens_back() {
    let c = Cluster::new().await;
    let first = c.lock("ctl", "rust-1").try_acquire().await.unwrap();
    let t1 = first.token();
    first.release().await.unwrap();
    // A client-go replica takes the released Lease at its first try, and renews it.
    let mut go = c.go("ctl", "go-1");
    assert!(go.try_acquire_or_renew().await);
    tokio::time::sleep(2 * SECOND).await;
    assert!(go.try_acquire_or_renew().await);
    let spec = c.raw_spec("ctl").await;
    assert_eq!(spec["holderIdentity"], "go-1");
    assert_eq!(spec["leaseTransitions"], 2);
    // client-go keeps the metadata as read: the counter survives its writes.
    assert_eq!(
        c.annotations("ctl").await["lockheed/fencing-token"],
        t1.to_string()
    );
    let err = c.lock("ctl", "rust-2").try_acquire().await.unwrap_err();
    assert_eq!(err.holders().unwrap()[0].id, "go-1");
    assert!(go.release().await);
    // The next Rust holder's token is above the last Rust holder's.
    let second = c.lock("ctl", "rust-2").try_acquire().await.unwrap();
    assert!(second.token() > t1);
    assert_eq!(c.raw_spec("ctl").await["leaseTransitions"], 3);
    // A Go contender that watched the Rust holder renew does not take it.
    let mut contender = c.go("ctl", "go-2");
    for _ in 0..20 {
        assert!(!contender.try_acquire_or_renew().await);
        tokio::time::sleep(2 * SECOND).await;
    }
    second.release().await.unwrap();
    assert!(
        contender.try_acquire_or_renew().await,
        "released: free at once"
    );
}

#[tokio::test(start_paused = true)]
async fn a_crashed_go_leader_is_taken_over_only_once_its_lease_has_run_out() {
    let c = Cluster::new().await;
    let mut go = c.go("ctl", "go-1");
    assert!(go.try_acquire_or_renew().await);
    let crashed = tokio::time::Instant::now();
    // Its last renewal was just now, with 15 s leases: a waiter takes over after 15 s of
    // seeing the record unchanged (client-go's rule), plus the 2 s skew allowance by the wall
    // clock, whichever is later.
    let guard = c.lock("ctl", "rust-1").acquire().await.unwrap();
    let waited = crashed.elapsed();
    assert!(
        waited >= 17 * SECOND && waited < 18 * SECOND,
        "took over after {waited:?}"
    );
    // client-go created it with 0 transitions; the takeover is the first.
    assert_eq!(c.raw_spec("ctl").await["leaseTransitions"], 1);
    // The crashed leader comes back: its fast path fails (the Lease changed), and it sees
    // the new holder's valid lease.
    assert!(!go.try_acquire_or_renew().await);
    assert_eq!(go.leader(), "rust-1");
    guard.release().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn every_write_is_a_put_of_the_lease_read_with_its_resource_version() {
    let c = Cluster::new().await;
    let guard = c.lock("ctl", "rust-1").try_acquire().await.unwrap();
    tokio::time::sleep(6 * SECOND).await;
    guard.release().await.unwrap();
    // Only the Lease was written to: a create, a renewal and a release, all but the first PUTs.
    let counts = c.cluster.counts();
    let writes = [Verb::Create, Verb::Update, Verb::Patch, Verb::Delete].map(|v| counts.get(v));
    assert_eq!(writes, [1, 2, 0, 0], "{counts:?}");
    // A stale resourceVersion is refused: another writer's change is never lost.
    let mut stale = c.api().get("ctl").await.unwrap();
    c.lock("ctl", "rust-2")
        .try_acquire()
        .await
        .unwrap()
        .release()
        .await
        .unwrap();
    stale.spec.as_mut().unwrap().holder_identity = Some("overwrite".into());
    let err = c
        .api()
        .replace("ctl", &PostParams::default(), &stale)
        .await
        .unwrap_err();
    assert!(matches!(err, kube::Error::Api(s) if s.code == 409));
}

#[tokio::test(start_paused = true)]
async fn corrupt_annotations_are_typed_errors_and_never_overwritten() {
    let c = Cluster::new().await;
    let _fine = c.lock("fine", "x").try_acquire().await.unwrap();
    let broken = json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": { "name": "broken", "annotations": { "lockheed/fencing-token": "seven" } },
        "spec": { "holderIdentity": "" },
    });
    c.api()
        .patch("broken", &PatchParams::apply("test"), &Patch::Apply(broken))
        .await
        .unwrap();
    let err = c.lock("broken", "x").try_acquire().await.unwrap_err();
    assert!(
        matches!(&err, Error::Corrupt { object, .. } if *object == c.object("broken")),
        "{err}"
    );
    let err = c.lock("broken", "x").acquire().await.unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }));
    let list = c.locker().list(None).await.unwrap();
    let names: Vec<_> = list.locks.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["fine"]);
    assert!(list.unreadable[0].to_string().contains(&c.object("broken")));
    assert_eq!(
        c.annotations("broken").await["lockheed/fencing-token"],
        "seven"
    );
}

#[tokio::test(start_paused = true)]
async fn lease_kinds_and_durations_are_checked_before_any_request() {
    let c = Cluster::new().await;
    c.cluster.cut_off();
    for lock in [
        c.lock("a", "x").with_max_holders(2),
        c.lock("a", "x").with_access(lockheed::Access::Shared),
        c.lock("a", "x").with_duration(Duration::ZERO),
        c.lock("a", "x").with_duration(Duration::from_millis(2500)),
    ] {
        let err = lock.try_acquire().await.unwrap_err();
        assert!(matches!(err, Error::InvalidConfig { .. }), "{err}");
    }
    let err = c.lock("Not_A_Name", "x").try_acquire().await.unwrap_err();
    assert!(
        matches!(&err, Error::InvalidName { reason, .. } if reason.contains("Lease name")),
        "{err}"
    );
    c.cluster.restore();
    assert!(c.locker().get("ok.name").await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn waiters_share_one_watch_and_a_release_hands_the_lease_over() {
    let c = Cluster::new().await;
    let locker = c.locker();
    let mut held = Vec::new();
    for name in ["a", "b"] {
        let lock = Lock::new(name, locker.clone())
            .with_holder("holder")
            .with_duration(15 * SECOND);
        held.push(lock.try_acquire().await.unwrap());
    }
    let waiters: Vec<_> = ["a", "b"]
        .map(|name| {
            let lock = Lock::new(name, locker.clone())
                .with_holder("waiter")
                .with_duration(15 * SECOND);
            tokio::spawn(async move { lock.acquire().await.unwrap() })
        })
        .into();
    tokio::time::sleep(SECOND).await;
    assert_eq!(
        locker.active_watches(),
        1,
        "one watch of the namespace's Leases"
    );
    for guard in held {
        guard.release().await.unwrap();
    }
    // Each release wrote the next holder into the record: a handover, one write.
    for name in ["a", "b"] {
        assert_eq!(c.raw_spec(name).await["holderIdentity"], "waiter");
    }
    for waiter in waiters {
        assert_eq!(waiter.await.unwrap().token(), 2);
    }
}

/// kube's client sends a request again after a 503; when the first one was committed, the second
/// gets a 409, and the compare-and-swap reads the Lease to tell whether its own write is there.
/// That only works if the Lease reads back as exactly the state written (its times to the
/// nanosecond, which client-go's MicroTimes cannot carry: the holder's annotation does).
#[tokio::test(start_paused = true)]
async fn writes_retried_by_the_client_after_their_commit_are_recognised() {
    use lockheed::testing::{Fault, RequestMatcher};
    let c = Cluster::new().await;
    let Some(server) = crate::harness::fake_only(&c.cluster, "503 after commit") else {
        return;
    };
    // A take: created, answered 503, sent again, 409. The read finds this very lease: the
    // acquisition stands as written, with its token (no second write, no re-entry).
    server.inject(
        Fault::status(503)
            .after_commit()
            .on(RequestMatcher::any().verb(Verb::Create)),
    );
    let guard = c.lock("retried", "rust-1").try_acquire().await.unwrap();
    server.clear_faults();
    assert_eq!((guard.token(), guard.is_reentry()), (1, false));
    let updates = server.counts().get(Verb::Update);
    assert_eq!(updates, 0, "nothing written after the read");
    // A release, the same way.
    server.inject(
        lockheed::testing::Fault::status(503)
            .after_commit()
            .on(lockheed::testing::RequestMatcher::any().verb(Verb::Update)),
    );
    let released = guard.release().await;
    server.clear_faults();
    assert!(released.is_ok(), "{released:?}");
    assert_eq!(c.raw_spec("retried").await["holderIdentity"], "");
}
