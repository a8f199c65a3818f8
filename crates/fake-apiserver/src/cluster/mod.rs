//! One test, two servers: [`TestCluster`] is the fake server or a real cluster, chosen by the
//! environment, behind one interface.
//!
//! The fake server is fast and can inject faults; a real kube-apiserver in front of etcd is
//! the truth. A suite written against `TestCluster` runs on both: the fake server by default,
//! the cluster of `KUBECONFIG` (in a fresh namespace per test) when the environment asks for
//! it. Tests that need what only the fake server offers (faults, request counters, the commit
//! log) reach it through [`TestCluster::fake_server`].

mod real;
mod record;
mod still;
mod tap;

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use k8s_openapi::api::rbac::v1::{Role, Subject};
use kube::config::Kubeconfig;

use self::real::Real;
use crate::{AccessControl, Clock, Commit, FakeApiServer, RequestCounts, StartError};

/// The environment variable that chooses the server of [`TestCluster::start`]: `fake` or
/// `real`. Unset, it is `real` inside `scripts/control-plane` (which sets
/// [`CONTROL_PLANE_VAR`]) and `fake` everywhere else.
pub const CLUSTER_VAR: &str = "LOCKHEED_TEST_CLUSTER";

/// Set by `scripts/control-plane` to its state directory while it runs a command.
pub const CONTROL_PLANE_VAR: &str = "LOCKHEED_CONTROL_PLANE";

/// How long a write to a real server keeps a paused Tokio clock still after its answer, so that
/// its watch event arrives before simulated time moves on (see [`TestCluster::client`]).
const WATCH_GRACE: Duration = Duration::from_millis(40);

/// How many commits the fake server of [`TestCluster::fake`] keeps in its commit log.
pub const FAKE_COMMIT_LOG: usize = 20_000;

/// Which server a [`TestCluster`] runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServerKind {
    /// The in-process [`FakeApiServer`].
    Fake,
    /// The cluster of `KUBECONFIG` (or `~/.kube/config`).
    Real,
}

impl ServerKind {
    /// The choice the environment makes (see [`CLUSTER_VAR`]).
    ///
    /// # Panics
    ///
    /// If [`CLUSTER_VAR`] has a value other than `fake` or `real`: a typo must not silently
    /// run a suite on the wrong server.
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed_fake_apiserver::{CLUSTER_VAR, ServerKind};
    ///
    /// if std::env::var_os(CLUSTER_VAR).is_none() && std::env::var_os("LOCKHEED_CONTROL_PLANE").is_none() {
    ///     assert_eq!(ServerKind::from_env(), ServerKind::Fake);
    /// }
    /// ```
    #[must_use]
    pub fn from_env() -> Self {
        match std::env::var(CLUSTER_VAR).as_deref() {
            Ok("fake") => Self::Fake,
            Ok("real") => Self::Real,
            Ok(other) => panic!("{CLUSTER_VAR}={other:?}: expected \"fake\" or \"real\""),
            Err(_) if std::env::var_os(CONTROL_PLANE_VAR).is_some() => Self::Real,
            Err(_) => Self::Fake,
        }
    }
}

/// Why a [`TestCluster`] could not be had.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TestClusterError {
    /// The fake server did not start.
    #[error("the fake API server did not start")]
    Fake(#[from] StartError),
    /// No usable kubeconfig for the real cluster.
    #[error("no usable kubeconfig for the real cluster (KUBECONFIG or ~/.kube/config)")]
    Kubeconfig(#[from] kube::config::KubeconfigError),
    /// A request to the real cluster failed (creating the test's namespace, a Role, a
    /// RoleBinding).
    #[error("the real cluster refused {what}")]
    Kube {
        /// What was being done.
        what: String,
        /// kube's error.
        #[source]
        source: kube::Error,
    },
}

/// Who a client acts as: see [`TestCluster::grant`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The user name the server sees (`system:serviceaccount:<ns>:<name>` for a
    /// ServiceAccount).
    pub user: String,
    /// The groups the server sees.
    pub groups: Vec<String>,
    /// The fake server's bearer token for this identity.
    token: String,
}

