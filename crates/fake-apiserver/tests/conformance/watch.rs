//! Watches: replay from a resourceVersion, live events, 410, bookmarks, timeouts, selectors,
//! and `kube::runtime::watcher` on top.

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, Patch, PatchParams, WatchEvent, WatchParams};
use kube::runtime::watcher;
use lockheed_fake_apiserver::FakeApiServer;
use serde_json::json;

use crate::common::{cm, configmaps, create, labelled, rv, server};

/// Waits for the next watch event (failing the test after 10 s instead of hanging).
async fn next<S>(stream: &mut S) -> WatchEvent<ConfigMap>
where
    S: futures::Stream<Item = kube::Result<WatchEvent<ConfigMap>>> + Unpin,
{
    tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("a watch event within 10 s")
        .expect("the stream has not ended")
        .expect("the event decodes")
}

fn describe(event: &WatchEvent<ConfigMap>) -> (String, String, u64) {
    let (kind, obj) = match event {
        WatchEvent::Added(o) => ("ADDED", o),
        WatchEvent::Modified(o) => ("MODIFIED", o),
        WatchEvent::Deleted(o) => ("DELETED", o),
        other => panic!("expected an object event, got {other:?}"),
    };
    (kind.to_owned(), obj.metadata.name.clone().unwrap(), rv(obj))
}

#[tokio::test]
async fn replays_history_then_streams_live_events() {
    let server = server().await;
    let api = configmaps(&server);
    let start = server.resource_version();
    let a = create(&api, &cm("a", &[])).await;

    let mut stream = api
        .watch(&WatchParams::default(), &start.to_string())
        .await
        .unwrap()
        .boxed();
    // History after `start`: a's creation.
    assert_eq!(
        describe(&next(&mut stream).await),
        ("ADDED".into(), "a".into(), rv(&a))
    );

    // Live: create, modify, delete, in order with increasing resourceVersions.
    let b = create(&api, &cm("b", &[])).await;
    let b2 = api
        .patch(
            "b",
            &PatchParams::default(),
            &Patch::Merge(json!({ "data": { "k": "v" } })),
        )
        .await
        .unwrap();
    api.delete("b", &DeleteParams::default()).await.unwrap();
    let events: Vec<_> = vec![
        describe(&next(&mut stream).await),
        describe(&next(&mut stream).await),
        describe(&next(&mut stream).await),
    ];
    assert_eq!(events[0], ("ADDED".into(), "b".into(), rv(&b)));
    assert_eq!(events[1], ("MODIFIED".into(), "b".into(), rv(&b2)));
    assert_eq!(events[2].0, "DELETED");
    assert_eq!(
        events[2].2,
        server.resource_version(),
        "a deletion has its own revision"
    );

    // Events of other namespaces and kinds do not reach a namespaced ConfigMap watch.
    server.create_namespace("elsewhere");
    let other: Api<ConfigMap> = Api::namespaced(server.client(), "elsewhere");
    create(&other, &cm("x", &[])).await;
    create(&api, &cm("c", &[])).await;
    assert_eq!(describe(&next(&mut stream).await).1, "c");
}

#[tokio::test]
async fn watch_from_zero_starts_with_the_current_objects() {
    let server = server().await;
    let api = configmaps(&server);
    create(&api, &cm("one", &[])).await;
    create(&api, &cm("two", &[])).await;
    api.delete("two", &DeleteParams::default()).await.unwrap();
    let mut stream = api
        .watch(&WatchParams::default(), "0")
        .await
        .unwrap()
        .boxed();
    assert_eq!(describe(&next(&mut stream).await).1, "one");
    create(&api, &cm("three", &[])).await;
    assert_eq!(describe(&next(&mut stream).await).1, "three");
}

#[tokio::test]
async fn too_old_resource_version_is_410_expired() {
    let server = server().await;
    let api = configmaps(&server);
    let start = server.resource_version();
    create(&api, &cm("a", &[])).await;
    server.compact();
    let mut stream = api
        .watch(&WatchParams::default(), &start.to_string())
        .await
        .unwrap()
        .boxed();
    match next(&mut stream).await {
        WatchEvent::Error(status) => {
            assert_eq!((status.code, status.reason.as_str()), (410, "Expired"));
            assert!(
                status.message.starts_with("too old resource version"),
                "{}",
                status.message
            );
        }
        other => panic!("expected a 410 ERROR event, got {other:?}"),
    }
    assert!(
        stream.next().await.is_none(),
        "the stream ends after the error"
    );

    // From the current version it works again.
    let now = server.resource_version().to_string();
    let mut stream = api
        .watch(&WatchParams::default(), &now)
        .await
        .unwrap()
        .boxed();
    create(&api, &cm("b", &[])).await;
    assert_eq!(describe(&next(&mut stream).await).1, "b");
}

