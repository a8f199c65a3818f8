//! Replaying a committed transition through the locking rules: which holder's operation, at
//! what time, gives the state that was committed?
//!
//! Every write of the crate is one decision of the rules (`rules::acquire`, `renew`,
//! `release`, `withdraw`; `undo_take` is a release) on the state it read, by one holder, at
//! that holder's `now`. The replay tries the operations of the holders of the client that
//! wrote the commit, with what the committed state says of them (tokens, nonces, durations,
//! reasons, tags), at the times the written state records (a new lease's `since`, a renewed
//! lease's end minus its duration, a queue entry's), or else at every time between the
//! previous commit and this one where the outcome can change (a lease or entry ending). The
//! transition is explained when one of them gives the committed state.
//!
//! Two states are compared without the leases and queue entries that had ended by the
//! operation's `now` (by the wall clock): a writer whose clock-skew allowance or watch kept
//! one of them a while longer wrote the same decision, and dropping ended ones is every
//! writer's right. A live lease dropped, or one added that the rules would not add, still
//! shows.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::History;
use crate::rules::{self, Acquire, Judgement, Queue, Request};
use crate::state::LockState;
use crate::state::gotime::GoTime;
use crate::state::kind::{Access, Kind, RWLOCK, SEMAPHORE};
use lockheed_fake_apiserver::Commit;

/// The state without the leases and queue entries that had ended at `now`.
fn live_at(state: &LockState, now: DateTime<Utc>) -> LockState {
    let mut live = state.clone();
    live.leases
        .retain(|_, l| l.expires.is_forever() || l.expires.to_utc() > now);
    live.queue.retain(|e| e.expires.to_utc() > now);
    live
}

fn same(expected: &LockState, committed: &LockState, now: DateTime<Utc>) -> bool {
    live_at(expected, now) == live_at(committed, now)
}

/// Why no rule explains going from `before` to `after` (`None`: the object did not exist, or
/// was deleted), or `Ok` when one does.
pub(super) fn explain(
    history: &History,
    before: Option<&LockState>,
    after: Option<&LockState>,
    commit: &Commit,
) -> Result<(), String> {
    let Some(after) = after else {
        return Err("the lock's object was deleted".to_owned());
    };
    let empty = LockState::empty(&history.lock);
    let before = before.unwrap_or(&empty);
    if before == after {
        return Ok(());
    }
    let replay = Replay {
        history,
        before,
        after,
        from: history.last.earliest.unwrap_or(DateTime::<Utc>::MIN_UTC),
        to: commit.at,
    };
    let subjects = replay.subjects(commit.token.as_deref());
    if subjects.iter().any(|holder| replay.by(holder)) {
        return Ok(());
    }
    Err(describe(before, after, &subjects))
}

/// One transition to explain.
struct Replay<'a> {
    history: &'a History,
    before: &'a LockState,
    after: &'a LockState,
    /// The earliest the previous commit can have been made: the writer decided after it had
    /// seen that state.
    from: DateTime<Utc>,
    /// This commit's time (when it was made, or seen): the writer decided before.
    to: DateTime<Utc>,
}

