//! Odd characters in what `lockheed` is given: holder identities, tags and reasons are
//! stored and handed to the command exactly; lock names that cannot form a ConfigMap name
//! are refused with a clear error.

use super::{Running, lock};
use crate::harness::Cluster;

/// Unicode, control characters, quotes and shell syntax, a direction override, very long.
/// (An argument cannot hold NUL: the kernel's argv cannot.)
fn odd() -> Vec<String> {
    [
        "ünïcödé 🔒",
        "tab\there",
        "new\nline",
        "esc \u{1b}[31mred\u{1b}[0m",
        "quote\" back\\slash $HOME `id`",
        "\u{202e}rtl override",
    ]
    .into_iter()
    .map(str::to_owned)
    .chain(["ß".repeat(5000)])
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_holders_tags_and_reasons_are_stored_and_passed_on_exactly() {
    let cluster = Cluster::start().await;
    for value in odd() {
        let running = Running::start(
            &cluster,
            &[
                "run",
                "odd",
                "--holder",
                &value,
                "--tag",
                &value,
                "--reason",
                &value,
                "--",
                "sh",
                "-c",
                r#"printf '%s' "$LOCKHEED_HOLDER"; printf '\n--end--\n'; sleep 1"#,
            ],
        );
        let stdout = running.wait_for_stdout("--end--").await;
        assert_eq!(
            stdout,
            format!("{value}\n--end--\n"),
            "the command's LOCKHEED_HOLDER"
        );
        let held = lock(&cluster, "odd").await;
        assert_eq!(held.holders[0].id, value);
        assert_eq!(held.holders[0].reason.as_deref(), Some(value.as_str()));
        // `show -o json` says it exactly too.
        let out = cluster
            .run("lockheed", &["show", "odd", "-o", "json"])
            .await;
        assert_eq!(out.code(), Some(0), "{out:?}");
        let shown: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        assert_eq!(shown["holders"][0]["id"], value.as_str(), "{}", out.stdout);
        assert_eq!(shown["holders"][0]["reason"], value.as_str());
        let out = running.finish().await;
        assert_eq!(out.code(), Some(0), "{value:?}: {out:?}");
        assert!(lock(&cluster, "odd").await.tags.contains(&value));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_lock_names_are_refused_with_a_clear_error() {
    let cluster = Cluster::start().await;
    for name in odd()
        .into_iter()
        .chain(["UPPER".to_owned(), "a".repeat(245)])
    {
        let out = cluster.run("lockheed", &["run", &name, "--", "true"]).await;
        assert_eq!(out.code(), Some(125), "{name:?}: {out:?}");
        assert!(
            out.stderr.contains("invalid lock name"),
            "{name:?}: {}",
            out.stderr
        );
        assert!(
            out.stderr.contains("the ConfigMap name"),
            "{name:?}: {}",
            out.stderr
        );
    }
    if let Some(server) = cluster.fake("counts the binary's requests") {
        assert_eq!(server.counts().total(), 0, "refused before any request");
    }
}

/// Holder identities and tags come from the cluster, written by anyone: `lockheed show` and
/// `list` print their control characters and direction overrides escaped, so that a holder
/// named with an escape sequence cannot recolour or rewrite the operator's terminal (`-o
/// json` has them exactly).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_characters_from_the_cluster_are_printed_escaped() {
    let cluster = Cluster::start().await;
    let sneaky = "esc \u{1b}[2J\u{202e}reversed";
    let guard = lockheed::Lock::new("odd", super::locker(&cluster))
        .with_holder(sneaky)
        .with_tags([sneaky])
        .with_reason(sneaky)
        .try_acquire()
        .await
        .unwrap();
    for args in [
        &["show", "odd"][..],
        &["list"],
        &["run", "odd", "--timeout", "0s", "--", "true"],
    ] {
        let out = cluster.run("lockheed", args).await;
        let printed = format!("{}{}", out.stdout, out.stderr);
        assert!(
            !printed.contains('\u{1b}') && !printed.contains('\u{202e}'),
            "{args:?}: {printed:?}"
        );
        assert!(
            printed.contains(r"esc \u{1b}[2J\u{202e}reversed"),
            "{args:?}: {printed}"
        );
    }
    guard.release().await.unwrap();
}
