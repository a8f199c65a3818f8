//! `lockheed run`, `list`, `show` and `release`, run as the built binary against the fake API
//! server.

mod crash;
mod inspect;
mod lease;
mod odd;
mod release;
mod run;
mod terminal;

use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::PostParams;
use lockheed::{KubeLocker, LockInfo, Locker as _};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt as _};
use tokio::process::Child;
use tokio::task::JoinHandle;

use crate::harness::{COMMAND_TIMEOUT, Cluster, Output};

/// How long a test waits for something that should happen within a second or two.
const PATIENCE: Duration = Duration::from_secs(20);

/// The lockers the tests set up and inspect locks with: the test's namespace, as the
/// kubeconfig's context.
fn locker(cluster: &Cluster) -> KubeLocker {
    KubeLocker::new(cluster.server.client(), cluster.ns())
}

/// Lock `name` as it is now.
async fn lock(cluster: &Cluster, name: &str) -> LockInfo {
    locker(cluster)
        .get(name)
        .await
        .expect("the lock is read")
        .unwrap_or_else(|| panic!("lock {name} exists"))
}

/// Stores a lock ConfigMap whose state does not parse.
async fn store_corrupt_lock(cluster: &Cluster, name: &str) {
    let cm: ConfigMap = serde_json::from_value(serde_json::json!({
        "metadata": {
            "name": format!("lockheed-{name}"),
            "labels": { "lockheed/lock": "" },
        },
        "data": { "lock": "{\"name\": \"broken\", \"leases\": {\"x\": {\"expires\": \"not a time\"" },
    }))
    .expect("a ConfigMap");
    cluster
        .configmaps()
        .create(&PostParams::default(), &cm)
        .await
        .expect("the corrupt lock is stored");
}

/// A lockheed process running in the background, its output collected as it comes.
struct Running {
    child: Child,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    readers: Vec<JoinHandle<()>>,
}

impl Running {
    /// Starts `lockheed args..`.
    fn start(cluster: &Cluster, args: &[&str]) -> Self {
        let mut command = cluster.command("lockheed");
        command
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("lockheed starts");
        let stdout = Arc::<Mutex<String>>::default();
        let stderr = Arc::<Mutex<String>>::default();
        let readers = vec![
            collect(child.stdout.take().expect("stdout"), Arc::clone(&stdout)),
            collect(child.stderr.take().expect("stderr"), Arc::clone(&stderr)),
        ];
        Self {
            child,
            stdout,
            stderr,
            readers,
        }
    }

    /// lockheed's process id.
    fn pid(&self) -> Pid {
        let id = self.child.id().expect("lockheed runs");
        Pid::from_raw(i32::try_from(id).expect("a pid"))
    }

    fn stdout(&self) -> String {
        self.stdout
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn stderr(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Waits until stdout contains `text`, and returns stdout.
    async fn wait_for_stdout(&self, text: &str) -> String {
        self.wait_for(text, Self::stdout, "stdout").await
    }

    /// Waits until stderr contains `text`, and returns stderr.
    async fn wait_for_stderr(&self, text: &str) -> String {
        self.wait_for(text, Self::stderr, "stderr").await
    }

    async fn wait_for(&self, text: &str, read: fn(&Self) -> String, what: &str) -> String {
        let started = Instant::now();
        loop {
            let seen = read(self);
            if seen.contains(text) {
                return seen;
            }
            assert!(
                started.elapsed() < PATIENCE,
                "{text:?} never appeared on {what}\nstdout:\n{}\nstderr:\n{}",
                self.stdout(),
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits for lockheed to exit, and returns what it did.
    async fn finish(mut self) -> Output {
        let status = tokio::time::timeout(COMMAND_TIMEOUT, self.child.wait())
            .await
            .expect("lockheed exits in time")
            .expect("lockheed's status is read");
        for reader in self.readers.drain(..) {
            tokio::time::timeout(COMMAND_TIMEOUT, reader)
                .await
                .expect("the output ends")
                .expect("the output is read");
        }
        Output {
            status,
            stdout: self.stdout(),
            stderr: self.stderr(),
        }
    }
}

/// Appends what `pipe` says to `into` until it closes.
fn collect(
    mut pipe: impl AsyncRead + Unpin + Send + 'static,
    into: Arc<Mutex<String>>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut buffer = [0u8; 4096];
        loop {
            match pipe.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => into
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push_str(&String::from_utf8_lossy(&buffer[..n])),
            }
        }
    })
}

/// Whether process `pid` exists (a zombie counts; a reaped process does not).
fn alive(pid: Pid) -> bool {
    nix::sys::signal::kill(pid, None).is_ok()
}
