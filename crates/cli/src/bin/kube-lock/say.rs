//! How kube-lock's log lines name things, as the Go tool's did: the ConfigMap
//! (`cm/lock in ns default`), holders' dates, and the program's name.

use std::fmt;

use chrono::{DateTime, Utc};

/// The program name in log lines.
pub(crate) const PROGRAM: &str = "kube-lock";

/// The ConfigMap that keeps the semaphore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    /// Its namespace.
    pub(crate) namespace: String,
    /// Its name (kube-lock's "lock name": no prefix).
    pub(crate) configmap: String,
}

impl fmt::Display for Target {
    /// `cm/lock in ns default`, as the Go tool wrote it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cm/{} in ns {}", self.configmap, self.namespace)
    }
}

/// A holder's date as kube-lock stores it (`2006-01-02T15:04:05Z`), or `an unknown date` for a
/// holder written without one.
pub(crate) fn date(since: Option<DateTime<Utc>>) -> String {
    since.map_or_else(
        || "an unknown date".to_owned(),
        |since| since.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_as_the_go_tool() {
        let target = Target {
            namespace: "default".into(),
            configmap: "lock".into(),
        };
        assert_eq!(target.to_string(), "cm/lock in ns default");
        let since = "2018-08-19T19:09:54Z".parse().ok();
        assert_eq!(date(since), "2018-08-19T19:09:54Z");
        assert_eq!(date(None), "an unknown date");
    }
}
