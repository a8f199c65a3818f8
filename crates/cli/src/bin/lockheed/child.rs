//! The command run under the lock: starting it with the lock's identity in its environment,
//! passing signals on to it, and stopping it when the lock is lost.
//!
//! The command runs in a process group of its own (its process id is the group's id), and
//! every signal lockheed sends goes to that group: to the command and to whatever it starts
//! (`sh -c 'job & wait'`). When lockheed runs in the foreground of a terminal, the command's
//! group gets the terminal while it runs (see [`crate::terminal`]).

use std::ffi::OsString;
use std::future::Future;
use std::process::ExitStatus;
use std::time::Duration;

use anyhow::Context as _;
use nix::sys::signal::{self, Signal};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::time::Instant;

use crate::exit::{self, Failure};
use crate::shared::log;
use crate::shared::signals::Terminations;
use crate::terminal::{self, Terminal};

/// The lock's name, in the command's environment.
pub(crate) const ENV_LOCK: &str = "LOCKHEED_LOCK";
/// The namespace of the lock's ConfigMap (or Lease).
pub(crate) const ENV_NAMESPACE: &str = "LOCKHEED_NAMESPACE";
/// The holder identity.
pub(crate) const ENV_HOLDER: &str = "LOCKHEED_HOLDER";
/// The fencing token of the acquisition.
pub(crate) const ENV_TOKEN: &str = "LOCKHEED_TOKEN";

/// How often lockheed looks whether the processes the command started are gone, after the
/// command itself exited on a lost lock.
const GROUP_POLL: Duration = Duration::from_millis(50);

/// Who holds which lock, for the command's environment.
#[derive(Debug)]
pub(crate) struct Identity<'a> {
    /// The lock's name.
    pub(crate) lock: &'a str,
    /// The namespace of its ConfigMap (or Lease).
    pub(crate) namespace: &'a str,
    /// The holder identity.
    pub(crate) holder: &'a str,
    /// The fencing token of this acquisition.
    pub(crate) token: u64,
}

/// A started command: the process, its process group, and the terminal if it has it.
#[derive(Debug)]
pub(crate) struct Started {
    child: Child,
    /// The command's process group (its process id).
    group: Pid,
    /// lockheed's terminal, if it has one; taken back when dropped.
    terminal: Option<Terminal>,
}

/// Starts `command` (program and arguments) in a process group of its own, with stdin,
/// stdout and stderr inherited and `identity` in its environment, and hands it the terminal
/// if lockheed has it (see [`crate::terminal`]).
///
/// # Errors
///
/// A [`Failure`] with code 127 when the program is not found, 126 when it cannot be run
/// (as `env` does).
pub(crate) fn spawn(command: &[OsString], identity: &Identity<'_>) -> anyhow::Result<Started> {
    let (program, args) = command
        .split_first()
        .context("no command to run was given after --")?;
    let child = Command::new(program)
        .args(args)
        .env(ENV_LOCK, identity.lock)
        .env(ENV_NAMESPACE, identity.namespace)
        .env(ENV_HOLDER, identity.holder)
        .env(ENV_TOKEN, identity.token.to_string())
        .process_group(0)
        .spawn()
        .map_err(|err| {
            let code = if err.kind() == std::io::ErrorKind::NotFound {
                exit::NOT_FOUND
            } else {
                exit::NOT_EXECUTABLE
            };
            anyhow::Error::from(Failure::new(
                code,
                format!("cannot run {}: {err}", program.display()),
            ))
        })?;
    // A process that has not been waited for has an id.
    let group = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .map(Pid::from_raw)
        .context("the command has no process id")?;
    // The group exists: the child joined it before its program started, which `spawn`
    // waited for.
    let terminal = Terminal::start(group);
    Ok(Started {
        child,
        group,
        terminal,
    })
}

/// How the command ended.
#[derive(Debug)]
pub(crate) struct Outcome {
    /// Its exit status.
    pub(crate) status: ExitStatus,
    /// The lock was lost while it ran, and its process group was sent SIGTERM.
    pub(crate) stopped: bool,
    /// It was still running a grace period after SIGTERM, and its group was sent SIGKILL.
    pub(crate) killed: bool,
}

