//! Crashes, partitions and restarts, with the server's commit log: a holder cut off past its
//! lease, an API server restart, a lock's ConfigMap deleted or replaced under its holder.
//! What needs no injected fault (a ConfigMap deleted or replaced) runs on the test's server,
//! the fake one or a real one (`TestCluster`); the rest injects the fake server's faults.
//! (A holder process killed with SIGKILL is in the command-line tests, where the holder is a
//! real process; kube-apiserver and etcd killed and stopped are in `tests/faults`.) Time runs
//! on Tokio's paused clock, which every clock follows.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::rbac::v1::PolicyRule;
use kube::api::{Api, DeleteParams, PostParams};
use lockheed::clock::{Clock, TokioClock};
use lockheed::testing::history::{History, Section};
use lockheed::testing::{AccessControl, FakeApiServer, Operation, TestCluster, Verb};
use lockheed::{Error, KubeLocker, Lock, LockGuard, Locker};

const SECOND: Duration = Duration::from_secs(1);

/// A server whose clock, and commit log, the test's processes share. Access control is on,
/// so that the request log names each request's user, and every user may do anything with
/// ConfigMaps.
async fn server(clock: &Arc<TokioClock>) -> FakeApiServer {
    let rule = PolicyRule {
        api_groups: Some(vec![String::new()]),
        resources: Some(vec!["configmaps".into()]),
        verbs: vec!["*".into()],
        ..PolicyRule::default()
    };
    let access = ["alice", "bob", "carol", "x", "y"]
        .into_iter()
        .fold(AccessControl::new(), |access, user| {
            access.user(user, user).rule(user, None, rule.clone())
        });
    FakeApiServer::builder()
        .clock(clock.clone())
        .commit_log_unbounded()
        .access_control(access)
        .start()
        .await
        .unwrap()
}

/// A process: its own client (its token is its holder identity), the shared clock.
fn process(server: &FakeApiServer, clock: &Arc<TokioClock>, token: &str) -> KubeLocker {
    KubeLocker::new(server.client_for_token(token), "default").with_clock(clock.clone())
}

/// `holder` holding lock `name` through `locker`: a 10 s lease renewed every 2 s.
async fn hold(locker: KubeLocker, name: &str, holder: &str) -> LockGuard<KubeLocker> {
    Lock::new(name, locker)
        .with_holder(holder)
        .with_duration(10 * SECOND)
        .with_renew_interval(2 * SECOND)
        .acquire()
        .await
        .unwrap()
}

/// `holder` holding lock `name` in a process of its own (see [`hold`]).
async fn holding(
    server: &FakeApiServer,
    clock: &Arc<TokioClock>,
    name: &str,
    holder: &str,
) -> LockGuard<KubeLocker> {
    hold(process(server, clock, holder), name, holder).await
}

/// Waits for `lost` (a minute at most), and says when it fired.
async fn lost_at(
    guard: &LockGuard<KubeLocker>,
    clock: &Arc<TokioClock>,
) -> chrono::DateTime<chrono::Utc> {
    tokio::time::timeout(60 * SECOND, guard.lost())
        .await
        .expect("lost fires");
    clock.now()
}

