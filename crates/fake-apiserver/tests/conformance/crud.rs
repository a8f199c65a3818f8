//! Storage, server-owned metadata, get, list, create, replace and delete.

use std::sync::Arc;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, ListParams, PostParams, Preconditions};
use lockheed_fake_apiserver::FakeApiServer;

use crate::common::{ManualClock, cm, configmaps, create, data, labelled, rv, server, status};

#[tokio::test]
async fn server_owns_uid_creation_time_namespace_and_resource_version() {
    let clock = ManualClock::new("2026-11-22T10:00:00Z".parse().unwrap());
    let server = FakeApiServer::builder()
        .clock(Arc::new(clock.clone()))
        .start()
        .await
        .unwrap();
    let api = configmaps(&server);
    let mut body = cm("a", &[("k", "v")]);
    // Values a client tries to set for fields the server owns are replaced.
    body.metadata.uid = None;
    body.metadata.creation_timestamp = None;
    let a = create(&api, &body).await;
    assert_eq!(a.metadata.namespace.as_deref(), Some("default"));
    assert_eq!(
        a.metadata
            .creation_timestamp
            .as_ref()
            .unwrap()
            .0
            .to_string(),
        "2026-11-22T10:00:00Z"
    );
    let uid = a.metadata.uid.clone().unwrap();
    assert_eq!(uid.len(), 36, "a UUID: {uid}");

    // One global counter across objects, kinds and namespaces, strictly increasing.
    clock.advance(std::time::Duration::from_secs(5));
    let b = create(&api, &cm("b", &[])).await;
    assert!(rv(&b) > rv(&a));
    let leases: Api<Lease> = Api::namespaced(server.client(), "kube-system");
    let mut lease = Lease::default();
    lease.metadata.name = Some("l".into());
    let lease = leases.create(&PostParams::default(), &lease).await.unwrap();
    let lease_rv: u64 = lease.metadata.resource_version.unwrap().parse().unwrap();
    assert!(lease_rv > rv(&b));
    assert_eq!(lease.metadata.namespace.as_deref(), Some("kube-system"));
    assert_eq!(server.resource_version(), lease_rv);

    // An update keeps uid and creationTimestamp whatever the body says.
    let mut changed = a.clone();
    changed.metadata.uid = None;
    changed.metadata.creation_timestamp = None;
    changed.data = Some([("k".to_owned(), "w".to_owned())].into());
    let changed = api
        .replace("a", &PostParams::default(), &changed)
        .await
        .unwrap();
    assert_eq!(changed.metadata.uid.as_deref(), Some(uid.as_str()));
    assert_eq!(
        changed.metadata.creation_timestamp,
        a.metadata.creation_timestamp
    );
    assert!(rv(&changed) > lease_rv);
}

#[tokio::test]
async fn get_and_its_not_found() {
    let server = server().await;
    let api = configmaps(&server);
    create(&api, &cm("present", &[("k", "v")])).await;
    let got = api.get("present").await.unwrap();
    assert_eq!(data(&got, "k"), Some("v"));
    let err = api.get("absent").await.unwrap_err();
    let status = crate::common::full_status(err);
    assert_eq!((status.code, status.reason.as_str()), (404, "NotFound"));
    assert_eq!(status.message, "configmaps \"absent\" not found");
    assert_eq!(status.details.unwrap().name, "absent");
    assert!(api.get_opt("absent").await.unwrap().is_none());
}

#[tokio::test]
async fn create_conflicts_with_an_existing_name() {
    let server = server().await;
    let api = configmaps(&server);
    create(&api, &cm("x", &[])).await;
    let err = api
        .create(&PostParams::default(), &cm("x", &[]))
        .await
        .unwrap_err();
    let s = crate::common::full_status(err);
    assert_eq!((s.code, s.reason.as_str()), (409, "AlreadyExists"));
    assert_eq!(s.message, "configmaps \"x\" already exists");
    // A resourceVersion on a new object is refused.
    let mut with_rv = cm("y", &[]);
    with_rv.metadata.resource_version = Some("3".into());
    let (code, reason) = status(
        api.create(&PostParams::default(), &with_rv)
            .await
            .unwrap_err(),
    );
    assert_eq!((code, reason.as_str()), (400, "BadRequest"));
}

