//! `lockheed run` as a holder that crashes, and through an API server restart: real
//! processes, real time.

use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::{Running, lock};
use crate::harness::Cluster;

/// A holder killed with SIGKILL releases nothing; another process takes the lock once the
/// lease has ended: within the lease duration plus one renew interval plus a second of the
/// kill, never before the lease ended, and nothing of the dead holder is left behind.
///
/// (A killed `lockheed` cannot stop its command either: it keeps running without the lock,
/// which is what the fencing token in `LOCKHEED_TOKEN` is for. The test stops it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_killed_with_sigkill_is_replaced_in_time_and_leaves_nothing_behind() {
    const DURATION: u64 = 5;
    const RENEW: u64 = 2;
    let cluster = Cluster::start().await;
    let (duration, renew) = (format!("{DURATION}s"), format!("{RENEW}s"));
    let first = Running::start(
        &cluster,
        &[
            "run",
            "jobs",
            "--holder",
            "first",
            "--duration",
            &duration,
            "--renew-interval",
            &renew,
            "--",
            "sh",
            "-c",
            "echo $$ > first.pid; echo ready; exec sleep 60",
        ],
    );
    first.wait_for_stdout("ready").await;
    let second = Running::start(
        &cluster,
        &[
            "run",
            "jobs",
            "--holder",
            "second",
            "--timeout",
            "60s",
            "--",
            "sh",
            "-c",
            "echo taken; sleep 2",
        ],
    );
    second.wait_for_stderr("waiting for lock").await;
    // Let a renewal or two happen, then kill the holder with no chance to clean up.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let lease_end = lock(&cluster, "jobs").await.holders[0]
        .expires
        .expect("a lease with an end");
    kill(first.pid(), Signal::SIGKILL).unwrap();
    let killed = Instant::now();
    second.wait_for_stdout("taken").await;
    let waited = killed.elapsed();
    println!("taken {waited:?} after the kill");
    let bound = Duration::from_secs(DURATION + RENEW + 1);
    assert!(
        waited <= bound,
        "taken {waited:?} after the kill, over {bound:?}"
    );
    let taken = lock(&cluster, "jobs").await;
    assert_eq!(taken.holders.len(), 1, "{taken:?}");
    let holder = &taken.holders[0];
    assert_eq!((holder.id.as_str(), holder.token), ("second", Some(2)));
    assert!(
        holder.since.unwrap() >= lease_end,
        "taken at {:?}, before the dead holder's lease ended at {lease_end}",
        holder.since
    );
    let out = second.finish().await;
    assert_eq!(out.code(), Some(0), "{out:?}");
    // Nothing left behind: no holder, no waiter, no acquisition nobody made.
    let after = lock(&cluster, "jobs").await;
    assert!(!after.is_held() && after.waiters.is_empty(), "{after:?}");
    assert_eq!(after.fencing_token, 2);
    // The dead holder's command outlived it (it is in a process group of its own): stop it.
    let pid = std::fs::read_to_string(cluster.dir.path().join("first.pid")).unwrap();
    let group = Pid::from_raw(pid.trim().parse().unwrap());
    let _ = nix::sys::signal::killpg(group, Signal::SIGKILL);
}

/// The API server stops for 3 s and comes back on the same port with the same objects:
/// `lockheed run` keeps its lock (its renewals fail, then go through again well before the
/// lease ends), its command runs to the end, and the lock is released after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_runs_on_through_an_api_server_restart() {
    let cluster = Cluster::start().await;
    let running = Running::start(
        &cluster,
        &[
            "run",
            "jobs",
            "--duration",
            "10s",
            "--renew-interval",
            "2s",
            "--",
            "sh",
            "-c",
            "echo ready; sleep 8; echo done",
        ],
    );
    running.wait_for_stdout("ready").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    // A real API server is shared by every test of the run: only the fake one is restarted.
    let Some(server) = cluster.fake("restarts the API server") else {
        return;
    };
    server.stop();
    tokio::time::sleep(Duration::from_secs(3)).await;
    server.restart();
    let out = running.finish().await;
    assert_eq!(out.code(), Some(0), "{out:?}");
    assert_eq!(out.stdout, "ready\ndone\n");
    let after = lock(&cluster, "jobs").await;
    assert!(!after.is_held(), "released: {after:?}");
    assert_eq!(
        after.fencing_token, 1,
        "taken once, never lost and taken again"
    );
}
