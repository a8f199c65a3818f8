//! The request log and per-verb counters.

use kube::api::{ListParams, Patch, PatchParams, PostParams};
use lockheed_fake_apiserver::Verb;
use serde_json::json;

use crate::common::{cm, configmaps, create, server};

#[tokio::test]
async fn every_request_is_logged_and_counted() {
    let server = server().await;
    let api = configmaps(&server);
    let made = create(&api, &cm("x", &[])).await;
    api.get("x").await.unwrap();
    let _ = api.get("missing").await.unwrap_err();
    api.replace("x", &PostParams::default(), &made)
        .await
        .unwrap();
    api.patch(
        "x",
        &PatchParams::default(),
        &Patch::Merge(json!({ "data": { "a": "b" } })),
    )
    .await
    .unwrap();
    api.list(&ListParams::default().labels("a=b"))
        .await
        .unwrap();
    api.delete("x", &Default::default()).await.unwrap();
    server.client().apiserver_version().await.unwrap();

    let counts = server.counts();
    assert_eq!(counts.get(Verb::Create), 1);
    assert_eq!(counts.get(Verb::Get), 2);
    assert_eq!(counts.get(Verb::Update), 1);
    assert_eq!(counts.get(Verb::Patch), 1);
    assert_eq!(counts.get(Verb::List), 1);
    assert_eq!(counts.get(Verb::Delete), 1);
    assert_eq!(counts.get(Verb::Discovery), 1);
    assert_eq!(counts.total(), 8);
    assert_eq!(counts.api_requests(), 7);
    assert_eq!(counts.writes(), 4);

    let log = server.requests();
    let statuses: Vec<_> = log.iter().map(|r| (r.verb, r.status)).collect();
    assert_eq!(
        statuses,
        [
            (Verb::Create, Some(201)),
            (Verb::Get, Some(200)),
            (Verb::Get, Some(404)),
            (Verb::Update, Some(200)),
            (Verb::Patch, Some(200)),
            (Verb::List, Some(200)),
            (Verb::Delete, Some(200)),
            (Verb::Discovery, Some(200)),
        ]
    );
    let get = &log[1];
    assert_eq!(get.method, "GET");
    assert_eq!(get.path, "/api/v1/namespaces/default/configmaps/x");
    assert_eq!(get.resource.as_deref(), Some("configmaps"));
    assert_eq!(get.namespace.as_deref(), Some("default"));
    assert_eq!(get.name.as_deref(), Some("x"));
    let list = &log[5];
    assert!(list.query.contains("labelSelector=a%3Db"), "{}", list.query);

    server.reset_counters();
    assert_eq!(server.counts().total(), 0);
    assert!(server.requests().is_empty());
}
