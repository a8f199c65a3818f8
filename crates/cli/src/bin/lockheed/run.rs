//! `lockheed run`: take the lock, run the command while the lease is renewed, release it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use lockheed::{Access, Lock, LockGuard, Locker};

use crate::args::{ClusterArgs, RunArgs};
use crate::child::{self, Identity};
use crate::connect::{Locks, Place};
use crate::exit::{self, Failure};
use crate::shared::log;
use crate::shared::progress::Progress;
use crate::shared::signals::Terminations;

/// How long lockheed waits, before it exits, for the lock's background clean-ups: removing
/// the lease of an acquire it gave up (a signal while the lease was being written), or
/// releasing a guard it dropped. They retry while the cluster cannot be reached.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs `args.command` under lock `args.name`, and returns its exit code.
///
/// # Errors
///
/// When the lock cannot be taken (the cluster, `--timeout`, a signal while waiting), the
/// command cannot be started (a [`Failure`] with code 126 or 127), or the lock is lost before
/// the command ends.
pub(crate) async fn run(cluster: &ClusterArgs, mut args: RunArgs) -> anyhow::Result<u8> {
    args.lease = cluster.lease;
    // From here on, SIGINT and SIGTERM are handled: waiting stops, a command gets them.
    let mut signals = Terminations::listen().context("cannot handle SIGINT and SIGTERM")?;
    match crate::connect::locker(cluster).await? {
        Locks::ConfigMaps(locker) => run_in(locker, args, &mut signals).await,
        Locks::Leases(locker) => run_in(locker, args, &mut signals).await,
    }
}

/// Runs `args.command` under lock `args.name` of `locker`.
async fn run_in<L: Place>(
    locker: L,
    args: RunArgs,
    signals: &mut Terminations,
) -> anyhow::Result<u8> {
    let namespace = locker.namespace().to_owned();
    let holder = args.holder.clone().unwrap_or_else(default_holder);
    let name = args.name.as_str();

    let progress = Progress::start(
        crate::PROGRAM,
        format!("lock {name:?} in namespace {namespace}"),
    );
    let waited = Arc::new(AtomicBool::new(false));
    let lock = settings(&args, locker, &holder).on_wait({
        let observer = progress.observer({
            let name = args.name.clone();
            move |what| log::log_info!(crate::PROGRAM, "waiting for lock {name:?}: {what}")
        });
        let waited = Arc::clone(&waited);
        move |waiting| {
            waited.store(true, Ordering::Relaxed);
            observer(waiting);
        }
    });
    let ran = async {
        let guard = acquire(&args, &lock, progress, &waited, &namespace, signals).await?;
        hold(guard, &args, &namespace, &holder, signals).await
    }
    .await;
    // An acquire given up, or a guard dropped on the way out, leaves its clean-up running in
    // the background: it ends with the process unless lockheed waits for it.
    if tokio::time::timeout(SETTLE_TIMEOUT, lock.settle())
        .await
        .is_err()
    {
        log::log_warn!(
            crate::PROGRAM,
            "cleaning up lock {name:?} did not finish within {}: {holder} may still hold \
             it; {}",
            crate::shared::duration::format(SETTLE_TIMEOUT),
            unreleased(&args, &holder)
        );
    }
    ran
}

/// Runs the command while `guard` holds the lock, releases it, and returns the command's
/// exit code.
async fn hold<L: Locker>(
    guard: LockGuard<L>,
    args: &RunArgs,
    namespace: &str,
    holder: &str,
    signals: &mut Terminations,
) -> anyhow::Result<u8> {
    let name = args.name.as_str();
    let identity = Identity {
        lock: name,
        namespace,
        holder,
        token: guard.token(),
    };
    let started = match child::spawn(&args.command, &identity) {
        Ok(started) => started,
        Err(err) => {
            release(guard, args).await;
            return Err(err);
        }
    };
    let outcome = child::supervise(started, guard.lost(), signals, args.grace_period, name).await?;
    let ended = exit::describe(outcome.status);
    if outcome.stopped || guard.is_lost() {
        // Nothing to release, unless the lease is still there after all (a renewal that
        // failed for a network error): then it goes.
        let _ = guard.release().await;
        let how = if outcome.killed {
            format!("the command was stopped and killed ({ended})")
        } else if outcome.stopped {
            format!("the command was stopped ({ended})")
        } else {
            format!("the command ended with {ended}")
        };
        return Err(anyhow!(
            "lock {name:?} was lost while the command ran: its lease could not be renewed in \
             time, or it was taken over or removed; {how}"
        ));
    }
    match guard.release().await {
        Ok(()) => {
            if log::enabled(1) {
                log::log_info!(
                    crate::PROGRAM,
                    "the command ended with {ended}; released lock {name:?}"
                );
            }
        }
        Err(lockheed::Error::Lost { .. }) => {
            return Err(anyhow!(
                "lock {name:?} was lost before the command ended (with {ended}): it was taken \
                 over or removed, and another holder may have held it meanwhile"
            ));
        }
        Err(err) => log::log_warn!(
            crate::PROGRAM,
            "cannot release lock {name:?} ({err:#}); {}",
            unreleased(args, holder)
        ),
    }
    Ok(exit::of_status(outcome.status))
}

