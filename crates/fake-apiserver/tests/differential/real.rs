//! The real server of `scripts/control-plane` as a replay target, and what the sequences'
//! actions do to it.

use std::io::{BufRead, BufReader, Write};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::{Value, json};

use crate::replay::{LineSplitter, Server};
use crate::sequence::Action;

/// How long kube-apiserver's watch cache keeps every event (`DefaultEventFreshDuration`), plus
/// a margin: once older than this, events can be evicted by newer ones.
const EVENT_FRESH: Duration = Duration::from_secs(78);

/// How many filler objects take writes at once while a watch cache is being filled.
const FILLER_LANES: usize = 8;

/// The resources whose watch caches a compaction empties.
const CACHED: [(&str, &str); 2] = [
    ("/api/v1", "configmaps"),
    ("/apis/coordination.k8s.io/v1", "leases"),
];

/// A client of `kubeconfig` that neither retries nor times out on its own (a watch may be quiet
/// for long).
///
/// # Errors
///
/// When the kubeconfig is unusable.
pub async fn client(kubeconfig: Kubeconfig) -> Result<kube::Client, String> {
    let mut config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .map_err(|e| format!("kubeconfig: {e}"))?;
    config.default_retry = false;
    config.read_timeout = None;
    kube::Client::try_from(config).map_err(|e| format!("client: {e}"))
}

/// A namespace of the real server to replay (or record) in.
#[derive(Clone)]
pub struct RealServer {
    client: kube::Client,
    namespace: String,
}

impl RealServer {
    /// The server of `client`, in `namespace`.
    pub fn new(client: kube::Client, namespace: &str) -> Self {
        Self {
            client,
            namespace: namespace.to_owned(),
        }
    }

    /// Creates a fresh namespace `lockheed-test-<5 random characters>`, as `TestCluster` does,
    /// and returns its name.
    ///
    /// # Errors
    ///
    /// When the server refuses.
    pub async fn create_namespace(client: &kube::Client, prefix: &str) -> Result<String, String> {
        let body = json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"generateName": prefix, "labels": {"lockheed-test": ""}}});
        let created = send(client, "POST", "/api/v1/namespaces", Some(&body)).await?;
        created["metadata"]["name"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("no namespace created: {created}"))
    }

    /// Compacts etcd at its current revision, then makes the watch caches of ConfigMaps and
    /// Leases forget every event up to it: waits until those events are old enough to be
    /// evicted, then writes elsewhere, as many events as a cache holds (its
    /// `watch_cache_capacity`, which earlier bursts of writes may have grown), until they are.
    async fn compact(&self) -> Result<(), String> {
        // A write first: whatever was read before is then older than the compaction.
        let filler = Self::create_namespace(&self.client, "lockheed-filler-").await?;
        let revision = compact_etcd().await?;
        for (prefix, plural) in CACHED {
            for lane in 0..FILLER_LANES {
                let body = match plural {
                    "leases" => json!({"metadata": {"name": format!("filler-{lane}")}, "spec": {}}),
                    _ => json!({"metadata": {"name": format!("filler-{lane}")}}),
                };
                send(
                    &self.client,
                    "POST",
                    &format!("{prefix}/namespaces/{filler}/{plural}"),
                    Some(&body),
                )
                .await?;
            }
        }
        tokio::time::sleep(EVENT_FRESH).await;
        for (prefix, plural) in CACHED {
            let collection = format!("{prefix}/namespaces/{filler}/{plural}");
            let group = prefix
                .strip_prefix("/apis/")
                .map_or("", |g| g.split('/').next().unwrap_or_default());
            let mut round = 0;
            while !self.forgotten(&collection, revision).await? {
                round += 1;
                if round > 8 {
                    return Err(format!(
                        "the {plural} watch cache keeps revision {revision}"
                    ));
                }
                let events = self.cache_capacity(group, plural).await? + 10;
                self.fill(&collection, round, events).await?;
            }
        }
        Ok(())
    }

    /// Writes `events` changes to the filler objects of `collection`, a few at a time.
    async fn fill(&self, collection: &str, round: usize, events: usize) -> Result<(), String> {
        let lanes = (0..FILLER_LANES).map(|lane| async move {
            for i in (lane..events).step_by(FILLER_LANES) {
                let patch = json!({"metadata": {"annotations": {"n": format!("{round}.{i}")}}});
                let request = http::Request::builder()
                    .method("PATCH")
                    .uri(format!("{collection}/filler-{lane}"))
                    .header("content-type", "application/merge-patch+json")
                    .body(kube::client::Body::from(patch.to_string().into_bytes()))
                    .map_err(|e| e.to_string())?;
                read(&self.client, request).await?;
            }
            Ok::<(), String>(())
        });
        futures::future::try_join_all(lanes).await.map(drop)
    }

    /// How many events the watch cache of `group`/`resource` holds now
    /// (`watch_cache_capacity` in kube-apiserver's metrics).
    async fn cache_capacity(&self, group: &str, resource: &str) -> Result<usize, String> {
        let request = http::Request::builder()
            .uri("/metrics")
            .body(Vec::new())
            .map_err(|e| e.to_string())?;
        let metrics = self
            .client
            .request_text(request)
            .await
            .map_err(|e| format!("/metrics: {e}"))?;
        let series = format!("watch_cache_capacity{{group=\"{group}\",resource=\"{resource}\"}} ");
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(&series))
            .and_then(|value| value.trim().parse::<f64>().ok())
            .map(|value| value as usize)
            .ok_or_else(|| format!("no {series} in kube-apiserver's metrics"))
    }

    /// Whether a watch of `collection` from `revision` is refused with `410 Gone`.
    async fn forgotten(&self, collection: &str, revision: u64) -> Result<bool, String> {
        let request = http::Request::builder()
            .uri(format!(
                "{collection}?watch=true&resourceVersion={revision}&timeoutSeconds=1"
            ))
            .body(kube::client::Body::empty())
            .map_err(|e| e.to_string())?;
        let answer = self.client.send(request).await.map_err(|e| e.to_string())?;
        let mut body = answer.into_body();
        let mut lines = LineSplitter::default();
        while let Some(Ok(frame)) = body.frame().await {
            let Ok(data) = frame.into_data() else {
                continue;
            };
            let data: Bytes = data;
            if let Some(first) = lines.push(&data).first() {
                return Ok(first["type"] == "ERROR" && first["object"]["code"] == 410);
            }
        }
        Ok(false)
    }
}

