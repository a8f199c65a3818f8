//! Two client-go replicas (`interop/leaderelection`, client-go v0.37.2) and two `LeaderElection`
//! replicas on one Lease, for at least a minute of graceful stops (SIGTERM) and crashes
//! (SIGKILL): never two leaders, fencing tokens never backwards across Go terms, the failover
//! measured by direction, and `preferredHolder` handovers both ways.
//!
//! Each step picks the direction and the ending with the fewest samples so far (ties at random,
//! seeded): the replicas that may succeed are those of the chosen kind, so the others (but the
//! leader) are stopped gracefully, and the missing ones started; once each has seen the leader,
//! the leader is stopped or crashed, and the failover is the time from the signal to the
//! successor's first moment as leader. `LOCKHEED_INTEROP_SECONDS` (default 60) and
//! `LOCKHEED_INTEROP_SAMPLES` (default 2 per direction and ending) lengthen it, for
//! BENCHMARKS.md.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::Api;
use kube::api::PostParams;
use lockheed::clock::SystemClock;
use lockheed::testing::TestCluster;

use super::peers::{self, Kind, Log, Replica, Spec};

const LEASE: &str = "fleet";
/// The Lease's duration for every replica; client-go's renew deadline and retry period below
/// keep client-go's proportions (15 s, 10 s, 2 s) within a test's time.
const LEASE_SECONDS: u64 = 4;
const RENEW_DEADLINE: Duration = Duration::from_secs(3);
const RETRY_PERIOD: Duration = Duration::from_secs(1);
const PROGRAM: &str = "leaderelection-v0.37.2";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Ending {
    Graceful,
    Crash,
}

struct Fleet {
    log: Log,
    logs: tempfile::TempDir,
    namespace: String,
    running: BTreeMap<String, Replica>,
    /// Since when each running replica's events count (its start).
    since: BTreeMap<String, usize>,
    deaths: Vec<(String, DateTime<Utc>)>,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("events of the fleet (namespace {}):", self.namespace);
            for e in self.log.events() {
                eprintln!("{e:?}");
            }
        }
    }
}

fn kind(id: &str) -> Kind {
    if id.starts_with("client-go") {
        Kind::ClientGo
    } else {
        Kind::Lockheed
    }
}

const IDS: [&str; 4] = ["client-go-1", "client-go-2", "lockheed-1", "lockheed-2"];

impl Fleet {
    fn spec(&self, id: &str, coordinated: bool) -> Spec {
        Spec {
            id: id.into(),
            kind: kind(id),
            program: PROGRAM.into(),
            namespace: self.namespace.clone(),
            lease: LEASE.into(),
            lease_seconds: LEASE_SECONDS,
            renew_deadline: RENEW_DEADLINE,
            retry_period: RETRY_PERIOD,
            coordinated,
        }
    }

    fn start(&mut self, id: &str, coordinated: bool) {
        if self.running.contains_key(id) {
            return;
        }
        self.since.insert(id.into(), self.log.len());
        let spec = self.spec(id, coordinated);
        let replica = peers::start(&spec, &self.log, self.logs.path());
        self.running.insert(id.into(), replica);
    }

    async fn stop(&mut self, id: &str) {
        if let Some(replica) = self.running.remove(id) {
            replica.stop().await;
        }
    }

    async fn crash(&mut self, id: &str) {
        if let Some(replica) = self.running.remove(id) {
            let gone = replica.crash().await;
            self.deaths.push((id.into(), gone));
        }
    }

    /// Waits until `id` (started at event `since`) has seen `leader` lead.
    async fn seen(&self, id: &str, leader: &str) {
        let from = self.since[id];
        self.log
            .wait(from, Duration::from_secs(30), |e| {
                e.who == id
                    && ((e.event == "new_leader" && e.leader.as_deref() == Some(leader))
                        || (e.event == "started_leading" && id == leader))
            })
            .await
            .unwrap_or_else(|| panic!("{id} never saw {leader} lead"));
    }

    /// The first term started after `after` (event index and time), by one of `by`.
    async fn next_leader(
        &self,
        from: usize,
        after: DateTime<Utc>,
        by: &[String],
    ) -> (String, DateTime<Utc>) {
        let (_, e) = self
            .log
            .wait(from, Duration::from_secs(40), |e| {
                e.event == "started_leading" && e.at >= after
            })
            .await
            .unwrap_or_else(|| panic!("nobody led within 40 s after {after} (waiting for {by:?})"));
        assert!(by.contains(&e.who), "{} led, expected one of {by:?}", e.who);
        (e.who, e.at)
    }

