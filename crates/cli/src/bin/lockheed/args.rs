//! The command line's arguments (what `--help` shows); executing them is elsewhere.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use lockheed::Condition;

use crate::help;
use crate::shared::duration;

/// Run commands under distributed locks kept in Kubernetes ConfigMaps or Leases, and look at
/// and repair those locks.
///
/// A lock `NAME` is the ConfigMap `lockheed-NAME` in the namespace, in Go lockheed's format:
/// Go and Rust lockheed clients share it. With --lease, it is the Lease `NAME`, in client-go's
/// leader-election format: Go controllers electing a leader on it share it.
#[derive(Debug, Parser)]
#[command(
    name = "lockheed",
    version,
    after_help = "Run `lockheed <COMMAND> --help` for the options and examples of each command.",
    after_long_help = help::MAIN
)]
pub(crate) struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub(crate) command: Command,

    /// Where the locks are.
    #[command(flatten)]
    pub(crate) cluster: ClusterArgs,

    /// Say more on stderr: -v for each step, -vv for the library's debug events, -vvv for
    /// its trace events.
    #[arg(
        short,
        long,
        action = clap::ArgAction::Count,
        global = true,
        help_heading = "Global options"
    )]
    pub(crate) verbose: u8,
}

/// The subcommands. Each one's doc comment is its help: a summary line, then the rest for
/// `--help`.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Take a lock, run a command while holding it, and release it when the command exits.
    ///
    /// lockheed waits while others hold lock NAME (at most --timeout), runs COMMAND while it
    /// renews the lease in the background, releases the lock when COMMAND exits, and exits
    /// with COMMAND's exit code.
    ///
    /// While waiting, it says on stderr who holds the lock and since when: a progress line on
    /// a terminal, otherwise a log line each time the holders change.
    ///
    /// COMMAND runs in a process group of its own, and lockheed's signals go to the whole
    /// group: to COMMAND and to the processes it started. If the lock is lost while COMMAND
    /// runs (its lease could not be renewed in time, or an operator removed it with `lockheed
    /// release`), the group gets SIGTERM, then SIGKILL after --grace-period, and lockheed
    /// exits with 125. SIGINT and SIGTERM sent to lockheed are passed on to the group, which
    /// decides when to exit.
    ///
    /// Run in the foreground of a terminal, lockheed hands the terminal to COMMAND while it
    /// runs: a Ctrl-C reaches COMMAND's group once (lockheed passes nothing on then), COMMAND
    /// can read the terminal (`lockheed run db -- psql`), and a Ctrl-Z stops lockheed with
    /// COMMAND (the lease is not renewed while stopped).
    Run(RunArgs),
    /// List the locks of the namespace: who holds them, until when, their tags and tokens.
    ///
    /// Locks are the ConfigMaps labelled `lockheed/lock`, sorted by name. Filters combine: a
    /// lock is listed when it meets all of them. Locks whose state cannot be read are
    /// reported on stderr (and under "unreadable" in JSON), never hidden. EXPIRES IN is when
    /// the first of the holders' leases ends.
    List(ListArgs),
    /// Show one lock in detail: its kind, tags, fencing token and holders.
    ///
    /// Each holder is shown with the time it took the lock, when its lease ends, the fencing
    /// token of its acquisition and its reason.
    Show(ShowArgs),
    /// Remove holders from a lock whatever their leases say (for a holder that died).
    ///
    /// This is for an operator whose holder died (a crashed job, a deleted node) without
    /// releasing the lock. lockheed prints what it removed. A holder that still runs notices
    /// at its next renewal that it lost the lock (`lockheed run` then stops its command). The
    /// lock's tags and fencing counter stay. One of --holder or --all is required, so that
    /// nothing is removed by accident.
    Release(ReleaseArgs),
}

/// How to reach the cluster, as kubectl does.
#[derive(Debug, Args)]
#[command(next_help_heading = "Global options")]
pub(crate) struct ClusterArgs {
    /// The namespace of the lock ConfigMaps [default: the kubeconfig context's namespace, or
    /// the pod's own namespace when running in a pod]
    #[arg(short, long, global = true, value_name = "NAMESPACE")]
    pub(crate) namespace: Option<String>,

