//! [`LeaseLocker`]: locks in `coordination.k8s.io/v1` Leases, shared with client-go.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease as KubeLease;
use kube::api::{Api, ObjectMeta};
use kube::runtime::watcher;

use super::format::{self, check_lock};
use crate::backend::{Backend, Changes, Record, Snapshot, StoredStates, Written};
use crate::clock::{Clock, SystemClock};
use crate::error::Error;
use crate::kubernetes::limits::check_object_name;
use crate::kubernetes::store;
use crate::kubernetes::watch::{Kept, Watches};
use crate::state::LockState;
use crate::state::kind::LockKind;

/// What a [`LeaseLocker`]'s write compares against: the Lease as it was read. The write is a
/// PUT of that object (so it carries its resourceVersion, as client-go's `Update` does) with
/// client-go's record and this crate's annotations changed, and everything else kept.
#[derive(Debug, Clone)]
pub struct LeaseVersion(Arc<KubeLease>);

impl LeaseVersion {
    /// The resourceVersion the next write must find.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "testing")]
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use lockheed::backend::Backend;
    /// use lockheed::{LeaseLocker, Lock};
    ///
    /// let server = lockheed::testing::FakeApiServer::start().await?;
    /// let locker = LeaseLocker::new(server.client(), "default");
    /// Lock::new("db", locker.clone()).try_acquire().await?.release().await?;
    /// let record = locker.read("db").await?.unwrap();
    /// assert!(record.version.resource_version().is_some());
    /// # Ok(())
    /// # }
    /// # #[cfg(not(feature = "testing"))]
    /// # fn main() {}
    /// ```
    #[must_use]
    pub fn resource_version(&self) -> Option<&str> {
        self.0.metadata.resource_version.as_deref()
    }

    /// The Lease as it was read, without its `metadata.managedFields` (see
    /// [`ConfigMapVersion::config_map`](crate::configmap::ConfigMapVersion::config_map)).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "testing")]
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use lockheed::backend::Backend;
    /// use lockheed::{LeaseLocker, Lock};
    ///
    /// let server = lockheed::testing::FakeApiServer::start().await?;
    /// let locker = LeaseLocker::new(server.client(), "default");
    /// let guard = Lock::new("db", locker.clone()).with_holder("pod-a").try_acquire().await?;
    /// let lease = locker.read("db").await?.unwrap().version.lease().clone();
    /// assert_eq!(lease.spec.unwrap().holder_identity.as_deref(), Some("pod-a"));
    /// # guard.release().await?;
    /// # Ok(())
    /// # }
    /// # #[cfg(not(feature = "testing"))]
    /// # fn main() {}
    /// ```
    #[must_use]
    pub fn lease(&self) -> &KubeLease {
        &self.0
    }
}

/// Where a locker's Leases are.
#[derive(Clone)]
pub(super) struct Leases {
    api: Api<KubeLease>,
    namespace: String,
    prefix: String,
}

impl Kept for Leases {
    type Object = KubeLease;
    type Version = LeaseVersion;
    const RESOURCE: &'static str = "leases";

    fn api(&self) -> &Api<KubeLease> {
        &self.api
    }

    fn namespace(&self) -> &str {
        &self.namespace
    }

