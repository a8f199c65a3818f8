//! The locking rules, in one place for every backend: who may take a lock, when a lease
//! expires, what happens to tags, when force applies, how fencing tokens advance, how many
//! holders a semaphore admits, how readers and writers of a read/write lock share it, and how
//! waiters queue and take their turns (first come, first served).
//!
//! Everything here is a pure function of a stored state, the caller's request and the time;
//! backends only store the results by compare-and-swap.

mod decision;
mod judgement;
mod queue;
mod writing;

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::backend::Reservation;
use crate::error::Error;
use crate::info::{Holder, LockInfo};
use crate::state::gotime::GoTime;
use crate::state::kind::{Access, Kind, MUTEX, SEMAPHORE};
use crate::state::{Lease, LockState};

pub(crate) use self::decision::{Acquire, Blocked, Queue, Request};
pub(crate) use self::judgement::{Judgement, Slot, Unchanged};
pub(crate) use self::queue::{handed_over, withdraw, yields};
use self::writing::apply_tags;
pub(crate) use self::writing::{duration_millis, expiry, give_up_ms, safety_margin};

/// The fencing token of the next acquisition of lock `name`: one more than the last.
///
/// # Errors
///
/// [`Error::Corrupt`] when the counter is at its maximum: a token is never repeated.
fn next_token(name: &str, state: &LockState) -> Result<u64, Error> {
    state
        .fencing_token
        .checked_add(1)
        .ok_or_else(|| Error::Corrupt {
            object: name.to_owned(),
            reason: "the fencing token is at its maximum and cannot advance".to_owned(),
        })
}

/// Whether `lease` was written by the acquisition with fencing token `token`. A lease
/// without a token was written by a tool that does not record one: for a mutex (rewritten by
/// Go lockheed) the lock's counter tells; for a semaphore in kube-lock's format, which keeps
/// no per-holder token, the holder's name alone does.
fn owns(state: &LockState, lease: &Lease, token: u64) -> bool {
    match lease.token {
        Some(stored) => stored == token,
        None if state.lock_type.is_empty() || state.lock_type == MUTEX => {
            state.fencing_token == token
        }
        None => true,
    }
}

/// Whether the lease `ours`, written by the acquisition with fencing token `token`, is still
/// in `state` and live at `now`. A lease without a token of its own (kube-lock's format, or a
/// Go client's rewrite) is told apart from a later acquisition by the same holder by when it
/// was taken, where that is recorded: to the second, as kube-lock records it.
pub(crate) fn holds(state: &LockState, ours: &Lease, token: u64, now: DateTime<Utc>) -> bool {
    let second = |since: Option<GoTime>| since.map(|t| t.to_utc().timestamp());
    state.leases.get(&ours.instance_id).is_some_and(|lease| {
        lease.expires.to_utc() > now
            && owns(state, lease, token)
            && (lease.token.is_some()
                || lease.since.is_none()
                || second(lease.since) == second(ours.since))
    })
}

/// What keeps a caller out: a holder's lease or a waiter queued ahead.
struct Blocker {
    holder: Holder,
    remaining: Duration,
    /// An exclusive holder, or a waiter for exclusive access (or for a mutex or a semaphore).
    exclusive: bool,
}

/// The live leases, and the live waiters queued ahead, that keep `request`'s caller out of a
/// lock of kind `kind`. Waiters ahead count as holders that come first: a semaphore admits
/// the caller only if its holders and the waiters ahead leave a place, a reader passes only
/// readers. A caller that holds a live lease itself is taking it again (a re-entry), which
/// waits for no queue: making it wait for waiters that wait for it would deadlock.
fn blockers(
    state: &LockState,
    kind: Kind,
    request: &Request<'_>,
    now: DateTime<Utc>,
) -> Vec<Blocker> {
    let judgement = request.judgement;
    let reentry = state
        .leases
        .get(request.holder)
        .is_some_and(|own| own.expires.to_utc() > now);
    let mut all: Vec<Blocker> = state
        .leases
        .values()
        .filter(|lease| lease.instance_id != request.holder && judgement.live(lease, now))
        .map(|lease| Blocker {
            holder: Holder::from_lease(lease, false),
            remaining: judgement.remaining(lease, now),
            exclusive: !lease.shared,
        })
        .collect();
    if request.queue != Queue::Ignores && !reentry {
        all.extend(
            queue::ahead(state, request.holder, &judgement, now).map(|entry| Blocker {
                holder: Holder::from_entry(entry),
                remaining: judgement.entry_remaining(entry, now),
                exclusive: !entry.shared,
            }),
        );
    }
    match kind {
        Kind::Mutex | Kind::ReadWrite(Access::Exclusive) => all,
        Kind::Semaphore(max) if all.len() >= usize::try_from(max).unwrap_or(usize::MAX) => all,
        Kind::Semaphore(_) => Vec::new(),
        Kind::ReadWrite(Access::Shared) => all.into_iter().filter(|b| b.exclusive).collect(),
    }
}

/// The kind lock `name` has for a caller that asks for `asked`: a lock that was never acquired
/// (`lockType` `""`) takes the caller's kind; otherwise the stored kind must match, and a
/// semaphore's stored capacity wins over the caller's.
///
/// # Errors
///
/// [`Error::WrongKind`] when the stored kind differs (the lock is never overwritten);
/// [`Error::Corrupt`] for a semaphore stored without a capacity.
fn resolve(name: &str, state: &LockState, asked: Kind) -> Result<Kind, Error> {
    let stored = state.lock_type.as_str();
    if !stored.is_empty() && stored != asked.lock_type() {
        return Err(Error::WrongKind {
            lock: name.to_owned(),
            kind: stored.to_owned(),
            wanted: asked.lock_type(),
        });
    }
    Ok(match asked {
        Kind::Semaphore(_) if stored == SEMAPHORE && state.max_holders == 0 => {
            return Err(Error::Corrupt {
                object: name.to_owned(),
                reason: "a semaphore must have a capacity (maxHolders) of at least 1".to_owned(),
            });
        }
        Kind::Semaphore(_) if stored == SEMAPHORE => Kind::Semaphore(state.max_holders),
        asked => asked,
    })
}

