//! Change feeds: how waiters learn that a lock changed, without polling.
//!
//! A backend that can observe changes (a Kubernetes watch, its own writes) keeps one feed per
//! lock, shared by every waiter of that lock in the process: a thousand waiters on one lock
//! cost one watch. The feed also queues those waiters, so that only one of them at a time
//! competes with other processes for the lock.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use tokio::sync::{OwnedMutexGuard, watch};
use tokio::task::AbortHandle;

use super::record::Record;

/// What a feed knows about a lock.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Snapshot<V> {
    /// Nothing yet, or something the feed could not read: waiters read the lock themselves.
    Unknown,
    /// The lock is not stored.
    Absent,
    /// The lock's latest record.
    Present(Record<V>),
    /// The backend cannot send changes (a watch the caller has no right to): waiters poll.
    Unavailable,
    /// The watch that feeds the lock failed, and resumes by itself (after a backoff): what it
    /// showed may be stale, and changes may come late. Waiters read the lock at once, and
    /// keep reading it (with backoff, up to their retry interval) until the feed publishes
    /// again; a write that loses a race reads the lock.
    Interrupted,
}

struct FeedShared<V> {
    name: String,
    tx: watch::Sender<Snapshot<V>>,
    /// The waiters of this lock in this process take turns: a fair (FIFO) queue.
    turn: Arc<tokio::sync::Mutex<()>>,
    /// What feeds it (a task, a share of a watch), dropped when the last subscriber goes.
    source: Mutex<Option<Source>>,
    registry: Weak<Registry<V>>,
}

/// The feeds by lock name. Publishing goes through an entry's sender, never through a share of
/// the feed: a publisher holding the last share would drop the feed (and its source) wherever
/// it publishes from, perhaps with a lock held that the source's drop takes as well.
type Registry<V> = Mutex<HashMap<String, Entry<V>>>;

struct Entry<V> {
    shared: Weak<FeedShared<V>>,
    tx: watch::Sender<Snapshot<V>>,
}

impl<V> Entry<V> {
    fn is_alive(&self) -> bool {
        self.shared.strong_count() > 0
    }
}

/// What keeps a feed's source running: a task that observes the lock, or a share of
/// something that observes many locks (a watch of a whole namespace). It is dropped when the
/// feed's last subscriber goes: a task is aborted, a share released.
pub struct Source {
    _alive: Box<dyn Send + Sync>,
}

impl Source {
    /// A task that feeds one lock, aborted when nobody subscribes any more.
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed::backend::{Feeds, Snapshot, Source};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let feeds: Feeds<u64> = Feeds::new();
    /// let changes = feeds.subscribe("jobs", |publisher| {
    ///     let task = tokio::spawn(async move {
    ///         publisher.publish(Snapshot::Absent); // then watch the store, publishing changes
    ///     });
    ///     Some(Source::task(task.abort_handle()))
    /// });
    /// # drop(changes);
    /// # }
    /// ```
    #[must_use]
    pub fn task(task: AbortHandle) -> Self {
        struct Abort(AbortHandle);
        impl Drop for Abort {
            fn drop(&mut self) {
                self.0.abort();
            }
        }
        Self {
            _alive: Box::new(Abort(task)),
        }
    }

    /// Anything whose drop releases the source: a share of a watch that feeds many locks,
    /// which stops when its last share is dropped.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use lockheed::backend::{Feeds, Source};
    ///
    /// let feeds: Feeds<u64> = Feeds::new();
    /// let namespace_watch = Arc::new("a watch of every lock"); // stops with its last Arc
    /// let changes = feeds.subscribe("jobs", |_| Some(Source::share(Arc::clone(&namespace_watch))));
    /// assert_eq!(Arc::strong_count(&namespace_watch), 2);
    /// drop(changes);
    /// assert_eq!(Arc::strong_count(&namespace_watch), 1);
    /// ```
    #[must_use]
    pub fn share(share: impl Send + Sync + 'static) -> Self {
        Self {
            _alive: Box::new(share),
        }
    }
}

impl fmt::Debug for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Source")
    }
}

