//! Field ownership: `metadata.managedFields` as kube-apiserver keeps it, for every write.
//!
//! Expected values follow kube-apiserver's field manager and structured-merge-diff
//! (`staging/src/k8s.io/apimachinery/pkg/util/managedfields`, `merge/update.go`) and its
//! integration tests (`test/integration/apiserver/apply/apply_test.go`, for example
//! `TestClearManagedFieldsWithUpdateEmptyList`).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use lockheed_fake_apiserver::FakeApiServer;
use serde_json::{Value, json};

use crate::common::{ManualClock, cm, configmaps, data, full_status, rv, server, status};

async fn server_at(clock: &ManualClock) -> FakeApiServer {
    FakeApiServer::builder()
        .clock(Arc::new(clock.clone()))
        .start()
        .await
        .unwrap()
}

fn clock() -> ManualClock {
    ManualClock::new("2026-11-30T10:00:00.250Z".parse().unwrap())
}

fn params(manager: &str) -> PatchParams {
    PatchParams {
        field_manager: Some(manager.to_owned()),
        ..PatchParams::default()
    }
}

fn post(manager: &str) -> PostParams {
    PostParams {
        field_manager: Some(manager.to_owned()),
        ..PostParams::default()
    }
}

/// The raw JSON of an object, as the server sends it.
async fn raw(server: &FakeApiServer, path: &str) -> Value {
    let request = http::Request::get(path).body(Vec::new()).unwrap();
    server.client().request::<Value>(request).await.unwrap()
}

async fn raw_cm(server: &FakeApiServer, name: &str) -> Value {
    raw(
        server,
        &format!("/api/v1/namespaces/default/configmaps/{name}"),
    )
    .await
}

/// Sends a raw request with a body and headers, for what `kube::Api` cannot send.
async fn send(
    server: &FakeApiServer,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &Value,
) -> Result<Value, kube::Error> {
    let mut request = http::Request::builder().method(method).uri(path);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(serde_json::to_vec(body).unwrap()).unwrap();
    server.client().request::<Value>(request).await
}

