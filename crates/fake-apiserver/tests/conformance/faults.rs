//! Fault injection: failing statuses, Retry-After, latency, resets, partitions.

use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams, WatchParams};

use lockheed_fake_apiserver::{FakeApiServer, Fault, RequestMatcher, Verb};

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

fn is_network_error(err: &kube::Error) -> bool {
    matches!(err, kube::Error::HyperError(_) | kube::Error::Service(_))
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

    let before = server.resource_version();
    server.partition();
    // Open watches end, and nothing gets through: no read, no write, no new watch.
    let end = tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .unwrap();
    assert!(end.is_none() || end.unwrap().is_err());
    for _ in 0..3 {
        let err = api.get("x").await.unwrap_err();
        assert!(is_network_error(&err), "{err:?}");
    }
    let err = api
        .create(&PostParams::default(), &cm("during", &[]))
        .await
        .unwrap_err();
    assert!(is_network_error(&err), "{err:?}");
    assert!(api.watch(&WatchParams::default(), "0").await.is_err());
    assert_eq!(server.resource_version(), before, "nothing was committed");
    server.heal();
    api.get("x").await.unwrap();

    server.partition_for(Duration::from_millis(300));
    assert!(is_network_error(&api.get("x").await.unwrap_err()));
    tokio::time::sleep(Duration::from_millis(350)).await;
    api.get("x").await.unwrap();
}

#[tokio::test]
async fn blackholes_hold_requests_and_watch_events_until_healed() {
    let server = server().await;
    let api = no_retry(&server);
    create(&api, &cm("x", &[])).await;
    let from = server.resource_version().to_string();
    let mut watch = api
        .watch(&WatchParams::default().disable_bookmarks(), &from)
        .await
        .unwrap()
        .boxed();

    server.blackhole();
    // A request gets no answer at all: the client's own timeout is what ends it.
    let waited = tokio::time::timeout(Duration::from_millis(300), api.get("x")).await;
    assert!(waited.is_err(), "no answer during a blackhole: {waited:?}");
    // A write by a client on the other side of the partition... is held too; the watch stays
    // silent rather than ending.
    let admin = configmaps(&server);
    let held_write =
        tokio::spawn(async move { admin.create(&PostParams::default(), &cm("late", &[])).await });
    let silent = tokio::time::timeout(Duration::from_millis(300), watch.next()).await;
    assert!(
        silent.is_err(),
        "the watch neither ends nor delivers: {silent:?}"
    );

    server.heal();
    held_write.await.unwrap().unwrap();
    let event = tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        matches!(event, kube::api::WatchEvent::Added(cm) if cm.metadata.name.as_deref() == Some("late"))
    );
    api.get("x").await.unwrap();

    server.blackhole_for(Duration::from_millis(200));
    let started = Instant::now();
    api.get("x").await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(150),
        "held until it healed by itself"
    );
}

#[tokio::test]
async fn after_commit_faults_lose_the_answer_not_the_write() {
    let server = server().await;
    let api = no_retry(&server);
    server.inject(
        Fault::status(504)
            .after_commit()
            .on(RequestMatcher::any().verb(Verb::Create)),
    );
    let s = full_status(
        api.create(&PostParams::default(), &cm("ambiguous", &[]))
            .await
            .unwrap_err(),
    );
    assert_eq!(s.code, 504);
    assert!(
        api.get("ambiguous").await.is_ok(),
        "the create was committed all the same"
    );

    server.inject(
        Fault::reset_connection()
            .after_commit()
            .on(RequestMatcher::any().verb(Verb::Delete)),
    );
    let err = api
        .delete("ambiguous", &Default::default())
        .await
        .unwrap_err();
    assert!(is_network_error(&err), "{err:?}");
    assert!(
        api.get_opt("ambiguous").await.unwrap().is_none(),
        "the delete happened"
    );
}

