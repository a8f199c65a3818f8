//! Faults on the real engine: kube-apiserver and etcd killed, stopped and restarted (through
//! the control socket of `scripts/control-plane`) while eight contender processes take, hold
//! and release one lock; each run's history is checked by `lockheed::testing::history`.
//!
//! The tests need the control plane: outside `scripts/control-plane` they say so and return;
//! inside it, a control socket that does not answer fails them. The test of a 3-member etcd
//! cluster needs `--etcd-members 3`:
//!
//! ```sh
//! scripts/control-plane -- cargo test --all-features --test faults
//! scripts/control-plane --etcd-members 3 -- cargo test --all-features --test faults three_members
//! ```
//!
//! They run in real time (a multi-threaded runtime, the system clock): the processes are
//! real, and so are the faults. They take their turns (one fault at a time on the one control
//! plane), and have a binary of their own, so that no other test runs while kube-apiserver is
//! down.
#![cfg(feature = "testing")]

mod contender;
mod control;
mod run;

use std::time::Duration;

use contender::Kind;
use control::ControlPlane;
use run::{Contenders, LEASE, checked, run};

/// One fault at a time: the control plane is shared by the tests of this binary.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// kube-apiserver is SIGKILLed while the contenders work, and started again a second later
/// (on the same port, with the same etcd): connections are refused, then work resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apiserver_killed_and_restarted() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let Some(control) = ControlPlane::needed("apiserver_killed_and_restarted", 1).await else {
        return;
    };
    let figures = run(
        "apiserver killed",
        Contenders::careful(Kind::Mutex),
        &control,
        async |control| {
            control.request("kill apiserver").await;
            tokio::time::sleep(Duration::from_secs(1)).await;
            control.request("start apiserver").await;
        },
    )
    .await;
    checked(&figures);
}

/// kube-apiserver is SIGSTOPped for longer than a lease, then continued: it accepts
/// connections but answers nothing meanwhile; holders must give the lock up before their
/// leases end, and what was sent before the stop is answered after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apiserver_stopped_longer_than_a_lease() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let Some(control) = ControlPlane::needed("apiserver_stopped_longer_than_a_lease", 1).await
    else {
        return;
    };
    let figures = run(
        "apiserver stopped",
        Contenders::careful(Kind::Mutex),
        &control,
        async |control| {
            control.request("stop apiserver").await;
            tokio::time::sleep(LEASE + Duration::from_secs(2)).await;
            control.request("cont apiserver").await;
        },
    )
    .await;
    checked(&figures);
}

/// etcd (of one member) is SIGKILLed and started again two seconds later, with its data:
/// kube-apiserver's requests fail meanwhile, and its watches resume.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_restarted() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let Some(control) = ControlPlane::needed("etcd_restarted", 1).await else {
        return;
    };
    let figures = run(
        "etcd restarted",
        Contenders::careful(Kind::Semaphore(3)),
        &control,
        async |control| {
            control.request("kill etcd-0").await;
            tokio::time::sleep(Duration::from_secs(2)).await;
            control.request("start etcd-0").await;
        },
    )
    .await;
    checked(&figures);
}

/// The checker has teeth on the real engine: a contender that goes on working when `lost()`
/// fires, through a kube-apiserver stopped for longer than its lease, runs beside the
/// contender that takes the lock over after the lease ended, and the history says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_that_ignores_lost_is_caught() {
    use lockheed::testing::history::Violation;

    let _turn = ONE_AT_A_TIME.lock().await;
    let Some(control) = ControlPlane::needed("a_holder_that_ignores_lost_is_caught", 1).await
    else {
        return;
    };
    let contenders = Contenders {
        kind: Kind::Mutex,
        count: 2,
        careless: 1,
    };
    let figures = run("careless holder", contenders, &control, async |control| {
        control.request("stop apiserver").await;
        tokio::time::sleep(LEASE + Duration::from_secs(2)).await;
        control.request("cont apiserver").await;
    })
    .await;
    println!("{figures}");
    let violations = &figures.report.violations;
    assert!(
        violations
            .iter()
            .any(|v| matches!(v, Violation::Overlap { first, .. } if first.holder == "p0")),
        "{violations:#?}"
    );
    assert!(
        violations.iter().any(
            |v| matches!(v, Violation::OutsideLease { section, .. } if section.holder == "p0")
        ),
        "{violations:#?}"
    );
}

