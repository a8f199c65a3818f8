//! The backends the behavioural suite runs on, behind one interface.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use k8s_openapi::api::rbac::v1::{Role, Subject};
use lockheed::backend::{Backend, LockState, Record, StoredStates, Written};
use lockheed::clock::TokioClock;
use lockheed::testing::{FakeApiServer, TestCluster};
use lockheed::{Error, KubeLocker, LeaseLocker, Locker, MemoryLocker};

/// A backend under test, with the controls the suite needs.
pub trait Harness: Sized {
    type Locker: Locker;

    /// A fresh, empty backend whose clock follows Tokio's (paused) clock.
    async fn new() -> Self;

    /// The locker to take locks from (clones share locks).
    fn locker(&self) -> Self::Locker;

    /// Makes every request fail from now on (an API server that refuses renewals).
    fn cut_off(&self);

    /// Undoes [`cut_off`](Self::cut_off).
    fn restore(&self);

    /// Stores a raw state document for lock `name`, as another client might.
    async fn store_raw(&self, name: &str, json: &str);
}

/// The in-memory backend, wrapped so that requests can be made to fail.
pub struct Memory {
    locker: Flaky<MemoryLocker>,
}

/// A locker whose requests fail while `down` is set.
#[derive(Debug, Clone)]
pub struct Flaky<L> {
    inner: L,
    down: Arc<AtomicBool>,
}

impl<L: Backend> Flaky<L> {
    fn check(&self, name: &str) -> Result<(), Error> {
        if self.down.load(Ordering::SeqCst) {
            return Err(Error::Backend {
                object: name.to_owned(),
                transient: true,
                source: "the backend is unreachable".into(),
            });
        }
        Ok(())
    }
}

impl<L: Backend> Backend for Flaky<L> {
    type Version = L::Version;

    fn clock(&self) -> Arc<dyn lockheed::clock::Clock> {
        self.inner.clock()
    }

    fn check_name(&self, name: &str) -> Result<(), Error> {
        self.inner.check_name(name)
    }

    async fn read(&self, name: &str) -> Result<Option<Record<L::Version>>, Error> {
        self.check(name)?;
        self.inner.read(name).await
    }

    async fn write(
        &self,
        name: &str,
        expected: Option<&L::Version>,
        state: &LockState,
    ) -> Result<Written<L::Version>, Error> {
        self.check(name)?;
        self.inner.write(name, expected, state).await
    }

    async fn read_all(&self) -> Result<StoredStates, Error> {
        self.check("all locks")?;
        self.inner.read_all().await
    }
}

impl Harness for Memory {
    type Locker = Flaky<MemoryLocker>;

    async fn new() -> Self {
        Self {
            locker: Flaky {
                inner: MemoryLocker::new().with_clock(Arc::new(TokioClock::new())),
                down: Arc::default(),
            },
        }
    }

    fn locker(&self) -> Self::Locker {
        self.locker.clone()
    }

    fn cut_off(&self) {
        self.locker.down.store(true, Ordering::SeqCst);
    }

    fn restore(&self) {
        self.locker.down.store(false, Ordering::SeqCst);
    }

    async fn store_raw(&self, name: &str, json: &str) {
        self.locker.inner.insert_raw(name, json);
    }
}

/// `KubeLocker` on the test's server: the fake one, or a namespace of a real cluster
/// (`TestCluster`).
pub struct Kube {
    pub cluster: TestCluster,
    locker: KubeLocker,
}

impl Kube {
    /// The fake server, for the tests that count its requests or inject its faults; `None` on
    /// a real cluster.
    pub fn fake(&self) -> Option<&FakeApiServer> {
        self.cluster.fake_server()
    }
}

/// The fake server of `cluster`, for a test that injects its faults or reads its request log.
/// On a real cluster it is `None`, and the test ends there (its run on the fake server covers
/// it), saying so on stderr.
pub fn fake_only<'a>(cluster: &'a TestCluster, why: &str) -> Option<&'a FakeApiServer> {
    let fake = cluster.fake_server();
    if fake.is_none() {
        eprintln!("runs on the fake server only ({why})");
    }
    fake
}

/// A fresh test cluster (the server the environment chooses).
pub async fn cluster() -> TestCluster {
    TestCluster::start().await.expect("the test cluster starts")
}

/// A locker of `cluster`'s namespace whose clock follows Tokio's (paused) clock.
pub fn kube_locker(cluster: &TestCluster, client: kube::Client) -> KubeLocker {
    KubeLocker::new(client, cluster.namespace()).with_clock(Arc::new(TokioClock::new()))
}

impl Harness for Kube {
    type Locker = KubeLocker;

    async fn new() -> Self {
        let cluster = cluster().await;
        let locker = kube_locker(&cluster, cluster.client());
        Self { cluster, locker }
    }

    fn locker(&self) -> KubeLocker {
        self.locker.clone()
    }

    fn cut_off(&self) {
        self.cluster.cut_off();
    }

    fn restore(&self) {
        self.cluster.restore();
    }

    async fn store_raw(&self, name: &str, json: &str) {
        store_raw(&self.cluster, name, json).await;
    }
}

/// Stores a raw state document for lock `name`, as another client might (the administrator).
async fn store_raw(cluster: &TestCluster, name: &str, json: &str) {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::{Api, Patch, PatchParams};
    let api: Api<ConfigMap> = Api::namespaced(cluster.client(), cluster.namespace());
    let object = serde_json::json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": { "name": format!("lockheed-{name}"), "labels": { "lockheed/lock": "" } },
        "data": { "lock": json },
    });
    api.patch(
        &format!("lockheed-{name}"),
        &PatchParams::apply("test").force(),
        &Patch::Apply(object),
    )
    .await
    .expect("the raw state is stored");
}

