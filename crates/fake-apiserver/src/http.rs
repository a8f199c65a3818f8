//! The HTTP side: one hyper connection per client connection, and the request handler that
//! applies partitions, faults and access control before dispatching to the store.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::Shared;
use super::access::Verdict;
use super::commits::Actor;
use super::faults::{self, Outcome, PartitionKind};
use super::log::{RequestRecord, Verb};
use super::openapi::{self, fields};
use super::request::{self, RequestInfo, ResourcePath, Route};
use super::resources::Registry;
use super::selector::{FieldSelector, LabelSelector};
use super::status::ApiError;
use super::store::{ListQuery, PatchBody, Preconditions, Selectors, Store};
use super::watch::{self, Closers, WatchParams};

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

/// Waits at the network layer: drops the request during a refusing partition, holds it during
/// a blackhole (of the whole server, or of the client with `token`) until it heals.
async fn cross_network(shared: &Shared, token: Option<&str>) -> Result<(), Dropped> {
    loop {
        match shared.faults().partitioned_as() {
            None if !faults::is_cut(&shared.client_cuts.borrow(), token) => return Ok(()),
            None | Some(PartitionKind::Blackhole) => {}
            Some(PartitionKind::Refuse) => return Err(Dropped),
        }
        let _ =
            IN_THE_NETWORK.try_with(|held| held.store(true, std::sync::atomic::Ordering::SeqCst));
        let mut link = shared.link_up.subscribe();
        let mut cuts = shared.client_cuts.subscribe();
        tokio::select! {
            _ = link.changed() => {}
            _ = cuts.changed() => {}
            () = shared.shutdown.cancelled() => return Err(Dropped),
            // A blackhole with a deadline heals by itself; look again now and then.
            () = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
    }
}

#[allow(clippy::too_many_lines)] // One request's path through network, faults, auth and store.
async fn respond(
    shared: &Shared,
    (req, body): (&http::request::Parts, Body),
    route: &Route,
    query: Result<BTreeMap<String, String>, ApiError>,
    info: &RequestInfo,
    closer: tokio::sync::watch::Receiver<u64>,
    record: &mut RequestRecord,
) -> Result<Response<ResponseBody>, Dropped> {
    cross_network(shared, info.token.as_deref()).await?;
    let decision = shared.faults().decide(info);
    if !decision.latency.is_zero() {
        tokio::select! {
            () = tokio::time::sleep(decision.latency) => {}
            () = shared.shutdown.cancelled() => return Err(Dropped),
        }
        cross_network(shared, info.token.as_deref()).await?;
    }
    let mut after_commit = None;
    match decision.outcome {
        Some(Outcome::Hang) => {
            let mut release = shared.hang_release.subscribe();
            tokio::select! {
                _ = release.changed() => {}
                () = shared.shutdown.cancelled() => {}
            }
            return Err(Dropped);
        }
        Some(outcome) if decision.after_commit => after_commit = Some(outcome),
        Some(Outcome::Reset) => return Err(Dropped),
        Some(Outcome::Fail(err)) => return Ok(error_response(&err)),
        None => {}
    }
    if let Some(access) = shared.access().as_ref() {
        match access.check(info.token.as_deref(), info) {
            Verdict::Allowed { user } => record.user = user,
            Verdict::Denied(err) => return Ok(error_response(&err)),
        }
    }
    let query = match query {
        Ok(query) => query,
        Err(err) => return Ok(error_response(&err)),
    };
    let content_type = req
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or_default().trim().to_owned())
        .unwrap_or_default();
    let method = req.method.clone();
    let user_agent = req
        .headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let header_text = |name| {
        req.headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
            .map(str::to_owned)
    };
    let accept = header_text(header::ACCEPT).unwrap_or_default();
    let if_none_match = header_text(header::IF_NONE_MATCH);
    let aggregated = accept
        .split(',')
        .next()
        .is_some_and(|first| first.contains(AGGREGATED_DISCOVERY));
    let body = match body {
        Body::Read(bytes) => bytes,
        Body::TooLarge => {
            return Ok(error_response(&ApiError::new(
                413,
                "RequestEntityTooLarge",
                format!("Request entity too large: limit is {MAX_BODY_BYTES}"),
            )));
        }
        Body::Lost => return Err(Dropped),
    };
    // The network may have failed while the body was on its way.
    cross_network(shared, info.token.as_deref()).await?;
    let incoming = Accepted {
        actor: Actor {
            token: info.token.clone(),
            user: record.user.clone(),
        },
        method,
        closer,
        aggregated,
        accept,
        if_none_match,
        query,
        content_type,
        user_agent,
        body,
        warnings: RefCell::default(),
    };
    let response = match dispatch(shared, route, &incoming) {
        Ok(Reply::Json(status, body)) => json_response(status, &body),
        Ok(Reply::Aggregated(body)) => {
            let mut response = json_response(200, &body);
            let content_type = format!("application/json;{AGGREGATED_DISCOVERY}");
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_str(&content_type).expect("a valid header value"),
            );
            response
        }
        Ok(Reply::Document(answer)) => {
            let mut response = Response::builder().status(answer.status);
            for (name, value) in answer.headers {
                response = response.header(name, value);
            }
            response
                .body(ResponseBody::Full(Some(Bytes::from(answer.body))))
                .expect("a valid response")
        }
        Ok(Reply::Watch(rx)) => Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::TRANSFER_ENCODING, "chunked")
            .body(ResponseBody::Stream(rx))
            .expect("a valid response"),
        Err(err) => error_response(&err),
    };
    let mut response = response;
    for warning in incoming.warnings.take() {
        if let Ok(value) = HeaderValue::from_str(&warning) {
            response.headers_mut().append(header::WARNING, value);
        }
    }
    if !decision.latency_after.is_zero() {
        // Committed; the answer takes its time (the client may give up meanwhile).
        tokio::select! {
            () = tokio::time::sleep(decision.latency_after) => {}
            () = shared.shutdown.cancelled() => return Err(Dropped),
        }
    }
    match after_commit {
        // The request was handled; its answer is lost.
        Some(Outcome::Fail(err)) => Ok(error_response(&err)),
        Some(_) => Err(Dropped),
        None => Ok(response),
    }
}