impl<V> Drop for FeedShared<V> {
    fn drop(&mut self) {
        drop(
            self.source
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
        if let Some(registry) = self.registry.upgrade() {
            let mut feeds = registry.lock().unwrap_or_else(PoisonError::into_inner);
            if feeds.get(&self.name).is_some_and(|e| !e.is_alive()) {
                feeds.remove(&self.name);
            }
        }
    }
}

/// A waiter's subscription to the changes of one lock.
pub struct Changes<V> {
    shared: Arc<FeedShared<V>>,
    rx: watch::Receiver<Snapshot<V>>,
}

impl<V> fmt::Debug for Changes<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Changes")
            .field("lock", &self.shared.name)
            .finish_non_exhaustive()
    }
}

impl<V: Clone> Changes<V> {
    /// Waits until the feed publishes something new (returns at once if it did since the last
    /// [`latest`](Self::latest)).
    pub(crate) async fn changed(&mut self) {
        if self.rx.changed().await.is_err() {
            // The publisher is gone with the feed: nothing will ever come.
            std::future::pending::<()>().await;
        }
    }

    /// The newest snapshot, which counts as seen.
    pub(crate) fn latest(&mut self) -> Snapshot<V> {
        self.rx.borrow_and_update().clone()
    }

    /// The newest snapshot, without counting it as seen.
    pub(crate) fn peek(&self) -> Snapshot<V> {
        self.rx.borrow().clone()
    }

    /// Whether the feed's watch is interrupted (see [`Snapshot::Interrupted`]).
    pub(crate) fn is_interrupted(&self) -> bool {
        matches!(*self.rx.borrow(), Snapshot::Interrupted)
    }

    /// Another subscription to the same feed, which has seen what this one has: what a
    /// compare-and-swap follows after a conflict, without marking anything seen for its owner.
    pub(crate) fn follow(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
            rx: self.rx.clone(),
        }
    }

    /// Waits for this waiter's turn among the waiters of the lock in this process.
    pub(crate) async fn turn(&self) -> OwnedMutexGuard<()> {
        Arc::clone(&self.shared.turn).lock_owned().await
    }
}

/// Sends snapshots into a feed; held by the backend's task that observes the lock.
pub struct Publisher<V> {
    shared: Weak<FeedShared<V>>,
    tx: watch::Sender<Snapshot<V>>,
}

impl<V> fmt::Debug for Publisher<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Publisher")
            .field("live", &(self.shared.strong_count() > 0))
            .finish_non_exhaustive()
    }
}

impl<V> Publisher<V> {
    /// Publishes `snapshot` to the lock's waiters. Returns `false` once nobody waits any more
    /// (the observing task should stop).
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed::backend::{Feeds, Snapshot};
    ///
    /// let feeds: Feeds<u64> = Feeds::new();
    /// let mut publisher = None;
    /// let changes = feeds.subscribe("jobs", |p| { publisher = Some(p); None });
    /// let publisher = publisher.unwrap();
    /// assert!(publisher.publish(Snapshot::Absent));
    /// drop(changes); // the last waiter goes
    /// assert!(!publisher.publish(Snapshot::Absent));
    /// ```
    pub fn publish(&self, snapshot: Snapshot<V>) -> bool {
        if self.shared.strong_count() == 0 {
            return false;
        }
        self.tx.send_replace(snapshot);
        true
    }
}

/// The feeds of one backend instance (and its clones), by lock name.
///
/// A backend embeds one, returns [`Feeds::subscribe`] from
/// [`Backend::changes`](super::Backend::changes), and calls [`Feeds::publish`] when it learns of
/// a change by itself.
pub struct Feeds<V> {
    feeds: Arc<Registry<V>>,
}

impl<V> Clone for Feeds<V> {
    fn clone(&self) -> Self {
        Self {
            feeds: Arc::clone(&self.feeds),
        }
    }
}

impl<V> Default for Feeds<V> {
    fn default() -> Self {
        Self {
            feeds: Arc::default(),
        }
    }
}