    /// The kubeconfig file [default: the pod's service account when running in a pod, then
    /// $KUBECONFIG or ~/.kube/config]
    #[arg(long, global = true, value_name = "PATH")]
    pub(crate) kubeconfig: Option<PathBuf>,

    /// The kubeconfig context to use [default: the current context]
    #[arg(long, global = true, value_name = "NAME")]
    pub(crate) context: Option<String>,

    /// Keep locks in coordination.k8s.io Leases instead of ConfigMaps: lock NAME is the Lease
    /// NAME, in client-go's leader-election format, shared with Go controllers (mutexes
    /// only, with durations of whole seconds).
    #[arg(long, global = true)]
    pub(crate) lease: bool,
}

/// `lockheed run`'s arguments.
#[derive(Debug, Args)]
#[command(after_long_help = help::RUN)]
pub(crate) struct RunArgs {
    /// The lock's name (its ConfigMap is `lockheed-NAME`; with --lease, its Lease is `NAME`).
    pub(crate) name: String,

    /// How long each lease lasts; the lease is renewed while COMMAND runs, so this is how
    /// long others wait if lockheed dies without releasing it. 0s: no expiry (the lock stays
    /// held until released).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = duration::parse)]
    pub(crate) duration: Duration,

    /// How often the lease is renewed [default: a third of --duration]
    #[arg(long, value_name = "DURATION", value_parser = duration::parse)]
    pub(crate) renew_interval: Option<Duration>,

    /// Give up after waiting this long for the lock (exit code 125); 0s: do not wait at all
    /// [default: wait as long as it takes]
    #[arg(long, value_name = "DURATION", value_parser = duration::parse)]
    pub(crate) timeout: Option<Duration>,

    /// A tag to add to the lock, to find it with `lockheed list --tag` (repeatable).
    #[arg(short, long = "tag", value_name = "TAG")]
    pub(crate) tags: Vec<String>,

    /// Why the lock is taken, shown to others (`lockheed show`, waiters' messages).
    #[arg(long, value_name = "TEXT")]
    pub(crate) reason: Option<String>,

    /// The identity to hold the lock under, which `lockheed release --holder` takes
    /// [default: HOSTNAME-PID-RANDOM]
    #[arg(long, value_name = "ID")]
    pub(crate) holder: Option<String>,

    /// Make the lock a semaphore: up to N holders at once. The capacity is stored when the
    /// lock is first taken, and the stored one wins.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..),
          conflicts_with_all = ["shared", "exclusive"])]
    pub(crate) max_holders: Option<u32>,

    /// Take a read/write lock as a reader: together with other readers, never with a
    /// writer.
    #[arg(long, conflicts_with = "exclusive")]
    pub(crate) shared: bool,

    /// Take a read/write lock as a writer: alone. A waiting writer makes new readers wait.
    #[arg(long)]
    pub(crate) exclusive: bool,

    /// How long COMMAND has to exit after SIGTERM, when the lock is lost, before its process
    /// group (COMMAND and the processes it started) gets SIGKILL.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = duration::parse)]
    pub(crate) grace_period: Duration,

    /// The command to run and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub(crate) command: Vec<OsString>,

    /// The lock is a Lease (the global --lease), for the messages that say how to remove it.
    #[arg(skip)]
    pub(crate) lease: bool,
}

/// How `list` and `show` print.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    /// For people: aligned columns.
    Table,
    /// For scripts: JSON (times in RFC 3339).
    Json,
}

/// `lockheed list`'s arguments.
#[derive(Debug, Args)]
#[command(after_long_help = help::LIST)]
pub(crate) struct ListArgs {
    /// Only locks someone holds.
    #[arg(long, conflicts_with = "free")]
    pub(crate) held: bool,

    /// Only locks nobody holds.
    #[arg(long)]
    pub(crate) free: bool,

    /// Only locks with this tag (repeatable: locks with all of them).
    #[arg(short, long = "tag", value_name = "TAG")]
    pub(crate) tags: Vec<String>,

    /// Only locks that meet this condition (JSON: see --help).
    #[arg(long, value_name = "JSON", value_parser = parse_condition)]
    pub(crate) condition: Option<Condition>,

