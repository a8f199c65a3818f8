//! kube-lock's semaphores (`metadata.annotations["kube-lock"]`), read and written exactly: the
//! `kube-lock-*` example objects of `tests/fixtures` with the readings the format notes give.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams};
use lockheed::clock::TokioClock;
use lockheed::configmap::{Format, KUBE_LOCK_ANNOTATION};
use lockheed::testing::{Fault, RequestMatcher, TestCluster, Verb};
use lockheed::{Error, Evict, KubeLocker, Lock, LockKind, Locker};
use serde_json::json;

struct Cluster {
    cluster: TestCluster,
    api: Api<ConfigMap>,
}

impl Cluster {
    async fn new() -> Self {
        let cluster = crate::harness::cluster().await;
        let api = Api::namespaced(cluster.client(), cluster.namespace());
        Self { cluster, api }
    }

    fn locker(&self) -> KubeLocker {
        KubeLocker::new(self.cluster.client(), self.cluster.namespace())
            .with_format(Format::KubeLock)
            .with_clock(Arc::new(TokioClock::new()))
    }

    /// A kube-lock holder: never expires.
    fn lock(&self, holder: &str, max: u32) -> Lock<KubeLocker> {
        Lock::new("lock", self.locker())
            .with_holder(holder)
            .with_max_holders(max)
            .with_duration(Duration::ZERO)
            .with_reason("db restart")
    }

    async fn load(&self, fixture: &str) -> ConfigMap {
        let path = format!("{}/tests/fixtures/{fixture}", env!("CARGO_MANIFEST_DIR"));
        let mut cm: ConfigMap =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        cm.metadata.resource_version = None;
        // In the test's namespace (the fixtures name `default`).
        cm.metadata.namespace = Some(self.cluster.namespace().to_owned());
        self.api.create(&PostParams::default(), &cm).await.unwrap()
    }

    /// The semaphore as kube-lock's users read it (`jq '.metadata.annotations["kube-lock"]'`).
    async fn annotation(&self) -> serde_json::Value {
        let cm = self.api.get("lock").await.unwrap();
        serde_json::from_str(&cm.metadata.annotations.unwrap()[KUBE_LOCK_ANNOTATION]).unwrap()
    }
}

#[tokio::test(start_paused = true)]
async fn held_by_holder_1_with_max_1() {
    let c = Cluster::new().await;
    let before = c.load("kube-lock-held.json").await;
    let info = c.locker().get("lock").await.unwrap().unwrap();
    assert_eq!(
        (info.kind.clone(), info.max_holders),
        (Some(LockKind::Semaphore), Some(1))
    );
    let holder = &info.holders[0];
    assert_eq!(holder.id, "holder-1");
    assert_eq!(holder.reason.as_deref(), Some("db restart"));
    assert_eq!(holder.expires, None, "kube-lock holders never expire");
    assert_eq!(
        holder.since.unwrap().to_rfc3339(),
        "2018-08-19T19:14:24+00:00"
    );
    // holder-2 cannot lock, whatever max it asks for.
    let err = c.lock("holder-2", 2).try_acquire().await.unwrap_err();
    assert!(err.is_held(), "{err}");
    assert_eq!(
        c.api.get("lock").await.unwrap().metadata.resource_version,
        before.metadata.resource_version,
        "a refused lock writes nothing"
    );
    // holder-1 locking again succeeds and leaves kube-lock's document as it was.
    let again = c.lock("holder-1", 1).try_acquire().await.unwrap();
    again.forget();
    assert_eq!(
        c.annotation().await,
        json!({"max": 1, "holders": {"holder-1": {"date": "2018-08-19T19:14:24Z", "reason": "db restart"}}})
    );
}

/// A holder's place, recorded to the second, is recognised by its guard as its own: the guard
/// watches it and never reports it lost while it is there.
#[tokio::test(start_paused = true)]
async fn a_guard_keeps_its_place_while_nothing_happens() {
    let c = Cluster::new().await;
    c.load("kube-lock-empty-max3.json").await;
    let guard = c.lock("holder-1", 3).try_acquire().await.unwrap();
    // Another holder comes and goes: the guard looks at the lock again each time.
    c.lock("holder-2", 3)
        .try_acquire()
        .await
        .unwrap()
        .release()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(!guard.is_lost(), "its place is still there");
    guard.release().await.unwrap();
}

/// kube-lock keeps no token per holder: a re-entry writes the same holder entry, which the
/// earlier guard still holds. When the re-entry's write fails with its outcome unknown, the
/// clean-up must leave that entry alone.
#[tokio::test(start_paused = true)]
async fn a_failed_reentry_keeps_the_holders_place() {
    let c = Cluster::new().await;
    c.load("kube-lock-empty-max3.json").await;
    let first = c.lock("holder-1", 3).try_acquire().await.unwrap();
    let Some(server) = crate::harness::fake_only(&c.cluster, "a 500 after commit") else {
        return;
    };
    server.inject(
        Fault::status(500)
            .after_commit()
            .on(RequestMatcher::any().verb(Verb::Update)),
    );
    let lock = c.lock("holder-1", 3);
    assert!(lock.try_acquire().await.unwrap_err().is_transient());
    lock.settle().await;
    let info = c.locker().get("lock").await.unwrap().unwrap();
    assert_eq!(info.holders.len(), 1, "{info:?}");
    assert_eq!(info.holders[0].id, "holder-1");
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(!first.is_lost(), "the earlier guard still holds its place");
}

