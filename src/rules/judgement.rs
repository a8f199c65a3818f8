//! How a contender judges whether another holder's lease, or another waiter's place in the
//! queue, has ended, without trusting the other side's clock too far.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::state::gotime::GoTime;
use crate::state::{Lease, QueueEntry};

/// What a contender watches: a holder's lease, or a waiter's place in the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Slot {
    Lease,
    Queue,
}

/// How long a contender has seen each other lease and queue entry unchanged, asked by slot and
/// holder. The rules only ask; the contender's watch (`lock::watched`) answers from what it
/// keeps, with nothing built or allocated per question.
pub(crate) trait Unchanged: fmt::Debug {
    /// How long `holder`'s lease or entry (by `slot`) has been seen unchanged; `None`: not
    /// watched.
    fn unchanged_for(&self, slot: Slot, holder: &str) -> Option<Duration>;
}

/// How a contender judges whether another holder's lease (or another waiter's entry) has
/// ended.
///
/// It is live while either holds:
/// - by the contender's wall clock, `now < expires + skew_allowance`: a contender whose clock
///   runs ahead of the other's by up to the allowance still waits for the real end;
/// - the contender has watched it and seen it unchanged for less than its duration
///   (client-go's rule: elapsed time on the contender's own monotonic clock, which no skew
///   affects). Only what this crate writes says its duration.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Judgement<'a> {
    pub(crate) skew_allowance: Duration,
    /// How long this contender has seen each other lease and entry unchanged (when it has
    /// been watching; `None` for a single attempt).
    pub(crate) unchanged_for: Option<&'a dyn Unchanged>,
}

impl Judgement<'_> {
    /// How long until `lease` of another holder has ended for this contender (zero: it has).
    pub(crate) fn remaining(&self, lease: &Lease, now: DateTime<Utc>) -> Duration {
        self.until_end(
            (Slot::Lease, &lease.instance_id),
            lease.expires,
            lease.duration(),
            now,
        )
    }

    /// How long until `entry` of another waiter has ended for this contender.
    pub(crate) fn entry_remaining(&self, entry: &QueueEntry, now: DateTime<Utc>) -> Duration {
        self.until_end(
            (Slot::Queue, &entry.instance_id),
            entry.expires,
            entry.duration(),
            now,
        )
    }

    /// Whether `lease` of another holder has not ended for this contender.
    pub(crate) fn live(&self, lease: &Lease, now: DateTime<Utc>) -> bool {
        !self.remaining(lease, now).is_zero()
    }

    /// Whether `entry` of another waiter has not ended for this contender.
    pub(crate) fn entry_live(&self, entry: &QueueEntry, now: DateTime<Utc>) -> bool {
        !self.entry_remaining(entry, now).is_zero()
    }

    fn until_end(
        &self,
        (slot, holder): (Slot, &str),
        expires: GoTime,
        duration: Option<Duration>,
        now: DateTime<Utc>,
    ) -> Duration {
        if expires.is_forever() {
            return Duration::MAX;
        }
        let end = expires.to_utc();
        let by_wall = if end > now {
            (end - now).to_std().unwrap_or(Duration::ZERO) + self.skew_allowance
        } else {
            // Ended by the wall clock: the allowance still counts from the end.
            let since = (now - end).to_std().unwrap_or(Duration::ZERO);
            self.skew_allowance.saturating_sub(since)
        };
        let seen = self
            .unchanged_for
            .and_then(|watched| watched.unchanged_for(slot, holder));
        let by_watch = match (duration, seen) {
            (Some(duration), Some(seen)) => duration.saturating_sub(seen),
            _ => Duration::ZERO,
        };
        by_wall.max(by_watch)
    }
}
