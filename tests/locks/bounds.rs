//! Guards and futures can move across threads and into spawned tasks.

use lockheed::{Error, KubeLocker, Lock, LockGuard, Locker, MemoryLocker};

fn send<T: Send>(_: &T) {}

fn send_sync_static<T: Send + Sync + 'static>() {}

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
    send(&guard.lost());
    tokio::spawn(async move { guard.release().await })
        .await
        .unwrap()
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
