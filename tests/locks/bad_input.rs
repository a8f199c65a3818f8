//! Bad input gets the same error from every backend: a test that passes on `MemoryLocker`
//! does not fail on `KubeLocker` in production for a name or a size the API server refuses.

use std::time::Duration;

use lockheed::testing::Verb;
use lockheed::{Access, Error, Lock, Locker};

use crate::harness::{Harness, Kube, Memory};

/// What went wrong, by kind: what a caller matches on.
fn kind(result: &Result<(), Error>) -> &'static str {
    match result {
        Ok(()) => "ok",
        Err(Error::InvalidName { .. }) => "InvalidName",
        Err(Error::InvalidConfig { .. }) => "InvalidConfig",
        Err(Error::TooLarge { .. }) => "TooLarge",
        Err(other) => panic!("unexpected error: {other}"),
    }
}

/// Each case: a name, and the lock it builds.
type Case<L> = (&'static str, Box<dyn Fn(&L) -> Lock<L>>);

/// Lock `db`, taken by holder `h`.
fn plain<L: Locker>(l: &L) -> Lock<L> {
    Lock::new("db", l.clone()).with_holder("h")
}

fn cases<L: Locker>() -> Vec<Case<L>> {
    let named = |name: String| move |l: &L| Lock::new(name.clone(), l.clone()).with_holder("h");
    vec![
        ("empty name", Box::new(named(String::new()))),
        (
            "spaces, capitals and a slash",
            Box::new(named("Not A Valid/Name".into())),
        ),
        ("ends with a dash", Box::new(named("db-".into()))),
        (
            "244 characters: lockheed-<name> is 253",
            Box::new(named("a".repeat(244))),
        ),
        (
            "245 characters: lockheed-<name> is 254",
            Box::new(named("a".repeat(245))),
        ),
        ("a dot-separated name", Box::new(named("db.prod".into()))),
        (
            "renew interval past nine tenths",
            Box::new(|l: &L| {
                plain(l)
                    .with_duration(Duration::from_secs(10))
                    .with_renew_interval(Duration::from_secs(9))
            }),
        ),
        ("an empty tag", Box::new(|l: &L| plain(l).with_tags([""]))),
        (
            "an empty holder",
            Box::new(|l: &L| Lock::new("db", l.clone()).with_holder("")),
        ),
        (
            "a semaphore of 0",
            Box::new(|l: &L| plain(l).with_max_holders(0)),
        ),
        (
            "a semaphore and a read/write lock",
            Box::new(|l: &L| plain(l).with_max_holders(2).with_access(Access::Shared)),
        ),
        (
            "a reason over 1 MiB",
            Box::new(|l: &L| plain(l).with_reason("r".repeat(1024 * 1024 + 1))),
        ),
        (
            "tags adding up to over 1 MiB",
            Box::new(|l: &L| plain(l).with_tags((0..1100).map(|i| format!("{i:01024}")))),
        ),
    ]
}

/// Runs every case on `h`, returning each case's outcome.
async fn outcomes<H: Harness>(h: &H) -> Vec<(&'static str, &'static str)> {
    let mut out = Vec::new();
    for (case, build) in cases::<H::Locker>() {
        let lock = build(&h.locker());
        let result = lock.try_acquire().await.map(|guard| guard.forget());
        out.push((case, kind(&result)));
    }
    // Only lock names that are valid were taken; "db", refused for its settings and sizes,
    // was never written.
    assert!(h.locker().get("db").await.unwrap().is_none());
    out
}

#[tokio::test(start_paused = true)]
async fn every_bad_input_gets_the_same_error_kind_on_both_backends() {
    let memory = outcomes(&Memory::new().await).await;
    let kube = Kube::new().await;
    let on_kube = outcomes(&kube).await;
    assert_eq!(memory, on_kube);
    let expected = [
        "InvalidName",
        "InvalidName",
        "InvalidName",
        "ok",
        "InvalidName",
        "ok",
        "InvalidConfig",
        "InvalidConfig",
        "InvalidConfig",
        "InvalidConfig",
        "InvalidConfig",
        "TooLarge",
        "TooLarge",
    ];
    assert_eq!(
        memory.iter().map(|(_, kind)| *kind).collect::<Vec<_>>(),
        expected,
        "{memory:#?}"
    );
    // Names and settings were refused before any request; sizes once the state was read,
    // before any write: a read and a create for each of the two takes, one read for the two
    // oversized states (the second starts from what the first read a moment before), and the
    // final check that "db" was never written.
    let counts = kube.cluster.counts();
    assert_eq!(counts.get(Verb::Create), 2, "{counts:?}");
    assert_eq!(counts.get(Verb::Get), 4, "{counts:?}");
    assert_eq!(counts.get(Verb::Update), 0, "{counts:?}");
}

/// A lock state of `holders` semaphore holders whose reasons make it about `bytes` long.
fn crowded_semaphore(bytes: usize) -> (String, usize) {
    let mut leases = serde_json::Map::new();
    let mut size = 0;
    let mut i = 0;
    while size < bytes {
        let id = format!("holder-{i:05}");
        let lease = serde_json::json!({
            "instanceID": id, "expires": "9999-12-31T23:59:59Z", "reason": "r".repeat(200),
        });
        size += lease.to_string().len() + id.len() + 4;
        leases.insert(id, lease);
        i += 1;
    }
    let state = serde_json::json!({
        "name": "crowd", "lockType": "semaphore", "maxHolders": 100_000, "leases": leases,
    });
    (state.to_string(), i)
}

/// A mutex held forever, with `waiters` queued, each with a long reason: about `bytes`.
fn crowded_queue(bytes: usize) -> String {
    let entry = |i: usize| {
        serde_json::json!({
            "instanceID": format!("waiter-{i:05}"), "expires": "9999-12-31T23:59:59Z",
            "since": "2026-01-01T00:00:00Z", "reason": "r".repeat(300),
        })
    };
    let one = entry(0).to_string().len() + 1;
    let queue: Vec<_> = (0..bytes / one).map(entry).collect();
    serde_json::json!({
        "name": "queue", "lockType": "mutex", "fencingToken": 1,
        "leases": { "h": { "instanceID": "h", "expires": "9999-12-31T23:59:59Z", "fencingToken": 1 } },
        "queue": queue,
    })
    .to_string()
}

/// A lock with tens of thousands of short tags, about `bytes` long.
fn crowded_tags(bytes: usize) -> String {
    let tags: Vec<String> = (0..bytes / 20).map(|i| format!("tag-{i:013}")).collect();
    serde_json::json!({ "name": "tags", "lockType": "mutex", "leases": {}, "tags": tags })
        .to_string()
}

/// Every way of growing a state that is just under a ConfigMap's 1 MiB past it is refused
/// with `TooLarge`, the same on both backends, and leaves the stored state as it was.
async fn growth_past_the_limit<H: Harness>(h: &H) -> Vec<(&'static str, &'static str)> {
    let near = 1024 * 1024 - 8 * 1024;
    let (semaphore, holders) = crowded_semaphore(near);
    assert!(holders > 3000, "{holders} holders");
    h.store_raw("crowd", &semaphore).await;
    h.store_raw("queue", &crowded_queue(near)).await;
    h.store_raw("tags", &crowded_tags(near)).await;
    let long = "x".repeat(16 * 1024);
    let l = h.locker();
    let attempts: Vec<(&'static str, Lock<H::Locker>)> = vec![
        (
            "one more holder with a long reason",
            Lock::new("crowd", l.clone())
                .with_max_holders(2)
                .with_reason(long.clone()),
        ),
        (
            "a waiter with a long reason",
            Lock::new("queue", l.clone()).with_reason(long.clone()),
        ),
        (
            "more tags",
            Lock::new("tags", l.clone()).with_tags((0..1000).map(|i| format!("more-{i:013}"))),
        ),
    ];
    let mut out = Vec::new();
    for (case, lock) in attempts {
        let before = l.get(lock.name()).await.unwrap();
        let result = match tokio::time::timeout(Duration::from_secs(5), lock.acquire()).await {
            Ok(result) => result.map(|guard| guard.forget()),
            Err(_) => panic!("{case}: still waiting: the refusal must be at once"),
        };
        out.push((case, kind(&result)));
        assert_eq!(
            l.get(lock.name()).await.unwrap(),
            before,
            "{case}: the state changed"
        );
    }
    out
}

#[tokio::test(start_paused = true)]
async fn states_grown_past_the_limits_are_refused_and_never_half_written() {
    let memory = growth_past_the_limit(&Memory::new().await).await;
    let kube = Kube::new().await;
    let on_kube = growth_past_the_limit(&kube).await;
    assert_eq!(memory, on_kube);
    assert!(
        memory.iter().all(|(_, kind)| *kind == "TooLarge"),
        "{memory:?}"
    );
    // Refused before any write: the API server never had to answer 422 (or 413).
    if let Some(server) = kube.fake() {
        let requests = server.requests();
        assert!(
            requests
                .iter()
                .all(|r| !matches!(r.status, Some(413 | 422))),
            "{:?}",
            requests
                .iter()
                .filter(|r| matches!(r.status, Some(413 | 422)))
                .collect::<Vec<_>>()
        );
    }
    assert_eq!(kube.cluster.counts().get(Verb::Update), 0);
}

/// kube-lock's format keeps a semaphore in an annotation, and all annotations of an object
/// together are limited to 256 KiB: a holder that would pass it is refused, before any
/// write, and the annotation stays as it was.
#[tokio::test(start_paused = true)]
async fn a_kube_lock_semaphore_past_the_annotation_limit_is_refused() {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::{Api, PostParams};
    let kube = Kube::new().await;
    // Hundreds of holders, just under the limit.
    let holder = serde_json::json!({ "date": "2018-08-19T19:14:24Z", "reason": "r".repeat(260) });
    let each = format!("\"holder-0000\":{holder},").len();
    let holders: serde_json::Map<String, serde_json::Value> = (0..251 * 1024 / each)
        .map(|i| (format!("holder-{i:04}"), holder.clone()))
        .collect();
    let annotation = serde_json::json!({ "max": 5000, "holders": holders }).to_string();
    assert!(annotation.len() > 250 * 1024 && annotation.len() < 256 * 1024);
    let namespace = kube.cluster.namespace();
    let api: Api<ConfigMap> = Api::namespaced(kube.cluster.client(), namespace);
    let cm: ConfigMap = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "sem", "annotations": { "kube-lock": annotation } },
    }))
    .unwrap();
    let stored = api.create(&PostParams::default(), &cm).await.unwrap();
    let locker = lockheed::KubeLocker::new(kube.cluster.client(), namespace)
        .with_format(lockheed::configmap::Format::KubeLock);
    let err = Lock::new("sem", locker)
        .with_holder("one-more")
        .with_max_holders(5000)
        .with_duration(Duration::ZERO)
        .with_reason("r".repeat(8 * 1024))
        .try_acquire()
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::TooLarge { object, limit, .. } if *object == format!("{namespace}/sem") && *limit == 256 * 1024),
        "{err}"
    );
    assert_eq!(
        api.get("sem").await.unwrap().metadata.resource_version,
        stored.metadata.resource_version
    );
    if let Some(server) = kube.fake() {
        assert!(server.requests().iter().all(|r| r.status != Some(422)));
    }
}

