//! The one compare-and-swap loop: read a lock, decide, write by compare-and-swap, and on a
//! conflict read again and decide again. Taking, renewing, releasing and evicting a lock, and
//! every clean-up, are a decision run by [`compare_and_swap`]; none of them loops on its own.

use std::time::Duration;

use tokio::time::Instant;

use super::feed::{Changes, Snapshot};
use super::record::{Record, Written};
use super::store::Backend;
use crate::error::Error;
use crate::state::LockState;

/// How many times one operation re-reads after a compare-and-swap conflict before it gives up
/// with [`Error::Contended`]. Each conflict means another writer made progress.
pub(crate) const MAX_CAS_ATTEMPTS: u32 = 32;

/// How long a write that lost a race waits for the lock's feed to show the write that won
/// before it reads the lock instead. A watch delivers a write about when a read of it would
/// return (both a moment after the commit), so this is spent only when the watch is slow.
const VIEW_WAIT: Duration = Duration::from_millis(100);

/// Where a compare-and-swap starts.
pub(crate) enum Start<V> {
    /// Read the lock first.
    Read,
    /// The caller already knows the lock (as it last wrote it, or saw it through a feed; `None`:
    /// not stored): decide on that, and read only after a conflict.
    Known(Option<Record<V>>),
}

/// What a decision on a lock's current record says to do: write, and return a `W` once
/// written, or return a `D` without writing; `U` is what to do if the write's outcome stays
/// unknown.
pub(crate) enum Decision<W, D, U = OnUnknown> {
    /// Store `state`; `value` is what the operation returns once it is stored.
    Write {
        state: LockState,
        value: W,
        /// What to do if the write's outcome stays unknown.
        on_unknown: U,
    },
    /// Nothing to write: the operation returns this.
    Done(D),
}

/// How a compare-and-swap ended.
#[derive(Debug)]
pub(crate) enum Swapped<V, W, D, U = OnUnknown> {
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
    /// is the decision's `on_unknown`, still armed: drop it to run it now, keep it to decide
    /// later, or disarm it once a read shows the write did not matter.
    Unknown { error: Error, pending: U },
}

/// How a compare-and-swap ended, for an operation that has nothing to undo: its outcome is
/// known, or it failed.
#[derive(Debug)]
pub(crate) enum Known<V, W, D> {
    /// The decided state was stored, at `version`.
    Stored {
        version: V,
        state: LockState,
        value: W,
    },
    /// The decision wrote nothing.
    Done(D),
}

impl<V, W, D, U> Swapped<V, W, D, U> {
    /// The outcome for an operation that has nothing to undo.
    ///
    /// # Errors
    ///
    /// An unknown outcome's error.
    pub(crate) fn known(self) -> Result<Known<V, W, D>, Error> {
        match self {
            Self::Stored {
                version,
                state,
                value,
            } => Ok(Known::Stored {
                version,
                state,
                value,
            }),
            Self::Done(value) => Ok(Known::Done(value)),
            Self::Unknown { error, pending } => {
                drop(pending);
                Err(error)
            }
        }
    }
}

/// What runs if a write's outcome stays unknown: when it is dropped armed.
/// [`compare_and_swap`] holds it while the write is in flight, and disarms it once the outcome
/// is known.
pub(crate) trait Disarm {
    /// The outcome is known after all: do nothing.
    fn disarm(self);
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
    #[cfg(test)]
    pub(crate) fn run(work: impl FnOnce() + Send + 'static) -> Self {
        Self(Some(Box::new(work)))
    }

    /// The outcome is known after all: do nothing.
    pub(crate) fn disarm(mut self) {
        self.0 = None;
    }
}