impl Replay<'_> {
    /// The holders whose operation this may be: the author's, or anyone's.
    fn subjects(&self, author: Option<&str>) -> Vec<String> {
        if let Some(author) = author {
            return self
                .history
                .clients
                .get(author)
                .cloned()
                .unwrap_or_else(|| vec![author.to_owned()]);
        }
        let mut all: Vec<String> = [self.before, self.after]
            .iter()
            .flat_map(|s| {
                s.leases
                    .keys()
                    .cloned()
                    .chain(s.queue.iter().map(|e| e.instance_id.clone()))
            })
            .collect();
        all.sort();
        all.dedup();
        all
    }

    /// Whether an operation of `holder` explains the transition.
    fn by(&self, holder: &str) -> bool {
        self.renewed(holder)
            || self.acquired(holder)
            || self.released(holder)
            || self.withdrew(holder)
    }

    /// Whether `now` is a time the writer can have decided at.
    fn plausible(&self, now: DateTime<Utc>) -> bool {
        self.from <= now && now <= self.to
    }

    /// The times within the window where a decision's outcome can change, and the window's
    /// ends: a lease's end plus a skew allowance (a handover's liveness), an entry's end.
    fn turning_points(&self) -> Vec<DateTime<Utc>> {
        let nano = chrono::Duration::nanoseconds(1);
        let mut points = vec![self.from, self.to];
        for skew in [Duration::ZERO, self.history.skew] {
            let skew = chrono::Duration::from_std(skew).unwrap_or(chrono::Duration::MAX);
            for lease in self.before.leases.values() {
                if let Some(end) = lease.expires.to_utc().checked_add_signed(skew) {
                    points.extend([end, end + nano]);
                }
            }
        }
        for entry in &self.before.queue {
            let end = entry.expires.to_utc();
            points.extend([end, end + nano]);
        }
        points.retain(|t| self.plausible(*t));
        points.sort();
        points.dedup();
        points
    }

    /// A renewal: the same lease, extended to `now` plus its duration.
    fn renewed(&self, holder: &str) -> bool {
        let (Some(old), Some(new)) = (
            self.before.leases.get(holder),
            self.after.leases.get(holder),
        ) else {
            return false;
        };
        let Some(duration) = new.duration() else {
            return false;
        };
        let token = old.token.unwrap_or(self.before.fencing_token);
        let Some(now) = at(new.expires, duration) else {
            return false;
        };
        self.plausible(now)
            && rules::renew(
                &self.history.lock,
                self.before,
                holder,
                token,
                duration,
                now,
            )
            .is_ok_and(|(expected, _)| same(&expected, self.after, now))
    }

    /// The kind `holder` asked for, as the committed state says.
    fn kind(&self, shared: bool) -> Kind {
        match self.after.lock_type.as_str() {
            SEMAPHORE => Kind::Semaphore(self.after.max_holders),
            RWLOCK if shared => Kind::ReadWrite(Access::Shared),
            RWLOCK => Kind::ReadWrite(Access::Exclusive),
            _ => Kind::Mutex,
        }
    }

    /// The tags a writer may have added, or reset to.
    fn tag_choices(&self) -> Vec<(Vec<String>, bool)> {
        let added: Vec<String> = self
            .after
            .tags
            .iter()
            .filter(|t| !self.before.tags.contains(t))
            .cloned()
            .collect();
        vec![(added, false), (self.after.tags.clone(), true)]
    }

    /// An acquire: taking the lock (a new lease for `holder`), or queueing (its entry added
    /// or refreshed).
    fn acquired(&self, holder: &str) -> bool {
        let lease = self.after.leases.get(holder);
        let entry = self.after.queue.iter().find(|e| e.instance_id == holder);
        let taken = lease.filter(|new| self.before.leases.get(holder) != Some(*new));
        let (duration, reason, shared, nonce, mut times) = match (taken, entry) {
            (Some(lease), _) => (
                lease.duration().unwrap_or(Duration::ZERO),
                lease.reason.clone(),
                lease.shared,
                lease.nonce.clone().unwrap_or_default(),
                [lease.since.map(GoTime::to_utc)]
                    .into_iter()
                    .chain([lease.duration().and_then(|d| at(lease.expires, d))])
                    .collect::<Vec<_>>(),
            ),
            (None, Some(entry)) => (
                entry
                    .lease_millis
                    .map_or(Duration::ZERO, Duration::from_millis),
                entry.reason.clone(),
                entry.shared,
                entry.nonce.clone().unwrap_or_default(),
                vec![
                    Some(entry.since.to_utc()),
                    entry.duration().and_then(|d| at(entry.expires, d)),
                ],
            ),
            (None, None) => return false,
        };
        times.retain(|t| t.is_some_and(|t| self.plausible(t)));
        let tag_choices = self.tag_choices();
        let kind = self.kind(shared);
        for now in times.into_iter().flatten() {
            for queue in [Queue::Joins, Queue::Respects, Queue::Ignores] {
                for skew in [Duration::ZERO, Duration::from_secs(3600)] {
                    for (tags, reset_tags) in &tag_choices {
                        let request = Request {
                            holder,
                            kind,
                            duration,
                            tags,
                            reset_tags: *reset_tags,
                            force: None,
                            reason: reason.as_deref(),
                            nonce: &nonce,
                            queue,
                            judgement: Judgement {
                                skew_allowance: skew,
                                unchanged_for: None,
                            },
                        };
                        let decided =
                            rules::acquire(&self.history.lock, self.before, None, request, now);
                        if let Ok(Acquire::Take { state, .. } | Acquire::Queue { state, .. }) =
                            decided
                            && same(&state, self.after, now)
                        {
                            return true;
                        }
                    }
                }
            }
        }
        false
    }

    /// The times a write that removed something may have been decided at: those a handover
    /// in it records, or else every turning point.
    fn removal_times(&self) -> Vec<DateTime<Utc>> {
        // A lease handed over is new, or replaces its holder's ended one (a waiter that held
        // the lock before, lost it, and queued again).
        let handed: Vec<DateTime<Utc>> = self
            .after
            .leases
            .values()
            .filter(|l| {
                self.before
                    .leases
                    .get(&l.instance_id)
                    .is_none_or(|old| old.token != l.token)
            })
            .filter_map(|l| l.since.map(GoTime::to_utc))
            .filter(|t| self.plausible(*t))
            .collect();
        if handed.is_empty() {
            self.turning_points()
        } else {
            handed
        }
    }

    /// A release (or the undoing of a take), handing the lock over to the waiters whose turn
    /// it is.
    fn released(&self, holder: &str) -> bool {
        let Some(lease) = self.before.leases.get(holder) else {
            return false;
        };
        let token = lease.token.unwrap_or(self.before.fencing_token);
        let mut tag_choices = self.tag_choices();
        tag_choices.push((Vec::new(), false));
        for now in self.removal_times() {
            for skew in [self.history.skew, Duration::ZERO] {
                for (tags, reset) in &tag_choices {
                    if let Some(expected) =
                        rules::release(self.before, holder, token, tags, *reset, now, skew)
                        && same(&expected, self.after, now)
                    {
                        return true;
                    }
                }
            }
        }
        false
    }

    /// A waiter giving up: its place goes, and the lease it may have been handed meanwhile
    /// goes on to the next.
    fn withdrew(&self, holder: &str) -> bool {
        let mut floors = vec![self.before.fencing_token];
        let lease = self.before.leases.get(holder);
        if let Some(token) = lease.and_then(|l| l.token) {
            floors.push(token.saturating_sub(1));
        }
        // The id the waiter last wrote its place with: its entry's, or the handed lease's.
        let entry = self.before.queue.iter().find(|e| e.instance_id == holder);
        let mut nonces: Vec<Option<&str>> = vec![None];
        nonces.extend([
            entry.and_then(|e| e.nonce.as_deref()),
            lease.and_then(|l| l.nonce.as_deref()),
        ]);
        for now in self.removal_times() {
            for skew in [self.history.skew, Duration::ZERO] {
                for floor in &floors {
                    for nonce in &nonces {
                        let undo = (*floor, *nonce);
                        if let Some(expected) =
                            rules::withdraw(self.before, holder, undo, now, skew)
                            && same(&expected, self.after, now)
                        {
                            return true;
                        }
                    }
                }
            }
        }
        false
    }
}

/// When a lease (or entry) that ends at `expires` was written, given its duration.
fn at(expires: GoTime, duration: Duration) -> Option<DateTime<Utc>> {
    if expires.is_forever() {
        return None;
    }
    let duration = chrono::Duration::from_std(duration).ok()?;
    expires.to_utc().checked_sub_signed(duration)
}

/// What changed, for a violation's message.
fn describe(before: &LockState, after: &LockState, subjects: &[String]) -> String {
    let leases = |s: &LockState| {
        s.leases
            .values()
            .map(|l| {
                format!(
                    "{}#{} until {}",
                    l.instance_id,
                    l.token.map_or_else(|| "?".to_owned(), |t| t.to_string()),
                    l.expires
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let queue = |s: &LockState| {
        s.queue
            .iter()
            .map(|e| e.instance_id.clone())
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "leases [{}] -> [{}], queue [{}] -> [{}], counter {} -> {}, tried as {}",
        leases(before),
        leases(after),
        queue(before),
        queue(after),
        before.fencing_token,
        after.fencing_token,
        subjects.join(", ")
    )
}
