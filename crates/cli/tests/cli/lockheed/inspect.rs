//! `lockheed list` and `lockheed show`: tables, JSON, filters, unreadable locks.

use lockheed::{Lock, LockGuard};

use super::{locker, store_corrupt_lock};
use crate::harness::Cluster;

/// `db` held by `worker-1` (tag db, reason "backup"), `web` free (tag web), `gpu` a semaphore
/// of 3 held by `job-1` and `job-2`, and `broken`, whose state does not parse.
async fn some_locks(cluster: &Cluster) -> Vec<LockGuard<lockheed::KubeLocker>> {
    let locker = locker(cluster);
    let db = Lock::new("db", locker.clone())
        .with_holder("worker-1")
        .with_tags(["db"])
        .with_reason("backup")
        .try_acquire()
        .await
        .unwrap();
    Lock::new("web", locker.clone())
        .with_tags(["web"])
        .try_acquire()
        .await
        .unwrap()
        .release()
        .await
        .unwrap();
    let mut guards = vec![db];
    for job in ["job-1", "job-2"] {
        let guard = Lock::new("gpu", locker.clone())
            .with_holder(job)
            .with_max_holders(3)
            .try_acquire()
            .await
            .unwrap();
        guards.push(guard);
    }
    store_corrupt_lock(cluster, "broken").await;
    guards
}

