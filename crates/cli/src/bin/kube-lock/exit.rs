//! How a run fails, and the Go tool's exit code for each way.

use std::process::ExitCode;

use crate::say::{PROGRAM, Target};
use crate::shared::log::log_error;

/// Why kube-lock did not lock (or unlock).
#[derive(Debug)]
pub(crate) enum Failure {
    /// Bad configuration: arguments, kubeconfig, hostname, an invalid ConfigMap name (exit 1).
    Config(anyhow::Error),
    /// The cluster refused or failed, the polling timed out, or a signal came (exit 2).
    Failed(anyhow::Error),
    /// `--run-once` and the semaphore is full (exit 3).
    Full,
}

impl Failure {
    /// The exit code, as the Go tool's.
    pub(crate) fn code(&self) -> u8 {
        match self {
            Self::Config(_) => 1,
            Self::Failed(_) => 2,
            Self::Full => 3,
        }
    }

    /// A library error met while working on `target` (`doing`: "lock", "unlock"): invalid
    /// names and settings are bad configuration, everything else a failure.
    pub(crate) fn from_lock(err: lockheed::Error, doing: &str, target: &Target) -> Self {
        let config = matches!(
            err,
            lockheed::Error::InvalidName { .. } | lockheed::Error::InvalidConfig { .. }
        );
        let err = anyhow::Error::new(err).context(format!("cannot {doing} {target}"));
        if config {
            Self::Config(err)
        } else {
            Self::Failed(err)
        }
    }

    /// Logs the failure and `Exiting on error: N`, as the Go tool did, and gives the code.
    pub(crate) fn report(self) -> ExitCode {
        let code = self.code();
        match self {
            Self::Config(err) | Self::Failed(err) => log_error!(PROGRAM, "{}", render(&err)),
            Self::Full => {}
        }
        log_error!(PROGRAM, "Exiting on error: {code}");
        ExitCode::from(code)
    }
}

/// An error and its causes on one line, `outer: inner: innermost`, without the repetitions
/// of errors whose message already includes their source's, and with the API server's answer
/// as `403 Forbidden: <its message>` rather than the client's debug dump of it.
pub(crate) fn render(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain() {
        let (text, last) = match api_answer(cause) {
            Some(answer) => (answer, true),
            None => (cause.to_string(), false),
        };
        if !line.contains(&text) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(&text);
        }
        if last {
            break;
        }
    }
    line
}

/// `the API server answered 403 Forbidden for default/lock: <message>`, for a request the API
/// server refused.
fn api_answer(cause: &(dyn std::error::Error + 'static)) -> Option<String> {
    let lockheed::Error::Kube {
        object,
        source: kube::Error::Api(status),
    } = cause.downcast_ref::<lockheed::Error>()?
    else {
        return None;
    };
    Some(format!(
        "the API server answered {} {} for {object}: {}",
        status.code, status.reason, status.message
    ))
}

/// The exit code for a command line clap refused (after printing clap's message): 0 for
/// `--help` and `--version`, 1 (bad configuration, as the Go tool) for the rest, where clap
/// would exit 2, which means something else here.
pub(crate) fn usage(err: &clap::Error) -> ExitCode {
    let _ = err.print();
    match err.kind() {
        clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
            ExitCode::SUCCESS
        }
        _ => ExitCode::from(1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_the_go_tools() {
        let target = Target {
            namespace: "default".into(),
            configmap: "lock".into(),
        };
        let invalid = lockheed::Error::InvalidName {
            name: "Lock".into(),
            reason: "uppercase".into(),
        };
        assert_eq!(Failure::from_lock(invalid, "lock", &target).code(), 1);
        let corrupt = lockheed::Error::Corrupt {
            object: "default/lock".into(),
            reason: "not JSON".into(),
        };
        let failure = Failure::from_lock(corrupt, "lock", &target);
        assert_eq!(failure.code(), 2);
        let Failure::Failed(err) = failure else {
            panic!("a failure")
        };
        assert_eq!(
            render(&err),
            "cannot lock cm/lock in ns default: the lock state in default/lock is corrupt: not JSON"
        );
        assert_eq!(Failure::Full.code(), 3);
    }

    #[test]
    fn api_errors_read_well() {
        let status = kube::core::Status::failure("configmaps \"lock\" is forbidden", "Forbidden")
            .with_code(403);
        let err = lockheed::Error::Kube {
            object: "default/lock".into(),
            source: kube::Error::Api(Box::new(status)),
        };
        let target = Target {
            namespace: "default".into(),
            configmap: "lock".into(),
        };
        let Failure::Failed(err) = Failure::from_lock(err, "unlock", &target) else {
            panic!("a failure")
        };
        assert_eq!(
            render(&err),
            "cannot unlock cm/lock in ns default: the API server answered 403 Forbidden for \
             default/lock: configmaps \"lock\" is forbidden"
        );
        // A source whose text the outer message already has is said once.
        let io = std::io::Error::other("no such file");
        let outer = anyhow::anyhow!("cannot read: no such file");
        let err = anyhow::Error::new(io).context(outer.to_string());
        assert_eq!(render(&err), "cannot read: no such file");
    }
}
