//! Clean-ups of what an acquire may leave behind when it fails or is cancelled: the lease of a
//! write whose outcome is unknown, or a waiter's place in the queue (and a lease handed over
//! to it meanwhile). They run in the background, counted for
//! [`Lock::settle`](crate::Lock::settle).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tracing::Instrument;

use super::backoff::Backoff;
use super::settings::Settings;
use crate::backend::{
    Backend, Decision, Disarm, Known, OnUnknown, Record, Start, Swapped, compare_and_swap,
};
use crate::rules;
use crate::state::LockState;

/// What an acquire may have left in a lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Undo {
    /// The lease written by the attempt with fencing token `token` and nonce `nonce` (a
    /// re-entry's when `reentry`).
    Lease {
        token: u64,
        nonce: String,
        reentry: bool,
    },
    /// This holder's place in the queue, and a lease handed over to it with a token above
    /// `floor` (the lock's counter when it queued), while they carry `nonce`, the id the
    /// place was last written with.
    Queue { floor: u64, nonce: String },
}

/// What to remove from lock `name` for `holder`, and where to run it.
struct Cleanup<L: Backend> {
    locker: L,
    name: String,
    holder: String,
    background: super::background::Background,
    skew: Duration,
    undos: Vec<Undo>,
}

impl<L: Backend> Cleanup<L> {
    fn new(locker: &L, settings: &Settings) -> Self {
        Self {
            locker: locker.clone(),
            name: settings.name.clone(),
            holder: settings.holder.clone(),
            background: settings.background.clone(),
            skew: settings.skew_allowance,
            undos: Vec::new(),
        }
    }

    /// Removes what it names, in the background.
    fn spawn(self) {
        if self.undos.is_empty() {
            return;
        }
        let span =
            tracing::info_span!("lockheed.cleanup", lock = %self.name, holder = %self.holder);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let task = remove_if_ours(self.locker, self.name, self.holder, self.undos, self.skew);
            self.background.spawn(&runtime, task.instrument(span));
        } else {
            let _entered = span.enter();
            tracing::warn!(
                undos = ?self.undos,
                "acquire ended outside a Tokio runtime; what it may have written ends by itself"
            );
        }
    }
}

/// What one acquire may have left, removed in the background if it ends without the lock:
/// when dropped, unless [disarmed](Self::disarm) first.
pub(crate) struct Pending<L: Backend>(Option<Cleanup<L>>);

impl<L: Backend> Pending<L> {
    pub(crate) fn new(locker: &L, settings: &Settings) -> Self {
        Self(Some(Cleanup::new(locker, settings)))
    }

    /// Adds what an attempt may have left (once: the same place in the queue is one undo).
    pub(crate) fn add(&mut self, undo: Undo) {
        if let Some(cleanup) = &mut self.0
            && !cleanup.undos.contains(&undo)
        {
            cleanup.undos.push(undo);
        }
    }

    /// The place in the queue is now written with `undo`'s id: the ids earlier writes of it
    /// carried are gone (overwritten, or refused for the version they carry), so only this
    /// one is kept.
    pub(crate) fn queued(&mut self, undo: Undo) {
        if let Some(cleanup) = &mut self.0 {
            cleanup.undos.retain(|u| !matches!(u, Undo::Queue { .. }));
            cleanup.undos.push(undo);
        }
    }

    /// The acquire took the lock, which replaced what its earlier attempts may have written
    /// and fulfilled its place in the queue: nothing is left to remove.
    pub(crate) fn disarm(&mut self) {
        if let Some(cleanup) = &mut self.0 {
            cleanup.undos.clear();
        }
    }
}

impl<L: Backend> Drop for Pending<L> {
    fn drop(&mut self) {
        if let Some(cleanup) = self.0.take() {
            cleanup.spawn();
        }
    }
}

