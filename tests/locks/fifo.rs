//! Fair waiting across processes: waiters take the lock in the order they came, a releaser
//! that comes back queues behind them, each handover is the releaser's one write, and Go
//! lockheed clients, which ignore the queue, stay safe.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams};
use lockheed::clock::TokioClock;
use lockheed::testing::{Fault, RequestMatcher, TestCluster, Verb};
use lockheed::{KubeLocker, Lock, LockGuard, Locker};

const SECOND: Duration = Duration::from_secs(1);

/// Every process of a test shares one wall clock, which follows Tokio's paused clock.
fn process(cluster: &TestCluster, token: &str) -> KubeLocker {
    thread_local! {
        static CLOCK: Arc<TokioClock> = Arc::new(TokioClock::new());
    }
    KubeLocker::new(cluster.client_for(token), cluster.namespace())
        .with_clock(CLOCK.with(Arc::clone))
}

/// `holder`'s lock `name` in its own process, with 30 s leases.
fn lock(cluster: &TestCluster, name: &str, holder: &str) -> Lock<KubeLocker> {
    Lock::new(name, process(cluster, holder))
        .with_holder(holder)
        .with_duration(30 * SECOND)
}

/// Waits for `lock`, then appends its holder to `order`, holds for `hold` and releases.
fn take_turn(
    lock: Lock<KubeLocker>,
    order: &Arc<Mutex<Vec<String>>>,
    hold: Duration,
) -> tokio::task::JoinHandle<u64> {
    let order = Arc::clone(order);
    tokio::spawn(async move {
        let guard = lock.acquire().await.unwrap();
        order.lock().unwrap().push(guard.holder().to_owned());
        tokio::time::sleep(hold).await;
        let token = guard.token();
        guard.release().await.unwrap();
        token
    })
}

