//! Two replicas of a controller elect a leader on a Lease: only the leader reconciles. The
//! leader steps down, and the standby takes over at once, in a term with the next fencing
//! token.
//!
//! ```text
//! cargo run --features testing --example leader_election
//! ```
//!
//! Each replica runs a kube-runtime `Controller` of ConfigMaps labelled `app=lockheed-demo`
//! only while it leads: `graceful_shutdown_on(term.ended())` stops it when the term ends. The
//! reconciler stamps each ConfigMap with the term's fencing token, as a controller would pass
//! it to what it writes so that a deposed leader's late writes can be refused.
//!
//! With a cluster configured (`KUBECONFIG`, `~/.kube/config`, or running in a pod) it uses
//! that cluster's default namespace (it needs `get`, `create`, `update`, `list` and `watch` on
//! Leases and ConfigMaps, and `patch` on ConfigMaps). Without one, it starts lockheed's fake
//! API server in this process.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use lockheed::election::{LeaderElection, Term};
use lockheed::testing::FakeApiServer;
use lockheed::{LeaseLocker, Lock};
use tokio::sync::oneshot;
use tokio::time::Instant;

const LABEL: &str = "app=lockheed-demo";
const STAMP: &str = "lockheed-demo/reconciled-by";

fn cluster_configured() -> bool {
    let kubeconfig = std::env::var_os("KUBECONFIG").is_some_and(|v| !v.is_empty());
    let home_config = std::env::var_os("HOME")
        .map(|home| std::path::Path::new(&home).join(".kube/config"))
        .is_some_and(|path| path.exists());
    let in_pod = std::env::var_os("KUBERNETES_SERVICE_HOST").is_some();
    kubeconfig || home_config || in_pod
}

/// What the reconciler knows: who reconciles, in which term.
struct Context {
    api: Api<ConfigMap>,
    stamp: String,
}

/// Stamps a ConfigMap with the term that reconciled it (once).
async fn reconcile(cm: Arc<ConfigMap>, ctx: Arc<Context>) -> Result<Action, kube::Error> {
    let stamped = cm.metadata.annotations.as_ref().and_then(|a| a.get(STAMP));
    if stamped == Some(&ctx.stamp) {
        return Ok(Action::await_change());
    }
    let name = cm.metadata.name.clone().unwrap_or_default();
    let patch = serde_json::json!({ "metadata": { "annotations": { STAMP: ctx.stamp } } });
    ctx.api
        .patch(&name, &PatchParams::default(), &Patch::Merge(patch))
        .await?;
    println!("  {} reconciled {name}", ctx.stamp);
    Ok(Action::await_change())
}

fn error_policy(_: Arc<ConfigMap>, error: &kube::Error, _: Arc<Context>) -> Action {
    eprintln!("  reconcile failed: {error}");
    Action::requeue(Duration::from_secs(1))
}

/// One term of replica `replica`: the controller, until the term ends.
async fn lead(replica: &'static str, api: Api<ConfigMap>, term: Term) {
    println!(
        "{replica}: leading, term with fencing token {}",
        term.token()
    );
    let context = Arc::new(Context {
        api: api.clone(),
        stamp: format!("{replica} (token {})", term.token()),
    });
    Controller::new(api, watcher::Config::default().labels(LABEL))
        .graceful_shutdown_on(term.ended())
        .run(reconcile, error_policy, context)
        .for_each(|_| async {})
        .await;
    println!("{replica}: term {} ended, controller stopped", term.token());
}

/// Replica `replica`: campaigns, leads while elected, until `shutdown`.
fn replica(
    replica: &'static str,
    client: &kube::Client,
    namespace: &str,
) -> (
    LeaderElection<LeaseLocker>,
    impl FnMut(Term) -> futures::future::BoxFuture<'static, ()> + Send + 'static,
) {
    let lock = Lock::new("lockheed-demo", LeaseLocker::new(client.clone(), namespace))
        .with_holder(replica)
        .with_duration(Duration::from_secs(15));
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let work = move |term: Term| -> futures::future::BoxFuture<'static, ()> {
        Box::pin(lead(replica, api.clone(), term))
    };
    (LeaderElection::new(lock), work)
}