/// A request that passed the network, the faults and access control.
struct Accepted {
    /// Who sent it, for the commit log.
    actor: Actor,
    method: Method,
    /// Subscribed when the request arrived (see `handle`).
    closer: tokio::sync::watch::Receiver<u64>,
    /// The client prefers aggregated discovery (`apidiscovery.k8s.io/v2`).
    aggregated: bool,
    /// The `Accept` header.
    accept: String,
    /// The `If-None-Match` header.
    if_none_match: Option<String>,
    query: BTreeMap<String, String>,
    content_type: String,
    /// Names the field manager of writes without a `fieldManager` parameter.
    user_agent: String,
    body: Bytes,
    /// `Warning` headers of the answer (`299 - "..."`).
    warnings: RefCell<Vec<String>>,
}

impl Accepted {
    fn json(&self) -> Result<Value, ApiError> {
        if self.content_type == "application/vnd.kubernetes.protobuf" {
            return super::protobuf::decode(&self.body).map_err(|e| {
                ApiError::new(
                    415,
                    "UnsupportedMediaType",
                    format!("cannot read the protobuf body: {e}"),
                )
            });
        }
        serde_json::from_slice(&self.body).map_err(|e| {
            let go = super::gojson::syntax_error(&self.body).unwrap_or_else(|| e.to_string());
            ApiError::bad_request(format!("the request body is not valid JSON: {go}"))
        })
    }

    /// The body of a server-side apply: YAML (of which JSON is a part).
    fn yaml(&self) -> Result<Value, ApiError> {
        if let Ok(value) = serde_json::from_slice(&self.body) {
            return Ok(value);
        }
        let text = std::str::from_utf8(&self.body)
            .map_err(|e| ApiError::bad_request(format!("error converting YAML to JSON: {e}")))?;
        serde_saphyr::from_str::<Value>(text)
            .map_err(|e| ApiError::bad_request(format!("error converting YAML to JSON: {e}")))
    }

