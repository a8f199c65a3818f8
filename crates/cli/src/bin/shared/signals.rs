//! SIGINT and SIGTERM, as a stream a command can wait on while it waits for a lock or a child.

use nix::sys::signal::Signal;
use tokio::signal::unix::{SignalKind, signal};

/// The termination signals a command listens to from its start.
pub(crate) struct Terminations {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl Terminations {
    /// Starts listening (from now on, SIGINT and SIGTERM no longer kill the process).
    pub(crate) fn listen() -> std::io::Result<Self> {
        Ok(Self {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    /// The next SIGINT or SIGTERM.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a signal is not lost if the future is dropped.
    pub(crate) async fn next(&mut self) -> Signal {
        tokio::select! {
            _ = self.interrupt.recv() => Signal::SIGINT,
            _ = self.terminate.recv() => Signal::SIGTERM,
        }
    }
}
