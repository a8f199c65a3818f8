//! The locking rules, in one place for every backend: who may take a lock, when a lease
//! expires, what happens to tags, when force applies, how fencing tokens advance, how many
//! holders a semaphore admits, and how waiting writers of a read/write lock keep new readers
//! out.
//!
//! Everything here is a pure function of a stored state, the caller's request and the time;
//! backends only store the results by compare-and-swap.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::backend::Reservation;
use crate::condition::Condition;
use crate::error::Error;
use crate::gotime::GoTime;
use crate::info::{Holder, LockInfo};
use crate::kind::{Access, Kind, MUTEX, SEMAPHORE};
use crate::state::{Lease, LockState};

/// The longest a waiting writer's intent lasts without being refreshed: if the writer dies,
/// readers wait at most this long for it.
pub(crate) const MAX_INTENT: Duration = Duration::from_secs(30);

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
    /// The caller waits (`acquire`): an exclusive holder blocked by shared ones announces
    /// its intent, so that new shared holders wait behind it. A single attempt does not.
    pub(crate) announce: bool,
    pub(crate) judgement: Judgement<'a>,
}

/// How a contender judges whether another holder's lease has ended, without trusting that
/// holder's clock too far.
///
/// A lease of another holder is live while either holds:
/// - by the contender's wall clock, `now < expires + skew_allowance`: a contender whose clock
///   runs ahead of the holder's by up to the allowance still waits for the real end;
/// - the contender has watched the lease and seen it unchanged for less than the lease's
///   duration (client-go's rule: elapsed time on the contender's own monotonic clock, which
///   no skew affects). Only leases written by this crate say their duration.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Judgement<'a> {
    pub(crate) skew_allowance: Duration,
    /// For each other holder, how long this contender has seen its lease unchanged (when it
    /// has been watching; `None` for a single attempt).
    pub(crate) unchanged_for: Option<&'a BTreeMap<String, Duration>>,
}

impl Judgement<'_> {
    /// How long until `lease` of another holder has ended for this contender (zero: it has).
    pub(crate) fn remaining(&self, lease: &Lease, now: DateTime<Utc>) -> Duration {
        if lease.expires.is_forever() {
            return Duration::MAX;
        }
        let end = lease.expires.to_utc();
        let by_wall = if end > now {
            (end - now).to_std().unwrap_or(Duration::ZERO) + self.skew_allowance
        } else {
            // Ended by the wall clock: the allowance still counts from the end.
            let since = (now - end).to_std().unwrap_or(Duration::ZERO);
            self.skew_allowance.saturating_sub(since)
        };
        let by_watch = match (
            lease.duration(),
            self.unchanged_for.and_then(|m| m.get(&lease.instance_id)),
        ) {
            (Some(duration), Some(seen)) => duration.saturating_sub(*seen),
            _ => Duration::ZERO,
        };
        by_wall.max(by_watch)
    }

    /// Whether `lease` of another holder has not ended for this contender.
    fn live(&self, lease: &Lease, now: DateTime<Utc>) -> bool {
        !self.remaining(lease, now).is_zero()
    }
}

/// Who keeps a caller from taking a lock, and when that can change by time alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Blocked {
    /// The holders in the way (waiting writers among them are marked
    /// [`Holder::waiting`]).
    pub(crate) holders: Vec<Holder>,
    /// When the decision should be made again even if nothing changes: the first blocking
    /// lease or intent ends, or the caller's own intent needs refreshing (`None`: never).
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
    },
    /// Someone else holds it: wait.
    Busy(Blocked),
    /// Someone else holds it: write `state`, which records (or refreshes) the caller's
    /// intent as a waiting writer, then wait.
    Announce { state: LockState, blocked: Blocked },
}

