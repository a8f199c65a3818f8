//! One test cluster per test (the fake server, or a namespace of a real one: `TestCluster`), and
//! the built binaries pointed at it.

use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use lockheed::testing::{FakeApiServer, TestCluster};
use tokio::process::{Child, Command};

/// How long any one command may run before the test fails (it never should come close).
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// The server of one test, and a kubeconfig file that points at it (its context's namespace
/// is the test's).
pub struct Cluster {
    pub server: TestCluster,
    pub kubeconfig: PathBuf,
    /// A working directory and `HOME` for the commands (no `~/.kube/config` there).
    pub dir: tempfile::TempDir,
}

/// What a finished command did.
#[derive(Debug)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// The exit code (`None` when killed by a signal).
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }
}

impl Cluster {
    pub async fn start() -> Self {
        let server = TestCluster::start().await.expect("the test cluster starts");
        let dir = tempfile::tempdir().expect("a temporary directory");
        let kubeconfig = dir.path().join("kubeconfig");
        server
            .write_kubeconfig(&kubeconfig)
            .expect("the kubeconfig is written");
        Self {
            server,
            kubeconfig,
            dir,
        }
    }

    /// The test's namespace: `default` on the fake server, a fresh one on a real cluster.
    pub fn ns(&self) -> &str {
        self.server.namespace()
    }

    /// The fake server, for a test that injects its faults or counts the binary's requests (a
    /// real cluster only counts what this process sends). On a real cluster it is `None`, and
    /// the test ends there, saying so on stderr.
    pub fn fake(&self, why: &str) -> Option<&FakeApiServer> {
        let fake = self.server.fake_server();
        if fake.is_none() {
            eprintln!("runs on the fake server only ({why})");
        }
        fake
    }

    /// Grants user `user` exactly the rules of `role` (a Role as JSON, without its name) in the
    /// test's namespace, and writes a kubeconfig that acts as that user: a real cluster's RBAC
    /// (or the fake server's access control) decides what the commands may do.
    pub async fn kubeconfig_granted(&self, user: &str, role: serde_json::Value) -> PathBuf {
        let mut role = role;
        role["metadata"] = serde_json::json!({ "name": format!("{user}-role") });
        let role = serde_json::from_value(role).expect("a Role");
        let subject = serde_json::from_value(serde_json::json!({ "kind": "User", "name": user }))
            .expect("a Subject");
        let identity = self
            .server
            .grant(&role, &subject)
            .await
            .expect("the Role is granted");
        let path = self.dir.path().join(format!("{user}.kubeconfig"));
        self.server
            .write_kubeconfig_as(&identity, &path)
            .expect("the kubeconfig is written");
        path
    }

    /// ConfigMaps of the test's namespace.
    pub fn configmaps(&self) -> Api<ConfigMap> {
        Api::namespaced(self.server.client(), self.ns())
    }

    /// A command for binary `name` (`kube-lock` or `lockheed`) with a clean environment:
    /// `KUBECONFIG` names this cluster, `HOME` is empty, no in-cluster service account.
    /// `kube-lock` tests usually pass `--kubeconfig-path` as well, as its README does.
    pub fn command(&self, name: &str) -> Command {
        let program = match name {
            "kube-lock" => env!("CARGO_BIN_EXE_kube-lock"),
            "lockheed" => env!("CARGO_BIN_EXE_lockheed"),
            other => panic!("no binary {other}"),
        };
        let mut command = Command::new(program);
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .env("KUBECONFIG", &self.kubeconfig)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        command
    }

    /// Runs binary `name` with `args` to the end.
    pub async fn run(&self, name: &str, args: &[&str]) -> Output {
        let mut command = self.command(name);
        command.args(args);
        finish(command.spawn().expect("the binary starts")).await
    }
}

/// Waits for `child` to exit (at most [`COMMAND_TIMEOUT`]) and collects what it printed.
pub async fn finish(child: Child) -> Output {
    let output = tokio::time::timeout(COMMAND_TIMEOUT, child.wait_with_output())
        .await
        .expect("the command finishes in time")
        .expect("the command's output is read");
    Output {
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}
