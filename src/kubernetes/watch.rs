//! How a locker of Kubernetes objects ([`KubeLocker`](crate::KubeLocker)'s ConfigMaps,
//! [`LeaseLocker`](crate::LeaseLocker)'s Leases) learns that its locks changed: one watch of
//! the namespace's lock objects (ConfigMaps with the `lockheed/lock` label, or every Lease),
//! shared by every waiter and held lock of the locker and its clones, so that 10,000 locks
//! cost one watch. The watch also keeps every lock's latest record, so that a first look at a
//! lock needs no request.
//!
//! Where a namespace-wide watch is forbidden (RBAC restricted to some `resourceNames`), each
//! lock with subscribers gets a watch of its own object; where that is forbidden too, waiters
//! poll. kube-lock's format labels nothing, so its locks are always watched one by one.
//!
//! A watch that fails resumes by itself, after a backoff (100 ms, doubling while it keeps
//! failing). Meanwhile its locks' feeds say so ([`Snapshot::Interrupted`]), and their waiters read the locks themselves
//! until it delivers again: a waiter handed a lock while its watch is down sees it at its next
//! read, not when the watch comes back.
//!
//! What is watched, and how an object is read as a lock's record, is a [`Kept`]: the only
//! thing a locker of another kind of object implements to share this.

use std::collections::{HashMap, HashSet};
use std::fmt::Debug;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use futures::StreamExt;
use kube::api::{Api, ListParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::backend::{Changes, Feeds, Record, Snapshot, Source};
use crate::error::Error;

/// The objects a locker keeps its locks in, one per lock, as its watch sees them.
pub(crate) trait Kept: Clone + Send + Sync + 'static {
    /// The kind of object (ConfigMap, Lease).
    type Object: kube::Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + serde::Serialize
        + Debug
        + Send
        + Sync
        + 'static;
    /// What a write compares against (the object as read).
    type Version: Clone + Send + Sync + 'static;

    /// The API of the locks' namespace.
    fn api(&self) -> &Api<Self::Object>;
    /// The locks' namespace, for messages.
    fn namespace(&self) -> &str;
    /// The object name of lock `name`.
    fn object_name(&self, name: &str) -> String;
    /// The lock an object holds, by name (`None`: not one of this locker's).
    fn lock_name(&self, object: &Self::Object) -> Option<String>;
    /// Lock `name`'s object, for messages: `namespace/object-name`.
    fn object(&self, name: &str) -> String {
        format!("{}/{}", self.namespace(), self.object_name(name))
    }
    /// Lock `name`'s record, read from its object (without its `managedFields`).
    fn decode(&self, name: &str, object: Self::Object) -> Result<Record<Self::Version>, Error>;
    /// An object as stored, as a version to compare the next write against (for an object
    /// that holds no valid lock).
    fn version(object: Self::Object) -> Self::Version;
    /// What the namespace watch selects (a label, or every object of the kind).
    fn selector(&self) -> watcher::Config;
    /// What a listing of the namespace's locks asks for: by default, every object of the kind.
    fn list_params(&self) -> ListParams {
        ListParams::default()
    }
    /// Whether a listed object holds a lock of this locker (beside having a lock's name): by
    /// default, every one does.
    fn is_lock(&self, _object: &Self::Object) -> bool {
        true
    }
    /// The resourceVersion a version was read at.
    fn resource_version(version: &Self::Version) -> Option<&str>;
    /// The resource, plural, for messages (`configmaps`, `leases`).
    const RESOURCE: &'static str;
}

/// How the locks are watched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// One watch of every lock object of the namespace.
    Namespace,
    /// One watch per lock with subscribers.
    PerLock,
    /// No watch is allowed: waiters poll.
    Forbidden,
}

/// The watches of one locker and its clones.
pub(crate) struct Watches<O: Kept> {
    feeds: Feeds<O::Version>,
    state: Arc<Mutex<State<O::Version>>>,
}

impl<O: Kept> Clone for Watches<O> {
    fn clone(&self) -> Self {
        Self {
            feeds: self.feeds.clone(),
            state: Arc::clone(&self.state),
        }
    }
}

