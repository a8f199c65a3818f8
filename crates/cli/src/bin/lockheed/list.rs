//! `lockheed list`: the locks of a namespace, as a table or JSON.

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use lockheed::{Condition, LockInfo, LockList};
use serde::Serialize;

use crate::args::{ClusterArgs, Format, ListArgs};
use crate::connect::{Locks, Place};
use crate::exit;
use crate::output::{self, Table};
use crate::shared::log;

/// Lists the locks `args` asks for, and reports the unreadable ones.
///
/// # Errors
///
/// When the cluster cannot be reached or the ConfigMaps (Leases) cannot be listed.
pub(crate) async fn list(cluster: &ClusterArgs, args: ListArgs) -> anyhow::Result<u8> {
    match crate::connect::locker(cluster).await? {
        Locks::ConfigMaps(locker) => list_in(&locker, &args).await,
        Locks::Leases(locker) => list_in(&locker, &args).await,
    }
}

/// Lists the locks of `locker` that `args` asks for.
async fn list_in(locker: &impl Place, args: &ListArgs) -> anyhow::Result<u8> {
    let condition = condition(args);
    let list = locker
        .list(condition.as_ref())
        .await
        .with_context(|| format!("cannot list the locks of namespace {}", locker.namespace()))?;
    for unreadable in &list.unreadable {
        log::log_warn!(crate::PROGRAM, "cannot read a lock: {unreadable}");
    }
    match args.output {
        Format::Table => output::print(&table(&list, Utc::now()))?,
        Format::Json => output::print_json(&Listing::new(locker.namespace(), &list))?,
    }
    Ok(exit::OK)
}

/// The condition of `--held`, `--free`, `--tag` and `--condition` together (`None`: every
/// lock).
fn condition(args: &ListArgs) -> Option<Condition> {
    let mut all = Vec::new();
    if args.held {
        all.push(Condition::acquired(true));
    }
    if args.free {
        all.push(Condition::acquired(false));
    }
    all.extend(args.tags.iter().map(Condition::tags_contain));
    all.extend(args.condition.clone());
    match all.len() {
        0 => None,
        1 => all.pop(),
        _ => Some(Condition::and(all)),
    }
}

/// The table for people.
fn table(list: &LockList, now: DateTime<Utc>) -> String {
    if list.locks.is_empty() {
        return "No locks found.\n".to_owned();
    }
    let mut table = Table::new(&["NAME", "KIND", "HOLDERS", "EXPIRES IN", "TAGS", "TOKEN"]);
    for lock in &list.locks {
        table.row(vec![
            lock.name.clone(),
            output::kind(lock).to_owned(),
            output::holders_cell(lock),
            output::expires_in(lock, now),
            output::tags(lock),
            lock.fencing_token.to_string(),
        ]);
    }
    table.render("")
}

/// The JSON for scripts.
#[derive(Debug, Serialize)]
struct Listing<'a> {
    namespace: &'a str,
    locks: &'a [LockInfo],
    unreadable: Vec<Unreadable>,
}

/// A lock whose state cannot be read, in the JSON.
#[derive(Debug, Serialize)]
struct Unreadable {
    /// The error, which names the ConfigMap.
    error: String,
}

impl<'a> Listing<'a> {
    fn new(namespace: &'a str, list: &'a LockList) -> Self {
        Self {
            namespace,
            locks: &list.locks,
            unreadable: list
                .unreadable
                .iter()
                .map(|err| Unreadable {
                    error: err.to_string(),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::args::{Cli, Command};
    use crate::output::tests::{fixtures, now};

    fn list_args(line: &[&str]) -> ListArgs {
        let cli = Cli::try_parse_from(["lockheed", "list"].iter().chain(line)).unwrap();
        match cli.command {
            Command::List(args) => args,
            other => panic!("not list: {other:?}"),
        }
    }

    fn listed(locks: &[LockInfo], line: &[&str]) -> Vec<String> {
        let condition = condition(&list_args(line));
        locks
            .iter()
            .filter(|l| condition.as_ref().is_none_or(|c| c.matches(l)))
            .map(|l| l.name.clone())
            .collect()
    }

    #[tokio::test]
    async fn flags_combine_into_one_condition() {
        let locks = fixtures().await;
        assert_eq!(condition(&list_args(&[])), None);
        assert_eq!(listed(&locks, &["--free"]), ["free"]);
        assert_eq!(listed(&locks, &["--held", "--tag", "db"]), ["db"]);
        assert_eq!(listed(&locks, &["--tag", "db", "--tag", "nightly"]), ["db"]);
        assert!(listed(&locks, &["--free", "--tag", "db"]).is_empty());
        assert_eq!(
            listed(
                &locks,
                &["--held", "--condition", r#"{"not":{"tagsContain":"db"}}"#]
            ),
            ["catalog", "forever", "gpu"]
        );
    }

    #[tokio::test]
    async fn the_table_reads_at_a_glance() {
        let mut list = LockList::default();
        list.locks = fixtures().await;
        assert_eq!(
            table(&list, now()),
            "\
NAME     KIND       HOLDERS                  EXPIRES IN  TAGS        TOKEN
catalog  rwlock     shared: r1 (+1 waiting)  40s         -           1
db       mutex      worker-1                 40s         db,nightly  1
forever  mutex      keeper                   never       -           1
free     mutex      -                        -           -           1
gpu      semaphore  2/3: job-1, job-2        40s         -           2
"
        );
        assert_eq!(table(&LockList::default(), now()), "No locks found.\n");
    }

    #[tokio::test]
    async fn json_has_the_library_fields_and_the_unreadable() {
        let mut list = LockList::default();
        list.locks = fixtures().await;
        list.unreadable.push(lockheed::Error::Corrupt {
            object: "default/lockheed-broken".into(),
            reason: "expected value".into(),
        });
        let json = serde_json::to_value(Listing::new("default", &list)).unwrap();
        assert_eq!(json["namespace"], "default");
        assert_eq!(json["locks"][1]["name"], "db");
        assert_eq!(json["locks"][1]["holders"][0]["id"], "worker-1");
        assert_eq!(json["locks"][1]["fencingToken"], 1);
        assert_eq!(
            json["unreadable"][0]["error"],
            "the lock state in default/lockheed-broken is corrupt: expected value"
        );
    }
}