#[tokio::test]
async fn create_in_a_missing_namespace_is_not_found() {
    let server = server().await;
    let api: Api<ConfigMap> = Api::namespaced(server.client(), "nope");
    let err = api
        .create(&PostParams::default(), &cm("x", &[]))
        .await
        .unwrap_err();
    let status = crate::common::full_status(err);
    assert_eq!((status.code, status.reason.as_str()), (404, "NotFound"));
    assert_eq!(status.message, "namespaces \"nope\" not found");
    server.create_namespace("nope");
    create(&api, &cm("x", &[])).await;
}

#[tokio::test]
async fn generate_name_and_dry_run() {
    let server = server().await;
    let api = configmaps(&server);
    let mut body = cm("", &[]);
    body.metadata.name = None;
    body.metadata.generate_name = Some("gen-".into());
    let made = create(&api, &body).await;
    let name = made.metadata.name.unwrap();
    assert!(name.starts_with("gen-") && name.len() == 9, "{name}");

    let before = server.resource_version();
    let dry = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let echoed = api.create(&dry, &cm("dry", &[("k", "v")])).await.unwrap();
    assert_eq!(echoed.metadata.name.as_deref(), Some("dry"));
    assert!(api.get_opt("dry").await.unwrap().is_none());
    assert_eq!(
        server.resource_version(),
        before,
        "a dry run commits nothing"
    );
}

#[tokio::test]
async fn replace_is_a_compare_and_swap_on_resource_version() {
    let server = server().await;
    let api = configmaps(&server);
    let first = create(&api, &cm("cas", &[("n", "0")])).await;

    let mut next = first.clone();
    next.data = Some([("n".to_owned(), "1".to_owned())].into());
    let second = api
        .replace("cas", &PostParams::default(), &next)
        .await
        .unwrap();
    assert!(rv(&second) > rv(&first));

    // The same stale resourceVersion again: 409 Conflict, nothing written.
    let err = api
        .replace("cas", &PostParams::default(), &next)
        .await
        .unwrap_err();
    let s = crate::common::full_status(err);
    assert_eq!((s.code, s.reason.as_str()), (409, "Conflict"));
    assert_eq!(
        s.message,
        "Operation cannot be fulfilled on configmaps \"cas\": the object has been modified; \
         please apply your changes to the latest version and try again"
    );
    assert_eq!(data(&api.get("cas").await.unwrap(), "n"), Some("1"));

    // No resourceVersion: an unconditional write.
    let mut blind = cm("cas", &[("n", "2")]);
    blind.metadata.resource_version = None;
    let third = api
        .replace("cas", &PostParams::default(), &blind)
        .await
        .unwrap();
    assert!(rv(&third) > rv(&second));
    assert_eq!(data(&third, "n"), Some("2"));

    // Writing what is stored is a no-op: no new resourceVersion.
    let same = api
        .replace("cas", &PostParams::default(), &third)
        .await
        .unwrap();
    assert_eq!(rv(&same), rv(&third));
    assert_eq!(server.resource_version(), rv(&third));

    // A replace of a missing object, or under another name, is refused.
    let (code, _) = status(
        api.replace("missing", &PostParams::default(), &cm("missing", &[]))
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 404);
    let (code, reason) = status(
        api.replace("cas", &PostParams::default(), &cm("other", &[]))
            .await
            .unwrap_err(),
    );
    assert_eq!((code, reason.as_str()), (400, "BadRequest"));
}