/// Waits for the command to exit, passing the SIGINT and SIGTERM lockheed receives on to its
/// process group. When `lost` resolves (the lock is lost), sends the group SIGTERM, then
/// SIGKILL if the command still runs after `grace`; once the command has exited, waits for
/// the rest of its group (what it started) until then as well. Takes the terminal back when
/// the command exits.
///
/// # Errors
///
/// When waiting for the command fails (which the operating system does not do to a child it
/// started).
pub(crate) async fn supervise(
    started: Started,
    lost: impl Future<Output = ()>,
    signals: &mut Terminations,
    grace: Duration,
    lock: &str,
) -> anyhow::Result<Outcome> {
    let Started {
        mut child,
        group,
        mut terminal,
    } = started;
    let mut lost = std::pin::pin!(lost);
    let mut stopped_at: Option<Instant> = None;
    let mut killed = false;
    loop {
        let kill_at = stopped_at.unwrap_or_else(Instant::now) + grace;
        tokio::select! {
            status = child.wait() => {
                let status = status.context("cannot wait for the command")?;
                // Back to lockheed before anything else happens at the terminal.
                drop(terminal.take());
                if stopped_at.is_some() && !killed {
                    end_group(group, kill_at, grace, signals).await;
                }
                return Ok(Outcome { status, stopped: stopped_at.is_some(), killed });
            }
            () = &mut lost, if stopped_at.is_none() => {
                log::log_error!(
                    crate::PROGRAM,
                    "lost lock {lock:?}: its lease could not be renewed in time, or it was \
                     taken over or removed; sending SIGTERM to the command"
                );
                send(group, Signal::SIGTERM);
                stopped_at = Some(Instant::now());
            }
            () = tokio::time::sleep_until(kill_at), if stopped_at.is_some() && !killed => {
                log::log_error!(
                    crate::PROGRAM,
                    "the command still runs {} after SIGTERM; sending SIGKILL",
                    crate::shared::duration::format(grace)
                );
                // The command's exit, should it have just happened, is collected next.
                send(group, Signal::SIGKILL);
                killed = true;
            }
            signal = signals.next() => pass_on(group, signal),
            event = job_control(terminal.as_mut()) => {
                if let Some(tty) = &mut terminal {
                    match event {
                        terminal::Event::Child if terminal::stopped(group) => {
                            tty.command_stopped();
                        }
                        terminal::Event::Child => {}
                        terminal::Event::Continued => tty.resume(),
                    }
                }
            }
        }
    }
}

/// The next job-control event at lockheed's terminal; never without a terminal.
async fn job_control(terminal: Option<&mut Terminal>) -> terminal::Event {
    match terminal {
        Some(terminal) => terminal.next().await,
        None => std::future::pending().await,
    }
}

/// After the lock was lost and the command exited: waits until the processes it started
/// (the rest of its process group) are gone as well, and sends them SIGKILL at `kill_at`.
async fn end_group(group: Pid, kill_at: Instant, grace: Duration, signals: &mut Terminations) {
    loop {
        collect_orphans(group);
        // ESRCH: none is left.
        if signal::killpg(group, None).is_err() {
            return;
        }
        if Instant::now() >= kill_at {
            log::log_error!(
                crate::PROGRAM,
                "processes the command started still run {} after SIGTERM; sending SIGKILL",
                crate::shared::duration::format(grace)
            );
            send(group, Signal::SIGKILL);
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(GROUP_POLL) => {}
            signal = signals.next() => pass_on(group, signal),
        }
    }
}

/// Collects the exited processes of the command's group that became lockheed's children
/// when their parent exited (when lockheed is process 1, in a container): unlike the zombies
/// that process 1 collects, they would count as still running. Called once the command itself
/// has been waited for, so that no status is taken from its `wait`.
fn collect_orphans(group: Pid) {
    let anyone_in_group = Pid::from_raw(-group.as_raw());
    while let Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..)) =
        waitpid(anyone_in_group, Some(WaitPidFlag::WNOHANG))
    {}
}

/// Passes `signal`, which lockheed received, on to the command's process group.
fn pass_on(group: Pid, signal: Signal) {
    if log::enabled(1) {
        log::log_info!(crate::PROGRAM, "passing {signal} on to the command");
    }
    send(group, signal);
}

/// Sends `signal` to the command's process group, unless it is gone. SIGTERM is followed by
/// SIGCONT, as a shell's `kill` does to a stopped job: a stopped process acts on it only once
/// continued.
fn send(group: Pid, signal: Signal) {
    // ESRCH: every process of the group has exited; the command's status is collected next.
    if let Err(err) = signal::killpg(group, signal)
        && log::enabled(1)
    {
        log::log_warn!(crate::PROGRAM, "cannot send {signal} to the command: {err}");
    }
    if signal == Signal::SIGTERM {
        let _ = signal::killpg(group, Signal::SIGCONT);
    }
}
