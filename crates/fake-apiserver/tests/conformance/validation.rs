//! Validation like kube-apiserver's: names, ConfigMap size, annotation size; all `422 Invalid`
//! with causes.

use std::collections::BTreeMap;

use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;

use crate::common::{cm, configmaps, create, full_status, server};

#[tokio::test]
async fn names_must_be_dns_subdomains() {
    let server = server().await;
    let api = configmaps(&server);
    for bad in [
        "Upper",
        "under_score",
        "-lead",
        "trail-",
        "a..b",
        &"a".repeat(254),
    ] {
        let err = api
            .create(&PostParams::default(), &cm(bad, &[]))
            .await
            .unwrap_err();
        let s = full_status(err);
        assert_eq!((s.code, s.reason.as_str()), (422, "Invalid"), "{bad}");
        let details = s.details.unwrap();
        assert_eq!(details.kind, "ConfigMap");
        assert_eq!(details.causes[0].field, "metadata.name");
        assert!(
            s.message
                .starts_with(&format!("ConfigMap \"{bad}\" is invalid: metadata.name")),
            "{}",
            s.message
        );
    }
    create(&api, &cm(&"a".repeat(253), &[])).await;
    create(&api, &cm("lockheed-db.primary-1", &[])).await;
}

#[tokio::test]
async fn configmap_data_is_at_most_one_mebibyte() {
    let server = server().await;
    let api = configmaps(&server);
    let mib = 1024 * 1024;
    create(&api, &cm("full", &[("k", &"x".repeat(mib))])).await;
    let err = api
        .create(
            &PostParams::default(),
            &cm("over", &[("k", &"x".repeat(mib)), ("j", "y")]),
        )
        .await
        .unwrap_err();
    let s = full_status(err);
    assert_eq!((s.code, s.reason.as_str()), (422, "Invalid"));
    assert_eq!(s.details.unwrap().causes[0].reason, "FieldValueTooLong");
    assert!(
        s.message.contains("may not be more than 1048576 bytes"),
        "{}",
        s.message
    );
    // Growing an object past the limit by patch is refused too, and leaves it as it was.
    let err = api
        .patch(
            "full",
            &PatchParams::default(),
            &Patch::Merge(json!({ "data": { "more": "y" } })),
        )
        .await
        .unwrap_err();
    assert_eq!(full_status(err).code, 422);
}

#[tokio::test]
async fn annotations_are_at_most_256_kibibytes_together() {
    let server = server().await;
    let api = configmaps(&server);
    let mut body = cm("ann", &[]);
    let half = "x".repeat(128 * 1024);
    body.metadata.annotations = Some(BTreeMap::from([
        ("a".to_owned(), half.clone()),
        ("b".to_owned(), half),
    ]));
    let s = full_status(api.create(&PostParams::default(), &body).await.unwrap_err());
    assert_eq!((s.code, s.reason.as_str()), (422, "Invalid"));
    assert_eq!(s.details.unwrap().causes[0].field, "metadata.annotations");
    assert!(
        s.message
            .contains("metadata.annotations: Too long: may not be more than 262144 bytes")
    );
}

#[tokio::test]
async fn labels_and_data_keys_are_checked() {
    let server = server().await;
    let api = configmaps(&server);
    let mut body = cm("labels", &[("bad key", "v")]);
    body.metadata.labels = Some(BTreeMap::from([("app".to_owned(), "not valid".to_owned())]));
    let s = full_status(api.create(&PostParams::default(), &body).await.unwrap_err());
    let fields: Vec<_> = s
        .details
        .unwrap()
        .causes
        .into_iter()
        .map(|c| c.field)
        .collect();
    assert_eq!(fields, ["metadata.labels", "data[bad key]"]);
}

#[tokio::test]
async fn bodies_over_three_mebibytes_are_refused() {
    let server = server().await;
    let api = configmaps(&server);
    let err = api
        .create(
            &PostParams::default(),
            &cm("huge", &[("k", &"x".repeat(3 * 1024 * 1024))]),
        )
        .await
        .unwrap_err();
    let s = full_status(err);
    assert_eq!((s.code, s.reason.as_str()), (413, "RequestEntityTooLarge"));
}
