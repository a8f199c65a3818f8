//! The four patch types, their preconditions and failures.

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Patch, PatchParams};
use serde_json::json;

use crate::common::{cm, configmaps, create, data, full_status, rv, server, status};

/// Sends a raw PATCH (kube's typed `Patch::Json` needs the `jsonpatch` feature; the wire is
/// what matters here).
async fn raw_patch(
    server: &lockheed_fake_apiserver::FakeApiServer,
    name: &str,
    content_type: &str,
    query: &str,
    body: &serde_json::Value,
) -> Result<ConfigMap, kube::Error> {
    let request = http::Request::patch(format!(
        "/api/v1/namespaces/default/configmaps/{name}{query}"
    ))
    .header(http::header::CONTENT_TYPE, content_type)
    .body(serde_json::to_vec(body).unwrap())
    .unwrap();
    server.client().request::<ConfigMap>(request).await
}

#[tokio::test]
async fn merge_patch() {
    let server = server().await;
    let api = configmaps(&server);
    let made = create(&api, &cm("m", &[("a", "1"), ("b", "2")])).await;
    let patched = api
        .patch(
            "m",
            &PatchParams::default(),
            &Patch::Merge(
                json!({ "data": { "a": null, "c": "3" }, "metadata": { "labels": { "x": "y" } } }),
            ),
        )
        .await
        .unwrap();
    assert_eq!(data(&patched, "a"), None);
    assert_eq!(data(&patched, "b"), Some("2"));
    assert_eq!(data(&patched, "c"), Some("3"));
    assert!(rv(&patched) > rv(&made));

    // A resourceVersion in the patch is a precondition.
    let stale = json!({ "metadata": { "resourceVersion": made.metadata.resource_version }, "data": { "d": "4" } });
    let err = api
        .patch("m", &PatchParams::default(), &Patch::Merge(stale))
        .await
        .unwrap_err();
    let s = full_status(err);
    assert_eq!((s.code, s.reason.as_str()), (409, "Conflict"));
    assert!(s.message.contains("the object has been modified"));
    let fresh = json!({ "metadata": { "resourceVersion": patched.metadata.resource_version }, "data": { "d": "4" } });
    api.patch("m", &PatchParams::default(), &Patch::Merge(fresh))
        .await
        .unwrap();

    // Patching a missing object is 404.
    let (code, _) = status(
        api.patch("nope", &PatchParams::default(), &Patch::Merge(json!({})))
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 404);
}

#[tokio::test]
async fn strategic_merge_patch_on_maps() {
    let server = server().await;
    let api = configmaps(&server);
    create(&api, &cm("s", &[("a", "1"), ("b", "2")])).await;
    let patched = api
        .patch(
            "s",
            &PatchParams::default(),
            &Patch::Strategic(json!({ "data": { "b": null, "c": "3" } })),
        )
        .await
        .unwrap();
    assert_eq!(
        patched.data.unwrap().into_iter().collect::<Vec<_>>(),
        [
            ("a".to_owned(), "1".to_owned()),
            ("c".to_owned(), "3".to_owned())
        ]
    );
    let replaced = api
        .patch(
            "s",
            &PatchParams::default(),
            &Patch::Strategic(json!({ "data": { "$patch": "replace", "only": "x" } })),
        )
        .await
        .unwrap();
    assert_eq!(replaced.data.unwrap().len(), 1);
}

