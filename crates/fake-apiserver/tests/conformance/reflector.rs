//! `kube::runtime::reflector` over `kube::runtime::watcher`, the cache every kube-rs
//! controller keeps, against the fake server's watch faults: its store must stay equal to a
//! fresh list through live writes, closed watches (resumed without a relist), a watch gap
//! across a compaction (410 Expired, then a relist that also drops what was deleted in the
//! gap), and bookmarks (periodic ones, and with streaming lists the one that ends the initial
//! events).

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::rbac::v1::PolicyRule;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use lockheed_fake_apiserver::{AccessControl, FakeApiServer, Fault, RequestMatcher, Verb};
use serde_json::json;
use tokio::sync::mpsc;
use tokio::time::timeout;

use crate::common::cm;

/// The reflector's requests carry this token, so that the log tells them from the test's.
const REFLECTOR: &str = "reflector";

async fn server() -> FakeApiServer {
    let rule = PolicyRule {
        api_groups: Some(vec![String::new()]),
        resources: Some(vec!["configmaps".into()]),
        verbs: vec!["get".into(), "list".into(), "watch".into()],
        ..PolicyRule::default()
    };
    FakeApiServer::builder()
        .access_control(
            AccessControl::new()
                .user(REFLECTOR, REFLECTOR)
                .rule(REFLECTOR, None, rule),
        )
        .bookmark_interval(Duration::from_millis(50))
        .start()
        .await
        .unwrap()
}

/// A reflector running in its own task; what its stream yields comes out of the channel, one
/// label (and the object's resourceVersion) per item. The task runs ahead of the test: when
/// an item comes out, the store may already hold later ones.
struct Reflector {
    store: Store<ConfigMap>,
    events: mpsc::UnboundedReceiver<(String, Option<String>)>,
}

impl Reflector {
    fn start(server: &FakeApiServer, config: watcher::Config) -> Self {
        let api: Api<ConfigMap> = Api::namespaced(server.client_for_token(REFLECTOR), "default");
        let (store, writer) = reflector::store();
        let mut stream =
            reflector::reflector(writer, watcher(api, config).default_backoff()).boxed();
        let (tx, events) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(item) = stream.next().await {
                let name = |o: &ConfigMap| o.metadata.name.clone().unwrap_or_default();
                let rv = |o: &ConfigMap| o.metadata.resource_version.clone();
                let item = match item {
                    Ok(watcher::Event::Init) => ("init".to_owned(), None),
                    Ok(watcher::Event::InitApply(o)) => {
                        (format!("init-apply {}", name(&o)), rv(&o))
                    }
                    Ok(watcher::Event::InitDone) => ("init-done".to_owned(), None),
                    Ok(watcher::Event::Apply(o)) => (format!("apply {}", name(&o)), rv(&o)),
                    Ok(watcher::Event::Delete(o)) => (format!("delete {}", name(&o)), rv(&o)),
                    Err(err) => (format!("error {err}"), None),
                };
                if tx.send(item).is_err() {
                    return;
                }
            }
        });
        Self { store, events }
    }

    /// Items until (and with) the one `done` accepts, within 15 s.
    async fn until(&mut self, mut done: impl FnMut(&str, Option<&str>) -> bool) -> Vec<String> {
        let mut seen = Vec::new();
        let found = timeout(Duration::from_secs(15), async {
            while let Some((label, rv)) = self.events.recv().await {
                let stop = done(&label, rv.as_deref());
                seen.push(label);
                if stop {
                    return true;
                }
            }
            false
        })
        .await;
        assert_eq!(
            found,
            Ok(true),
            "the reflector's stream ended or stalled; saw {seen:?}"
        );
        seen
    }

    fn contents(&self) -> BTreeMap<String, ConfigMap> {
        self.store
            .state()
            .into_iter()
            .map(|o| (o.metadata.name.clone().unwrap(), (*o).clone()))
            .collect()
    }
}

fn api(server: &FakeApiServer) -> Api<ConfigMap> {
    Api::namespaced(server.client(), "default")
}

