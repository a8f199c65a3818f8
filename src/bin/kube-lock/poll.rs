//! Waiting for a place in a full semaphore: every `--polling-interval` until
//! `--polling-timeout`, as the Go tool, but woken sooner by a watch of the ConfigMap.
//!
//! Each polling interval is one [`Lock::acquire_timeout`] that ends on the interval's tick: it
//! takes a place as soon as the watch shows one free, and otherwise gives up at the tick, where
//! the Go tool's poll would have looked, and the poll's lines are logged. The ticks are counted
//! from the start of polling (as a Go ticker), so waits never drift later. One watch is kept
//! open for the whole wait, so the intervals do not each list the ConfigMap again.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use lockheed::backend::Backend as _;
use lockheed::{Holder, KubeLocker, Lock, LockGuard};
use tokio::time::Instant;

use crate::args::Settings;
use crate::exit::Failure;
use crate::lock::log_cannot_lock;
use crate::say::{PROGRAM, Target};
use crate::shared::duration;
use crate::shared::log::log_info;
use crate::shared::progress::Progress;

/// Waits for a place in the semaphore with `lock`, until the polling timeout.
///
/// # Errors
///
/// A [`Failure::Failed`] for the timeout (`cannot lock cm/lock in ns default, timeout after
/// 25s`); `fail(err)` for the library's other errors.
pub(crate) async fn poll(
    lock: &Lock<KubeLocker>,
    locker: &KubeLocker,
    settings: &Settings,
    fail: impl Fn(lockheed::Error) -> Failure,
) -> Result<LockGuard<KubeLocker>, Failure> {
    let target = &settings.target;
    let interval = settings.interval;
    match settings.timeout {
        Some(timeout) => log_info!(
            PROGRAM,
            "Starting to poll for lock every {}, timeout after {}",
            duration::format(interval),
            duration::format(timeout)
        ),
        None => log_info!(
            PROGRAM,
            "Starting to poll for lock every {}, no timeout",
            duration::format(interval)
        ),
    }
    let progress = Progress::start(PROGRAM, target.to_string());
    let lock = lock
        .clone()
        .on_wait(progress.observer(log_changes(target.clone())));
    // Keeps the ConfigMap's watch (shared with the acquires below) open between intervals.
    let _watch = locker.changes(&target.configmap);
    let started = Instant::now();
    let deadline = settings.timeout.map(|timeout| started + timeout);
    let mut tick = started;
    loop {
        tick = next_tick(tick, interval, Instant::now());
        let (until, last) = next_stop(tick, deadline);
        let err = match lock
            .acquire_timeout(until.saturating_duration_since(Instant::now()))
            .await
        {
            Ok(guard) => {
                progress.finish();
                return Ok(guard);
            }
            Err(err) => err,
        };
        match err {
            lockheed::Error::Timeout { .. } if last => {
                progress.finish();
                let timeout = settings.timeout.unwrap_or_default();
                return Err(Failure::Failed(anyhow::anyhow!(
                    "cannot lock {target}, timeout after {}",
                    duration::format(timeout)
                )));
            }
            lockheed::Error::Timeout { .. } => {
                // The Go tool's poll at this tick.
                log_info!(
                    PROGRAM,
                    "Processing lock over {target} for reason: {:?}",
                    settings.reason
                );
                let held = err.holders().map_or(0, <[Holder]>::len);
                let max = err.max_holders().unwrap_or(settings.max_holders);
                log_cannot_lock(target, held, max);
                log_info!(PROGRAM, "Semaphore is full, skipping lock");
            }
            err => {
                progress.finish();
                return Err(fail(err));
            }
        }
    }
}

/// What the progress observer logs off a terminal: who holds the semaphore, each time that
/// changes (each interval's acquire reports it afresh: the same text is not logged twice).
fn log_changes(target: Target) -> impl Fn(&str) + Send + Sync + 'static {
    let last = Mutex::new(String::new());
    move |text: &str| {
        let mut last = last.lock().unwrap_or_else(PoisonError::into_inner);
        if *last != text {
            text.clone_into(&mut last);
            log_info!(PROGRAM, "Waiting for {target}: {text}");
        }
    }
}

/// The tick after `previous`, an `interval` later; if that has passed already (the process
/// was suspended, or the interval is shorter than a poll), an `interval` from `now`: missed
/// ticks are dropped, as a Go ticker drops them, rather than polled in a burst.
fn next_tick(previous: Instant, interval: Duration, now: Instant) -> Instant {
    let next = previous + interval;
    if next > now { next } else { now + interval }
}

/// Where the wait for the next poll ends: the interval's `tick`, or the `deadline` when it
/// comes first, and whether it is the last wait.
fn next_stop(tick: Instant, deadline: Option<Instant>) -> (Instant, bool) {
    match deadline {
        Some(deadline) if deadline <= tick => (deadline, true),
        _ => (tick, false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_wait_ends_at_the_timeout() {
        // `--polling-interval 10s --polling-timeout 25s`: polls at 10s and 20s, gives up at 25s.
        let start = Instant::now();
        let second = Duration::from_secs(1);
        let deadline = Some(start + 25 * second);
        assert_eq!(
            next_stop(start + 10 * second, deadline),
            (start + 10 * second, false)
        );
        assert_eq!(
            next_stop(start + 20 * second, deadline),
            (start + 20 * second, false)
        );
        assert_eq!(
            next_stop(start + 30 * second, deadline),
            (start + 25 * second, true)
        );
        // A timeout on a tick gives up there.
        assert_eq!(
            next_stop(start + 25 * second, deadline),
            (start + 25 * second, true)
        );
        assert_eq!(
            next_stop(start + 10 * second, None),
            (start + 10 * second, false)
        );
    }

    #[test]
    fn ticks_keep_their_phase_and_drop_missed_ones() {
        let start = Instant::now();
        let second = Duration::from_secs(1);
        // A poll that ends a little after its tick: the next tick stays on the grid.
        assert_eq!(next_tick(start, 10 * second, start), start + 10 * second);
        let late = start + 10 * second + Duration::from_millis(3);
        assert_eq!(
            next_tick(start + 10 * second, 10 * second, late),
            start + 20 * second
        );
        // Back from a 35 s suspension: one poll an interval later, not three at once.
        let resumed = start + 45 * second;
        assert_eq!(
            next_tick(start + 10 * second, 10 * second, resumed),
            resumed + 10 * second
        );
    }
}