/// `manager (operation) → fieldsV1` of every entry, in the server's order.
fn owners(object: &Value) -> Vec<(String, String, Value)> {
    object["metadata"]["managedFields"]
        .as_array()
        .map(|entries| {
            entries
                .iter()
                .map(|e| {
                    (
                        e["manager"].as_str().unwrap_or_default().to_owned(),
                        e["operation"].as_str().unwrap().to_owned(),
                        e["fieldsV1"].clone(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn owner(manager: &str, operation: &str, fields: Value) -> (String, String, Value) {
    (manager.to_owned(), operation.to_owned(), fields)
}

fn apply_cm(name: &str, data: &Value) -> Patch<Value> {
    Patch::Apply(json!({
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": name }, "data": data,
    }))
}

#[tokio::test]
async fn every_write_records_its_manager() {
    let clock = clock();
    let server = server_at(&clock).await;
    let api = configmaps(&server);
    let path = "/api/v1/namespaces/default/configmaps/w";

    // A create: the entry kube-apiserver shows, field for field.
    api.create(&post("creator"), &cm("w", &[("a", "1"), ("c", "1")]))
        .await
        .unwrap();
    let object = raw_cm(&server, "w").await;
    assert_eq!(
        object["metadata"]["managedFields"],
        json!([{
            "manager": "creator",
            "operation": "Update",
            "apiVersion": "v1",
            "time": "2026-11-30T10:00:00Z",
            "fieldsType": "FieldsV1",
            "fieldsV1": { "f:data": { ".": {}, "f:a": {}, "f:c": {} } },
        }])
    );

    // A merge patch takes what it changes (a) and owns what it adds (b).
    clock.advance(Duration::from_secs(1));
    api.patch(
        "w",
        &params("merger"),
        &Patch::Merge(json!({ "data": { "a": "2", "b": "1" } })),
    )
    .await
    .unwrap();
    // A strategic merge patch that removes c: nobody owns it any more; the creator keeps the
    // map it made.
    clock.advance(Duration::from_secs(1));
    api.patch(
        "w",
        &params("strategic"),
        &Patch::Strategic(json!({ "data": { "c": null } })),
    )
    .await
    .unwrap();
    // A JSON patch without fieldManager: the manager is the User-Agent up to its first '/'.
    clock.advance(Duration::from_secs(1));
    send(
        &server,
        "PATCH",
        path,
        &[
            ("content-type", "application/json-patch+json"),
            (
                "user-agent",
                "kubectl/v1.33.0 (linux/amd64) kubernetes/abcdef",
            ),
        ],
        &json!([{ "op": "add", "path": "/metadata/labels", "value": { "x": "y" } }]),
    )
    .await
    .unwrap();
    // An update (PUT) that changes b.
    clock.advance(Duration::from_secs(1));
    let mut current = api.get("w").await.unwrap();
    current
        .data
        .as_mut()
        .unwrap()
        .insert("b".into(), "2".into());
    api.replace("w", &post("replacer"), &current).await.unwrap();

    let object = raw_cm(&server, "w").await;
    assert_eq!(
        owners(&object),
        [
            // The map it made, without the keys: a member with no children.
            owner("creator", "Update", json!({ "f:data": {} })),
            owner("merger", "Update", json!({ "f:data": { "f:a": {} } })),
            owner(
                "kubectl",
                "Update",
                json!({ "f:metadata": { "f:labels": { ".": {}, "f:x": {} } } })
            ),
            owner("replacer", "Update", json!({ "f:data": { "f:b": {} } })),
        ],
        "the strategic patch only removed, so it owns nothing"
    );
    let times: Vec<&str> = object["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["time"].as_str().unwrap())
        .collect();
    assert_eq!(
        times,
        [
            "2026-11-30T10:00:00Z",
            "2026-11-30T10:00:01Z",
            "2026-11-30T10:00:03Z",
            "2026-11-30T10:00:04Z"
        ]
    );

    // A write that changes nothing is no write: no new entry, no new resourceVersion.
    let before = rv(&api.get("w").await.unwrap());
    api.patch(
        "w",
        &params("idle"),
        &Patch::Merge(json!({ "data": { "a": "2" } })),
    )
    .await
    .unwrap();
    let after = api.get("w").await.unwrap();
    assert_eq!(rv(&after), before);
    assert!(
        after
            .metadata
            .managed_fields
            .unwrap()
            .iter()
            .all(|e| e.manager.as_deref() != Some("idle"))
    );
}

#[tokio::test]
async fn a_removed_field_loses_its_owners_so_the_next_apply_needs_no_force() {
    // kube-lease-manager's handover: the holder applies the lease, releases it with a
    // strategic merge patch of nulls, and another manager's apply takes it without force.
    let server = server().await;
    let leases: Api<Lease> = Api::namespaced(server.client(), "default");
    let take = |holder: &str| {
        Patch::Apply(json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": { "name": "l" },
            "spec": {
                "holderIdentity": holder,
                "acquireTime": "2026-11-30T10:00:00.000000Z",
                "renewTime": "2026-11-30T10:00:00.000000Z",
                "leaseDurationSeconds": 2,
            },
        }))
    };
    leases
        .patch("l", &PatchParams::apply("alice"), &take("alice"))
        .await
        .unwrap();
    let err = leases
        .patch("l", &PatchParams::apply("bob"), &take("bob"))
        .await
        .unwrap_err();
    let s = full_status(err);
    assert_eq!((s.code, s.reason.as_str()), (409, "Conflict"));
    assert_eq!(
        s.message,
        "Apply failed with 1 conflict: conflict with \"alice\": .spec.holderIdentity"
    );

    let release = json!({ "spec": {
        "holderIdentity": null, "acquireTime": null, "renewTime": null,
        "leaseDurationSeconds": null,
    }});
    let released = leases
        .patch("l", &params("alice"), &Patch::Strategic(release))
        .await
        .unwrap();
    assert!(released.metadata.managed_fields.is_none(), "{released:?}");

    let taken = leases
        .patch("l", &PatchParams::apply("bob"), &take("bob"))
        .await
        .unwrap();
    assert_eq!(taken.spec.unwrap().holder_identity.as_deref(), Some("bob"));
    let object = raw(
        &server,
        "/apis/coordination.k8s.io/v1/namespaces/default/leases/l",
    )
    .await;
    assert_eq!(
        owners(&object),
        [owner(
            "bob",
            "Apply",
            json!({ "f:spec": {
                "f:acquireTime": {}, "f:holderIdentity": {}, "f:leaseDurationSeconds": {},
                "f:renewTime": {},
            }})
        )]
    );
    assert_eq!(
        object["metadata"]["managedFields"][0]["apiVersion"],
        "coordination.k8s.io/v1"
    );
}

#[tokio::test]
async fn shared_ownership_conflicts_and_force() {
    let server = server().await;
    let api = configmaps(&server);
    api.patch(
        "s",
        &PatchParams::apply("alice"),
        &apply_cm("s", &json!({ "x": "1", "y": "1" })),
    )
    .await
    .unwrap();
    // The same value is no conflict: both own x.
    api.patch(
        "s",
        &PatchParams::apply("bob"),
        &apply_cm("s", &json!({ "x": "1" })),
    )
    .await
    .unwrap();
    let object = raw_cm(&server, "s").await;
    let alice = owner(
        "alice",
        "Apply",
        json!({ "f:data": { "f:x": {}, "f:y": {} } }),
    );
    let bob = owner("bob", "Apply", json!({ "f:data": { "f:x": {} } }));
    assert_eq!(owners(&object), [bob, alice]);
    // bob's apply changed nothing in the object, so his entry has no time (kube-apiserver
    // stamps an applier only when its apply changes the object), which sorts it first.
    assert!(object["metadata"]["managedFields"][0].get("time").is_none());
    assert!(object["metadata"]["managedFields"][1]["time"].is_string());

    // An update takes z; then carol's apply changes fields of three managers.
    api.patch(
        "s",
        &params("editor"),
        &Patch::Merge(json!({ "data": { "z": "1" } })),
    )
    .await
    .unwrap();
    let changes = apply_cm("s", &json!({ "x": "2", "y": "2", "z": "2" }));
    let err = api
        .patch("s", &PatchParams::apply("carol"), &changes)
        .await
        .unwrap_err();
    let s = full_status(err);
    assert_eq!((s.code, s.reason.as_str()), (409, "Conflict"));
    assert_eq!(
        s.message,
        "Apply failed with 4 conflicts: conflicts with \"alice\":\n- .data.x\n- .data.y\n\
         conflicts with \"bob\":\n- .data.x\nconflicts with \"editor\" using v1:\n- .data.z"
    );
    let causes = s.details.unwrap().causes;
    assert_eq!(causes.len(), 4);
    assert!(
        causes.iter().all(|c| c.reason == "FieldManagerConflict"),
        "{causes:?}"
    );
    assert_eq!(causes[3].message, "conflict with \"editor\" using v1");
    assert_eq!(causes[3].field, ".data.z");
    assert_eq!(data(&api.get("s").await.unwrap(), "x"), Some("1"));

    // Forced, carol takes all three; the others keep what she did not touch.
    let forced = api
        .patch("s", &PatchParams::apply("carol").force(), &changes)
        .await
        .unwrap();
    assert_eq!(data(&forced, "z"), Some("2"));
    let object = raw_cm(&server, "s").await;
    assert_eq!(
        owners(&object),
        [owner(
            "carol",
            "Apply",
            json!({ "f:data": { "f:x": {}, "f:y": {}, "f:z": {} } })
        )],
        "alice, bob and editor lost every field they had"
    );
}

#[tokio::test]
async fn fields_an_applier_drops_go_unless_someone_else_owns_them() {
    let server = server().await;
    let api = configmaps(&server);
    let apply = |data: Value| {
        let api = api.clone();
        async move {
            api.patch("d", &PatchParams::apply("alice"), &apply_cm("d", &data))
                .await
                .unwrap()
        }
    };
    apply(json!({ "mine": "1", "edited": "1", "kept": "1" })).await;
    // An update takes `edited`; another applier shares `kept`.
    api.patch(
        "d",
        &params("editor"),
        &Patch::Merge(json!({ "data": { "edited": "2" } })),
    )
    .await
    .unwrap();
    api.patch(
        "d",
        &PatchParams::apply("bob"),
        &apply_cm("d", &json!({ "kept": "1" })),
    )
    .await
    .unwrap();
    let after = apply(json!({ "new": "1" })).await;
    assert_eq!(
        after.data.unwrap().into_iter().collect::<Vec<_>>(),
        [
            ("edited".to_owned(), "2".to_owned()),
            ("kept".to_owned(), "1".to_owned()),
            ("new".to_owned(), "1".to_owned()),
        ],
        "only `mine`, which alice alone owned, is gone"
    );
}

async fn next_event<S>(events: &mut S) -> WatchEvent<ConfigMap>
where
    S: futures::Stream<Item = Result<WatchEvent<ConfigMap>, kube::Error>> + Unpin,
{
    match tokio::time::timeout(Duration::from_secs(10), events.next())
        .await
        .expect("an event within 10 s")
    {
        Some(Ok(event)) => event,
        other => panic!("expected an event, got {other:?}"),
    }
}

#[tokio::test]
async fn managed_fields_in_get_list_and_watch() {
    let server = server().await;
    let api = configmaps(&server);
    let made = api
        .create(&post("creator"), &cm("g", &[("k", "v")]))
        .await
        .unwrap();
    let mut events = api
        .watch(
            &WatchParams::default(),
            &made.metadata.resource_version.clone().unwrap(),
        )
        .await
        .unwrap()
        .boxed();
    let patched = api
        .patch(
            "g",
            &params("patcher"),
            &Patch::Merge(json!({ "data": { "k": "w" } })),
        )
        .await
        .unwrap();
    let got = api.get("g").await.unwrap();
    assert_eq!(got.metadata.managed_fields, patched.metadata.managed_fields);
    let managers: Vec<_> = got
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .map(|e| (e.manager.clone().unwrap(), e.operation.clone().unwrap()))
        .collect();
    assert_eq!(
        managers,
        [
            ("creator".to_owned(), "Update".to_owned()),
            ("patcher".to_owned(), "Update".to_owned())
        ]
    );
    let listed = api.list(&Default::default()).await.unwrap();
    assert_eq!(
        listed.items[0].metadata.managed_fields,
        got.metadata.managed_fields
    );
    api.delete("g", &Default::default()).await.unwrap();

    match next_event(&mut events).await {
        WatchEvent::Modified(o) => {
            assert_eq!(o.metadata.managed_fields, got.metadata.managed_fields);
        }
        other => panic!("expected MODIFIED, got {other:?}"),
    }
    match next_event(&mut events).await {
        WatchEvent::Deleted(o) => {
            assert_eq!(o.metadata.managed_fields, got.metadata.managed_fields);
        }
        other => panic!("expected DELETED, got {other:?}"),
    }
}

#[tokio::test]
async fn clients_clear_keep_or_replace_managed_fields() {
    let server = server().await;
    let api = configmaps(&server);
    let path = "/api/v1/namespaces/default/configmaps/m";
    let json_type = [("content-type", "application/json")];
    api.patch(
        "m",
        &PatchParams::apply("alice"),
        &apply_cm("m", &json!({ "k": "v" })),
    )
    .await
    .unwrap();
    let applied = raw_cm(&server, "m").await;

    // Left out of an update: kept, so clients that do not know the field lose nothing.
    let mut body = applied.clone();
    body["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("managedFields");
    body["metadata"]["labels"] = json!({ "l": "1" });
    let kept = send(
        &server,
        "PUT",
        &format!("{path}?fieldManager=ed"),
        &json_type,
        &body,
    )
    .await
    .unwrap();
    assert_eq!(
        owners(&kept),
        [
            owner("alice", "Apply", json!({ "f:data": { "f:k": {} } })),
            owner(
                "ed",
                "Update",
                json!({ "f:metadata": { "f:labels": { ".": {}, "f:l": {} } } })
            ),
        ]
    );

    // A list kube-apiserver cannot decode is ignored too.
    let mut body = kept.clone();
    body["metadata"]["managedFields"] =
        json!([{ "manager": "x", "operation": "Bogus", "apiVersion": "v1" }]);
    let ignored = send(&server, "PUT", path, &json_type, &body).await.unwrap();
    assert_eq!(owners(&ignored), owners(&kept));

    // A list the client sends replaces the stored one.
    let mut body = ignored.clone();
    body["metadata"]["managedFields"] = json!([{
        "manager": "someone", "operation": "Update", "apiVersion": "v1",
        "fieldsType": "FieldsV1", "fieldsV1": { "f:data": { "f:k": {} } },
    }]);
    let replaced = send(&server, "PUT", path, &json_type, &body).await.unwrap();
    assert_eq!(
        owners(&replaced),
        [owner(
            "someone",
            "Update",
            json!({ "f:data": { "f:k": {} } })
        )]
    );

    // `[]` clears them, and updates after that are not tracked (until the next apply).
    let mut body = replaced.clone();
    body["metadata"]["managedFields"] = json!([]);
    let cleared = send(&server, "PUT", path, &json_type, &body).await.unwrap();
    assert!(
        cleared["metadata"].get("managedFields").is_none(),
        "{cleared}"
    );
    let untracked = api
        .patch(
            "m",
            &params("late"),
            &Patch::Merge(json!({ "metadata": { "labels": { "l": "2" } } })),
        )
        .await
        .unwrap();
    assert_eq!(untracked.metadata.managed_fields, None);

    // The next apply gives what is there to `before-first-apply`, and conflicts with it.
    let err = api
        .patch(
            "m",
            &PatchParams::apply("alice"),
            &apply_cm("m", &json!({ "k": "changed" })),
        )
        .await
        .unwrap_err();
    assert_eq!(
        full_status(err).message,
        "Apply failed with 1 conflict: conflict with \"before-first-apply\" using v1: .data.k"
    );
    api.patch(
        "m",
        &PatchParams::apply("alice"),
        &apply_cm("m", &json!({ "k": "v" })),
    )
    .await
    .unwrap();
    let retracked = raw_cm(&server, "m").await;
    assert_eq!(
        owners(&retracked),
        [
            owner("alice", "Apply", json!({ "f:data": { "f:k": {} } })),
            owner(
                "before-first-apply",
                "Update",
                json!({ "f:data": { ".": {}, "f:k": {} }, "f:metadata": { "f:labels": { ".": {}, "f:l": {} } } })
            ),
        ]
    );

    // `[{}]` in a patch clears them as well (the documented way).
    let cleared = api
        .patch(
            "m",
            &params("clearer"),
            &Patch::Merge(json!({ "metadata": { "managedFields": [{}] } })),
        )
        .await
        .unwrap();
    assert_eq!(cleared.metadata.managed_fields, None);
    assert_eq!(data(&cleared, "k"), Some("v"));

    // A list that does not decode at all is a bad request.
    let mut body = raw_cm(&server, "m").await;
    body["metadata"]["managedFields"] = json!("everything");
    let err = send(&server, "PUT", path, &json_type, &body)
        .await
        .unwrap_err();
    assert_eq!(status(err), (400, "BadRequest".to_owned()));
}

#[tokio::test]
async fn dry_run_shows_ownership_without_storing_it() {
    let server = server().await;
    let api = configmaps(&server);
    api.create(&post("creator"), &cm("dry", &[("k", "v")]))
        .await
        .unwrap();
    let mut pp = params("dreamer");
    pp.dry_run = true;
    let dreamed = api
        .patch("dry", &pp, &Patch::Merge(json!({ "data": { "k": "w" } })))
        .await
        .unwrap();
    let dreamers: Vec<_> = dreamed
        .metadata
        .managed_fields
        .unwrap()
        .into_iter()
        .filter_map(|e| e.manager)
        .collect();
    assert_eq!(dreamers, ["creator", "dreamer"]);
    let stored = api.get("dry").await.unwrap();
    assert_eq!(
        stored.metadata.managed_fields.as_ref().map(Vec::len),
        Some(1)
    );
    assert_eq!(data(&stored, "k"), Some("v"));
}

#[tokio::test]
async fn apply_and_field_manager_rules() {
    let server = server().await;
    let path = "/api/v1/namespaces/default/configmaps/r";
    let apply = [("content-type", "application/apply-patch+yaml")];
    let config = |extra: Value| {
        let mut c = json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": "r" } });
        if let (Some(c), Some(extra)) = (c.as_object_mut(), extra.as_object()) {
            c.extend(extra.clone());
        }
        c
    };
    // An apply configuration may not carry managedFields.
    let mut with_fields = config(json!({}));
    with_fields["metadata"]["managedFields"] = json!([]);
    let err = send(
        &server,
        "PATCH",
        &format!("{path}?fieldManager=a"),
        &apply,
        &with_fields,
    )
    .await
    .unwrap_err();
    let s = full_status(err);
    assert_eq!(
        (s.code, s.message.as_str()),
        (400, "metadata.managedFields must be nil")
    );
    // It must name the version it is for (kube-apiserver v1.37.2's answer, recorded in
    // tests/differential/sequences/protocol-apply.json).
    let err = send(
        &server,
        "PATCH",
        &format!("{path}?fieldManager=a"),
        &apply,
        &config(json!({ "apiVersion": "v2" })),
    )
    .await
    .unwrap_err();
    let s = full_status(err);
    assert_eq!(
        (s.code, s.message.as_str()),
        (400, "invalid object type: /v2, Kind=ConfigMap")
    );
    // fieldManager: at most 128 bytes, printable.
    let long = "m".repeat(129);
    let err = send(
        &server,
        "POST",
        &format!("/api/v1/namespaces/default/configmaps?fieldManager={long}"),
        &[("content-type", "application/json")],
        &config(json!({})),
    )
    .await
    .unwrap_err();
    let s = full_status(err);
    assert_eq!(
        (s.code, s.message.as_str()),
        (
            422,
            "CreateOptions.meta.k8s.io \"\" is invalid: fieldManager: Too long: may not be more \
             than 128 bytes"
        )
    );
    let err = send(
        &server,
        "PATCH",
        &format!("{path}?fieldManager=tab%09bed"),
        &apply,
        &config(json!({})),
    )
    .await
    .unwrap_err();
    assert_eq!(status(err), (422, "Invalid".to_owned()));
}
