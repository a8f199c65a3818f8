//! The behavioural suite, written once and run on every backend (see the macro at the end).
//! Time runs on Tokio's paused clock, which the lockers' clocks follow: a 30 s lease expires
//! in no real time, and nothing depends on how loaded the machine is.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use lockheed::{Condition, Error, Evict, Lock, LockKind, Locker};

use crate::harness::Harness;
pub use crate::kinds::*;

const SECOND: Duration = Duration::from_secs(1);

async fn sleep(secs: u64) {
    tokio::time::sleep(Duration::from_secs(secs)).await;
}

/// Lets background tasks (a dropped guard's release) run.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(10)).await;
}

fn lock<H: Harness>(h: &H, name: &str, holder: &str) -> Lock<H::Locker> {
    Lock::new(name, h.locker()).with_holder(holder)
}

pub async fn acquire_and_release<H: Harness>() {
    let h = H::new().await;
    let guard = lock(&h, "a", "alice").try_acquire().await.unwrap();
    assert_eq!((guard.name(), guard.holder()), ("a", "alice"));
    let info = h.locker().get("a").await.unwrap().unwrap();
    assert_eq!(info.holders.len(), 1);
    assert_eq!(info.holders[0].id, "alice");
    assert_eq!(info.kind, Some(LockKind::Mutex));
    assert!(info.holders[0].expires.is_some());
    guard.release().await.unwrap();
    let info = h.locker().get("a").await.unwrap().unwrap();
    assert!(!info.is_held());
    // Free again: anyone can take it.
    let guard = lock(&h, "a", "bob").try_acquire().await.unwrap();
    guard.release().await.unwrap();
    assert!(h.locker().get("never-taken").await.unwrap().is_none());
}

pub async fn busy_locks_name_their_holders<H: Harness>() {
    let h = H::new().await;
    let _alice = lock(&h, "a", "alice").try_acquire().await.unwrap();
    let err = lock(&h, "a", "bob").try_acquire().await.unwrap_err();
    assert!(err.is_held(), "{err}");
    let holders = err.holders().unwrap();
    assert_eq!(holders.len(), 1);
    assert_eq!(holders[0].id, "alice");
    // The holder as `Holder`'s Display describes it, with absolute times.
    let message = err.to_string();
    assert!(
        message.starts_with("lock \"a\" is held by alice (since ")
            && message.contains(", token 1, until "),
        "{err}"
    );
}

pub async fn expired_leases_can_be_taken<H: Harness>() {
    let h = H::new().await;
    // No renewal: the lease ends after its duration.
    let alice = lock(&h, "a", "alice")
        .with_duration(10 * SECOND)
        .with_renew_interval(Duration::ZERO)
        .try_acquire()
        .await
        .unwrap();
    sleep(9).await;
    settle().await;
    assert!(
        alice.is_lost(),
        "lost fires a tenth of the duration before the lease ends"
    );
    assert!(
        lock(&h, "a", "bob")
            .try_acquire()
            .await
            .unwrap_err()
            .is_held()
    );
    // Ended by the clock at 10 s, but others allow 2 s for clock skew before taking it.
    sleep(2).await;
    let bob = lock(&h, "a", "bob");
    assert!(bob.try_acquire().await.unwrap_err().is_held());
    sleep(1).await;
    let bob = bob.try_acquire().await.unwrap();
    assert!(bob.token() > alice.token());
    // Alice's release finds nothing of hers to remove.
    assert!(matches!(alice.release().await, Err(Error::Lost { .. })));
    assert_eq!(
        h.locker().get("a").await.unwrap().unwrap().holders[0].id,
        "bob"
    );
}

