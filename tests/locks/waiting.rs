//! Waiting and losing a lock safely, on the test's server: watch-based handover, resumed
//! watches, timeouts, partitions, fan-out and the herd bound. Time runs on Tokio's paused
//! clock, which the lockers' clocks follow.

use std::sync::Arc;
use std::time::Duration;

use lockheed::clock::TokioClock;
use lockheed::testing::{Fault, RequestMatcher, TestCluster, Verb};

use crate::harness::fake_only;
use lockheed::{Error, KubeLocker, Lock, Locker};
use tokio::time::Instant;

const SECOND: Duration = Duration::from_secs(1);

/// The wall clock of every process of a test: it follows Tokio's paused clock, and all
/// processes agree on it (clock skew is tested on its own).
fn clock() -> Arc<TokioClock> {
    static ORIGIN: std::sync::OnceLock<chrono::DateTime<chrono::Utc>> = std::sync::OnceLock::new();
    thread_local! {
        static CLOCK: std::cell::RefCell<Option<Arc<TokioClock>>> = const { std::cell::RefCell::new(None) };
    }
    CLOCK.with(|c| {
        Arc::clone(c.borrow_mut().get_or_insert_with(|| {
            Arc::new(TokioClock::starting_at(
                *ORIGIN.get_or_init(chrono::Utc::now),
            ))
        }))
    })
}

/// Alice, holding lock `name` with a 10 s lease renewed every 2 s.
async fn renewing_holder(cluster: &TestCluster, name: &str) -> lockheed::LockGuard<KubeLocker> {
    Lock::new(name, process(cluster, "alice"))
        .with_duration(10 * SECOND)
        .with_renew_interval(2 * SECOND)
        .try_acquire()
        .await
        .unwrap()
}

/// A locker with its own client: another process, as far as the server can tell.
fn process(cluster: &TestCluster, token: &str) -> KubeLocker {
    KubeLocker::new(cluster.client_for(token), cluster.namespace()).with_clock(clock())
}

#[tokio::test(start_paused = true)]
async fn an_early_release_hands_over_at_once_across_processes() {
    let cluster = crate::harness::cluster().await;
    let holder = Lock::new("h", process(&cluster, "a"))
        .with_duration(60 * SECOND)
        .try_acquire()
        .await
        .unwrap();
    // Polling would take a minute here: only a watch can wake the waiter in time.
    let waiter = tokio::spawn({
        let lock = Lock::new("h", process(&cluster, "b")).with_retry_interval(60 * SECOND);
        async move {
            let guard = lock.acquire().await.unwrap();
            (Instant::now(), guard.token())
        }
    });
    tokio::time::sleep(5 * SECOND).await;
    let released = Instant::now();
    holder.release().await.unwrap();
    let (taken, token) = waiter.await.unwrap();
    assert_eq!(token, 2);
    assert!(
        taken - released < SECOND,
        "handed over in {:?}",
        taken - released
    );
}

#[tokio::test(start_paused = true)]
async fn a_waiter_wakes_after_its_watch_was_closed_or_expired() {
    let cluster = crate::harness::cluster().await;
    for compact in [false, true] {
        let name = format!("w-{compact}");
        let holder = Lock::new(&name, process(&cluster, "a"))
            .with_duration(60 * SECOND)
            .try_acquire()
            .await
            .unwrap();
        let waiter = tokio::spawn({
            let lock = Lock::new(&name, process(&cluster, "b")).with_retry_interval(60 * SECOND);
            async move { lock.acquire().await.map(|g| g.token()) }
        });
        tokio::time::sleep(2 * SECOND).await;
        let Some(server) = fake_only(&cluster, "closes watches and compacts") else {
            return;
        };
        if compact {
            // The watch comes back with a resourceVersion older than the history: 410.
            server.compact();
        }
        server.close_watches();
        tokio::time::sleep(2 * SECOND).await;
        let released = Instant::now();
        holder.release().await.unwrap();
        let token = tokio::time::timeout(10 * SECOND, waiter)
            .await
            .expect("woken")
            .unwrap()
            .unwrap();
        assert_eq!(token, 2);
        assert!(released.elapsed() < 10 * SECOND);
    }
}

