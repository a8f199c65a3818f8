//! What each lock operation costs in API requests: a deterministic count, so a test.

use std::sync::Arc;
use std::time::Duration;

use lockheed::clock::TokioClock;
use lockheed::testing::Verb;
use lockheed::{KubeLocker, Lock};

#[tokio::test(start_paused = true)]
async fn one_read_and_one_write_per_state_change() {
    let cluster = crate::harness::cluster().await;
    let locker = KubeLocker::new(cluster.client(), cluster.namespace())
        .with_clock(Arc::new(TokioClock::new()));
    let lock = Lock::new("counted", locker)
        .with_duration(Duration::from_secs(30))
        .with_renew_interval(Duration::from_secs(10));

    // A lock that does not exist yet: a read (404) and a create.
    cluster.reset_counters();
    let guard = lock.try_acquire().await.unwrap();
    let counts = cluster.counts();
    assert_eq!(
        (
            counts.get(Verb::Get),
            counts.get(Verb::Create),
            counts.total()
        ),
        (1, 1, 2)
    );
    cluster.reset_counters();
    guard.release().await.unwrap();
    assert_eq!(cluster.counts().get(Verb::Update), 1);
    assert_eq!(cluster.counts().total(), 1, "release: one write");

    // An existing lock, uncontended: a read and a compare-and-swap.
    cluster.reset_counters();
    let guard = lock.try_acquire().await.unwrap();
    let counts = cluster.counts();
    assert_eq!(
        (
            counts.get(Verb::Get),
            counts.get(Verb::Update),
            counts.total()
        ),
        (1, 1, 2)
    );

    // Each renewal is one write.
    cluster.reset_counters();
    tokio::time::sleep(Duration::from_secs(35)).await;
    let counts = cluster.counts();
    assert_eq!(
        counts.get(Verb::Update),
        3,
        "renewals in 5-10 s, then 10 s apart"
    );
    assert_eq!(counts.total(), 3);
    assert!(!guard.is_lost());

    cluster.reset_counters();
    guard.release().await.unwrap();
    assert_eq!(cluster.counts().total(), 1);
}

/// Locks taken together do not renew together: each lease's first renewal comes at a random
/// point of the renew interval's second half, and the next ones every interval after it.
#[tokio::test(start_paused = true)]
async fn locks_taken_together_renew_apart() {
    let cluster = crate::harness::cluster().await;
    let locker = KubeLocker::new(cluster.client(), cluster.namespace())
        .with_clock(Arc::new(TokioClock::new()));
    let started = tokio::time::Instant::now();
    let mut guards = Vec::new();
    for i in 0..64 {
        let lock = Lock::new(format!("spread-{i}"), locker.clone())
            .with_duration(Duration::from_secs(30))
            .with_renew_interval(Duration::from_secs(10));
        guards.push(lock.try_acquire().await.unwrap());
    }
    let taken = started.elapsed();
    assert!(taken < Duration::from_secs(1), "taking them took {taken:?}");
    let mut leases = Vec::new();
    for guard in &guards {
        leases.push(guard.expires().await);
    }
    let renewed = |now: &[Option<chrono::DateTime<chrono::Utc>>]| {
        now.iter().zip(&leases).filter(|(a, b)| a != b).count()
    };
    let expiries = || async {
        let mut now = Vec::new();
        for guard in &guards {
            now.push(guard.expires().await);
        }
        now
    };

    cluster.reset_counters();
    tokio::time::sleep_until(started + Duration::from_millis(4_990)).await;
    assert_eq!(
        renewed(&expiries().await),
        0,
        "none before half the interval"
    );
    assert_eq!(cluster.counts().total(), 0);

    tokio::time::sleep_until(started + Duration::from_millis(7_500)).await;
    let halfway = renewed(&expiries().await);
    assert!(
        (1..64).contains(&halfway),
        "{halfway} of 64 renewed at three quarters of the interval: they should be spread"
    );

    tokio::time::sleep_until(started + taken + Duration::from_millis(10_010)).await;
    assert_eq!(renewed(&expiries().await), 64, "all within one interval");
    assert_eq!(cluster.counts().get(Verb::Update), 64, "once each");
    assert_eq!(cluster.counts().total(), 64);
}