#[tokio::test]
async fn list_with_label_and_field_selectors() {
    let server = server().await;
    let api = configmaps(&server);
    create(
        &api,
        &labelled(cm("web", &[]), &[("app", "web"), ("tier", "front")]),
    )
    .await;
    create(
        &api,
        &labelled(cm("db", &[]), &[("app", "db"), ("tier", "back")]),
    )
    .await;
    create(&api, &labelled(cm("lock", &[]), &[("lockheed/lock", "")])).await;
    create(&api, &cm("plain", &[])).await;

    let names = |selector: &'static str| {
        let api = api.clone();
        async move {
            let list = api
                .list(&ListParams::default().labels(selector))
                .await
                .unwrap();
            list.items
                .into_iter()
                .map(|c| c.metadata.name.unwrap())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(names("app=web").await, ["web"]);
    assert_eq!(names("app==db").await, ["db"]);
    assert_eq!(names("app!=web").await, ["db", "lock", "plain"]);
    assert_eq!(names("app in (web,db)").await, ["db", "web"]);
    assert_eq!(names("app notin (web)").await, ["db", "lock", "plain"]);
    assert_eq!(names("lockheed/lock").await, ["lock"]);
    assert_eq!(names("!app").await, ["lock", "plain"]);
    assert_eq!(names("app,tier=back").await, ["db"]);

    let by_name = api
        .list(&ListParams::default().fields("metadata.name=db"))
        .await
        .unwrap();
    assert_eq!(by_name.items.len(), 1);
    let not_name = api
        .list(&ListParams::default().fields("metadata.name!=db,metadata.namespace=default"))
        .await
        .unwrap();
    assert_eq!(not_name.items.len(), 3);

    // The list carries the current resourceVersion.
    let all = api.list(&ListParams::default()).await.unwrap();
    assert_eq!(
        all.metadata.resource_version.as_deref(),
        Some(server.resource_version().to_string().as_str())
    );

    // Bad selectors are 400 BadRequest.
    let (code, reason) = status(
        api.list(&ListParams::default().labels("app in web"))
            .await
            .unwrap_err(),
    );
    assert_eq!((code, reason.as_str()), (400, "BadRequest"));
    let (code, _) = status(
        api.list(&ListParams::default().fields("spec.x=1"))
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 400);
}

#[tokio::test]
async fn list_across_namespaces_and_in_pages() {
    let server = server().await;
    server.create_namespace("other");
    let default = configmaps(&server);
    let other: Api<ConfigMap> = Api::namespaced(server.client(), "other");
    for i in 0..5 {
        create(&default, &cm(&format!("d{i}"), &[])).await;
    }
    create(&other, &cm("o", &[])).await;
    let everywhere: Api<ConfigMap> = Api::all(server.client());
    assert_eq!(
        everywhere
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        6
    );
    assert_eq!(
        other
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        1
    );

    let first = default.list(&ListParams::default().limit(2)).await.unwrap();
    assert_eq!(first.items.len(), 2);
    assert_eq!(first.metadata.remaining_item_count, Some(3));
    let token = first.metadata.continue_.clone().unwrap();
    // A write between pages does not show up: the pages are one snapshot.
    create(&default, &cm("d9", &[])).await;
    let second = default
        .list(&ListParams::default().limit(10).continue_token(&token))
        .await
        .unwrap();
    let names: Vec<_> = second
        .items
        .iter()
        .map(|c| c.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(names, ["d2", "d3", "d4"]);
    assert_eq!(
        second.metadata.resource_version,
        first.metadata.resource_version
    );
    assert!(
        second
            .metadata
            .continue_
            .as_deref()
            .unwrap_or_default()
            .is_empty()
    );
    // A token can be used again (a client retrying a lost page)...
    let again = default
        .list(&ListParams::default().limit(10).continue_token(&token))
        .await
        .unwrap();
    assert_eq!(again.items, second.items);
    // ...until the history is compacted.
    server.compact();
    let (code, reason) = status(
        default
            .list(&ListParams::default().continue_token(&token))
            .await
            .unwrap_err(),
    );
    assert_eq!((code, reason.as_str()), (410, "Expired"));
}

#[tokio::test]
async fn delete_with_preconditions() {
    let server = server().await;
    let api = configmaps(&server);
    let made = create(&api, &cm("del", &[])).await;
    let uid = made.metadata.uid.clone().unwrap();

    let with = |uid: Option<&str>, rv: Option<&str>| DeleteParams {
        preconditions: Some(Preconditions {
            uid: uid.map(str::to_owned),
            resource_version: rv.map(str::to_owned),
        }),
        ..DeleteParams::default()
    };
    let err = api
        .delete("del", &with(Some("wrong"), None))
        .await
        .unwrap_err();
    let status_ = crate::common::full_status(err);
    assert_eq!((status_.code, status_.reason.as_str()), (409, "Conflict"));
    // kube-apiserver v1.37.2's words (tests/differential/sequences/protocol-crud.json).
    assert_eq!(
        status_.message,
        format!(
            "Operation cannot be fulfilled on ConfigMap \"del\": the UID in the precondition \
             (wrong) does not match the UID in record ({uid}). The object might have been \
             deleted and then recreated"
        )
    );
    let (code, _) = status(api.delete("del", &with(None, Some("1"))).await.unwrap_err());
    assert_eq!(code, 409);
    assert!(
        api.get_opt("del").await.unwrap().is_some(),
        "a failed delete deletes nothing"
    );

    let before = server.resource_version();
    let done = api
        .delete(
            "del",
            &with(Some(&uid), made.metadata.resource_version.as_deref()),
        )
        .await
        .unwrap();
    let status_ = done
        .right()
        .expect("a ConfigMap delete answers with a Status");
    assert!(status_.is_success());
    let details = status_.details.unwrap();
    assert_eq!(
        (
            details.name.as_str(),
            details.kind.as_str(),
            details.uid.as_str()
        ),
        ("del", "configmaps", uid.as_str())
    );
    assert_eq!(
        server.resource_version(),
        before + 1,
        "a delete is a new revision"
    );
    let (code, reason) = status(
        api.delete("del", &DeleteParams::default())
            .await
            .unwrap_err(),
    );
    assert_eq!((code, reason.as_str()), (404, "NotFound"));
}

#[tokio::test]
async fn delete_collection_by_selector() {
    let server = server().await;
    let api = configmaps(&server);
    create(&api, &labelled(cm("a", &[]), &[("gone", "yes")])).await;
    create(&api, &labelled(cm("b", &[]), &[("gone", "yes")])).await;
    create(&api, &cm("c", &[])).await;
    let deleted = api
        .delete_collection(
            &DeleteParams::default(),
            &ListParams::default().labels("gone=yes"),
        )
        .await
        .unwrap();
    assert_eq!(deleted.left().unwrap().items.len(), 2);
    let left = api.list(&ListParams::default()).await.unwrap();
    assert_eq!(left.items.len(), 1);
}

#[tokio::test]
async fn leases_in_coordination_v1() {
    let server = server().await;
    let api: Api<Lease> = Api::namespaced(server.client(), "default");
    let mut lease = Lease::default();
    lease.metadata.name = Some("leader".into());
    lease.spec = Some(k8s_openapi::api::coordination::v1::LeaseSpec {
        holder_identity: Some("me".into()),
        lease_duration_seconds: Some(15),
        ..Default::default()
    });
    let made = api.create(&PostParams::default(), &lease).await.unwrap();
    let mut next = made.clone();
    next.spec.as_mut().unwrap().holder_identity = Some("you".into());
    api.replace("leader", &PostParams::default(), &next)
        .await
        .unwrap();
    let (code, _) = status(
        api.replace("leader", &PostParams::default(), &next)
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 409);
    let got = api.get("leader").await.unwrap();
    assert_eq!(got.spec.unwrap().holder_identity.as_deref(), Some("you"));
}