    /// How to print.
    #[arg(short, long, value_enum, default_value_t = Format::Table)]
    pub(crate) output: Format,
}

/// `lockheed show`'s arguments.
#[derive(Debug, Args)]
#[command(after_long_help = help::SHOW)]
pub(crate) struct ShowArgs {
    /// The lock's name.
    pub(crate) name: String,

    /// How to print.
    #[arg(short, long, value_enum, default_value_t = Format::Table)]
    pub(crate) output: Format,
}

/// `lockheed release`'s arguments.
#[derive(Debug, Args)]
#[command(
    after_long_help = help::RELEASE,
    override_usage = "lockheed release <NAME> (--holder <ID> | --all) [OPTIONS]"
)]
pub(crate) struct ReleaseArgs {
    /// The lock's name.
    pub(crate) name: String,

    /// Which holders to remove.
    #[command(flatten)]
    pub(crate) which: Which,
}

/// `--holder ID` or `--all`: one of them is required.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub(crate) struct Which {
    /// The holder to remove (its lease, or its place as a waiting writer).
    #[arg(long, value_name = "ID")]
    pub(crate) holder: Option<String>,

    /// Remove every holder.
    #[arg(long)]
    pub(crate) all: bool,
}

/// Reads `--condition`'s JSON.
fn parse_condition(text: &str) -> Result<Condition, String> {
    serde_json::from_str(text).map_err(|err| {
        format!(
            "{err}; expected e.g. {{\"tagsContain\": \"db\"}}, {{\"acquired\": true}}, \
             {{\"and\": [..]}}, {{\"or\": [..]}}, {{\"not\": {{..}}}}"
        )
    })
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_definitions_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn run_needs_a_command_after_the_double_dash() {
        let cli = Cli::try_parse_from(["lockheed", "run", "x", "--", "echo", "--flag"]).unwrap();
        let Command::Run(run) = cli.command else {
            panic!("not run")
        };
        assert_eq!(run.command, ["echo", "--flag"]);
        assert_eq!(run.duration, Duration::from_secs(30));
        assert!(Cli::try_parse_from(["lockheed", "run", "x"]).is_err());
        assert!(Cli::try_parse_from(["lockheed", "run", "x", "echo"]).is_err());
    }

    #[test]
    fn kinds_exclude_each_other() {
        for args in [
            &["--shared", "--exclusive"][..],
            &["--max-holders", "2", "--shared"],
            &["--max-holders", "0"],
        ] {
            let line = ["lockheed", "run", "x"]
                .iter()
                .chain(args)
                .chain(&["--", "true"]);
            assert!(Cli::try_parse_from(line).is_err(), "{args:?}");
        }
    }

    #[test]
    fn release_needs_holder_or_all_but_not_both() {
        assert!(Cli::try_parse_from(["lockheed", "release", "x"]).is_err());
        assert!(
            Cli::try_parse_from(["lockheed", "release", "x", "--holder", "a", "--all"]).is_err()
        );
        assert!(Cli::try_parse_from(["lockheed", "release", "x", "--all"]).is_ok());
    }

    #[test]
    fn conditions_are_json() {
        let cli = Cli::try_parse_from([
            "lockheed",
            "list",
            "--condition",
            r#"{"not": {"tagsContain": "keep"}}"#,
        ])
        .unwrap();
        let Command::List(list) = cli.command else {
            panic!("not list")
        };
        assert_eq!(
            list.condition,
            Some(Condition::not(Condition::tags_contain("keep")))
        );
        let err = parse_condition(r#"{"field": "tags"}"#).unwrap_err();
        assert!(err.contains("tagsContain"), "{err}");
    }

    #[test]
    fn cluster_options_go_anywhere() {
        let cli = Cli::try_parse_from(["lockheed", "list", "-n", "team-a", "-vv"]).unwrap();
        assert_eq!(cli.cluster.namespace.as_deref(), Some("team-a"));
        assert_eq!(cli.verbose, 2);
        let cli = Cli::try_parse_from(["lockheed", "run", "--lease", "ctl", "--", "true"]).unwrap();
        assert!(cli.cluster.lease);
        let Command::Run(run) = cli.command else {
            panic!("not run")
        };
        assert_eq!(run.name, "ctl");
    }
}