/// The server of one test: the in-process fake, or a namespace of its own on a real cluster.
///
/// # Examples
///
/// ```
/// use k8s_openapi::api::core::v1::ConfigMap;
/// use kube::Api;
/// use lockheed_fake_apiserver::TestCluster;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let cluster = TestCluster::start().await?; // the fake server unless the environment says
/// let api: Api<ConfigMap> = Api::namespaced(cluster.client(), cluster.namespace());
/// assert!(api.get_opt("nothing-here").await?.is_none());
/// if let Some(server) = cluster.fake_server() {
///     assert_eq!(server.counts().total(), 1); // what only the fake server can tell
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct TestCluster {
    server: Server,
}

#[derive(Debug)]
enum Server {
    Fake {
        server: FakeApiServer,
        /// Every grant so far: the fake server's access control is replaced as a whole.
        access: Mutex<Option<AccessControl>>,
    },
    Real(Box<Real>),
}

impl TestCluster {
    /// The server the environment chooses ([`ServerKind::from_env`]): [`fake`](Self::fake)
    /// or [`real`](Self::real).
    ///
    /// # Errors
    ///
    /// As [`fake`](Self::fake) or [`real`](Self::real).
    ///
    /// # Cancel safety
    ///
    /// Cancelling it may leave an empty namespace behind on a real cluster.
    pub async fn start() -> Result<Self, TestClusterError> {
        match ServerKind::from_env() {
            ServerKind::Fake => Self::fake().await,
            ServerKind::Real => Self::real().await,
        }
    }