impl<V> Feeds<V> {
    /// How many locks have a feed now (locks with waiters).
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed::backend::Feeds;
    ///
    /// let feeds: Feeds<u64> = Feeds::new();
    /// let changes = feeds.subscribe("jobs", |_| None);
    /// assert_eq!(feeds.active(), 1);
    /// drop(changes);
    /// assert_eq!(feeds.active(), 0);
    /// ```
    #[must_use]
    pub fn active(&self) -> usize {
        self.feeds
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .filter(|e| e.is_alive())
            .count()
    }
}

impl<V> Feeds<V> {
    /// The locks that have a feed now, by name.
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed::backend::Feeds;
    ///
    /// let feeds: Feeds<u64> = Feeds::new();
    /// let changes = feeds.subscribe("jobs", |_| None);
    /// assert_eq!(feeds.subscribed(), ["jobs"]);
    /// # drop(changes);
    /// ```
    #[must_use]
    pub fn subscribed(&self) -> Vec<String> {
        let feeds = self.feeds.lock().unwrap_or_else(PoisonError::into_inner);
        let mut names: Vec<String> = feeds
            .iter()
            .filter(|(_, e)| e.is_alive())
            .map(|(name, _)| name.clone())
            .collect();
        names.sort();
        names
    }
}

impl<V> Feeds<V> {
    /// Whether lock `name` has a feed now.
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed::backend::Feeds;
    ///
    /// let feeds: Feeds<u64> = Feeds::new();
    /// let changes = feeds.subscribe("jobs", |_| None);
    /// assert!(feeds.is_subscribed("jobs") && !feeds.is_subscribed("other"));
    /// # drop(changes);
    /// ```
    #[must_use]
    pub fn is_subscribed(&self, name: &str) -> bool {
        self.feeds
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .is_some_and(Entry::is_alive)
    }
}

impl<V> fmt::Debug for Feeds<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Feeds")
            .field("active", &self.active())
            .finish()
    }
}

