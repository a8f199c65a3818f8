//! Locking: one attempt, as the Go tool's `LockOnce`, then (unless `--run-once`) polling until
//! a place frees up or the polling timeout.

use std::time::Duration;

use lockheed::{Holder, KubeLocker, Lock, LockGuard, Locker as _};

use crate::args::Settings;
use crate::exit::Failure;
use crate::poll;
use crate::say::{self, PROGRAM, Target};
use crate::shared::log::{log_info, log_warn};

/// How long kube-lock waits, when it gives up, for the library to remove a holder that a
/// write in flight may have left (see [`Locking::settle`]).
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(10);

/// What one attempt found.
enum Once {
    /// This holder holds the lock now (taken, or held already).
    Locked,
    /// The semaphore is full.
    Full,
}

/// One `kube-lock` run that locks.
pub(crate) struct Locking<'a> {
    settings: &'a Settings,
    locker: KubeLocker,
    /// kube-lock's holders never expire (zero duration) and stay after the process exits.
    lock: Lock<KubeLocker>,
}

impl<'a> Locking<'a> {
    /// Locking as `settings` say, through `locker` (kube-lock's format).
    pub(crate) fn new(settings: &'a Settings, locker: KubeLocker) -> Self {
        let lock = Lock::new(settings.target.configmap.clone(), locker.clone())
            .with_holder(settings.holder.clone())
            .with_max_holders(settings.max_holders)
            .with_duration(Duration::ZERO)
            .with_reason(settings.reason.clone())
            // Without a watch (RBAC without list and watch), the library polls: never more
            // slowly than the polling interval.
            .with_retry_interval(settings.interval);
        Self {
            settings,
            locker,
            lock,
        }
    }

    fn target(&self) -> &Target {
        &self.settings.target
    }

    /// Locks: one attempt; if the semaphore is full, fails with [`Failure::Full`] under
    /// `--run-once`, and polls otherwise. The lock is kept after the process exits.
    ///
    /// # Errors
    ///
    /// [`Failure::Full`]; a [`Failure::Failed`] for the polling timeout and the cluster's
    /// errors; a [`Failure::Config`] for a ConfigMap name the API cannot take.
    pub(crate) async fn run(&self) -> Result<(), Failure> {
        log_info!(
            PROGRAM,
            "Processing lock over {} for reason: {:?}",
            self.target(),
            self.settings.reason
        );
        if let Once::Locked = self.once().await? {
            return Ok(());
        }
        if self.settings.run_once {
            log_info!(PROGRAM, "Semaphore is full, skipping lock");
            return Err(Failure::Full);
        }
        match poll::poll(&self.lock, self.settings, |err| self.failure(err)).await {
            Ok(guard) => {
                self.locked(guard);
                Ok(())
            }
            Err(failure) => {
                self.settle().await;
                Err(failure)
            }
        }
    }

    /// One attempt: read the semaphore (a current holder is locked already: nothing is
    /// written), then let the library take a place if there is one.
    async fn once(&self) -> Result<Once, Failure> {
        let target = self.target();
        let fail = |err| self.failure(err);
        match self.locker.get(&target.configmap).await.map_err(fail)? {
            None if !self.settings.create => return Err(missing(target)),
            None => log_info!(PROGRAM, "Creating {target}"),
            Some(info) => {
                if let Some(me) = info.holders.iter().find(|h| h.id == self.settings.holder) {
                    log_already(me);
                    return Ok(Once::Locked);
                }
            }
        }
        match self.lock.try_acquire().await {
            Ok(guard) => {
                self.locked(guard);
                Ok(Once::Locked)
            }
            Err(err) if err.is_held() => {
                let held = err.holders().map_or(0, <[Holder]>::len);
                let max = err.max_holders().unwrap_or(self.settings.max_holders);
                log_cannot_lock(target, held, max);
                Ok(Once::Full)
            }
            Err(err) => {
                // If the write's outcome is unknown, the library removes its holder, should
                // the API server have stored it.
                self.settle().await;
                Err(fail(err))
            }
        }
    }

    /// Says the lock is taken (`Can lock ..: n/max holders`, with the holders before this one,
    /// then `Successfully locked ..`; `Already locked ..` for a holder that held it already),
    /// and keeps it after the process exits.
    fn locked(&self, guard: LockGuard<KubeLocker>) {
        let acquired = guard.acquired();
        let me = acquired
            .holders
            .iter()
            .find(|h| h.id == self.settings.holder);
        match me {
            Some(me) if guard.is_reentry() => log_already(me),
            _ => {
                log_can_lock(
                    self.target(),
                    acquired.holders.len().saturating_sub(1),
                    acquired.max_holders.unwrap_or(self.settings.max_holders),
                );
                log_info!(
                    PROGRAM,
                    "Successfully locked {} for holder {}",
                    self.target(),
                    self.settings.holder
                );
            }
        }
        guard.forget();
    }

    /// A library error, as a failure to lock the target.
    pub(crate) fn failure(&self, err: lockheed::Error) -> Failure {
        match err {
            lockheed::Error::Missing { .. } => missing(self.target()),
            err => Failure::from_lock(err, "lock", self.target()),
        }
    }

    /// Called when kube-lock gives up (timeout, signal, a failure in the middle of a write):
    /// waits for the library to remove the holder of a write that was in flight, or whose
    /// outcome is unknown, should the API server have stored it. The library does that in a
    /// background task that would die with the process, and a kube-lock holder never expires.
    /// Bounded by [`CLEANUP_TIMEOUT`]; says when it could not finish in time.
    ///
    /// kube-lock's annotation keeps no token per holder: a name is the holder. So the library
    /// removes the holder of such a write by its name, and another run with the same holder
    /// name that wrote at the same moment may lose its place to that clean-up; this is
    /// inherent to kube-lock's format.
    pub(crate) async fn settle(&self) {
        if tokio::time::timeout(CLEANUP_TIMEOUT, self.lock.settle())
            .await
            .is_err()
        {
            log_warn!(
                PROGRAM,
                "Cannot check in time that holder {} is not left in {} by a write kube-lock gave \
                 up on (remove it with --unlock if it is)",
                self.settings.holder,
                self.target()
            );
        }
    }
}

/// The failure for a ConfigMap that does not exist, without `--create-configmap`.
fn missing(target: &Target) -> Failure {
    Failure::Failed(anyhow::anyhow!(
        "cannot lock {target}: configmaps {:?} not found; create it, or pass --create-configmap",
        target.configmap
    ))
}

/// `Already locked since .. for reason ..`: this holder holds the lock.
fn log_already(me: &Holder) {
    log_info!(
        PROGRAM,
        "Already locked since {} for reason {:?}",
        say::date(me.since),
        me.reason.as_deref().unwrap_or_default()
    );
}

/// `Can lock semaphore in cm/lock in ns default: 0/1 holders`.
fn log_can_lock(target: &Target, held: usize, max: u32) {
    log_info!(
        PROGRAM,
        "Can lock semaphore in {target}: {held}/{max} holders"
    );
}

/// `Cannot lock semaphore in cm/lock in ns default: 1/1 holders`.
pub(crate) fn log_cannot_lock(target: &Target, held: usize, max: u32) {
    log_info!(
        PROGRAM,
        "Cannot lock semaphore in {target}: {held}/{max} holders"
    );
}