struct State<V> {
    mode: Mode,
    /// The running watcher, while any lock has subscribers.
    running: Weak<Running<V>>,
    /// Which start of the watcher `running` is (a watcher being dropped must not clear what
    /// its successor set).
    generation: u64,
    commands: Option<mpsc::UnboundedSender<Command>>,
    /// Every lock of the namespace by name, as last listed or watched (namespace mode, once
    /// the first list is complete).
    cache: HashMap<String, Record<V>>,
    synced: bool,
    /// The watches of single locks (per-lock mode), by lock name.
    single: HashMap<String, Abort>,
    /// Records this process read a moment ago, by lock name, for the attempt that follows
    /// (a caller that looks before it takes): each is used once, and only while fresh.
    recent: HashMap<String, (Snapshot<V>, Instant)>,
    /// The namespace watch failed and has not delivered since: its view may be stale.
    interrupted: bool,
    /// The locks whose own watch (per-lock mode) failed and has not delivered since.
    interrupted_locks: HashSet<String>,
}

impl<V> State<V> {
    /// Whether the watch that feeds lock `name` is interrupted.
    fn is_interrupted(&self, name: &str) -> bool {
        self.interrupted || self.interrupted_locks.contains(name)
    }
}

/// How long a record read by this process is trusted as a starting point without a watch.
const RECENT: Duration = Duration::from_secs(1);

enum Command {
    /// A lock's feed was created: tell it what is known.
    Subscribe(String),
    /// A lock's feed is gone.
    Unsubscribe(String),
}

/// Aborts a task when dropped.
struct Abort(AbortHandle);

impl Drop for Abort {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The watcher task, shared by the feeds it serves; it stops with the last of them.
struct Running<V> {
    task: Abort,
    state: Arc<Mutex<State<V>>>,
    generation: u64,
}

impl<V> Drop for Running<V> {
    fn drop(&mut self) {
        self.task.0.abort();
        let mut state = lock(&self.state);
        if state.generation == self.generation {
            state.commands = None;
            state.cache.clear();
            state.synced = false;
            state.single.clear();
            state.interrupted = false;
            state.interrupted_locks.clear();
        }
    }
}

/// One lock's share of the watcher: dropped with the lock's feed.
struct Subscription<V: Send + Sync + 'static> {
    name: String,
    commands: mpsc::UnboundedSender<Command>,
    running: Option<Arc<Running<V>>>,
}

impl<V: Send + Sync + 'static> Drop for Subscription<V> {
    fn drop(&mut self) {
        let _ = self
            .commands
            .send(Command::Unsubscribe(std::mem::take(&mut self.name)));
        // The last share keeps the namespace watch a while longer: a process that takes locks
        // again and again (or takes one after waiting) keeps its view of the locks instead of
        // listing them all again each time.
        if let Some(running) = self.running.take()
            && Arc::strong_count(&running) == 1
            && lock(&running.state).mode == Mode::Namespace
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(async move {
                tokio::time::sleep(LINGER).await;
                drop(running);
            });
        }
    }
}

/// How long the namespace watch outlives the last lock that needed it.
const LINGER: Duration = Duration::from_secs(30);

