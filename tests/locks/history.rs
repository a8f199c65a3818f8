//! The history checker under chaos: 16 processes (each its own `kube::Client`) run critical
//! sections on one lock while faults hit them at random, seeded: latency of 0 to 50 ms on
//! every request, about 5% failing with 500 or 503 (half of them after the write was
//! committed), 2% answered 429 with `Retry-After`, 1% of connections reset (half after
//! commit), watches closed, the history compacted, and short blackholes of one client at a
//! time (some longer than the lease). Each section records its fencing token, start and end;
//! the server keeps its commit log; `lockheed::testing::history` checks both (see its docs).
//!
//! The CI-sized runs below take a few hundred sections per kind on Tokio's paused clock. The
//! long run is one command (its figures are in the report it prints):
//!
//! ```sh
//! LOCKHEED_HISTORY_SECTIONS=35000 LOCKHEED_HISTORY_SEED=7 \
//!     cargo test --release --all-features --test locks -- --ignored --nocapture long_history
//! ```
//!
//! `LOCKHEED_HISTORY_SECTIONS` is the number of sections per kind (mutex, semaphore of 3,
//! read/write lock); `LOCKHEED_HISTORY_SEED` the seed (random and printed when unset). The
//! seed decides every fault and every contender's pauses; the order in which the kernel
//! delivers loopback packets is not seeded, so a run with the same seed is close to, not
//! exactly, the one before.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lockheed::clock::TokioClock;
use lockheed::testing::history::{History, Report, Section};
use lockheed::testing::{FakeApiServer, Fault};
use lockheed::{Access, KubeLocker, Lock, Locker};

const LOCK: &str = "history";
const CONTENDERS: usize = 16;
/// The lease of every contender: long enough that an unlucky run of faults rarely loses it,
/// short enough that some blackholes outlast it.
const LEASE: Duration = Duration::from_secs(10);
const MS: Duration = Duration::from_millis(1);

/// Which lock the contenders share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Mutex,
    Semaphore(u32),
    ReadWrite,
}

impl Kind {
    fn history(self) -> History {
        match self {
            Self::Mutex => History::mutex("default", LOCK),
            Self::Semaphore(max) => History::semaphore("default", LOCK, max),
            Self::ReadWrite => History::read_write("default", LOCK),
        }
    }

    /// The lock contender `holder` takes next (a reader or a writer, for a read/write lock).
    fn lock(
        self,
        locker: KubeLocker,
        holder: &str,
        rng: &mut fastrand::Rng,
    ) -> (Lock<KubeLocker>, bool) {
        let lock = Lock::new(LOCK, locker)
            .with_holder(holder)
            .with_duration(LEASE);
        match self {
            Self::Mutex => (lock, false),
            Self::Semaphore(max) => (lock.with_max_holders(max), false),
            Self::ReadWrite if rng.u8(..10) < 7 => (lock.with_access(Access::Shared), true),
            Self::ReadWrite => (lock.with_access(Access::Exclusive), false),
        }
    }
}

/// What a run did, for its report.
struct Figures {
    kind: Kind,
    seed: u64,
    report: Report,
    requests: u64,
    faults: BTreeMap<String, u64>,
    /// Sections ended early because `lost()` fired.
    lost: u64,
    /// Guards that were lost before their section could start (it never started).
    lost_before_start: u64,
    /// Acquires that gave up (timeout) or failed.
    failed_acquires: u64,
}

impl fmt::Display for Figures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sections = self.report.sections.max(1) as f64;
        writeln!(f, "history of a {:?}, seed {}:", self.kind, self.seed)?;
        writeln!(
            f,
            "  {} sections ({} cut short by lost(), {} lost before they started), {} failed acquires",
            self.report.sections, self.lost, self.lost_before_start, self.failed_acquires
        )?;
        writeln!(
            f,
            "  {} commits checked, {} violations",
            self.report.commits,
            self.report.violations.len()
        )?;
        writeln!(
            f,
            "  {} requests, {:.2} per section",
            self.requests,
            self.requests as f64 / sections
        )?;
        let faults: Vec<String> = self
            .faults
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        write!(f, "  faults: {}", faults.join(", "))
    }
}

