//! The cost of sharing a Lease with client-go that the transcription of client-go showed
//! (`tests/locks/lease_interop.rs`), measured with the real client-go: a lockheed waiter
//! behind a client-go leader must not make that leader's graceful release fail, so that the
//! waiter leads within client-go's release plus one watch event, never a lease duration later.
//!
//! client-go up to v0.33 releases with the Lease object it last wrote (no read first): any
//! write to the Lease since its last renewal makes that release a 409, and then the Lease is
//! taken only once it expires. v0.34 to v0.36 read the Lease before releasing (a write between
//! that read and the release still conflicts), and v0.37 also retries a conflict. v0.33.13 (the
//! last of Kubernetes 1.33) and v0.37.2 (the control plane's) are run.

use std::time::Duration;

use chrono::Utc;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use lockheed::testing::TestCluster;
use lockheed::{LeaseLocker, Lock};

use super::peers::{self, Kind, Log, Spec};

const LEASE: &str = "controller";

/// client-go's default timings (15 s, 10 s, 2 s): an expiry would show as 15 s.
async fn failover_after_a_queued_waiter(program: &str) {
    let test = format!("a {program} leader's release with a lockheed waiter behind it");
    if !peers::control_plane(&test) {
        return;
    }
    let cluster = TestCluster::real().await.unwrap();
    let ns = cluster.namespace().to_owned();
    let logs = tempfile::tempdir().unwrap();
    let log = Log::new();
    let spec = Spec {
        id: "go-leader".into(),
        kind: Kind::ClientGo,
        program: program.into(),
        namespace: ns.clone(),
        lease: LEASE.into(),
        lease_seconds: 15,
        renew_deadline: Duration::from_secs(10),
        retry_period: Duration::from_secs(2),
        coordinated: false,
    };
    let go = peers::start(&spec, &log, logs.path());
    log.wait(0, Duration::from_secs(30), |e| e.event == "started_leading")
        .await
        .expect("the client-go replica leads an empty Lease");

    // Right after one of the leader's renewals (every 2 s), so that the next one cannot come
    // between the waiter's first decision and the release.
    let api = Api::<Lease>::namespaced(cluster.client(), &ns);
    let renewed = |lease: Lease| lease.spec.and_then(|s| s.renew_time);
    let first = renewed(api.get(LEASE).await.unwrap());
    for _ in 0..250 {
        if renewed(api.get(LEASE).await.unwrap()) != first {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let lock = Lock::new(LEASE, LeaseLocker::new(cluster.client(), &ns))
        .with_holder("rust-waiter")
        .with_duration(Duration::from_secs(15));
    let waiter = tokio::spawn(async move {
        let guard = lock.acquire().await.unwrap();
        (Utc::now(), guard)
    });
    // Until the waiter has made its first decision: its place in the queue, if it writes one,
    // is in the Lease (the conflict needs nothing more), or half a second.
    let mut queued = false;
    for _ in 0..50 {
        let lease = api.get(LEASE).await.unwrap();
        let annotations = lease.metadata.annotations.unwrap_or_default();
        if annotations.contains_key(lockheed::lease::QUEUE_ANNOTATION) {
            queued = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stopped = Utc::now();
    go.stop().await;
    let (led, guard) = tokio::time::timeout(Duration::from_secs(40), waiter)
        .await
        .expect("the waiter leads within 40 s")
        .unwrap();
    let failover = (led - stopped).to_std().unwrap_or_default();
    let released = log
        .events()
        .into_iter()
        .find(|e| e.event == "released")
        .expect("the client-go leader released");
    let version = log
        .events()
        .into_iter()
        .find_map(|e| e.client_go)
        .unwrap_or_default();
    assert_eq!(
        program.strip_prefix("leaderelection-"),
        Some(version.as_str())
    );
    eprintln!(
        "{program}: graceful stop of the client-go leader -> lockheed waiter leads: {failover:?} \
         (the waiter's place in the Lease: {queued}; release ok: {:?}{})",
        released.ok,
        released
            .error
            .as_ref()
            .map(|e| format!(", {e}"))
            .unwrap_or_default()
    );
    guard.release().await.unwrap();
    assert_eq!(
        released.ok,
        Some(true),
        "{program}'s release failed: {:?}",
        released.error
    );
    // client-go's release plus one watch event, on a loaded 2-core machine: far below the 15 s
    // the lease would take to expire.
    assert!(
        failover < Duration::from_secs(3),
        "{program}: the waiter led {failover:?} after the leader stopped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_go_v0_33_releases_to_a_queued_lockheed_waiter_at_once() {
    failover_after_a_queued_waiter("leaderelection-v0.33.13").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_go_v0_37_releases_to_a_queued_lockheed_waiter_at_once() {
    failover_after_a_queued_waiter("leaderelection-v0.37.2").await;
}
