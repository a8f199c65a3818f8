//! kube-lease-manager (0.13, a leader-election crate this project did not write) against the
//! fake API server. It takes a free Lease with server-side apply (a `fieldManager` per
//! identity, no force), renews and releases with strategic merge patches, and maps a 409 on
//! its apply to "someone else holds it": so it only works where field ownership works as in
//! kube-apiserver.
//!
//! The scenarios are those of its own suite (which needs a k3s container), each naming the
//! test it comes from; they drive only the public API (`LeaseManagerBuilder`, `changed`,
//! `release`, `watch`), so where the original looks at private state these check the Lease,
//! the channels or the request log instead. Leases last 3 s with a 2 s grace (renewals every
//! second), the shortest its whole-second API allows with a second of slack for a loaded
//! machine; kube-lease-manager measures expiry with the system clock, so the tests run in
//! real time.

use std::time::Duration;

use futures::{StreamExt, future};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::rbac::v1::PolicyRule;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::WatchParams;
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams, WatchEvent};
use kube_lease_manager::{LeaseCreateMode, LeaseManager, LeaseManagerBuilder, LeaseManagerError};
use lockheed_fake_apiserver::{AccessControl, FakeApiServer, Verb};
use serde_json::json;
use tokio::time::{Instant, timeout};

use crate::common::full_status;

const LEASE: &str = "leader";
/// Lease duration and grace, in seconds: a holder renews `GRACE` before expiry.
const DURATION: u64 = 3;
const GRACE: u64 = 2;
/// How long any single expected event may take, on a slow machine.
const PATIENCE: Duration = Duration::from_secs(DURATION + 7);

async fn server() -> FakeApiServer {
    crate::common::server().await
}

/// A server where each identity has its own token, so that the request log says who sent
/// what.
async fn server_for(identities: &[&str]) -> FakeApiServer {
    let rule = PolicyRule {
        api_groups: Some(vec!["coordination.k8s.io".into()]),
        resources: Some(vec!["leases".into()]),
        verbs: vec!["*".into()],
        ..PolicyRule::default()
    };
    let access = identities.iter().fold(AccessControl::new(), |access, id| {
        access.user(id, id).rule(id, Some("default"), rule.clone())
    });
    FakeApiServer::builder()
        .access_control(access)
        .start()
        .await
        .unwrap()
}

/// A manager named `identity`, with the field manager `kube-lease-manager-<identity>` that
/// `LeaseParams::new` would derive (the builder's `with_identity` keeps the field manager of
/// the random default identity).
fn builder(client: kube::Client, identity: &str) -> LeaseManagerBuilder {
    LeaseManagerBuilder::new(client, LEASE)
        .with_identity(identity)
        .with_field_manager(format!("kube-lease-manager-{identity}"))
        .with_duration(DURATION)
        .with_grace(GRACE)
}

async fn manager(server: &FakeApiServer, identity: &str) -> LeaseManager {
    builder(server.client(), identity).build().await.unwrap()
}

fn leases(server: &FakeApiServer) -> Api<Lease> {
    Api::namespaced(server.client(), "default")
}

async fn spec(server: &FakeApiServer) -> LeaseSpec {
    leases(server)
        .get(LEASE)
        .await
        .unwrap()
        .spec
        .unwrap_or_default()
}

async fn holder(server: &FakeApiServer) -> Option<String> {
    spec(server).await.holder_identity
}

/// Watches the Lease until its holder has renewed it `times` times; returns the holder.
/// Panics if the holder changes meanwhile or the renewals do not come.
async fn renewed(server: &FakeApiServer, times: usize) -> String {
    let api = leases(server);
    let lease = api.get(LEASE).await.unwrap();
    let rv = lease.metadata.resource_version.clone().unwrap();
    let spec = lease.spec.unwrap_or_default();
    let holder = spec.holder_identity.expect("the lease is held");
    let mut last = spec.renew_time;
    let params = WatchParams::default().fields(&format!("metadata.name={LEASE}"));
    let mut events = api.watch(&params, &rv).await.unwrap().boxed();
    let mut seen = 0;
    while seen < times {
        let event = timeout(PATIENCE, events.next())
            .await
            .expect("a renewal in time")
            .expect("the watch goes on")
            .unwrap();
        let WatchEvent::Modified(lease) = event else {
            continue;
        };
        let spec = lease.spec.unwrap_or_default();
        assert_eq!(spec.holder_identity.as_ref(), Some(&holder), "a new holder");
        if spec.renew_time != last {
            seen += 1;
            last = spec.renew_time;
        }
    }
    holder
}

