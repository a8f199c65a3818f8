//! A test's namespace on a real cluster, and the clients and kubeconfigs that reach it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding, RoleRef, Subject};
use kube::api::{Api, ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};

use super::record::Recorder;
use super::still::StillClockLayer;
use super::tap::Tap;
use super::{Identity, TestClusterError};
use crate::{Clock, Commit};

/// The label every test namespace carries, to find (and clean) them.
const NAMESPACE_LABEL: &str = "lockheed-test";

#[derive(Debug)]
pub(super) struct Real {
    /// The administrator's kubeconfig as read, its current context's namespace set to the
    /// test's.
    kubeconfig: Kubeconfig,
    config: kube::Config,
    namespace: String,
    tap: Tap,
    still: StillClockLayer,
    recorder: std::sync::Mutex<Option<Recorder>>,
}

fn refused(what: impl Into<String>) -> impl FnOnce(kube::Error) -> TestClusterError {
    let what = what.into();
    move |source| TestClusterError::Kube { what, source }
}

impl Real {
    pub(super) async fn start(after_write: Duration) -> Result<Self, TestClusterError> {
        let kubeconfig = Kubeconfig::read()?;
        let config =
            kube::Config::from_custom_kubeconfig(kubeconfig.clone(), &KubeConfigOptions::default())
                .await?;
        let mut real = Self {
            kubeconfig,
            config,
            namespace: String::new(),
            tap: Tap::default(),
            still: StillClockLayer { after_write },
            recorder: std::sync::Mutex::default(),
        };
        let namespaces: Api<Namespace> = Api::all(real.client(None));
        let wanted = Namespace {
            metadata: ObjectMeta {
                generate_name: Some(format!("{NAMESPACE_LABEL}-")),
                labels: Some(BTreeMap::from([(
                    NAMESPACE_LABEL.to_owned(),
                    String::new(),
                )])),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        let created = namespaces
            .create(&PostParams::default(), &wanted)
            .await
            .map_err(refused("a test namespace"))?;
        real.namespace = created.metadata.name.unwrap_or_default();
        // The test counts its own requests from here, as on a fresh fake server.
        real.tap.reset();
        real.config.default_namespace.clone_from(&real.namespace);
        real.set_context_namespace();
        Ok(real)
    }

    fn set_context_namespace(&mut self) {
        let current = self.kubeconfig.current_context.clone();
        for context in &mut self.kubeconfig.contexts {
            if Some(&context.name) == current.as_ref()
                && let Some(context) = context.context.as_mut()
            {
                context.namespace = Some(self.namespace.clone());
            }
        }
    }

    pub(super) fn namespace(&self) -> &str {
        &self.namespace
    }

    pub(super) fn tap(&self) -> &Tap {
        &self.tap
    }

    pub(super) fn client(&self, identity: Option<&Identity>) -> kube::Client {
        let mut config = self.config.clone();
        if let Some(identity) = identity {
            config.auth_info.impersonate = Some(identity.user.clone());
            config.auth_info.impersonate_groups = Some(identity.groups.clone());
        }
        kube::client::ClientBuilder::try_from(config)
            .expect("the kubeconfig built a client once already")
            .with_layer(&self.tap)
            .with_layer(&self.still)
            .build()
    }

    /// Starts the commit log of the namespace (once; later calls change nothing).
    pub(super) async fn record(&self, clock: Arc<dyn Clock>) -> Result<(), TestClusterError> {
        if self.recorder().is_some() {
            return Ok(());
        }
        // Its own client, past the tap: the test's request counts stay the test's.
        let client = kube::client::ClientBuilder::try_from(self.config.clone())
            .expect("the kubeconfig built a client once already")
            .with_layer(&self.still)
            .build();
        let recorder = Recorder::start(&client, &self.namespace, clock)
            .await
            .map_err(refused("the watches of the commit log"))?;
        *self.recorder() = Some(recorder);
        Ok(())
    }

    fn recorder(&self) -> std::sync::MutexGuard<'_, Option<Recorder>> {
        self.recorder
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(super) fn commits(&self) -> Vec<Commit> {
        self.recorder()
            .as_ref()
            .map(Recorder::commits)
            .unwrap_or_default()
    }

    pub(super) fn commit_gaps(&self) -> u64 {
        self.recorder().as_ref().map_or(0, Recorder::gaps)
    }

    pub(super) fn kubeconfig(&self, identity: Option<&Identity>) -> Kubeconfig {
        let mut kubeconfig = self.kubeconfig.clone();
        if let Some(identity) = identity {
            let user = self
                .kubeconfig
                .contexts
                .iter()
                .find(|c| Some(&c.name) == self.kubeconfig.current_context.as_ref())
                .and_then(|c| c.context.as_ref())
                .and_then(|c| c.user.clone());
            for named in &mut kubeconfig.auth_infos {
                if Some(&named.name) == user.as_ref()
                    && let Some(auth) = named.auth_info.as_mut()
                {
                    auth.impersonate = Some(identity.user.clone());
                    auth.impersonate_groups = Some(identity.groups.clone());
                }
            }
        }
        kubeconfig
    }

    /// Creates `role` and a RoleBinding of it to `subject`, both in the test's namespace.
    pub(super) async fn bind(
        &self,
        role: &Role,
        subject: &Subject,
    ) -> Result<(), TestClusterError> {
        let name = role.metadata.name.clone().unwrap_or_else(|| "role".into());
        let mut role = role.clone();
        role.metadata = ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(self.namespace.clone()),
            ..ObjectMeta::default()
        };
        let mut subject = subject.clone();
        if subject.kind == "ServiceAccount" {
            subject
                .namespace
                .get_or_insert_with(|| self.namespace.clone());
        }
        let binding = RoleBinding {
            metadata: ObjectMeta {
                name: Some(format!("{name}-{}", subject.name)),
                namespace: Some(self.namespace.clone()),
                ..ObjectMeta::default()
            },
            role_ref: RoleRef {
                api_group: "rbac.authorization.k8s.io".into(),
                kind: "Role".into(),
                name: name.clone(),
            },
            subjects: Some(vec![subject]),
        };
        let client = self.client(None);
        let roles: Api<Role> = Api::namespaced(client.clone(), &self.namespace);
        match roles.create(&PostParams::default(), &role).await {
            Ok(_) => {}
            // Granted to another subject already: the same Role, bound once more.
            Err(kube::Error::Api(status)) if status.code == 409 => {}
            Err(err) => return Err(refused(format!("Role {name}"))(err)),
        }
        let bindings: Api<RoleBinding> = Api::namespaced(client, &self.namespace);
        bindings
            .create(&PostParams::default(), &binding)
            .await
            .map_err(refused(format!("the RoleBinding of Role {name}")))?;
        Ok(())
    }
}