/// The faults every request may meet, each with its seeded chance.
fn inject_faults(server: &FakeApiServer) {
    server.inject(Fault::latency_between(Duration::ZERO, 50 * MS).always());
    for (fault, chance) in [
        (Fault::status(500), 0.015),
        (Fault::status(500).after_commit(), 0.01),
        (Fault::status(503), 0.01),
        (Fault::status(503).after_commit(), 0.015),
        (Fault::too_many_requests(Duration::from_secs(1)), 0.02),
        (Fault::reset_connection(), 0.005),
        (Fault::reset_connection().after_commit(), 0.005),
    ] {
        server.inject(fault.always().probability(chance));
    }
}

/// Closes watches, compacts the history and cuts one client off at a time, at random, until
/// `stop`. One cut in four is of a holder of the lock, half of those for longer than its
/// lease: it must lose the lock before its lease ends, and its late writes must not harm.
async fn chaos(
    server: Arc<FakeApiServer>,
    locker: KubeLocker,
    seed: u64,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut rng = fastrand::Rng::with_seed(seed ^ 0xC4A0_5EED);
    loop {
        let pause = Duration::from_millis(rng.u64(200..2000));
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(pause) => {}
        }
        match rng.u8(..20) {
            0..=3 => server.close_watches(),
            4 => server.compact(),
            5..=11 => {
                let cut = Duration::from_millis(rng.u64(50..3000));
                server.blackhole_client_for(&holder(rng.usize(..CONTENDERS)), cut);
            }
            12..=13 => {
                let holders = match locker.get(LOCK).await {
                    Ok(Some(info)) => info.holders,
                    _ => continue,
                };
                if let Some(victim) = holders.get(rng.usize(..holders.len().max(1))) {
                    let cut = if rng.bool() {
                        LEASE + Duration::from_millis(rng.u64(0..5000))
                    } else {
                        Duration::from_millis(rng.u64(50..3000))
                    };
                    server.blackhole_client_for(&victim.id, cut);
                }
            }
            _ => {}
        }
    }
}

fn holder(i: usize) -> String {
    format!("c{i:02}")
}

/// Counters shared by the contenders.
#[derive(Default)]
struct Tally {
    started: AtomicUsize,
    lost: AtomicU64,
    lost_before_start: AtomicU64,
    failed_acquires: AtomicU64,
    sections: Mutex<Vec<Section>>,
}

/// One contender: takes the lock, runs a section of 1 to 200 ms (one in forty: 2 to 25 s),
/// cut short if `lost()` fires, releases it, pauses up to 100 ms; until `target` sections
/// have started.
async fn contend(
    kind: Kind,
    locker: KubeLocker,
    name: String,
    seed: u64,
    target: usize,
    tally: Arc<Tally>,
) {
    let mut rng = fastrand::Rng::with_seed(seed);
    while tally.started.load(Ordering::SeqCst) < target {
        tokio::time::sleep(Duration::from_millis(rng.u64(0..=100))).await;
        let (lock, shared) = kind.lock(locker.clone(), &name, &mut rng);
        let guard = match lock.acquire_timeout(Duration::from_secs(60)).await {
            Ok(guard) => guard,
            Err(_) => {
                tally.failed_acquires.fetch_add(1, Ordering::SeqCst);
                continue;
            }
        };
        // A guard handed over too late to use (its lease about to end) is lost already: a
        // careful holder checks before it touches anything.
        if guard.is_lost() {
            tally.lost_before_start.fetch_add(1, Ordering::SeqCst);
            let _ = guard.release().await;
            continue;
        }
        tally.started.fetch_add(1, Ordering::SeqCst);
        let start = locker.now();
        // One section in forty outlasts the lease: renewals must keep it, and a blackhole
        // must make it lose the lock in time.
        let work = if rng.u8(..40) == 0 {
            Duration::from_millis(rng.u64(2_000..=25_000))
        } else {
            Duration::from_millis(rng.u64(1..=200))
        };
        let work = tokio::time::sleep(work);
        tokio::select! {
            biased;
            () = guard.lost() => { tally.lost.fetch_add(1, Ordering::SeqCst); }
            () = work => {}
        }
        let section = Section::new(&name, guard.token(), start, locker.now()).shared(shared);
        tally.sections.lock().unwrap().push(section);
        // A lost lock's release fails with Lost: nothing to do about it.
        let _ = guard.release().await;
    }
}