/// PATCHes sent with this kube-lease-manager identity's field manager.
fn patches_by(server: &FakeApiServer, identity: &str) -> Vec<Option<u16>> {
    let manager = format!("fieldManager=kube-lease-manager-{identity}");
    server
        .requests()
        .iter()
        .filter(|r| r.verb == Verb::Patch && r.query.split('&').any(|q| q == manager))
        .map(|r| r.status)
        .collect()
}

/// From `single_manager_changed_loop` (src/manager.rs) and `manual` (tests/manual.rs): one
/// manager takes the lease, keeps it by renewing while `changed()` runs, and gives it up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_manager_takes_keeps_and_releases_the_lease() {
    let server = server().await;
    let only = manager(&server, "only").await;
    assert!(only.changed().await.unwrap());
    assert_eq!(holder(&server).await.as_deref(), Some("only"));

    // Past the first expiry: `changed()` keeps renewing and does not report a change.
    let first_renewal = spec(&server).await.renew_time;
    tokio::select! {
        changed = only.changed() => panic!("the holder's state changed: {changed:?}"),
        holder = renewed(&server, DURATION as usize) => assert_eq!(holder, "only"),
    }
    assert_ne!(spec(&server).await.renew_time, first_renewal);

    only.release().await.unwrap();
    assert_eq!(holder(&server).await, None);
    assert!(
        !only.changed().await.unwrap(),
        "released: no longer the leader"
    );
}

/// From `two_managers_1st_expires_then_2nd_locks` (src/manager.rs) and
/// `unattended_soft_lock_1st_soft_lock_2nd` (src/state.rs): two managers go for a free lease
/// at once; one leads, and the other never does while the leader renews.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_contenders_never_both_lead() {
    let server = server().await;
    let (a, b) = (manager(&server, "a").await, manager(&server, "b").await);
    let (leader, other, winner, loser) = tokio::select! {
        won = a.changed() => { assert!(won.unwrap()); (&a, &b, "a", "b") }
        won = b.changed() => { assert!(won.unwrap()); (&b, &a, "b", "a") }
    };
    tokio::select! {
        changed = leader.changed() => panic!("the leader's state changed: {changed:?}"),
        changed = other.changed() => panic!("the other manager's state changed: {changed:?}"),
        _ = renewed(&server, 2) => {}
    }
    assert_eq!(holder(&server).await.as_deref(), Some(winner));
    // The winner's apply and renewals went through; whatever the loser tried (if it got to
    // apply before it saw the lease taken) was refused with 409.
    let won = patches_by(&server, winner);
    assert!(
        won.len() >= 3 && won.iter().all(|s| *s == Some(200)),
        "{won:?}"
    );
    let tried = patches_by(&server, loser);
    assert!(tried.iter().all(|s| *s == Some(409)), "{tried:?}");
}

/// From `many_managers_1st_expires_then_someone_locks` (src/manager.rs), with four managers
/// instead of a hundred: the holder stops renewing, and exactly one of the others takes the
/// expired lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_of_many_takes_an_expired_lease() {
    let server = server().await;
    let first = manager(&server, "first").await;
    assert!(first.changed().await.unwrap());
    let mut others = Vec::new();
    for i in 0..3 {
        others.push(manager(&server, &format!("other-{i}")).await);
    }
    // `first` is not polled any more: no renewals. The others wait, see it expire, and race.
    let waiting = others.iter().map(|m| Box::pin(m.changed()));
    let (won, index, _rest) = timeout(PATIENCE, future::select_all(waiting))
        .await
        .expect("someone takes the expired lease");
    assert!(
        won.unwrap(),
        "the first change of a waiter is taking the lease"
    );
    assert!(
        !first.changed().await.unwrap(),
        "the old holder learns it lost"
    );
    // Who holds it now is one of the others (kube-lease-manager's losers may still be busy
    // releasing what they saw expire, so which one is not checked again here).
    let now = holder(&server).await;
    assert_ne!(
        now.as_deref(),
        Some("first"),
        "{now:?} after other-{index} took it"
    );
}

