//! lockheed, client-go and kube-lease-manager electing leaders on one Lease, with holders
//! stopping, crashing and releasing at random: never two leaders at once (by each one's own
//! belief), and every handover to a lockheed replica that was waiting is watch-fast. (A
//! lockheed waiter writes no place in the queue behind a client-go leader, so that leader's
//! release, which writes the Lease it last wrote, does not conflict; the last test shows it.)
//!
//! client-go is its algorithm transcribed (`client_go.rs`, client-go v0.31); kube-lease-manager
//! is the real crate (0.13). The first test runs two lockheed and two client-go replicas on
//! Tokio's paused clock for four simulated minutes (15 s leases, client-go's default timings).
//! kube-lease-manager measures expiry with the system clock, so the second test, which adds it,
//! runs in real time, with leases of 3 to 4 s, for 12 s or until each kind of client has led
//! (25 s at most); a failure prints the timeline of beliefs and Lease versions, and who wrote
//! what.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::rbac::v1::PolicyRule;
use kube::api::Api;
use kube_lease_manager::LeaseManagerBuilder;
use lockheed::clock::{Clock, SystemClock, TokioClock};
use lockheed::testing::{AccessControl, FakeApiServer, Verb};
use lockheed::{LeaseLocker, Lock};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::client_go::{Config, Elector};

const LEASE: &str = "controller";

/// Who believes they lead, as each participant tells it, and what that shows.
#[derive(Default)]
struct Ledger {
    leader: Option<String>,
    /// Two leaders at once: who was leading when whom started.
    overlaps: Vec<String>,
    /// Every term: who, when it started.
    terms: Vec<(String, Instant)>,
    /// lockheed replicas campaigning now.
    lockheed_waiting: usize,
    /// A leader that stepped down (to release) while a lockheed replica waited: since when.
    released: Option<Instant>,
    /// From such a release until the next term started, each time.
    handovers: Vec<Duration>,
    /// Every event, for a failure's message.
    timeline: Vec<String>,
}

#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Ledger>>);

impl Shared {
    fn note(&self, what: String) {
        let at = chrono::Utc::now().format("%H:%M:%S%.3f");
        self.0.lock().unwrap().timeline.push(format!("{at} {what}"));
    }

    fn start(&self, who: &str) {
        self.note(format!("{who} leads"));
        let mut ledger = self.0.lock().unwrap();
        if let Some(current) = &ledger.leader {
            let overlap = format!("{who} started leading while {current} led");
            ledger.overlaps.push(overlap);
        }
        ledger.leader = Some(who.to_owned());
        let now = Instant::now();
        ledger.terms.push((who.to_owned(), now));
        if let Some(released) = ledger.released.take() {
            ledger.handovers.push(now - released);
        }
    }

    /// `who` stops believing it leads; `releases` when it is about to release the Lease.
    fn end(&self, who: &str, releases: bool) {
        self.note(format!("{who} stops (releases: {releases})"));
        let mut ledger = self.0.lock().unwrap();
        if ledger.leader.as_deref() == Some(who) {
            ledger.leader = None;
        }
        if releases && ledger.lockheed_waiting > 0 {
            ledger.released = Some(Instant::now());
        }
    }

    /// `who`'s release did not happen after all (a client-go release that conflicted with
    /// another write since its last renewal): no handover follows; the next leader takes the
    /// Lease once it expires.
    fn release_failed(&self, who: &str) {
        self.note(format!("{who}'s release failed"));
        self.0.lock().unwrap().released = None;
    }

    fn waiting(&self, delta: isize) {
        let mut ledger = self.0.lock().unwrap();
        ledger.lockheed_waiting = ledger.lockheed_waiting.saturating_add_signed(delta);
    }
}

/// What a leader does when its term is up.
#[derive(Debug, Clone, Copy)]
enum Ending {
    /// Stops and releases the Lease.
    Release,
    /// Dies: stops renewing and leaves the Lease to expire.
    Crash,
}

