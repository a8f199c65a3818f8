//! What the rules are asked (a [`Request`]) and what they decide ([`Acquire`], [`Blocked`]).

use std::time::Duration;

use super::judgement::Judgement;
use crate::condition::Condition;
use crate::info::Holder;
use crate::state::LockState;
use crate::state::gotime::GoTime;
use crate::state::kind::Kind;

/// What a caller asks for when it takes a lock.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Request<'a> {
    pub(crate) holder: &'a str,
    /// The kind the caller asks for (a semaphore's capacity applies only to a lock that has
    /// none stored yet).
    pub(crate) kind: Kind,
    /// Zero: no expiry.
    pub(crate) duration: Duration,
    pub(crate) tags: &'a [String],
    pub(crate) reset_tags: bool,
    pub(crate) force: Option<&'a Condition>,
    pub(crate) reason: Option<&'a str>,
    /// A random id of this attempt, written with its lease (see [`undo_take`]).
    pub(crate) nonce: &'a str,
    /// How the caller stands to the lock's queue of waiters.
    pub(crate) queue: Queue,
    pub(crate) judgement: Judgement<'a>,
}

/// How a caller stands to the lock's queue of waiters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Queue {
    /// It waits in the queue (a waiting `acquire`, when waiting is fair): waiters queued ahead
    /// keep it out, and when the lock is busy it takes a place at the end and keeps it fresh
    /// while it waits.
    Joins,
    /// It takes its turn but takes no place (a single attempt, when waiting is fair): waiters
    /// queued ahead keep it out.
    Respects,
    /// It ignores the queue: a caller that opted out of fair waiting, as Go lockheed clients
    /// do, or a waiter that claims the lock handed over to it (its turn came).
    Ignores,
}

/// Who keeps a caller from taking a lock, and when that can change by time alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Blocked {
    /// The holders in the way, and the waiters queued ahead (marked [`Holder::waiting`]).
    pub(crate) holders: Vec<Holder>,
    /// When the decision should be made again even if nothing changes: the first blocking
    /// lease or entry ends, or the caller's own entry needs refreshing (`None`: never).
    pub(crate) retry_in: Option<Duration>,
    /// The most holders the lock admits at once (see [`Kind::capacity`]).
    pub(crate) max_holders: Option<u32>,
}

/// The decision on an acquire.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Acquire {
    /// Write `state` to take the lock; the acquisition's fencing token is `token`.
    Take {
        state: LockState,
        token: u64,
        expires: GoTime,
        /// The caller already held the lock: a re-entry, which replaces its lease with a new
        /// one (and a new token).
        reentry: bool,
        /// The live holders a forced takeover removes (empty without force).
        taken_over: Vec<Holder>,
    },
    /// Someone else holds it, or waiters are ahead: wait.
    Busy(Blocked),
    /// Someone else holds it: write `state`, which queues the caller (or refreshes its
    /// place), then wait. `floor` is the lock's fencing counter in `state`: a lease of the
    /// caller with a higher token was handed over to it.
    Queue {
        state: LockState,
        blocked: Blocked,
        floor: u64,
    },
}
