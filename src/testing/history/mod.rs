//! A checker of lock histories, in the manner of Jepsen and etcd's robustness tests: record
//! what happened (the critical sections a test ran, and the server's commit log), then check
//! the whole history after the fact.
//!
//! [`History`] takes a lock's commits as the fake server logged them
//! ([`FakeApiServerBuilder::commit_log`](super::FakeApiServerBuilder::commit_log)), or as a
//! watch of a real cluster saw them ([`TestCluster::commits`](super::TestCluster::commits)),
//! and the sections the test's contenders ran ([`Section`]), and finds every [`Violation`] of
//! these:
//!
//! - **no two sections overlap** (for a semaphore of N: never more than N at once; for a
//!   read/write lock: an exclusive section beside no other);
//! - **fencing tokens order the sections**: they strictly increase in the order mutex
//!   sections start; an exclusive section's token is above every token of the sections that
//!   started before it and below every token of those that started after; every section of a
//!   semaphore has a token of its own (its holders' sections may start in any order);
//! - **each section lies within its lease**: it starts after the lease with its token was
//!   committed, and ends before that lease ended (by expiry or removal);
//! - **no committed state holds too many live holders**: two live mutex leases, more live
//!   semaphore leases than its capacity, or a live writer beside another live holder;
//! - **every committed transition is one the rules allow**: each change of the lock's state
//!   is replayed through the crate's locking rules (an acquire, a renewal, a release with its
//!   handover, a withdrawal) by the holder whose client wrote it, at a time between the
//!   previous commit and this one, and must give the same state (leases and queue entries
//!   that had ended by then aside: dropping them is every writer's right). Forced takeovers,
//!   evictions and deletions of the lock's object are not replayed: in a history that has
//!   them, they are violations.
//!
//! Clients are told apart by their bearer tokens: by default a client's token is its holder
//! identity (see [`History::client`]). Give the server and every contender the same clock, so
//! that commit times, lease ends and section times compare.
//!
//! # Commits seen late
//!
//! The fake server logs each commit at the instant it was made. Commits seen elsewhere (a
//! real API server's watch, through
//! [`TestCluster::record_commits`](super::TestCluster::record_commits)) are seen a little
//! after they were made, and much later after an outage: such a commit was made at some time
//! between its [`Commit::earliest`] (or its [`at`](Commit::at) minus
//! [`History::commit_delay`], whichever is earlier) and its `at`. The checks then report only
//! what is a violation whenever in those windows the commits were made:
//!
//! - a transition is replayed at times from the earliest the previous commit can have been
//!   made, up to when this one was seen;
//! - a section must not start before the earliest its lease's commit can have been made, nor
//!   end after its lease's end or the latest its removal can have been made;
//! - a committed state holds too many holders when they are live when the commit was seen
//!   (they were live all through its window).
//!
//! So what happened within a window is not told apart: a section that started a few
//! milliseconds before its lease was committed, or a holder counted live at a commit made
//! just before that holder's lease ended, goes unseen when the window covers it. The checks
//! of the sections against each other (overlaps, token order) use no commit time, and lose
//! nothing.

mod replay;
mod sections;

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};

use crate::kubernetes::configmap::Format;
use crate::state::LockState;
use lockheed_fake_apiserver::{Commit, Operation};

/// One critical section, as a contender ran it: from when it started using what the lock
/// protects to when it stopped (because it was done, or because `lost()` fired).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Section {
    /// The holder identity of the guard.
    pub holder: String,
    /// The guard's fencing token.
    pub token: u64,
    /// A shared holder of a read/write lock.
    pub shared: bool,
    /// When the section started.
    pub start: DateTime<Utc>,
    /// When it ended.
    pub end: DateTime<Utc>,
}

