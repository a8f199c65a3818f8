//! What the fake server saw: a request log and per-verb counters, so that tests can assert how
//! many requests an operation costs.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::time::Duration;

/// The Kubernetes verb of a request (the names RBAC uses), or `Discovery` for the non-resource
/// endpoints (`/version`, `/api`, `/apis`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Verb {
    /// GET of one object.
    Get,
    /// GET of a collection.
    List,
    /// GET of a collection with `watch=true`.
    Watch,
    /// POST to a collection.
    Create,
    /// PUT of one object.
    Update,
    /// PATCH of one object (any patch type, including server-side apply).
    Patch,
    /// DELETE of one object.
    Delete,
    /// DELETE of a collection.
    DeleteCollection,
    /// A GET of a discovery or other non-resource path.
    Discovery,
}

impl Verb {
    /// The RBAC name of the verb (`get`, `list`, ..., `deletecollection`).
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed_fake_apiserver::Verb;
    ///
    /// assert_eq!(Verb::DeleteCollection.as_str(), "deletecollection");
    /// assert_eq!(Verb::Get.to_string(), "get"); // `Display` writes the same
    /// ```
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "get",
            Self::List => "list",
            Self::Watch => "watch",
            Self::Create => "create",
            Self::Update => "update",
            Self::Patch => "patch",
            Self::Delete => "delete",
            Self::DeleteCollection => "deletecollection",
            Self::Discovery => "discovery",
        }
    }

    /// Whether the verb changes stored state.
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed_fake_apiserver::Verb;
    ///
    /// assert!(Verb::Patch.is_write());
    /// assert!(!Verb::Watch.is_write());
    /// ```
    #[must_use]
    pub fn is_write(self) -> bool {
        matches!(
            self,
            Self::Create | Self::Update | Self::Patch | Self::Delete | Self::DeleteCollection
        )
    }
}

impl fmt::Display for Verb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One request as the server saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RequestRecord {
    /// The HTTP method.
    pub method: String,
    /// The Kubernetes verb.
    pub verb: Verb,
    /// The resource (plural), for resource requests.
    pub resource: Option<String>,
    /// The namespace, for namespaced requests.
    pub namespace: Option<String>,
    /// The object's name, for requests about one object.
    pub name: Option<String>,
    /// The URL path.
    pub path: String,
    /// The URL query string (without `?`), empty when there is none.
    pub query: String,
    /// The HTTP status answered, or `None` when the connection was dropped without an answer
    /// (an injected reset, or a partition).
    pub status: Option<u16>,
    /// Time from the request's arrival until its answer started (for watches: until the
    /// stream opened), including injected latency.
    pub latency: Duration,
    /// The user the bearer token belongs to, when access control is on.
    pub user: Option<String>,
}

impl RequestRecord {
    /// An empty record, to move a real one out of a drop guard.
    pub(crate) fn placeholder() -> Self {
        Self {
            method: String::new(),
            verb: Verb::Discovery,
            resource: None,
            namespace: None,
            name: None,
            path: String::new(),
            query: String::new(),
            status: None,
            latency: Duration::ZERO,
            user: None,
        }
    }
}

/// How many requests of each verb the server received since the last reset.
///
/// Every request counts, whatever its answer: one refused by access control, failed by an
/// injected fault or dropped by a partition cost the client a round trip too.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestCounts {
    by_verb: BTreeMap<Verb, u64>,
}

impl RequestCounts {
    /// Requests with this verb.
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
    /// assert_eq!(server.counts().get(Verb::Get), 1);
    /// assert_eq!(server.counts().get(Verb::Update), 0);
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn get(&self, verb: Verb) -> u64 {
        self.by_verb.get(&verb).copied().unwrap_or(0)
    }

    /// All requests, discovery included.
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
    /// server.client().apiserver_version().await?;
    /// api.get_opt("demo").await?;
    /// assert_eq!(server.counts().total(), 2);
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn total(&self) -> u64 {
        self.by_verb.values().sum()
    }

    /// Requests about resources (everything but discovery).
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
    /// server.client().apiserver_version().await?; // discovery
    /// api.get_opt("demo").await?;
    /// assert_eq!(server.counts().api_requests(), 1);
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn api_requests(&self) -> u64 {
        self.total() - self.get(Verb::Discovery)
    }

    /// Requests that write (create, update, patch, delete, deletecollection).
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
    /// api.create(&PostParams::default(), &cm).await?;
    /// api.get_opt("demo").await?;
    /// assert_eq!(server.counts().writes(), 1);
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn writes(&self) -> u64 {
        self.by_verb
            .iter()
            .filter(|(verb, _)| verb.is_write())
            .map(|(_, n)| n)
            .sum()
    }

    /// Counts one more request of `verb`.
    pub(crate) fn add(&mut self, verb: Verb) {
        *self.by_verb.entry(verb).or_insert(0) += 1;
    }

    /// Counts per verb, for printing.
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
    /// assert_eq!(server.counts().iter().collect::<Vec<_>>(), [(Verb::Get, 2)]);
    /// # Ok(())
    /// # }
    /// ```
    pub fn iter(&self) -> impl Iterator<Item = (Verb, u64)> + '_ {
        self.by_verb.iter().map(|(v, n)| (*v, *n))
    }
}

/// The log and the counters, kept together so that a reset clears both.
#[derive(Debug)]
pub(crate) struct RequestLog {
    records: VecDeque<RequestRecord>,
    capacity: usize,
    counts: RequestCounts,
}

impl RequestLog {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            records: VecDeque::new(),
            capacity,
            counts: RequestCounts::default(),
        }
    }

    pub(crate) fn record(&mut self, record: RequestRecord) {
        self.counts.add(record.verb);
        if self.capacity == 0 {
            return;
        }
        if self.records.len() == self.capacity {
            self.records.pop_front();
        }
        self.records.push_back(record);
    }

    pub(crate) fn records(&self) -> Vec<RequestRecord> {
        self.records.iter().cloned().collect()
    }

    pub(crate) fn counts(&self) -> RequestCounts {
        self.counts.clone()
    }

    pub(crate) fn reset(&mut self) {
        self.records.clear();
        self.counts = RequestCounts::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(verb: Verb) -> RequestRecord {
        RequestRecord {
            method: "GET".into(),
            verb,
            resource: None,
            namespace: None,
            name: None,
            path: "/".into(),
            query: String::new(),
            status: Some(200),
            latency: Duration::ZERO,
            user: None,
        }
    }

    #[test]
    fn counts_survive_the_log_capacity() {
        let mut log = RequestLog::new(2);
        for verb in [Verb::Get, Verb::Update, Verb::Update, Verb::Discovery] {
            log.record(record(verb));
        }
        let counts = log.counts();
        assert_eq!(counts.get(Verb::Update), 2);
        assert_eq!(counts.total(), 4);
        assert_eq!(counts.api_requests(), 3);
        assert_eq!(counts.writes(), 2);
        assert_eq!(
            log.records().len(),
            2,
            "the log keeps the newest records only"
        );
        log.reset();
        assert_eq!(log.counts().total(), 0);
        assert!(log.records().is_empty());
    }
}
