//! The locking rules, in one place for every backend: who may take a lock, when a lease
//! expires, what happens to tags, when force applies, and how fencing tokens advance.
//!
//! Everything here is a pure function of a stored state, the caller's intent and the time;
//! backends only store the results by compare-and-swap.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::condition::Condition;
use crate::error::Error;
use crate::gotime::GoTime;
use std::collections::BTreeMap;

use crate::info::{Holder, LockInfo};
use crate::locker::Reservation;
use crate::state::{Lease, LockState, MUTEX};

/// What a caller wants when it takes a lock.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Intent<'a> {
    pub(crate) holder: &'a str,
    /// Zero: no expiry.
    pub(crate) duration: Duration,
    pub(crate) tags: &'a [String],
    pub(crate) reset_tags: bool,
    pub(crate) force: Option<&'a Condition>,
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
        let by_wall = (lease.expires.to_utc() - now)
            .to_std()
            .map_or(Duration::ZERO, |left| left + self.skew_allowance);
        let by_wall = if lease.expires.to_utc() <= now {
            // Ended by the wall clock: the allowance still counts from the end.
            let since = (now - lease.expires.to_utc())
                .to_std()
                .unwrap_or(Duration::ZERO);
            self.skew_allowance.saturating_sub(since)
        } else {
            by_wall
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

    /// The holders other than `me` whose leases have not ended for this contender.
    pub(crate) fn others(&self, state: &LockState, me: &str, now: DateTime<Utc>) -> Vec<Holder> {
        state
            .leases
            .values()
            .filter(|lease| lease.instance_id != me && !self.remaining(lease, now).is_zero())
            .map(|lease| Holder::new(&lease.instance_id, lease.expires))
            .collect()
    }
}

/// The decision on an acquire.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Acquire {
    /// Write `state` to take the lock; the acquisition's fencing token is `token`.
    Take {
        state: LockState,
        token: u64,
        expires: GoTime,
        /// The caller already held the lock (a renewal, not a new acquisition).
        renewed: bool,
    },
    /// Someone else holds it.
    Busy(Vec<Holder>),
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

fn apply_tags(state: &mut LockState, tags: &[String], reset: bool) {
    if reset {
        state.tags.clear();
    }
    for tag in tags {
        if !state.tags.contains(tag) {
            state.tags.push(tag.clone());
        }
    }
}

fn check_kind(name: &str, state: &LockState) -> Result<(), Error> {
    if state.lock_type.is_empty() || state.lock_type == MUTEX {
        Ok(())
    } else {
        Err(Error::WrongKind {
            lock: name.to_owned(),
            kind: state.lock_type.clone(),
        })
    }
}