#[tokio::test(start_paused = true)]
async fn acquire_timeouts_fire_on_time() {
    let cluster = crate::harness::cluster().await;
    let holder_lock = Lock::new("t", process(&cluster, "a")).with_duration(60 * SECOND);
    let _holder = holder_lock.try_acquire().await.unwrap();
    let started = Instant::now();
    let err = Lock::new("t", process(&cluster, "b"))
        .acquire_timeout(5 * SECOND)
        .await
        .unwrap_err();
    let waited = started.elapsed();
    assert!(matches!(&err, Error::Timeout { .. }), "{err}");
    assert!(
        waited >= 5 * SECOND && waited < 5 * SECOND + Duration::from_millis(100),
        "{waited:?}"
    );
    assert_eq!(err.holders().unwrap()[0].id, holder_lock.holder());
    // The builder option does the same.
    let err = Lock::new("t", process(&cluster, "b"))
        .with_acquire_timeout(2 * SECOND)
        .acquire()
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("gave up waiting for lock \"t\" after 2"),
        "{err}"
    );
}

/// A partition longer than the lease: `lost` fires before the lease ends, and after the
/// partition nobody holds the lock twice.
async fn partition_longer_than_the_lease(blackhole: bool) {
    let cluster = crate::harness::cluster().await;
    let alice_locker = process(&cluster, "alice");
    let alice = Lock::new("p", alice_locker.clone())
        .with_holder("alice")
        .with_duration(10 * SECOND)
        .with_renew_interval(2 * SECOND)
        .try_acquire()
        .await
        .unwrap();
    let expires = alice.expires().await.unwrap();
    // Cut alice off only; bob keeps talking to the server and waits.
    let Some(server) = fake_only(&cluster, "cuts one client off") else {
        return;
    };
    if blackhole {
        server.inject(
            Fault::hang()
                .always()
                .on(RequestMatcher::any().token("alice")),
        );
    } else {
        server.inject(
            Fault::reset_connection()
                .always()
                .on(RequestMatcher::any().token("alice")),
        );
    }
    let bob = tokio::spawn({
        let lock = Lock::new("p", process(&cluster, "bob")).with_holder("bob");
        async move {
            let guard = lock.acquire().await.unwrap();
            (alice_locker.now(), guard)
        }
    });
    let lost_at = tokio::time::timeout(60 * SECOND, async {
        alice.lost().await;
        lockheed::clock::Clock::now(clock().as_ref())
    });
    let lost_at = lost_at.await.expect("lost fires");
    assert!(
        lost_at < expires,
        "lost at {lost_at}, the lease ended at {expires}"
    );
    let (bob_took_at, bob_guard) = bob.await.unwrap();
    assert!(
        bob_took_at >= expires,
        "bob took it at {bob_took_at}, after the lease ended"
    );
    assert!(alice.is_lost(), "alice knew before bob took it");
    server.clear_faults();
    // After the partition: alice's release finds nothing of hers; bob alone holds the lock.
    assert!(matches!(alice.release().await, Err(Error::Lost { .. })));
    let info = process(&cluster, "x").get("p").await.unwrap().unwrap();
    assert_eq!(info.holders.len(), 1);
    assert_eq!(info.holders[0].id, "bob");
    assert!(bob_guard.token() > 1);
}

#[tokio::test(start_paused = true)]
async fn a_refusing_partition_loses_the_lock_before_the_lease_ends() {
    partition_longer_than_the_lease(false).await;
}

#[tokio::test(start_paused = true)]
async fn a_silent_partition_loses_the_lock_before_the_lease_ends() {
    partition_longer_than_the_lease(true).await;
}

