//! `lockheed release`: an operator removes a dead holder from a lock.

use std::fmt::Write as _;

use anyhow::{Context as _, bail};
use chrono::{DateTime, Utc};
use lockheed::{Evict, Holder};

use crate::PROGRAM;
use crate::args::{ClusterArgs, ReleaseArgs};
use crate::connect::{Locks, Place};
use crate::exit;
use crate::output;
use crate::shared::log::log_warn;
use crate::shared::text::printable;

/// Removes the holder `args` names (or all of them) from the lock, and prints what it
/// removed.
///
/// # Errors
///
/// When the lock does not exist, the named holder does not hold it, its state cannot be read,
/// or the cluster cannot be reached.
pub(crate) async fn release(cluster: &ClusterArgs, args: ReleaseArgs) -> anyhow::Result<u8> {
    match crate::connect::locker(cluster).await? {
        Locks::ConfigMaps(locker) => release_in(&locker, &args).await,
        Locks::Leases(locker) => release_in(&locker, &args).await,
    }
}

/// Removes the holders `args` names from lock `args.name` of `locker`.
async fn release_in(locker: &impl Place, args: &ReleaseArgs) -> anyhow::Result<u8> {
    let name = &args.name;
    let object = locker.object(name);
    let which = match &args.which.holder {
        Some(holder) => Evict::Holder(holder),
        None => Evict::All,
    };
    let removed = locker
        .evict(name, which)
        .await
        .with_context(|| format!("cannot release lock {name:?}"))?;
    if !removed.is_empty() {
        log_warn!(
            PROGRAM,
            "{} removed {} from lock {name:?} ({object})",
            operator(),
            removed
                .iter()
                .map(|h| printable(&h.id).into_owned())
                .collect::<Vec<_>>()
                .join(", ")
        );
        output::print(&report(name, &removed, Utc::now()))?;
        return Ok(exit::OK);
    }
    // Nothing removed: say why.
    let lock = locker
        .get(name)
        .await
        .with_context(|| format!("cannot read lock {name:?}"))?;
    let Some(lock) = lock else {
        bail!("lock {name:?} does not exist: there is no {object}");
    };
    if let Some(holder) = &args.which.holder {
        let holders: Vec<&str> = lock.holders.iter().map(|h| h.id.as_str()).collect();
        let holders = if holders.is_empty() {
            "it has none".to_owned()
        } else {
            format!("its holders are {}", holders.join(", "))
        };
        bail!("lock {name:?} has no holder {holder:?} ({holders}): nothing removed");
    }
    output::print(&format!("Lock {name:?} had no holders: nothing removed.\n"))?;
    Ok(exit::OK)
}

/// Who runs this release, for the warning it logs: `USER@HOSTNAME (pid N)`. (The cluster
/// knows the operator by their credentials; this says which login and machine it came from.)
fn operator() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "an unknown user".to_owned());
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "an unknown host".to_owned());
    format!(
        "{}@{} (pid {})",
        printable(&user),
        printable(&host),
        std::process::id()
    )
}

/// What was removed, one holder a line.
fn report(name: &str, removed: &[Holder], now: DateTime<Utc>) -> String {
    let mut text = format!("Removed from lock {name:?}:\n");
    for holder in removed {
        let _ = writeln!(text, "  {}", holder.describe(now));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::tests::{fixtures, now};

    #[tokio::test]
    async fn reports_each_holder_removed() {
        let locks = fixtures().await;
        let gpu = locks.iter().find(|l| l.name == "gpu").unwrap();
        let text = report("gpu", &gpu.holders, now());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "Removed from lock \"gpu\":");
        assert!(lines[1].starts_with("  job-1 (since "), "{text}");
        assert!(lines[1].contains(" ago), token 1, "), "{text}");
        assert!(lines[2].starts_with("  job-2 (since "), "{text}");
        assert!(lines[2].contains(" ago), token 2, "), "{text}");
    }
}
