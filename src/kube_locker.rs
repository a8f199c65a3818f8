//! [`KubeLocker`]: locks in ConfigMaps, in Go lockheed's format.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::StreamExt;
use kube::runtime::WatchStreamExt;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, ObjectMeta, PostParams};

use crate::clock::{Clock, SystemClock};
use crate::error::Error;
use crate::feed::{Changes, Feeds, Publisher, Snapshot};
use crate::gotime::GoTime;
use crate::locker::{Locker, Record, Reservation, StoredStates, Written};
use crate::names::dns1123_subdomain_errors;
use crate::state::LockState;

/// The label on every lock's ConfigMap (Go lockheed lists locks with this selector).
pub const LOCK_LABEL: &str = "lockheed/lock";
/// The data key that holds the state document.
pub const STATE_KEY: &str = "lock";
/// The annotation that keeps the fencing counter out of reach of Go clients, which drop the
/// state keys they do not know when they rewrite it.
pub const FENCING_ANNOTATION: &str = "lockheed/fencing-token";
/// The default prefix of lock ConfigMap names.
pub const DEFAULT_PREFIX: &str = "lockheed-";
const RESERVED_BY: &str = "reserved/by";
const RESERVED_EXPIRES: &str = "reserved/expires";
/// kube-apiserver's limit on a ConfigMap's data values.
const MAX_DATA_BYTES: usize = 1024 * 1024;

/// Locks kept in ConfigMaps `lockheed-<name>` of one namespace, readable and writable by Go
/// lockheed v0.5.3 clients at the same time.
///
/// Each lock is one ConfigMap labelled `lockheed/lock`, its state a JSON document in
/// `data["lock"]`. Every write is a compare-and-swap on the resourceVersion that was read, so
/// a concurrent writer's change is never lost: the loser re-reads and decides again. Other data
/// keys, labels and annotations of the ConfigMap are kept as they are, and a ConfigMap that an
/// administrator created without state (to grant RBAC on one name, say) is adopted.
///
/// The fencing counter lives in the state (`fencingToken`) and in the annotation
/// `lockheed/fencing-token`; a Go client rewriting the state drops the former but keeps the
/// annotation, and readers take the larger, so tokens never go backwards.
///
/// A ConfigMap with a live `reserved/by` annotation is being written by a Go client: it counts
/// as busy until the reservation ends, and the reservation is never removed by this crate.
///
/// Waiters of a lock are woken by a watch of its ConfigMap, one watch per lock for all the
/// waiters of this locker and its clones. If the watch is forbidden, they poll instead (and a
/// warning says so, once).
///
/// RBAC: `get`, `create` and `update` on `configmaps`; `list` and `watch` to be woken by
/// changes instead of polling (they may be restricted to the lock's name, as a field
/// selector is used); `list` on all ConfigMaps for [`list`](Locker::list).
///
/// # Examples
///
/// ```no_run
/// use lockheed::{KubeLocker, Lock};
///
/// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
/// let client = kube::Client::try_default().await?;
/// let locker = KubeLocker::new(client, "default");
/// let guard = Lock::new("migrations", locker).acquire().await?;
/// // ... critical section ...
/// guard.release().await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct KubeLocker {
    api: Api<ConfigMap>,
    namespace: String,
    prefix: String,
    clock: Arc<dyn Clock>,
    feeds: Feeds<ConfigMap>,
    /// Set once a watch was forbidden: waiters poll, and it has been said.
    watch_forbidden: Arc<AtomicBool>,
}

impl std::fmt::Debug for KubeLocker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeLocker")
            .field("namespace", &self.namespace)
            .field("prefix", &self.prefix)
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

impl KubeLocker {
    /// Locks in ConfigMaps of `namespace`, through `client`.
    #[must_use]
    pub fn new(client: kube::Client, namespace: impl Into<String>) -> Self {
        let namespace = namespace.into();
        Self {
            api: Api::namespaced(client, &namespace),
            namespace,
            prefix: DEFAULT_PREFIX.to_owned(),
            clock: Arc::new(SystemClock),
            feeds: Feeds::new(),
            watch_forbidden: Arc::default(),
        }
    }