impl<V: Clone + Send + Sync + 'static> Feeds<V> {
    /// No feeds yet.
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed::backend::Feeds;
    ///
    /// let feeds: Feeds<u64> = Feeds::new(); // `u64`: the backend's version type
    /// assert_eq!(feeds.active(), 0);
    /// ```
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Subscribes to lock `name`. The first subscriber creates the feed and calls `start`
    /// with its publisher; `start` may start what observes the lock and return it as a
    /// [`Source`], which is dropped when the last subscriber goes.
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed::backend::Feeds;
    ///
    /// let feeds: Feeds<u64> = Feeds::new();
    /// let mut starts = 0;
    /// let a = feeds.subscribe("jobs", |_| { starts += 1; None }); // would spawn a watch
    /// let b = feeds.subscribe("jobs", |_| { starts += 1; None }); // shares the first one's
    /// assert_eq!((starts, feeds.active()), (1, 1));
    /// # drop((a, b));
    /// ```
    pub fn subscribe(
        &self,
        name: &str,
        start: impl FnOnce(Publisher<V>) -> Option<Source>,
    ) -> Changes<V> {
        let mut feeds = self.feeds.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(shared) = feeds.get(name).and_then(|e| e.shared.upgrade()) {
            let rx = shared.tx.subscribe();
            return Changes { shared, rx };
        }
        let (tx, rx) = watch::channel(Snapshot::Unknown);
        let shared = Arc::new(FeedShared {
            name: name.to_owned(),
            tx,
            turn: Arc::default(),
            source: Mutex::new(None),
            registry: Arc::downgrade(&self.feeds),
        });
        feeds.insert(
            name.to_owned(),
            Entry {
                shared: Arc::downgrade(&shared),
                tx: shared.tx.clone(),
            },
        );
        drop(feeds);
        let source = start(Publisher {
            shared: Arc::downgrade(&shared),
            tx: shared.tx.clone(),
        });
        *shared.source.lock().unwrap_or_else(PoisonError::into_inner) = source;
        Changes { shared, rx }
    }

    /// Publishes `snapshot` to the feed of `name`, if anyone waits for that lock.
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed::backend::{Feeds, LockState, Record, Snapshot};
    ///
    /// let feeds: Feeds<u64> = Feeds::new();
    /// let changes = feeds.subscribe("jobs", |_| None);
    /// // After a successful write of version 7, tell the lock's waiters.
    /// feeds.publish("jobs", Snapshot::Present(Record::new(LockState::empty("jobs"), 7)));
    /// feeds.publish("other", Snapshot::Absent); // nobody waits for it: nothing happens
    /// # drop(changes);
    /// ```
    pub fn publish(&self, name: &str, snapshot: Snapshot<V>) {
        let feeds = self.feeds.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = feeds.get(name).filter(|e| e.is_alive()) {
            // The value replaced is a snapshot: dropping it under the lock runs no other code.
            entry.tx.send_replace(snapshot);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::LockState;

    /// A feed ends where its last subscriber goes, never in a publisher: the watch of a
    /// namespace publishes with its state locked, and a feed's source (a share of that watch)
    /// takes the same lock when it is dropped. A publisher that held the last share for a
    /// moment would deadlock there (a `lockheed run` hung at exit, once in a few CI runs).
    #[test]
    fn a_publisher_never_ends_a_feed() {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        use std::thread::{self, ThreadId};

        struct Witness(ThreadId, Arc<AtomicUsize>);
        impl Drop for Witness {
            fn drop(&mut self) {
                if thread::current().id() != self.0 {
                    self.1.fetch_add(1, Ordering::Relaxed);
                }
            }
        }

        let feeds: Feeds<u64> = Feeds::new();
        let stop = Arc::new(AtomicBool::new(false));
        let publishing = thread::spawn({
            let (feeds, stop) = (feeds.clone(), Arc::clone(&stop));
            move || {
                while !stop.load(Ordering::Relaxed) {
                    feeds.publish("jobs", Snapshot::Absent);
                }
            }
        });
        let elsewhere = Arc::new(AtomicUsize::new(0));
        for _ in 0..50_000 {
            let witness = Witness(thread::current().id(), Arc::clone(&elsewhere));
            drop(feeds.subscribe("jobs", |_| Some(Source::share(witness))));
        }
        stop.store(true, Ordering::Relaxed);
        publishing.join().unwrap();
        assert_eq!(
            elsewhere.load(Ordering::Relaxed),
            0,
            "feeds ended in the publisher"
        );
    }

    #[tokio::test]
    async fn one_feed_per_lock_shared_by_subscribers_and_gone_with_them() {
        let feeds: Feeds<u64> = Feeds::new();
        let mut starts = 0;
        let mut a = feeds.subscribe("x", |_| {
            starts += 1;
            None
        });
        let mut b = feeds.subscribe("x", |_| {
            starts += 1;
            None
        });
        assert_eq!(starts, 1);
        assert_eq!(feeds.active(), 1);
        feeds.publish(
            "x",
            Snapshot::Present(Record::new(LockState::empty("x"), 7)),
        );
        a.changed().await;
        b.changed().await;
        assert!(matches!(a.latest(), Snapshot::Present(r) if r.version == 7));
        drop((a, b));
        assert_eq!(feeds.active(), 0);
        // Publishing to nobody is fine.
        feeds.publish("x", Snapshot::Absent);
    }

    #[tokio::test]
    async fn the_observing_task_stops_with_the_last_subscriber() {
        let feeds: Feeds<u64> = Feeds::new();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
        let changes = feeds.subscribe("x", |publisher| {
            let task = tokio::spawn(async move {
                let _done = done_tx;
                while publisher.publish(Snapshot::Unknown) {
                    tokio::task::yield_now().await;
                }
                std::future::pending::<()>().await;
            });
            Some(Source::task(task.abort_handle()))
        });
        drop(changes);
        // Aborted (or it noticed): the sender half is dropped either way.
        assert!(done_rx.await.is_err());
    }

    #[tokio::test]
    async fn waiters_take_turns_in_order() {
        let feeds: Feeds<u64> = Feeds::new();
        let a = feeds.subscribe("x", |_| None);
        let b = feeds.subscribe("x", |_| None);
        let first = a.turn().await;
        let second = tokio::spawn(async move { b.turn().await });
        tokio::task::yield_now().await;
        assert!(!second.is_finished());
        drop(first);
        second.await.unwrap();
    }
}
