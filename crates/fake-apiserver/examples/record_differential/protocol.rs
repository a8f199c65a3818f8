//! Sequences of raw requests, written to reach what the issue names: status codes, reasons and
//! causes, managedFields, watch events and bookmarks, `410 Gone` after compaction, Lease
//! MicroTimes, list paging, label selectors, 422s for invalid names and oversized objects.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use crate::Session;
use crate::replay::LineSplitter;

/// Raw requests through the session's proxy.
struct Raw {
    client: kube::Client,
    namespace: String,
}

/// A watch being read in a task of its own.
struct Watching {
    task: JoinHandle<Vec<Value>>,
}

impl Watching {
    /// Waits for the server to end the watch; returns its events.
    async fn ended(self) -> Vec<Value> {
        self.task.await.unwrap_or_default()
    }

    /// Closes the watch as a client going away does (and lets the proxy see it go before the
    /// next request).
    async fn close(self) {
        self.task.abort();
        let _ = self.task.await;
        pause().await;
    }
}

/// Lets the events of the writes so far reach the watches before the next request.
async fn pause() {
    tokio::time::sleep(Duration::from_millis(300)).await;
}

const JSON: &str = "application/json";
const MERGE: &str = "application/merge-patch+json";
const STRATEGIC: &str = "application/strategic-merge-patch+json";
const JSON_PATCH: &str = "application/json-patch+json";
const APPLY: &str = "application/apply-patch+yaml";

fn rv(value: &Value) -> String {
    value["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

impl Raw {
    fn new(session: &Session) -> Self {
        Self {
            client: session.client(),
            namespace: session.namespace().to_owned(),
        }
    }

    fn cms(&self) -> String {
        format!("/api/v1/namespaces/{}/configmaps", self.namespace)
    }

    fn cm(&self, name: &str) -> String {
        format!("{}/{name}", self.cms())
    }

    fn leases(&self) -> String {
        format!(
            "/apis/coordination.k8s.io/v1/namespaces/{}/leases",
            self.namespace
        )
    }

    fn lease(&self, name: &str) -> String {
        format!("{}/{name}", self.leases())
    }

    async fn send(
        &self,
        method: &str,
        uri: &str,
        content_type: Option<&str>,
        body: Option<String>,
    ) -> Result<(u16, Value), String> {
        let mut request = http::Request::builder().method(method).uri(uri);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        let request = request
            .body(kube::client::Body::from(
                body.unwrap_or_default().into_bytes(),
            ))
            .map_err(|e| e.to_string())?;
        let answer = self
            .client
            .send(request)
            .await
            .map_err(|e| format!("{method} {uri}: {e}"))?;
        let status = answer.status().as_u16();
        let bytes = answer
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("{method} {uri}: {e}"))?
            .to_bytes();
        Ok((
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        ))
    }

    async fn get(&self, uri: &str) -> Result<(u16, Value), String> {
        self.send("GET", uri, None, None).await
    }

    async fn post(&self, uri: &str, body: &Value) -> Result<(u16, Value), String> {
        self.send("POST", uri, Some(JSON), Some(body.to_string()))
            .await
    }

    async fn put(&self, uri: &str, body: &Value) -> Result<(u16, Value), String> {
        self.send("PUT", uri, Some(JSON), Some(body.to_string()))
            .await
    }

    async fn patch(&self, uri: &str, kind: &str, body: &Value) -> Result<(u16, Value), String> {
        self.send("PATCH", uri, Some(kind), Some(body.to_string()))
            .await
    }

    async fn delete(&self, uri: &str, options: Option<&Value>) -> Result<(u16, Value), String> {
        let content_type = options.map(|_| JSON);
        self.send("DELETE", uri, content_type, options.map(Value::to_string))
            .await
    }

    /// Starts a watch of `uri` (with its query).
    async fn watch(&self, uri: &str) -> Result<Watching, String> {
        let request = http::Request::builder()
            .uri(uri)
            .body(kube::client::Body::empty())
            .map_err(|e| e.to_string())?;
        let answer = self
            .client
            .send(request)
            .await
            .map_err(|e| format!("WATCH {uri}: {e}"))?;
        let task = tokio::spawn(async move {
            let mut body = answer.into_body();
            let mut lines = LineSplitter::default();
            let mut events = Vec::new();
            while let Some(Ok(frame)) = body.frame().await {
                if let Ok(data) = frame.into_data() {
                    let data: Bytes = data;
                    events.extend(lines.push(&data));
                }
            }
            events.extend(lines.finish());
            events
        });
        // The server registers the watch before the next write.
        pause().await;
        Ok(Watching { task })
    }
}

fn configmap(name: &str, data: &Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data})
}

