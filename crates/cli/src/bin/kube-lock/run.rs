//! One run of kube-lock: connect to the cluster, then lock or unlock, giving up on SIGINT or
//! SIGTERM.

use lockheed::KubeLocker;
use lockheed::configmap::Format;
use nix::sys::signal::Signal;

use crate::args::{Args, Settings};
use crate::exit::Failure;
use crate::lock::Locking;
use crate::say::{PROGRAM, Target};
use crate::shared::log::{self, log_info};
use crate::shared::signals::Terminations;
use crate::shared::{cluster, duration};
use crate::unlock;

/// Runs kube-lock as `args` say.
///
/// # Errors
///
/// Each [`Failure`], which gives the exit code.
pub(crate) async fn run(args: Args) -> Result<(), Failure> {
    let settings = args.settings().map_err(Failure::Config)?;
    // From here on, SIGINT and SIGTERM end the run through `interrupted`, which cleans up.
    let mut signals = Terminations::listen().map_err(|err| {
        Failure::Failed(anyhow::Error::new(err).context("cannot listen to SIGINT and SIGTERM"))
    })?;
    let locker = connect(&settings).await?;
    if settings.unlock {
        return tokio::select! {
            biased;
            result = unlock::unlock(&locker, &settings) => result,
            signal = signals.next() => Err(interrupted("unlock", &settings.target, signal)),
        };
    }
    let locking = Locking::new(&settings, locker);
    let signal = tokio::select! {
        biased;
        result = locking.run() => return result,
        signal = signals.next() => signal,
    };
    // The attempt in flight was dropped: let the library remove the holder its write may have
    // stored (a second signal stops that too).
    tokio::select! {
        biased;
        () = locking.settle() => {}
        _ = signals.next() => {}
    }
    Err(interrupted("lock", &settings.target, signal))
}

/// A client for the cluster `settings` name, and kube-lock's locker in the namespace.
async fn connect(settings: &Settings) -> Result<KubeLocker, Failure> {
    let (config, source) = cluster::config(settings.kubeconfig.as_deref(), None)
        .await
        .map_err(Failure::Config)?;
    if log::enabled(1) {
        let source = match source {
            cluster::Source::File => "--kubeconfig-path",
            cluster::Source::InCluster => "the pod's service account",
            cluster::Source::Kubeconfig => "KUBECONFIG or ~/.kube/config",
        };
        log_info!(
            PROGRAM,
            "Using the cluster at {} (from {source}) as holder {}",
            config.cluster_url,
            settings.holder
        );
        log_info!(
            PROGRAM,
            "Create {} if missing: {}; polling every {}",
            settings.target,
            settings.create,
            duration::format(settings.interval)
        );
    }
    let client = cluster::client(config).map_err(Failure::Config)?;
    Ok(KubeLocker::new(client, settings.target.namespace.clone())
        .with_format(Format::KubeLock)
        .with_create(settings.create))
}

/// `cannot lock cm/lock in ns default, SIGTERM received`.
fn interrupted(doing: &str, target: &Target, signal: Signal) -> Failure {
    Failure::Failed(anyhow::anyhow!(
        "cannot {doing} {target}, {} received",
        signal.as_str()
    ))
}
