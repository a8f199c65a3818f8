//! Go lockheed's ConfigMaps, read and written exactly: every example object of
//! `tests/fixtures` (copied from `../shared/formats`) with the reading the format notes give.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams};
use lockheed::clock::TokioClock;
use lockheed::testing::TestCluster;
use lockheed::{Condition, Error, KubeLocker, Lock, Locker};

struct Cluster {
    cluster: TestCluster,
    api: Api<ConfigMap>,
    clock: Arc<TokioClock>,
}

impl Cluster {
    async fn new() -> Self {
        let cluster = crate::harness::cluster().await;
        let api = Api::namespaced(cluster.client(), cluster.namespace());
        let clock = Arc::new(TokioClock::new());
        Self {
            cluster,
            api,
            clock,
        }
    }

    fn locker(&self) -> KubeLocker {
        KubeLocker::new(self.cluster.client(), self.cluster.namespace())
            .with_clock(self.clock.clone())
    }

    fn lock(&self, name: &str, holder: &str) -> Lock<KubeLocker> {
        Lock::new(name, self.locker()).with_holder(holder)
    }

    /// Stores a fixture as a client would have created it.
    async fn load(&self, fixture: &str) -> ConfigMap {
        let path = format!("{}/tests/fixtures/{fixture}", env!("CARGO_MANIFEST_DIR"));
        let mut cm: ConfigMap =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        cm.metadata.resource_version = None;
        // In the test's namespace (the fixtures name `default`).
        cm.metadata.namespace = Some(self.cluster.namespace().to_owned());
        self.api.create(&PostParams::default(), &cm).await.unwrap()
    }

    async fn get(&self, name: &str) -> ConfigMap {
        self.api.get(name).await.unwrap()
    }
}

fn state(cm: &ConfigMap) -> serde_json::Value {
    serde_json::from_str(&cm.data.as_ref().unwrap()["lock"]).unwrap()
}

#[tokio::test(start_paused = true)]
async fn created_but_never_acquired_is_free_with_its_tags() {
    let c = Cluster::new().await;
    c.load("lockheed-created-never-acquired.json").await;
    let info = c.locker().get("testlock").await.unwrap().unwrap();
    assert!(!info.is_held());
    assert_eq!(info.tags, ["testtag"]);
    assert_eq!(info.kind, None);
    let guard = c.lock("testlock", "me").try_acquire().await.unwrap();
    assert_eq!(guard.token(), 1);
    let stored = state(&c.get("lockheed-testlock").await);
    assert_eq!(stored["lockType"], "mutex");
    assert_eq!(stored["tags"], serde_json::json!(["testtag"]));
}

#[tokio::test(start_paused = true)]
async fn held_by_a_go_client_blocks_without_force() {
    let c = Cluster::new().await;
    let before = c.load("lockheed-held.json").await;
    let err = c.lock("testlock", "me").try_acquire().await.unwrap_err();
    let holders = err.holders().expect("held");
    assert_eq!(holders[0].id, "6f1d2c3e-8a41-4c55-9d0e-2b7f4a9c1e10");
    assert_eq!(
        holders[0].expires.unwrap().to_rfc3339(),
        "2099-01-01T00:00:10.123456789+00:00"
    );
    // The Go client's lease is untouched.
    assert_eq!(
        c.get("lockheed-testlock").await.metadata.resource_version,
        before.metadata.resource_version
    );
}