    fn object_name(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    fn lock_name(&self, lease: &KubeLease) -> Option<String> {
        let object = lease.metadata.name.as_deref()?;
        let name = object.strip_prefix(&self.prefix)?;
        (!name.is_empty()).then(|| name.to_owned())
    }

    fn decode(&self, name: &str, mut lease: KubeLease) -> Result<Record<LeaseVersion>, Error> {
        // Kept for the next write, which leaves them out (the API server then keeps them).
        lease.metadata.managed_fields = None;
        let state = format::decode(name, &self.object(name), &lease)?;
        Ok(Record::new(state, LeaseVersion(Arc::new(lease))))
    }

    fn version(lease: KubeLease) -> LeaseVersion {
        LeaseVersion(Arc::new(lease))
    }

    fn selector(&self) -> watcher::Config {
        // Leases of client-go and other tools carry no label of ours: watch them all.
        watcher::Config::default()
    }

    fn resource_version(version: &LeaseVersion) -> Option<&str> {
        version.resource_version()
    }
}

/// Locks kept in `coordination.k8s.io/v1` Leases of one namespace: the object Kubernetes
/// elects leaders with, shared with client-go's `leaderelection` (kube-controller-manager,
/// controller-runtime, every Go operator) and the Rust crates kube-lease-manager, kubert and
/// kube-leader-election. A Rust replica and a Go replica of the same controller can share one
/// Lease during a migration.
///
/// Lock `name` is the Lease `name` (no prefix unless [`with_prefix`](Self::with_prefix)). A
/// Lease has one holder: only mutexes can be kept, with a lease duration of whole seconds (its
/// `leaseDurationSeconds`); other kinds and durations are refused with
/// [`Error::InvalidConfig`] before any request.
///
/// # What is written
///
/// The holder goes into client-go's record, exactly as client-go writes it:
/// `holderIdentity`, `leaseDurationSeconds`, `acquireTime` (kept on renewal), `renewTime`
/// (`MicroTime`, six fraction digits, UTC) and `leaseTransitions` (one more at every change of
/// holder, kept on renewal). A release writes what client-go's `ReleaseOnCancel` writes:
/// `holderIdentity` `""`, `leaseDurationSeconds` 1, `acquireTime` and `renewTime` now,
/// `leaseTransitions` unchanged. Every write is a PUT of the Lease as read, carrying its
/// resourceVersion, so a lost race is a 409 and the loser reads again. `strategy`,
/// `preferredHolder`, labels and other annotations are kept.
///
/// What client-go has no room for lives in annotations, which client-go (and
/// kube-lease-manager's patches) leave as they are: the fencing counter
/// ([`FENCING_ANNOTATION`](crate::lease::FENCING_ANNOTATION)), the holder's token, nonce and
/// reason ([`HOLDER_ANNOTATION`](crate::lease::HOLDER_ANNOTATION), which counts only while it
/// names the `holderIdentity`), the tags
/// ([`TAGS_ANNOTATION`](crate::lease::TAGS_ANNOTATION)) and the waiters' queue
/// ([`QUEUE_ANNOTATION`](crate::lease::QUEUE_ANNOTATION)). A Go leader that takes the Lease
/// between two Rust holders leaves the counter in place, so fencing tokens never go
/// backwards; its own term has no token.
///
/// # Sharing a Lease with client-go and kube-lease-manager
///
/// - A Lease held by someone else is never taken while they could still hold it: a waiting
///   [`acquire`](crate::Lock::acquire) takes it over only once it has itself seen the record
///   unchanged for `leaseDurationSeconds` (client-go's rule, on this process's own clock),
///   and not before `renewTime + leaseDurationSeconds` plus the
///   [clock skew allowance](crate::Lock::with_clock_skew_allowance) by its wall clock. A
///   single [`try_acquire`](crate::Lock::try_acquire) has seen nothing, and goes by the wall
///   clock and the allowance alone: with clocks apart by more than that, campaign with
///   `acquire`, as [`LeaderElection`](crate::LeaderElection) does.
/// - A Lease released by client-go (`holderIdentity` `""`) or by kube-lease-manager (the fields
///   removed) is free at once.
/// - A waiter behind a holder that is not a lockheed client writes no place in the queue
///   (such a holder never hands the Lease to the queue): it keeps its place to itself and
///   waits for the release by watching. So it never changes the Lease under a client-go
///   leader, whose graceful release then succeeds (client-go up to v0.33 releases without
///   reading the Lease first, and a write since its last renewal would make that release a
///   409, leaving the Lease to expire), and the waiter leads within that release and one
///   watch event. Among several lockheed waiters behind such a holder, the first to see the
///   release takes the Lease: first come, first served holds only behind lockheed holders.
/// - Coordinated leader election (Kubernetes 1.31+): while the record's `preferredHolder`
///   names someone other than the holder, the holder gives the lock up at its next renewal
///   ([`LockGuard::lost`](crate::LockGuard::lost) fires; releasing the guard hands the Lease
///   over), and other contenders let the preferred holder come first, for one term of the
///   record (`renewTime + leaseDurationSeconds`). client-go's coordinated holders stop renewing
///   and let the Lease expire; this crate's release makes the handover immediate. As long as
///   the record keeps naming another preferred holder, whoever takes the Lease meanwhile gives
///   it up at its next renewal too.
///
/// Waiters are woken by one watch of the namespace's Leases, shared by every lock of this
/// locker and its clones (or, where RBAC forbids that, one watch per Lease; where watching is
/// forbidden, they poll), as with [`KubeLocker`](crate::KubeLocker): a release is seen by the
/// next waiter within one watch delivery, where client-go contenders poll every 2 s and
/// kube-lease-manager waits for the lease to end.
///
/// RBAC: `get`, `create` and `update` on `leases` (group `coordination.k8s.io`); `list` and
/// `watch` to be woken by changes instead of polling, and `list` for
/// [`list`](crate::Locker::list).
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// use lockheed::{LeaseLocker, Lock};
///
/// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
/// let client = kube::Client::try_default().await?;
/// let locker = LeaseLocker::new(client, "kube-system");
/// let guard = Lock::new("my-controller", locker)
///     .with_holder("my-controller-7d9c8b6f5-x2k4q") // client-go uses the pod name too
///     .with_duration(Duration::from_secs(15))
///     .acquire()
///     .await?;
/// println!("leading with fencing token {}", guard.token());
/// # guard.release().await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct LeaseLocker {
    leases: Leases,
    clock: Arc<dyn Clock>,
    watches: Watches<Leases>,
}

impl std::fmt::Debug for LeaseLocker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseLocker")
            .field("namespace", &self.leases.namespace)
            .field("prefix", &self.leases.prefix)
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

