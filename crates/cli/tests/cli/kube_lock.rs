//! `kube-lock`: the seed README replayed step by step, exit codes, log lines.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::PostParams;
use lockheed::testing::{FakeApiServer, Fault, RequestMatcher, Verb};
use serde_json::{Value, json};

use crate::harness::{Cluster, Output, finish};

/// `kube-lock <namespace> <configmap> --kubeconfig-path <the test cluster's> <extra..>`.
async fn kube_lock(cluster: &Cluster, configmap: &str, extra: &[&str]) -> Output {
    kube_lock_with(cluster, &cluster.kubeconfig, configmap, extra).await
}

/// `kube_lock` with another kubeconfig (another user's).
async fn kube_lock_with(
    cluster: &Cluster,
    kubeconfig: &std::path::Path,
    configmap: &str,
    extra: &[&str],
) -> Output {
    let kubeconfig = kubeconfig.to_str().expect("a UTF-8 path");
    let mut args = vec![cluster.ns(), configmap, "--kubeconfig-path", kubeconfig];
    args.extend_from_slice(extra);
    cluster.run("kube-lock", &args).await
}

/// Starts `kube-lock <namespace> <configmap> <extra..>` without waiting for it.
fn spawn(cluster: &Cluster, configmap: &str, extra: &[&str]) -> tokio::process::Child {
    spawn_with(cluster, &cluster.kubeconfig, configmap, extra)
}

/// `spawn` with another kubeconfig (another user's).
fn spawn_with(
    cluster: &Cluster,
    kubeconfig: &std::path::Path,
    configmap: &str,
    extra: &[&str],
) -> tokio::process::Child {
    let mut command = cluster.command("kube-lock");
    command
        .args([cluster.ns(), configmap, "--kubeconfig-path"])
        .arg(kubeconfig)
        .args(extra);
    command.spawn().expect("kube-lock starts")
}

/// The Role for ConfigMaps with `verbs`, as `Cluster::kubeconfig_granted` takes it.
fn configmaps_role(verbs: &[&str]) -> Value {
    json!({ "rules": [{ "apiGroups": [""], "resources": ["configmaps"], "verbs": verbs }] })
}

/// The ConfigMap's `kube-lock` annotation, as it is stored.
async fn annotation(cluster: &Cluster, configmap: &str) -> Option<String> {
    let cm = cluster.configmaps().get_opt(configmap).await.unwrap()?;
    cm.metadata.annotations?.get("kube-lock").cloned()
}

/// The annotation as JSON, each holder's date checked for kube-lock's layout
/// (`2006-01-02T15:04:05Z`) and then replaced with `"<date>"`.
async fn semaphore(cluster: &Cluster, configmap: &str) -> Value {
    let text = annotation(cluster, configmap)
        .await
        .expect("the ConfigMap has the annotation");
    let mut json: Value = serde_json::from_str(&text).expect("the annotation is JSON");
    if let Some(holders) = json["holders"].as_object_mut() {
        for (holder, entry) in holders {
            let date = entry["date"].as_str().expect("a date").to_owned();
            assert_date_layout(&date, holder);
            entry["date"] = json!("<date>");
        }
    }
    json
}

fn assert_date_layout(date: &str, holder: &str) {
    assert_eq!(date.len(), 20, "{holder}'s date {date:?}");
    assert!(date.ends_with('Z'), "{holder}'s date {date:?}");
    chrono::NaiveDateTime::parse_from_str(date, "%Y-%m-%dT%H:%M:%SZ")
        .unwrap_or_else(|e| panic!("{holder}'s date {date:?} is not 2006-01-02T15:04:05Z: {e}"));
}

/// Asserts that `output` exited with `code` and that its stderr has each of `lines`.
///
/// The lines are written for namespace `default`, as the seed README's are; ` ns default` in
/// them stands for the test's namespace (a fresh one on a real cluster).
#[track_caller]
fn assert_run(cluster: &Cluster, output: &Output, code: i32, lines: &[&str]) {
    assert_eq!(output.code(), Some(code), "{output:#?}");
    let namespace = format!(" ns {}", cluster.ns());
    for line in lines {
        let line = line.replace(" ns default", &namespace);
        assert!(
            output.stderr.contains(&line),
            "stderr lacks {line:?}:\n{}",
            output.stderr
        );
    }
}

