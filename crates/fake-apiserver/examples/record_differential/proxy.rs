//! The recording proxy: plain HTTP on loopback in front, the real kube-apiserver (TLS, client
//! certificate: a `kube::Client` of the admin kubeconfig) behind; every request and answer is
//! recorded, watch events one by one as they pass.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use kube::config::{Cluster, Context as KubeContext, Kubeconfig, NamedCluster, NamedContext};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::replay::{LineSplitter, answer_headers};
use crate::sequence::{
    Action, Body, EndedBy, Exchange, Request, Response, Sequence, Step, Watch, WatchEvent,
};

/// Request headers that matter to the server, recorded and replayed.
const REQUEST_HEADERS: [&str; 7] = [
    "content-type",
    "accept",
    "user-agent",
    "if-none-match",
    "impersonate-user",
    "impersonate-group",
    "impersonate-uid",
];

/// Headers the proxy does not pass on: hop by hop, or its own business (the upstream client
/// authenticates; compression would hide the bodies).
const NOT_FORWARDED: [&str; 8] = [
    "host",
    "authorization",
    "content-length",
    "connection",
    "keep-alive",
    "transfer-encoding",
    "accept-encoding",
    "upgrade",
];

/// What the proxy saw so far.
#[derive(Debug, Default)]
struct Recording {
    exchanges: Vec<Exchange>,
    actions: Vec<Action>,
}

struct State {
    upstream: kube::Client,
    started: Instant,
    next_id: AtomicUsize,
    recording: Mutex<Recording>,
    stop: CancellationToken,
}

impl State {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn recording(&self) -> std::sync::MutexGuard<'_, Recording> {
        self.recording
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// A running proxy.
pub struct Proxy {
    addr: SocketAddr,
    state: Arc<State>,
}

impl Proxy {
    /// Starts a proxy in front of `upstream`'s server.
    pub async fn start(upstream: kube::Client) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            upstream,
            started: Instant::now(),
            next_id: AtomicUsize::new(0),
            recording: Mutex::default(),
            stop: CancellationToken::new(),
        });
        let serving = Arc::clone(&state);
        tokio::spawn(async move {
            loop {
                let stream = tokio::select! {
                    () = serving.stop.cancelled() => return,
                    accepted = listener.accept() => match accepted {
                        Ok((stream, _)) => stream,
                        Err(_) => continue,
                    },
                };
                let state = Arc::clone(&serving);
                tokio::spawn(async move {
                    let stop = state.stop.clone();
                    let service = hyper::service::service_fn(move |request| {
                        handle(Arc::clone(&state), request)
                    });
                    let connection = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service);
                    tokio::select! {
                        _ = connection => {}
                        () = stop.cancelled() => {}
                    }
                });
            }
        });
        Ok(Self { addr, state })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A client of the proxy, as an ordinary kube-rs user builds one.
    pub fn client(&self, namespace: &str) -> kube::Client {
        let mut config = kube::Config::new(self.url().parse().expect("a valid URL"));
        config.default_namespace = namespace.to_owned();
        kube::Client::try_from(config).expect("a client of plain HTTP")
    }

    /// A kubeconfig of the proxy, its context in `namespace` (empty: none), without
    /// credentials (the proxy brings its own).
    pub fn kubeconfig(&self, namespace: &str) -> Kubeconfig {
        Kubeconfig {
            clusters: vec![NamedCluster {
                name: "recorder".into(),
                cluster: Some(Cluster {
                    server: Some(self.url()),
                    ..Cluster::default()
                }),
                ..NamedCluster::default()
            }],
            contexts: vec![NamedContext {
                name: "recorder".into(),
                context: Some(KubeContext {
                    cluster: "recorder".into(),
                    user: None,
                    namespace: (!namespace.is_empty()).then(|| namespace.to_owned()),
                    ..KubeContext::default()
                }),
                ..NamedContext::default()
            }],
            current_context: Some("recorder".into()),
            ..Kubeconfig::default()
        }
    }

    /// Marks that `action` happens now (the caller does it to the server).
    pub fn record_action(&self) -> Action {
        let action = Action::Compact {
            at_ms: self.state.now_ms(),
        };
        self.state.recording().actions.push(action.clone());
        action
    }

    /// Stops the proxy and returns the sequence of what it saw in `namespace` (or, empty, in
    /// the namespace that a request of the recording created).
    pub async fn finish(self, client: &str, description: &str, namespace: &str) -> Sequence {
        self.state.stop.cancel();
        // The watches' tasks write their ends.
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let now = self.state.now_ms();
        let recording = std::mem::take(&mut *self.state.recording());
        let namespace = if namespace.is_empty() {
            created_namespace(&recording.exchanges).unwrap_or_default()
        } else {
            namespace.to_owned()
        };
        let mut left_out = BTreeMap::new();
        let mut steps: Vec<(u64, usize, Step)> = Vec::new();
        for mut exchange in recording.exchanges {
            if let Some(watch) = exchange.response.watch.as_mut()
                && watch.ended_ms == u64::MAX
            {
                watch.ended_by = EndedBy::Client;
                watch.ended_ms = now;
            }
            match scope(&exchange.request.path, &namespace) {
                Scope::Namespace => {
                    let at = if exchange.request.is_watch() {
                        exchange.sent_ms
                    } else {
                        exchange.answered_ms
                    };
                    steps.push((at, exchange.id, Step::Exchange(Box::new(exchange))));
                }
                Scope::Other(what) => *left_out.entry(what.to_owned()).or_default() += 1,
            }
        }
        for action in recording.actions {
            let Action::Compact { at_ms } = action;
            steps.push((at_ms, usize::MAX, Step::Action(action)));
        }
        steps.sort_by_key(|(at, id, _)| (*at, *id));
        Sequence {
            client: client.to_owned(),
            description: description.to_owned(),
            server: "kube-apiserver v1.37.2, etcd v3.7.0".to_owned(),
            namespace,
            left_out,
            steps: steps.into_iter().map(|(_, _, step)| step).collect(),
        }
    }
}

