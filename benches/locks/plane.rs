//! The real control plane of `scripts/control-plane`, as the real-server scenarios (8 to 12)
//! see it: whether the environment gives one, the pids and ports of kube-apiserver and etcd
//! (from the supervisor's control socket), their CPU time, etcd's database size, and
//! kube-apiserver's own count of the requests it served (its `/metrics`).

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use lockheed::testing::CONTROL_PLANE_VAR;

use crate::report::Counts;
use crate::sys::cpu_time;

/// Which servers the benchmark runs on: `fake` (scenarios 1 to 7 only) or `real` (scenarios
/// 8 to 12 as well, on the cluster of `KUBECONFIG` beside the fake server). Unset, `real`
/// inside `scripts/control-plane` (which sets [`CONTROL_PLANE_VAR`]) and `fake` elsewhere.
pub const SERVER: &str = "LOCKHEED_BENCH_SERVER";

/// Whether the environment gives a real server; see [`SERVER`].
pub fn real_wanted() -> bool {
    match std::env::var(SERVER).as_deref() {
        Ok("real") => true,
        Ok("fake") => false,
        Ok(other) => panic!("{SERVER}={other:?}: expected \"fake\" or \"real\""),
        Err(_) => std::env::var_os(CONTROL_PLANE_VAR).is_some(),
    }
}

/// One etcd member.
#[derive(Debug, Clone)]
pub struct Etcd {
    pub pid: u32,
    pub client_port: u16,
}

/// The processes of the control plane of this run.
#[derive(Debug, Clone)]
pub struct ControlPlane {
    pub apiserver_pid: u32,
    pub etcd: Vec<Etcd>,
}

/// CPU time of the control plane's processes, read together.
#[derive(Debug, Clone, Copy, Default)]
pub struct Cpu {
    pub apiserver: Duration,
    pub etcd: Duration,
}

impl Cpu {
    /// What was spent since `earlier`, in cores over `secs`: (kube-apiserver, etcd).
    pub fn cores_since(&self, earlier: &Self, secs: f64) -> (f64, f64) {
        (
            self.apiserver
                .saturating_sub(earlier.apiserver)
                .as_secs_f64()
                / secs,
            self.etcd.saturating_sub(earlier.etcd).as_secs_f64() / secs,
        )
    }
}

/// What etcd says about its database (the first member's `/metrics`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Db {
    /// `etcd_mvcc_db_total_size_in_bytes`: the bbolt file, free pages included.
    pub total: f64,
    /// `etcd_mvcc_db_total_size_in_use_in_bytes`: the pages in use.
    pub in_use: f64,
    /// `etcd_debugging_mvcc_current_revision`: one more per write to etcd.
    pub revision: f64,
    /// `etcd_debugging_mvcc_compact_revision`: the revision of the last compaction.
    pub compacted: f64,
}

impl ControlPlane {
    /// The control plane `scripts/control-plane` runs around this process, from the `status`
    /// answer of its control socket; `None` outside it (a real cluster of another kind: the
    /// CPU and database figures are then left out).
    pub fn from_env() -> Option<Self> {
        let dir = PathBuf::from(std::env::var_os(CONTROL_PLANE_VAR)?);
        let mut socket = UnixStream::connect(dir.join("control.sock")).expect("the control socket");
        socket.write_all(b"status\n").expect("the control socket");
        let mut answer = String::new();
        BufReader::new(socket)
            .read_line(&mut answer)
            .expect("the control socket answers");
        let status: serde_json::Value = serde_json::from_str(&answer).expect("a JSON answer");
        assert_eq!(status["ok"], true, "status: {answer}");
        let components = status["components"].as_array().expect("components");
        let pid = |c: &serde_json::Value| {
            u32::try_from(c["pid"].as_u64().expect("a pid")).expect("a pid fits")
        };
        let apiserver_pid = components
            .iter()
            .find(|c| c["name"] == "apiserver")
            .map(pid)
            .expect("kube-apiserver runs");
        let etcd = components
            .iter()
            .filter(|c| c["name"].as_str().is_some_and(|n| n.starts_with("etcd")))
            .map(|c| Etcd {
                pid: pid(c),
                client_port: u16::try_from(c["ports"]["client"].as_u64().expect("a port"))
                    .expect("a port fits"),
            })
            .collect();
        Some(Self {
            apiserver_pid,
            etcd,
        })
    }

    /// CPU time so far of kube-apiserver and of every etcd member.
    pub fn cpu(&self) -> Cpu {
        Cpu {
            apiserver: cpu_time(&self.apiserver_pid.to_string()),
            etcd: self.etcd.iter().map(|e| cpu_time(&e.pid.to_string())).sum(),
        }
    }

    /// The first etcd member's `/metrics`, over plain HTTP on loopback.
    fn etcd_metrics(&self) -> String {
        let port = self.etcd[0].client_port;
        let mut stream =
            std::net::TcpStream::connect(("127.0.0.1", port)).expect("etcd's client port");
        stream
            .write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .expect("etcd's client port");
        let mut text = String::new();
        stream.read_to_string(&mut text).expect("etcd's metrics");
        text
    }

