//! Scenario 6: what the fake API server itself can do, through `kube::Api` over loopback
//! HTTP, so that every other figure reads as a fraction of it (the approach of
//! `benches/fake_apiserver.rs`, plus concurrent writers and watch delivery).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams, WatchEvent, WatchParams};

use crate::Mode;
use crate::report::{Table, figure, ms, num, percentile};
use crate::served::Served;

/// What later scenarios compare against.
#[derive(Debug, Clone, Copy)]
pub struct Ceiling {
    /// Median round trip of one compare-and-swap PUT.
    pub put_p50: Duration,
    /// Median time from the start of a PUT until another client's watch delivers it.
    pub put_to_event_p50: Duration,
    /// Writes per second that 8 concurrent clients sustain (the most of the runs).
    pub writes_per_second: f64,
}

fn config_map(name: &str) -> ConfigMap {
    let mut cm = ConfigMap::default();
    cm.metadata.name = Some(name.to_owned());
    cm
}

pub async fn create(api: &Api<ConfigMap>, name: &str) -> ConfigMap {
    api.create(&PostParams::default(), &config_map(name))
        .await
        .expect("create")
}

/// Replaces `current` with a new value of key `n`, carrying its resourceVersion (a
/// compare-and-swap, as every lock write is), and returns what was stored.
pub async fn put(api: &Api<ConfigMap>, mut current: ConfigMap, n: u64) -> ConfigMap {
    current.data = Some([("n".to_owned(), n.to_string())].into());
    let name = current.metadata.name.clone().expect("named");
    api.replace(&name, &PostParams::default(), &current)
        .await
        .expect("replace")
}

/// Another client's watch of one ConfigMap, telling when each value of `n` is delivered.
pub struct Delivered {
    rx: tokio::sync::mpsc::UnboundedReceiver<(u64, Instant)>,
    watching: tokio::task::JoinHandle<()>,
}

impl Delivered {
    /// Watches `current` through `watcher` from its resourceVersion on.
    pub async fn watch(watcher: &Api<ConfigMap>, current: &ConfigMap) -> Self {
        let name = current.metadata.name.as_deref().expect("named");
        let rv = current
            .metadata
            .resource_version
            .as_deref()
            .expect("a version");
        let params = WatchParams::default().fields(&format!("metadata.name={name}"));
        let mut events = watcher.watch(&params, rv).await.expect("watch").boxed();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let watching = tokio::spawn(async move {
            while let Some(Ok(event)) = events.next().await {
                if let WatchEvent::Modified(cm) = event {
                    let n: u64 = cm
                        .data
                        .as_ref()
                        .and_then(|d| d.get("n"))
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(0);
                    if tx.send((n, Instant::now())).is_err() {
                        return;
                    }
                }
            }
        });
        Self { rx, watching }
    }

    /// PUTs `n` into `current` and waits until the watch delivers it: what was stored, and
    /// how long from the start of the PUT.
    pub async fn put(
        &mut self,
        api: &Api<ConfigMap>,
        current: ConfigMap,
        n: u64,
    ) -> (ConfigMap, Duration) {
        let started = Instant::now();
        let stored = put(api, current, n).await;
        loop {
            let (seen, at) = self.rx.recv().await.expect("the watch goes on");
            if seen == n {
                return (stored, at - started);
            }
        }
    }
}

impl Drop for Delivered {
    fn drop(&mut self) {
        self.watching.abort();
    }
}

pub async fn run(mode: Mode) -> Ceiling {
    let server = Served::start().await;
    let rounds = if mode.quick { 400 } else { 3_000 };
    let window = if mode.quick {
        Duration::from_secs(1)
    } else {
        Duration::from_secs(4)
    };
    let mut table = Table::new(
        "6. The fake API server's ceiling (kube::Api over loopback HTTP)",
        &["operation", "p50", "p99", "per second"],
    );

    // Sequential GETs and PUTs from one client.
    let api: Api<ConfigMap> = Api::namespaced(server.client(), "default");
    let mut current = create(&api, "ceiling").await;
    let mut gets = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let started = Instant::now();
        api.get("ceiling").await.expect("get");
        gets.push(started.elapsed());
    }
    let mut puts = Vec::with_capacity(rounds);
    for i in 0..rounds {
        let started = Instant::now();
        current = put(&api, current, i as u64).await;
        puts.push(started.elapsed());
    }
    for (name, samples) in [
        ("GET, one client", &mut gets),
        ("PUT (CAS), one client", &mut puts),
    ] {
        let total: Duration = samples.iter().sum();
        let rate = samples.len() as f64 / total.as_secs_f64();
        let (p50, p99) = (percentile(samples, 50.0), percentile(samples, 99.0));
        table.row(vec![name.into(), ms(p50), ms(p99), num(rate)]);
    }
    let put_p50 = percentile(&mut puts, 50.0);
    figure(
        "ceiling.get.p50_ms",
        percentile(&mut gets, 50.0).as_secs_f64() * 1e3,
        "ms",
    );
    figure("ceiling.put.p50_ms", put_p50.as_secs_f64() * 1e3, "ms");

    // A PUT until another client's watch delivers it: the floor under a handover.
    let watcher: Api<ConfigMap> = Api::namespaced(server.client_for_token("watcher"), "default");
    let mut seen = Delivered::watch(&watcher, &current).await;
    let mut delivered = Vec::with_capacity(rounds);
    for i in 0..rounds as u64 {
        let n = 1_000_000 + i;
        let took;
        (current, took) = seen.put(&api, current, n).await;
        delivered.push(took);
    }
    drop(seen);
    let put_to_event_p50 = percentile(&mut delivered, 50.0);
    table.row(vec![
        "PUT → another client's watch event".into(),
        ms(put_to_event_p50),
        ms(percentile(&mut delivered, 99.0)),
        "—".into(),
    ]);
    figure(
        "ceiling.put_to_event.p50_ms",
        put_to_event_p50.as_secs_f64() * 1e3,
        "ms",
    );

    // Concurrent writers, each its own client and object.
    let mut writes_per_second: f64 = 0.0;
    for writers in [8, 64] {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for w in 0..writers {
            let api: Api<ConfigMap> =
                Api::namespaced(server.client_for_token(&format!("w{w}")), "default");
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
        tokio::time::sleep(Duration::from_millis(200)).await;
        let (before, started) = (done.load(Ordering::Relaxed), Instant::now());
        tokio::time::sleep(window).await;
        let rate = (done.load(Ordering::Relaxed) - before) as f64 / started.elapsed().as_secs_f64();
        stop.store(true, Ordering::Relaxed);
        for task in tasks {
            task.await.expect("a writer");
        }
        writes_per_second = writes_per_second.max(rate);
        table.row(vec![
            format!("PUT (CAS), {writers} clients at once"),
            "—".into(),
            "—".into(),
            num(rate),
        ]);
        figure(
            &format!("ceiling.puts_{writers}_clients.per_s"),
            rate,
            "1/s",
        );
    }
    table.note(format!(
        "{rounds} sequential requests each; concurrent writers ran {window:?} after 0.2 s of \
         warm-up. The server runs on a thread of its own, its clients on another (the benchmark's runtime)."
    ));
    table.print();
    Ceiling {
        put_p50,
        put_to_event_p50,
        writes_per_second,
    }
}
