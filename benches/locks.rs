//! The lock benchmarks of issues 11 and 13: requests per operation, handover latency,
//! contention, scale, the fake API server's own ceiling, and leader-election failover, with
//! kube-lease-manager 0.13 measured in the same run for comparison. Every scenario runs
//! against [`lockheed::testing::FakeApiServer`] over loopback HTTP. Run with:
//!
//! ```text
//! cargo bench --features testing --bench locks
//! LOCKHEED_BENCH_QUICK=1 cargo bench --features testing --bench locks   # every scenario, < 1 min
//! ```
//!
//! It prints one Markdown table per scenario (what `BENCHMARKS.md` shows) and one line
//! `figure <name> <value> <unit>` per headline figure, for scripts (`grep ^figure`).
//! `LOCKHEED_BENCH_ONLY=2,3` runs only some scenarios (6, the server's ceiling, always runs, except
//! for `LOCKHEED_BENCH_ONLY=13` alone);
//! `LOCKHEED_BENCH_FAULTS=latency,500-update` injects only some of the faults of scenario 3
//! (see `contention.rs` for their names), to find which one costs what.
//!
//! The memory and CPU scenarios (4 and 5) run in child processes of this binary, with the
//! server in a third process, so that what they measure is the lock-holding process alone.
//!
//! Scenarios 8 to 12 (`real.rs`) measure the real kube-apiserver and etcd beside the fake
//! server, in the same run; they run when the environment gives a real server:
//!
//! ```text
//! scripts/control-plane -- cargo bench --features testing --bench locks
//! ```

#[path = "locks/ceiling.rs"]
mod ceiling;
// client-go's leader election, transcribed for the tests; scenario 7 uses what it needs.
#[allow(dead_code)]
#[path = "../tests/locks/client_go.rs"]
mod client_go;
#[path = "locks/contention.rs"]
mod contention;
#[path = "locks/failover.rs"]
mod failover;
#[path = "locks/floor.rs"]
mod floor;
#[path = "locks/handover.rs"]
mod handover;
#[path = "locks/plane.rs"]
mod plane;
#[path = "locks/processes.rs"]
mod processes;
#[path = "locks/real.rs"]
mod real;
#[path = "locks/remote.rs"]
mod remote;
#[path = "locks/renewals.rs"]
mod renewals;
#[path = "locks/report.rs"]
mod report;
#[path = "locks/requests.rs"]
mod requests;
#[path = "locks/scale.rs"]
mod scale;
#[path = "locks/served.rs"]
mod served;
#[path = "locks/side_handover.rs"]
mod side_handover;
#[path = "locks/side_requests.rs"]
mod side_requests;
#[path = "locks/sides.rs"]
mod sides;
#[path = "locks/sys.rs"]
mod sys;

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

#[global_allocator]
static ALLOCATOR: sys::Counting = sys::Counting;

/// Set (to anything) for the quick mode.
pub const QUICK: &str = "LOCKHEED_BENCH_QUICK";

/// How big the run is.
#[derive(Debug, Clone, Copy)]
pub struct Mode {
    pub quick: bool,
}

