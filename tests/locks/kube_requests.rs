//! What each lock operation costs in API requests: a deterministic count, so a test.

use std::sync::Arc;
use std::time::Duration;

use lockheed::clock::TokioClock;
use lockheed::testing::{FakeApiServer, Verb};
use lockheed::{KubeLocker, Lock};

#[tokio::test(start_paused = true)]
async fn one_read_and_one_write_per_state_change() {
    let server = FakeApiServer::start().await.unwrap();
    let locker =
        KubeLocker::new(server.client(), "default").with_clock(Arc::new(TokioClock::new()));
    let lock = Lock::new("counted", locker)
        .with_duration(Duration::from_secs(30))
        .with_renew_interval(Duration::from_secs(10));

    // A lock that does not exist yet: a read (404) and a create.
    server.reset_counters();
    let guard = lock.try_acquire().await.unwrap();
    let counts = server.counts();
    assert_eq!(
        (
            counts.get(Verb::Get),
            counts.get(Verb::Create),
            counts.total()
        ),
        (1, 1, 2)
    );
    server.reset_counters();
    guard.release().await.unwrap();
    assert_eq!(server.counts().get(Verb::Update), 1);
    assert_eq!(server.counts().total(), 1, "release: one write");

    // An existing lock, uncontended: a read and a compare-and-swap.
    server.reset_counters();
    let guard = lock.try_acquire().await.unwrap();
    let counts = server.counts();
    assert_eq!(
        (
            counts.get(Verb::Get),
            counts.get(Verb::Update),
            counts.total()
        ),
        (1, 1, 2)
    );

    // Each renewal is one write.
    server.reset_counters();
    tokio::time::sleep(Duration::from_secs(35)).await;
    let counts = server.counts();
    assert_eq!(counts.get(Verb::Update), 3, "renewals at 10, 20 and 30 s");
    assert_eq!(counts.total(), 3);
    assert!(!guard.is_lost());

    server.reset_counters();
    guard.release().await.unwrap();
    assert_eq!(server.counts().total(), 1);
}
