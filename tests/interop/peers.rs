//! The replicas of a mixed fleet, each a process of its own that prints one JSON line per
//! event: client-go's leader election (the Go programs of `interop/`) and this crate's
//! `LeaderElection` (this test binary run again, see `replica` in `main.rs`).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use lockheed::{LeaderElection, LeaseLocker, Lock};
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;

/// Set in a replica's environment: `<namespace> <lease> <identity> <lease seconds>`.
pub const REPLICA_VAR: &str = "LOCKHEED_INTEROP_REPLICA";

/// Whether the real control plane is there; says why a test returns when it is not.
pub fn control_plane(test: &str) -> bool {
    if std::env::var_os("LOCKHEED_CONTROL_PLANE").is_some() {
        return true;
    }
    // Past the test harness's capture, so that a plain `cargo test` shows what did not run.
    let _ = writeln!(
        std::io::stderr(),
        "{test}: needs scripts/control-plane (the real control plane) and the Go programs of \
         interop/: run scripts/control-plane -- cargo test --all-features --test interop \
         (skipped)"
    );
    false
}

/// The directory of the Go programs, built (once per test process) by `scripts/interop`.
///
/// # Panics
///
/// When they cannot be built: inside `scripts/control-plane`, that is a failure, never a skip.
pub fn go_bin_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/interop");
        let out = std::process::Command::new(&script)
            .arg("--print-bin-dir")
            .stderr(Stdio::inherit())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
        assert!(
            out.status.success(),
            "the Go programs of interop/ could not be built ({} --print-bin-dir: {}); \
             the interop tests need them",
            script.display(),
            out.status
        );
        PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
    })
    .clone()
}

/// Which program a replica runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// client-go's `leaderelection` (`interop/leaderelection`).
    ClientGo,
    /// This crate's `LeaderElection`.
    Lockheed,
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::ClientGo => "client-go",
            Self::Lockheed => "lockheed",
        })
    }
}

/// One event a replica printed (or, for `died`, what the harness saw).
#[derive(Debug, Clone, Deserialize)]
pub struct Event {
    pub event: String,
    pub who: String,
    pub at: DateTime<Utc>,
    #[serde(default)]
    pub token: Option<u64>,
    #[serde(default)]
    pub leader: Option<String>,
    #[serde(default)]
    pub ok: Option<bool>,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub client_go: Option<String>,
}

/// Every event of a fleet, in the order they were read.
#[derive(Clone)]
pub struct Log {
    events: Arc<Mutex<Vec<Event>>>,
    count: watch::Sender<usize>,
}

impl Log {
    pub fn new() -> Self {
        Self {
            events: Arc::default(),
            count: watch::Sender::new(0),
        }
    }

    pub fn push(&self, event: Event) {
        let mut events = self.events.lock().unwrap();
        events.push(event);
        self.count.send_replace(events.len());
    }

    pub fn events(&self) -> Vec<Event> {
        self.events.lock().unwrap().clone()
    }

    /// The first event from index `from` on that `pred` accepts, waiting `timeout` at most.
    pub async fn wait(
        &self,
        from: usize,
        timeout: Duration,
        pred: impl Fn(&Event) -> bool,
    ) -> Option<(usize, Event)> {
        let mut seen = self.count.subscribe();
        let until = tokio::time::Instant::now() + timeout;
        let mut next = from;
        loop {
            {
                let events = self.events.lock().unwrap();
                while next < events.len() {
                    if pred(&events[next]) {
                        return Some((next, events[next].clone()));
                    }
                    next += 1;
                }
            }
            if tokio::time::timeout_at(until, seen.changed())
                .await
                .is_err()
            {
                return None;
            }
        }
    }

    pub fn len(&self) -> usize {
        self.events.lock().unwrap().len()
    }
}

/// How a replica is run.
#[derive(Debug, Clone)]
pub struct Spec {
    pub id: String,
    pub kind: Kind,
    /// The Go program (`leaderelection-<client-go version>`), for [`Kind::ClientGo`].
    pub program: String,
    pub namespace: String,
    pub lease: String,
    pub lease_seconds: u64,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
    pub coordinated: bool,
}

