//! Fault injection: failing statuses, Retry-After, latency, resets, partitions.

use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams, WatchParams};
use lockheed::testing::{FakeApiServer, Fault, RequestMatcher, Verb};

use crate::common::{cm, configmaps, create, full_status, server};

/// A client that does not retry, so every injected failure is seen.
fn no_retry(server: &FakeApiServer) -> Api<ConfigMap> {
    let mut config = server.config();
    config.default_retry = false;
    Api::namespaced(kube::Client::try_from(config).unwrap(), "default")
}

#[tokio::test]
async fn fail_the_next_matching_requests() {
    let server = server().await;
    let api = no_retry(&server);
    create(&api, &cm("x", &[])).await;
    server.inject(
        Fault::status(500)
            .times(2)
            .on(RequestMatcher::any().verb(Verb::Get)),
    );
    for _ in 0..2 {
        let s = full_status(api.get("x").await.unwrap_err());
        assert_eq!((s.code, s.reason.as_str()), (500, "InternalError"));
    }
    api.get("x").await.unwrap();

    for (code, reason) in [
        (503, "ServiceUnavailable"),
        (409, "Conflict"),
        (504, "Timeout"),
    ] {
        server.inject(Fault::status(code).on(RequestMatcher::any().verb(Verb::Update).name("x")));
        let current = api.get("x").await.unwrap();
        let s = full_status(
            api.replace("x", &PostParams::default(), &current)
                .await
                .unwrap_err(),
        );
        assert_eq!((s.code, s.reason.as_str()), (code, reason));
    }
    // Other names are not affected.
    server.inject(
        Fault::status(500)
            .always()
            .on(RequestMatcher::any().name("x")),
    );
    create(&api, &cm("y", &[])).await;
    assert_eq!(full_status(api.get("x").await.unwrap_err()).code, 500);
    server.clear_faults();
    api.get("x").await.unwrap();
}

#[tokio::test]
async fn kube_retries_503_by_default_and_the_counters_show_it() {
    let server = server().await;
    let api = configmaps(&server);
    create(&api, &cm("x", &[])).await;
    server.inject(Fault::status(503).times(2));
    server.reset_counters();
    api.get("x").await.unwrap();
    assert_eq!(
        server.counts().get(Verb::Get),
        3,
        "two failures, then the retry that worked"
    );
}

#[tokio::test]
async fn too_many_requests_carries_retry_after() {
    let server = server().await;
    server.inject(Fault::too_many_requests(Duration::from_secs(7)));
    let request = http::Request::get("/api/v1/namespaces/default/configmaps")
        .body(kube::client::Body::empty())
        .unwrap();
    let mut config = server.config();
    config.default_retry = false;
    let response = kube::Client::try_from(config)
        .unwrap()
        .send(request)
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "7");
    let body = response.into_body().collect_bytes().await.unwrap();
    let status: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(status["reason"], "TooManyRequests");
    assert_eq!(status["details"]["retryAfterSeconds"], 7);
}

#[tokio::test]
async fn latency_delays_matching_requests() {
    let server = server().await;
    let api = no_retry(&server);
    create(&api, &cm("x", &[])).await;
    server.inject(
        Fault::latency(Duration::from_millis(300)).on(RequestMatcher::any().verb(Verb::Get)),
    );
    let started = Instant::now();
    api.get("x").await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(300));
    let record = server.requests().pop().unwrap();
    assert!(record.latency >= Duration::from_millis(300), "{record:?}");
    // Lists are not delayed.
    server.reset_counters();
    api.list(&Default::default()).await.unwrap();
    assert!(server.requests()[0].latency < Duration::from_millis(300));

    server.clear_faults();
    server.inject(Fault::latency_between(
        Duration::from_millis(50),
        Duration::from_millis(100),
    ));
    server.reset_counters();
    for _ in 0..5 {
        api.get("x").await.unwrap();
    }
    assert!(
        server
            .requests()
            .iter()
            .all(|r| r.latency >= Duration::from_millis(50))
    );
}

#[tokio::test]
async fn reset_connection_drops_the_request_without_an_answer() {
    let server = server().await;
    let api = no_retry(&server);
    create(&api, &cm("x", &[])).await;
    server.inject(Fault::reset_connection().on(RequestMatcher::any().verb(Verb::Get)));
    let err = api.get("x").await.unwrap_err();
    assert!(
        !matches!(err, kube::Error::Api(_)),
        "no Status, the connection broke: {err:?}"
    );
    assert_eq!(server.requests().last().unwrap().status, None);
    api.get("x").await.unwrap();
}

#[tokio::test]
async fn partitions_refuse_everything_until_healed() {
    let server = server().await;
    let api = no_retry(&server);
    create(&api, &cm("x", &[])).await;
    let mut watch = api
        .watch(&WatchParams::default(), "0")
        .await
        .unwrap()
        .boxed();
    assert!(watch.next().await.unwrap().is_ok());

    server.partition();
    // Open watches end, and nothing gets through.
    let end = tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .unwrap();
    assert!(end.is_none() || end.unwrap().is_err());
    for _ in 0..3 {
        let err = api.get("x").await.unwrap_err();
        assert!(!matches!(err, kube::Error::Api(_)), "{err:?}");
    }
    server.heal();
    api.get("x").await.unwrap();

    server.partition_for(Duration::from_millis(300));
    assert!(api.get("x").await.is_err());
    tokio::time::sleep(Duration::from_millis(350)).await;
    api.get("x").await.unwrap();
}
