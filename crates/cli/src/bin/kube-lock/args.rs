//! The command line, as the Go tool took it: `kube-lock <namespace> <configmap-name>` and its
//! flags, checked into [`Settings`].

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Parser;
use clap::builder::TypedValueParser as _;

use crate::say::Target;
use crate::shared::duration;

/// What `kube-lock --help` prints after the flags.
const AFTER_HELP: &str = "\
Exit codes:
  0  locked (or already a holder), or unlocked (or nothing to unlock)
  1  bad configuration: flags, arguments, kubeconfig
  2  error from the cluster, polling timeout, or SIGINT/SIGTERM
  3  --run-once and the semaphore is full

Examples:
  kube-lock default lock --holder-name holder-1 --create-configmap --reason \"db restart\"
  kube-lock default lock --holder-name holder-1 --unlock";

/// What `kube-lock --help` prints before the flags.
const LONG_ABOUT: &str = "\
Take or release a lock (a semaphore) kept in a Kubernetes ConfigMap.

kube-lock takes a place in a semaphore kept in the `kube-lock` annotation of a ConfigMap, \
waiting for one to free up, or gives it back with --unlock.

Holders never expire: a holder keeps its place after kube-lock exits, until `kube-lock --unlock` \
with the same --holder-name removes it. Locking again as a current holder succeeds and changes \
nothing. The semaphore's size is set by the first holder; the stored size wins over a later \
--max-holders.

While the semaphore is full, kube-lock tries again every --polling-interval, and sooner: it \
watches the ConfigMap and takes a place as soon as one frees up. It writes with the \
resourceVersion it read, so concurrent writers never lose a holder. It reads, writes, lists and \
watches configmaps (RBAC verbs get, create, update, list, watch; create only with \
--create-configmap).";

/// kube-lock's arguments and flags.
#[derive(Debug, Parser)]
#[command(
    name = "kube-lock",
    version,
    about = "Take or release a lock (a semaphore) kept in a Kubernetes ConfigMap",
    long_about = LONG_ABOUT,
    after_help = AFTER_HELP
)]
pub(crate) struct Args {
    /// The namespace of the ConfigMap.
    pub(crate) namespace: String,

    /// The name of the ConfigMap that keeps the semaphore (in its annotation `kube-lock`).
    #[arg(value_name = "CONFIGMAP_NAME")]
    pub(crate) configmap: String,

    /// The name this process holds the lock under; --unlock removes the holder of this name.
    /// Empty or absent: the hostname.
    #[arg(long, value_name = "NAME")]
    pub(crate) holder_name: Option<String>,

    /// Create the ConfigMap if it does not exist (otherwise a missing ConfigMap is an error).
    #[arg(long)]
    pub(crate) create_configmap: bool,

    /// How many holders the semaphore admits at once, when this call is the first to lock it
    /// (the stored size wins afterwards). Must be greater than 0.
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) max_holders: u32,

    /// How often to try again while the semaphore is full (a Go duration: 10s, 1m30s, 500ms).
    /// A watch of the ConfigMap may let kube-lock in sooner, never later. Must be greater
    /// than 0.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = positive_duration)]
    pub(crate) polling_interval: Duration,

    /// How long to wait for a place before giving up with exit code 2 (a Go duration);
    /// 0: wait for ever.
    #[arg(long, value_name = "DURATION", default_value = "5m0s", value_parser = duration::parse)]
    pub(crate) polling_timeout: Duration,

    /// Why this holder takes the lock, recorded next to it in the semaphore.
    #[arg(long, value_name = "TEXT", default_value = "")]
    pub(crate) reason: String,

    /// The kubeconfig file to use. Absent or empty: the pod's service account when running in
    /// a pod, then KUBECONFIG or ~/.kube/config.
    // An empty path is allowed (clap's `PathBuf` parser refuses it): the Go tool's way to ask
    // for the default.
    #[arg(long, value_name = "PATH",
          value_parser = clap::builder::OsStringValueParser::new().map(PathBuf::from))]
    pub(crate) kubeconfig_path: Option<PathBuf>,

    /// Remove the holder (--holder-name) from the semaphore instead of locking; nothing to
    /// remove is a success.
    #[arg(long)]
    pub(crate) unlock: bool,

    /// Try to lock once, without waiting: exit code 3 when the semaphore is full (ignored with
    /// --unlock).
    #[arg(long)]
    pub(crate) run_once: bool,

    /// How much to log on stderr: 0 the Go tool's lines, 1 a few more, 2 and 3 the library's
    /// debug and trace events.
    #[arg(short, long, value_name = "N", default_value_t = 0)]
    pub(crate) verbose: u8,
}

/// The command line, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Settings {
    /// The ConfigMap.
    pub(crate) target: Target,
    /// The holder's name.
    pub(crate) holder: String,
    /// Why it locks (may be empty, as in the Go tool).
    pub(crate) reason: String,
    /// The semaphore's size if this call creates it.
    pub(crate) max_holders: u32,
    /// Whether a missing ConfigMap is created.
    pub(crate) create: bool,
    /// How often to try again while the semaphore is full.
    pub(crate) interval: Duration,
    /// When to give up waiting (`None`: never).
    pub(crate) timeout: Option<Duration>,
    /// `--run-once`.
    pub(crate) run_once: bool,
    /// `--unlock`.
    pub(crate) unlock: bool,
    /// `--kubeconfig-path`, unless empty.
    pub(crate) kubeconfig: Option<PathBuf>,
}