    /// The body of a create or update: JSON, or the error kube-apiserver's decoder gives
    /// (`transformDecodeError`) when it is not.
    fn object(&self, kind: &str) -> Result<Value, ApiError> {
        if self.content_type == "application/vnd.kubernetes.protobuf" {
            return self.json();
        }
        serde_json::from_slice(&self.body).map_err(|e| {
            let go = super::gojson::syntax_error(&self.body).unwrap_or_else(|| e.to_string());
            ApiError::bad_request(format!(
                "the object provided is unrecognized (must be of type {kind}): couldn't get \
                 version/kind; json parse error: {go} ({})",
                super::gojson::summarize(&self.body)
            ))
        })
    }

    /// The `fieldValidation` directive of a create, update or patch.
    fn field_validation(&self, verb: Verb) -> Result<fields::Directive, ApiError> {
        let options = match verb {
            Verb::Create => "CreateOptions",
            Verb::Update => "UpdateOptions",
            Verb::Patch => "PatchOptions",
            _ => return Ok(fields::Directive::Ignore),
        };
        fields::Directive::from_query(&self.query, options)
    }

    /// The body of a create or update after field validation (see [`fields::check_body`]).
    fn validated(
        &self,
        rt: &super::resources::ResourceType,
        body: Option<Value>,
        directive: fields::Directive,
    ) -> Result<Value, ApiError> {
        let mut body = body.unwrap_or_default();
        self.warn(&fields::check_body(rt, &mut body, directive)?);
        super::microtime::normalize(&rt.kind, &mut body).map_err(|e| {
            ApiError::bad_request(format!(
                "{kind} in version \"{version}\" cannot be handled as a {kind}: {e}",
                kind = rt.kind,
                version = rt.version,
            ))
        })?;
        Ok(body)
    }

    /// Adds a `Warning` header to the answer for each of these dropped fields.
    fn warn(&self, unknown: &[String]) {
        self.warnings.borrow_mut().extend(fields::warnings(unknown));
    }

    fn dry_run(&self) -> Result<bool, ApiError> {
        match self.query.get("dryRun").map(String::as_str) {
            None | Some("") => Ok(false),
            Some("All") => Ok(true),
            Some(other) => Err(ApiError::bad_request(format!(
                "unsupported dryRun value {other:?}: only \"All\" is supported"
            ))),
        }
    }

    fn selectors(&self) -> Result<Selectors, ApiError> {
        let label = self.query.get("labelSelector").map_or("", String::as_str);
        let field = self.query.get("fieldSelector").map_or("", String::as_str);
        Ok(Selectors {
            label: LabelSelector::parse(label).map_err(ApiError::bad_request)?,
            field: FieldSelector::parse(field).map_err(ApiError::bad_request)?,
        })
    }
}

enum Reply {
    Json(u16, Value),
    /// Aggregated discovery, with its own content type.
    Aggregated(Value),
    /// An OpenAPI document (or a redirect, 304 or 406 about one).
    Document(openapi::Answer),
    Watch(mpsc::Receiver<Bytes>),
}

fn dispatch(shared: &Shared, route: &Route, incoming: &Accepted) -> Result<Reply, ApiError> {
    let discovery = |value: Value| {
        if incoming.method == Method::GET {
            Ok(Reply::Json(200, value))
        } else {
            Err(ApiError::method_not_allowed(incoming.method.as_str()))
        }
    };
    match route {
        Route::Version => discovery(Registry::version()),
        Route::CoreVersions | Route::Groups if incoming.aggregated => {
            discovery(Value::Null)?;
            let core = *route == Route::CoreVersions;
            Ok(Reply::Aggregated(shared.store().registry.aggregated(core)))
        }
        Route::CoreVersions => discovery(Registry::api_versions(&shared.addr.to_string())),
        Route::Groups => discovery(shared.store().registry.api_group_list()),
        Route::Resources { group, version } => {
            let list = shared.store().registry.api_resource_list(group, version);
            discovery(list.ok_or_else(ApiError::no_route)?)
        }
        Route::OpenApiV2 | Route::OpenApiV3 | Route::OpenApiV3Document(_) => {
            discovery(Value::Null)?;
            let doc = match route {
                Route::OpenApiV2 => openapi::Document::V2,
                Route::OpenApiV3Document(path) => openapi::Document::V3(path),
                _ => openapi::Document::V3Discovery,
            };
            let conditions = openapi::Conditions {
                accept: &incoming.accept,
                hash: incoming.query.get("hash").map(String::as_str),
                if_none_match: incoming.if_none_match.as_deref(),
            };
            let registry = shared.store().registry.clone();
            openapi::serve(&registry, doc, &conditions, chrono::Utc::now())
                .map(Reply::Document)
                .ok_or_else(ApiError::no_route)
        }
        Route::Unknown => Err(ApiError::no_route()),
        Route::Resource(path) => resource(shared, path, incoming),
    }
}