fn ending(rng: &mut fastrand::Rng) -> Ending {
    if rng.bool() {
        Ending::Release
    } else {
        Ending::Crash
    }
}

fn between(rng: &mut fastrand::Rng, low: Duration, high: Duration) -> Duration {
    low + (high - low).mul_f64(rng.f64())
}

/// Timings of a run.
#[derive(Clone)]
struct Run {
    /// Cancelled when the run is over: replicas stop campaigning.
    over: CancellationToken,
    /// How long a leader holds at most before its term is up.
    hold: Duration,
    /// How long a stopped replica pauses at most before campaigning again.
    pause: Duration,
    lease: Duration,
}

/// A lockheed replica: campaigns (a waiting acquire), leads for a while, then releases or
/// crashes, again and again.
async fn lockheed_replica(name: String, locker: LeaseLocker, ledger: Shared, run: Run, seed: u64) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut incarnation = 0;
    while !run.over.is_cancelled() {
        incarnation += 1;
        let holder = format!("{name}-{incarnation}");
        let lock = Lock::new(LEASE, locker.clone())
            .with_holder(&holder)
            .with_duration(run.lease);
        ledger.waiting(1);
        let taken = tokio::select! {
            () = run.over.cancelled() => None,
            taken = lock.acquire() => Some(taken),
        };
        ledger.waiting(-1);
        let Some(taken) = taken else { break };
        let guard = taken.expect("lockheed campaigns");
        ledger.start(&holder);
        let hold = between(&mut rng, Duration::ZERO, run.hold);
        let lost = tokio::select! {
            () = guard.lost() => true,
            () = tokio::time::sleep(hold) => false,
        };
        match (lost, ending(&mut rng)) {
            (true, _) => {
                ledger.end(&holder, false);
                drop(guard);
            }
            (false, Ending::Release) => {
                ledger.end(&holder, true);
                if let Err(err) = guard.release().await {
                    let lost = format!("{holder} could not release: {err}");
                    ledger.0.lock().unwrap().overlaps.push(lost);
                }
            }
            (false, Ending::Crash) => {
                ledger.end(&holder, false);
                guard.forget();
            }
        }
        tokio::time::sleep(between(&mut rng, Duration::ZERO, run.pause)).await;
    }
}

/// A client-go replica (`RunOrDie` with `ReleaseOnCancel`): each incarnation campaigns,
/// leads until its term is up (or renewals fail), then releases or crashes.
async fn client_go(
    name: String,
    api: Api<Lease>,
    clock: Arc<dyn Clock>,
    ledger: Shared,
    run: Run,
    config: Config,
    seed: u64,
) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut incarnation = 0;
    while !run.over.is_cancelled() {
        incarnation += 1;
        let identity = format!("{name}-{incarnation}");
        let config = Config {
            identity: identity.clone(),
            ..config.clone()
        };
        let mut elector =
            Elector::new(api.clone(), LEASE, config, Arc::clone(&clock)).with_seed(rng.u64(..));
        let stop = CancellationToken::new();
        let (deadline, over) = (stop.clone(), run.over.clone());
        let stopper = tokio::spawn(async move {
            over.cancelled().await;
            deadline.cancel();
        });
        if !elector.acquire(&stop).await {
            break;
        }
        stopper.abort();
        ledger.start(&identity);
        let term = stop.clone();
        let hold = between(&mut rng, Duration::ZERO, run.hold);
        let timer = tokio::spawn(async move {
            tokio::time::sleep(hold).await;
            term.cancel();
        });
        elector.renew(&stop).await;
        timer.abort();
        match ending(&mut rng) {
            Ending::Release => {
                ledger.end(&identity, true);
                if !elector.release().await {
                    ledger.release_failed(&identity);
                }
            }
            Ending::Crash => ledger.end(&identity, false),
        }
        tokio::time::sleep(between(&mut rng, Duration::ZERO, run.pause)).await;
    }
}

