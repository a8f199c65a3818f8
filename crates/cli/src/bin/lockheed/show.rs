//! `lockheed show`: one lock in detail.

use std::fmt::Write as _;

use anyhow::{Context as _, bail};
use chrono::{DateTime, Utc};
use lockheed::{Holder, LockInfo, LockKind};

use crate::args::{ClusterArgs, Format, ShowArgs};
use crate::connect::{Locks, Place};
use crate::exit;
use crate::output::{self, Table};
use crate::shared::text::printable;

/// Prints lock `args.name`.
///
/// # Errors
///
/// When the lock does not exist, its state cannot be read, or the cluster cannot be reached.
pub(crate) async fn show(cluster: &ClusterArgs, args: ShowArgs) -> anyhow::Result<u8> {
    match crate::connect::locker(cluster).await? {
        Locks::ConfigMaps(locker) => show_in(&locker, &args).await,
        Locks::Leases(locker) => show_in(&locker, &args).await,
    }
}

/// Prints lock `args.name` of `locker`.
async fn show_in(locker: &impl Place, args: &ShowArgs) -> anyhow::Result<u8> {
    let object = locker.object(&args.name);
    let Some(lock) = locker
        .get(&args.name)
        .await
        .with_context(|| format!("cannot read lock {:?}", args.name))?
    else {
        bail!("lock {:?} does not exist: there is no {object}", args.name);
    };
    match args.output {
        Format::Table => output::print(&describe(&lock, &object, Utc::now()))?,
        Format::Json => output::print_json(&lock)?,
    }
    Ok(exit::OK)
}

/// The lock for people, `object` being its object as `Kind namespace/name`.
fn describe(lock: &LockInfo, object: &str, now: DateTime<Utc>) -> String {
    let mut text = String::new();
    let _ = writeln!(text, "Lock:           {} ({object})", lock.name);
    let kind = match (&lock.kind, lock.max_holders) {
        (None, _) => "- (never taken)".to_owned(),
        (Some(LockKind::Semaphore), Some(max)) => format!("semaphore of {max}"),
        (Some(LockKind::ReadWrite), _) => "rwlock (shared/exclusive)".to_owned(),
        (Some(kind), _) => kind.to_string(),
    };
    let _ = writeln!(text, "Kind:           {kind}");
    let tags = if lock.tags.is_empty() {
        "-".to_owned()
    } else {
        let tags: Vec<_> = lock.tags.iter().map(|t| printable(t)).collect();
        tags.join(", ")
    };
    let _ = writeln!(text, "Tags:           {tags}");
    let _ = writeln!(
        text,
        "Fencing token:  {} (of the latest acquisition)",
        lock.fencing_token
    );
    let count = match lock.max_holders {
        Some(max) => format!("{}/{max}", lock.holders.len()),
        None => lock.holders.len().to_string(),
    };
    if lock.holders.is_empty() {
        let _ = writeln!(text, "Holders:        none");
    } else {
        let _ = writeln!(text, "Holders:        {count}");
        text.push_str(&holders(
            &lock.holders,
            lock.kind == Some(LockKind::ReadWrite),
            now,
        ));
    }
    if !lock.waiters.is_empty() {
        let _ = writeln!(text, "Waiting (in turn, first come, first served):");
        text.push_str(&holders(
            &lock.waiters,
            lock.kind == Some(LockKind::ReadWrite),
            now,
        ));
    }
    text
}

/// A table of holders, indented.
fn holders(holders: &[Holder], access: bool, now: DateTime<Utc>) -> String {
    let mut headers = vec!["ID"];
    if access {
        headers.push("ACCESS");
    }
    headers.extend(["SINCE", "EXPIRES IN", "TOKEN", "REASON"]);
    let mut table = Table::new(&headers);
    for holder in holders {
        let mut row = vec![printable(&holder.id).into_owned()];
        if access {
            let mode = if holder.shared { "shared" } else { "exclusive" };
            row.push(mode.to_owned());
        }
        row.extend([
            holder
                .since
                .map_or_else(|| "-".to_owned(), |at| output::moment(at, now)),
            output::holder_expires_in(holder, now),
            holder
                .token
                .map_or_else(|| "-".to_owned(), |t| t.to_string()),
            holder
                .reason
                .as_deref()
                .map_or_else(|| "-".to_owned(), |r| printable(r).into_owned()),
        ]);
        table.row(row);
    }
    table.render("  ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::tests::{fixtures, now};

    #[tokio::test]
    async fn describes_holders_and_writers() {
        let locks = fixtures().await;
        let lock = |name| locks.iter().find(|l| l.name == name).unwrap();
        assert_eq!(
            describe(lock("db"), "ConfigMap default/lockheed-db", now()),
            "\
Lock:           db (ConfigMap default/lockheed-db)
Kind:           mutex
Tags:           db, nightly
Fencing token:  1 (of the latest acquisition)
Holders:        1/1
  ID        SINCE                           EXPIRES IN  TOKEN  REASON
  worker-1  2026-11-23T09:59:30Z (20s ago)  40s         1      db restart
"
        );
        let catalog = describe(lock("catalog"), "ConfigMap default/lockheed-catalog", now());
        assert!(catalog.contains("Kind:           rwlock"), "{catalog}");
        assert!(catalog.contains("  r1  shared"), "{catalog}");
        assert!(catalog.contains("Waiting (in turn"), "{catalog}");
        assert!(catalog.contains("  w1  "), "{catalog}");
        let free = describe(lock("free"), "ConfigMap default/lockheed-free", now());
        assert!(free.contains("Holders:        none"), "{free}");
    }
}
