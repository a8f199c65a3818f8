//! `--lease`: `lockheed run`, `list`, `show` and `release` on coordination.k8s.io Leases, in
//! client-go's format, next to a Go leader's Lease.

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, PostParams};
use lockheed::{LeaseLocker, Lock};

use super::Running;
use crate::harness::Cluster;

fn leases(cluster: &Cluster) -> Api<Lease> {
    Api::namespaced(cluster.server.client(), cluster.ns())
}

/// Stores Lease `name` as a client-go leader `holder` writes it, renewed just now.
async fn go_leader(cluster: &Cluster, name: &str, holder: &str) {
    let now = chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string();
    let lease: Lease = serde_json::from_value(serde_json::json!({
        "metadata": { "name": name },
        "spec": {
            "holderIdentity": holder,
            "leaseDurationSeconds": 15,
            "acquireTime": now,
            "renewTime": now,
            "leaseTransitions": 3,
        },
    }))
    .expect("a Lease");
    leases(cluster)
        .create(&PostParams::default(), &lease)
        .await
        .expect("the Go leader's Lease is stored");
}

async fn spec(cluster: &Cluster, name: &str) -> serde_json::Value {
    let lease = leases(cluster).get(name).await.expect("the Lease exists");
    serde_json::to_value(lease.spec.expect("a spec")).expect("JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_holds_a_lease_in_client_gos_format_while_the_command_runs() {
    let cluster = Cluster::start().await;
    let script = "echo \"token $LOCKHEED_TOKEN\"; while [ ! -e done ]; do sleep 0.05; done";
    let running = Running::start(
        &cluster,
        &[
            "run", "--lease", "ctl", "--holder", "job-1", "--", "sh", "-c", script,
        ],
    );
    running.wait_for_stdout("token 1").await;
    let held = spec(&cluster, "ctl").await;
    assert_eq!(held["holderIdentity"], "job-1");
    assert_eq!(held["leaseDurationSeconds"], 30);
    assert_eq!(held["leaseTransitions"], 1);
    std::fs::write(cluster.dir.path().join("done"), "").expect("the command is told to end");
    let out = running.finish().await;
    assert_eq!(out.code(), Some(0), "{out:?}");
    // Released as client-go's ReleaseOnCancel releases.
    let released = spec(&cluster, "ctl").await;
    assert_eq!(released["holderIdentity"], "");
    assert_eq!(released["leaseDurationSeconds"], 1);
    assert_eq!(released["leaseTransitions"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_does_not_take_a_lease_a_go_leader_holds() {
    let cluster = Cluster::start().await;
    go_leader(&cluster, "ctl", "controller-abc").await;
    let out = cluster
        .run(
            "lockheed",
            &["run", "--lease", "ctl", "--timeout", "0s", "--", "true"],
        )
        .await;
    assert_eq!(out.code(), Some(125), "{out:?}");
    assert!(out.stderr.contains("controller-abc"), "{out:?}");
    assert_eq!(
        spec(&cluster, "ctl").await["holderIdentity"],
        "controller-abc"
    );
    // What a Lease cannot keep is refused before any request.
    let out = cluster
        .run(
            "lockheed",
            &["run", "--lease", "gpu", "--max-holders", "2", "--", "true"],
        )
        .await;
    assert_eq!(out.code(), Some(125), "{out:?}");
    assert!(out.stderr.contains("a Lease has one holder"), "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_show_and_release_work_on_leases() {
    let cluster = Cluster::start().await;
    go_leader(&cluster, "go-ctl", "controller-abc").await;
    let locker = LeaseLocker::new(cluster.server.client(), cluster.ns());
    let _held = Lock::new("rust-ctl", locker)
        .with_holder("pod-1")
        .with_tags(["ctl"])
        .try_acquire()
        .await
        .expect("pod-1 takes rust-ctl");
    let out = cluster
        .run("lockheed", &["list", "--lease", "-o", "json"])
        .await;
    assert_eq!(out.code(), Some(0), "{out:?}");
    let json: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON");
    let holders: Vec<(&str, &str)> = json["locks"]
        .as_array()
        .expect("locks")
        .iter()
        .map(|l| {
            (
                l["name"].as_str().unwrap(),
                l["holders"][0]["id"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        holders,
        [("go-ctl", "controller-abc"), ("rust-ctl", "pod-1")]
    );
    let out = cluster
        .run("lockheed", &["show", "--lease", "go-ctl"])
        .await;
    assert_eq!(out.code(), Some(0), "{out:?}");
    assert!(
        out.stdout
            .contains(&format!("go-ctl (Lease {}/go-ctl)", cluster.ns())),
        "{out:?}"
    );
    assert!(out.stdout.contains("controller-abc"), "{out:?}");
    // An operator removes the Go leader (say its node died): client-go's release record.
    let out = cluster
        .run(
            "lockheed",
            &["release", "--lease", "go-ctl", "--holder", "controller-abc"],
        )
        .await;
    assert_eq!(out.code(), Some(0), "{out:?}");
    assert!(out.stdout.contains("controller-abc"), "{out:?}");
    let released = spec(&cluster, "go-ctl").await;
    assert_eq!(released["holderIdentity"], "");
    assert_eq!(released["leaseTransitions"], 3);
    let out = cluster
        .run("lockheed", &["show", "--lease", "nothing"])
        .await;
    assert_eq!(out.code(), Some(125), "{out:?}");
    assert!(
        out.stderr
            .contains(&format!("there is no Lease {}/nothing", cluster.ns())),
        "{out:?}"
    );
}
