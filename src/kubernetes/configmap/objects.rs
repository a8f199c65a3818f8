//! The ConfigMaps a [`KubeLocker`](super::KubeLocker) keeps its locks in: where they are, how
//! they are named, and how a lock's record is read from one and written into one.

use std::sync::Arc;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams};
use kube::runtime::watcher;

use super::format::Format;
use crate::backend::Record;
use crate::error::Error;
use crate::kubernetes::watch::Kept;
use crate::state::LockState;

/// What a [`KubeLocker`](super::KubeLocker)'s write compares against: the ConfigMap as it was read. The write
/// carries its resourceVersion (a compare-and-swap) and keeps everything else it holds.
#[derive(Debug, Clone)]
pub struct ConfigMapVersion(pub(super) Arc<ConfigMap>);

impl ConfigMapVersion {
    /// The resourceVersion the next write must find.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "testing")]
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use lockheed::backend::Backend;
    /// use lockheed::{KubeLocker, Lock};
    ///
    /// let server = lockheed::testing::FakeApiServer::start().await?;
    /// let locker = KubeLocker::new(server.client(), "default");
    /// Lock::new("db", locker.clone()).try_acquire().await?.release().await?;
    /// let record = locker.read("db").await?.unwrap();
    /// assert!(record.version.resource_version().is_some());
    /// # Ok(())
    /// # }
    /// # #[cfg(not(feature = "testing"))]
    /// # fn main() {}
    /// ```
    #[must_use]
    pub fn resource_version(&self) -> Option<&str> {
        self.0.metadata.resource_version.as_deref()
    }

    /// The ConfigMap as it was read, without its `metadata.managedFields`: a lock keeps its
    /// object for the next write, which leaves them out so that the API server keeps them.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "testing")]
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use lockheed::backend::Backend;
    /// use lockheed::{KubeLocker, Lock};
    ///
    /// let server = lockheed::testing::FakeApiServer::start().await?;
    /// let locker = KubeLocker::new(server.client(), "default");
    /// Lock::new("db", locker.clone()).try_acquire().await?.release().await?;
    /// let record = locker.read("db").await?.unwrap();
    /// assert_eq!(record.version.config_map().metadata.name.as_deref(), Some("lockheed-db"));
    /// # Ok(())
    /// # }
    /// # #[cfg(not(feature = "testing"))]
    /// # fn main() {}
    /// ```
    #[must_use]
    pub fn config_map(&self) -> &ConfigMap {
        &self.0
    }
}

/// Where a locker's lock ConfigMaps are, and in which format.
#[derive(Clone)]
pub(super) struct Objects {
    pub(super) api: Api<ConfigMap>,
    pub(super) namespace: String,
    /// `None`: the format's default prefix.
    pub(super) prefix: Option<String>,
    pub(super) format: Format,
}

impl Objects {
    /// The prefix of lock ConfigMap names.
    pub(super) fn prefix(&self) -> &str {
        self.prefix
            .as_deref()
            .unwrap_or_else(|| self.format.default_prefix())
    }

    /// The ConfigMap name of lock `name`.
    pub(super) fn object_name(&self, name: &str) -> String {
        format!("{}{name}", self.prefix())
    }

    /// The lock a ConfigMap holds, by name (`None`: not one of this locker's).
    pub(super) fn lock_name(&self, cm: &ConfigMap) -> Option<String> {
        let object = cm.metadata.name.as_deref()?;
        Some(object.strip_prefix(self.prefix())?.to_owned())
    }

    /// Lock `name`'s record, read from its ConfigMap.
    pub(super) fn decode(
        &self,
        name: &str,
        mut cm: ConfigMap,
    ) -> Result<Record<ConfigMapVersion>, Error> {
        // Kept for the next write, which leaves them out (the API server then keeps them as
        // they are): a lock held or watched does not carry its object's field owners around.
        cm.metadata.managed_fields = None;
        let record = self.format.decode(name, &self.object(name), cm)?;
        Ok(
            Record::new(record.state, ConfigMapVersion(Arc::new(record.version)))
                .with_reservation(record.reservation),
        )
    }

    /// `cm` with lock `name`'s `state` written into it.
    pub(super) fn encode(
        &self,
        name: &str,
        cm: ConfigMap,
        state: &LockState,
    ) -> Result<ConfigMap, Error> {
        self.format.encode(name, &self.object(name), cm, state)
    }
}

impl Kept for Objects {
    type Object = ConfigMap;
    type Version = ConfigMapVersion;
    const RESOURCE: &'static str = "configmaps";

    fn api(&self) -> &Api<ConfigMap> {
        &self.api
    }

    fn namespace(&self) -> &str {
        &self.namespace
    }

    fn object_name(&self, name: &str) -> String {
        Objects::object_name(self, name)
    }

    fn lock_name(&self, cm: &ConfigMap) -> Option<String> {
        Objects::lock_name(self, cm)
    }

    fn decode(&self, name: &str, cm: ConfigMap) -> Result<Record<ConfigMapVersion>, Error> {
        Objects::decode(self, name, cm)
    }

    fn version(cm: ConfigMap) -> ConfigMapVersion {
        ConfigMapVersion(Arc::new(cm))
    }

    fn list_params(&self) -> ListParams {
        self.format.list_params()
    }

    fn is_lock(&self, cm: &ConfigMap) -> bool {
        self.format.is_lock(cm)
    }

    fn selector(&self) -> watcher::Config {
        watcher::Config::default().labels(super::keys::LOCK_LABEL)
    }

    fn resource_version(version: &ConfigMapVersion) -> Option<&str> {
        version.resource_version()
    }
}
