//! Scenario 12: what held locks cost the server. One process takes 1,000 and then 10,000
//! locks (30 s leases renewed every 10 s, as scenario 4) and holds them for two renew
//! intervals, on the fake server (in a process of its own, as in scenario 4) and on the real
//! one: writes per second, the server's CPU (kube-apiserver and etcd from `/proc/<pid>/stat`,
//! above what they spend idle), and etcd's database growth (its `/metrics`).
//!
//! Every renewal is one write, hence one revision that etcd keeps until kube-apiserver
//! compacts: every 5 minutes, up to the revision it saw 5 minutes before, so etcd holds 5 to 10
//! minutes of every lock's renewals. These figures decide whether renewals must be batched
//! per process (one write per process and interval instead of one per lock).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams};
use lockheed::{KubeLocker, Lock, LockGuard};

use crate::Mode;
use crate::floor::Floors;
use crate::plane::{
    ControlPlane, Cpu, Db, apiserver_metrics, configmap_counts, counts_since, put_codes,
};
use crate::remote::Remote;
use crate::report::{Counts, Table, figure, ms, num, percentile};
use crate::sides::Side;
use crate::sys::{cpu_time, kib, mib};

/// How many acquires or releases are in flight at once, as in scenario 4.
const IN_FLIGHT: usize = 64;

/// kube-apiserver's default `--etcd-compaction-interval`.
const COMPACTION: Duration = Duration::from_secs(300);

/// The server one run holds its locks on.
enum Server {
    /// The fake server in a process of its own.
    Fake(Box<Remote>),
    /// A fresh namespace of the real cluster; the control plane's processes when known.
    Real(Side, Option<ControlPlane>),
}

impl Server {
    fn name(&self) -> &'static str {
        match self {
            Self::Fake(_) => "fake",
            Self::Real(..) => "real",
        }
    }

    async fn locker(&self) -> KubeLocker {
        match self {
            Self::Fake(remote) => KubeLocker::new(remote.client().await, "default"),
            Self::Real(side, _) => side.locker("holder"),
        }
    }

    /// ConfigMaps of the server's namespace, through a plain client of its own (on the real
    /// server, not counted with the holder's requests).
    async fn probe_api(&self) -> Api<ConfigMap> {
        match self {
            Self::Fake(remote) => Api::namespaced(remote.client().await, "default"),
            Self::Real(side, _) => Api::namespaced(side.plain_client().await, side.namespace()),
        }
    }

    async fn reset(&mut self) {
        match self {
            Self::Fake(remote) => remote.reset().await,
            Self::Real(side, _) => side.reset(),
        }
    }

    /// Requests since the last reset: the fake server's, or what the holder sent.
    async fn counts(&mut self) -> Counts {
        match self {
            Self::Fake(remote) => remote.counts().await,
            Self::Real(side, _) => side.counts(),
        }
    }

    /// CPU time of the server's processes: (the fake's | kube-apiserver, etcd).
    fn cpu(&self) -> Option<Cpu> {
        match self {
            Self::Fake(remote) => Some(Cpu {
                apiserver: cpu_time(&remote.pid()),
                etcd: Duration::ZERO,
            }),
            Self::Real(_, plane) => plane.as_ref().map(ControlPlane::cpu),
        }
    }

    fn db(&self) -> Option<Db> {
        match self {
            Self::Fake(_) => None,
            Self::Real(_, plane) => plane.as_ref().map(ControlPlane::db),
        }
    }
}

/// The figures of one run.
#[derive(Debug, Default)]
struct Held {
    locks: usize,
    taking: Duration,
    take_requests: String,
    renewals_per_second: f64,
    expected_per_second: f64,
    /// kube-apiserver's own count of ConfigMap PUTs per second in the window.
    served_per_second: Option<f64>,
    window_requests: String,
    /// Cores above idle: (kube-apiserver or the fake server, etcd).
    server_cores: Option<(f64, f64)>,
    idle_cores: Option<(f64, f64)>,
    holder_cores: f64,
    db_before: Option<Db>,
    db_taken: Option<Db>,
    db_after: Option<Db>,
    lost: usize,
    releasing: Duration,
    /// A probe's PUT round trips during the window: p50, p99.
    probe: (Duration, Duration),
    /// Cores while taking the locks: (the server's: kube-apiserver or the fake, etcd), the
    /// holder's.
    take_cores: (Option<(f64, f64)>, f64),
    /// Guards already lost when the last lock was taken.
    lost_taking: usize,
    /// The most file descriptors the holding process had open.
    most_fds: usize,
    /// kube-apiserver's answers to ConfigMap PUTs in the window, by status code.
    put_codes: Option<Counts>,
    window_secs: f64,
}