fn lock<V>(state: &Mutex<State<V>>) -> MutexGuard<'_, State<V>> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<O: Kept> Watches<O> {
    /// Watches for a locker whose locks can be selected together (`namespace_wide`), or
    /// must be watched one by one.
    pub(crate) fn new(namespace_wide: bool) -> Self {
        Self {
            feeds: Feeds::new(),
            state: Arc::new(Mutex::new(State {
                mode: if namespace_wide {
                    Mode::Namespace
                } else {
                    Mode::PerLock
                },
                running: Weak::new(),
                generation: 0,
                commands: None,
                cache: HashMap::new(),
                synced: false,
                single: HashMap::new(),
                recent: HashMap::new(),
                interrupted: false,
                interrupted_locks: HashSet::new(),
            })),
        }
    }

    /// How many watch streams are open now.
    pub(crate) fn active(&self) -> usize {
        let state = lock(&self.state);
        match state.mode {
            _ if state.running.strong_count() == 0 => 0,
            Mode::Namespace => 1,
            Mode::PerLock => state.single.len(),
            Mode::Forbidden => 0,
        }
    }

    /// What is known of lock `name` without a request (see `Backend::known`): the namespace
    /// watch's view while it runs, or else a record this process read a moment ago.
    pub(crate) fn known(&self, name: &str) -> Snapshot<O::Version> {
        let mut state = lock(&self.state);
        let recent = state.recent.remove(name);
        let current = state.mode == Mode::Namespace
            && state.synced
            && !state.interrupted
            && state.running.strong_count() > 0;
        match (current, state.cache.get(name), recent) {
            (true, Some(record), _) => Snapshot::Present(record.clone()),
            (true, None, _) => Snapshot::Absent,
            (false, _, Some((seen, at))) if at.elapsed() < RECENT => seen,
            _ => Snapshot::Unknown,
        }
    }

    /// Remembers what this process just read of lock `name` (`None`: not stored), for the
    /// attempt that may follow.
    pub(crate) fn read(&self, name: &str, record: Option<&Record<O::Version>>) {
        let seen = record.map_or(Snapshot::Absent, |r| Snapshot::Present(r.clone()));
        let mut state = lock(&self.state);
        state.recent.retain(|_, (_, at)| at.elapsed() < RECENT);
        state.recent.insert(name.to_owned(), (seen, Instant::now()));
    }

    /// The changes of lock `name` if the namespace watch runs already (joining it costs no
    /// request); `None` otherwise.
    pub(crate) fn watching(&self, objects: &O, name: &str) -> Option<Changes<O::Version>> {
        let running = {
            let state = lock(&self.state);
            state.mode == Mode::Namespace && state.running.strong_count() > 0
        };
        if running {
            self.changes(objects, name)
        } else {
            None
        }
    }

    /// The changes of lock `name`, fed by the locker's watch (started if needed); `None` when
    /// watching is forbidden.
    pub(crate) fn changes(&self, objects: &O, name: &str) -> Option<Changes<O::Version>> {
        if lock(&self.state).mode == Mode::Forbidden {
            return None;
        }
        Some(self.feeds.subscribe(name, |_| {
            let (running, commands) = self.join(objects);
            let _ = commands.send(Command::Subscribe(name.to_owned()));
            Some(Source::share(Subscription {
                name: name.to_owned(),
                commands,
                running: Some(running),
            }))
        }))
    }

    /// The running watcher, started if it is not.
    fn join(&self, objects: &O) -> (Arc<Running<O::Version>>, mpsc::UnboundedSender<Command>) {
        let mut state = lock(&self.state);
        if let (Some(running), Some(commands)) = (state.running.upgrade(), &state.commands) {
            return (running, commands.clone());
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(watch(objects.clone(), self.clone(), rx));
        state.generation += 1;
        // What a previous watcher knew is not kept up to date any more.
        state.cache.clear();
        state.synced = false;
        state.single.clear();
        state.interrupted = false;
        state.interrupted_locks.clear();
        let running = Arc::new(Running {
            task: Abort(task.abort_handle()),
            state: Arc::clone(&self.state),
            generation: state.generation,
        });
        state.running = Arc::downgrade(&running);
        state.commands = Some(tx.clone());
        (running, tx)
    }

    /// Tells the lock's waiters what this process just wrote (or read), without waiting for
    /// the watch: the watch's own event follows and changes nothing. An older record than
    /// the one known is ignored; while the lock's watch is interrupted, its feed keeps saying
    /// so (a waiter that stopped reading would miss what others write).
    pub(crate) fn saw(&self, name: &str, record: &Record<O::Version>) {
        let mut state = lock(&self.state);
        // A read before this change is not a starting point any more.
        state.recent.remove(name);
        if state.mode == Mode::Forbidden {
            // The feeds said to poll: nothing may replace that.
            return;
        }
        if state.synced {
            if let Some(known) = state.cache.get(name)
                && newer::<O>(&known.version, &record.version)
            {
                return;
            }
            state.cache.insert(name.to_owned(), record.clone());
        }
        if state.is_interrupted(name) {
            return;
        }
        // Published under the state's lock, so that a change of mode comes before or after.
        self.feeds.publish(name, Snapshot::Present(record.clone()));
    }

    fn publish_known(&self, state: &State<O::Version>, name: &str) {
        if state.is_interrupted(name) {
            self.feeds.publish(name, Snapshot::Interrupted);
        } else if state.mode == Mode::Namespace && state.synced {
            self.feeds.publish(
                name,
                state
                    .cache
                    .get(name)
                    .map_or(Snapshot::Absent, |r| Snapshot::Present(r.clone())),
            );
        }
    }

    /// Watches lock `name`'s object alone (per-lock mode).
    fn watch_single(&self, objects: &O, state: &mut State<O::Version>, name: &str) {
        let task = tokio::spawn(watch_single(objects.clone(), self.clone(), name.to_owned()));
        state
            .single
            .insert(name.to_owned(), Abort(task.abort_handle()));
    }

    /// The namespace watch is forbidden: watch each lock alone from now on.
    fn fall_back(&self, objects: &O) {
        let mut state = lock(&self.state);
        state.mode = Mode::PerLock;
        state.cache.clear();
        state.synced = false;
        for name in self.feeds.subscribed() {
            self.watch_single(objects, &mut state, &name);
        }
    }

    /// The namespace watch failed: until it delivers again, every feed says so.
    fn interrupt(&self) {
        let mut state = lock(&self.state);
        if state.mode != Mode::Namespace || state.interrupted {
            return;
        }
        state.interrupted = true;
        for name in self.feeds.subscribed() {
            self.feeds.publish(&name, Snapshot::Interrupted);
        }
    }

    /// The namespace watch delivers again: every feed shows what it knows (the events it
    /// missed follow in order).
    fn resume(&self) {
        let mut state = lock(&self.state);
        if !state.interrupted {
            return;
        }
        state.interrupted = false;
        for name in self.feeds.subscribed() {
            self.publish_known(&state, &name);
        }
    }

    /// Publishes what lock `name`'s own watch (per-lock mode) saw, or that it failed.
    fn publish_single(&self, name: &str, snapshot: Snapshot<O::Version>) {
        let mut state = lock(&self.state);
        if matches!(snapshot, Snapshot::Interrupted) {
            state.interrupted_locks.insert(name.to_owned());
        } else {
            state.interrupted_locks.remove(name);
        }
        self.feeds.publish(name, snapshot);
    }

    /// No watch at all is allowed: every feed tells its subscribers to poll.
    fn forbid(&self) {
        let mut state = lock(&self.state);
        state.mode = Mode::Forbidden;
        state.single.clear();
        drop(state);
        for name in self.feeds.subscribed() {
            self.feeds.publish(&name, Snapshot::Unavailable);
        }
    }
}

