//! Connecting to the cluster the way kubectl users expect.

use std::path::Path;

use anyhow::{Context as _, anyhow};
use kube::config::{KubeConfigOptions, Kubeconfig};

/// Where the connection settings came from, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// A kubeconfig file named on the command line.
    File,
    /// The pod's service account.
    InCluster,
    /// `KUBECONFIG` or `~/.kube/config`.
    Kubeconfig,
}

/// The connection settings: the kubeconfig at `path` when one is given; otherwise, the pod's
/// service account when running in a pod, then `KUBECONFIG` or `~/.kube/config` (`context`
/// picks a kubeconfig context other than the current one).
pub(crate) async fn config(
    path: Option<&Path>,
    context: Option<&str>,
) -> anyhow::Result<(kube::Config, Source)> {
    let options = KubeConfigOptions {
        context: context.map(str::to_owned),
        ..KubeConfigOptions::default()
    };
    if let Some(path) = path {
        // kube's errors repeat their source in their message: say it once.
        let kubeconfig = Kubeconfig::read_from(path)
            .map_err(|err| anyhow!("cannot read the kubeconfig {}: {err}", path.display()))?;
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
            .await
            .map_err(|err| anyhow!("cannot use the kubeconfig {}: {err}", path.display()))?;
        return Ok((config, Source::File));
    }
    if context.is_none()
        && let Ok(config) = kube::Config::incluster()
    {
        return Ok((config, Source::InCluster));
    }
    let config = kube::Config::from_kubeconfig(&options).await.map_err(|err| {
        anyhow!("no cluster configured: not in a pod, and no usable KUBECONFIG or ~/.kube/config ({err})")
    })?;
    Ok((config, Source::Kubeconfig))
}

/// A client for [`config`]'s settings.
pub(crate) fn client(config: kube::Config) -> anyhow::Result<kube::Client> {
    kube::Client::try_from(config).context("cannot create a Kubernetes client")
}
