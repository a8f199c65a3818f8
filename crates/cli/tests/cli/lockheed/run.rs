//! `lockheed run`: exit codes, the command's environment, waiting, timeouts, a lost lock,
//! signals.

use std::path::Path;
use std::time::{Duration, Instant};

use lockheed::testing::{Fault, RequestMatcher, Verb};
use lockheed::{Evict, Lock, Locker as _};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::{PATIENCE, Running, alive, lock, locker};
use crate::harness::Cluster;

/// For the tests where the lock is lost: renewed every second, so that lockheed notices
/// within a second that the test removed its holder. The lease keeps the default 30 s: a
/// renewal would have to be 29 s late to lose the lock by itself on a loaded machine.
const NOTICE_LOSS: [&str; 2] = ["--renew-interval", "1s"];

/// A shell command that starts a grandchild of lockheed (`sleep 60`, in the background),
/// writes its process id to `grandchild.pid` in the working directory, says `ready`, and
/// waits for it. (The grandchild does not hold lockheed's output open: the test would wait
/// for it to end.)
const WITH_GRANDCHILD: &str =
    "sleep 60 >/dev/null 2>&1 & echo $! > grandchild.pid; echo ready; wait";

/// `lockheed run NAME EXTRA.. -- COMMAND..`, with the default 30 s lease renewed every 10 s
/// (no test loses the lock by a late renewal).
fn run_args<'a>(name: &'a str, extra: &[&'a str], command: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["run", name];
    args.extend(extra);
    args.push("--");
    args.extend(command);
    args
}

/// The grandchild [`WITH_GRANDCHILD`] started, once it is ready.
async fn grandchild(running: &Running, dir: &Path) -> Pid {
    running.wait_for_stdout("ready").await;
    let pid = std::fs::read_to_string(dir.join("grandchild.pid")).expect("the pid is written");
    let pid = Pid::from_raw(pid.trim().parse().expect("a pid"));
    assert!(alive(pid), "the grandchild runs");
    pid
}