impl Disarm for OnUnknown {
    fn disarm(self) {
        OnUnknown::disarm(self);
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
/// With the lock's feed (`view`: a waiter's, or a holder's while its process watches the
/// lock), a conflict is decided again on the state the feed shows once it has the write that
/// won, instead of a read: the race a waiter's queueing and a holder's release run costs the
/// loser its refused write and nothing more. A feed that shows nothing newer within
/// [`VIEW_WAIT`], or knows nothing (its watch is interrupted), is not waited for: the lock is
/// read.
///
/// # Errors
///
/// The decision's errors; the backend's errors, except a transient write error, and any read
/// error after a conflict, which are [`Swapped::Unknown`]; [`Error::Contended`] when every
/// attempt met a conflict.
///
/// # Cancel safety
///
/// Dropping the future while a write is in flight runs that write's `on_unknown`.
pub(crate) async fn compare_and_swap<B: Backend, W, D, U: Disarm>(
    backend: &B,
    name: &str,
    start: Start<B::Version>,
    view: Option<&Changes<B::Version>>,
    mut decide: impl FnMut(Option<&Record<B::Version>>) -> Result<Decision<W, D, U>, Error>,
) -> Result<Swapped<B::Version, W, D, U>, Error> {
    let mut view = view.map(Changes::follow);
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
        record = match reread(backend, name, view.as_mut(), record.as_ref()).await {
            Ok(record) => record,
            Err(error) => {
                return Ok(Swapped::Unknown {
                    error,
                    pending: on_unknown,
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

/// Lock `name` after a write decided on `refused` met a conflict: as `view` (the lock's feed)
/// shows it once it shows a newer version, within [`VIEW_WAIT`]; otherwise as read.
///
/// # Errors
///
/// The read's.
async fn reread<B: Backend>(
    backend: &B,
    name: &str,
    view: Option<&mut Changes<B::Version>>,
    refused: Option<&Record<B::Version>>,
) -> Result<Option<Record<B::Version>>, Error> {
    if let Some(view) = view {
        let deadline = Instant::now() + VIEW_WAIT;
        loop {
            let newer = match view.latest() {
                Snapshot::Present(seen) => match refused {
                    None => Some(true),
                    Some(refused) => backend.is_newer(&seen.version, &refused.version),
                }
                .map(|newer| newer.then_some(seen)),
                // Deleted, unknown, or the watch is interrupted: not an answer.
                _ => None,
            };
            match newer {
                Some(Some(seen)) => return Ok(Some(seen)),
                // The state the refused write was decided on, or an older one (a watch that
                // resumes replays what it missed): the winner is on its way.
                Some(None) => {}
                None => break,
            }
            if tokio::time::timeout_at(deadline, view.changed())
                .await
                .is_err()
            {
                break;
            }
        }
    }
    backend.read(name).await
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
        compare_and_swap(&locker, "x", Start::Read, None, write_tag("a", &ran))
            .await
            .unwrap();
        // Known as absent, but stored: the write conflicts, the lock is read, "b" is added.
        let swapped =
            compare_and_swap(&locker, "x", Start::Known(None), None, write_tag("b", &ran))
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
            compare_and_swap(&locker, "x", Start::Read, None, write_tag("a", &ran))
                .await
                .unwrap(),
            Swapped::Done(())
        ));
        assert_eq!(ran.load(Ordering::SeqCst), 0, "known outcomes disarm");
    }

    /// A store that counts its reads and writes; its feeds are the test's, or the store's.
    #[derive(Debug, Clone)]
    struct Counted(
        MemoryLocker,
        Arc<[AtomicU32; 2]>,
        Option<crate::backend::Feeds<u64>>,
    );

    impl Backend for Counted {
        type Version = u64;

        fn is_newer(&self, version: &u64, than: &u64) -> Option<bool> {
            self.0.is_newer(version, than)
        }

        async fn read(&self, name: &str) -> Result<Option<Record<u64>>, Error> {
            self.1[0].fetch_add(1, Ordering::SeqCst);
            self.0.read(name).await
        }

        async fn write(
            &self,
            name: &str,
            expected: Option<&u64>,
            state: &LockState,
        ) -> Result<Written<u64>, Error> {
            self.1[1].fetch_add(1, Ordering::SeqCst);
            self.0.write(name, expected, state).await
        }

        async fn read_all(&self) -> Result<crate::backend::StoredStates, Error> {
            self.0.read_all().await
        }

        fn changes(&self, name: &str) -> Option<crate::backend::Changes<u64>> {
            match &self.2 {
                Some(feeds) => Some(feeds.subscribe(name, |_| None)),
                None => self.0.changes(name),
            }
        }
    }

    #[tokio::test]
    async fn a_write_that_lost_a_race_decides_again_on_the_feed_without_a_read() {
        let counts = Arc::new([AtomicU32::new(0), AtomicU32::new(0)]);
        let store = Counted(MemoryLocker::new(), Arc::clone(&counts), None);
        let reads = || counts[0].load(Ordering::SeqCst);
        let ran = Arc::new(AtomicU32::new(0));
        let write =
            |start, view, tag| compare_and_swap(&store, "x", start, view, write_tag(tag, &ran));
        write(Start::Known(None), None, "a").await.unwrap();
        let stale = store.0.read("x").await.unwrap();
        write(Start::Known(stale.clone()), None, "b").await.unwrap();
        // A writer that still knows version 1 loses the race to "b"; the lock's feed shows the
        // winner, and the writer decides again on that, reading nothing.
        let feed = store.changes("x").unwrap();
        let swapped = write(Start::Known(stale.clone()), Some(&feed), "c").await;
        let Ok(Swapped::Stored { version, state, .. }) = swapped else {
            panic!("stored after one conflict")
        };
        assert_eq!((version, state.tags.len()), (3, 3));
        assert_eq!(reads(), 0, "no read");
        // Without a feed, the conflict costs a read.
        write(Start::Known(stale), None, "d").await.unwrap();
        assert_eq!(reads(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_feed_that_lags_behind_the_refused_write_is_not_decided_on() {
        let counts = Arc::new([AtomicU32::new(0), AtomicU32::new(0)]);
        let feeds = crate::backend::Feeds::new();
        let store = Counted(
            MemoryLocker::new(),
            Arc::clone(&counts),
            Some(feeds.clone()),
        );
        let ran = Arc::new(AtomicU32::new(0));
        for tag in ["a", "b", "c"] {
            let start = Start::Known(store.0.read("x").await.unwrap());
            compare_and_swap(&store.0, "x", start, None, write_tag(tag, &ran))
                .await
                .unwrap();
        }
        // The feed still shows version 1 (its watch resumes, replaying what it missed); a
        // writer that knows version 2 loses the race to version 3.
        let feed = store.changes("x").unwrap();
        let first = Record::new(LockState::empty("x"), 1);
        feeds.publish("x", Snapshot::Present(first));
        let known = store
            .0
            .read("x")
            .await
            .unwrap()
            .map(|r| Record::new(r.state, 2));
        let started = Instant::now();
        let swapped = compare_and_swap(
            &store,
            "x",
            Start::Known(known),
            Some(&feed),
            write_tag("d", &ran),
        )
        .await;
        let Ok(Swapped::Stored { version, state, .. }) = swapped else {
            panic!("stored after one conflict")
        };
        // Not decided on version 1 (which would have conflicted again): read, after waiting
        // for the feed to catch up; two writes, the refused one and this.
        assert_eq!((version, state.tags.len()), (4, 4));
        let [reads, writes] = &*counts;
        assert_eq!(reads.load(Ordering::SeqCst), 1);
        assert_eq!(writes.load(Ordering::SeqCst), 2);
        assert_eq!(started.elapsed(), VIEW_WAIT);
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
            None,
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
