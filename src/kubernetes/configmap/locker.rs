//! [`KubeLocker`]: locks in ConfigMaps, in Go lockheed's format or kube-lock's.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ObjectMeta};

use super::format::Format;
use super::objects::{ConfigMapVersion, Objects};
use crate::backend::{Backend, Changes, Record, Snapshot, StoredStates, Written};
use crate::clock::{Clock, SystemClock};
use crate::error::Error;
use crate::kubernetes::limits::check_name;
use crate::kubernetes::store;
use crate::kubernetes::watch::{self, Kept as _, Watches};
use crate::state::LockState;
use crate::state::kind::LockKind;

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
/// A holder of this crate renews through it (its lease is its own), which changes the
/// resourceVersion under the Go writer: the Go client's second update then fails with a
/// conflict, and its reservation, which Go never clears after a failure, keeps every Go client
/// out of the lock until it expires (30 s). Rust clients are not affected; a fleet in the
/// middle of a migration may see Go clients wait that long.
///
/// Deleting a lock's ConfigMap also deletes its fencing counter: the next acquisition gets
/// token 1 again. A resource that fences on tokens then refuses the new holders (their tokens
/// are lower than those it has seen) until the counter passes the old one, which fails safe
/// but stalls: do not delete the ConfigMaps of locks whose tokens are in use.
///
/// Waiters are woken, and held locks without expiry watched, by one watch of the namespace's
/// lock ConfigMaps (their label), shared by every lock of this locker and its clones while any
/// lock has waiters or such holders: 10,000 locks cost one watch. It also keeps each lock's
/// latest state, so that a [`try_acquire`](crate::Lock::try_acquire) while it runs needs one
/// write and no read. If the namespace-wide watch is forbidden (RBAC restricted to some
/// `resourceNames`), each lock's ConfigMap is watched alone; if that is forbidden too, waiters
/// poll (and a warning says so, once). Locks in [kube-lock's format](Format::KubeLock), which
/// carry no label, are always watched one by one.
///
/// RBAC: `get`, `create` and `update` on `configmaps`; `list` and `watch` to be woken by
/// changes instead of polling (on all ConfigMaps for the namespace watch; restricted to the
/// locks' names, they still allow one watch per lock); `list` on all ConfigMaps for
/// [`list`](crate::Locker::list).
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
    objects: Objects,
    clock: Arc<dyn Clock>,
    /// The watch shared by every waiter and held lock of this locker and its clones.
    watches: Watches<Objects>,
    /// Whether a missing ConfigMap may be created (`None`: as the format does).
    create: Option<bool>,
}

impl std::fmt::Debug for KubeLocker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeLocker")
            .field("namespace", &self.objects.namespace)
            .field("prefix", &self.objects.prefix())
            .field("format", &self.objects.format)
            .field("create", &self.creates())
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

impl KubeLocker {
    /// Locks in ConfigMaps of `namespace`, through `client`.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use lockheed::{KubeLocker, Lock};
    ///
    /// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
    /// let client = kube::Client::try_default().await?;
    /// let locker = KubeLocker::new(client, "my-namespace");
    /// let guard = Lock::new("nightly-report", locker).acquire().await?; // ConfigMap lockheed-nightly-report
    /// # guard.release().await?;
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn new(client: kube::Client, namespace: impl Into<String>) -> Self {
        let namespace = namespace.into();
        Self {
            objects: Objects {
                api: Api::namespaced(client, &namespace),
                namespace,
                prefix: None,
                format: Format::Lockheed,
            },
            clock: Arc::new(SystemClock),
            watches: Watches::new(Format::Lockheed.is_labelled()),
            create: None,
        }
    }

    /// Keeps locks in `format` instead of Go lockheed's: [`Format::KubeLock`] shares
    /// semaphores with the Go kube-lock tool (see there for what that format can keep). The
    /// format gives the defaults of [`with_prefix`](Self::with_prefix) (none for kube-lock's:
    /// lock `name` is the ConfigMap `name`) and [`with_create`](Self::with_create) (kube-lock's
    /// creates no ConfigMap), which set them explicitly in any order. Default:
    /// [`Format::Lockheed`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use lockheed::configmap::Format;
    /// use lockheed::{KubeLocker, Lock};
    ///
    /// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
    /// let client = kube::Client::try_default().await?;
    /// let locker = KubeLocker::new(client, "default")
    ///     .with_format(Format::KubeLock)
    ///     .with_create(true);
    /// let guard = Lock::new("lock", locker)
    ///     .with_holder("holder-1")
    ///     .with_max_holders(1)
    ///     .with_duration(Duration::ZERO)
    ///     .with_reason("db restart")
    ///     .acquire()
    ///     .await?;
    /// guard.forget(); // keep holding after this process exits, as kube-lock does
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn with_format(mut self, format: Format) -> Self {
        self.objects.format = format;
        // A watch of the namespace selects locks by their label; a format without one has
        // its locks watched one by one.
        self.watches = Watches::new(format.is_labelled());
        self
    }

