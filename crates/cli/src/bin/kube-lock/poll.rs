//! Waiting for a place in a full semaphore, until `--polling-timeout`, as the Go tool does,
//! but woken by a watch of the ConfigMap instead of polling it.
//!
//! One [`Lock::acquire`] waits the whole time, so that this holder keeps its place in the
//! semaphore's queue (first come, first served). At each `--polling-interval` tick, where the
//! Go tool's poll would have looked, the poll's lines are logged from what the wait last saw.
//! The ticks are counted from the start of polling (as a Go ticker), so they never drift later.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use lockheed::{KubeLocker, Lock, LockGuard, Waiting};
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
    let observe = progress.observer(log_changes(target.clone()));
    let seen: Arc<Mutex<Option<Waiting>>> = Arc::default();
    let mut lock = lock.clone().on_wait({
        let seen = Arc::clone(&seen);
        move |waiting| {
            observe(waiting);
            *seen.lock().unwrap_or_else(PoisonError::into_inner) = Some(waiting.clone());
        }
    });
    if let Some(timeout) = settings.timeout {
        lock = lock.with_acquire_timeout(timeout);
    }
    let started = Instant::now();
    let deadline = settings.timeout.map(|timeout| started + timeout);
    let acquire = lock.acquire();
    tokio::pin!(acquire);
    let mut tick = started;
    loop {
        tick = next_tick(tick, interval, Instant::now());
        let polls = deadline.is_none_or(|deadline| tick < deadline);
        tokio::select! {
            result = &mut acquire => {
                progress.finish();
                return match result {
                    Ok(guard) => Ok(guard),
                    Err(lockheed::Error::Timeout { .. }) => {
                        let timeout = settings.timeout.unwrap_or_default();
                        Err(Failure::Failed(anyhow::anyhow!(
                            "cannot lock {target}, timeout after {}",
                            duration::format(timeout)
                        )))
                    }
                    Err(err) => Err(fail(err)),
                };
            }
            () = tokio::time::sleep_until(tick), if polls => {
                // The Go tool's poll at this tick.
                log_info!(
                    PROGRAM,
                    "Processing lock over {target} for reason: {:?}",
                    settings.reason
                );
                let waiting = seen.lock().unwrap_or_else(PoisonError::into_inner).clone();
                let held = waiting
                    .as_ref()
                    .map_or(0, |w| w.holders.iter().filter(|h| !h.waiting).count());
                let max = waiting
                    .and_then(|w| w.max_holders)
                    .unwrap_or(settings.max_holders);
                log_cannot_lock(target, held, max);
                log_info!(PROGRAM, "Semaphore is full, skipping lock");
            }
        }
    }
}

/// What the progress observer logs off a terminal: who holds the semaphore, each time that
/// changes (the same text is not logged twice).
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

#[cfg(test)]
mod tests {
    use super::*;

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
