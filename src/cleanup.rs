//! Clean-ups of what an acquire may leave behind when it fails or is cancelled: the lease of a
//! write whose outcome is unknown, or a waiting writer's intent. They run in the background,
//! counted for [`Lock::settle`](crate::Lock::settle).

use std::time::Duration;

use tracing::Instrument;

use crate::backend::{Backend, Decision, OnUnknown, Record, Start, Swapped, compare_and_swap};
use crate::backoff::Backoff;
use crate::rules;
use crate::settings::Settings;

/// What an acquire may have left in a lock.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Undo {
    /// The lease written by the acquisition with fencing token `token` (a re-entry's when
    /// `reentry`).
    Lease { token: u64, reentry: bool },
    /// This holder's intent as a waiting writer.
    Intent,
}

/// Removes what `undo` names from lock `settings.name`, in the background, when dropped armed.
pub(crate) fn on_unknown<L: Backend>(locker: &L, settings: &Settings, undo: Undo) -> OnUnknown {
    let (locker, name, holder, background) = (
        locker.clone(),
        settings.name.clone(),
        settings.holder.clone(),
        settings.background.clone(),
    );
    OnUnknown::run(move || {
        let span = tracing::info_span!("lockheed.cleanup", lock = %name, holder = %holder);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            background.spawn(
                &runtime,
                remove_if_ours(locker, name, holder, undo).instrument(span),
            );
        } else {
            let _entered = span.enter();
            tracing::warn!(
                ?undo,
                "acquire ended outside a Tokio runtime; what it may have written ends by itself"
            );
        }
    })
}

/// Removes what `undo` names for `holder` if the lock has it, retrying while the backend
/// cannot be reached.
async fn remove_if_ours<L: Backend>(locker: L, name: String, holder: String, undo: Undo) {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    let decide = |record: Option<&Record<L::Version>>| {
        let next = record.and_then(|r| match undo {
            Undo::Lease { token, reentry } => rules::undo_take(&r.state, &holder, token, reentry),
            Undo::Intent => rules::withdraw(&r.state, &holder),
        });
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
        let error = match compare_and_swap(&locker, &name, Start::Read, decide).await {
            Ok(Swapped::Stored { .. }) => {
                tracing::debug!(?undo, "removed what an ended acquire had left");
                return;
            }
            Ok(Swapped::Done(_)) => return,
            Ok(Swapped::Unknown { error, .. }) | Err(error) => error,
        };
        if !error.is_transient() {
            tracing::warn!(%error, ?undo, "cannot remove what an ended acquire left; a lease ends by itself");
            return;
        }
        tokio::time::sleep(backoff.after(&error)).await;
    }
}
