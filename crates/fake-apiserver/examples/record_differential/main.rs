//! Records the sequences of the differential tests (`tests/differential`): real clients run
//! against the real kube-apiserver through a recording proxy, and what each sent and got is
//! saved as one JSON file per sequence.
//!
//! Run it inside `scripts/control-plane` (it needs the real server, and etcd for the
//! compaction):
//!
//! ```sh
//! scripts/control-plane -- cargo run -p lockheed-fake-apiserver --example record_differential
//! scripts/control-plane -- cargo run -p lockheed-fake-apiserver --example record_differential -- kubectl protocol-watch
//! ```
//!
//! Arguments name the sequences to record (by prefix; all by default); `--out DIR` writes
//! elsewhere than `tests/differential/sequences`. Each new recording is replayed at once
//! against the real server, in a namespace of its own, and must reproduce itself: a
//! sequence whose answers depend on timing is reported (and not written) instead.

// The shared modules of the test target; the recorder uses only part of each.
#[allow(dead_code)]
#[path = "../../tests/differential/compare.rs"]
mod compare;
#[allow(dead_code)]
#[path = "../../tests/differential/real.rs"]
mod real;
#[allow(dead_code)]
#[path = "../../tests/differential/replay.rs"]
mod replay;
#[allow(dead_code)]
#[path = "../../tests/differential/sequence.rs"]
mod sequence;

mod clients;
mod protocol;
mod proxy;

use std::path::PathBuf;
use std::process::ExitCode;

use kube::config::Kubeconfig;

use self::proxy::Proxy;
use self::real::RealServer;
use self::sequence::Sequence;

/// One recording: a proxy in front of the real server, and a fresh namespace.
pub struct Session {
    proxy: Proxy,
    namespace: String,
    real: RealServer,
}

impl Session {
    async fn start(upstream: &kube::Client) -> Result<Self, String> {
        let namespace = RealServer::create_namespace(upstream, "lockheed-test-").await?;
        let proxy = Proxy::start(upstream.clone())
            .await
            .map_err(|e| format!("proxy: {e}"))?;
        Ok(Self {
            proxy,
            real: RealServer::new(upstream.clone(), &namespace),
            namespace,
        })
    }

    /// A kube-rs client of the proxy whose default namespace is the session's.
    pub fn client(&self) -> kube::Client {
        self.proxy.client(&self.namespace)
    }

    /// The session's namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// A kubeconfig of the proxy, in the session's namespace.
    pub fn kubeconfig(&self) -> Kubeconfig {
        self.proxy.kubeconfig(&self.namespace)
    }

    /// Compacts the real server's history (see `Action::Compact`), as a step of the sequence.
    pub async fn compact(&self) -> Result<(), String> {
        use self::replay::Server as _;
        let action = self.proxy.record_action();
        self.real.act(&action).await
    }
}

/// Every sequence: its name, its client, what it does.
const SEQUENCES: &[(&str, &str, &str)] = &[
    (
        "protocol-crud",
        "raw HTTP (kube::Client::send)",
        "create, get, update, patch and delete of ConfigMaps, with every precondition and conflict",
    ),
    (
        "protocol-validation",
        "raw HTTP (kube::Client::send)",
        "names, keys, labels and sizes that fail validation (422, 413), and field validation",
    ),
    (
        "protocol-lease",
        "raw HTTP (kube::Client::send)",
        "Leases and their MicroTimes, written with every precision and offset",
    ),
    (
        "protocol-list",
        "raw HTTP (kube::Client::send)",
        "list paging and label and field selectors",
    ),
    (
        "protocol-watch",
        "raw HTTP (kube::Client::send)",
        "watches: events, selectors, bookmarks, timeouts, initial events, versions too large",
    ),
    (
        "protocol-apply",
        "raw HTTP (kube::Client::send)",
        "server-side apply by several managers: managedFields, conflicts, force",
    ),
    (
        "protocol-compaction",
        "raw HTTP (kube::Client::send)",
        "watches and list pages from before a compaction: 410 Gone",
    ),
    (
        "kube-runtime-watcher",
        "kube-runtime 5.0 watcher",
        "watcher with list-then-watch, then with streaming lists, while ConfigMaps change",
    ),
    (
        "kube-runtime-reflector",
        "kube-runtime 5.0 reflector",
        "a reflector with a label selector and pages of 2 while ConfigMaps change",
    ),
    (
        "kube-lease-manager",
        "kube-lease-manager 0.13",
        "two managers take, renew, hand over and release a Lease",
    ),
    (
        "kubectl",
        "kubectl v1.37.2",
        "kubectl create, get, label, annotate, patch, apply (client- and server-side), wait and delete",
    ),
    (
        "lockheed-",
        "lockheed's tests/locks suite (TestCluster on the real server)",
        "one test of lockheed's behavioural suite",
    ),
];

