//! The background work of a [`Lock`](crate::Lock), counted so that a program can wait for it
//! before it exits ([`Lock::settle`](crate::Lock::settle)): Tokio drops unfinished tasks with
//! the runtime, and a lease that a cancelled acquire may have written, or that a dropped guard
//! did not release yet, would then stay until it expires (or forever, without expiry).

use std::future::Future;
use std::sync::Arc;

use tokio::sync::watch;

/// Counts the tasks it spawned that have not finished. Clones share the count.
#[derive(Debug, Clone)]
pub(crate) struct Background {
    running: Arc<watch::Sender<usize>>,
}

impl Default for Background {
    fn default() -> Self {
        Self {
            running: Arc::new(watch::Sender::new(0)),
        }
    }
}

/// Decrements the count when the task ends, finished or aborted.
struct Running(Arc<watch::Sender<usize>>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}

impl Background {
    /// Spawns `task` on `runtime`, counted until it ends.
    pub(crate) fn spawn(
        &self,
        runtime: &tokio::runtime::Handle,
        task: impl Future<Output = ()> + Send + 'static,
    ) {
        self.running.send_modify(|n| *n += 1);
        let running = Running(Arc::clone(&self.running));
        runtime.spawn(async move {
            let _running = running;
            task.await;
        });
    }

    /// Waits until no counted task runs.
    pub(crate) async fn settle(&self) {
        let mut rx = self.running.subscribe();
        // The sender lives in `self`: waiting cannot fail.
        let _ = rx.wait_for(|n| *n == 0).await;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn settles_once_every_task_has_ended() {
        let background = Background::default();
        background.settle().await; // nothing runs
        let runtime = tokio::runtime::Handle::current();
        for secs in [1, 3] {
            background.spawn(&runtime, tokio::time::sleep(Duration::from_secs(secs)));
        }
        let started = tokio::time::Instant::now();
        background.clone().settle().await;
        assert_eq!(started.elapsed(), Duration::from_secs(3));
    }
}