pub async fn renewal_keeps_a_lock_past_its_duration<H: Harness>() {
    let h = H::new().await;
    let alice = lock(&h, "a", "alice")
        .with_duration(3 * SECOND)
        .with_renew_interval(SECOND)
        .try_acquire()
        .await
        .unwrap();
    for _ in 0..10 {
        sleep(1).await;
        assert!(
            lock(&h, "a", "bob")
                .try_acquire()
                .await
                .unwrap_err()
                .is_held()
        );
    }
    assert!(!alice.is_lost());
    let expires = alice.expires().await.unwrap();
    let now = h.locker().now();
    assert!(expires > now, "the lease was extended: {expires} > {now}");
    alice.release().await.unwrap();
}

pub async fn dropping_the_guard_releases<H: Harness>() {
    let h = H::new().await;
    let alice = lock(&h, "a", "alice").try_acquire().await.unwrap();
    drop(alice);
    settle().await;
    let bob = lock(&h, "a", "bob").try_acquire().await.unwrap();
    assert_eq!(bob.token(), 2);
}

pub async fn acquire_waits_for_the_holder<H: Harness>() {
    let h = H::new().await;
    let alice = lock(&h, "a", "alice").try_acquire().await.unwrap();
    let bob = tokio::spawn({
        let lock = lock(&h, "a", "bob").with_retry_interval(SECOND);
        async move { lock.acquire().await.map(|g| g.token()) }
    });
    sleep(5).await;
    if bob.is_finished() {
        panic!("bob waits while alice holds: {:?}", bob.await);
    }
    alice.release().await.unwrap();
    sleep(2).await;
    assert_eq!(bob.await.unwrap().unwrap(), 2);
}

pub async fn acquire_waits_for_an_abandoned_lease<H: Harness>() {
    let h = H::new().await;
    // Alice never releases nor renews: bob gets the lock when her lease ends.
    lock(&h, "a", "alice")
        .with_duration(20 * SECOND)
        .with_renew_interval(Duration::ZERO)
        .try_acquire()
        .await
        .unwrap()
        .forget();
    let started = tokio::time::Instant::now();
    let bob = lock(&h, "a", "bob")
        .with_retry_interval(60 * SECOND)
        .acquire()
        .await
        .unwrap();
    let waited = started.elapsed();
    // The lease's 20 s, plus the 2 s allowed for clock skew.
    assert!(waited >= 22 * SECOND && waited < 23 * SECOND, "{waited:?}");
    assert_eq!(bob.token(), 2);
}

pub async fn tags_merge_and_reset<H: Harness>() {
    let h = H::new().await;
    let g = lock(&h, "a", "alice")
        .with_tags(["x", "y"])
        .try_acquire()
        .await
        .unwrap();
    assert_eq!(h.locker().get("a").await.unwrap().unwrap().tags, ["x", "y"]);
    g.release().await.unwrap();
    let g = lock(&h, "a", "bob")
        .with_tags(["z", "x"])
        .try_acquire()
        .await
        .unwrap();
    assert_eq!(
        h.locker().get("a").await.unwrap().unwrap().tags,
        ["x", "y", "z"]
    );
    g.release().await.unwrap();
    let g = lock(&h, "a", "carol")
        .with_tags(["only"])
        .with_reset_tags(true)
        .try_acquire()
        .await
        .unwrap();
    assert_eq!(h.locker().get("a").await.unwrap().unwrap().tags, ["only"]);
    g.release().await.unwrap();
    assert_eq!(h.locker().get("a").await.unwrap().unwrap().tags, ["only"]);
}

