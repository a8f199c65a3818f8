//! The locker every command works with: the cluster from the kubeconfig (or the pod's service
//! account), in the namespace asked for, in ConfigMaps or (with `--lease`) in Leases.

use lockheed::{KubeLocker, LeaseLocker, Locker};

use crate::args::ClusterArgs;
use crate::shared::{self, log};

/// Where the locks are: lockheed-format ConfigMaps, or Leases (`--lease`).
pub(crate) enum Locks {
    ConfigMaps(KubeLocker),
    Leases(LeaseLocker),
}

/// What the commands need of a locker besides [`Locker`]: where its locks are, for messages.
pub(crate) trait Place: Locker {
    /// The locks' namespace.
    fn namespace(&self) -> &str;
    /// Lock `name`'s object, for messages: `ConfigMap default/lockheed-db`, `Lease default/db`.
    fn object(&self, name: &str) -> String;
}

impl Place for KubeLocker {
    fn namespace(&self) -> &str {
        KubeLocker::namespace(self)
    }

    fn object(&self, name: &str) -> String {
        format!("ConfigMap {}/{}", self.namespace(), self.object_name(name))
    }
}

impl Place for LeaseLocker {
    fn namespace(&self) -> &str {
        LeaseLocker::namespace(self)
    }

    fn object(&self, name: &str) -> String {
        format!("Lease {}/{}", self.namespace(), self.object_name(name))
    }
}

/// The locker of `args`' cluster and namespace (by default, the kubeconfig context's
/// namespace, or the pod's): lockheed-format ConfigMaps, or Leases with `--lease`.
///
/// # Errors
///
/// When no cluster is configured, or the kubeconfig cannot be read or used.
pub(crate) async fn locker(args: &ClusterArgs) -> anyhow::Result<Locks> {
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
        let kind = if args.lease { "Leases" } else { "ConfigMaps" };
        log::log_info!(
            crate::PROGRAM,
            "using {from}; locks in {kind} of namespace {namespace}"
        );
    }
    Ok(if args.lease {
        Locks::Leases(LeaseLocker::new(client, namespace))
    } else {
        Locks::ConfigMaps(KubeLocker::new(client, namespace))
    })
}
