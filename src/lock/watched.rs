//! How long a waiter has seen each other holder's lease, and each other waiter's place in the
//! queue, unchanged, on its own monotonic clock: client-go's rule for judging expiry without
//! trusting the other side's clock.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

use crate::backend::Record;
use crate::rules::{Slot, Unchanged};
use crate::state::gotime::GoTime;

/// One lease or entry as last seen.
#[derive(Debug, Clone, Copy)]
struct Seen {
    /// Its end, as last seen.
    expires: GoTime,
    /// Since when it has been seen so.
    since: Instant,
    /// Shown by the observation under way: one it does not show is forgotten at its end.
    shown: bool,
}

/// The other holders' leases and waiters' entries as this waiter has watched them, by holder
/// (a lease and an entry each), updated in place at each observation.
#[derive(Debug, Default)]
pub(crate) struct Watched {
    /// By holder: its lease and its entry (see [`index`]).
    seen: BTreeMap<String, [Option<Seen>; 2]>,
}

/// What one observation of [`Watched`] found: it answers the rules' [`Unchanged`], measured to
/// the moment of the observation.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Observed<'a> {
    watched: &'a Watched,
    at: Instant,
}

/// Where a holder's `slot` is kept.
fn index(slot: Slot) -> usize {
    match slot {
        Slot::Lease => 0,
        Slot::Queue => 1,
    }
}

impl Watched {
    /// Notes the leases and queue entries of `record` (`None`: the lock is not stored), and
    /// answers how long each other one has been seen unchanged. One that changed (a renewal,
    /// a refresh, another acquisition) starts again from now; one that is gone is forgotten.
    pub(crate) fn observe<V>(&mut self, record: Option<&Record<V>>, me: &str) -> Observed<'_> {
        let now = Instant::now();
        let state = record.map(|r| &r.state);
        let leases = state.into_iter().flat_map(|s| s.leases.values().rev());
        let queue = state.into_iter().flat_map(|s| s.queue.iter().rev());
        let leases = leases.map(|l| (l.instance_id.as_str(), l.expires));
        let queue = queue.map(|e| (e.instance_id.as_str(), e.expires));
        self.note(Slot::Lease, leases, me, now);
        self.note(Slot::Queue, queue, me, now);
        self.seen.retain(|_, slots| {
            for slot in slots.iter_mut() {
                *slot = slot.filter(|one| one.shown).map(|one| Seen {
                    shown: false,
                    ..one
                });
            }
            slots.iter().any(Option::is_some)
        });
        Observed {
            watched: self,
            at: now,
        }
    }

    /// Notes in `slot` what the observation under way shows at `now` (each one's holder and
    /// end, in reverse order: the last one of a holder counts, as a map of them keeps it), but
    /// for `me`'s.
    fn note<'a>(
        &mut self,
        slot: Slot,
        shown: impl Iterator<Item = (&'a str, GoTime)>,
        me: &str,
        now: Instant,
    ) {
        for (holder, expires) in shown.filter(|(holder, _)| *holder != me) {
            if !self.seen.contains_key(holder) {
                self.seen.insert(holder.to_owned(), [None; 2]);
            }
            let Some(slots) = self.seen.get_mut(holder) else {
                continue;
            };
            let one = &mut slots[index(slot)];
            *one = match *one {
                // Shown again, earlier: the later one was noted.
                Some(seen) if seen.shown => continue,
                Some(seen) if seen.expires == expires => Some(Seen {
                    shown: true,
                    ..seen
                }),
                _ => Some(Seen {
                    expires,
                    since: now,
                    shown: true,
                }),
            };
        }
    }
}

impl Observed<'_> {
    /// Whether it watches nothing.
    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.watched.seen.is_empty()
    }
}

impl Unchanged for Observed<'_> {
    fn unchanged_for(&self, slot: Slot, holder: &str) -> Option<Duration> {
        let one = self.watched.seen.get(holder)?[index(slot)]?;
        Some(self.at.saturating_duration_since(one.since))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Lease, LockState};

    /// How long `watched` has seen the lease of "other" unchanged.
    fn other(watched: Observed<'_>) -> Duration {
        watched.unchanged_for(Slot::Lease, "other").unwrap()
    }

    fn held(holder: &str, expires: &str) -> Record<u64> {
        let mut state = LockState::empty("x");
        let lease = Lease::until(holder, GoTime::parse(expires).unwrap());
        state.leases.insert(holder.to_owned(), lease);
        Record::new(state, 1)
    }

    #[tokio::test(start_paused = true)]
    async fn a_lease_counts_while_unchanged_and_restarts_when_renewed() {
        let mut watched = Watched::default();
        let first = held("other", "2026-11-22T10:00:30Z");
        assert_eq!(other(watched.observe(Some(&first), "me")), Duration::ZERO);
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(
            other(watched.observe(Some(&first), "me")),
            Duration::from_secs(10)
        );
        let renewed = held("other", "2026-11-22T10:00:40Z");
        assert_eq!(other(watched.observe(Some(&renewed), "me")), Duration::ZERO);
        // My own lease is not watched; a lock that is gone forgets everything.
        assert!(
            watched
                .observe(Some(&held("me", "2026-11-22T10:00:40Z")), "me")
                .is_empty()
        );
        assert!(watched.observe::<u64>(None, "me").is_empty());
    }
}
