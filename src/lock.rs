//! [`Lock`]: a named lock with its settings, and the ways to take it.

use std::time::Duration;

use tracing::Instrument;

use crate::condition::Condition;
use crate::error::Error;
use crate::guard::{Acquired, LockGuard, Settings};
use crate::locker::{Locker, Written};
use crate::rules::{self, Acquire, Intent};

/// How many times one attempt re-reads after a compare-and-swap conflict before it gives up
/// with [`Error::Contended`]. Each conflict means another writer made progress.
pub(crate) const MAX_CAS_ATTEMPTS: u32 = 32;

/// The default lease duration.
pub const DEFAULT_DURATION: Duration = Duration::from_secs(30);
/// The default pause between attempts of [`Lock::acquire`] while the lock is held.
pub const DEFAULT_RETRY_INTERVAL: Duration = Duration::from_secs(1);

/// A named mutex in a [`Locker`], with its settings. Taking it yields a [`LockGuard`].
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
}

impl<L: Locker> Lock<L> {
    /// The lock `name` in `locker`, with a new random holder identity (a UUID v4, like Go
    /// lockheed's instance id), a 30 s lease renewed every 10 s, no tags and no force.
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
        }
    }

    /// How long each lease (and each renewal) lasts. Zero means no expiry: the lease is stored
    /// as `9999-12-31T23:59:59Z`, like Go, and lasts until released or taken by force.
    /// Default: 30 s.
    pub fn with_duration(mut self, duration: Duration) -> Self {
        self.duration = duration;
        self
    }

    /// How often the guard renews its lease; zero turns renewal off (the lease then ends
    /// after one duration, and [`LockGuard::lost`] fires). Must be shorter than the duration.
    /// Default: a third of the duration.
    pub fn with_renew_interval(mut self, interval: Duration) -> Self {
        self.renew_interval = Some(interval);
        self
    }

    /// Tags to add to the lock when it is acquired and released (tags already there stay,
    /// unless [`with_reset_tags`](Self::with_reset_tags)). Tags must not be empty.
    pub fn with_tags<I, T>(mut self, tags: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        self.tags.extend(tags.into_iter().map(Into::into));
        self
    }

    /// Replaces the lock's tags with this lock's [`with_tags`](Self::with_tags) instead of
    /// adding to them.
    pub fn with_reset_tags(mut self) -> Self {
        self.reset_tags = true;
        self
    }

    /// Takes the lock over from its current holders when the lock meets `condition` (Go
    /// lockheed's forced takeover). The previous holder's guard sees [`LockGuard::lost`] fire
    /// at its next renewal.
    pub fn with_force(mut self, condition: Condition) -> Self {
        self.force = Some(condition);
        self
    }

    /// The identity this lock holds leases under. Two `Lock`s with the same identity are the
    /// same holder: taking the lock again renews the lease instead of waiting for it.
    /// Default: a random UUID v4.
    pub fn with_holder(mut self, holder: impl Into<String>) -> Self {
        self.holder = holder.into();
        self
    }

    /// How long [`acquire`](Self::acquire) waits between attempts while the lock is held (it
    /// also retries as soon as the holder's lease can have expired). Default: 1 s.
    pub fn with_retry_interval(mut self, interval: Duration) -> Self {
        self.retry_interval = interval;
        self
    }

    /// The lock's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The holder identity.
    #[must_use]
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// The backend.
    #[must_use]
    pub fn locker(&self) -> &L {
        &self.locker
    }

    fn invalid(&self, reason: String) -> Error {
        Error::InvalidConfig {
            lock: self.name.clone(),
            reason,
        }
    }

    /// The renew interval in force, after checking the settings.
    fn validate(&self) -> Result<Option<Duration>, Error> {
        self.locker.check_name(&self.name)?;
        if self.holder.is_empty() {
            return Err(self.invalid("the holder identity must not be empty".into()));
        }
        if self.tags.iter().any(String::is_empty) {
            return Err(self.invalid("tags must not be empty".into()));
        }
        if self.duration.is_zero() {
            // A lease without expiry needs no renewal.
            return Ok(None);
        }
        match self.renew_interval {
            None => Ok(Some(self.duration / 3)),
            Some(interval) if interval.is_zero() => Ok(None),
            Some(interval) if interval >= self.duration => Err(self.invalid(format!(
                "the renew interval ({interval:?}) must be shorter than the duration ({:?})",
                self.duration
            ))),
            Some(interval) => Ok(Some(interval)),
        }
    }

    /// Takes the lock if nobody else holds it, without waiting.
    ///
    /// One read and one compare-and-swap write when uncontended (a lock that does not exist
    /// yet is created in the same attempt). If this holder already holds the lock, the lease
    /// is renewed and the guard has the same fencing token.
    ///
    /// # Errors
    ///
    /// [`Error::Held`] (see [`Error::is_held`]) with the current holders when someone else
    /// holds it; [`Error::InvalidName`] and [`Error::InvalidConfig`] before any request;
    /// [`Error::Corrupt`] and [`Error::WrongKind`] for a state this crate must not overwrite;
    /// the backend's errors.
    ///
    /// # Cancel safety
    ///
    /// If the future is dropped after the write that takes the lock but before it returns,
    /// the lease stays until it expires (after one duration; never, with a zero duration) or
    /// until this holder takes the lock again.
    pub async fn try_acquire(&self) -> Result<LockGuard<L>, Error> {
        let span =
            tracing::info_span!("lockheed.try_acquire", lock = %self.name, holder = %self.holder);
        self.attempt().instrument(span).await
    }

    /// Takes the lock, waiting while someone else holds it.
    ///
    /// While the lock is held it retries every [retry interval](Self::with_retry_interval),
    /// or as soon as the holder's lease can have expired if that is sooner.
    ///
    /// # Errors
    ///
    /// As [`try_acquire`](Self::try_acquire), except [`Error::Held`].
    ///
    /// # Cancel safety
    ///
    /// As [`try_acquire`](Self::try_acquire): dropping the future while it waits leaves
    /// nothing behind.
    pub async fn acquire(&self) -> Result<LockGuard<L>, Error> {
        let span =
            tracing::info_span!("lockheed.acquire", lock = %self.name, holder = %self.holder);
        async {
            loop {
                match self.attempt().await {
                    Err(Error::Held { holders, .. }) => {
                        let now = self.locker.clock().now();
                        let until_expiry = holders
                            .iter()
                            .filter_map(|h| h.expires)
                            .min()
                            .and_then(|at| (at - now).to_std().ok());
                        let wait = until_expiry
                            .map_or(self.retry_interval, |d| d.min(self.retry_interval))
                            .max(Duration::from_millis(10));
                        tracing::debug!(?wait, held_by = ?holders.iter().map(|h| &h.id).collect::<Vec<_>>(), "lock is held; waiting");
                        tokio::time::sleep(wait).await;
                    }
                    other => return other,
                }
            }
        }
        .instrument(span)
        .await
    }

    /// One attempt: read, decide, compare-and-swap; a conflict re-reads and decides again.
    async fn attempt(&self) -> Result<LockGuard<L>, Error> {
        let renew_interval = self.validate()?;
        let clock = self.locker.clock();
        for _ in 0..MAX_CAS_ATTEMPTS {
            let record = self.locker.read(&self.name).await?;
            let empty = crate::state::LockState::empty(&self.name);
            let (state, version, reservation) = match &record {
                Some(r) => (&r.state, Some(&r.version), r.reservation.as_ref()),
                None => (&empty, None, None),
            };
            let intent = Intent {
                holder: &self.holder,
                duration: self.duration,
                tags: &self.tags,
                reset_tags: self.reset_tags,
                force: self.force.as_ref(),
            };
            match rules::acquire(&self.name, state, reservation, intent, clock.now())? {
                Acquire::Busy(holders) => {
                    return Err(Error::Held {
                        lock: self.name.clone(),
                        holders,
                    });
                }
                Acquire::Take {
                    state,
                    token,
                    expires,
                    renewed,
                } => match self.locker.write(&self.name, version, &state).await? {
                    Written::Stored(version) => {
                        tracing::debug!(token, renewed, %expires, "lock taken");
                        let settings = Settings {
                            name: self.name.clone(),
                            holder: self.holder.clone(),
                            duration: self.duration,
                            renew_interval,
                            tags: self.tags.clone(),
                            reset_tags: self.reset_tags,
                        };
                        return Ok(LockGuard::start(
                            settings,
                            self.locker.clone(),
                            Acquired {
                                version,
                                state,
                                token,
                                expires,
                            },
                        ));
                    }
                    Written::Conflict => {
                        tracing::debug!("the lock changed while taking it; reading it again");
                    }
                },
            }
        }
        Err(Error::Contended {
            lock: self.name.clone(),
            attempts: MAX_CAS_ATTEMPTS,
        })
    }
}