/// Create, get, update, patch and delete, with every precondition and conflict.
pub async fn crud(session: &Session) -> Result<(), String> {
    let raw = Raw::new(session);
    let mut a = configmap("a", &json!({"k": "v"}));
    a["metadata"]["labels"] = json!({"app": "web"});
    let (_, created) = raw.post(&raw.cms(), &a).await?;
    raw.post(&raw.cms(), &a).await?; // 409 AlreadyExists
    let (_, read) = raw.get(&raw.cm("a")).await?;
    raw.get(&raw.cm("missing")).await?; // 404
    let mut changed = read.clone();
    changed["data"]["k"] = json!("v2");
    raw.put(&raw.cm("a"), &changed).await?;
    raw.put(&raw.cm("a"), &changed).await?; // 409 Conflict: the version is stale
    let mut unconditional = changed.clone();
    unconditional["metadata"]
        .as_object_mut()
        .map(|m| m.remove("resourceVersion"));
    unconditional["data"]["k"] = json!("v3");
    let (_, current) = raw.put(&raw.cm("a"), &unconditional).await?;
    raw.put(&raw.cm("a"), &current).await?; // a no-op: the same version
    raw.put(&raw.cm("nothere"), &configmap("nothere", &json!({})))
        .await?; // 404: no create on update
    raw.put(&raw.cm("a"), &configmap("other", &json!({})))
        .await?; // 400: names differ
    raw.patch(&raw.cm("a"), MERGE, &json!({"data": {"k2": "v2"}}))
        .await?;
    raw.patch(
        &raw.cm("a"),
        JSON_PATCH,
        &json!([{"op": "test", "path": "/data/k", "value": "wrong"}]),
    )
    .await?; // 422
    raw.patch(
        &raw.cm("a"),
        JSON_PATCH,
        &json!([{"op": "add", "path": "/metadata/labels/tier", "value": "x"}]),
    )
    .await?;
    raw.patch(
        &raw.cm("a"),
        STRATEGIC,
        &json!({"metadata": {"labels": {"app": null}}}),
    )
    .await?;
    raw.patch(
        &raw.cm("a"),
        MERGE,
        &json!({"metadata": {"resourceVersion": rv(&created)}}),
    )
    .await?; // 409: a version in a patch is a precondition
    raw.patch(&raw.cm("missing"), MERGE, &json!({"data": {"k": "v"}}))
        .await?; // 404
    raw.patch(&raw.cm("a"), "text/plain", &json!({})).await?; // 415
    raw.send(
        "POST",
        &format!("{}?dryRun=All", raw.cms()),
        Some(JSON),
        Some(configmap("dry", &json!({})).to_string()),
    )
    .await?;
    raw.get(&raw.cm("dry")).await?; // 404: a dry run stores nothing
    raw.send("POST", &raw.cms(), Some(JSON), Some("{not json".into()))
        .await?; // 400
    let mut elsewhere = configmap("elsewhere", &json!({}));
    elsewhere["metadata"]["namespace"] = json!("kube-system");
    raw.post(&raw.cms(), &elsewhere).await?; // 400: the namespaces differ
    raw.get(&format!("{}/status", raw.cm("a"))).await?; // 404: no such subresource
    let (_, now) = raw.get(&raw.cm("a")).await?;
    raw.delete(
        &raw.cm("a"),
        Some(&json!({"preconditions": {"uid": "00000000-0000-0000-0000-000000000000"}})),
    )
    .await?; // 409
    raw.delete(
        &raw.cm("a"),
        Some(&json!({"preconditions": {"resourceVersion": rv(&created)}})),
    )
    .await?; // 409
    raw.delete(
        &raw.cm("a"),
        Some(
            &json!({"preconditions": {"resourceVersion": rv(&now), "uid": now["metadata"]["uid"]}}),
        ),
    )
    .await?;
    raw.delete(&raw.cm("a"), None).await?; // 404
    raw.post(&raw.cms(), &configmap("b", &json!({"x": "1"})))
        .await?;
    raw.delete(&raw.cm("b"), Some(&json!({"dryRun": ["All"]})))
        .await?;
    raw.get(&raw.cm("b")).await?; // still there
    raw.send(
        "DELETE",
        &format!("{}?labelSelector=none%3Dhere", raw.cms()),
        None,
        None,
    )
    .await?; // deletecollection of nothing
    Ok(())
}

