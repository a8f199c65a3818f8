//! Sequences of real clients: kube-runtime's watcher and reflector, kube-lease-manager,
//! kubectl, and tests of lockheed's own suite.

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, reflector as kube_reflector, watcher as kube_watcher};
use kube_lease_manager::LeaseManagerBuilder;
use serde_json::json;

use crate::Session;
use crate::proxy::Proxy;
use crate::sequence::Sequence;

async fn settle() {
    tokio::time::sleep(Duration::from_millis(500)).await;
}

fn configmap(name: &str, labels: &[(&str, &str)]) -> ConfigMap {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>()},
        "data": {"v": "0"},
    }))
    .expect("a valid ConfigMap")
}

/// Writes while a watcher or reflector looks on: creates, updates (one that leaves the
/// selector), deletes.
async fn churn(api: &Api<ConfigMap>) -> Result<(), String> {
    let err = |e: kube::Error| e.to_string();
    for name in ["w1", "w2", "w3"] {
        api.create(&PostParams::default(), &configmap(name, &[("app", "web")]))
            .await
            .map_err(err)?;
        settle().await;
    }
    api.patch(
        "w1",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"v": "1"}})),
    )
    .await
    .map_err(err)?;
    settle().await;
    api.patch(
        "w2",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app": "db"}}})),
    )
    .await
    .map_err(err)?;
    settle().await;
    api.delete("w3", &DeleteParams::default())
        .await
        .map_err(err)?;
    settle().await;
    Ok(())
}

/// Runs `stream` in a task, counting what it yields, until stopped.
fn drive<S, T>(stream: S) -> tokio::task::JoinHandle<usize>
where
    S: futures::Stream<Item = Result<T, kube_watcher::Error>> + Send + 'static,
    T: Send + 'static,
{
    tokio::spawn(async move {
        let mut seen = 0;
        let mut stream = std::pin::pin!(stream);
        while let Some(item) = stream.next().await {
            if item.is_ok() {
                seen += 1;
            }
        }
        seen
    })
}

/// kube-runtime's watcher: list then watch, then a streaming list, with writes between.
pub async fn watcher(session: &Session) -> Result<(), String> {
    let api: Api<ConfigMap> = Api::default_namespaced(session.client());
    api.create(
        &PostParams::default(),
        &configmap("before", &[("app", "web")]),
    )
    .await
    .map_err(|e| e.to_string())?;
    let listing = drive(kube_watcher(api.clone(), kube_watcher::Config::default()));
    settle().await;
    churn(&api).await?;
    listing.abort();
    settle().await;
    let streaming = drive(kube_watcher(
        api.clone(),
        kube_watcher::Config::default().streaming_lists(),
    ));
    settle().await;
    api.patch(
        "w1",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"v": "2"}})),
    )
    .await
    .map_err(|e| e.to_string())?;
    settle().await;
    streaming.abort();
    settle().await;
    let any = drive(kube_watcher(
        api.clone(),
        kube_watcher::Config::default()
            .any_semantic()
            .labels("app=web"),
    ));
    settle().await;
    any.abort();
    Ok(())
}

/// kube-runtime's reflector, with a label selector and pages of two.
pub async fn reflector(session: &Session) -> Result<(), String> {
    let api: Api<ConfigMap> = Api::default_namespaced(session.client());
    for name in ["r1", "r2", "r3"] {
        api.create(&PostParams::default(), &configmap(name, &[("app", "web")]))
            .await
            .map_err(|e| e.to_string())?;
    }
    let (store, writer) = kube_reflector::store();
    let config = kube_watcher::Config::default()
        .labels("app=web")
        .page_size(2);
    let task = drive(kube_reflector::reflector(
        writer,
        kube_watcher(api.clone(), config).default_backoff(),
    ));
    settle().await;
    churn(&api).await?;
    task.abort();
    eprintln!(
        "recorder: the reflector's store holds {} objects",
        store.state().len()
    );
    Ok(())
}

