//! Scenario 1: API requests per operation, from the fake server's counters, for lockheed and
//! kube-lease-manager 0.13; Go lockheed, kube-lock and client-go counted from their code.

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, DeleteParams};
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder};
use lockheed::testing::FakeApiServer;
use lockheed::{KubeLocker, Lock, LockGuard};

use crate::Mode;
use crate::report::{Counts, Table, figure};
use crate::served::Served;

/// A locker with its own client: another process, as far as the server can tell.
pub fn process(server: &FakeApiServer, token: &str) -> KubeLocker {
    KubeLocker::new(server.client_for_token(token), "default")
}

/// The requests `op` makes, with the counters reset just before it.
async fn counted<T>(server: &FakeApiServer, op: impl Future<Output = T>) -> (T, Counts) {
    server.reset_counters();
    let out = op.await;
    (out, Counts::of(&server.counts()))
}

/// Sums the counts of repeated operations, and says how many there were.
#[derive(Default)]
struct Tally {
    counts: Counts,
    ops: u64,
}

impl Tally {
    fn add(&mut self, counts: &Counts) {
        self.counts.add(counts);
        self.ops += 1;
    }

    fn cell(&self) -> String {
        self.counts.per(self.ops)
    }

    fn per_op(&self) -> f64 {
        self.counts.total() as f64 / self.ops.max(1) as f64
    }
}

const LEASE: Duration = Duration::from_secs(30);

/// Lets a watch catch up with the latest writes, outside what is counted.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(20)).await;
}

async fn release(guard: LockGuard<KubeLocker>) {
    guard.release().await.expect("release");
}