impl Server for RealServer {
    fn client(&self) -> &kube::Client {
        &self.client
    }

    fn namespace(&self) -> &str {
        &self.namespace
    }

    async fn act(&self, action: &Action) -> Result<(), String> {
        match action {
            Action::Compact { .. } => self.compact().await,
        }
    }
}

/// Sends one request, expecting success, and returns its JSON answer.
async fn send(
    client: &kube::Client,
    method: &str,
    uri: &str,
    body: Option<&Value>,
) -> Result<Value, String> {
    let mut request = http::Request::builder().method(method).uri(uri);
    if body.is_some() {
        request = request.header("content-type", "application/json");
    }
    let body = body.map_or_else(Vec::new, |b| b.to_string().into_bytes());
    let request = request
        .body(kube::client::Body::from(body))
        .map_err(|e| e.to_string())?;
    read(client, request).await
}

async fn read(
    client: &kube::Client,
    request: http::Request<kube::client::Body>,
) -> Result<Value, String> {
    let what = format!("{} {}", request.method(), request.uri());
    let answer = client
        .send(request)
        .await
        .map_err(|e| format!("{what}: {e}"))?;
    let status = answer.status();
    let bytes = answer
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("{what}: {e}"))?
        .to_bytes();
    if !status.is_success() {
        return Err(format!(
            "{what}: {status}: {}",
            String::from_utf8_lossy(&bytes)
        ));
    }
    serde_json::from_slice(&bytes).map_err(|e| format!("{what}: {e}"))
}

/// Compacts etcd at its current revision, through its HTTP gateway on the client port that
/// `scripts/control-plane ctl status` names; returns that revision.
async fn compact_etcd() -> Result<u64, String> {
    let port = etcd_client_port()?;
    let config = kube::Config::new(
        format!("http://127.0.0.1:{port}")
            .parse()
            .map_err(|e| format!("etcd URL: {e}"))?,
    );
    let etcd = kube::Client::try_from(config).map_err(|e| e.to_string())?;
    // A range over an empty key reads nothing but the header with the revision.
    let range = send(&etcd, "POST", "/v3/kv/range", Some(&json!({"key": "AA=="}))).await?;
    let revision: u64 = range["header"]["revision"]
        .as_str()
        .and_then(|r| r.parse().ok())
        .ok_or_else(|| format!("no revision in {range}"))?;
    send(
        &etcd,
        "POST",
        "/v3/kv/compaction",
        Some(&json!({"revision": revision.to_string(), "physical": true})),
    )
    .await?;
    Ok(revision)
}

/// The client port of etcd-0, from the supervisor of `scripts/control-plane`.
fn etcd_client_port() -> Result<u16, String> {
    let dir = std::env::var_os("LOCKHEED_CONTROL_PLANE")
        .ok_or("LOCKHEED_CONTROL_PLANE is not set: run inside scripts/control-plane")?;
    let socket = std::path::Path::new(&dir).join("control.sock");
    let mut stream = std::os::unix::net::UnixStream::connect(&socket)
        .map_err(|e| format!("{}: {e}", socket.display()))?;
    stream
        .write_all(b"status\n")
        .map_err(|e| format!("{}: {e}", socket.display()))?;
    let mut line = String::new();
    BufReader::new(stream)
        .read_line(&mut line)
        .map_err(|e| format!("{}: {e}", socket.display()))?;
    let status: Value = serde_json::from_str(&line).map_err(|e| format!("status: {e}"))?;
    status["components"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["name"] == "etcd-0")
        .and_then(|c| c["ports"]["client"].as_u64())
        .and_then(|p| u16::try_from(p).ok())
        .ok_or_else(|| format!("no etcd-0 client port in {line}"))
}