impl Held {
    fn per_renewal_us(&self, cores: f64) -> f64 {
        cores / self.renewals_per_second.max(1e-9) * 1e6
    }

    /// Revisions etcd committed in the window (one per write), per second.
    fn revisions_per_second(&self) -> Option<f64> {
        let (taken, after) = (self.db_taken?, self.db_after?);
        Some((after.revision - taken.revision) / self.window_secs)
    }

    /// etcd's pages in use, grown per revision committed in the window.
    fn db_per_revision(&self) -> Option<f64> {
        let (taken, after) = (self.db_taken?, self.db_after?);
        Some((after.in_use - taken.in_use) / (after.revision - taken.revision).max(1.0))
    }

    /// Whether kube-apiserver compacted etcd between the locks' taking and the window's end
    /// (which frees pages, so the growth figures would read low).
    fn compacted(&self) -> bool {
        match (self.db_before, self.db_after) {
            (Some(before), Some(after)) => after.compacted > before.compacted,
            _ => false,
        }
    }
}

/// How often the probe writes during the window.
const PROBE_EVERY: Duration = Duration::from_millis(100);

/// The probe's object.
async fn probe_object(api: &Api<ConfigMap>) -> ConfigMap {
    let mut probe = ConfigMap::default();
    probe.metadata.name = Some("probe".into());
    api.create(&PostParams::default(), &probe)
        .await
        .expect("the probe")
}

/// Writes the probe's object every [`PROBE_EVERY`] until `until`, and returns each round
/// trip: what a renewal waits for while the server is busy with the others.
async fn probe(api: Api<ConfigMap>, mut current: ConfigMap, until: Instant) -> Vec<Duration> {
    let mut samples = Vec::new();
    let mut n = 0u64;
    while Instant::now() < until {
        tokio::time::sleep(PROBE_EVERY).await;
        n += 1;
        current.data = Some([("n".to_owned(), n.to_string())].into());
        let started = Instant::now();
        current = api
            .replace("probe", &PostParams::default(), &current)
            .await
            .expect("the probe's write");
        samples.push(started.elapsed());
    }
    samples
}

struct Timing {
    lease: Duration,
    interval: Duration,
    window: Duration,
    idle: Duration,
}

