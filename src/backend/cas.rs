//! The one compare-and-swap loop: read a lock, decide, write by compare-and-swap, and on a
//! conflict read again and decide again. Taking, renewing, releasing and evicting a lock, and
//! every clean-up, are a decision run by [`compare_and_swap`]; none of them loops on its own.

use super::record::{Record, Written};
use super::store::Backend;
use crate::error::Error;
use crate::state::LockState;

/// How many times one operation re-reads after a compare-and-swap conflict before it gives up
/// with [`Error::Contended`]. Each conflict means another writer made progress.
pub(crate) const MAX_CAS_ATTEMPTS: u32 = 32;

/// Where a compare-and-swap starts.
pub(crate) enum Start<V> {
    /// Read the lock first.
    Read,
    /// The caller already knows the lock (as it last wrote it, or saw it through a feed; `None`:
    /// not stored): decide on that, and read only after a conflict.
    Known(Option<Record<V>>),
}

/// What a decision on a lock's current record says to do: write, and return a `W` once
/// written, or return a `D` without writing.
pub(crate) enum Decision<W, D> {
    /// Store `state`; `value` is what the operation returns once it is stored.
    Write {
        state: LockState,
        value: W,
        /// What to do if the write's outcome stays unknown.
        on_unknown: OnUnknown,
    },
    /// Nothing to write: the operation returns this.
    Done(D),
}

/// How a compare-and-swap ended.
#[derive(Debug)]
pub(crate) enum Swapped<V, W, D> {
    /// The decided state was stored, at `version`.
    Stored {
        version: V,
        state: LockState,
        value: W,
    },
    /// The decision wrote nothing.
    Done(D),
    /// The write failed in a way that leaves its outcome unknown: a transient error (a
    /// timeout, a lost connection, a 5xx that may have come after the store acted). `pending`
    /// is the decision's [`OnUnknown`], still armed: drop it to run it now, keep it to decide
    /// later, or disarm it once a read shows the write did not matter. `value` is what the
    /// write would have returned.
    Unknown {
        error: Error,
        pending: OnUnknown,
        value: W,
    },
}

impl<V, W, D> Swapped<V, W, D> {
    /// The outcome for an operation that has nothing to undo: an unknown outcome is its error.
    pub(crate) fn known(self) -> Result<Result<(V, LockState, W), D>, Error> {
        match self {
            Self::Stored {
                version,
                state,
                value,
            } => Ok(Ok((version, state, value))),
            Self::Done(value) => Ok(Err(value)),
            Self::Unknown { error, pending, .. } => {
                drop(pending);
                Err(error)
            }
        }
    }
}

/// Work that runs if a write's outcome stays unknown: when it is dropped, unless it was
/// [disarmed](Self::disarm) first. [`compare_and_swap`] holds it while the write is in flight,
/// so that a caller who drops the operation mid-write (a timeout) runs it too.
#[must_use = "dropping it runs it"]
pub(crate) struct OnUnknown(Option<Box<dyn FnOnce() + Send>>);

impl OnUnknown {
    /// Nothing to do.
    pub(crate) fn nothing() -> Self {
        Self(None)
    }

    /// Runs `work` when dropped armed.
    pub(crate) fn run(work: impl FnOnce() + Send + 'static) -> Self {
        Self(Some(Box::new(work)))
    }

    /// The outcome is known after all: do nothing.
    pub(crate) fn disarm(mut self) {
        self.0 = None;
    }
}

impl std::fmt::Debug for OnUnknown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("OnUnknown")
            .field(&self.0.as_ref().map(|_| "armed"))
            .finish()
    }
}

impl Drop for OnUnknown {
    fn drop(&mut self) {
        if let Some(work) = self.0.take() {
            work();
        }
    }
}