#[tokio::test]
async fn hang_holds_a_request_until_faults_are_cleared() {
    let server = server().await;
    let api = no_retry(&server);
    create(&api, &cm("x", &[])).await;
    server.inject(Fault::hang().on(RequestMatcher::any().verb(Verb::Get)));
    let hung = tokio::spawn({
        let api = api.clone();
        async move { api.get("x").await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!hung.is_finished());
    server.clear_faults();
    let err = hung.await.unwrap().unwrap_err();
    assert!(is_network_error(&err), "{err:?}");
    api.get("x").await.unwrap();
}

#[tokio::test]
async fn faults_can_target_one_client_by_token() {
    let server = server().await;
    let mut config = server.config_for_token("worker-a");
    config.default_retry = false;
    let a: Api<ConfigMap> = Api::namespaced(kube::Client::try_from(config).unwrap(), "default");
    let b: Api<ConfigMap> = Api::namespaced(server.client_for_token("worker-b"), "default");
    create(&b, &cm("x", &[])).await;
    // Worker a is cut off; worker b carries on (access control is off: tokens only name clients).
    server.inject(
        Fault::reset_connection()
            .always()
            .on(RequestMatcher::any().token("worker-a")),
    );
    assert!(is_network_error(&a.get("x").await.unwrap_err()));
    b.get("x").await.unwrap();
}

/// A request whose client gives up while the server handles it is dropped (the server notices
/// when it next touches the connection) and still counted; but one held by a blackhole is in
/// the network, and arrives when the blackhole heals, even if its client gave up: a write
/// lands late.
#[tokio::test]
async fn requests_the_client_gave_up_on_are_counted_and_blackholed_ones_land_late() {
    let server = server().await;
    let api = no_retry(&server);
    create(&api, &cm("x", &[])).await;
    server.inject(Fault::latency(Duration::from_secs(2)).on(RequestMatcher::any().verb(Verb::Get)));
    server.reset_counters();
    assert!(
        tokio::time::timeout(Duration::from_millis(200), api.get("x"))
            .await
            .is_err()
    );
    tokio::time::timeout(Duration::from_secs(10), async {
        while server.counts().get(Verb::Get) == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the abandoned request is counted");
    assert_eq!(server.requests()[0].status, None);
    server.clear_faults();

    let a: Api<ConfigMap> = Api::namespaced(server.client_for_token("a"), "default");
    server.blackhole_client("a");
    let late = cm("late", &[]);
    let answer = tokio::time::timeout(Duration::from_millis(200), create(&a, &late)).await;
    assert!(answer.is_err(), "no answer during the blackhole");
    assert!(api.get_opt("late").await.unwrap().is_none());
    server.heal_client("a");
    tokio::time::timeout(Duration::from_secs(10), async {
        while api.get_opt("late").await.unwrap().is_none() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the abandoned create lands when the blackhole heals");
}

#[test]
#[should_panic(expected = "HTTP error status")]
fn fault_statuses_must_be_errors() {
    let _ = Fault::status(200);
}

/// A blackhole of one client holds its requests and its watch's events, and nobody else's;
/// when it heals, what was held goes through.
#[tokio::test]
async fn a_client_blackhole_holds_that_clients_requests_and_events_only() {
    let server = server().await;
    let cut: Api<ConfigMap> = Api::default_namespaced(server.client_for_token("cut"));
    let other: Api<ConfigMap> = Api::default_namespaced(server.client_for_token("other"));
    create(&other, &cm("x", &[])).await;
    let from = server.resource_version().to_string();
    let params = WatchParams::default().disable_bookmarks();
    let mut cut_watch = cut.watch(&params, &from).await.unwrap().boxed();
    let mut other_watch = other.watch(&params, &from).await.unwrap().boxed();

    server.blackhole_client("cut");
    let held = tokio::time::timeout(Duration::from_millis(300), cut.get("x")).await;
    assert!(held.is_err(), "no answer to the cut-off client: {held:?}");
    create(&other, &cm("y", &[])).await;
    let event = tokio::time::timeout(Duration::from_secs(10), other_watch.next()).await;
    assert!(matches!(event, Ok(Some(Ok(_)))), "{event:?}");
    let silent = tokio::time::timeout(Duration::from_millis(300), cut_watch.next()).await;
    assert!(
        silent.is_err(),
        "the cut-off watch stays silent: {silent:?}"
    );

    server.heal_client("cut");
    let event = tokio::time::timeout(Duration::from_secs(10), cut_watch.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        matches!(event, kube::api::WatchEvent::Added(cm) if cm.metadata.name.as_deref() == Some("y"))
    );
    cut.get("x").await.unwrap();
    assert_eq!(server.faults_injected()["client blackhole"], 1);
}

/// A restart keeps what is stored and the revision counter; connections in between are
/// refused; a watch resumed from before the restart is told to list again (410), as a
/// restarted kube-apiserver's empty watch cache does.
#[tokio::test]
async fn a_restart_keeps_objects_and_revisions_and_expires_old_watches() {
    let server = server().await;
    let api = no_retry(&server);
    create(&api, &cm("x", &[("k", "1")])).await;
    let first = server.resource_version();
    create(&api, &cm("y", &[])).await;
    let before = server.resource_version();
    let mut watch = api
        .watch(&WatchParams::default(), &before.to_string())
        .await
        .unwrap()
        .boxed();
    server.stop();
    let refused = api.get("x").await.unwrap_err();
    assert!(is_network_error(&refused), "{refused}");
    // The open watch ended with the server.
    let ended = tokio::time::timeout(Duration::from_secs(10), watch.next()).await;
    assert!(
        matches!(ended, Ok(None | Some(Err(_)))),
        "the watch ends: {ended:?}"
    );

    server.restart();
    let mut x = api.get("x").await.unwrap();
    assert_eq!(x.data.as_ref().unwrap()["k"], "1", "the objects are kept");
    x.data = Some([("k".to_owned(), "2".to_owned())].into());
    let written = api.replace("x", &PostParams::default(), &x).await.unwrap();
    let after: u64 = written.metadata.resource_version.unwrap().parse().unwrap();
    assert!(
        after > before,
        "revisions go on increasing: {after} > {before}"
    );
    let mut resumed = api
        .watch(&WatchParams::default(), &first.to_string())
        .await
        .unwrap()
        .boxed();
    assert!(
        matches!(resumed.next().await, Some(Ok(kube::api::WatchEvent::Error(e))) if e.code == 410)
    );
    assert_eq!(server.faults_injected()["restart"], 1);
}

/// The commit log records every commit with its revision, operation, stored object and
/// author (token and, with access control, user), and a bounded log counts what it dropped.
#[tokio::test]
async fn the_commit_log_names_each_change_and_its_author() {
    use k8s_openapi::api::rbac::v1::PolicyRule;
    use lockheed_fake_apiserver::{AccessControl, Operation};
    let rule = PolicyRule {
        api_groups: Some(vec![String::new()]),
        resources: Some(vec!["configmaps".into()]),
        verbs: vec!["create".into(), "update".into(), "get".into()],
        ..PolicyRule::default()
    };
    let access = AccessControl::new()
        .user("token-a", "alice")
        .rule("token-a", None, rule);
    let server = FakeApiServer::builder()
        .access_control(access)
        .commit_log(3)
        .start()
        .await
        .unwrap();
    let alice: Api<ConfigMap> = Api::default_namespaced(server.client_for_token("token-a"));
    let created = alice
        .create(&PostParams::default(), &cm("x", &[("k", "1")]))
        .await
        .unwrap();
    let mut changed = created.clone();
    changed.data = Some([("k".to_owned(), "2".to_owned())].into());
    alice
        .replace("x", &PostParams::default(), &changed)
        .await
        .unwrap();
    // A no-op write commits nothing.
    alice
        .replace("x", &PostParams::default(), &alice.get("x").await.unwrap())
        .await
        .unwrap();
    configmaps(&server)
        .delete("x", &kube::api::DeleteParams::default())
        .await
        .unwrap();
    let commits = server.commits();
    let seen: Vec<_> = commits
        .iter()
        .map(|c| {
            (
                c.operation,
                c.user.as_deref(),
                c.object["data"]["k"].clone(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (Operation::Create, Some("alice"), "1".into()),
            (Operation::Update, Some("alice"), "2".into()),
            (Operation::Delete, Some("admin"), "2".into()),
        ]
    );
    assert_eq!(commits[1].token.as_deref(), Some("token-a"));
    assert_eq!(
        commits[2].token.as_deref(),
        Some(lockheed_fake_apiserver::ADMIN_TOKEN)
    );
    assert!(commits.windows(2).all(|w| w[0].revision < w[1].revision));
    assert_eq!(
        commits[0].object["metadata"]["resourceVersion"],
        commits[0].revision.to_string()
    );
    assert_eq!(server.commits_dropped(), 0);
    // One more, and the oldest is dropped to keep three.
    create(&alice, &cm("z", &[])).await;
    assert_eq!(server.commits_dropped(), 1);
    assert_eq!(server.commits()[0].operation, Operation::Update);
}