/// The Role named `name` in `examples/rbac.yaml`, and the subject its RoleBinding binds it to.
pub fn rbac_role(name: &str) -> (Role, Subject) {
    use k8s_openapi::api::rbac::v1::RoleBinding;
    let documents: Vec<serde_json::Value> =
        serde_saphyr::from_str_multiple(include_str!("../../examples/rbac.yaml"))
            .expect("examples/rbac.yaml is YAML");
    let find = |kind: &str| {
        documents
            .iter()
            .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("examples/rbac.yaml has no {kind} {name}"))
    };
    let role: Role = serde_json::from_value(find("Role")).expect("a Role");
    let binding: RoleBinding = serde_json::from_value(find("RoleBinding")).expect("a RoleBinding");
    assert_eq!(binding.role_ref.name, name);
    let subject = binding.subjects.expect("a subject")[0].clone();
    (role, subject)
}

/// A client of `cluster` with exactly `role`, bound to `subject` (as `examples/rbac.yaml`
/// binds it).
pub async fn client_with_role(
    cluster: &TestCluster,
    role: &Role,
    subject: &Subject,
) -> kube::Client {
    let identity = cluster
        .grant(role, subject)
        .await
        .expect("the Role is granted");
    cluster.client_as(&identity)
}

/// `KubeLocker` whose client has exactly Role `lockheed` of `examples/rbac.yaml`.
pub struct KubeRbac {
    pub cluster: TestCluster,
    locker: KubeLocker,
}

impl Harness for KubeRbac {
    type Locker = KubeLocker;

    async fn new() -> Self {
        let (role, subject) = rbac_role("lockheed");
        let cluster = cluster().await;
        let client = client_with_role(&cluster, &role, &subject).await;
        let locker = kube_locker(&cluster, client);
        Self { cluster, locker }
    }

    fn locker(&self) -> KubeLocker {
        self.locker.clone()
    }

    fn cut_off(&self) {
        self.cluster.cut_off();
    }

    fn restore(&self) {
        self.cluster.restore();
    }

    async fn store_raw(&self, name: &str, json: &str) {
        store_raw(&self.cluster, name, json).await;
    }
}

/// The lock names the behavioural suite uses (that are not holder names too).
pub const SUITE_LOCKS: &[&str] = &[
    "a", "b", "broken", "catalog", "d", "db", "f", "fine", "idle", "long", "pool", "q", "r", "sem",
    "shared", "short", "w", "web", "x",
];

/// The lock names the suite reads without ever taking them: named by the Role, not created.
const SUITE_ABSENT_LOCKS: &[&str] = &["never-taken", "nothing-here"];

/// `KubeLocker` whose client may only `get` and `update` the suite's locks' ConfigMaps,
/// which an administrator created beforehand (no list, no watch, no create): Role
/// `lockheed-locks` of `examples/rbac.yaml`, its `resourceNames` set to the suite's locks.
pub struct KubeNamed {
    pub cluster: TestCluster,
    locker: KubeLocker,
}

impl Harness for KubeNamed {
    type Locker = KubeLocker;

    async fn new() -> Self {
        use k8s_openapi::api::core::v1::ConfigMap;
        use kube::api::{Api, PostParams};
        let (mut role, subject) = rbac_role("lockheed-locks");
        let names: Vec<String> = SUITE_LOCKS
            .iter()
            .map(|n| format!("lockheed-{n}"))
            .collect();
        for rule in role.rules.as_mut().expect("rules") {
            assert_eq!(rule.verbs, ["get", "update"], "only get and update");
            let absent = SUITE_ABSENT_LOCKS.iter().map(|n| format!("lockheed-{n}"));
            rule.resource_names = Some(names.iter().cloned().chain(absent).collect());
        }
        let cluster = cluster().await;
        let client = client_with_role(&cluster, &role, &subject).await;
        let admin: Api<ConfigMap> = Api::namespaced(cluster.client(), cluster.namespace());
        for name in &names {
            let mut cm = ConfigMap::default();
            cm.metadata.name = Some(name.clone());
            admin
                .create(&PostParams::default(), &cm)
                .await
                .expect("the administrator pre-creates the lock's ConfigMap");
        }
        let locker = kube_locker(&cluster, client);
        Self { cluster, locker }
    }

    fn locker(&self) -> KubeLocker {
        self.locker.clone()
    }

    fn cut_off(&self) {
        self.cluster.cut_off();
    }

    fn restore(&self) {
        self.cluster.restore();
    }

    async fn store_raw(&self, name: &str, json: &str) {
        store_raw(&self.cluster, name, json).await;
    }
}

/// `LeaseLocker` on the test's server.
pub struct Leases {
    pub cluster: TestCluster,
    locker: LeaseLocker,
}

impl Harness for Leases {
    type Locker = LeaseLocker;

    async fn new() -> Self {
        let cluster = cluster().await;
        let locker = LeaseLocker::new(cluster.client(), cluster.namespace())
            .with_clock(Arc::new(TokioClock::new()));
        Self { cluster, locker }
    }

    fn locker(&self) -> LeaseLocker {
        self.locker.clone()
    }

    fn cut_off(&self) {
        self.cluster.cut_off();
    }

    fn restore(&self) {
        self.cluster.restore();
    }

    async fn store_raw(&self, name: &str, json: &str) {
        // A Lease has no state document: the suite's tests that store one do not run here
        // (see `suite!`); the Lease formats have their own tests (`lease_format.rs`).
        panic!("no raw state for Lease {name}: {json}");
    }
}