pub async fn force_takes_over_by_tag_and_the_loser_is_told<H: Harness>() {
    let h = H::new().await;
    let alice = lock(&h, "a", "alice")
        .with_duration(30 * SECOND)
        .with_renew_interval(SECOND)
        .with_tags(["forceme"])
        .try_acquire()
        .await
        .unwrap();
    // A condition that does not hold does not force.
    let wrong = lock(&h, "a", "bob").with_force(Condition::tags_contain("other"));
    assert!(wrong.try_acquire().await.unwrap_err().is_held());
    let bob = lock(&h, "a", "bob")
        .with_force(Condition::and([
            Condition::acquired(true),
            Condition::tags_contain("forceme"),
        ]))
        .try_acquire()
        .await
        .unwrap();
    assert!(bob.token() > alice.token());
    tokio::time::timeout(5 * SECOND, alice.lost())
        .await
        .expect("alice learns at her next renewal that she lost the lock");
    assert!(matches!(alice.release().await, Err(Error::Lost { .. })));
    let info = h.locker().get("a").await.unwrap().unwrap();
    assert_eq!(info.holders.len(), 1);
    assert_eq!(info.holders[0].id, "bob");
}

pub async fn list_with_nested_conditions<H: Harness>() {
    let h = H::new().await;
    let _db = lock(&h, "db", "x")
        .with_tags(["db", "prod"])
        .try_acquire()
        .await
        .unwrap();
    let _web = lock(&h, "web", "x")
        .with_tags(["web", "prod"])
        .try_acquire()
        .await
        .unwrap();
    lock(&h, "idle", "x")
        .with_tags(["db"])
        .try_acquire()
        .await
        .unwrap()
        .release()
        .await
        .unwrap();
    let names = |c: Option<Condition>| {
        let locker = h.locker();
        async move {
            let list = locker.list(c.as_ref()).await.unwrap();
            assert!(list.unreadable.is_empty());
            list.locks.into_iter().map(|l| l.name).collect::<Vec<_>>()
        }
    };
    assert_eq!(names(None).await, ["db", "idle", "web"]);
    assert_eq!(names(Some(Condition::acquired(true))).await, ["db", "web"]);
    assert_eq!(
        names(Some(Condition::tags_contain("db"))).await,
        ["db", "idle"]
    );
    let held_db_or_free = Condition::or([
        Condition::and([Condition::acquired(true), Condition::tags_contain("db")]),
        Condition::not(Condition::acquired(true)),
    ]);
    assert_eq!(names(Some(held_db_or_free)).await, ["db", "idle"]);
    let prod_not_web = Condition::and([
        Condition::tags_contain("prod"),
        Condition::not(Condition::tags_contain("web")),
    ]);
    assert_eq!(names(Some(prod_not_web)).await, ["db"]);
}

pub async fn fencing_tokens_increase_across_holders<H: Harness>() {
    let h = H::new().await;
    let mut last = 0;
    for holder in ["a", "b", "c", "a"] {
        let g = lock(&h, "f", holder).try_acquire().await.unwrap();
        assert!(g.token() > last, "{} after {last}", g.token());
        last = g.token();
        assert_eq!(
            h.locker().get("f").await.unwrap().unwrap().fencing_token,
            last
        );
        g.release().await.unwrap();
    }
    // An expired lease taken over advances it too.
    lock(&h, "f", "d")
        .with_duration(SECOND)
        .with_renew_interval(Duration::ZERO)
        .try_acquire()
        .await
        .unwrap()
        .forget();
    sleep(4).await;
    let e = lock(&h, "f", "e").try_acquire().await.unwrap();
    assert_eq!(e.token(), last + 2);
}

pub async fn reacquiring_supersedes_the_older_guard<H: Harness>() {
    let h = H::new().await;
    let l = lock(&h, "a", "alice")
        .with_duration(10 * SECOND)
        .with_renew_interval(SECOND);
    let first = l.try_acquire().await.unwrap();
    sleep(5).await;
    let second = l.try_acquire().await.unwrap();
    assert!(second.token() > first.token());
    // The older guard learns at its next renewal, and can never remove the newer lease.
    tokio::time::timeout(5 * SECOND, first.lost())
        .await
        .expect("the older guard is lost");
    assert!(matches!(first.release().await, Err(Error::Lost { .. })));
    assert_eq!(h.locker().get("a").await.unwrap().unwrap().holders.len(), 1);
    // Dropping a guard and taking the lock again at once: the background release of the
    // dropped guard must not remove the new lease.
    drop(second);
    let third = l.try_acquire().await.unwrap();
    settle().await;
    let info = h.locker().get("a").await.unwrap().unwrap();
    assert_eq!(info.holders.len(), 1, "{info:?}");
    assert!(!third.is_lost());
    third.release().await.unwrap();
}