impl LeaseLocker {
    /// Locks in Leases of `namespace`, through `client`.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use lockheed::{LeaseLocker, Lock};
    ///
    /// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
    /// let client = kube::Client::try_default().await?;
    /// let locker = LeaseLocker::new(client, "my-namespace");
    /// let guard = Lock::new("nightly-report", locker).acquire().await?; // Lease nightly-report
    /// # guard.release().await?;
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn new(client: kube::Client, namespace: impl Into<String>) -> Self {
        let namespace = namespace.into();
        Self {
            leases: Leases {
                api: Api::namespaced(client, &namespace),
                namespace,
                prefix: String::new(),
            },
            clock: Arc::new(SystemClock),
            watches: Watches::new(true),
        }
    }

    /// Names lock Leases `<prefix><name>` instead of `<name>`. Other tools see the full name.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use lockheed::LeaseLocker;
    ///
    /// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
    /// let client = kube::Client::try_default().await?;
    /// let locker = LeaseLocker::new(client, "default").with_prefix("team-a-");
    /// assert_eq!(locker.object_name("db"), "team-a-db");
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.leases.prefix = prefix.into();
        self
    }

    /// Judges leases by `clock` instead of the system clock (and writes its times).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::sync::Arc;
    /// use lockheed::{clock::TokioClock, LeaseLocker};
    ///
    /// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
    /// let client = kube::Client::try_default().await?;
    /// // A test on Tokio's paused clock: wall time moves with it.
    /// let locker = LeaseLocker::new(client, "default").with_clock(Arc::new(TokioClock::new()));
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The namespace of the Leases.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use lockheed::LeaseLocker;
    ///
    /// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
    /// let client = kube::Client::try_default().await?;
    /// assert_eq!(LeaseLocker::new(client, "jobs").namespace(), "jobs");
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn namespace(&self) -> &str {
        &self.leases.namespace
    }

    /// The Lease name of lock `name`.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use lockheed::LeaseLocker;
    ///
    /// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
    /// let client = kube::Client::try_default().await?;
    /// assert_eq!(LeaseLocker::new(client, "default").object_name("db"), "db");
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn object_name(&self, name: &str) -> String {
        self.leases.object_name(name)
    }

    /// How many watches this locker (and its clones) have open now: one for the namespace's
    /// Leases while any lock has waiters; one per such lock where the namespace watch is
    /// forbidden; none when nothing waits.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use lockheed::LeaseLocker;
    ///
    /// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
    /// let client = kube::Client::try_default().await?;
    /// assert_eq!(LeaseLocker::new(client, "default").active_watches(), 0);
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn active_watches(&self) -> usize {
        self.watches.active()
    }

    /// `lease` with `state` written into it, now.
    fn encode(&self, name: &str, lease: KubeLease, state: &LockState) -> Result<KubeLease, Error> {
        let now = self.clock.now();
        format::encode(name, &self.leases.object(name), lease, state, now)
    }
}

impl Backend for LeaseLocker {
    type Version = LeaseVersion;

    fn clock(&self) -> Arc<dyn Clock> {
        Arc::clone(&self.clock)
    }

    fn check_name(&self, name: &str) -> Result<(), Error> {
        check_object_name("Lease", &self.leases.object_name(name), name)
    }

    fn check_lock(&self, name: &str, kind: &LockKind, duration: Duration) -> Result<(), Error> {
        check_lock(name, kind, duration)
    }

    fn changes(&self, name: &str) -> Option<Changes<LeaseVersion>> {
        self.watches.changes(&self.leases, name)
    }

    fn is_newer(&self, version: &LeaseVersion, than: &LeaseVersion) -> Option<bool> {
        crate::kubernetes::watch::is_newer::<Leases>(version, than)
    }

    fn watched(&self, name: &str) -> Option<Changes<LeaseVersion>> {
        self.watches.watching(&self.leases, name)
    }

    fn known(&self, name: &str) -> Snapshot<LeaseVersion> {
        self.watches.known(name)
    }

    async fn read(&self, name: &str) -> Result<Option<Record<LeaseVersion>>, Error> {
        store::read(&self.leases, &self.watches, name).await
    }

    async fn write(
        &self,
        name: &str,
        expected: Option<&LeaseVersion>,
        state: &LockState,
    ) -> Result<Written<LeaseVersion>, Error> {
        let object = expected.map_or_else(
            || KubeLease {
                metadata: ObjectMeta {
                    name: Some(self.object_name(name)),
                    ..ObjectMeta::default()
                },
                spec: None,
            },
            |current| KubeLease::clone(&current.0),
        );
        let lease = self.encode(name, object, state)?;
        if let Some(current) = expected
            && format::only_queues_behind_a_stranger(&current.0, &lease)
        {
            // Nothing the holder would read: keep the place here and wait by watching.
            return Ok(Written::Stored(current.clone()));
        }
        store::write(
            &self.leases,
            &self.watches,
            name,
            &lease,
            expected.is_some(),
        )
        .await
    }

    async fn read_all(&self) -> Result<StoredStates, Error> {
        store::read_all(&self.leases).await
    }
}