/// Decides an acquire of lock `name` whose stored state is `state`.
///
/// - The stored kind must be the one the caller wants (a lock never acquired takes the
///   caller's); a semaphore's stored capacity wins over the caller's.
/// - Live leases of other holders block as the kind says: any for a mutex or an exclusive
///   holder; as many as the capacity for a semaphore; an exclusive one for a shared holder.
///   Live waiters queued ahead of the caller (all of them, for a caller not queued) block
///   as if they held it: first come, first served. Unless the lock meets the request's force
///   condition: then every other lease is removed (a takeover), ahead of the queue.
/// - A blocked caller that waits takes a place at the end of the queue (or refreshes its
///   place once half of it has passed).
/// - A live reservation by another client (a Go lockheed writer mid-write) blocks.
/// - The caller's own live lease is taken again: a new fencing token, a new expiry.
/// - Otherwise the caller takes the lock: ended leases and queue entries are dropped, its own
///   entry is fulfilled, the fencing token advances by one, tags are merged (or reset).
pub(crate) fn acquire(
    name: &str,
    state: &LockState,
    reservation: Option<&Reservation>,
    request: Request<'_>,
    now: DateTime<Utc>,
) -> Result<Acquire, Error> {
    let kind = resolve(name, state, request.kind)?;
    let blocking = blockers(state, kind, &request, now);
    let forced = !blocking.is_empty()
        && request
            .force
            .is_some_and(|c| c.matches(&LockInfo::from_state(name, state, now)));
    if !blocking.is_empty() && !forced {
        let blocked = Blocked {
            retry_in: blocking
                .iter()
                .map(|b| b.remaining)
                .min()
                .filter(|d| *d != Duration::MAX),
            holders: blocking.into_iter().map(|b| b.holder).collect(),
            max_holders: kind.capacity(),
        };
        if request.queue == Queue::Joins {
            return Ok(queue::wait_in_line(
                name, state, kind, &request, blocked, now,
            ));
        }
        return Ok(Acquire::Busy(blocked));
    }
    if let Some(r) = reservation.filter(|r| r.until > now && r.by != request.holder) {
        return Ok(Acquire::Busy(Blocked {
            holders: vec![Holder::reserved(&r.by, r.until)],
            retry_in: (r.until - now).to_std().ok(),
            max_holders: kind.capacity(),
        }));
    }
    take(name, state, kind, &request, forced, now)
}

/// The caller takes lock `name`: ended leases and entries are dropped (and live leases too
/// when `forced`), its own entry is fulfilled, the fencing token advances by one, the
/// caller's lease is written (replacing its own live one: a re-entry), and tags are merged
/// (or reset).
fn take(
    name: &str,
    state: &LockState,
    kind: Kind,
    request: &Request<'_>,
    forced: bool,
    now: DateTime<Utc>,
) -> Result<Acquire, Error> {
    let judgement = request.judgement;
    let own = state
        .leases
        .get(request.holder)
        .filter(|lease| !forced && lease.expires.to_utc() > now);
    let expires = expiry(now, request.duration);
    let taken_over = if forced {
        state
            .leases
            .values()
            .filter(|lease| lease.instance_id != request.holder && judgement.live(lease, now))
            .map(|lease| Holder::from_lease(lease, false))
            .collect()
    } else {
        Vec::new()
    };
    let mut next = state.clone();
    name.clone_into(&mut next.name);
    kind.lock_type().clone_into(&mut next.lock_type);
    next.max_holders = match kind {
        Kind::Semaphore(max) => max,
        _ => 0,
    };
    // Other leases stay while they are live (none for a mutex or an exclusive holder, which
    // were not blocked); ended ones go, and under force the live ones too.
    next.leases
        .retain(|holder, lease| holder != request.holder && !forced && judgement.live(lease, now));
    next.queue
        .retain(|entry| entry.instance_id != request.holder && judgement.entry_live(entry, now));
    // Every acquisition gets its own token, a re-entry too: an older guard of the same holder
    // then fails its renewal and release with Lost instead of removing the newer lease.
    next.fencing_token = next_token(name, state)?;
    let mut lease = Lease::until(request.holder, expires);
    lease.duration_millis = duration_millis(request.duration);
    lease.token = Some(next.fencing_token);
    lease.since = Some(
        own.and_then(|l| l.since)
            .unwrap_or_else(|| GoTime::from(now)),
    );
    lease.reason = request
        .reason
        .map(str::to_owned)
        .or_else(|| own.and_then(|l| l.reason.clone()));
    lease.shared = kind == Kind::ReadWrite(Access::Shared);
    lease.nonce = Some(request.nonce.to_owned());
    next.leases.insert(request.holder.to_owned(), lease);
    apply_tags(&mut next, request.tags, request.reset_tags);
    Ok(Acquire::Take {
        token: next.fencing_token,
        state: next,
        expires,
        reentry: own.is_some(),
        taken_over,
    })
}

/// Extends the caller's lease: fails with [`Error::Lost`] when the lease is gone, expired, or
/// belongs to a later acquisition (another fencing token).
pub(crate) fn renew(
    name: &str,
    state: &LockState,
    holder: &str,
    token: u64,
    duration: Duration,
    now: DateTime<Utc>,
) -> Result<(LockState, GoTime), Error> {
    let lost = || Error::Lost {
        lock: name.to_owned(),
    };
    let lease = state.leases.get(holder).ok_or_else(lost)?;
    if lease.expires.to_utc() <= now || !owns(state, lease, token) {
        return Err(lost());
    }
    let expires = expiry(now, duration);
    let mut next = state.clone();
    if let Some(lease) = next.leases.get_mut(holder) {
        lease.expires = expires;
        lease.duration_millis = duration_millis(duration);
    }
    Ok((next, expires))
}

