//! Least privilege and trust. The behavioural suite runs with exactly the Role of
//! `examples/rbac.yaml` (`suite::kube_rbac`) and with only `get` and `update` on ConfigMaps an
//! administrator created (`suite::kube_named`); here, what those rights do not allow, and
//! what a holder may trust about others: identities nobody guesses, releases that remove
//! only their own lease, and takeovers and evictions that say who removed whom.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lockheed::testing::Verb;
use lockheed::{Condition, Error, Evict, Lock, Locker};

use crate::harness::{Harness, KubeNamed, KubeRbac, Memory};

const SECOND: Duration = Duration::from_secs(1);

/// With only `get` and `update` on some ConfigMaps, listing locks fails with the server's
/// 403, which names the verb that is missing; with the viewer Role it works.
#[tokio::test(start_paused = true)]
async fn listing_without_the_list_verb_is_a_clear_permission_error() {
    let h = KubeNamed::new().await;
    let err = h.locker().list(None).await.unwrap_err();
    assert!(!err.is_transient(), "{err}");
    let Error::Kube {
        source: kube::Error::Api(status),
        ..
    } = &err
    else {
        panic!("{err}")
    };
    assert_eq!(status.code, 403);
    assert!(
        status
            .message
            .contains(r#"cannot list resource "configmaps""#),
        "{}",
        status.message
    );
    // The error's chain says it too, as `{:#}` (anyhow) prints it.
    let chain = std::iter::successors(Some(&err as &dyn std::error::Error), |e| e.source())
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(": ");
    assert!(chain.contains("cannot list"), "{chain}");
    // The full Role lists.
    let rbac = KubeRbac::new().await;
    Lock::new("db", rbac.locker())
        .try_acquire()
        .await
        .unwrap()
        .forget();
    assert_eq!(rbac.locker().list(None).await.unwrap().locks.len(), 1);
}

/// With only `get` and `update`, a waiter cannot watch: it polls, and takes the lock when
/// it is released; nothing is created, listed or watched after the first refusals.
#[tokio::test(start_paused = true)]
async fn with_only_get_and_update_waiters_poll_and_create_nothing() {
    let h = KubeNamed::new().await;
    let alice = Lock::new("db", h.locker())
        .with_holder("alice")
        .try_acquire()
        .await
        .unwrap();
    let bob = tokio::spawn({
        let lock = Lock::new("db", h.locker()).with_holder("bob");
        async move { lock.acquire().await.unwrap() }
    });
    tokio::time::sleep(5 * SECOND).await;
    h.cluster.reset_counters();
    tokio::time::sleep(20 * SECOND).await;
    let counts = h.cluster.counts();
    assert_eq!(
        (
            counts.get(Verb::List),
            counts.get(Verb::Watch),
            counts.get(Verb::Create)
        ),
        (0, 0, 0),
        "{counts:?}"
    );
    assert!(counts.get(Verb::Get) > 0, "bob polls: {counts:?}");
    alice.release().await.unwrap();
    let bob = tokio::time::timeout(30 * SECOND, bob)
        .await
        .expect("bob takes it")
        .unwrap();
    assert_eq!(bob.token(), 2);
    bob.release().await.unwrap();
    // A lock whose ConfigMap the administrator did not create cannot be taken.
    let err = Lock::new("never-taken", h.locker())
        .try_acquire()
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Kube { source: kube::Error::Api(s), .. } if s.code == 403 && s.message.contains("cannot create")),
        "{err}"
    );
}

