//! One watch per namespace: every waiter and every held lock without expiry of a `KubeLocker`
//! share one watch of the namespace's lock ConfigMaps, which also lets a single attempt skip
//! its read. Where RBAC allows only some ConfigMaps, each lock is watched alone.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::rbac::v1::{PolicyRule, Role, Subject};
use kube::api::ObjectMeta;
use lockheed::clock::TokioClock;
use lockheed::testing::{TestCluster, Verb};
use lockheed::{KubeLocker, Lock, LockGuard};

const SECOND: Duration = Duration::from_secs(1);

fn process(cluster: &TestCluster, token: &str) -> KubeLocker {
    KubeLocker::new(cluster.client_for(token), cluster.namespace())
        .with_clock(Arc::new(TokioClock::new()))
}

/// Lock `name`, held by `holder` with no expiry (its guard watches the lock).
async fn forever(locker: &KubeLocker, name: &str, holder: &str) -> LockGuard<KubeLocker> {
    Lock::new(name, locker.clone())
        .with_holder(holder)
        .with_duration(Duration::ZERO)
        .try_acquire()
        .await
        .unwrap()
}

/// Lets spawned tasks run until the watch is established.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(100)).await;
}

#[tokio::test(start_paused = true)]
async fn every_lock_of_a_namespace_shares_one_watch() {
    let cluster = crate::harness::cluster().await;
    let other = process(&cluster, "other");
    let me = process(&cluster, "me");
    assert_eq!(me.active_watches(), 0, "nothing to watch yet");
    // 20 locks held here without expiry, and 20 waiters on locks held elsewhere.
    let mut held = Vec::new();
    let mut theirs = Vec::new();
    let mut waiters = Vec::new();
    for i in 0..20 {
        held.push(forever(&me, &format!("mine-{i}"), "me").await);
        let name = format!("theirs-{i}");
        theirs.push(forever(&other, &name, "other").await);
        let lock = Lock::new(name, me.clone()).with_holder("me");
        waiters.push(tokio::spawn(async move { lock.acquire().await }));
    }
    settle().await;
    assert_eq!(me.active_watches(), 1);
    assert_eq!(other.active_watches(), 1);
    let watches = cluster.counts().get(Verb::Watch);
    assert_eq!(watches, 2, "one watch per process");
    // The waiters are woken through it: release one lock elsewhere, its waiter takes it.
    theirs.remove(7).release().await.unwrap();
    let guard = tokio::time::timeout(SECOND, waiters.remove(7))
        .await
        .expect("woken by the namespace watch")
        .unwrap()
        .unwrap();
    assert_eq!(guard.name(), "theirs-7");
    // The watch stops 30 s after the last lock that needed it.
    drop((held, guard));
    for waiter in &waiters {
        waiter.abort();
    }
    settle().await;
    assert_eq!(me.active_watches(), 1, "it lingers");
    tokio::time::sleep(31 * SECOND).await;
    assert_eq!(me.active_watches(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_single_attempt_uses_what_the_watch_knows() {
    let cluster = crate::harness::cluster().await;
    let me = process(&cluster, "me");
    let other = process(&cluster, "other");
    // Cold: nothing watched, so the attempt reads, then writes.
    Lock::new("free", other.clone())
        .try_acquire()
        .await
        .unwrap()
        .release()
        .await
        .unwrap();
    let held_elsewhere = Lock::new("busy", other.clone())
        .try_acquire()
        .await
        .unwrap();
    cluster.reset_counters();
    Lock::new("free", me.clone())
        .try_acquire()
        .await
        .unwrap()
        .forget();
    assert_eq!(
        (
            cluster.counts().get(Verb::Get),
            cluster.counts().get(Verb::Update)
        ),
        (1, 1),
        "cold: GET + PUT"
    );
    // A lock held here without expiry keeps the namespace watch open.
    let _keeper = forever(&me, "keeper", "me").await;
    settle().await;
    let freed = Lock::new("free2", other.clone())
        .try_acquire()
        .await
        .unwrap();
    freed.release().await.unwrap();
    settle().await;
    cluster.reset_counters();
    let warm = Lock::new("free2", me.clone()).try_acquire().await.unwrap();
    assert_eq!(
        cluster.counts().api_requests(),
        1,
        "warm: one write, no read"
    );
    assert_eq!(cluster.counts().get(Verb::Update), 1);
    // A lock the watch shows as held is read before the attempt says so.
    cluster.reset_counters();
    let err = Lock::new("busy", me.clone())
        .try_acquire()
        .await
        .unwrap_err();
    assert!(err.is_held(), "{err}");
    assert_eq!(
        cluster.counts().get(Verb::Get),
        1,
        "busy: confirmed by one read"
    );
    assert_eq!(cluster.counts().writes(), 0);
    // A missing lock the watch knows is absent is created at once.
    cluster.reset_counters();
    Lock::new("new", me.clone())
        .try_acquire()
        .await
        .unwrap()
        .forget();
    assert_eq!(cluster.counts().api_requests(), 1, "absent: one create");
    drop((held_elsewhere, warm));
}

#[tokio::test(start_paused = true)]
async fn locks_are_watched_one_by_one_where_rbac_names_them() {
    let rule = |verbs: &[&str], names: Option<Vec<String>>| PolicyRule {
        api_groups: Some(vec![String::new()]),
        resources: Some(vec!["configmaps".into()]),
        resource_names: names,
        verbs: verbs.iter().map(|v| (*v).to_owned()).collect(),
        ..PolicyRule::default()
    };
    let names = vec!["lockheed-a".to_owned(), "lockheed-b".to_owned()];
    let role = Role {
        metadata: ObjectMeta {
            name: Some("named-watches".into()),
            ..ObjectMeta::default()
        },
        rules: Some(vec![
            rule(&["get", "create", "update"], None),
            rule(&["list", "watch"], Some(names)),
        ]),
    };
    let cluster = crate::harness::cluster().await;
    let mut lockers = Vec::new();
    for user in ["me", "other"] {
        let subject = Subject {
            kind: "User".into(),
            name: user.into(),
            ..Subject::default()
        };
        let client = crate::harness::client_with_role(&cluster, &role, &subject).await;
        lockers.push(
            KubeLocker::new(client, cluster.namespace()).with_clock(Arc::new(TokioClock::new())),
        );
    }
    let [me, other] = <[KubeLocker; 2]>::try_from(lockers).unwrap();
    let a = Lock::new("a", other.clone())
        .with_duration(60 * SECOND)
        .try_acquire()
        .await
        .unwrap();
    let b = Lock::new("b", other.clone())
        .with_duration(60 * SECOND)
        .try_acquire()
        .await
        .unwrap();
    let wait = |name: &'static str| {
        let lock = Lock::new(name, me.clone());
        tokio::spawn(async move { lock.acquire().await })
    };
    let (wait_a, wait_b) = (wait("a"), wait("b"));
    settle().await;
    assert_eq!(
        me.active_watches(),
        2,
        "the namespace watch is forbidden: one per lock"
    );
    a.release().await.unwrap();
    b.release().await.unwrap();
    for waiter in [wait_a, wait_b] {
        let guard = tokio::time::timeout(SECOND, waiter)
            .await
            .expect("woken by its lock's watch, long before the lease ends")
            .unwrap()
            .unwrap();
        guard.release().await.unwrap();
    }
}