impl Section {
    /// A section of `holder` with fencing token `token`, from `start` to `end`.
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed::testing::history::Section;
    ///
    /// let start = "2026-11-22T10:00:00Z".parse().unwrap();
    /// let section = Section::new("worker-1", 7, start, start + chrono::Duration::seconds(1));
    /// assert!(!section.shared);
    /// ```
    #[must_use]
    pub fn new(
        holder: impl Into<String>,
        token: u64,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Self {
        Self {
            holder: holder.into(),
            token,
            shared: false,
            start,
            end,
        }
    }

    /// The same section, run by a shared holder of a read/write lock (`true`) or not.
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed::testing::history::Section;
    ///
    /// let start = "2026-11-22T10:00:00Z".parse().unwrap();
    /// let reader = Section::new("reader-1", 3, start, start).shared(true);
    /// assert!(reader.shared);
    /// ```
    #[must_use]
    pub fn shared(mut self, shared: bool) -> Self {
        self.shared = shared;
        self
    }
}

impl fmt::Display for Section {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} section of {} with token {} from {} to {}",
            if self.shared { "a shared" } else { "the" },
            self.holder,
            self.token,
            self.start.to_rfc3339(),
            self.end.to_rfc3339()
        )
    }
}

/// What a history broke.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Violation {
    /// Sections ran together that the lock must keep apart.
    Overlap {
        /// The section that was running.
        first: Section,
        /// The section that started while it ran.
        second: Section,
    },
    /// A section's token is out of order with a section that started before it.
    TokenOrder {
        /// The section that started first.
        earlier: Section,
        /// The section that started later, with a token that does not come after.
        later: Section,
    },
    /// A section ran outside the lease its token was committed with.
    OutsideLease {
        /// The section.
        section: Section,
        /// What the commit log says of its lease.
        why: String,
    },
    /// A committed state held more live holders than the lock admits, or a writer beside
    /// another holder.
    TooManyHolders {
        /// The commit.
        revision: u64,
        /// The live holders at the commit, with `(shared)` after shared ones.
        holders: Vec<String>,
        /// What the lock admits.
        rule: &'static str,
    },
    /// A committed transition that no locking rule explains.
    Unexplained {
        /// The commit.
        revision: u64,
        /// The bearer token of the client that wrote it.
        author: Option<String>,
        /// What changed.
        change: String,
    },
    /// A committed state that does not decode.
    Unreadable {
        /// The commit.
        revision: u64,
        /// Why.
        error: String,
    },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Overlap { first, second } => {
                write!(f, "overlap: {second} started while {first} ran")
            }
            Self::TokenOrder { earlier, later } => {
                write!(f, "token order: {later} started after {earlier}")
            }
            Self::OutsideLease { section, why } => write!(f, "outside its lease: {section}: {why}"),
            Self::TooManyHolders {
                revision,
                holders,
                rule,
            } => write!(
                f,
                "revision {revision} holds {} live: {rule}",
                holders.join(", ")
            ),
            Self::Unexplained {
                revision,
                author,
                change,
            } => write!(
                f,
                "revision {revision} by {}: no rule explains it: {change}",
                author.as_deref().unwrap_or("nobody")
            ),
            Self::Unreadable { revision, error } => {
                write!(f, "revision {revision} cannot be read: {error}")
            }
        }
    }
}

/// The outcome of a check: what was checked, and every violation found.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct Report {
    /// Sections checked.
    pub sections: usize,
    /// Commits of the lock's object checked (its transitions).
    pub commits: usize,
    /// Every violation, in the order found.
    pub violations: Vec<Violation>,
}