/// The tests of lockheed's suite that are recorded: one of each kind of request pattern.
/// Left out: tests whose requests race each other (many contenders, a shared watch of many
/// locks), which no replay can put in the same order; tests of objects near 1 MiB (too large to
/// keep; protocol-validation covers the limit); and tests that act through impersonation, which
/// only the real server's RBAC decides (the fake server authenticates bearer tokens).
const LOCKHEED_TESTS: &[&str] = &[
    "suite::kube::acquire_and_release",
    "suite::kube::acquire_waits_for_the_holder",
    "suite::kube::a_semaphore_admits_its_capacity",
    "suite::kube::readers_share_and_writers_exclude",
    "suite::kube::tags_merge_and_reset",
    "suite::kube::fencing_tokens_increase_across_holders",
    "suite::kube::force_takes_over_by_tag_and_the_loser_is_told",
    "suite::kube::list_with_nested_conditions",
    "suite::kube::corrupt_state_is_reported_and_never_overwritten",
    "suite::kube::renewal_keeps_a_lock_past_its_duration",
    "suite::kube::expired_leases_can_be_taken",
    "suite::lease::acquire_and_release",
    "suite::lease::acquire_waits_for_the_holder",
    "suite::lease::force_takes_over_by_tag_and_the_loser_is_told",
    "suite::lease::renewal_keeps_a_lock_past_its_duration",
    "kube_format::writes_keep_every_managers_fields",
    "lease_format::every_write_is_a_put_of_the_lease_read_with_its_resource_version",
    "kube_lock_format::empty_with_max_3_admits_three",
    "kube_lock_format::held_by_holder_1_with_max_1",
    "unexpiring::a_recreated_lock_is_noticed_through_the_watch",
];

fn repo_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(0) => ExitCode::SUCCESS,
        Ok(unstable) => {
            eprintln!("recorder: {unstable} sequence(s) did not reproduce themselves");
            ExitCode::FAILURE
        }
        Err(err) => {
            eprintln!("recorder: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<usize, String> {
    let mut out = repo_dir().join("tests/differential/sequences");
    let mut wanted = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--out" => out = PathBuf::from(args.next().ok_or("--out needs a directory")?),
            _ => wanted.push(arg),
        }
    }
    let kubeconfig = Kubeconfig::read().map_err(|e| format!("KUBECONFIG: {e}"))?;
    let upstream = real::client(kubeconfig).await?;
    std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let chosen =
        |name: &str| wanted.is_empty() || wanted.iter().any(|w| name.starts_with(w.as_str()));
    let mut unstable = 0;
    for &(name, client, description) in SEQUENCES {
        if name == "lockheed-" {
            let tests: Vec<&str> = LOCKHEED_TESTS
                .iter()
                .copied()
                .filter(|test| chosen(&lockheed_name(test)))
                .collect();
            if tests.is_empty() {
                continue;
            }
            let binary = clients::locks_binary()?;
            for test in tests {
                let sequence = clients::lockheed(&upstream, &binary, test, client).await?;
                unstable +=
                    usize::from(!keep(&upstream, &out, &lockheed_name(test), &sequence).await?);
            }
            continue;
        }
        if !chosen(name) {
            continue;
        }
        eprintln!("recorder: {name}");
        let session = Session::start(&upstream).await?;
        match name {
            "protocol-crud" => protocol::crud(&session).await?,
            "protocol-validation" => protocol::validation(&session).await?,
            "protocol-lease" => protocol::lease(&session).await?,
            "protocol-list" => protocol::list(&session).await?,
            "protocol-watch" => protocol::watch(&session).await?,
            "protocol-apply" => protocol::apply(&session).await?,
            "protocol-compaction" => protocol::compaction(&session).await?,
            "kube-runtime-watcher" => clients::watcher(&session).await?,
            "kube-runtime-reflector" => clients::reflector(&session).await?,
            "kube-lease-manager" => clients::lease_manager(&session).await?,
            "kubectl" => clients::kubectl(&session).await?,
            other => return Err(format!("no scenario {other}")),
        }
        let namespace = session.namespace.clone();
        let sequence = session.proxy.finish(client, description, &namespace).await;
        unstable += usize::from(!keep(&upstream, &out, name, &sequence).await?);
    }
    Ok(unstable)
}

fn lockheed_name(test: &str) -> String {
    format!("lockheed-{}", test.replace("::", "-").replace('_', "-"))
}

/// Replays a new recording against the real server; writes it when it reproduces itself.
async fn keep(
    upstream: &kube::Client,
    out: &std::path::Path,
    name: &str,
    sequence: &Sequence,
) -> Result<bool, String> {
    let exchanges = sequence.exchanges().count();
    let namespace = RealServer::create_namespace(upstream, "lockheed-test-").await?;
    let real = RealServer::new(upstream.clone(), &namespace);
    let replayed = replay::replay(sequence, &real).await?;
    let differences = compare::compare(name, sequence, &replayed, &namespace);
    let path = out.join(format!("{name}.json"));
    if differences.is_empty() {
        sequence
            .write(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        eprintln!(
            "recorder: {name}: {exchanges} exchanges, reproduced; written to {}",
            path.display()
        );
        return Ok(true);
    }
    eprintln!(
        "recorder: {name}: {exchanges} exchanges, {} differences on a second run:",
        differences.len()
    );
    for difference in differences.iter().take(20) {
        eprintln!("  {difference}");
    }
    let path = out.join(format!("{name}.unstable"));
    sequence
        .write(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(false)
}
