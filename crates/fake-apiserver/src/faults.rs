//! Fault injection: latency, failed requests, reset connections, partitions.
//!
//! Random choices (a latency within a range) come from a generator seeded by
//! [`FakeApiServerBuilder::seed`](super::FakeApiServerBuilder::seed), so the same requests in
//! the same order meet the same faults.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

use super::log::Verb;
use super::request::RequestInfo;
use super::rng::Rng;
use super::status::ApiError;

/// Which requests a [`Fault`] applies to. Every condition that is set must hold; an empty
/// matcher matches every request, discovery included.
///
/// # Examples
///
/// ```
/// use lockheed_fake_apiserver::{RequestMatcher, Verb};
///
/// // Writes to one lock's ConfigMap.
/// let writes = RequestMatcher::any()
///     .verb(Verb::Update)
///     .verb(Verb::Create)
///     .resource("configmaps")
///     .name("lockheed-db");
/// # let _ = writes;
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[must_use = "a matcher does nothing until a fault uses it"]
pub struct RequestMatcher {
    verbs: Vec<Verb>,
    resource: Option<String>,
    namespace: Option<String>,
    name: Option<String>,
    token: Option<String>,
}

impl RequestMatcher {
    /// Matches every request.
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed_fake_apiserver::{Fault, RequestMatcher};
    ///
    /// // The same as giving no matcher at all.
    /// assert_eq!(Fault::status(500).on(RequestMatcher::any()), Fault::status(500));
    /// ```
    pub fn any() -> Self {
        Self::default()
    }

    /// Also matches requests with this verb (the first call restricts to it; later calls add).
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed_fake_apiserver::{Fault, RequestMatcher, Verb};
    ///
    /// let reads = RequestMatcher::any().verb(Verb::Get).verb(Verb::List).verb(Verb::Watch);
    /// let fault = Fault::status(503).always().on(reads);
    /// ```
    pub fn verb(mut self, verb: Verb) -> Self {
        self.verbs.push(verb);
        self
    }

    /// Only requests about this resource (the plural, such as `configmaps`).
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed_fake_apiserver::{Fault, RequestMatcher};
    ///
    /// let fault = Fault::status(500).on(RequestMatcher::any().resource("configmaps"));
    /// ```
    pub fn resource(mut self, resource: &str) -> Self {
        self.resource = Some(resource.to_owned());
        self
    }

    /// Only requests in this namespace.
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed_fake_apiserver::{Fault, RequestMatcher};
    ///
    /// let fault = Fault::status(500).on(RequestMatcher::any().namespace("kube-system"));
    /// ```
    pub fn namespace(mut self, namespace: &str) -> Self {
        self.namespace = Some(namespace.to_owned());
        self
    }

    /// Only requests about the object with this name.
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed_fake_apiserver::{Fault, RequestMatcher};
    ///
    /// let fault = Fault::reset_connection().on(RequestMatcher::any().name("lockheed-jobs"));
    /// ```
    pub fn name(mut self, name: &str) -> Self {
        self.name = Some(name.to_owned());
        self
    }

    /// Only requests that carry this bearer token: one client among several, whether or not
    /// access control is on (each client of
    /// [`FakeApiServer::client_for_token`](super::FakeApiServer::client_for_token) is one).
    ///
    /// # Examples
    ///
    /// ```
    /// use k8s_openapi::api::core::v1::ConfigMap;
    /// use kube::Api;
    /// use lockheed_fake_apiserver::{FakeApiServer, Fault, RequestMatcher};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = FakeApiServer::start().await?;
    /// server.inject(Fault::status(500).always().on(RequestMatcher::any().token("token-b")));
    /// let a: Api<ConfigMap> = Api::default_namespaced(server.client_for_token("token-a"));
    /// let b: Api<ConfigMap> = Api::default_namespaced(server.client_for_token("token-b"));
    /// assert!(a.get_opt("demo").await.is_ok());
    /// assert!(b.get_opt("demo").await.is_err());
    /// # Ok(())
    /// # }
    /// ```
    pub fn token(mut self, token: &str) -> Self {
        self.token = Some(token.to_owned());
        self
    }

