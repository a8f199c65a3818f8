//! `lockheed run`: exit codes, the command's environment, waiting, timeouts, a lost lock,
//! signals.

use std::time::{Duration, Instant};

use lockheed::{Evict, Lock, Locker as _};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::{Running, alive, lock, locker};
use crate::harness::Cluster;

/// Short leases, so that a lost lock is noticed within a second.
const SHORT: [&str; 4] = ["--duration", "3s", "--renew-interval", "1s"];

/// `lockheed run NAME --duration 3s --renew-interval 1s EXTRA.. -- COMMAND..`.
fn run_args<'a>(name: &'a str, extra: &[&'a str], command: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["run", name];
    args.extend(SHORT);
    args.extend(extra);
    args.push("--");
    args.extend(command);
    args
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_the_exit_code_through_and_releases_the_lock() {
    let cluster = Cluster::start().await;
    let out = cluster
        .run("lockheed", &run_args("jobs", &[], &["sh", "-c", "exit 7"]))
        .await;
    assert_eq!(out.code(), Some(7), "{out:?}");
    assert_eq!(out.stderr, "", "quiet when nothing happens");
    let jobs = lock(&cluster, "jobs").await;
    assert!(!jobs.is_held(), "released: {jobs:?}");
    assert_eq!(jobs.fencing_token, 1);

    let out = cluster
        .run("lockheed", &run_args("jobs", &[], &["true"]))
        .await;
    assert_eq!(out.code(), Some(0), "{out:?}");
    assert_eq!(lock(&cluster, "jobs").await.fencing_token, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_sees_the_lock_and_its_token() {
    let cluster = Cluster::start().await;
    let script = r#"echo "$LOCKHEED_LOCK $LOCKHEED_NAMESPACE $LOCKHEED_HOLDER $LOCKHEED_TOKEN""#;
    let args = run_args(
        "ledger",
        &["--holder", "writer-1", "--tag", "books"],
        &["sh", "-c", script],
    );
    for token in 1..=2 {
        let out = cluster.run("lockheed", &args).await;
        assert_eq!(out.code(), Some(0), "{out:?}");
        assert_eq!(out.stdout, format!("ledger default writer-1 {token}\n"));
    }
    assert_eq!(lock(&cluster, "ledger").await.tags, ["books"]);

    // The default holder is HOSTNAME-PID.
    let out = cluster
        .run("lockheed", &run_args("ledger", &[], &["sh", "-c", script]))
        .await;
    let holder = out.stdout.split(' ').nth(2).expect("a holder").to_owned();
    let host = nix::unistd::gethostname().unwrap().into_string().unwrap();
    assert!(holder.starts_with(&format!("{host}-")), "{holder}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_and_commands_that_cannot_run_have_their_own_codes() {
    let cluster = Cluster::start().await;
    let out = cluster
        .run(
            "lockheed",
            &run_args("jobs", &[], &["sh", "-c", "kill -9 $$"]),
        )
        .await;
    assert_eq!(out.code(), Some(128 + 9), "{out:?}");

    let out = cluster
        .run("lockheed", &run_args("jobs", &[], &["no-such-command-xyz"]))
        .await;
    assert_eq!(out.code(), Some(127), "{out:?}");
    assert!(
        out.stderr.contains("cannot run no-such-command-xyz"),
        "{out:?}"
    );

    let script = cluster.dir.path().join("not-executable.sh");
    std::fs::write(&script, "#!/bin/sh\necho hi\n").unwrap();
    let out = cluster
        .run(
            "lockheed",
            &run_args("jobs", &[], &[script.to_str().unwrap()]),
        )
        .await;
    assert_eq!(out.code(), Some(126), "{out:?}");

    // Bad arguments are lockheed's own failure.
    let out = cluster.run("lockheed", &["run", "jobs", "echo"]).await;
    assert_eq!(out.code(), Some(125), "{out:?}");
    assert!(
        !lock(&cluster, "jobs").await.is_held(),
        "released after each"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waits_while_the_lock_is_held_then_runs() {
    let cluster = Cluster::start().await;
    let held = Lock::new("deploy", locker(&cluster))
        .with_holder("other")
        .with_reason("release 1.4")
        .try_acquire()
        .await
        .unwrap();
    let running = Running::start(
        &cluster,
        &run_args("deploy", &["--holder", "me"], &["echo", "ran"]),
    );
    let stderr = running.wait_for_stderr("waiting for lock").await;
    assert!(stderr.contains("held by other (since "), "{stderr}");
    assert!(stderr.contains("reason \"release 1.4\""), "{stderr}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(running.stdout(), "", "the command waits for the lock");

    held.release().await.unwrap();
    let out = running.finish().await;
    assert_eq!(out.code(), Some(0), "{out:?}");
    assert_eq!(out.stdout, "ran\n");
    assert!(
        out.stderr
            .contains("took lock \"deploy\" as me (fencing token 2)"),
        "{out:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gives_up_when_the_timeout_runs_out() {
    let cluster = Cluster::start().await;
    let held = Lock::new("deploy", locker(&cluster))
        .with_holder("other")
        .try_acquire()
        .await
        .unwrap();
    let started = Instant::now();
    let out = cluster
        .run(
            "lockheed",
            &run_args("deploy", &["--timeout", "1s"], &["echo", "ran"]),
        )
        .await;
    assert_eq!(out.code(), Some(125), "{out:?}");
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(out.stdout, "", "the command did not run");
    assert!(
        out.stderr
            .contains("lockheed: error: cannot take lock \"deploy\" in namespace default"),
        "{out:?}"
    );
    assert!(out.stderr.contains("gave up waiting"), "{out:?}");
    assert!(out.stderr.contains("held by other"), "{out:?}");

    // 0s: one attempt, no wait.
    let out = cluster
        .run(
            "lockheed",
            &run_args("deploy", &["--timeout", "0s"], &["echo", "ran"]),
        )
        .await;
    assert_eq!(out.code(), Some(125), "{out:?}");
    assert!(out.stderr.contains("is held by other"), "{out:?}");
    assert_eq!(lock(&cluster, "deploy").await.holders[0].id, "other");
    held.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stops_the_command_when_the_lock_is_lost() {
    let cluster = Cluster::start().await;
    let running = Running::start(
        &cluster,
        &run_args(
            "jobs",
            &["--holder", "victim"],
            &["sh", "-c", "echo \"pid $$\"; exec sleep 60"],
        ),
    );
    let stdout = running.wait_for_stdout("\n").await;
    let pid: i32 = stdout.trim().trim_start_matches("pid ").parse().unwrap();
    let child = Pid::from_raw(pid);
    assert!(alive(child));

    // An operator removes the holder.
    let started = Instant::now();
    let out = cluster
        .run("lockheed", &["release", "jobs", "--holder", "victim"])
        .await;
    assert_eq!(out.code(), Some(0), "{out:?}");

    let out = running.finish().await;
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "noticed within a renewal"
    );
    assert_eq!(out.code(), Some(125), "{out:?}");
    assert!(out.stderr.contains("lost lock \"jobs\""), "{out:?}");
    assert!(
        out.stderr
            .contains("lockheed: error: lock \"jobs\" was lost while the command ran"),
        "{out:?}"
    );
    assert!(
        out.stderr
            .contains("the command was stopped (signal SIGTERM)"),
        "{out:?}"
    );
    assert!(!alive(child), "the command is gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kills_a_command_that_ignores_sigterm_after_the_grace_period() {
    let cluster = Cluster::start().await;
    let running = Running::start(
        &cluster,
        &run_args(
            "jobs",
            &["--holder", "victim", "--grace-period", "1s"],
            &[
                "sh",
                "-c",
                "trap '' TERM; echo ready; while :; do sleep 0.1; done",
            ],
        ),
    );
    running.wait_for_stdout("ready").await;
    let removed = locker(&cluster)
        .evict("jobs", Evict::Holder("victim"))
        .await
        .unwrap();
    assert_eq!(removed.len(), 1);
    let out = running.finish().await;
    assert_eq!(out.code(), Some(125), "{out:?}");
    assert!(out.stderr.contains("sending SIGKILL"), "{out:?}");
    assert!(
        out.stderr
            .contains("the command was stopped and killed (signal SIGKILL)"),
        "{out:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_sigterm_on_to_the_command() {
    let cluster = Cluster::start().await;
    let running = Running::start(
        &cluster,
        &run_args(
            "jobs",
            &[],
            &[
                "sh",
                "-c",
                "trap 'echo got TERM; exit 42' TERM; echo ready; while :; do sleep 0.1; done",
            ],
        ),
    );
    running.wait_for_stdout("ready").await;
    kill(running.pid(), Signal::SIGTERM).unwrap();
    let out = running.finish().await;
    assert_eq!(out.code(), Some(42), "{out:?}");
    assert_eq!(out.stdout, "ready\ngot TERM\n");
    assert!(!lock(&cluster, "jobs").await.is_held(), "released");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_while_waiting_stops_waiting() {
    let cluster = Cluster::start().await;
    let held = Lock::new("deploy", locker(&cluster))
        .with_holder("other")
        .try_acquire()
        .await
        .unwrap();
    let running = Running::start(&cluster, &run_args("deploy", &[], &["echo", "ran"]));
    running.wait_for_stderr("waiting for lock").await;
    kill(running.pid(), Signal::SIGINT).unwrap();
    let out = running.finish().await;
    assert_eq!(out.code(), Some(128 + 2), "{out:?}");
    assert!(
        out.stderr
            .contains("interrupted by SIGINT while waiting for lock \"deploy\""),
        "{out:?}"
    );
    assert_eq!(out.stdout, "");
    assert_eq!(lock(&cluster, "deploy").await.holders[0].id, "other");
    held.release().await.unwrap();
}
