//! The command run under the lock: starting it with the lock's identity in its environment,
//! passing signals on to it, and stopping it when the lock is lost.

use std::ffi::OsString;
use std::future::Future;
use std::process::ExitStatus;
use std::time::Duration;

use anyhow::Context as _;
use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::time::Instant;

use crate::exit::{self, Failure};
use crate::shared::log;
use crate::shared::signals::Terminations;

/// The lock's name, in the command's environment.
pub(crate) const ENV_LOCK: &str = "LOCKHEED_LOCK";
/// The namespace of the lock's ConfigMap.
pub(crate) const ENV_NAMESPACE: &str = "LOCKHEED_NAMESPACE";
/// The holder identity.
pub(crate) const ENV_HOLDER: &str = "LOCKHEED_HOLDER";
/// The fencing token of the acquisition.
pub(crate) const ENV_TOKEN: &str = "LOCKHEED_TOKEN";

/// Who holds which lock, for the command's environment.
#[derive(Debug)]
pub(crate) struct Identity<'a> {
    /// The lock's name.
    pub(crate) lock: &'a str,
    /// The namespace of its ConfigMap.
    pub(crate) namespace: &'a str,
    /// The holder identity.
    pub(crate) holder: &'a str,
    /// The fencing token of this acquisition.
    pub(crate) token: u64,
}

/// Starts `command` (program and arguments) with stdin, stdout and stderr inherited, and
/// `identity` in its environment.
///
/// # Errors
///
/// A [`Failure`] with code 127 when the program is not found, 126 when it cannot be run
/// (as `env` does).
pub(crate) fn spawn(command: &[OsString], identity: &Identity<'_>) -> anyhow::Result<Child> {
    let (program, args) = command
        .split_first()
        .context("no command to run was given after --")?;
    Command::new(program)
        .args(args)
        .env(ENV_LOCK, identity.lock)
        .env(ENV_NAMESPACE, identity.namespace)
        .env(ENV_HOLDER, identity.holder)
        .env(ENV_TOKEN, identity.token.to_string())
        .spawn()
        .map_err(|err| {
            let code = if err.kind() == std::io::ErrorKind::NotFound {
                exit::NOT_FOUND
            } else {
                exit::NOT_EXECUTABLE
            };
            Failure::new(code, format!("cannot run {}: {err}", program.display())).into()
        })
}

/// How the command ended.
#[derive(Debug)]
pub(crate) struct Outcome {
    /// Its exit status.
    pub(crate) status: ExitStatus,
    /// The lock was lost while it ran, and it was sent SIGTERM.
    pub(crate) stopped: bool,
    /// It was still running a grace period after SIGTERM, and was sent SIGKILL.
    pub(crate) killed: bool,
}

/// Waits for `child` to exit, passing on the SIGINT and SIGTERM lockheed receives. When
/// `lost` resolves (the lock is lost), sends the child SIGTERM, then SIGKILL if it still runs
/// after `grace`.
///
/// # Errors
///
/// When waiting for the child fails (which the operating system does not do to a child it
/// started).
pub(crate) async fn supervise(
    mut child: Child,
    lost: impl Future<Output = ()>,
    signals: &mut Terminations,
    grace: Duration,
    lock: &str,
) -> anyhow::Result<Outcome> {
    let mut lost = std::pin::pin!(lost);
    let mut stopped_at: Option<Instant> = None;
    let mut killed = false;
    loop {
        let kill_at = stopped_at.unwrap_or_else(Instant::now) + grace;
        tokio::select! {
            status = child.wait() => {
                let status = status.context("cannot wait for the command")?;
                return Ok(Outcome { status, stopped: stopped_at.is_some(), killed });
            }
            () = &mut lost, if stopped_at.is_none() => {
                log::log_error!(
                    crate::PROGRAM,
                    "lost lock {lock:?}: its lease could not be renewed in time, or it was \
                     taken over or removed; sending SIGTERM to the command"
                );
                send(&child, Signal::SIGTERM);
                stopped_at = Some(Instant::now());
            }
            () = tokio::time::sleep_until(kill_at), if stopped_at.is_some() && !killed => {
                log::log_error!(
                    crate::PROGRAM,
                    "the command still runs {} after SIGTERM; sending SIGKILL",
                    crate::shared::duration::format(grace)
                );
                // An error means it has just exited: the next wait says how.
                let _ = child.start_kill();
                killed = true;
            }
            signal = signals.next() => {
                if log::enabled(1) {
                    log::log_info!(crate::PROGRAM, "passing {signal} on to the command");
                }
                send(&child, signal);
            }
        }
    }
}

/// Sends `signal` to `child`, unless it has already exited.
fn send(child: &Child, signal: Signal) {
    let Some(pid) = child.id().and_then(|id| i32::try_from(id).ok()) else {
        return;
    };
    // ESRCH: it exited since; its status is collected next.
    if let Err(err) = signal::kill(Pid::from_raw(pid), signal)
        && log::enabled(1)
    {
        log::log_warn!(crate::PROGRAM, "cannot send {signal} to the command: {err}");
    }
}