/// Runs `sections` sections of `CONTENDERS` contenders on a lock of `kind` under chaos, and
/// checks the history.
async fn run(kind: Kind, sections: usize, seed: u64) -> Figures {
    let clock = Arc::new(TokioClock::new());
    let server = Arc::new(
        FakeApiServer::builder()
            .seed(seed)
            .clock(clock.clone())
            .commit_log_unbounded()
            .start()
            .await
            .unwrap(),
    );
    inject_faults(&server);
    let stop = tokio_util::sync::CancellationToken::new();
    let admin = KubeLocker::new(server.client(), "default").with_clock(clock.clone());
    let chaos = tokio::spawn(chaos(Arc::clone(&server), admin, seed, stop.clone()));
    let tally = Arc::new(Tally::default());
    let contenders: Vec<_> = (0..CONTENDERS)
        .map(|i| {
            let locker = KubeLocker::new(server.client_for_token(&holder(i)), "default")
                .with_clock(clock.clone());
            let seed = seed.wrapping_add(i as u64 + 1);
            tokio::spawn(contend(
                kind,
                locker,
                holder(i),
                seed,
                sections,
                Arc::clone(&tally),
            ))
        })
        .collect();
    let mut history = kind.history();
    // Check the history as it comes, so that the commit log stays small however long the run.
    let mut done = futures::future::join_all(contenders);
    loop {
        tokio::select! {
            finished = &mut done => {
                for contender in finished {
                    contender.unwrap();
                }
                break;
            }
            () = tokio::time::sleep(Duration::from_secs(5)) => history.commits(server.drain_commits()),
        }
    }
    stop.cancel();
    chaos.await.unwrap();
    server.heal();
    server.clear_faults();
    // Nothing is left behind: once the background clean-ups ran (or, where faults defeated
    // them, the lease and queue entries ended by themselves), nobody holds or waits.
    tokio::time::sleep(LEASE + Duration::from_secs(3)).await;
    let info = KubeLocker::new(server.client(), "default")
        .with_clock(clock.clone())
        .get(LOCK)
        .await
        .unwrap()
        .expect("the lock exists");
    assert!(!info.is_held(), "a holder is left behind: {info:?}");
    assert!(info.waiters.is_empty(), "a waiter is left behind: {info:?}");
    history.commits(server.drain_commits());
    for section in std::mem::take(&mut *tally.sections.lock().unwrap()) {
        history.section(section);
    }
    Figures {
        kind,
        seed,
        report: history.finish(),
        requests: server.counts().total(),
        faults: server.faults_injected(),
        lost: tally.lost.load(Ordering::SeqCst),
        lost_before_start: tally.lost_before_start.load(Ordering::SeqCst),
        failed_acquires: tally.failed_acquires.load(Ordering::SeqCst),
    }
}

