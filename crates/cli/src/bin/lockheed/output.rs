//! How locks are printed: aligned tables for people, JSON for scripts.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::io::Write as _;
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, SecondsFormat, Utc};
use lockheed::{Holder, LockInfo, LockKind};

use crate::shared::duration;
use crate::shared::text::printable;

/// At most this many holder names in a table cell; the rest are counted.
const NAMES_IN_A_CELL: usize = 3;

/// Columns of text, left-aligned, two spaces apart.
#[derive(Debug)]
pub(crate) struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers.
    pub(crate) fn new(headers: &[&str]) -> Self {
        Self {
            rows: vec![headers.iter().map(|h| (*h).to_owned()).collect()],
        }
    }

    /// Adds a row (as many cells as headers).
    pub(crate) fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table, one line per row, each prefixed with `indent`.
    pub(crate) fn render(&self, indent: &str) -> String {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns)
            .map(|c| {
                self.rows
                    .iter()
                    .filter_map(|row| row.get(c))
                    .map(|cell| cell.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut text = String::new();
        for row in &self.rows {
            let mut line = String::from(indent);
            for (c, cell) in row.iter().enumerate() {
                if c + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    let _ = write!(line, "{cell:<width$}  ", width = widths[c]);
                }
            }
            text.push_str(line.trim_end());
            text.push('\n');
        }
        text
    }
}

/// Prints `value` as indented JSON on stdout.
pub(crate) fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value).context("cannot write the JSON output")?;
    print(&(text + "\n"))
}

/// Prints `text` on stdout. A closed pipe (`lockheed list | head -1`) is not an error.
pub(crate) fn print(text: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(err) if err.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(err).context("cannot write to stdout")
        }
        _ => Ok(()),
    }
}

/// The lock's kind for people: `mutex`, `semaphore`, `rwlock`, or `-` for a lock never taken.
pub(crate) fn kind(lock: &LockInfo) -> &str {
    lock.kind.as_ref().map_or("-", LockKind::as_str)
}

/// The holders in one cell: `worker-1`, `2/3: job-1, job-2`, `shared: r1, r2 (+1 writer
/// waiting)`, `-`.
pub(crate) fn holders_cell(lock: &LockInfo) -> String {
    let mut names: Vec<Cow<'_, str>> = lock
        .holders
        .iter()
        .take(NAMES_IN_A_CELL)
        .map(|h| printable(&h.id))
        .collect();
    let more = lock.holders.len().saturating_sub(NAMES_IN_A_CELL);
    if more > 0 {
        names.push(Cow::Owned(format!("+{more} more")));
    }
    let mut cell = if lock.holders.is_empty() {
        "-".to_owned()
    } else {
        let names = names.join(", ");
        match (&lock.kind, lock.max_holders) {
            (Some(LockKind::Semaphore), Some(max)) => {
                format!("{}/{max}: {names}", lock.holders.len())
            }
            (Some(LockKind::ReadWrite), _) if lock.holders.iter().all(|h| h.shared) => {
                format!("shared: {names}")
            }
            (Some(LockKind::ReadWrite), _) => format!("exclusive: {names}"),
            _ => names,
        }
    };
    match lock.waiters.len() {
        0 => {}
        n => {
            let _ = write!(cell, " (+{n} waiting)");
        }
    }
    cell
}

/// When the first of the holders' leases ends, from `now`: `24s`, `never` (no expiry), `-`
/// (no holder).
pub(crate) fn expires_in(lock: &LockInfo, now: DateTime<Utc>) -> String {
    if lock.holders.is_empty() {
        return "-".to_owned();
    }
    match lock.holders.iter().filter_map(|h| h.expires).min() {
        Some(at) => until(at, now),
        None => "never".to_owned(),
    }
}

/// How long from `now` until `at` (`0s` once past).
fn until(at: DateTime<Utc>, now: DateTime<Utc>) -> String {
    duration::short((at - now).to_std().unwrap_or(Duration::ZERO))
}

/// A holder's lease end for people: `24s`, `never`.
pub(crate) fn holder_expires_in(holder: &Holder, now: DateTime<Utc>) -> String {
    holder
        .expires
        .map_or_else(|| "never".to_owned(), |at| until(at, now))
}

/// A moment for people: `2026-11-23T09:59:30Z (30s ago)`.
pub(crate) fn moment(at: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let ago = duration::short((now - at).to_std().unwrap_or(Duration::ZERO));
    format!(
        "{} ({ago} ago)",
        at.to_rfc3339_opts(SecondsFormat::Secs, true)
    )
}

