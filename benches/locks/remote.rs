//! The fake API server in a process of its own, for the scenarios that measure the memory
//! and CPU time of the lock-holding process: in process, the server's own objects, watch
//! history and request log would count as the client's.
//!
//! The child is this benchmark binary again, started with `LOCKHEED_BENCH_ROLE=server`. It
//! writes a kubeconfig, says `ready` on stdout, and answers one line per command on stdin:
//! `counts` (requests per verb since the last reset), `reset`. It exits when stdin closes.

use std::io::{BufRead as _, Write as _};
use std::path::PathBuf;
use std::process::Stdio;

use kube::config::{KubeConfigOptions, Kubeconfig};
use lockheed::testing::FakeApiServer;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};

use crate::report::Counts;

const ROLE: &str = "LOCKHEED_BENCH_ROLE";
const KUBECONFIG: &str = "LOCKHEED_BENCH_KUBECONFIG";

/// The child's side: serve until stdin closes.
pub fn serve() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime");
    let path = std::env::var(KUBECONFIG).expect("the parent names the kubeconfig");
    let server = runtime.block_on(async {
        FakeApiServer::builder()
            // The log is not read here; keep its memory small.
            .request_log_capacity(1_000)
            .start()
            .await
            .expect("the server starts")
    });
    server.write_kubeconfig(&path).expect("the kubeconfig");
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready").expect("stdout");
    out.flush().expect("stdout");
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        match line.trim() {
            "counts" => {
                let counts: Vec<String> = server
                    .counts()
                    .iter()
                    .map(|(verb, n)| format!("{verb}={n}"))
                    .collect();
                writeln!(out, "{}", counts.join(" ")).expect("stdout");
            }
            "reset" => {
                server.reset_counters();
                writeln!(out, "ok").expect("stdout");
            }
            other => writeln!(out, "unknown command {other:?}").expect("stdout"),
        }
        out.flush().expect("stdout");
    }
    drop(server);
    runtime.shutdown_background();
}

/// The parent's side: a running server child.
pub struct Remote {
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
    kubeconfig: PathBuf,
    _dir: tempfile::TempDir,
}

impl Remote {
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let kubeconfig = dir.path().join("kubeconfig");
        let mut child = tokio::process::Command::new(std::env::current_exe().expect("this binary"))
            .env(ROLE, "server")
            .env(KUBECONFIG, &kubeconfig)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("the server child starts");
        let stdin = child.stdin.take().expect("piped");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped")).lines();
        let ready = stdout.next_line().await.expect("the child's stdout");
        assert_eq!(ready.as_deref(), Some("ready"), "the server child failed");
        Self {
            child,
            stdin,
            stdout,
            kubeconfig,
            _dir: dir,
        }
    }

    /// The process id, for its CPU time.
    pub fn pid(&self) -> String {
        self.child.id().expect("running").to_string()
    }

    /// A new client (a new connection pool: another process, as far as the server can tell).
    pub async fn client(&self) -> kube::Client {
        let kubeconfig = Kubeconfig::read_from(&self.kubeconfig).expect("the kubeconfig");
        let config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .expect("a config");
        kube::Client::try_from(config).expect("a client")
    }

    async fn ask(&mut self, command: &str) -> String {
        self.stdin
            .write_all(format!("{command}\n").as_bytes())
            .await
            .expect("the child's stdin");
        self.stdin.flush().await.expect("the child's stdin");
        self.stdout
            .next_line()
            .await
            .expect("the child's stdout")
            .expect("an answer")
    }

    pub async fn counts(&mut self) -> Counts {
        let line = self.ask("counts").await;
        Counts(
            line.split_whitespace()
                .filter_map(|pair| pair.split_once('='))
                .map(|(verb, n)| (verb.to_owned(), n.parse().expect("a count")))
                .collect(),
        )
    }

    pub async fn reset(&mut self) {
        assert_eq!(self.ask("reset").await, "ok");
    }
}

/// Runs this binary again in `role`, waiting for it; its output goes to ours.
pub fn run_child(role: &str, quick: bool) {
    let mut command = std::process::Command::new(std::env::current_exe().expect("this binary"));
    command.env(ROLE, role);
    if quick {
        command.env(crate::QUICK, "1");
    }
    let status = command.status().expect("the child starts");
    assert!(status.success(), "the {role} scenario failed: {status}");
}

/// The role this process was started in, if it is a child.
pub fn role() -> Option<String> {
    std::env::var(ROLE).ok()
}
