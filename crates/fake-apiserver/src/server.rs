//! [`FakeApiServer`]: starting, stopping, and the handles tests use to steer and observe it.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use kube::config::{
    AuthInfo, Cluster, Context, Kubeconfig, NamedAuthInfo, NamedCluster, NamedContext,
};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::access::{ADMIN_TOKEN, AccessControl};
use super::commits::Commit;
use super::faults::{ClientCuts, Fault, Faults, PartitionKind};
use super::log::{RequestCounts, RequestLog, RequestRecord};
use super::resources::ResourceType;
use super::status::ApiError;
use super::store::Store;
use crate::clock::{Clock, SystemClock};

/// Why the fake API server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// Binding the listening socket failed (the port is taken, for example).
    #[error("cannot listen on 127.0.0.1:{port}")]
    Bind {
        /// The port asked for (0: any).
        port: u16,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
}

/// State shared by the server's tasks and its handle.
#[derive(Debug)]
pub(crate) struct Shared {
    store: Mutex<Store>,
    log: Mutex<RequestLog>,
    faults: Mutex<Faults>,
    access: Mutex<Option<AccessControl>>,
    /// Bumped to close every open watch.
    pub(crate) watch_closer: watch::Sender<u64>,
    /// `false` during a blackhole partition.
    pub(crate) link_up: watch::Sender<bool>,
    /// Bumped to let hung requests go (they are then dropped).
    pub(crate) hang_release: watch::Sender<u64>,
    /// Clients cut off by a blackhole of their own, by bearer token.
    pub(crate) client_cuts: watch::Sender<ClientCuts>,
    /// Cancelled when the handle is dropped: everything stops for good.
    pub(crate) shutdown: CancellationToken,
    /// The running incarnation of the server (see [`FakeApiServer::stop`]).
    serving: Mutex<Serving>,
    pub(crate) addr: SocketAddr,
    pub(crate) bookmark_interval: Duration,
    pub(crate) default_watch_timeout: Duration,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks cannot leave the data half-changed in a way
    // that matters to a test double; keep serving.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    pub(crate) fn store(&self) -> MutexGuard<'_, Store> {
        lock(&self.store)
    }

    /// The store, for a request by `actor` (whom the commit log names for its changes).
    pub(crate) fn store_as(&self, actor: &super::commits::Actor) -> MutexGuard<'_, Store> {
        let mut store = self.store();
        store.actor = actor.clone();
        store
    }

    pub(crate) fn log(&self) -> MutexGuard<'_, RequestLog> {
        lock(&self.log)
    }

    pub(crate) fn faults(&self) -> MutexGuard<'_, Faults> {
        lock(&self.faults)
    }

    pub(crate) fn access(&self) -> MutexGuard<'_, Option<AccessControl>> {
        lock(&self.access)
    }

    fn close_watches(&self) {
        self.watch_closer.send_modify(|epoch| *epoch += 1);
    }

    /// What stops the current incarnation's connections and watches: cancelled by
    /// [`FakeApiServer::stop`] and when the handle is dropped.
    pub(crate) fn serving(&self) -> CancellationToken {
        lock(&self.serving).stopped.clone()
    }
}

/// One incarnation of the server: its accept loop, and what stops it.
#[derive(Debug)]
struct Serving {
    /// Cancelled when the server stops serving (stop or shutdown): its connections close.
    stopped: CancellationToken,
    /// Stopped ([`FakeApiServer::stop`]): new connections are closed at once.
    down: bool,
}

/// Which commits the server logs.
#[derive(Debug, Clone, Copy)]
enum CommitLogSize {
    Off,
    Newest(usize),
    Unbounded,
}

/// Options for a [`FakeApiServer`]; [`FakeApiServer::start`] uses the defaults.
#[derive(Debug)]
#[must_use = "the builder does nothing until `start` is called"]
pub struct FakeApiServerBuilder {
    port: u16,
    seed: u64,
    clock: Arc<dyn Clock>,
    watch_history: usize,
    bookmark_interval: Duration,
    default_watch_timeout: Duration,
    log_capacity: usize,
    access: Option<AccessControl>,
    resources: Vec<ResourceType>,
    commit_log: CommitLogSize,
}

impl Default for FakeApiServerBuilder {
    fn default() -> Self {
        Self {
            port: 0,
            seed: 0,
            clock: Arc::new(SystemClock),
            watch_history: 1000,
            bookmark_interval: Duration::from_secs(60),
            default_watch_timeout: Duration::from_secs(1800),
            log_capacity: 100_000,
            access: None,
            resources: Vec::new(),
            commit_log: CommitLogSize::Off,
        }
    }
}