/// Decides an acquire of the mutex `name` whose stored state is `state`.
///
/// - A live lease of another holder blocks, unless the lock meets the intent's force
///   condition: then every other lease is removed (a takeover).
/// - A live reservation by another client (a Go lockheed writer mid-write) blocks.
/// - The caller's own live lease is taken again: a new fencing token, a new expiry.
/// - Otherwise the caller takes the lock: expired leases are dropped, the fencing token
///   advances by one, tags are merged (or reset).
pub(crate) fn acquire(
    name: &str,
    state: &LockState,
    reservation: Option<&Reservation>,
    intent: Intent<'_>,
    now: DateTime<Utc>,
) -> Result<Acquire, Error> {
    check_kind(name, state)?;
    let others = intent.judgement.others(state, intent.holder, now);
    let forced = !others.is_empty()
        && intent
            .force
            .is_some_and(|c| c.matches(&LockInfo::from_state(name, state, now)));
    if !others.is_empty() && !forced {
        return Ok(Acquire::Busy(others));
    }
    if let Some(r) = reservation.filter(|r| r.until > now && r.by != intent.holder) {
        return Ok(Acquire::Busy(vec![Holder {
            id: r.by.clone(),
            expires: Some(r.until),
        }]));
    }
    let renewed = !forced
        && state
            .leases
            .get(intent.holder)
            .is_some_and(|lease| lease.expires.to_utc() > now);
    let expires = expiry(now, intent.duration);
    let mut next = state.clone();
    name.clone_into(&mut next.name);
    MUTEX.clone_into(&mut next.lock_type);
    // Taking a mutex replaces every other lease: the stale ones, and under force the live ones.
    next.leases.clear();
    next.leases.insert(
        intent.holder.to_owned(),
        Lease {
            instance_id: intent.holder.to_owned(),
            expires,
            duration_millis: duration_millis(intent.duration),
        },
    );
    // Every acquisition gets its own token, a re-entry too: an older guard of the same holder
    // then fails its renewal and release with Lost instead of removing the newer lease.
    next.fencing_token = state
        .fencing_token
        .checked_add(1)
        .ok_or_else(|| Error::Corrupt {
            object: name.to_owned(),
            reason: "the fencing token is at its maximum and cannot advance".to_owned(),
        })?;
    apply_tags(&mut next, intent.tags, intent.reset_tags);
    Ok(Acquire::Take {
        token: next.fencing_token,
        state: next,
        expires,
        renewed,
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
    if lease.expires.to_utc() <= now || state.fencing_token != token {
        return Err(lost());
    }
    let expires = expiry(now, duration);
    let mut next = state.clone();
    next.leases.insert(
        holder.to_owned(),
        Lease {
            instance_id: holder.to_owned(),
            expires,
            duration_millis: duration_millis(duration),
        },
    );
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
    if !state.leases.contains_key(holder) || state.fencing_token != token {
        return None;
    }
    let mut next = state.clone();
    next.leases.remove(holder);
    apply_tags(&mut next, tags, reset_tags);
    Some(next)
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
        state.leases.insert(
            holder.into(),
            Lease {
                instance_id: holder.into(),
                expires: GoTime::parse(expires).unwrap(),
                duration_millis: Some(30_000),
            },
        );
        state.fencing_token = 4;
        state
    }

    fn intent<'a>(holder: &'a str, tags: &'a [String], force: Option<&'a Condition>) -> Intent<'a> {
        Intent {
            holder,
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
            renewed,
        } = acquire("x", &state, None, intent("me", &[], None), t(NOW)).unwrap()
        else {
            panic!("a free lock is taken")
        };
        assert_eq!((token, renewed), (1, false));
        assert_eq!(expires.to_string(), "2026-11-22T10:00:30Z");
        assert_eq!(state.lock_type, "mutex");
        assert_eq!(state.leases["me"].expires, expires);
    }

    #[test]
    fn a_live_lease_blocks_and_an_expired_one_is_replaced() {
        let live = held_by("other", "2026-11-22T10:00:01Z");
        let busy = acquire("x", &live, None, intent("me", &[], None), t(NOW)).unwrap();
        assert!(matches!(&busy, Acquire::Busy(h) if h[0].id == "other"));
        // now == expires: expired (a lease is live while now < expires).
        let stale = held_by("other", NOW);
        let Acquire::Take { state, token, .. } =
            acquire("x", &stale, None, intent("me", &[], None), t(NOW)).unwrap()
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
            renewed,
            expires,
            ..
        } = acquire("x", &mine, None, intent("me", &[], None), t(NOW)).unwrap()
        else {
            panic!("re-entry renews")
        };
        assert_eq!((token, renewed), (5, true));
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
            renewed,
            ..
        } = acquire("x", &forever, None, intent("me", &[], Some(&force)), t(NOW)).unwrap()
        else {
            panic!("the condition holds")
        };
        assert_eq!((token, renewed), (5, false));
        assert!(!state.leases.contains_key("other"));
        let wrong = Condition::tags_contain("nope");
        let busy = acquire("x", &forever, None, intent("me", &[], Some(&wrong)), t(NOW)).unwrap();
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
            intent("me", &[], None),
            t(NOW),
        )
        .unwrap();
        assert!(matches!(&busy, Acquire::Busy(h) if h[0].id == "go-writer"));
        let old = Reservation::new("go-writer", t("2026-11-22T09:59:00Z"));
        assert!(matches!(
            acquire("x", &state, Some(&old), intent("me", &[], None), t(NOW)).unwrap(),
            Acquire::Take { .. }
        ));
    }

    #[test]
    fn tags_merge_or_reset_on_acquire_and_release() {
        let mut state = LockState::empty("x");
        state.tags = vec!["old".into()];
        let tags = vec!["a".into(), "old".into()];
        let Acquire::Take { state, token, .. } =
            acquire("x", &state, None, intent("me", &tags, None), t(NOW)).unwrap()
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
            acquire("x", &state, None, intent("me", &[], None), t(NOW)),
            Err(Error::WrongKind { .. })
        ));
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
        assert_eq!(
            judgement
                .others(&state, "me", t("2027-01-01T00:00:00Z"))
                .len(),
            1
        );
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
            acquire("x", &state, None, intent("me", &[], None), t(NOW)),
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
}
