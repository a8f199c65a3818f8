//! Leader election on top of [`Lock`]: [`LeaderElection`] campaigns for a lock, runs the
//! caller's work while it leads (one [`Term`] at a time, each with its fencing token), stops
//! that work when leadership ends, and campaigns again; followers see the current leader
//! ([`LeaderElection::leader`]) and a leader can tell whether it is stuck
//! ([`LeaderElection::health`]).

use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::error::Error;
use crate::info::{Holder, Waiting};
use crate::lock::{Lock, LockGuard};
use crate::locker::Locker;
use crate::rules;

/// Leader election with a [`Lock`]: usually in a [`LeaseLocker`](crate::LeaseLocker), so
/// that Go replicas (client-go's `leaderelection`) and Rust ones share the election.
///
/// [`run`](Self::run) campaigns (a waiting [`acquire`](Lock::acquire): woken by the watch,
/// first come first served, without polling), then calls the caller's function with a
/// [`Term`] and runs the future it returns while this replica leads. When leadership ends —
/// the lease could not be renewed, another holder took it over, or the Lease prefers another
/// holder ([coordinated leader election](crate::LeaseLocker#sharing-a-lease-with-client-go-and-kube-lease-manager))
/// — the term ends, and `run` campaigns again. On shutdown it ends the term and releases the
/// lock at once, so that a standby leads within one watch delivery instead of one lease
/// duration.
///
/// # How a term's work is stopped
///
/// The work is told, then dropped. [`Term::ended`] resolves when the term ends (hand it to
/// kube-runtime's `Controller::graceful_shutdown_on`, or select on it); the work then has the
/// [grace period](Self::with_grace_period) to return, after which `run` drops its future
/// (cancelling it at its next await). Only then is the lock released, so the next leader
/// never overlaps a work that stopped within its grace period. The default grace period, a
/// tenth of the lease duration, is the margin by which a guard gives its lease up before it
/// ends: work that honours [`Term::ended`] at once never overlaps the next leader's, even when
/// leadership ends because renewals failed.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use lockheed::election::LeaderElection;
/// use lockheed::{Lock, MemoryLocker};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), lockheed::Error> {
/// let lock = Lock::new("my-controller", MemoryLocker::new()).with_holder("replica-a");
/// let shutdown = tokio::time::sleep(Duration::from_millis(50));
/// LeaderElection::new(lock)
///     .run(shutdown, |term| async move {
///         println!("leading, fencing token {}", term.token());
///         term.ended().await; // reconcile until the term ends
///     })
///     .await?;
/// # Ok(())
/// # }
/// ```
#[must_use = "an election does nothing until it runs"]
pub struct LeaderElection<L: Locker> {
    lock: Lock<L>,
    grace: Duration,
    leader: watch::Sender<Option<Holder>>,
    health: Health,
}

impl<L: Locker> fmt::Debug for LeaderElection<L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeaderElection")
            .field("lock", &self.lock.name())
            .field("holder", &self.lock.holder())
            .field("grace", &self.grace)
            .finish_non_exhaustive()
    }
}

impl<L: Locker> LeaderElection<L> {
    /// An election for `lock`, under its holder identity (give each replica its own, such as
    /// its pod name: client-go uses the pod name too). The lock's lease duration is the
    /// term's; it renews every renew interval, as any guard does.
    ///
    /// The election reports whom it waits for through the lock's
    /// [`on_wait`](Lock::on_wait), replacing any observer set there: watch
    /// [`leader`](Self::leader) instead.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use lockheed::election::LeaderElection;
    /// use lockheed::{LeaseLocker, Lock};
    ///
    /// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
    /// let client = kube::Client::try_default().await?;
    /// let pod = std::env::var("POD_NAME")?;
    /// let lock = Lock::new("my-controller", LeaseLocker::new(client, "my-namespace"))
    ///     .with_holder(pod)
    ///     .with_duration(Duration::from_secs(15)); // client-go's default LeaseDuration
    /// let election = LeaderElection::new(lock);
    /// # drop(election);
    /// # Ok(())
    /// # }
    /// ```
    pub fn new(lock: Lock<L>) -> Self {
        let duration = lock.duration();
        let clock = lock.locker().clock();
        Self {
            grace: rules::safety_margin(duration),
            leader: watch::Sender::new(None),
            health: Health {
                leading: Arc::default(),
                clock,
                margin: rules::safety_margin(duration),
            },
            lock,
        }
    }

