//! Scenario 2: handover latency. A holder with a 15 s lease releases early while one waiter
//! of another process waits; the latency runs from the start of the release until the
//! waiter's `acquire` returns.

use std::time::{Duration, Instant};

use k8s_openapi::api::rbac::v1::PolicyRule;
use lockheed::testing::{AccessControl, FakeApiServer, Verb};
use lockheed::{KubeLocker, Lock};

use crate::Mode;
use crate::ceiling::Ceiling;
use crate::report::{Counts, Table, figure, ms, num, percentile};
use crate::requests::{manager, process};
use crate::served::Served;

const LEASE: Duration = Duration::from_secs(15);

struct Measured {
    samples: Vec<Duration>,
    requests: Counts,
}

/// Hands lock `name` back and forth between two processes, `rounds` times after `warmup`.
async fn lockheed(
    server: &FakeApiServer,
    name: &str,
    fifo: bool,
    warmup: usize,
    rounds: usize,
) -> Measured {
    let lock = |locker: KubeLocker, holder: &str| {
        Lock::new(name, locker)
            .with_holder(holder)
            .with_duration(LEASE)
            .with_fifo(fifo)
    };
    let locks = [
        lock(process(server, &format!("{name}-a")), "a"),
        lock(process(server, &format!("{name}-b")), "b"),
    ];
    let mut guard = locks[0].acquire().await.expect("first");
    let mut samples = Vec::with_capacity(rounds);
    let mut requests = Counts::default();
    for round in 0..warmup + rounds {
        let waiter = locks[(round + 1) % 2].clone();
        server.reset_counters();
        let waiting = tokio::spawn(async move {
            let guard = waiter.acquire().await.expect("the waiter");
            (guard, Instant::now())
        });
        // Wait until the waiter is in the lock's queue (its one write), or, unfair, until it
        // has had time to look and wait; then give it a moment more to settle.
        let patience = Instant::now();
        while fifo && server.counts().get(Verb::Update) == 0 {
            assert!(
                patience.elapsed() < Duration::from_secs(5),
                "the waiter never queued"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        tokio::time::sleep(Duration::from_millis(if fifo { 1 } else { 20 })).await;
        let started = Instant::now();
        guard.release().await.expect("release");
        let (next, taken_at) = waiting.await.expect("the waiter");
        if round >= warmup {
            samples.push(taken_at - started);
            requests.add(&Counts::of(&server.counts()));
        }
        guard = next;
    }
    guard.release().await.expect("release");
    Measured { samples, requests }
}

/// A server on which each kube-lease-manager of `pairs` holder/waiter pairs has a token of
/// its own, so that the request log says who sent what.
async fn lease_server(pairs: usize) -> Served {
    let rule = PolicyRule {
        api_groups: Some(vec!["coordination.k8s.io".into()]),
        resources: Some(vec!["leases".into()]),
        verbs: vec!["*".into()],
        ..PolicyRule::default()
    };
    let access = (0..pairs)
        .flat_map(|p| [format!("kh{p}"), format!("kw{p}")])
        .fold(AccessControl::new(), |access, id| {
            access.rule(&id, Some("default"), rule.clone())
        });
    Served::with(FakeApiServer::builder().access_control(access)).await
}

/// One kube-lease-manager handover on a Lease of its own: the holder releases `hold` after
/// the waiter started waiting. Returns the time from the start of the release until the
/// waiter's `changed()` says it leads, and the pair's requests in that time.
async fn lease_manager(
    server: &FakeApiServer,
    pair: usize,
    lease: u64,
    grace: u64,
    hold: Duration,
) -> (Duration, Counts) {
    let name = format!("klm-handover-{pair}");
    let (holder_id, waiter_id) = (format!("kh{pair}"), format!("kw{pair}"));
    let holder = manager(server, &name, &holder_id, lease, grace).await;
    assert!(holder.changed().await.expect("the holder leads"));
    let waiter = manager(server, &name, &waiter_id, lease, grace).await;
    let waiting = async {
        while !waiter.changed().await.expect("the waiter") {}
        Instant::now()
    };
    let releasing = async {
        tokio::time::sleep(hold).await;
        let logged = server.requests().len();
        let started = Instant::now();
        holder.release().await.expect("release");
        (started, logged)
    };
    let (taken_at, (started, logged)) = tokio::join!(waiting, releasing);
    let ours = |user: &Option<String>| {
        user.as_deref()
            .is_some_and(|u| u == holder_id || u == waiter_id)
    };
    let requests = Counts::of_records(server.requests()[logged..].iter().filter(|r| ours(&r.user)));
    waiter.release().await.expect("release");
    (taken_at - started, requests)
}

pub async fn run(mode: Mode, ceiling: &Ceiling) {
    let server = Served::start().await;
    let (warmup, rounds) = if mode.quick { (5, 60) } else { (20, 500) };
    let mut fair = lockheed(&server, "handover", true, warmup, rounds).await;
    let unfair_rounds = rounds / 5;
    let mut unfair = lockheed(&server, "unfair", false, warmup / 2, unfair_rounds).await;

    // kube-lease-manager: each handover takes about a lease, so pairs run side by side, each
    // on its own Lease; quick mode uses 3 s leases.
    let (lease, grace, batches, pairs) = if mode.quick {
        (3, 1, 1, 4)
    } else {
        (15, 5, 2, 10)
    };
    let hold = Duration::from_millis(200);
    let lease_server = lease_server(batches * pairs).await;
    let mut klm = Vec::new();
    let mut klm_requests = Counts::default();
    for batch in 0..batches {
        let handovers =
            (0..pairs).map(|p| lease_manager(&lease_server, batch * pairs + p, lease, grace, hold));
        for (latency, requests) in futures::future::join_all(handovers).await {
            klm.push(latency);
            klm_requests.add(&requests);
        }
    }

    let mut table = Table::new(
        "2. Handover latency (early release, one waiter in another process)",
        &[
            "library",
            "lease",
            "handovers",
            "p50",
            "p99",
            "max",
            "requests per handover",
            "p50 ÷ lockheed p50",
        ],
    );
    let fair_p50 = percentile(&mut fair.samples, 50.0);
    let base = fair_p50.as_secs_f64();
    let mut add = |name: &str, lease: String, samples: &mut Vec<Duration>, requests: String| {
        let p50 = percentile(samples, 50.0);
        table.row(vec![
            name.to_owned(),
            lease,
            samples.len().to_string(),
            ms(p50),
            ms(percentile(samples, 99.0)),
            ms(*samples.iter().max().expect("samples")),
            requests,
            num(p50.as_secs_f64() / base),
        ]);
        p50
    };
    let count = fair.samples.len() as u64;
    add(
        "lockheed (fair, the default)",
        "15 s".into(),
        &mut fair.samples,
        fair.requests.per(count),
    );
    let count = unfair.samples.len() as u64;
    let unfair_p50 = add(
        "lockheed `with_fifo(false)`",
        "15 s".into(),
        &mut unfair.samples,
        unfair.requests.per(count),
    );
    let count = klm.len() as u64;
    let klm_p50 = add(
        "kube-lease-manager 0.13",
        format!("{lease} s (grace {grace} s)"),
        &mut klm,
        klm_requests.per(count),
    );
    table.row(vec![
        "client-go `leaderelection`, counted from its code".into(),
        "15 s".into(),
        "—".into(),
        "≈ 1.7 s".into(),
        "≤ 4.4 s".into(),
        "4.4 s".into(),
        "1 GET per retry + GET + UPDATE".into(),
        num(1.675 / base),
    ]);
    table.row(vec![
        "floor: one PUT round trip (scenario 6)".into(),
        "—".into(),
        "—".into(),
        ms(ceiling.put_p50),
        "—".into(),
        "—".into(),
        "1".into(),
        num(ceiling.put_p50.as_secs_f64() / base),
    ]);
    table.row(vec![
        "floor: a PUT until another client's watch event (scenario 6)".into(),
        "—".into(),
        "—".into(),
        ms(ceiling.put_to_event_p50),
        "—".into(),
        "—".into(),
        "1".into(),
        num(ceiling.put_to_event_p50.as_secs_f64() / base),
    ]);
    table.note(format!(
        "lockheed: {warmup} warm-up rounds not counted; the waiter has queued (its one write, \
         counted in the requests, with the release's) and 1 ms passed before the release starts; latency runs \
         from the start of `release()` until the waiter's `acquire()` returns. Unfair: the \
         waiter looked 20 ms before the release. kube-lease-manager: the holder releases \
         {} ms after the waiter's first `changed()` began; the waiter sleeps until the lease \
         it saw would end, then looks again ({pairs} Leases side by side, {batches} \
         batch(es)); its requests are the holder's and the waiter's from the start of the \
         release until the waiter leads. client-go: a waiter retries every \
         RetryPeriod (2 s) plus up to 120 % jitter, so a release waits for the next retry: \
         E[T²]/2E[T] ≈ 1.7 s for T uniform in 2–4.4 s.",
        hold.as_millis()
    ));
    table.print();
    figure("handover.lockheed.p50_ms", base * 1e3, "ms");
    figure(
        "handover.lockheed.unfair.p50_ms",
        unfair_p50.as_secs_f64() * 1e3,
        "ms",
    );
    figure(
        "handover.kube_lease_manager.p50_ms",
        klm_p50.as_secs_f64() * 1e3,
        "ms",
    );
    figure("handover.kube_lease_manager.lease_s", lease as f64, "s");
    figure(
        "handover.ratio_klm_to_lockheed",
        klm_p50.as_secs_f64() / base,
        "x",
    );
}
