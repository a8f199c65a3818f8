//! Routing: what a request that passed every layer asks for, and the store's answer to it.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::MutexGuard;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Response, StatusCode, header};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::{AGGREGATED_DISCOVERY, ResponseBody, error_response, json_response};
use crate::Shared;
use crate::commits::Actor;
use crate::log::Verb;
use crate::openapi::{self, fields};
use crate::request::{self, ResourcePath, Route};
use crate::resources::{Registry, ResourceType};
use crate::selector::{FieldSelector, LabelSelector};
use crate::status::ApiError;
use crate::store::{ListQuery, PatchBody, Preconditions, Selectors, Store};
use crate::watch::{self, Closers, WatchParams};

/// A request that passed the network, the faults and access control.
pub(super) struct Accepted {
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
    /// A request that passed the network, the faults and access control, as routing reads it.
    pub(super) fn new(
        req: &http::request::Parts,
        query: BTreeMap<String, String>,
        body: Bytes,
        actor: Actor,
        closer: tokio::sync::watch::Receiver<u64>,
    ) -> Self {
        let content_type = req
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or_default().trim().to_owned())
            .unwrap_or_default();
        let header_text = |name| {
            req.headers
                .get(name)
                .and_then(|v: &HeaderValue| v.to_str().ok())
                .map(str::to_owned)
        };
        let user_agent = header_text(header::USER_AGENT).unwrap_or_default();
        let accept = header_text(header::ACCEPT).unwrap_or_default();
        let aggregated = accept
            .split(',')
            .next()
            .is_some_and(|first| first.contains(AGGREGATED_DISCOVERY));
        Self {
            actor,
            method: req.method.clone(),
            closer,
            aggregated,
            accept,
            if_none_match: header_text(header::IF_NONE_MATCH),
            query,
            content_type,
            user_agent,
            body,
            warnings: RefCell::default(),
        }
    }

    fn json(&self) -> Result<Value, ApiError> {
        if self.content_type == "application/vnd.kubernetes.protobuf" {
            return crate::protobuf::decode(&self.body).map_err(|e| {
                ApiError::new(
                    415,
                    "UnsupportedMediaType",
                    format!("cannot read the protobuf body: {e}"),
                )
            });
        }
        serde_json::from_slice(&self.body).map_err(|e| {
            let go = crate::gojson::syntax_error(&self.body).unwrap_or_else(|| e.to_string());
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
            let go = crate::gojson::syntax_error(&self.body).unwrap_or_else(|| e.to_string());
            ApiError::bad_request(format!(
                "the object provided is unrecognized (must be of type {kind}): couldn't get \
                 version/kind; json parse error: {go} ({})",
                crate::gojson::summarize(&self.body)
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
        rt: &crate::resources::ResourceType,
        body: Option<Value>,
        directive: fields::Directive,
    ) -> Result<Value, ApiError> {
        let mut body = body.unwrap_or_default();
        self.warn(&fields::check_body(rt, &mut body, directive)?);
        crate::microtime::normalize(&rt.kind, &mut body).map_err(|e| {
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

/// The answer to a request: its route's reply, or the error it met, with the `Warning`s of its
/// handling.
pub(super) fn answer(
    shared: &Shared,
    route: &Route,
    incoming: &Accepted,
) -> Response<ResponseBody> {
    let mut response = match dispatch(shared, route, incoming) {
        Ok(reply) => reply.into_response(),
        Err(err) => error_response(&err),
    };
    for warning in incoming.warnings.take() {
        if let Ok(value) = HeaderValue::from_str(&warning) {
            response.headers_mut().append(header::WARNING, value);
        }
    }
    response
}

impl Reply {
    fn into_response(self) -> Response<ResponseBody> {
        match self {
            Self::Json(status, body) => json_response(status, &body),
            Self::Aggregated(body) => {
                let mut response = json_response(200, &body);
                let content_type = format!("application/json;{AGGREGATED_DISCOVERY}");
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_str(&content_type).expect("a valid header value"),
                );
                response
            }
            Self::Document(answer) => {
                let mut response = Response::builder().status(answer.status);
                for (name, value) in answer.headers {
                    response = response.header(name, value);
                }
                response
                    .body(ResponseBody::Full(Some(Bytes::from(answer.body))))
                    .expect("a valid response")
            }
            Self::Watch(rx) => Response::builder()
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, "application/json")
                .header(header::TRANSFER_ENCODING, "chunked")
                .body(ResponseBody::Stream(rx))
                .expect("a valid response"),
        }
    }
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

/// A resource request, resolved: its type, the object or collection it names, and the options
/// of the write it may be.
struct Target<'a> {
    rt: ResourceType,
    path: &'a ResourcePath,
    /// Empty for a cluster-scoped resource or a request across namespaces.
    namespace: &'a str,
    /// Empty for a collection.
    name: &'a str,
    dry_run: bool,
    /// The `fieldValidation` of a create, update or patch.
    directive: fields::Directive,
    /// The field manager of a create, update or patch.
    manager: String,
}

impl<'a> Target<'a> {
    /// The options of a request with `verb` of `rt` at `path`, checked in kube-apiserver's
    /// order: `dryRun`, `force` (for server-side apply only), `fieldValidation`, the field
    /// manager.
    fn new(
        rt: ResourceType,
        path: &'a ResourcePath,
        verb: Verb,
        incoming: &Accepted,
    ) -> Result<Self, ApiError> {
        let dry_run = incoming.dry_run()?;
        if incoming.query.contains_key("force") && !is_apply(&incoming.content_type) {
            return Err(patch_options_invalid(
                "force",
                "ValueForbidden",
                "Forbidden: may not be specified for non-apply patch",
            ));
        }
        Ok(Self {
            rt,
            path,
            namespace: path.namespace.as_deref().unwrap_or_default(),
            name: path.name.as_deref().unwrap_or_default(),
            dry_run,
            directive: incoming.field_validation(verb)?,
            manager: request::field_manager(verb, &incoming.query, &incoming.user_agent)?,
        })
    }
}

/// A request for a resource (a collection or an object in it): its body read, its type
/// resolved, and its options checked, it goes to the store.
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
    let target = Target::new(rt, path, verb, incoming)?;
    perform(shared, store, verb, &target, body, incoming)
}

/// Does what `verb` asks of the store (held) for `target`, with the request's body (the
/// object of a create or update, the patch of a patch).
fn perform(
    shared: &Shared,
    mut store: MutexGuard<'_, Store>,
    verb: Verb,
    target: &Target<'_>,
    body: Option<Value>,
    incoming: &Accepted,
) -> Result<Reply, ApiError> {
    let Target {
        rt,
        path,
        namespace,
        name,
        dry_run,
        ..
    } = target;
    let (namespace, name, dry_run) = (*namespace, *name, *dry_run);
    let manager = target.manager.as_str();
    let ok = |v| Ok(Reply::Json(200, v));
    match verb {
        Verb::Get => ok(store.get(rt, namespace, name)?),
        Verb::List => ok(list(&mut store, rt, path, incoming)?),
        Verb::Watch => start_watch(shared, store, rt, path, incoming),
        Verb::Create => {
            let body = incoming.validated(rt, body, target.directive)?;
            let created = store.create(rt, namespace, body, manager, dry_run)?;
            Ok(Reply::Json(201, created))
        }
        Verb::Update => {
            let body = incoming.validated(rt, body, target.directive)?;
            ok(store.update(rt, namespace, name, body, manager, dry_run)?)
        }
        Verb::Patch => patch(&mut store, target, body.unwrap_or_default(), incoming),
        Verb::Delete => {
            let (preconditions, options_dry_run) = delete_options(incoming)?;
            ok(store.delete(
                rt,
                namespace,
                name,
                &preconditions,
                dry_run || options_dry_run,
            )?)
        }
        Verb::DeleteCollection => ok(store.delete_collection(
            rt,
            path.namespace.as_deref(),
            &incoming.selectors()?,
            dry_run,
        )),
        Verb::Discovery => unreachable!("resource paths have resource verbs"),
    }
}

/// A patch of any kind, server-side apply included: 201 when it creates the object.
fn patch(
    store: &mut Store,
    target: &Target<'_>,
    body: Value,
    incoming: &Accepted,
) -> Result<Reply, ApiError> {
    let Target {
        rt,
        namespace,
        name,
        manager,
        ..
    } = target;
    let mut body = patch_body(&incoming.content_type, &incoming.query, body)?;
    validate_patch(store, rt, namespace, name, &mut body, incoming, manager)?;
    let existed = store.get(rt, namespace, name).is_ok();
    let patched = store.patch(rt, namespace, name, &body, manager, target.dry_run)?;
    Ok(Reply::Json(if existed { 200 } else { 201 }, patched))
}

/// A list, a page of one: its options checked as kube-apiserver checks them.
fn list(
    store: &mut Store,
    rt: &crate::resources::ResourceType,
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
    rt: &crate::resources::ResourceType,
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
    store: std::sync::MutexGuard<'_, crate::store::Store>,
    rt: &crate::resources::ResourceType,
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
    rt: &crate::resources::ResourceType,
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
        let quoted = crate::microtime::quote(version);
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