    /// How long a term's work has to return once its term has ended before it is dropped.
    /// Default: a tenth of the lease duration (see [how work is stopped](Self#how-a-terms-work-is-stopped)).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use lockheed::election::LeaderElection;
    /// use lockheed::{Lock, MemoryLocker};
    ///
    /// // Work that needs a moment to drain, with leases long enough to leave it that moment.
    /// let lock = Lock::new("reports", MemoryLocker::new()).with_duration(Duration::from_secs(60));
    /// let election = LeaderElection::new(lock).with_grace_period(Duration::from_secs(5));
    /// # drop(election);
    /// ```
    pub fn with_grace_period(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// The current leader as this replica last saw it (`None`: none known, such as a free
    /// lock), updated when another replica becomes leader (not when it renews) and when this
    /// one does: client-go's `OnNewLeader`. Followers see it while they campaign.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use lockheed::election::LeaderElection;
    /// use lockheed::{Lock, MemoryLocker};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), lockheed::Error> {
    /// let locker = MemoryLocker::new();
    /// let leader = Lock::new("ctl", locker.clone()).with_holder("a").try_acquire().await?;
    /// let follower = LeaderElection::new(Lock::new("ctl", locker).with_holder("b"));
    /// let mut seen = follower.leader();
    /// let running = tokio::spawn(follower.run(std::future::pending(), |term| term.ended()));
    /// seen.wait_for(|l| l.as_ref().is_some_and(|l| l.id == "a")).await.unwrap();
    /// # running.abort(); drop(leader);
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn leader(&self) -> watch::Receiver<Option<Holder>> {
        self.leader.subscribe()
    }

    /// A health check of this replica, for a liveness probe (client-go's `HealthzAdaptor`).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use lockheed::election::LeaderElection;
    /// use lockheed::{Lock, MemoryLocker};
    ///
    /// let election = LeaderElection::new(Lock::new("ctl", MemoryLocker::new()));
    /// let health = election.health();
    /// // In the liveness probe's handler:
    /// assert!(health.is_healthy(Duration::from_secs(20)));
    /// ```
    #[must_use]
    pub fn health(&self) -> Health {
        self.health.clone()
    }

    /// Campaigns, leads and campaigns again until `shutdown` resolves (or `lead`'s work
    /// returns by itself while leading, which ends the election too). Each time this replica
    /// becomes leader it calls `lead` with the new [`Term`] and runs the future it returns until
    /// the term ends (see [how work is stopped](Self#how-a-terms-work-is-stopped)); then it
    /// releases the lock, and the next replica leads within one watch delivery.
    ///
    /// # Errors
    ///
    /// The lock's permanent errors, as [`Lock::acquire`] returns them (a bad configuration, a
    /// corrupt lock, a permission refused); transient ones are retried.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future drops the term's work at once and releases the lock in the
    /// background (see [`Lock::settle`]); prefer resolving `shutdown`, which lets the work
    /// stop within its grace period first, and, while campaigning, waits (within the grace
    /// period) for this replica's place in the queue to be withdrawn before `run` returns.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use lockheed::election::LeaderElection;
    /// use lockheed::{Lock, MemoryLocker};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), lockheed::Error> {
    /// let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    /// let lock = Lock::new("ctl", MemoryLocker::new());
    /// let election = tokio::spawn(LeaderElection::new(lock).run(
    ///     async { let _ = stopped.await; },
    ///     |term| async move { term.ended().await },
    /// ));
    /// # tokio::time::sleep(Duration::from_millis(10)).await;
    /// stop.send(()).unwrap(); // SIGTERM: step down at once
    /// election.await.unwrap()?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn run<F, Fut>(
        self,
        shutdown: impl Future<Output = ()> + Send,
        mut lead: F,
    ) -> Result<(), Error>
    where
        F: FnMut(Term) -> Fut + Send,
        Fut: Future<Output = ()> + Send,
    {
        let leader = self.leader.clone();
        let lock = self
            .lock
            .clone()
            .on_wait(move |waiting| observe(&leader, waiting));
        let mut shutdown = std::pin::pin!(shutdown);
        let mut status = crate::metrics::Leadership::new(self.lock.name());
        loop {
            let guard = tokio::select! {
                biased;
                () = &mut shutdown => {
                    // The campaign's place in the queue is withdrawn in the background: wait
                    // for it (within the grace period), or a process that exits when `run`
                    // returns would leave its place behind, and the leader's next release
                    // would hand the lock to a replica that is gone.
                    let _ = tokio::time::timeout(self.grace, lock.settle()).await;
                    return Ok(());
                }
                taken = lock.acquire() => taken?,
            };
            let term = Term {
                token: guard.token(),
                holder: guard.holder().to_owned(),
                ended: CancellationToken::new(),
            };
            tracing::info!(lock = %guard.name(), token = term.token, "leading");
            self.took(&guard);
            status.lead();
            let end = self
                .lead(&guard, &term, lead(term.clone()), &mut shutdown)
                .await;
            self.health.stopped();
            status.follow();
            tracing::info!(lock = %guard.name(), token = term.token, ?end, "stopped leading");
            match guard.release().await {
                Ok(()) | Err(Error::Lost { .. }) => {}
                Err(err) => {
                    tracing::warn!(error = %err, "releasing leadership failed; the lease ends by itself");
                }
            }
            self.leader
                .send_if_modified(|current| current.take().is_some());
            if end != End::Lost {
                return Ok(());
            }
        }
    }

