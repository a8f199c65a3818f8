//! `LeaderElection` on Leases: terms with their tokens, a standby that leads at once when the
//! leader shuts down, work stopped when leadership ends, the current leader as followers see
//! it, a leader giving way to a preferred holder, and the health check of a stuck leader.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, Patch, PatchParams};
use lockheed::clock::TokioClock;
use lockheed::election::{LeaderElection, Term};
use lockheed::testing::TestCluster;
use lockheed::{Error, LeaseLocker, Lock};
use tokio::sync::oneshot;
use tokio::time::Instant;

const SECOND: Duration = Duration::from_secs(1);

struct Cluster {
    cluster: TestCluster,
    clock: Arc<TokioClock>,
}

impl Cluster {
    async fn new() -> Self {
        Self {
            cluster: crate::harness::cluster().await,
            clock: Arc::new(TokioClock::new()),
        }
    }

    /// Replica `pod`'s election for Lease `ctl`, in a process of its own (15 s leases).
    fn election(&self, pod: &str) -> LeaderElection<LeaseLocker> {
        let locker = LeaseLocker::new(self.cluster.client(), self.cluster.namespace())
            .with_clock(self.clock.clone());
        LeaderElection::new(
            Lock::new("ctl", locker)
                .with_holder(pod)
                .with_duration(15 * SECOND),
        )
    }
}

/// What a replica's terms did: (holder, token, started, ended).
type Log = Arc<Mutex<Vec<(String, u64, Instant, Option<Instant>)>>>;

/// Work that logs its term and returns when the term ends.
fn logged(
    log: &Log,
) -> impl FnMut(Term) -> futures::future::BoxFuture<'static, ()> + Send + 'static {
    let log = Arc::clone(log);
    move |term: Term| {
        let log = Arc::clone(&log);
        Box::pin(async move {
            let index = {
                let mut log = log.lock().unwrap();
                log.push((term.holder().to_owned(), term.token(), Instant::now(), None));
                log.len() - 1
            };
            term.ended().await;
            log.lock().unwrap()[index].3 = Some(Instant::now());
        })
    }
}

/// Runs `election` until `stop` fires.
fn spawn(
    election: LeaderElection<LeaseLocker>,
    log: &Log,
) -> (
    oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), Error>>,
) {
    let (stop, stopped) = oneshot::channel::<()>();
    let shutdown = async {
        let _ = stopped.await;
    };
    (stop, tokio::spawn(election.run(shutdown, logged(log))))
}