/// Alice is cut off (a blackhole of her client alone: her requests and watch events wait)
/// for three times her lease. Her `lost()` fires before her lease ends; Bob, who waits,
/// takes the lock only after it ended. When the network comes back, the renewals and the
/// release Alice sent meanwhile reach the server: none removes or extends Bob's lease.
#[tokio::test(start_paused = true)]
async fn a_holder_cut_off_past_its_lease_loses_it_first_and_its_late_writes_do_no_harm() {
    let clock = Arc::new(TokioClock::new());
    let server = server(&clock).await;
    let alice = holding(&server, &clock, "p", "alice").await;
    let alice_section = clock.now();
    let expires = alice.expires().await.unwrap();
    let bob = tokio::spawn({
        let lock = Lock::new("p", process(&server, &clock, "bob")).with_holder("bob");
        let clock = clock.clone();
        async move {
            let guard = lock.acquire().await.unwrap();
            (clock.now(), guard)
        }
    });
    tokio::time::sleep(SECOND).await;
    server.blackhole_client_for("alice", 30 * SECOND);
    let lost = lost_at(&alice, &clock).await;
    assert!(
        lost < expires,
        "lost at {lost}, the lease ended at {expires}"
    );
    // A holder that lost its lock releases it: the release waits in the blackhole too.
    let late_release = tokio::spawn(alice.release());
    let (taken, bob) = bob.await.unwrap();
    assert!(taken >= expires, "bob took it at {taken}, before {expires}");
    let bob_expires = bob.expires().await.unwrap();
    // The blackhole heals; what Alice sent arrives late.
    tokio::time::sleep(30 * SECOND).await;
    assert!(matches!(
        late_release.await.unwrap(),
        Err(Error::Lost { .. })
    ));
    // Her renewal in flight when she gave up, and her release, were refused: the lock had
    // changed since she read it (409), and on a fresh read her lease was gone.
    let refused: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| r.user.as_deref() == Some("alice") && r.verb == Verb::Update)
        .filter(|r| r.status == Some(409) && r.latency >= 10 * SECOND)
        .collect();
    assert_eq!(refused.len(), 2, "{refused:#?}");
    // Bob holds it alone, renewed by himself only.
    let info = process(&server, &clock, "x")
        .get("p")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(info.holders.len(), 1);
    assert_eq!(
        (info.holders[0].id.as_str(), info.holders[0].token),
        ("bob", Some(bob.token()))
    );
    assert!(bob.expires().await.unwrap() > bob_expires, "bob renewed it");
    // The commit log: after Bob took the lock, no commit of Alice's.
    let commits = server.commits();
    let took = commits
        .iter()
        .position(|c| {
            c.at >= taken
                && c.object["data"]["lock"]
                    .as_str()
                    .is_some_and(|s| s.contains("\"bob\""))
        })
        .expect("bob's take is committed");
    let by_alice: Vec<_> = commits[took..]
        .iter()
        .filter(|c| c.token.as_deref() == Some("alice"))
        .map(|c| c.revision)
        .collect();
    assert!(
        by_alice.is_empty(),
        "alice committed {by_alice:?} after bob took the lock"
    );
    // And the whole history checks out.
    let mut history = History::mutex("default", "p");
    history.section(Section::new("alice", 1, alice_section, lost));
    history.section(Section::new("bob", bob.token(), taken, clock.now()));
    history.commits(commits);
    history.finish().assert_valid();
    bob.release().await.unwrap();
}

/// The API server goes down for 5 s (half the lease) and comes back on the same port with
/// the same objects: Alice keeps her lock (her renewals resume), Bob, who was waiting, is
/// woken when she releases it (his watch is back, relisting after the 410 of the new watch
/// cache), and a process that held another lock without expiry still holds it.
#[tokio::test(start_paused = true)]
async fn holders_keep_their_locks_and_waiters_wake_through_an_api_server_restart() {
    let clock = Arc::new(TokioClock::new());
    let server = server(&clock).await;
    let alice = holding(&server, &clock, "r", "alice").await;
    let forever = Lock::new("r-forever", process(&server, &clock, "carol"))
        .with_duration(Duration::ZERO)
        .acquire()
        .await
        .unwrap();
    let bob = tokio::spawn({
        let lock = Lock::new("r", process(&server, &clock, "bob")).with_holder("bob");
        let clock = clock.clone();
        async move {
            let guard = lock.acquire().await.unwrap();
            (clock.now(), guard)
        }
    });
    tokio::time::sleep(3 * SECOND).await;
    let revision = server.resource_version();
    server.stop();
    tokio::time::sleep(5 * SECOND).await;
    server.restart();
    tokio::time::sleep(20 * SECOND).await;
    assert!(!alice.is_lost(), "alice kept her lock through the restart");
    assert!(!forever.is_lost(), "so did carol");
    assert!(!bob.is_finished(), "bob still waits");
    assert!(
        server.resource_version() > revision,
        "renewals went on, at later revisions"
    );
    let released = clock.now();
    alice.release().await.unwrap();
    let (taken, bob) = tokio::time::timeout(10 * SECOND, bob)
        .await
        .expect("bob is woken")
        .unwrap();
    assert!(
        taken - released < chrono::Duration::seconds(1),
        "handed over at once"
    );
    assert_eq!(server.faults_injected()["restart"], 1);
    let mut history = History::mutex("default", "r");
    history.commits(server.commits());
    history.finish().assert_valid();
    bob.release().await.unwrap();
    forever.release().await.unwrap();
}

