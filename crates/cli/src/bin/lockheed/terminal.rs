//! The terminal, handed to the command's process group while it runs, and job control.
//!
//! The command runs in a process group of its own, so that lockheed can signal it and every
//! process it starts. When lockheed runs in the foreground of a terminal (its stdin is that
//! terminal, and its process group is the terminal's foreground group), the command's group
//! gets the foreground instead: a Ctrl-C reaches the command once (not once from the terminal
//! and once more from lockheed), and an interactive command (`psql`) can read the terminal.
//! lockheed takes the foreground back when the command ends, on every way out.
//!
//! The shell that started lockheed only sees lockheed's group: when the command stops (a
//! Ctrl-Z, or reading the terminal from the background), lockheed stops its own group too,
//! so that the shell sees the job stopped and takes the terminal; when the shell continues
//! lockheed (`fg`, `bg`), lockheed continues the command, with the terminal if lockheed is
//! back in the foreground.

use std::io::IsTerminal as _;
use std::os::fd::AsFd as _;

use nix::sys::signal::{self, SigSet, SigmaskHow, Signal};
use nix::unistd::{self, Pid};
use tokio::signal::unix::SignalKind;

use crate::shared::log;

/// Whether lockheed hands the terminal to the command: only when its stdin is a terminal
/// whose foreground process group (`foreground`, when it has one) is lockheed's own
/// (`ours`). Run in the background of a shell, from a script without a terminal, or with
/// stdin redirected, lockheed leaves the terminal alone.
pub(crate) fn hands_over(stdin_is_terminal: bool, foreground: Option<Pid>, ours: Pid) -> bool {
    stdin_is_terminal && foreground == Some(ours)
}

/// lockheed's controlling terminal (its stdin), while the command runs. Dropping it takes the
/// terminal back if the command's group has it.
#[derive(Debug)]
pub(crate) struct Terminal {
    /// lockheed's process group.
    ours: Pid,
    /// The command's process group.
    command: Pid,
    /// The command's group has the terminal (lockheed gave it, and has not taken it back).
    handed: bool,
    /// SIGCHLD: the command may have stopped.
    children: Option<tokio::signal::unix::Signal>,
    /// SIGCONT: the shell continued lockheed.
    continued: Option<tokio::signal::unix::Signal>,
}

/// What [`Terminal::next`] saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Event {
    /// A child of lockheed changed state: the command may have stopped.
    Child,
    /// lockheed was continued.
    Continued,
}

impl Terminal {
    /// When lockheed's stdin is its controlling terminal: hands it to process group
    /// `command` if lockheed has it in the foreground (see [`hands_over`]), and sends the
    /// group SIGCONT (a command that read the terminal before it had it was stopped by
    /// SIGTTIN, and goes on now). `None` without a terminal: then there is no job control
    /// either.
    pub(crate) fn start(command: Pid) -> Option<Self> {
        if !stdin_is_terminal() {
            return None;
        }
        // Not lockheed's controlling terminal: not lockheed's to hand over.
        let foreground = foreground()?;
        let mut terminal = Self {
            ours: unistd::getpgrp(),
            command,
            handed: false,
            children: tokio::signal::unix::signal(SignalKind::child()).ok(),
            continued: tokio::signal::unix::signal(SignalKind::from_raw(Signal::SIGCONT as i32))
                .ok(),
        };
        if hands_over(true, Some(foreground), terminal.ours) {
            terminal.give();
        }
        Some(terminal)
    }

    /// The next SIGCHLD or SIGCONT lockheed receives.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a signal is not lost if the future is dropped.
    pub(crate) async fn next(&mut self) -> Event {
        tokio::select! {
            Some(()) = recv(self.children.as_mut()) => Event::Child,
            Some(()) = recv(self.continued.as_mut()) => Event::Continued,
        }
    }

    /// The command has stopped (see [`stopped`]): takes the terminal back, and stops
    /// lockheed's group as a Ctrl-Z would have, so that the shell that started lockheed sees
    /// the job stopped and takes the terminal. When the command had the terminal, goes on as
    /// [`resume`](Self::resume) once lockheed runs again (continued by the shell; or at once
    /// when the kernel discards the stop because no shell could continue lockheed: the
    /// command just goes on then, as if the Ctrl-Z had not been). Otherwise the command waits
    /// for the shell to continue lockheed.
    pub(crate) fn command_stopped(&mut self) {
        let had_it = self.handed;
        self.take_back();
        // lockheed stops here, until continued.
        let _ = signal::killpg(self.ours, Signal::SIGTSTP);
        if had_it {
            self.resume();
        }
    }

