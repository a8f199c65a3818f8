//! `lockheed release`: refusing without `--holder` or `--all`, and saying what it removed.

use std::time::Duration;

use lockheed::Lock;

use super::{PATIENCE, lock, locker};
use crate::harness::Cluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_without_holder_or_all() {
    let cluster = Cluster::start().await;
    let guard = Lock::new("db", locker(&cluster))
        .with_holder("worker-1")
        .try_acquire()
        .await
        .unwrap();
    let out = cluster.run("lockheed", &["release", "db"]).await;
    assert_eq!(out.code(), Some(125), "{out:?}");
    assert!(out.stderr.contains("--holder <ID>|--all"), "{out:?}");
    let out = cluster
        .run(
            "lockheed",
            &["release", "db", "--holder", "worker-1", "--all"],
        )
        .await;
    assert_eq!(out.code(), Some(125), "{out:?}");
    assert!(lock(&cluster, "db").await.is_held(), "nothing was removed");

    // A holder that does not hold it: an error that says who does.
    let out = cluster
        .run("lockheed", &["release", "db", "--holder", "worker-2"])
        .await;
    assert_eq!(out.code(), Some(125), "{out:?}");
    assert!(
        out.stderr.contains(
            "lock \"db\" has no holder \"worker-2\" (its holders are worker-1): nothing removed"
        ),
        "{out:?}"
    );
    let out = cluster
        .run("lockheed", &["release", "nothing", "--all"])
        .await;
    assert_eq!(out.code(), Some(125), "{out:?}");
    assert!(out.stderr.contains("does not exist"), "{out:?}");
    guard.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removes_a_holder_and_says_so() {
    let cluster = Cluster::start().await;
    let guard = Lock::new("db", locker(&cluster))
        .with_holder("worker-1")
        .with_reason("backup")
        .with_duration(Duration::from_secs(3))
        .with_renew_interval(Duration::from_secs(1))
        .try_acquire()
        .await
        .unwrap();
    let out = cluster
        .run("lockheed", &["release", "db", "--holder", "worker-1"])
        .await;
    assert_eq!(out.code(), Some(0), "{out:?}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines[0], "Removed from lock \"db\":", "{out:?}");
    assert!(
        lines[1].starts_with("  worker-1 (since ") && lines[1].contains(" ago), token 1, "),
        "{out:?}"
    );
    assert!(lines[1].ends_with(", reason \"backup\")"), "{out:?}");
    // Logged at warn level on stderr, with who removed whom.
    let warning = out
        .stderr
        .lines()
        .find(|l| l.starts_with('W'))
        .unwrap_or_else(|| panic!("no warning: {out:?}"));
    assert!(
        warning.contains(&format!(
            r#"removed worker-1 from lock "db" (ConfigMap {}/lockheed-db)"#,
            cluster.ns()
        )),
        "{warning}"
    );
    assert!(
        warning.contains('@') && warning.contains("(pid "),
        "{warning}"
    );
    assert!(!lock(&cluster, "db").await.is_held());
    // The holder finds out at its next renewal.
    tokio::time::timeout(PATIENCE, guard.lost())
        .await
        .expect("the holder sees the lock lost");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_removes_every_holder() {
    let cluster = Cluster::start().await;
    let mut guards = Vec::new();
    for job in ["job-1", "job-2"] {
        let guard = Lock::new("gpu", locker(&cluster))
            .with_holder(job)
            .with_max_holders(2)
            .try_acquire()
            .await
            .unwrap();
        guards.push(guard);
    }
    let out = cluster.run("lockheed", &["release", "gpu", "--all"]).await;
    assert_eq!(out.code(), Some(0), "{out:?}");
    assert!(out.stdout.contains("\n  job-1 (since "), "{out:?}");
    assert!(out.stdout.contains(" ago), token 1, "), "{out:?}");
    assert!(out.stdout.contains("\n  job-2 (since "), "{out:?}");
    assert!(out.stdout.contains(" ago), token 2, "), "{out:?}");
    assert!(!lock(&cluster, "gpu").await.is_held());

    let out = cluster.run("lockheed", &["release", "gpu", "--all"]).await;
    assert_eq!(out.code(), Some(0), "{out:?}");
    assert_eq!(
        out.stdout,
        "Lock \"gpu\" had no holders: nothing removed.\n"
    );
    for guard in guards {
        guard.forget();
    }
}

/// With the Role of `examples/rbac.yaml` for each command, each works; without `list`,
/// `lockheed list` fails with the server's refusal, which names the missing verb.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_command_works_with_its_role_and_says_which_verb_is_missing() {
    let cluster = Cluster::start().await;
    let documents: Vec<serde_json::Value> =
        serde_saphyr::from_str_multiple(include_str!("../../../../../examples/rbac.yaml")).unwrap();
    let role = |name: &str| {
        documents
            .iter()
            .find(|d| d["kind"] == "Role" && d["metadata"]["name"] == name)
            .unwrap()
            .clone()
    };
    let mut kubeconfigs = Vec::new();
    for (user, name) in [
        ("runner", "lockheed"),
        ("viewer", "lockheed-viewer"),
        ("operator", "lockheed-operator"),
    ] {
        let path = cluster.kubeconfig_granted(user, role(name)).await;
        kubeconfigs.push(path.to_str().unwrap().to_owned());
    }
    let [runner, viewer, operator] = <[String; 3]>::try_from(kubeconfigs).unwrap();
    let run = |config: &str, args: &[&str]| {
        let mut all = vec!["--kubeconfig", config];
        all.extend_from_slice(args);
        all.into_iter().map(str::to_owned).collect::<Vec<_>>()
    };
    let args = run(&runner, &["run", "db", "--holder", "job", "--", "true"]);
    let out = cluster
        .run(
            "lockheed",
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
        )
        .await;
    assert_eq!(out.code(), Some(0), "{out:?}");
    for (config, args) in [
        (&viewer, &["list"][..]),
        (&viewer, &["show", "db"]),
        (&runner, &["list"]),
    ] {
        let args = run(config, args);
        let out = cluster
            .run(
                "lockheed",
                &args.iter().map(String::as_str).collect::<Vec<_>>(),
            )
            .await;
        assert_eq!(out.code(), Some(0), "{args:?}: {out:?}");
    }
    // The operator may release holders, but not list locks.
    let guard = Lock::new("db", locker(&cluster))
        .with_holder("dead")
        .try_acquire()
        .await
        .unwrap();
    guard.forget();
    let args = run(&operator, &["release", "db", "--holder", "dead"]);
    let out = cluster
        .run(
            "lockheed",
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
        )
        .await;
    assert_eq!(out.code(), Some(0), "{out:?}");
    let args = run(&operator, &["list"]);
    let out = cluster
        .run(
            "lockheed",
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
        )
        .await;
    assert_eq!(out.code(), Some(125), "{out:?}");
    assert!(
        out.stderr.contains(r#"cannot list resource "configmaps""#),
        "the missing verb is named: {}",
        out.stderr
    );
    // kube-lock, with the same Role as `lockheed run`.
    for extra in [
        &["--create-configmap", "--max-holders", "1"][..],
        &["--unlock"],
    ] {
        let mut args = vec![
            cluster.ns(),
            "sem",
            "--kubeconfig-path",
            &runner,
            "--holder-name",
            "h",
        ];
        args.extend_from_slice(extra);
        let out = cluster.run("kube-lock", &args).await;
        assert_eq!(out.code(), Some(0), "{args:?}: {out:?}");
    }
}
