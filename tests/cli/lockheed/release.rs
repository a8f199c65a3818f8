//! `lockheed release`: refusing without `--holder` or `--all`, and saying what it removed.

use std::time::Duration;

use lockheed::Lock;

use super::{PATIENCE, lock, locker};
use crate::harness::Cluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_without_holder_or_all() {
    let cluster = Cluster::start().await;
    let guard = Lock::new("db", locker(&cluster))
        .with_holder("worker-1")
        .try_acquire()
        .await
        .unwrap();
    let out = cluster.run("lockheed", &["release", "db"]).await;
    assert_eq!(out.code(), Some(125), "{out:?}");
    assert!(out.stderr.contains("--holder <ID>|--all"), "{out:?}");
    let out = cluster
        .run(
            "lockheed",
            &["release", "db", "--holder", "worker-1", "--all"],
        )
        .await;
    assert_eq!(out.code(), Some(125), "{out:?}");
    assert!(lock(&cluster, "db").await.is_held(), "nothing was removed");

    // A holder that does not hold it: an error that says who does.
    let out = cluster
        .run("lockheed", &["release", "db", "--holder", "worker-2"])
        .await;
    assert_eq!(out.code(), Some(125), "{out:?}");
    assert!(
        out.stderr.contains(
            "lock \"db\" has no holder \"worker-2\" (its holders are worker-1): nothing removed"
        ),
        "{out:?}"
    );
    let out = cluster
        .run("lockheed", &["release", "nothing", "--all"])
        .await;
    assert_eq!(out.code(), Some(125), "{out:?}");
    assert!(out.stderr.contains("does not exist"), "{out:?}");
    guard.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removes_a_holder_and_says_so() {
    let cluster = Cluster::start().await;
    let guard = Lock::new("db", locker(&cluster))
        .with_holder("worker-1")
        .with_reason("backup")
        .with_duration(Duration::from_secs(3))
        .with_renew_interval(Duration::from_secs(1))
        .try_acquire()
        .await
        .unwrap();
    let out = cluster
        .run("lockheed", &["release", "db", "--holder", "worker-1"])
        .await;
    assert_eq!(out.code(), Some(0), "{out:?}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines[0], "Removed from lock \"db\":", "{out:?}");
    assert!(
        lines[1].starts_with("  worker-1 (since ") && lines[1].contains(" ago), token 1, "),
        "{out:?}"
    );
    assert!(lines[1].ends_with(", reason \"backup\")"), "{out:?}");
    assert!(!lock(&cluster, "db").await.is_held());
    // The holder finds out at its next renewal.
    tokio::time::timeout(PATIENCE, guard.lost())
        .await
        .expect("the holder sees the lock lost");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_removes_every_holder() {
    let cluster = Cluster::start().await;
    let mut guards = Vec::new();
    for job in ["job-1", "job-2"] {
        let guard = Lock::new("gpu", locker(&cluster))
            .with_holder(job)
            .with_max_holders(2)
            .try_acquire()
            .await
            .unwrap();
        guards.push(guard);
    }
    let out = cluster.run("lockheed", &["release", "gpu", "--all"]).await;
    assert_eq!(out.code(), Some(0), "{out:?}");
    assert!(out.stdout.contains("\n  job-1 (since "), "{out:?}");
    assert!(out.stdout.contains(" ago), token 1, "), "{out:?}");
    assert!(out.stdout.contains("\n  job-2 (since "), "{out:?}");
    assert!(out.stdout.contains(" ago), token 2, "), "{out:?}");
    assert!(!lock(&cluster, "gpu").await.is_held());

    let out = cluster.run("lockheed", &["release", "gpu", "--all"]).await;
    assert_eq!(out.code(), Some(0), "{out:?}");
    assert_eq!(
        out.stdout,
        "Lock \"gpu\" had no holders: nothing removed.\n"
    );
    for guard in guards {
        guard.forget();
    }
}