    /// Tells followers and the health check that this replica leads with `guard`.
    fn took(&self, guard: &LockGuard<L>) {
        let me = guard
            .acquired()
            .holders
            .iter()
            .find(|h| h.id == guard.holder())
            .cloned();
        self.leader.send_replace(me);
        self.health.leading(guard.give_up_reader());
    }

    /// Runs `work` until the term ends, tells it, and gives it the grace period to return.
    async fn lead<W: Future<Output = ()>>(
        &self,
        guard: &LockGuard<L>,
        term: &Term,
        work: W,
        shutdown: &mut std::pin::Pin<&mut (impl Future<Output = ()> + Send)>,
    ) -> End {
        let mut work = std::pin::pin!(work);
        let end = tokio::select! {
            biased;
            () = guard.lost() => End::Lost,
            () = shutdown.as_mut() => End::Shutdown,
            () = &mut work => return End::Finished,
        };
        term.ended.cancel();
        if tokio::time::timeout(self.grace, work).await.is_err() {
            tracing::warn!(
                grace = ?self.grace,
                "the term's work did not return within its grace period after the term ended: \
                 dropped"
            );
        }
        end
    }
}

/// Why a term ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// Leadership was lost (or given up to a preferred holder): campaign again.
    Lost,
    /// The election is shutting down.
    Shutdown,
    /// The term's work returned by itself.
    Finished,
}

/// Publishes the leader a campaigning replica waits for, when it changes.
fn observe(leader: &watch::Sender<Option<Holder>>, waiting: &Waiting) {
    let current = waiting.holders.iter().find(|h| !h.waiting).cloned();
    leader.send_if_modified(|known| {
        let same = |a: &Holder, b: &Holder| a.id == b.id && a.token == b.token;
        let changed = match (known.as_ref(), current.as_ref()) {
            (Some(a), Some(b)) => !same(a, b),
            (None, None) => false,
            _ => true,
        };
        if changed {
            known.clone_from(&current);
        }
        changed
    });
}

/// One leadership term: from the moment this replica took the lock until leadership ends.
/// Pass [`token`](Self::token) to what the leader writes, so that a resource can refuse a
/// leader whose term has ended (a fencing token).
#[derive(Debug, Clone)]
pub struct Term {
    token: u64,
    holder: String,
    ended: CancellationToken,
}

impl Term {
    /// The fencing token of this term: larger than any earlier term's (a Go leader's term,
    /// in a shared Lease, has none, and leaves the counter as it was).
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed::election::LeaderElection;
    /// use lockheed::{Lock, MemoryLocker};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), lockheed::Error> {
    /// let election = LeaderElection::new(Lock::new("ctl", MemoryLocker::new()));
    /// election.run(std::future::pending(), |term| async move {
    ///     assert_eq!(term.token(), 1); // the lock's first acquisition
    /// }).await?;
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn token(&self) -> u64 {
        self.token
    }

