//! Guards and futures can move across threads and into spawned tasks.

use lockheed::{Error, KubeLocker, LeaderElection, Lock, LockGuard, Locker, MemoryLocker};

fn send<T: Send>(_: &T) {}

fn send_sync_static<T: Send + Sync + 'static>() {}

fn send_sync_static_value<T: Send + Sync + 'static>(_: &T) {}

#[test]
fn bounds() {
    send_sync_static::<Lock<KubeLocker>>();
    send_sync_static::<LockGuard<KubeLocker>>();
    send_sync_static::<LockGuard<MemoryLocker>>();
    send_sync_static::<Error>();
    let lock = Lock::new("x", MemoryLocker::new());
    send(&lock.acquire());
    send(&lock.try_acquire());
    let locker = MemoryLocker::new();
    send(&locker.list(None));
    send(&locker.get("x"));
}

#[tokio::test]
async fn futures_of_the_kubernetes_backend_are_send() {
    let cluster = crate::harness::cluster().await;
    let lock = Lock::new("x", KubeLocker::new(cluster.client(), cluster.namespace()));
    let guard = tokio::spawn(async move { lock.acquire().await })
        .await
        .unwrap()
        .unwrap();
    // What kube-runtime's `Controller::graceful_shutdown_on` takes, as `Term::ended` is.
    send_sync_static_value(&guard.lost());
    tokio::spawn(async move { guard.release().await })
        .await
        .unwrap()
        .unwrap();
}

/// The work may be the term's end itself, which outlives the term it came from.
#[tokio::test(start_paused = true)]
async fn a_terms_end_is_what_graceful_shutdown_takes() {
    let election = LeaderElection::new(Lock::new("x", MemoryLocker::new()));
    let shutdown = tokio::time::sleep(std::time::Duration::from_millis(20));
    election
        .run(shutdown, |term| {
            let ended = term.ended();
            send_sync_static_value(&ended);
            ended
        })
        .await
        .unwrap();
}

#[test]
fn dropping_a_guard_outside_a_runtime_neither_panics_nor_blocks() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let locker = MemoryLocker::new();
    let guard = runtime
        .block_on(Lock::new("x", locker.clone()).try_acquire())
        .unwrap();
    drop(runtime);
    // No runtime is left: the guard logs and leaves the lease to expire.
    drop(guard);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let info = runtime.block_on(locker.get("x")).unwrap().unwrap();
    assert!(
        info.is_held(),
        "nobody released it: the lease ends by itself"
    );
}