#[tokio::test(start_paused = true)]
async fn transient_failures_during_renewal_are_retried() {
    let cluster = crate::harness::cluster().await;
    let alice = renewing_holder(&cluster, "r").await;
    let Some(server) = fake_only(&cluster, "500s and a 429") else {
        return;
    };
    // Three failed renewals in a row (kube itself retries 503s, so use 500s and a 429).
    server.inject(
        Fault::status(500)
            .times(2)
            .on(RequestMatcher::any().verb(Verb::Update)),
    );
    server.inject(Fault::too_many_requests(SECOND).on(RequestMatcher::any().verb(Verb::Update)));
    tokio::time::sleep(30 * SECOND).await;
    assert!(!alice.is_lost());
    assert!(
        Lock::new("r", process(&cluster, "bob"))
            .try_acquire()
            .await
            .unwrap_err()
            .is_held()
    );
    alice.release().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_thousand_local_waiters_share_one_watch() {
    let cluster = crate::harness::cluster().await;
    let holder = Lock::new("fan", process(&cluster, "a"))
        .with_duration(60 * SECOND)
        .try_acquire()
        .await
        .unwrap();
    let locker = process(&cluster, "b");
    cluster.reset_counters();
    let waiters: Vec<_> = (0..1000)
        .map(|i| {
            let lock = Lock::new("fan", locker.clone())
                .with_holder(format!("w{i}"))
                .with_retry_interval(60 * SECOND);
            tokio::spawn(async move {
                let guard = lock.acquire().await.unwrap();
                guard.release().await.unwrap();
            })
        })
        .collect();
    tokio::time::sleep(5 * SECOND).await;
    assert_eq!(locker.active_watches(), 1);
    assert_eq!(
        cluster.counts().get(Verb::Watch),
        1,
        "one watch for 1,000 waiters"
    );
    assert!(
        cluster.counts().get(Verb::Get) <= 1,
        "waiters read through the feed"
    );
    holder.release().await.unwrap();
    for waiter in waiters {
        waiter.await.unwrap();
    }
    let counts = cluster.counts();
    assert_eq!(counts.get(Verb::Watch), 1);
    // 1,000 acquisitions and releases with nothing in between: each next waiter of the
    // process queues while the last one releases, and the two writes race (a conflict and a
    // read), so at most three writes and one read each.
    assert!(counts.writes() <= 3 * 1000 + 1 + 20, "{counts:?}");
    assert!(counts.get(Verb::Get) <= 1000 + 20, "{counts:?}");
    tokio::time::sleep(SECOND).await;
    assert_eq!(
        locker.active_watches(),
        1,
        "the watch outlives its last waiter a while"
    );
    tokio::time::sleep(30 * SECOND).await;
    assert_eq!(locker.active_watches(), 0, "then it ends");
}

#[tokio::test(start_paused = true)]
async fn sixteen_processes_hand_over_in_few_requests() {
    let cluster = crate::harness::cluster().await;
    let first = Lock::new("herd", process(&cluster, "p-first"))
        .with_duration(30 * SECOND)
        .try_acquire()
        .await
        .unwrap();
    let inside = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let waiters: Vec<_> = (0..16)
        .map(|i| {
            let lock = Lock::new("herd", process(&cluster, &format!("p{i}")))
                .with_duration(30 * SECOND)
                .with_retry_interval(60 * SECOND);
            let inside = Arc::clone(&inside);
            tokio::spawn(async move {
                let guard = lock.acquire().await.unwrap();
                assert_eq!(inside.fetch_add(1, std::sync::atomic::Ordering::SeqCst), 0);
                tokio::time::sleep(Duration::from_millis(500)).await;
                inside.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                guard.release().await.unwrap();
            })
        })
        .collect();
    // Everyone is waiting, watching: from here on, count what the handovers cost.
    tokio::time::sleep(5 * SECOND).await;
    cluster.reset_counters();
    first.release().await.unwrap();
    for waiter in waiters {
        waiter.await.unwrap();
    }
    let counts = cluster.counts();
    let per_handover = counts.total() as f64 / 16.0;
    println!("16 handovers: {counts:?}, {per_handover:.2} requests each");
    // Each release hands the lock over to the next waiter in the queue: one write.
    assert!(
        per_handover <= 1.25,
        "{per_handover:.2} requests per handover: {counts:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn without_watch_rights_waiters_poll() {
    let cluster = crate::harness::cluster().await;
    let role = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "no-watch" },
        "rules": [{ "apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "create", "update"] }],
    }))
    .unwrap();
    let user = |name: &str| {
        serde_json::from_value(serde_json::json!({ "kind": "User", "name": name })).unwrap()
    };
    let a = crate::harness::client_with_role(&cluster, &role, &user("a")).await;
    let b = crate::harness::client_with_role(&cluster, &role, &user("b")).await;
    let locker = |client| KubeLocker::new(client, cluster.namespace()).with_clock(clock());
    let holder = Lock::new("poll", locker(a))
        .with_duration(60 * SECOND)
        .try_acquire()
        .await
        .unwrap();
    let waiter = tokio::spawn({
        let lock = Lock::new("poll", locker(b)).with_retry_interval(2 * SECOND);
        async move { lock.acquire().await.map(|g| g.token()) }
    });
    tokio::time::sleep(10 * SECOND).await;
    holder.release().await.unwrap();
    let token = tokio::time::timeout(5 * SECOND, waiter)
        .await
        .expect("polled in time")
        .unwrap()
        .unwrap();
    assert_eq!(token, 2);
    let Some(server) = fake_only(&cluster, "reads the request log") else {
        return;
    };
    let forbidden = server
        .requests()
        .iter()
        .filter(|r| r.status == Some(403))
        .count();
    assert!(
        forbidden <= 2,
        "the forbidden watch is not retried: {forbidden}"
    );
}

