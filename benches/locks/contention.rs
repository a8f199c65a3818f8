//! Scenario 3: contention. Contenders, each a process of its own (its own client and
//! `KubeLocker`), loop: acquire, a 2 ms critical section, release. Measured in a window after
//! a warm-up: sections per second, requests per section, fairness, waits; and once more with
//! 8 contenders under injected faults.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::rbac::v1::PolicyRule;
use lockheed::testing::{AccessControl, FakeApiServer, Fault, RequestMatcher, Verb};

use crate::served::Served;
use lockheed::{Error, Lock};

use crate::Mode;
use crate::ceiling::Ceiling;
use crate::report::{Counts, Table, figure, ms, num, percentile};
use crate::requests::process;
use crate::sys::cpu_time;

const SECTION: Duration = Duration::from_millis(2);
const LEASE: Duration = Duration::from_secs(15);
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Default)]
struct Contender {
    /// Sections that began inside the window, the waits before them, and how long they
    /// lasted (a 2 ms sleep lasts a little longer).
    sections: u64,
    waits: Vec<Duration>,
    held: Duration,
    /// When each of those sections began.
    entered: Vec<Instant>,
    /// Over the whole run, warm-up included: timeouts that ended while everyone contended,
    /// and after the stop (when a holder whose release failed does not come back).
    timeouts: u64,
    timeouts_after_stop: u64,
    release_errors: u64,
    acquire_errors: u64,
    overlaps: u64,
    /// The first error seen, for the report.
    first_error: Option<String>,
}

struct Run {
    contenders: Vec<Contender>,
    started: Instant,
    counts: Counts,
    conflicts: u64,
    window: Duration,
    cpu: Duration,
}

struct Shared {
    measuring: AtomicBool,
    stop: AtomicBool,
    /// Holders inside each lock's critical section, to catch two at once.
    inside: Vec<AtomicU32>,
}

async fn contender(
    shared: Arc<Shared>,
    lock: Lock<lockheed::KubeLocker>,
    index: usize,
    faults: bool,
) -> Contender {
    let mut me = Contender::default();
    while !shared.stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        let taken = if faults {
            lock.acquire_timeout(ACQUIRE_TIMEOUT).await
        } else {
            lock.acquire().await
        };
        let waited = started.elapsed();
        match taken {
            Ok(guard) => {
                if shared.inside[index].fetch_add(1, Ordering::SeqCst) != 0 {
                    me.overlaps += 1;
                }
                let measured = shared.measuring.load(Ordering::Relaxed);
                let entered = Instant::now();
                tokio::time::sleep(SECTION).await;
                shared.inside[index].fetch_sub(1, Ordering::SeqCst);
                if measured {
                    me.sections += 1;
                    me.waits.push(waited);
                    me.held += entered.elapsed();
                    me.entered.push(entered);
                }
                if let Err(err) = guard.release().await {
                    me.release_errors += 1;
                    me.first_error
                        .get_or_insert_with(|| format!("release: {}", chain(&err)));
                }
            }
            Err(Error::Timeout { .. }) if shared.stop.load(Ordering::Relaxed) => {
                me.timeouts_after_stop += 1;
            }
            Err(Error::Timeout { .. }) => me.timeouts += 1,
            Err(err) => {
                me.acquire_errors += 1;
                me.first_error
                    .get_or_insert_with(|| format!("acquire: {}", chain(&err)));
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    me
}

/// An error with its causes, on one line.
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The faults of the faults run, by name; `LOCKHEED_BENCH_FAULTS` (comma-separated) picks
/// some, to find which one costs what.
const FAULTS: [&str; 7] = [
    "latency",
    "500-update",
    "503-get",
    "429-update",
    "reset-update",
    "reset-after-commit",
    "close-watches",
];

fn faults_chosen() -> Vec<&'static str> {
    match std::env::var("LOCKHEED_BENCH_FAULTS") {
        Ok(chosen) => FAULTS
            .iter()
            .copied()
            .filter(|f| chosen.split(',').any(|c| c.trim() == *f))
            .collect(),
        Err(_) => FAULTS.to_vec(),
    }
}

/// One fault per this many requests (2 %).
const FAULT_EVERY: u64 = 50;

/// Injects faults while the run lasts: once `FAULT_EVERY` requests have reached the server
/// since the last one-shot fault was injected, the next of those chosen (replacing the last
/// if no request met it, so that faults never pile up); every 2 s all watches closed.
/// Returns how many were injected.
async fn inject_faults(
    server: Arc<Served>,
    stop: Arc<AtomicBool>,
    chosen: Vec<&'static str>,
) -> u64 {
    let updates = || RequestMatcher::any().verb(Verb::Update);
    let one_shot: Vec<Fault> = chosen
        .iter()
        .filter_map(|name| match *name {
            "500-update" => Some(Fault::status(500).on(updates())),
            "503-get" => Some(Fault::status(503).on(RequestMatcher::any().verb(Verb::Get))),
            "429-update" => Some(Fault::too_many_requests(Duration::from_secs(1)).on(updates())),
            "reset-update" => Some(Fault::reset_connection().on(updates())),
            "reset-after-commit" => Some(Fault::reset_connection().after_commit().on(updates())),
            _ => None,
        })
        .collect();
    let latency = chosen.contains(&"latency");
    let close_watches = chosen.contains(&"close-watches");
    let (mut injected, mut next) = (0, 0);
    let mut last_injection = server.counts().total();
    let mut last_close = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(5)).await;
        // The counters are reset when the window starts: start counting again then.
        let total = server.counts().total();
        if total < last_injection {
            last_injection = 0;
        }
        if !one_shot.is_empty() && total - last_injection >= FAULT_EVERY {
            server.clear_faults();
            if latency {
                server.inject(delays());
            }
            server.inject(one_shot[next % one_shot.len()].clone());
            next += 1;
            injected += 1;
            last_injection = total;
        }
        if close_watches && last_close.elapsed() >= Duration::from_secs(2) {
            server.close_watches();
            injected += 1;
            last_close = Instant::now();
        }
    }
    injected
}

