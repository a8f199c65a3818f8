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
    let counts = kube.server.counts();
    assert_eq!(counts.get(Verb::Create), 2, "{counts:?}");
    assert_eq!(counts.get(Verb::Get), 4, "{counts:?}");
    assert_eq!(counts.get(Verb::Update), 0, "{counts:?}");
}