fn resource(shared: &Shared, path: &ResourcePath, incoming: &Accepted) -> Result<Reply, ApiError> {
    if path.subresource.is_some() {
        return Err(ApiError::no_route());
    }
    let verb = request::verb_of(
        &incoming.method,
        path,
        request::flag(&incoming.query, "watch"),
    )
    .ok_or_else(|| ApiError::method_not_allowed(incoming.method.as_str()))?;
    let body = match verb {
        Verb::Patch if is_apply(&incoming.content_type) => Some(incoming.yaml()?),
        Verb::Patch => Some(incoming.json()?),
        Verb::Create | Verb::Update => serde_json::from_slice::<Value>(&incoming.body).ok(),
        _ => None,
    };
    let kind_hint = body
        .as_ref()
        .filter(|_| verb == Verb::Create)
        .and_then(|b| b["kind"].as_str());
    let mut store = shared.store_as(&incoming.actor);
    let rt = store
        .registry
        .resolve(&path.group, &path.version, &path.plural, kind_hint);
    let body = match verb {
        Verb::Create | Verb::Update => Some(incoming.object(&rt.kind)?),
        _ => body,
    };
    if rt.namespaced != path.namespace.is_some() && (path.name.is_some() || !rt.namespaced) {
        return Err(ApiError::no_route());
    }
    let namespace = path.namespace.as_deref().unwrap_or_default();
    let name = path.name.as_deref().unwrap_or_default();
    let dry_run = incoming.dry_run()?;
    if incoming.query.contains_key("force") && !is_apply(&incoming.content_type) {
        return Err(patch_options_invalid(
            "force",
            "ValueForbidden",
            "Forbidden: may not be specified for non-apply patch",
        ));
    }
    let directive = incoming.field_validation(verb)?;
    let manager = request::field_manager(verb, &incoming.query, &incoming.user_agent)?;
    let ok = |v| Ok(Reply::Json(200, v));
    match verb {
        Verb::Get => ok(store.get(&rt, namespace, name)?),
        Verb::List => ok(list(&mut store, &rt, path, incoming)?),
        Verb::Watch => start_watch(shared, store, &rt, path, incoming),
        Verb::Create => {
            let body = incoming.validated(&rt, body, directive)?;
            let created = store.create(&rt, namespace, body, &manager, dry_run)?;
            Ok(Reply::Json(201, created))
        }
        Verb::Update => {
            let body = incoming.validated(&rt, body, directive)?;
            ok(store.update(&rt, namespace, name, body, &manager, dry_run)?)
        }
        Verb::Patch => {
            let mut body = patch_body(
                &incoming.content_type,
                &incoming.query,
                body.unwrap_or_default(),
            )?;
            validate_patch(
                &mut store, &rt, namespace, name, &mut body, incoming, &manager,
            )?;
            let existed = store.get(&rt, namespace, name).is_ok();
            let patched = store.patch(&rt, namespace, name, &body, &manager, dry_run)?;
            Ok(Reply::Json(if existed { 200 } else { 201 }, patched))
        }
        Verb::Delete => {
            let (preconditions, options_dry_run) = delete_options(incoming)?;
            ok(store.delete(
                &rt,
                namespace,
                name,
                &preconditions,
                dry_run || options_dry_run,
            )?)
        }
        Verb::DeleteCollection => ok(store.delete_collection(
            &rt,
            path.namespace.as_deref(),
            &incoming.selectors()?,
            dry_run,
        )),
        Verb::Discovery => unreachable!("resource paths have resource verbs"),
    }
}