fn configmaps(cluster: &TestCluster) -> Api<ConfigMap> {
    Api::namespaced(cluster.client(), cluster.namespace())
}

/// A process of the test's server: its own client, the shared clock.
fn process_of(cluster: &TestCluster, clock: &Arc<TokioClock>, name: &str) -> KubeLocker {
    KubeLocker::new(cluster.client_for(name), cluster.namespace()).with_clock(clock.clone())
}

/// `holder` holding lock `name` on the test's server (see [`hold`]).
async fn holding_on(
    cluster: &TestCluster,
    clock: &Arc<TokioClock>,
    name: &str,
    holder: &str,
) -> LockGuard<KubeLocker> {
    hold(process_of(cluster, clock, holder), name, holder).await
}

/// A lock's ConfigMap deleted while held: `lost()` fires at the next renewal (or, for a lease
/// without expiry, as soon as the watch shows it), and nothing recreates the ConfigMap.
#[tokio::test(start_paused = true)]
async fn a_configmap_deleted_while_held_fires_lost() {
    let clock = Arc::new(TokioClock::new());
    let cluster = crate::harness::cluster().await;
    cluster.record_commits(clock.clone()).await.unwrap();
    let renewed = holding_on(&cluster, &clock, "d", "alice").await;
    let forever = Lock::new("d-forever", process_of(&cluster, &clock, "bob"))
        .with_duration(Duration::ZERO)
        .acquire()
        .await
        .unwrap();
    tokio::time::sleep(SECOND).await;
    let expires = renewed.expires().await.unwrap();
    for name in ["lockheed-d", "lockheed-d-forever"] {
        configmaps(&cluster)
            .delete(name, &DeleteParams::default())
            .await
            .unwrap();
    }
    let deleted = clock.now();
    let lost = lost_at(&renewed, &clock).await;
    assert!(lost < expires);
    assert!(
        lost - deleted <= chrono::Duration::seconds(2),
        "at the next renewal"
    );
    lost_at(&forever, &clock).await;
    assert!(
        clock.now() - deleted <= chrono::Duration::seconds(1),
        "at the watch's word"
    );
    tokio::time::sleep(30 * SECOND).await;
    for name in ["lockheed-d", "lockheed-d-forever"] {
        assert!(
            configmaps(&cluster).get_opt(name).await.unwrap().is_none(),
            "{name} came back"
        );
    }
    assert!(matches!(
        renewed.release().await,
        Ok(()) | Err(Error::Lost { .. })
    ));
    assert!(matches!(
        forever.release().await,
        Ok(()) | Err(Error::Lost { .. })
    ));
    let last = cluster
        .commits()
        .into_iter()
        .rfind(|c| c.name == "lockheed-d")
        .unwrap();
    assert_eq!(
        last.operation,
        Operation::Delete,
        "nothing was written after the delete"
    );
}

