//! Semaphores and shared/exclusive locks: part of the behavioural suite (run on every backend
//! by the macro in `suite.rs`), on Tokio's paused clock.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use lockheed::{Access, Error, Evict, Lock, LockKind, Locker};

use crate::harness::Harness;

const SECOND: Duration = Duration::from_secs(1);

/// Waits for `lock` in a task of its own.
fn spawn_acquire<L: Locker>(
    lock: Lock<L>,
) -> tokio::task::JoinHandle<Result<lockheed::LockGuard<L>, Error>> {
    tokio::spawn(async move { lock.acquire().await })
}

async fn settle() {
    tokio::time::sleep(Duration::from_millis(10)).await;
}

fn semaphore<H: Harness>(h: &H, holder: &str, max: u32) -> Lock<H::Locker> {
    Lock::new("pool", h.locker())
        .with_holder(holder)
        .with_max_holders(max)
}

fn rw<H: Harness>(h: &H, holder: &str, access: Access) -> Lock<H::Locker> {
    Lock::new("catalog", h.locker())
        .with_holder(holder)
        .with_access(access)
}

pub async fn a_semaphore_admits_its_capacity<H: Harness>() {
    let h = H::new().await;
    let mut guards = Vec::new();
    for holder in ["a", "b", "c"] {
        guards.push(semaphore(&h, holder, 3).try_acquire().await.unwrap());
    }
    // A caller asking for more gets the stored capacity: it is full.
    let err = semaphore(&h, "d", 5).try_acquire().await.unwrap_err();
    assert!(err.is_held(), "{err}");
    assert_eq!(err.holders().unwrap().len(), 3);
    let info = h.locker().get("pool").await.unwrap().unwrap();
    assert_eq!(
        (info.kind.clone(), info.max_holders),
        (Some(LockKind::Semaphore), Some(3))
    );
    // Each holder has its own lease and token.
    let tokens: Vec<_> = info.holders.iter().map(|h| h.token.unwrap()).collect();
    assert_eq!(tokens, [1, 2, 3]);
    assert_eq!(guards[1].token(), 2);
    assert_eq!(guards[1].max_holders(), Some(3));
    // One leaves: a waiter takes its place, and sees the stored capacity.
    let waiter = spawn_acquire(semaphore(&h, "d", 5));
    settle().await;
    assert!(!waiter.is_finished());
    guards.remove(0).release().await.unwrap();
    let d = waiter.await.unwrap().unwrap();
    assert_eq!((d.token(), d.max_holders()), (4, Some(3)));
    // The others still hold: releasing one does not touch the rest.
    let info = h.locker().get("pool").await.unwrap().unwrap();
    let holders: Vec<_> = info.holders.iter().map(|h| h.id.as_str()).collect();
    assert_eq!(holders, ["b", "c", "d"]);
}

pub async fn semaphore_leases_end_one_by_one<H: Harness>() {
    let h = H::new().await;
    let short = semaphore(&h, "short", 2)
        .with_duration(10 * SECOND)
        .with_renew_interval(Duration::ZERO)
        .try_acquire()
        .await
        .unwrap();
    let long = semaphore(&h, "long", 2).try_acquire().await.unwrap();
    assert!(semaphore(&h, "x", 2).try_acquire().await.is_err());
    tokio::time::sleep(13 * SECOND).await;
    assert!(short.is_lost());
    assert!(!long.is_lost(), "a renewed holder keeps its place");
    let x = semaphore(&h, "x", 2).try_acquire().await.unwrap();
    let info = h.locker().get("pool").await.unwrap().unwrap();
    let holders: Vec<_> = info.holders.iter().map(|h| h.id.as_str()).collect();
    assert_eq!(holders, ["long", "x"]);
    assert!(matches!(short.release().await, Err(Error::Lost { .. })));
    drop((long, x));
}