/// Two kube-lease-managers: one takes the Lease and renews it, the other waits, takes it when
/// released.
pub async fn lease_manager(session: &Session) -> Result<(), String> {
    let err = |e: kube_lease_manager::LeaseManagerError| e.to_string();
    let builder = |identity: &str| {
        LeaseManagerBuilder::new(session.client(), "leader")
            .with_namespace(session.namespace())
            .with_identity(identity)
            .with_field_manager(format!("kube-lease-manager-{identity}"))
            .with_duration(3)
            .with_grace(2)
    };
    let one = builder("one").build().await.map_err(err)?;
    let two = builder("two").build().await.map_err(err)?;
    // one takes the free Lease and renews it in the background.
    let (mut leading, renewing) = one.watch().await;
    while !*leading.borrow_and_update() {
        leading.changed().await.map_err(|e| e.to_string())?;
    }
    // two tries while one holds it, and gives up.
    let tried = tokio::time::timeout(Duration::from_secs(4), two.changed()).await;
    assert!(tried.is_err(), "two cannot take a held Lease");
    // one lets go (its task releases the Lease), and two takes it.
    drop(leading);
    renewing.await.map_err(|e| e.to_string())?.map_err(err)?;
    assert!(
        two.changed().await.map_err(err)?,
        "two takes the released Lease"
    );
    two.release().await.map_err(err)?;
    Ok(())
}