/// Faults of a 3-member etcd cluster (`--etcd-members 3`).
mod three_members {
    use super::*;

    /// The etcd leader is killed (the two others elect a new one and writes go on), then a
    /// second member (quorum lost: writes hang), for longer than a lease; then both are
    /// started again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn etcd_leader_killed_then_quorum_lost_and_regained() {
        let _turn = ONE_AT_A_TIME.lock().await;
        let Some(control) =
            ControlPlane::needed("etcd_leader_killed_then_quorum_lost_and_regained", 3).await
        else {
            return;
        };
        let figures = run(
            "etcd quorum lost",
            Contenders::careful(Kind::ReadWrite),
            &control,
            async |control| {
                let leader = control.etcd_leader().await;
                control.request(&format!("kill {leader}")).await;
                tokio::time::sleep(Duration::from_secs(2)).await;
                let second = (0..control.etcd_members)
                    .map(|i| format!("etcd-{i}"))
                    .find(|member| *member != leader)
                    .expect("another member");
                control.request(&format!("kill {second}")).await;
                tokio::time::sleep(LEASE + Duration::from_secs(1)).await;
                control.request(&format!("start {leader}")).await;
                control.request(&format!("start {second}")).await;
            },
        )
        .await;
        checked(&figures);
    }
}

/// The commit log on a real cluster (`TestCluster::record_commits`) misses nothing when
/// kube-apiserver is killed and restarted under a writer that writes as fast as it can: a
/// commit made just before the kill, whose watch event was never sent, and the commits made
/// before the log's watches are back, are read back from etcd. Each write increments a counter,
/// so the log must hold every value, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_commit_log_loses_nothing_across_an_apiserver_restart() {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::{Api, PostParams};
    use lockheed::clock::SystemClock;
    use lockheed::testing::TestCluster;

    let _turn = ONE_AT_A_TIME.lock().await;
    let Some(control) = ControlPlane::needed(
        "the_commit_log_loses_nothing_across_an_apiserver_restart",
        1,
    )
    .await
    else {
        return;
    };
    let cluster = TestCluster::real().await.expect("a namespace");
    cluster
        .record_commits(std::sync::Arc::new(SystemClock))
        .await
        .expect("the commit log is recorded");
    let api: Api<ConfigMap> = Api::namespaced(cluster.client(), cluster.namespace());
    let mut counter = ConfigMap::default();
    counter.metadata.name = Some("counter".into());
    counter.data = Some([("n".to_owned(), "0".to_owned())].into());
    api.create(&PostParams::default(), &counter).await.unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let writer = tokio::spawn({
        let (api, stop) = (api.clone(), stop.clone());
        async move {
            let mut written = 0_u64;
            while !stop.is_cancelled() {
                let Ok(mut current) = api.get("counter").await else {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                };
                let data = current.data.get_or_insert_default();
                let n: u64 = data["n"].parse().unwrap();
                data.insert("n".into(), (n + 1).to_string());
                if api
                    .replace("counter", &PostParams::default(), &current)
                    .await
                    .is_ok()
                {
                    written += 1;
                }
            }
            written
        }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    control.request("kill apiserver").await;
    control.request("start apiserver").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.cancel();
    let written = writer.await.unwrap();
    let last: u64 = api.get("counter").await.unwrap().data.unwrap()["n"]
        .parse()
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let counted = loop {
        let counted: Vec<u64> = cluster
            .commits()
            .iter()
            .filter(|c| c.name == "counter")
            .map(|c| c.object["data"]["n"].as_str().unwrap().parse().unwrap())
            .collect();
        if counted.last() == Some(&last) || tokio::time::Instant::now() > deadline {
            break counted;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    println!(
        "commit log across a restart: {} commits, {written} writes answered, {} gaps",
        counted.len(),
        cluster.commit_gaps()
    );
    assert_eq!(counted, (0..=last).collect::<Vec<_>>());
    assert_eq!(cluster.commit_gaps(), 0);
}
