//! The HTTP side: one hyper connection per client connection, and the request handler that
//! takes each request through the layers (network, faults, access control: see [`layers`])
//! and on to routing ([`routes`]).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;

use self::layers::Halt;
use self::routes::Accepted;
use super::Shared;
use super::commits::Actor;
use super::log::{RequestRecord, Verb};
use super::request::{self, RequestInfo, Route};
use super::status::ApiError;

mod layers;
mod routes;

/// The media type parameters of aggregated discovery, as clients ask for it in `Accept`.
const AGGREGATED_DISCOVERY: &str = "g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// kube-apiserver refuses request bodies over 3 MiB.
const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

/// A response body: all at once, or a watch stream.
#[derive(Debug)]
pub(crate) enum ResponseBody {
    Full(Option<Bytes>),
    Stream(mpsc::Receiver<Bytes>),
}

impl hyper::body::Body for ResponseBody {
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

    fn is_end_stream(&self) -> bool {
        matches!(self, Self::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Self::Full(None) => SizeHint::with_exact(0),
            Self::Stream(_) => SizeHint::default(),
        }
    }
}

/// Returned to hyper to make it drop the connection without answering.
#[derive(Debug)]
pub(crate) struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by the fake API server")
    }
}

impl std::error::Error for Dropped {}

/// Serves one TCP connection until it closes or the server stops (`stopped`).
pub(crate) async fn serve_connection(
    shared: Arc<Shared>,
    stream: TcpStream,
    stopped: tokio_util::sync::CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let shutdown = stopped.clone();
    let service =
        hyper::service::service_fn(move |req| handle(Arc::clone(&shared), req, stopped.clone()));
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        // Errors here are clients going away or injected resets: nothing to report.
        _ = conn => {}
        () = shutdown.cancelled() => {}
    }
}

fn json_response(status: u16, body: &Value) -> Response<ResponseBody> {
    let bytes = serde_json::to_vec(body).expect("JSON values always serialize");
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(ResponseBody::Full(Some(Bytes::from(bytes))))
        .expect("a valid response")
}

fn error_response(err: &ApiError) -> Response<ResponseBody> {
    let mut response = json_response(err.code, &err.to_status());
    if let Some(secs) = err.retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

fn bearer_token(headers: &http::HeaderMap) -> Option<String> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_owned())
}

/// What the request is, before anything is done about it.
fn classify(
    method: &Method,
    route: &Route,
    query: &BTreeMap<String, String>,
    token: Option<String>,
) -> RequestInfo {
    match route {
        Route::Resource(path) => {
            let verb =
                request::verb_of(method, path, request::flag(query, "watch")).unwrap_or(Verb::Get);
            let name = path.name.clone().or_else(|| {
                // RBAC authorizes list and watch of one name through the field selector.
                query.get("fieldSelector").and_then(|s| {
                    s.split(',').find_map(|term| {
                        let (field, value) = term.split_once('=')?;
                        (field.trim() == "metadata.name")
                            .then(|| value.trim_start_matches('=').trim().to_owned())
                    })
                })
            });
            RequestInfo {
                verb,
                group: path.group.clone(),
                resource: Some(path.plural.clone()),
                namespace: path.namespace.clone(),
                name,
                token,
            }
        }
        _ => RequestInfo {
            verb: Verb::Discovery,
            group: String::new(),
            resource: None,
            namespace: None,
            name: None,
            token,
        },
    }
}

/// Writes a request's record when it ends, answered or not: a request whose client gave up
/// (or whose connection dropped) is logged with no status.
struct Pending<'a> {
    shared: &'a Shared,
    record: RequestRecord,
    started: Instant,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        self.record.latency = self.started.elapsed();
        tracing::debug!(
            target: "lockheed_fake_apiserver",
            method = %self.record.method, path = %self.record.path, query = %self.record.query,
            status = ?self.record.status, "fake API server request"
        );
        let record = std::mem::replace(&mut self.record, RequestRecord::placeholder());
        self.shared.log().record(record);
    }
}

/// A request's body, read in full as it arrives.
enum Body {
    Read(Bytes),
    /// Over [`MAX_BODY_BYTES`].
    TooLarge,
    /// The connection went away before it was all there.
    Lost,
}

impl Body {
    /// The body, or what stops a request whose body is too large (413) or lost.
    fn bytes(self) -> Result<Bytes, Halt> {
        match self {
            Self::Read(bytes) => Ok(bytes),
            Self::TooLarge => Err(Halt::Answer(ApiError::new(
                413,
                "RequestEntityTooLarge",
                format!("Request entity too large: limit is {MAX_BODY_BYTES}"),
            ))),
            Self::Lost => Err(Halt::Drop),
        }
    }
}