pub async fn lost_fires_when_renewals_are_refused<H: Harness>() {
    let h = H::new().await;
    let alice = lock(&h, "a", "alice")
        .with_duration(10 * SECOND)
        .with_renew_interval(2 * SECOND)
        .try_acquire()
        .await
        .unwrap();
    let expires = alice.expires().await.unwrap();
    h.cut_off();
    let lost_at = tokio::time::timeout(30 * SECOND, async {
        alice.lost().await;
        h.locker().now()
    })
    .await
    .expect("lost fires");
    h.restore();
    assert!(
        lost_at < expires,
        "lost fired at {lost_at}, before the lease ended at {expires}"
    );
    // Nobody else took it meanwhile, so releasing still works.
    alice.release().await.unwrap();
}

pub async fn bad_settings_are_refused_before_any_request<H: Harness>() {
    let h = H::new().await;
    h.cut_off(); // A request would fail differently: these must not make any.
    let err = lock(&h, "", "x").try_acquire().await.unwrap_err();
    assert!(matches!(err, Error::InvalidName { .. }), "{err}");
    let err = lock(&h, "a", "x")
        .with_duration(5 * SECOND)
        .with_renew_interval(5 * SECOND)
        .try_acquire()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidConfig { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("must be shorter than the duration"),
        "{err}"
    );
    let err = lock(&h, "a", "x")
        .with_tags([""])
        .acquire()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidConfig { .. }), "{err}");
    let err = lock(&h, "a", "").try_acquire().await.unwrap_err();
    assert!(matches!(err, Error::InvalidConfig { .. }), "{err}");
    h.restore();
}

pub async fn corrupt_state_is_reported_and_never_overwritten<H: Harness>() {
    let h = H::new().await;
    let corrupt = r#"{"name":"broken","lockType":"mutex","leases":{"x":{"instanceID":"x","expires":"not a time"}"#;
    h.store_raw("broken", corrupt).await;
    let _ok = lock(&h, "fine", "x").try_acquire().await.unwrap();
    let err = lock(&h, "broken", "x").try_acquire().await.unwrap_err();
    assert!(
        matches!(&err, Error::Corrupt { object, .. } if object.ends_with("broken")),
        "{err}"
    );
    // Even waiting does not overwrite it.
    let err = lock(&h, "broken", "x").acquire().await.unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }));
    let list = h.locker().list(None).await.unwrap();
    assert_eq!(list.locks.len(), 1);
    assert_eq!(list.locks[0].name, "fine");
    assert_eq!(list.unreadable.len(), 1);
    assert!(list.unreadable[0].to_string().contains("broken"));
}

pub async fn other_lock_kinds_are_left_alone<H: Harness>() {
    let h = H::new().await;
    h.store_raw(
        "sem",
        r#"{"name":"sem","lockType":"semaphore","leases":{}}"#,
    )
    .await;
    let err = lock(&h, "sem", "x").try_acquire().await.unwrap_err();
    assert!(
        matches!(&err, Error::WrongKind { kind, .. } if kind == "semaphore"),
        "{err}"
    );
}