/// How a failed watch is resumed: after 100 ms, then doubling (with jitter) up to 30 s while
/// it keeps failing, and from 100 ms again once it delivers. kube's default backoff starts at
/// 0.8 s (client-go's reflector's), which leaves a lock's waiters reading the lock for a second
/// or more after every transient failure of the watch, one request each where the resumed
/// watch costs one for the process.
fn resume_backoff() -> watcher::ExponentialBackoff {
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(30))
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .into()
}

/// Whether resourceVersion `a` is newer than `b` (when both are numbers, as etcd's are; the
/// API treats them as opaque, so anything else counts as not newer).
fn newer<O: Kept>(a: &O::Version, b: &O::Version) -> bool {
    is_newer::<O>(a, b).unwrap_or(false)
}

/// Whether resourceVersion `a` is newer than `b`, when both are numbers (etcd's revisions,
/// which kube-apiserver passes on; the API calls them opaque, so nothing else is ordered).
pub(crate) fn is_newer<O: Kept>(a: &O::Version, b: &O::Version) -> Option<bool> {
    match (
        O::resource_version(a).and_then(|v| v.parse::<u64>().ok()),
        O::resource_version(b).and_then(|v| v.parse::<u64>().ok()),
    ) {
        (Some(a), Some(b)) => Some(a > b),
        _ => None,
    }
}

/// The watcher task: the namespace watch (or, after a fall-back, the single watches it
/// starts), and the feeds' comings and goings.
async fn watch<O: Kept>(
    objects: O,
    watches: Watches<O>,
    mut commands: mpsc::UnboundedReceiver<Command>,
) {
    let config = objects.selector();
    let mut stream =
        std::pin::pin!(watcher::watcher(objects.api().clone(), config).backoff(resume_backoff()));
    let mut listing: Option<HashMap<String, Record<O::Version>>> = None;
    loop {
        let namespace = lock(&watches.state).mode == Mode::Namespace;
        tokio::select! {
            command = commands.recv() => match command {
                Some(Command::Subscribe(name)) => {
                    let mut state = lock(&watches.state);
                    match state.mode {
                        Mode::Namespace => watches.publish_known(&state, &name),
                        Mode::PerLock => watches.watch_single(&objects, &mut state, &name),
                        Mode::Forbidden => watches.feeds.publish(&name, Snapshot::Unavailable),
                    }
                }
                Some(Command::Unsubscribe(name)) => {
                    if !watches.feeds.is_subscribed(&name) {
                        lock(&watches.state).single.remove(&name);
                    }
                }
                None => return,
            },
            event = stream.next(), if namespace => match event {
                Some(Ok(event)) => on_event(&objects, &watches, &mut listing, event),
                Some(Err(err)) if is_forbidden(&err) => {
                    tracing::warn!(
                        namespace = %objects.namespace(), error = %err,
                        "cannot watch the namespace's lock objects (RBAC needs list and watch on \
                         all {}); watching each lock's object instead", O::RESOURCE
                    );
                    watches.fall_back(&objects);
                }
                // The watcher resumes by itself (relisting after a 410), with backoff; until
                // then waiters read the locks themselves, and the relist or the events missed
                // tell them what changed.
                Some(Err(err)) => {
                    tracing::debug!(error = %err, "the namespace watch was interrupted");
                    watches.interrupt();
                }
                None => return,
            },
        }
    }
}