pub async fn semaphore_holders_never_exceed_capacity<H: Harness>() {
    let h = H::new().await;
    let inside = Arc::new(AtomicU32::new(0));
    let most = Arc::new(AtomicU32::new(0));
    let mut tasks = Vec::new();
    for i in 0..8 {
        let lock = semaphore(&h, &format!("worker-{i}"), 3).with_retry_interval(SECOND);
        let (inside, most) = (Arc::clone(&inside), Arc::clone(&most));
        tasks.push(tokio::spawn(async move {
            for _ in 0..3 {
                let guard = lock.acquire().await.unwrap();
                let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                assert!(now <= 3, "{now} holders of a semaphore of 3");
                most.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(300)).await;
                inside.fetch_sub(1, Ordering::SeqCst);
                guard.release().await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert!(most.load(Ordering::SeqCst) >= 2, "holders did overlap");
    let info = h.locker().get("pool").await.unwrap().unwrap();
    assert_eq!(
        info.fencing_token, 24,
        "every acquisition got its own token"
    );
}

pub async fn readers_share_and_writers_exclude<H: Harness>() {
    let h = H::new().await;
    let r1 = rw(&h, "r1", Access::Shared).try_acquire().await.unwrap();
    let r2 = rw(&h, "r2", Access::Shared).try_acquire().await.unwrap();
    assert_eq!(r2.max_holders(), None);
    let err = rw(&h, "w", Access::Exclusive)
        .try_acquire()
        .await
        .unwrap_err();
    assert_eq!(err.holders().unwrap().len(), 2, "{err}");
    let info = h.locker().get("catalog").await.unwrap().unwrap();
    assert_eq!(info.kind, Some(LockKind::ReadWrite));
    assert!(info.holders.iter().all(|h| h.shared));
    assert!(info.waiters.is_empty(), "a single attempt does not queue");
    r1.release().await.unwrap();
    r2.release().await.unwrap();
    let w = rw(&h, "w", Access::Exclusive).try_acquire().await.unwrap();
    let err = rw(&h, "r3", Access::Shared)
        .try_acquire()
        .await
        .unwrap_err();
    assert!(err.is_held(), "{err}");
    assert!(!err.holders().unwrap()[0].shared);
    w.release().await.unwrap();
    // A mutex or a semaphore cannot be taken from it.
    let err = Lock::new("catalog", h.locker())
        .try_acquire()
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::WrongKind { kind, wanted: "mutex", .. } if kind == "rwlock"),
        "{err}"
    );
}

pub async fn a_waiting_writer_keeps_new_readers_out<H: Harness>() {
    let h = H::new().await;
    let r1 = rw(&h, "r1", Access::Shared).try_acquire().await.unwrap();
    let writer = spawn_acquire(rw(&h, "w", Access::Exclusive));
    settle().await;
    let info = h.locker().get("catalog").await.unwrap().unwrap();
    assert_eq!(info.waiters.len(), 1, "the writer queued");
    assert_eq!(info.waiters[0].id, "w");
    // A new reader now waits behind the writer instead of joining r1.
    let err = rw(&h, "r2", Access::Shared)
        .try_acquire()
        .await
        .unwrap_err();
    let blocker = &err.holders().unwrap()[0];
    assert!(blocker.waiting && blocker.id == "w", "{err}");
    assert!(err.to_string().contains("w (waiting for its turn"), "{err}");
    let reader = spawn_acquire(rw(&h, "r2", Access::Shared));
    // The intent outlives its 30 s by being refreshed while the writer waits.
    tokio::time::sleep(45 * SECOND).await;
    assert!(!writer.is_finished() && !reader.is_finished());
    // r1 may take its own lock again (no deadlock with the writer waiting for it).
    let again = rw(&h, "r1", Access::Shared).try_acquire().await;
    drop(r1); // superseded by the new acquisition: its release removes nothing
    again.unwrap().release().await.unwrap();
    let w = writer.await.unwrap().unwrap();
    settle().await;
    assert!(!reader.is_finished(), "the reader waits for the writer");
    let info = h.locker().get("catalog").await.unwrap().unwrap();
    let waiters: Vec<_> = info.waiters.iter().map(|w| w.id.as_str()).collect();
    assert_eq!(
        waiters,
        ["r2"],
        "the writer's turn came; the reader queued behind it"
    );
    w.release().await.unwrap();
    let r2 = reader.await.unwrap().unwrap();
    r2.release().await.unwrap();
}

pub async fn a_writer_that_gives_up_withdraws_its_intent<H: Harness>() {
    let h = H::new().await;
    let r1 = rw(&h, "r1", Access::Shared).try_acquire().await.unwrap();
    let err = rw(&h, "w", Access::Exclusive)
        .acquire_timeout(5 * SECOND)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    settle().await;
    let info = h.locker().get("catalog").await.unwrap().unwrap();
    assert!(info.waiters.is_empty(), "{info:?}");
    // Readers are not kept out by a writer that left.
    let r2 = rw(&h, "r2", Access::Shared).try_acquire().await.unwrap();
    // A writer whose acquire is dropped (cancelled) withdraws too.
    let writer = spawn_acquire(rw(&h, "w2", Access::Exclusive));
    settle().await;
    assert_eq!(
        h.locker()
            .get("catalog")
            .await
            .unwrap()
            .unwrap()
            .waiters
            .len(),
        1
    );
    writer.abort();
    settle().await;
    let info = h.locker().get("catalog").await.unwrap().unwrap();
    assert!(info.waiters.is_empty(), "{info:?}");
    drop((r1, r2));
}

pub async fn a_dead_writers_intent_ends_by_itself<H: Harness>() {
    let h = H::new().await;
    // A place in the queue ending 10 s from now, by the locker's clock, whose writer is gone.
    let now = h.locker().now();
    let expires = (now + chrono::Duration::seconds(10)).to_rfc3339();
    let since = now.to_rfc3339();
    h.store_raw(
        "catalog",
        &format!(
            r#"{{"name":"catalog","lockType":"rwlock","leases":{{}},"queue":[{{"instanceID":"dead","expires":"{expires}","durationMillis":10000,"since":"{since}"}}]}}"#
        ),
    )
    .await;
    let err = rw(&h, "r", Access::Shared).try_acquire().await.unwrap_err();
    assert!(err.holders().unwrap()[0].waiting, "{err}");
    let started = tokio::time::Instant::now();
    let r = rw(&h, "r", Access::Shared).acquire().await.unwrap();
    // Ten seconds, plus the clock skew allowance of 2 s.
    let waited = started.elapsed();
    assert!(waited >= 12 * SECOND && waited < 13 * SECOND, "{waited:?}");
    let info = h.locker().get("catalog").await.unwrap().unwrap();
    assert!(info.waiters.is_empty());
    r.release().await.unwrap();
}

pub async fn readers_and_writers_never_overlap<H: Harness>() {
    let h = H::new().await;
    let readers = Arc::new(AtomicU32::new(0));
    let writers = Arc::new(AtomicU32::new(0));
    let most_readers = Arc::new(AtomicU32::new(0));
    let mut tasks = Vec::new();
    for i in 0..8 {
        let access = if i % 4 == 0 {
            Access::Exclusive
        } else {
            Access::Shared
        };
        let lock = rw(&h, &format!("worker-{i}"), access).with_retry_interval(SECOND);
        let (readers, writers, most_readers) = (
            Arc::clone(&readers),
            Arc::clone(&writers),
            Arc::clone(&most_readers),
        );
        tasks.push(tokio::spawn(async move {
            for _ in 0..3 {
                let guard = lock.acquire().await.unwrap();
                if access == Access::Exclusive {
                    assert_eq!(writers.fetch_add(1, Ordering::SeqCst), 0, "two writers");
                    assert_eq!(readers.load(Ordering::SeqCst), 0, "a writer with readers");
                } else {
                    let now = readers.fetch_add(1, Ordering::SeqCst) + 1;
                    most_readers.fetch_max(now, Ordering::SeqCst);
                    assert_eq!(writers.load(Ordering::SeqCst), 0, "a reader with a writer");
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
                if access == Access::Exclusive {
                    writers.fetch_sub(1, Ordering::SeqCst);
                } else {
                    readers.fetch_sub(1, Ordering::SeqCst);
                }
                guard.release().await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert!(
        most_readers.load(Ordering::SeqCst) >= 2,
        "readers did share"
    );
}

pub async fn an_operator_evicts_dead_holders<H: Harness>() {
    let h = H::new().await;
    let a = semaphore(&h, "a", 2).try_acquire().await.unwrap();
    let b = semaphore(&h, "b", 2).try_acquire().await.unwrap();
    let removed = h.locker().evict("pool", Evict::Holder("a")).await.unwrap();
    assert_eq!(removed.len(), 1);
    assert_eq!(removed[0].id, "a");
    assert!(
        h.locker()
            .evict("pool", Evict::Holder("a"))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(matches!(a.release().await, Err(Error::Lost { .. })));
    let removed = h.locker().evict("pool", Evict::All).await.unwrap();
    assert_eq!(removed[0].id, "b");
    assert!(!h.locker().get("pool").await.unwrap().unwrap().is_held());
    assert!(
        h.locker()
            .evict("nothing-here", Evict::All)
            .await
            .unwrap()
            .is_empty()
    );
    b.forget();
}

pub async fn kind_settings_are_checked_before_any_request<H: Harness>() {
    let h = H::new().await;
    h.cut_off();
    for lock in [
        semaphore(&h, "a", 0),
        semaphore(&h, "a", 2).with_access(Access::Shared),
    ] {
        let err = lock.try_acquire().await.unwrap_err();
        assert!(matches!(err, Error::InvalidConfig { .. }), "{err}");
    }
    h.restore();
}