    /// The identity this replica leads under.
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed::election::LeaderElection;
    /// use lockheed::{Lock, MemoryLocker};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), lockheed::Error> {
    /// let lock = Lock::new("ctl", MemoryLocker::new()).with_holder("pod-a");
    /// LeaderElection::new(lock)
    ///     .run(std::future::pending(), |term| async move { assert_eq!(term.holder(), "pod-a") })
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// Resolves when the term ends: leadership lost or given up, or the election shutting
    /// down. The work must stop then (it is dropped after the grace period). It is `Send`,
    /// `Sync` and `'static`, as kube-runtime's `Controller::graceful_shutdown_on` wants, and
    /// holds no borrow of the term: move it into a task of the work (one call per task), or
    /// turn it into the cancellation signal your tasks already use.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only waits.
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed::election::LeaderElection;
    /// use lockheed::{Lock, MemoryLocker};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), lockheed::Error> {
    /// let shutdown = tokio::time::sleep(std::time::Duration::from_millis(20));
    /// LeaderElection::new(Lock::new("ctl", MemoryLocker::new()))
    ///     .run(shutdown, |term| async move {
    ///         let ended = term.ended();
    ///         tokio::select! {
    ///             () = ended => println!("stepping down"),
    ///             () = std::future::pending::<()>() => unreachable!("reconciling forever"),
    ///         }
    ///     })
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn ended(&self) -> impl Future<Output = ()> + Send + Sync + 'static + use<> {
        self.ended.clone().cancelled_owned()
    }

    /// Whether the term has ended.
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed::election::LeaderElection;
    /// use lockheed::{Lock, MemoryLocker};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), lockheed::Error> {
    /// LeaderElection::new(Lock::new("ctl", MemoryLocker::new()))
    ///     .run(std::future::pending(), |term| async move {
    ///         assert!(!term.is_ended()); // check before each step that needs leadership
    ///     })
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn is_ended(&self) -> bool {
        self.ended.is_cancelled()
    }
}

type GiveUp = Box<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// A replica's health as a liveness probe sees it (see [`LeaderElection::health`]).
#[derive(Clone)]
pub struct Health {
    /// While this replica leads: when its guard stops trusting its lease.
    leading: Arc<Mutex<Option<GiveUp>>>,
    clock: Arc<dyn Clock>,
    /// How long before its lease ends a guard gives it up.
    margin: Duration,
}

impl fmt::Debug for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Health")
            .field("leading", &self.is_leading())
            .finish_non_exhaustive()
    }
}

impl Health {
    fn leading(&self, give_up: impl Fn() -> DateTime<Utc> + Send + Sync + 'static) {
        *self.leading.lock().unwrap_or_else(PoisonError::into_inner) = Some(Box::new(give_up));
    }

    fn stopped(&self) {
        *self.leading.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// Whether this replica leads now (its term has not ended).
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed::election::LeaderElection;
    /// use lockheed::{Lock, MemoryLocker};
    ///
    /// let election = LeaderElection::new(Lock::new("ctl", MemoryLocker::new()));
    /// assert!(!election.health().is_leading()); // not running yet
    /// ```
    #[must_use]
    pub fn is_leading(&self) -> bool {
        self.leading
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
    }

    /// `false` when this replica still leads although its lease has not been renewed for
    /// longer than it should have lasted, plus `tolerance`: its renewals or its election are
    /// stuck (a deadlock, a starved runtime), and it should be restarted, as client-go's
    /// `HealthzAdaptor` reports it. A follower, and a leader that renews, are healthy.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use lockheed::election::LeaderElection;
    /// use lockheed::{Lock, MemoryLocker};
    ///
    /// let health = LeaderElection::new(Lock::new("ctl", MemoryLocker::new())).health();
    /// assert!(health.is_healthy(Duration::ZERO)); // a follower is healthy
    /// ```
    #[must_use]
    pub fn is_healthy(&self, tolerance: Duration) -> bool {
        let leading = self.leading.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(give_up) = leading.as_ref() else {
            return true;
        };
        // The guard gives its lease up a tenth of the duration before it ends: past the end,
        // a leader that still leads is stuck.
        let overdue = (self.clock.now() - give_up()).to_std().unwrap_or_default();
        overdue.saturating_sub(self.margin) <= tolerance
    }
}
