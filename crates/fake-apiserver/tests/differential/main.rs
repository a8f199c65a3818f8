//! Differential tests of `lockheed_fake_apiserver::FakeApiServer` against kube-apiserver.
//!
//! Real clients (this workspace's lock suite, kube-lease-manager, kube-runtime's watcher and
//! reflector, kubectl, and raw requests written for the corners: validation, paging,
//! selectors, bookmarks, compaction) were recorded against a real kube-apiserver v1.37.2 and
//! etcd v3.7.0 through a recording proxy (`examples/record_differential`); each sequence of
//! requests and answers is a JSON file under `sequences/`. These tests replay every sequence:
//!
//! - against the fake server, always (no Go, no control plane needed), and compare its answers
//!   field by field with the recorded ones after normalisation (`compare.rs`). Every
//!   difference left is listed in `known.rs` and named in the crate's "What it does not
//!   emulate"; the test pins them, so a new difference (or one fixed) fails it;
//! - against the real server too when there is one (inside `scripts/control-plane`), where
//!   there must be no difference at all: that catches recordings that drift from the server.
//!
//! To record the sequences again (a few minutes, most of them the compaction's wait):
//!
//! ```sh
//! scripts/control-plane -- cargo run -p lockheed-fake-apiserver --example record_differential
//! ```

mod compare;
mod known;
mod real;
mod replay;
mod sequence;

use std::collections::BTreeMap;
use std::path::PathBuf;

use futures::StreamExt;
use lockheed_fake_apiserver::{FakeApiServer, ServerKind, TestCluster};

use self::compare::Difference;
use self::real::RealServer;
use self::replay::Server;
use self::sequence::{Action, Sequence, Step};

fn sequences() -> Vec<(String, Sequence)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/differential/sequences");
    let sequences = Sequence::read_all(&dir).unwrap_or_else(|err| panic!("{err}"));
    assert!(!sequences.is_empty(), "no sequences in {}", dir.display());
    sequences
}

/// A fresh fake server, and a namespace named as long as the recordings' (so that protobuf
/// bodies keep their lengths when it is rewritten).
struct Fake {
    server: FakeApiServer,
    client: kube::Client,
    namespace: String,
}

impl Fake {
    async fn start(recorded_namespace: &str) -> Self {
        let server = FakeApiServer::start()
            .await
            .expect("the fake server starts");
        let length = recorded_namespace.len().clamp(1, 63);
        let namespace = if length > "lockheed-fake-".len() {
            format!("{:0<length$}", "lockheed-fake-")
        } else {
            "f".repeat(length)
        };
        server.create_namespace(&namespace);
        let mut config = server.config();
        config.default_retry = false;
        let client = kube::Client::try_from(config).expect("a client of the fake server");
        Self {
            server,
            client,
            namespace,
        }
    }
}

impl Server for Fake {
    fn client(&self) -> &kube::Client {
        &self.client
    }

    fn namespace(&self) -> &str {
        &self.namespace
    }

    async fn act(&self, action: &Action) -> Result<(), String> {
        match action {
            Action::Compact { .. } => self.server.compact(),
        }
        Ok(())
    }
}

/// What the replays of every sequence found.
#[derive(Default)]
struct Findings {
    sequences: usize,
    compared: usize,
    differences: Vec<Difference>,
}

impl Findings {
    fn add(&mut self, sequence: &Sequence, differences: Vec<Difference>) {
        self.sequences += 1;
        self.compared += sequence.exchanges().count();
        self.differences.extend(differences);
    }

    /// The differences by signature, each with how often it occurs and its first occurrence.
    fn by_signature(&self) -> BTreeMap<String, (usize, &Difference)> {
        let mut found: BTreeMap<String, (usize, &Difference)> = BTreeMap::new();
        for difference in &self.differences {
            found
                .entry(difference.signature())
                .or_insert((0, difference))
                .0 += 1;
        }
        found
    }

    fn report(&self, server: &str) -> String {
        let mut report = format!(
            "{} sequences, {} answers compared on the {server}: {} differences of {} kinds\n",
            self.sequences,
            self.compared,
            self.differences.len(),
            self.by_signature().len()
        );
        for (signature, (count, first)) in self.by_signature() {
            report.push_str(&format!("  [{count}x] {signature}\n        e.g. {first}\n"));
        }
        report
    }
}

/// Set to a directory, the replays' answers are written there (`<sequence>.<server>.json`), to
/// look at a difference whole.
const DUMP_VAR: &str = "LOCKHEED_DIFFERENTIAL_DUMP";

