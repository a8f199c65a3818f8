//! Exit codes, chosen as `env` and `timeout` choose them so that lockheed's own failures can
//! be told apart from the command's: the command's code passes through, 128+N means it died
//! of signal N, and lockheed keeps 125 to 127 for itself.

use std::fmt;
use std::process::ExitStatus;

/// Success.
pub(crate) const OK: u8 = 0;
/// lockheed itself failed: bad arguments, a cluster error, an acquire timeout, a lost lock.
pub(crate) const FAILED: u8 = 125;
/// The command was found but cannot be run (not executable, a bad format).
pub(crate) const NOT_EXECUTABLE: u8 = 126;
/// The command was not found.
pub(crate) const NOT_FOUND: u8 = 127;

/// A failure that ends lockheed with a code other than [`FAILED`]. Other errors end it with
/// [`FAILED`].
#[derive(Debug)]
pub(crate) struct Failure {
    /// The exit code.
    pub(crate) code: u8,
    /// What went wrong, for the message on stderr.
    pub(crate) message: String,
}

impl Failure {
    /// A failure with exit code `code`.
    pub(crate) fn new(code: u8, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

/// The exit code for `err`: a [`Failure`]'s own, [`FAILED`] otherwise.
pub(crate) fn code_of(err: &anyhow::Error) -> u8 {
    err.chain()
        .find_map(|cause| cause.downcast_ref::<Failure>())
        .map_or(FAILED, |failure| failure.code)
}

/// 128 + `signal`, as shells report a process killed by a signal.
pub(crate) fn signalled(signal: i32) -> u8 {
    u8::try_from(128 + signal).unwrap_or(FAILED)
}

/// The exit code that passes a finished command's `status` on: its own code, or 128+N when
/// it died of signal N.
pub(crate) fn of_status(status: ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt as _;
    match (status.code(), status.signal()) {
        // Exit codes are 0 to 255 on Unix; anything else would be a broken platform.
        (Some(code), _) => u8::try_from(code).unwrap_or(FAILED),
        (None, Some(signal)) => signalled(signal),
        (None, None) => FAILED,
    }
}

/// How a finished command ended, for messages: `exit code 3`, `signal SIGKILL`.
pub(crate) fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt as _;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(signal)) => match nix::sys::signal::Signal::try_from(signal) {
            Ok(signal) => format!("signal {signal}"),
            Err(_) => format!("signal {signal}"),
        },
        (None, None) => "an unknown status".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt as _;

    use super::*;

    #[test]
    fn statuses_pass_through() {
        // Raw wait statuses: the exit code in the second byte, or the signal in the first.
        assert_eq!(of_status(ExitStatus::from_raw(0)), OK);
        assert_eq!(of_status(ExitStatus::from_raw(7 << 8)), 7);
        assert_eq!(of_status(ExitStatus::from_raw(9)), 137);
        assert_eq!(of_status(ExitStatus::from_raw(15)), 143);
        assert_eq!(describe(ExitStatus::from_raw(3 << 8)), "exit code 3");
        assert_eq!(describe(ExitStatus::from_raw(9)), "signal SIGKILL");
    }

    #[test]
    fn failures_carry_their_code_through_context() {
        let plain = anyhow::anyhow!("cannot reach the cluster");
        assert_eq!(code_of(&plain), FAILED);
        let missing = anyhow::Error::new(Failure::new(NOT_FOUND, "no such command"))
            .context("cannot run the command");
        assert_eq!(code_of(&missing), NOT_FOUND);
    }
}
