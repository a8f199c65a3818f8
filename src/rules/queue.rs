//! The waiters' queue: first come, first served, across processes.
//!
//! A waiting acquire that finds the lock busy takes a place at the end of the lock's queue
//! (one write), and keeps it fresh while it waits (once every half of the entry's life: its
//! lease duration, at most 30 s). Waiters queued ahead of a caller keep it out as holders
//! would, so nobody overtakes them, and a holder that releases and comes straight back
//! queues behind them.
//!
//! Whoever frees the lock hands it over in the same write: the waiters at the head whose
//! turn it is get a lease each, with the next fencing tokens, and learn it through their
//! watch. A handover costs that one write and one watch event; the waiter writes nothing to
//! take the lock. A waiter that asks for a lease without expiry is never handed the lock (one
//! that died would hold it forever): at the head of the queue, it takes it itself.
//!
//! A handed lease first lasts the claim window ([`claim_window`]: one refresh of a waiter's
//! place, half its lease), not the whole lease: its holder claims the rest with its first
//! renewal, which comes within that window anyway. A recipient that never sees the handover
//! (it died, its watch and reads fail) keeps the others out for the window and the skew
//! allowance, not a whole lease and the allowance; then the next waiter takes the lock. A
//! recipient that sees the handover too late to trust the handed lease (by its clock) takes
//! the lock with a write while its lease is still there, the queue notwithstanding: its turn
//! came (see [`handed_over`]).
//!
//! An entry ends by itself if its waiter dies without withdrawing it, and ended entries are
//! dropped by the next write.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::decision::{Acquire, Blocked, Request};
use super::judgement::Judgement;
use super::writing::{apply_tags, duration_millis, expiry};
use crate::state::gotime::GoTime;
use crate::state::kind::{Access, Kind, MUTEX, RWLOCK, SEMAPHORE};
use crate::state::{Lease, LockState, QueueEntry};

/// The longest a waiter's place lasts without being refreshed: if the waiter dies, those
/// behind it wait at most this long for it.
const MAX_ENTRY: Duration = Duration::from_secs(30);

/// How long a waiter's place lasts from each refresh: its lease duration, at most
/// [`MAX_ENTRY`] (and that for a lease without expiry).
pub(crate) fn entry_duration(duration: Duration) -> Duration {
    if duration.is_zero() {
        MAX_ENTRY
    } else {
        duration.min(MAX_ENTRY)
    }
}

/// How long a lease handed over for `lease` lasts until its holder claims it (renews it for
/// `lease`): one refresh of the waiter's place, half of [`entry_duration`]. The holder trusts
/// it until a tenth of `lease` before its end, and its first renewal comes before then (at the
/// default renew interval, a third of the lease, it does anyway): a handover costs no request
/// more than before. A shorter window would cost a claiming write for every section longer
/// than a fraction of it.
pub(crate) fn claim_window(lease: Duration) -> Duration {
    entry_duration(lease) / 2
}

/// The live entries ahead of `holder`'s place (every live entry, for a holder not queued).
pub(super) fn ahead<'s>(
    state: &'s LockState,
    holder: &str,
    judgement: &Judgement<'_>,
    now: DateTime<Utc>,
) -> impl Iterator<Item = &'s QueueEntry> {
    let place = state
        .queue
        .iter()
        .position(|entry| entry.instance_id == holder)
        .unwrap_or(state.queue.len());
    let judgement = *judgement;
    state.queue[..place]
        .iter()
        .filter(move |entry| judgement.entry_live(entry, now))
}

/// The decision of a waiting caller blocked by `blocked`: take a place at the end of the
/// queue, or refresh its place once half of it has passed, or just wait.
pub(super) fn wait_in_line(
    name: &str,
    state: &LockState,
    kind: Kind,
    request: &Request<'_>,
    blocked: Blocked,
    now: DateTime<Utc>,
) -> Acquire {
    let ttl = entry_duration(request.duration);
    let own = state
        .queue
        .iter()
        .find(|entry| entry.instance_id == request.holder);
    let left = own.map_or(Duration::ZERO, |own| {
        (own.expires.to_utc() - now)
            .to_std()
            .unwrap_or(Duration::ZERO)
    });
    if left > ttl / 2 {
        let refresh_in = left.saturating_sub(ttl / 2);
        return Acquire::Busy(Blocked {
            retry_in: Some(blocked.retry_in.map_or(refresh_in, |r| r.min(refresh_in))),
            ..blocked
        });
    }
    let mut next = state.clone();
    name.clone_into(&mut next.name);
    kind.lock_type().clone_into(&mut next.lock_type);
    if let Kind::Semaphore(max) = kind {
        next.max_holders = max;
    }
    let judgement = request.judgement;
    next.queue
        .retain(|entry| entry.instance_id == request.holder || judgement.entry_live(entry, now));
    let expires = expiry(now, ttl);
    match next
        .queue
        .iter_mut()
        .find(|entry| entry.instance_id == request.holder)
    {
        Some(own) => {
            own.expires = expires;
            own.nonce = Some(request.nonce.to_owned());
        }
        None => next.queue.push(QueueEntry {
            duration_millis: duration_millis(ttl),
            lease_millis: duration_millis(request.duration),
            reason: request.reason.map(str::to_owned),
            shared: kind == Kind::ReadWrite(Access::Shared),
            tags: request.tags.to_vec(),
            reset_tags: request.reset_tags,
            nonce: Some(request.nonce.to_owned()),
            ..QueueEntry::new(request.holder, expires, GoTime::from(now))
        }),
    }
    let refresh_in = ttl / 2;
    Acquire::Queue {
        floor: next.fencing_token,
        state: next,
        blocked: Blocked {
            retry_in: Some(blocked.retry_in.map_or(refresh_in, |r| r.min(refresh_in))),
            ..blocked
        },
    }
}