/// What one write of a take may have left, if its outcome stays unknown: removed in the
/// background when dropped armed, unless `kept` is set by then (the lock was handed over to the
/// caller meanwhile: what the write may have written is its own). The undo is held here
/// only: [disarmed](Self::disarm), it is handed to the waiter that keeps it with its other
/// pending clean-ups.
#[must_use = "dropping it removes what the write may have written"]
pub(crate) struct Armed<L: Backend> {
    /// `None` once disarmed or run; boxed, as a write in flight holds it.
    armed: Option<Box<(Cleanup<L>, Undo)>>,
    /// Set by the take when the lock is handed over while the write is in flight.
    kept: Arc<AtomicBool>,
}

impl<L: Backend> Armed<L> {
    /// Arms the removal of `undo` from lock `settings.name`.
    pub(crate) fn new(locker: &L, settings: &Settings, undo: Undo, kept: &Arc<AtomicBool>) -> Self {
        Self {
            armed: Some(Box::new((Cleanup::new(locker, settings), undo))),
            kept: Arc::clone(kept),
        }
    }

    /// Removes nothing now, and returns what the write may have left.
    pub(crate) fn disarm(mut self) -> Undo {
        let Some((_, undo)) = self.armed.take().map(|armed| *armed) else {
            unreachable!("only dropping or disarming it, which consume it, empties it")
        };
        undo
    }
}

impl<L: Backend> Disarm for Armed<L> {
    fn disarm(self) {
        let _ = Armed::disarm(self);
    }
}

impl<L: Backend> fmt::Debug for Armed<L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let undo = self.armed.as_ref().map(|armed| &armed.1);
        let kept = self.kept.load(Ordering::Acquire);
        f.debug_struct("Armed")
            .field("undo", &undo)
            .field("kept", &kept)
            .finish()
    }
}

impl<L: Backend> Drop for Armed<L> {
    fn drop(&mut self) {
        if let Some((mut cleanup, undo)) = self.armed.take().map(|armed| *armed)
            && !self.kept.load(Ordering::Acquire)
        {
            cleanup.undos.push(undo);
            cleanup.spawn();
        }
    }
}

/// `state` with what `undos` name for `holder` removed; `None` when it holds none of them.
fn undone(
    state: &LockState,
    holder: &str,
    undos: &[Undo],
    now: chrono::DateTime<chrono::Utc>,
    skew: Duration,
) -> Option<LockState> {
    let mut changed: Option<LockState> = None;
    for undo in undos {
        let current = changed.as_ref().unwrap_or(state);
        let next = match undo {
            Undo::Lease {
                token,
                nonce,
                reentry,
            } => rules::undo_take(current, holder, *token, nonce, *reentry, now, skew),
            Undo::Queue { floor, nonce } => {
                rules::withdraw(current, holder, (*floor, Some(nonce)), now, skew)
            }
        };
        if next.is_some() {
            changed = next;
        }
    }
    changed
}

/// Removes what `undos` name for `holder` if the lock has it, retrying while the backend
/// cannot be reached.
async fn remove_if_ours<L: Backend>(
    locker: L,
    name: String,
    holder: String,
    undos: Vec<Undo>,
    skew: Duration,
) {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    let clock = locker.clock();
    let decide = |record: Option<&Record<L::Version>>| {
        let next = record.and_then(|r| undone(&r.state, &holder, &undos, clock.now(), skew));
        Ok(match next {
            Some(state) => Decision::Write {
                state,
                value: true,
                on_unknown: OnUnknown::nothing(),
            },
            // Not written after all, or already gone.
            None => Decision::Done(false),
        })
    };
    loop {
        let swapped = compare_and_swap(&locker, &name, Start::Read, None, decide).await;
        let error = match swapped.and_then(Swapped::known) {
            Ok(Known::Stored { .. }) => {
                tracing::debug!(?undos, "removed what an ended acquire had left");
                return;
            }
            Ok(Known::Done(_)) => return,
            Err(error) => error,
        };
        if !error.is_transient() {
            tracing::warn!(%error, ?undos, "cannot remove what an ended acquire left; a lease ends by itself");
            return;
        }
        tokio::time::sleep(backoff.after(&error)).await;
    }
}