/// Validation: invalid names, keys and labels, objects too large, field validation.
pub async fn validation(session: &Session) -> Result<(), String> {
    let raw = Raw::new(session);
    raw.post(&raw.cms(), &configmap("Bad_Name", &json!({})))
        .await?;
    raw.post(&raw.cms(), &configmap(&"a".repeat(254), &json!({})))
        .await?;
    raw.post(&raw.cms(), &configmap("-starts-with-dash", &json!({})))
        .await?;
    raw.post(&raw.cms(), &json!({"metadata": {}})).await?; // no name
    let mut generated = json!({"metadata": {"generateName": "gen-"}});
    raw.post(&raw.cms(), &generated).await?;
    generated["metadata"]["generateName"] = json!("Bad_Prefix-");
    raw.post(&raw.cms(), &generated).await?;
    raw.post(&raw.cms(), &configmap("keys", &json!({"bad key": "x"})))
        .await?;
    let mut both = configmap("both", &json!({"k": "x"}));
    both["binaryData"] = json!({"k": "eA=="});
    raw.post(&raw.cms(), &both).await?;
    // One bad label per request: kube-apiserver checks labels in Go's map order, which varies.
    for (name, labels) in [
        ("label-key", json!({"bad key": "x"})),
        ("label-value", json!({"ok": "y".repeat(64)})),
    ] {
        let mut object = configmap(name, &json!({}));
        object["metadata"]["labels"] = labels;
        raw.post(&raw.cms(), &object).await?;
    }
    let mut annotations = configmap("annotations", &json!({}));
    annotations["metadata"]["annotations"] = json!({"big": "x".repeat(262_144)});
    raw.post(&raw.cms(), &annotations).await?;
    let mut many = configmap("Many_Errors", &json!({"bad key": "x"}));
    many["metadata"]["labels"] = json!({"-bad": "x"});
    raw.post(&raw.cms(), &many).await?;
    raw.post(
        &raw.cms(),
        &configmap("big", &json!({"k": "x".repeat(1_048_577)})),
    )
    .await?; // 422: over 1 MiB
    raw.post(
        &raw.cms(),
        &configmap("huge", &json!({"k": "x".repeat(3 * 1_048_576 + 10)})),
    )
    .await?; // 413
    let (_, small) = raw
        .post(&raw.cms(), &configmap("grows", &json!({"k": "x"})))
        .await?;
    let mut grown = small.clone();
    grown["data"]["k"] = json!("x".repeat(1_048_577));
    raw.put(&raw.cm("grows"), &grown).await?; // 422
    raw.patch(
        &raw.cm("grows"),
        MERGE,
        &json!({"metadata": {"name": "renamed"}}),
    )
    .await?; // 400? the name may not change
    let unknown = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "unknown"}, "data": {}, "spec": {"x": 1}});
    for validation in ["Strict", "Warn", "Ignore"] {
        let mut body = unknown.clone();
        body["metadata"]["name"] = json!(format!("unknown-{}", validation.to_lowercase()));
        raw.send(
            "POST",
            &format!("{}?fieldValidation={validation}", raw.cms()),
            Some(JSON),
            Some(body.to_string()),
        )
        .await?;
    }
    raw.send(
        "POST",
        &format!("{}?fieldValidation=Sometimes", raw.cms()),
        Some(JSON),
        Some(configmap("odd", &json!({})).to_string()),
    )
    .await?;
    raw.post(&raw.leases(), &json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "l"}, "spec": {"leaseDurationSeconds": -1, "leaseTransitions": -2}}))
        .await?;
    raw.post(&raw.leases(), &json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "Bad.Lease"}, "spec": {}}))
        .await?;
    Ok(())
}