#[tokio::test(start_paused = true)]
async fn an_expired_go_lease_is_replaced() {
    let c = Cluster::new().await;
    c.load("lockheed-expired.json").await;
    assert!(!c.locker().get("testlock").await.unwrap().unwrap().is_held());
    let _guard = c.lock("testlock", "me").try_acquire().await.unwrap();
    let stored = state(&c.get("lockheed-testlock").await);
    let holders: Vec<_> = stored["leases"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    assert_eq!(holders, ["me"], "the stale lease is gone");
}

#[tokio::test(start_paused = true)]
async fn no_expiry_is_held_forever_and_taken_by_force() {
    let c = Cluster::new().await;
    c.load("lockheed-no-expiry.json").await;
    let info = c.locker().get("migrations").await.unwrap().unwrap();
    assert_eq!(
        info.holders[0].expires, None,
        "9999-12-31T23:59:59Z means no expiry"
    );
    assert_eq!(info.tags, ["forceme", "db"]);
    tokio::time::sleep(Duration::from_secs(365 * 24 * 3600)).await;
    assert!(
        c.lock("migrations", "me")
            .try_acquire()
            .await
            .unwrap_err()
            .is_held()
    );
    let guard = c
        .lock("migrations", "me")
        .with_force(Condition::tags_contain("forceme"))
        .try_acquire()
        .await
        .unwrap();
    assert_eq!(guard.token(), 1);
    let info = c.locker().get("migrations").await.unwrap().unwrap();
    assert_eq!(info.holders.len(), 1);
    assert_eq!(info.holders[0].id, "me");
}

#[tokio::test(start_paused = true)]
async fn a_go_writer_mid_write_counts_as_busy_and_keeps_its_reservation() {
    let c = Cluster::new().await;
    let before = c.load("lockheed-reserved-by-go-client.json").await;
    let err = c.lock("testlock", "me").try_acquire().await.unwrap_err();
    assert_eq!(
        err.holders().unwrap()[0].id,
        "0c9e8d7f-1111-4222-8333-444455556666"
    );
    let after = c.get("lockheed-testlock").await;
    assert_eq!(
        after.metadata.resource_version,
        before.metadata.resource_version
    );
    assert_eq!(
        after.metadata.annotations.unwrap()["reserved/by"],
        "0c9e8d7f-1111-4222-8333-444455556666"
    );
}

#[tokio::test(start_paused = true)]
async fn a_precreated_configmap_is_adopted_and_keeps_its_contents() {
    let c = Cluster::new().await;
    let mut cm = c.load("lockheed-precreated-empty.json").await;
    // An administrator's extra keys, labels and annotations must survive.
    cm.data = Some([("owner".to_owned(), "team-a".to_owned())].into());
    cm.metadata.labels = Some([("team".to_owned(), "a".to_owned())].into());
    cm.metadata.annotations = Some([("note".to_owned(), "keep me".to_owned())].into());
    c.api
        .replace("lockheed-empty", &PostParams::default(), &cm)
        .await
        .unwrap();
    assert!(!c.locker().get("empty").await.unwrap().unwrap().is_held());
    let guard = c.lock("empty", "me").try_acquire().await.unwrap();
    guard.release().await.unwrap();
    let after = c.get("lockheed-empty").await;
    let data = after.data.unwrap();
    assert_eq!(data["owner"], "team-a");
    assert!(data.contains_key("lock"));
    let labels = after.metadata.labels.unwrap();
    assert_eq!(labels["team"], "a");
    assert_eq!(
        labels["lockheed/lock"], "",
        "labelled so that listing finds it"
    );
    assert_eq!(after.metadata.annotations.unwrap()["note"], "keep me");
}

/// A lock keeps its object without `metadata.managedFields` (memory: a held or watched lock
/// does not carry its field owners around) and its writes leave them out, so the API server
/// keeps every manager's entry: another tool's fields stay its own.
#[tokio::test(start_paused = true)]
async fn writes_keep_every_managers_fields() {
    use kube::api::{Patch, PatchParams};
    use lockheed::backend::Backend;

    let c = Cluster::new().await;
    let applied = serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "lockheed-owned", "labels": {"team": "a"}},
        "data": {"owner": "team-a"},
    });
    c.api
        .patch(
            "lockheed-owned",
            &PatchParams::apply("other-tool"),
            &Patch::Apply(&applied),
        )
        .await
        .unwrap();
    let locker = c.locker();
    let guard = c.lock("owned", "me").try_acquire().await.unwrap();
    guard.release().await.unwrap();

    let record = locker.read("owned").await.unwrap().unwrap();
    assert_eq!(record.version.config_map().metadata.managed_fields, None);
    let after = c.get("lockheed-owned").await;
    let managers: Vec<(String, String)> = after
        .metadata
        .managed_fields
        .unwrap()
        .into_iter()
        .map(|e| {
            (
                e.manager.unwrap_or_default(),
                e.operation.unwrap_or_default(),
            )
        })
        .collect();
    assert!(
        managers.contains(&("other-tool".to_owned(), "Apply".to_owned())),
        "{managers:?}"
    );
    assert!(
        managers.contains(&(
            lockheed::configmap::FIELD_MANAGER.to_owned(),
            "Update".to_owned()
        )),
        "{managers:?}"
    );
    // The other tool still owns its key: applying it again is no conflict.
    c.api
        .patch(
            "lockheed-owned",
            &PatchParams::apply("other-tool"),
            &Patch::Apply(&applied),
        )
        .await
        .unwrap();
    assert_eq!(
        c.get("lockheed-owned").await.data.unwrap()["owner"],
        "team-a"
    );
}