/// From `two_managers_1st_releases_then_2nd_locks` (src/manager.rs) and
/// `soft_lock_1st_soft_release_2nd` (src/state.rs): the holder releases, the waiter takes
/// over, and the old holder learns it is no longer the leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_released_lease_goes_to_the_waiter() {
    let server = server().await;
    let (a, b) = (manager(&server, "a").await, manager(&server, "b").await);
    assert!(a.changed().await.unwrap());
    let b_waits = b.changed();
    tokio::pin!(b_waits);
    tokio::select! {
        changed = &mut b_waits => panic!("b changed while a held the lease: {changed:?}"),
        changed = a.changed() => panic!("a's state changed: {changed:?}"),
        holder = renewed(&server, 1) => assert_eq!(holder, "a"),
    }
    a.release().await.unwrap();
    assert!(timeout(PATIENCE, b_waits).await.unwrap().unwrap());
    assert_eq!(holder(&server).await.as_deref(), Some("b"));
    assert!(!a.changed().await.unwrap());
}

/// The request log of a handover. Before the fake server dropped owners of removed fields, a
/// waiter answered every release with GET, GET, PATCH 409 and a growing back-off; now it
/// takes the lease at its first look after the release: no 409 at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_takes_a_released_lease_in_one_step() {
    let server = server_for(&["holder", "waiter"]).await;
    let holder_manager = builder(server.client_for_token("holder"), "holder")
        .build()
        .await
        .unwrap();
    let waiter = builder(server.client_for_token("waiter"), "waiter")
        .build()
        .await
        .unwrap();
    assert!(holder_manager.changed().await.unwrap());
    let waits = waiter.changed();
    tokio::pin!(waits);
    tokio::select! {
        changed = &mut waits => panic!("the waiter changed while the lease was held: {changed:?}"),
        changed = holder_manager.changed() => panic!("the holder changed: {changed:?}"),
        _ = renewed(&server, 1) => {}
    }
    holder_manager.release().await.unwrap();
    let released = Instant::now();
    let after_release = server.requests().len();
    assert!(timeout(PATIENCE, waits).await.unwrap().unwrap());
    // It slept until the lease it had seen would expire (at most DURATION), then took it.
    assert!(released.elapsed() < Duration::from_secs(DURATION + 2));

    let log = server.requests();
    assert!(
        log.iter().all(|r| r.status != Some(409)),
        "no conflict anywhere: {:?}",
        log.iter()
            .map(|r| (r.user.clone(), r.verb, r.status))
            .collect::<Vec<_>>()
    );
    let by_waiter: Vec<(Verb, Option<u16>)> = log[after_release..]
        .iter()
        .filter(|r| r.user.as_deref() == Some("waiter"))
        .map(|r| (r.verb, r.status))
        .collect();
    let patches: Vec<_> = by_waiter
        .iter()
        .filter(|(v, _)| *v == Verb::Patch)
        .collect();
    // One apply that takes the lease, one strategic patch that counts the transition.
    assert_eq!(
        patches,
        [&(Verb::Patch, Some(200)), &(Verb::Patch, Some(200))],
        "{by_waiter:?}"
    );
    let gets = by_waiter.iter().filter(|(v, _)| *v == Verb::Get).count();
    assert!(
        gets <= 3,
        "one look, one check, one read-back: {by_waiter:?}"
    );
}

