//! A lock's settings once checked: what taking it, waiting for it and holding it need.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::background::Background;
use crate::condition::Condition;
use crate::info::Waiting;
use crate::rules::{Judgement, Queue, Request, Unchanged};
use crate::state::kind::Kind;

/// The settings of a [`Lock`](crate::Lock), checked before any request: a valid name, a kind,
/// a renew interval that leaves time to renew.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) name: String,
    pub(crate) holder: String,
    pub(crate) kind: Kind,
    /// Zero: no expiry.
    pub(crate) duration: Duration,
    /// `None`: never renewed (no expiry, or renewal turned off).
    pub(crate) renew_interval: Option<Duration>,
    pub(crate) tags: Vec<String>,
    pub(crate) reset_tags: bool,
    pub(crate) force: Option<Condition>,
    pub(crate) reason: Option<String>,
    /// The longest pause between looks at a held lock when nothing notifies waiters.
    pub(crate) retry_interval: Duration,
    pub(crate) skew_allowance: Duration,
    /// Waiting acquires queue and take their turns; everyone respects the queue.
    pub(crate) fifo: bool,
    /// Where clean-ups and the releases of dropped guards run, counted for
    /// [`Lock::settle`](crate::Lock::settle).
    pub(crate) background: Background,
    /// Told whom a waiting acquire waits for ([`Lock::on_wait`](crate::Lock::on_wait)).
    pub(crate) on_wait: Option<WaitObserver>,
}

/// The callback of [`Lock::on_wait`](crate::Lock::on_wait).
#[derive(Clone)]
pub(crate) struct WaitObserver(pub(crate) Arc<dyn Fn(&Waiting) + Send + Sync>);

impl fmt::Debug for WaitObserver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WaitObserver")
    }
}

/// What a take of the lock is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Intent {
    /// A single attempt ([`try_acquire`](crate::Lock::try_acquire)): it never queues.
    Once,
    /// A waiting acquire: it queues when the lock is busy (unless fair waiting is off).
    Waits,
    /// A waiter claims the lock handed over to it, seen too late to trust the handed lease as
    /// it is: its turn came, so it takes the lock without regard for the queue, while nobody
    /// else holds it.
    Claims,
}

impl Settings {
    /// What the rules are asked when this lock is taken: `unchanged_for` is how long a waiter
    /// has watched each other lease and queue entry unchanged (`None` for a single attempt),
    /// and `intent` what the take is for.
    pub(crate) fn request<'a>(
        &'a self,
        unchanged_for: Option<&'a dyn Unchanged>,
        intent: Intent,
        nonce: &'a str,
    ) -> Request<'a> {
        Request {
            holder: &self.holder,
            kind: self.kind,
            reason: self.reason.as_deref(),
            nonce,
            queue: match (self.fifo, intent) {
                (false, _) | (true, Intent::Claims) => Queue::Ignores,
                (true, Intent::Once) => Queue::Respects,
                (true, Intent::Waits) => Queue::Joins,
            },
            duration: self.duration,
            tags: &self.tags,
            reset_tags: self.reset_tags,
            force: self.force.as_ref(),
            judgement: Judgement {
                skew_allowance: self.skew_allowance,
                unchanged_for,
            },
        }
    }
}
