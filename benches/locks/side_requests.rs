//! Scenario 9: API requests per lock operation on both servers, as scenario 1 counts them for
//! lockheed: on the fake server what it received, on the real one what this side's clients
//! sent (`TestCluster`'s client-side counts). The counts are deterministic, and asserted on
//! both servers in `tests/locks/kube_requests.rs`; the benchmark shows them beside each other.

use std::time::Duration;

use lockheed::{KubeLocker, Lock, LockGuard};

use crate::Mode;
use crate::report::{Counts, Table, figure};
use crate::requests::queued;
use crate::sides::Side;

const LEASE: Duration = Duration::from_secs(30);

/// Lets a watch catch up with the latest writes, outside what is counted: longer than
/// scenario 1's 20 ms, for the real server's watch.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// Sums the counts of repeated operations.
#[derive(Default)]
struct Tally {
    counts: Counts,
    ops: u64,
}

impl Tally {
    fn add(&mut self, counts: Counts) {
        self.counts.add(&counts);
        self.ops += 1;
    }

    fn per_op(&self) -> f64 {
        self.counts.total() as f64 / self.ops.max(1) as f64
    }
}

/// The requests `op` makes, with the counters reset just before it.
async fn counted<T>(side: &Side, op: impl Future<Output = T>) -> (T, Counts) {
    side.reset();
    let out = op.await;
    (out, side.counts())
}

async fn release(guard: LockGuard<KubeLocker>) {
    guard.release().await.expect("release");
}

/// The operations, in the order of the table's rows.
const OPERATIONS: [&str; 11] = [
    "`try_acquire`, new process: cold",
    "`try_acquire`, new process: warm",
    "`try_acquire`, new process: busy",
    "renew",
    "release",
    "`try_acquire`, process already watching: cold",
    "`try_acquire`, process already watching: warm",
    "`try_acquire`, process already watching: busy",
    "`acquire`, new process: cold",
    "`acquire`, new process: warm",
    "release to a queued waiter of another process, its take included",
];