    /// How many locks this locker (and its clones) watch now: one per lock with waiters.
    #[must_use]
    pub fn active_watches(&self) -> usize {
        self.feeds.active()
    }

    /// Watches lock `name`'s ConfigMap and publishes what it sees, until nobody waits.
    async fn observe(self, name: String, publisher: Publisher<ConfigMap>) {
        let object = self.object_name(&name);
        let mut stream = std::pin::pin!(
            kube::runtime::watcher::watch_object(self.api.clone(), &object).default_backoff()
        );
        while let Some(item) = stream.next().await {
            let snapshot = match item {
                Ok(Some(cm)) => self
                    .decode(&name, cm)
                    .map_or(Snapshot::Unknown, Snapshot::Present),
                Ok(None) => Snapshot::Absent,
                Err(err) if is_forbidden(&err) => {
                    if !self.watch_forbidden.swap(true, Ordering::Relaxed) {
                        tracing::warn!(
                            lock = %name, error = %err,
                            "cannot watch lock ConfigMaps (RBAC needs list and watch on configmaps); \
                             waiters poll instead"
                        );
                    }
                    publisher.publish(Snapshot::Unavailable);
                    return;
                }
                // The watcher resumes by itself (relisting after a 410), with backoff; until
                // then waiters keep what they know, and the relist tells them what changed.
                Err(err) => {
                    tracing::debug!(lock = %name, error = %err, "watch of the lock interrupted");
                    continue;
                }
            };
            if !publisher.publish(snapshot) {
                return;
            }
        }
    }

    /// Names lock ConfigMaps `<prefix><name>` instead of `lockheed-<name>`. Go lockheed
    /// clients only see locks with the default prefix.
    #[must_use]
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Judges leases by `clock` instead of the system clock.
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The namespace of the locks.
    #[must_use]
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The ConfigMap name of lock `name`.
    #[must_use]
    pub fn object_name(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// `namespace/configmap`, for messages.
    fn object(&self, name: &str) -> String {
        format!("{}/{}", self.namespace, self.object_name(name))
    }

    fn kube_error(&self, name: &str, source: kube::Error) -> Error {
        Error::Kube {
            object: self.object(name),
            source,
        }
    }

    fn decode(&self, name: &str, cm: ConfigMap) -> Result<Record<ConfigMap>, Error> {
        let corrupt = |reason: String| Error::Corrupt {
            object: self.object(name),
            reason,
        };
        let mut state = match cm.data.as_ref().and_then(|d| d.get(STATE_KEY)) {
            Some(json) => LockState::from_json(json).map_err(|e| corrupt(e.to_string()))?,
            None => LockState::empty(name),
        };
        let annotations = cm.metadata.annotations.as_ref();
        if let Some(token) = annotations.and_then(|a| a.get(FENCING_ANNOTATION)) {
            let token = token.parse::<u64>().map_err(|_| {
                corrupt(format!(
                    "annotation {FENCING_ANNOTATION} is not a number: {token:?}"
                ))
            })?;
            state.raise_fencing_token(token);
        }
        let reservation = annotations.and_then(|a| {
            let by = a.get(RESERVED_BY).filter(|b| !b.is_empty())?;
            // An unreadable expiry cannot make the lock busy forever: ignore it.
            let until = GoTime::parse(a.get(RESERVED_EXPIRES)?).ok()?;
            Some(Reservation::new(by.clone(), until.to_utc()))
        });
        Ok(Record {
            state,
            version: cm,
            reservation,
        })
    }

    fn encode(&self, name: &str, mut cm: ConfigMap, state: &LockState) -> Result<ConfigMap, Error> {
        let json = state.to_json();
        let data = cm.data.get_or_insert_with(BTreeMap::new);
        let others: usize = data
            .iter()
            .filter(|(k, _)| *k != STATE_KEY)
            .map(|(_, v)| v.len())
            .sum();
        let size = others + json.len();
        if size > MAX_DATA_BYTES {
            return Err(Error::TooLarge {
                object: self.object(name),
                size,
                limit: MAX_DATA_BYTES,
            });
        }
        data.insert(STATE_KEY.to_owned(), json);
        cm.metadata
            .labels
            .get_or_insert_with(BTreeMap::new)
            .entry(LOCK_LABEL.to_owned())
            .or_default();
        if state.fencing_token() > 0 {
            cm.metadata
                .annotations
                .get_or_insert_with(BTreeMap::new)
                .insert(
                    FENCING_ANNOTATION.to_owned(),
                    state.fencing_token().to_string(),
                );
        }
        Ok(cm)
    }
}

fn is_status(err: &kube::Error, code: u16) -> bool {
    matches!(err, kube::Error::Api(status) if status.code == code)
}

fn is_forbidden(err: &kube::runtime::watcher::Error) -> bool {
    use kube::runtime::watcher::Error as W;
    match err {
        W::InitialListFailed(e) | W::WatchStartFailed(e) | W::WatchFailed(e) => {
            is_status(e, 403) || is_status(e, 401)
        }
        W::WatchError(status) => status.code == 403,
        W::NoResourceVersion => false,
    }
}

impl Locker for KubeLocker {
    type Version = ConfigMap;