#[allow(clippy::too_many_lines)] // one run, read top to bottom
async fn hold(mut server: Server, locks: usize, timing: &Timing) -> Held {
    let admin = match &server {
        Server::Real(side, _) => Some(side.plain_client().await),
        Server::Fake(_) => None,
    };
    let locker = server.locker().await;
    // The process's watch and connections open before anything is measured.
    Lock::new("warm-up", locker.clone())
        .acquire()
        .await
        .expect("warm-up")
        .release()
        .await
        .expect("release");

    let cpu = server.cpu();
    tokio::time::sleep(timing.idle).await;
    let idle_cores = server
        .cpu()
        .zip(cpu)
        .map(|(now, before)| now.cores_since(&before, timing.idle.as_secs_f64()));

    let db_before = server.db();
    let most_fds = Arc::new(AtomicUsize::new(0));
    let sampler = tokio::spawn(sample_fds(Arc::clone(&most_fds)));
    server.reset().await;
    let (take_cpu, take_holder_cpu) = (server.cpu(), cpu_time("self"));
    let started = Instant::now();
    let guards: Vec<LockGuard<KubeLocker>> = futures::stream::iter(0..locks)
        .map(|i| {
            let lock = Lock::new(format!("held-{i}"), locker.clone())
                .with_duration(timing.lease)
                .with_renew_interval(timing.interval);
            async move { lock.acquire().await.expect("acquire") }
        })
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;
    let taking = started.elapsed();
    let take_requests = server.counts().await.per(locks as u64);
    let db_taken = server.db();
    let take_secs = taking.as_secs_f64();
    let take_cores = (
        server
            .cpu()
            .zip(take_cpu)
            .map(|(now, before)| now.cores_since(&before, take_secs)),
        cpu_time("self")
            .saturating_sub(take_holder_cpu)
            .as_secs_f64()
            / take_secs,
    );
    let lost_taking = guards.iter().filter(|g| g.is_lost()).count();

    // Two renew intervals: every lease renews exactly twice (its first renewal comes at a
    // random point of the interval's second half).
    let probe_api = server.probe_api().await;
    let probe_object = probe_object(&probe_api).await;
    server.reset().await;
    let served_before = match &admin {
        Some(admin) => Some(apiserver_metrics(admin).await),
        None => None,
    };
    let (cpu, holder_cpu, started) = (server.cpu(), cpu_time("self"), Instant::now());
    let mut probed = probe(probe_api, probe_object, started + timing.window).await;
    tokio::time::sleep_until((started + timing.window).into()).await;
    let secs = started.elapsed().as_secs_f64();
    let mut counts = server.counts().await;
    if !matches!(server, Server::Real(..)) {
        // The fake server counted the probe's writes too.
        let renewals = counts.get("update").saturating_sub(probed.len() as u64);
        counts.0.insert("update".into(), renewals);
    }
    let server_cores = server
        .cpu()
        .zip(cpu)
        .map(|(now, before)| now.cores_since(&before, secs));
    let holder_cores = cpu_time("self").saturating_sub(holder_cpu).as_secs_f64() / secs;
    let (served_per_second, put_codes) = match (&admin, served_before) {
        (Some(admin), Some(before)) => {
            let after = apiserver_metrics(admin).await;
            let served = counts_since(&configmap_counts(&after).0, &configmap_counts(&before).0)
                .get("update");
            let codes = counts_since(&put_codes(&after), &put_codes(&before));
            (
                Some(served.saturating_sub(probed.len() as u64) as f64 / secs),
                Some(codes),
            )
        }
        _ => (None, None),
    };
    let db_after = server.db();
    let lost = guards.iter().filter(|g| g.is_lost()).count();
    sampler.abort();

    let started = Instant::now();
    futures::stream::iter(guards)
        .map(|guard| async move { guard.release().await.expect("release") })
        .buffer_unordered(IN_FLIGHT)
        .collect::<Vec<()>>()
        .await;
    let releasing = started.elapsed();

    let above_idle = |(a, e): (f64, f64)| {
        let (ia, ie) = idle_cores.unwrap_or_default();
        ((a - ia).max(0.0), (e - ie).max(0.0))
    };
    Held {
        locks,
        taking,
        take_requests,
        renewals_per_second: counts.get("update") as f64 / secs,
        expected_per_second: locks as f64 / timing.interval.as_secs_f64(),
        served_per_second,
        window_requests: counts.per(counts.get("update")),
        server_cores: server_cores.map(above_idle),
        idle_cores,
        holder_cores,
        db_before,
        db_taken,
        db_after,
        lost,
        releasing,
        probe: (percentile(&mut probed, 50.0), percentile(&mut probed, 99.0)),
        take_cores,
        lost_taking,
        most_fds: most_fds.load(Ordering::Relaxed),
        put_codes,
        window_secs: secs,
    }
}

