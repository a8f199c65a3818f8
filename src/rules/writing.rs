//! How the rules write a lock's state: lease ends and durations, and tags.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::state::LockState;
use crate::state::gotime::GoTime;

/// The duration to record in a lease (`None` for no expiry).
pub(crate) fn duration_millis(duration: Duration) -> Option<u64> {
    (!duration.is_zero()).then(|| u64::try_from(duration.as_millis()).unwrap_or(u64::MAX))
}

/// When a lease taken at `now` for `duration` ends.
pub(crate) fn expiry(now: DateTime<Utc>, duration: Duration) -> GoTime {
    if duration.is_zero() {
        return GoTime::forever();
    }
    chrono::Duration::from_std(duration)
        .ok()
        .and_then(|d| now.checked_add_signed(d))
        .map_or_else(GoTime::forever, |t| GoTime::from(t).min(GoTime::forever()))
}

/// How long before its lease of `duration` ends a holder stops trusting it: a tenth of the
/// duration. The guard gives up then (so that it stops before another holder can start), its
/// renewals must come before then, and a leader's term ends then.
pub(crate) fn safety_margin(duration: Duration) -> Duration {
    duration / 10
}

/// The moment a holder of a lease taken for `duration` stops trusting it when it ends at
/// `expires`, in Unix milliseconds: its [`safety_margin`] before (`i64::MAX` for a lease
/// without expiry). A lease handed over lasts only the claim window until claimed, and is
/// given up by the same margin.
pub(crate) fn give_up_ms(expires: GoTime, duration: Duration) -> i64 {
    if expires.is_forever() {
        return i64::MAX;
    }
    let margin = i64::try_from(safety_margin(duration).as_millis()).unwrap_or(i64::MAX);
    expires.to_utc().timestamp_millis().saturating_sub(margin)
}

/// Adds `tags` to the lock's (after clearing them, with `reset`), keeping the order and
/// skipping tags it already has; linear in the number of tags, however many a caller sends.
pub(crate) fn apply_tags(state: &mut LockState, tags: &[String], reset: bool) {
    if reset {
        state.tags.clear();
    }
    let mut seen: std::collections::HashSet<String> = state.tags.iter().cloned().collect();
    for tag in tags {
        if seen.insert(tag.clone()) {
            state.tags.push(tag.clone());
        }
    }
}