async fn listed(server: &FakeApiServer) -> BTreeMap<String, ConfigMap> {
    api(server)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|o| (o.metadata.name.clone().unwrap(), o))
        .collect()
}

/// Ends a phase: writes a marker, waits until the reflector's store has it, and checks that
/// the store equals a fresh list (whole objects: data, labels, resourceVersions and
/// managedFields). Returns what the reflector yielded meanwhile.
async fn settle(server: &FakeApiServer, reflector: &mut Reflector, phase: &str) -> Vec<String> {
    let marker = api(server)
        .patch(
            "marker",
            &PatchParams::apply("test").force(),
            &Patch::Apply(json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": { "name": "marker" }, "data": { "phase": phase },
            })),
        )
        .await
        .unwrap();
    let want = marker.metadata.resource_version;
    // The marker as a live event, or in a relist that then completes.
    let mut listed_marker = false;
    let seen = reflector
        .until(|label, rv| {
            let is_marker = rv.is_some() && rv.map(str::to_owned) == want;
            listed_marker |= label == "init-apply marker" && is_marker;
            (label == "apply marker" && is_marker) || (listed_marker && label == "init-done")
        })
        .await;
    assert_eq!(
        reflector.contents(),
        listed(server).await,
        "after {phase}; saw {seen:?}"
    );
    seen
}

/// The reflector's requests of one verb so far.
fn reflector_requests(server: &FakeApiServer, verb: Verb) -> usize {
    server
        .requests()
        .iter()
        .filter(|r| r.user.as_deref() == Some(REFLECTOR) && r.verb == verb)
        .count()
}

async fn create(server: &FakeApiServer, name: &str, value: &str) {
    api(server)
        .create(&PostParams::default(), &cm(name, &[("k", value)]))
        .await
        .unwrap();
}

async fn change(server: &FakeApiServer, name: &str, value: &str) {
    api(server)
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "data": { "k": value } })),
        )
        .await
        .unwrap();
}

async fn delete(server: &FakeApiServer, name: &str) {
    api(server)
        .delete(name, &DeleteParams::default())
        .await
        .unwrap();
}

