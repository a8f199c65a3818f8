//! Scenario 11: 8 contenders on one lock, each a process of its own (this benchmark binary
//! again, in the role `contender`), on both servers: acquire, a 2 ms section, release, in a
//! loop. Sections are stamped with the system clock, which all processes share, so the
//! parent can check that no two overlapped and measure each handover under load: the gap
//! between one section's end and the next one's start.
//!
//! A contender reads its lock, kubeconfig and holder name from the environment, says `ready`
//! once its client has reached the server, then obeys one line at a time on stdin: `go`
//! (start contending), `measure` (record sections from now), `stop` (stop recording, finish
//! the section in hand, release, report). Its report on stdout: one line
//! `s <entered ns> <left ns> <waited ns>` per recorded section, then
//! `errors <failed acquires> <failed releases> <first error>`.

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kube::config::{KubeConfigOptions, Kubeconfig};
use lockheed::{KubeLocker, Lock, Locker as _};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::process::{Child, ChildStdin};

use crate::Mode;
use crate::floor::Floors;
use crate::plane::{ControlPlane, apiserver_counts, counts_since};
use crate::report::{Counts, Table, figure, ms, num, percentile};
use crate::sides::Side;
use crate::sys::cpu_time;

const ROLE: &str = "LOCKHEED_BENCH_ROLE";
const KUBECONFIG: &str = "LOCKHEED_BENCH_KUBECONFIG";
const LOCK: &str = "LOCKHEED_BENCH_LOCK";
const HOLDER: &str = "LOCKHEED_BENCH_HOLDER";
/// The role of a contender process.
pub const CONTENDER: &str = "contender";

const SECTION: Duration = Duration::from_millis(2);
const LEASE: Duration = Duration::from_secs(15);
const CONTENDERS: usize = 8;

fn now_ns() -> u64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970");
    u64::try_from(since.as_nanos()).expect("before 2554")
}

/// The contender's side: runs until `stop`, then reports.
pub fn contender() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(contend());
}

