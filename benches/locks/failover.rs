//! Scenario 7: leader election, failover after a graceful stop. How long a standby takes to
//! lead once the leader has stepped down and released its Lease, for lockheed's
//! `LeaderElection` on a `LeaseLocker`, client-go's algorithm (transcribed in
//! `tests/locks/client_go.rs`, v0.31, `ReleaseOnCancel`) and kube-lease-manager 0.13.
//!
//! - lockheed: real time. The standby waits in the Lease's queue and is handed the Lease in
//!   the leader's release, which its watch delivers.
//! - client-go: the standby polls every retry period (2 s, jittered up to 4.4 s), so its
//!   delay is its timer: measured on Tokio's paused clock, in a runtime of its own.
//! - kube-lease-manager: 3 s leases (the shortest it allows with slack), real time; the
//!   standby sleeps until the old holder's lease would have ended. Runs side by side.

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

use crate::Mode;
use crate::client_go::{Config, Elector};
use crate::report::{Table, figure, ms, num, percentile};
use crate::served::Served;

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
    leads_a.await.expect("pod-a leads");
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
    seen.wait_for(|l| l.is_some())
        .await
        .expect("pod-b sees a leader");
    // Let the standby take its place in the queue.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stopped = Instant::now();
    stop_a.send(()).expect("pod-a runs");
    let led = leads_b.await.expect("pod-b leads");
    a.await.expect("pod-a's task").expect("pod-a stops cleanly");
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
    assert!(a.acquire(&stop).await, "go-a leads");
    let stop_a = stop.clone();
    let leader = tokio::spawn(async move {
        a.renew(&stop_a).await;
        assert!(a.release().await, "ReleaseOnCancel");
    });
    let mut b = elector("go-b", 1000 + run);
    let (led, leads) = oneshot::channel::<Instant>();
    let standby = tokio::spawn(async move {
        assert!(b.acquire(&CancellationToken::new()).await, "go-b leads");
        let _ = led.send(Instant::now());
    });
    // Stop the leader at some point of the standby's polling.
    tokio::time::sleep(Duration::from_millis(10_000 + 97 * run)).await;
    let stopped = Instant::now();
    stop.cancel();
    leader.await.expect("go-a's task");
    let led = leads.await.expect("go-b leads");
    standby.await.expect("go-b's task");
    led - stopped
}

/// client-go's failovers, each on a Lease of its own, in a paused runtime of their own.
fn client_go_failovers(runs: u64) -> Vec<Duration> {
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .expect("a runtime");
        runtime.block_on(async {
            let server = FakeApiServer::start().await.expect("server starts");
            let clock = Arc::new(TokioClock::new());
            let mut samples = Vec::new();
            for run in 0..runs {
                samples.push(client_go_failover(&server, &clock, run).await);
            }
            samples
        })
    })
    .join()
    .expect("client-go's runs")
}

/// One kube-lease-manager failover on Lease `name`: klm-a leads, klm-b watches, klm-a's
/// channel is dropped (it releases).
async fn kube_lease_manager_failover(server: &FakeApiServer, name: String) -> Duration {
    let manager = |id: &str| {
        LeaseManagerBuilder::new(server.client(), &name)
            .with_identity(id)
            .with_field_manager(format!("kube-lease-manager-{id}"))
            .with_duration(3)
            .with_grace(2)
            .build()
    };
    let (mut a, a_task) = manager("klm-a").await.expect("klm-a").watch().await;
    a.wait_for(|l| *l).await.expect("klm-a leads");
    let (mut b, _b_task) = manager("klm-b").await.expect("klm-b").watch().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let stopped = Instant::now();
    drop(a);
    a_task.await.expect("klm-a's task").expect("klm-a releases");
    b.wait_for(|l| *l).await.expect("klm-b leads");
    stopped.elapsed()
}

pub async fn run(mode: Mode) {
    let (lockheed_runs, client_go_runs, klm_runs) =
        if mode.quick { (10, 5, 2) } else { (50, 20, 4) };
    let server = Served::start().await;
    let client_go = tokio::task::spawn_blocking(move || client_go_failovers(client_go_runs));
    // kube-lease-manager's failovers take seconds each: they run while lockheed's are measured.
    let klm = futures::future::join_all(
        (0..klm_runs).map(|run| kube_lease_manager_failover(&server, format!("klm-{run}"))),
    );
    let lockheed = async {
        let mut samples = Vec::new();
        for run in 0..lockheed_runs {
            samples.push(lockheed_failover(&server, &format!("lockheed-{run}")).await);
        }
        samples
    };
    let (mut lockheed, mut klm) = tokio::join!(lockheed, klm);
    let mut client_go = client_go.await.expect("client-go's thread");

    let mut table = Table::new(
        "7. Leader election: failover after a graceful stop (one standby)",
        &[
            "library",
            "lease",
            "runs",
            "p50",
            "max",
            "time",
            "p50 ÷ lockheed p50",
        ],
    );
    let base = percentile(&mut lockheed, 50.0);
    let mut add = |name: &str, lease: &str, samples: &mut Vec<Duration>, time: &str| {
        let p50 = percentile(samples, 50.0);
        table.row(vec![
            name.to_owned(),
            lease.to_owned(),
            samples.len().to_string(),
            ms(p50),
            ms(*samples.iter().max().expect("samples")),
            time.to_owned(),
            num(p50.as_secs_f64() / base.as_secs_f64()),
        ]);
        p50
    };
    add(
        "lockheed `LeaderElection` on a `LeaseLocker`",
        "15 s",
        &mut lockheed,
        "real",
    );
    let client_go_p50 = add(
        "client-go v0.31 `leaderelection` (transcribed), `ReleaseOnCancel`",
        "15 s",
        &mut client_go,
        "simulated",
    );
    let klm_p50 = add(
        "kube-lease-manager 0.13",
        "3 s (grace 2 s)",
        &mut klm,
        "real",
    );
    table.note(
        "From the moment the leader is told to stop until the standby's work starts. lockheed: \
         the standby queued 200 ms before; the leader's release hands it the Lease. client-go: \
         the standby polls every 2 s plus up to 120 % jitter; measured on a paused clock, where \
         only its timers take time. kube-lease-manager: the standby sleeps until the lease it \
         saw would have ended (its shortest workable lease here).",
    );
    table.print();
    figure("failover.lockheed.p50_ms", base.as_secs_f64() * 1e3, "ms");
    figure(
        "failover.client_go.p50_ms",
        client_go_p50.as_secs_f64() * 1e3,
        "ms",
    );
    figure(
        "failover.kube_lease_manager.p50_ms",
        klm_p50.as_secs_f64() * 1e3,
        "ms",
    );
}