/// Waits (a few seconds at most) until process `pid` has ended. A zombie has: its parent
/// (the command's shell) has exited, and process 1 of a container may never collect it.
async fn assert_ends(pid: Pid) {
    let started = Instant::now();
    while alive(pid) && !zombie(pid) {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "process {pid} still runs"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether process `pid` has exited and waits to be collected (Linux's /proc says).
fn zombie(pid: Pid) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            // `PID (COMMAND) STATE ...`; the command may hold spaces and parentheses.
            let (_, rest) = stat.rsplit_once(')')?;
            Some(rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
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
        assert_eq!(
            out.stdout,
            format!("ledger {} writer-1 {token}\n", cluster.ns())
        );
    }
    assert_eq!(lock(&cluster, "ledger").await.tags, ["books"]);

    // The default holder is HOSTNAME-PID-RANDOM: readable, and unguessable (twelve random
    // hex digits), so that two processes never share an identity even where hostnames and
    // process ids repeat.
    let host = nix::unistd::gethostname().unwrap().into_string().unwrap();
    let mut holders = Vec::new();
    for _ in 0..2 {
        let out = cluster
            .run("lockheed", &run_args("ledger", &[], &["sh", "-c", script]))
            .await;
        let holder = out.stdout.split(' ').nth(2).expect("a holder").to_owned();
        let rest = holder
            .strip_prefix(&format!("{host}-"))
            .unwrap_or_else(|| panic!("{holder}"));
        let (pid, random) = rest.split_once('-').expect("PID-RANDOM");
        assert!(pid.parse::<u32>().is_ok(), "{holder}");
        assert_eq!(random.len(), 12, "{holder}");
        assert!(random.bytes().all(|b| b.is_ascii_hexdigit()), "{holder}");
        holders.push(random.to_owned());
    }
    assert_ne!(holders[0], holders[1]);
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
        out.stderr.contains(&format!(
            "lockheed: error: cannot take lock \"deploy\" in namespace {}",
            cluster.ns()
        )),
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
async fn stops_the_command_and_what_it_started_when_the_lock_is_lost() {
    let cluster = Cluster::start().await;
    let running = Running::start(
        &cluster,
        &run_args(
            "jobs",
            &[
                "--holder",
                "victim",
                NOTICE_LOSS[0],
                NOTICE_LOSS[1],
                "--grace-period",
                "3s",
            ],
            &["sh", "-c", WITH_GRANDCHILD],
        ),
    );
    let grandchild = grandchild(&running, cluster.dir.path()).await;

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
    // The shell's background job got SIGTERM as well: nothing runs without the lock.
    assert_ends(grandchild).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kills_a_command_that_ignores_sigterm_after_the_grace_period() {
    let cluster = Cluster::start().await;
    let running = Running::start(
        &cluster,
        &run_args(
            "jobs",
            &[
                "--holder",
                "victim",
                NOTICE_LOSS[0],
                NOTICE_LOSS[1],
                "--grace-period",
                "1s",
            ],
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
async fn passes_sigterm_on_to_what_the_command_started() {
    let cluster = Cluster::start().await;
    let running = Running::start(
        &cluster,
        &run_args("jobs", &[], &["sh", "-c", WITH_GRANDCHILD]),
    );
    let grandchild = grandchild(&running, cluster.dir.path()).await;
    kill(running.pid(), Signal::SIGTERM).unwrap();
    let out = running.finish().await;
    // The shell died of it, and so did its background job.
    assert_eq!(out.code(), Some(128 + 15), "{out:?}");
    assert_ends(grandchild).await;
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

/// Starts `lockheed run x --duration 0s --holder me -- echo ran` (without expiry: a lease
/// left behind would stay forever) against a cluster that stores lockheed's write taking
/// the lock at once, but answers it only 30 s later, and waits until the write is stored.
/// lockheed then waits for the answer: the write is in flight. (The server's request log
/// cannot tell: it logs a request once it is answered.)
async fn start_with_the_write_in_flight(cluster: &Cluster) -> Option<Running> {
    cluster.fake("delays an answer after commit")?.inject(
        Fault::latency(Duration::from_secs(30))
            .after_commit()
            .on(RequestMatcher::any().verb(Verb::Create)),
    );
    let running = Running::start(
        cluster,
        &run_args(
            "x",
            &["--duration", "0s", "--holder", "me"],
            &["echo", "ran"],
        ),
    );
    let started = Instant::now();
    while !locker(cluster)
        .get("x")
        .await
        .expect("the lock is read")
        .is_some_and(|x| x.is_held())
    {
        assert!(
            started.elapsed() < PATIENCE,
            "the lease is never written\nstderr:\n{}",
            running.stderr()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Some(running)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_while_the_lease_is_written_leaves_no_lease() {
    let cluster = Cluster::start().await;
    let Some(running) = start_with_the_write_in_flight(&cluster).await else {
        return;
    };
    kill(running.pid(), Signal::SIGTERM).unwrap();
    let out = running.finish().await;
    assert_eq!(out.code(), Some(128 + 15), "{out:?}");
    assert!(
        out.stderr
            .contains("interrupted by SIGTERM while waiting for lock \"x\""),
        "{out:?}"
    );
    assert_eq!(out.stdout, "", "the command did not run");
    // lockheed removed the lease before it exited.
    let x = lock(&cluster, "x").await;
    assert!(!x.is_held(), "{x:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn says_how_to_remove_a_lease_it_could_not_clean_up() {
    let cluster = Cluster::start().await;
    let Some(running) = start_with_the_write_in_flight(&cluster).await else {
        return;
    };
    let server = cluster
        .server
        .fake_server()
        .expect("started on the fake server");
    // The cluster cannot be reached to remove the lease: lockheed gives up after 10 s.
    server.partition();
    kill(running.pid(), Signal::SIGTERM).unwrap();
    let out = running.finish().await;
    server.heal();
    assert_eq!(out.code(), Some(128 + 15), "{out:?}");
    assert!(
        out.stderr.contains(
            "cleaning up lock \"x\" did not finish within 10s: me may still hold it; it has no \
             expiry: remove it with `lockheed release x --holder me`"
        ),
        "{out:?}"
    );
    assert_eq!(lock(&cluster, "x").await.holders[0].id, "me");
    let out = cluster
        .run("lockheed", &["release", "x", "--holder", "me"])
        .await;
    assert_eq!(out.code(), Some(0), "{out:?}");
    assert!(!lock(&cluster, "x").await.is_held());
}
