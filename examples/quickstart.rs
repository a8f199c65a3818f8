//! Several workers take turns holding one lock, then the locks are listed with a condition.
//!
//! ```text
//! cargo run --features testing --example quickstart
//! ```
//!
//! With a cluster configured (`KUBECONFIG`, `~/.kube/config`, or running in a pod) it uses
//! that cluster's default namespace (it needs `get`, `create`, `update` and `list` on
//! ConfigMaps there). Without one, it starts lockheed's fake API server in this process.

use std::time::Duration;

use lockheed::testing::FakeApiServer;
use lockheed::{Condition, KubeLocker, Lock, Locker};

const WORKERS: usize = 4;

fn cluster_configured() -> bool {
    let kubeconfig = std::env::var_os("KUBECONFIG").is_some_and(|v| !v.is_empty());
    let home_config = std::env::var_os("HOME")
        .map(|home| std::path::Path::new(&home).join(".kube/config"))
        .is_some_and(|path| path.exists());
    let in_pod = std::env::var_os("KUBERNETES_SERVICE_HOST").is_some();
    kubeconfig || home_config || in_pod
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Keep the fake server alive until the end, when there is one.
    let (client, _server) = if cluster_configured() {
        println!("using the configured cluster");
        (kube::Client::try_default().await?, None)
    } else {
        let server = FakeApiServer::start().await?;
        println!(
            "no cluster configured: started lockheed's fake API server at {}",
            server.url()
        );
        (server.client(), Some(server))
    };
    let namespace = client.default_namespace().to_owned();
    let locker = KubeLocker::new(client, &namespace);

    let mut workers = Vec::new();
    for i in 0..WORKERS {
        let lock = Lock::new("quickstart", locker.clone())
            .with_holder(format!("worker-{i}"))
            .with_duration(Duration::from_secs(10))
            .with_renew_interval(Duration::from_secs(3))
            .with_tags(["quickstart"])
            .with_retry_interval(Duration::from_millis(100));
        workers.push(tokio::spawn(async move {
            let guard = lock.acquire().await?;
            println!(
                "{} holds lockheed-quickstart with fencing token {}",
                guard.holder(),
                guard.token()
            );
            tokio::select! {
                () = guard.lost() => println!("{} lost the lock!", guard.holder()),
                () = tokio::time::sleep(Duration::from_millis(300)) => {}
            }
            println!("{} releases it", guard.holder());
            guard.release().await
        }));
    }
    for worker in workers {
        worker.await??;
    }

    let tagged = Condition::and([
        Condition::tags_contain("quickstart"),
        Condition::acquired(false),
    ]);
    println!("free locks tagged \"quickstart\" in namespace {namespace}:");
    for lock in locker.list(Some(&tagged)).await?.locks {
        let kind = lock
            .kind
            .map_or_else(|| "never taken".to_owned(), |k| k.to_string());
        println!(
            "  {} (kind {kind}, tags {:?}, last fencing token {})",
            lock.name, lock.tags, lock.fencing_token
        );
    }
    Ok(())
}