    /// The database's size and revisions now.
    pub fn db(&self) -> Db {
        let text = self.etcd_metrics();
        Db {
            total: metric(&text, "etcd_mvcc_db_total_size_in_bytes", &[]),
            in_use: metric(&text, "etcd_mvcc_db_total_size_in_use_in_bytes", &[]),
            revision: metric(&text, "etcd_debugging_mvcc_current_revision", &[]),
            compacted: metric(&text, "etcd_debugging_mvcc_compact_revision", &[]),
        }
    }

    /// etcd's version, as its metrics say.
    pub fn etcd_version(&self) -> String {
        let text = self.etcd_metrics();
        text.lines()
            .find_map(|l| l.strip_prefix("etcd_server_version{server_version=\""))
            .and_then(|rest| rest.split('"').next())
            .unwrap_or("unknown")
            .to_owned()
    }
}

/// The sum of the samples of metric `name` (Prometheus text format) whose labels include
/// every pair of `labels`.
fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?;
            let (labelled, value) = match rest.strip_prefix('{') {
                Some(rest) => rest.split_once("} ")?,
                None => ("", rest.strip_prefix(' ')?),
            };
            labels
                .iter()
                .all(|(k, v)| labelled.contains(&format!("{k}=\"{v}\"")))
                .then(|| value.trim().parse::<f64>().ok())
                .flatten()
        })
        .sum()
}

/// kube-apiserver's `/metrics`, read once: what [`configmap_counts`] and [`put_codes`]
/// read, so that both describe the same moment.
pub async fn apiserver_metrics(client: &kube::Client) -> String {
    let request = http::Request::get("/metrics")
        .body(Vec::new())
        .expect("a request");
    client.request_text(request).await.expect("/metrics")
}

/// kube-apiserver's own count of the ConfigMap requests it has served since it started
/// (`apiserver_request_total`), by verb as the fake server counts them, and how many of
/// them it answered with 409 Conflict. A watch counts when it ends.
pub async fn apiserver_counts(client: &kube::Client) -> (Counts, u64) {
    configmap_counts(&apiserver_metrics(client).await)
}

/// [`apiserver_counts`] of metrics already read.
pub fn configmap_counts(text: &str) -> (Counts, u64) {
    let mut counts = Counts::default();
    for (method, verb) in [
        ("GET", "get"),
        ("LIST", "list"),
        ("WATCH", "watch"),
        ("POST", "create"),
        ("PUT", "update"),
        ("PATCH", "patch"),
        ("DELETE", "delete"),
    ] {
        let n = metric(
            text,
            "apiserver_request_total",
            &[("resource", "configmaps"), ("verb", method)],
        );
        if n > 0.0 {
            counts.0.insert(verb.to_owned(), n as u64);
        }
    }
    let conflicts = metric(
        text,
        "apiserver_request_total",
        &[("resource", "configmaps"), ("code", "409")],
    );
    (counts, conflicts as u64)
}

/// kube-apiserver's answers to ConfigMap PUTs since it started, by status code (keys are
/// the codes), from its metrics.
pub fn put_codes(text: &str) -> Counts {
    let mut codes = Counts::default();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("apiserver_request_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.split_once("} ") else {
            continue;
        };
        if !(labels.contains("resource=\"configmaps\"") && labels.contains("verb=\"PUT\"")) {
            continue;
        }
        let code = labels
            .split(',')
            .find_map(|l| l.strip_prefix("code=\""))
            .map_or("?", |c| c.trim_end_matches('"'));
        let n = value.trim().parse::<f64>().unwrap_or(0.0) as u64;
        *codes.0.entry(code.to_owned()).or_default() += n;
    }
    codes
}

/// `later - earlier`, verb by verb.
pub fn counts_since(later: &Counts, earlier: &Counts) -> Counts {
    Counts(
        later
            .0
            .iter()
            .map(|(verb, n)| (verb.clone(), n.saturating_sub(earlier.get(verb))))
            .filter(|(_, n)| *n > 0)
            .collect(),
    )
}

/// Checks the metric parser on a fixture, once per run (the bench has no test harness).
pub fn check_parser() {
    let text = "# HELP x\n\
        apiserver_request_total{code=\"200\",resource=\"configmaps\",verb=\"PUT\"} 5\n\
        apiserver_request_total{code=\"409\",resource=\"configmaps\",verb=\"PUT\"} 2\n\
        apiserver_request_total{code=\"200\",resource=\"leases\",verb=\"PUT\"} 7\n\
        etcd_mvcc_db_total_size_in_bytes 4096\n\
        etcd_mvcc_db_total_size_in_use_in_bytes 2048\n";
    assert_eq!(
        metric(
            text,
            "apiserver_request_total",
            &[("resource", "configmaps"), ("verb", "PUT")]
        ),
        7.0
    );
    assert_eq!(
        metric(
            text,
            "apiserver_request_total",
            &[("resource", "configmaps"), ("code", "409")]
        ),
        2.0
    );
    assert_eq!(
        metric(text, "etcd_mvcc_db_total_size_in_bytes", &[]),
        4096.0
    );
    let codes = put_codes(text);
    assert_eq!(
        (codes.get("200"), codes.get("409"), codes.total()),
        (5, 2, 7)
    );
}