/// A running replica.
pub struct Replica {
    pub spec: Spec,
    child: Child,
}

/// Starts a replica whose events go to `log`.
pub fn start(spec: &Spec, log: &Log, logs_dir: &std::path::Path) -> Replica {
    let stderr = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(logs_dir.join(format!("{}.stderr", spec.id)))
        .unwrap();
    let mut command = match spec.kind {
        Kind::ClientGo => {
            let mut c = Command::new(go_bin_dir().join(&spec.program));
            c.arg("-namespace")
                .arg(&spec.namespace)
                .arg("-lease")
                .arg(&spec.lease)
                .arg("-identity")
                .arg(&spec.id)
                .arg(format!("-lease-duration={}s", spec.lease_seconds))
                .arg(format!(
                    "-renew-deadline={}ms",
                    spec.renew_deadline.as_millis()
                ))
                .arg(format!("-retry-period={}ms", spec.retry_period.as_millis()))
                .arg(format!("-coordinated={}", spec.coordinated));
            c
        }
        Kind::Lockheed => {
            let mut c = Command::new(std::env::current_exe().unwrap());
            c.args(["--exact", "replica", "--nocapture", "--test-threads", "1"])
                .env(
                    REPLICA_VAR,
                    format!(
                        "{} {} {} {}",
                        spec.namespace, spec.lease, spec.id, spec.lease_seconds
                    ),
                )
                .env("RUST_BACKTRACE", "1");
            c
        }
    };
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(stderr))
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", spec.id));
    let stdout = child.stdout.take().unwrap();
    let log = log.clone();
    let id = spec.id.clone();
    tokio::spawn(async move {
        let mut lines = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if !line.starts_with('{') {
                continue; // the test harness's own lines, in a Rust replica
            }
            match serde_json::from_str::<Event>(&line) {
                Ok(event) => log.push(event),
                Err(e) => eprintln!("{id}: unreadable event {line:?}: {e}"),
            }
        }
    });
    Replica {
        spec: spec.clone(),
        child,
    }
}

impl Replica {
    /// Stops it with SIGTERM and waits until it has exited (it releases first).
    ///
    /// # Panics
    ///
    /// If it is still running 20 s later, or exits with an error.
    pub async fn stop(mut self) {
        let pid = self.child.id().expect("running");
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -TERM {pid}");
        let status = tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("{} did not stop within 20 s of SIGTERM", self.spec.id))
            .unwrap();
        assert!(status.success(), "{} exited with {status}", self.spec.id);
    }

    /// Kills it with SIGKILL; returns once it is reaped, with the time it was gone by.
    pub async fn crash(mut self) -> DateTime<Utc> {
        self.child.start_kill().unwrap();
        self.child.wait().await.unwrap();
        Utc::now()
    }
}