/// From `many_managers_watch_one_by_one` and `single_watch_managers_handles_own_channel`
/// (src/manager.rs) and `watch_many_threads` (tests/watch_many_threads.rs): three managers in
/// `watch()` mode; one channel at a time says `true`, and closing it hands the lease on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_channels_hand_the_lease_on_one_by_one() {
    const MANAGERS: usize = 3;
    let server = server().await;
    let mut channels = Vec::new();
    let mut tasks = Vec::new();
    for i in 0..MANAGERS {
        let (channel, task) = manager(&server, &format!("w{i}")).await.watch().await;
        channels.push(channel);
        tasks.push(task);
    }
    while !channels.is_empty() {
        let changed = channels.iter_mut().map(|c| Box::pin(c.changed()));
        let (result, index, _) = timeout(PATIENCE, future::select_all(changed))
            .await
            .expect("a manager takes the lease");
        result.unwrap();
        let leaders = channels
            .iter_mut()
            .map(|c| *c.borrow_and_update())
            .filter(|leads| *leads)
            .count();
        assert_eq!(leaders, 1, "exactly one channel says it leads");
        assert!(*channels[index].borrow());
        // Closing the channel stops its manager, which releases the lease.
        drop(channels.remove(index));
        let stopped = timeout(PATIENCE, tasks.remove(index))
            .await
            .expect("the manager stops")
            .unwrap();
        assert!(stopped.is_ok(), "{stopped:?}");
    }
    let spec = spec(&server).await;
    assert_eq!(spec.lease_transitions, Some(MANAGERS as i32));
    assert_eq!(spec.holder_identity, None, "the last one released it too");
}

/// From `two_managers_1st_uses_changed_2nd_watch` (src/manager.rs): the holder stops
/// renewing; a manager in `watch()` mode takes the expired lease, and when its channel
/// closes it lets the lease go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_lease_is_taken_over() {
    let server = server().await;
    let first = manager(&server, "first").await;
    assert!(first.changed().await.unwrap());
    let (mut channel, task) = manager(&server, "second").await.watch().await;
    assert!(!*channel.borrow_and_update());
    // No `first.changed()` from here on: its lease expires after DURATION.
    timeout(PATIENCE, channel.changed())
        .await
        .expect("the watcher takes the expired lease")
        .unwrap();
    assert!(*channel.borrow_and_update());
    assert_eq!(holder(&server).await.as_deref(), Some("second"));
    assert!(
        !first.changed().await.unwrap(),
        "the old holder learns it lost"
    );

    // Closing the channel stops the watcher, which releases the lease. (The original then
    // waits for the first manager to take it back, which costs it another lease duration
    // here: it believes the watcher's lease until then. A fresh manager shows it is free.)
    drop(channel);
    assert!(timeout(PATIENCE, task).await.unwrap().unwrap().is_ok());
    assert_eq!(holder(&server).await, None);
    let third = manager(&server, "third").await;
    assert!(timeout(PATIENCE, third.changed()).await.unwrap().unwrap());
}

/// From `update_lease_with_conflict` (src/state.rs): while one manager holds the lease,
/// another's apply (the very request kube-lease-manager sends, with its field manager and
/// without force) is a 409 Conflict, which is what it treats as "held by someone else".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apply_against_the_holder_is_a_conflict() {
    let server = server().await;
    let holder_manager = manager(&server, "holder").await;
    assert!(holder_manager.changed().await.unwrap());
    let transitions = spec(&server).await.lease_transitions.unwrap_or(0);
    let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
    let take = json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "spec": {
            "acquireTime": now,
            "renewTime": now,
            "holderIdentity": "intruder",
            "leaseDurationSeconds": DURATION,
            "leaseTransitions": transitions + 1,
        },
    });
    let params = PatchParams {
        field_manager: Some("kube-lease-manager-intruder".into()),
        ..PatchParams::default()
    };
    let err = leases(&server)
        .patch(LEASE, &params, &Patch::Apply(take))
        .await
        .unwrap_err();
    let status = full_status(err);
    assert_eq!((status.code, status.reason.as_str()), (409, "Conflict"));
    // The holder applied four fields and counted the transition with a strategic patch; the
    // same leaseDurationSeconds is shared, not a conflict.
    assert_eq!(
        status.message,
        "Apply failed with 4 conflicts: conflicts with \"kube-lease-manager-holder\":\n\
         - .spec.acquireTime\n- .spec.holderIdentity\n- .spec.renewTime\n\
         conflicts with \"kube-lease-manager-holder\" using coordination.k8s.io/v1:\n\
         - .spec.leaseTransitions"
    );
    assert_eq!(holder(&server).await.as_deref(), Some("holder"));
}

