//! Saying what a command waits for, on stderr: a progress line redrawn every second when stderr
//! is a terminal, and a plain log line each time the holders change when it is not (a CI log,
//! a file), so that logs are not flooded with carriage returns.

use std::fmt::Write as _;
use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use lockheed::{Holder, Waiting};

/// The progress line on screen, if any (shared with the log lines, which clear it first).
static LINE: Mutex<Option<String>> = Mutex::new(None);

/// Runs `write` (which writes whole lines to stderr) with the progress line cleared, then
/// draws it again.
pub(crate) fn interrupt(write: impl FnOnce()) {
    let line = LINE.lock().unwrap_or_else(PoisonError::into_inner);
    let mut stderr = std::io::stderr().lock();
    if line.is_some() {
        let _ = write!(stderr, "\r\x1b[2K");
    }
    write();
    if let Some(text) = line.as_deref() {
        let _ = write!(stderr, "{text}");
        let _ = stderr.flush();
    }
}

fn draw(text: Option<String>) {
    let mut line = LINE.lock().unwrap_or_else(PoisonError::into_inner);
    let mut stderr = std::io::stderr().lock();
    let _ = write!(stderr, "\r\x1b[2K");
    if let Some(text) = &text {
        let _ = write!(stderr, "{text}");
    }
    let _ = stderr.flush();
    *line = text;
}

/// Describes what a waiter waits for: `held by holder-1 (since 2018-08-19T19:14:24Z (5s ago),
/// reason "db restart"), 1/1 holders` (each holder as [`Holder::describe`] has it).
pub(crate) fn describe(waiting: &Waiting, now: DateTime<Utc>) -> String {
    let mut text = String::from("held by ");
    for (i, holder) in waiting.holders.iter().enumerate() {
        if i > 0 {
            text.push_str(", ");
        }
        text.push_str(&holder.describe(now));
    }
    if waiting.holders.is_empty() {
        text.push_str("nobody visible");
    }
    if let Some(max) = waiting.max_holders {
        let held = waiting.holders.iter().filter(|h| !h.waiting).count();
        let _ = write!(text, ", {held}/{max} holders");
    }
    text
}

/// Reports a wait on stderr until dropped (or [`finish`](Self::finish)ed).
pub(crate) struct Progress {
    state: Arc<Mutex<Option<Waiting>>>,
    ticker: Option<tokio::task::JoinHandle<()>>,
    tty: bool,
}

impl Progress {
    /// Starts reporting the wait for `what` (`lock jobs`, `cm/lock in ns default`), on behalf of
    /// `program` (for log lines). On a terminal, a line is redrawn every second.
    pub(crate) fn start(program: &'static str, what: String) -> Self {
        let tty = std::io::stderr().is_terminal();
        let state: Arc<Mutex<Option<Waiting>>> = Arc::default();
        let ticker = tty.then(|| {
            let state = Arc::clone(&state);
            let started = Instant::now();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                loop {
                    tick.tick().await;
                    let waiting = state.lock().unwrap_or_else(PoisonError::into_inner).clone();
                    if let Some(waiting) = waiting {
                        draw(Some(format!(
                            "{program}: waiting {} for {what}: {}",
                            super::duration::short(started.elapsed()),
                            describe(&waiting, Utc::now())
                        )));
                    }
                }
            })
        });
        Self { state, ticker, tty }
    }

    /// The observer to give [`Lock::on_wait`](lockheed::Lock::on_wait). Off a terminal, it logs
    /// a line with `log` each time the holders change.
    pub(crate) fn observer(
        &self,
        log: impl Fn(&str) + Send + Sync + 'static,
    ) -> impl Fn(&Waiting) + Send + Sync + 'static {
        let state = Arc::clone(&self.state);
        let tty = self.tty;
        move |waiting: &Waiting| {
            if !tty {
                log(&describe(waiting, Utc::now()));
            }
            *state.lock().unwrap_or_else(PoisonError::into_inner) = Some(waiting.clone());
        }
    }

    /// Stops reporting and clears the progress line.
    pub(crate) fn finish(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(ticker) = self.ticker.take() {
            ticker.abort();
            draw(None);
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use lockheed::clock::ManualClock;
    use lockheed::{Lock, MemoryLocker};

    use super::*;

    /// What a waiter sees of `holder-1`, which took a semaphore of 1 at 09:59:30 for 60 s.
    async fn seen_at(now: DateTime<Utc>) -> Waiting {
        let clock = ManualClock::new("2026-11-23T09:59:30Z".parse().unwrap());
        let locker = MemoryLocker::new().with_clock(Arc::new(clock.clone()));
        let held = Lock::new("lock", locker.clone())
            .with_holder("holder-1")
            .with_max_holders(1)
            .with_duration(Duration::from_secs(60))
            .with_reason("db restart")
            .try_acquire()
            .await
            .unwrap();
        clock.set(now);
        let seen = Arc::new(Mutex::new(None));
        let keep = Arc::clone(&seen);
        let _ = Lock::new("lock", locker)
            .with_max_holders(1)
            .on_wait(move |w| *keep.lock().unwrap() = Some(w.clone()))
            .acquire_timeout(Duration::from_millis(1))
            .await;
        held.forget();
        let waiting = seen.lock().unwrap().take();
        waiting.expect("the observer was called")
    }

    #[tokio::test]
    async fn describes_holders_and_capacity() {
        let now: DateTime<Utc> = "2026-11-23T10:00:00Z".parse().unwrap();
        assert_eq!(
            describe(&seen_at(now).await, now),
            "held by holder-1 (since 2026-11-23T09:59:30Z (30s ago), token 1, \
             lease ends in 30s, reason \"db restart\"), 1/1 holders"
        );
    }
}
