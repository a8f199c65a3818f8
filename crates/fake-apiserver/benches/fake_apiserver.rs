//! How fast the fake API server answers, measured through `kube::Api` over loopback HTTP.
//!
//! Later benchmarks of the lock API run against this server, so its own cost per request is
//! the floor under theirs. Run with:
//!
//! ```text
//! cargo bench -p lockheed-fake-apiserver --bench fake_apiserver
//! ```
//!
//! It prints the mean and 99th percentile latency of a get, a compare-and-swap replace and a
//! list of 1,000 objects, and how many such operations per second one client sustains.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, PostParams};
use lockheed_fake_apiserver::FakeApiServer;

const ROUNDS: usize = 2_000;

fn report(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let total: Duration = samples.iter().sum();
    let mean = total / u32::try_from(samples.len()).expect("few samples");
    let p99 = samples[samples.len() * 99 / 100];
    let per_second = samples.len() as f64 / total.as_secs_f64();
    println!(
        "{name:<28} mean {:>8.1} µs   p99 {:>8.1} µs   {per_second:>8.0} ops/s",
        mean.as_secs_f64() * 1e6,
        p99.as_secs_f64() * 1e6,
    );
}

async fn timed<F, Fut>(rounds: usize, mut op: F) -> Vec<Duration>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut samples = Vec::with_capacity(rounds);
    for i in 0..rounds {
        let started = Instant::now();
        op(i).await;
        samples.push(started.elapsed());
    }
    samples
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let server = FakeApiServer::start().await.expect("server starts");
    let api: Api<ConfigMap> = Api::namespaced(server.client(), "default");
    let mut cm = ConfigMap::default();
    cm.metadata.name = Some("bench".into());
    api.create(&PostParams::default(), &cm)
        .await
        .expect("create");

    let get = timed(ROUNDS, |_| {
        let api = api.clone();
        async move {
            api.get("bench").await.expect("get");
        }
    })
    .await;
    report("get", get);

    let replace = timed(ROUNDS, |i| {
        let api = api.clone();
        async move {
            let mut current = api.get("bench").await.expect("get");
            current.data = Some([("n".to_owned(), i.to_string())].into());
            api.replace("bench", &PostParams::default(), &current)
                .await
                .expect("replace");
        }
    })
    .await;
    report("get + replace (CAS)", replace);

    for i in 0..1_000 {
        let mut cm = ConfigMap::default();
        cm.metadata.name = Some(format!("item-{i}"));
        api.create(&PostParams::default(), &cm)
            .await
            .expect("create");
    }
    let list = timed(100, |_| {
        let api = api.clone();
        async move {
            api.list(&ListParams::default()).await.expect("list");
        }
    })
    .await;
    report("list of 1,001", list);
    println!("requests: {:?}", server.counts().iter().collect::<Vec<_>>());
}