fn lease_object(name: &str, spec: &Value) -> Value {
    json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": name}, "spec": spec})
}

/// Leases, with MicroTimes: kube-apiserver reads exactly six fraction digits, with `Z` or an
/// offset, and writes them in UTC.
pub async fn lease(session: &Session) -> Result<(), String> {
    let raw = Raw::new(session);
    let (_, created) = raw
        .post(
            &raw.leases(),
            &lease_object(
                "a",
                &json!({"holderIdentity": "one", "leaseDurationSeconds": 15,
                    "acquireTime": "2026-01-02T03:04:05.000000Z", "renewTime": "2026-01-02T03:04:05.123456Z",
                    "leaseTransitions": 0}),
            ),
        )
        .await?;
    let watch = raw
        .watch(&format!(
            "{}?watch=true&resourceVersion={}",
            raw.leases(),
            rv(&created)
        ))
        .await?;
    let mut renewed = created.clone();
    renewed["spec"]["renewTime"] = json!("2026-01-02T05:04:06.654321+02:00");
    let (_, renewed) = raw.put(&raw.lease("a"), &renewed).await?;
    raw.patch(
        &raw.lease("a"),
        MERGE,
        &json!({"spec": {"renewTime": "2026-01-02T03:04:08.000001Z", "holderIdentity": "two", "leaseTransitions": 1}}),
    )
    .await?;
    raw.patch(
        &raw.lease("a"),
        STRATEGIC,
        &json!({"spec": {"holderIdentity": null, "acquireTime": null, "renewTime": null}}),
    )
    .await?;
    for (name, time) in [
        ("seconds", "2026-01-02T03:04:05Z"),
        ("millis", "2026-01-02T03:04:05.123Z"),
        ("nanos", "2026-01-02T03:04:05.123456789Z"),
        ("nozone", "2026-01-02T03:04:05.123456"),
        ("offset", "2026-01-02T03:04:05.123456-01:30"),
        ("word", "yesterday"),
    ] {
        raw.post(
            &raw.leases(),
            &lease_object(name, &json!({"renewTime": time, "acquireTime": time})),
        )
        .await?;
    }
    let mut stale = renewed.clone();
    stale["spec"]["renewTime"] = json!("2026-01-02T03:04:05.5Z");
    raw.put(&raw.lease("a"), &stale).await?; // 400: five digits short
    raw.patch(
        &raw.lease("a"),
        MERGE,
        &json!({"spec": {"renewTime": "2026-01-02T03:04:05Z"}}),
    )
    .await?;
    raw.patch(
        &raw.lease("a"),
        JSON_PATCH,
        &json!([{"op": "replace", "path": "/spec/leaseDurationSeconds", "value": 0}]),
    )
    .await?;
    raw.post(
        &raw.leases(),
        &lease_object("coordinated", &json!({"holderIdentity": "x", "strategy": "OldestEmulationVersion", "preferredHolder": "y"})),
    )
    .await?;
    raw.post(&raw.leases(), &lease_object("empty", &json!({})))
        .await?;
    raw.post(&raw.leases(), &json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "nospec"}}))
        .await?;
    raw.get(&raw.lease("a")).await?;
    raw.get(&raw.leases()).await?;
    pause().await;
    watch.close().await;
    raw.delete(&raw.lease("a"), None).await?;
    Ok(())
}