#[tokio::test(start_paused = true)]
async fn a_corrupt_state_names_its_configmap_and_hides_nothing() {
    let c = Cluster::new().await;
    let before = c.load("lockheed-corrupt.json").await;
    c.load("lockheed-held.json").await;
    let err = c.lock("broken", "me").try_acquire().await.unwrap_err();
    match &err {
        Error::Corrupt { object, .. } => {
            assert_eq!(
                *object,
                format!("{}/lockheed-broken", c.cluster.namespace())
            );
        }
        other => panic!("expected Corrupt, got {other}"),
    }
    assert!(err.to_string().starts_with(&format!(
        "the lock state in {}/lockheed-broken is corrupt",
        c.cluster.namespace()
    )));
    assert_eq!(
        c.get("lockheed-broken").await.metadata.resource_version,
        before.metadata.resource_version
    );
    let list = c.locker().list(None).await.unwrap();
    assert_eq!(
        list.locks
            .iter()
            .map(|l| l.name.as_str())
            .collect::<Vec<_>>(),
        ["testlock"]
    );
    assert_eq!(list.unreadable.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn kube_lock_semaphores_are_not_lockheed_locks() {
    // kube-lock keeps its semaphores in unlabelled ConfigMaps of any name: listing lockheed
    // locks does not see them, and they are never touched.
    let c = Cluster::new().await;
    for (fixture, name) in [("kube-lock-held.json", "lock")] {
        let before = c.load(fixture).await;
        assert!(c.locker().list(None).await.unwrap().locks.is_empty());
        assert_eq!(
            c.get(name).await.metadata.resource_version,
            before.metadata.resource_version
        );
    }
    for fixture in ["kube-lock-empty-max3.json", "kube-lock-precreated.json"] {
        let path = format!("{}/tests/fixtures/{fixture}", env!("CARGO_MANIFEST_DIR"));
        let cm: ConfigMap = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        assert_eq!(cm.metadata.name.as_deref(), Some("lock"));
        assert!(cm.metadata.labels.is_none());
    }
}

#[tokio::test(start_paused = true)]
async fn what_we_write_is_go_lockheeds_format() {
    let c = Cluster::new().await;
    let guard = c
        .lock("fmt", "6f1d2c3e-8a41-4c55-9d0e-2b7f4a9c1e10")
        .with_duration(Duration::from_secs(30))
        .with_tags(["t"])
        .try_acquire()
        .await
        .unwrap();
    let cm = c.get("lockheed-fmt").await;
    assert_eq!(cm.metadata.labels.as_ref().unwrap()["lockheed/lock"], "");
    let json = &cm.data.as_ref().unwrap()["lock"];
    // Go's field order, its lease shape, and an RFC 3339 time Go parses.
    assert!(json.starts_with(r#"{"name":"fmt","lockType":"mutex","leases":{"6f1d2c3e-8a41-4c55-9d0e-2b7f4a9c1e10":{"instanceID":"6f1d2c3e-8a41-4c55-9d0e-2b7f4a9c1e10","expires":""#), "{json}");
    assert!(json.contains(r#""tags":["t"]"#), "{json}");
    let state: serde_json::Value = serde_json::from_str(json).unwrap();
    let expires = state["leases"]["6f1d2c3e-8a41-4c55-9d0e-2b7f4a9c1e10"]["expires"]
        .as_str()
        .unwrap();
    assert!(
        chrono::DateTime::parse_from_rfc3339(expires).is_ok(),
        "{expires}"
    );
    assert_eq!(state["fencingToken"], guard.token());
    assert_eq!(
        cm.metadata.annotations.as_ref().unwrap()["lockheed/fencing-token"],
        guard.token().to_string()
    );

    // Duration zero is Go's "forever".
    guard.release().await.unwrap();
    let _g = c
        .lock("fmt", "x")
        .with_duration(Duration::ZERO)
        .try_acquire()
        .await
        .unwrap();
    let state = self::state(&c.get("lockheed-fmt").await);
    assert_eq!(state["leases"]["x"]["expires"], "9999-12-31T23:59:59Z");
}

#[tokio::test(start_paused = true)]
async fn fencing_tokens_survive_a_go_rewrite() {
    let c = Cluster::new().await;
    for holder in ["a", "b", "c"] {
        c.lock("fence", holder)
            .try_acquire()
            .await
            .unwrap()
            .release()
            .await
            .unwrap();
    }
    // A Go client takes and releases the lock: it rewrites the state without the keys it does
    // not know, but keeps the ConfigMap's annotations.
    let mut cm = c.get("lockheed-fence").await;
    let go_state = r#"{"name":"fence","lockType":"mutex","leases":{}}"#;
    cm.data
        .as_mut()
        .unwrap()
        .insert("lock".into(), go_state.into());
    c.api
        .replace("lockheed-fence", &PostParams::default(), &cm)
        .await
        .unwrap();
    assert_eq!(
        c.locker()
            .get("fence")
            .await
            .unwrap()
            .unwrap()
            .fencing_token,
        3
    );
    let next = c.lock("fence", "d").try_acquire().await.unwrap();
    assert_eq!(next.token(), 4, "never backwards");
}

#[tokio::test(start_paused = true)]
async fn names_that_cannot_form_a_configmap_name_are_refused_up_front() {
    let c = Cluster::new().await;
    c.cluster.reset_counters();
    for bad in ["Upper", "under_score", "trail-", "a..b", &"x".repeat(245)] {
        let err = c.lock(bad, "me").try_acquire().await.unwrap_err();
        assert!(matches!(err, Error::InvalidName { .. }), "{bad}: {err}");
    }
    assert_eq!(c.cluster.counts().total(), 0, "refused before any request");
    let _longest = c.lock(&"x".repeat(244), "me").try_acquire().await.unwrap();
    let custom = KubeLocker::new(c.cluster.client(), c.cluster.namespace()).with_prefix("locks.");
    let guard = Lock::new("db", custom.clone()).try_acquire().await.unwrap();
    assert!(c.api.get_opt("locks.db").await.unwrap().is_some());
    assert_eq!(custom.list(None).await.unwrap().locks.len(), 1);
    guard.release().await.unwrap();
}