/// A kube-lease-manager replica: each incarnation watches (campaigns and renews), leads
/// until its term is up, then releases (dropping its channel) or crashes (its task aborted).
async fn kube_lease_manager(
    name: String,
    server: Arc<FakeApiServer>,
    ledger: Shared,
    run: Run,
    seed: u64,
) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut incarnation = 0;
    while !run.over.is_cancelled() {
        incarnation += 1;
        let identity = format!("{name}-{incarnation}");
        let manager = LeaseManagerBuilder::new(server.client_for_token(&name), LEASE)
            .with_identity(&identity)
            .with_field_manager(format!("kube-lease-manager-{identity}"))
            .with_duration(3)
            .with_grace(2)
            .build()
            .await
            .expect("kube-lease-manager starts");
        let (mut leading, task) = manager.watch().await;
        let became = tokio::select! {
            () = run.over.cancelled() => false,
            became = leading.wait_for(|l| *l) => became.is_ok(),
        };
        if !became {
            drop(leading);
            let _ = task.await;
            break;
        }
        ledger.start(&identity);
        let hold = between(&mut rng, Duration::ZERO, run.hold);
        let lost = tokio::select! {
            changed = leading.wait_for(|l| !*l) => changed.is_ok(),
            () = tokio::time::sleep(hold) => false,
        };
        match (lost, ending(&mut rng)) {
            (true, _) => {
                ledger.end(&identity, false);
                drop(leading);
                let _ = task.await;
            }
            (false, Ending::Release) => {
                ledger.end(&identity, true);
                drop(leading);
                let _ = task.await;
            }
            (false, Ending::Crash) => {
                ledger.end(&identity, false);
                task.abort();
            }
        }
        tokio::time::sleep(between(&mut rng, Duration::ZERO, run.pause)).await;
    }
}

/// Checks that there were at least `terms` terms, led by each kind of client in `kinds`.
fn assert_kinds(ledger: &Shared, terms: usize, kinds: &[&str]) {
    let ledger = ledger.0.lock().unwrap();
    let who: Vec<&str> = ledger.terms.iter().map(|(w, _)| w.as_str()).collect();
    assert!(who.len() >= terms, "only {} terms: {who:?}", who.len());
    for kind in kinds {
        assert!(
            who.iter().any(|w| w.starts_with(&format!("{kind}-"))),
            "no {kind} replica led: {who:?}"
        );
    }
}

/// The ledger's verdict: no overlap, and how fast handovers were.
fn verdict(ledger: &Shared, fast: Duration) -> Vec<Duration> {
    let ledger = ledger.0.lock().unwrap();
    assert!(
        ledger.overlaps.is_empty(),
        "two leaders at once: {:?}",
        ledger.overlaps
    );
    let who: Vec<&str> = ledger.terms.iter().map(|(w, _)| w.as_str()).collect();
    eprintln!("{} terms: {}", who.len(), who.join(", "));
    for (i, handover) in ledger.handovers.iter().enumerate() {
        assert!(
            *handover < fast,
            "handover {i} while a lockheed replica waited took {handover:?}\n{}",
            ledger.timeline.join("\n")
        );
    }
    let mut handovers = ledger.handovers.clone();
    handovers.sort_unstable();
    eprintln!("handovers to waiting lockheed replicas: {handovers:?}");
    handovers
}

/// Ends the run once `kinds` have all led and `least` has passed, or at `most`.
fn end_run(
    ledger: &Shared,
    over: &CancellationToken,
    least: Duration,
    most: Duration,
    kinds: &'static [&'static str],
) {
    let (ledger, over, started) = (ledger.clone(), over.clone(), Instant::now());
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let led = |kind: &str| {
                let ledger = ledger.0.lock().unwrap();
                ledger
                    .terms
                    .iter()
                    .any(|(w, _)| w.starts_with(&format!("{kind}-")))
            };
            let elapsed = started.elapsed();
            if elapsed >= most || (elapsed >= least && kinds.iter().all(|k| led(k))) {
                over.cancel();
                return;
            }
        }
    });
}