/// Applies one event of the namespace watch to the cache and the feeds.
fn on_event<O: Kept>(
    objects: &O,
    watches: &Watches<O>,
    listing: &mut Option<HashMap<String, Record<O::Version>>>,
    event: Event<O::Object>,
) {
    if !matches!(event, Event::Init | Event::InitApply(_)) {
        watches.resume();
    }
    match event {
        Event::Init => *listing = Some(HashMap::new()),
        Event::InitApply(object) => {
            if let (Some(listing), Some((name, Ok(record)))) =
                (listing.as_mut(), decode(objects, object))
            {
                listing.insert(name, record);
            }
        }
        Event::InitDone => {
            let mut state = lock(&watches.state);
            state.cache = listing.take().unwrap_or_default();
            state.synced = true;
            for name in watches.feeds.subscribed() {
                watches.publish_known(&state, &name);
            }
        }
        Event::Apply(object) => match decode(objects, object) {
            Some((name, Ok(record))) => watches.saw(&name, &record),
            Some((name, Err(_))) => {
                // Unreadable: waiters read it themselves, and get the error that names it.
                lock(&watches.state).cache.remove(&name);
                watches.feeds.publish(&name, Snapshot::Unknown);
            }
            None => {}
        },
        Event::Delete(object) => {
            if let Some(name) = objects.lock_name(&object) {
                lock(&watches.state).cache.remove(&name);
                watches.feeds.publish(&name, Snapshot::Absent);
            }
        }
    }
}

/// A lock's name and its record, or why it cannot be read.
type Decoded<V> = (String, Result<Record<V>, Error>);

fn decode<O: Kept>(objects: &O, object: O::Object) -> Option<Decoded<O::Version>> {
    let name = objects.lock_name(&object)?;
    let record = objects.decode(&name, object);
    Some((name, record))
}

/// Watches lock `name`'s object alone and publishes what it sees.
async fn watch_single<O: Kept>(objects: O, watches: Watches<O>, name: String) {
    let object = objects.object_name(&name);
    let mut stream = std::pin::pin!(
        watcher::watch_object(objects.api().clone(), &object).backoff(resume_backoff())
    );
    while let Some(item) = stream.next().await {
        let snapshot = match item {
            Ok(Some(object)) => objects
                .decode(&name, object)
                .map_or(Snapshot::Unknown, Snapshot::Present),
            Ok(None) => Snapshot::Absent,
            Err(err) if is_forbidden(&err) => {
                tracing::warn!(
                    lock = %name, error = %err,
                    "cannot watch lock objects (RBAC needs list and watch on {}); waiters poll \
                     instead", O::RESOURCE
                );
                watches.forbid();
                return;
            }
            Err(err) => {
                tracing::debug!(lock = %name, error = %err, "the watch of the lock was interrupted");
                Snapshot::Interrupted
            }
        };
        watches.publish_single(&name, snapshot);
    }
}

fn is_forbidden(err: &watcher::Error) -> bool {
    use kube::runtime::watcher::Error as W;
    let status =
        |e: &kube::Error| matches!(e, kube::Error::Api(s) if s.code == 403 || s.code == 401);
    match err {
        W::InitialListFailed(e) | W::WatchStartFailed(e) | W::WatchFailed(e) => status(e),
        W::WatchError(status) => status.code == 403,
        W::NoResourceVersion => false,
    }
}