/// A list, a page of one: its options checked as kube-apiserver checks them.
fn list(
    store: &mut Store,
    rt: &super::resources::ResourceType,
    path: &ResourcePath,
    incoming: &Accepted,
) -> Result<Value, ApiError> {
    request::list_options(&incoming.query, false)?;
    let get = |key: &str| {
        incoming
            .query
            .get(key)
            .map(String::as_str)
            .unwrap_or_default()
    };
    let limit = match incoming.query.get("limit") {
        Some(l) => Some(
            l.parse::<i64>()
                .map_err(|_| ApiError::bad_request(format!("invalid limit {l:?}")))?,
        ),
        None => None,
    };
    let query = ListQuery {
        limit,
        token: Some(get("continue")).filter(|c| !c.is_empty()),
        any_version: get("resourceVersion") == "0",
        selectors: format!("{}&{}", get("labelSelector"), get("fieldSelector")),
        filtered: !get("labelSelector").is_empty() || !get("fieldSelector").is_empty(),
    };
    store.list(
        rt,
        path.namespace.as_deref(),
        &incoming.selectors()?,
        &query,
    )
}

/// Field validation of a patch: server-side apply fails on any field the kind does not declare;
/// other patches are tried without committing, and fields their result would gain that the kind
/// does not declare fail a `Strict` patch, or are dropped (with a warning under `Warn`).
fn validate_patch(
    store: &mut Store,
    rt: &super::resources::ResourceType,
    namespace: &str,
    name: &str,
    body: &mut PatchBody,
    incoming: &Accepted,
    manager: &str,
) -> Result<(), ApiError> {
    if let PatchBody::Apply { config, .. } = body {
        return fields::apply_error(rt, namespace, name, config).map_or(Ok(()), Err);
    }
    let directive = incoming.field_validation(Verb::Patch)?;
    // A patch that fails fails the same way when it is applied for real.
    let Ok(result) = store.patch(rt, namespace, name, body, manager, true) else {
        return Ok(());
    };
    let unknown = fields::unknown_fields(rt, &result);
    if unknown.is_empty() {
        return Ok(());
    }
    if directive == fields::Directive::Strict {
        return Err(fields::strict_patch_error(&unknown));
    }
    match body {
        PatchBody::Merge(patch) => fields::prune(rt, patch, false),
        PatchBody::Strategic(patch) => fields::prune(rt, patch, true),
        PatchBody::Json(_) => {
            // The operations may put the fields anywhere: send the pruned result instead, as
            // the merge patch from the current object (the same lock is held throughout).
            let mut pruned = result;
            fields::prune(rt, &mut pruned, false);
            let current = store.get(rt, namespace, name)?;
            *body = PatchBody::Merge(fields::merge_diff(&current, &pruned));
        }
        PatchBody::Apply { .. } => {}
    }
    if directive == fields::Directive::Warn {
        incoming.warn(&unknown);
    }
    Ok(())
}

/// Starts a watch: its events flow through a channel into the response body.
fn start_watch(
    shared: &Shared,
    store: std::sync::MutexGuard<'_, super::store::Store>,
    rt: &super::resources::ResourceType,
    path: &ResourcePath,
    incoming: &Accepted,
) -> Result<Reply, ApiError> {
    let params = watch_params(shared, rt, path, incoming)?;
    // With sendInitialEvents the watch starts with the current state whatever the
    // resourceVersion (which can only be older: NotOlderThan).
    let from = incoming
        .query
        .get("resourceVersion")
        .map(String::as_str)
        .filter(|_| !params.initial_events_end);
    let start = store.watch(rt, path.namespace.as_deref(), from);
    drop(store);
    let (tx, rx) = mpsc::channel(256);
    match start {
        Ok(start) => {
            let closers = Closers {
                shutdown: shared.serving(),
                close: incoming.closer.clone(),
                link_up: shared.link_up.subscribe(),
                cuts: shared.client_cuts.subscribe(),
                token: incoming.actor.token.clone(),
            };
            tokio::spawn(watch::run(start, params, closers, tx));
        }
        // Like the watch cache: 200, one ERROR event, end of stream.
        Err(err) => {
            let _ = tx.try_send(watch::error_frame(&err));
        }
    }
    Ok(Reply::Watch(rx))
}