/// kubectl, as users run it.
pub async fn kubectl(session: &Session) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let config = dir.path().join("kubeconfig");
    std::fs::write(
        &config,
        serde_json::to_string(&session.kubeconfig()).map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    let cache = dir.path().join("cache");
    let run = |args: &[&str]| run_kubectl(&config, &cache, args, None);
    let manifest = dir.path().join("cm.yaml");
    let lease = dir.path().join("lease.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: applied\n  labels:\n    app: demo\ndata:\n  a: \"1\"\n",
    )
    .map_err(|e| e.to_string())?;
    std::fs::write(
        &lease,
        "apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata:\n  name: lease\nspec:\n  holderIdentity: kubectl\n  leaseDurationSeconds: 10\n  renewTime: \"2026-01-02T03:04:05.123456Z\"\n",
    )
    .map_err(|e| e.to_string())?;
    let manifest = manifest.to_string_lossy().into_owned();
    let lease = lease.to_string_lossy().into_owned();
    run(&["create", "configmap", "a", "--from-literal=k=v"])?;
    run(&["create", "configmap", "a", "--from-literal=k=v"])?; // AlreadyExists
    run(&["create", "configmap", "Bad_Name", "--from-literal=k=v"])?;
    run(&["get", "configmap", "a", "-o", "json"])?;
    run(&["get", "configmaps"])?;
    run(&["get", "configmap", "missing"])?;
    run(&["label", "configmap", "a", "team=x"])?;
    run(&["label", "configmap", "a", "team=y"])?; // refused without --overwrite
    run(&["label", "configmap", "a", "team=y", "--overwrite"])?;
    run(&["annotate", "configmap", "a", "note=hello"])?;
    run(&["label", "configmap", "a", "team-"])?;
    run(&[
        "patch",
        "configmap",
        "a",
        "--type=merge",
        "-p",
        r#"{"data":{"k2":"v2"}}"#,
    ])?;
    run(&[
        "patch",
        "configmap",
        "a",
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/data/k2"}]"#,
    ])?;
    run(&["patch", "configmap", "a", "-p", r#"{"data":{"k3":"v3"}}"#])?;
    run(&[
        "patch",
        "configmap",
        "a",
        "--type=merge",
        "-p",
        r#"{"data":{"k3":"v3"}}"#,
    ])?; // no change
    run(&["apply", "-f", &manifest])?;
    run(&["apply", "-f", &manifest])?; // unchanged
    std::fs::write(
        &manifest,
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: applied\n  labels:\n    app: demo\ndata:\n  a: \"2\"\n  b: \"1\"\n",
    )
    .map_err(|e| e.to_string())?;
    run(&["apply", "-f", &manifest])?;
    run(&["apply", "--server-side", "-f", &manifest])?; // conflicts with client-side apply
    run(&[
        "apply",
        "--server-side",
        "--force-conflicts",
        "-f",
        &manifest,
    ])?;
    run(&["apply", "--server-side", "-f", &lease])?;
    run(&["get", "lease", "lease", "-o", "yaml"])?;
    run(&["get", "configmaps", "-l", "app=demo", "-o", "name"])?;
    run(&["get", "configmaps", "-l", "app in (demo", "-o", "name"])?; // a bad selector
    run(&[
        "get",
        "configmaps",
        "--field-selector",
        "metadata.name=a",
        "-o",
        "name",
    ])?;
    run(&["get", "configmaps", "--chunk-size=1", "-o", "name"])?;
    run(&[
        "wait",
        "--for=jsonpath={.data.k}=v",
        "configmap/a",
        "--timeout=20s",
    ])?;
    // A wait for a deletion, which the deletion ends.
    let waiting = run_kubectl(
        &config,
        &cache,
        &["wait", "--for=delete", "configmap/applied", "--timeout=30s"],
        Some(Duration::from_secs(2)),
    );
    run(&["delete", "configmap", "applied"])?;
    waiting?;
    run(&["wait", "--for=delete", "configmap/applied", "--timeout=5s"])?; // already gone
    run(&["delete", "configmap", "a"])?;
    run(&["delete", "lease", "lease"])?;
    Ok(())
}

/// Runs kubectl; with `background`, starts it and waits that long before returning its exit
/// status later (as a thread).
fn run_kubectl(
    config: &Path,
    cache: &Path,
    args: &[&str],
    background: Option<Duration>,
) -> Result<(), String> {
    let mut command = std::process::Command::new("kubectl");
    command
        .env("KUBECONFIG", config)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .arg(format!("--cache-dir={}", cache.display()))
        .args(args);
    if let Some(wait) = background {
        let mut child = command.spawn().map_err(|e| format!("kubectl: {e}"))?;
        std::thread::sleep(wait);
        std::thread::spawn(move || child.wait());
        return Ok(());
    }
    let out = command.output().map_err(|e| format!("kubectl: {e}"))?;
    eprintln!(
        "recorder: kubectl {} -> {}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .next()
            .map(|l| format!(": {l}"))
            .unwrap_or_default()
    );
    Ok(())
}

/// The test binary of lockheed's `tests/locks`, built now.
pub fn locks_binary() -> Result<PathBuf, String> {
    let workspace = crate::repo_dir().join("../..");
    let out = std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(&workspace)
        .args([
            "test",
            "-p",
            "lockheed",
            "--all-features",
            "--test",
            "locks",
            "--no-run",
            "--message-format=json",
        ])
        .output()
        .map_err(|e| format!("cargo: {e}"))?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|m| m["target"]["name"] == "locks")
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .ok_or_else(|| {
            format!(
                "no locks test binary: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
}

/// One test of lockheed's suite, run on the real server through the proxy (its
/// `TestCluster` creates the namespace, through the proxy too).
pub async fn lockheed(
    upstream: &kube::Client,
    binary: &Path,
    test: &str,
    client: &str,
) -> Result<Sequence, String> {
    eprintln!("recorder: lockheed {test}");
    let proxy = Proxy::start(upstream.clone())
        .await
        .map_err(|e| format!("proxy: {e}"))?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let config = dir.path().join("kubeconfig");
    std::fs::write(
        &config,
        serde_json::to_string(&proxy.kubeconfig("default")).map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    let binary = binary.to_owned();
    let test_name = test.to_owned();
    let status = tokio::task::spawn_blocking(move || {
        std::process::Command::new(binary)
            .env("KUBECONFIG", config)
            .env("LOCKHEED_TEST_CLUSTER", "real")
            .args(["--exact", &test_name, "--test-threads=1", "--quiet"])
            .status()
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| format!("{test}: {e}"))?;
    if !status.success() {
        return Err(format!("{test} failed on the real server: {status}"));
    }
    Ok(proxy
        .finish(client, &format!("lockheed's test {test}"), "")
        .await)
}