/// Every stderr line is a glog-style log line from kube-lock:
/// `I0819 19:09:54.017121   31587 kube-lock] ...`.
#[track_caller]
fn assert_log_layout(output: &Output) {
    for line in output.stderr.lines() {
        let (head, _) = line
            .split_once(" kube-lock] ")
            .unwrap_or_else(|| panic!("not a log line: {line:?}"));
        let severity = head.chars().next().unwrap();
        assert!("IWE".contains(severity), "{line:?}");
        chrono::NaiveTime::parse_from_str(&head[6..21], "%H:%M:%S%.6f")
            .unwrap_or_else(|e| panic!("{line:?}: {e}"));
    }
}

/// Waits until the cluster has seen a watch (a kube-lock waiting for its turn watches the
/// ConfigMap) since the counters were last reset. A real cluster does not count another
/// process's requests: there it waits 3 s, time enough for kube-lock to start watching.
async fn until_watched(cluster: &Cluster) {
    let Some(server) = cluster.server.fake_server() else {
        tokio::time::sleep(Duration::from_secs(3)).await;
        return;
    };
    let started = Instant::now();
    while server.counts().get(Verb::Watch) == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "kube-lock never started waiting"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Creates the ConfigMap of one of the library's `tests/fixtures/kube-lock-*.json`.
async fn create_fixture(cluster: &Cluster, fixture: &str) -> ConfigMap {
    let path = format!(
        "{}/../../tests/fixtures/kube-lock-{fixture}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut cm: ConfigMap = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    cm.metadata.resource_version = None;
    // In the test's namespace (the fixtures name `default`).
    cm.metadata.namespace = Some(cluster.ns().to_owned());
    cluster
        .configmaps()
        .create(&PostParams::default(), &cm)
        .await
        .unwrap()
}

/// The seed README, step by step (intervals scaled down).
#[tokio::test(flavor = "multi_thread")]
async fn replays_the_readme() {
    let cluster = Cluster::start().await;

    // holder-1 creates the ConfigMap and locks.
    let output = kube_lock(
        &cluster,
        "lock",
        &[
            "--holder-name",
            "holder-1",
            "--create-configmap",
            "--max-holders",
            "1",
            "--polling-interval",
            "10s",
            "--polling-timeout",
            "5m",
            "--reason",
            "db restart",
        ],
    )
    .await;
    assert_run(
        &cluster,
        &output,
        0,
        &[
            r#"Processing lock over cm/lock in ns default for reason: "db restart""#,
            "Creating cm/lock in ns default",
            "Can lock semaphore in cm/lock in ns default: 0/1 holders",
            "Successfully locked cm/lock in ns default for holder holder-1",
        ],
    );
    assert_log_layout(&output);
    assert_eq!(
        semaphore(&cluster, "lock").await,
        json!({"max": 1, "holders": {"holder-1": {"date": "<date>", "reason": "db restart"}}})
    );
    let holder_1_date = serde_json::from_str::<Value>(&annotation(&cluster, "lock").await.unwrap())
        .unwrap()["holders"]["holder-1"]["date"]
        .as_str()
        .unwrap()
        .to_owned();

    // holder-2 polls, and times out while holder-1 holds.
    let started = Instant::now();
    let output = kube_lock(
        &cluster,
        "lock",
        &[
            "--holder-name",
            "holder-2",
            "--create-configmap",
            "--max-holders",
            "2",
            "--polling-interval",
            "400ms",
            "--polling-timeout",
            "1s",
            "--reason",
            "db restart",
        ],
    )
    .await;
    assert_run(
        &cluster,
        &output,
        2,
        &[
            r#"Processing lock over cm/lock in ns default for reason: "db restart""#,
            "Cannot lock semaphore in cm/lock in ns default: 1/1 holders",
            "Starting to poll for lock every 400ms, timeout after 1s",
            "Semaphore is full, skipping lock",
            "cannot lock cm/lock in ns default, timeout after 1s",
            "Exiting on error: 2",
        ],
    );
    assert!(started.elapsed() >= Duration::from_secs(1), "{output:#?}");
    assert!(
        output
            .stderr
            .contains(&format!("held by holder-1 (since {holder_1_date} (")),
        "says whom it waits for:\n{}",
        output.stderr
    );
    assert!(
        output
            .stderr
            .contains(r#" ago), no expiry, reason "db restart"), 1/1 holders"#),
        "says what it waits for:\n{}",
        output.stderr
    );
    assert_log_layout(&output);
    // Nothing changed: the stored max (1) won over holder-2's --max-holders 2.
    assert_eq!(
        semaphore(&cluster, "lock").await,
        json!({"max": 1, "holders": {"holder-1": {"date": "<date>", "reason": "db restart"}}})
    );

    // holder-2 waits (long polling interval and timeout); holder-1 unlocks; the watch lets
    // holder-2 in well before its polling interval.
    cluster.server.reset_counters();
    let waiting = spawn(
        &cluster,
        "lock",
        &[
            "--holder-name",
            "holder-2",
            "--polling-interval",
            "30s",
            "--polling-timeout",
            "2m",
            "--reason",
            "db restart",
        ],
    );
    until_watched(&cluster).await;
    let output = kube_lock(&cluster, "lock", &["--holder-name", "holder-1", "--unlock"]).await;
    let unlocked = Instant::now();
    assert_run(
        &cluster,
        &output,
        0,
        &[
            "Processing unlock over cm/lock in ns default",
            &format!(
                r#"Unlock current holder holder-1 took on {holder_1_date} with reason: "db restart""#
            ),
            "Successfully unlocked cm/lock in ns default for holder holder-1",
        ],
    );
    let output = finish(waiting).await;
    assert!(
        unlocked.elapsed() < Duration::from_secs(15),
        "woken by the watch, not the 30s polling interval: {:?}",
        unlocked.elapsed()
    );
    assert_run(
        &cluster,
        &output,
        0,
        &[
            "Starting to poll for lock every 30s, timeout after 2m0s",
            "Can lock semaphore in cm/lock in ns default: 0/1 holders",
            "Successfully locked cm/lock in ns default for holder holder-2",
        ],
    );
    assert!(
        !output.stderr.contains("Semaphore is full"),
        "no poll came before the watch:\n{}",
        output.stderr
    );
    assert_eq!(
        semaphore(&cluster, "lock").await,
        json!({"max": 1, "holders": {"holder-2": {"date": "<date>", "reason": "db restart"}}})
    );

    // --run-once on the full semaphore.
    let output = kube_lock(
        &cluster,
        "lock",
        &["--holder-name", "holder-3", "--run-once"],
    )
    .await;
    assert_run(
        &cluster,
        &output,
        3,
        &[
            "Cannot lock semaphore in cm/lock in ns default: 1/1 holders",
            "Exiting on error: 3",
        ],
    );

    // holder-2 unlocks: no holders left, as the README shows.
    let output = kube_lock(&cluster, "lock", &["--holder-name", "holder-2", "--unlock"]).await;
    assert_run(
        &cluster,
        &output,
        0,
        &["Successfully unlocked cm/lock in ns default for holder holder-2"],
    );
    assert_eq!(
        semaphore(&cluster, "lock").await,
        json!({"max": 1, "holders": {}})
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn max_holders_3_admits_three() {
    let cluster = Cluster::start().await;
    for holder in ["a", "b", "c"] {
        let output = kube_lock(
            &cluster,
            "pool",
            &[
                "--holder-name",
                holder,
                "--create-configmap",
                "--max-holders",
                "3",
                "--run-once",
            ],
        )
        .await;
        assert_run(
            &cluster,
            &output,
            0,
            &[&format!(
                "Successfully locked cm/pool in ns default for holder {holder}"
            )],
        );
    }
    let output = kube_lock(
        &cluster,
        "pool",
        &["--holder-name", "d", "--max-holders", "3", "--run-once"],
    )
    .await;
    assert_run(
        &cluster,
        &output,
        3,
        &["Cannot lock semaphore in cm/pool in ns default: 3/3 holders"],
    );
    let holder = json!({"date": "<date>", "reason": ""});
    assert_eq!(
        semaphore(&cluster, "pool").await,
        json!({"max": 3, "holders": {"a": holder, "b": holder, "c": holder}})
    );
}

/// A first attempt reads the ConfigMap once (for its messages and to find a current holder)
/// and the library starts from that read: GET + POST to create, GET + PUT to join.
#[tokio::test(flavor = "multi_thread")]
async fn a_first_attempt_is_one_read_and_one_write() {
    let cluster = Cluster::start().await;
    let Some(server) = cluster.fake("counts the binary's requests") else {
        return;
    };
    for (holder, write) in [("a", Verb::Create), ("b", Verb::Update)] {
        server.reset_counters();
        let args = [
            "--holder-name",
            holder,
            "--create-configmap",
            "--max-holders",
            "2",
            "--run-once",
        ];
        assert_eq!(
            kube_lock(&cluster, "counted", &args).await.status.code(),
            Some(0)
        );
        let counts = server.counts();
        assert_eq!(
            (
                counts.get(Verb::Get),
                counts.get(write),
                counts.api_requests()
            ),
            (1, 1, 2),
            "{holder}: {counts:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_stored_max_wins() {
    let cluster = Cluster::start().await;
    create_fixture(&cluster, "held").await; // max 1, held by holder-1
    let output = kube_lock(
        &cluster,
        "lock",
        &[
            "--holder-name",
            "holder-2",
            "--max-holders",
            "5",
            "--run-once",
        ],
    )
    .await;
    assert_run(
        &cluster,
        &output,
        3,
        &["Cannot lock semaphore in cm/lock in ns default: 1/1 holders"],
    );
    // An empty semaphore of 3: the fourth holder waits, whatever its --max-holders.
    cluster
        .configmaps()
        .delete("lock", &Default::default())
        .await
        .unwrap();
    create_fixture(&cluster, "empty-max3").await;
    for holder in ["a", "b", "c"] {
        let output = kube_lock(&cluster, "lock", &["--holder-name", holder, "--run-once"]).await;
        assert_run(
            &cluster,
            &output,
            0,
            &[&format!(
                "Can lock semaphore in cm/lock in ns default: {}/3 holders",
                holder.as_bytes()[0] - b'a'
            )],
        );
    }
    let output = kube_lock(
        &cluster,
        "lock",
        &["--holder-name", "d", "--max-holders", "10", "--run-once"],
    )
    .await;
    assert_run(&cluster, &output, 3, &["3/3 holders"]);
    assert_eq!(semaphore(&cluster, "lock").await["max"], 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_precreated_configmap_without_the_annotation_is_an_empty_semaphore() {
    let cluster = Cluster::start().await;
    create_fixture(&cluster, "precreated").await;
    let output = kube_lock(
        &cluster,
        "lock",
        &["--holder-name", "holder-1", "--max-holders", "2"],
    )
    .await;
    assert_run(
        &cluster,
        &output,
        0,
        &["Can lock semaphore in cm/lock in ns default: 0/2 holders"],
    );
    assert!(!output.stderr.contains("Creating"), "{}", output.stderr);
    assert_eq!(
        semaphore(&cluster, "lock").await,
        json!({"max": 2, "holders": {"holder-1": {"date": "<date>", "reason": ""}}})
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn relocking_as_a_current_holder_changes_nothing() {
    let cluster = Cluster::start().await;
    let before = create_fixture(&cluster, "held").await;
    let output = kube_lock(
        &cluster,
        "lock",
        &["--holder-name", "holder-1", "--reason", "another reason"],
    )
    .await;
    assert_run(
        &cluster,
        &output,
        0,
        &[r#"Already locked since 2018-08-19T19:14:24Z for reason "db restart""#],
    );
    let after = cluster.configmaps().get("lock").await.unwrap();
    assert_eq!(
        after.metadata.resource_version, before.metadata.resource_version,
        "nothing was written"
    );
    assert_eq!(
        annotation(&cluster, "lock").await.unwrap(),
        r#"{"max":1,"holders":{"holder-1":{"date":"2018-08-19T19:14:24Z","reason":"db restart"}}}"#
    );
    // Also when this run took it first.
    let output = kube_lock(
        &cluster,
        "other",
        &[
            "--holder-name",
            "me",
            "--create-configmap",
            "--reason",
            "first",
        ],
    )
    .await;
    assert_run(&cluster, &output, 0, &["Successfully locked"]);
    let first = annotation(&cluster, "other").await.unwrap();
    let output = kube_lock(
        &cluster,
        "other",
        &["--holder-name", "me", "--reason", "second", "--run-once"],
    )
    .await;
    assert_run(&cluster, &output, 0, &[r#"for reason "first""#]);
    assert_eq!(annotation(&cluster, "other").await.unwrap(), first);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_configuration_exits_1() {
    let cluster = Cluster::start().await;
    for args in [
        &["default", "lock", "--max-holders", "0"][..],
        &["default", "lock", "--max-holders", "many"],
        &["default", "lock", "--polling-interval", "10"],
        &["default", "lock", "--polling-interval", "0s"],
        &["default", "lock", "--polling-timeout", "5 minutes"],
        &["default"],
        &[],
        &["default", "lock", "extra"],
        &["default", "lock", "--no-such-flag"],
        &["Not_A_Namespace", "lock"],
        &["default", "Not_A_Name", "--create-configmap"],
        &[
            "default",
            "lock",
            "--kubeconfig-path",
            "/nonexistent/kubeconfig",
        ],
    ] {
        let output = cluster.run("kube-lock", args).await;
        assert_eq!(output.code(), Some(1), "{args:?}: {output:#?}");
        assert!(!output.stderr.is_empty(), "{args:?} says why");
    }
    if let Some(server) = cluster.server.fake_server() {
        assert_eq!(server.counts().writes(), 0);
    }
    let output = cluster.run("kube-lock", &["--help"]).await;
    assert_eq!(output.code(), Some(0), "{output:#?}");
    for text in [
        "--polling-interval",
        "--holder-name",
        "Exit codes",
        "--run-once",
    ] {
        assert!(output.stdout.contains(text), "help lacks {text}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_configmap_is_an_error_without_create_configmap() {
    let cluster = Cluster::start().await;
    let output = kube_lock(&cluster, "lock", &["--holder-name", "holder-1"]).await;
    assert_run(
        &cluster,
        &output,
        2,
        &[
            r#"cannot lock cm/lock in ns default: configmaps "lock" not found"#,
            "--create-configmap",
            "Exiting on error: 2",
        ],
    );
    assert!(
        cluster
            .configmaps()
            .get_opt("lock")
            .await
            .unwrap()
            .is_none()
    );
    if let Some(server) = cluster.server.fake_server() {
        assert_eq!(server.counts().writes(), 0);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn unlocking_what_is_not_held_succeeds() {
    let cluster = Cluster::start().await;
    let output = kube_lock(&cluster, "lock", &["--holder-name", "holder-1", "--unlock"]).await;
    assert_run(
        &cluster,
        &output,
        0,
        &[r#"Unlock non needed: cm/lock in ns default: configmaps "lock" not found"#],
    );
    create_fixture(&cluster, "held").await;
    let before = annotation(&cluster, "lock").await;
    let output = kube_lock(&cluster, "lock", &["--holder-name", "holder-9", "--unlock"]).await;
    assert_run(
        &cluster,
        &output,
        0,
        &["Unlock non needed: cm/lock in ns default: not in semaphore"],
    );
    assert_eq!(annotation(&cluster, "lock").await, before);
    if let Some(server) = cluster.server.fake_server() {
        assert_eq!(server.counts().writes(), 1, "only the fixture's");
    }
}

/// Sends SIGTERM to a running kube-lock.
fn sigterm(child: &tokio::process::Child) {
    let pid = child.id().expect("running");
    let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
}

/// Waits until the fake server has answered at least `n` gets since the counters were last
/// reset.
async fn until_gets(server: &FakeApiServer, n: u64) {
    let started = Instant::now();
    while server.counts().get(Verb::Get) < n {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "kube-lock never read the ConfigMap {n} times"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_while_waiting_exits_2_and_leaves_nothing() {
    let cluster = Cluster::start().await;
    create_fixture(&cluster, "held").await;
    let before = annotation(&cluster, "lock").await;
    cluster.server.reset_counters();
    let waiting = spawn(
        &cluster,
        "lock",
        &[
            "--holder-name",
            "holder-2",
            "--polling-interval",
            "200ms",
            "--polling-timeout",
            "0",
        ],
    );
    until_watched(&cluster).await;
    sigterm(&waiting);
    let output = finish(waiting).await;
    assert_run(
        &cluster,
        &output,
        2,
        &[
            "Starting to poll for lock every 200ms, no timeout",
            "cannot lock cm/lock in ns default, SIGTERM received",
            "Exiting on error: 2",
        ],
    );
    assert_eq!(annotation(&cluster, "lock").await, before);
}

/// SIGTERM while the write that takes the place is in flight (the API server stored it, but
/// kube-lock has no answer yet): the holder it wrote is removed before kube-lock exits.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_while_writing_exits_2_and_leaves_nothing() {
    let cluster = Cluster::start().await;
    let Some(server) = cluster.fake("delays an answer after commit") else {
        return;
    };
    create_fixture(&cluster, "precreated").await;
    // An update of a ConfigMap, and a create of a missing one.
    for (configmap, extra) in [("lock", None), ("fresh", Some("--create-configmap"))] {
        // The take-write is stored, and answered 3 s later (only that one request: a create
        // names no object in its path).
        server.inject(
            Fault::latency(Duration::from_secs(3))
                .after_commit()
                .on(RequestMatcher::any().verb(Verb::Update).verb(Verb::Create))
                .times(1),
        );
        let mut args = vec!["--holder-name", "holder-1", "--max-holders", "2"];
        args.extend(extra);
        let taking = spawn(&cluster, configmap, &args);
        // The server logs a request once it is answered: the write shows in the ConfigMap
        // first, while its answer is still delayed.
        let started = Instant::now();
        while !annotation(&cluster, configmap)
            .await
            .is_some_and(|text| text.contains("holder-1"))
        {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "kube-lock never wrote {configmap}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        sigterm(&taking);
        let output = finish(taking).await;
        assert_run(
            &cluster,
            &output,
            2,
            &[
                &format!("cannot lock cm/{configmap} in ns default, SIGTERM received"),
                "Exiting on error: 2",
            ],
        );
        assert!(
            !output.stderr.contains("Successfully locked"),
            "the signal came before the write's answer:\n{}",
            output.stderr
        );
        assert_eq!(
            semaphore(&cluster, configmap).await["holders"],
            json!({}),
            "{configmap}: {}",
            output.stderr
        );
    }
}

/// How a waiting kube-lock gives up.
#[derive(Debug, Clone, Copy)]
enum GiveUp {
    Sigterm,
    Timeout,
}

/// Run A waits as holder `x`; run B, with the same holder name, takes the place that frees
/// up before A notices, and exits 0; then A gives up. B's place is B's: A leaves it.
async fn a_run_that_gives_up_leaves_a_place_its_name_took(give_up: GiveUp) {
    let cluster = Cluster::start().await;
    let Some(server) = cluster.fake("holds up one client's watch") else {
        return;
    };
    create_fixture(&cluster, "held").await; // max 1, held by holder-1
    // A's watch never starts (its list and watch are answered after 30 s), so A learns of
    // changes only when it reads the ConfigMap: at its start and at its polling interval.
    server.inject(
        Fault::latency(Duration::from_secs(30))
            .on(RequestMatcher::any().verb(Verb::List).verb(Verb::Watch))
            .always(),
    );
    server.reset_counters();
    let timeout = match give_up {
        GiveUp::Sigterm => "0",
        GiveUp::Timeout => "6s",
    };
    let mut waiting = spawn(
        &cluster,
        "lock",
        &[
            "--holder-name",
            "x",
            "--reason",
            "a",
            "--polling-interval",
            "60s",
            "--polling-timeout",
            timeout,
        ],
    );
    // A's reads: its first look, its attempt, and the start of its wait; the next would come
    // at its polling interval, so A has not seen what B does below.
    until_gets(server, 3).await;
    let output = kube_lock(&cluster, "lock", &["--holder-name", "holder-1", "--unlock"]).await;
    assert_run(&cluster, &output, 0, &["Successfully unlocked"]);
    let output = kube_lock(&cluster, "lock", &["--holder-name", "x", "--reason", "b"]).await;
    assert_run(
        &cluster,
        &output,
        0,
        &[
            "Can lock semaphore in cm/lock in ns default: 0/1 holders",
            "Successfully locked cm/lock in ns default for holder x",
        ],
    );
    let b_holds = json!({"max": 1, "holders": {"x": {"date": "<date>", "reason": "b"}}});
    assert_eq!(semaphore(&cluster, "lock").await, b_holds);
    assert!(
        waiting.try_wait().unwrap().is_none(),
        "A still waits when B has locked"
    );
    let expected = match give_up {
        GiveUp::Sigterm => {
            sigterm(&waiting);
            "cannot lock cm/lock in ns default, SIGTERM received"
        }
        GiveUp::Timeout => "cannot lock cm/lock in ns default, timeout after 6s",
    };
    let output = finish(waiting).await;
    assert_run(&cluster, &output, 2, &[expected, "Exiting on error: 2"]);
    assert!(
        !output.stderr.contains("Successfully locked"),
        "{output:#?}"
    );
    assert_eq!(
        semaphore(&cluster, "lock").await,
        b_holds,
        "A left B's place: {}",
        output.stderr
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_leaves_a_place_the_same_holder_name_took() {
    a_run_that_gives_up_leaves_a_place_its_name_took(GiveUp::Sigterm).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_polling_timeout_leaves_a_place_the_same_holder_name_took() {
    a_run_that_gives_up_leaves_a_place_its_name_took(GiveUp::Timeout).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cluster_errors_name_the_configmap_and_exit_2() {
    let cluster = Cluster::start().await;

    // Forbidden: a user without rights.
    let nobody = cluster.kubeconfig_granted("nobody", json!({})).await;
    let output = kube_lock_with(
        &cluster,
        &nobody,
        "lock",
        &["--holder-name", "holder-1", "--create-configmap"],
    )
    .await;
    assert_run(
        &cluster,
        &output,
        2,
        &["cannot lock cm/lock in ns default: "],
    );
    let unlock = ["--holder-name", "holder-1", "--unlock"];
    let output = kube_lock_with(&cluster, &nobody, "lock", &unlock).await;
    assert_run(
        &cluster,
        &output,
        2,
        &["cannot unlock cm/lock in ns default: "],
    );

    // A corrupt annotation is never overwritten.
    let mut cm = ConfigMap::default();
    cm.metadata.name = Some("broken".into());
    cm.metadata.annotations = Some([("kube-lock".to_owned(), "{not json".to_owned())].into());
    cluster
        .configmaps()
        .create(&PostParams::default(), &cm)
        .await
        .unwrap();
    for extra in [
        &["--holder-name", "h"][..],
        &["--holder-name", "h", "--unlock"],
    ] {
        let output = kube_lock(&cluster, "broken", extra).await;
        assert_run(
            &cluster,
            &output,
            2,
            &["cm/broken in ns default", "corrupt"],
        );
    }
    assert_eq!(
        annotation(&cluster, "broken").await.as_deref(),
        Some("{not json")
    );

    // A namespace that does not exist.
    let kubeconfig = cluster.kubeconfig.to_str().unwrap();
    let output = cluster
        .run(
            "kube-lock",
            &[
                "nowhere",
                "lock",
                "--kubeconfig-path",
                kubeconfig,
                "--create-configmap",
            ],
        )
        .await;
    assert_run(
        &cluster,
        &output,
        2,
        &["cannot lock cm/lock in ns nowhere: ", "not found"],
    );
}

/// The requests kube-lock makes, for the RBAC Role the README documents: run as a user with
/// exactly that Role, it takes, waits and unlocks.
#[tokio::test(flavor = "multi_thread")]
async fn uses_get_create_update_list_and_watch() {
    let cluster = Cluster::start().await;
    let verbs = ["get", "create", "update", "list", "watch"];
    let user = cluster
        .kubeconfig_granted("kube-lock", configmaps_role(&verbs))
        .await;
    let lock = [
        "--holder-name",
        "a",
        "--create-configmap",
        "--polling-interval",
        "200ms",
    ];
    let output = kube_lock_with(&cluster, &user, "lock", &lock).await;
    assert_run(&cluster, &output, 0, &[]);
    let waiting = spawn_with(
        &cluster,
        &user,
        "lock",
        &["--holder-name", "b", "--polling-interval", "200ms"],
    );
    until_watched(&cluster).await;
    let unlock = ["--holder-name", "a", "--unlock"];
    let output = kube_lock_with(&cluster, &user, "lock", &unlock).await;
    assert_run(&cluster, &output, 0, &[]);
    let output = finish(waiting).await;
    assert_run(&cluster, &output, 0, &[]);
    assert!(!output.stderr.contains("forbidden"), "{output:#?}");
    let Some(server) = cluster.fake("reads the request log") else {
        return;
    };
    let mut verbs: Vec<Verb> = server
        .requests()
        .iter()
        .filter(|r| r.resource.as_deref() == Some("configmaps"))
        .map(|r| r.verb)
        .collect();
    verbs.sort();
    verbs.dedup();
    assert_eq!(
        verbs,
        [
            Verb::Get,
            Verb::List,
            Verb::Watch,
            Verb::Create,
            Verb::Update
        ]
    );
}

/// With RBAC that allows no list and watch (the Go tool needed neither), waiters poll.
#[tokio::test(flavor = "multi_thread")]
async fn without_a_watch_waiters_poll() {
    let cluster = Cluster::start().await;
    create_fixture(&cluster, "held").await;
    let verbs = ["get", "create", "update"];
    let user = cluster
        .kubeconfig_granted("no-watch", configmaps_role(&verbs))
        .await;
    let waiting = spawn_with(
        &cluster,
        &user,
        "lock",
        &[
            "--holder-name",
            "holder-2",
            "--polling-interval",
            "300ms",
            "--polling-timeout",
            "30s",
        ],
    );
    // It polls: several reads of the ConfigMap (a real cluster does not count another
    // process's requests: there, time for several polls).
    let started = Instant::now();
    while cluster
        .server
        .fake_server()
        .map_or(started.elapsed() < Duration::from_secs(2), |s| {
            s.counts().get(Verb::Get) < 4
        })
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "it never polled"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let output = kube_lock(&cluster, "lock", &["--holder-name", "holder-1", "--unlock"]).await;
    assert_run(&cluster, &output, 0, &["Successfully unlocked"]);
    let output = finish(waiting).await;
    assert_run(
        &cluster,
        &output,
        0,
        &["Successfully locked cm/lock in ns default for holder holder-2"],
    );
    assert_eq!(
        semaphore(&cluster, "lock").await,
        json!({"max": 1, "holders": {"holder-2": {"date": "<date>", "reason": ""}}})
    );
}

/// Holder names and reasons with odd characters (Unicode, control characters, quotes, a
/// direction override, very long) are stored in the annotation exactly as given, and
/// `--unlock` with the same name finds them. (An argument cannot hold NUL: the kernel's
/// argv cannot.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_holder_names_and_reasons_are_stored_exactly() {
    let cluster = Cluster::start().await;
    let long = "ß".repeat(5000);
    let odd = [
        "ünïcödé 🔒",
        "tab\there",
        "new\nline",
        "esc \u{1b}[31mred\u{1b}[0m",
        "quote\" back\\slash $HOME `id`",
        "\u{202e}rtl override",
        long.as_str(),
    ];
    for name in odd {
        let out = kube_lock(
            &cluster,
            "odd",
            &[
                "--holder-name",
                name,
                "--reason",
                name,
                "--create-configmap",
                "--max-holders",
                "1",
            ],
        )
        .await;
        assert_eq!(out.code(), Some(0), "{name:?}: {out:#?}");
        let json: Value =
            serde_json::from_str(&annotation(&cluster, "odd").await.unwrap()).unwrap();
        let holders = json["holders"].as_object().unwrap();
        assert_eq!(holders.keys().collect::<Vec<_>>(), [name], "{name:?}");
        assert_eq!(holders[name]["reason"], name);
        let out = kube_lock(&cluster, "odd", &["--holder-name", name, "--unlock"]).await;
        assert_eq!(out.code(), Some(0), "{name:?}: {out:#?}");
        let json: Value =
            serde_json::from_str(&annotation(&cluster, "odd").await.unwrap()).unwrap();
        assert!(
            json["holders"]
                .as_object()
                .is_none_or(serde_json::Map::is_empty),
            "{json}"
        );
    }
}