/// A process whose wall clock runs `ahead` of everyone else's.
#[derive(Debug)]
struct Ahead {
    base: Arc<TokioClock>,
    ahead: Duration,
}

impl lockheed::clock::Clock for Ahead {
    fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.base.now() + chrono::Duration::from_std(self.ahead).unwrap()
    }
}

fn skewed(cluster: &TestCluster, token: &str, ahead: Duration) -> KubeLocker {
    KubeLocker::new(cluster.client_for(token), cluster.namespace()).with_clock(Arc::new(Ahead {
        base: clock(),
        ahead,
    }))
}

/// Alice holds a 10 s lease and is cut off from the server; bob, whose clock is `ahead`,
/// tries every 100 ms. Returns (when alice's `lost` fired, when bob took the lock), on the
/// true clock.
async fn single_attempts_against_a_stranded_holder(
    ahead: Duration,
) -> Option<(chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>)> {
    use lockheed::clock::Clock;
    let cluster = crate::harness::cluster().await;
    let alice = renewing_holder(&cluster, "skew").await;
    let server = fake_only(&cluster, "cuts one client off")?;
    server.inject(
        Fault::reset_connection()
            .always()
            .on(RequestMatcher::any().token("alice")),
    );
    let lost = tokio::spawn({
        let lost = alice.lost();
        async move {
            lost.await;
            clock().now()
        }
    });
    let bob = Lock::new("skew", skewed(&cluster, "bob", ahead));
    let taken_at = loop {
        match bob.try_acquire().await {
            Ok(guard) => {
                guard.forget();
                break clock().now();
            }
            Err(err) => assert!(err.is_held(), "{err}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let lost_at = tokio::time::timeout(60 * SECOND, lost)
        .await
        .unwrap()
        .unwrap();
    drop(alice);
    Some((lost_at, taken_at))
}

#[tokio::test(start_paused = true)]
async fn a_contender_ahead_within_the_allowance_never_takes_a_trusted_lease() {
    // 2.5 s ahead: the 2 s allowance plus the holder's margin (a tenth of 10 s) cover it.
    let Some((lost_at, taken_at)) =
        single_attempts_against_a_stranded_holder(Duration::from_millis(2500)).await
    else {
        return;
    };
    assert!(
        lost_at < taken_at,
        "alice gave up at {lost_at}, bob took it at {taken_at}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_skew_beyond_the_allowance_is_unsafe_for_single_attempts_as_documented() {
    // 5 s ahead: more than the allowance plus the margin. A single attempt has only its clock
    // to go by, and takes the lease while alice still trusts it: the documented limit.
    let Some((lost_at, taken_at)) = single_attempts_against_a_stranded_holder(5 * SECOND).await
    else {
        return;
    };
    assert!(
        taken_at < lost_at,
        "expected the documented overlap: {taken_at} vs {lost_at}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_waiting_contender_is_safe_from_any_skew() {
    use lockheed::clock::Clock;
    let cluster = crate::harness::cluster().await;
    let alice = renewing_holder(&cluster, "skew").await;
    // An hour ahead, bob sees alice's lease as long over, but waits: he has to see it
    // unchanged for its whole duration, and alice renews it every 2 s.
    let bob = Lock::new("skew", skewed(&cluster, "bob", 3600 * SECOND));
    let err = bob.acquire_timeout(30 * SECOND).await.unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    assert!(!alice.is_lost());
    let Some(server) = fake_only(&cluster, "cuts one client off") else {
        return;
    };
    // Alice is cut off: bob takes over only after alice has given up.
    server.inject(
        Fault::reset_connection()
            .always()
            .on(RequestMatcher::any().token("alice")),
    );
    let guard = bob.acquire().await.unwrap();
    let taken_at = clock().now();
    assert!(
        alice.is_lost(),
        "alice gave up before bob took it at {taken_at}"
    );
    assert!(guard.token() > 1);
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_acquire_leaves_no_lease_behind() {
    let cluster = crate::harness::cluster().await;
    let locker = process(&cluster, "a");
    // A lease without expiry would stay forever: the worst case for a lost write.
    let lock = Lock::new("c", locker.clone()).with_duration(Duration::ZERO);
    let Some(server) = fake_only(&cluster, "delays an answer after commit") else {
        return;
    };
    // The create is committed, but its answer comes too late for the caller, who gives up.
    server.inject(
        Fault::latency(5 * SECOND)
            .after_commit()
            .on(RequestMatcher::any().verb(Verb::Create)),
    );
    assert!(
        tokio::time::timeout(SECOND, lock.try_acquire())
            .await
            .is_err()
    );
    // The clean-up runs in the background; settle waits for it (as a program about to exit
    // must), so that the check below needs no sleep.
    let started = tokio::time::Instant::now();
    lock.settle().await;
    assert!(
        started.elapsed() < 5 * SECOND,
        "it did not wait for the late answer"
    );
    let info = locker.get("c").await.unwrap().expect("the create happened");
    assert!(
        !info.is_held(),
        "the cancelled acquire's lease was removed: {info:?}"
    );

    // Waiting, then dropped while waiting: nothing to clean up, nothing left.
    let holder = Lock::new("c", process(&cluster, "b"))
        .try_acquire()
        .await
        .unwrap();
    assert!(tokio::time::timeout(SECOND, lock.acquire()).await.is_err());
    holder.release().await.unwrap();
    assert!(!locker.get("c").await.unwrap().unwrap().is_held());
}

#[tokio::test(start_paused = true)]
async fn an_ambiguous_write_is_reconciled_or_undone() {
    let cluster = crate::harness::cluster().await;
    let locker = process(&cluster, "a");
    let failing_create = || {
        Fault::status(500)
            .after_commit()
            .on(RequestMatcher::any().verb(Verb::Create))
    };

    let Some(server) = fake_only(&cluster, "500 after commit") else {
        return;
    };
    // try_acquire reports the failure, and does not leave the lease it may have written.
    server.inject(failing_create());
    let lock = Lock::new("amb", locker.clone()).with_duration(Duration::ZERO);
    let err = lock.try_acquire().await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    lock.settle().await;
    assert!(!locker.get("amb").await.unwrap().unwrap().is_held());

    // acquire retries, finds its own lease, and carries on with it.
    server.inject(failing_create());
    let guard = Lock::new("amb2", locker.clone()).acquire().await.unwrap();
    tokio::time::sleep(5 * SECOND).await;
    let info = locker.get("amb2").await.unwrap().unwrap();
    assert_eq!(info.holders.len(), 1);
    assert_eq!(info.holders[0].id, guard.holder());
    assert!(!guard.is_lost());
}

/// A re-entry replaces the holder's lease with a new one, with a new token. If its write's
/// outcome is unknown and the re-entry fails, no guard renews or releases that new lease: it
/// must not be left behind (without expiry it would stay forever). The earlier guard, whose
/// lease the write replaced, has lost the lock.
#[tokio::test(start_paused = true)]
async fn a_failed_reentry_leaves_no_lease_behind() {
    let cluster = crate::harness::cluster().await;
    let locker = process(&cluster, "a");
    let lock = Lock::new("re", locker.clone())
        .with_holder("me")
        .with_duration(Duration::ZERO);
    let first = lock.try_acquire().await.unwrap();
    let Some(server) = fake_only(&cluster, "500 after commit") else {
        return;
    };
    // The re-entry's update is committed, and then answered with a 500.
    server.inject(
        Fault::status(500)
            .after_commit()
            .on(RequestMatcher::any().verb(Verb::Update)),
    );
    let err = lock.try_acquire().await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    lock.settle().await;
    let info = locker.get("re").await.unwrap().unwrap();
    assert_eq!(info.fencing_token, 2, "the re-entry was written");
    assert!(!info.is_held(), "its lease was removed: {info:?}");
    tokio::time::timeout(20 * SECOND, first.lost())
        .await
        .expect("the earlier guard's lease was replaced: it has lost the lock");

    // The same for a re-entry that is cancelled while its write is in flight.
    let first = lock.try_acquire().await.unwrap();
    server.inject(
        Fault::latency(5 * SECOND)
            .after_commit()
            .on(RequestMatcher::any().verb(Verb::Update)),
    );
    assert!(
        tokio::time::timeout(SECOND, lock.try_acquire())
            .await
            .is_err()
    );
    lock.settle().await;
    let info = locker.get("re").await.unwrap().unwrap();
    assert_eq!(info.fencing_token, 4, "the cancelled re-entry was written");
    assert!(!info.is_held(), "its lease was removed: {info:?}");
    tokio::time::timeout(20 * SECOND, first.lost())
        .await
        .expect("the earlier guard has lost the lock");
}

#[tokio::test(start_paused = true)]
async fn a_server_down_for_longer_than_the_lease_leaves_one_holder_after() {
    let cluster = crate::harness::cluster().await;
    let alice = renewing_holder(&cluster, "down").await;
    let expires = alice.expires().await.unwrap();
    let bob = tokio::spawn({
        let lock = Lock::new("down", process(&cluster, "bob"));
        async move { lock.acquire().await.unwrap() }
    });
    tokio::time::sleep(SECOND).await;
    // Everyone is cut off for 30 s, three times the lease.
    cluster.cut_off();
    let cut_at = Instant::now();
    let lost_at = tokio::time::timeout(60 * SECOND, async {
        alice.lost().await;
        lockheed::clock::Clock::now(clock().as_ref())
    })
    .await
    .expect("lost fires");
    assert!(
        lost_at < expires,
        "lost at {lost_at}, the lease ended at {expires}"
    );
    tokio::time::sleep_until(cut_at + 30 * SECOND).await;
    cluster.restore();
    let bob = tokio::time::timeout(120 * SECOND, bob)
        .await
        .expect("bob gets it after the partition")
        .unwrap();
    assert!(matches!(alice.release().await, Err(Error::Lost { .. })));
    let info = process(&cluster, "x").get("down").await.unwrap().unwrap();
    assert_eq!(info.holders.len(), 1);
    assert_eq!(info.holders[0].id, bob.holder());
}

#[tokio::test(start_paused = true)]
async fn permanent_errors_are_returned_at_once() {
    let cluster = crate::harness::cluster().await;
    // A namespace that does not exist: 404 on the create, not a reason to wait.
    let nowhere = KubeLocker::new(cluster.client(), "nowhere").with_clock(clock());
    let started = Instant::now();
    let err = Lock::new("x", nowhere).acquire().await.unwrap_err();
    assert!(
        matches!(&err, Error::Kube { source: kube::Error::Api(s), .. } if s.code == 404),
        "{err}"
    );
    assert!(!err.is_transient());
    assert!(started.elapsed() < SECOND);
    // No rights at all: 403 at once.
    let no_rights = serde_json::from_value(serde_json::json!({ "metadata": { "name": "none" } }));
    let nobody = serde_json::from_value(serde_json::json!({ "kind": "User", "name": "nobody" }));
    let client =
        crate::harness::client_with_role(&cluster, &no_rights.unwrap(), &nobody.unwrap()).await;
    let err = Lock::new(
        "x",
        KubeLocker::new(client, cluster.namespace()).with_clock(clock()),
    )
    .acquire()
    .await
    .unwrap_err();
    assert!(
        matches!(&err, Error::Kube { source: kube::Error::Api(s), .. } if s.code == 403),
        "{err}"
    );
    let object = format!("{}/lockheed-x", cluster.namespace());
    assert!(err.to_string().contains(&object), "{err}");
}

/// A process suspended past its lease (a paused VM) wakes with timers that have not fired yet:
/// `is_lost` compares the wall clock with the moment the guard gives up, and fires `lost`.
#[tokio::test(start_paused = true)]
async fn is_lost_trusts_the_wall_clock_after_a_suspension() {
    let clock = lockheed::clock::ManualClock::new(chrono::Utc::now());
    let locker = lockheed::MemoryLocker::new().with_clock(Arc::new(clock.clone()));
    let guard = Lock::new("x", locker)
        .with_duration(30 * SECOND)
        .try_acquire()
        .await
        .unwrap();
    clock.advance(26 * SECOND);
    assert!(
        !guard.is_lost(),
        "still 4 s to go, 1 s more than the margin"
    );
    // The guard gives up a tenth of the duration (3 s) before the lease ends.
    clock.advance(SECOND);
    assert!(guard.is_lost());
    tokio::time::timeout(Duration::from_millis(1), guard.lost())
        .await
        .expect("lost fires with it");
}