    fn clock(&self) -> Arc<dyn Clock> {
        Arc::clone(&self.clock)
    }

    fn check_name(&self, name: &str) -> Result<(), Error> {
        let object = self.object_name(name);
        let problems = if name.is_empty() {
            vec!["a lock name must not be empty".to_owned()]
        } else {
            dns1123_subdomain_errors(&object)
        };
        if let Some(problem) = problems.first() {
            return Err(Error::InvalidName {
                name: name.to_owned(),
                reason: format!("the ConfigMap name {object:?} is invalid: {problem}"),
            });
        }
        Ok(())
    }

    fn changes(&self, name: &str) -> Option<Changes<ConfigMap>> {
        if self.watch_forbidden.load(Ordering::Relaxed) {
            return None;
        }
        let locker = self.clone();
        let lock = name.to_owned();
        Some(self.feeds.subscribe(name, move |publisher| {
            let task = tokio::spawn(locker.observe(lock, publisher));
            Some(task.abort_handle())
        }))
    }

    async fn read(&self, name: &str) -> Result<Option<Record<ConfigMap>>, Error> {
        let cm = self
            .api
            .get_opt(&self.object_name(name))
            .await
            .map_err(|e| self.kube_error(name, e))?;
        cm.map(|cm| self.decode(name, cm)).transpose()
    }

    async fn write(
        &self,
        name: &str,
        expected: Option<&ConfigMap>,
        state: &LockState,
    ) -> Result<Written<ConfigMap>, Error> {
        let object_name = self.object_name(name);
        let result = if let Some(current) = expected {
            let cm = self.encode(name, current.clone(), state)?;
            self.api
                .replace(&object_name, &PostParams::default(), &cm)
                .await
        } else {
            let fresh = ConfigMap {
                metadata: ObjectMeta {
                    name: Some(object_name),
                    ..ObjectMeta::default()
                },
                ..ConfigMap::default()
            };
            let cm = self.encode(name, fresh, state)?;
            self.api.create(&PostParams::default(), &cm).await
        };
        match result {
            Ok(stored) => Ok(Written::Stored(stored)),
            // 409: changed (or created) meanwhile; 404: deleted meanwhile. Either way the
            // caller re-reads and decides again.
            Err(err) if is_status(&err, 409) || (expected.is_some() && is_status(&err, 404)) => {
                Ok(Written::Conflict)
            }
            Err(err) => Err(self.kube_error(name, err)),
        }
    }

    async fn read_all(&self) -> Result<StoredStates, Error> {
        let list = self
            .api
            .list(&ListParams::default().labels(LOCK_LABEL))
            .await
            .map_err(|source| Error::Kube {
                object: self.namespace.clone(),
                source,
            })?;
        Ok(list
            .items
            .into_iter()
            .filter_map(|cm| {
                let object_name = cm.metadata.name.clone()?;
                let name = object_name.strip_prefix(&self.prefix)?.to_owned();
                let state = self.decode(&name, cm).map(|record| record.state);
                Some((name, state))
            })
            .collect())
    }
}
