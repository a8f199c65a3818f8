//! Liveness under faults (issue 18): a release that races a waiter's queueing costs no read,
//! a waiter whose watch breaks keeps looking, and a handover its recipient does not see passes
//! on. Every process of a test has its own client; time runs on Tokio's paused clock, which
//! the lockers' clocks follow.

use std::sync::Arc;
use std::time::Duration;

use lockheed::clock::TokioClock;
use lockheed::testing::{FakeApiServer, Fault, RequestMatcher, Verb};
use lockheed::{KubeLocker, Lock, Locker as _};

const SECOND: Duration = Duration::from_secs(1);
const MS: Duration = Duration::from_millis(1);

/// A locker with its own client (another process), on the wall clock every process of the
/// test shares.
fn process(server: &FakeApiServer, token: &str) -> KubeLocker {
    thread_local! {
        static CLOCK: Arc<TokioClock> = Arc::new(TokioClock::new());
    }
    KubeLocker::new(server.client_for_token(token), "default").with_clock(CLOCK.with(Arc::clone))
}

/// Who waits for lock `name`, as another process reads it.
async fn waiters(server: &FakeApiServer, name: &str) -> Vec<String> {
    let info = process(server, "observer")
        .get(name)
        .await
        .unwrap()
        .unwrap();
    info.waiters.into_iter().map(|w| w.id).collect()
}

/// `holder`'s lock `name` in its own process, with 30 s leases.
fn lock(server: &FakeApiServer, name: &str, holder: &str) -> Lock<KubeLocker> {
    Lock::new(name, process(server, holder))
        .with_holder(holder)
        .with_duration(30 * SECOND)
}

/// The holder's watch is slow to come back after a close, so its view of the lock still lacks
/// the place a waiter just took when it releases: its write is refused. The watch then
/// delivers the waiter's write, and the release is decided again on that, handing the lock
/// over, without reading the lock (the old code read it: one GET more per race).
#[tokio::test(start_paused = true)]
async fn a_release_that_meets_a_newer_queue_write_does_not_read_the_lock() {
    let server = FakeApiServer::start().await.unwrap();
    // Taken by a waiting acquire, so that the holder's process watches the lock.
    let held = lock(&server, "race", "holder").acquire().await.unwrap();
    server.inject(
        Fault::latency(50 * MS)
            .always()
            .on(RequestMatcher::any().token("holder").verb(Verb::Watch)),
    );
    server.close_watches();
    let waiter = lock(&server, "race", "waiter");
    let waiter = tokio::spawn(async move { waiter.acquire().await });
    // The waiter has queued; the holder's watch is not back yet.
    tokio::time::sleep(10 * MS).await;
    assert_eq!(waiters(&server, "race").await, ["waiter"]);
    server.reset_counters();
    held.release().await.unwrap();
    let counts = server.counts();
    assert_eq!(
        counts.get(Verb::Get),
        0,
        "the release read the lock: {counts:?}"
    );
    assert_eq!(
        counts.get(Verb::Update),
        2,
        "refused, then handed over: {counts:?}"
    );
    let guard = waiter.await.unwrap().unwrap();
    assert_eq!(guard.token(), 2);
    guard.release().await.unwrap();
}