/// Every request delayed by 0 to 50 ms.
fn delays() -> Fault {
    Fault::latency_between(Duration::ZERO, Duration::from_millis(50)).always()
}

struct Config {
    contenders: usize,
    locks: usize,
    faults: bool,
    /// RBAC names each process's lock, so that each watches its lock alone instead of the
    /// namespace.
    per_lock_watch: bool,
    warmup: Duration,
    window: Duration,
}

/// One run, on a server of its own: the watches of a run's processes outlive them by 30 s
/// (see `BENCHMARKS.md`), and would otherwise receive the next run's events.
async fn contend(config: &Config) -> (Run, u64) {
    let Config {
        contenders,
        locks,
        faults,
        per_lock_watch,
        warmup,
        window,
    } = *config;
    let lock_name = |c: usize| format!("contended-{contenders}-{locks}-{faults}-{}", c % locks);
    let token = |c: usize| format!("c{contenders}-{locks}-{faults}-{c}");
    let mut builder = FakeApiServer::builder();
    if per_lock_watch {
        let rule = |verbs: &[&str], names: Option<Vec<String>>| PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["configmaps".into()]),
            resource_names: names,
            verbs: verbs.iter().map(|v| (*v).to_owned()).collect(),
            ..PolicyRule::default()
        };
        let access = (0..contenders).fold(AccessControl::new(), |access, c| {
            let names = vec![format!("lockheed-{}", lock_name(c))];
            access
                .rule(&token(c), Some("default"), rule(&["create"], None))
                .rule(
                    &token(c),
                    Some("default"),
                    rule(&["get", "update", "list", "watch"], Some(names)),
                )
        });
        builder = builder.access_control(access);
    }
    let server = &Arc::new(Served::with(builder).await);
    let shared = Arc::new(Shared {
        measuring: AtomicBool::new(false),
        stop: AtomicBool::new(false),
        inside: (0..locks).map(|_| AtomicU32::new(0)).collect(),
    });
    let stop_faults = Arc::new(AtomicBool::new(false));
    let injector = faults.then(|| {
        let chosen = faults_chosen();
        if chosen.contains(&"latency") {
            server.inject(delays());
        }
        tokio::spawn(inject_faults(
            Arc::clone(server),
            Arc::clone(&stop_faults),
            chosen,
        ))
    });
    let tasks: Vec<_> = (0..contenders)
        .map(|c| {
            let index = c % locks;
            let lock = Lock::new(lock_name(c), process(server, &token(c))).with_duration(LEASE);
            tokio::spawn(contender(Arc::clone(&shared), lock, index, faults))
        })
        .collect();
    tokio::time::sleep(warmup).await;
    server.reset_counters();
    let (started, cpu_before) = (Instant::now(), cpu_time("self"));
    shared.measuring.store(true, Ordering::SeqCst);
    tokio::time::sleep(window).await;
    shared.measuring.store(false, Ordering::SeqCst);
    let counts = Counts::of(&server.counts());
    let conflicts = server
        .requests()
        .iter()
        .filter(|r| r.status == Some(409))
        .count() as u64;
    let (window, cpu) = (
        started.elapsed(),
        cpu_time("self").saturating_sub(cpu_before),
    );
    shared.stop.store(true, Ordering::SeqCst);
    let mut results = Vec::new();
    for task in tasks {
        let result = tokio::time::timeout(Duration::from_secs(60), task).await;
        results.push(result.expect("a contender stops").expect("a contender"));
    }
    stop_faults.store(true, Ordering::SeqCst);
    let injected = match injector {
        Some(injector) => injector.await.expect("the injector"),
        None => 0,
    };
    server.clear_faults();
    (
        Run {
            contenders: results,
            started,
            counts,
            conflicts,
            window,
            cpu,
        },
        injected,
    )
}