#[tokio::test]
async fn json_patch_with_test_operations() {
    let server = server().await;
    let api = configmaps(&server);
    let made = create(&api, &cm("j", &[("owner", "me")])).await;
    let ok = raw_patch(
        &server,
        "j",
        "application/json-patch+json",
        "",
        &json!([
            { "op": "test", "path": "/data/owner", "value": "me" },
            { "op": "replace", "path": "/data/owner", "value": "you" },
            { "op": "add", "path": "/data/new", "value": "n" },
        ]),
    )
    .await
    .unwrap();
    assert_eq!(data(&ok, "owner"), Some("you"));
    assert!(rv(&ok) > rv(&made));

    // A failed test is 422 Invalid and changes nothing.
    let err = raw_patch(
        &server,
        "j",
        "application/json-patch+json",
        "",
        &json!([
            { "op": "test", "path": "/data/owner", "value": "me" },
            { "op": "replace", "path": "/data/owner", "value": "thief" },
        ]),
    )
    .await
    .unwrap_err();
    let s = full_status(err);
    assert_eq!((s.code, s.reason.as_str()), (422, "Invalid"));
    assert_eq!(data(&api.get("j").await.unwrap(), "owner"), Some("you"));

    // A test on the resourceVersion makes a JSON patch a compare-and-swap.
    let err = raw_patch(
        &server,
        "j",
        "application/json-patch+json",
        "",
        &json!([{ "op": "test", "path": "/metadata/resourceVersion", "value": made.metadata.resource_version }]),
    )
    .await
    .unwrap_err();
    assert_eq!(status(err).0, 422);

    // A body that is not a list of operations is 400.
    let err = raw_patch(
        &server,
        "j",
        "application/json-patch+json",
        "",
        &json!({ "op": "add" }),
    )
    .await
    .unwrap_err();
    assert_eq!(status(err), (400, "BadRequest".to_owned()));
    // An unknown patch type is 415.
    let err = raw_patch(&server, "j", "application/x-unknown", "", &json!({}))
        .await
        .unwrap_err();
    assert_eq!(status(err), (415, "UnsupportedMediaType".to_owned()));
}

#[tokio::test]
async fn server_side_apply() {
    let server = server().await;
    let api = configmaps(&server);
    let config = |pairs: serde_json::Value| json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": "sa" }, "data": pairs });

    // Apply creates a missing object (201 on the wire).
    let made = api
        .patch(
            "sa",
            &PatchParams::apply("alice"),
            &Patch::Apply(config(json!({ "a": "1", "shared": "s" }))),
        )
        .await
        .unwrap();
    assert_eq!(data(&made, "a"), Some("1"));
    assert_eq!(server.requests().last().unwrap().status, Some(201));

    // Another manager merges its own fields in, and may set the same value on a shared field.
    let merged = api
        .patch(
            "sa",
            &PatchParams::apply("bob"),
            &Patch::Apply(config(json!({ "b": "2", "shared": "s" }))),
        )
        .await
        .unwrap();
    assert_eq!(
        (data(&merged, "a"), data(&merged, "b")),
        (Some("1"), Some("2"))
    );

    // Changing a field another manager owns conflicts...
    let err = api
        .patch(
            "sa",
            &PatchParams::apply("bob"),
            &Patch::Apply(config(json!({ "a": "bob's" }))),
        )
        .await
        .unwrap_err();
    let s = full_status(err);
    assert_eq!((s.code, s.reason.as_str()), (409, "Conflict"));
    assert_eq!(
        s.message,
        "Apply failed with 1 conflict: conflict with \"alice\": .data.a"
    );
    assert_eq!(s.details.unwrap().causes[0].reason, "FieldManagerConflict");

    // ...unless forced, which takes the field over; bob no longer applies `b` or `shared`:
    // `b` goes (only bob owned it), `shared` stays (alice still owns it).
    let forced = api
        .patch(
            "sa",
            &PatchParams::apply("bob").force(),
            &Patch::Apply(config(json!({ "a": "bob's" }))),
        )
        .await
        .unwrap();
    assert_eq!(data(&forced, "a"), Some("bob's"));
    assert_eq!(data(&forced, "b"), None);
    assert_eq!(data(&forced, "shared"), Some("s"));

    // A resourceVersion in the configuration is a precondition.
    let mut stale = config(json!({ "a": "bob's" }));
    stale["metadata"]["resourceVersion"] = json!(made.metadata.resource_version);
    let err = api
        .patch("sa", &PatchParams::apply("bob"), &Patch::Apply(stale))
        .await
        .unwrap_err();
    assert_eq!(status(err), (409, "Conflict".to_owned()));

    // Apply needs a field manager, and force belongs to apply only.
    let err = raw_patch(
        &server,
        "sa",
        "application/apply-patch+yaml",
        "",
        &config(json!({})),
    )
    .await
    .unwrap_err();
    let s = full_status(err);
    assert_eq!((s.code, s.reason.as_str()), (422, "Invalid"));
    assert!(
        s.message.contains("fieldManager: Required value"),
        "{}",
        s.message
    );
    let err = raw_patch(
        &server,
        "sa",
        "application/merge-patch+json",
        "?force=true",
        &json!({}),
    )
    .await
    .unwrap_err();
    assert_eq!(status(err).0, 422);
}