/// The tallies of [`OPERATIONS`] on one server.
#[allow(clippy::too_many_lines)] // scenario 1's sequence, read top to bottom
async fn measure(side: &Side, reps: usize) -> Vec<Tally> {
    let mut t: Vec<Tally> = OPERATIONS.iter().map(|_| Tally::default()).collect();
    let holder = side.locker("holder");
    // Held all along without renewals, which would otherwise fall into what is counted.
    let held = Lock::new("busy", holder.clone())
        .with_duration(Duration::from_secs(600))
        .with_renew_interval(Duration::ZERO)
        .try_acquire()
        .await
        .expect("held");
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
        let (guard, c) = counted(side, async {
            let lock = Lock::new(format!("cold-{i}"), side.locker(&format!("c{i}")));
            lock.try_acquire().await.expect("cold")
        })
        .await;
        t[0].add(c);
        release(guard).await;
        let lock = Lock::new("warm", side.locker(&format!("w{i}"))).with_duration(LEASE);
        let (guard, c) = counted(side, lock.try_acquire()).await;
        t[1].add(c);
        let (released, c) = counted(side, guard.expect("warm").release()).await;
        released.expect("release");
        t[4].add(c);
        let lock = Lock::new("busy", side.locker(&format!("b{i}")));
        let (err, c) = counted(side, lock.try_acquire()).await;
        assert!(err.expect_err("held").is_held());
        t[2].add(c);
    }
    // Renewals: a short lease renewed every 250 ms, for ten intervals.
    let interval = Duration::from_millis(250);
    let renewing = Lock::new("renew", side.locker("r"))
        .with_duration(Duration::from_secs(3))
        .with_renew_interval(interval)
        .try_acquire()
        .await
        .expect("renewing");
    tokio::time::sleep(interval / 2).await;
    let ((), c) = counted(side, tokio::time::sleep(interval * 10)).await;
    t[3].counts.add(&c);
    t[3].ops = 10;
    release(renewing).await;

    let watching = side.locker("watching");
    release(
        Lock::new("watched", watching.clone())
            .acquire()
            .await
            .expect("first"),
    )
    .await;
    for i in 0..reps {
        settle().await;
        let lock = Lock::new(format!("wcold-{i}"), watching.clone());
        let (guard, c) = counted(side, lock.try_acquire()).await;
        t[5].add(c);
        release(guard.expect("cold")).await;
        settle().await;
        let lock = Lock::new("watched", watching.clone()).with_duration(LEASE);
        let (guard, c) = counted(side, lock.try_acquire()).await;
        t[6].add(c);
        release(guard.expect("warm")).await;
        settle().await;
        let lock = Lock::new("busy", watching.clone());
        let (err, c) = counted(side, lock.try_acquire()).await;
        assert!(err.expect_err("held").is_held());
        t[7].add(c);
    }

    for i in 0..reps {
        let lock = Lock::new(format!("acold-{i}"), side.locker(&format!("ac{i}")));
        // The watch request goes out as the LIST completes: let it arrive before counting.
        let (guard, c) = counted(side, async {
            let guard = lock.acquire().await;
            settle().await;
            guard
        })
        .await;
        t[8].add(c);
        release(guard.expect("acquire")).await;
        let lock = Lock::new("aw", side.locker(&format!("aw{i}"))).with_duration(LEASE);
        let (guard, c) = counted(side, async {
            let guard = lock.acquire().await;
            settle().await;
            guard
        })
        .await;
        t[9].add(c);
        let waiter = Lock::new("aw", side.locker(&format!("aww{i}"))).with_duration(LEASE);
        let waiting = tokio::spawn(async move { waiter.acquire().await });
        queued(&holder, "aw").await;
        // Let the holder's watch see the waiter's queueing write.
        settle().await;
        let guard = guard.expect("acquire");
        let (taken, c) = counted(side, async {
            guard.release().await.expect("release");
            waiting.await.expect("the waiter")
        })
        .await;
        t[10].add(c);
        release(taken.expect("handed over")).await;
    }
    release(held).await;
    t
}

pub async fn run(mode: Mode) {
    let reps = if mode.quick { 3 } else { 10 };
    let mut measured = Vec::new();
    for side in Side::both().await {
        measured.push(measure(&side, reps).await);
    }
    let mut table = Table::new(
        "9. API requests per operation, lockheed, on each server",
        &["operation", "fake", "real", "same"],
    );
    let mut differ = 0;
    for (i, operation) in OPERATIONS.iter().enumerate() {
        let (fake, real) = (&measured[0][i], &measured[1][i]);
        let same = fake.counts.per(fake.ops) == real.counts.per(real.ops);
        differ += usize::from(!same);
        table.row(vec![
            (*operation).to_owned(),
            fake.counts.per(fake.ops),
            real.counts.per(real.ops),
            if same { "yes".into() } else { "**no**".into() },
        ]);
    }
    table.note(format!(
        "Each measured {reps}× per server (renewals: 10 intervals of 250 ms). Cold: the \
         lock's object does not exist yet; warm: it exists and is free; busy: another process \
         holds it. A new process is a new client and `KubeLocker`; a process already watching \
         has a waiting `acquire` behind it, so its namespace watch knows the lock. Fake: what \
         the server received; real: what the side's clients sent (`TestCluster::counts`)."
    ));
    table.note(format!(
        "Load average at the end: {}.",
        crate::sys::load_average()
    ));
    table.print();
    for (side, tallies) in ["fake", "real"].iter().zip(&measured) {
        figure(
            &format!("requests.{side}.warm_acquire"),
            tallies[1].per_op(),
            "requests",
        );
        figure(
            &format!("requests.{side}.renew"),
            tallies[3].per_op(),
            "requests",
        );
        figure(
            &format!("requests.{side}.handover_release"),
            tallies[10].per_op(),
            "requests",
        );
    }
    figure("requests.operations_that_differ", differ as f64, "count");
}