/// Takes `lock` as `args` says, `progress` saying on stderr what it waits for (`waited` tells
/// whether it waited). Stops waiting at SIGINT or SIGTERM; the caller then lets the lock
/// settle, which removes the lease should the write in flight have taken the lock.
async fn acquire<L: Locker>(
    args: &RunArgs,
    lock: &Lock<L>,
    progress: Progress,
    waited: &AtomicBool,
    namespace: &str,
    signals: &mut Terminations,
) -> anyhow::Result<LockGuard<L>> {
    let name = args.name.as_str();
    let taking = async {
        match args.timeout {
            Some(timeout) if timeout.is_zero() => lock.try_acquire().await,
            Some(timeout) => lock.acquire_timeout(timeout).await,
            None => lock.acquire().await,
        }
    };
    let taken = tokio::select! {
        taken = taking => taken,
        signal = signals.next() => {
            progress.finish();
            return Err(Failure::new(
                exit::signalled(signal as i32),
                format!("interrupted by {signal} while waiting for lock {name:?}"),
            )
            .into());
        }
    };
    progress.finish();
    let guard =
        taken.with_context(|| format!("cannot take lock {name:?} in namespace {namespace}"))?;
    if waited.load(Ordering::Relaxed) || log::enabled(1) {
        log::log_info!(
            crate::PROGRAM,
            "took lock {name:?} as {} (fencing token {}); running the command",
            lock.holder(),
            guard.token()
        );
    }
    Ok(guard)
}

/// The lock `args` describes.
fn settings<L: Locker>(args: &RunArgs, locker: L, holder: &str) -> Lock<L> {
    let mut lock = Lock::new(args.name.clone(), locker)
        .with_holder(holder)
        .with_duration(args.duration)
        .with_tags(args.tags.iter().cloned());
    if let Some(interval) = args.renew_interval {
        lock = lock.with_renew_interval(interval);
    }
    if let Some(reason) = &args.reason {
        lock = lock.with_reason(reason.clone());
    }
    if let Some(max) = args.max_holders {
        lock = lock.with_max_holders(max);
    }
    if args.shared {
        lock = lock.with_access(Access::Shared);
    }
    if args.exclusive {
        lock = lock.with_access(Access::Exclusive);
    }
    lock
}

/// Releases the lock after the command could not be started, saying so if that fails.
async fn release<L: Locker>(guard: LockGuard<L>, args: &RunArgs) {
    let holder = guard.holder().to_owned();
    if let Err(err) = guard.release().await {
        log::log_warn!(
            crate::PROGRAM,
            "cannot release lock {:?} ({err:#}); {}",
            args.name,
            unreleased(args, &holder)
        );
    }
}

/// What becomes of a lease that could not be released, and how to remove it.
fn unreleased(args: &RunArgs, holder: &str) -> String {
    let lease = if args.lease { " --lease" } else { "" };
    if args.duration.is_zero() {
        format!(
            "it has no expiry: remove it with `lockheed release{lease} {} --holder {holder}`",
            args.name
        )
    } else {
        format!(
            "its lease ends by itself within {}, or remove it with `lockheed release {} \
             --holder {holder}`",
            crate::shared::duration::format(args.duration),
            args.name
        )
    }
}

/// `HOSTNAME-PID-RANDOM`: readable, easy to pass to `lockheed release --holder`, and
/// unguessable and unique even where hostname and process id repeat (two containers of one
/// pod share the pod's hostname, and each may be process 1): a holder that shared another's
/// identity would take its lock as a re-entry, superseding it while its command still runs.
fn default_holder() -> String {
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "lockheed".to_owned());
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}-{}-{}", std::process::id(), &random[..12])
}