/// Where a request went.
enum Scope {
    /// Into the sequence's namespace.
    Namespace,
    /// Elsewhere: discovery, OpenAPI, cluster-scoped.
    Other(&'static str),
}

fn scope(path: &str, namespace: &str) -> Scope {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let rest = match segments.as_slice() {
        ["api", _, rest @ ..] | ["apis", _, _, rest @ ..] => rest,
        ["openapi", ..] => return Scope::Other("OpenAPI documents"),
        _ => return Scope::Other("discovery documents"),
    };
    match rest {
        [] => Scope::Other("discovery documents"),
        ["namespaces", ns, _, ..] if *ns == namespace => Scope::Namespace,
        _ => Scope::Other("cluster-scoped requests and other namespaces"),
    }
}

/// The name of the first namespace a `POST /api/v1/namespaces` of the recording created.
fn created_namespace(exchanges: &[Exchange]) -> Option<String> {
    let mut creates: Vec<&Exchange> = exchanges
        .iter()
        .filter(|e| {
            e.request.method == "POST"
                && e.request.path == "/api/v1/namespaces"
                && e.response.status == 201
        })
        .collect();
    creates.sort_by_key(|e| e.id);
    creates
        .first()
        .and_then(|e| e.response.json.as_ref())
        .and_then(|json| json["metadata"]["name"].as_str())
        .map(str::to_owned)
}

/// The body of an answer to the client: all at once, or a watch stream.
enum ProxyBody {
    Full(Option<Bytes>),
    Stream(mpsc::Receiver<Bytes>),
}

impl hyper::body::Body for ProxyBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            Self::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Self::Stream(rx) => rx.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b)))),
        }
    }
}