/// Keeps the most file descriptors this process had open (its connections, mostly),
/// looking every 100 ms.
async fn sample_fds(most: Arc<AtomicUsize>) {
    loop {
        let open = std::fs::read_dir("/proc/self/fd").map_or(0, Iterator::count);
        most.fetch_max(open, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One run per server and size, each on a runtime of its own.
pub fn run(mode: Mode, floors: &Floors, plane: Option<&ControlPlane>) {
    let (sizes, timing) = if mode.quick {
        (
            [200, 1_000],
            Timing {
                lease: Duration::from_secs(6),
                interval: Duration::from_secs(2),
                window: Duration::from_secs(4),
                idle: Duration::from_secs(1),
            },
        )
    } else {
        (
            [1_000, 10_000],
            Timing {
                lease: Duration::from_secs(30),
                interval: Duration::from_secs(10),
                window: Duration::from_secs(20),
                idle: Duration::from_secs(3),
            },
        )
    };
    let mut runs: Vec<(&'static str, Held)> = Vec::new();
    for locks in sizes {
        for real in [false, true] {
            let what = format!("held_{locks}_{}", if real { "real" } else { "fake" });
            let held = crate::run_on_own_runtime(&what, async {
                let server = if real {
                    Server::Real(Side::real().await, plane.cloned())
                } else {
                    Server::Fake(Box::new(Remote::start().await))
                };
                let name = server.name();
                (name, hold(server, locks, &timing).await)
            });
            runs.push(held);
        }
    }
    report(&runs, floors, &timing);
}

#[allow(clippy::too_many_lines)] // one table, read top to bottom
fn report(runs: &[(&'static str, Held)], floors: &Floors, timing: &Timing) {
    let mut headers = vec!["figure".to_owned()];
    headers.extend(
        runs.iter()
            .map(|(side, held)| format!("{side}, {} locks", num(held.locks as f64))),
    );
    let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
    let mut table = Table::new(
        &format!(
            "12. What held locks cost the server ({:?} leases renewed every {:?})",
            timing.lease, timing.interval
        ),
        &headers,
    );
    let dash = || "—".to_owned();
    let mut row = |what: &str, cell: &dyn Fn(&str, &Held) -> String| {
        let mut cells = vec![what.to_owned()];
        cells.extend(runs.iter().map(|(side, held)| cell(side, held)));
        table.row(cells);
    };
    row("taking them (acquire, 64 at a time)", &|_, h| {
        format!(
            "{} ({} locks/s), {}",
            ms(h.taking),
            num(h.locks as f64 / h.taking.as_secs_f64()),
            h.take_requests
        )
    });
    row(
        "CPU while taking them (cores): server; holder",
        &|side, h| {
            let server = match h.take_cores.0 {
                Some((a, e)) if side == "real" => format!("kube-apiserver {a:.2}, etcd {e:.2}"),
                Some((a, _)) => format!("{a:.2}"),
                None => dash(),
            };
            format!("{server}; {:.2}", h.take_cores.1)
        },
    );
    row("guards lost by the time the last was taken", &|_, h| {
        h.lost_taking.to_string()
    });
    row(
        "most file descriptors open in the holder (its connections)",
        &|_, h| h.most_fds.to_string(),
    );
    row("renewals/s, measured vs locks ÷ interval", &|_, h| {
        format!(
            "{} vs {} ({:.3}×)",
            num(h.renewals_per_second),
            num(h.expected_per_second),
            h.renewals_per_second / h.expected_per_second
        )
    });
    row(
        "ConfigMap PUTs/s answered (any status), kube-apiserver's own count",
        &|_, h| h.served_per_second.map_or_else(dash, num),
    );
    row("requests in the window", &|_, h| {
        format!("{} per renewal", h.window_requests)
    });
    row(
        "share of that server's write ceiling (scenario 8)",
        &|side, h| {
            let ceiling = if side == "real" {
                floors.real.writes_per_second
            } else {
                floors.fake.writes_per_second
            };
            format!("{:.1} %", h.renewals_per_second / ceiling * 100.0)
        },
    );
    row(
        "kube-apiserver's answers to the window's ConfigMap PUTs (the probe's included), by status",
        &|_, h| {
            h.put_codes.as_ref().map_or_else(dash, |codes| {
                codes
                    .0
                    .iter()
                    .map(|(code, n)| format!("{code}: {n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
        },
    );
    row("server CPU when idle (cores)", &|side, h| {
        h.idle_cores.map_or_else(dash, |(a, e)| {
            if side == "real" {
                format!("kube-apiserver {a:.3}, etcd {e:.3}")
            } else {
                format!("{a:.3}")
            }
        })
    });
    row(
        "server CPU above idle: cores, µs per renewal",
        &|side, h| {
            h.server_cores.map_or_else(dash, |(a, e)| {
                if side == "real" {
                    format!(
                        "kube-apiserver {a:.3} ({:.0} µs), etcd {e:.3} ({:.0} µs)",
                        h.per_renewal_us(a),
                        h.per_renewal_us(e)
                    )
                } else {
                    format!("{a:.3} ({:.0} µs)", h.per_renewal_us(a))
                }
            })
        },
    );
    row(
        "CPU of the holding process: cores, µs per renewal",
        &|_, h| {
            format!(
                "{:.3} ({:.0} µs)",
                h.holder_cores,
                h.per_renewal_us(h.holder_cores)
            )
        },
    );
    row(
        "etcd database in use: before, taken, after the window",
        &|_, h| match (h.db_before, h.db_taken, h.db_after) {
            (Some(b), Some(t), Some(a)) => {
                format!("{}, {}, {}", mib(b.in_use), mib(t.in_use), mib(a.in_use))
            }
            _ => dash(),
        },
    );
    row(
        "etcd database file (total): before, after the window",
        &|_, h| match (h.db_before, h.db_after) {
            (Some(b), Some(a)) => format!("{}, {}", mib(b.total), mib(a.total)),
            _ => dash(),
        },
    );
    row(
        "etcd in use, grown per lock taken",
        &|_, h| match (h.db_before, h.db_taken) {
            (Some(b), Some(t)) => kib((t.in_use - b.in_use) / h.locks as f64),
            _ => dash(),
        },
    );
    row(
        "etcd revisions committed in the window, per second",
        &|_, h| h.revisions_per_second().map_or_else(dash, num),
    );
    row("etcd in use, grown per revision", &|_, h| {
        h.db_per_revision().map_or_else(dash, |per| {
            format!(
                "{}{}",
                kib(per),
                if h.compacted() {
                    " (a compaction ran: reads low)"
                } else {
                    ""
                }
            )
        })
    });
    row(
        "at locks ÷ interval: server cores (µs per renewal × rate)",
        &|_, h| {
            h.server_cores.map_or_else(dash, |(a, e)| {
                format!(
                    "{:.2}",
                    h.per_renewal_us(a + e) * h.expected_per_second / 1e6
                )
            })
        },
    );
    row(
        "at locks ÷ interval: etcd history kept between compactions (5–10 min)",
        &|_, h| {
            h.db_per_revision().map_or_else(dash, |per| {
                let bytes = per * h.expected_per_second * COMPACTION.as_secs_f64();
                format!("{} – {}", mib(bytes), mib(2.0 * bytes))
            })
        },
    );
    row("a probe's PUT round trip meanwhile: p50, p99", &|_, h| {
        format!("{}, {}", ms(h.probe.0), ms(h.probe.1))
    });
    row("guards that lost their lock", &|_, h| h.lost.to_string());
    row("releasing them (64 at a time)", &|_, h| {
        format!(
            "{} ({} locks/s)",
            ms(h.releasing),
            num(h.locks as f64 / h.releasing.as_secs_f64())
        )
    });
    table.note(format!(
        "One holding process (this benchmark, one thread) per run, its watch open before the \
         locks are taken; the window is {:?} (two renew intervals). Fake: the server in a \
         process of its own (as in scenario 4). Real: a fresh namespace; the holder's requests \
         are counted client-side (`TestCluster`), and kube-apiserver's `/metrics` counts the \
         ConfigMap PUTs it served. CPU from /proc/<pid>/stat (10 ms ticks), above what the \
         server spent in {:?} idle just before. etcd from its `/metrics` \
         (`etcd_mvcc_db_total_size_in_use_in_bytes`, `_in_bytes`, \
         `etcd_debugging_mvcc_current_revision`); its history is compacted by kube-apiserver \
         every 5 minutes up to the revision of 5 minutes before. Load average at the end: {}.",
        timing.window,
        timing.idle,
        crate::sys::load_average()
    ));
    table.print();
    for (side, h) in runs {
        let key = format!("held.{side}.{}", h.locks);
        figure(
            &format!("{key}.renewals_per_s"),
            h.renewals_per_second,
            "1/s",
        );
        if let Some((a, e)) = h.server_cores {
            figure(&format!("{key}.server_cores"), a + e, "cores");
            figure(
                &format!("{key}.server_us_per_renewal"),
                h.per_renewal_us(a + e),
                "us",
            );
        }
        if let Some((a, e)) = h.server_cores {
            figure(
                &format!("{key}.server_cores_at_nominal_rate"),
                h.per_renewal_us(a + e) * h.expected_per_second / 1e6,
                "cores",
            );
        }
        if let Some(per) = h.db_per_revision() {
            figure(&format!("{key}.etcd_bytes_per_revision"), per, "B");
            figure(
                &format!("{key}.etcd_history_5min_mib"),
                per * h.expected_per_second * COMPACTION.as_secs_f64() / (1024.0 * 1024.0),
                "MiB",
            );
        }
        figure(&format!("{key}.lost"), h.lost as f64, "count");
        figure(&format!("{key}.lost_taking"), h.lost_taking as f64, "count");
        figure(&format!("{key}.most_fds"), h.most_fds as f64, "count");
    }
    // Real ÷ fake, server CPU per renewal, size by size.
    for pair in runs.chunks(2) {
        if let [(_, fake), (_, real)] = pair
            && let (Some((fa, _)), Some((ra, re))) = (fake.server_cores, real.server_cores)
        {
            figure(
                &format!("held.real_to_fake.{}.server_cpu_per_renewal", fake.locks),
                real.per_renewal_us(ra + re) / fake.per_renewal_us(fa).max(1e-9),
                "x",
            );
        }
    }
}
