//! How a [`KubeLocker`](super::KubeLocker) learns that its locks changed: one watch of the namespace's lock
//! ConfigMaps (the `lockheed/lock` label), shared by every waiter and held lock of the locker
//! and its clones, so that 10,000 locks cost one watch. The watch also keeps every lock's
//! latest record, so that a first look at a lock needs no request.
//!
//! Where a namespace-wide watch is forbidden (RBAC restricted to some `resourceNames`), each
//! lock with subscribers gets a watch of its own ConfigMap; where that is forbidden too,
//! waiters poll. kube-lock's format labels nothing, so its locks are always watched one by one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::keys::LOCK_LABEL;
use super::objects::{ConfigMapVersion, Objects};
use crate::backend::{Changes, Feeds, Record, Snapshot, Source};

/// How the locks are watched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// One watch of every lock ConfigMap of the namespace.
    Namespace,
    /// One watch per lock with subscribers.
    PerLock,
    /// No watch is allowed: waiters poll.
    Forbidden,
}

/// The watches of one [`KubeLocker`](super::KubeLocker) and its clones.
#[derive(Clone)]
pub(super) struct Watches {
    feeds: Feeds<ConfigMapVersion>,
    state: Arc<Mutex<State>>,
}

struct State {
    mode: Mode,
    /// The running watcher, while any lock has subscribers.
    running: Weak<Running>,
    /// Which start of the watcher `running` is (a watcher being dropped must not clear what
    /// its successor set).
    generation: u64,
    commands: Option<mpsc::UnboundedSender<Command>>,
    /// Every lock of the namespace by name, as last listed or watched (namespace mode, once
    /// the first list is complete).
    cache: HashMap<String, Record<ConfigMapVersion>>,
    synced: bool,
    /// The watches of single locks (per-lock mode), by lock name.
    single: HashMap<String, Abort>,
    /// Records this process read a moment ago, by lock name, for the attempt that follows
    /// (a caller that looks before it takes): each is used once, and only while fresh.
    recent: HashMap<String, (Snapshot<ConfigMapVersion>, Instant)>,
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
struct Running {
    task: Abort,
    state: Arc<Mutex<State>>,
    generation: u64,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.0.abort();
        let mut state = lock(&self.state);
        if state.generation == self.generation {
            state.commands = None;
            state.cache.clear();
            state.synced = false;
            state.single.clear();
        }
    }
}

/// One lock's share of the watcher: dropped with the lock's feed.
struct Subscription {
    name: String,
    commands: mpsc::UnboundedSender<Command>,
    running: Option<Arc<Running>>,
}