    pub(crate) fn matches(&self, info: &RequestInfo) -> bool {
        fn same(want: Option<&String>, have: Option<&String>) -> bool {
            want.is_none_or(|w| have == Some(w))
        }
        (self.verbs.is_empty() || self.verbs.contains(&info.verb))
            && same(self.resource.as_ref(), info.resource.as_ref())
            && same(self.namespace.as_ref(), info.namespace.as_ref())
            && same(self.name.as_ref(), info.name.as_ref())
            && same(self.token.as_ref(), info.token.as_ref())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Action {
    Latency { min: Duration, max: Duration },
    Status { code: u16, retry_after: Option<u64> },
    Reset,
    Hang,
}

/// A fault to inject with [`FakeApiServer::inject`](super::FakeApiServer::inject).
///
/// Latency applies to every matching request until cleared; a failure or a reset applies to
/// the next matching request only. [`Fault::times`] and [`Fault::always`] change that.
/// Latencies of several matching faults add up; of several matching failures, the one injected
/// first applies.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use lockheed_fake_apiserver::{FakeApiServer, Fault, RequestMatcher, Verb};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), lockheed_fake_apiserver::StartError> {
/// let server = FakeApiServer::start().await?;
/// // The next three updates fail with 503, every request takes 20 ms more.
/// server.inject(Fault::status(503).times(3).on(RequestMatcher::any().verb(Verb::Update)));
/// server.inject(Fault::latency(Duration::from_millis(20)));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "a fault does nothing until injected"]
pub struct Fault {
    action: Action,
    matcher: RequestMatcher,
    remaining: Option<u64>,
    after_commit: bool,
    /// The chance that a matching request meets the fault, in millionths.
    per_million: u32,
}

/// A certain fault: every matching request meets it.
const CERTAIN: u32 = 1_000_000;

impl Fault {
    /// Delays matching requests by `delay` before they are handled.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use k8s_openapi::api::core::v1::ConfigMap;
    /// use kube::Api;
    /// use lockheed_fake_apiserver::{FakeApiServer, Fault};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = FakeApiServer::start().await?;
    /// let api: Api<ConfigMap> = Api::default_namespaced(server.client());
    /// server.inject(Fault::latency(Duration::from_millis(50)));
    /// let start = tokio::time::Instant::now();
    /// api.get_opt("demo").await?;
    /// assert!(start.elapsed() >= Duration::from_millis(50));
    /// # Ok(())
    /// # }
    /// ```
    pub fn latency(delay: Duration) -> Self {
        Self::latency_between(delay, delay)
    }

    /// Delays matching requests by a time drawn uniformly from `min..=max` (seeded).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use k8s_openapi::api::core::v1::ConfigMap;
    /// use kube::Api;
    /// use lockheed_fake_apiserver::{FakeApiServer, Fault};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = FakeApiServer::start().await?;
    /// let api: Api<ConfigMap> = Api::default_namespaced(server.client());
    /// server.inject(Fault::latency_between(Duration::from_millis(10), Duration::from_millis(30)));
    /// api.get_opt("demo").await?;
    /// assert!(server.requests()[0].latency >= Duration::from_millis(10));
    /// # Ok(())
    /// # }
    /// ```
    pub fn latency_between(min: Duration, max: Duration) -> Self {
        let (min, max) = if min <= max { (min, max) } else { (max, min) };
        Self {
            action: Action::Latency { min, max },
            matcher: RequestMatcher::any(),
            remaining: None,
            after_commit: false,
            per_million: CERTAIN,
        }
    }

    /// Answers the next matching request with this HTTP status and a `metav1.Status` body
    /// worded like kube-apiserver's (500 `InternalError`, 503 `ServiceUnavailable`, 504
    /// `Timeout`, 409 `Conflict`, 429 `TooManyRequests`, ...), without handling it.
    ///
    /// # Panics
    ///
    /// When `code` is not an HTTP error status (400 to 599).
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
    /// server.inject(Fault::status(500));
    /// let err = api.get_opt("demo").await.unwrap_err();
    /// assert!(matches!(err, kube::Error::Api(status) if status.reason == "InternalError"));
    /// # Ok(())
    /// # }
    /// ```
    pub fn status(code: u16) -> Self {
        assert!(
            (400..=599).contains(&code),
            "Fault::status takes an HTTP error status (400 to 599), not {code}"
        );
        Self {
            action: Action::Status {
                code,
                retry_after: None,
            },
            matcher: RequestMatcher::any(),
            remaining: Some(1),
            after_commit: false,
            per_million: CERTAIN,
        }
    }

    /// Answers the next matching request with 429 and `Retry-After: <seconds>`, as the API
    /// server's priority and fairness does when overloaded.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use k8s_openapi::api::core::v1::ConfigMap;
    /// use kube::Api;
    /// use lockheed_fake_apiserver::{FakeApiServer, Fault};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = FakeApiServer::start().await?;
    /// let mut config = server.config();
    /// config.default_retry = false; // kube would retry the 429 itself
    /// let api: Api<ConfigMap> = Api::default_namespaced(kube::Client::try_from(config)?);
    /// server.inject(Fault::too_many_requests(Duration::from_secs(2)));
    /// let err = api.get_opt("demo").await.unwrap_err();
    /// let kube::Error::Api(status) = err else { panic!("expected a status, got {err}") };
    /// assert_eq!((status.code, status.details.unwrap().retry_after_seconds), (429, 2));
    /// # Ok(())
    /// # }
    /// ```
    pub fn too_many_requests(retry_after: Duration) -> Self {
        Self {
            action: Action::Status {
                code: 429,
                retry_after: Some(retry_after.as_secs().max(1)),
            },
            ..Self::status(429)
        }
    }

    /// Drops the connection of the next matching request without answering it.
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
    /// server.inject(Fault::reset_connection());
    /// assert!(api.get_opt("demo").await.is_err()); // a transport error, no status
    /// assert_eq!(server.requests()[0].status, None);
    /// # Ok(())
    /// # }
    /// ```
    pub fn reset_connection() -> Self {
        Self {
            action: Action::Reset,
            matcher: RequestMatcher::any(),
            remaining: Some(1),
            after_commit: false,
            per_million: CERTAIN,
        }
    }

    /// Holds the next matching request without answering it, until
    /// [`FakeApiServer::clear_faults`](super::FakeApiServer::clear_faults) (then its
    /// connection is dropped, and the request is never handled): a request lost in the
    /// network. The client sees nothing until it gives up.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use k8s_openapi::api::core::v1::ConfigMap;
    /// use kube::Api;
    /// use lockheed_fake_apiserver::{FakeApiServer, Fault};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = FakeApiServer::start().await?;
    /// let api: Api<ConfigMap> = Api::default_namespaced(server.client());
    /// server.inject(Fault::hang());
    /// let answer = tokio::time::timeout(Duration::from_millis(100), api.get_opt("demo")).await;
    /// assert!(answer.is_err()); // still waiting: the caller's timeout fired
    /// # Ok(())
    /// # }
    /// ```
    pub fn hang() -> Self {
        Self {
            action: Action::Hang,
            matcher: RequestMatcher::any(),
            remaining: Some(1),
            after_commit: false,
            per_million: CERTAIN,
        }
    }

    /// Handles the request first, and only then fails it (with the status, or by dropping the
    /// connection) or delays its answer (latency): the write is committed but the client does
    /// not learn it, or learns it late. This is the ambiguous outcome (a timeout after the
    /// server acted) that correct clients must survive. No effect on hang faults.
    ///
    /// # Examples
    ///
    /// ```
    /// use k8s_openapi::api::core::v1::ConfigMap;
    /// use kube::api::{Api, PostParams};
    /// use lockheed_fake_apiserver::{FakeApiServer, Fault};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = FakeApiServer::start().await?;
    /// let api: Api<ConfigMap> = Api::default_namespaced(server.client());
    /// let cm: ConfigMap = serde_json::from_str(r#"{"metadata": {"name": "demo"}}"#)?;
    /// server.inject(Fault::status(500).after_commit());
    /// assert!(api.create(&PostParams::default(), &cm).await.is_err()); // the client sees a 500
    /// assert!(api.get_opt("demo").await?.is_some()); // yet it was created
    /// # Ok(())
    /// # }
    /// ```
    pub fn after_commit(mut self) -> Self {
        self.after_commit = true;
        self
    }

    /// Applies only to requests that `matcher` matches.
    ///
    /// # Examples
    ///
    /// ```
    /// use k8s_openapi::api::core::v1::ConfigMap;
    /// use kube::Api;
    /// use lockheed_fake_apiserver::{FakeApiServer, Fault, RequestMatcher};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = FakeApiServer::start().await?;
    /// let api: Api<ConfigMap> = Api::default_namespaced(server.client());
    /// server.inject(Fault::status(500).on(RequestMatcher::any().name("other")));
    /// assert!(api.get_opt("demo").await.is_ok()); // not matched: the fault waits
    /// assert!(api.get_opt("other").await.is_err());
    /// # Ok(())
    /// # }
    /// ```
    pub fn on(mut self, matcher: RequestMatcher) -> Self {
        self.matcher = matcher;
        self
    }

    /// Applies to the next `n` matching requests, then expires.
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
    /// server.inject(Fault::status(500).times(2));
    /// assert!(api.get_opt("demo").await.is_err());
    /// assert!(api.get_opt("demo").await.is_err());
    /// assert!(api.get_opt("demo").await.is_ok());
    /// # Ok(())
    /// # }
    /// ```
    pub fn times(mut self, n: u64) -> Self {
        self.remaining = Some(n);
        self
    }

    /// Applies to every matching request until [`FakeApiServer::clear_faults`](super::FakeApiServer::clear_faults).
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
    /// for _ in 0..3 {
    ///     assert!(api.get_opt("demo").await.is_err());
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn always(mut self) -> Self {
        self.remaining = None;
        self
    }

    /// Hits each matching request with this chance (from 0.0 to 1.0, to a millionth), drawn
    /// from the server's seeded generator: the same requests in the same order meet the same
    /// faults. A request the draw spares does not count against [`times`](Self::times).
    /// Default: 1.0, every matching request. Usually combined with [`always`](Self::always):
    /// "5% of updates fail".
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
    /// let server = FakeApiServer::builder().seed(7).start().await?;
    /// let mut config = server.config();
    /// config.default_retry = false; // see every injected failure
    /// let api: Api<ConfigMap> = Api::default_namespaced(kube::Client::try_from(config)?);
    /// server.inject(Fault::status(500).always().probability(0.25));
    /// let mut failed = 0;
    /// for _ in 0..200 {
    ///     failed += usize::from(api.get_opt("demo").await.is_err());
    /// }
    /// assert!((20..80).contains(&failed), "{failed} of 200 failed"); // about a quarter
    /// assert_eq!(server.faults_injected()["status 500"], failed as u64);
    /// # Ok(())
    /// # }
    /// ```
    pub fn probability(mut self, chance: f64) -> Self {
        // Clamped to 0..=1, then to a millionth: the cast cannot truncate or lose a sign.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let per_million = (chance.clamp(0.0, 1.0) * f64::from(CERTAIN)).round() as u32;
        self.per_million = per_million;
        self
    }

    /// The name a fault is counted under in
    /// [`FakeApiServer::faults_injected`](super::FakeApiServer::faults_injected).
    fn label(&self) -> String {
        let base = match &self.action {
            Action::Latency { .. } => "latency".to_owned(),
            Action::Status { code, .. } => format!("status {code}"),
            Action::Reset => "reset".to_owned(),
            Action::Hang => "hang".to_owned(),
        };
        if self.after_commit && self.action != Action::Hang {
            format!("{base} after commit")
        } else {
            base
        }
    }
}

/// What the faults decided for one request.
#[derive(Debug, Default)]
pub(crate) struct Decision {
    pub(crate) latency: Duration,
    pub(crate) outcome: Option<Outcome>,
    /// Apply `outcome` after handling the request instead of in place of it.
    pub(crate) after_commit: bool,
    /// Latency between handling the request and answering it.
    pub(crate) latency_after: Duration,
}

#[derive(Debug)]
pub(crate) enum Outcome {
    Fail(ApiError),
    Reset,
    Hang,
}

/// Clients cut off from the server by a blackhole of their own, by bearer token, and until
/// when (`None`: until healed).
pub(crate) type ClientCuts = BTreeMap<String, Option<Instant>>;

/// Whether the client with `token` is cut off now.
pub(crate) fn is_cut(cuts: &ClientCuts, token: Option<&str>) -> bool {
    token
        .and_then(|t| cuts.get(t))
        .is_some_and(|until| until.is_none_or(|until| Instant::now() < until))
}

/// The injected faults and the partition state.
#[derive(Debug)]
pub(crate) struct Faults {
    rules: Vec<Fault>,
    rng: Rng,
    partition: Partition,
    kind: PartitionKind,
    /// How many times each kind of fault was met (see [`Fault::label`]), and the server-wide
    /// events the server counts here too (partitions, closed watches, restarts).
    tally: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Partition {
    None,
    UntilHealed,
    Until(Instant),
}

/// How a partition looks to clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PartitionKind {
    /// Connections are refused and requests dropped at once.
    Refuse,
    /// Requests and watch events wait until the partition heals, as packets do when TCP
    /// retransmits them; a client that gives up first sees a timeout.
    Blackhole,
}

impl Faults {
    pub(crate) fn new(seed: u64) -> Self {
        Self {
            rules: Vec::new(),
            rng: Rng::new(seed),
            partition: Partition::None,
            kind: PartitionKind::Refuse,
            tally: BTreeMap::new(),
        }
    }

    /// Counts one more event of kind `label`.
    pub(crate) fn count(&mut self, label: &str) {
        *self.tally.entry(label.to_owned()).or_default() += 1;
    }

    /// How many faults of each kind met requests, and how many server-wide events happened.
    pub(crate) fn tally(&self) -> BTreeMap<String, u64> {
        self.tally.clone()
    }

    pub(crate) fn inject(&mut self, fault: Fault) {
        if fault.remaining != Some(0) {
            self.rules.push(fault);
        }
    }

    pub(crate) fn clear(&mut self) {
        self.rules.clear();
    }

    /// Starts a partition that ends at `until` (`None`: when healed).
    pub(crate) fn partition(&mut self, kind: PartitionKind, until: Option<Instant>) {
        self.kind = kind;
        self.partition = until.map_or(Partition::UntilHealed, Partition::Until);
    }

    pub(crate) fn heal(&mut self) {
        self.partition = Partition::None;
    }

    /// The kind of the partition in force, if any.
    pub(crate) fn partitioned_as(&mut self) -> Option<PartitionKind> {
        self.partitioned().then_some(self.kind)
    }

    pub(crate) fn partitioned(&mut self) -> bool {
        match self.partition {
            Partition::Until(until) if Instant::now() >= until => {
                self.partition = Partition::None;
                false
            }
            Partition::Until(_) | Partition::UntilHealed => true,
            Partition::None => false,
        }
    }

    pub(crate) fn decide(&mut self, info: &RequestInfo) -> Decision {
        let mut decision = Decision::default();
        for rule in &mut self.rules {
            if !rule.matcher.matches(info) {
                continue;
            }
            let failure = !matches!(rule.action, Action::Latency { .. });
            if failure && decision.outcome.is_some() {
                // The first matching failure applies; later ones wait, undrawn.
                continue;
            }
            if rule.per_million < CERTAIN
                && self.rng.below(u64::from(CERTAIN)) >= u64::from(rule.per_million)
            {
                continue;
            }
            *self.tally.entry(rule.label()).or_default() += 1;
            match &rule.action {
                Action::Latency { min, max } => {
                    let spread = max.saturating_sub(*min).as_nanos();
                    let extra = if spread == 0 {
                        0
                    } else {
                        self.rng
                            .below(u64::try_from(spread).unwrap_or(u64::MAX).saturating_add(1))
                    };
                    let delay = *min + Duration::from_nanos(extra);
                    if rule.after_commit {
                        decision.latency_after += delay;
                    } else {
                        decision.latency += delay;
                    }
                }
                Action::Status { code, retry_after } => {
                    let mut err = ApiError::injected(*code);
                    err.retry_after = *retry_after;
                    decision.outcome = Some(Outcome::Fail(err));
                    decision.after_commit = rule.after_commit;
                }
                Action::Reset => {
                    decision.outcome = Some(Outcome::Reset);
                    decision.after_commit = rule.after_commit;
                }
                Action::Hang => decision.outcome = Some(Outcome::Hang),
            }
            if let Some(n) = rule.remaining.as_mut() {
                *n -= 1;
            }
        }
        self.rules.retain(|r| r.remaining != Some(0));
        decision
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(verb: Verb, name: &str) -> RequestInfo {
        RequestInfo {
            verb,
            token: None,
            group: String::new(),
            resource: Some("configmaps".into()),
            namespace: Some("default".into()),
            name: Some(name.into()),
        }
    }

    #[test]
    fn failures_count_down_and_match() {
        let mut faults = Faults::new(1);
        faults.inject(
            Fault::status(503)
                .times(2)
                .on(RequestMatcher::any().verb(Verb::Update)),
        );
        assert!(faults.decide(&info(Verb::Get, "a")).outcome.is_none());
        for _ in 0..2 {
            match faults.decide(&info(Verb::Update, "a")).outcome {
                Some(Outcome::Fail(e)) => assert_eq!(e.code, 503),
                other => panic!("expected a failure, got {other:?}"),
            }
        }
        assert!(faults.decide(&info(Verb::Update, "a")).outcome.is_none());
    }

    #[test]
    fn first_failure_wins_and_later_ones_wait() {
        let mut faults = Faults::new(1);
        faults.inject(Fault::reset_connection());
        faults.inject(Fault::too_many_requests(Duration::from_secs(2)));
        assert!(matches!(
            faults.decide(&info(Verb::Get, "a")).outcome,
            Some(Outcome::Reset)
        ));
        match faults.decide(&info(Verb::Get, "a")).outcome {
            Some(Outcome::Fail(e)) => assert_eq!((e.code, e.retry_after), (429, Some(2))),
            other => panic!("expected 429, got {other:?}"),
        }
    }

    #[test]
    fn latency_ranges_are_seeded() {
        let draw = |seed| {
            let mut faults = Faults::new(seed);
            faults.inject(Fault::latency_between(
                Duration::from_millis(10),
                Duration::from_millis(20),
            ));
            (0..20)
                .map(|_| faults.decide(&info(Verb::Get, "a")).latency)
                .collect::<Vec<_>>()
        };
        let a = draw(42);
        assert_eq!(a, draw(42));
        assert_ne!(a, draw(43));
        assert!(
            a.iter()
                .all(|d| (Duration::from_millis(10)..=Duration::from_millis(20)).contains(d))
        );
    }

    #[test]
    fn probabilities_are_seeded_and_spared_requests_do_not_count() {
        let draw = |seed| {
            let mut faults = Faults::new(seed);
            faults.inject(Fault::status(500).times(30).probability(0.1));
            let hits: Vec<bool> = (0..1000)
                .map(|_| faults.decide(&info(Verb::Get, "a")).outcome.is_some())
                .collect();
            (hits, faults.tally())
        };
        let (a, tally) = draw(42);
        assert_eq!(a, draw(42).0, "the same seed, the same faults");
        assert_ne!(a, draw(43).0);
        // 30 hits, spread over about 300 requests: spared requests did not use them up.
        assert_eq!(a.iter().filter(|hit| **hit).count(), 30);
        let last = a.iter().rposition(|hit| *hit).unwrap();
        assert!((150..600).contains(&last), "the 30th hit came at {last}");
        assert_eq!(tally["status 500"], 30);
        let mut never = Faults::new(1);
        never.inject(Fault::reset_connection().always().probability(0.0));
        assert!((0..100).all(|_| never.decide(&info(Verb::Get, "a")).outcome.is_none()));
        assert!(never.tally().is_empty());
    }

    #[test]
    fn matcher_fields() {
        let m = RequestMatcher::any()
            .resource("configmaps")
            .namespace("default")
            .name("x");
        assert!(m.matches(&info(Verb::Get, "x")));
        assert!(!m.matches(&info(Verb::Get, "y")));
        assert!(
            !RequestMatcher::any()
                .resource("leases")
                .matches(&info(Verb::Get, "x"))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn partitions_heal_on_time() {
        let mut faults = Faults::new(1);
        faults.partition(
            PartitionKind::Refuse,
            Some(Instant::now() + Duration::from_secs(5)),
        );
        assert!(faults.partitioned());
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(!faults.partitioned());
        faults.partition(PartitionKind::Blackhole, None);
        assert_eq!(faults.partitioned_as(), Some(PartitionKind::Blackhole));
        faults.heal();
        assert!(!faults.partitioned());
    }
}