    /// lockheed was continued (`fg`, `bg`): gives the terminal to the command again if
    /// lockheed is in the foreground (`fg`), and continues the command either way (in the
    /// background, it goes on without the terminal).
    pub(crate) fn resume(&mut self) {
        if foreground() == Some(self.ours) {
            self.give();
        } else {
            let _ = signal::killpg(self.command, Signal::SIGCONT);
        }
    }

    /// Gives the terminal to the command's group, and sends the group SIGCONT.
    fn give(&mut self) {
        match set_foreground(self.command) {
            Ok(()) => self.handed = true,
            Err(err) => {
                if log::enabled(1) {
                    log::log_warn!(
                        crate::PROGRAM,
                        "cannot hand the terminal to the command: {err}"
                    );
                }
            }
        }
        // ESRCH: the command has already exited; its status is collected next.
        let _ = signal::killpg(self.command, Signal::SIGCONT);
    }

    /// Takes the terminal back, if the command's group has it.
    fn take_back(&mut self) {
        if !self.handed {
            return;
        }
        self.handed = false;
        // EIO or ENOTTY: the terminal is gone (hung up); nothing to take back.
        if let Err(err) = set_foreground(self.ours)
            && log::enabled(1)
        {
            log::log_warn!(crate::PROGRAM, "cannot take the terminal back: {err}");
        }
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        self.take_back();
    }
}

/// The next delivery of `signal`, if listening; never otherwise.
async fn recv(signal: Option<&mut tokio::signal::unix::Signal>) -> Option<()> {
    match signal {
        Some(signal) => signal.recv().await,
        None => std::future::pending().await,
    }
}

/// Whether process `pid`, a child of lockheed, has stopped (a Ctrl-Z, SIGTTIN, SIGSTOP) since
/// it was last seen stopped. Only the stop is collected: its exit stays for its `wait`.
#[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
pub(crate) fn stopped(pid: Pid) -> bool {
    use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};
    matches!(
        waitid(Id::Pid(pid), WaitPidFlag::WSTOPPED | WaitPidFlag::WNOHANG),
        Ok(WaitStatus::Stopped(..))
    )
}

/// Whether process `pid` has stopped: not known without `waitid` (which can collect a stop
/// and leave the exit), so a stopped command is left to the user here.
#[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
pub(crate) fn stopped(_pid: Pid) -> bool {
    false
}

fn stdin_is_terminal() -> bool {
    std::io::stdin().is_terminal()
}

/// The foreground process group of lockheed's controlling terminal (stdin), if stdin is it.
fn foreground() -> Option<Pid> {
    unistd::tcgetpgrp(std::io::stdin().as_fd()).ok()
}

/// Makes `group` the foreground process group of lockheed's terminal (stdin).
///
/// A process outside the foreground group that calls `tcsetpgrp` gets SIGTTOU, which stops
/// it, unless it blocks or ignores the signal: this thread blocks it for the call. (A handler
/// would not do: the call would be restarted after it, forever.)
fn set_foreground(group: Pid) -> nix::Result<()> {
    let mut ttou = SigSet::empty();
    ttou.add(Signal::SIGTTOU);
    let mut previous = SigSet::empty();
    signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&ttou), Some(&mut previous))?;
    let set = unistd::tcsetpgrp(std::io::stdin().as_fd(), group);
    // Blocked, SIGTTOU was not sent (the kernel lets the call through instead): nothing is
    // pending that restoring the mask would deliver.
    let restored = signal::pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&previous), None);
    set.and(restored)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hands_over_only_a_terminal_lockheed_has_in_the_foreground() {
        let (ours, other) = (Pid::from_raw(100), Pid::from_raw(200));
        assert!(hands_over(true, Some(ours), ours));
        // In the background of a shell (`lockheed run .. &`).
        assert!(!hands_over(true, Some(other), ours));
        // A terminal that is not lockheed's controlling terminal (no foreground group).
        assert!(!hands_over(true, None, ours));
        // Stdin redirected, or no terminal at all (cron, CI, a pod).
        assert!(!hands_over(false, Some(ours), ours));
        assert!(!hands_over(false, None, ours));
    }

    #[test]
    fn no_terminal_no_handover() {
        // `cargo test` usually runs with stdin a pipe or /dev/null; by hand at a terminal,
        // there is nothing to check here.
        if stdin_is_terminal() {
            return;
        }
        // Never used: without a terminal, nothing is sent to the group.
        let nobody = Pid::from_raw(i32::MAX);
        assert!(Terminal::start(nobody).is_none());
    }
}
