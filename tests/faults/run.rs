//! One fault scenario: contender processes on a lock of a fresh namespace, a fault while they
//! work, and the history checked afterwards.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use lockheed::clock::{Clock, SystemClock};
use lockheed::testing::TestCluster;
use lockheed::testing::history::Report;
use lockheed::{KubeLocker, Locker};

use crate::contender::{Contender, Event, Kind, Spec};
use crate::control::ControlPlane;

/// The lock every scenario's contenders share.
pub const LOCK: &str = "faults";

/// How many processes contend.
pub const CONTENDERS: usize = 8;

/// The contenders' lease: short, so that faults outlast it, and the runs stay short.
pub const LEASE: Duration = Duration::from_secs(4);

/// Sections to see before the fault (the contenders are at work), and after it (work has
/// resumed).
const SECTIONS_BEFORE: usize = 10;
const SECTIONS_AFTER: usize = 10;

/// How long the contenders may take to get to work, or back to work after the fault.
const WORK_TIMEOUT: Duration = Duration::from_secs(60);

/// What one run did.
pub struct Figures {
    pub scenario: &'static str,
    pub report: Report,
    /// When the fault began and ended (the control request that ended it returned).
    pub fault: (DateTime<Utc>, DateTime<Utc>),
    /// Sections cut short by `lost()`.
    pub lost: usize,
    /// Guards lost before their section could start.
    pub lost_before_start: usize,
    /// Acquires that gave up after the contenders' timeout.
    pub timeouts: usize,
    /// Acquires that failed otherwise.
    pub failed: usize,
    /// Releases that failed otherwise than with `Lost`.
    pub failed_releases: usize,
    /// From the end of the fault until a section runs (zero when one ran through it).
    pub resumed_after: Duration,
    /// The longest time around the fault when no section ran.
    pub idle: Duration,
    /// Commits the watches of the commit log lost.
    pub gaps: u64,
    /// How long before it was seen each commit of the lock can have been made: the median,
    /// and the longest, in milliseconds.
    pub window: (i64, i64),
    /// What failed (acquires other than by timeout, releases), with when.
    pub errors: Vec<String>,
}

impl fmt::Display for Figures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (start, end) = self.fault;
        write!(
            f,
            "{}: {} sections ({} cut short by lost(), {} lost before they started), {} commits \
             checked, {} violations, {} commit gaps; {} acquires timed out, {} failed, {} \
             releases failed; fault {:.1} s, work resumed {:.2} s after it ended, the longest \
             time without a section around it {:.1} s; commit times known within {} ms \
             (median), {} ms (longest)",
            self.scenario,
            self.report.sections,
            self.lost,
            self.lost_before_start,
            self.report.commits,
            self.report.violations.len(),
            self.gaps,
            self.timeouts,
            self.failed,
            self.failed_releases,
            seconds(end - start),
            self.resumed_after.as_secs_f64(),
            self.idle.as_secs_f64(),
            self.window.0,
            self.window.1,
        )?;
        for error in &self.errors {
            write!(f, "\n  {error}")?;
        }
        Ok(())
    }
}

fn seconds(d: chrono::Duration) -> f64 {
    d.to_std().unwrap_or_default().as_secs_f64()
}

/// The events of every contender.
type Events = Arc<Mutex<Vec<Event>>>;

fn sections_started_after(events: &Events, after: DateTime<Utc>) -> usize {
    events
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .filter(|e| matches!(e, Event::Started { start, .. } if *start >= after))
        .count()
}