async fn create(api: &Api<ConfigMap>, name: &str) -> Result<(), kube::Error> {
    let cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some([("app".to_owned(), "lockheed-demo".to_owned())].into()),
            ..ObjectMeta::default()
        },
        ..ConfigMap::default()
    };
    api.create(&PostParams::default(), &cm).await?;
    Ok(())
}

/// Waits until every demo ConfigMap carries a stamp of `token`'s term.
async fn reconciled(api: &Api<ConfigMap>, token: u64) -> Result<(), kube::Error> {
    let suffix = format!("(token {token})");
    loop {
        let list = api
            .list(&kube::api::ListParams::default().labels(LABEL))
            .await?;
        let done = list.items.iter().all(|cm| {
            let stamp = cm.metadata.annotations.as_ref().and_then(|a| a.get(STAMP));
            stamp.is_some_and(|s| s.ends_with(&suffix))
        });
        if done {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The configured cluster, or the fake API server started in this process (kept alive by the
/// second value).
async fn connect() -> Result<(kube::Client, Option<FakeApiServer>), Box<dyn std::error::Error>> {
    if cluster_configured() {
        println!("using the configured cluster");
        return Ok((kube::Client::try_default().await?, None));
    }
    let server = FakeApiServer::start().await?;
    println!(
        "no cluster configured: started lockheed's fake API server at {}",
        server.url()
    );
    Ok((server.client(), Some(server)))
}

/// A running replica: how to stop it, what it sees of the leader, and its task.
struct Running {
    stop: oneshot::Sender<()>,
    leader: tokio::sync::watch::Receiver<Option<lockheed::Holder>>,
    task: tokio::task::JoinHandle<Result<(), lockheed::Error>>,
}

/// Starts replica `name`: it campaigns, and leads while elected, until stopped.
fn start(name: &'static str, client: &kube::Client, namespace: &str) -> Running {
    let (election, work) = replica(name, client, namespace);
    let leader = election.leader();
    let (stop, stopped) = oneshot::channel::<()>();
    let shutdown = async {
        let _ = stopped.await;
    };
    let task = tokio::spawn(election.run(shutdown, work));
    Running { stop, leader, task }
}

/// Prints which term last reconciled each demo ConfigMap, and deletes them.
async fn report(api: &Api<ConfigMap>) -> Result<(), kube::Error> {
    let list = api
        .list(&kube::api::ListParams::default().labels(LABEL))
        .await?;
    for cm in list.items {
        let name = cm.metadata.name.clone().unwrap_or_default();
        let annotations = cm.metadata.annotations.unwrap_or_default();
        let stamp = annotations.get(STAMP).map_or("nobody", String::as_str);
        println!("{name}: last reconciled by {stamp}");
        api.delete(&name, &DeleteParams::default()).await?;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (client, _server) = connect().await?;
    let namespace = client.default_namespace().to_owned();
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
    for name in ["demo-1", "demo-2"] {
        create(&api, name).await?;
    }

    // replica-a starts first and leads.
    let a = start("replica-a", &client, &namespace);
    reconciled(&api, 1).await?;

    // replica-b starts as a standby: it sees who leads, and waits.
    let mut b = start("replica-b", &client, &namespace);
    b.leader.wait_for(|l| l.is_some()).await?;
    let current = b.leader.borrow().clone().expect("a leader");
    let token = current
        .token
        .map_or_else(|| "none".to_owned(), |t| t.to_string());
    println!(
        "replica-b: standing by; the leader is {} (token {token})",
        current.id
    );
    tokio::time::sleep(Duration::from_millis(300)).await;

    // replica-a steps down (a rolling update, say): its controller stops, it releases the
    // Lease, and replica-b leads at once.
    println!("replica-a: shutting down");
    let stepped_down = Instant::now();
    a.stop.send(()).ok();
    b.leader
        .wait_for(|l| l.as_ref().is_some_and(|l| l.id == "replica-b"))
        .await?;
    let after = stepped_down.elapsed();
    println!("replica-b took over {after:?} after replica-a stepped down");
    a.task.await??;

    // The new leader reconciles: every ConfigMap, and the ones that come.
    create(&api, "demo-3").await?;
    reconciled(&api, 2).await?;
    b.stop.send(()).ok();
    b.task.await??;
    report(&api).await?;
    Ok(())
}