pub async fn contenders_never_overlap<H: Harness>() {
    let h = H::new().await;
    let inside = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let mut tasks = Vec::new();
    for i in 0..6 {
        let lock = lock(&h, "shared", &format!("worker-{i}")).with_retry_interval(SECOND);
        let inside = std::sync::Arc::clone(&inside);
        tasks.push(tokio::spawn(async move {
            let mut tokens = Vec::new();
            for _ in 0..3 {
                let guard = lock.acquire().await.unwrap();
                assert_eq!(inside.fetch_add(1, std::sync::atomic::Ordering::SeqCst), 0);
                tokio::time::sleep(Duration::from_millis(300)).await;
                inside.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                tokens.push(guard.token());
                guard.release().await.unwrap();
            }
            tokens
        }));
    }
    let mut tokens = Vec::new();
    for task in tasks {
        tokens.extend(task.await.unwrap());
    }
    tokens.sort_unstable();
    assert_eq!(
        tokens,
        (1..=18).collect::<Vec<u64>>(),
        "every acquisition got its own token"
    );
}

pub async fn acquire_tells_its_observer_whom_it_waits_for<H: Harness>() {
    let h = H::new().await;
    let holder = lock(&h, "q", "alice")
        .with_duration(30 * SECOND)
        .try_acquire()
        .await
        .unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    let waiter = lock(&h, "q", "bob").on_wait(move |w| {
        let ids: Vec<_> = w.holders.iter().map(|h| h.id.clone()).collect();
        log.lock()
            .unwrap()
            .push((w.lock.clone(), ids, w.max_holders));
    });
    // A single attempt never waits, so it tells nobody.
    assert!(waiter.try_acquire().await.unwrap_err().is_held());
    assert!(seen.lock().unwrap().is_empty());
    let waiting = tokio::spawn(async move { waiter.acquire().await });
    // Alice renews twice meanwhile: the same holder, so no new report.
    sleep(25).await;
    assert!(!waiting.is_finished());
    holder.release().await.unwrap();
    let bob = waiting.await.unwrap().unwrap();
    assert_eq!(
        *seen.lock().unwrap(),
        [("q".to_owned(), vec!["alice".to_owned()], Some(1))]
    );
    // A timeout says whom it gave up on, and how many may hold the lock.
    let err = lock(&h, "q", "carol")
        .acquire_timeout(5 * SECOND)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    assert_eq!(err.holders().unwrap()[0].id, "bob");
    assert_eq!(err.max_holders(), Some(1));
    drop(bob);
}

pub async fn guards_tell_what_they_took<H: Harness>() {
    let h = H::new().await;
    let pool = |holder: &str| lock(&h, "pool", holder).with_max_holders(2);
    let a = pool("a").try_acquire().await.unwrap();
    assert!(!a.is_reentry());
    let b = pool("b").try_acquire().await.unwrap();
    let taken = b.acquired();
    let ids: Vec<_> = taken.holders.iter().map(|h| h.id.as_str()).collect();
    assert_eq!((ids, taken.max_holders), (vec!["a", "b"], Some(2)));
    assert_eq!(taken.fencing_token, b.token());
    // The snapshot is of the acquisition: a's release does not change it.
    a.release().await.unwrap();
    assert_eq!(b.acquired().holders.len(), 2);
    let again = pool("b").try_acquire().await.unwrap();
    assert!(again.is_reentry());
    drop(b);
}

pub async fn lost_fires_for_a_lease_without_expiry<H: Harness>() {
    let h = H::new().await;
    let forever = |holder: &str| lock(&h, "f", holder).with_duration(Duration::ZERO);
    let alice = forever("alice")
        .with_tags(["forceme"])
        .try_acquire()
        .await
        .unwrap();
    assert_eq!(alice.expires().await, None);
    // Nothing happens to the lease: nothing fires, however long it is held.
    assert!(
        tokio::time::timeout(120 * SECOND, alice.lost())
            .await
            .is_err()
    );
    let bob = forever("bob")
        .with_force(Condition::tags_contain("forceme"))
        .try_acquire()
        .await
        .unwrap();
    // The guard watches the lock (or reads it every 10 s without a change feed).
    tokio::time::timeout(11 * SECOND, alice.lost())
        .await
        .expect("a forced takeover of a lease without expiry is noticed");
    assert!(alice.is_lost() && !bob.is_lost());
    // An operator's eviction is noticed too.
    h.locker().evict("f", Evict::Holder("bob")).await.unwrap();
    tokio::time::timeout(11 * SECOND, bob.lost())
        .await
        .expect("an evicted holder is told");
    // A released guard stops watching: nothing is left running that could fire.
    let carol = forever("carol").try_acquire().await.unwrap();
    carol.release().await.unwrap();
}