#[tokio::test]
async fn the_history_is_bounded() {
    let server = FakeApiServer::builder()
        .watch_history(3)
        .start()
        .await
        .unwrap();
    let api = configmaps(&server);
    let start = server.resource_version();
    for i in 0..5 {
        create(&api, &cm(&format!("c{i}"), &[])).await;
    }
    let mut stream = api
        .watch(&WatchParams::default(), &start.to_string())
        .await
        .unwrap()
        .boxed();
    assert!(matches!(next(&mut stream).await, WatchEvent::Error(s) if s.code == 410));
    // The last three events are still there, and no more.
    let from = (server.resource_version() - 3).to_string();
    let mut stream = api
        .watch(&WatchParams::default(), &from)
        .await
        .unwrap()
        .boxed();
    assert_eq!(describe(&next(&mut stream).await).1, "c2");
    let from = (server.resource_version() - 4).to_string();
    let mut stream = api
        .watch(&WatchParams::default(), &from)
        .await
        .unwrap()
        .boxed();
    assert!(matches!(next(&mut stream).await, WatchEvent::Error(s) if s.code == 410));
}

#[tokio::test]
async fn bookmarks_when_asked_for() {
    let server = FakeApiServer::builder()
        .bookmark_interval(Duration::from_millis(50))
        .start()
        .await
        .unwrap();
    let api = configmaps(&server);
    let made = create(&api, &cm("a", &[])).await;
    let from = made.metadata.resource_version.clone().unwrap();
    let mut stream = api
        .watch(&WatchParams::default(), &from)
        .await
        .unwrap()
        .boxed();
    // Writes elsewhere move the revision on; the bookmark reports it.
    let other: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(server.client(), "default");
    let mut lease = k8s_openapi::api::coordination::v1::Lease::default();
    lease.metadata.name = Some("l".into());
    other.create(&Default::default(), &lease).await.unwrap();
    let expected = server.resource_version().to_string();
    loop {
        match next(&mut stream).await {
            WatchEvent::Bookmark(b) if b.metadata.resource_version == expected => break,
            WatchEvent::Bookmark(b) => assert!(
                b.metadata.resource_version.parse::<u64>().unwrap() <= server.resource_version()
            ),
            other => panic!("expected only bookmarks, got {other:?}"),
        }
    }
    // Without allowWatchBookmarks there are none.
    let mut quiet = api
        .watch(
            &WatchParams::default().disable_bookmarks().timeout(1),
            &from,
        )
        .await
        .unwrap()
        .boxed();
    assert!(
        tokio::time::timeout(Duration::from_secs(10), quiet.next())
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn timeout_seconds_ends_the_stream() {
    let server = server().await;
    let api = configmaps(&server);
    let started = std::time::Instant::now();
    let mut stream = api
        .watch(&WatchParams::default().timeout(1), "0")
        .await
        .unwrap()
        .boxed();
    let end = tokio::time::timeout(Duration::from_secs(10), stream.next()).await;
    assert!(
        matches!(end, Ok(None)),
        "the stream ends by itself: {end:?}"
    );
    assert!(started.elapsed() >= Duration::from_secs(1));
}

#[tokio::test]
async fn selectors_apply_to_watches() {
    let server = server().await;
    let api = configmaps(&server);
    let from = server.resource_version().to_string();
    let mut by_label = api
        .watch(&WatchParams::default().labels("app=web"), &from)
        .await
        .unwrap()
        .boxed();
    let mut by_name = api
        .watch(&WatchParams::default().fields("metadata.name=x"), &from)
        .await
        .unwrap()
        .boxed();
    create(&api, &cm("x", &[])).await;
    create(&api, &labelled(cm("y", &[]), &[("app", "web")])).await;
    // The label watch sees y only; x gains the label (ADDED for this watch), then loses it
    // (DELETED for this watch).
    api.patch(
        "x",
        &PatchParams::default(),
        &Patch::Merge(json!({ "metadata": { "labels": { "app": "web" } } })),
    )
    .await
    .unwrap();
    api.patch(
        "x",
        &PatchParams::default(),
        &Patch::Merge(json!({ "metadata": { "labels": null } })),
    )
    .await
    .unwrap();
    let mut label_events = Vec::new();
    for _ in 0..3 {
        let event = next(&mut by_label).await;
        if let WatchEvent::Deleted(last_seen) = &event {
            // A DELETED for leaving the selector carries the object as this watch last saw it.
            assert_eq!(last_seen.metadata.labels.as_ref().unwrap()["app"], "web");
        }
        label_events.push(describe(&event));
    }
    let kinds: Vec<_> = label_events
        .iter()
        .map(|(k, n, _)| format!("{k} {n}"))
        .collect();
    assert_eq!(kinds, ["ADDED y", "ADDED x", "DELETED x"]);
    assert_eq!(
        label_events[2].2,
        server.resource_version(),
        "at the revision that unlabelled it"
    );
    // The name watch sees x's three changes and nothing of y.
    let name_events: Vec<_> = vec![
        describe(&next(&mut by_name).await),
        describe(&next(&mut by_name).await),
        describe(&next(&mut by_name).await),
    ];
    let kinds: Vec<_> = name_events
        .iter()
        .map(|(k, n, _)| format!("{k} {n}"))
        .collect();
    assert_eq!(kinds, ["ADDED x", "MODIFIED x", "MODIFIED x"]);
}

#[tokio::test]
async fn close_watches_ends_open_streams() {
    let server = server().await;
    let api = configmaps(&server);
    let mut stream = api
        .watch(&WatchParams::default(), "0")
        .await
        .unwrap()
        .boxed();
    server.close_watches();
    let end = tokio::time::timeout(Duration::from_secs(10), stream.next()).await;
    assert!(matches!(end, Ok(None)), "{end:?}");
}

/// Collects watcher events until `done` says so (10 s at most).
async fn until<S>(
    stream: &mut S,
    mut done: impl FnMut(&watcher::Event<ConfigMap>) -> bool,
) -> Vec<String>
where
    S: futures::Stream<Item = Result<watcher::Event<ConfigMap>, watcher::Error>> + Unpin,
{
    let mut seen = Vec::new();
    let finished = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(event) = stream.next().await {
            // The watcher reports errors (such as 410) as items and goes on by itself.
            let event = match event {
                Ok(event) => event,
                Err(err) => {
                    seen.push(format!("error {err}"));
                    continue;
                }
            };
            let label = match &event {
                watcher::Event::Init => "init".to_owned(),
                watcher::Event::InitApply(o) => {
                    format!("init-apply {}", o.metadata.name.clone().unwrap())
                }
                watcher::Event::InitDone => "init-done".to_owned(),
                watcher::Event::Apply(o) => format!("apply {}", o.metadata.name.clone().unwrap()),
                watcher::Event::Delete(o) => format!("delete {}", o.metadata.name.clone().unwrap()),
            };
            let stop = done(&event);
            seen.push(label);
            if stop {
                return;
            }
        }
        panic!("the watcher ended");
    })
    .await;
    assert!(
        finished.is_ok(),
        "the expected watcher event within 10 s; saw {seen:?}"
    );
    seen
}