impl FakeApiServerBuilder {
    /// The port to listen on. Default: 0, any free port.
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed_fake_apiserver::FakeApiServer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port(); // a free port
    /// let server = FakeApiServer::builder().port(port).start().await?;
    /// assert_eq!(server.addr().port(), port);
    /// # Ok(())
    /// # }
    /// ```
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// The seed of everything random the server does (uids, generated names, latency within a
    /// range). Default: 0.
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed_fake_apiserver::FakeApiServer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = FakeApiServer::builder().seed(42).start().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// The clock for `creationTimestamp`. Default: [`SystemClock`]. Timers (latency, watch
    /// timeouts, bookmarks, partitions) run on Tokio's clock, so a paused test clock
    /// controls them.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use chrono::{DateTime, Utc};
    /// use k8s_openapi::api::core::v1::ConfigMap;
    /// use kube::api::{Api, PostParams};
    /// use lockheed_fake_apiserver::{Clock, FakeApiServer};
    ///
    /// #[derive(Debug)]
    /// struct Frozen(DateTime<Utc>);
    /// impl Clock for Frozen {
    ///     fn now(&self) -> DateTime<Utc> {
    ///         self.0
    ///     }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let clock = Frozen("2026-11-22T10:00:00Z".parse()?);
    /// let server = FakeApiServer::builder().clock(Arc::new(clock)).start().await?;
    /// let api: Api<ConfigMap> = Api::default_namespaced(server.client());
    /// let mut cm = ConfigMap::default();
    /// cm.metadata.name = Some("demo".into());
    /// let created = api.create(&PostParams::default(), &cm).await?;
    /// let stamp = serde_json::to_value(created.metadata.creation_timestamp)?;
    /// assert_eq!(stamp, "2026-11-22T10:00:00Z");
    /// # Ok(())
    /// # }
    /// ```
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// How many events the watch history keeps (like etcd before compaction): a watch from a
    /// resourceVersion older than the history gets `410 Expired`. Default: 1000.
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed_fake_apiserver::FakeApiServer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = FakeApiServer::builder().watch_history(10).start().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn watch_history(mut self, events: usize) -> Self {
        self.watch_history = events;
        self
    }

    /// How often a watch with `allowWatchBookmarks` gets a `BOOKMARK`. Default: 60 s, about
    /// what kube-apiserver does.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use lockheed_fake_apiserver::FakeApiServer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let builder = FakeApiServer::builder().bookmark_interval(Duration::from_secs(1));
    /// let server = builder.start().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn bookmark_interval(mut self, interval: Duration) -> Self {
        self.bookmark_interval = interval.max(Duration::from_millis(1));
        self
    }

    /// How long a watch without `timeoutSeconds` lasts. Default: 30 minutes (kube-apiserver
    /// picks 30 to 60).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use lockheed_fake_apiserver::FakeApiServer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let builder = FakeApiServer::builder().default_watch_timeout(Duration::from_secs(5));
    /// let server = builder.start().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn default_watch_timeout(mut self, timeout: Duration) -> Self {
        self.default_watch_timeout = timeout;
        self
    }

    /// How many requests the log keeps (the counters count all). Default: 100 000.
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed_fake_apiserver::{FakeApiServer, Verb};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = FakeApiServer::builder().request_log_capacity(0).start().await?;
    /// server.client().apiserver_version().await?;
    /// assert!(server.requests().is_empty());
    /// assert_eq!(server.counts().get(Verb::Discovery), 1);
    /// # Ok(())
    /// # }
    /// ```
    pub fn request_log_capacity(mut self, records: usize) -> Self {
        self.log_capacity = records;
        self
    }

    /// Turns access control on from the start. Default: off, every request is allowed.
    ///
    /// # Examples
    ///
    /// ```
    /// use k8s_openapi::api::core::v1::ConfigMap;
    /// use kube::Api;
    /// use lockheed_fake_apiserver::{AccessControl, FakeApiServer};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let access = AccessControl::new().user("token-a", "alice"); // alice may do nothing
    /// let server = FakeApiServer::builder().access_control(access).start().await?;
    /// let api: Api<ConfigMap> = Api::default_namespaced(server.client_for_token("token-a"));
    /// let err = api.get_opt("demo").await.unwrap_err();
    /// assert!(matches!(err, kube::Error::Api(status) if status.code == 403));
    /// # Ok(())
    /// # }
    /// ```
    pub fn access_control(mut self, access: AccessControl) -> Self {
        self.access = Some(access);
        self
    }

    /// Registers a resource type, so that discovery lists it and its kind is known before
    /// the first object is created.
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed_fake_apiserver::{FakeApiServer, ResourceType};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let widgets = ResourceType::namespaced("example.com", "v1", "widgets", "Widget");
    /// let server = FakeApiServer::builder().resource(widgets).start().await?;
    /// let list = server.client().list_api_group_resources("example.com/v1").await?;
    /// assert_eq!(list.resources[0].kind, "Widget");
    /// # Ok(())
    /// # }
    /// ```
    pub fn resource(mut self, resource: ResourceType) -> Self {
        self.resources.push(resource);
        self
    }

    /// Keeps a log of every commit (revision, time, object, operation, the object as stored,
    /// and the token and user of the request that made it): the newest `capacity` commits,
    /// see [`FakeApiServer::commits`]. Default: no commit log.
    ///
    /// # Examples
    ///
    /// ```
    /// use k8s_openapi::api::core::v1::ConfigMap;
    /// use kube::api::{Api, PostParams};
    /// use lockheed_fake_apiserver::{FakeApiServer, Operation};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = FakeApiServer::builder().commit_log(1000).start().await?;
    /// let api: Api<ConfigMap> = Api::default_namespaced(server.client_for_token("token-a"));
    /// let cm: ConfigMap = serde_json::from_str(r#"{"metadata": {"name": "demo"}}"#)?;
    /// api.create(&PostParams::default(), &cm).await?;
    /// let commits = server.commits();
    /// assert_eq!((commits[0].operation, commits[0].name.as_str()), (Operation::Create, "demo"));
    /// assert_eq!(commits[0].token.as_deref(), Some("token-a"));
    /// # Ok(())
    /// # }
    /// ```
    pub fn commit_log(mut self, capacity: usize) -> Self {
        self.commit_log = CommitLogSize::Newest(capacity);
        self
    }

    /// Keeps a log of every commit, however many (see [`commit_log`](Self::commit_log)): for
    /// a long run, take them as they come with [`FakeApiServer::drain_commits`] so that the
    /// log stays small. Default: no commit log.
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed_fake_apiserver::FakeApiServer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = FakeApiServer::builder().commit_log_unbounded().start().await?;
    /// server.create_namespace("team-a");
    /// assert_eq!(server.drain_commits()[0].name, "team-a");
    /// assert!(server.commits().is_empty()); // drained
    /// # Ok(())
    /// # }
    /// ```
    pub fn commit_log_unbounded(mut self) -> Self {
        self.commit_log = CommitLogSize::Unbounded;
        self
    }

    /// Starts the server on the current Tokio runtime.
    ///
    /// # Errors
    ///
    /// [`StartError::Bind`] when the port cannot be bound.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future before it completes leaves nothing running.
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed_fake_apiserver::FakeApiServer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = FakeApiServer::builder().seed(7).start().await?;
    /// assert!(server.addr().ip().is_loopback());
    /// # Ok(())
    /// # }
    /// ```
    pub async fn start(self) -> Result<FakeApiServer, StartError> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, self.port))
            .await
            .map_err(|source| StartError::Bind {
                port: self.port,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| StartError::Bind {
            port: self.port,
            source,
        })?;
        let mut store = Store::new(self.clock, self.seed, self.watch_history);
        for rt in self.resources {
            store.registry.register(rt);
        }
        match self.commit_log {
            CommitLogSize::Off => {}
            CommitLogSize::Newest(capacity) => store.keep_commits(Some(capacity)),
            CommitLogSize::Unbounded => store.keep_commits(None),
        }
        let shutdown = CancellationToken::new();
        let stopped = shutdown.child_token();
        let shared = Arc::new(Shared {
            store: Mutex::new(store),
            log: Mutex::new(RequestLog::new(self.log_capacity)),
            faults: Mutex::new(Faults::new(self.seed.wrapping_add(1))),
            access: Mutex::new(self.access),
            watch_closer: watch::channel(0).0,
            link_up: watch::channel(true).0,
            hang_release: watch::channel(0).0,
            client_cuts: watch::channel(ClientCuts::new()).0,
            shutdown,
            serving: Mutex::new(Serving {
                stopped,
                down: false,
            }),
            addr,
            bookmark_interval: self.bookmark_interval,
            default_watch_timeout: self.default_watch_timeout,
        });
        tokio::spawn(accept_loop(Arc::clone(&shared), listener));
        tracing::debug!(target: "lockheed_fake_apiserver", %addr, "fake API server listening");
        Ok(FakeApiServer { shared })
    }
}