/// List paging, label and field selectors.
pub async fn list(session: &Session) -> Result<(), String> {
    let raw = Raw::new(session);
    let labels = [
        ("c1", json!({"app": "a", "tier": "1"})),
        ("c2", json!({"app": "a", "tier": "2"})),
        ("c3", json!({"app": "b", "tier": "1"})),
        ("c4", json!({"app": "b"})),
        ("c5", json!({})),
    ];
    for (name, labels) in &labels {
        let mut cm = configmap(name, &json!({"n": name}));
        cm["metadata"]["labels"] = labels.clone();
        raw.post(&raw.cms(), &cm).await?;
    }
    let (_, page) = raw.get(&format!("{}?limit=2", raw.cms())).await?;
    let token = page["metadata"]["continue"].as_str().unwrap_or_default();
    let (_, page) = raw
        .get(&format!("{}?limit=2&continue={token}", raw.cms()))
        .await?;
    let token = page["metadata"]["continue"].as_str().unwrap_or_default();
    raw.get(&format!("{}?limit=2&continue={token}", raw.cms()))
        .await?;
    raw.get(&format!("{}?limit=2&continue=bm90IGEgdG9rZW4", raw.cms()))
        .await?; // 400: not a token
    raw.get(&format!("{}?limit=1&labelSelector=app%3Da", raw.cms()))
        .await?;
    raw.get(&format!("{}?limit=0", raw.cms())).await?;
    raw.get(&format!("{}?limit=-1", raw.cms())).await?;
    for selector in [
        "app%3Da",
        "app%3D%3Da",
        "app!%3Da",
        "app%20in%20(a%2Cb)",
        "app%20notin%20(a)",
        "tier",
        "!tier",
        "app%3Da%2Ctier%3D1",
        "app%3D",
        "tier%3E1",
        "app%3D%3D%3F",
        "app%20in%20a",
        "Bad%20Key%3Dx",
    ] {
        raw.get(&format!("{}?labelSelector={selector}", raw.cms()))
            .await?;
    }
    for selector in [
        "metadata.name%3Dc1",
        "metadata.name!%3Dc1",
        &format!("metadata.namespace%3D{}", raw.namespace),
        "data.n%3Dc1",
        "metadata.name",
    ] {
        raw.get(&format!("{}?fieldSelector={selector}", raw.cms()))
            .await?;
    }
    raw.get(&format!("{}?resourceVersion=0", raw.cms())).await?;
    raw.get(&format!(
        "{}?resourceVersion=0&resourceVersionMatch=NotOlderThan&limit=2",
        raw.cms()
    ))
    .await?;
    raw.get(&format!("{}?resourceVersionMatch=Exact", raw.cms()))
        .await?; // 422: Exact needs a version
    raw.get(&format!("{}?labelSelector=app%3Db&limit=1", raw.leases()))
        .await?;
    raw.send(
        "DELETE",
        &format!("{}?labelSelector=app%3Db", raw.cms()),
        None,
        None,
    )
    .await?;
    raw.get(&raw.cms()).await?;
    Ok(())
}