/// Waits until a section of one of `holders` that is to outlast a lease has run for
/// `for_at_least`, so that the fault meets a holder that must renew (or lose the lock).
async fn wait_for_a_long_section(events: &Events, holders: &[String], for_at_least: Duration) {
    let running_long = || {
        let events = events.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Utc::now();
        events.iter().any(|e| match e {
            Event::Started {
                holder,
                token,
                start,
                planned_ms,
            } => {
                let planned = Duration::from_millis(*planned_ms);
                let ran = (now - *start).to_std().unwrap_or_default();
                let ended = events.iter().any(|e| {
                    matches!(e, Event::Section { holder: h, token: t, .. } if h == holder && t == token)
                });
                planned >= LEASE && ran >= for_at_least && !ended && holders.contains(holder)
            }
            _ => false,
        })
    };
    let waited = tokio::time::timeout(WORK_TIMEOUT, async {
        while !running_long() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "no long section in {WORK_TIMEOUT:?}");
}

/// Waits until `count` sections started after `after`.
async fn wait_for_work(events: &Events, after: DateTime<Utc>, count: usize, when: &str) {
    let waited = tokio::time::timeout(WORK_TIMEOUT, async {
        while sections_started_after(events, after) < count {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(
        waited.is_ok(),
        "{when}: only {} sections in {WORK_TIMEOUT:?}",
        sections_started_after(events, after)
    );
}

/// Who contends.
#[derive(Debug, Clone, Copy)]
pub struct Contenders {
    /// The lock they share.
    pub kind: Kind,
    /// How many processes.
    pub count: usize,
    /// How many of them are careless ([`Spec::careless`]): the first ones.
    pub careless: usize,
}

impl Contenders {
    /// [`CONTENDERS`] processes, all careful, on a lock of `kind`.
    pub fn careful(kind: Kind) -> Self {
        Self {
            kind,
            count: CONTENDERS,
            careless: 0,
        }
    }
}

/// Runs `scenario`: processes contend for a lock in a fresh namespace; once they are at work
/// and one of them (a careless one, if any) is half a second into a section that is to
/// outlast its lease, `fault` runs; once work has resumed, they stop, and the history (their
/// sections and the namespace's commits) is checked.
pub async fn run(
    scenario: &'static str,
    contenders: Contenders,
    control: &ControlPlane,
    fault: impl AsyncFnOnce(&ControlPlane),
) -> Figures {
    let kind = contenders.kind;
    let clock = Arc::new(SystemClock);
    let cluster = TestCluster::real()
        .await
        .expect("a namespace on the real cluster");
    cluster
        .record_commits(clock.clone())
        .await
        .expect("the commit log is recorded");
    let dir = tempfile::tempdir().expect("a temporary directory");
    let kubeconfig = dir.path().join("kubeconfig");
    cluster
        .write_kubeconfig(&kubeconfig)
        .expect("the kubeconfig is written");
    let events = Events::default();
    let began = clock.now();
    let holders: Vec<String> = (0..contenders.count).map(|i| format!("p{i}")).collect();
    let specs: Vec<Spec> = holders
        .iter()
        .enumerate()
        .map(|(i, holder)| Spec {
            kubeconfig: kubeconfig.display().to_string(),
            lock: LOCK.to_owned(),
            holder: holder.clone(),
            kind,
            lease_ms: u64::try_from(LEASE.as_millis()).unwrap_or(u64::MAX),
            careless: i < contenders.careless,
        })
        .collect();
    let mut processes: Vec<Contender> = specs
        .iter()
        .map(|spec| Contender::start(spec, &events))
        .collect();
    // With a careless contender, what matters is that the fault meets it in a section.
    let (long, sections_before, sections_after) = if contenders.careless > 0 {
        (&holders[..contenders.careless], 0, 1)
    } else {
        (&holders[..], SECTIONS_BEFORE, SECTIONS_AFTER)
    };
    wait_for_work(&events, began, sections_before, "before the fault").await;
    wait_for_a_long_section(&events, long, Duration::from_millis(500)).await;

    let fault_start = clock.now();
    fault(control).await;
    let fault_end = clock.now();
    wait_for_work(&events, fault_end, sections_after, "after the fault").await;

    for process in &mut processes {
        process.stop();
    }
    for process in processes {
        process.wait(Duration::from_secs(60)).await;
    }
    nothing_left_behind(&cluster, &clock).await;
    let commits = caught_up(&cluster).await;

    let events = std::mem::take(&mut *events.lock().unwrap_or_else(PoisonError::into_inner));
    let mut windows: Vec<i64> = commits
        .iter()
        .filter(|c| c.name == format!("lockheed-{LOCK}"))
        .map(|c| (c.at - c.earliest.unwrap_or(c.at)).num_milliseconds())
        .collect();
    windows.sort_unstable();
    let window = (
        windows.get(windows.len() / 2).copied().unwrap_or_default(),
        windows.last().copied().unwrap_or_default(),
    );
    let mut history = kind.history(cluster.namespace(), LOCK);
    history.commits(commits);
    for section in events.iter().filter_map(Event::section) {
        history.section(section);
    }
    let count = |f: fn(&Event) -> bool| events.iter().filter(|e| f(e)).count();
    Figures {
        scenario,
        report: history.finish(),
        fault: (fault_start, fault_end),
        lost: count(|e| matches!(e, Event::Section { lost: true, .. })),
        lost_before_start: count(|e| matches!(e, Event::LostBeforeStart { .. })),
        timeouts: count(|e| matches!(e, Event::Timeout { .. })),
        failed: count(|e| matches!(e, Event::Failed { .. })),
        failed_releases: count(|e| matches!(e, Event::ReleaseFailed { .. })),
        resumed_after: resumed_after(&events, fault_end),
        idle: idle(&events, fault_start, fault_end),
        gaps: cluster.commit_gaps(),
        window,
        errors: events
            .iter()
            .filter_map(|e| match e {
                Event::Failed { at, error } => Some(format!(
                    "acquire failed {:+.2} s after the fault began: {error}",
                    seconds_signed(*at - fault_start)
                )),
                Event::ReleaseFailed { at, error } => Some(format!(
                    "release failed {:+.2} s after the fault began: {error}",
                    seconds_signed(*at - fault_start)
                )),
                _ => None,
            })
            .collect(),
    }
}

fn seconds_signed(d: chrono::Duration) -> f64 {
    d.num_microseconds().unwrap_or(i64::MAX) as f64 / 1e6
}

/// From the end of the fault until a section runs: zero when one runs through it.
fn resumed_after(events: &[Event], fault_end: DateTime<Utc>) -> Duration {
    let sections = events.iter().filter_map(|e| match e {
        Event::Section { start, end, .. } => Some((*start, *end)),
        _ => None,
    });
    let mut first = None::<DateTime<Utc>>;
    for (start, end) in sections {
        if start <= fault_end && end > fault_end {
            return Duration::ZERO;
        }
        if start > fault_end {
            first = Some(first.map_or(start, |f| f.min(start)));
        }
    }
    let first = first.expect("sections after the fault");
    (first - fault_end).to_std().unwrap_or_default()
}

/// The longest time without a running section that overlaps the fault.
fn idle(events: &[Event], fault_start: DateTime<Utc>, fault_end: DateTime<Utc>) -> Duration {
    let mut sections: Vec<(DateTime<Utc>, DateTime<Utc>)> = events
        .iter()
        .filter_map(|e| match e {
            Event::Section { start, end, .. } => Some((*start, *end)),
            _ => None,
        })
        .collect();
    sections.sort();
    let mut longest = chrono::Duration::zero();
    let mut busy_until: Option<DateTime<Utc>> = None;
    for (start, end) in sections {
        if let Some(until) = busy_until
            && start > until
            && start >= fault_start
            && until <= fault_end
        {
            longest = longest.max(start - until);
        }
        busy_until = Some(busy_until.map_or(end, |u| u.max(end)));
    }
    longest.to_std().unwrap_or_default()
}

/// Once the contenders have exited, the lock is neither held nor waited for: their releases
/// and clean-ups ran, or (where a fault defeated them) the leases and places ended.
async fn nothing_left_behind(cluster: &TestCluster, clock: &Arc<SystemClock>) {
    let locker = KubeLocker::new(cluster.client(), cluster.namespace()).with_clock(clock.clone());
    let deadline = tokio::time::Instant::now() + LEASE + Duration::from_secs(5);
    loop {
        let info = locker
            .get(LOCK)
            .await
            .expect("the lock can be read")
            .expect("the lock exists");
        if !info.is_held() && info.waiters.is_empty() {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "left behind: {info:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every commit of the namespace, once the commit log has seen the lock's latest revision.
async fn caught_up(cluster: &TestCluster) -> Vec<lockheed::testing::Commit> {
    let api: Api<ConfigMap> = Api::namespaced(cluster.client(), cluster.namespace());
    let latest: u64 = api
        .get(&format!("lockheed-{LOCK}"))
        .await
        .expect("the lock's ConfigMap")
        .metadata
        .resource_version
        .and_then(|v| v.parse().ok())
        .expect("a resourceVersion");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let commits = cluster.commits();
        if commits.iter().any(|c| c.revision >= latest) {
            return commits;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the commit log never saw revision {latest}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Checks a run, and says what it did.
pub fn checked(figures: &Figures) {
    println!("{figures}");
    figures.report.assert_valid();
    assert_eq!(figures.gaps, 0, "the commit log lost commits: {figures}");
    assert!(figures.report.commits > 0, "no commits checked: {figures}");
}