/// Accepts connections until `stopped` (the listening socket closes with it).
async fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    loop {
        let stream = tokio::select! {
            () = shared.shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(err) => {
                    // Out of file descriptors, for example: wait a little and go on.
                    tracing::warn!(target: "lockheed_fake_apiserver", %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let (stopped, down) = {
            let serving = lock(&shared.serving);
            (serving.stopped.clone(), serving.down)
        };
        if down || shared.faults().partitioned_as() == Some(PartitionKind::Refuse) {
            // Refused: the connection closes before a byte is read. (In a blackhole it is
            // served, and its requests wait.)
            drop(stream);
            continue;
        }
        tokio::spawn(super::http::serve_connection(
            Arc::clone(&shared),
            stream,
            stopped.clone(),
        ));
    }
}

/// A Kubernetes API server in this process, for tests. See the [module docs](super) for
/// what it emulates and what it does not.
///
/// It runs on the Tokio runtime that started it and stops when dropped: open connections and
/// watches are closed, and later requests are refused.
#[derive(Debug)]
pub struct FakeApiServer {
    shared: Arc<Shared>,
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.shared.shutdown.cancel();
    }
}

impl FakeApiServer {
    /// Starts a server with the default options on a free port of 127.0.0.1.
    ///
    /// # Errors
    ///
    /// [`StartError::Bind`] when no port can be bound.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future before it completes leaves nothing running.
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed_fake_apiserver::FakeApiServer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = FakeApiServer::start().await?;
    /// let version = server.client().apiserver_version().await?;
    /// assert_eq!(version.major, "1");
    /// # Ok(())
    /// # }
    /// ```
    pub async fn start() -> Result<Self, StartError> {
        Self::builder().start().await
    }

    /// Options for a server.
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed_fake_apiserver::FakeApiServer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = FakeApiServer::builder().seed(1).start().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn builder() -> FakeApiServerBuilder {
        FakeApiServerBuilder::default()
    }

    /// The address the server listens on.
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed_fake_apiserver::FakeApiServer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = FakeApiServer::start().await?;
    /// assert!(server.addr().ip().is_loopback());
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// The server's URL, `http://127.0.0.1:<port>`.
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed_fake_apiserver::FakeApiServer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = FakeApiServer::start().await?;
    /// assert_eq!(server.url(), format!("http://127.0.0.1:{}", server.addr().port()));
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn url(&self) -> String {
        format!("http://{}", self.shared.addr)
    }

    /// A client configuration for the server as the administrator, with `default` as the
    /// default namespace and kube's defaults otherwise (including its retries of 429, 503 and
    /// 504; set `default_retry` to `false` to see every injected failure).
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed_fake_apiserver::FakeApiServer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = FakeApiServer::start().await?;
    /// let mut config = server.config();
    /// config.default_retry = false; // see every injected 503
    /// let client = kube::Client::try_from(config)?;
    /// assert_eq!(client.default_namespace(), "default");
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn config(&self) -> kube::Config {
        self.config_for_token(ADMIN_TOKEN)
    }

    /// A client configuration that authenticates with `token` (see [`AccessControl`]).
    ///
    /// # Panics
    ///
    /// Never: the server's URL is always a valid URI.
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed_fake_apiserver::{AccessControl, FakeApiServer};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = FakeApiServer::builder()
    ///     .access_control(AccessControl::new().user("token-a", "alice"))
    ///     .start()
    ///     .await?;
    /// let client = kube::Client::try_from(server.config_for_token("token-a"))?;
    /// client.apiserver_version().await?; // discovery is open to every user
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn config_for_token(&self, token: &str) -> kube::Config {
        let url = self.url().parse().expect("the server URL is a valid URI");
        let mut config = kube::Config::new(url);
        config.auth_info.token = Some(secrecy::SecretString::from(token.to_owned()));
        config
    }

    /// A client for the server as the administrator.
    ///
    /// # Panics
    ///
    /// Never for this configuration (plain HTTP with a token); `kube::Client::try_from` only
    /// fails on TLS and authentication plugin set-up.
    ///
    /// # Examples
    ///
    /// ```
    /// use k8s_openapi::api::core::v1::ConfigMap;
    /// use kube::Api;
    /// use lockheed_fake_apiserver::FakeApiServer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = FakeApiServer::start().await?;
    /// let api: Api<ConfigMap> = Api::default_namespaced(server.client());
    /// assert!(api.get_opt("missing").await?.is_none());
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn client(&self) -> kube::Client {
        Self::client_from(self.config())
    }

    /// A client that authenticates with `token` (see [`AccessControl`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed_fake_apiserver::{AccessControl, FakeApiServer};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let access = AccessControl::new().user("token-a", "alice");
    /// let server = FakeApiServer::builder().access_control(access).start().await?;
    /// server.client_for_token("token-a").apiserver_version().await?;
    /// assert_eq!(server.requests()[0].user.as_deref(), Some("alice"));
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn client_for_token(&self, token: &str) -> kube::Client {
        Self::client_from(self.config_for_token(token))
    }

    fn client_from(config: kube::Config) -> kube::Client {
        kube::Client::try_from(config).expect("a plain HTTP client with a token always builds")
    }

    /// A kubeconfig with one cluster, user and context (all named `lockheed-fake`) that points
    /// at the server as the administrator, with namespace `default`.
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed_fake_apiserver::FakeApiServer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = FakeApiServer::start().await?;
    /// let options = kube::config::KubeConfigOptions::default();
    /// let config = kube::Config::from_custom_kubeconfig(server.kubeconfig(), &options).await?;
    /// assert_eq!(config.default_namespace, "default");
    /// kube::Client::try_from(config)?.apiserver_version().await?;
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn kubeconfig(&self) -> Kubeconfig {
        let name = "lockheed-fake".to_owned();
        Kubeconfig {
            api_version: Some("v1".into()),
            kind: Some("Config".into()),
            clusters: vec![NamedCluster {
                name: name.clone(),
                cluster: Some(Cluster {
                    server: Some(self.url()),
                    ..Cluster::default()
                }),
                ..NamedCluster::default()
            }],
            auth_infos: vec![NamedAuthInfo {
                name: name.clone(),
                auth_info: Some(AuthInfo {
                    token: Some(secrecy::SecretString::from(ADMIN_TOKEN.to_owned())),
                    ..AuthInfo::default()
                }),
                ..NamedAuthInfo::default()
            }],
            contexts: vec![NamedContext {
                name: name.clone(),
                context: Some(Context {
                    cluster: name.clone(),
                    user: Some(name.clone()),
                    namespace: Some("default".into()),
                    ..Context::default()
                }),
                ..NamedContext::default()
            }],
            current_context: Some(name),
            ..Kubeconfig::default()
        }
    }

    /// The kubeconfig of [`kubeconfig`](Self::kubeconfig) as a document (JSON, which
    /// `kubectl` and every kubeconfig reader accept as YAML).
    ///
    /// # Panics
    ///
    /// Never: a kubeconfig always serializes.
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed_fake_apiserver::FakeApiServer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = FakeApiServer::start().await?;
    /// let document = server.kubeconfig_document();
    /// let kubeconfig = kube::config::Kubeconfig::from_yaml(&document)?;
    /// assert_eq!(kubeconfig.current_context.as_deref(), Some("lockheed-fake"));
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn kubeconfig_document(&self) -> String {
        serde_json::to_string_pretty(&self.kubeconfig()).expect("a kubeconfig always serializes")
    }

    /// Writes the kubeconfig to `path`, for command-line tools (`KUBECONFIG=<path>`).
    ///
    /// # Errors
    ///
    /// When the file cannot be written.
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed_fake_apiserver::FakeApiServer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = FakeApiServer::start().await?;
    /// let path = std::env::temp_dir().join(format!("lockheed-{}.kubeconfig", std::process::id()));
    /// server.write_kubeconfig(&path)?; // then run `KUBECONFIG=<path> kubectl get configmaps`
    /// let kubeconfig = kube::config::Kubeconfig::read_from(&path)?;
    /// assert_eq!(kubeconfig.clusters[0].cluster.as_ref().unwrap().server, Some(server.url()));
    /// # std::fs::remove_file(&path)?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn write_kubeconfig(&self, path: impl AsRef<Path>) -> std::io::Result<()> {
        std::fs::write(path, self.kubeconfig_document() + "\n")
    }

    // --- Observability -------------------------------------------------------------------

    /// The requests received since the last [`reset_counters`](Self::reset_counters), oldest
    /// first (at most the builder's `request_log_capacity` newest).
    ///
    /// # Examples
    ///
    /// ```
    /// use k8s_openapi::api::core::v1::ConfigMap;
    /// use kube::Api;
    /// use lockheed_fake_apiserver::{FakeApiServer, Verb};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = FakeApiServer::start().await?;
    /// let api: Api<ConfigMap> = Api::default_namespaced(server.client());
    /// api.get_opt("demo").await?;
    /// let request = &server.requests()[0];
    /// assert_eq!((request.verb, request.status), (Verb::Get, Some(404)));
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared.log().records()
    }

    /// Requests per verb since the last [`reset_counters`](Self::reset_counters).
    ///
    /// # Examples
    ///
    /// ```
    /// use k8s_openapi::api::core::v1::ConfigMap;
    /// use kube::Api;
    /// use lockheed_fake_apiserver::{FakeApiServer, Verb};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = FakeApiServer::start().await?;
    /// let api: Api<ConfigMap> = Api::default_namespaced(server.client());
    /// api.get_opt("demo").await?;
    /// api.get_opt("demo").await?;
    /// assert_eq!(server.counts().get(Verb::Get), 2);
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn counts(&self) -> RequestCounts {
        self.shared.log().counts()
    }

    /// Clears the request log and the counters.
    ///
    /// # Examples
    ///
    /// ```
    /// use k8s_openapi::api::core::v1::ConfigMap;
    /// use kube::Api;
    /// use lockheed_fake_apiserver::FakeApiServer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = FakeApiServer::start().await?;
    /// let api: Api<ConfigMap> = Api::default_namespaced(server.client());
    /// api.get_opt("demo").await?; // set-up the test does not count
    /// server.reset_counters();
    /// assert_eq!(server.counts().total(), 0);
    /// assert!(server.requests().is_empty());
    /// # Ok(())
    /// # }
    /// ```
    pub fn reset_counters(&self) {
        self.shared.log().reset();
    }

    /// The newest resourceVersion (the global revision).
    ///
    /// # Examples
    ///
    /// ```
    /// use k8s_openapi::api::core::v1::ConfigMap;
    /// use kube::api::{Api, PostParams};
    /// use lockheed_fake_apiserver::FakeApiServer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = FakeApiServer::start().await?;
    /// let api: Api<ConfigMap> = Api::default_namespaced(server.client());
    /// let before = server.resource_version();
    /// let cm: ConfigMap = serde_json::from_str(r#"{"metadata": {"name": "demo"}}"#)?;
    /// api.create(&PostParams::default(), &cm).await?;
    /// assert!(server.resource_version() > before);
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn resource_version(&self) -> u64 {
        self.shared.store().resource_version()
    }

    // --- Faults --------------------------------------------------------------------------

    /// Injects a fault (see [`Fault`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use k8s_openapi::api::core::v1::ConfigMap;
    /// use kube::Api;
    /// use lockheed_fake_apiserver::{FakeApiServer, Fault};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = FakeApiServer::start().await?;
    /// let api: Api<ConfigMap> = Api::default_namespaced(server.client());
    /// server.inject(Fault::status(500)); // the next request fails
    /// let err = api.get_opt("demo").await.unwrap_err();
    /// assert!(matches!(err, kube::Error::Api(status) if status.code == 500));
    /// assert!(api.get_opt("demo").await.is_ok());
    /// # Ok(())
    /// # }
    /// ```
    pub fn inject(&self, fault: Fault) {
        self.shared.faults().inject(fault);
    }

    /// Removes every injected fault, and drops the requests that [`Fault::hang`] holds (not a
    /// partition: see [`heal`](Self::heal)).
    ///
    /// # Examples
    ///
    /// ```
    /// use k8s_openapi::api::core::v1::ConfigMap;
    /// use kube::Api;
    /// use lockheed_fake_apiserver::{FakeApiServer, Fault};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = FakeApiServer::start().await?;
    /// let api: Api<ConfigMap> = Api::default_namespaced(server.client());
    /// server.inject(Fault::status(500).always());
    /// assert!(api.get_opt("demo").await.is_err());
    /// server.clear_faults();
    /// assert!(api.get_opt("demo").await.is_ok());
    /// # Ok(())
    /// # }
    /// ```
    pub fn clear_faults(&self) {
        self.shared.faults().clear();
        self.shared.hang_release.send_modify(|n| *n += 1);
    }

    /// Ends every open watch stream now, as an API server restart or a load balancer would.
    /// Clients see the stream end and must watch again.
    ///
    /// # Examples
    ///
    /// ```
    /// use futures::StreamExt;
    /// use k8s_openapi::api::core::v1::ConfigMap;
    /// use kube::api::{Api, WatchParams};
    /// use lockheed_fake_apiserver::FakeApiServer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = FakeApiServer::start().await?;
    /// let api: Api<ConfigMap> = Api::default_namespaced(server.client());
    /// let mut events = api.watch(&WatchParams::default(), "0").await?.boxed();
    /// server.close_watches();
    /// assert!(events.next().await.is_none()); // the stream ended: the client must watch again
    /// # Ok(())
    /// # }
    /// ```
    pub fn close_watches(&self) {
        self.shared.faults().count("closed watches");
        self.shared.close_watches();
    }

    /// Cuts the server off until [`heal`](Self::heal), refusing everything: new connections
    /// are closed at once, requests on open connections are dropped without an answer, and
    /// open watches end. Clients see errors at once.
    ///
    /// # Examples
    ///
    /// ```
    /// use k8s_openapi::api::core::v1::ConfigMap;
    /// use kube::Api;
    /// use lockheed_fake_apiserver::FakeApiServer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = FakeApiServer::start().await?;
    /// let api: Api<ConfigMap> = Api::default_namespaced(server.client());
    /// server.partition();
    /// assert!(api.get_opt("demo").await.is_err());
    /// server.heal();
    /// assert!(api.get_opt("demo").await.is_ok());
    /// # Ok(())
    /// # }
    /// ```
    pub fn partition(&self) {
        self.start_partition(PartitionKind::Refuse, None);
    }

    /// Like [`partition`](Self::partition), healing by itself after `duration` (on Tokio's
    /// clock).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use k8s_openapi::api::core::v1::ConfigMap;
    /// use kube::Api;
    /// use lockheed_fake_apiserver::FakeApiServer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = FakeApiServer::start().await?;
    /// let api: Api<ConfigMap> = Api::default_namespaced(server.client());
    /// server.partition_for(Duration::from_millis(500));
    /// assert!(api.get_opt("demo").await.is_err());
    /// tokio::time::sleep(Duration::from_millis(600)).await;
    /// assert!(api.get_opt("demo").await.is_ok()); // healed by itself
    /// # Ok(())
    /// # }
    /// ```
    pub fn partition_for(&self, duration: Duration) {
        self.start_partition(PartitionKind::Refuse, Some(duration));
    }

    /// Cuts the server off until [`heal`](Self::heal) the way a lost network does: requests
    /// get no answer and open watches deliver nothing, until the partition heals (then they
    /// go on, as TCP delivers what it retransmitted, even those whose client gave up
    /// meanwhile: a write lands late). Clients see nothing at all, which is the hard case for
    /// a lock holder.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use k8s_openapi::api::core::v1::ConfigMap;
    /// use kube::Api;
    /// use lockheed_fake_apiserver::FakeApiServer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = FakeApiServer::start().await?;
    /// let api: Api<ConfigMap> = Api::default_namespaced(server.client());
    /// server.blackhole();
    /// let answer = tokio::time::timeout(Duration::from_millis(100), api.get_opt("demo")).await;
    /// assert!(answer.is_err()); // no answer and no error: the caller's own timeout fires
    /// server.heal();
    /// assert!(api.get_opt("demo").await.is_ok());
    /// # Ok(())
    /// # }
    /// ```
    pub fn blackhole(&self) {
        self.start_partition(PartitionKind::Blackhole, None);
    }

    /// Like [`blackhole`](Self::blackhole), healing by itself after `duration` (on Tokio's
    /// clock).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use k8s_openapi::api::core::v1::ConfigMap;
    /// use kube::Api;
    /// use lockheed_fake_apiserver::FakeApiServer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = FakeApiServer::start().await?;
    /// let api: Api<ConfigMap> = Api::default_namespaced(server.client());
    /// let start = tokio::time::Instant::now();
    /// server.blackhole_for(Duration::from_millis(200));
    /// api.get_opt("demo").await?; // waits for the network to come back, then goes through
    /// assert!(start.elapsed() >= Duration::from_millis(200));
    /// # Ok(())
    /// # }
    /// ```
    pub fn blackhole_for(&self, duration: Duration) {
        self.start_partition(PartitionKind::Blackhole, Some(duration));
    }

    fn start_partition(&self, kind: PartitionKind, duration: Option<Duration>) {
        self.shared.faults().count(match kind {
            PartitionKind::Refuse => "partition",
            PartitionKind::Blackhole => "blackhole",
        });
        let until = duration.map(|d| tokio::time::Instant::now() + d);
        self.shared.faults().partition(kind, until);
        match kind {
            PartitionKind::Refuse => {
                self.shared.link_up.send_replace(true);
                self.shared.close_watches();
            }
            PartitionKind::Blackhole => {
                self.shared.link_up.send_replace(false);
                if let Some(until) = until {
                    // Heal by itself, unless another partition started meanwhile.
                    let shared = Arc::clone(&self.shared);
                    tokio::spawn(async move {
                        tokio::time::sleep_until(until).await;
                        if !shared.faults().partitioned() {
                            shared.link_up.send_replace(true);
                        }
                    });
                }
            }
        }
    }

    /// Ends a partition or blackhole.
    ///
    /// # Examples
    ///
    /// ```
    /// use k8s_openapi::api::core::v1::ConfigMap;
    /// use kube::Api;
    /// use lockheed_fake_apiserver::FakeApiServer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = FakeApiServer::start().await?;
    /// let api: Api<ConfigMap> = Api::default_namespaced(server.client());
    /// server.blackhole();
    /// server.heal();
    /// assert!(api.get_opt("demo").await.is_ok());
    /// # Ok(())
    /// # }
    /// ```
    pub fn heal(&self) {
        self.shared.faults().heal();
        self.shared.link_up.send_replace(true);
        self.shared.client_cuts.send_replace(ClientCuts::new());
    }

    /// Cuts one client off, the one whose requests carry bearer token `token`, the way
    /// [`blackhole`](Self::blackhole) cuts off everyone: its requests get no answer and its
    /// watches deliver nothing until it heals ([`heal_client`](Self::heal_client) or
    /// [`heal`](Self::heal)); then they go on, as TCP delivers what it retransmitted (a
    /// request whose client gave up meanwhile lands all the same). Other clients are not
    /// affected: a holder cut off this way loses its lock to them.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use k8s_openapi::api::core::v1::ConfigMap;
    /// use kube::Api;
    /// use lockheed_fake_apiserver::FakeApiServer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = FakeApiServer::start().await?;
    /// let a: Api<ConfigMap> = Api::default_namespaced(server.client_for_token("token-a"));
    /// let b: Api<ConfigMap> = Api::default_namespaced(server.client_for_token("token-b"));
    /// server.blackhole_client("token-a");
    /// assert!(tokio::time::timeout(Duration::from_millis(100), a.get_opt("demo")).await.is_err());
    /// assert!(b.get_opt("demo").await.is_ok());
    /// server.heal_client("token-a");
    /// assert!(a.get_opt("demo").await.is_ok());
    /// # Ok(())
    /// # }
    /// ```
    pub fn blackhole_client(&self, token: &str) {
        self.cut_client(token, None);
    }

    /// Like [`blackhole_client`](Self::blackhole_client), healing by itself after `duration`
    /// (on Tokio's clock).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use k8s_openapi::api::core::v1::ConfigMap;
    /// use kube::Api;
    /// use lockheed_fake_apiserver::FakeApiServer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = FakeApiServer::start().await?;
    /// let a: Api<ConfigMap> = Api::default_namespaced(server.client_for_token("token-a"));
    /// let start = tokio::time::Instant::now();
    /// server.blackhole_client_for("token-a", Duration::from_millis(200));
    /// a.get_opt("demo").await?; // answered once the client's network is back
    /// assert!(start.elapsed() >= Duration::from_millis(200));
    /// assert_eq!(server.faults_injected()["client blackhole"], 1);
    /// # Ok(())
    /// # }
    /// ```
    pub fn blackhole_client_for(&self, token: &str, duration: Duration) {
        self.cut_client(token, Some(tokio::time::Instant::now() + duration));
    }

    fn cut_client(&self, token: &str, until: Option<tokio::time::Instant>) {
        self.shared.faults().count("client blackhole");
        self.shared.client_cuts.send_modify(|cuts| {
            cuts.insert(token.to_owned(), until);
        });
    }

    /// Ends the blackhole of the client with bearer token `token` (see
    /// [`blackhole_client`](Self::blackhole_client)).
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed_fake_apiserver::FakeApiServer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = FakeApiServer::start().await?;
    /// server.blackhole_client("token-a");
    /// server.heal_client("token-a");
    /// server.client_for_token("token-a").apiserver_version().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn heal_client(&self, token: &str) {
        self.shared.client_cuts.send_modify(|cuts| {
            cuts.remove(token);
        });
    }

    /// How many faults of each kind met requests since the server started, by kind:
    /// `latency`, `status <code>`, `reset`, `hang` (with ` after commit` for faults applied
    /// after the request was handled), and the server-wide events `partition`, `blackhole`,
    /// `client blackhole`, `closed watches` and `restart`. Kinds that never happened are
    /// absent.
    ///
    /// # Examples
    ///
    /// ```
    /// use k8s_openapi::api::core::v1::ConfigMap;
    /// use kube::Api;
    /// use lockheed_fake_apiserver::{FakeApiServer, Fault};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = FakeApiServer::start().await?;
    /// let api: Api<ConfigMap> = Api::default_namespaced(server.client());
    /// server.inject(Fault::reset_connection().after_commit());
    /// assert!(api.get_opt("demo").await.is_err());
    /// server.close_watches();
    /// let injected = server.faults_injected();
    /// assert_eq!(injected["reset after commit"], 1);
    /// assert_eq!(injected["closed watches"], 1);
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn faults_injected(&self) -> std::collections::BTreeMap<String, u64> {
        self.shared.faults().tally()
    }

    // --- The commit log ------------------------------------------------------------------

    /// The commits the log keeps, oldest first (empty without a commit log: see
    /// [`FakeApiServerBuilder::commit_log`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use k8s_openapi::api::core::v1::ConfigMap;
    /// use kube::api::{Api, DeleteParams, PostParams};
    /// use lockheed_fake_apiserver::{FakeApiServer, Operation};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = FakeApiServer::builder().commit_log(100).start().await?;
    /// let api: Api<ConfigMap> = Api::default_namespaced(server.client());
    /// let cm: ConfigMap = serde_json::from_str(r#"{"metadata": {"name": "demo"}}"#)?;
    /// api.create(&PostParams::default(), &cm).await?;
    /// api.delete("demo", &DeleteParams::default()).await?;
    /// let commits = server.commits();
    /// let operations: Vec<Operation> = commits.iter().map(|c| c.operation).collect();
    /// assert_eq!(operations, [Operation::Create, Operation::Delete]);
    /// assert!(commits[0].revision < commits[1].revision);
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn commits(&self) -> Vec<Commit> {
        self.shared
            .store()
            .commits()
            .map(|log| log.snapshot())
            .unwrap_or_default()
    }

    /// Takes the commits the log keeps, oldest first, leaving it empty: a long run checks
    /// its history piece by piece, and keeps no more than it must.
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed_fake_apiserver::FakeApiServer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = FakeApiServer::builder().commit_log(100).start().await?;
    /// server.create_namespace("a");
    /// server.create_namespace("b");
    /// let names: Vec<String> = server.drain_commits().into_iter().map(|c| c.name).collect();
    /// assert_eq!(names, ["a", "b"]);
    /// assert!(server.drain_commits().is_empty());
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn drain_commits(&self) -> Vec<Commit> {
        self.shared
            .store()
            .commits()
            .map(super::commits::CommitLog::drain)
            .unwrap_or_default()
    }

    /// How many commits a bounded log has dropped to stay within its capacity: a history
    /// checked without them is incomplete.
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed_fake_apiserver::FakeApiServer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = FakeApiServer::builder().commit_log(1).start().await?;
    /// server.create_namespace("a");
    /// server.create_namespace("b");
    /// assert_eq!(server.commits_dropped(), 1);
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn commits_dropped(&self) -> u64 {
        self.shared.store().commits().map_or(0, |log| log.dropped())
    }

    // --- Restarts ------------------------------------------------------------------------

    /// Stops serving, as a kube-apiserver that goes down: open connections and watches are
    /// dropped, requests in flight get no answer, and new connections are closed at once.
    /// What is stored stays: [`restart`](Self::restart) serves it again. The port stays the
    /// server's meanwhile, so that no other server started in the meantime (another test's)
    /// takes it and answers this one's clients.
    ///
    /// # Examples
    ///
    /// ```
    /// use k8s_openapi::api::core::v1::ConfigMap;
    /// use kube::Api;
    /// use lockheed_fake_apiserver::FakeApiServer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = FakeApiServer::start().await?;
    /// let api: Api<ConfigMap> = Api::default_namespaced(server.client());
    /// server.stop();
    /// assert!(api.get_opt("demo").await.is_err()); // the connection is closed
    /// # Ok(())
    /// # }
    /// ```
    pub fn stop(&self) {
        let mut serving = lock(&self.shared.serving);
        serving.stopped.cancel();
        serving.down = true;
    }

    /// Starts serving again on the same port (stopping first if it runs), with the same
    /// objects: resourceVersions go on increasing from where they were, as etcd's revision
    /// does across a kube-apiserver restart. Like a restarted kube-apiserver, whose watch
    /// cache starts empty at the current revision, it has no watch history: a watch that
    /// resumes from an older resourceVersion gets `410 Gone` and must list again. Faults,
    /// access control, the request log and the commit log are kept.
    ///
    /// # Examples
    ///
    /// ```
    /// use k8s_openapi::api::core::v1::ConfigMap;
    /// use kube::api::{Api, PostParams};
    /// use lockheed_fake_apiserver::FakeApiServer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = FakeApiServer::start().await?;
    /// let api: Api<ConfigMap> = Api::default_namespaced(server.client());
    /// let cm: ConfigMap = serde_json::from_str(r#"{"metadata": {"name": "demo"}}"#)?;
    /// let before = api.create(&PostParams::default(), &cm).await?.metadata.resource_version;
    /// server.stop();
    /// server.restart();
    /// let mut cm = api.get("demo").await?; // the same object, served again
    /// cm.data = Some([("k".to_owned(), "v".to_owned())].into());
    /// let after = api.replace("demo", &Default::default(), &cm).await?;
    /// let rv = |v: Option<String>| v.unwrap().parse::<u64>().unwrap();
    /// assert!(rv(after.metadata.resource_version) > rv(before)); // still increasing
    /// # Ok(())
    /// # }
    /// ```
    pub fn restart(&self) {
        self.stop();
        self.shared.store().compact();
        self.shared.faults().count("restart");
        *lock(&self.shared.serving) = Serving {
            stopped: self.shared.shutdown.child_token(),
            down: false,
        };
        tracing::debug!(target: "lockheed_fake_apiserver", addr = %self.shared.addr, "fake API server restarted");
    }

    /// Drops the watch history, as etcd compaction does: a watch from any resourceVersion
    /// older than now is answered with a `410 Expired` error event.
    ///
    /// # Examples
    ///
    /// ```
    /// use futures::StreamExt;
    /// use k8s_openapi::api::core::v1::ConfigMap;
    /// use kube::api::{Api, PostParams, WatchEvent, WatchParams};
    /// use lockheed_fake_apiserver::FakeApiServer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = FakeApiServer::start().await?;
    /// let api: Api<ConfigMap> = Api::default_namespaced(server.client());
    /// let old = server.resource_version().to_string();
    /// let cm: ConfigMap = serde_json::from_str(r#"{"metadata": {"name": "demo"}}"#)?;
    /// api.create(&PostParams::default(), &cm).await?;
    /// server.compact();
    /// let mut events = api.watch(&WatchParams::default(), &old).await?.boxed();
    /// assert!(matches!(events.next().await, Some(Ok(WatchEvent::Error(e))) if e.code == 410));
    /// # Ok(())
    /// # }
    /// ```
    pub fn compact(&self) {
        self.shared.store().compact();
    }

    // --- Access control and namespaces ---------------------------------------------------

    /// Turns access control on with `access`, or off with `None`.
    ///
    /// # Examples
    ///
    /// ```
    /// use k8s_openapi::api::core::v1::ConfigMap;
    /// use kube::Api;
    /// use lockheed_fake_apiserver::{AccessControl, FakeApiServer};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = FakeApiServer::start().await?;
    /// let api: Api<ConfigMap> = Api::default_namespaced(server.client_for_token("nobody"));
    /// assert!(api.get_opt("demo").await.is_ok()); // off: every request is allowed
    /// server.set_access_control(Some(AccessControl::new()));
    /// let err = api.get_opt("demo").await.unwrap_err();
    /// assert!(matches!(err, kube::Error::Api(status) if status.code == 401)); // an unknown token
    /// # Ok(())
    /// # }
    /// ```
    pub fn set_access_control(&self, access: Option<AccessControl>) {
        *self.shared.access() = access;
    }

    /// Creates a namespace if it does not exist. Namespaces `default`, `kube-system`,
    /// `kube-public` and `kube-node-lease` exist from the start; objects can only be created
    /// in a namespace that exists (`404 NotFound` otherwise, like a real cluster).
    ///
    /// # Panics
    ///
    /// When `name` is not a valid namespace name (a DNS-1123 label).
    ///
    /// # Examples
    ///
    /// ```
    /// use k8s_openapi::api::core::v1::ConfigMap;
    /// use kube::api::{Api, PostParams};
    /// use lockheed_fake_apiserver::FakeApiServer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = FakeApiServer::start().await?;
    /// server.create_namespace("team-a");
    /// let api: Api<ConfigMap> = Api::namespaced(server.client(), "team-a");
    /// let cm: ConfigMap = serde_json::from_str(r#"{"metadata": {"name": "demo"}}"#)?;
    /// api.create(&PostParams::default(), &cm).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn create_namespace(&self, name: &str) {
        self.shared
            .store()
            .ensure_namespace(name)
            .unwrap_or_else(|err: ApiError| {
                panic!("cannot create namespace {name:?}: {}", err.message)
            });
    }
}