/// The preconditions and dry-run flag of a DELETE's `DeleteOptions` body.
fn delete_options(incoming: &Accepted) -> Result<(Preconditions, bool), ApiError> {
    if incoming.body.is_empty() {
        return Ok((Preconditions::default(), false));
    }
    let options = incoming.json()?;
    let preconditions = Preconditions {
        uid: options["preconditions"]["uid"].as_str().map(str::to_owned),
        resource_version: options["preconditions"]["resourceVersion"]
            .as_str()
            .map(str::to_owned),
    };
    let dry_run = options["dryRun"]
        .as_array()
        .is_some_and(|d| d.iter().any(|v| v == "All"));
    Ok((preconditions, dry_run))
}

fn is_apply(content_type: &str) -> bool {
    content_type == "application/apply-patch+yaml"
}

fn patch_options_invalid(field: &str, reason: &'static str, message: &str) -> ApiError {
    let mut err = ApiError::new(
        422,
        "Invalid",
        format!("PatchOptions.meta.k8s.io \"\" is invalid: {field}: {message}"),
    );
    err.details = Some(json!({
        "group": "meta.k8s.io",
        "kind": "PatchOptions",
        "causes": [{ "reason": format!("Field{reason}"), "message": message, "field": field }],
    }));
    err
}

fn patch_body(
    content_type: &str,
    query: &BTreeMap<String, String>,
    body: Value,
) -> Result<PatchBody, ApiError> {
    Ok(match content_type {
        "application/merge-patch+json" => PatchBody::Merge(body),
        "application/strategic-merge-patch+json" => PatchBody::Strategic(body),
        "application/json-patch+json" => PatchBody::Json(body),
        "application/apply-patch+yaml" => {
            let manager = query
                .get("fieldManager")
                .filter(|m| !m.is_empty())
                .ok_or_else(|| {
                    patch_options_invalid(
                        "fieldManager",
                        "ValueRequired",
                        "Required value: is required for apply patch",
                    )
                })?;
            PatchBody::Apply {
                config: body,
                manager: manager.clone(),
                force: request::flag(query, "force"),
            }
        }
        // go-restful refuses a content type the route does not consume, before any handler.
        _ => {
            let mut err = ApiError::new(415, "UnsupportedMediaType", "415: Unsupported Media Type");
            err.details = Some(json!({}));
            return Err(err);
        }
    })
}

fn watch_params(
    shared: &Shared,
    rt: &super::resources::ResourceType,
    path: &ResourcePath,
    incoming: &Accepted,
) -> Result<WatchParams, ApiError> {
    let query = &incoming.query;
    let timeout = match query.get("timeoutSeconds") {
        Some(t) => t
            .parse()
            .map_err(|_| ApiError::bad_request(format!("invalid timeoutSeconds {t:?}")))?,
        None => 0,
    };
    // Like kube-apiserver, 0 means the server's default.
    let timeout = if timeout == 0 {
        shared.default_watch_timeout
    } else {
        Duration::from_secs(timeout)
    };
    request::list_options(query, true)?;
    let initial_events_end = request::flag(query, "sendInitialEvents");
    if let Some(version) = query.get("resourceVersion").filter(|v| !v.is_empty())
        && let Err(e) = version.parse::<u64>()
    {
        // kube-apiserver parses it as Go's strconv.ParseUint, and answers 500.
        let why = match e.kind() {
            std::num::IntErrorKind::PosOverflow => "value out of range",
            _ => "invalid syntax",
        };
        let quoted = super::microtime::quote(version);
        return Err(ApiError::new(
            500,
            "",
            format!(
                "resourceVersion: Invalid value: {quoted}: strconv.ParseUint: parsing {quoted}: {why}"
            ),
        ));
    }
    Ok(WatchParams {
        rt: rt.clone(),
        namespace: path.namespace.clone(),
        selectors: incoming.selectors()?,
        bookmarks: request::flag(query, "allowWatchBookmarks"),
        initial_events_end,
        timeout,
        bookmark_interval: shared.bookmark_interval,
    })
}