/// `LOCKHEED_HISTORY_SEED`, or `default`.
fn seed(default: u64) -> u64 {
    std::env::var("LOCKHEED_HISTORY_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

async fn checked(kind: Kind, sections: usize, seed: u64) -> Figures {
    let figures = run(kind, sections, seed).await;
    println!("{figures}");
    figures.report.assert_valid();
    assert!(figures.report.sections >= sections, "{figures}");
    figures
}

/// The CI-sized runs: a fixed seed, so that CI checks the same history each time.
#[tokio::test(start_paused = true)]
async fn a_mutex_history_under_chaos_is_valid() {
    let figures = checked(Kind::Mutex, 300, seed(1)).await;
    // The chaos did happen.
    for kind in [
        "status 500",
        "status 503 after commit",
        "status 429",
        "client blackhole",
        "closed watches",
    ] {
        assert!(
            figures.faults.get(kind).copied().unwrap_or(0) > 0,
            "no {kind}: {figures}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_semaphore_history_under_chaos_is_valid() {
    checked(Kind::Semaphore(3), 300, seed(2)).await;
}

#[tokio::test(start_paused = true)]
async fn a_read_write_history_under_chaos_is_valid() {
    checked(Kind::ReadWrite, 300, seed(3)).await;
}

/// The long run (see the module docs for the command).
#[tokio::test(start_paused = true)]
#[ignore = "long: run with --ignored, --release and LOCKHEED_HISTORY_SECTIONS"]
async fn long_history() {
    let sections = std::env::var("LOCKHEED_HISTORY_SECTIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(35_000);
    let seed = seed(fastrand::u64(..));
    println!("long history run: seed {seed}, {sections} sections per kind");
    let mut total = 0;
    for (i, kind) in [Kind::Mutex, Kind::Semaphore(3), Kind::ReadWrite]
        .into_iter()
        .enumerate()
    {
        total += checked(kind, sections, seed.wrapping_add(i as u64))
            .await
            .report
            .sections;
    }
    println!("long history run: seed {seed}, {total} sections in all, no violations");
}

/// The checker catches a client that breaks the rules: Mallory writes herself a lease beside
/// Alice's live one (as a client with a broken acquire rule would) and runs her section
/// during Alice's. The commit log shows a state with two live holders and a transition no
/// rule explains; the sections overlap.
#[tokio::test(start_paused = true)]
async fn the_checker_catches_a_client_that_breaks_the_rules() {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::{Api, PostParams};

    let clock = Arc::new(TokioClock::new());
    let server = FakeApiServer::builder()
        .clock(clock.clone())
        .commit_log(1000)
        .start()
        .await
        .unwrap();
    let alice =
        KubeLocker::new(server.client_for_token("alice"), "default").with_clock(clock.clone());
    let guard = Lock::new(LOCK, alice)
        .with_holder("alice")
        .acquire()
        .await
        .unwrap();
    let start = lockheed::clock::Clock::now(clock.as_ref());

    let api: Api<ConfigMap> = Api::default_namespaced(server.client_for_token("mallory"));
    let mut cm = api.get(&format!("lockheed-{LOCK}")).await.unwrap();
    let data = cm.data.as_mut().unwrap();
    let mut state: serde_json::Value = serde_json::from_str(&data["lock"]).unwrap();
    let token = state["fencingToken"].as_u64().unwrap() + 1;
    let expires = start + chrono::Duration::seconds(10);
    state["leases"]["mallory"] = serde_json::json!({
        "instanceID": "mallory", "expires": expires.to_rfc3339(), "fencingToken": token,
    });
    state["fencingToken"] = token.into();
    data.insert("lock".into(), state.to_string());
    api.replace(&format!("lockheed-{LOCK}"), &PostParams::default(), &cm)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let end = lockheed::clock::Clock::now(clock.as_ref());

    let mut history = History::mutex("default", LOCK);
    history.section(Section::new("alice", guard.token(), start, end));
    history.section(Section::new(
        "mallory",
        token,
        start + chrono::Duration::milliseconds(1),
        end,
    ));
    history.commits(server.commits());
    let report = history.finish();
    let found: Vec<String> = report.violations.iter().map(ToString::to_string).collect();
    assert!(
        found
            .iter()
            .any(|v| v.contains("holds alice, mallory live")),
        "{found:#?}"
    );
    assert!(
        found
            .iter()
            .any(|v| v.contains("by mallory: no rule explains it")),
        "{found:#?}"
    );
    assert!(
        found
            .iter()
            .any(|v| v.starts_with("overlap: the section of mallory")),
        "{found:#?}"
    );
    drop(guard);
}