#[allow(clippy::too_many_lines)] // one scenario, read top to bottom
pub async fn run(mode: Mode) {
    let reps = if mode.quick { 5 } else { 20 };
    let server = Served::start().await;
    let mut table = Table::new(
        "1. API requests per operation",
        &[
            "library, mode",
            "cold acquire",
            "warm acquire",
            "busy try_acquire",
            "renew",
            "release",
            "counted",
        ],
    );

    // lockheed, in a process that has no watch yet (each repetition a new client).
    let (mut cold, mut warm, mut busy, mut renew, mut rel): (Tally, Tally, Tally, Tally, Tally) =
        Default::default();
    let holder = process(&server, "holder");
    let held = Lock::new("busy", holder.clone())
        .with_duration(LEASE)
        .try_acquire()
        .await
        .expect("held");
    // The locks that warm attempts find existing and free.
    for name in ["warm", "aw"] {
        release(
            Lock::new(name, holder.clone())
                .try_acquire()
                .await
                .expect("created"),
        )
        .await;
    }
    for i in 0..reps {
        let (guard, c) = counted(&server, async {
            let lock = Lock::new(format!("cold-{i}"), process(&server, &format!("c{i}")));
            lock.try_acquire().await.expect("cold")
        })
        .await;
        Tally::add(&mut cold, &c);
        release(guard).await;
        let lock = Lock::new("warm", process(&server, &format!("w{i}"))).with_duration(LEASE);
        let (guard, c) = counted(&server, lock.try_acquire()).await;
        Tally::add(&mut warm, &c);
        let (released, c) = counted(&server, guard.expect("warm").release()).await;
        released.expect("release");
        Tally::add(&mut rel, &c);
        let lock = Lock::new("busy", process(&server, &format!("b{i}")));
        let (err, c) = counted(&server, lock.try_acquire()).await;
        assert!(err.expect_err("held").is_held());
        Tally::add(&mut busy, &c);
    }
    // Renewals: a short lease renewed every 250 ms, for ten intervals.
    let interval = Duration::from_millis(250);
    let renewing = Lock::new("renew", process(&server, "r"))
        .with_duration(Duration::from_secs(3))
        .with_renew_interval(interval)
        .try_acquire()
        .await
        .expect("renewing");
    tokio::time::sleep(interval / 2).await;
    let ((), c) = counted(&server, tokio::time::sleep(interval * 10)).await;
    renew.counts.add(&c);
    renew.ops = 10;
    release(renewing).await;
    let new_process = [&cold, &warm, &busy, &renew, &rel];
    table.row(row(
        "lockheed `try_acquire`, new process",
        &new_process,
        reps,
    ));
    figure("requests.lockheed.warm_acquire", warm.per_op(), "requests");
    figure("requests.lockheed.renew", renew.per_op(), "requests");
    figure("requests.lockheed.release", rel.per_op(), "requests");

    // lockheed in a process whose watch runs (started by an `acquire`): it starts from what
    // the watch knows.
    let (mut cold, mut warm, mut busy, mut acq_cold, mut acq_warm, mut handover) =
        Default::default();
    let watching = process(&server, "watching");
    let first = Lock::new("watched", watching.clone())
        .acquire()
        .await
        .expect("first");
    release(first).await;
    for i in 0..reps {
        settle().await;
        let (guard, c) = counted(
            &server,
            Lock::new(format!("wcold-{i}"), watching.clone()).try_acquire(),
        )
        .await;
        Tally::add(&mut cold, &c);
        release(guard.expect("cold")).await;
        settle().await;
        let lock = Lock::new("watched", watching.clone()).with_duration(LEASE);
        let (guard, c) = counted(&server, lock.try_acquire()).await;
        Tally::add(&mut warm, &c);
        release(guard.expect("warm")).await;
        settle().await;
        let (err, c) = counted(&server, Lock::new("busy", watching.clone()).try_acquire()).await;
        assert!(err.expect_err("held").is_held());
        Tally::add(&mut busy, &c);
    }
    table.row(row(
        "lockheed `try_acquire`, process already watching",
        &[&cold, &warm, &busy, &Tally::default(), &Tally::default()],
        reps,
    ));
    figure(
        "requests.lockheed.watching.warm_acquire",
        warm.per_op(),
        "requests",
    );

    // `acquire` in a new process: it opens the process's watch (a LIST and a WATCH) first.
    // And a release that hands the lock over to a queued waiter of another process: the
    // counts include everything the waiter does until its `acquire` returns.
    for i in 0..reps {
        let lock = Lock::new(format!("acold-{i}"), process(&server, &format!("ac{i}")));
        // The watch request goes out as the LIST completes: let it arrive before counting.
        let (guard, c) = counted(&server, async {
            let guard = lock.acquire().await;
            settle().await;
            guard
        })
        .await;
        Tally::add(&mut acq_cold, &c);
        release(guard.expect("acquire")).await;
        let lock = Lock::new("aw", process(&server, &format!("aw{i}"))).with_duration(LEASE);
        let (guard, c) = counted(&server, async {
            let guard = lock.acquire().await;
            settle().await;
            guard
        })
        .await;
        Tally::add(&mut acq_warm, &c);
        let waiter = Lock::new("aw", process(&server, &format!("aww{i}"))).with_duration(LEASE);
        let waiting = tokio::spawn(async move { waiter.acquire().await });
        queued(&holder, "aw").await;
        let guard = guard.expect("acquire");
        let (taken, c) = counted(&server, async {
            guard.release().await.expect("release");
            waiting.await.expect("the waiter")
        })
        .await;
        Tally::add(&mut handover, &c);
        release(taken.expect("handed over")).await;
    }
    table.row(vec![
        "lockheed `acquire`, new process".into(),
        acq_cold.cell(),
        acq_warm.cell(),
        "— (waits)".into(),
        "as above".into(),
        format!("{} to a queued waiter, its take included", handover.cell()),
        format!("measured, {reps}×"),
    ]);
    figure(
        "requests.lockheed.handover_release",
        handover.per_op(),
        "requests",
    );
    release(held).await;

    lease_manager_rows(&server, mode, reps, &mut table).await;

    table.row(vec![
        "Go lockheed v0.5.3".into(),
        "5 (LIST + CREATE + GET + PUT + PUT)".into(),
        "4 (LIST + GET + PUT + PUT)".into(),
        "5 (LIST + GET + PUT + GET + PUT)".into(),
        "3 (GET + PUT + PUT)".into(),
        "3 (GET + PUT + PUT)".into(),
        "counted from their code".into(),
    ]);
    table.row(vec![
        "kube-lock (Go)".into(),
        "—".into(),
        "2 (GET + PATCH)".into(),
        "1 (GET), then polls".into(),
        "— (no expiry)".into(),
        "2 (GET + PATCH)".into(),
        "counted from their code".into(),
    ]);
    table.row(vec![
        "client-go `leaderelection`".into(),
        "2 (GET + CREATE)".into(),
        "2 (GET + UPDATE)".into(),
        "1 (GET), retried every 2 s".into(),
        "1 (UPDATE; GET + UPDATE if it fails)".into(),
        "1 (UPDATE, with `ReleaseOnCancel`)".into(),
        "counted from their code".into(),
    ]);
    table.note(
        "Cold: the lock's object does not exist yet. Warm: it exists and is free. Busy: \
         another process holds it. kube-lease-manager has no single attempt: its busy \
         column is what a new manager's `changed()` sends before it sleeps until the lease \
         ends. Go lockheed: `kubelocker.go` (`Init` lists the namespace; `Acquire`, `Renew` \
         and `Release` reserve the ConfigMap with a PUT before the PUT that writes; a busy \
         attempt takes the reservation back with a GET and a PUT). client-go: \
         `tools/leaderelection/leaderelection.go` (`tryAcquireOrRenew`, `release`).",
    );
    table.print();
}