/// Watches: events, selector transitions, bookmarks before a timeout, initial events, and
/// versions too large.
pub async fn watch(session: &Session) -> Result<(), String> {
    let raw = Raw::new(session);
    let mut c1 = configmap("c1", &json!({"k": "1"}));
    c1["metadata"]["labels"] = json!({"app": "web"});
    let (_, created) = raw.post(&raw.cms(), &c1).await?;
    let from = rv(&created);
    let all = raw
        .watch(&format!(
            "{}?watch=true&resourceVersion={from}&allowWatchBookmarks=true&timeoutSeconds=8",
            raw.cms()
        ))
        .await?;
    let web = raw
        .watch(&format!(
            "{}?watch=true&resourceVersion={from}&labelSelector=app%3Dweb",
            raw.cms()
        ))
        .await?;
    let named = raw
        .watch(&format!(
            "{}?watch=1&resourceVersion={from}&fieldSelector=metadata.name%3Dc2",
            raw.cms()
        ))
        .await?;
    raw.patch(&raw.cm("c1"), MERGE, &json!({"data": {"k": "2"}}))
        .await?;
    let mut c2 = configmap("c2", &json!({}));
    c2["metadata"]["labels"] = json!({"app": "db"});
    raw.post(&raw.cms(), &c2).await?;
    raw.patch(
        &raw.cm("c2"),
        MERGE,
        &json!({"metadata": {"labels": {"app": "web"}}}),
    )
    .await?; // joins the selector: ADDED
    raw.patch(
        &raw.cm("c1"),
        MERGE,
        &json!({"metadata": {"labels": {"app": "db"}}}),
    )
    .await?; // leaves it: DELETED
    raw.patch(&raw.cm("c1"), MERGE, &json!({"data": {"k": "3"}}))
        .await?; // unseen by the selector's watch
    raw.delete(&raw.cm("c2"), None).await?;
    pause().await;
    web.close().await;
    named.close().await;
    // The server ends it, with a bookmark 2 s before.
    all.ended().await;
    let initial = raw
        .watch(&format!(
            "{}?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&timeoutSeconds=3",
            raw.cms()
        ))
        .await?;
    initial.ended().await;
    let zero = raw
        .watch(&format!(
            "{}?watch=true&resourceVersion=0&timeoutSeconds=1",
            raw.cms()
        ))
        .await?;
    zero.ended().await;
    raw.watch(&format!(
        "{}?watch=true&sendInitialEvents=true&timeoutSeconds=1",
        raw.cms()
    ))
    .await?
    .ended()
    .await; // 422? resourceVersionMatch is required
    let (_, list) = raw.get(&raw.cms()).await?;
    let ahead = rv(&list["items"][0]).parse::<u64>().unwrap_or(0) + 1_000_000;
    raw.watch(&format!(
        "{}?watch=true&resourceVersion={ahead}&timeoutSeconds=10",
        raw.cms()
    ))
    .await?
    .ended()
    .await; // too large a version
    raw.watch(&format!("{}?watch=true&resourceVersion=abc", raw.cms()))
        .await?
        .ended()
        .await;
    raw.watch(&format!(
        "{}?watch=true&labelSelector=app%3D%3D%3F",
        raw.cms()
    ))
    .await?
    .ended()
    .await;
    raw.watch(&format!("{}/c1?watch=true&timeoutSeconds=1", raw.cms()))
        .await?
        .ended()
        .await; // a watch of one object, by its path
    Ok(())
}

