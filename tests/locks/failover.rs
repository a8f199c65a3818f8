//! Failover after a graceful stop, side by side on the fake API server: how long a standby
//! takes to lead once the leader has stepped down and released its Lease.
//!
//! - lockheed: `LeaderElection` on a `LeaseLocker`, in real time. The standby waits in the
//!   Lease's queue and is woken by the watch (or handed the Lease in the leader's release).
//! - client-go (its algorithm, transcribed in `client_go.rs`; `ReleaseOnCancel`): the standby
//!   polls every retry period (2 s, jittered up to 4.4 s). Its delay is its timer, so it is
//!   measured on Tokio's paused clock, in a runtime of its own.
//! - kube-lease-manager 0.13 (3 s leases, the shortest it allows with slack): the standby
//!   sleeps until the old holder's lease would have ended. Real time; a few runs in parallel.
//!
//! The figures are printed (run with `--nocapture`); the test checks that lockheed's median
//! is under 50 ms and below the others'.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use kube_lease_manager::LeaseManagerBuilder;
use lockheed::clock::TokioClock;
use lockheed::election::LeaderElection;
use lockheed::testing::FakeApiServer;
use lockheed::{LeaseLocker, Lock};
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::client_go::{Config, Elector};

const LOCKHEED_RUNS: usize = 20;
const CLIENT_GO_RUNS: usize = 20;
const KUBE_LEASE_MANAGER_RUNS: usize = 3;

/// The median and the largest of `samples`.
fn summary(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort_unstable();
    (samples[samples.len() / 2], samples[samples.len() - 1])
}

/// One lockheed failover on Lease `name`: pod-a leads, pod-b campaigns, pod-a shuts down.
async fn lockheed_failover(server: &FakeApiServer, name: &str) -> Duration {
    let election = |pod: &str| {
        let locker = LeaseLocker::new(server.client(), "default");
        LeaderElection::new(Lock::new(name, locker).with_holder(pod))
    };
    let (stop_a, stopped_a) = oneshot::channel::<()>();
    let (led_a, leads_a) = oneshot::channel::<()>();
    let mut led_a = Some(led_a);
    let a = tokio::spawn(election("pod-a").run(
        async {
            let _ = stopped_a.await;
        },
        move |term| {
            if let Some(led) = led_a.take() {
                let _ = led.send(());
            }
            term.ended()
        },
    ));
    leads_a.await.unwrap();
    let b = election("pod-b");
    let mut seen = b.leader();
    let (led_b, leads_b) = oneshot::channel::<Instant>();
    let mut led_b = Some(led_b);
    let b = tokio::spawn(b.run(std::future::pending(), move |term| {
        if let Some(led) = led_b.take() {
            let _ = led.send(Instant::now());
        }
        term.ended()
    }));
    seen.wait_for(|l| l.is_some()).await.unwrap();
    // Let the standby take its place in the queue.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stopped = Instant::now();
    stop_a.send(()).unwrap();
    let led = leads_b.await.unwrap();
    a.await.unwrap().unwrap();
    b.abort();
    led - stopped
}

/// One client-go failover (paused clock): go-a leads and renews, go-b campaigns, go-a stops
/// and releases. Returns the simulated delay until go-b leads.
async fn client_go_failover(server: &FakeApiServer, clock: &Arc<TokioClock>, run: u64) -> Duration {
    let name = format!("client-go-{run}");
    let api = || Api::<Lease>::namespaced(server.client(), "default");
    let elector = |id: &str, seed: u64| {
        Elector::new(api(), &name, Config::new(id), clock.clone()).with_seed(seed)
    };
    let mut a = elector("go-a", run);
    let stop = CancellationToken::new();
    assert!(a.acquire(&stop).await);
    let stop_a = stop.clone();
    let leader = tokio::spawn(async move {
        a.renew(&stop_a).await;
        assert!(a.release().await, "ReleaseOnCancel");
    });
    let mut b = elector("go-b", 1000 + run);
    let (led, leads) = oneshot::channel::<Instant>();
    let standby = tokio::spawn(async move {
        assert!(b.acquire(&CancellationToken::new()).await);
        let _ = led.send(Instant::now());
    });
    // Stop the leader at some point of the standby's polling.
    tokio::time::sleep(Duration::from_millis(10_000 + 97 * run)).await;
    let stopped = Instant::now();
    stop.cancel();
    leader.await.unwrap();
    let led = leads.await.unwrap();
    standby.await.unwrap();
    led - stopped
}