#[tokio::test(start_paused = true)]
async fn lockheed_and_client_go_share_a_lease_for_four_simulated_minutes() {
    let server = FakeApiServer::start().await.unwrap();
    let clock: Arc<TokioClock> = Arc::new(TokioClock::new());
    let ledger = Shared::default();
    let run = Run {
        over: CancellationToken::new(),
        hold: Duration::from_secs(12),
        pause: Duration::from_secs(25),
        lease: Duration::from_secs(15),
    };
    let four_minutes = Duration::from_secs(240);
    end_run(&ledger, &run.over, four_minutes, four_minutes, &[]);
    let mut replicas = Vec::new();
    for (i, name) in (0_u64..).zip(["rust-a", "rust-b"]) {
        let locker = LeaseLocker::new(server.client(), "default").with_clock(clock.clone());
        let ledger = ledger.clone();
        let task = lockheed_replica(name.to_owned(), locker, ledger, run.clone(), 10 + i);
        replicas.push(tokio::spawn(task));
    }
    for (i, name) in (0_u64..).zip(["go-a", "go-b"]) {
        let api = Api::namespaced(server.client(), "default");
        let (clock, ledger, config) = (clock.clone(), ledger.clone(), Config::new(name));
        let task = client_go(
            name.to_owned(),
            api,
            clock,
            ledger,
            run.clone(),
            config,
            20 + i,
        );
        replicas.push(tokio::spawn(task));
    }
    for replica in replicas {
        replica.await.unwrap();
    }
    assert_kinds(&ledger, 10, &["rust", "go"]);
    // Watch-fast: a waiting lockheed replica takes over in the same simulated moment, where
    // client-go's contenders would poll up to 2.4 s later.
    let handovers = verdict(&ledger, Duration::from_millis(100));
    assert!(
        !handovers.is_empty(),
        "no release happened while a lockheed replica waited"
    );
}

/// A server where each participant has its own token, so that the request log says who
/// wrote what.
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

/// Notes every version of the Lease's record in the ledger's timeline.
async fn record_history(api: Api<Lease>, ledger: Shared) {
    use futures::StreamExt;
    let watch = kube::runtime::watcher::watch_object(api, LEASE);
    let mut watch = std::pin::pin!(watch);
    while let Some(event) = watch.next().await {
        if let Ok(Some(lease)) = event {
            let spec = lease.spec.unwrap_or_default();
            ledger.note(format!(
                "  lease rv {:?}: holder {:?} renewed {:?} for {:?}",
                lease.metadata.resource_version,
                spec.holder_identity,
                spec.renew_time.map(|t| t.0.to_string()),
                spec.lease_duration_seconds
            ));
        }
    }
}

