//! How long a waiter has seen each other holder's lease unchanged, on its own monotonic clock:
//! client-go's rule for judging expiry without trusting the holder's clock.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

use crate::backend::Record;
use crate::gotime::GoTime;

/// The other holders' leases as this waiter has watched them.
#[derive(Debug, Default)]
pub(crate) struct Watched {
    /// Each other holder's lease end as last seen, and since when it has been seen so.
    since: BTreeMap<String, (GoTime, Instant)>,
}

impl Watched {
    /// Notes the leases of `record` (`None`: the lock is not stored) and returns how long each
    /// other holder's lease has been seen unchanged. A lease that changed (a renewal, another
    /// acquisition) starts again from now.
    pub(crate) fn observe<V>(
        &mut self,
        record: Option<&Record<V>>,
        me: &str,
    ) -> BTreeMap<String, Duration> {
        let now = Instant::now();
        let leases = record.map(|r| &r.state.leases);
        self.since.retain(|holder, (expires, _)| {
            leases
                .and_then(|l| l.get(holder))
                .is_some_and(|lease| lease.expires == *expires)
        });
        for lease in leases.into_iter().flat_map(|l| l.values()) {
            if lease.instance_id != me {
                self.since
                    .entry(lease.instance_id.clone())
                    .or_insert((lease.expires, now));
            }
        }
        self.since
            .iter()
            .map(|(holder, (_, since))| (holder.clone(), since.elapsed()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
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
        assert_eq!(watched.observe(Some(&first), "me")["other"], Duration::ZERO);
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(
            watched.observe(Some(&first), "me")["other"],
            Duration::from_secs(10)
        );
        let renewed = held("other", "2026-11-22T10:00:40Z");
        assert_eq!(
            watched.observe(Some(&renewed), "me")["other"],
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
