//! [`Lock`]: a named lock with its settings, and the ways to take it; the layer that takes,
//! holds and waits, on any [`Locker`], by the rules of [`crate::rules`].
//!
//! Taking: `take` (one attempt), `waiter` (waiting, a state machine), `watched` (what a
//! waiter saw), `settings`. Holding: `guard` ([`LockGuard`]), `holding` (a held lease),
//! `keepalive` (renewal). Undoing and background work: `cleanup`, `background`, `backoff`.

mod background;
mod backoff;
mod cleanup;
mod guard;
mod holding;
mod keepalive;
mod settings;
mod take;
mod waiter;
mod watched;

pub use self::guard::LockGuard;

use std::sync::Arc;
use std::time::Duration;

use tracing::Instrument;

use self::background::Background;
use self::settings::{Intent, Settings, WaitObserver};
use self::take::{Begin, Taken};
use self::waiter::Waiter;
use crate::backend::{Snapshot, Start};
use crate::condition::Condition;
use crate::error::Error;
use crate::info::Waiting;
use crate::locker::Locker;
use crate::metrics::{self, Call};
use crate::state::kind::{Access, Kind};

/// The default lease duration.
const DEFAULT_DURATION: Duration = Duration::from_secs(30);
/// The default [clock skew allowance](Lock::with_clock_skew_allowance).
pub(crate) const DEFAULT_SKEW_ALLOWANCE: Duration = Duration::from_secs(2);
/// The default pause between looks at a held lock when nothing notifies waiters.
const DEFAULT_RETRY_INTERVAL: Duration = Duration::from_secs(1);
/// How long a new attempt waits at most for the lock's background work (clean-ups, releases
/// of dropped guards) to finish first.
const BACKGROUND_FIRST: Duration = Duration::from_secs(1);

/// A named lock in a [`Locker`], with its settings. Taking it yields a [`LockGuard`].
///
/// By default the lock is a mutex (one holder, Go lockheed's only kind).
/// [`with_max_holders`](Self::with_max_holders) makes it a semaphore of N holders, and
/// [`with_access`](Self::with_access) a shared/exclusive (read/write) lock. A lock keeps the
/// kind it was first taken as: taking it as another kind fails with [`Error::WrongKind`]
/// (and Go lockheed clients, which know only mutexes, refuse the other kinds rather than
/// overwrite them).
///
/// Settings are by-value builders, as in Go lockheed (`NewLock(..).WithDuration(..)`); they
/// are checked when the lock is taken, before any request. A `Lock` can be taken again after
/// its guard is released, and cloned (clones have the same holder identity: see
/// [`with_holder`](Self::with_holder)).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use lockheed::{Condition, Lock, MemoryLocker};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), lockheed::Error> {
/// let lock = Lock::new("nightly-report", MemoryLocker::new())
///     .with_duration(Duration::from_secs(30))
///     .with_renew_interval(Duration::from_secs(9))
///     .with_tags(["reports"])
///     .with_force(Condition::tags_contain("abandoned"));
/// let guard = lock.acquire().await?;
/// println!("holding with fencing token {}", guard.token());
/// guard.release().await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
#[must_use = "a lock does nothing until it is acquired"]
pub struct Lock<L: Locker> {
    name: String,
    locker: L,
    duration: Duration,
    renew_interval: Option<Duration>,
    tags: Vec<String>,
    reset_tags: bool,
    force: Option<Condition>,
    holder: String,
    retry_interval: Duration,
    acquire_timeout: Option<Duration>,
    skew_allowance: Duration,
    fifo: bool,
    max_holders: Option<u32>,
    access: Option<Access>,
    reason: Option<String>,
    on_wait: Option<WaitObserver>,
    /// Clean-ups of cancelled acquires and releases of dropped guards (see `settle`).
    background: Background,
}