#[tokio::test(start_paused = true)]
async fn empty_with_max_3_admits_three() {
    let c = Cluster::new().await;
    c.load("kube-lock-empty-max3.json").await;
    for holder in ["a", "b", "c"] {
        // The stored max wins over the caller's 1.
        let guard = c.lock(holder, 1).try_acquire().await.unwrap();
        assert_eq!(guard.max_holders(), Some(3));
        guard.forget();
    }
    assert!(c.lock("d", 1).try_acquire().await.unwrap_err().is_held());
    let doc = c.annotation().await;
    assert_eq!(doc["max"], 3);
    let holders = doc["holders"].as_object().unwrap();
    assert_eq!(holders.len(), 3);
    for entry in holders.values() {
        // Exactly kube-lock's fields, its date layout, no fencing token.
        let keys: Vec<_> = entry.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["date", "reason"]);
        let date = entry["date"].as_str().unwrap();
        assert!(
            chrono::NaiveDateTime::parse_from_str(date, "%Y-%m-%dT%H:%M:%SZ").is_ok(),
            "{date}"
        );
    }
    // An unlock removes one holder by name.
    let removed = c.locker().evict("lock", Evict::Holder("b")).await.unwrap();
    assert_eq!(removed[0].id, "b");
    c.lock("d", 1).try_acquire().await.unwrap().forget();
}

#[tokio::test(start_paused = true)]
async fn precreated_without_annotation_takes_the_callers_max() {
    let c = Cluster::new().await;
    c.load("kube-lock-precreated.json").await;
    let info = c.locker().get("lock").await.unwrap().unwrap();
    assert!(!info.is_held());
    assert_eq!(info.max_holders, None);
    c.lock("holder-1", 2).try_acquire().await.unwrap().forget();
    assert_eq!(c.annotation().await["max"], 2);
    // Listing finds it, as a ConfigMap that carries the annotation.
    let list = c.locker().list(None).await.unwrap();
    assert_eq!(list.locks.len(), 1);
    assert_eq!(list.locks[0].name, "lock");
}

/// The format gives defaults (no prefix, no creation), which settings made before
/// `with_format` keep: the order of the builders does not matter.
#[tokio::test(start_paused = true)]
async fn the_format_gives_defaults_and_explicit_settings_win_in_any_order() {
    let c = Cluster::new().await;
    let locker = || KubeLocker::new(c.cluster.client(), c.cluster.namespace());
    assert_eq!(c.locker().object_name("lock"), "lock");
    let prefixed = locker().with_prefix("p-").with_format(Format::KubeLock);
    assert_eq!(prefixed.object_name("lock"), "p-lock");
    let creating = locker().with_create(true).with_format(Format::KubeLock);
    let guard = Lock::new("lock", creating)
        .with_holder("holder-1")
        .with_max_holders(1)
        .with_duration(Duration::ZERO)
        .try_acquire()
        .await
        .unwrap();
    assert_eq!(
        c.annotation().await["holders"].as_object().unwrap().len(),
        1
    );
    guard.release().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_missing_configmap_is_created_only_when_allowed() {
    let c = Cluster::new().await;
    let err = c.lock("holder-1", 1).try_acquire().await.unwrap_err();
    assert!(
        matches!(&err, Error::Missing { object } if *object == format!("{}/lock", c.cluster.namespace())),
        "{err}"
    );
    assert!(c.api.get_opt("lock").await.unwrap().is_none());
    let guard = Lock::new("lock", c.locker().with_create(true))
        .with_holder("holder-1")
        .with_max_holders(1)
        .with_duration(Duration::ZERO)
        .try_acquire()
        .await
        .unwrap();
    let cm = c.api.get("lock").await.unwrap();
    assert!(cm.metadata.labels.is_none(), "kube-lock adds no label");
    assert!(cm.data.is_none(), "nor data");
    guard.release().await.unwrap();
    assert_eq!(c.annotation().await, json!({"max": 1, "holders": {}}));
}

#[tokio::test(start_paused = true)]
async fn what_kube_lock_cannot_store_is_refused() {
    let c = Cluster::new().await;
    c.load("kube-lock-precreated.json").await;
    for (lock, up_front) in [
        // Leases that expire, and mutexes, have no place in kube-lock's document: refused
        // before any request.
        (Lock::new("lock", c.locker()).with_max_holders(1), true),
        (
            Lock::new("lock", c.locker()).with_duration(Duration::ZERO),
            true,
        ),
        // Tags, once the state is built.
        (c.lock("x", 1).with_tags(["t"]), false),
    ] {
        c.cluster.reset_counters();
        let err = lock.try_acquire().await.unwrap_err();
        assert!(matches!(err, Error::InvalidConfig { .. }), "{err}");
        if up_front {
            assert_eq!(c.cluster.counts().api_requests(), 0, "{err}");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_corrupt_annotation_is_an_error_naming_the_configmap() {
    let c = Cluster::new().await;
    let mut cm = c.load("kube-lock-precreated.json").await;
    cm.metadata
        .annotations
        .get_or_insert_default()
        .insert(KUBE_LOCK_ANNOTATION.into(), "{\"max\":".into());
    let cm = c
        .api
        .replace("lock", &PostParams::default(), &cm)
        .await
        .unwrap();
    let err = c.lock("x", 1).try_acquire().await.unwrap_err();
    assert!(
        matches!(&err, Error::Corrupt { object, .. } if *object == format!("{}/lock", c.cluster.namespace())),
        "{err}"
    );
    assert_eq!(
        c.api.get("lock").await.unwrap().metadata.resource_version,
        cm.metadata.resource_version,
        "never overwritten"
    );
    let list = c.locker().list(None).await.unwrap();
    assert_eq!(list.unreadable.len(), 1);
}