impl Report {
    /// Panics naming the first violations, unless there are none.
    ///
    /// # Panics
    ///
    /// When the history has violations.
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed::testing::history::History;
    ///
    /// History::mutex("default", "db").finish().assert_valid();
    /// ```
    pub fn assert_valid(&self) {
        assert!(
            self.violations.is_empty(),
            "{} violations in a history of {} sections and {} commits, first:\n{}",
            self.violations.len(),
            self.sections,
            self.commits,
            self.violations
                .iter()
                .take(10)
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

/// The kind of lock a history is about, and what it admits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Admits {
    Mutex,
    Semaphore(u32),
    ReadWrite,
}

/// The last committed state of the lock, and the earliest it can have been committed.
#[derive(Debug, Clone)]
struct Committed {
    state: Option<LockState>,
    earliest: Option<DateTime<Utc>>,
}

/// What the commit log says of one lease (one acquisition, by its token).
#[derive(Debug, Clone)]
struct LeaseLife {
    holder: String,
    /// The earliest it can have been first committed.
    from: DateTime<Utc>,
    /// The latest end it was committed with.
    until: DateTime<Utc>,
    /// The latest a commit can have removed it (or replaced it with another acquisition's).
    removed: Option<DateTime<Utc>>,
}

/// A lock's history, checked as it is fed: commits with [`commits`](Self::commits), sections
/// with [`section`](Self::section), and the sections' checks at [`finish`](Self::finish).
/// See the [module docs](self) for what is checked.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use lockheed::clock::TokioClock;
/// use lockheed::testing::FakeApiServer;
/// use lockheed::testing::history::{History, Section};
/// use lockheed::{KubeLocker, Lock};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let clock = Arc::new(TokioClock::new()); // one clock for the server and every client
/// let server = FakeApiServer::builder().clock(clock.clone()).commit_log_unbounded().start().await?;
/// let mut history = History::mutex("default", "db");
/// for holder in ["alice", "bob"] {
///     let locker = KubeLocker::new(server.client_for_token(holder), "default").with_clock(clock.clone());
///     let guard = Lock::new("db", locker).with_holder(holder).acquire().await?;
///     let start = lockheed::clock::Clock::now(clock.as_ref());
///     // ... the critical section ...
///     history.section(Section::new(holder, guard.token(), start, lockheed::clock::Clock::now(clock.as_ref())));
///     guard.release().await?;
/// }
/// history.commits(server.drain_commits());
/// let report = history.finish();
/// report.assert_valid();
/// assert_eq!((report.sections, report.commits), (2, 4)); // create, release, take, release
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct History {
    namespace: String,
    /// The lock's name, and its ConfigMap's.
    lock: String,
    object: String,
    admits: Admits,
    skew: std::time::Duration,
    /// How late a commit's time may be, at most, when the commit does not say.
    delay: std::time::Duration,
    /// Holder identities by bearer token, for clients whose token is not their identity.
    clients: BTreeMap<String, Vec<String>>,
    last: Committed,
    leases: BTreeMap<u64, LeaseLife>,
    sections: Vec<Section>,
    commits: usize,
    violations: Vec<Violation>,
}

impl History {
    fn new(namespace: &str, lock: &str, admits: Admits) -> Self {
        Self {
            namespace: namespace.to_owned(),
            lock: lock.to_owned(),
            object: format!("{}{lock}", crate::kubernetes::DEFAULT_PREFIX),
            admits,
            skew: crate::lock::DEFAULT_SKEW_ALLOWANCE,
            delay: std::time::Duration::ZERO,
            clients: BTreeMap::new(),
            last: Committed {
                state: None,
                earliest: None,
            },
            leases: BTreeMap::new(),
            sections: Vec::new(),
            commits: 0,
            violations: Vec::new(),
        }
    }

    /// The history of mutex `lock` (in lockheed's format) in `namespace`.
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed::testing::history::History;
    ///
    /// let history = History::mutex("default", "db");
    /// # let _ = history;
    /// ```
    #[must_use]
    pub fn mutex(namespace: &str, lock: &str) -> Self {
        Self::new(namespace, lock, Admits::Mutex)
    }

    /// The history of semaphore `lock` of `max_holders` in `namespace`.
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed::testing::history::History;
    ///
    /// let history = History::semaphore("default", "gpu", 3);
    /// # let _ = history;
    /// ```
    #[must_use]
    pub fn semaphore(namespace: &str, lock: &str, max_holders: u32) -> Self {
        Self::new(namespace, lock, Admits::Semaphore(max_holders))
    }

    /// The history of read/write lock `lock` in `namespace`.
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed::testing::history::History;
    ///
    /// let history = History::read_write("default", "catalog");
    /// # let _ = history;
    /// ```
    #[must_use]
    pub fn read_write(namespace: &str, lock: &str) -> Self {
        Self::new(namespace, lock, Admits::ReadWrite)
    }

    /// The clock skew allowance the contenders use (the crate's default, 2 s, unless told):
    /// a release hands the lock over only past it, and the replay must know.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use lockheed::testing::history::History;
    ///
    /// let history = History::mutex("default", "db").skew_allowance(Duration::ZERO);
    /// # let _ = history;
    /// ```
    #[must_use]
    pub fn skew_allowance(mut self, skew: std::time::Duration) -> Self {
        self.skew = skew;
        self
    }

    /// How late a commit's time ([`Commit::at`]) may be, at most, after the commit was made:
    /// for commits seen by a watch that do not say when they were made at the earliest
    /// ([`Commit::earliest`]). Zero by default: the fake server's commit log has exact times.
    /// See [Commits seen late](self#commits-seen-late) for what the checks then allow.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use lockheed::testing::history::History;
    ///
    /// // Commits read from a watch of a real cluster, which delivers within 50 ms here.
    /// let history = History::mutex("default", "db").commit_delay(Duration::from_millis(50));
    /// # let _ = history;
    /// ```
    #[must_use]
    pub fn commit_delay(mut self, delay: std::time::Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Declares that the client with bearer token `token` runs these holders (by default, a
    /// client's token is its only holder identity). A commit is replayed as the work of one
    /// of its client's holders; a commit by an unknown client, as anyone's.
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed::testing::history::History;
    ///
    /// let history = History::mutex("default", "db").client("process-1", ["worker-1", "worker-2"]);
    /// # let _ = history;
    /// ```
    #[must_use]
    pub fn client<I, S>(mut self, token: &str, holders: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.clients.insert(
            token.to_owned(),
            holders.into_iter().map(Into::into).collect(),
        );
        self
    }

    /// Records a section a contender ran.
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed::testing::history::{History, Section};
    ///
    /// let mut history = History::mutex("default", "db");
    /// let start = "2026-11-22T10:00:00Z".parse().unwrap();
    /// history.section(Section::new("alice", 1, start, start));
    /// let report = history.finish();
    /// assert_eq!(report.sections, 1);
    /// assert!(!report.violations.is_empty()); // no committed lease has token 1
    /// ```
    pub fn section(&mut self, section: Section) {
        self.sections.push(section);
    }

    /// Checks commits, oldest first (a server's [`commits`](super::FakeApiServer::commits) or
    /// [`drain_commits`](super::FakeApiServer::drain_commits)); commits of other objects are
    /// skipped. Feed every commit of the lock's object, in order, once.
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed::testing::FakeApiServer;
    /// use lockheed::testing::history::History;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = FakeApiServer::builder().commit_log(100).start().await?;
    /// server.create_namespace("team-a"); // not the lock: skipped
    /// let mut history = History::mutex("default", "db");
    /// history.commits(server.drain_commits());
    /// assert_eq!(history.finish().commits, 0);
    /// # Ok(())
    /// # }
    /// ```
    pub fn commits(&mut self, commits: impl IntoIterator<Item = Commit>) {
        for commit in commits {
            if commit.resource == "configmaps"
                && commit.namespace == self.namespace
                && commit.name == self.object
            {
                self.commit(&commit);
            }
        }
    }

    fn commit(&mut self, commit: &Commit) {
        self.commits += 1;
        let next = match self.decode(commit) {
            Ok(next) => next,
            Err(error) => {
                self.violations.push(Violation::Unreadable {
                    revision: commit.revision,
                    error,
                });
                // Checks go on from the next readable state.
                self.last = Committed {
                    state: None,
                    earliest: Some(self.earliest(commit)),
                };
                return;
            }
        };
        if let Some(state) = &next {
            self.check_holders(commit, state);
        }
        if let Err(change) = replay::explain(self, self.last.state.as_ref(), next.as_ref(), commit)
        {
            self.violations.push(Violation::Unexplained {
                revision: commit.revision,
                author: commit.token.clone(),
                change,
            });
        }
        let earliest = self.earliest(commit);
        self.track_leases(earliest, commit.at, next.as_ref());
        self.last = Committed {
            state: next,
            earliest: Some(earliest),
        };
    }

    /// The earliest `commit` can have been made: its own word ([`Commit::earliest`]) or its
    /// time less the [delay](Self::commit_delay), whichever is earlier; never after its time.
    fn earliest(&self, commit: &Commit) -> DateTime<Utc> {
        let delay = chrono::Duration::from_std(self.delay).unwrap_or(chrono::Duration::MAX);
        let delayed = commit
            .at
            .checked_sub_signed(delay)
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        commit.earliest.unwrap_or(commit.at).min(delayed)
    }

    /// The state a commit stored (`None`: deleted).
    fn decode(&self, commit: &Commit) -> Result<Option<LockState>, String> {
        if commit.operation == Operation::Delete {
            return Ok(None);
        }
        let cm: k8s_openapi::api::core::v1::ConfigMap =
            serde_json::from_value(commit.object.clone()).map_err(|e| e.to_string())?;
        let object = format!("{}/{}", self.namespace, self.object);
        Format::Lockheed
            .decode(&self.lock, &object, cm)
            .map(|record| Some(record.state))
            .map_err(|e| e.to_string())
    }

    /// Checks that a committed state holds no more live holders than the lock admits.
    fn check_holders(&mut self, commit: &Commit, state: &LockState) {
        let live: Vec<_> = state
            .leases
            .values()
            .filter(|l| l.expires.is_forever() || l.expires.to_utc() > commit.at)
            .collect();
        let broken = match self.admits {
            Admits::Mutex => (live.len() > 1).then_some("a mutex admits one holder"),
            Admits::Semaphore(max) => (live.len() > usize::try_from(max).unwrap_or(usize::MAX))
                .then_some("a semaphore admits no more holders than its capacity"),
            Admits::ReadWrite => (live.len() > 1 && live.iter().any(|l| !l.shared))
                .then_some("a writer holds a read/write lock alone"),
        };
        if let Some(rule) = broken {
            self.violations.push(Violation::TooManyHolders {
                revision: commit.revision,
                holders: live
                    .iter()
                    .map(|l| {
                        if l.shared {
                            format!("{} (shared)", l.instance_id)
                        } else {
                            l.instance_id.clone()
                        }
                    })
                    .collect(),
                rule,
            });
        }
    }

    /// Follows each lease's life through the commits, for the sections' checks: the commit
    /// was made between `earliest` and `at`.
    fn track_leases(
        &mut self,
        earliest: DateTime<Utc>,
        at: DateTime<Utc>,
        next: Option<&LockState>,
    ) {
        let tokens: BTreeMap<u64, (&str, DateTime<Utc>)> = next
            .iter()
            .flat_map(|s| s.leases.values())
            .filter_map(|l| Some((l.token?, (l.instance_id.as_str(), l.expires.to_utc()))))
            .collect();
        for (token, life) in &mut self.leases {
            if life.removed.is_none() && !tokens.contains_key(token) {
                life.removed = Some(at);
            }
        }
        for (token, (holder, until)) in tokens {
            let life = self.leases.entry(token).or_insert_with(|| LeaseLife {
                holder: holder.to_owned(),
                from: earliest,
                until,
                removed: None,
            });
            life.until = life.until.max(until);
        }
    }

    /// Checks the sections, and reports everything found.
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed::testing::history::History;
    ///
    /// let report = History::semaphore("default", "gpu", 3).finish();
    /// assert_eq!((report.sections, report.commits), (0, 0));
    /// assert!(report.violations.is_empty());
    /// ```
    #[must_use]
    pub fn finish(mut self) -> Report {
        let mut violations = std::mem::take(&mut self.violations);
        violations.extend(sections::check(
            self.admits,
            &mut self.sections,
            &self.leases,
        ));
        Report {
            sections: self.sections.len(),
            commits: self.commits,
            violations,
        }
    }
}

#[cfg(test)]
mod tests;