#[tokio::test(start_paused = true)]
async fn waiters_of_different_processes_take_the_lock_in_the_order_they_came() {
    let cluster = crate::harness::cluster().await;
    // Taken by a waiting acquire, so that its process watches the lock while it holds it.
    let first = lock(&cluster, "fifo", "first").acquire().await.unwrap();
    let order = Arc::default();
    let mut turns = Vec::new();
    // Eight waiters come one after the other, each from its own process.
    for i in 0..8 {
        turns.push(take_turn(
            lock(&cluster, "fifo", &format!("w{i}")),
            &order,
            SECOND,
        ));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let queued = process(&cluster, "x").get("fifo").await.unwrap().unwrap();
    let waiters: Vec<_> = queued.waiters.iter().map(|w| w.id.clone()).collect();
    assert_eq!(waiters, (0..8).map(|i| format!("w{i}")).collect::<Vec<_>>());
    cluster.reset_counters();
    first.release().await.unwrap();
    let mut tokens = Vec::new();
    for turn in turns {
        tokens.push(turn.await.unwrap());
    }
    let order = order.lock().unwrap().clone();
    assert_eq!(order, (0..8).map(|i| format!("w{i}")).collect::<Vec<_>>());
    assert_eq!(
        tokens,
        (2..10).collect::<Vec<u64>>(),
        "one token per turn, in order"
    );
    // Each handover is the releaser's write, which names the next holder; the waiters write
    // nothing to take the lock, and nobody reads it.
    let counts = cluster.counts();
    assert_eq!(counts.get(Verb::Update), 9, "{counts:?}");
    assert_eq!(counts.get(Verb::Get), 0, "{counts:?}");
}

#[tokio::test(start_paused = true)]
async fn a_holder_that_comes_back_queues_behind_the_waiters() {
    let cluster = crate::harness::cluster().await;
    let alice = lock(&cluster, "back", "alice");
    let held = alice.try_acquire().await.unwrap();
    let order = Arc::default();
    let bob = take_turn(lock(&cluster, "back", "bob"), &order, SECOND);
    tokio::time::sleep(SECOND).await;
    // Alice releases and comes straight back: bob, who was waiting, goes first.
    held.release().await.unwrap();
    let again = take_turn(alice, &order, SECOND);
    bob.await.unwrap();
    again.await.unwrap();
    assert_eq!(*order.lock().unwrap(), ["bob", "alice"]);
}

#[tokio::test(start_paused = true)]
async fn a_single_attempt_does_not_overtake_the_queue() {
    let cluster = crate::harness::cluster().await;
    let held = lock(&cluster, "single", "alice")
        .try_acquire()
        .await
        .unwrap();
    let order = Arc::default();
    let bob = take_turn(lock(&cluster, "single", "bob"), &order, 10 * SECOND);
    tokio::time::sleep(SECOND).await;
    held.release().await.unwrap();
    // The release handed the lock to bob: carol's attempt finds it taken.
    let err = lock(&cluster, "single", "carol")
        .try_acquire()
        .await
        .unwrap_err();
    assert!(err.is_held(), "{err}");
    assert_eq!(err.holders().unwrap()[0].id, "bob");
    bob.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn an_unfair_waiter_neither_queues_nor_waits_its_turn() {
    let cluster = crate::harness::cluster().await;
    let held = lock(&cluster, "unfair", "alice")
        .try_acquire()
        .await
        .unwrap();
    let unfair = lock(&cluster, "unfair", "go-like").with_fifo(false);
    let waiter = tokio::spawn(async move { unfair.acquire().await.map(|g| g.token()) });
    tokio::time::sleep(SECOND).await;
    let info = process(&cluster, "x").get("unfair").await.unwrap().unwrap();
    assert!(info.waiters.is_empty(), "it writes nothing while it waits");
    held.release().await.unwrap();
    assert_eq!(waiter.await.unwrap().unwrap(), 2);
}

/// Go lockheed ignores the `queue` key (it reads only what it knows) and drops it when it
/// rewrites the state. A Go client taking a free lock therefore overtakes the queue, and
/// empties it; the Rust waiters see their places gone, queue again, and never hold the lock
/// together with the Go client.
#[tokio::test(start_paused = true)]
async fn go_clients_ignore_the_queue_and_stay_safe() {
    let cluster = crate::harness::cluster().await;
    let api: Api<ConfigMap> = Api::namespaced(cluster.client(), cluster.namespace());
    let go_write = |state: String| {
        let api = api.clone();
        async move {
            let mut cm = api.get("lockheed-mixed").await.unwrap();
            cm.data.as_mut().unwrap().insert("lock".into(), state);
            api.replace("lockheed-mixed", &PostParams::default(), &cm)
                .await
                .unwrap();
        }
    };
    let held = lock(&cluster, "mixed", "alice")
        .with_duration(5 * SECOND)
        .try_acquire()
        .await
        .unwrap();
    let order = Arc::default();
    let bob = take_turn(lock(&cluster, "mixed", "bob"), &order, SECOND);
    tokio::time::sleep(SECOND).await;
    // Alice's process dies; when her lease ends, bob's write to take the lock is held up on
    // its way, and a Go client takes the lock first, as Go lockheed v0.5.3 writes it: its own
    // lease, the keys it knows, no queue.
    let Some(server) = crate::harness::fake_only(&cluster, "holds up one client's write") else {
        return;
    };
    server.inject(Fault::hang().on(RequestMatcher::any().token("bob").verb(Verb::Update)));
    held.forget();
    tokio::time::sleep(7 * SECOND).await;
    let until = (chrono::Utc::now() + chrono::Duration::seconds(600)).to_rfc3339();
    go_write(format!(
        r#"{{"name":"mixed","lockType":"mutex","leases":{{"go":{{"instanceID":"go","expires":"{until}"}}}}}}"#
    ))
    .await;
    // Bob's held-up write is lost; he reads the lock again, finds his place gone, and queues
    // again behind the Go holder.
    server.clear_faults();
    tokio::time::sleep(5 * SECOND).await;
    let info = process(&cluster, "x").get("mixed").await.unwrap().unwrap();
    let ids =
        |holders: &[lockheed::Holder]| holders.iter().map(|h| h.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&info.holders), ["go"]);
    assert_eq!(ids(&info.waiters), ["bob"]);
    assert!(!bob.is_finished());
    // The Go client releases as Go does (its lease removed, the queue dropped again): bob
    // takes the free lock.
    go_write(r#"{"name":"mixed","lockType":"mutex","leases":{}}"#.to_owned()).await;
    let token = tokio::time::timeout(30 * SECOND, bob)
        .await
        .expect("bob takes his turn")
        .unwrap();
    assert!(token > 1);
}

/// The lock is handed over to a waiter by the holder's release, in the same write: the
/// waiter's guard starts from what its watch showed, and renews from there.
#[tokio::test(start_paused = true)]
async fn a_lock_handed_over_is_held_and_renewed_like_one_taken() {
    let cluster = crate::harness::cluster().await;
    let held = lock(&cluster, "handed", "alice")
        .try_acquire()
        .await
        .unwrap();
    let bob = lock(&cluster, "handed", "bob").with_tags(["bob's"]);
    let waiter = tokio::spawn(async move { bob.acquire().await });
    tokio::time::sleep(SECOND).await;
    held.release().await.unwrap();
    let guard: LockGuard<KubeLocker> = waiter.await.unwrap().unwrap();
    assert_eq!(guard.token(), 2);
    assert!(!guard.is_reentry());
    // Its tags were applied by the handover, and its lease renews past its first end.
    tokio::time::sleep(45 * SECOND).await;
    assert!(!guard.is_lost());
    let info = process(&cluster, "x").get("handed").await.unwrap().unwrap();
    assert_eq!(info.tags, ["bob's"]);
    assert_eq!(info.holders[0].token, Some(2));
    guard.release().await.unwrap();
}