/// One leadership term of a replica, as it ran it.
#[derive(Debug, Clone)]
pub struct Term {
    pub who: String,
    pub token: Option<u64>,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

/// The terms in `events` (with `deaths`: when crashed replicas were gone), ended at `end` if
/// still running.
pub fn terms(
    events: &[Event],
    deaths: &[(String, DateTime<Utc>)],
    end: DateTime<Utc>,
) -> Vec<Term> {
    let mut open: BTreeMap<String, (Option<u64>, DateTime<Utc>)> = BTreeMap::new();
    let mut all = Vec::new();
    let mut deaths = deaths.to_vec();
    deaths.sort_by_key(|d| d.1);
    let mut deaths = deaths.into_iter().peekable();
    let mut events = events.to_vec();
    events.sort_by_key(|e| e.at);
    for event in &events {
        while let Some((who, at)) = deaths.next_if(|d| d.1 <= event.at) {
            if let Some((token, start)) = open.remove(&who) {
                all.push(Term {
                    who,
                    token,
                    start,
                    end: at,
                });
            }
        }
        match event.event.as_str() {
            "started_leading" => {
                open.insert(event.who.clone(), (event.token, event.at));
            }
            "stopped_work" => {
                if let Some((token, start)) = open.remove(&event.who) {
                    all.push(Term {
                        who: event.who.clone(),
                        token,
                        start,
                        end: event.at,
                    });
                }
            }
            _ => {}
        }
    }
    for (who, at) in deaths {
        if let Some((token, start)) = open.remove(&who) {
            all.push(Term {
                who,
                token,
                start,
                end: at,
            });
        }
    }
    all.extend(open.into_iter().map(|(who, (token, start))| Term {
        who,
        token,
        start,
        end,
    }));
    all.sort_by_key(|t| t.start);
    all
}

/// Pairs of terms that overlap: two leaders at once.
pub fn overlaps(terms: &[Term]) -> Vec<String> {
    let mut found = Vec::new();
    for (i, a) in terms.iter().enumerate() {
        for b in &terms[i + 1..] {
            if b.start < a.end {
                found.push(format!("{a:?} overlaps {b:?}"));
            }
        }
    }
    found
}

fn emit(who: &str, lease: &str, event: &str, extra: &serde_json::Value) {
    let mut line = serde_json::json!({
        "event": event,
        "who": who,
        "lease": lease,
        "at": Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
    });
    if let (Some(line), Some(extra)) = (line.as_object_mut(), extra.as_object()) {
        line.extend(extra.clone());
    }
    println!("{line}");
}

/// A `LeaderElection` replica: leads until SIGTERM (then releases), printing its events as the
/// Go program does.
pub async fn run_replica(config: &str) {
    let parts: Vec<&str> = config.split(' ').collect();
    let [namespace, lease, id, seconds] = parts[..] else {
        panic!("{REPLICA_VAR}={config:?}");
    };
    let seconds: u64 = seconds.parse().unwrap();
    let client = kube::Client::try_default().await.unwrap();
    let lock = Lock::new(lease, LeaseLocker::new(client, namespace))
        .with_holder(id)
        .with_duration(Duration::from_secs(seconds));
    // What the election leaves to the background when it stops (withdrawing a standby's place
    // in the queue, releasing a Lease handed over meanwhile) must finish before the process
    // exits, or a leader's release hands the Lease to a replica that is gone.
    let settle = lock.clone();
    let election = LeaderElection::new(lock);
    let mut leader = election.leader();
    let (who, name) = (id.to_owned(), format!("{namespace}/{lease}"));
    tokio::spawn(async move {
        let mut last = None;
        loop {
            let now = leader.borrow_and_update().as_ref().map(|h| h.id.clone());
            if now.is_some() && now != last {
                emit(
                    &who,
                    &name,
                    "new_leader",
                    &serde_json::json!({ "leader": now }),
                );
                last = now;
            }
            if leader.changed().await.is_err() {
                return;
            }
        }
    });
    let name = format!("{namespace}/{lease}");
    emit(
        id,
        &name,
        "ready",
        &serde_json::json!({ "client": "lockheed" }),
    );
    let mut terminate =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap();
    let shutdown = async {
        terminate.recv().await;
        emit(id, &name, "stop_requested", &serde_json::Value::Null);
    };
    let result = election
        .run(shutdown, |term| {
            let name = name.clone();
            async move {
                emit(
                    id,
                    &name,
                    "started_leading",
                    &serde_json::json!({ "token": term.token() }),
                );
                term.ended().await;
                emit(id, &name, "stopped_work", &serde_json::Value::Null);
            }
        })
        .await;
    if tokio::time::timeout(Duration::from_secs(10), settle.settle())
        .await
        .is_err()
    {
        emit(id, &name, "unsettled", &serde_json::Value::Null);
    }
    if let Err(e) = result {
        emit(
            id,
            &name,
            "error",
            &serde_json::json!({ "error": e.to_string() }),
        );
        std::process::exit(1);
    }
    emit(id, &name, "exit", &serde_json::Value::Null);
}