/// Whether a lease is live for whoever hands the lock over: by its wall clock, with the skew
/// allowance, so that a holder whose clock runs behind is not counted out too early.
fn live(lease: &Lease, now: DateTime<Utc>, skew: Duration) -> bool {
    let skew = chrono::Duration::from_std(skew).unwrap_or(chrono::Duration::MAX);
    lease.expires.is_forever()
        || now
            .checked_sub_signed(skew)
            .is_none_or(|then| lease.expires.to_utc() > then)
}

/// Whether the lock, as `state` holds it, admits `entry`'s waiter now.
fn admits(state: &LockState, entry: &QueueEntry, now: DateTime<Utc>, skew: Duration) -> bool {
    let mut holders = state.leases.values().filter(|l| live(l, now, skew));
    match state.lock_type.as_str() {
        "" | MUTEX => holders.next().is_none(),
        SEMAPHORE => holders.count() < usize::try_from(state.max_holders).unwrap_or(usize::MAX),
        RWLOCK if entry.shared => holders.all(|l| l.shared),
        RWLOCK => holders.next().is_none(),
        _ => false,
    }
}

/// Hands the lock over to the waiters at the head of the queue whose turn it is, in `state`
/// as the write that frees it will leave it: each gets a lease for the claim window of the
/// lease it asked for, with the next fencing token, and its tags. Entries that ended are
/// dropped; a waiter for a lease without expiry stops the handover (it takes its turn itself).
pub(super) fn hand_over(state: &mut LockState, now: DateTime<Utc>, skew: Duration) {
    state.queue.retain(|entry| entry.expires.to_utc() > now);
    while let Some(head) = state.queue.first() {
        let (Some(millis), Some(token)) = (head.lease_millis, state.fencing_token.checked_add(1))
        else {
            break;
        };
        if !admits(state, head, now, skew) {
            break;
        }
        let entry = state.queue.remove(0);
        let window = claim_window(Duration::from_millis(millis));
        let mut lease = Lease::until(&entry.instance_id, expiry(now, window));
        lease.duration_millis = duration_millis(window);
        lease.token = Some(token);
        lease.since = Some(GoTime::from(now));
        lease.reason = entry.reason;
        lease.shared = entry.shared;
        lease.nonce = entry.nonce;
        state.fencing_token = token;
        state.leases.insert(entry.instance_id, lease);
        apply_tags(state, &entry.tags, entry.reset_tags);
    }
}

/// The lease the lock was handed over to `holder` with, while it waited in the queue: a lease
/// of its own with a token above `floor` (the counter when it queued), carrying the id of one
/// of the writes of its place (`places`: a handover passes the place's id on), and no place in
/// the queue any more. Returns its token and end, which may have passed: the holder trusts
/// the lease as it is until a tenth of its lease duration before that end, and after, while
/// the lease is still there (nobody took the lock since), claims the lock with a write of its
/// own, which the queue does not hold up (see [`Intent::Claims`](crate::settings::Intent)).
///
/// The id tells a handover from a lease of an earlier acquisition by the same holder identity
/// that is still there (its release failed), when `floor` was taken from a state older than
/// that lease. A lease without an id (written by a version that kept none), or a wait that
/// knows no ids of its place, is judged by the floor alone.
pub(crate) fn handed_over(
    state: &LockState,
    holder: &str,
    (floor, places): (u64, &[String]),
) -> Option<(u64, GoTime)> {
    if state.queue.iter().any(|entry| entry.instance_id == holder) {
        return None;
    }
    let lease = state.leases.get(holder)?;
    let token = lease.token.filter(|t| *t > floor)?;
    let ours = match &lease.nonce {
        Some(nonce) => places.is_empty() || places.contains(nonce),
        None => true,
    };
    ours.then_some((token, lease.expires))
}

/// Removes `holder`'s place in the queue when its acquire ends without the lock, and the
/// lease it may have been handed meanwhile (a token above `floor`), handing that on to the
/// next waiters; `None` when there is nothing to remove.
///
/// `nonce` is the id the acquire last wrote its place with (see [`QueueEntry::nonce`]): a
/// place refreshed since by another wait of the same holder identity, and a lease that is
/// not the one handed over to this place (the same holder took the lock again later), are
/// not this acquire's, and stay. Without ids (`None`, or a place written without one), the
/// holder's name and the floor decide.
pub(crate) fn withdraw(
    state: &LockState,
    holder: &str,
    (floor, nonce): (u64, Option<&str>),
    now: DateTime<Utc>,
    skew: Duration,
) -> Option<LockState> {
    let ours = |written: Option<&str>| match (nonce, written) {
        (Some(nonce), Some(written)) => nonce == written,
        _ => true,
    };
    let mut next = state.clone();
    next.queue
        .retain(|entry| entry.instance_id != holder || !ours(entry.nonce.as_deref()));
    let mut changed = next.queue.len() != state.queue.len();
    let handed = next.leases.get(holder).is_some_and(|lease| {
        lease.token.is_some_and(|t| t > floor) && ours(lease.nonce.as_deref())
    });
    if handed {
        next.leases.remove(holder);
        hand_over(&mut next, now, skew);
        changed = true;
    }
    changed.then_some(next)
}

/// Whether `holder` gives the lock up at its next renewal instead of renewing: the lock's
/// record prefers another holder (a queue entry marked preferred, as a Lease's
/// `preferredHolder` is read in Kubernetes coordinated leader election). Its guard then reports
/// the lock lost, and its release hands the lock over.
pub(crate) fn yields(state: &LockState, holder: &str) -> bool {
    state
        .queue
        .iter()
        .any(|entry| entry.preferred && entry.instance_id != holder)
}
