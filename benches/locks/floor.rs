//! Scenario 8: each server's own floor and ceiling, side by side: a GET and a compare-and-swap
//! PUT of one client, a PUT until another client's watch delivers it (the floor under every
//! handover), and the writes per second that concurrent clients sustain (the ceiling every
//! write rate below is a share of). The approach of scenario 6, on both servers, with plain
//! `kube::Api` clients.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Api;

use crate::Mode;
use crate::ceiling::{Delivered, create, put};
use crate::plane::ControlPlane;
use crate::report::{Table, figure, ms, num, percentile};
use crate::sides::Side;
use crate::sys::cpu_time;

/// One server's floor and ceiling.
#[derive(Debug, Clone, Copy, Default)]
pub struct Floor {
    /// The median round trip of one compare-and-swap PUT.
    pub put_p50: Duration,
    /// From the start of a PUT until another client's watch delivers it, PUTs back to back.
    pub event_p50: Duration,
    pub event_p99: Duration,
    /// The same, each PUT after [`IDLE`] without requests, as each handover of scenario 10
    /// starts: the threads involved have gone to sleep and must be woken.
    pub idle_event_p50: Duration,
    pub idle_event_p99: Duration,
    /// The most writes per second of the concurrent runs.
    pub writes_per_second: f64,
}

/// How long the clients are idle before each PUT of the idle floor, and before each release
/// of scenario 10.
pub const IDLE: Duration = Duration::from_millis(20);

/// Both servers' floors, measured in the same run.
#[derive(Debug, Clone, Copy, Default)]
pub struct Floors {
    pub fake: Floor,
    pub real: Floor,
}

impl Floors {
    pub fn of(&self, side: &Side) -> &Floor {
        if side.is_real() {
            &self.real
        } else {
            &self.fake
        }
    }
}

/// Samples of sequential GETs, PUTs, PUTs until another client's watch event, and the same
/// after [`IDLE`] each (`idle_rounds` of them).
async fn sequential(side: &Side, rounds: usize, idle_rounds: usize) -> [Vec<Duration>; 4] {
    let api: Api<ConfigMap> = Api::namespaced(side.plain_client().await, side.namespace());
    let mut current = create(&api, "floor").await;
    let mut gets = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let started = Instant::now();
        api.get("floor").await.expect("get");
        gets.push(started.elapsed());
    }
    let mut puts = Vec::with_capacity(rounds);
    for i in 0..rounds {
        let started = Instant::now();
        current = put(&api, current, i as u64).await;
        puts.push(started.elapsed());
    }
    let watcher: Api<ConfigMap> = Api::namespaced(side.plain_client().await, side.namespace());
    let mut seen = Delivered::watch(&watcher, &current).await;
    let mut delivered = [Vec::with_capacity(rounds), Vec::with_capacity(idle_rounds)];
    let mut n = 1_000_000;
    for (idle, samples) in delivered.iter_mut().enumerate() {
        for _ in 0..[rounds, idle_rounds][idle] {
            if idle == 1 {
                tokio::time::sleep(IDLE).await;
            }
            n += 1;
            let took;
            (current, took) = seen.put(&api, current, n).await;
            samples.push(took);
        }
    }
    drop(seen);
    let [hot, idle] = delivered;
    [gets, puts, hot, idle]
}

/// What `writers` concurrent clients (each its own connections and object) sustain, and the
/// CPU spent meanwhile: (writes/s, this process's cores, kube-apiserver's, etcd's).
async fn concurrent(
    side: &Side,
    plane: Option<&ControlPlane>,
    writers: usize,
    window: Duration,
) -> (f64, f64, Option<(f64, f64)>) {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for w in 0..writers {
        let api: Api<ConfigMap> = Api::namespaced(side.plain_client().await, side.namespace());
        let mut current = create(&api, &format!("ceiling-{writers}-{w}")).await;
        let (stop, done) = (Arc::clone(&stop), Arc::clone(&done));
        tasks.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                current = put(&api, current, n).await;
                n += 1;
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (before, started) = (done.load(Ordering::Relaxed), Instant::now());
    let (cpu, plane_cpu) = (cpu_time("self"), plane.map(ControlPlane::cpu));
    tokio::time::sleep(window).await;
    let secs = started.elapsed().as_secs_f64();
    let rate = (done.load(Ordering::Relaxed) - before) as f64 / secs;
    let cores = cpu_time("self").saturating_sub(cpu).as_secs_f64() / secs;
    let server = plane
        .zip(plane_cpu)
        .filter(|_| side.is_real())
        .map(|(plane, before)| plane.cpu().cores_since(&before, secs));
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.expect("a writer");
    }
    (rate, cores, server)
}

