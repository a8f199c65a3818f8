//! Log lines on stderr, in the layout of Go's glog that kube-lock printed
//! (`I0819 19:09:54.017121   31587 kube-lock] message`), so that what operators read and grep
//! stays familiar. A progress line on a terminal is cleared before a log line and drawn again
//! after it.

use std::fmt;
use std::io::Write;
use std::sync::atomic::{AtomicU8, Ordering};

use super::progress;

/// How much is said: 0 by default, more with `-v`.
static VERBOSITY: AtomicU8 = AtomicU8::new(0);

/// Sets the verbosity (`-v N`); from 2 on, the library's own tracing events are shown too.
pub(crate) fn init(verbosity: u8) {
    VERBOSITY.store(verbosity, Ordering::Relaxed);
    if verbosity >= 2 {
        let level = if verbosity >= 3 { "trace" } else { "debug" };
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("lockheed={level}")));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .try_init();
    }
}

/// Whether messages of verbosity `level` are shown.
pub(crate) fn enabled(level: u8) -> bool {
    VERBOSITY.load(Ordering::Relaxed) >= level
}

/// The severity letter of a line.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Severity {
    Info,
    Warning,
    Error,
}

/// Writes one line (used through the `log_info!`, `log_warn!` and `log_error!` macros).
pub(crate) fn write(severity: Severity, program: &str, message: fmt::Arguments<'_>) {
    let letter = match severity {
        Severity::Info => 'I',
        Severity::Warning => 'W',
        Severity::Error => 'E',
    };
    let now = chrono::Local::now();
    let line = format!(
        "{letter}{} {:>7} {program}] {message}",
        now.format("%m%d %H:%M:%S%.6f"),
        std::process::id()
    );
    progress::interrupt(|| {
        let mut stderr = std::io::stderr().lock();
        let _ = writeln!(stderr, "{line}");
    });
}

/// Logs an informational line: `log_info!(program, "format", args..)`.
#[allow(unused_macros)]
macro_rules! log_info {
    ($program:expr, $($arg:tt)+) => {
        $crate::shared::log::write($crate::shared::log::Severity::Info, $program, format_args!($($arg)+))
    };
}

/// Logs a warning line.
#[allow(unused_macros)]
macro_rules! log_warn {
    ($program:expr, $($arg:tt)+) => {
        $crate::shared::log::write($crate::shared::log::Severity::Warning, $program, format_args!($($arg)+))
    };
}

/// Logs an error line.
#[allow(unused_macros)]
macro_rules! log_error {
    ($program:expr, $($arg:tt)+) => {
        $crate::shared::log::write($crate::shared::log::Severity::Error, $program, format_args!($($arg)+))
    };
}

#[allow(unused_imports)]
pub(crate) use {log_error, log_info, log_warn};