/// From `create_lease` (src/manager.rs): the three create modes.
#[tokio::test]
async fn create_modes() {
    let server = server().await;
    let with_mode = |mode| {
        builder(server.client(), "creator")
            .with_create_mode(mode)
            .build()
    };
    assert!(matches!(
        with_mode(LeaseCreateMode::UseExistent).await,
        Err(LeaseManagerError::NonexistentLease(_))
    ));
    with_mode(LeaseCreateMode::AutoCreate).await.unwrap();
    with_mode(LeaseCreateMode::UseExistent).await.unwrap();
    with_mode(LeaseCreateMode::AutoCreate).await.unwrap();
    assert!(matches!(
        with_mode(LeaseCreateMode::CreateNew).await,
        Err(LeaseManagerError::LeaseAlreadyExists(_))
    ));
    leases(&server)
        .delete(LEASE, &DeleteParams::default())
        .await
        .unwrap();
    with_mode(LeaseCreateMode::CreateNew).await.unwrap();
}

/// From `lease_manager_builder` (src/manager.rs): every builder setting is honoured, and the
/// custom field manager is who owns the lease's fields.
#[tokio::test]
async fn builder_settings_and_field_ownership() {
    let server = server().await;
    server.create_namespace("elections");
    let manager = LeaseManagerBuilder::new(server.client(), "ignored")
        .with_lease_name("custom")
        .with_namespace("elections")
        .with_create_mode(LeaseCreateMode::CreateNew)
        .with_identity("custom-identity")
        .with_field_manager("custom-field-manager")
        .with_duration(111)
        .with_grace(11)
        .build()
        .await
        .unwrap();
    assert!(manager.changed().await.unwrap());
    let api: Api<Lease> = Api::namespaced(server.client(), "elections");
    let lease = api.get("custom").await.unwrap();
    let spec = lease.spec.unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some("custom-identity"));
    assert_eq!(spec.lease_duration_seconds, Some(111));
    let owners: Vec<(String, String, serde_json::Value)> = lease
        .metadata
        .managed_fields
        .unwrap()
        .into_iter()
        .filter(|e| e.manager.as_deref() == Some("custom-field-manager"))
        .map(|e| {
            (
                e.operation.unwrap(),
                e.api_version.unwrap(),
                e.fields_v1.unwrap().0,
            )
        })
        .collect();
    assert_eq!(
        owners,
        [
            (
                "Apply".to_owned(),
                "coordination.k8s.io/v1".to_owned(),
                json!({ "f:spec": {
                    "f:acquireTime": {}, "f:holderIdentity": {}, "f:leaseDurationSeconds": {},
                    "f:renewTime": {},
                }})
            ),
            (
                "Update".to_owned(),
                "coordination.k8s.io/v1".to_owned(),
                json!({ "f:spec": { "f:leaseTransitions": {} } })
            ),
        ]
    );
}

/// From `manager_read_inconsistent_lease_then_release_and_lock` (src/manager.rs): a Lease
/// with a renew time but no holder is released and taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inconsistent_lease_is_released_and_taken() {
    let server = server().await;
    let lease = Lease {
        metadata: ObjectMeta {
            name: Some(LEASE.into()),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            renew_time: Some(MicroTime(k8s_openapi::jiff::Timestamp::now())),
            ..LeaseSpec::default()
        }),
    };
    leases(&server)
        .create(&PostParams::default(), &lease)
        .await
        .unwrap();
    let only = manager(&server, "fixer").await;
    assert!(timeout(PATIENCE, only.changed()).await.unwrap().unwrap());
    assert_eq!(holder(&server).await.as_deref(), Some("fixer"));
}