/// Makes the reflector's next watch miss some writes and then start from before a
/// compaction: its watch hangs (so it sees none of `writes`), the history is compacted, and
/// when the hang ends its watch is answered 410 Expired.
async fn gap_across_compaction(server: &FakeApiServer) {
    server.inject(Fault::hang().on(RequestMatcher::any().verb(Verb::Watch).token(REFLECTOR)));
    server.close_watches();
    delete(server, "a").await;
    create(server, "gap", "1").await;
    change(server, "b", "gap").await;
    server.compact();
    server.clear_faults();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflector_stays_equal_to_the_server_through_closes_and_compaction() {
    let server = server().await;
    for name in ["a", "b", "c"] {
        create(&server, name, "0").await;
    }
    let mut reflector = Reflector::start(&server, watcher::Config::default());
    // Phase 1: the initial list.
    let seen = reflector.until(|label, _| label == "init-done").await;
    assert_eq!(
        seen,
        [
            "init",
            "init-apply a",
            "init-apply b",
            "init-apply c",
            "init-done"
        ]
    );
    settle(&server, &mut reflector, "initial").await;

    // Phase 2: live writes of every kind.
    create(&server, "d", "1").await;
    change(&server, "a", "1").await;
    let mut b = api(&server).get("b").await.unwrap();
    b.metadata.labels = Some([("l".to_owned(), "1".to_owned())].into());
    api(&server)
        .replace("b", &PostParams::default(), &b)
        .await
        .unwrap();
    delete(&server, "c").await;
    let seen = settle(&server, &mut reflector, "live writes").await;
    assert!(seen.contains(&"delete c".to_owned()), "{seen:?}");

    // Phase 3: the server ends the watch; the watcher resumes from its resourceVersion and
    // catches up on what happened meanwhile, without listing again.
    let lists = reflector_requests(&server, Verb::List);
    server.close_watches();
    create(&server, "e", "1").await;
    delete(&server, "d").await;
    let seen = settle(&server, &mut reflector, "closed watch").await;
    assert!(!seen.iter().any(|l| l == "init"), "no relist: {seen:?}");
    assert_eq!(reflector_requests(&server, Verb::List), lists);

    // Phase 4: a quiet spell with only bookmarks (every 50 ms) and writes the reflector does
    // not watch: nothing changes in its store.
    let leases: Api<Lease> = Api::namespaced(server.client(), "default");
    let mut lease = Lease::default();
    lease.metadata.name = Some("elsewhere".into());
    let lease = leases.create(&PostParams::default(), &lease).await.unwrap();
    let mut bookmarks = api(&server)
        .watch(
            &kube::api::WatchParams::default(), // bookmarks on, as by default
            lease.metadata.resource_version.as_deref().unwrap(),
        )
        .await
        .unwrap()
        .boxed();
    let mut seen_bookmarks = 0;
    while seen_bookmarks < 3 {
        match timeout(Duration::from_secs(10), bookmarks.next()).await {
            Ok(Some(Ok(WatchEvent::Bookmark(_)))) => seen_bookmarks += 1,
            other => panic!("expected bookmarks, got {other:?}"),
        }
    }
    drop(bookmarks);
    let seen = settle(&server, &mut reflector, "bookmarks").await;
    assert_eq!(seen, ["apply marker"], "bookmarks are no events");

    // Phase 5: the watch misses writes, the history is compacted, and its resumed watch is
    // answered 410: the watcher lists again, and the store loses `a`, deleted in the gap.
    gap_across_compaction(&server).await;
    let seen = reflector.until(|label, _| label == "init-done").await;
    assert!(
        seen.iter().any(|l| l.contains("too old resource version")),
        "{seen:?}"
    );
    assert!(seen.contains(&"init".to_owned()), "{seen:?}");
    assert!(
        reflector_requests(&server, Verb::List) > lists,
        "it listed again"
    );
    settle(&server, &mut reflector, "compaction").await;
    let names: Vec<String> = reflector.contents().into_keys().collect();
    assert_eq!(names, ["b", "e", "gap", "marker"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflector_with_streaming_lists_lives_on_bookmarks() {
    let server = server().await;
    for name in ["a", "b"] {
        create(&server, name, "0").await;
    }
    // Streaming lists: the initial objects come as watch events, and only the bookmark that
    // ends them (annotated k8s.io/initial-events-end) makes the store ready.
    let mut reflector = Reflector::start(&server, watcher::Config::default().streaming_lists());
    let seen = reflector.until(|label, _| label == "init-done").await;
    assert_eq!(seen, ["init", "init-apply a", "init-apply b", "init-done"]);
    timeout(Duration::from_secs(5), reflector.store.wait_until_ready())
        .await
        .unwrap()
        .unwrap();
    settle(&server, &mut reflector, "initial events").await;

    create(&server, "c", "1").await;
    change(&server, "a", "1").await;
    server.close_watches();
    delete(&server, "c").await;
    settle(&server, &mut reflector, "closed watch").await;

    // After a 410 it streams again: the whole life of this reflector is watches.
    gap_across_compaction(&server).await;
    let seen = reflector.until(|label, _| label == "init-done").await;
    assert!(
        seen.iter().any(|l| l.contains("too old resource version")),
        "{seen:?}"
    );
    settle(&server, &mut reflector, "compaction").await;
    assert!(!reflector.contents().contains_key("a"));
    assert_eq!(reflector_requests(&server, Verb::List), 0);
    assert!(reflector_requests(&server, Verb::Watch) >= 3);
    let resumed = server
        .requests()
        .into_iter()
        .filter(|r| r.user.as_deref() == Some(REFLECTOR) && r.verb == Verb::Watch)
        .filter(|r| r.query.contains("sendInitialEvents=true"))
        .count();
    assert_eq!(resumed, 2, "the first watch, and the one after the 410");
}
