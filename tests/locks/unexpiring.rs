//! Leases without expiry (zero duration) are never renewed: their guards watch the lock
//! instead, and must tell a loss from a stale or skipped view, and leave no watch behind.
//! (The common cases, a forced takeover and an eviction, are in the behavioural suite.)

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use lockheed::backend::{
    Backend, Changes, Feeds, LockState, Record, Snapshot, StoredStates, Written,
};
use lockheed::clock::TokioClock;
use lockheed::testing::TestCluster;
use lockheed::{Error, Evict, KubeLocker, Lock, Locker, MemoryLocker};

const SECOND: Duration = Duration::from_secs(1);

/// A test cluster, and a locker whose client may not list or watch when `forbid_watch`.
async fn cluster(forbid_watch: bool) -> (TestCluster, KubeLocker) {
    let cluster = crate::harness::cluster().await;
    let client = if forbid_watch {
        let role = serde_json::from_value(serde_json::json!({
            "metadata": { "name": "no-watch" },
            "rules": [{
                "apiGroups": [""],
                "resources": ["configmaps"],
                "verbs": ["get", "create", "update", "delete"],
            }],
        }))
        .unwrap();
        let subject =
            serde_json::from_value(serde_json::json!({ "kind": "User", "name": "w" })).unwrap();
        crate::harness::client_with_role(&cluster, &role, &subject).await
    } else {
        cluster.client()
    };
    let locker =
        KubeLocker::new(client, cluster.namespace()).with_clock(Arc::new(TokioClock::new()));
    (cluster, locker)
}

fn forever(locker: &KubeLocker, holder: &str) -> Lock<KubeLocker> {
    Lock::new("f", locker.clone())
        .with_holder(holder)
        .with_duration(Duration::ZERO)
}

/// The lock's ConfigMap is deleted, which restarts its fencing counter, and another holder
/// takes the lock with a token lower than alice's: alice must still be told.
async fn a_recreated_lock_is_noticed(forbid_watch: bool) {
    let (cluster, locker) = cluster(forbid_watch).await;
    for _ in 0..3 {
        let guard = Lock::new("f", locker.clone()).try_acquire().await.unwrap();
        guard.release().await.unwrap();
    }
    let alice = forever(&locker, "alice").try_acquire().await.unwrap();
    assert_eq!(alice.token(), 4);
    tokio::time::sleep(SECOND).await;
    let api: Api<ConfigMap> = Api::namespaced(cluster.client(), cluster.namespace());
    api.delete("lockheed-f", &Default::default()).await.unwrap();
    let bob = forever(&locker, "bob").try_acquire().await.unwrap();
    assert_eq!(bob.token(), 1);
    tokio::time::timeout(11 * SECOND, alice.lost())
        .await
        .expect("alice is told her lease is gone");
    assert!(!bob.is_lost());
}

#[tokio::test(start_paused = true)]
async fn a_recreated_lock_is_noticed_through_the_watch() {
    a_recreated_lock_is_noticed(false).await;
}

#[tokio::test(start_paused = true)]
async fn a_recreated_lock_is_noticed_without_a_watch() {
    a_recreated_lock_is_noticed(true).await;
}

/// Released, forgotten and dropped guards leave no watch open.
#[tokio::test(start_paused = true)]
async fn guards_leave_no_watch_behind() {
    let (_cluster, locker) = cluster(false).await;
    let a = forever(&locker, "a").try_acquire().await.unwrap();
    tokio::time::sleep(SECOND).await;
    assert_eq!(locker.active_watches(), 1, "the guard watches its lock");
    // The namespace watch outlives its last lock by 30 s (a process that takes locks again
    // keeps its view), then stops.
    let linger = 31 * SECOND;
    a.release().await.unwrap();
    tokio::time::sleep(linger).await;
    assert_eq!(locker.active_watches(), 0, "after release");
    forever(&locker, "b").try_acquire().await.unwrap().forget();
    tokio::time::sleep(linger).await;
    assert_eq!(locker.active_watches(), 0, "after forget");
    locker.evict("f", Evict::All).await.unwrap();
    drop(forever(&locker, "c").try_acquire().await.unwrap());
    tokio::time::sleep(linger).await;
    assert_eq!(locker.active_watches(), 0, "after drop");
}

/// A backend over process memory whose change feed the test drives by hand.
#[derive(Clone, Debug)]
struct HandFed {
    inner: MemoryLocker,
    feeds: Feeds<u64>,
}

impl Backend for HandFed {
    type Version = u64;

    fn clock(&self) -> Arc<dyn lockheed::clock::Clock> {
        self.inner.clock()
    }

    async fn read(&self, name: &str) -> Result<Option<Record<u64>>, Error> {
        self.inner.read(name).await
    }

    async fn write(
        &self,
        name: &str,
        expected: Option<&u64>,
        state: &LockState,
    ) -> Result<Written<u64>, Error> {
        self.inner.write(name, expected, state).await
    }

    async fn read_all(&self) -> Result<StoredStates, Error> {
        self.inner.read_all().await
    }

    fn changes(&self, name: &str) -> Option<Changes<u64>> {
        Some(self.feeds.subscribe(name, |_| None))
    }
}

/// The feed other waiters opened still shows the lock's previous life (bob, token 9) when
/// alice takes the recreated lock (token 1): a stale view is not a loss.
#[tokio::test(start_paused = true)]
async fn a_stale_view_of_the_lock_is_not_a_loss() {
    let locker = HandFed {
        inner: MemoryLocker::new().with_clock(Arc::new(TokioClock::new())),
        feeds: Feeds::new(),
    };
    let _waiter = locker.changes("f");
    let stale = LockState::from_json(
        r#"{"name":"f","lockType":"mutex","leases":{"bob":{"instanceID":"bob","expires":"9999-12-31T23:59:59Z","fencingToken":9}},"fencingToken":9}"#,
    )
    .unwrap();
    locker
        .feeds
        .publish("f", Snapshot::Present(Record::new(stale, 7)));
    let alice = Lock::new("f", locker.clone())
        .with_holder("alice")
        .with_duration(Duration::ZERO)
        .try_acquire()
        .await
        .unwrap();
    assert_eq!(alice.token(), 1);
    assert!(
        tokio::time::timeout(60 * SECOND, alice.lost())
            .await
            .is_err(),
        "lost fired on a stale view while alice holds the lock"
    );
    // A view that skipped states (the feed keeps only the latest): the lock was taken over
    // and the feed shows it.
    let bob = Lock::new("f", locker.clone())
        .with_holder("bob")
        .with_duration(Duration::ZERO)
        .with_force(lockheed::Condition::acquired(true));
    let bob = bob.try_acquire().await.unwrap();
    let now = locker.read("f").await.unwrap().unwrap();
    locker.feeds.publish("f", Snapshot::Present(now));
    tokio::time::timeout(SECOND, alice.lost())
        .await
        .expect("a takeover the feed shows is a loss");
    drop(bob);
}