tokio::task_local! {
    /// Set once a blackhole has held the request being handled: it is in the network then,
    /// and arrives when the blackhole heals, whether or not its client still waits.
    static IN_THE_NETWORK: Arc<std::sync::atomic::AtomicBool>;
}

/// Aborts a request's task when its client goes away (the connection drops it), unless a
/// blackhole held the request: that one is handled when it heals, as TCP delivers what it
/// retransmitted, and a write lands late.
struct AbandonUnlessInTheNetwork {
    task: tokio::task::AbortHandle,
    in_the_network: Arc<std::sync::atomic::AtomicBool>,
}

impl Drop for AbandonUnlessInTheNetwork {
    fn drop(&mut self) {
        if !self
            .in_the_network
            .load(std::sync::atomic::Ordering::SeqCst)
        {
            self.task.abort();
        }
    }
}

/// Handles one request: its body is read as it arrives, then it is handled in a task of its
/// own, which ends when the server stops, when its client goes away (unless a blackhole held
/// it: see [`AbandonUnlessInTheNetwork`]), or when it is answered.
async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
    stopped: tokio_util::sync::CancellationToken,
) -> Result<Response<ResponseBody>, Dropped> {
    let started = Instant::now();
    // Subscribed at arrival, so that a close or partition from now on reaches this request's
    // watch even if it comes before the watch starts.
    let closer = shared.watch_closer.subscribe();
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => Body::Read(collected.to_bytes()),
        Err(err) if err.is::<http_body_util::LengthLimitError>() => Body::TooLarge,
        Err(_) => Body::Lost,
    };
    let in_the_network = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let handled = IN_THE_NETWORK.scope(Arc::clone(&in_the_network), async move {
        tokio::select! {
            biased;
            () = stopped.cancelled() => Err(Dropped),
            answer = handle_read(&shared, parts, body, closer, started) => answer,
        }
    });
    let task = tokio::spawn(handled);
    let _abandon = AbandonUnlessInTheNetwork {
        task: task.abort_handle(),
        in_the_network,
    };
    task.await.unwrap_or(Err(Dropped))
}

/// Handles a request whose body is read, logging it when it ends.
async fn handle_read(
    shared: &Shared,
    parts: http::request::Parts,
    body: Body,
    closer: tokio::sync::watch::Receiver<u64>,
    started: Instant,
) -> Result<Response<ResponseBody>, Dropped> {
    let method = parts.method.clone();
    let path = parts.uri.path().to_owned();
    let raw_query = parts.uri.query().unwrap_or_default().to_owned();
    let route = Route::parse(&path);
    let query = request::parse_query(&raw_query);
    let token = bearer_token(&parts.headers);
    let info = classify(
        &method,
        &route,
        query.as_ref().unwrap_or(&BTreeMap::new()),
        token,
    );
    let mut pending = Pending {
        shared,
        record: RequestRecord {
            method: method.to_string(),
            verb: info.verb,
            resource: info.resource.clone(),
            namespace: info.namespace.clone(),
            name: info.name.clone(),
            path,
            query: raw_query,
            status: None,
            latency: Duration::ZERO,
            user: None,
        },
        started,
    };
    let result = respond(
        shared,
        (&parts, body),
        &route,
        query,
        &info,
        closer,
        &mut pending.record,
    )
    .await;
    pending.record.status = result.as_ref().ok().map(|r| r.status().as_u16());
    result
}

/// Takes a request through the layers, in order: the network, the faults, access control,
/// the request's own checks (query, body) and the network again (the body took its time), then
/// routing; and the faults due after it is handled. A layer that stops the request answers
/// with its error, or drops the connection.
async fn respond(
    shared: &Shared,
    (req, body): (&http::request::Parts, Body),
    route: &Route,
    query: Result<BTreeMap<String, String>, ApiError>,
    info: &RequestInfo,
    closer: tokio::sync::watch::Receiver<u64>,
    record: &mut RequestRecord,
) -> Result<Response<ResponseBody>, Dropped> {
    let token = info.token.as_deref();
    let layers = async {
        layers::cross_network(shared, token).await?;
        let after_commit = layers::inject_faults(shared, info).await?;
        record.user = layers::check_access(shared, info)?;
        let query = query?;
        let body = body.bytes()?;
        // The network may have failed while the body was on its way.
        layers::cross_network(shared, token).await?;
        let actor = Actor {
            token: info.token.clone(),
            user: record.user.clone(),
        };
        let incoming = Accepted::new(req, query, body, actor, closer);
        let response = routes::answer(shared, route, &incoming);
        after_commit.answer(shared, response).await
    };
    match layers.await {
        Ok(response) => Ok(response),
        Err(Halt::Answer(err)) => Ok(error_response(&err)),
        Err(Halt::Drop) => Err(Dropped),
    }
}