/// Removes the caller's lease and applies its tags, then hands the lock over to the waiters
/// whose turn it is (see [`queue`]); `None` when the caller holds nothing to release (its
/// lease is gone, or belongs to a later acquisition).
#[allow(clippy::too_many_arguments)] // What a release is: whose, which, its tags, and when.
pub(crate) fn release(
    state: &LockState,
    holder: &str,
    token: u64,
    tags: &[String],
    reset_tags: bool,
    now: DateTime<Utc>,
    skew: Duration,
) -> Option<LockState> {
    let lease = state.leases.get(holder)?;
    if !owns(state, lease, token) {
        return None;
    }
    let mut next = state.clone();
    next.leases.remove(holder);
    apply_tags(&mut next, tags, reset_tags);
    queue::hand_over(&mut next, now, skew);
    Some(next)
}

/// Removes the lease that the attempt with fencing token `token` and nonce `nonce` may have
/// written, after its write's outcome stayed unknown (a lost answer, a cancelled acquire);
/// `None` when the lock does not have it.
///
/// The nonce tells that attempt's lease apart from a later attempt's with the same token (the
/// token is the same when the first write did not happen). A lease without a nonce comes from
/// a format that keeps none (kube-lock's) or from a Go client's rewrite: a first acquisition's
/// is recognised by the holder's name (or the lock's counter), and a re-entry's, which wrote
/// the same lease as the one it replaced, is left to the earlier guard that holds it.
#[allow(clippy::too_many_arguments)] // Which attempt (holder, token, nonce, re-entry), and when.
pub(crate) fn undo_take(
    state: &LockState,
    holder: &str,
    token: u64,
    nonce: &str,
    reentry: bool,
    now: DateTime<Utc>,
    skew: Duration,
) -> Option<LockState> {
    let lease = state.leases.get(holder)?;
    let ours = match &lease.nonce {
        Some(written) => written == nonce && lease.token == Some(token),
        None => !reentry,
    };
    if !ours {
        return None;
    }
    release(state, holder, token, &[], false, now, skew)
}

