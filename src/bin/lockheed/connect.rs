//! The locker every command works with: the cluster from the kubeconfig (or the pod's service
//! account), in the namespace asked for.

use lockheed::KubeLocker;

use crate::args::ClusterArgs;
use crate::shared::{self, log};

/// The lockheed-format locker of `args`' cluster and namespace (by default, the kubeconfig
/// context's namespace, or the pod's).
///
/// # Errors
///
/// When no cluster is configured, or the kubeconfig cannot be read or used.
pub(crate) async fn locker(args: &ClusterArgs) -> anyhow::Result<KubeLocker> {
    let (config, source) =
        shared::cluster::config(args.kubeconfig.as_deref(), args.context.as_deref()).await?;
    let client = shared::cluster::client(config)?;
    let namespace = args
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_owned());
    if log::enabled(1) {
        let from = match source {
            shared::cluster::Source::File => "the kubeconfig named by --kubeconfig",
            shared::cluster::Source::InCluster => "the pod's service account",
            shared::cluster::Source::Kubeconfig => "the kubeconfig",
        };
        log::log_info!(
            crate::PROGRAM,
            "using {from}; locks in namespace {namespace}"
        );
    }
    Ok(KubeLocker::new(client, namespace))
}