impl<L: Locker> Lock<L> {
    /// The lock `name` in `locker`, with a new random holder identity (a UUID v4, like Go
    /// lockheed's instance id), a 30 s lease renewed every 10 s, no tags and no force.
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed::{Lock, MemoryLocker};
    ///
    /// let lock = Lock::new("nightly-report", MemoryLocker::new());
    /// assert_eq!(lock.name(), "nightly-report");
    /// assert!(uuid_like(lock.holder())); // a random UUID v4 per Lock
    /// # fn uuid_like(s: &str) -> bool { s.len() == 36 && s.matches('-').count() == 4 }
    /// ```
    pub fn new(name: impl Into<String>, locker: L) -> Self {
        Self {
            name: name.into(),
            locker,
            duration: DEFAULT_DURATION,
            renew_interval: None,
            tags: Vec::new(),
            reset_tags: false,
            force: None,
            holder: uuid::Uuid::new_v4().to_string(),
            retry_interval: DEFAULT_RETRY_INTERVAL,
            acquire_timeout: None,
            skew_allowance: DEFAULT_SKEW_ALLOWANCE,
            fifo: true,
            max_holders: None,
            access: None,
            reason: None,
            on_wait: None,
            background: Background::default(),
        }
    }

    /// Makes the lock a semaphore: up to `max_holders` holders at once, each with its own
    /// lease, expiry and fencing token. The capacity is stored with the lock when it is first
    /// taken, and the stored capacity wins over a later caller's different value (as with
    /// kube-lock): see it with [`LockGuard::max_holders`] or [`Locker::get`]. Must be at least
    /// 1; cannot be combined with [`with_access`](Self::with_access).
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed::{Lock, MemoryLocker};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), lockheed::Error> {
    /// let locker = MemoryLocker::new();
    /// let a = Lock::new("gpu", locker.clone()).with_max_holders(2).acquire().await?;
    /// let b = Lock::new("gpu", locker.clone()).with_max_holders(2).acquire().await?;
    /// assert!(Lock::new("gpu", locker.clone()).with_max_holders(2).try_acquire().await.is_err());
    /// // The stored capacity wins.
    /// drop(a);
    /// # tokio::task::yield_now().await; // the dropped guard releases in the background
    /// let c = Lock::new("gpu", locker).with_max_holders(5).acquire().await?;
    /// assert_eq!(c.max_holders(), Some(2));
    /// # drop((b, c));
    /// # Ok(())
    /// # }
    /// ```
    pub fn with_max_holders(mut self, max_holders: u32) -> Self {
        self.max_holders = Some(max_holders);
        self
    }

    /// Makes the lock a shared/exclusive (read/write) lock, taken with `access`: any number
    /// of [`Shared`](Access::Shared) holders together, or one
    /// [`Exclusive`](Access::Exclusive) holder alone.
    ///
    /// Writers are preferred: an exclusive [`acquire`](Self::acquire) that has to wait for
    /// shared holders records its intent in the lock, and new shared holders then wait until
    /// it has had its turn, so that a steady stream of readers cannot starve it. The intent
    /// lasts the lease duration (at most 30 s) and is refreshed while the writer waits; if the
    /// writer dies, it ends by itself. Cannot be combined with
    /// [`with_max_holders`](Self::with_max_holders).
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed::{Access, Lock, MemoryLocker};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), lockheed::Error> {
    /// let locker = MemoryLocker::new();
    /// let reader = |name| Lock::new(name, locker.clone()).with_access(Access::Shared);
    /// let r1 = reader("catalog").acquire().await?;
    /// let r2 = reader("catalog").acquire().await?;
    /// let writer = Lock::new("catalog", locker.clone()).with_access(Access::Exclusive);
    /// assert!(writer.try_acquire().await.unwrap_err().is_held());
    /// r1.release().await?;
    /// r2.release().await?;
    /// let w = writer.try_acquire().await?;
    /// # drop(w);
    /// # Ok(())
    /// # }
    /// ```
    pub fn with_access(mut self, access: Access) -> Self {
        self.access = Some(access);
        self
    }

    /// Why this holder takes the lock, recorded with its lease (kube-lock's `--reason`): shown
    /// to operators by [`Locker::get`] and the command lines.
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed::{Lock, Locker, MemoryLocker};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), lockheed::Error> {
    /// let locker = MemoryLocker::new();
    /// let guard = Lock::new("db", locker.clone()).with_reason("db restart").acquire().await?;
    /// let info = locker.get("db").await?.unwrap();
    /// assert_eq!(info.holders[0].reason.as_deref(), Some("db restart"));
    /// # drop(guard);
    /// # Ok(())
    /// # }
    /// ```
    pub fn with_reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }

    /// How long each lease (and each renewal) lasts. Zero means no expiry: the lease is stored
    /// as `9999-12-31T23:59:59Z`, like Go, and lasts until released or taken by force.
    /// Default: 30 s.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use lockheed::{Lock, MemoryLocker};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), lockheed::Error> {
    /// let locker = MemoryLocker::new();
    /// let lease = Lock::new("report", locker.clone()).with_duration(Duration::from_secs(60));
    /// let guard = lease.try_acquire().await?;
    /// assert!(guard.expires().await.is_some());
    /// // Zero: held until released, stored as Go's 9999-12-31T23:59:59Z.
    /// let forever = Lock::new("migration", locker).with_duration(Duration::ZERO);
    /// assert_eq!(forever.try_acquire().await?.expires().await, None);
    /// # Ok(())
    /// # }
    /// ```
    pub fn with_duration(mut self, duration: Duration) -> Self {
        self.duration = duration;
        self
    }

    /// How often the guard renews its lease; zero turns renewal off (the lease then ends
    /// after one duration, and [`LockGuard::lost`] fires). Must be shorter than nine tenths of
    /// the duration (the guard gives up the last tenth early). Default: a third of the
    /// duration.
    ///
    /// The first renewal comes at a random point of the interval's second half, the next ones
    /// every interval after it: locks taken together do not renew together. A lease handed
    /// over to a waiting [`acquire`](Self::acquire) lasts half the duration until the first
    /// renewal claims it, which then comes within three quarters of the time the guard trusts
    /// that lease (even with renewal off, once).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use lockheed::{Error, Lock, MemoryLocker};
    ///
    /// let lock = Lock::new("report", MemoryLocker::new())
    ///     .with_duration(Duration::from_secs(30))
    ///     .with_renew_interval(Duration::from_secs(5)); // six chances before the lease ends
    /// // An interval that leaves no time to renew is refused before any request.
    /// let bad = lock.clone().with_renew_interval(Duration::from_secs(30));
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// assert!(matches!(bad.try_acquire().await, Err(Error::InvalidConfig { .. })));
    /// # });
    /// ```
    pub fn with_renew_interval(mut self, interval: Duration) -> Self {
        self.renew_interval = Some(interval);
        self
    }

    /// Tags to add to the lock when it is acquired and released (tags already there stay,
    /// unless [`with_reset_tags`](Self::with_reset_tags)). Tags must not be empty.
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed::{Condition, Lock, Locker, MemoryLocker};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), lockheed::Error> {
    /// let locker = MemoryLocker::new();
    /// let guard = Lock::new("db", locker.clone()).with_tags(["prod", "db"]).try_acquire().await?;
    /// let prod = locker.list(Some(&Condition::tags_contain("prod"))).await?;
    /// assert_eq!(prod.locks[0].name, "db");
    /// # guard.release().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn with_tags<I, T>(mut self, tags: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        self.tags.extend(tags.into_iter().map(Into::into));
        self
    }

    /// Whether acquiring and releasing replace the lock's tags with this lock's
    /// [`with_tags`](Self::with_tags) instead of adding to them. Default: `false` (add).
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed::{Lock, Locker, MemoryLocker};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), lockheed::Error> {
    /// let locker = MemoryLocker::new();
    /// Lock::new("db", locker.clone()).with_tags(["old"]).try_acquire().await?.release().await?;
    /// let guard = Lock::new("db", locker.clone()).with_tags(["new"]).with_reset_tags(true).try_acquire().await?;
    /// assert_eq!(locker.get("db").await?.unwrap().tags, ["new"]);
    /// # guard.release().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn with_reset_tags(mut self, reset: bool) -> Self {
        self.reset_tags = reset;
        self
    }

    /// Takes the lock over from its current holders when the lock meets `condition` (Go
    /// lockheed's forced takeover). The previous holder's guard sees [`LockGuard::lost`] fire
    /// at its next renewal.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use lockheed::{Condition, Lock, MemoryLocker};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), lockheed::Error> {
    /// let locker = MemoryLocker::new();
    /// // A holder that never lets go, but says it may be taken over.
    /// let stuck = Lock::new("db", locker.clone())
    ///     .with_duration(Duration::ZERO)
    ///     .with_tags(["forceme"])
    ///     .try_acquire()
    ///     .await?;
    /// let guard = Lock::new("db", locker)
    ///     .with_force(Condition::tags_contain("forceme"))
    ///     .try_acquire()
    ///     .await?;
    /// assert!(guard.token() > stuck.token());
    /// # drop(stuck);
    /// # Ok(())
    /// # }
    /// ```
    pub fn with_force(mut self, condition: Condition) -> Self {
        self.force = Some(condition);
        self
    }

    /// The identity this lock holds leases under. Two `Lock`s with the same identity are the
    /// same holder: taking the lock again does not wait, it replaces the holder's lease with a
    /// new one and a new token (a re-entry: see [`try_acquire`](Self::try_acquire)).
    /// Default: a random UUID v4.
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed::{Lock, Locker, MemoryLocker};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), lockheed::Error> {
    /// let locker = MemoryLocker::new();
    /// let guard = Lock::new("db", locker.clone()).with_holder("backup-job-17").try_acquire().await?;
    /// assert_eq!(locker.get("db").await?.unwrap().holders[0].id, "backup-job-17");
    /// # guard.release().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn with_holder(mut self, holder: impl Into<String>) -> Self {
        self.holder = holder.into();
        self
    }

    /// How often [`acquire`](Self::acquire) looks at a held lock when the backend cannot tell
    /// it about changes (no watch, or a watch interrupted until it resumes): it polls with
    /// backoff up to this interval. With a watch, waiters are woken by changes and when the
    /// holder's lease can end, and do not poll. Failed reads are tried again at most this far
    /// apart too (but at least 1 s, at most 10 s). Default: 1 s.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use lockheed::{Lock, MemoryLocker};
    ///
    /// // Without a watch (say, no RBAC right to watch), poll a held lock at most every 5 s.
    /// let lock = Lock::new("db", MemoryLocker::new()).with_retry_interval(Duration::from_secs(5));
    /// # let _ = lock;
    /// ```
    pub fn with_retry_interval(mut self, interval: Duration) -> Self {
        self.retry_interval = interval;
        self
    }

    /// How far this process's clock may run ahead of a holder's without this process taking
    /// the holder's lease early: another holder's lease counts as live until its `expires`
    /// plus this allowance. Default: 2 s.
    ///
    /// A waiting [`acquire`](Self::acquire) is also safe from larger skew for leases written
    /// by this crate: it only takes such a lease over once it has itself seen the lease
    /// unchanged for the lease's whole duration. A single [`try_acquire`](Self::try_acquire)
    /// has seen nothing, so it relies on the allowance alone: a clock ahead by more than the
    /// allowance plus a tenth of the holder's lease duration (the margin by which the holder
    /// gives up early) can take a lease whose holder still trusts it.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use lockheed::{Lock, MemoryLocker};
    ///
    /// // Nodes whose clocks are only loosely synchronised.
    /// let lock = Lock::new("db", MemoryLocker::new())
    ///     .with_duration(Duration::from_secs(60))
    ///     .with_clock_skew_allowance(Duration::from_secs(10));
    /// # let _ = lock;
    /// ```
    pub fn with_clock_skew_allowance(mut self, allowance: Duration) -> Self {
        self.skew_allowance = allowance;
        self
    }

    /// Whether waiting is fair (first come, first served). Default: `true`.
    ///
    /// A waiting [`acquire`](Self::acquire) takes a place at the end of the lock's queue,
    /// kept in the lock with its holders, and nobody who came later takes the lock before
    /// it: not a waiter of another process, not [`try_acquire`](Self::try_acquire), not a
    /// holder that releases and comes straight back. Whoever frees the lock hands it over in
    /// the same write, so the waiter takes it without a write of its own. The handed lease
    /// lasts half the lease duration (at most 15 s) until the guard's first renewal claims it
    /// (that renewal comes before then anyway): a waiter that never sees the handover keeps
    /// the others out for that and the [skew allowance](Self::with_clock_skew_allowance), not
    /// for a whole lease.
    ///
    /// The cost: one write to queue, and one more every half of the place's life while it
    /// waits (the place lasts the lease duration, at most 30 s, so that a waiter that dies
    /// keeps no one waiting longer than that). A wait shorter than that costs no more writes
    /// than taking the lock unfairly would, since the handover saves the taking write; a long
    /// wait costs one write per 15 s (with 30 s leases).
    ///
    /// With `false`, this lock neither queues nor respects the queue: it takes the lock
    /// whenever it is free, as Go lockheed clients do, and waiting costs no writes at all. Mix
    /// the two on one lock only knowingly: unfair callers overtake the queue.
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed::{Lock, MemoryLocker};
    ///
    /// // A lock polled for hours by a background job, for which fairness does not matter.
    /// let lock = Lock::new("vacuum", MemoryLocker::new()).with_fifo(false);
    /// # let _ = lock;
    /// ```
    pub fn with_fifo(mut self, fifo: bool) -> Self {
        self.fifo = fifo;
        self
    }

    /// How long [`acquire`](Self::acquire) waits at most before failing with
    /// [`Error::Timeout`]. Default: no limit.
    ///
    /// The limit bounds the waiting, not a request in flight: a lock found free is taken even
    /// if the API server answers the write after the limit (so an acquire can take a little
    /// longer than its timeout on a slow server, but never gives up a lock it was writing).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use lockheed::{Error, Lock, MemoryLocker};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), lockheed::Error> {
    /// let locker = MemoryLocker::new();
    /// let held = Lock::new("db", locker.clone()).try_acquire().await?;
    /// let impatient = Lock::new("db", locker).with_acquire_timeout(Duration::from_millis(20));
    /// assert!(matches!(impatient.acquire().await, Err(Error::Timeout { .. })));
    /// # held.release().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn with_acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = Some(timeout);
        self
    }

    /// Calls `observer` while [`acquire`](Self::acquire) waits: when it first finds the lock
    /// held, and again whenever the holders in its way change (other holders, not renewals of
    /// the same ones). Command lines use it to say what they wait for; it runs on the
    /// acquiring task, so it must return quickly. [`try_acquire`](Self::try_acquire) never
    /// waits and never calls it.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use lockheed::{Lock, MemoryLocker};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), lockheed::Error> {
    /// let locker = MemoryLocker::new();
    /// let held = Lock::new("deploy", locker.clone()).with_holder("ci-42").acquire().await?;
    /// let err = Lock::new("deploy", locker)
    ///     .on_wait(|w| {
    ///         let who: Vec<_> = w.holders.iter().map(|h| h.id.as_str()).collect();
    ///         eprintln!("waiting for {}: held by {}", w.lock, who.join(", "));
    ///     })
    ///     .acquire_timeout(Duration::from_millis(50))
    ///     .await
    ///     .unwrap_err();
    /// assert_eq!(err.holders().unwrap()[0].id, "ci-42");
    /// # held.release().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn on_wait(mut self, observer: impl Fn(&Waiting) + Send + Sync + 'static) -> Self {
        self.on_wait = Some(WaitObserver(Arc::new(observer)));
        self
    }

    /// The lock's name.
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed::{Lock, MemoryLocker};
    ///
    /// assert_eq!(Lock::new("db", MemoryLocker::new()).name(), "db");
    /// ```
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The holder identity.
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed::{Lock, MemoryLocker};
    ///
    /// let lock = Lock::new("db", MemoryLocker::new()).with_holder("worker-1");
    /// assert_eq!(lock.holder(), "worker-1");
    /// ```
    #[must_use]
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// How long each lease lasts (zero: no expiry).
    pub(crate) fn duration(&self) -> Duration {
        self.duration
    }

    /// The backend.
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed::{Lock, Locker, MemoryLocker};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), lockheed::Error> {
    /// let lock = Lock::new("db", MemoryLocker::new());
    /// let guard = lock.try_acquire().await?;
    /// assert!(lock.locker().get("db").await?.unwrap().is_held());
    /// # guard.release().await?;
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn locker(&self) -> &L {
        &self.locker
    }

    fn invalid(&self, reason: &str) -> Error {
        Error::InvalidConfig {
            lock: self.name.clone(),
            reason: reason.to_owned(),
        }
    }

    /// The kind of lock the settings ask for.
    fn kind(&self) -> Result<Kind, Error> {
        match (self.max_holders, self.access) {
            (Some(_), Some(_)) => Err(self.invalid(
                "a lock is either a semaphore (with_max_holders) or a read/write lock \
                 (with_access), not both",
            )),
            (Some(0), None) => Err(self.invalid("a semaphore needs at least 1 holder")),
            (Some(max), None) => Ok(Kind::Semaphore(max)),
            (None, Some(access)) => Ok(Kind::ReadWrite(access)),
            (None, None) => Ok(Kind::Mutex),
        }
    }

    /// The renew interval in force: `None` when the lease is never renewed.
    fn renew_interval(&self) -> Result<Option<Duration>, Error> {
        if self.duration.is_zero() {
            // A lease without expiry needs no renewal.
            return Ok(None);
        }
        match self.renew_interval {
            None => Ok(Some(self.duration / 3)),
            Some(interval) if interval.is_zero() => Ok(None),
            // The guard gives up its safety margin early: renewals must come before that.
            Some(interval)
                if interval
                    >= self
                        .duration
                        .saturating_sub(crate::rules::safety_margin(self.duration)) =>
            {
                Err(self.invalid(&format!(
                    "the renew interval ({interval:?}) must be shorter than the duration ({:?}) \
                 minus the tenth the guard keeps as a safety margin",
                    self.duration
                )))
            }
            Some(interval) => Ok(Some(interval)),
        }
    }

    /// The settings, checked before any request.
    fn settings(&self) -> Result<Settings, Error> {
        self.locker.check_name(&self.name)?;
        let kind = self.kind()?;
        self.locker
            .check_lock(&self.name, &kind.public(), self.duration)?;
        if self.holder.is_empty() {
            return Err(self.invalid("the holder identity must not be empty"));
        }
        if self.tags.iter().any(String::is_empty) {
            return Err(self.invalid("tags must not be empty"));
        }
        Ok(Settings {
            name: self.name.clone(),
            holder: self.holder.clone(),
            kind,
            duration: self.duration,
            renew_interval: self.renew_interval()?,
            tags: self.tags.clone(),
            reset_tags: self.reset_tags,
            force: self.force.clone(),
            reason: self.reason.clone(),
            retry_interval: self.retry_interval,
            skew_allowance: self.skew_allowance,
            fifo: self.fifo,
            background: self.background.clone(),
            on_wait: self.on_wait.clone(),
        })
    }

    /// Lets this lock's background work finish first, for a moment at most: the release of a
    /// guard just dropped lands before the lock is taken again (which would otherwise be a
    /// re-entry), and the clean-up of an attempt whose outcome was unknown never races the
    /// attempt after it (in kube-lock's format, which keeps no per-lease id, it could remove
    /// the new lease).
    async fn background_first(&self) {
        let _ = tokio::time::timeout(BACKGROUND_FIRST, self.background.settle()).await;
    }

    /// One take: read (or start from what the backend's watch knows), decide,
    /// compare-and-swap. A lock that looks held in the watch's view is read before saying so:
    /// the view may be a moment old.
    async fn attempt(&self) -> Result<LockGuard<L>, Error> {
        let settings = self.settings()?;
        self.background_first().await;
        let (start, from_view) = match self.locker.known(&self.name) {
            Snapshot::Present(record) => (Start::Known(Some(record)), true),
            Snapshot::Absent => (Start::Known(None), true),
            _ => (Start::Read, false),
        };
        let once = Intent::Once;
        let start = Begin::Start(start);
        let mut taken = take::take(&self.locker, &settings, start, None, None, once, None).await?;
        if from_view && matches!(taken, Taken::Busy(_)) {
            let start = Begin::Start(Start::Read);
            taken = take::take(&self.locker, &settings, start, None, None, once, None).await?;
        }
        match taken {
            Taken::Acquired(acquired) => {
                // A guard joins the process's watch of the lock if it runs (it costs nothing
                // then), so that its writes start from the lock as it changes.
                let view = self.locker.watched(&self.name);
                Ok(LockGuard::start(
                    settings,
                    self.locker.clone(),
                    acquired,
                    view,
                ))
            }
            Taken::Handed(..) => unreachable!("nothing is handed over to a single attempt"),
            Taken::Busy(blocked) | Taken::Queued { blocked, .. } => Err(Error::Held {
                lock: self.name.clone(),
                holders: blocked.holders,
                max_holders: blocked.max_holders,
            }),
            Taken::Unknown { error, cleanup, .. } => {
                // The write may have happened: since this attempt fails, do not leave its
                // lease behind.
                drop(cleanup);
                Err(error)
            }
        }
    }

    /// Waits for the lock, at most `timeout`.
    async fn wait(&self, timeout: Option<Duration>) -> Result<LockGuard<L>, Error> {
        let settings = self.settings()?;
        // The timeout bounds the whole call, the moment given to background work included.
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        match deadline {
            Some(deadline) => {
                let _ = tokio::time::timeout_at(deadline, self.background_first()).await;
            }
            None => self.background_first().await,
        }
        let mut waiter = Waiter::new(&self.locker, &settings);
        let acquired = waiter.run(deadline).await?;
        let view = waiter.into_feed();
        Ok(LockGuard::start(
            settings,
            self.locker.clone(),
            acquired,
            view,
        ))
    }

    /// Takes the lock if nobody else holds it, without waiting.
    ///
    /// One read and one compare-and-swap write when uncontended (a lock that does not exist
    /// yet is created in the same attempt). If this holder already holds the lock, this is a
    /// re-entry: it succeeds at once with a new lease and a new token (see below).
    ///
    /// # Errors
    ///
    /// [`Error::Held`] (see [`Error::is_held`]) with the current holders when someone else
    /// holds it; [`Error::InvalidName`] and [`Error::InvalidConfig`] before any request;
    /// [`Error::Corrupt`] and [`Error::WrongKind`] for a state this crate must not overwrite;
    /// the backend's errors.
    ///
    /// # Re-entry
    ///
    /// Taking a lock this holder already holds (with this `Lock` or another with the same
    /// [holder identity](Self::with_holder)) succeeds at once with a new lease and a new,
    /// higher token; the older guard has lost the lock: its renewal and
    /// [`release`](LockGuard::release) fail with [`Error::Lost`] (and never remove the new
    /// lease), and its [`lost`](LockGuard::lost) fires at its next renewal. Clones of a `Lock`
    /// share the identity, so they do not exclude each other: give each task its own `Lock`.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe. If the future is dropped while its write is in flight, or the write fails
    /// in a way that leaves its outcome unknown (a timeout, a 5xx after the server acted), a
    /// background task removes the lease should the write have happened, so no lease is left
    /// behind (if the server cannot be reached for that either, the lease ends by itself:
    /// after one duration, or never with a zero duration).
    ///
    /// # Examples
    ///
    /// ```
    /// use lockheed::{Lock, MemoryLocker};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), lockheed::Error> {
    /// let locker = MemoryLocker::new();
    /// let guard = Lock::new("db", locker.clone()).with_holder("a").try_acquire().await?;
    /// match Lock::new("db", locker).try_acquire().await {
    ///     Ok(_) => unreachable!("a holds it"),
    ///     Err(err) if err.is_held() => assert_eq!(err.holders().unwrap()[0].id, "a"),
    ///     Err(err) => return Err(err),
    /// }
    /// guard.release().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn try_acquire(&self) -> Result<LockGuard<L>, Error> {
        let span =
            tracing::info_span!("lockheed.try_acquire", lock = %self.name, holder = %self.holder);
        metrics::acquisition(&self.name, Call::Try, self.attempt().instrument(span)).await
    }

    /// Takes the lock, waiting while someone else holds it (at most the
    /// [acquire timeout](Self::with_acquire_timeout), if one is set).
    ///
    /// Waiting is fair: the waiter takes a place at the end of the lock's queue, and the lock
    /// is handed over to it when its turn comes, in the write that frees it (see
    /// [`with_fifo`](Self::with_fifo)). Waiters in one process take turns among themselves
    /// first; one at a time holds the process's place in the queue. A waiter is woken as soon
    /// as the lock changes (through the backend's watch, shared by every lock of the process)
    /// and when a blocking lease can have ended; it does not poll (except while its watch is
    /// interrupted: then it reads the lock, with backoff up to the
    /// [retry interval](Self::with_retry_interval)). Transient failures (an unreachable or
    /// overloaded API server) are retried with exponential backoff and jitter, honouring
    /// `Retry-After`: writes up to 10 s apart, reads up to the retry interval apart (at least
    /// 1 s), so that a waiter whose reads fail for a while sees its turn soon after they
    /// succeed again.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] when the acquire timeout runs out; otherwise as
    /// [`try_acquire`](Self::try_acquire), except [`Error::Held`] and transient errors, which
    /// make it wait.
    ///
    /// # Re-entry
    ///
    /// As [`try_acquire`](Self::try_acquire).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future while it waits leaves nothing behind, and dropping it
    /// while it writes is handled as for [`try_acquire`](Self::try_acquire). A write whose
    /// outcome is unknown is reconciled by the next attempt: if it took the lock, the next
    /// attempt finds this holder's lease and takes the lock again (a re-entry, with a new
    /// token); if `acquire` ends first, the lease is removed in the background.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use lockheed::{Lock, MemoryLocker};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), lockheed::Error> {
    /// let locker = MemoryLocker::new();
    /// let first = Lock::new("db", locker.clone()).try_acquire().await?;
    /// let waiter = tokio::spawn(async move { Lock::new("db", locker).acquire().await });
    /// tokio::time::sleep(Duration::from_millis(10)).await;
    /// first.release().await?; // the waiter is woken and takes it
    /// let second = waiter.await.unwrap()?;
    /// assert!(second.token() > 1);
    /// # second.release().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn acquire(&self) -> Result<LockGuard<L>, Error> {
        let span =
            tracing::info_span!("lockheed.acquire", lock = %self.name, holder = %self.holder);
        let waiting = self.wait(self.acquire_timeout).instrument(span);
        metrics::acquisition(&self.name, Call::Wait, waiting).await
    }

    /// Like [`acquire`](Self::acquire), giving up after `timeout` with [`Error::Timeout`].
    ///
    /// # Errors
    ///
    /// As [`acquire`](Self::acquire).
    ///
    /// # Cancel safety
    ///
    /// As [`acquire`](Self::acquire).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use lockheed::{Error, Lock, MemoryLocker};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), lockheed::Error> {
    /// let locker = MemoryLocker::new();
    /// let held = Lock::new("db", locker.clone()).try_acquire().await?;
    /// let err = Lock::new("db", locker).acquire_timeout(Duration::from_millis(20)).await.unwrap_err();
    /// assert!(matches!(err, Error::Timeout { .. }));
    /// # held.release().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn acquire_timeout(&self, timeout: Duration) -> Result<LockGuard<L>, Error> {
        let span =
            tracing::info_span!("lockheed.acquire", lock = %self.name, holder = %self.holder);
        let waiting = self.wait(Some(timeout)).instrument(span);
        metrics::acquisition(&self.name, Call::Wait, waiting).await
    }

    /// Waits until the background work of this lock (and its clones) has finished: removing
    /// the lease of an acquire that was cancelled or failed with its write's outcome unknown,
    /// withdrawing a waiting writer's intent, releasing guards that were dropped. A short-lived
    /// program calls it before it exits: Tokio drops unfinished tasks with the runtime, and
    /// such a lease would stay until it expires (forever, for a lease without expiry).
    ///
    /// The clean-ups retry while the backend cannot be reached: bound the wait with a timeout.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only waits; the work goes on in the background.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use lockheed::{Lock, Locker, MemoryLocker};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), lockheed::Error> {
    /// let locker = MemoryLocker::new();
    /// let lock = Lock::new("db", locker.clone());
    /// drop(lock.acquire().await?); // released in the background
    /// // Before the program exits, let the background release finish (at most 10 s).
    /// let _ = tokio::time::timeout(Duration::from_secs(10), lock.settle()).await;
    /// assert!(!locker.get("db").await?.unwrap().is_held());
    /// # Ok(())
    /// # }
    /// ```
    pub async fn settle(&self) {
        self.background.settle().await;
    }
}
