//! Feature `metrics`: what the crate records, on the test cluster, with a recorder of the
//! test's own (set for the test's thread: the runtime of a `#[tokio::test]` runs every task
//! there). Counters are exact; histograms are checked for their samples, whose values the
//! paused clock makes exact to a request's time.

use std::sync::Arc;
use std::time::Duration;

use lockheed::clock::TokioClock;
use lockheed::election::LeaderElection;
use lockheed::metrics::{
    ACQUISITIONS, HELD, HOLD_SECONDS, LEADER_STATUS, LOCKS_LOST, RENEWALS_FAILED, WAIT_SECONDS,
};
use lockheed::{Error, KubeLocker, LeaseLocker, Lock};
use metrics::Unit;
use tokio::sync::oneshot;

use crate::harness::{cluster, kube_locker};
use crate::recorder::TestRecorder;

const SECOND: Duration = Duration::from_secs(1);

fn lock(locker: &KubeLocker, holder: &str) -> Lock<KubeLocker> {
    Lock::new("db", locker.clone()).with_holder(holder)
}

fn result(result: &str) -> [(&str, &str); 2] {
    [("lock", "db"), ("result", result)]
}

/// Asserts that `samples` holds one sample per range, in order.
fn assert_samples(samples: &[f64], ranges: &[std::ops::Range<f64>]) {
    assert_eq!(samples.len(), ranges.len(), "{samples:?}");
    for (sample, range) in samples.iter().zip(ranges) {
        assert!(range.contains(sample), "{sample} not in {range:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn acquisitions_waits_and_holds_are_recorded_by_lock_and_result() {
    let recorder = TestRecorder::default();
    let _local = metrics::set_default_local_recorder(&recorder);
    let cluster = cluster().await;
    let locker = kube_locker(&cluster, cluster.client());
    let db = [("lock", "db")];

    let a = lock(&locker, "a").try_acquire().await.unwrap();
    assert_eq!(recorder.gauge(HELD, &db), Some(1.0));
    let err = lock(&locker, "b").try_acquire().await.unwrap_err();
    assert!(err.is_held());
    let err = lock(&locker, "b")
        .acquire_timeout(SECOND)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    let err = lock(&locker, "b").with_max_holders(0).try_acquire().await;
    assert!(matches!(err, Err(Error::InvalidConfig { .. })));

    // c waits 3 s while a holds the lock, then is handed it.
    let waiter = lock(&locker, "c");
    let c = tokio::spawn(async move { waiter.acquire().await });
    tokio::time::sleep(3 * SECOND).await;
    a.release().await.unwrap();
    let c = c.await.unwrap().unwrap();
    assert_eq!(recorder.gauge(HELD, &db), Some(1.0));
    tokio::time::sleep(2 * SECOND).await;
    drop(c); // a dropped guard's hold ends too
    tokio::task::yield_now().await;

    assert_eq!(recorder.counter(ACQUISITIONS, &result("acquired")), Some(2));
    assert_eq!(recorder.counter(ACQUISITIONS, &result("held")), Some(1));
    assert_eq!(recorder.counter(ACQUISITIONS, &result("timeout")), Some(1));
    assert_eq!(recorder.counter(ACQUISITIONS, &result("error")), Some(1));
    // Only the waiting acquire that took the lock has a wait: not try_acquire, not a timeout.
    assert_samples(&recorder.samples(WAIT_SECONDS, &db), &[3.0..3.5]);
    // a held it from the start until its release (1 s of timeout, 3 s of c's wait); c for 2 s.
    assert_samples(&recorder.samples(HOLD_SECONDS, &db), &[4.0..4.5, 2.0..2.5]);
    assert_eq!(recorder.gauge(HELD, &db), Some(0.0));
    // A lock that was held has its failure counters, at 0.
    assert_eq!(recorder.counter(LOCKS_LOST, &db), Some(0));
    assert_eq!(recorder.counter(RENEWALS_FAILED, &db), Some(0));
    // No other series, and no label but the lock's and the result's.
    assert_eq!(
        recorder.series(),
        [
            "lockheed_acquisitions_total{lock=db,result=acquired}",
            "lockheed_acquisitions_total{lock=db,result=error}",
            "lockheed_acquisitions_total{lock=db,result=held}",
            "lockheed_acquisitions_total{lock=db,result=timeout}",
            "lockheed_held{lock=db}",
            "lockheed_hold_seconds{lock=db}",
            "lockheed_locks_lost_total{lock=db}",
            "lockheed_renewals_failed_total{lock=db}",
            "lockheed_wait_seconds{lock=db}",
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn failed_renewals_and_a_lost_lock_are_counted_once() {
    let recorder = TestRecorder::default();
    let _local = metrics::set_default_local_recorder(&recorder);
    let cluster = cluster().await;
    let locker = kube_locker(&cluster, cluster.client());
    let db = [("lock", "db")];
    let guard = lock(&locker, "a")
        .with_duration(10 * SECOND)
        .with_renew_interval(2 * SECOND)
        .try_acquire()
        .await
        .unwrap();
    tokio::time::sleep(3 * SECOND).await; // a renewal or two succeed
    assert_eq!(recorder.counter(RENEWALS_FAILED, &db), Some(0));

    // The API server is unreachable: renewals fail until the guard gives the lease up, a tenth
    // of the duration before it ends.
    cluster.cut_off();
    tokio::time::timeout(20 * SECOND, guard.lost())
        .await
        .expect("the lock is lost");
    assert!(guard.is_lost() && guard.is_lost());
    cluster.restore();
    let failed = recorder.counter(RENEWALS_FAILED, &db).unwrap();
    assert!(failed >= 2, "renewals failed {failed} times");
    assert_eq!(recorder.counter(LOCKS_LOST, &db), Some(1));
    assert_eq!(recorder.gauge(HELD, &db), Some(0.0));
    // Held from the acquisition until the guard gave up: nine tenths of the lease after its
    // last renewal, which came 1 to 3 s after the acquisition (the first at a random point of
    // the interval's second half).
    assert_samples(&recorder.samples(HOLD_SECONDS, &db), &[10.0..12.0]);
    // Releasing a lost guard neither counts the loss again nor ends another hold.
    let _ = guard.release().await;
    assert_eq!(recorder.counter(LOCKS_LOST, &db), Some(1));
    assert_eq!(recorder.samples(HOLD_SECONDS, &db).len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_lock_taken_over_by_force_is_counted_lost() {
    let recorder = TestRecorder::default();
    let _local = metrics::set_default_local_recorder(&recorder);
    let cluster = cluster().await;
    let locker = kube_locker(&cluster, cluster.client());
    let db = [("lock", "db")];
    let guard = lock(&locker, "a")
        .with_tags(["preemptible"])
        .try_acquire()
        .await
        .unwrap();
    let other = lock(&locker, "b")
        .with_force(lockheed::Condition::tags_contain("preemptible"))
        .try_acquire()
        .await
        .unwrap();
    assert_eq!(recorder.gauge(HELD, &db), Some(2.0)); // both guards believe they hold it
    tokio::time::timeout(20 * SECOND, guard.lost())
        .await
        .expect("a learns it at its next renewal");
    tokio::task::yield_now().await;
    assert_eq!(recorder.counter(LOCKS_LOST, &db), Some(1));
    assert_eq!(recorder.counter(RENEWALS_FAILED, &db), Some(0)); // lost, not failed
    assert_eq!(recorder.gauge(HELD, &db), Some(1.0));
    other.release().await.unwrap();
    drop(guard);
    assert_eq!(recorder.counter(LOCKS_LOST, &db), Some(1));
}

#[tokio::test(start_paused = true)]
async fn leader_status_is_one_while_this_process_leads() {
    let recorder = TestRecorder::default();
    let _local = metrics::set_default_local_recorder(&recorder);
    let cluster = cluster().await;
    let clock = Arc::new(TokioClock::new());
    let election = |pod: &str| {
        let locker =
            LeaseLocker::new(cluster.client(), cluster.namespace()).with_clock(clock.clone());
        let lock = Lock::new("ctl", locker)
            .with_holder(pod)
            .with_duration(15 * SECOND);
        LeaderElection::new(lock)
    };
    let spawn = |election: LeaderElection<LeaseLocker>| {
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown = async {
            let _ = stopped.await;
        };
        let run = tokio::spawn(election.run(shutdown, |term| term.ended()));
        (stop, run)
    };
    let ctl = [("lock", "ctl")];
    let status = || recorder.gauge(LEADER_STATUS, &ctl);

    let (stop_a, run_a) = spawn(election("pod-a"));
    tokio::time::sleep(SECOND).await;
    assert_eq!(status(), Some(1.0));
    // pod-b campaigns in the same process: the series is the process's, still 1.
    let b = election("pod-b");
    let mut b_leader = b.leader();
    let (stop_b, run_b) = spawn(b);
    tokio::time::sleep(SECOND).await;
    assert_eq!(status(), Some(1.0));
    // pod-a steps down, pod-b leads.
    stop_a.send(()).unwrap();
    run_a.await.unwrap().unwrap();
    b_leader
        .wait_for(|l| l.as_ref().is_some_and(|l| l.id == "pod-b"))
        .await
        .unwrap();
    tokio::time::sleep(SECOND).await;
    assert_eq!(status(), Some(1.0));
    // pod-b loses its Lease (the API server is unreachable): 0 until it leads again.
    cluster.cut_off();
    tokio::time::sleep(15 * SECOND).await;
    assert_eq!(status(), Some(0.0));
    assert_eq!(recorder.counter(LOCKS_LOST, &ctl), Some(1));
    cluster.restore();
    tokio::time::sleep(20 * SECOND).await;
    assert_eq!(status(), Some(1.0));
    stop_b.send(()).unwrap();
    run_b.await.unwrap().unwrap();
    assert_eq!(status(), Some(0.0));
    let acquired = [("lock", "ctl"), ("result", "acquired")];
    assert_eq!(recorder.counter(ACQUISITIONS, &acquired), Some(3));
}

#[test]
fn describe_gives_every_metric_its_kind_unit_and_description() {
    let recorder = TestRecorder::default();
    metrics::with_local_recorder(&recorder, lockheed::metrics::describe);
    let described = recorder.described();
    let kinds: Vec<(&str, &str, Option<Unit>)> = described
        .iter()
        .map(|(name, (kind, unit, _))| (name.as_str(), *kind, *unit))
        .collect();
    let count = Some(Unit::Count);
    let seconds = Some(Unit::Seconds);
    assert_eq!(
        kinds,
        [
            (ACQUISITIONS, "counter", count),
            (HELD, "gauge", count),
            (HOLD_SECONDS, "histogram", seconds),
            (LEADER_STATUS, "gauge", None),
            (LOCKS_LOST, "counter", count),
            (RENEWALS_FAILED, "counter", count),
            (WAIT_SECONDS, "histogram", seconds),
        ]
    );
    assert!(described.values().all(|(_, _, text)| text.ends_with('.')));
}