impl Args {
    /// Checks what clap cannot, and fills in the defaults that need the system (the hostname).
    ///
    /// # Errors
    ///
    /// A namespace or ConfigMap name that cannot name an object, or no hostname to default
    /// the holder's name to.
    pub(crate) fn settings(self) -> anyhow::Result<Settings> {
        check_namespace(&self.namespace)?;
        if self.configmap.is_empty() {
            bail!("the ConfigMap name must not be empty");
        }
        let holder = match self.holder_name.filter(|h| !h.is_empty()) {
            Some(holder) => holder,
            None => hostname()?,
        };
        Ok(Settings {
            target: Target {
                namespace: self.namespace,
                configmap: self.configmap,
            },
            holder,
            reason: self.reason,
            max_holders: self.max_holders,
            create: self.create_configmap,
            interval: self.polling_interval,
            timeout: (!self.polling_timeout.is_zero()).then_some(self.polling_timeout),
            run_once: self.run_once,
            unlock: self.unlock,
            kubeconfig: self.kubeconfig_path.filter(|p| !p.as_os_str().is_empty()),
        })
    }
}

/// A Go duration greater than zero.
fn positive_duration(text: &str) -> Result<Duration, String> {
    let parsed = duration::parse(text)?;
    if parsed.is_zero() {
        return Err(format!(
            "invalid duration {text:?}: it must be greater than 0"
        ));
    }
    Ok(parsed)
}

/// A namespace must be a DNS-1123 label (it becomes part of request paths).
fn check_namespace(namespace: &str) -> anyhow::Result<()> {
    let shaped = !namespace.is_empty()
        && namespace.len() <= 63
        && namespace
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !namespace.starts_with('-')
        && !namespace.ends_with('-');
    if !shaped {
        bail!(
            "invalid namespace {namespace:?}: it must be a DNS-1123 label (at most 63 \
             lowercase letters, digits and '-', starting and ending with a letter or digit)"
        );
    }
    Ok(())
}

/// The hostname, the default holder name (as the Go tool's `os.Hostname`).
fn hostname() -> anyhow::Result<String> {
    let name = nix::unistd::gethostname().context("cannot read the hostname for --holder-name")?;
    let name = name.into_string().map_err(|name| {
        anyhow::anyhow!(
            "the hostname {} is not UTF-8: pass --holder-name",
            name.display()
        )
    })?;
    if name.is_empty() {
        bail!("the hostname is empty: pass --holder-name");
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from(std::iter::once("kube-lock").chain(args.iter().copied()))
    }

    #[test]
    fn the_command_is_well_formed() {
        Args::command().debug_assert();
    }

    #[test]
    fn defaults_are_the_go_tools() {
        let settings = parse(&["default", "lock"]).unwrap().settings().unwrap();
        assert_eq!(settings.target.to_string(), "cm/lock in ns default");
        assert_eq!(settings.max_holders, 1);
        assert_eq!(settings.interval, Duration::from_secs(30));
        assert_eq!(settings.timeout, Some(Duration::from_secs(300)));
        assert!(!settings.create && !settings.run_once && !settings.unlock);
        assert_eq!(settings.reason, "");
        assert_eq!(settings.kubeconfig, None);
        assert!(!settings.holder.is_empty(), "the hostname");
    }

    #[test]
    fn the_readme_command_line_parses() {
        let settings = parse(&[
            "default",
            "lock",
            "--holder-name",
            "holder-2",
            "--create-configmap",
            "--max-holders",
            "2",
            "--polling-interval",
            "10s",
            "--polling-timeout=25s",
            "--reason",
            "db restart",
            "--kubeconfig-path",
            "/home/me/.kube/config",
            "-v",
            "1",
        ])
        .unwrap()
        .settings()
        .unwrap();
        assert_eq!(settings.holder, "holder-2");
        assert!(settings.create);
        assert_eq!(settings.max_holders, 2);
        assert_eq!(settings.interval, Duration::from_secs(10));
        assert_eq!(settings.timeout, Some(Duration::from_secs(25)));
        assert_eq!(settings.reason, "db restart");
        assert_eq!(
            settings.kubeconfig,
            Some(PathBuf::from("/home/me/.kube/config"))
        );
    }

    #[test]
    fn zero_timeout_means_none_and_empty_values_mean_defaults() {
        let settings = parse(&[
            "ns",
            "cm",
            "--polling-timeout",
            "0",
            "--holder-name",
            "",
            "--kubeconfig-path",
            "",
        ])
        .unwrap()
        .settings()
        .unwrap();
        assert_eq!(settings.timeout, None);
        assert!(!settings.holder.is_empty());
        assert_eq!(settings.kubeconfig, None);
    }

    #[test]
    fn bad_configuration_is_refused() {
        for args in [
            &["default"][..],
            &["default", "lock", "extra"],
            &["default", "lock", "--max-holders", "0"],
            &["default", "lock", "--max-holders", "-1"],
            &["default", "lock", "--max-holders", "two"],
            &["default", "lock", "--polling-interval", "0s"],
            &["default", "lock", "--polling-interval", "10"],
            &["default", "lock", "--polling-timeout", "-5s"],
            &["default", "lock", "--verbose", "lots"],
        ] {
            assert!(parse(args).is_err(), "{args:?}");
        }
        for args in [&["", "lock"][..], &["Default", "lock"], &["default", ""]] {
            assert!(parse(args).unwrap().settings().is_err(), "{args:?}");
        }
    }
}
