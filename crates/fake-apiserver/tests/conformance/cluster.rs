//! `TestCluster` itself, on whichever server the environment chooses: the commit log, request
//! counts, grants and the cut-off mean the same on the fake server and on a real one.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::rbac::v1::{Role, Subject};
use kube::api::{Api, DeleteParams, PostParams};
use lockheed_fake_apiserver::{Operation, SystemClock, TestCluster, Verb};

use crate::common::cm;

async fn cluster() -> TestCluster {
    TestCluster::start().await.expect("the test cluster starts")
}

#[tokio::test]
async fn the_commit_log_has_every_change_in_order() {
    let cluster = cluster().await;
    cluster.record_commits(Arc::new(SystemClock)).await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(cluster.client(), cluster.namespace());
    let created = api
        .create(&PostParams::default(), &cm("log", &[]))
        .await
        .unwrap();
    let mut changed = created.clone();
    changed.data = Some([("k".to_owned(), "v".to_owned())].into());
    let changed = api
        .replace("log", &PostParams::default(), &changed)
        .await
        .unwrap();
    api.delete("log", &DeleteParams::default()).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let commits = loop {
        let commits: Vec<_> = cluster
            .commits()
            .into_iter()
            .filter(|c| c.name == "log")
            .collect();
        if commits.len() >= 3 || tokio::time::Instant::now() > deadline {
            break commits;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let ops: Vec<Operation> = commits.iter().map(|c| c.operation).collect();
    assert_eq!(
        ops,
        [Operation::Create, Operation::Update, Operation::Delete]
    );
    let revision = |cm: &ConfigMap| -> u64 {
        cm.metadata
            .resource_version
            .as_deref()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert_eq!(commits[0].revision, revision(&created));
    assert_eq!(commits[1].revision, revision(&changed));
    assert!(commits[2].revision > commits[1].revision);
    assert_eq!(commits[1].object["data"]["k"], "v");
    assert_eq!(commits[1].namespace, cluster.namespace());
    assert_eq!(cluster.commit_gaps(), 0);
}

#[tokio::test]
async fn requests_are_counted_by_verb() {
    let cluster = cluster().await;
    let api: Api<ConfigMap> = Api::namespaced(cluster.client(), cluster.namespace());
    cluster.reset_counters();
    api.get_opt("nothing").await.unwrap();
    api.create(&PostParams::default(), &cm("n", &[]))
        .await
        .unwrap();
    let counts = cluster.counts();
    assert_eq!(
        (counts.get(Verb::Get), counts.get(Verb::Create)),
        (1, 1),
        "{counts:?}"
    );
    assert_eq!(counts.api_requests(), 2, "{counts:?}");
}

#[tokio::test]
async fn a_grant_gives_exactly_the_roles_rights() {
    let cluster = cluster().await;
    let role: Role = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "reader" },
        "rules": [{ "apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"] }],
    }))
    .unwrap();
    let subject: Subject =
        serde_json::from_value(serde_json::json!({ "kind": "User", "name": "reader" })).unwrap();
    let identity = cluster.grant(&role, &subject).await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(cluster.client_as(&identity), cluster.namespace());
    assert!(api.get_opt("anything").await.unwrap().is_none());
    let err = api
        .create(&PostParams::default(), &cm("x", &[]))
        .await
        .unwrap_err();
    let kube::Error::Api(status) = err else {
        panic!("{err}")
    };
    assert_eq!(status.code, 403, "{status:?}");
    assert!(
        status.message.contains("cannot create resource"),
        "{}",
        status.message
    );
}

#[tokio::test]
async fn a_cut_off_client_fails_transiently_until_restored() {
    let cluster = cluster().await;
    let api: Api<ConfigMap> = Api::namespaced(cluster.client(), cluster.namespace());
    cluster.cut_off();
    let err = api.get_opt("x").await.unwrap_err();
    assert!(
        matches!(err, kube::Error::Service(_) | kube::Error::HyperError(_)),
        "{err}"
    );
    cluster.restore();
    assert!(api.get_opt("x").await.unwrap().is_none());
}