/// The lock names of a JSON listing.
fn names(json: &serde_json::Value) -> Vec<&str> {
    json["locks"]
        .as_array()
        .expect("locks")
        .iter()
        .map(|l| l["name"].as_str().expect("a name"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_prints_a_table_and_reports_unreadable_locks() {
    let cluster = Cluster::start().await;
    let _guards = some_locks(&cluster).await;
    let out = cluster.run("lockheed", &["list"]).await;
    assert_eq!(out.code(), Some(0), "{out:?}");
    let lines: Vec<Vec<&str>> = out
        .stdout
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        lines[0],
        ["NAME", "KIND", "HOLDERS", "EXPIRES", "IN", "TAGS", "TOKEN"],
        "{}",
        out.stdout
    );
    assert_eq!(lines.len(), 4, "{}", out.stdout);
    assert_eq!(lines[1][..3], ["db", "mutex", "worker-1"], "{}", out.stdout);
    assert!(
        lines[1][3].ends_with('s'),
        "expires in seconds: {}",
        out.stdout
    );
    assert_eq!(lines[1][4..], ["db", "1"], "{}", out.stdout);
    assert_eq!(
        lines[2],
        [
            "gpu",
            "semaphore",
            "2/3:",
            "job-1,",
            "job-2",
            lines[2][5],
            "-",
            "2"
        ],
        "{}",
        out.stdout
    );
    assert_eq!(
        lines[3],
        ["web", "mutex", "-", "-", "web", "1"],
        "{}",
        out.stdout
    );
    // Reported on stderr, naming the ConfigMap; the others are still listed.
    assert!(
        out.stderr.contains(&format!(
            "cannot read a lock: the lock state in {}/lockheed-broken is corrupt",
            cluster.ns()
        )),
        "{out:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_prints_json_for_scripts() {
    let cluster = Cluster::start().await;
    let _guards = some_locks(&cluster).await;
    let out = cluster.run("lockheed", &["list", "-o", "json"]).await;
    assert_eq!(out.code(), Some(0), "{out:?}");
    let json: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON");
    assert_eq!(json["namespace"], cluster.ns());
    assert_eq!(names(&json), ["db", "gpu", "web"]);
    let db = &json["locks"][0];
    assert_eq!(db["kind"], "mutex");
    assert_eq!(db["maxHolders"], 1);
    assert_eq!(db["tags"], serde_json::json!(["db"]));
    assert_eq!(db["fencingToken"], 1);
    assert_eq!(db["holders"][0]["id"], "worker-1");
    assert_eq!(db["holders"][0]["reason"], "backup");
    assert_eq!(db["holders"][0]["token"], 1);
    assert!(db["holders"][0]["expires"].is_string());
    assert_eq!(json["locks"][1]["maxHolders"], 3);
    let unreadable = json["unreadable"].as_array().expect("unreadable");
    assert_eq!(unreadable.len(), 1);
    assert!(
        unreadable[0]["error"]
            .as_str()
            .unwrap()
            .contains(&format!("{}/lockheed-broken", cluster.ns())),
        "{unreadable:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_filters_by_state_tags_and_condition() {
    let cluster = Cluster::start().await;
    let _guards = some_locks(&cluster).await;
    let listed = async |args: &[&str]| {
        let mut line = vec!["list", "-o", "json"];
        line.extend(args);
        let out = cluster.run("lockheed", &line).await;
        assert_eq!(out.code(), Some(0), "{args:?}: {out:?}");
        let json: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON");
        names(&json)
            .into_iter()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert_eq!(listed(&["--held"]).await, ["db", "gpu"]);
    assert_eq!(listed(&["--free"]).await, ["web"]);
    assert_eq!(listed(&["--tag", "db"]).await, ["db"]);
    assert_eq!(
        listed(&["--held", "--tag", "web"]).await,
        Vec::<String>::new()
    );
    assert_eq!(
        listed(&[
            "--condition",
            r#"{"or":[{"tagsContain":"web"},{"not":{"acquired":true}}]}"#
        ])
        .await,
        ["web"]
    );
    assert_eq!(
        listed(&["--held", "--condition", r#"{"not":{"tagsContain":"db"}}"#]).await,
        ["gpu"]
    );

    let out = cluster
        .run("lockheed", &["list", "--condition", r#"{"field":"tags"}"#])
        .await;
    assert_eq!(out.code(), Some(125), "{out:?}");
    assert!(out.stderr.contains("--condition"), "{out:?}");
    let out = cluster.run("lockheed", &["list", "--held", "--free"]).await;
    assert_eq!(out.code(), Some(125), "{out:?}");

    let out = cluster.run("lockheed", &["list", "--tag", "nothing"]).await;
    assert_eq!(out.code(), Some(0), "{out:?}");
    assert_eq!(out.stdout, "No locks found.\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_prints_one_lock() {
    let cluster = Cluster::start().await;
    let _guards = some_locks(&cluster).await;
    let out = cluster.run("lockheed", &["show", "db"]).await;
    assert_eq!(out.code(), Some(0), "{out:?}");
    for text in [
        &format!(
            "Lock:           db (ConfigMap {}/lockheed-db)",
            cluster.ns()
        ),
        "Kind:           mutex",
        "Tags:           db",
        "Fencing token:  1",
        "Holders:        1/1",
    ] {
        assert!(out.stdout.contains(text), "{text:?} in\n{}", out.stdout);
    }
    let holder = out
        .stdout
        .lines()
        .find(|l| l.trim_start().starts_with("worker-1"))
        .expect("a holder line");
    assert!(holder.contains(" ago)"), "{holder}");
    assert!(holder.trim_end().ends_with("1      backup"), "{holder}");

    let out = cluster
        .run("lockheed", &["show", "gpu", "-o", "json"])
        .await;
    assert_eq!(out.code(), Some(0), "{out:?}");
    let json: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON");
    assert_eq!(json["kind"], "semaphore");
    assert_eq!(json["holders"][1]["id"], "job-2");

    let out = cluster.run("lockheed", &["show", "nothing"]).await;
    assert_eq!(out.code(), Some(125), "{out:?}");
    assert!(
        out.stderr.contains(&format!(
            "lock \"nothing\" does not exist: there is no ConfigMap {}/lockheed-nothing",
            cluster.ns()
        )),
        "{out:?}"
    );
    let out = cluster.run("lockheed", &["show", "broken"]).await;
    assert_eq!(out.code(), Some(125), "{out:?}");
    assert!(
        out.stderr
            .contains(&format!("{}/lockheed-broken is corrupt", cluster.ns())),
        "{out:?}"
    );
}