async fn handle(
    state: Arc<State>,
    request: http::Request<Incoming>,
) -> Result<http::Response<ProxyBody>, Infallible> {
    let sent_ms = state.now_ms();
    let (parts, body) = request.into_parts();
    let bytes = body
        .collect()
        .await
        .map(http_body_util::Collected::to_bytes)
        .unwrap_or_default();
    let id = state.next_id.fetch_add(1, Ordering::SeqCst);
    let headers: BTreeMap<String, String> = REQUEST_HEADERS
        .iter()
        .filter_map(|name| {
            let values: Vec<&str> = parts
                .headers
                .get_all(*name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect();
            (!values.is_empty()).then(|| ((*name).to_owned(), values.join(",")))
        })
        .collect();
    let recorded = Request {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().unwrap_or_default().to_owned(),
        headers,
        body: Body::of(&bytes),
    };
    let mut upstream = http::Request::builder()
        .method(parts.method.clone())
        .uri(parts.uri.path_and_query().map_or("/", |p| p.as_str()));
    for (name, value) in &parts.headers {
        if !NOT_FORWARDED.contains(&name.as_str()) {
            upstream = upstream.header(name, value);
        }
    }
    let upstream = upstream
        .body(kube::client::Body::from(bytes))
        .expect("the parts of a valid request");
    let answer = match state.upstream.send(upstream).await {
        Ok(answer) => answer,
        Err(err) => {
            eprintln!("recorder: {} {}: {err}", recorded.method, recorded.path);
            let exchange = Exchange {
                id,
                sent_ms,
                answered_ms: state.now_ms(),
                request: recorded,
                response: Response::default(),
            };
            state.recording().exchanges.push(exchange);
            let mut failed = http::Response::new(ProxyBody::Full(None));
            *failed.status_mut() = http::StatusCode::BAD_GATEWAY;
            return Ok(failed);
        }
    };
    let status = answer.status();
    let mut to_client = http::Response::builder().status(status);
    for (name, value) in answer.headers() {
        if !NOT_FORWARDED.contains(&name.as_str()) {
            to_client = to_client.header(name, value);
        }
    }
    let response = Response {
        status: status.as_u16(),
        headers: answer_headers(answer.headers()),
        ..Response::default()
    };
    if recorded.is_watch() && status.is_success() {
        let index = {
            let mut recording = state.recording();
            recording.exchanges.push(Exchange {
                id,
                sent_ms,
                answered_ms: state.now_ms(),
                request: recorded,
                response: Response {
                    watch: Some(Watch {
                        ended_ms: u64::MAX,
                        ..Watch::default()
                    }),
                    ..response
                },
            });
            recording.exchanges.len() - 1
        };
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(forward_watch(
            Arc::clone(&state),
            index,
            answer.into_body(),
            tx,
        ));
        return Ok(to_client
            .body(ProxyBody::Stream(rx))
            .expect("the parts of a valid answer"));
    }
    let bytes = answer
        .into_body()
        .collect()
        .await
        .map(http_body_util::Collected::to_bytes)
        .unwrap_or_default();
    state.recording().exchanges.push(Exchange {
        id,
        sent_ms,
        answered_ms: state.now_ms(),
        request: recorded,
        response: response.with_body(&bytes),
    });
    Ok(to_client
        .body(ProxyBody::Full(Some(bytes)))
        .expect("the parts of a valid answer"))
}

/// Passes a watch's events to the client and records each; ends when either side does.
async fn forward_watch(
    state: Arc<State>,
    index: usize,
    mut body: kube::client::Body,
    tx: mpsc::Sender<Bytes>,
) {
    let mut lines = LineSplitter::default();
    let record = |mut values: Vec<serde_json::Value>| {
        values
            .iter_mut()
            .for_each(crate::sequence::shorten_long_strings);
        let at_ms = state.now_ms();
        let mut recording = state.recording();
        if let Some(watch) = recording
            .exchanges
            .get_mut(index)
            .and_then(|e| e.response.watch.as_mut())
        {
            watch
                .events
                .extend(values.into_iter().map(|event| WatchEvent { at_ms, event }));
        }
    };
    let ended_by = loop {
        let frame = tokio::select! {
            () = tx.closed() => break EndedBy::Client,
            () = state.stop.cancelled() => break EndedBy::Client,
            frame = body.frame() => frame,
        };
        let Some(Ok(frame)) = frame else {
            break EndedBy::Server;
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        record(lines.push(&data));
        if tx.send(data).await.is_err() {
            break EndedBy::Client;
        }
    };
    record(lines.finish());
    let ended_ms = state.now_ms();
    if let Some(watch) = state
        .recording()
        .exchanges
        .get_mut(index)
        .and_then(|e| e.response.watch.as_mut())
    {
        watch.ended_by = ended_by;
        watch.ended_ms = ended_ms;
    }
}