#[tokio::test(start_paused = true)]
async fn a_standby_leads_within_one_watch_delivery_when_the_leader_shuts_down() {
    let c = Cluster::new().await;
    let log = Log::default();
    let a = c.election("pod-a");
    let a_leader = a.leader();
    let (stop_a, run_a) = spawn(a, &log);
    tokio::time::sleep(SECOND).await;
    let b = c.election("pod-b");
    let mut b_leader = b.leader();
    let b_health = b.health();
    let (stop_b, run_b) = spawn(b, &log);
    // The follower sees who leads (client-go's OnNewLeader), and does not lead.
    b_leader
        .wait_for(|l| {
            l.as_ref()
                .is_some_and(|l| l.id == "pod-a" && l.token == Some(1))
        })
        .await
        .unwrap();
    assert_eq!(a_leader.borrow().as_ref().unwrap().id, "pod-a");
    tokio::time::sleep(30 * SECOND).await;
    assert!(!b_health.is_leading());
    // pod-a shuts down: its work is told, returns, and the Lease is released; pod-b leads at
    // once, with the next token.
    let stopped = Instant::now();
    stop_a.send(()).unwrap();
    b_leader
        .wait_for(|l| l.as_ref().is_some_and(|l| l.id == "pod-b"))
        .await
        .unwrap();
    let failover = stopped.elapsed();
    assert!(failover < Duration::from_millis(100), "{failover:?}");
    run_a.await.unwrap().unwrap();
    assert!(b_health.is_leading());
    {
        let log = log.lock().unwrap();
        let terms: Vec<_> = log.iter().map(|(h, t, _, _)| (h.as_str(), *t)).collect();
        assert_eq!(terms, [("pod-a", 1), ("pod-b", 2)]);
        assert!(log[0].3.is_some(), "pod-a's work saw its term end");
    }
    stop_b.send(()).unwrap();
    run_b.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn work_that_ignores_the_end_of_its_term_is_dropped_after_the_grace_period() {
    let c = Cluster::new().await;
    let dropped = Arc::new(Mutex::new(None));
    struct Dropped(Arc<Mutex<Option<Instant>>>);
    impl Drop for Dropped {
        fn drop(&mut self) {
            *self.0.lock().unwrap() = Some(Instant::now());
        }
    }
    let (stop, stopped) = oneshot::channel::<()>();
    let flag = Arc::clone(&dropped);
    let run = tokio::spawn(c.election("pod-a").with_grace_period(3 * SECOND).run(
        async {
            let _ = stopped.await;
        },
        move |_term| {
            let guard = Dropped(Arc::clone(&flag));
            async move {
                let _guard = guard;
                std::future::pending::<()>().await;
            }
        },
    ));
    tokio::time::sleep(SECOND).await;
    let asked = Instant::now();
    stop.send(()).unwrap();
    run.await.unwrap().unwrap();
    let dropped_after = dropped.lock().unwrap().unwrap() - asked;
    assert!(
        dropped_after >= 3 * SECOND && dropped_after < 4 * SECOND,
        "{dropped_after:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_lost_lease_ends_the_term_and_the_election_campaigns_again() {
    let c = Cluster::new().await;
    let log = Log::default();
    let (stop, run) = spawn(c.election("pod-a"), &log);
    tokio::time::sleep(SECOND).await;
    // The API server is unreachable: renewals fail, and the term ends before the lease does.
    c.cluster.cut_off();
    tokio::time::sleep(20 * SECOND).await;
    {
        let log = log.lock().unwrap();
        let (_, token, started, ended) = log[0].clone();
        assert_eq!(token, 1);
        let lasted = ended.expect("the term ended") - started;
        assert!(
            lasted < 15 * SECOND,
            "the term ended before its lease: {lasted:?}"
        );
    }
    c.cluster.restore();
    // Back online, it campaigns again; its lease ran out meanwhile, so it takes it anew.
    tokio::time::sleep(20 * SECOND).await;
    let terms: Vec<u64> = log.lock().unwrap().iter().map(|t| t.1).collect();
    assert_eq!(terms, [1, 2]);
    stop.send(()).unwrap();
    run.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_leader_gives_way_to_a_preferred_holder() {
    let c = Cluster::new().await;
    let log = Log::default();
    let (stop_a, run_a) = spawn(c.election("pod-a"), &log);
    tokio::time::sleep(SECOND).await;
    let (stop_b, run_b) = spawn(c.election("pod-b"), &log);
    tokio::time::sleep(SECOND).await;
    // A coordinator (Kubernetes' coordinated leader election) prefers pod-b.
    let leases: Api<Lease> = Api::namespaced(c.cluster.client(), c.cluster.namespace());
    let patch = serde_json::json!({
        "spec": { "strategy": "OldestEmulationVersion", "preferredHolder": "pod-b" }
    });
    leases
        .patch("ctl", &PatchParams::default(), &Patch::Merge(patch))
        .await
        .unwrap();
    // pod-a's next renewal (every 5 s) gives way: its term ends, it releases, pod-b leads.
    tokio::time::sleep(6 * SECOND).await;
    let terms: Vec<(String, u64)> = log
        .lock()
        .unwrap()
        .iter()
        .map(|(h, t, _, _)| (h.clone(), *t))
        .collect();
    assert_eq!(terms, [("pod-a".to_owned(), 1), ("pod-b".to_owned(), 2)]);
    // pod-a campaigns again, but pod-b, preferred, keeps the Lease.
    tokio::time::sleep(60 * SECOND).await;
    assert_eq!(log.lock().unwrap().len(), 2);
    stop_a.send(()).unwrap();
    stop_b.send(()).unwrap();
    run_a.await.unwrap().unwrap();
    run_b.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_leader_whose_work_will_not_stop_reports_itself_unhealthy() {
    let c = Cluster::new().await;
    // Work that ignores the end of its term, and a grace period long enough to show it.
    let election = c.election("pod-a").with_grace_period(3600 * SECOND);
    let health = election.health();
    let run =
        tokio::spawn(election.run(std::future::pending(), |_term| std::future::pending::<()>()));
    tokio::time::sleep(SECOND).await;
    assert!(health.is_leading() && health.is_healthy(Duration::ZERO));
    // Renewals fail: the term ends at the guard's give-up point, but the work goes on, and
    // the election is stuck in it; once the lease has run out (15 s after the last renewal)
    // plus the tolerance, the replica says it is unhealthy.
    c.cluster.cut_off();
    tokio::time::sleep(14 * SECOND).await;
    assert!(health.is_healthy(5 * SECOND));
    tokio::time::sleep(10 * SECOND).await;
    assert!(health.is_leading(), "stuck in the term's work");
    assert!(!health.is_healthy(5 * SECOND));
    run.abort();
}

/// A standby that shuts down leaves no place in the Lease's queue behind: `run` returns only
/// once its withdrawal is written, so a process that exits right after it is not handed the
/// Lease by the leader's next release (which would then sit with nobody until it ran out).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_that_shuts_down_withdraws_before_run_returns() {
    use lockheed::lease::QUEUE_ANNOTATION;
    let cluster = crate::harness::cluster().await;
    let leases: Api<Lease> = Api::namespaced(cluster.client(), cluster.namespace());
    let election = |client, pod: &str| {
        let lock = Lock::new("ctl", LeaseLocker::new(client, cluster.namespace()))
            .with_holder(pod)
            .with_duration(15 * SECOND);
        LeaderElection::new(lock)
    };
    let a = election(cluster.client(), "pod-a");
    let mut a_leader = a.leader();
    let (stop_a, stopped_a) = oneshot::channel::<()>();
    let run_a = tokio::spawn(a.run(
        async {
            let _ = stopped_a.await;
        },
        |term| term.ended(),
    ));
    a_leader
        .wait_for(|l| l.as_ref().is_some_and(|l| l.id == "pod-a"))
        .await
        .unwrap();
    // pod-b campaigns in a runtime of its own, as a process would, and exits when `run`
    // returns: dropping the runtime drops whatever it left running in the background.
    let b = election(cluster.client(), "pod-b");
    let (stop_b, stopped_b) = oneshot::channel::<()>();
    let process_b = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let result = runtime.block_on(b.run(
            async {
                let _ = stopped_b.await;
            },
            |term| term.ended(),
        ));
        drop(runtime);
        result
    });
    let queue = || async {
        let lease = leases.get("ctl").await.unwrap();
        let annotations = lease.metadata.annotations.unwrap_or_default();
        annotations
            .get(QUEUE_ANNOTATION)
            .cloned()
            .unwrap_or_default()
    };
    let started = std::time::Instant::now();
    while !queue().await.contains("pod-b") {
        assert!(started.elapsed() < 20 * SECOND, "pod-b never queued");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop_b.send(()).unwrap();
    tokio::task::spawn_blocking(move || process_b.join().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert!(
        !queue().await.contains("pod-b"),
        "pod-b withdrew before exiting"
    );
    // pod-a steps down: the Lease is free, not handed to a replica that is gone.
    stop_a.send(()).unwrap();
    run_a.await.unwrap().unwrap();
    let spec = leases.get("ctl").await.unwrap().spec.unwrap();
    assert_eq!(spec.holder_identity.as_deref().unwrap_or_default(), "");
}