    /// Runs exactly the replicas of `wanted` (started plain, stopping the others gracefully).
    async fn only(&mut self, wanted: &[String]) {
        let running: Vec<String> = self.running.keys().cloned().collect();
        for id in running {
            if !wanted.contains(&id) {
                self.stop(&id).await;
            }
        }
        for id in wanted {
            self.start(id, false);
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    // Nearest rank.
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Sets the Lease's `preferredHolder` (and `strategy`) as Kubernetes' coordinated leader
/// election controller does: a compare-and-swap on what was read.
async fn prefer(api: &Api<Lease>, holder: &str) {
    loop {
        let mut lease = api.get(LEASE).await.unwrap();
        let spec = lease.spec.get_or_insert_with(Default::default);
        spec.preferred_holder = Some(holder.into());
        spec.strategy = Some("OldestEmulationVersion".into());
        match api.replace(LEASE, &PostParams::default(), &lease).await {
            Ok(_) => return,
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => panic!("setting preferredHolder: {e}"),
        }
    }
}

/// Gives the (free) Lease to `holder`, as the coordinated leader election controller elects.
async fn elect(api: &Api<Lease>, holder: &str) {
    loop {
        let mut lease = api.get(LEASE).await.unwrap();
        let spec = lease.spec.get_or_insert_with(Default::default);
        assert_eq!(
            spec.holder_identity.as_deref().unwrap_or(""),
            "",
            "the Lease is free"
        );
        let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
        spec.holder_identity = Some(holder.into());
        spec.lease_duration_seconds = Some(i32::try_from(LEASE_SECONDS).unwrap());
        spec.acquire_time = Some(now.clone());
        spec.renew_time = Some(now);
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        spec.strategy = Some("OldestEmulationVersion".into());
        spec.preferred_holder = None;
        match api.replace(LEASE, &PostParams::default(), &lease).await {
            Ok(_) => return,
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => panic!("electing {holder}: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_go_and_lockheed_replicas_share_a_lease_through_stops_and_crashes() {
    if !peers::control_plane("client_go_and_lockheed_replicas_share_a_lease") {
        return;
    }
    peers::go_bin_dir();
    let cluster = TestCluster::real().await.unwrap();
    cluster.record_commits(Arc::new(SystemClock)).await.unwrap();
    let api = Api::<Lease>::namespaced(cluster.client(), cluster.namespace());
    let seed = env_number("LOCKHEED_INTEROP_SEED", fastrand::u64(..));
    let mut rng = fastrand::Rng::with_seed(seed);
    let seconds = env_number("LOCKHEED_INTEROP_SECONDS", 60);
    let wanted = usize::try_from(env_number("LOCKHEED_INTEROP_SAMPLES", 2)).unwrap();
    eprintln!("lease fleet: seed {seed}, at least {seconds} s, {wanted} samples a cell");
    let mut fleet = Fleet {
        log: Log::new(),
        logs: tempfile::tempdir().unwrap(),
        namespace: cluster.namespace().to_owned(),
        running: BTreeMap::new(),
        since: BTreeMap::new(),
        deaths: Vec::new(),
    };
    let begin = tokio::time::Instant::now();

    // Phase 1: failovers by direction and ending.
    fleet.start("lockheed-1", false);
    let (mut leader, _) = fleet
        .next_leader(0, DateTime::<Utc>::MIN_UTC, &["lockheed-1".into()])
        .await;
    let mut samples: BTreeMap<(Kind, Kind, Ending), Vec<Duration>> = BTreeMap::new();
    let cells = |from: Kind| {
        [Kind::ClientGo, Kind::Lockheed]
            .into_iter()
            .flat_map(move |to| [(from, to, Ending::Graceful), (from, to, Ending::Crash)])
    };
    loop {
        let filled = [Kind::ClientGo, Kind::Lockheed]
            .into_iter()
            .flat_map(cells)
            .all(|c| samples.get(&c).map_or(0, Vec::len) >= wanted);
        if filled && begin.elapsed() >= Duration::from_secs(seconds) {
            break;
        }
        assert!(
            begin.elapsed() < Duration::from_secs(seconds + 300),
            "not every direction was measured {wanted} times: {samples:?}"
        );
        let mut choices: Vec<_> = cells(kind(&leader)).collect();
        rng.shuffle(&mut choices);
        let (from, to, ending) = choices
            .into_iter()
            .min_by_key(|c| samples.get(c).map_or(0, Vec::len))
            .unwrap();
        let pool: Vec<String> = IDS
            .iter()
            .filter(|id| kind(id) == to && **id != leader)
            .map(|id| (*id).to_owned())
            .collect();
        let mut keep = pool.clone();
        keep.push(leader.clone());
        fleet.only(&keep).await;
        for id in &pool {
            fleet.seen(id, &leader).await;
        }
        tokio::time::sleep(Duration::from_millis(rng.u64(0..1000))).await;
        let from_event = fleet.log.len();
        let signalled = Utc::now();
        match ending {
            Ending::Graceful => fleet.stop(&leader).await,
            Ending::Crash => fleet.crash(&leader).await,
        }
        let (next, led) = fleet.next_leader(from_event, signalled, &pool).await;
        let failover = (led - signalled).to_std().unwrap_or_default();
        eprintln!("{from} -> {to} ({ending:?}): {leader} -> {next} in {failover:?}");
        samples
            .entry((from, to, ending))
            .or_default()
            .push(failover);
        leader = next;
    }

    // Phase 2: preferredHolder, lockheed -> client-go. A lockheed leader whose Lease prefers a
    // client-go replica gives it up at its next renewal and releases; the other lockheed
    // replica lets the preferred one come first; client-go takes the free Lease at its next
    // retry.
    if kind(&leader) != Kind::Lockheed {
        let pool = vec!["lockheed-1".to_owned(), "lockheed-2".to_owned()];
        let mut keep = pool.clone();
        keep.push(leader.clone());
        fleet.only(&keep).await;
        for id in &pool {
            fleet.seen(id, &leader).await;
        }
        let from_event = fleet.log.len();
        let signalled = Utc::now();
        fleet.stop(&leader).await;
        leader = fleet.next_leader(from_event, signalled, &pool).await.0;
    }
    let other = if leader == "lockheed-1" {
        "lockheed-2"
    } else {
        "lockheed-1"
    };
    fleet
        .only(&[leader.clone(), other.to_owned(), "client-go-1".to_owned()])
        .await;
    fleet.seen(other, &leader).await;
    fleet.seen("client-go-1", &leader).await;
    let from_event = fleet.log.len();
    let asked = Utc::now();
    prefer(&api, "client-go-1").await;
    let (_, led) = fleet
        .next_leader(from_event, asked, &["client-go-1".to_owned()])
        .await;
    let to_client_go = (led - asked).to_std().unwrap_or_default();
    eprintln!("preferredHolder {leader} -> client-go-1: {to_client_go:?}");

    // Phase 3: preferredHolder, client-go -> lockheed. client-go honours preferredHolder only
    // in coordinated mode, where it leads only a Lease elected to it: every replica steps down,
    // the test elects a coordinated client-go replica as the coordinated leader election
    // controller would, and then prefers a lockheed replica. client-go stops renewing, gives
    // up after its renew deadline and releases; the preferred lockheed replica leads.
    fleet.only(&[]).await;
    elect(&api, "client-go-2").await;
    fleet.start("client-go-2", true);
    fleet
        .next_leader(
            fleet.since["client-go-2"],
            DateTime::<Utc>::MIN_UTC,
            &["client-go-2".to_owned()],
        )
        .await;
    // Only the preferred lockheed replica stands by: client-go's release writes a record
    // without `preferredHolder` (LeaderElectionRecordToLeaseSpec drops it), so the preference
    // ends with the release, and another standby could take the Lease first. In a cluster, the
    // coordinated leader election controller elects the next holder then; this test does not
    // emulate it.
    fleet.start("lockheed-2", false);
    fleet.seen("lockheed-2", "client-go-2").await;
    let from_event = fleet.log.len();
    let asked = Utc::now();
    prefer(&api, "lockheed-2").await;
    let (_, led) = fleet
        .next_leader(from_event, asked, &["lockheed-2".to_owned()])
        .await;
    let to_lockheed = (led - asked).to_std().unwrap_or_default();
    eprintln!("preferredHolder client-go-2 -> lockheed-2: {to_lockheed:?}");

    // Everyone steps down: nothing is left held.
    fleet.only(&[]).await;
    let end = Utc::now();
    let lease = api.get(LEASE).await.unwrap();
    let holder = lease
        .spec
        .and_then(|s| s.holder_identity)
        .unwrap_or_default();
    assert_eq!(holder, "", "nothing is left held");

    // Never two leaders.
    let events = fleet.log.events();
    let terms = peers::terms(&events, &fleet.deaths, end);
    let overlaps = peers::overlaps(&terms);
    // Every graceful release of a client-go leader was written (no conflict).
    let failed: Vec<_> = events
        .iter()
        .filter(|e| e.event == "released" && e.ok != Some(true))
        .collect();
    // Every replica stopped cleanly (a lockheed replica settles its background work first).
    let unclean: Vec<_> = events
        .iter()
        .filter(|e| e.event == "unsettled" || e.event == "error")
        .collect();
    // Fencing tokens: lockheed's terms in increasing order, and the Lease's counter never
    // backwards across every commit (client-go's writes included).
    let mut token_faults = Vec::new();
    let mut last = 0;
    for term in terms.iter().filter(|t| kind(&t.who) == Kind::Lockheed) {
        let token = term.token.expect("lockheed terms have tokens");
        if token <= last {
            token_faults.push(format!("{term:?} after token {last}"));
        }
        last = token;
    }
    let commits: Vec<_> = cluster
        .commits()
        .into_iter()
        .filter(|c| c.resource == "leases" && c.name == LEASE)
        .collect();
    let mut counter = 0;
    for commit in &commits {
        let value = commit.object["metadata"]["annotations"][lockheed::lease::FENCING_ANNOTATION]
            .as_str()
            .map_or(0, |v| v.parse::<u64>().unwrap());
        if value < counter {
            token_faults.push(format!(
                "revision {}: counter {value} after {counter}",
                commit.revision
            ));
        }
        counter = counter.max(value);
    }

    eprintln!(
        "lease fleet: {} terms ({} lockheed, {} client-go), {} commits of the Lease, {} overlaps, \
         {} failed releases, {} token faults, {} commit gaps, {:?}",
        terms.len(),
        terms
            .iter()
            .filter(|t| kind(&t.who) == Kind::Lockheed)
            .count(),
        terms
            .iter()
            .filter(|t| kind(&t.who) == Kind::ClientGo)
            .count(),
        commits.len(),
        overlaps.len(),
        failed.len(),
        token_faults.len(),
        cluster.commit_gaps(),
        begin.elapsed(),
    );
    eprintln!("| from -> to | ending | n | p50 | p99 | max |");
    for ((from, to, ending), list) in &mut samples {
        list.sort();
        eprintln!(
            "| {from} -> {to} | {ending:?} | {} | {:?} | {:?} | {:?} |",
            list.len(),
            percentile(list, 50.0),
            percentile(list, 99.0),
            list.last().unwrap()
        );
    }
    eprintln!("| preferredHolder lockheed -> client-go | | 1 | {to_client_go:?} |");
    eprintln!("| preferredHolder client-go -> lockheed | | 1 | {to_lockheed:?} |");
    assert!(overlaps.is_empty(), "two leaders at once: {overlaps:#?}");
    assert!(failed.is_empty(), "client-go releases failed: {failed:#?}");
    assert!(
        unclean.is_empty(),
        "replicas did not stop cleanly: {unclean:#?}"
    );
    assert!(
        token_faults.is_empty(),
        "fencing tokens went backwards: {token_faults:#?}"
    );
    assert_eq!(cluster.commit_gaps(), 0, "the commit log is complete");
    // A graceful stop hands over within a release and one watch event (lockheed successors)
    // or one retry period (client-go successors polling), never a lease duration.
    let bound = Duration::from_secs(LEASE_SECONDS);
    for ((from, to, ending), list) in &samples {
        if *ending == Ending::Graceful {
            let worst = *list.last().unwrap();
            assert!(
                worst < bound,
                "{from} -> {to} after a graceful stop took {worst:?}"
            );
        }
    }
}