/// Default holder identities are random UUIDs v4 (122 random bits from the operating
/// system): nobody guesses another process's, and two processes never share one.
#[tokio::test(start_paused = true)]
async fn default_holder_identities_are_unguessable() {
    let h = Memory::new().await;
    // In the order they were made.
    let made: Vec<String> = (0..10_000)
        .map(|_| Lock::new("x", h.locker()).holder().to_owned())
        .collect();
    let identities: std::collections::BTreeSet<&String> = made.iter().collect();
    assert_eq!(identities.len(), 10_000, "no two alike");
    for id in made.iter().take(100) {
        let uuid = uuid::Uuid::parse_str(id).unwrap();
        assert_eq!(uuid.get_version_num(), 4, "{id}");
        assert_eq!(uuid.get_variant(), uuid::Variant::RFC4122, "{id}");
    }
    // Nothing about them is sequential: identities made one after the other share no prefix.
    // (Not neighbours in sorted order: among 10,000 random ones, two share their first 8 hex
    // digits about once in a hundred runs.)
    let shared_prefix = made
        .windows(2)
        .map(|w| {
            w[0].bytes()
                .zip(w[1].bytes())
                .take_while(|(a, b)| a == b)
                .count()
        })
        .max()
        .unwrap();
    assert!(shared_prefix < 8, "{shared_prefix}");
}

/// A release removes its own lease, never another's: not another holder's of a semaphore,
/// not the later lease of the same holder identity (which has another token), not a lease
/// written after the release's holder lost the lock.
async fn releases_remove_only_their_own_lease<H: Harness>() {
    let h = H::new().await;
    let sem = |holder: &str| {
        Lock::new("pool", h.locker())
            .with_holder(holder)
            .with_max_holders(2)
    };
    let a = sem("a").try_acquire().await.unwrap();
    let b = sem("b").try_acquire().await.unwrap();
    a.release().await.unwrap();
    let info = h.locker().get("pool").await.unwrap().unwrap();
    assert_eq!(info.holders.len(), 1);
    assert_eq!(info.holders[0].id, "b");
    // b's lease is evicted, and "b" takes the lock again: the first guard's release must
    // not remove the second acquisition's lease.
    h.locker().evict("pool", Evict::Holder("b")).await.unwrap();
    let again = sem("b").try_acquire().await.unwrap();
    assert!(matches!(b.release().await, Err(Error::Lost { .. })));
    let info = h.locker().get("pool").await.unwrap().unwrap();
    assert_eq!(info.holders[0].token, Some(again.token()));
    again.release().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn releases_remove_only_their_own_lease_in_memory() {
    releases_remove_only_their_own_lease::<Memory>().await;
}

#[tokio::test(start_paused = true)]
async fn releases_remove_only_their_own_lease_on_kubernetes() {
    releases_remove_only_their_own_lease::<KubeRbac>().await;
}

/// A `MakeWriter` that keeps what is logged.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn lines(&self) -> Vec<String> {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

/// A forced takeover, and an operator's eviction, are logged at warn level with who removed
/// whom: the holders removed learn it only at their next renewal, and whoever reads the
/// logs afterwards must be able to tell.
#[tokio::test(start_paused = true)]
async fn forced_takeovers_and_evictions_are_logged_at_warn_with_who_removed_whom() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _default = tracing::subscriber::set_default(subscriber);
    let h = KubeRbac::new().await;
    let alice = Lock::new("f", h.locker())
        .with_holder("alice")
        .with_tags(["forceme"])
        .try_acquire()
        .await
        .unwrap();
    let bob = Lock::new("f", h.locker())
        .with_holder("bob")
        .with_force(Condition::tags_contain("forceme"))
        .try_acquire()
        .await
        .unwrap();
    let lines = captured.lines();
    let takeover = lines
        .iter()
        .find(|l| l.contains("over by force"))
        .unwrap_or_else(|| panic!("{lines:#?}"));
    assert!(takeover.contains(" WARN "), "{takeover}");
    assert!(
        takeover.contains(r#"bob took lock "f" over by force, removing alice (since "#),
        "{takeover}"
    );
    assert!(
        takeover.contains("token 1"),
        "the token removed: {takeover}"
    );
    h.locker().evict("f", Evict::Holder("bob")).await.unwrap();
    let lines = captured.lines();
    let eviction = lines
        .iter()
        .find(|l| l.contains("eviction"))
        .unwrap_or_else(|| panic!("{lines:#?}"));
    assert!(eviction.contains(" WARN "), "{eviction}");
    assert!(
        eviction
            .contains(r#"holders removed from lock "f" by an operator's eviction: bob (since "#),
        "{eviction}"
    );
    alice.forget();
    bob.forget();
}