fn applied(name: &'static str) -> impl FnMut(&watcher::Event<ConfigMap>) -> bool {
    move |e| matches!(e, watcher::Event::Apply(o) if o.metadata.name.as_deref() == Some(name))
}

#[tokio::test]
async fn kube_runtime_watcher_lists_watches_and_recovers() {
    let server = server().await;
    let api = configmaps(&server);
    create(&api, &cm("before", &[])).await;
    let mut stream = watcher(api.clone(), watcher::Config::default()).boxed();
    let seen = until(&mut stream, |e| matches!(e, watcher::Event::InitDone)).await;
    assert_eq!(seen, ["init", "init-apply before", "init-done"]);

    create(&api, &cm("live", &[])).await;
    until(&mut stream, applied("live")).await;

    // The server closes the watch: the watcher resumes from its resourceVersion, no relist.
    server.close_watches();
    create(&api, &cm("after-close", &[])).await;
    let seen = until(&mut stream, applied("after-close")).await;
    assert!(!seen.contains(&"init".to_owned()), "{seen:?}");

    // The history moves on past what the watcher saw (a write it does not watch) and is
    // compacted; its next watch is answered 410, and it relists.
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(server.client(), "default");
    let mut lease = k8s_openapi::api::coordination::v1::Lease::default();
    lease.metadata.name = Some("unwatched".into());
    leases.create(&Default::default(), &lease).await.unwrap();
    server.compact();
    server.close_watches();
    create(&api, &cm("after-compaction", &[])).await;
    let seen = until(&mut stream, |e| matches!(e, watcher::Event::InitDone)).await;
    assert!(seen[0].contains("too old resource version"), "{seen:?}");
    assert!(seen.contains(&"init".to_owned()), "{seen:?}");
    assert!(
        seen.contains(&"init-apply after-compaction".to_owned()),
        "{seen:?}"
    );
}