/// Server-side apply by several managers: managedFields, conflicts, force, and updates that
/// take fields over.
pub async fn apply(session: &Session) -> Result<(), String> {
    let raw = Raw::new(session);
    let applied = |data: Value| {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "shared", "labels": {"owner": "one"}}, "data": data})
            .to_string()
    };
    let apply = |manager: &str, force: bool| {
        format!(
            "{}?fieldManager={manager}{}",
            raw.cm("shared"),
            if force { "&force=true" } else { "" }
        )
    };
    raw.send(
        "PATCH",
        &apply("one", false),
        Some(APPLY),
        Some(applied(json!({"a": "1", "b": "1"}))),
    )
    .await?;
    raw.send(
        "PATCH",
        &apply("two", false),
        Some(APPLY),
        Some(applied(json!({"a": "2"}))),
    )
    .await?; // 409: a and the label belong to one
    raw.send(
        "PATCH",
        &apply("two", true),
        Some(APPLY),
        Some(applied(json!({"a": "2", "c": "2"}))),
    )
    .await?;
    raw.send(
        "PATCH",
        &apply("one", false),
        Some(APPLY),
        Some(applied(json!({"b": "1"}))),
    )
    .await?; // one gives up a (now two's) and keeps b
    raw.send(
        "PATCH",
        &format!("{}?fieldManager=three", raw.cm("shared")),
        Some(MERGE),
        Some(json!({"data": {"b": "3"}}).to_string()),
    )
    .await?; // an update takes b over
    raw.send(
        "PATCH",
        &apply("one", false),
        Some(APPLY),
        Some(applied(json!({"b": "1"}))),
    )
    .await?; // 409: b is three's
    raw.send(
        "PATCH",
        &raw.cm("shared"),
        Some(APPLY),
        Some(applied(json!({}))),
    )
    .await?; // 422: no fieldManager
    raw.send(
        "PATCH",
        &format!("{}?fieldManager=one&force=true", raw.cm("shared")),
        Some(MERGE),
        Some("{}".into()),
    )
    .await?; // 422: force is for apply only
    raw.send(
        "PATCH",
        &apply("one", false),
        Some(APPLY),
        Some(
            json!({"apiVersion": "v2", "kind": "ConfigMap", "metadata": {"name": "shared"}})
                .to_string(),
        ),
    )
    .await?; // 400? wrong version
    raw.send(
        "PATCH",
        &apply("one", false),
        Some(APPLY),
        Some("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: shared\ndata:\n  from-yaml: \"yes\"\n".into()),
    )
    .await?; // YAML, as kubectl sends it
    let (_, current) = raw.get(&raw.cm("shared")).await?;
    let mut put = current.clone();
    put["data"] = json!({"only": "put"});
    raw.send(
        "PUT",
        &format!("{}?fieldManager=four", raw.cm("shared")),
        Some(JSON),
        Some(put.to_string()),
    )
    .await?;
    raw.send(
        "PATCH",
        &apply("five", false),
        Some(APPLY),
        Some(applied(json!({"new": "5"}))),
    )
    .await?; // 409: the label belongs to one
    raw.send(
        "PATCH",
        &format!("{}?fieldManager=new", raw.cm("created-by-apply")),
        Some(APPLY),
        Some(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "created-by-apply"}, "data": {"x": "y"}}).to_string()),
    )
    .await?; // 201
    let mut lease_apply = lease_object(
        "held",
        &json!({"holderIdentity": "a", "renewTime": "2026-01-02T03:04:05.5Z"}),
    );
    lease_apply["metadata"]["labels"] = json!({"x": "y"});
    raw.send(
        "PATCH",
        &format!("{}?fieldManager=leader", raw.lease("held")),
        Some(APPLY),
        Some(lease_apply.to_string()),
    )
    .await?; // 500: not a MicroTime, found late
    lease_apply["spec"]["renewTime"] = json!("2026-01-02T03:04:05.500000Z");
    raw.send(
        "PATCH",
        &format!("{}?fieldManager=leader", raw.lease("held")),
        Some(APPLY),
        Some(lease_apply.to_string()),
    )
    .await?;
    raw.send(
        "PATCH",
        &format!("{}?fieldManager=other", raw.lease("held")),
        Some(STRATEGIC),
        Some(json!({"spec": {"renewTime": "2026-01-02T03:04:06.000000Z"}}).to_string()),
    )
    .await?;
    Ok(())
}

/// Watches and list pages from before a compaction: 410 Gone.
pub async fn compaction(session: &Session) -> Result<(), String> {
    let raw = Raw::new(session);
    let (_, created) = raw
        .post(&raw.cms(), &configmap("c", &json!({"n": "0"})))
        .await?;
    let from = rv(&created);
    for n in 1..=3 {
        raw.patch(&raw.cm("c"), MERGE, &json!({"data": {"n": n.to_string()}}))
            .await?;
    }
    raw.post(&raw.cms(), &configmap("d", &json!({}))).await?;
    let (_, page) = raw.get(&format!("{}?limit=1", raw.cms())).await?;
    let token = page["metadata"]["continue"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let (_, now) = raw.get(&raw.cm("c")).await?;
    let live = raw
        .watch(&format!(
            "{}?watch=true&resourceVersion={}",
            raw.cms(),
            rv(&now)
        ))
        .await?;
    session.compact().await?;
    raw.watch(&format!("{}?watch=true&resourceVersion={from}", raw.cms()))
        .await?
        .ended()
        .await; // 410
    raw.get(&format!("{}?limit=1&continue={token}", raw.cms()))
        .await?; // 410
    raw.patch(&raw.cm("c"), MERGE, &json!({"data": {"n": "after"}}))
        .await?;
    let (_, list) = raw.get(&raw.cms()).await?;
    pause().await;
    live.close().await;
    raw.watch(&format!(
        "{}?watch=true&resourceVersion={}&timeoutSeconds=1",
        raw.cms(),
        rv(&list)
    ))
    .await?
    .ended()
    .await;
    Ok(())
}
