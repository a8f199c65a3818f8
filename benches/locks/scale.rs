//! Scenarios 4 and 5, each in a process of its own with the server in another: one process
//! holding 10,000 locks that renew, and 1,000 waiters of one process on one lock. The
//! counting allocator is on from the start of the process, so heap figures are exact; RSS is
//! what the kernel says.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use lockheed::{KubeLocker, Lock, LockGuard};

use crate::Mode;
use crate::remote::Remote;
use crate::report::{Table, figure, ms, num};
use crate::sys::{Counting, cpu_time, kib, mib, rss_bytes};

/// How many acquires or releases are in flight at once while setting up.
const IN_FLIGHT: usize = 64;

struct Memory {
    heap: isize,
    rss: u64,
}

impl Memory {
    async fn now() -> Self {
        // Let tasks that just finished drop what they hold.
        tokio::time::sleep(Duration::from_millis(200)).await;
        Self {
            heap: Counting::live(),
            rss: rss_bytes(),
        }
    }

    fn per(&self, before: &Self, items: usize) -> (f64, f64) {
        (
            (self.heap - before.heap) as f64 / items as f64,
            (self.rss as f64 - before.rss as f64) / items as f64,
        )
    }
}

/// A locker whose process has its watch running and its connections open.
async fn warm_locker(remote: &Remote) -> KubeLocker {
    let locker = KubeLocker::new(remote.client().await, "default");
    let guard = Lock::new("warm-up", locker.clone())
        .acquire()
        .await
        .expect("warm-up");
    guard.release().await.expect("release");
    locker
}

pub async fn held_locks(mode: Mode) {
    let (locks, lease, interval, window) = if mode.quick {
        (
            2_000,
            Duration::from_secs(6),
            Duration::from_secs(2),
            Duration::from_secs(4),
        )
    } else {
        (
            10_000,
            Duration::from_secs(30),
            Duration::from_secs(10),
            Duration::from_secs(20),
        )
    };
    let mut remote = Remote::start().await;
    let locker = warm_locker(&remote).await;
    let before = Memory::now().await;

    remote.reset().await;
    let started = Instant::now();
    let guards: Vec<LockGuard<KubeLocker>> = futures::stream::iter(0..locks)
        .map(|i| {
            let lock = Lock::new(format!("held-{i}"), locker.clone())
                .with_duration(lease)
                .with_renew_interval(interval);
            async move { lock.acquire().await.expect("acquire") }
        })
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;
    let acquiring = started.elapsed();
    let acquire_counts = remote.counts().await;
    let held = Memory::now().await;
    let (heap_per_lock, rss_per_lock) = held.per(&before, locks);

    // Steady state: renewals only, counted second by second too.
    remote.reset().await;
    let server_pid = remote.pid();
    let (started, cpu, server_cpu) = (Instant::now(), cpu_time("self"), cpu_time(&server_pid));
    let mut per_second = Vec::new();
    let mut updates = 0;
    for second in 1..=window.as_secs() {
        tokio::time::sleep_until((started + Duration::from_secs(second)).into()).await;
        let now = remote.counts().await.get("update");
        per_second.push((now - updates) as f64);
        updates = now;
    }
    per_second.sort_by(f64::total_cmp);
    let counts = remote.counts().await;
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = cpu_time("self").saturating_sub(cpu).as_secs_f64();
    let server_cpu = cpu_time(&server_pid)
        .saturating_sub(server_cpu)
        .as_secs_f64();
    let watches = locker.active_watches();
    let lost = guards.iter().filter(|g| g.is_lost()).count();

    // What the watch's view of the locks costs: a second process in this one (a new client
    // and locker) watching the same locks.
    let before_watch = Memory::now().await;
    let watcher = warm_locker(&remote).await;
    let watching = Memory::now().await;
    let (watch_heap_per_lock, _) = watching.per(&before_watch, locks);
    drop(watcher);

    remote.reset().await;
    let started = Instant::now();
    futures::stream::iter(guards)
        .map(|guard| async move { guard.release().await.expect("release") })
        .buffer_unordered(IN_FLIGHT)
        .collect::<Vec<()>>()
        .await;
    let releasing = started.elapsed();
    let release_counts = remote.counts().await;

    let renewals = counts.get("update") as f64;
    let expected = locks as f64 / interval.as_secs_f64();
    let mut table = Table::new(
        &format!(
            "4. One process holding {locks} locks ({lease:?} leases renewed every {interval:?})"
        ),
        &["figure", "value"],
    );
    let mut add = |name: &str, value: String| table.row(vec![name.to_owned(), value]);
    add(
        "taking them (acquire, 64 at a time)",
        format!(
            "{} ({} locks/s), {}",
            ms(acquiring),
            num(locks as f64 / acquiring.as_secs_f64()),
            acquire_counts.per(locks as u64)
        ),
    );
    add(
        "heap per held lock (counting allocator)",
        kib(heap_per_lock),
    );
    add("RSS per held lock", kib(rss_per_lock));
    add(
        "of the heap per lock, a watch's view of it (a second locker's watch)",
        kib(watch_heap_per_lock),
    );
    add(
        "heap and RSS of the process, all held",
        format!("{}, {}", mib(held.heap as f64), mib(held.rss as f64)),
    );
    add(
        "renewals/s measured vs locks ÷ interval",
        format!(
            "{} vs {} ({:.3}×), over {elapsed:.1} s",
            num(renewals / elapsed),
            num(expected),
            renewals / elapsed / expected
        ),
    );
    add(
        "renewals in each second of the window: median (least–most)",
        format!(
            "{} ({}–{})",
            num(per_second[per_second.len() / 2]),
            num(per_second[0]),
            num(per_second[per_second.len() - 1])
        ),
    );
    add(
        "all requests in the window",
        format!("{} per renewal", counts.per(counts.get("update"))),
    );
    add(
        "CPU of the holding process",
        format!(
            "{:.3} cores, {:.0} µs per renewal",
            cpu / elapsed,
            cpu / renewals.max(1.0) * 1e6
        ),
    );
    add(
        "CPU of the server process",
        format!(
            "{:.3} cores, {:.0} µs per renewal",
            server_cpu / elapsed,
            server_cpu / renewals.max(1.0) * 1e6
        ),
    );
    add("watches open (`active_watches()`)", watches.to_string());
    add("guards that lost their lock", lost.to_string());
    add(
        "releasing them (64 at a time)",
        format!(
            "{} ({} locks/s), {}",
            ms(releasing),
            num(locks as f64 / releasing.as_secs_f64()),
            release_counts.per(locks as u64)
        ),
    );
    table.note(
        "Server in another process; heap and RSS are differences from before the locks were \
         taken (the process's watch and connections already open). CPU from /proc/<pid>/stat \
         (10 ms ticks).",
    );
    table.print();
    figure("scale.heap_per_lock_bytes", heap_per_lock, "B");
    figure("scale.rss_per_lock_bytes", rss_per_lock, "B");
    figure("scale.renewals_per_s", renewals / elapsed, "1/s");
    figure(
        "scale.renewals_vs_expected",
        renewals / elapsed / expected,
        "x",
    );
    figure("scale.cpu_cores", cpu / elapsed, "cores");
    figure("scale.watches", watches as f64, "count");
    figure("scale.watch_heap_per_lock_bytes", watch_heap_per_lock, "B");
    figure("scale.relists", counts.get("list") as f64, "count");
}