/// How many threads run the clients: `LOCKHEED_BENCH_WORKERS`, else `default`.
fn workers(default: usize) -> usize {
    std::env::var("LOCKHEED_BENCH_WORKERS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(default)
}

/// A runtime for the clients, of `workers` threads.
///
/// One thread (a current-thread runtime), with the in-process fake server on a thread of its
/// own: client and server each get one of the machine's 2 cores, as two processes would.
/// With 2 or more, a multi-thread runtime, whose worker threads then compete with the
/// server's for the cores, and on which the clients' tasks run in parallel.
fn runtime(workers: usize) -> tokio::runtime::Runtime {
    let mut builder = if workers > 1 {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(workers);
        builder
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    builder.enable_all().build().expect("a runtime")
}

/// How long a runtime may take to shut down before its tasks count as stuck.
const SHUTDOWN: Duration = Duration::from_secs(10);

/// Runs `future` on a runtime of its own, and says so if the runtime then does not shut down
/// in time: a worker thread is blocked (a deadlock in the library: one, now fixed, hung a
/// process at exit; see `BENCHMARKS.md`, "Library problems found"). A stuck runtime is left
/// behind instead of hanging the benchmark, and the watchdog ends a scenario that cannot
/// finish.
pub fn run_on_own_runtime<T>(what: &str, future: impl Future<Output = T>) -> T {
    run_on(runtime(workers(1)), what, future)
}

/// Like [`run_on_own_runtime`], on a multi-thread runtime (as many workers as the machine has
/// cores, at least 2, or `LOCKHEED_BENCH_WORKERS`), where clients run in parallel, as separate
/// processes would: their requests and watch events race as they do in a cluster.
pub fn run_in_parallel<T>(what: &str, future: impl Future<Output = T>) -> T {
    let cores = std::thread::available_parallelism().map_or(2, usize::from);
    run_on(runtime(workers(cores.max(2))), what, future)
}

fn run_on<T>(rt: tokio::runtime::Runtime, what: &str, future: impl Future<Output = T>) -> T {
    // No scenario takes more than a few minutes, even on a loaded machine.
    let limit = Duration::from_secs(if std::env::var_os(QUICK).is_some() {
        120
    } else {
        600
    });
    *RUNNING.lock().unwrap_or_else(PoisonError::into_inner) =
        Some((what.to_owned(), Instant::now() + limit));
    let out = rt.block_on(future);
    let started = Instant::now();
    rt.shutdown_timeout(SHUTDOWN);
    let stuck = started.elapsed() >= SHUTDOWN;
    if stuck {
        println!(
            "\n**Warning: the runtime of {what} did not shut down within {SHUTDOWN:?}: a worker \
             thread is blocked, a deadlock in the library.**"
        );
    }
    report::figure(
        &format!("runtime_stuck.{what}"),
        f64::from(u8::from(stuck)),
        "bool",
    );
    out
}

/// The scenario running now and when it must have ended, for the watchdog.
static RUNNING: Mutex<Option<(String, Instant)>> = Mutex::new(None);

/// Ends the process if a scenario runs far longer than it should, so that a hang (every
/// worker thread of its runtime blocked) fails the benchmark instead of stalling it.
fn watchdog() {
    std::thread::spawn(|| {
        loop {
            std::thread::sleep(Duration::from_secs(1));
            let running = RUNNING.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some((what, deadline)) = running.as_ref()
                && Instant::now() > *deadline
            {
                println!(
                    "\n**{what} hangs: its runtime's worker threads are blocked, a deadlock \
                     in the library. Giving up.**"
                );
                std::process::exit(2);
            }
        }
    });
}

fn main() {
    let mode = Mode {
        quick: std::env::var_os(QUICK).is_some(),
    };
    watchdog();
    match remote::role().as_deref() {
        Some("server") => return remote::serve(),
        Some("held-locks") => {
            sys::Counting::enable();
            return run_on_own_runtime("held_locks", scale::held_locks(mode));
        }
        Some("waiters") => {
            sys::Counting::enable();
            return run_on_own_runtime("waiters", scale::waiters(mode));
        }
        Some(processes::CONTENDER) => return processes::contender(),
        Some(other) => panic!("unknown role {other:?}"),
        None => {}
    }
    let only: Option<Vec<u32>> = std::env::var("LOCKHEED_BENCH_ONLY")
        .ok()
        .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect());
    let runs = |n: u32| only.as_ref().is_none_or(|only| only.contains(&n));
    let started = Instant::now();
    println!(
        "# lockheed benchmarks ({} mode, {} build)",
        if mode.quick { "quick" } else { "full" },
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
    );
    println!("{}", sys::machine());
    println!("{}", real::servers());
    if only.as_ref().is_some_and(|only| only == &[13]) {
        // Scenario 13 alone needs no ceiling.
        contention::heavy_faults(mode);
        return;
    }
    let ceiling = run_on_own_runtime("ceiling", ceiling::run(mode));
    if runs(1) {
        run_on_own_runtime("requests", requests::run(mode));
    }
    if runs(2) {
        run_on_own_runtime("handover", handover::run(mode, &ceiling));
    }
    if runs(3) {
        contention::run(mode, &ceiling);
    }
    if runs(4) {
        remote::run_child("held-locks", mode.quick);
    }
    if runs(5) {
        remote::run_child("waiters", mode.quick);
    }
    if runs(7) {
        run_on_own_runtime("failover", failover::run(mode));
    }
    real::run(mode, &runs);
    if runs(13) {
        contention::heavy_faults(mode);
    }
    println!(
        "\nwall time: {:.1} s; load average at the end: {}",
        started.elapsed().as_secs_f64(),
        sys::load_average()
    );
    report::figure("wall_time_s", started.elapsed().as_secs_f64(), "s");
}