/// Sections per second in each fifth of the window: the median, least and most. The machine
/// is shared, so one slice can be slow for reasons of its own.
fn slices(run: &Run) -> (f64, f64, f64) {
    const SLICES: usize = 5;
    let slice = run.window.as_secs_f64() / SLICES as f64;
    let mut counts = [0u64; SLICES];
    for entered in run.contenders.iter().flat_map(|c| &c.entered) {
        let at = entered.saturating_duration_since(run.started).as_secs_f64();
        counts[((at / slice) as usize).min(SLICES - 1)] += 1;
    }
    let mut rates: Vec<f64> = counts.iter().map(|&n| n as f64 / slice).collect();
    rates.sort_by(f64::total_cmp);
    (rates[SLICES / 2], rates[0], rates[SLICES - 1])
}

#[allow(clippy::too_many_lines)] // one table, read top to bottom
pub fn run(mode: Mode, ceiling: &Ceiling) {
    let seconds =
        |quick: f64, full: f64| Duration::from_secs_f64(if mode.quick { quick } else { full });
    let config = |contenders, locks, faults| {
        let many = contenders >= 64;
        Config {
            contenders,
            locks,
            faults,
            per_lock_watch: false,
            warmup: if many {
                seconds(1.0, 2.0)
            } else {
                seconds(0.3, 1.0)
            },
            window: match (faults, many) {
                (true, _) => seconds(4.0, 20.0),
                // 64 contenders take turns slowly: give each several turns.
                (false, true) => seconds(3.0, 10.0),
                (false, false) => seconds(1.0, 5.0),
            },
        }
    };
    let configs = [
        config(1, 1, false),
        config(4, 1, false),
        config(8, 1, false),
        config(16, 1, false),
        config(64, 1, false),
        config(64, 64, false),
        Config {
            per_lock_watch: true,
            ..config(64, 64, false)
        },
        config(8, 1, true),
    ];
    let mut table = Table::new(
        "3. Contention: acquire, 2 ms section, release, in a loop",
        &[
            "contenders → locks",
            "sections/s: median (range) of 5 slices",
            "lock busy",
            "idle per section",
            "requests per section",
            "409s per section",
            "writes/s (of ceiling)",
            "max/min share",
            "p50 wait",
            "p99 wait",
            "timeouts",
            "failed releases / acquires",
            "overlaps",
            "CPU (cores)",
        ],
    );
    let mut injected_total = 0;
    let mut errors_seen = Vec::new();
    for config in &configs {
        let name = format!(
            "contention.{}_on_{}{}{}",
            config.contenders,
            config.locks,
            if config.faults { "_faults" } else { "" },
            if config.per_lock_watch {
                "_per_lock_watch"
            } else {
                ""
            }
        );
        // Each run on a runtime of its own, so that one stuck task cannot slow the next.
        let (run, injected) = crate::run_on_own_runtime(&name, contend(config));
        let Config {
            contenders,
            locks,
            faults,
            per_lock_watch,
            ..
        } = *config;
        injected_total += injected;
        let secs = run.window.as_secs_f64();
        let sections: u64 = run.contenders.iter().map(|c| c.sections).sum();
        let held: Duration = run.contenders.iter().map(|c| c.held).sum();
        let per_second = sections as f64 / secs;
        let (slice_median, slice_min, slice_max) = slices(&run);
        let shares: Vec<u64> = run.contenders.iter().map(|c| c.sections).collect();
        let (max, min) = (
            *shares.iter().max().unwrap_or(&0),
            *shares.iter().min().unwrap_or(&0),
        );
        let fairness = if min == 0 {
            f64::INFINITY
        } else {
            max as f64 / min as f64
        };
        let mut waits: Vec<Duration> = run
            .contenders
            .iter()
            .flat_map(|c| c.waits.iter().copied())
            .collect();
        let timeouts: u64 = run.contenders.iter().map(|c| c.timeouts).sum();
        let after_stop: u64 = run.contenders.iter().map(|c| c.timeouts_after_stop).sum();
        let release_errors: u64 = run.contenders.iter().map(|c| c.release_errors).sum();
        let acquire_errors: u64 = run.contenders.iter().map(|c| c.acquire_errors).sum();
        if let Some(error) = run.contenders.iter().find_map(|c| c.first_error.clone()) {
            let error: String = error.chars().take(160).collect();
            errors_seen.push(format!("{contenders} → {locks}: {error}"));
        }
        let overlaps: u64 = run.contenders.iter().map(|c| c.overlaps).sum();
        let writes_per_second = run.counts.writes() as f64 / secs;
        let busy = held.as_secs_f64() / secs / locks as f64;
        // Time each lock spent without a section running, per section: the handover.
        let idle = (secs * locks as f64 - held.as_secs_f64()).max(0.0) / sections.max(1) as f64;
        let per_section = run.counts.total() as f64 / sections.max(1) as f64;
        let label = format!(
            "{contenders} → {locks}{}{}",
            if faults {
                ", faults, `acquire_timeout(10 s)`"
            } else {
                ""
            },
            if per_lock_watch {
                ", each lock watched alone (RBAC `resourceNames`)"
            } else {
                ""
            }
        );
        let (p50, p99) = if waits.is_empty() {
            (Duration::ZERO, Duration::ZERO)
        } else {
            (percentile(&mut waits, 50.0), percentile(&mut waits, 99.0))
        };
        table.row(vec![
            label,
            format!(
                "{} ({}–{})",
                num(slice_median),
                num(slice_min),
                num(slice_max)
            ),
            format!("{:.0} %", busy * 100.0),
            ms(Duration::from_secs_f64(idle)),
            run.counts.per(sections),
            num(run.conflicts as f64 / sections.max(1) as f64),
            format!(
                "{} ({:.1} %)",
                num(writes_per_second),
                writes_per_second / ceiling.writes_per_second * 100.0
            ),
            num(fairness),
            ms(p50),
            ms(p99),
            format!("{timeouts}; {after_stop} after the stop"),
            format!("{release_errors} / {acquire_errors}"),
            overlaps.to_string(),
            format!("{:.2}", run.cpu.as_secs_f64() / secs),
        ]);
        let key = format!(
            "contention.{contenders}_on_{locks}{}{}",
            if faults { "_faults" } else { "" },
            if per_lock_watch {
                "_per_lock_watch"
            } else {
                ""
            }
        );
        figure(&format!("{key}.sections_per_s"), per_second, "1/s");
        figure(
            &format!("{key}.sections_per_s_median_slice"),
            slice_median,
            "1/s",
        );
        figure(
            &format!("{key}.requests_per_section"),
            per_section,
            "requests",
        );
        figure(&format!("{key}.idle_per_section_ms"), idle * 1e3, "ms");
        figure(&format!("{key}.max_min_share"), fairness, "x");
        figure(&format!("{key}.p99_wait_ms"), p99.as_secs_f64() * 1e3, "ms");
        figure(&format!("{key}.timeouts"), timeouts as f64, "count");
        figure(
            &format!("{key}.timeouts_after_stop"),
            after_stop as f64,
            "count",
        );
        figure(
            &format!("{key}.failed_releases"),
            release_errors as f64,
            "count",
        );
    }
    let window = |c: &Config| format!("{:.0} s", c.window.as_secs_f64());
    table.note(format!(
        "Each contender is a process of its own (client, `KubeLocker`, watch); 15 s leases. \
         Measured over a window ({} for up to 16 contenders, {} for 64, {} with faults) after \
         a warm-up; a section counts if its `acquire` returned inside the window, and its \
         wait is that `acquire`. Lock busy: the share of the window a critical section ran \
         (a 2 ms sleep lasts 2–3 ms), per lock; idle per section: the rest of the window ÷ \
         sections, i.e. the time a handover takes under load. Requests per section: every \
         request the server received in the window (watch openings included) ÷ sections; \
         409s: the conflicts among them. Writes/s as a share of the ceiling of scenario 6 \
         ({} writes/s). Share: most ÷ fewest sections of one contender (inf: one had none). \
         Timeouts: while all contend, and after the stop (when a contender whose release \
         failed does not come back, its lease stays until it ends; before the stop it comes \
         back at once and takes the lock again as the same holder). Failed releases and \
         acquires: over the whole run. Overlaps: a section began while another \
         held the same lock (must be 0). CPU: this process (server included) ÷ window. \
         Faults: every request delayed 0–50 ms, and after every {FAULT_EVERY} requests the \
         next of (replacing the last if no request met it): a 500 on an update, a 503 on a get (kube retries it), a 429 with Retry-After 1 s on an update \
         (kube retries it), a reset connection on an update, a reset after an update \
         committed; every 2 s all watches closed ({injected_total} faults in all).",
        window(&configs[0]),
        window(&configs[4]),
        window(&configs[7]),
        num(ceiling.writes_per_second)
    ));
    for error in errors_seen {
        table.note(format!("First error, {error}"));
    }
    table.print();
}