pub async fn waiters(mode: Mode) {
    let waiters = 1_000;
    let idle = if mode.quick {
        Duration::from_secs(1)
    } else {
        Duration::from_secs(5)
    };
    let mut remote = Remote::start().await;
    let holder_locker = KubeLocker::new(remote.client().await, "default");
    let holder = Lock::new("fan", holder_locker)
        .with_duration(Duration::from_secs(60))
        .acquire()
        .await
        .expect("the holder");
    let locker = warm_locker(&remote).await;
    let before = Memory::now().await;

    remote.reset().await;
    let taken = Arc::new(tokio::sync::Mutex::new(Vec::with_capacity(waiters)));
    let started = Instant::now();
    let tasks: Vec<_> = (0..waiters)
        .map(|_| {
            let lock = Lock::new("fan", locker.clone()).with_duration(Duration::from_secs(15));
            let taken = Arc::clone(&taken);
            tokio::spawn(async move {
                let guard = lock.acquire().await.expect("a waiter");
                taken.lock().await.push(Instant::now());
                guard.release().await.expect("release");
            })
        })
        .collect();
    let waiting = Memory::now().await;
    let start_counts = remote.counts().await;
    let (heap_per_waiter, rss_per_waiter) = waiting.per(&before, waiters);
    let spawning = started.elapsed();

    remote.reset().await;
    let (idle_started, cpu) = (Instant::now(), cpu_time("self"));
    tokio::time::sleep(idle).await;
    let idle_counts = remote.counts().await;
    let idle_secs = idle_started.elapsed().as_secs_f64();
    let idle_cpu = cpu_time("self").saturating_sub(cpu).as_secs_f64();
    let watches = locker.active_watches();

    remote.reset().await;
    let (released, cpu) = (Instant::now(), cpu_time("self"));
    holder.release().await.expect("release");
    for task in tasks {
        task.await.expect("a waiter");
    }
    let drain = released.elapsed();
    let drain_cpu = cpu_time("self").saturating_sub(cpu).as_secs_f64();
    let drain_counts = remote.counts().await;
    let first = taken.lock().await.iter().min().map(|t| *t - released);

    let mut table = Table::new(
        &format!("5. {waiters} waiters of one process on one lock"),
        &["figure", "value"],
    );
    let mut add = |name: &str, value: String| table.row(vec![name.to_owned(), value]);
    add("watches open (`active_watches()`)", watches.to_string());
    add("heap per waiter (counting allocator)", kib(heap_per_waiter));
    add("RSS per waiter", kib(rss_per_waiter));
    add(
        "requests while they start waiting",
        format!("{} in {}", start_counts.per(1), ms(spawning)),
    );
    add(
        "requests while they wait",
        format!("{} in {idle_secs:.1} s", idle_counts.per(1)),
    );
    add(
        "CPU while they wait",
        format!("{:.4} cores", idle_cpu / idle_secs),
    );
    add(
        "first waiter in, after the holder's release began",
        first.map_or_else(|| "—".into(), ms),
    );
    add(
        "all 1,000 through (acquire + release each)",
        format!(
            "{} ({} per second), {:.2} cores",
            ms(drain),
            num(waiters as f64 / drain.as_secs_f64()),
            drain_cpu / drain.as_secs_f64()
        ),
    );
    add(
        "requests per waiter, drain",
        drain_counts.per(waiters as u64),
    );
    table.note(
        "The holder is another client of the same benchmark process (taken before the \
         baseline); the server runs in another process. Memory: difference between before the \
         waiters were spawned and once they all wait.",
    );
    table.print();
    figure("waiters.watches", watches as f64, "count");
    figure("waiters.heap_per_waiter_bytes", heap_per_waiter, "B");
    figure(
        "waiters.idle_requests",
        idle_counts.total() as f64,
        "requests",
    );
    figure("waiters.drain_s", drain.as_secs_f64(), "s");
}
