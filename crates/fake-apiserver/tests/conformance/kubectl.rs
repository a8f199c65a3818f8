//! `kubectl` against the fake API server, as users run it: client-side validation left at its
//! default (`--validate=strict`, which kubectl turns into server-side `fieldValidation=Strict`
//! once it has read the OpenAPI documents), and every change read back through `kube::Api`.
//! Skipped, with a printed reason, where kubectl is not installed.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Output, Stdio};
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use lockheed_fake_apiserver::{FakeApiServer, RequestRecord, Verb};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;
use tokio::time::{Instant, timeout};

use crate::common::{cm, configmaps, create, data, rv};

/// Long enough for kubectl on a loaded 2-core machine; reached only when something is wrong.
const DEADLINE: Duration = Duration::from_secs(30);

fn kubectl_available() -> bool {
    std::process::Command::new("kubectl")
        .args(["version", "--client"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A server and a kubectl configured for it, with a cache of its own (kubectl caches discovery
/// and OpenAPI documents per host and port, and ports are reused).
struct Kubectl {
    server: FakeApiServer,
    dir: tempfile::TempDir,
}

/// What a kubectl run printed.
struct Run {
    ok: bool,
    out: String,
    err: String,
}

impl From<Output> for Run {
    fn from(out: Output) -> Self {
        Self {
            ok: out.status.success(),
            out: String::from_utf8_lossy(&out.stdout).into_owned(),
            err: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

impl Kubectl {
    /// `None` (after saying so) where kubectl is not installed.
    async fn start() -> Option<Self> {
        if !kubectl_available() {
            println!("skipped: kubectl is not installed");
            return None;
        }
        let server = crate::common::server().await;
        let dir = tempfile::tempdir().unwrap();
        server
            .write_kubeconfig(dir.path().join("kubeconfig"))
            .unwrap();
        Some(Self { server, dir })
    }

    fn api(&self) -> Api<ConfigMap> {
        configmaps(&self.server)
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new("kubectl");
        command
            .env("KUBECONFIG", self.dir.path().join("kubeconfig"))
            .env_remove("KUBERNETES_SERVICE_HOST")
            .arg(format!("--cache-dir={}", self.cache_dir().display()))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        command
    }

    fn cache_dir(&self) -> PathBuf {
        self.dir.path().join("cache")
    }

    async fn run(&self, args: &[&str]) -> Run {
        let out = timeout(DEADLINE, self.command(args).output())
            .await
            .unwrap_or_else(|_| panic!("kubectl {args:?} finishes"))
            .expect("kubectl runs");
        out.into()
    }

    /// Runs kubectl with `manifest` (YAML) on its standard input, for `-f -`.
    async fn run_with(&self, args: &[&str], manifest: &str) -> Run {
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .spawn()
            .expect("kubectl runs");
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(manifest.as_bytes()).await.unwrap();
        drop(stdin);
        timeout(DEADLINE, child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("kubectl {args:?} finishes"))
            .expect("kubectl runs")
            .into()
    }

    /// Waits until the server has opened a watch that `matches`.
    async fn watch_opened(&self, matches: impl Fn(&RequestRecord) -> bool) {
        let deadline = Instant::now() + DEADLINE;
        while !self
            .server
            .requests()
            .iter()
            .any(|r| r.verb == Verb::Watch && matches(r))
        {
            assert!(Instant::now() < deadline, "kubectl never started watching");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn labels(cm: &ConfigMap) -> BTreeMap<String, String> {
    cm.metadata.labels.clone().unwrap_or_default()
}

fn annotations(cm: &ConfigMap) -> BTreeMap<String, String> {
    cm.metadata.annotations.clone().unwrap_or_default()
}

const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_get_create_delete_and_json_output() {
    let Some(k) = Kubectl::start().await else {
        return;
    };
    let r = k.run(&["get", "configmaps"]).await;
    assert!(r.ok, "{}", r.err);
    assert!(r.err.contains("No resources found"), "{}{}", r.out, r.err);

    let r = k
        .run(&["create", "configmap", "demo", "--from-literal=a=b"])
        .await;
    assert!(r.ok, "{}", r.err);
    assert_eq!(r.out.trim(), "configmap/demo created");
    assert_eq!(data(&k.api().get("demo").await.unwrap(), "a"), Some("b"));

    let r = k.run(&["get", "cm"]).await;
    assert!(r.ok, "{}", r.err);
    assert!(r.out.lines().any(|l| l.starts_with("demo ")), "{}", r.out);

    let r = k.run(&["get", "configmap", "demo", "-o", "json"]).await;
    assert!(r.ok, "{}", r.err);
    let json: Value = serde_json::from_str(&r.out).unwrap();
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

    let r = k.run(&["create", "namespace", "team"]).await;
    assert!(r.ok, "{}", r.err);
    assert_eq!(r.out.trim(), "namespace/team created");
    let r = k.run(&["-n", "team", "create", "configmap", "inner"]).await;
    assert!(r.ok, "{}", r.err);
    let r = k.run(&["get", "cm", "-A"]).await;
    assert!(
        r.ok && r.out.contains("team") && r.out.contains("inner"),
        "{}",
        r.out
    );

    let r = k.run(&["delete", "configmap", "demo"]).await;
    assert!(r.ok, "{}", r.err);
    // kubectl 1.37 adds " from default namespace".
    assert!(
        r.out.trim().starts_with("configmap \"demo\" deleted"),
        "{}",
        r.out
    );
    assert!(k.api().get_opt("demo").await.unwrap().is_none());
    let r = k.run(&["get", "configmap", "demo"]).await;
    assert!(!r.ok);
    assert!(
        r.err.contains("NotFound") && r.err.contains("configmaps \"demo\" not found"),
        "{}",
        r.err
    );

    let r = k.run(&["get", "leases", "-n", "kube-node-lease"]).await;
    assert!(r.ok, "{}{}", r.out, r.err);
}

fn manifest(name: &str, data: &[(&str, &str)]) -> String {
    let mut yaml = format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n");
    for (k, v) in data {
        yaml.push_str(&format!("  {k}: \"{v}\"\n"));
    }
    yaml
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_apply_conflicts_name_the_other_manager_until_forced() {
    let Some(k) = Kubectl::start().await else {
        return;
    };
    let apply = |manager: &'static str, force: bool| {
        let mut args = vec!["apply", "--server-side", "-f", "-"];
        args.push(if manager == "alice" {
            "--field-manager=alice"
        } else {
            "--field-manager=bob"
        });
        if force {
            args.push("--force-conflicts");
        }
        args
    };
    let r = k
        .run_with(&apply("alice", false), &manifest("ssa", &[("key", "one")]))
        .await;
    assert!(r.ok, "{}", r.err);
    assert_eq!(r.out.trim(), "configmap/ssa serverside-applied");
    assert_eq!(data(&k.api().get("ssa").await.unwrap(), "key"), Some("one"));

    let r = k
        .run_with(&apply("bob", false), &manifest("ssa", &[("key", "two")]))
        .await;
    assert!(!r.ok, "bob's apply must conflict: {}", r.out);
    assert!(
        r.err
            .contains("Apply failed with 1 conflict: conflict with \"alice\": .data.key"),
        "{}",
        r.err
    );
    assert_eq!(data(&k.api().get("ssa").await.unwrap(), "key"), Some("one"));

    let r = k
        .run_with(&apply("bob", true), &manifest("ssa", &[("key", "two")]))
        .await;
    assert!(r.ok, "{}", r.err);
    assert_eq!(data(&k.api().get("ssa").await.unwrap(), "key"), Some("two"));
    // Alice lost the field: applying her old value again conflicts with bob now.
    let r = k
        .run_with(&apply("alice", false), &manifest("ssa", &[("key", "one")]))
        .await;
    assert!(
        r.err.contains("conflict with \"bob\": .data.key"),
        "{}",
        r.err
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_side_apply_sends_a_strategic_merge_patch_of_what_changed() {
    let Some(k) = Kubectl::start().await else {
        return;
    };
    let first = manifest("web", &[("removed", "1"), ("changed", "old")]);
    let r = k.run_with(&["apply", "-f", "-"], &first).await;
    assert!(r.ok, "{}", r.err);
    assert_eq!(r.out.trim(), "configmap/web created");
    let created = k.api().get("web").await.unwrap();
    let last: Value = serde_json::from_str(&annotations(&created)[LAST_APPLIED]).unwrap();
    assert_eq!(last["data"], json!({ "removed": "1", "changed": "old" }));

    // Someone else adds a key the configuration does not mention.
    let patch = json!({ "data": { "theirs": "kept" } });
    k.api()
        .patch("web", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();

    let second = manifest("web", &[("changed", "new")]);
    let r = k.run_with(&["apply", "-v=8", "-f", "-"], &second).await;
    assert!(r.ok, "{}", r.err);
    assert_eq!(r.out.trim(), "configmap/web configured");
    assert!(
        r.err.lines().any(|l| l
            .trim_end()
            .ends_with("Content-Type: application/strategic-merge-patch+json")),
        "kubectl sends a strategic merge patch: {}",
        r.err
    );
    let applied = k.api().get("web").await.unwrap();
    assert_eq!(
        data(&applied, "removed"),
        None,
        "removed from the configuration"
    );
    assert_eq!(data(&applied, "changed"), Some("new"));
    assert_eq!(
        data(&applied, "theirs"),
        Some("kept"),
        "not kubectl's to remove"
    );
    let last: Value = serde_json::from_str(&annotations(&applied)[LAST_APPLIED]).unwrap();
    assert_eq!(last["data"], json!({ "changed": "new" }));

    // Nothing changed: no write.
    let before = rv(&applied);
    let r = k.run_with(&["apply", "-f", "-"], &second).await;
    assert!(r.ok, "{}", r.err);
    assert_eq!(r.out.trim(), "configmap/web unchanged");
    assert_eq!(rv(&k.api().get("web").await.unwrap()), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patch_merge_json_and_strategic() {
    let Some(k) = Kubectl::start().await else {
        return;
    };
    create(&k.api(), &cm("p", &[("a", "1"), ("b", "2")])).await;

    let r = k
        .run(&[
            "patch",
            "cm",
            "p",
            "--type",
            "merge",
            "-p",
            r#"{"data":{"a":null,"c":"3"}}"#,
        ])
        .await;
    assert!(r.ok, "{}", r.err);
    assert_eq!(r.out.trim(), "configmap/p patched");
    let got = k.api().get("p").await.unwrap();
    assert_eq!((data(&got, "a"), data(&got, "c")), (None, Some("3")));

    let ops = r#"[{"op":"replace","path":"/data/b","value":"20"},
                  {"op":"add","path":"/metadata/labels","value":{"x":"y"}}]"#;
    let r = k
        .run(&["patch", "cm", "p", "--type", "json", "-p", ops])
        .await;
    assert!(r.ok, "{}", r.err);
    let got = k.api().get("p").await.unwrap();
    assert_eq!(data(&got, "b"), Some("20"));
    assert_eq!(labels(&got)["x"], "y");

    let r = k
        .run(&[
            "patch",
            "cm",
            "p",
            "--type",
            "strategic",
            "-p",
            r#"{"metadata":{"labels":{"z":"w"}}}"#,
        ])
        .await;
    assert!(r.ok, "{}", r.err);
    let got = k.api().get("p").await.unwrap();
    assert_eq!(
        labels(&got),
        BTreeMap::from([("x".into(), "y".into()), ("z".into(), "w".into())])
    );

    // A failing test operation changes nothing.
    let before = rv(&got);
    let r = k
        .run(&[
            "patch",
            "cm",
            "p",
            "--type",
            "json",
            "-p",
            r#"[{"op":"test","path":"/data/b","value":"nope"}]"#,
        ])
        .await;
    assert!(!r.ok);
    assert_eq!(
        r.err.trim(),
        "The request is invalid: the server rejected our request due to an error in our request"
    );
    assert_eq!(rv(&k.api().get("p").await.unwrap()), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn label_and_annotate_add_refuse_overwrite_and_remove() {
    let Some(k) = Kubectl::start().await else {
        return;
    };
    create(&k.api(), &cm("l", &[])).await;

    for (command, read) in [
        (
            "label",
            labels as fn(&ConfigMap) -> BTreeMap<String, String>,
        ),
        ("annotate", annotations),
    ] {
        let r = k.run(&[command, "cm", "l", "team=a"]).await;
        assert!(r.ok, "{}", r.err);
        assert_eq!(read(&k.api().get("l").await.unwrap())["team"], "a");

        let r = k.run(&[command, "cm", "l", "team=b"]).await;
        assert!(!r.ok, "{command} without --overwrite must refuse");
        assert!(r.err.contains("already has a value (a)"), "{}", r.err);
        assert_eq!(read(&k.api().get("l").await.unwrap())["team"], "a");

        let r = k.run(&[command, "--overwrite", "cm", "l", "team=b"]).await;
        assert!(r.ok, "{}", r.err);
        assert_eq!(read(&k.api().get("l").await.unwrap())["team"], "b");

        let r = k.run(&[command, "cm", "l", "team-"]).await;
        assert!(r.ok, "{}", r.err);
        assert!(!read(&k.api().get("l").await.unwrap()).contains_key("team"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_watch_only_prints_a_change_made_while_it_runs() {
    let Some(k) = Kubectl::start().await else {
        return;
    };
    create(&k.api(), &cm("w", &[("v", "1")])).await;
    // kubectl asks for Table rows; the server answers objects, which kubectl prints itself.
    let template = r#"-o=jsonpath={.metadata.name}={.data.v}{"\n"}"#;
    let mut child = k
        .command(&["get", "cm", "--watch-only", template])
        .spawn()
        .expect("kubectl runs");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    k.watch_opened(|r| r.resource.as_deref() == Some("configmaps"))
        .await;

    let patch = json!({ "data": { "v": "2" } });
    k.api()
        .patch("w", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let line = timeout(DEADLINE, lines.next_line())
        .await
        .expect("kubectl prints the change")
        .unwrap();
    assert_eq!(
        line.as_deref(),
        Some("w=2"),
        "only the change, not the initial state"
    );
    assert_eq!(data(&k.api().get("w").await.unwrap(), "v"), Some("2"));
    child.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_for_delete_returns_when_the_object_is_deleted() {
    let Some(k) = Kubectl::start().await else {
        return;
    };
    create(&k.api(), &cm("doomed", &[])).await;
    let child = k
        .command(&["wait", "--for=delete", "configmap/doomed", "--timeout=60s"])
        .spawn()
        .expect("kubectl runs");
    k.watch_opened(|r| r.name.as_deref() == Some("doomed"))
        .await;

    k.api()
        .delete("doomed", &DeleteParams::default())
        .await
        .unwrap();
    let r: Run = timeout(DEADLINE, child.wait_with_output())
        .await
        .expect("kubectl wait returns once the object is gone")
        .unwrap()
        .into();
    assert!(r.ok, "{}", r.err);
    assert_eq!(r.out.trim(), "configmap/doomed condition met");
    assert!(k.api().get_opt("doomed").await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validation_accepts_valid_objects_and_rejects_unknown_fields() {
    let Some(k) = Kubectl::start().await else {
        return;
    };
    let unknown =
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: typo\ndata:\n  a: b\nspec:\n  x: 1\n";
    let r = k.run_with(&["apply", "-f", "-"], unknown).await;
    assert!(!r.ok);
    assert!(
        r.err.contains(
            "Error from server (BadRequest): error when creating \"STDIN\": ConfigMap in version \
             \"v1\" cannot be handled as a ConfigMap: strict decoding error: unknown field \"spec\""
        ),
        "{}",
        r.err
    );
    assert!(k.api().get_opt("typo").await.unwrap().is_none());

    let r = k
        .run_with(&["apply", "--server-side", "-f", "-"], unknown)
        .await;
    assert!(!r.ok);
    assert!(
        r.err.contains(".spec: field not declared in schema"),
        "{}",
        r.err
    );
    assert!(k.api().get_opt("typo").await.unwrap().is_none());

    // Without validation the server drops the field, as kube-apiserver does.
    let r = k
        .run_with(&["create", "--validate=false", "-f", "-"], unknown)
        .await;
    assert!(r.ok, "{}", r.err);
    let created = serde_json::to_value(k.api().get("typo").await.unwrap()).unwrap();
    assert_eq!(created["data"]["a"], "b");
    assert!(created.get("spec").is_none(), "{created}");

    // kubectl explain reads the same documents.
    let r = k.run(&["explain", "configmap.data"]).await;
    assert!(r.ok, "{}", r.err);
    assert!(
        r.out.contains("FIELD: data <map[string]string>"),
        "{}",
        r.out
    );
}
