//! The background task of a held lock: renewing its lease every renew interval, or, for a
//! lease without expiry, watching that it is still there; either fires `lost` when the lock can
//! no longer be trusted.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::backoff::Backoff;
use super::holding::{Holding, Renewed};
use crate::backend::{Backend, Changes, Snapshot};
use crate::clock::Clock;
use crate::error::Error;
use crate::rules;
use crate::state::LockState;

fn until(clock: &dyn Clock, at: DateTime<Utc>) -> Duration {
    (at - clock.now()).to_std().unwrap_or(Duration::ZERO)
}

/// Renews the lease every renew interval (retrying failures sooner) until stopped; fires
/// `lost` when the lease is taken over or cannot be renewed in time. Without a renew
/// interval, only fires `lost` when the lease ends.
pub(crate) async fn keep_alive<L: Backend>(shared: Arc<Holding<L>>) {
    let interval = shared.settings.renew_interval;
    // Failed renewals are retried sooner than the interval, backing off (with jitter, and
    // honouring Retry-After) so that an overloaded server is not hammered; the deadline
    // below bounds it all.
    let mut backoff = interval.map(|i| {
        Backoff::new(
            (i / 8).clamp(Duration::from_millis(10), Duration::from_millis(200)),
            i,
        )
    });
    let mut wait = shared.first_renewal(interval.map(first_renewal));
    loop {
        let deadline = shared.give_up_at();
        let give_up = tokio::time::sleep(until(shared.clock.as_ref(), deadline));
        tokio::pin!(give_up);
        let next = async {
            match wait {
                Some(wait) => tokio::time::sleep(wait).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            () = shared.stop.cancelled() => return,
            () = &mut give_up => return shared.lose("the lease could not be renewed before it ended"),
            () = next => {}
        }
        let outcome = tokio::select! {
            biased;
            () = shared.stop.cancelled() => return,
            () = &mut give_up => return shared.lose("the lease could not be renewed before it ended"),
            // Boxed: a renewal's request future is some 3 KiB, which this task would otherwise
            // carry, inline, for every held lock all the time it sleeps.
            outcome = Box::pin(shared.renew()) => outcome,
        };
        match outcome {
            Ok(Renewed::Yielded) => {
                return shared.lose(
                    "another holder is preferred (coordinated leader election): giving the \
                     lock up; releasing the guard hands it over",
                );
            }
            Ok(Renewed::Extended) => {
                wait = interval;
                if let Some(backoff) = backoff.as_mut() {
                    backoff.reset();
                }
            }
            Err(Error::Lost { .. }) => {
                return shared.lose("the lease is gone: taken over, or expired and taken");
            }
            Err(err) => {
                crate::metrics::renewal_failed(&shared.settings.name);
                if err.is_transient() {
                    tracing::warn!(error = %err, "renewing the lease failed; retrying");
                } else {
                    // A 403 may be fixed by an administrator before the deadline: keep trying.
                    tracing::error!(error = %err, "renewing the lease failed and may keep failing; retrying until the lease ends");
                }
                wait = backoff.as_mut().map(|b| b.after(&err));
            }
        }
    }
}

/// When the first renewal of a lease comes: at a random point of the second half of the renew
/// interval; the next ones follow every interval. Locks taken together (a process starting, a
/// burst of work) would otherwise renew together ever after: 10,000 locks taken in a second
/// sent 10,000 writes in one second of each interval, and the burst overflowed watch buffers.
/// Spread over half an interval, they stay spread, for at most one renewal more per lease.
fn first_renewal(interval: Duration) -> Duration {
    let half = interval / 2;
    let nanos = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
    half + Duration::from_nanos(fastrand::u64(0..=nanos))
}

/// How often a lease without expiry is checked when the backend sends no changes.
const UNEXPIRING_CHECK: Duration = Duration::from_secs(10);

/// Watches a lease without expiry, which is never renewed, until stopped; fires `lost` when
/// the lease is gone: taken over by force, or removed by an operator. Woken by the backend's
/// change feed; without one, it reads the lock every [`UNEXPIRING_CHECK`].
///
/// A feed may show the lock as it was before this acquisition (other waiters opened it
/// earlier), or skip states (it keeps only the latest). So a state from the feed that lacks
/// this lease is only a hint, confirmed by reading the lock before `lost` fires; a read is
/// the truth. Leases are recognised by their fencing token (or, in formats that keep none,
/// by when they were taken), never by comparing counters, which restart if the lock's object
/// is deleted.
pub(crate) async fn watch_unexpiring<L: Backend>(shared: Arc<Holding<L>>) {
    #[derive(PartialEq)]
    enum Check {
        /// The lease is there (or nothing says otherwise yet): wait for a change.
        Holds,
        /// The lock could not be read: try again after a while.
        Failed,
    }

    let settings = &shared.settings;
    let ours = shared
        .held
        .lock()
        .await
        .state
        .leases
        .get(&settings.holder)
        .cloned();
    let Some(ours) = ours else {
        return shared.lose("the lease was not in the state written");
    };
    let holds = |state: Option<&LockState>| {
        state.is_some_and(|s| rules::holds(s, &ours, shared.token, shared.clock.now()))
    };
    let mut feed = shared.locker.changes(&settings.name);
    loop {
        let check = match feed.as_mut().map(Changes::latest) {
            Some(Snapshot::Unavailable) => {
                feed = None;
                continue;
            }
            Some(Snapshot::Present(record)) if holds(Some(&record.state)) => Check::Holds,
            // A hint that the lease is gone (or no feed at all): read the lock to be sure.
            Some(Snapshot::Present(_) | Snapshot::Absent) | None => {
                match shared.locker.read(&settings.name).await {
                    Ok(record) if holds(record.as_ref().map(|r| &r.state)) => Check::Holds,
                    Ok(_) => return shared.lose("the lease is gone: taken over, or removed"),
                    Err(err) => {
                        tracing::debug!(error = %err, "checking the lease failed; trying again later");
                        Check::Failed
                    }
                }
            }
            // Nothing known yet: the feed's first state comes soon.
            Some(_) => Check::Holds,
        };
        let next = async {
            match feed.as_mut() {
                Some(feed) if check == Check::Holds => feed.changed().await,
                _ => tokio::time::sleep(UNEXPIRING_CHECK).await,
            }
        };
        tokio::select! {
            biased;
            () = shared.stop.cancelled() => return,
            () = next => {}
        }
    }
}