#[allow(clippy::too_many_lines)] // one table, read top to bottom
pub async fn run(mode: Mode, plane: Option<&ControlPlane>) -> Floors {
    let (rounds, idle_rounds) = if mode.quick { (200, 100) } else { (2_000, 500) };
    let window = Duration::from_secs(if mode.quick { 1 } else { 4 });
    let sides = Side::both().await;
    let mut floors = Floors::default();
    let mut table = Table::new(
        "8. Each server's floor and ceiling (kube::Api, loopback)",
        &[
            "operation",
            "fake p50",
            "fake p99",
            "fake per second",
            "real p50",
            "real p99",
            "real per second",
            "real ÷ fake",
        ],
    );
    let mut samples = Vec::new();
    for side in &sides {
        samples.push(sequential(side, rounds, idle_rounds).await);
    }
    let [mut fake, mut real]: [[Vec<Duration>; 4]; 2] = samples.try_into().expect("two sides");
    for (i, what) in [
        "GET, one client",
        "PUT (CAS), one client",
        "PUT → another client's watch event",
        "the same, each PUT after 20 ms idle",
    ]
    .iter()
    .enumerate()
    {
        let (f, r) = (&mut fake[i], &mut real[i]);
        let rate = |s: &[Duration]| s.len() as f64 / s.iter().sum::<Duration>().as_secs_f64();
        let (f50, f99, r50, r99) = (
            percentile(f, 50.0),
            percentile(f, 99.0),
            percentile(r, 50.0),
            percentile(r, 99.0),
        );
        let per_second = |s: &[Duration]| if i >= 2 { "—".into() } else { num(rate(s)) };
        table.row(vec![
            (*what).into(),
            ms(f50),
            ms(f99),
            per_second(f),
            ms(r50),
            ms(r99),
            per_second(r),
            format!("{} (p50)", num(r50.as_secs_f64() / f50.as_secs_f64())),
        ]);
        let key = ["get", "put", "put_to_event", "put_to_event_idle"][i];
        for (side, p50, p99) in [("fake", f50, f99), ("real", r50, r99)] {
            figure(
                &format!("floor.{side}.{key}.p50_ms"),
                p50.as_secs_f64() * 1e3,
                "ms",
            );
            figure(
                &format!("floor.{side}.{key}.p99_ms"),
                p99.as_secs_f64() * 1e3,
                "ms",
            );
        }
        match i {
            1 => {
                floors.fake.put_p50 = f50;
                floors.real.put_p50 = r50;
            }
            2 => {
                (floors.fake.event_p50, floors.fake.event_p99) = (f50, f99);
                (floors.real.event_p50, floors.real.event_p99) = (r50, r99);
            }
            3 => {
                (floors.fake.idle_event_p50, floors.fake.idle_event_p99) = (f50, f99);
                (floors.real.idle_event_p50, floors.real.idle_event_p99) = (r50, r99);
            }
            _ => {}
        }
    }

    let mut cpu_notes = Vec::new();
    for writers in [8, 64] {
        let mut rates = Vec::new();
        for side in &sides {
            let (rate, cores, server) = concurrent(side, plane, writers, window).await;
            figure(
                &format!("ceiling.{}.puts_{writers}_clients.per_s", side.name()),
                rate,
                "1/s",
            );
            let floor = if side.is_real() {
                &mut floors.real
            } else {
                &mut floors.fake
            };
            floor.writes_per_second = floor.writes_per_second.max(rate);
            cpu_notes.push(match server {
                Some((apiserver, etcd)) => format!(
                    "{writers} writers on the real server: this process {cores:.2} cores, \
                     kube-apiserver {apiserver:.2}, etcd {etcd:.2}"
                ),
                None => format!(
                    "{writers} writers on the {} server: this process (server thread \
                     included) {cores:.2} cores",
                    side.name()
                ),
            });
            rates.push(rate);
        }
        table.row(vec![
            format!("PUT (CAS), {writers} clients at once"),
            "—".into(),
            "—".into(),
            num(rates[0]),
            "—".into(),
            "—".into(),
            num(rates[1]),
            format!("{} (writes/s)", num(rates[1] / rates[0])),
        ]);
    }
    table.note(format!(
        "{rounds} sequential requests each ({idle_rounds} after 20 ms idle); concurrent writers ran {window:?} after 0.3 s of \
         warm-up, each with its own connections and object, all in this process (one thread). \
         Fake: in this process, on a thread of its own. Real: kube-apiserver and etcd \
         (`--unsafe-no-fsync`) as `scripts/control-plane` starts them, over TLS, as the \
         administrator (exempt from API Priority and Fairness), in a fresh namespace; both \
         compete with the clients for the machine's 2 cores. CPU from /proc/<pid>/stat: {}. \
         Load average at the end: {}.",
        cpu_notes.join("; "),
        crate::sys::load_average()
    ));
    table.print();
    for (side, floor) in [("fake", &floors.fake), ("real", &floors.real)] {
        figure(
            &format!("ceiling.{side}.writes_per_s"),
            floor.writes_per_second,
            "1/s",
        );
    }
    figure(
        "ceiling.real_to_fake",
        floors.real.writes_per_second / floors.fake.writes_per_second,
        "x",
    );
    floors
}