fn dump(name: &str, server: &str, replayed: &replay::Replayed) {
    let Some(dir) = std::env::var_os(DUMP_VAR) else {
        return;
    };
    let path = PathBuf::from(dir).join(format!("{name}.{server}.json"));
    let text = serde_json::to_string_pretty(&replayed.responses).expect("answers serialise");
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

async fn replay_on_fake(name: &str, sequence: &Sequence) -> Vec<Difference> {
    let fake = Fake::start(&sequence.namespace).await;
    let replayed = replay::replay(sequence, &fake)
        .await
        .unwrap_or_else(|err| panic!("{name}: the replay broke: {err}"));
    dump(name, "fake", &replayed);
    compare::compare(name, sequence, &replayed, &fake.namespace)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fake_server_answers_as_kube_apiserver_but_for_the_known_differences() {
    let sequences = sequences();
    let results: Vec<Vec<Difference>> = futures::stream::iter(&sequences)
        .map(|(name, sequence)| replay_on_fake(name, sequence))
        .buffered(4)
        .collect()
        .await;
    let mut findings = Findings::default();
    for ((_, sequence), differences) in sequences.iter().zip(results) {
        findings.add(sequence, differences);
    }
    let report = findings.report("fake server");
    println!("{report}");
    let signatures = findings.by_signature();
    let found: Vec<&str> = signatures.keys().map(String::as_str).collect();
    let known: Vec<&str> = known::KNOWN
        .iter()
        .map(|(signature, _)| *signature)
        .collect();
    let new: Vec<&&str> = found.iter().filter(|s| !known.contains(s)).collect();
    let gone: Vec<&&str> = known.iter().filter(|s| !found.contains(s)).collect();
    assert!(
        new.is_empty() && gone.is_empty(),
        "the differences changed: fix each new one in the fake server or name it in the \
         README's \"What it does not emulate\" and in known.rs; remove the fixed ones from \
         known.rs.\nnew: {new:#?}\nfixed: {gone:#?}\n{report}"
    );
    assert_eq!(found.len(), known::PINNED, "{report}");
}

/// The comparison can fail: a recording changed in three places (a status code, a value, a
/// watch event's type) differs from the fake server's answers in those places, and in no other.
#[tokio::test]
async fn a_changed_recording_is_caught() {
    let (name, mut sequence) = sequences()
        .into_iter()
        .find(|(name, _)| name == "protocol-watch")
        .expect("the sequence protocol-watch");
    let mut exchanges = sequence.steps.iter_mut().filter_map(|step| match step {
        Step::Exchange(exchange) => Some(&mut **exchange),
        Step::Action(_) => None,
    });
    let (Some(created), Some(watched), Some(patched)) =
        (exchanges.next(), exchanges.next(), exchanges.nth(2))
    else {
        panic!("protocol-watch starts with a create, three watches and a patch");
    };
    created.response.json.as_mut().expect("a body")["data"]["k"] = "changed".into();
    let events = &mut watched.response.watch.as_mut().expect("a watch").events;
    events[0].event["type"] = "ADDED".into();
    patched.response.status = 409;
    let differences = replay_on_fake(&name, &sequence).await;
    let mut found: Vec<String> = differences
        .iter()
        .filter(|d| [0, 1, 4].contains(&d.exchange))
        .map(Difference::signature)
        .collect();
    found.sort();
    assert_eq!(
        found,
        [
            "PATCH configmaps (merge): status: 409 → 200",
            "POST configmaps: body.data.k: differs",
            "WATCH configmaps: watch.events[*].type: ADDED → MODIFIED",
        ],
        "{differences:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_recordings_still_hold_on_the_real_server() {
    if ServerKind::from_env() != ServerKind::Real {
        println!("skipped: no real server (run inside scripts/control-plane)");
        return;
    }
    let sequences = sequences();
    // The compaction's wait fills the watch cache with writes of its own: after the others.
    let (quick, slow): (Vec<_>, Vec<_>) = sequences
        .iter()
        .partition(|(_, s)| !s.steps.iter().any(|step| matches!(step, Step::Action(_))));
    let mut findings = Findings::default();
    for batch in [quick, slow] {
        let results: Vec<Vec<Difference>> = futures::stream::iter(&batch)
            .map(|(name, sequence)| replay_on_real(name, sequence))
            .buffered(4)
            .collect()
            .await;
        for ((_, sequence), differences) in batch.iter().zip(results) {
            findings.add(sequence, differences);
        }
    }
    let report = findings.report("real server");
    println!("{report}");
    assert!(
        findings.differences.is_empty(),
        "the real server no longer answers as recorded: record again (see this file's docs)\n{report}"
    );
}

async fn replay_on_real(name: &str, sequence: &Sequence) -> Vec<Difference> {
    let cluster = TestCluster::real()
        .await
        .expect("a namespace on the real server");
    let client = real::client(cluster.kubeconfig())
        .await
        .expect("a client of the real server");
    let server = RealServer::new(client, cluster.namespace());
    let replayed = replay::replay(sequence, &server)
        .await
        .unwrap_or_else(|err| panic!("{name}: the replay broke: {err}"));
    dump(name, "real", &replayed);
    compare::compare(name, sequence, &replayed, cluster.namespace())
}