#[tokio::test]
async fn kube_runtime_watcher_with_streaming_lists() {
    let server = server().await;
    let api = configmaps(&server);
    create(&api, &cm("a", &[])).await;
    let mut stream = watcher(api.clone(), watcher::Config::default().streaming_lists()).boxed();
    let seen = until(&mut stream, |e| matches!(e, watcher::Event::InitDone)).await;
    assert_eq!(seen, ["init", "init-apply a", "init-done"]);
    create(&api, &cm("b", &[])).await;
    until(&mut stream, applied("b")).await;
}

#[tokio::test]
async fn no_op_writes_are_not_events() {
    let server = server().await;
    let api = configmaps(&server);
    let made = create(&api, &cm("same", &[("k", "v")])).await;
    let mut stream = api
        .watch(
            &WatchParams::default(),
            made.metadata.resource_version.as_deref().unwrap(),
        )
        .await
        .unwrap()
        .boxed();
    // The same content again, and an empty map that the server does not store.
    api.replace("same", &Default::default(), &made)
        .await
        .unwrap();
    api.patch(
        "same",
        &PatchParams::default(),
        &Patch::Merge(json!({ "metadata": { "labels": {} } })),
    )
    .await
    .unwrap();
    assert_eq!(server.resource_version(), rv(&made));
    create(&api, &cm("next", &[])).await;
    assert_eq!(
        describe(&next(&mut stream).await).1,
        "next",
        "no event for the no-op writes"
    );
}

#[tokio::test]
async fn timeout_zero_means_the_default_and_future_versions_wait() {
    let server = server().await;
    let api = configmaps(&server);
    let mut stream = api
        .watch(&WatchParams::default().timeout(0), "0")
        .await
        .unwrap()
        .boxed();
    create(&api, &cm("a", &[])).await;
    assert_eq!(
        describe(&next(&mut stream).await).1,
        "a",
        "the stream did not end at once"
    );

    // Like kube-apiserver v1.37.2 (tests/differential/sequences/protocol-watch.json): a watch
    // from a revision still to come stays open, and sends what comes after it.
    let future = (server.resource_version() + 2).to_string();
    let mut stream = api
        .watch(&WatchParams::default(), &future)
        .await
        .unwrap()
        .boxed();
    for name in ["b", "c", "d"] {
        create(&api, &cm(name, &[])).await;
    }
    assert_eq!(describe(&next(&mut stream).await).1, "d");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_miss_nothing_under_concurrent_writes() {
    let server = server().await;
    let api = configmaps(&server);
    create(&api, &cm("hot", &[("n", "0")])).await;
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let api = api.clone();
            tokio::spawn(async move {
                for i in 0..50 {
                    let patch = json!({ "data": { format!("w{w}"): i.to_string() } });
                    api.patch("hot", &PatchParams::default(), &Patch::Merge(patch))
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    // Watchers start at whatever revision is current while the writers run.
    let mut watchers = Vec::new();
    for _ in 0..8 {
        let start = server.resource_version();
        let stream = api
            .watch(
                &WatchParams::default().disable_bookmarks(),
                &start.to_string(),
            )
            .await
            .unwrap()
            .boxed();
        watchers.push((start, stream));
        tokio::task::yield_now().await;
    }
    for writer in writers {
        writer.await.unwrap();
    }
    let end = server.resource_version();
    for (start, mut stream) in watchers {
        let mut expected = start + 1;
        while expected <= end {
            let (_, _, rv) = describe(&next(&mut stream).await);
            assert_eq!(rv, expected, "every revision after {start}, in order, once");
            expected += 1;
        }
    }
}

#[tokio::test]
async fn dropping_the_server_ends_its_watches() {
    let server = server().await;
    let api = configmaps(&server);
    let mut stream = api
        .watch(&WatchParams::default(), "0")
        .await
        .unwrap()
        .boxed();
    drop(server);
    let end = tokio::time::timeout(Duration::from_secs(10), stream.next()).await;
    assert!(matches!(end, Ok(None | Some(Err(_)))), "{end:?}");
}