fn row(name: &str, tallies: &[&Tally; 5], reps: usize) -> Vec<String> {
    let mut cells = vec![name.to_owned()];
    cells.extend(tallies.iter().map(|t| {
        if t.ops == 0 {
            "as above".to_owned()
        } else {
            t.cell()
        }
    }));
    cells.push(format!("measured, {reps}×"));
    cells
}

/// Waits until lock `name` has a queued waiter, looking through `locker`.
pub async fn queued(locker: &KubeLocker, name: &str) {
    use lockheed::Locker as _;
    for _ in 0..5_000 {
        let info = locker.get(name).await.expect("get").expect("the lock");
        if !info.waiters.is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("nobody queued for {name}");
}

/// A kube-lease-manager with identity `id` on Lease `lease`, in a client of its own.
pub async fn manager(
    server: &FakeApiServer,
    lease: &str,
    id: &str,
    duration: u64,
    grace: u64,
) -> LeaseManager {
    LeaseManagerBuilder::new(server.client_for_token(id), lease)
        .with_identity(id)
        .with_field_manager(format!("kube-lease-manager-{id}"))
        .with_duration(duration)
        .with_grace(grace)
        .build()
        .await
        .expect("a lease manager")
}

async fn lease_manager_rows(server: &FakeApiServer, mode: Mode, reps: usize, table: &mut Table) {
    let (mut cold, mut warm, mut busy, mut rel, mut reused) = (
        Tally::default(),
        Tally::default(),
        Tally::default(),
        Tally::default(),
        Tally::default(),
    );
    let holder = manager(server, "klm-busy", "klm-holder", 30, 5).await;
    assert!(holder.changed().await.expect("holder"));
    for i in 0..reps {
        let lease = format!("klm-{i}");
        let (m, c) = counted(server, async {
            let m = manager(server, &lease, &format!("k{i}"), 30, 5).await;
            assert!(m.changed().await.expect("cold"));
            m
        })
        .await;
        Tally::add(&mut cold, &c);
        let (released, c) = counted(server, m.release()).await;
        released.expect("release");
        Tally::add(&mut rel, &c);
        let (m, c) = counted(server, async {
            let m = manager(server, &lease, &format!("k{i}-again"), 30, 5).await;
            assert!(m.changed().await.expect("warm"));
            m
        })
        .await;
        Tally::add(&mut warm, &c);
        m.release().await.expect("release");
        assert!(!m.changed().await.expect("released"));
        let (taken, c) = counted(server, m.changed()).await;
        assert!(taken.expect("again"));
        Tally::add(&mut reused, &c);
        m.release().await.expect("release");
        let ((), c) = counted(server, async {
            let m = manager(server, "klm-busy", &format!("kb{i}"), 30, 5).await;
            // It looks, then sleeps until the lease it saw ends.
            let _ = tokio::time::timeout(Duration::from_millis(300), m.changed()).await;
        })
        .await;
        Tally::add(&mut busy, &c);
    }
    // Renewals, in real time: 2 s leases, renewed a second before they end.
    let renewer = manager(server, "klm-renew", "klm-renewer", 2, 1).await;
    assert!(renewer.changed().await.expect("renewer"));
    let window = if mode.quick { 2.5 } else { 4.5 };
    let ((), c) = counted(server, async {
        let _ = tokio::time::timeout(Duration::from_secs_f64(window), renewer.changed()).await;
    })
    .await;
    let renew = Tally {
        ops: c.get("patch"),
        counts: c,
    };
    renewer.release().await.expect("release");
    let leases: Api<Lease> = Api::namespaced(server.client(), "default");
    let _ = leases.delete("klm-renew", &DeleteParams::default()).await;

    table.row(vec![
        "kube-lease-manager 0.13, new manager (`build` + `changed`)".into(),
        cold.cell(),
        warm.cell(),
        busy.cell(),
        renew.cell(),
        rel.cell(),
        format!("measured, {reps}× ({} renewals)", renew.ops),
    ]);
    table.row(vec![
        "kube-lease-manager 0.13, manager reused after its release".into(),
        "—".into(),
        reused.cell(),
        "—".into(),
        "as above".into(),
        "as above".into(),
        format!("measured, {reps}×"),
    ]);
    figure(
        "requests.kube_lease_manager.warm_acquire",
        warm.per_op(),
        "requests",
    );
    figure(
        "requests.kube_lease_manager.renew",
        renew.per_op(),
        "requests",
    );
    figure(
        "requests.kube_lease_manager.release",
        rel.per_op(),
        "requests",
    );
    drop(holder);
}