/// A lock's ConfigMap replaced, while held, by one of another shape: a state that is not a
/// lock state, or a lock of another kind. The holder loses the lock (its lease is not there
/// any more); anyone who tries to take it gets an error that names the object; and nobody
/// overwrites the replacement.
#[tokio::test(start_paused = true)]
async fn a_configmap_replaced_by_another_shape_is_an_error_never_overwritten() {
    let clock = Arc::new(TokioClock::new());
    let cluster = crate::harness::cluster().await;
    let shapes = [
        ("not JSON", "{this is not json"),
        (
            "leases not a map",
            r#"{"name":"s","lockType":"mutex","leases":[1,2]}"#,
        ),
        (
            "a time that is not one",
            r#"{"name":"s","lockType":"mutex","leases":{"x":{"instanceID":"x","expires":"soon"}}}"#,
        ),
        (
            "a semaphore",
            r#"{"name":"s","lockType":"semaphore","maxHolders":2,"leases":{}}"#,
        ),
        (
            "a kind from the future",
            r#"{"name":"s","lockType":"quantum","leases":{}}"#,
        ),
    ];
    for (shape, state) in shapes {
        let guard = holding_on(&cluster, &clock, "s", "alice").await;
        let expires = guard.expires().await.unwrap();
        configmaps(&cluster)
            .delete("lockheed-s", &DeleteParams::default())
            .await
            .unwrap();
        let replacement: ConfigMap = serde_json::from_value(serde_json::json!({
            "metadata": { "name": "lockheed-s", "labels": { "lockheed/lock": "" } },
            "data": { "lock": state },
        }))
        .unwrap();
        let stored = configmaps(&cluster)
            .create(&PostParams::default(), &replacement)
            .await
            .unwrap();
        let lost = lost_at(&guard, &clock).await;
        assert!(lost < expires, "{shape}: lost at {lost}, after {expires}");
        let err = Lock::new("s", process_of(&cluster, &clock, "bob"))
            .acquire_timeout(5 * SECOND)
            .await
            .unwrap_err();
        match &err {
            Error::Corrupt { object, .. } => assert_eq!(
                *object,
                format!("{}/lockheed-s", cluster.namespace()),
                "{shape}"
            ),
            Error::WrongKind { lock, .. } => assert_eq!(lock, "s", "{shape}"),
            other => panic!("{shape}: {other}"),
        }
        assert!(guard.release().await.is_err(), "{shape}");
        tokio::time::sleep(20 * SECOND).await;
        let now = configmaps(&cluster).get("lockheed-s").await.unwrap();
        assert_eq!(
            now.metadata.resource_version, stored.metadata.resource_version,
            "{shape}: the replacement was overwritten"
        );
        configmaps(&cluster)
            .delete("lockheed-s", &DeleteParams::default())
            .await
            .unwrap();
    }
}

/// Found by the long history run (35,000 sections, seed 6550130951518822076): a waiter gives
/// up (its acquire timed out), and the clean-up that withdraws its place in the queue fails
/// for a while (500s, a blackhole); meanwhile the same holder identity waits again with a new
/// `Lock` (as the chaos test's contenders, or a service that makes a `Lock` per job, do) and
/// is handed the lock. When the old clean-up finally runs, it must not take the new
/// acquisition's lease for the one handed to the old waiter, and hand it on: a third holder
/// would run while the second still does.
#[tokio::test(start_paused = true)]
async fn a_late_clean_up_never_removes_a_later_acquisition_of_the_same_holder() {
    use lockheed::testing::{Fault, RequestMatcher};
    let clock = Arc::new(TokioClock::new());
    let server = server(&clock).await;
    let alice = holding(&server, &clock, "c", "alice").await;
    // Bob's first wait queues, then gives up, and its clean-up's writes fail until the faults
    // clear.
    let first = tokio::spawn({
        let lock = Lock::new("c", process(&server, &clock, "x")).with_holder("bob");
        async move { lock.acquire_timeout(3 * SECOND).await.map(drop) }
    });
    tokio::time::sleep(SECOND).await;
    let queued = process(&server, &clock, "y")
        .get("c")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(queued.waiters[0].id, "bob");
    server.inject(
        Fault::status(500)
            .always()
            .on(RequestMatcher::any().token("x").verb(Verb::Update)),
    );
    let gave_up = first.await.unwrap();
    assert!(matches!(gave_up, Err(Error::Timeout { .. })), "{gave_up:?}");
    // Bob waits again (another client, the same identity), and Carol after him.
    let bob = tokio::spawn({
        let lock = Lock::new("c", process(&server, &clock, "bob")).with_holder("bob");
        async move { lock.acquire().await.unwrap() }
    });
    tokio::time::sleep(SECOND).await;
    let carol = tokio::spawn({
        let lock = Lock::new("c", process(&server, &clock, "carol")).with_holder("carol");
        async move { lock.acquire().await.unwrap() }
    });
    tokio::time::sleep(SECOND).await;
    alice.release().await.unwrap();
    let bob = tokio::time::timeout(10 * SECOND, bob)
        .await
        .expect("bob is handed the lock")
        .unwrap();
    // The old clean-up can write again.
    server.clear_faults();
    tokio::time::sleep(10 * SECOND).await;
    assert!(!bob.is_lost(), "bob's lease was taken from him");
    assert!(!carol.is_finished(), "carol got in while bob held the lock");
    let info = process(&server, &clock, "x")
        .get("c")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(info.holders.len(), 1);
    assert_eq!(
        (info.holders[0].id.as_str(), info.holders[0].token),
        ("bob", Some(bob.token()))
    );
    bob.release().await.unwrap();
    let carol = tokio::time::timeout(10 * SECOND, carol)
        .await
        .unwrap()
        .unwrap();
    carol.release().await.unwrap();
    // Client "x" ran Bob's first wait.
    let mut history = History::mutex("default", "c").client("x", ["bob"]);
    history.commits(server.commits());
    history.finish().assert_valid();
}