    /// Whether acquiring a lock whose ConfigMap does not exist creates it. Default: `true`
    /// for the lockheed format, `false` for [kube-lock's](Format::KubeLock).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
    /// let client = kube::Client::try_default().await?;
    /// // Only locks an administrator created (and granted RBAC on) can be taken.
    /// let locker = lockheed::KubeLocker::new(client, "default").with_create(false);
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn with_create(mut self, create: bool) -> Self {
        self.create = Some(create);
        self
    }

    /// Whether a missing ConfigMap is created: as set, or as the format does.
    fn creates(&self) -> bool {
        self.create.unwrap_or_else(|| self.objects.format.creates())
    }

    /// How many watches this locker (and its clones) have open now: one for the whole
    /// namespace while any lock has waiters or a held lease without expiry (which its guard
    /// watches instead of renewing); one per such lock where the namespace watch is forbidden
    /// or for kube-lock's format; none when nothing waits.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use lockheed::{KubeLocker, Lock};
    ///
    /// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
    /// let client = kube::Client::try_default().await?;
    /// let locker = KubeLocker::new(client, "default");
    /// let held = Lock::new("db", locker.clone()).acquire().await?;
    /// let waiter = Lock::new("db", locker.clone());
    /// let waiting = tokio::spawn(async move { waiter.acquire().await });
    /// // While someone waits for "db", this process watches the namespace's locks, once.
    /// assert!(locker.active_watches() <= 1);
    /// # drop((held, waiting));
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn active_watches(&self) -> usize {
        self.watches.active()
    }

    /// Names lock ConfigMaps `<prefix><name>` instead of `lockheed-<name>` (`<name>` in
    /// [kube-lock's format](Format::KubeLock)). Go lockheed clients only see locks with the
    /// default prefix.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use lockheed::KubeLocker;
    ///
    /// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
    /// let client = kube::Client::try_default().await?;
    /// let locker = KubeLocker::new(client, "default").with_prefix("team-a-lock-");
    /// assert_eq!(locker.object_name("db"), "team-a-lock-db");
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.objects.prefix = Some(prefix.into());
        self
    }

    /// Judges leases by `clock` instead of the system clock.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::sync::Arc;
    /// use lockheed::{clock::ManualClock, KubeLocker};
    ///
    /// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
    /// let client = kube::Client::try_default().await?;
    /// // A test that decides what time it is (the fake API server can follow the same clock).
    /// let clock = ManualClock::new(chrono::Utc::now());
    /// let locker = KubeLocker::new(client, "default").with_clock(Arc::new(clock.clone()));
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The namespace of the locks.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use lockheed::KubeLocker;
    ///
    /// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
    /// let client = kube::Client::try_default().await?;
    /// assert_eq!(KubeLocker::new(client, "jobs").namespace(), "jobs");
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn namespace(&self) -> &str {
        &self.objects.namespace
    }

    /// The ConfigMap name of lock `name`.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use lockheed::KubeLocker;
    ///
    /// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
    /// let client = kube::Client::try_default().await?;
    /// let locker = KubeLocker::new(client, "default");
    /// assert_eq!(locker.object_name("db"), "lockheed-db"); // the ConfigMap to grant RBAC on
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn object_name(&self, name: &str) -> String {
        self.objects.object_name(name)
    }
}

impl Backend for KubeLocker {
    type Version = ConfigMapVersion;

    fn clock(&self) -> Arc<dyn Clock> {
        Arc::clone(&self.clock)
    }

    fn check_name(&self, name: &str) -> Result<(), Error> {
        check_name(self.objects.prefix(), name)
    }

    fn check_lock(&self, name: &str, kind: &LockKind, duration: Duration) -> Result<(), Error> {
        self.objects.format.check_lock(name, kind, duration)
    }

    fn changes(&self, name: &str) -> Option<Changes<ConfigMapVersion>> {
        self.watches.changes(&self.objects, name)
    }

    fn is_newer(&self, version: &ConfigMapVersion, than: &ConfigMapVersion) -> Option<bool> {
        watch::is_newer::<Objects>(version, than)
    }

    fn watched(&self, name: &str) -> Option<Changes<ConfigMapVersion>> {
        self.watches.watching(&self.objects, name)
    }

    fn known(&self, name: &str) -> Snapshot<ConfigMapVersion> {
        self.watches.known(name)
    }

    async fn read(&self, name: &str) -> Result<Option<Record<ConfigMapVersion>>, Error> {
        store::read(&self.objects, &self.watches, name).await
    }

    async fn write(
        &self,
        name: &str,
        expected: Option<&ConfigMapVersion>,
        state: &LockState,
    ) -> Result<Written<ConfigMapVersion>, Error> {
        let object = if let Some(current) = expected {
            ConfigMap::clone(&current.0)
        } else if self.creates() {
            ConfigMap {
                metadata: ObjectMeta {
                    name: Some(self.object_name(name)),
                    ..ObjectMeta::default()
                },
                ..ConfigMap::default()
            }
        } else {
            return Err(Error::Missing {
                object: self.objects.object(name),
            });
        };
        let cm = self.objects.encode(name, object, state)?;
        store::write(&self.objects, &self.watches, name, &cm, expected.is_some()).await
    }

    async fn read_all(&self) -> Result<StoredStates, Error> {
        store::read_all(&self.objects).await
    }
}
