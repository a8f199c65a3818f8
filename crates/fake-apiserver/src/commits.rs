//! The commit log: every change the store committed, in revision order, with who made it, so
//! that a test can check a whole history after the fact (as Jepsen and etcd's robustness tests
//! do) instead of sampling it while it runs.

use std::collections::VecDeque;
use std::fmt;

use chrono::{DateTime, Utc};
use serde_json::Value;

/// What a commit did to its object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Operation {
    /// The object was created (a watch's `ADDED`).
    Create,
    /// The object was changed (a watch's `MODIFIED`).
    Update,
    /// The object was deleted (a watch's `DELETED`).
    Delete,
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Create => "create",
            Self::Update => "update",
            Self::Delete => "delete",
        })
    }
}

/// One committed change, as [`FakeApiServer::commits`](super::FakeApiServer::commits)
/// returns it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Commit {
    /// The revision (resourceVersion) the change was committed at: strictly increasing.
    pub revision: u64,
    /// When it was committed, by the server's clock
    /// ([`FakeApiServerBuilder::clock`](super::FakeApiServerBuilder::clock)); for a commit
    /// seen elsewhere, when it was seen (it was made then at the latest).
    pub at: DateTime<Utc>,
    /// The earliest it can have been made, when `at` is only when it was seen (a real API
    /// server's watch: [`TestCluster::record_commits`](super::TestCluster::record_commits));
    /// `None` when `at` is exact, as in the fake server's log. See [`made_after`](Self::made_after).
    pub earliest: Option<DateTime<Utc>>,
    /// What it did.
    pub operation: Operation,
    /// The resource (plural), such as `configmaps`.
    pub resource: String,
    /// The object's namespace (empty for cluster-scoped objects).
    pub namespace: String,
    /// The object's name.
    pub name: String,
    /// The object as stored after the change; for a delete, its last state.
    pub object: Value,
    /// The bearer token of the request that made the change (`None`: the server itself, or a
    /// request without one).
    pub token: Option<String>,
    /// The user that token belongs to, when access control is on.
    pub user: Option<String>,
}

impl Commit {
    /// A commit seen elsewhere: in a watch of a real API server, or written by hand for a
    /// test of a checker. Its author is unknown until [`by`](Self::by) names it. `object` is
    /// the whole object as stored (for a delete, its last state); its namespace and name are
    /// read from its `metadata`.
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed_fake_apiserver::{Commit, Operation};
    ///
    /// let object = serde_json::json!({
    ///     "apiVersion": "v1",
    ///     "kind": "ConfigMap",
    ///     "metadata": { "name": "lockheed-db", "namespace": "default", "resourceVersion": "7" },
    /// });
    /// let commit = Commit::new(7, chrono::Utc::now(), Operation::Update, "configmaps", object)
    ///     .by(Some("alice".into()), None);
    /// assert_eq!((commit.name.as_str(), commit.token.as_deref()), ("lockheed-db", Some("alice")));
    /// ```
    #[must_use]
    pub fn new(
        revision: u64,
        at: DateTime<Utc>,
        operation: Operation,
        resource: impl Into<String>,
        object: Value,
    ) -> Self {
        let meta = |key: &str| {
            object["metadata"][key]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        };
        Self {
            revision,
            at,
            operation,
            resource: resource.into(),
            namespace: meta("namespace"),
            name: meta("name"),
            object,
            token: None,
            user: None,
            earliest: None,
        }
    }

    /// The same commit, known to have been made at `earliest` or later (and at
    /// [`at`](Self::at) at the latest): a commit seen by a watch, which delivers it a little
    /// after it was made, or much later after an outage.
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed_fake_apiserver::{Commit, Operation};
    ///
    /// let seen: chrono::DateTime<chrono::Utc> = "2026-11-22T10:00:00.050Z".parse().unwrap();
    /// let probed = seen - chrono::Duration::milliseconds(120);
    /// let object = serde_json::json!({ "metadata": { "name": "lockheed-db", "namespace": "default" } });
    /// let commit = Commit::new(7, seen, Operation::Update, "configmaps", object).made_after(probed);
    /// assert_eq!(commit.earliest, Some(probed));
    /// ```
    #[must_use]
    pub fn made_after(mut self, earliest: DateTime<Utc>) -> Self {
        self.earliest = Some(earliest);
        self
    }

    /// The same commit, made by the request with bearer `token` of `user`.
    #[must_use]
    pub fn by(mut self, token: Option<String>, user: Option<String>) -> Self {
        self.token = token;
        self.user = user;
        self
    }
}

/// Who makes the changes of the request being handled.
#[derive(Debug, Clone, Default)]
pub(crate) struct Actor {
    pub(crate) token: Option<String>,
    pub(crate) user: Option<String>,
}

/// The commits kept: the newest `capacity` of them (all with `None`).
#[derive(Debug)]
pub(crate) struct CommitLog {
    commits: VecDeque<Commit>,
    capacity: Option<usize>,
    /// Commits dropped to keep within the capacity, since the start.
    dropped: u64,
}

impl CommitLog {
    pub(crate) fn new(capacity: Option<usize>) -> Self {
        Self {
            commits: VecDeque::new(),
            capacity,
            dropped: 0,
        }
    }

    pub(crate) fn push(&mut self, commit: Commit) {
        if self.capacity == Some(0) {
            self.dropped += 1;
            return;
        }
        self.commits.push_back(commit);
        while self.capacity.is_some_and(|c| self.commits.len() > c) {
            self.commits.pop_front();
            self.dropped += 1;
        }
    }

    pub(crate) fn snapshot(&self) -> Vec<Commit> {
        self.commits.iter().cloned().collect()
    }

    pub(crate) fn drain(&mut self) -> Vec<Commit> {
        self.commits.drain(..).collect()
    }

    pub(crate) fn dropped(&self) -> u64 {
        self.dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commit(revision: u64) -> Commit {
        Commit {
            revision,
            at: DateTime::UNIX_EPOCH,
            operation: Operation::Update,
            resource: "configmaps".into(),
            namespace: "default".into(),
            name: "x".into(),
            object: Value::Null,
            token: None,
            user: None,
            earliest: None,
        }
    }

    #[test]
    fn a_bounded_log_keeps_the_newest_and_counts_the_rest() {
        let mut log = CommitLog::new(Some(2));
        for revision in 1..=5 {
            log.push(commit(revision));
        }
        let kept: Vec<u64> = log.snapshot().iter().map(|c| c.revision).collect();
        assert_eq!((kept, log.dropped()), (vec![4, 5], 3));
        assert_eq!(log.drain().len(), 2);
        assert!(log.snapshot().is_empty());
        let mut unbounded = CommitLog::new(None);
        for revision in 1..=1000 {
            unbounded.push(commit(revision));
        }
        assert_eq!((unbounded.snapshot().len(), unbounded.dropped()), (1000, 0));
    }
}