/// A release that meets a transient failure is tried again, quickly, instead of leaving the
/// lease to expire: a 500 before the write is retried; a 500 after it committed finds the
/// lease gone and counts as released (not lost); a server that keeps failing is tried until
/// the lease has ended for everyone (its 10 s and the 2 s skew allowance), and then the error.
#[tokio::test(start_paused = true)]
async fn a_release_is_retried_after_a_transient_failure() {
    use lockheed::testing::{Fault, RequestMatcher};

    let clock = Arc::new(TokioClock::new());
    let server = server(&clock).await;
    let injected = |kind: &str| server.faults_injected().get(kind).copied().unwrap_or(0);
    // Requests the server answered (a fault that answers first is not logged).
    let answered = |verb: Verb| {
        server
            .requests()
            .iter()
            .filter(|r| r.user.as_deref() == Some("alice") && r.verb == verb)
            .count()
    };
    let release_with = |fault: Fault| {
        let (server, clock) = (&server, &clock);
        async move {
            let alice = holding(server, clock, "r", "alice").await;
            let before = (answered(Verb::Get), answered(Verb::Update));
            server.inject(fault.on(RequestMatcher::any().token("alice").verb(Verb::Update)));
            let released = alice.release().await;
            server.clear_faults();
            let after = (answered(Verb::Get), answered(Verb::Update));
            (released, after.0 - before.0, after.1 - before.1)
        }
    };
    let free = || async {
        let bob = Lock::new("r", process(&server, &clock, "bob")).with_holder("bob");
        bob.try_acquire().await.unwrap().release().await.unwrap();
    };

    let (released, reads, writes) = release_with(Fault::status(500).times(1)).await;
    assert!(released.is_ok(), "{released:?}");
    assert_eq!(injected("status 500"), 1);
    assert_eq!((reads, writes), (1, 1), "a read, and the write again");
    free().await;

    let (released, reads, writes) = release_with(Fault::status(500).after_commit().times(1)).await;
    assert!(released.is_ok(), "released, not lost: {released:?}");
    assert_eq!(injected("status 500 after commit"), 1);
    assert_eq!(
        (reads, writes),
        (1, 1),
        "the write committed; the read shows it"
    );
    free().await;

    let started = tokio::time::Instant::now();
    let (failed, reads, writes) = release_with(Fault::status(500).always()).await;
    assert!(
        matches!(&failed, Err(err) if err.is_transient()),
        "{failed:?}"
    );
    let tries = injected("status 500") - 1;
    assert!(tries >= 8, "{tries} tries");
    assert_eq!(
        (reads as u64, writes),
        (tries - 1, 0),
        "a read before each try again"
    );
    let tried_for = started.elapsed();
    assert!(
        (11 * SECOND..12 * SECOND).contains(&tried_for),
        "tried for {tried_for:?}"
    );
    // The lease stays until it ends, as before.
    let bob = Lock::new("r", process(&server, &clock, "bob")).with_holder("bob");
    assert!(matches!(bob.try_acquire().await, Err(Error::Held { .. })));
    assert!(bob.acquire_timeout(15 * SECOND).await.is_ok());
}