/// Holder identities, tags and reasons people (or other tools) may write: Unicode, control
/// characters, quotes, direction overrides, very long.
fn odd_strings() -> Vec<String> {
    [
        "ünïcödé",
        "日本語のロック",
        "emoji 🔒🔑",
        "tab\there",
        "new\nline",
        "esc \u{1b}[31mred\u{1b}[0m",
        "nul\u{0}byte",
        "quote\" back\\slash",
        "\u{202e}rtl override",
        "zero\u{200b}width",
        "  spaces  ",
    ]
    .into_iter()
    .map(str::to_owned)
    .chain(["l".repeat(64 * 1024), "ß".repeat(10_000)])
    .collect()
}

/// Each odd string, as a holder identity, a tag and a reason, is stored and read back
/// exactly, on both backends.
async fn odd_strings_round_trip<H: Harness>(h: &H) {
    for odd in odd_strings() {
        let guard = Lock::new("odd", h.locker())
            .with_holder(odd.clone())
            .with_tags([odd.clone()])
            .with_reason(odd.clone())
            .try_acquire()
            .await
            .unwrap_or_else(|e| panic!("{odd:?}: {e}"));
        let info = h.locker().get("odd").await.unwrap().unwrap();
        assert_eq!(info.holders[0].id, odd);
        assert_eq!(info.holders[0].reason.as_deref(), Some(odd.as_str()));
        assert!(info.tags.contains(&odd), "{odd:?}: {:?}", info.tags);
        assert_eq!(guard.holder(), odd);
        guard.release().await.unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn odd_holders_tags_and_reasons_are_stored_and_read_back_exactly() {
    odd_strings_round_trip(&Memory::new().await).await;
    odd_strings_round_trip(&Kube::new().await).await;
}

/// In kube-lock's format too (it has no tags).
#[tokio::test(start_paused = true)]
async fn odd_holders_and_reasons_round_trip_in_kube_locks_format() {
    let kube = Kube::new().await;
    let locker = lockheed::KubeLocker::new(kube.cluster.client(), kube.cluster.namespace())
        .with_format(lockheed::configmap::Format::KubeLock)
        .with_create(true);
    for odd in odd_strings() {
        let guard = Lock::new("sem", locker.clone())
            .with_holder(odd.clone())
            .with_reason(odd.clone())
            .with_max_holders(1)
            .with_duration(Duration::ZERO)
            .try_acquire()
            .await
            .unwrap_or_else(|e| panic!("{odd:?}: {e}"));
        let info = locker.get("sem").await.unwrap().unwrap();
        assert_eq!(info.holders[0].id, odd);
        assert_eq!(info.holders[0].reason.as_deref(), Some(odd.as_str()));
        guard.release().await.unwrap();
    }
}

/// Lock names become ConfigMap names, which Kubernetes restricts: anything odd is refused
/// before any request, with an error that says what is wrong.
#[tokio::test(start_paused = true)]
async fn odd_lock_names_are_refused_with_a_clear_error() {
    let kube = Kube::new().await;
    for odd in odd_strings()
        .into_iter()
        .chain(["UPPER".into(), "a..b".into(), "a-".into()])
    {
        let err = Lock::new(odd.clone(), kube.locker())
            .try_acquire()
            .await
            .unwrap_err();
        let Error::InvalidName { name, reason } = &err else {
            panic!("{odd:?}: {err}")
        };
        assert_eq!(name, &odd);
        assert!(reason.contains("the ConfigMap name"), "{reason}");
        assert!(
            reason.contains("must be no more than 253 characters")
                || reason.contains("lowercase RFC 1123 subdomain")
                || reason.contains("must consist of"),
            "{odd:?}: {reason}"
        );
    }
    assert_eq!(
        kube.cluster.counts().total(),
        0,
        "refused before any request"
    );
}
