//! How long a waiter has seen each other holder's lease, and each other waiter's place in the
//! queue, unchanged, on its own monotonic clock: client-go's rule for judging expiry without
//! trusting the other side's clock.

use std::collections::BTreeMap;

use tokio::time::Instant;

use crate::backend::Record;
use crate::rules::{Slot, Unchanged};
use crate::state::gotime::GoTime;

/// The other holders' leases and waiters' entries as this waiter has watched them.
#[derive(Debug, Default)]
pub(crate) struct Watched {
    /// Each one's end as last seen, and since when it has been seen so.
    since: BTreeMap<(Slot, String), (GoTime, Instant)>,
}

impl Watched {
    /// Notes the leases and queue entries of `record` (`None`: the lock is not stored) and
    /// returns how long each other one has been seen unchanged. One that changed (a renewal,
    /// a refresh, another acquisition) starts again from now.
    pub(crate) fn observe<V>(&mut self, record: Option<&Record<V>>, me: &str) -> Unchanged {
        let now = Instant::now();
        let mut seen: BTreeMap<(Slot, String), GoTime> = BTreeMap::new();
        if let Some(record) = record {
            let state = &record.state;
            for lease in state.leases.values().filter(|l| l.instance_id != me) {
                seen.insert((Slot::Lease, lease.instance_id.clone()), lease.expires);
            }
            for entry in state.queue.iter().filter(|e| e.instance_id != me) {
                seen.insert((Slot::Queue, entry.instance_id.clone()), entry.expires);
            }
        }
        self.since
            .retain(|key, (expires, _)| seen.get(key) == Some(expires));
        for (key, expires) in seen {
            self.since.entry(key).or_insert((expires, now));
        }
        self.since
            .iter()
            .map(|(key, (_, since))| (key.clone(), since.elapsed()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::state::{Lease, LockState};

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
        assert_eq!(
            watched.observe(Some(&first), "me")[&(Slot::Lease, "other".to_owned())],
            Duration::ZERO
        );
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(
            watched.observe(Some(&first), "me")[&(Slot::Lease, "other".to_owned())],
            Duration::from_secs(10)
        );
        let renewed = held("other", "2026-11-22T10:00:40Z");
        assert_eq!(
            watched.observe(Some(&renewed), "me")[&(Slot::Lease, "other".to_owned())],
            Duration::ZERO
        );
        // My own lease is not watched; a lock that is gone forgets everything.
        assert!(
            watched
                .observe(Some(&held("me", "2026-11-22T10:00:40Z")), "me")
                .is_empty()
        );
        assert!(watched.observe::<u64>(None, "me").is_empty());
    }
}