/// Removes the lease and the queued place of `holder` (of everyone with `None`), live or not,
/// returning the new state and the holders removed; `None` when there is nothing to remove.
/// An operator's eviction ([`Locker::evict`](crate::Locker::evict)).
pub(crate) fn evict(state: &LockState, holder: Option<&str>) -> Option<(LockState, Vec<Holder>)> {
    let hit = |id: &str| holder.is_none_or(|h| id == h);
    let mut next = state.clone();
    let mut removed = Vec::new();
    next.leases.retain(|holder, lease| {
        let hit = hit(holder);
        if hit {
            removed.push(Holder::from_lease(lease, false));
        }
        !hit
    });
    next.queue.retain(|entry| {
        let hit = hit(&entry.instance_id);
        if hit {
            removed.push(Holder::from_entry(entry));
        }
        !hit
    });
    (!removed.is_empty()).then_some((next, removed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::condition::Condition;

    /// A contender that has watched one holder's lease unchanged for a while.
    #[derive(Debug)]
    struct Watched(&'static str, Duration);

    impl Unchanged for Watched {
        fn unchanged_for(&self, slot: Slot, holder: &str) -> Option<Duration> {
            (slot == Slot::Lease && holder == self.0).then_some(self.1)
        }
    }

    /// Releases `holder`'s lease with `token` at `NOW`, with no skew allowance.
    fn rel(state: &LockState, holder: &str, token: u64) -> Option<LockState> {
        release(state, holder, token, &[], false, t(NOW), Duration::ZERO)
    }

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn held_by(holder: &str, expires: &str) -> LockState {
        let mut state = LockState::empty("x");
        state.lock_type = MUTEX.into();
        let mut lease = Lease::until(holder, GoTime::parse(expires).unwrap());
        lease.duration_millis = Some(30_000);
        lease.token = Some(4);
        state.leases.insert(holder.into(), lease);
        state.fencing_token = 4;
        state
    }

    fn request<'a>(
        holder: &'a str,
        tags: &'a [String],
        force: Option<&'a Condition>,
    ) -> Request<'a> {
        Request {
            holder,
            kind: Kind::Mutex,
            reason: None,
            nonce: "n",
            queue: Queue::Respects,
            duration: Duration::from_secs(30),
            tags,
            reset_tags: false,
            force,
            judgement: Judgement::default(),
        }
    }

    const NOW: &str = "2026-11-22T10:00:00Z";

    #[test]
    fn a_free_lock_is_taken_and_the_token_advances() {
        let state = LockState::empty("x");
        let Acquire::Take {
            state,
            token,
            expires,
            reentry,
            ..
        } = acquire("x", &state, None, request("me", &[], None), t(NOW)).unwrap()
        else {
            panic!("a free lock is taken")
        };
        assert_eq!((token, reentry), (1, false));
        assert_eq!(expires.to_string(), "2026-11-22T10:00:30Z");
        assert_eq!(state.lock_type, "mutex");
        assert_eq!(state.leases["me"].expires, expires);
    }

    #[test]
    fn a_live_lease_blocks_and_an_expired_one_is_replaced() {
        let live = held_by("other", "2026-11-22T10:00:01Z");
        let busy = acquire("x", &live, None, request("me", &[], None), t(NOW)).unwrap();
        assert!(matches!(&busy, Acquire::Busy(b) if b.holders[0].id == "other"));
        // now == expires: expired (a lease is live while now < expires).
        let stale = held_by("other", NOW);
        let Acquire::Take { state, token, .. } =
            acquire("x", &stale, None, request("me", &[], None), t(NOW)).unwrap()
        else {
            panic!("an expired lease does not block")
        };
        assert_eq!(token, 5);
        assert_eq!(state.leases.keys().collect::<Vec<_>>(), ["me"]);
    }

    #[test]
    fn own_lease_is_taken_again_with_a_new_token() {
        let mine = held_by("me", "2026-11-22T10:00:10Z");
        let Acquire::Take {
            token,
            reentry,
            expires,
            ..
        } = acquire("x", &mine, None, request("me", &[], None), t(NOW)).unwrap()
        else {
            panic!("re-entry renews")
        };
        assert_eq!((token, reentry), (5, true));
        assert_eq!(expires.to_string(), "2026-11-22T10:00:30Z");
    }

    #[test]
    fn force_takes_over_when_the_condition_holds() {
        let mut forever = held_by("other", GoTime::FOREVER_STR);
        forever.tags = vec!["forceme".into(), "db".into()];
        let force = Condition::tags_contain("forceme");
        let Acquire::Take {
            state,
            token,
            reentry,
            taken_over,
            ..
        } = acquire(
            "x",
            &forever,
            None,
            request("me", &[], Some(&force)),
            t(NOW),
        )
        .unwrap()
        else {
            panic!("the condition holds")
        };
        assert_eq!((token, reentry), (5, false));
        assert_eq!(taken_over.len(), 1, "who the takeover removes");
        assert_eq!(taken_over[0].id, "other");
        assert!(!state.leases.contains_key("other"));
        let wrong = Condition::tags_contain("nope");
        let busy = acquire(
            "x",
            &forever,
            None,
            request("me", &[], Some(&wrong)),
            t(NOW),
        )
        .unwrap();
        assert!(matches!(busy, Acquire::Busy(_)));
    }

    #[test]
    fn a_live_reservation_of_another_writer_blocks() {
        let state = LockState::empty("x");
        let reservation = Reservation::new("go-writer", t("2026-11-22T10:00:20Z"));
        let busy = acquire(
            "x",
            &state,
            Some(&reservation),
            request("me", &[], None),
            t(NOW),
        )
        .unwrap();
        assert!(matches!(&busy, Acquire::Busy(b) if b.holders[0].id == "go-writer"));
        let old = Reservation::new("go-writer", t("2026-11-22T09:59:00Z"));
        assert!(matches!(
            acquire("x", &state, Some(&old), request("me", &[], None), t(NOW)).unwrap(),
            Acquire::Take { .. }
        ));
    }

    #[test]
    fn tags_merge_or_reset_on_acquire_and_release() {
        let mut state = LockState::empty("x");
        state.tags = vec!["old".into()];
        let tags = vec!["a".into(), "old".into()];
        let Acquire::Take { state, token, .. } =
            acquire("x", &state, None, request("me", &tags, None), t(NOW)).unwrap()
        else {
            panic!()
        };
        assert_eq!(state.tags, ["old", "a"]);
        let released = release(
            &state,
            "me",
            token,
            &["b".to_owned()],
            true,
            t(NOW),
            Duration::ZERO,
        )
        .unwrap();
        assert_eq!(released.tags, ["b"]);
        assert!(released.leases.is_empty());
        assert_eq!(released.fencing_token, token, "release keeps the counter");
        assert!(rel(&released, "me", token).is_none());
    }

    #[test]
    fn other_kinds_are_never_taken() {
        let mut state = LockState::empty("x");
        state.lock_type = "semaphore".into();
        assert!(matches!(
            acquire("x", &state, None, request("me", &[], None), t(NOW)),
            Err(Error::WrongKind { .. })
        ));
    }

    #[test]
    fn a_lease_is_recognised_by_its_token_or_when_it_was_taken() {
        let state = held_by("me", "2026-11-22T10:00:10Z");
        let ours = state.leases["me"].clone();
        assert!(holds(&state, &ours, 4, t(NOW)));
        assert!(
            !holds(&state, &ours, 5, t(NOW)),
            "a later acquisition's lease"
        );
        assert!(!holds(&state, &ours, 4, t("2026-11-22T10:00:10Z")), "ended");
        // A Go client rewrote the state: no token, no since; the lock's counter tells.
        let mut rewritten = state.clone();
        let lease = rewritten.leases.get_mut("me").unwrap();
        (lease.token, lease.since) = (None, None);
        assert!(holds(&rewritten, &ours, 4, t(NOW)));
        // kube-lock keeps no token: the same name taken again later is another lease.
        let taken_at =
            |at: &str| Lease::until("me", GoTime::forever()).with_since(Some(t(at)), None);
        let first = LockState::semaphore("x", 2, [taken_at("2026-11-22T09:00:00Z")]);
        let again = LockState::semaphore("x", 2, [taken_at("2026-11-22T09:30:00Z")]);
        let ours = first.leases["me"].clone();
        assert!(holds(&first, &ours, 1, t(NOW)));
        assert!(!holds(&again, &ours, 1, t(NOW)));
        // kube-lock stores when a holder came to the second: the lease as written, to the
        // nanosecond, is the one read back.
        let written = taken_at("2026-11-22T09:00:00.734Z");
        assert!(holds(&first, &written, 1, t(NOW)));
    }

    #[test]
    fn renewal_only_extends_a_live_lease_of_the_same_acquisition() {
        let state = held_by("me", "2026-11-22T10:00:10Z");
        let (next, expires) = renew("x", &state, "me", 4, Duration::from_secs(30), t(NOW)).unwrap();
        assert_eq!(next.leases["me"].expires, expires);
        for (state, token) in [
            (held_by("me", NOW), 4),
            (held_by("other", "2026-11-22T10:00:10Z"), 4),
            (held_by("me", "2026-11-22T10:00:10Z"), 3),
        ] {
            assert!(matches!(
                renew("x", &state, "me", token, Duration::from_secs(30), t(NOW)),
                Err(Error::Lost { .. })
            ));
        }
    }

    #[test]
    fn contenders_allow_for_skew_and_trust_their_own_elapsed_time() {
        let state = held_by("other", "2026-11-22T10:00:00Z");
        let mut judgement = Judgement {
            skew_allowance: Duration::from_secs(2),
            unchanged_for: None,
        };
        let lease = &state.leases["other"];
        // Ended by the wall clock one second ago, but within the allowance.
        assert_eq!(
            judgement.remaining(lease, t("2026-11-22T10:00:01Z")),
            Duration::from_secs(1)
        );
        assert_eq!(
            judgement.remaining(lease, t("2026-11-22T09:59:50Z")),
            Duration::from_secs(12)
        );
        assert!(
            judgement
                .remaining(lease, t("2026-11-22T10:00:02Z"))
                .is_zero()
        );
        // A contender that watched it unchanged for 10 s of a 30 s lease waits 20 s more,
        // however far its clock is ahead.
        let seen = Watched("other", Duration::from_secs(10));
        judgement.unchanged_for = Some(&seen);
        assert_eq!(
            judgement.remaining(lease, t("2027-01-01T00:00:00Z")),
            Duration::from_secs(20)
        );
        assert!(judgement.live(lease, t("2027-01-01T00:00:00Z")));
        let forever = held_by("other", GoTime::FOREVER_STR);
        assert_eq!(
            judgement.remaining(&forever.leases["other"], t(NOW)),
            Duration::MAX
        );
    }

    #[test]
    fn a_token_that_cannot_advance_is_an_error_not_a_repeat() {
        let mut state = LockState::empty("x");
        state.fencing_token = u64::MAX;
        assert!(matches!(
            acquire("x", &state, None, request("me", &[], None), t(NOW)),
            Err(Error::Corrupt { .. })
        ));
    }

    #[test]
    fn zero_duration_never_expires() {
        assert_eq!(
            expiry(t(NOW), Duration::ZERO).to_string(),
            GoTime::FOREVER_STR
        );
        assert_eq!(
            expiry(t(NOW), Duration::from_secs(u64::MAX)).to_string(),
            GoTime::FOREVER_STR
        );
    }

    fn want(holder: &str, kind: Kind) -> Request<'_> {
        Request {
            kind,
            ..request(holder, &[], None)
        }
    }

    fn take(state: &LockState, request: Request<'_>) -> (LockState, u64) {
        match acquire("x", state, None, request, t(NOW)).unwrap() {
            Acquire::Take { state, token, .. } => (state, token),
            other => panic!("expected to take the lock, got {other:?}"),
        }
    }

    #[test]
    fn a_semaphore_admits_its_stored_capacity_each_with_a_token() {
        let (s1, t1) = take(&LockState::empty("x"), want("a", Kind::Semaphore(2)));
        assert_eq!((s1.lock_type.as_str(), s1.max_holders), ("semaphore", 2));
        // A later caller asking for 5 gets the stored 2.
        let (s2, t2) = take(&s1, want("b", Kind::Semaphore(5)));
        assert_eq!(s2.max_holders, 2);
        assert_eq!((t1, t2), (1, 2));
        assert_eq!(s2.leases["a"].token, Some(1));
        assert_eq!(s2.leases["b"].token, Some(2));
        let busy = acquire("x", &s2, None, want("c", Kind::Semaphore(2)), t(NOW)).unwrap();
        assert!(matches!(&busy, Acquire::Busy(b) if b.holders.len() == 2
            && b.retry_in == Some(Duration::from_secs(30))));
        // Each holder releases only its own lease.
        let freed = rel(&s2, "a", 1).unwrap();
        assert!(rel(&s2, "a", 2).is_none());
        let (s3, t3) = take(&freed, want("c", Kind::Semaphore(2)));
        assert_eq!(t3, 3);
        assert_eq!(s3.leases.keys().collect::<Vec<_>>(), ["b", "c"]);
    }

    #[test]
    fn kinds_do_not_mix() {
        let (mutex, _) = take(&LockState::empty("x"), request("a", &[], None));
        for other in [Kind::Semaphore(2), Kind::ReadWrite(Access::Shared)] {
            let err = acquire("x", &mutex, None, want("b", other), t(NOW)).unwrap_err();
            assert!(
                matches!(&err, Error::WrongKind { kind, wanted, .. }
                    if kind == "mutex" && *wanted == other.lock_type()),
                "{err}"
            );
        }
        let mut no_capacity = LockState::empty("x");
        no_capacity.lock_type = "semaphore".into();
        assert!(matches!(
            acquire(
                "x",
                &no_capacity,
                None,
                want("b", Kind::Semaphore(1)),
                t(NOW)
            ),
            Err(Error::Corrupt { .. })
        ));
    }

    /// A waiting request by `holder` for `kind`.
    fn waits(holder: &str, kind: Kind) -> Request<'_> {
        Request {
            queue: Queue::Joins,
            ..want(holder, kind)
        }
    }

    /// The state after `request` queues, and its floor.
    fn queue(state: &LockState, request: Request<'_>) -> (LockState, u64) {
        match acquire("x", state, None, request, t(NOW)).unwrap() {
            Acquire::Queue { state, floor, .. } => (state, floor),
            other => panic!("expected to queue, got {other:?}"),
        }
    }

    fn waiting(state: &LockState) -> Vec<&str> {
        state.waiters().collect()
    }

    #[test]
    fn readers_share_and_a_writer_queues_ahead_of_later_readers() {
        let shared = Kind::ReadWrite(Access::Shared);
        let exclusive = Kind::ReadWrite(Access::Exclusive);
        let (s1, _) = take(&LockState::empty("x"), want("r1", shared));
        let (s2, _) = take(&s1, want("r2", shared));
        assert!(s2.leases.values().all(|l| l.shared));
        // A single attempt by a writer does not queue.
        let busy = acquire("x", &s2, None, want("w", exclusive), t(NOW)).unwrap();
        assert!(matches!(&busy, Acquire::Busy(b) if b.holders.len() == 2));
        // A waiting writer does, and new readers come after it.
        let (s3, _) = queue(&s2, waits("w", exclusive));
        assert_eq!(waiting(&s3), ["w"]);
        let Acquire::Busy(reader_blocked) =
            acquire("x", &s3, None, want("r3", shared), t(NOW)).unwrap()
        else {
            panic!("a new reader waits behind the queued writer")
        };
        assert_eq!(reader_blocked.holders[0].id, "w");
        assert!(reader_blocked.holders[0].waiting);
        let (s4, _) = queue(&s3, waits("r3", shared));
        assert_eq!(waiting(&s4), ["w", "r3"]);
        // A reader that already holds may take it again (it is not new).
        take(&s4, want("r1", shared));
        // The last reader out hands the lock to the writer, then the writer to the reader.
        let s5 = rel(&rel(&s4, "r1", 1).unwrap(), "r2", 2).unwrap();
        assert_eq!(s5.leases.keys().collect::<Vec<_>>(), ["w"]);
        assert!(!s5.leases["w"].shared);
        assert_eq!(waiting(&s5), ["r3"]);
        let s6 = rel(&s5, "w", 3).unwrap();
        assert!(s6.leases["r3"].shared);
        assert!(s6.queue.is_empty());
    }

    #[test]
    fn waiters_take_turns_in_the_order_they_came() {
        let mut state = held_by("a", "2026-11-22T10:00:10Z");
        for waiter in ["b", "c", "d"] {
            state = queue(&state, waits(waiter, Kind::Mutex)).0;
        }
        assert_eq!(waiting(&state), ["b", "c", "d"]);
        // Nobody overtakes: not a single attempt, not a waiter further back, not a holder that
        // comes back after releasing (it queues behind them).
        let handed = rel(&state, "a", 4).unwrap();
        assert_eq!(handed.leases.keys().collect::<Vec<_>>(), ["b"]);
        assert_eq!(
            (handed.leases["b"].token, handed.fencing_token),
            (Some(5), 5)
        );
        for late in [want("e", Kind::Mutex), waits("c", Kind::Mutex)] {
            assert!(matches!(
                acquire("x", &handed, None, late, t(NOW)).unwrap(),
                Acquire::Busy(_)
            ));
        }
        let (back, _) = queue(&handed, waits("a", Kind::Mutex));
        assert_eq!(waiting(&back), ["c", "d", "a"]);
        // Each release hands the lock to the next, with the next token.
        let next = rel(&back, "b", 5).unwrap();
        assert_eq!(
            (next.leases["c"].token, waiting(&next)),
            (Some(6), vec!["d", "a"])
        );
        // The waiter recognises the handover by its token above the floor.
        assert_eq!(handed_over(&next, "c", (4, &[])).map(|(t, _)| t), Some(6));
        assert_eq!(handed_over(&next, "d", (4, &[])), None);
    }

    #[test]
    fn a_handover_is_told_from_an_earlier_lease_by_the_id_of_the_place() {
        // "b" took the lock before, and its release failed: its lease (token 4) is still
        // there when it waits again. A floor taken from an older state (3) does not make it a
        // handover: it does not carry the id of this wait's place.
        let mut state = held_by("b", "2026-11-22T10:00:10Z");
        state.leases.get_mut("b").unwrap().nonce = Some("earlier".into());
        let places = ["this wait".to_owned()];
        assert_eq!(handed_over(&state, "b", (3, &places)), None);
        // The lease handed over to this wait's place carries its id.
        let a = held_by("a", "2026-11-22T10:00:10Z");
        let waits = Request {
            nonce: "this wait",
            ..waits("b", Kind::Mutex)
        };
        let handed = rel(&queue(&a, waits).0, "a", 4).unwrap();
        assert_eq!(
            handed_over(&handed, "b", (3, &places)).map(|(t, _)| t),
            Some(5)
        );
    }

    #[test]
    fn a_handover_nobody_claims_passes_on_after_the_claim_window() {
        let mut state = held_by("a", "2026-11-22T10:00:10Z");
        for waiter in ["b", "c"] {
            state = queue(&state, waits(waiter, Kind::Mutex)).0;
        }
        // The handed lease lasts the claim window (half of b's 30 s), not the whole lease.
        let handed = rel(&state, "a", 4).unwrap();
        let lease = &handed.leases["b"];
        assert_eq!(lease.expires.to_string(), "2026-11-22T10:00:15Z");
        assert_eq!(lease.duration(), Some(Duration::from_secs(15)));
        // b never claims it: c, next in the queue, waits for the window and the skew
        // allowance, then takes the lock with the next token.
        let judged = Request {
            judgement: Judgement {
                skew_allowance: Duration::from_secs(2),
                unchanged_for: None,
            },
            ..waits("c", Kind::Mutex)
        };
        let c_at = |at: &str| acquire("x", &handed, None, judged, t(at)).unwrap();
        // (Busy, or refreshing its place: either way blocked by b.)
        assert!(matches!(
            c_at("2026-11-22T10:00:16.999Z"),
            Acquire::Busy(b) | Acquire::Queue { blocked: b, .. } if b.holders[0].id == "b"
        ));
        let Acquire::Take { token, state, .. } = c_at("2026-11-22T10:00:17.001Z") else {
            panic!("c takes the lock once b's window and the allowance have passed")
        };
        assert_eq!((token, waiting(&state)), (6, vec![]));
        // b's claim renews the handed lease for its whole duration while it is live...
        let claimed = renew("x", &handed, "b", 5, Duration::from_secs(30), t(NOW)).unwrap();
        assert_eq!(
            claimed.0.leases["b"].duration(),
            Some(Duration::from_secs(30))
        );
        // ...and, seen too late to trust, b takes the lock while its lease is still there,
        // the queue notwithstanding (its turn came): a new acquisition, with the next token.
        let late = Request {
            queue: Queue::Ignores,
            ..want("b", Kind::Mutex)
        };
        let at = t("2026-11-22T10:00:16Z");
        let Acquire::Take { token, state, .. } = acquire("x", &handed, None, late, at).unwrap()
        else {
            panic!("b claims its turn")
        };
        assert_eq!((token, waiting(&state)), (6, vec!["c"]));
    }

    #[test]
    fn the_head_of_the_queue_takes_a_lock_nobody_handed_over() {
        let mut state = held_by("a", "2026-11-22T10:00:10Z");
        state = queue(&state, waits("b", Kind::Mutex)).0;
        state = queue(&state, waits("c", Kind::Mutex)).0;
        // The holder died: its lease ended, nobody released it.
        let later = t("2026-11-22T10:00:12Z");
        assert!(matches!(
            acquire("x", &state, None, waits("c", Kind::Mutex), later).unwrap(),
            Acquire::Busy(b) if b.holders[0].id == "b"
        ));
        let Acquire::Take {
            state: taken,
            token,
            ..
        } = acquire("x", &state, None, waits("b", Kind::Mutex), later).unwrap()
        else {
            panic!("the head takes the free lock")
        };
        assert_eq!(token, 5);
        assert_eq!(waiting(&taken), ["c"]);
    }

    #[test]
    fn a_waiters_place_lasts_while_it_is_refreshed() {
        let mut state = held_by("a", GoTime::FOREVER_STR);
        state = queue(&state, waits("b", Kind::Mutex)).0;
        state = queue(&state, waits("c", Kind::Mutex)).0;
        // Queued already: no write until half the place's life (30 s) has passed.
        let later = |secs| t(&format!("2026-11-22T10:00:{secs:02}Z"));
        assert!(matches!(
            acquire("x", &state, None, waits("b", Kind::Mutex), later(14)).unwrap(),
            Acquire::Busy(b) if b.retry_in == Some(Duration::from_secs(1))
        ));
        let Acquire::Queue {
            state: refreshed, ..
        } = acquire("x", &state, None, waits("b", Kind::Mutex), later(16)).unwrap()
        else {
            panic!("the place is refreshed")
        };
        assert_eq!(waiting(&refreshed), ["b", "c"], "in the same place");
        // A place that was not refreshed ends: c is not kept behind a waiter that died.
        let judged = Request {
            judgement: Judgement {
                skew_allowance: Duration::from_secs(2),
                unchanged_for: None,
            },
            ..waits("c", Kind::Mutex)
        };
        let Acquire::Queue { state: after, .. } =
            acquire("x", &state, None, judged, later(33)).unwrap()
        else {
            panic!("c refreshes its place")
        };
        assert_eq!(waiting(&after), ["c"], "the dead waiter's place is dropped");
    }

    #[test]
    fn waiters_for_leases_without_expiry_take_their_turn_themselves() {
        let mut state = held_by("a", "2026-11-22T10:00:10Z");
        let forever = Request {
            duration: Duration::ZERO,
            ..waits("b", Kind::Mutex)
        };
        state = queue(&state, forever).0;
        state = queue(&state, waits("c", Kind::Mutex)).0;
        // Never handed a lease it could keep forever if it died: the lock is left free...
        let freed = rel(&state, "a", 4).unwrap();
        assert!(freed.leases.is_empty());
        assert_eq!(waiting(&freed), ["b", "c"]);
        // ...for it to take, and nobody behind it overtakes.
        assert!(matches!(
            acquire("x", &freed, None, waits("c", Kind::Mutex), t(NOW)).unwrap(),
            Acquire::Busy(_)
        ));
        let (taken, _) = take(&freed, forever);
        assert!(taken.leases["b"].expires.is_forever());
    }

    #[test]
    fn a_semaphore_hands_each_freed_place_to_the_next_waiter() {
        let sem = Kind::Semaphore(2);
        let (s1, _) = take(&LockState::empty("x"), want("a", sem));
        let (mut state, _) = take(&s1, want("b", sem));
        for waiter in ["c", "d", "e"] {
            state = queue(&state, waits(waiter, sem)).0;
        }
        let once = rel(&state, "a", 1).unwrap();
        assert_eq!(once.leases.keys().collect::<Vec<_>>(), ["b", "c"]);
        let twice = rel(&once, "b", 2).unwrap();
        assert_eq!(twice.leases.keys().collect::<Vec<_>>(), ["c", "d"]);
        assert_eq!(waiting(&twice), ["e"]);
    }

    #[test]
    fn a_waiter_that_gives_up_leaves_nothing_and_passes_the_lock_on() {
        let mut state = held_by("a", "2026-11-22T10:00:10Z");
        let (queued, floor) = queue(&state, waits("b", Kind::Mutex));
        state = queue(&queued, waits("c", Kind::Mutex)).0;
        // Gave up while waiting: its place goes.
        let gone = withdraw(&state, "b", (floor, None), t(NOW), Duration::ZERO).unwrap();
        assert_eq!(waiting(&gone), ["c"]);
        assert!(withdraw(&gone, "b", (floor, None), t(NOW), Duration::ZERO).is_none());
        // Gave up just after the lock was handed over to it: the lease goes on to the next.
        let handed = rel(&state, "a", 4).unwrap();
        let passed = withdraw(&handed, "b", (floor, None), t(NOW), Duration::ZERO).unwrap();
        assert_eq!(passed.leases.keys().collect::<Vec<_>>(), ["c"]);
        assert_eq!(passed.leases["c"].token, Some(6));
    }

    #[test]
    fn a_wait_that_ended_withdraws_only_what_carries_its_id() {
        let state = held_by("a", "2026-11-22T10:01:00Z");
        let first = Request {
            nonce: "first",
            ..waits("b", Kind::Mutex)
        };
        let (queued, floor) = queue(&state, first);
        assert_eq!(queued.queue[0].nonce.as_deref(), Some("first"));
        // The handover passes the place's id on to the lease.
        let handed = rel(&queued, "a", 4).unwrap();
        assert_eq!(handed.leases["b"].nonce.as_deref(), Some("first"));
        let passed = withdraw(&handed, "b", (floor, Some("first")), t(NOW), Duration::ZERO);
        assert!(
            passed.unwrap().leases.is_empty(),
            "handed to the wait: it goes"
        );
        // The same holder identity took the lock again since (another wait, another id): the
        // wait that ended removes nothing of it.
        let (again, _) = take(&handed, request("b", &[], None));
        assert!(withdraw(&again, "b", (floor, Some("first")), t(NOW), Duration::ZERO).is_none());
        // A place refreshed by a later wait of the same identity carries that wait's id.
        let later = Request {
            nonce: "later",
            ..waits("b", Kind::Mutex)
        };
        let refreshed = match acquire("x", &queued, None, later, t("2026-11-22T10:00:16Z")) {
            Ok(Acquire::Queue { state, .. }) => state,
            other => panic!("refreshed: {other:?}"),
        };
        assert_eq!(refreshed.queue[0].nonce.as_deref(), Some("later"));
        assert!(
            withdraw(
                &refreshed,
                "b",
                (floor, Some("first")),
                t(NOW),
                Duration::ZERO
            )
            .is_none()
        );
        assert!(
            withdraw(
                &refreshed,
                "b",
                (floor, Some("later")),
                t(NOW),
                Duration::ZERO
            )
            .is_some()
        );
    }

    #[test]
    fn an_unfair_caller_ignores_the_queue() {
        let mut state = held_by("a", "2026-11-22T10:00:10Z");
        state = queue(&state, waits("b", Kind::Mutex)).0;
        let unfair = Request {
            queue: Queue::Ignores,
            ..want("go", Kind::Mutex)
        };
        let later = t("2026-11-22T10:00:15Z");
        assert!(matches!(
            acquire("x", &state, None, unfair, later).unwrap(),
            Acquire::Take { .. }
        ));
        assert!(matches!(
            acquire("x", &state, None, want("fair", Kind::Mutex), later).unwrap(),
            Acquire::Busy(_)
        ));
    }

    #[test]
    fn an_unknown_take_is_undone_only_where_its_lease_is_told_apart() {
        // A first acquisition's lease is removed by its token.
        let (first, token) = take(&LockState::empty("x"), request("me", &[], None));
        assert!(
            undo_take(&first, "me", token, "n", false, t(NOW), Duration::ZERO)
                .unwrap()
                .leases
                .is_empty()
        );
        assert!(undo_take(&first, "me", token + 1, "n", false, t(NOW), Duration::ZERO).is_none());
        // A re-entry wrote a new token: its lease goes, and the earlier one is not left
        // behind either (the re-entry replaced it; its guard is superseded).
        let (reentered, again) = take(&first, request("me", &[], None));
        assert!(
            undo_take(&reentered, "me", again, "n", true, t(NOW), Duration::ZERO)
                .unwrap()
                .leases
                .is_empty()
        );
        // The re-entry's write did not happen: the earlier lease stays.
        assert!(undo_take(&first, "me", again, "n", true, t(NOW), Duration::ZERO).is_none());
        // kube-lock's format keeps no per-lease token: a re-entry there is the earlier lease.
        let kube_lock = LockState::semaphore("x", 1, [Lease::until("me", GoTime::forever())]);
        assert!(undo_take(&kube_lock, "me", 7, "n", true, t(NOW), Duration::ZERO).is_none());
        assert!(undo_take(&kube_lock, "me", 7, "n", false, t(NOW), Duration::ZERO).is_some());
    }

    #[test]
    fn leases_without_a_token_are_judged_by_the_counter_or_the_name() {
        // Go lockheed rewrote a mutex: its counter tells whose acquisition this is.
        let mut mutex = held_by("me", "2026-11-22T10:00:10Z");
        mutex.leases.get_mut("me").unwrap().token = None;
        assert!(rel(&mutex, "me", 4).is_some());
        assert!(rel(&mutex, "me", 3).is_none());
        // kube-lock keeps no tokens: the holder's name decides.
        let semaphore = LockState::semaphore("x", 1, [Lease::until("holder-1", GoTime::forever())]);
        assert!(rel(&semaphore, "holder-1", 9).is_some());
    }

    #[test]
    fn eviction_removes_named_or_all_holders_whatever_their_tokens() {
        let (s1, _) = take(&LockState::empty("x"), want("a", Kind::Semaphore(3)));
        let (s2, _) = take(&s1, want("b", Kind::Semaphore(3)));
        let (next, removed) = evict(&s2, Some("a")).unwrap();
        assert_eq!(removed.len(), 1);
        assert_eq!(next.leases.keys().collect::<Vec<_>>(), ["b"]);
        assert_eq!(next.fencing_token, 2, "the counter stays");
        assert!(evict(&next, Some("a")).is_none());
        let (empty, removed) = evict(&s2, None).unwrap();
        assert!(empty.leases.is_empty());
        assert_eq!(removed.len(), 2);
    }

    #[test]
    fn a_lease_records_since_and_reason_and_renewal_keeps_them() {
        let reasoned = Request {
            reason: Some("db restart"),
            ..request("me", &[], None)
        };
        let (state, token) = take(&LockState::empty("x"), reasoned);
        let lease = &state.leases["me"];
        assert_eq!(lease.reason(), Some("db restart"));
        assert_eq!(lease.since(), Some(t(NOW)));
        let later = t("2026-11-22T10:00:05Z");
        let (renewed, _) = renew("x", &state, "me", token, Duration::from_secs(30), later).unwrap();
        assert_eq!(renewed.leases["me"].since, lease.since);
        assert_eq!(renewed.leases["me"].reason(), Some("db restart"));
    }

    #[test]
    fn a_preferred_waiter_comes_first_and_other_holders_yield_to_it() {
        let mut state = held_by("a", "2026-11-22T10:00:30Z");
        assert!(!yields(&state, "a"));
        state.queue.push(crate::state::QueueEntry {
            duration_millis: Some(30_000),
            preferred: true,
            ..crate::state::QueueEntry::new(
                "b",
                GoTime::parse("2026-11-22T10:00:30Z").unwrap(),
                GoTime::parse(NOW).unwrap(),
            )
        });
        // The holder still renews (its lease is its own) but gives the lock up instead.
        assert!(yields(&state, "a"));
        assert!(!yields(&state, "b"), "the preferred holder keeps it");
        // Released, the lock waits for the preferred holder: others queue behind it...
        let released = rel(&state, "a", 4).unwrap();
        assert!(
            released.leases.is_empty(),
            "never handed to a waiter that asked nothing"
        );
        assert!(matches!(
            acquire("x", &released, None, request("c", &[], None), t(NOW)).unwrap(),
            Acquire::Busy(b) if b.holders[0].id == "b" && b.holders[0].waiting
        ));
        // ...and the preferred holder takes it.
        assert!(matches!(
            acquire("x", &released, None, request("b", &[], None), t(NOW)).unwrap(),
            Acquire::Take { token: 5, .. }
        ));
    }
}