    /// A fake server of its own, with the defaults and a commit log of the newest
    /// [`FAKE_COMMIT_LOG`] commits; its namespace is `default`.
    ///
    /// # Errors
    ///
    /// [`TestClusterError::Fake`] when it cannot listen on loopback.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn fake() -> Result<Self, TestClusterError> {
        let server = FakeApiServer::builder()
            .commit_log(FAKE_COMMIT_LOG)
            .start()
            .await?;
        Ok(Self::on(server))
    }

    /// A fake server the caller built (with a clock, faults, a commit log...).
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed_fake_apiserver::{FakeApiServer, TestCluster};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = FakeApiServer::builder().commit_log_unbounded().start().await?;
    /// let cluster = TestCluster::on(server);
    /// assert_eq!(cluster.namespace(), "default");
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn on(server: FakeApiServer) -> Self {
        Self {
            server: Server::Fake {
                server,
                access: Mutex::new(None),
            },
        }
    }

    /// A fresh namespace on the real cluster of `KUBECONFIG` (or `~/.kube/config`), named
    /// `lockheed-test-<random>` and labelled `lockheed-test`; it is left behind when the test
    /// ends (a cluster without controllers never finishes deleting a namespace anyway).
    ///
    /// Its clients keep a paused Tokio clock still while they wait for the server (see
    /// [`client`](Self::client)).
    ///
    /// # Errors
    ///
    /// [`TestClusterError::Kubeconfig`] without a usable kubeconfig,
    /// [`TestClusterError::Kube`] when the namespace cannot be created.
    ///
    /// # Cancel safety
    ///
    /// Cancelling it may leave an empty namespace behind.
    pub async fn real() -> Result<Self, TestClusterError> {
        Ok(Self {
            server: Server::Real(Box::new(Real::start(WATCH_GRACE).await?)),
        })
    }

    /// Which server this is.
    #[must_use]
    pub fn kind(&self) -> ServerKind {
        match self.server {
            Server::Fake { .. } => ServerKind::Fake,
            Server::Real(_) => ServerKind::Real,
        }
    }

    /// Whether this is a real cluster.
    #[must_use]
    pub fn is_real(&self) -> bool {
        self.kind() == ServerKind::Real
    }

    /// The fake server, for what only it can do (faults, counters, the commit log); `None` on
    /// a real cluster.
    #[must_use]
    pub fn fake_server(&self) -> Option<&FakeApiServer> {
        match &self.server {
            Server::Fake { server, .. } => Some(server),
            Server::Real(_) => None,
        }
    }

    /// The namespace the test's objects belong in: `default` on the fake server, a fresh one on
    /// a real cluster.
    #[must_use]
    pub fn namespace(&self) -> &str {
        match &self.server {
            Server::Fake { .. } => "default",
            Server::Real(real) => real.namespace(),
        }
    }

    /// A client with every right.
    ///
    /// On a real cluster it keeps a paused Tokio clock still while a request is in flight,
    /// and for a few milliseconds of real time after a write (so that the write's watch event
    /// arrives first): seen from `#[tokio::test(start_paused = true)]`, the real server answers
    /// in no time, as the in-process fake does. Watches do not hold the clock.
    #[must_use]
    pub fn client(&self) -> kube::Client {
        match &self.server {
            Server::Fake { server, .. } => server.client(),
            Server::Real(real) => real.client(None),
        }
    }

    /// A client of its own with every right: its own connections, as another process would
    /// have. On the fake server it carries the bearer token `name`, so that per-client faults
    /// ([`RequestMatcher::token`](crate::RequestMatcher::token),
    /// [`FakeApiServer::blackhole_client`]) and the request log can tell it apart.
    #[must_use]
    pub fn client_for(&self, name: &str) -> kube::Client {
        match &self.server {
            Server::Fake { server, .. } => server.client_for_token(name),
            Server::Real(real) => real.client(None),
        }
    }

    /// Gives `subject` exactly the rights of `role` in the test's namespace, and returns who
    /// that subject is to the server, for [`client_as`](Self::client_as) and
    /// [`kubeconfig_as`](Self::kubeconfig_as).
    ///
    /// On a real cluster, `role` and a RoleBinding of it to `subject` are created in the
    /// namespace, and clients impersonate the subject (as the administrator may), so that the
    /// server's own RBAC decides every request. On the fake server, the subject gets a token
    /// with `role`'s rules ([`AccessControl`]); a Group subject is a user named after the
    /// group there.
    ///
    /// # Errors
    ///
    /// [`TestClusterError::Kube`] when the real cluster refuses the Role or RoleBinding.
    ///
    /// # Cancel safety
    ///
    /// Cancelling it may leave the Role without its binding.
    pub async fn grant(
        &self,
        role: &Role,
        subject: &Subject,
    ) -> Result<Identity, TestClusterError> {
        let identity = self.identity(subject);
        match &self.server {
            Server::Fake { server, access } => {
                let mut access = access.lock().unwrap_or_else(PoisonError::into_inner);
                let granted = access
                    .take()
                    .unwrap_or_default()
                    .user(&identity.token, &identity.user)
                    .role(&identity.token, role);
                server.set_access_control(Some(granted.clone()));
                *access = Some(granted);
            }
            Server::Real(real) => real.bind(role, subject).await?,
        }
        Ok(identity)
    }

    fn identity(&self, subject: &Subject) -> Identity {
        let namespace = subject.namespace.as_deref().unwrap_or(self.namespace());
        let (user, groups) = match subject.kind.as_str() {
            "ServiceAccount" => (
                format!("system:serviceaccount:{namespace}:{}", subject.name),
                vec![
                    "system:serviceaccounts".to_owned(),
                    format!("system:serviceaccounts:{namespace}"),
                    "system:authenticated".to_owned(),
                ],
            ),
            "Group" => (
                format!("member-of-{}", subject.name),
                vec![subject.name.clone(), "system:authenticated".to_owned()],
            ),
            _ => (
                subject.name.clone(),
                vec!["system:authenticated".to_owned()],
            ),
        };
        let token = match subject.kind.as_str() {
            "Group" => subject.name.clone(),
            _ => user.clone(),
        };
        Identity {
            user,
            groups,
            token,
        }
    }

    /// A client acting as `identity` (from [`grant`](Self::grant)).
    #[must_use]
    pub fn client_as(&self, identity: &Identity) -> kube::Client {
        match &self.server {
            Server::Fake { server, .. } => server.client_for_token(&identity.token),
            Server::Real(real) => real.client(Some(identity)),
        }
    }

    /// A kubeconfig for the administrator, whose context's namespace is the test's: for
    /// command lines and other programs.
    #[must_use]
    pub fn kubeconfig(&self) -> Kubeconfig {
        match &self.server {
            Server::Fake { server, .. } => server.kubeconfig(),
            Server::Real(real) => real.kubeconfig(None),
        }
    }

    /// A kubeconfig acting as `identity`, whose context's namespace is the test's.
    #[must_use]
    pub fn kubeconfig_as(&self, identity: &Identity) -> Kubeconfig {
        match &self.server {
            Server::Fake { server, .. } => {
                let mut kubeconfig = server.kubeconfig();
                for user in &mut kubeconfig.auth_infos {
                    if let Some(auth) = user.auth_info.as_mut() {
                        auth.token = Some(identity.token.clone().into());
                    }
                }
                kubeconfig
            }
            Server::Real(real) => real.kubeconfig(Some(identity)),
        }
    }

    /// Writes [`kubeconfig`](Self::kubeconfig) to `path` (`KUBECONFIG=<path>`).
    ///
    /// # Errors
    ///
    /// When the file cannot be written.
    pub fn write_kubeconfig(&self, path: impl AsRef<Path>) -> std::io::Result<()> {
        write(&self.kubeconfig(), path.as_ref())
    }

    /// Writes [`kubeconfig_as`](Self::kubeconfig_as) to `path`.
    ///
    /// # Errors
    ///
    /// When the file cannot be written.
    pub fn write_kubeconfig_as(
        &self,
        identity: &Identity,
        path: impl AsRef<Path>,
    ) -> std::io::Result<()> {
        write(&self.kubeconfig_as(identity), path.as_ref())
    }

    /// How many requests of each verb this test made since the start or the last
    /// [`reset_counters`](Self::reset_counters): what the fake server received, or on a real
    /// cluster (shared by other tests) what this `TestCluster`'s clients sent.
    #[must_use]
    pub fn counts(&self) -> RequestCounts {
        match &self.server {
            Server::Fake { server, .. } => server.counts(),
            Server::Real(real) => real.tap().counts(),
        }
    }

    /// Sets [`counts`](Self::counts) back to zero.
    pub fn reset_counters(&self) {
        match &self.server {
            Server::Fake { server, .. } => server.reset_counters(),
            Server::Real(real) => real.tap().reset(),
        }
    }

    /// Starts the commit log of the test's namespace, for
    /// [`commits`](Self::commits): on a real cluster, watches of its ConfigMaps and Leases
    /// from now on, each event stamped with `clock` when it arrives. The fake server keeps its
    /// own log (with its own clock), so there this does nothing.
    ///
    /// A watch sees a commit a little after it happened (a few milliseconds on loopback; after
    /// kube-apiserver was stopped or restarted, seconds), so a commit's time
    /// ([`Commit::at`]) on a real cluster is when it was seen. Each commit also says when it
    /// was made at the earliest ([`Commit::earliest`]), from reads of the server's revision
    /// every 100 ms: a check that compares commit times with what clients did uses both. On a
    /// paused clock those reads step simulated time 100 ms at a time.
    ///
    /// # Errors
    ///
    /// [`TestClusterError::Kube`] when the real cluster refuses the list or the watch.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: nothing is recorded until it returns.
    pub async fn record_commits(&self, clock: Arc<dyn Clock>) -> Result<(), TestClusterError> {
        match &self.server {
            Server::Fake { .. } => Ok(()),
            Server::Real(real) => real.record(clock).await,
        }
    }

    /// Every commit of the test's namespace so far, oldest first: the fake server's commit
    /// log, or on a real cluster what [`record_commits`](Self::record_commits) has seen.
    #[must_use]
    pub fn commits(&self) -> Vec<Commit> {
        match &self.server {
            Server::Fake { server, .. } => server.commits(),
            Server::Real(real) => real.commits(),
        }
    }

    /// Commits that were lost: on the fake server, the oldest ones its bounded log dropped;
    /// on a real cluster, how often a watch of the commit log could not resume where it
    /// stopped (its revision was compacted, or kube-apiserver restarted) and what an object
    /// of the namespace went through meanwhile could not be read back (it was deleted, or
    /// history was compacted), counted once per such object. A history checked with gaps is
    /// incomplete.
    #[must_use]
    pub fn commit_gaps(&self) -> u64 {
        match &self.server {
            Server::Fake { server, .. } => server.commits_dropped(),
            Server::Real(real) => real.commit_gaps(),
        }
    }

    /// Cuts this test's clients off: every new request fails as if the server refused
    /// connections. On the fake server this is [`FakeApiServer::partition`]; on a real
    /// cluster (shared by other tests) the clients of this `TestCluster` refuse their own
    /// requests, and watches already open go on.
    pub fn cut_off(&self) {
        match &self.server {
            Server::Fake { server, .. } => server.partition(),
            Server::Real(real) => real.tap().cut(true),
        }
    }

    /// Ends [`cut_off`](Self::cut_off).
    pub fn restore(&self) {
        match &self.server {
            Server::Fake { server, .. } => server.heal(),
            Server::Real(real) => real.tap().cut(false),
        }
    }
}

fn write(kubeconfig: &Kubeconfig, path: &Path) -> std::io::Result<()> {
    let document = serde_json::to_string_pretty(kubeconfig).map_err(std::io::Error::other)?;
    std::fs::write(path, document)
}