/// The writes of the Lease, for a failure's message.
fn writes(server: &FakeApiServer) -> String {
    server
        .requests()
        .iter()
        .filter(|r| !matches!(r.verb, Verb::Get | Verb::List | Verb::Watch))
        .map(|r| format!("{:?} {:?} {:?} {}", r.user, r.verb, r.status, r.query))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Waits for the replicas to stop, failing with the timeline if one has not by `deadline`.
async fn join(
    replicas: Vec<tokio::task::JoinHandle<()>>,
    deadline: Instant,
    ledger: &Shared,
    server: &FakeApiServer,
) {
    for (i, replica) in replicas.into_iter().enumerate() {
        match tokio::time::timeout_at(deadline, replica).await {
            Ok(stopped) => stopped.unwrap(),
            Err(_) => {
                let timeline = ledger.0.lock().unwrap().timeline.join("\n");
                panic!("replica {i} did not stop\n{timeline}\n{}", writes(server));
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_lease_manager_joins_them_in_real_time() {
    let server = Arc::new(server_for(&["rust", "go", "klm"]).await);
    let ledger = Shared::default();
    let run = Run {
        over: CancellationToken::new(),
        hold: Duration::from_millis(1500),
        pause: Duration::from_millis(1500),
        lease: Duration::from_secs(3),
    };
    let history = tokio::spawn(record_history(
        Api::namespaced(server.client(), "default"),
        ledger.clone(),
    ));
    let started = Instant::now();
    // kube-lease-manager is the slowest to take a free Lease (it waits for the released
    // record's second, then erases it, then waits up to a second more): it starts first, so
    // that it leads at least once. One replica only: its force release of an expired Lease is
    // a strategic merge patch without a resourceVersion, so two of its replicas that see the
    // same expired Lease both erase it, and the second erases whoever took the Lease in
    // between (one of them, or anyone else): a race of its own, not one of the others'.
    let task = kube_lease_manager(
        "klm".to_owned(),
        Arc::clone(&server),
        ledger.clone(),
        run.clone(),
        50,
    );
    let mut replicas = vec![tokio::spawn(task)];
    let klm_led = async {
        while ledger.0.lock().unwrap().terms.is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), klm_led)
        .await
        .expect("kube-lease-manager takes the new Lease");
    // At least 12 s, until each kind of client has led (25 s at most).
    let kinds = &["rust", "go", "klm"];
    end_run(
        &ledger,
        &run.over,
        Duration::from_secs(12),
        Duration::from_secs(25),
        kinds,
    );
    // One lockheed replica: two would always have one campaigning, and win every race for a
    // free Lease, so that the others would rarely lead.
    let locker = LeaseLocker::new(server.client_for_token("rust"), "default");
    let task = lockheed_replica("rust".to_owned(), locker, ledger.clone(), run.clone(), 30);
    replicas.push(tokio::spawn(task));
    // client-go with leases of 4 s (its renew deadline must exceed 1.2 retry periods of 2 s).
    let go = Config {
        lease_duration: Duration::from_secs(4),
        renew_deadline: Duration::from_secs(3),
        ..Config::new("go")
    };
    let api = Api::namespaced(server.client_for_token("go"), "default");
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let task = client_go("go".to_owned(), api, clock, ledger.clone(), run, go, 40);
    replicas.push(tokio::spawn(task));
    join(
        replicas,
        started + Duration::from_secs(50),
        &ledger,
        &server,
    )
    .await;
    history.abort();
    let (overlaps, timeline) = {
        let ledger = ledger.0.lock().unwrap();
        (ledger.overlaps.clone(), ledger.timeline.join("\n"))
    };
    let writes = writes(&server);
    assert!(overlaps.is_empty(), "{overlaps:?}\n{timeline}\n{writes}");
    assert_kinds(&ledger, 4, kinds);
    // Real time on a loaded machine: a watch delivery is milliseconds; allow a second.
    verdict(&ledger, Duration::from_secs(1));
}

/// A lockheed waiter behind a client-go leader writes nothing to the Lease (its place in the
/// queue would change the Lease's resourceVersion, and client-go up to v0.33 releases with
/// the Lease it last wrote: a 409, and the Lease taken only once it expired). So a release
/// right after the waiter came succeeds, and the waiter leads within one watch event.
/// `tests/interop/release_cost.rs` shows it with the real client-go.
#[tokio::test(start_paused = true)]
async fn a_client_go_release_right_after_a_lockheed_waiter_came_hands_over_at_once() {
    let server = FakeApiServer::start().await.unwrap();
    let clock: Arc<TokioClock> = Arc::new(TokioClock::new());
    let api = Api::<Lease>::namespaced(server.client(), "default");
    let mut go = Elector::new(api, LEASE, Config::new("go-a"), clock.clone());
    assert!(go.acquire(&CancellationToken::new()).await);
    let locker = LeaseLocker::new(server.client(), "default").with_clock(clock.clone());
    let waiter = tokio::spawn(async move {
        let lock = Lock::new(LEASE, locker)
            .with_holder("rust-a")
            .with_duration(Duration::from_secs(15));
        let guard = lock.acquire().await.unwrap();
        (Instant::now(), guard)
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let released = Instant::now();
    assert!(go.release().await, "the waiter left the Lease alone");
    let (led, guard) = waiter.await.unwrap();
    assert!(
        led - released < Duration::from_secs(1),
        "{:?}",
        led - released
    );
    guard.release().await.unwrap();
}
