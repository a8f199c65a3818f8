//! `kubectl` against the fake API server: get, create configmap, delete, get -o json.
//! Skipped, with a printed reason, where kubectl is not installed.

use std::path::{Path, PathBuf};
use std::process::Command;

use lockheed::testing::FakeApiServer;

fn kubectl_available() -> bool {
    Command::new("kubectl")
        .args(["version", "--client"])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn temp_kubeconfig(server: &FakeApiServer) -> PathBuf {
    let path = std::env::temp_dir().join(format!(
        "lockheed-kubeconfig-{}-{}",
        std::process::id(),
        server.addr().port()
    ));
    server.write_kubeconfig(&path).unwrap();
    path
}

/// Runs kubectl off the runtime's threads so the server keeps serving.
async fn kubectl(kubeconfig: &Path, args: &[&str]) -> (bool, String, String) {
    let (kubeconfig, args) = (
        kubeconfig.to_path_buf(),
        args.iter().map(|a| (*a).to_owned()).collect::<Vec<_>>(),
    );
    tokio::task::spawn_blocking(move || {
        let out = Command::new("kubectl")
            .env("KUBECONFIG", &kubeconfig)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .args(&args)
            .output()
            .expect("kubectl runs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_get_create_delete_and_json_output() {
    if !kubectl_available() {
        println!("skipped: kubectl is not installed");
        return;
    }
    let server = FakeApiServer::start().await.unwrap();
    let kubeconfig = temp_kubeconfig(&server);

    let (ok, out, err) = kubectl(&kubeconfig, &["get", "configmaps"]).await;
    assert!(ok, "{err}");
    assert!(
        err.contains("No resources found") || out.is_empty(),
        "{out}{err}"
    );

    let (ok, out, err) = kubectl(
        &kubeconfig,
        &["create", "configmap", "demo", "--from-literal=a=b"],
    )
    .await;
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "configmap/demo created");

    let (ok, out, err) = kubectl(&kubeconfig, &["get", "cm"]).await;
    assert!(ok, "{err}");
    assert!(out.lines().any(|l| l.starts_with("demo ")), "{out}");

    let (ok, out, err) = kubectl(&kubeconfig, &["get", "configmap", "demo", "-o", "json"]).await;
    assert!(ok, "{err}");
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["kind"], "ConfigMap");
    assert_eq!(json["data"]["a"], "b");
    assert_eq!(json["metadata"]["namespace"], "default");
    assert!(
        json["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .is_ok()
    );

    let (ok, out, err) = kubectl(&kubeconfig, &["create", "namespace", "team"]).await;
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "namespace/team created");
    let (ok, _, err) = kubectl(&kubeconfig, &["-n", "team", "create", "configmap", "inner"]).await;
    assert!(ok, "{err}");
    let (ok, out, _) = kubectl(&kubeconfig, &["get", "cm", "-A"]).await;
    assert!(ok && out.contains("team") && out.contains("inner"), "{out}");

    let (ok, out, err) = kubectl(&kubeconfig, &["delete", "configmap", "demo"]).await;
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "configmap \"demo\" deleted");
    let (ok, _, err) = kubectl(&kubeconfig, &["get", "configmap", "demo"]).await;
    assert!(!ok);
    assert!(
        err.contains("NotFound") && err.contains("configmaps \"demo\" not found"),
        "{err}"
    );

    let (ok, out, err) = kubectl(&kubeconfig, &["get", "leases", "-n", "kube-node-lease"]).await;
    assert!(ok, "{out}{err}");
    let _ = std::fs::remove_file(kubeconfig);
}