impl Drop for Subscription {
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

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Watches {
    /// Watches for a locker whose locks can be selected by their label (`namespace_wide`), or
    /// must be watched one by one.
    pub(super) fn new(namespace_wide: bool) -> Self {
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
            })),
        }
    }

    /// How many watch streams are open now.
    pub(super) fn active(&self) -> usize {
        let state = lock(&self.state);
        match state.mode {
            _ if state.running.strong_count() == 0 => 0,
            Mode::Namespace => 1,
            Mode::PerLock => state.single.len(),
            Mode::Forbidden => 0,
        }
    }

    /// What the namespace watch knows of lock `name` (see `Backend::known`).
    /// What is known of lock `name` without a request (see `Backend::known`): the namespace
    /// watch's view while it runs, or else a record this process read a moment ago.
    pub(super) fn known(&self, name: &str) -> Snapshot<ConfigMapVersion> {
        let mut state = lock(&self.state);
        let recent = state.recent.remove(name);
        let current =
            state.mode == Mode::Namespace && state.synced && state.running.strong_count() > 0;
        match (current, state.cache.get(name), recent) {
            (true, Some(record), _) => Snapshot::Present(record.clone()),
            (true, None, _) => Snapshot::Absent,
            (false, _, Some((seen, at))) if at.elapsed() < RECENT => seen,
            _ => Snapshot::Unknown,
        }
    }

    /// Remembers what this process just read of lock `name` (`None`: not stored), for the
    /// attempt that may follow.
    pub(super) fn read(&self, name: &str, record: Option<&Record<ConfigMapVersion>>) {
        let seen = record.map_or(Snapshot::Absent, |r| Snapshot::Present(r.clone()));
        let mut state = lock(&self.state);
        state.recent.retain(|_, (_, at)| at.elapsed() < RECENT);
        state.recent.insert(name.to_owned(), (seen, Instant::now()));
    }

    /// The changes of lock `name` if the namespace watch runs already (joining it costs no
    /// request); `None` otherwise.
    pub(super) fn watching(
        &self,
        objects: &Objects,
        name: &str,
    ) -> Option<Changes<ConfigMapVersion>> {
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
    pub(super) fn changes(
        &self,
        objects: &Objects,
        name: &str,
    ) -> Option<Changes<ConfigMapVersion>> {
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
    fn join(&self, objects: &Objects) -> (Arc<Running>, mpsc::UnboundedSender<Command>) {
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
    /// the one known is ignored.
    pub(super) fn saw(&self, name: &str, record: &Record<ConfigMapVersion>) {
        let mut state = lock(&self.state);
        // A read before this change is not a starting point any more.
        state.recent.remove(name);
        if state.mode == Mode::Forbidden {
            // The feeds said to poll: nothing may replace that.
            return;
        }
        if state.synced {
            if let Some(known) = state.cache.get(name)
                && newer(&known.version, &record.version)
            {
                return;
            }
            state.cache.insert(name.to_owned(), record.clone());
        }
        // Published under the state's lock, so that a change of mode comes before or after.
        self.feeds.publish(name, Snapshot::Present(record.clone()));
    }

    fn publish_known(&self, state: &State, name: &str) {
        if state.mode == Mode::Namespace && state.synced {
            self.feeds.publish(
                name,
                state
                    .cache
                    .get(name)
                    .map_or(Snapshot::Absent, |r| Snapshot::Present(r.clone())),
            );
        }
    }

    /// Watches lock `name`'s ConfigMap alone (per-lock mode).
    fn watch_single(&self, objects: &Objects, state: &mut State, name: &str) {
        let task = tokio::spawn(watch_single(objects.clone(), self.clone(), name.to_owned()));
        state
            .single
            .insert(name.to_owned(), Abort(task.abort_handle()));
    }

    /// The namespace watch is forbidden: watch each lock alone from now on.
    fn fall_back(&self, objects: &Objects) {
        let mut state = lock(&self.state);
        state.mode = Mode::PerLock;
        state.cache.clear();
        state.synced = false;
        for name in self.feeds.subscribed() {
            self.watch_single(objects, &mut state, &name);
        }
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

/// Whether resourceVersion `a` is newer than `b` (when both are numbers, as etcd's are; the
/// API treats them as opaque, so anything else counts as not newer).
fn newer(a: &ConfigMapVersion, b: &ConfigMapVersion) -> bool {
    match (
        a.resource_version().and_then(|v| v.parse::<u64>().ok()),
        b.resource_version().and_then(|v| v.parse::<u64>().ok()),
    ) {
        (Some(a), Some(b)) => a > b,
        _ => false,
    }
}

/// The watcher task: the namespace watch (or, after a fall-back, the single watches it
/// starts), and the feeds' comings and goings.
async fn watch(objects: Objects, watches: Watches, mut commands: mpsc::UnboundedReceiver<Command>) {
    let config = watcher::Config::default().labels(LOCK_LABEL);
    let mut stream =
        std::pin::pin!(watcher::watcher(objects.api.clone(), config).default_backoff());
    let mut listing: Option<HashMap<String, Record<ConfigMapVersion>>> = None;
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
                        namespace = %objects.namespace, error = %err,
                        "cannot watch the namespace's lock ConfigMaps (RBAC needs list and watch on \
                         all configmaps); watching each lock's ConfigMap instead"
                    );
                    watches.fall_back(&objects);
                }
                // The watcher resumes by itself (relisting after a 410), with backoff; until
                // then waiters keep what they know, and the relist tells them what changed.
                Some(Err(err)) => {
                    tracing::debug!(error = %err, "the namespace watch was interrupted");
                }
                None => return,
            },
        }
    }
}

/// Applies one event of the namespace watch to the cache and the feeds.
fn on_event(
    objects: &Objects,
    watches: &Watches,
    listing: &mut Option<HashMap<String, Record<ConfigMapVersion>>>,
    event: Event<ConfigMap>,
) {
    match event {
        Event::Init => *listing = Some(HashMap::new()),
        Event::InitApply(cm) => {
            if let (Some(listing), Some((name, Ok(record)))) =
                (listing.as_mut(), decode(objects, cm))
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
        Event::Apply(cm) => match decode(objects, cm) {
            Some((name, Ok(record))) => watches.saw(&name, &record),
            Some((name, Err(_))) => {
                // Unreadable: waiters read it themselves, and get the error that names it.
                lock(&watches.state).cache.remove(&name);
                watches.feeds.publish(&name, Snapshot::Unknown);
            }
            None => {}
        },
        Event::Delete(cm) => {
            if let Some(name) = objects.lock_name(&cm) {
                lock(&watches.state).cache.remove(&name);
                watches.feeds.publish(&name, Snapshot::Absent);
            }
        }
    }
}

fn decode(
    objects: &Objects,
    cm: ConfigMap,
) -> Option<(
    String,
    Result<Record<ConfigMapVersion>, crate::error::Error>,
)> {
    let name = objects.lock_name(&cm)?;
    let record = objects.decode(&name, cm);
    Some((name, record))
}

/// Watches lock `name`'s ConfigMap alone and publishes what it sees.
async fn watch_single(objects: Objects, watches: Watches, name: String) {
    let object = objects.object_name(&name);
    let mut stream =
        std::pin::pin!(watcher::watch_object(objects.api.clone(), &object).default_backoff());
    while let Some(item) = stream.next().await {
        let snapshot = match item {
            Ok(Some(cm)) => objects
                .decode(&name, cm)
                .map_or(Snapshot::Unknown, Snapshot::Present),
            Ok(None) => Snapshot::Absent,
            Err(err) if is_forbidden(&err) => {
                tracing::warn!(
                    lock = %name, error = %err,
                    "cannot watch lock ConfigMaps (RBAC needs list and watch on configmaps); \
                     waiters poll instead"
                );
                watches.forbid();
                return;
            }
            Err(err) => {
                tracing::debug!(lock = %name, error = %err, "the watch of the lock was interrupted");
                continue;
            }
        };
        watches.feeds.publish(&name, snapshot);
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