/// The duration to record in a lease (`None` for no expiry).
fn duration_millis(duration: Duration) -> Option<u64> {
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

/// How long a waiting writer's intent lasts: its lease duration, at most [`MAX_INTENT`].
pub(crate) fn intent_duration(duration: Duration) -> Duration {
    if duration.is_zero() {
        MAX_INTENT
    } else {
        duration.min(MAX_INTENT)
    }
}

/// Adds `tags` to the lock's (after clearing them, with `reset`), keeping the order and
/// skipping tags it already has; linear in the number of tags, however many a caller sends.
fn apply_tags(state: &mut LockState, tags: &[String], reset: bool) {
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

/// The live leases and intents that keep `request`'s caller out of a lock of kind `kind`.
fn blockers<'s>(
    state: &'s LockState,
    kind: Kind,
    request: &Request<'_>,
    now: DateTime<Utc>,
) -> Vec<(&'s Lease, bool)> {
    let judgement = request.judgement;
    let others = state
        .leases
        .values()
        .filter(|lease| lease.instance_id != request.holder && judgement.live(lease, now));
    match kind {
        Kind::Mutex | Kind::ReadWrite(Access::Exclusive) => others.map(|l| (l, false)).collect(),
        Kind::Semaphore(max) => {
            let others: Vec<_> = others.map(|l| (l, false)).collect();
            if others.len() >= usize::try_from(max).unwrap_or(usize::MAX) {
                others
            } else {
                Vec::new()
            }
        }
        Kind::ReadWrite(Access::Shared) => {
            // A shared holder taking the lock again is not a new reader: making it wait for a
            // writer that waits for it would deadlock.
            let holds = state
                .leases
                .get(request.holder)
                .is_some_and(|own| own.expires.to_utc() > now);
            let writers = state
                .waiting_writers
                .values()
                .filter(|w| !holds && w.instance_id != request.holder && judgement.live(w, now));
            others
                .filter(|l| !l.shared)
                .map(|l| (l, false))
                .chain(writers.map(|w| (w, true)))
                .collect()
        }
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
///   holder; as many as the capacity for a semaphore; an exclusive one, or a waiting writer's
///   live intent, for a shared holder. Unless the lock meets the intent's force condition:
///   then every other lease and intent is removed (a takeover).
/// - A live reservation by another client (a Go lockheed writer mid-write) blocks.
/// - The caller's own live lease is taken again: a new fencing token, a new expiry.
/// - Otherwise the caller takes the lock: ended leases and intents are dropped, the fencing
///   token advances by one, tags are merged (or reset).
pub(crate) fn acquire(
    name: &str,
    state: &LockState,
    reservation: Option<&Reservation>,
    request: Request<'_>,
    now: DateTime<Utc>,
) -> Result<Acquire, Error> {
    let kind = resolve(name, state, request.kind)?;
    let judgement = request.judgement;
    let blocking = blockers(state, kind, &request, now);
    let forced = !blocking.is_empty()
        && request
            .force
            .is_some_and(|c| c.matches(&LockInfo::from_state(name, state, now)));
    if !blocking.is_empty() && !forced {
        let retry_in = blocking
            .iter()
            .map(|(lease, _)| judgement.remaining(lease, now))
            .min()
            .filter(|d| *d != Duration::MAX);
        let holders = blocking
            .iter()
            .map(|(lease, waiting)| Holder::from_lease(lease, *waiting))
            .collect();
        if request.announce && kind == Kind::ReadWrite(Access::Exclusive) {
            return Ok(announce(
                name, state, kind, &request, holders, retry_in, now,
            ));
        }
        return Ok(Acquire::Busy(Blocked {
            holders,
            retry_in,
            max_holders: kind.capacity(),
        }));
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

/// The caller takes lock `name`: ended leases and intents are dropped (and live ones too when
/// `forced`), the fencing token advances by one, the caller's lease is written (replacing its
/// own live one: a re-entry), and tags are merged (or reset).
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
    let mut next = state.clone();
    name.clone_into(&mut next.name);
    kind.lock_type().clone_into(&mut next.lock_type);
    next.max_holders = match kind {
        Kind::Semaphore(max) => max,
        _ => 0,
    };
    // Other leases stay while they are live (none for a mutex or an exclusive holder, which
    // were not blocked); ended ones go, and under force the live ones too. The same for
    // waiting writers' intents; the caller's own intent is fulfilled.
    next.leases
        .retain(|holder, lease| holder != request.holder && !forced && judgement.live(lease, now));
    next.waiting_writers
        .retain(|holder, w| holder != request.holder && !forced && judgement.live(w, now));
    // Every acquisition gets its own token, a re-entry too: an older guard of the same holder
    // then fails its renewal and release with Lost instead of removing the newer lease.
    next.fencing_token = state
        .fencing_token
        .checked_add(1)
        .ok_or_else(|| Error::Corrupt {
            object: name.to_owned(),
            reason: "the fencing token is at its maximum and cannot advance".to_owned(),
        })?;
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
    next.leases.insert(request.holder.to_owned(), lease);
    apply_tags(&mut next, request.tags, request.reset_tags);
    Ok(Acquire::Take {
        token: next.fencing_token,
        state: next,
        expires,
        reentry: own.is_some(),
    })
}

/// The decision of an exclusive waiter of a read/write lock blocked by others: announce its
/// intent (or refresh it once half of it has passed), so that new shared holders wait behind
/// it, and wait until the blockers' leases end or the intent needs refreshing.
fn announce(
    name: &str,
    state: &LockState,
    kind: Kind,
    request: &Request<'_>,
    holders: Vec<Holder>,
    retry_in: Option<Duration>,
    now: DateTime<Utc>,
) -> Acquire {
    let ttl = intent_duration(request.duration);
    let refresh_in = state
        .waiting_writers
        .get(request.holder)
        .map_or(Duration::ZERO, |own| {
            (own.expires.to_utc() - now)
                .to_std()
                .unwrap_or(Duration::ZERO)
                .saturating_sub(ttl / 2)
        });
    if !refresh_in.is_zero() {
        let retry_in = Some(retry_in.map_or(refresh_in, |r| r.min(refresh_in)));
        return Acquire::Busy(Blocked {
            holders,
            retry_in,
            max_holders: kind.capacity(),
        });
    }
    let mut next = state.clone();
    let mut own = Lease::until(request.holder, expiry(now, ttl));
    own.duration_millis = duration_millis(ttl);
    next.waiting_writers.insert(request.holder.to_owned(), own);
    next.waiting_writers
        .retain(|holder, w| holder == request.holder || request.judgement.live(w, now));
    name.clone_into(&mut next.name);
    kind.lock_type().clone_into(&mut next.lock_type);
    let refresh_in = ttl / 2;
    Acquire::Announce {
        state: next,
        blocked: Blocked {
            holders,
            retry_in: Some(retry_in.map_or(refresh_in, |r| r.min(refresh_in))),
            max_holders: kind.capacity(),
        },
    }
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

/// Removes the caller's lease and applies its tags; `None` when it holds nothing to release
/// (its lease is gone, or belongs to a later acquisition).
pub(crate) fn release(
    state: &LockState,
    holder: &str,
    token: u64,
    tags: &[String],
    reset_tags: bool,
) -> Option<LockState> {
    let lease = state.leases.get(holder)?;
    if !owns(state, lease, token) {
        return None;
    }
    let mut next = state.clone();
    next.leases.remove(holder);
    apply_tags(&mut next, tags, reset_tags);
    Some(next)
}

/// Removes the lease that the acquisition with fencing token `token` may have written, after
/// its write's outcome stayed unknown (a lost answer, a cancelled acquire); `None` when the
/// lock does not have it.
///
/// A re-entry's lease replaced the holder's earlier one: it is removed only when its own token
/// tells it apart. In a format that keeps no per-lease token (kube-lock's), the re-entry wrote
/// the same lease, which the earlier guard still holds: it stays.
pub(crate) fn undo_take(
    state: &LockState,
    holder: &str,
    token: u64,
    reentry: bool,
) -> Option<LockState> {
    if reentry && state.leases.get(holder)?.token != Some(token) {
        return None;
    }
    release(state, holder, token, &[], false)
}

/// Removes the caller's intent as a waiting writer; `None` when it has none.
pub(crate) fn withdraw(state: &LockState, holder: &str) -> Option<LockState> {
    let mut next = state.clone();
    next.waiting_writers.remove(holder)?;
    Some(next)
}

/// Which holders an operator removes ([`Locker::evict`](crate::Locker::evict)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Evict<'a> {
    /// This holder's lease and intent, whatever their fencing token.
    Holder(&'a str),
    /// Every lease and request.
    All,
}

/// Removes the leases (and waiting writers' intents) `which` names, live or not, returning
/// the new state and the holders removed; `None` when there is nothing to remove.
pub(crate) fn evict(state: &LockState, which: Evict<'_>) -> Option<(LockState, Vec<Holder>)> {
    let mut next = state.clone();
    let mut removed = Vec::new();
    let mut take = |map: &mut BTreeMap<String, Lease>, waiting: bool| {
        map.retain(|holder, lease| {
            let hit = match which {
                Evict::Holder(h) => holder == h,
                Evict::All => true,
            };
            if hit {
                removed.push(Holder::from_lease(lease, waiting));
            }
            !hit
        });
    };
    take(&mut next.leases, false);
    take(&mut next.waiting_writers, true);
    (!removed.is_empty()).then_some((next, removed))
}

#[cfg(test)]
mod tests {
    use super::*;

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
            announce: false,
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
        let released = release(&state, "me", token, &["b".to_owned()], true).unwrap();
        assert_eq!(released.tags, ["b"]);
        assert!(released.leases.is_empty());
        assert_eq!(released.fencing_token, token, "release keeps the counter");
        assert!(release(&released, "me", token, &[], false).is_none());
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
        let seen = BTreeMap::from([("other".to_owned(), Duration::from_secs(10))]);
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
        let freed = release(&s2, "a", 1, &[], false).unwrap();
        assert!(release(&s2, "a", 2, &[], false).is_none());
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

    #[test]
    fn readers_share_and_a_writer_waits_for_all_of_them() {
        let shared = Kind::ReadWrite(Access::Shared);
        let exclusive = Kind::ReadWrite(Access::Exclusive);
        let (s1, _) = take(&LockState::empty("x"), want("r1", shared));
        let (s2, _) = take(&s1, want("r2", shared));
        assert!(s2.leases.values().all(|l| l.shared));
        // A single attempt by a writer does not announce itself.
        let busy = acquire("x", &s2, None, want("w", exclusive), t(NOW)).unwrap();
        assert!(matches!(&busy, Acquire::Busy(b) if b.holders.len() == 2));
        // A waiting writer does, and then new readers wait behind it.
        let waiting = Request {
            announce: true,
            ..want("w", exclusive)
        };
        let Acquire::Announce { state: s3, blocked } =
            acquire("x", &s2, None, waiting, t(NOW)).unwrap()
        else {
            panic!("a blocked writer announces itself")
        };
        assert_eq!(blocked.retry_in, Some(Duration::from_secs(15)));
        assert_eq!(
            s3.waiting_writers["w"].expires.to_string(),
            "2026-11-22T10:00:30Z"
        );
        let Acquire::Busy(reader_blocked) =
            acquire("x", &s3, None, want("r3", shared), t(NOW)).unwrap()
        else {
            panic!("a new reader waits for the waiting writer")
        };
        assert_eq!(reader_blocked.holders[0].id, "w");
        assert!(reader_blocked.holders[0].waiting);
        // A reader that already holds may take it again (it is not new).
        take(&s3, want("r1", shared));
        // Announced already: no second write until the intent needs refreshing.
        assert!(matches!(
            acquire("x", &s3, None, waiting, t(NOW)).unwrap(),
            Acquire::Busy(b) if b.retry_in == Some(Duration::from_secs(15))
        ));
        assert!(matches!(
            acquire("x", &s3, None, waiting, t("2026-11-22T10:00:16Z")).unwrap(),
            Acquire::Announce { .. }
        ));
        // Once the readers are gone, the writer takes it and its intent is fulfilled.
        let gone = release(
            &release(&s3, "r1", 1, &[], false).unwrap(),
            "r2",
            2,
            &[],
            false,
        )
        .unwrap();
        let (s4, _) = take(&gone, waiting);
        assert!(s4.waiting_writers.is_empty());
        assert!(!s4.leases["w"].shared);
        assert!(matches!(
            acquire("x", &s4, None, want("r1", shared), t(NOW)).unwrap(),
            Acquire::Busy(_)
        ));
        // An intent whose writer died ends by itself (plus the skew allowance).
        let judged = Request {
            judgement: Judgement {
                skew_allowance: Duration::from_secs(2),
                unchanged_for: None,
            },
            ..want("r3", shared)
        };
        let Acquire::Take { state: after, .. } =
            acquire("x", &s3, None, judged, t("2026-11-22T10:00:32Z")).unwrap()
        else {
            panic!("a dead writer's intent does not block")
        };
        assert!(after.waiting_writers.is_empty(), "and it is cleared");
        assert_eq!(withdraw(&s3, "w").unwrap().waiting_writers.len(), 0);
        assert!(withdraw(&s2, "w").is_none());
    }

    #[test]
    fn an_unknown_take_is_undone_only_where_its_lease_is_told_apart() {
        // A first acquisition's lease is removed by its token.
        let (first, token) = take(&LockState::empty("x"), request("me", &[], None));
        assert!(
            undo_take(&first, "me", token, false)
                .unwrap()
                .leases
                .is_empty()
        );
        assert!(undo_take(&first, "me", token + 1, false).is_none());
        // A re-entry wrote a new token: its lease goes, and the earlier one is not left
        // behind either (the re-entry replaced it; its guard is superseded).
        let (reentered, again) = take(&first, request("me", &[], None));
        assert!(
            undo_take(&reentered, "me", again, true)
                .unwrap()
                .leases
                .is_empty()
        );
        // The re-entry's write did not happen: the earlier lease stays.
        assert!(undo_take(&first, "me", again, true).is_none());
        // kube-lock's format keeps no per-lease token: a re-entry there is the earlier lease.
        let kube_lock = LockState::semaphore("x", 1, [Lease::until("me", GoTime::forever())]);
        assert!(undo_take(&kube_lock, "me", 7, true).is_none());
        assert!(undo_take(&kube_lock, "me", 7, false).is_some());
    }

    #[test]
    fn leases_without_a_token_are_judged_by_the_counter_or_the_name() {
        // Go lockheed rewrote a mutex: its counter tells whose acquisition this is.
        let mut mutex = held_by("me", "2026-11-22T10:00:10Z");
        mutex.leases.get_mut("me").unwrap().token = None;
        assert!(release(&mutex, "me", 4, &[], false).is_some());
        assert!(release(&mutex, "me", 3, &[], false).is_none());
        // kube-lock keeps no tokens: the holder's name decides.
        let semaphore = LockState::semaphore("x", 1, [Lease::until("holder-1", GoTime::forever())]);
        assert!(release(&semaphore, "holder-1", 9, &[], false).is_some());
    }

    #[test]
    fn eviction_removes_named_or_all_holders_whatever_their_tokens() {
        let (s1, _) = take(&LockState::empty("x"), want("a", Kind::Semaphore(3)));
        let (s2, _) = take(&s1, want("b", Kind::Semaphore(3)));
        let (next, removed) = evict(&s2, Evict::Holder("a")).unwrap();
        assert_eq!(removed.len(), 1);
        assert_eq!(next.leases.keys().collect::<Vec<_>>(), ["b"]);
        assert_eq!(next.fencing_token, 2, "the counter stays");
        assert!(evict(&next, Evict::Holder("a")).is_none());
        let (empty, removed) = evict(&s2, Evict::All).unwrap();
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
}