/// Runs `decide` on lock `name` and stores what it decides, by compare-and-swap on the version
/// it was decided on. A conflict (someone else wrote first) reads the lock again and decides
/// again, at most [`MAX_CAS_ATTEMPTS`] times.
///
/// # Errors
///
/// The decision's errors; the backend's errors, except a transient write error, and any read
/// error after a conflict, which are [`Swapped::Unknown`]; [`Error::Contended`] when every
/// attempt met a conflict.
///
/// # Cancel safety
///
/// Dropping the future while a write is in flight runs that write's [`OnUnknown`].
pub(crate) async fn compare_and_swap<B: Backend, W, D>(
    backend: &B,
    name: &str,
    start: Start<B::Version>,
    mut decide: impl FnMut(Option<&Record<B::Version>>) -> Result<Decision<W, D>, Error>,
) -> Result<Swapped<B::Version, W, D>, Error> {
    let mut record = match start {
        Start::Read => backend.read(name).await?,
        Start::Known(record) => record,
    };
    for _ in 0..MAX_CAS_ATTEMPTS {
        let (state, value, on_unknown) = match decide(record.as_ref())? {
            Decision::Done(value) => return Ok(Swapped::Done(value)),
            Decision::Write {
                state,
                value,
                on_unknown,
            } => (state, value, on_unknown),
        };
        let expected = record.as_ref().map(|r| &r.version);
        match backend.write(name, expected, &state).await {
            Ok(Written::Stored(version)) => {
                on_unknown.disarm();
                return Ok(Swapped::Stored {
                    version,
                    state,
                    value,
                });
            }
            Ok(Written::Conflict) => {
                tracing::debug!("the lock changed since it was read; reading it again");
            }
            Err(error) if error.is_transient() => {
                return Ok(Swapped::Unknown {
                    error,
                    pending: on_unknown,
                    value,
                });
            }
            Err(error) => {
                on_unknown.disarm();
                return Err(error);
            }
        }
        // A conflict is usually another writer's progress; it can also be this very write,
        // committed, then sent again by the client (kube retries a 503) and refused. Until the
        // lock is read again, the write's outcome is unknown.
        record = match backend.read(name).await {
            Ok(record) => record,
            Err(error) => {
                return Ok(Swapped::Unknown {
                    error,
                    pending: on_unknown,
                    value,
                });
            }
        };
        match record {
            Some(current) if current.state == state => {
                on_unknown.disarm();
                return Ok(Swapped::Stored {
                    version: current.version,
                    state,
                    value,
                });
            }
            _ => on_unknown.disarm(),
        }
    }
    Err(Error::Contended {
        lock: name.to_owned(),
        attempts: MAX_CAS_ATTEMPTS,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;
    use crate::MemoryLocker;

    fn write_tag(
        tag: &str,
        ran: &Arc<AtomicU32>,
    ) -> impl FnMut(Option<&Record<u64>>) -> Result<Decision<(), ()>, Error> {
        let (tag, ran) = (tag.to_owned(), Arc::clone(ran));
        move |record| {
            let mut state = record.map_or_else(|| LockState::empty("x"), |r| r.state.clone());
            if state.tags.contains(&tag) {
                return Ok(Decision::Done(()));
            }
            state.tags.push(tag.clone());
            let ran = Arc::clone(&ran);
            Ok(Decision::Write {
                state,
                value: (),
                on_unknown: OnUnknown::run(move || {
                    ran.fetch_add(1, Ordering::SeqCst);
                }),
            })
        }
    }

    #[tokio::test]
    async fn a_stale_start_conflicts_then_decides_on_what_it_reads() {
        let locker = MemoryLocker::new();
        let ran = Arc::new(AtomicU32::new(0));
        compare_and_swap(&locker, "x", Start::Read, write_tag("a", &ran))
            .await
            .unwrap();
        // Known as absent, but stored: the write conflicts, the lock is read, "b" is added.
        let swapped = compare_and_swap(&locker, "x", Start::Known(None), write_tag("b", &ran))
            .await
            .unwrap();
        let Swapped::Stored { version, state, .. } = swapped else {
            panic!("stored after one conflict")
        };
        assert_eq!(
            (version, state.tags.as_slice()),
            (2, ["a".to_owned(), "b".to_owned()].as_slice())
        );
        // Nothing to write: done, no request beyond the read.
        assert!(matches!(
            compare_and_swap(&locker, "x", Start::Read, write_tag("a", &ran))
                .await
                .unwrap(),
            Swapped::Done(())
        ));
        assert_eq!(ran.load(Ordering::SeqCst), 0, "known outcomes disarm");
    }

    /// A store where every write loses the race.
    #[derive(Debug, Clone)]
    struct Busy(MemoryLocker);

    impl Backend for Busy {
        type Version = u64;

        async fn read(&self, name: &str) -> Result<Option<Record<u64>>, Error> {
            self.0.read(name).await
        }

        async fn write(
            &self,
            _: &str,
            _: Option<&u64>,
            _: &LockState,
        ) -> Result<Written<u64>, Error> {
            Ok(Written::Conflict)
        }

        async fn read_all(&self) -> Result<crate::backend::StoredStates, Error> {
            self.0.read_all().await
        }
    }

    #[tokio::test]
    async fn a_decision_that_keeps_conflicting_gives_up() {
        let ran = Arc::new(AtomicU32::new(0));
        let err = compare_and_swap(
            &Busy(MemoryLocker::new()),
            "x",
            Start::Read,
            write_tag("a", &ran),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(
                err,
                Error::Contended {
                    attempts: MAX_CAS_ATTEMPTS,
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(
            ran.load(Ordering::SeqCst),
            0,
            "a conflict is a known outcome"
        );
    }

    #[test]
    fn on_unknown_runs_when_dropped_armed_only() {
        let ran = Arc::new(AtomicU32::new(0));
        let counter = Arc::clone(&ran);
        drop(OnUnknown::run(move || {
            counter.fetch_add(1, Ordering::SeqCst);
        }));
        let counter = Arc::clone(&ran);
        OnUnknown::run(move || {
            counter.fetch_add(1, Ordering::SeqCst);
        })
        .disarm();
        assert_eq!(ran.load(Ordering::SeqCst), 1);
    }
}