async fn contend() {
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} is set"));
    let kubeconfig = Kubeconfig::read_from(var(KUBECONFIG)).expect("the kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("a config");
    let namespace = config.default_namespace.clone();
    let client = kube::Client::try_from(config).expect("a client");
    let locker = KubeLocker::new(client, namespace);
    let name = var(LOCK);
    // Reach the server once (a connection, a TLS session) before the parent says go.
    locker.get(&name).await.expect("the server answers");
    let lock = Lock::new(name, locker)
        .with_holder(var(HOLDER))
        .with_duration(LEASE);

    let (go, measuring, stop) = (
        Arc::new(tokio::sync::Notify::new()),
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let commands = {
        let (go, measuring, stop) = (Arc::clone(&go), Arc::clone(&measuring), Arc::clone(&stop));
        tokio::spawn(async move {
            let mut lines = BufReader::new(tokio::io::stdin()).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                match line.trim() {
                    "go" => go.notify_one(),
                    "measure" => measuring.store(true, Ordering::SeqCst),
                    _ => {
                        measuring.store(false, Ordering::SeqCst);
                        stop.store(true, Ordering::SeqCst);
                        return;
                    }
                }
            }
            stop.store(true, Ordering::SeqCst);
        })
    };
    let mut out = tokio::io::stdout();
    out.write_all(b"ready\n").await.expect("stdout");
    out.flush().await.expect("stdout");
    go.notified().await;

    let mut report = String::new();
    let (mut failed_acquires, mut failed_releases, mut first_error) = (0, 0, None);
    while !stop.load(Ordering::SeqCst) {
        let started = Instant::now();
        match lock.acquire().await {
            Ok(guard) => {
                let entered = now_ns();
                let waited = started.elapsed();
                let measured = measuring.load(Ordering::SeqCst);
                tokio::time::sleep(SECTION).await;
                let left = now_ns();
                if measured {
                    report.push_str(&format!("s {entered} {left} {}\n", waited.as_nanos()));
                }
                if let Err(err) = guard.release().await {
                    failed_releases += 1;
                    first_error.get_or_insert_with(|| format!("release: {err}"));
                }
            }
            Err(err) => {
                failed_acquires += 1;
                first_error.get_or_insert_with(|| format!("acquire: {err}"));
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    commands.abort();
    let first_error = first_error.unwrap_or_default().replace('\n', " ");
    report.push_str(&format!(
        "errors {failed_acquires} {failed_releases} {first_error}\n"
    ));
    out.write_all(report.as_bytes()).await.expect("stdout");
    out.flush().await.expect("stdout");
}

/// One recorded section.
#[derive(Debug, Clone, Copy)]
struct Section {
    entered: u64,
    left: u64,
    waited: Duration,
}

/// What one contender reported.
#[derive(Debug, Default)]
struct Report {
    sections: Vec<Section>,
    failed_acquires: u64,
    failed_releases: u64,
    first_error: String,
}

fn parse(text: &str) -> Report {
    let mut report = Report::default();
    for line in text.lines() {
        let fields: Vec<&str> = line.splitn(4, ' ').collect();
        let n = |i: usize| fields[i].parse::<u64>().expect("a number");
        match fields[0] {
            "s" => report.sections.push(Section {
                entered: n(1),
                left: n(2),
                waited: Duration::from_nanos(n(3)),
            }),
            "errors" => {
                report.failed_acquires = n(1);
                report.failed_releases = n(2);
                report.first_error = fields.get(3).unwrap_or(&"").to_string();
            }
            "ready" => {}
            other => panic!("a contender said {other:?}"),
        }
    }
    report
}

/// One side's run: what the contenders reported and what the server and the machine did in
/// the window.
struct Run {
    reports: Vec<Report>,
    window: Duration,
    counts: Counts,
    conflicts: u64,
    contender_cores: f64,
    /// This process (the fake server's thread), or kube-apiserver and etcd.
    server_cores: Vec<(&'static str, f64)>,
}

async fn send(stdins: &mut [ChildStdin], line: &str) {
    for stdin in stdins {
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .expect("a contender's stdin");
        stdin.flush().await.expect("a contender's stdin");
    }
}

/// Server-side counts now: the fake server's counters, or kube-apiserver's own.
async fn server_counts(side: &Side, admin: &kube::Client) -> (Counts, u64) {
    if side.is_real() {
        apiserver_counts(admin).await
    } else {
        let server = side.cluster().fake_server().expect("the fake server");
        let conflicts = server
            .requests()
            .iter()
            .filter(|r| r.status == Some(409))
            .count() as u64;
        (Counts::of(&server.counts()), conflicts)
    }
}

async fn run_side(
    side: &Side,
    plane: Option<&ControlPlane>,
    warmup: Duration,
    window: Duration,
) -> Run {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let kubeconfig = dir.path().join("kubeconfig");
    side.cluster()
        .write_kubeconfig(&kubeconfig)
        .expect("the kubeconfig");
    let admin = side.plain_client().await;
    let mut children: Vec<Child> = (0..CONTENDERS)
        .map(|c| {
            tokio::process::Command::new(std::env::current_exe().expect("this binary"))
                .env(ROLE, CONTENDER)
                .env(KUBECONFIG, &kubeconfig)
                .env(LOCK, "contended")
                .env(HOLDER, format!("contender-{c}"))
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .expect("a contender starts")
        })
        .collect();
    let mut stdins: Vec<ChildStdin> = children
        .iter_mut()
        .map(|c| c.stdin.take().expect("piped"))
        .collect();
    let mut stdouts: Vec<_> = children
        .iter_mut()
        .map(|c| BufReader::new(c.stdout.take().expect("piped")))
        .collect();
    for stdout in &mut stdouts {
        let mut line = String::new();
        stdout
            .read_line(&mut line)
            .await
            .expect("a contender's stdout");
        assert_eq!(line.trim(), "ready", "a contender failed to start");
    }
    let pids: Vec<String> = children
        .iter()
        .map(|c| c.id().expect("running").to_string())
        .collect();
    let contenders_cpu = || pids.iter().map(|p| cpu_time(p)).sum::<Duration>();
    send(&mut stdins, "go").await;
    tokio::time::sleep(warmup).await;

    side.reset();
    let before = server_counts(side, &admin).await;
    let (cpu, self_cpu, plane_cpu) = (
        contenders_cpu(),
        cpu_time("self"),
        plane.map(ControlPlane::cpu),
    );
    let started = Instant::now();
    send(&mut stdins, "measure").await;
    tokio::time::sleep(window).await;
    send(&mut stdins, "stop").await;
    let window = started.elapsed();
    let secs = window.as_secs_f64();
    let contender_cores = contenders_cpu().saturating_sub(cpu).as_secs_f64() / secs;
    let server_cores = match (side.is_real(), plane, plane_cpu) {
        (true, Some(plane), Some(before)) => {
            let (apiserver, etcd) = plane.cpu().cores_since(&before, secs);
            vec![("kube-apiserver", apiserver), ("etcd", etcd)]
        }
        (true, ..) => Vec::new(),
        (false, ..) => vec![(
            "this process (the fake server)",
            cpu_time("self").saturating_sub(self_cpu).as_secs_f64() / secs,
        )],
    };
    let after = server_counts(side, &admin).await;
    // kube-apiserver's counters run from its start: the window is the difference. The fake
    // server's were reset when the window began.
    let (counts, conflicts) = if side.is_real() {
        (counts_since(&after.0, &before.0), after.1 - before.1)
    } else {
        after
    };
    let mut reports = Vec::new();
    for (mut stdout, mut child) in stdouts.into_iter().zip(children) {
        let mut text = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut stdout, &mut text)
            .await
            .expect("a contender's report");
        let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
            .await
            .expect("a contender stops")
            .expect("a contender");
        assert!(status.success(), "a contender failed: {status}");
        reports.push(parse(&text));
    }
    Run {
        reports,
        window,
        counts,
        conflicts,
        contender_cores,
        server_cores,
    }
}

/// The figures of one side's run.
struct Summary {
    sections: u64,
    per_second: f64,
    busy: f64,
    gap_p50: Duration,
    gap_p99: Duration,
    overlaps: u64,
    requests: String,
    requests_per_section: f64,
    conflicts_per_section: f64,
    writes_per_second: f64,
    share: f64,
    wait_p50: Duration,
    wait_p99: Duration,
    failures: String,
}

fn summarize(run: &Run) -> Summary {
    let secs = run.window.as_secs_f64();
    let mut all: Vec<Section> = run
        .reports
        .iter()
        .flat_map(|r| r.sections.iter().copied())
        .collect();
    all.sort_by_key(|s| s.entered);
    let sections = all.len() as u64;
    let held: u64 = all.iter().map(|s| s.left - s.entered).sum();
    // A section entered before the one in front of it was left would be two holders at once.
    let mut overlaps = 0;
    let mut gaps = Vec::new();
    for pair in all.windows(2) {
        match pair[1].entered.checked_sub(pair[0].left) {
            Some(gap) => gaps.push(Duration::from_nanos(gap)),
            None => overlaps += 1,
        }
    }
    let shares: Vec<usize> = run.reports.iter().map(|r| r.sections.len()).collect();
    let (most, fewest) = (
        shares.iter().max().copied().unwrap_or(0),
        shares.iter().min().copied().unwrap_or(0),
    );
    let mut waits: Vec<Duration> = all.iter().map(|s| s.waited).collect();
    let p = |samples: &mut Vec<Duration>, q| {
        if samples.is_empty() {
            Duration::ZERO
        } else {
            percentile(samples, q)
        }
    };
    let failed_acquires: u64 = run.reports.iter().map(|r| r.failed_acquires).sum();
    let failed_releases: u64 = run.reports.iter().map(|r| r.failed_releases).sum();
    let first_error = run
        .reports
        .iter()
        .map(|r| r.first_error.as_str())
        .find(|e| !e.is_empty());
    Summary {
        sections,
        per_second: sections as f64 / secs,
        busy: held as f64 / 1e9 / secs,
        gap_p50: p(&mut gaps, 50.0),
        gap_p99: p(&mut gaps, 99.0),
        overlaps,
        requests: run.counts.per(sections),
        requests_per_section: run.counts.total() as f64 / sections.max(1) as f64,
        conflicts_per_section: run.conflicts as f64 / sections.max(1) as f64,
        writes_per_second: run.counts.writes() as f64 / secs,
        share: if fewest == 0 {
            f64::INFINITY
        } else {
            most as f64 / fewest as f64
        },
        wait_p50: p(&mut waits, 50.0),
        wait_p99: p(&mut waits, 99.0),
        failures: match first_error {
            Some(error) => format!(
                "{failed_acquires} / {failed_releases} ({})",
                error.chars().take(120).collect::<String>()
            ),
            None => format!("{failed_acquires} / {failed_releases}"),
        },
    }
}

#[allow(clippy::too_many_lines)] // one table, read top to bottom
pub async fn run(mode: Mode, floors: &Floors, plane: Option<&ControlPlane>) {
    let (warmup, window) = if mode.quick {
        (Duration::from_millis(500), Duration::from_secs(2))
    } else {
        (Duration::from_secs(1), Duration::from_secs(10))
    };
    let mut runs = Vec::new();
    for side in Side::both().await {
        let run = run_side(&side, plane, warmup, window).await;
        runs.push((summarize(&run), run, *floors.of(&side)));
    }
    let (fake, real) = (&runs[0], &runs[1]);
    let mut table = Table::new(
        &format!(
            "11. {CONTENDERS} contenders in {CONTENDERS} processes on one lock, 2 ms section, on each server"
        ),
        &["measure", "fake", "real", "real ÷ fake"],
    );
    let ratio = |f: f64, r: f64| num(r / f);
    let dur = |f: Duration, r: Duration| {
        vec![
            ms(f),
            ms(r),
            num(r.as_secs_f64() / f.as_secs_f64().max(1e-9)),
        ]
    };
    let mut row = |what: &str, cells: Vec<String>| {
        let mut all = vec![what.to_owned()];
        all.extend(cells);
        table.row(all);
    };
    let (f, r) = (&fake.0, &real.0);
    row(
        "sections/s",
        vec![
            num(f.per_second),
            num(r.per_second),
            ratio(f.per_second, r.per_second),
        ],
    );
    row(
        "lock busy (share of the window in a section)",
        vec![
            format!("{:.0} %", f.busy * 100.0),
            format!("{:.0} %", r.busy * 100.0),
            ratio(f.busy, r.busy),
        ],
    );
    let mut cells = dur(f.gap_p50, r.gap_p50);
    row(
        "handover under load (one section's end to the next one's start), p50",
        cells,
    );
    cells = dur(f.gap_p99, r.gap_p99);
    row("handover under load, p99", cells);
    let secs = |d: Duration| d.as_secs_f64();
    row(
        "handover under load p50 ÷ that server's floor p50 (PUT → watch event): back to back; after 20 ms idle",
        vec![
            format!(
                "{}; {}",
                num(secs(f.gap_p50) / secs(fake.2.event_p50)),
                num(secs(f.gap_p50) / secs(fake.2.idle_event_p50))
            ),
            format!(
                "{}; {}",
                num(secs(r.gap_p50) / secs(real.2.event_p50)),
                num(secs(r.gap_p50) / secs(real.2.idle_event_p50))
            ),
            "—".into(),
        ],
    );
    row(
        "requests per section (server-side)",
        vec![
            f.requests.clone(),
            r.requests.clone(),
            ratio(f.requests_per_section, r.requests_per_section),
        ],
    );
    row(
        "409 Conflicts per section",
        vec![
            num(f.conflicts_per_section),
            num(r.conflicts_per_section),
            "—".into(),
        ],
    );
    row(
        "writes/s (share of that server's ceiling, scenario 8)",
        vec![
            format!(
                "{} ({:.1} %)",
                num(f.writes_per_second),
                f.writes_per_second / fake.2.writes_per_second * 100.0
            ),
            format!(
                "{} ({:.1} %)",
                num(r.writes_per_second),
                r.writes_per_second / real.2.writes_per_second * 100.0
            ),
            ratio(f.writes_per_second, r.writes_per_second),
        ],
    );
    row(
        "max/min share of one contender",
        vec![num(f.share), num(r.share), "—".into()],
    );
    cells = dur(f.wait_p50, r.wait_p50);
    row("wait in `acquire`, p50", cells);
    cells = dur(f.wait_p99, r.wait_p99);
    row("wait in `acquire`, p99", cells);
    row(
        "overlapping sections (must be 0)",
        vec![f.overlaps.to_string(), r.overlaps.to_string(), "—".into()],
    );
    row(
        "failed acquires / releases",
        vec![f.failures.clone(), r.failures.clone(), "—".into()],
    );
    row(
        "CPU of the 8 contender processes (cores)",
        vec![
            format!("{:.2}", fake.1.contender_cores),
            format!("{:.2}", real.1.contender_cores),
            ratio(fake.1.contender_cores, real.1.contender_cores),
        ],
    );
    let server = |run: &Run| {
        run.server_cores
            .iter()
            .map(|(who, cores)| format!("{who} {cores:.2}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let total = |run: &Run| run.server_cores.iter().map(|(_, c)| c).sum::<f64>();
    row(
        "CPU of the server (cores)",
        vec![
            server(&fake.1),
            server(&real.1),
            ratio(total(&fake.1), total(&real.1)),
        ],
    );
    table.note(format!(
        "Each contender is a process of its own (this binary again: a client, a `KubeLocker`, \
         its namespace watch), 15 s leases, fair waiting. Measured over {:.1} s after {:.1} s \
         of warm-up; a section counts if its `acquire` returned inside the window, and its \
         wait is that `acquire`. Sections are stamped with the system clock the processes \
         share; a handover under load is the gap between a section's end (before its \
         release) and the next section's start (after its `acquire` returned). Requests: \
         server-side, the fake server's counters or kube-apiserver's own \
         `apiserver_request_total` for ConfigMaps (where a watch counts when it ends). \
         Sections: {} fake, {} real. Load average at the end: {}.",
        window.as_secs_f64(),
        warmup.as_secs_f64(),
        f.sections,
        r.sections,
        crate::sys::load_average()
    ));
    table.print();
    for (name, s) in [("fake", f), ("real", r)] {
        let key = format!("processes.{name}");
        figure(&format!("{key}.sections_per_s"), s.per_second, "1/s");
        figure(
            &format!("{key}.handover_p50_ms"),
            s.gap_p50.as_secs_f64() * 1e3,
            "ms",
        );
        figure(
            &format!("{key}.handover_p99_ms"),
            s.gap_p99.as_secs_f64() * 1e3,
            "ms",
        );
        figure(
            &format!("{key}.requests_per_section"),
            s.requests_per_section,
            "requests",
        );
        figure(&format!("{key}.max_min_share"), s.share, "x");
        figure(&format!("{key}.overlaps"), s.overlaps as f64, "count");
    }
    figure(
        "processes.real_to_fake.sections_per_s",
        r.per_second / f.per_second,
        "x",
    );
}