/// client-go's failovers, each on a Lease of its own, in a paused runtime of their own.
fn client_go_failovers() -> Vec<Duration> {
    std::thread::spawn(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        runtime.block_on(async {
            let server = FakeApiServer::start().await.unwrap();
            let clock = Arc::new(TokioClock::new());
            let mut samples = Vec::new();
            for run in 0..CLIENT_GO_RUNS as u64 {
                samples.push(client_go_failover(&server, &clock, run).await);
            }
            samples
        })
    })
    .join()
    .unwrap()
}

/// One kube-lease-manager failover on Lease `name`: klm-a leads, klm-b watches, klm-a's
/// channel is dropped (it releases).
async fn kube_lease_manager_failover(server: Arc<FakeApiServer>, name: String) -> Duration {
    let manager = |id: &str| {
        LeaseManagerBuilder::new(server.client(), &name)
            .with_identity(id)
            .with_field_manager(format!("kube-lease-manager-{id}"))
            .with_duration(3)
            .with_grace(2)
            .build()
    };
    let (mut a, a_task) = manager("klm-a").await.unwrap().watch().await;
    a.wait_for(|l| *l).await.unwrap();
    let (mut b, _b_task) = manager("klm-b").await.unwrap().watch().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let stopped = Instant::now();
    drop(a);
    a_task.await.unwrap().unwrap();
    b.wait_for(|l| *l).await.unwrap();
    stopped.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_after_a_graceful_stop_side_by_side() {
    let server = Arc::new(FakeApiServer::start().await.unwrap());
    let klm: Vec<_> = (0..KUBE_LEASE_MANAGER_RUNS)
        .map(|run| {
            let name = format!("kube-lease-manager-{run}");
            tokio::spawn(kube_lease_manager_failover(Arc::clone(&server), name))
        })
        .collect();
    let client_go = tokio::task::spawn_blocking(client_go_failovers);
    let mut lockheed = Vec::new();
    for run in 0..LOCKHEED_RUNS {
        lockheed.push(lockheed_failover(&server, &format!("lockheed-{run}")).await);
    }
    let mut klm_samples = Vec::new();
    for run in klm {
        klm_samples.push(run.await.unwrap());
    }
    let (lockheed, client_go, klm) = (
        summary(lockheed),
        summary(client_go.await.unwrap()),
        summary(klm_samples),
    );
    eprintln!("failover after a graceful stop, on the fake API server (median / largest):");
    eprintln!(
        "  lockheed (watch)               {:>10.1?} / {:>10.1?}  {LOCKHEED_RUNS} runs, real time",
        lockheed.0, lockheed.1
    );
    eprintln!(
        "  client-go v0.31 (2 s retries)  {:>10.1?} / {:>10.1?}  {CLIENT_GO_RUNS} runs, simulated time",
        client_go.0, client_go.1
    );
    eprintln!(
        "  kube-lease-manager 0.13 (3 s)  {:>10.1?} / {:>10.1?}  {KUBE_LEASE_MANAGER_RUNS} runs, real time",
        klm.0, klm.1
    );
    assert!(
        lockheed.0 < Duration::from_millis(50),
        "lockheed: {lockheed:?}"
    );
    assert!(lockheed.0 < client_go.0, "client-go: {client_go:?}");
    assert!(lockheed.0 < klm.0, "kube-lease-manager: {klm:?}");
}