/// Runs each suite function on each backend, on a paused clock. A backend `without listing`
/// (whose client may not list locks) skips the two tests that list them.
macro_rules! suite {
    ($backend:ident: $harness:ty) => {
        mod $backend {
            suite!(@core $harness);
            suite!(@tests $harness;
                list_with_nested_conditions,
                corrupt_state_is_reported_and_never_overwritten,
            );
        }
    };
    ($backend:ident: $harness:ty, without listing) => {
        mod $backend {
            suite!(@core $harness);
        }
    };
    (@core $harness:ty) => {
        suite!(@tests $harness;
            acquire_and_release,
            busy_locks_name_their_holders,
            expired_leases_can_be_taken,
            renewal_keeps_a_lock_past_its_duration,
            dropping_the_guard_releases,
            acquire_waits_for_the_holder,
            acquire_waits_for_an_abandoned_lease,
            tags_merge_and_reset,
            force_takes_over_by_tag_and_the_loser_is_told,
            fencing_tokens_increase_across_holders,
            reacquiring_supersedes_the_older_guard,
            lost_fires_when_renewals_are_refused,
            bad_settings_are_refused_before_any_request,
            other_lock_kinds_are_left_alone,
            contenders_never_overlap,
            a_semaphore_admits_its_capacity,
            semaphore_leases_end_one_by_one,
            semaphore_holders_never_exceed_capacity,
            readers_share_and_writers_exclude,
            a_waiting_writer_keeps_new_readers_out,
            a_writer_that_gives_up_withdraws_its_intent,
            a_dead_writers_intent_ends_by_itself,
            readers_and_writers_never_overlap,
            an_operator_evicts_dead_holders,
            kind_settings_are_checked_before_any_request,
            acquire_tells_its_observer_whom_it_waits_for,
            guards_tell_what_they_took,
            lost_fires_for_a_lease_without_expiry,
        );
    };
    (@tests $harness:ty; $($test:ident),* $(,)?) => {
        $(
            #[tokio::test(start_paused = true)]
            async fn $test() {
                super::$test::<$harness>().await;
            }
        )*
    };
}

/// The mutex part of the suite, on backends that keep only mutexes with expiring leases.
macro_rules! mutex_suite {
    ($backend:ident: $harness:ty) => {
        mod $backend {
            suite!(@tests $harness;
                acquire_and_release,
                busy_locks_name_their_holders,
                expired_leases_can_be_taken,
                renewal_keeps_a_lock_past_its_duration,
                dropping_the_guard_releases,
                acquire_waits_for_the_holder,
                acquire_waits_for_an_abandoned_lease,
                tags_merge_and_reset,
                force_takes_over_by_tag_and_the_loser_is_told,
                list_with_nested_conditions,
                fencing_tokens_increase_across_holders,
                reacquiring_supersedes_the_older_guard,
                lost_fires_when_renewals_are_refused,
                bad_settings_are_refused_before_any_request,
                contenders_never_overlap,
                acquire_tells_its_observer_whom_it_waits_for,
            );
        }
    };
}

suite!(memory: crate::harness::Memory);
suite!(kube: crate::harness::Kube);
mutex_suite!(lease: crate::harness::Leases);
// Least privilege: with exactly the Role of examples/rbac.yaml, and with only get and update
// on ConfigMaps an administrator created (waiters poll; listing is refused: see rbac.rs).
suite!(kube_rbac: crate::harness::KubeRbac);
suite!(kube_named: crate::harness::KubeNamed, without listing);