/// Tags in one cell: `db,nightly` or `-`.
pub(crate) fn tags(lock: &LockInfo) -> String {
    if lock.tags.is_empty() {
        "-".to_owned()
    } else {
        let tags: Vec<_> = lock.tags.iter().map(|t| printable(t)).collect();
        tags.join(",")
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Arc;

    use lockheed::clock::ManualClock;
    use lockheed::{Access, Lock, LockGuard, Locker, MemoryLocker};

    use super::*;

    /// The moment the fixtures are looked at: 20 s after they were taken.
    pub(crate) fn now() -> DateTime<Utc> {
        "2026-11-23T09:59:50Z".parse().unwrap()
    }

    /// Locks taken at 09:59:30 with 60 s leases, seen at [`now`]: `db` (a mutex held by
    /// `worker-1`, tags db and nightly, reason "db restart"), `gpu` (a semaphore of 3 held by
    /// `job-1` and `job-2`), `catalog` (read by `r1`, with `w1` waiting to write), `free`
    /// (taken and released), `forever` (held without expiry).
    pub(crate) async fn fixtures() -> Vec<LockInfo> {
        let clock = ManualClock::new("2026-11-23T09:59:30Z".parse().unwrap());
        let locker = MemoryLocker::new().with_clock(Arc::new(clock.clone()));
        let lock = |name: &str, holder: &str| {
            Lock::new(name, locker.clone())
                .with_holder(holder)
                .with_duration(Duration::from_secs(60))
        };
        lock("db", "worker-1")
            .with_tags(["db", "nightly"])
            .with_reason("db restart")
            .try_acquire()
            .await
            .unwrap()
            .forget();
        for job in ["job-1", "job-2"] {
            lock("gpu", job)
                .with_max_holders(3)
                .try_acquire()
                .await
                .unwrap()
                .forget();
        }
        lock("catalog", "r1")
            .with_access(Access::Shared)
            .try_acquire()
            .await
            .unwrap()
            .forget();
        let writer = lock("catalog", "w1").with_access(Access::Exclusive);
        let waiting = tokio::spawn(async move { writer.acquire().await.map(LockGuard::forget) });
        while locker
            .get("catalog")
            .await
            .unwrap()
            .unwrap()
            .waiters
            .is_empty()
        {
            tokio::task::yield_now().await;
        }
        lock("free", "someone")
            .try_acquire()
            .await
            .unwrap()
            .release()
            .await
            .unwrap();
        lock("forever", "keeper")
            .with_duration(Duration::ZERO)
            .try_acquire()
            .await
            .unwrap()
            .forget();
        clock.set(now());
        let locks = locker.list(None).await.unwrap().locks;
        waiting.abort();
        locks
    }

    fn named<'a>(locks: &'a [LockInfo], name: &str) -> &'a LockInfo {
        locks.iter().find(|l| l.name == name).unwrap()
    }

    #[tokio::test]
    async fn cells_read_at_a_glance() {
        let locks = fixtures().await;
        let cells = |name| {
            let lock = named(&locks, name);
            [
                kind(lock).to_owned(),
                holders_cell(lock),
                expires_in(lock, now()),
                tags(lock),
            ]
        };
        assert_eq!(cells("db"), ["mutex", "worker-1", "40s", "db,nightly"]);
        assert_eq!(cells("gpu"), ["semaphore", "2/3: job-1, job-2", "40s", "-"]);
        assert_eq!(cells("free"), ["mutex", "-", "-", "-"]);
        assert_eq!(cells("forever"), ["mutex", "keeper", "never", "-"]);
        let catalog = cells("catalog");
        assert_eq!(catalog[1], "shared: r1 (+1 waiting)");
    }

    #[tokio::test]
    async fn holders_in_one_line() {
        let locks = fixtures().await;
        let holder = &named(&locks, "db").holders[0];
        assert_eq!(
            holder.describe(now()),
            "worker-1 (since 2026-11-23T09:59:30Z (20s ago), token 1, lease ends in 40s, \
             reason \"db restart\")"
        );
    }

    #[test]
    fn tables_align() {
        let mut table = Table::new(&["NAME", "HOLDERS", "TOKEN"]);
        table.row(vec!["a-long-name".into(), "-".into(), "1".into()]);
        table.row(vec!["b".into(), "worker-1".into(), "12".into()]);
        assert_eq!(
            table.render(""),
            "NAME         HOLDERS   TOKEN\n\
             a-long-name  -         1\n\
             b            worker-1  12\n"
        );
    }
}
