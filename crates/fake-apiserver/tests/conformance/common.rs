//! Helpers shared by the conformance tests.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ObjectMeta, PostParams};
use lockheed_fake_apiserver::{Clock, FakeApiServer};

/// A clock that moves only when told to; clones share the time.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<Mutex<DateTime<Utc>>>);

impl ManualClock {
    pub fn new(start: DateTime<Utc>) -> Self {
        Self(Arc::new(Mutex::new(start)))
    }

    pub fn advance(&self, by: Duration) {
        *self.0.lock().unwrap() += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap()
    }
}

pub async fn server() -> FakeApiServer {
    FakeApiServer::start()
        .await
        .expect("the fake API server starts")
}

pub fn configmaps(server: &FakeApiServer) -> Api<ConfigMap> {
    Api::namespaced(server.client(), "default")
}

pub fn cm(name: &str, data: &[(&str, &str)]) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..ObjectMeta::default()
        },
        data: Some(
            data.iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<BTreeMap<_, _>>(),
        )
        .filter(|d| !d.is_empty()),
        ..ConfigMap::default()
    }
}

pub fn labelled(mut cm: ConfigMap, labels: &[(&str, &str)]) -> ConfigMap {
    cm.metadata.labels = Some(
        labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    );
    cm
}

pub async fn create(api: &Api<ConfigMap>, cm: &ConfigMap) -> ConfigMap {
    api.create(&PostParams::default(), cm)
        .await
        .expect("create succeeds")
}

/// The `metav1.Status` of a failed request: (code, reason).
pub fn status(err: kube::Error) -> (u16, String) {
    match err {
        kube::Error::Api(status) => (status.code, status.reason.clone()),
        other => panic!("expected an API error with a Status, got {other:?}"),
    }
}

/// The full Status of a failed request.
pub fn full_status(err: kube::Error) -> kube::core::Status {
    match err {
        kube::Error::Api(status) => *status,
        other => panic!("expected an API error with a Status, got {other:?}"),
    }
}

pub fn rv(cm: &ConfigMap) -> u64 {
    cm.metadata
        .resource_version
        .as_deref()
        .expect("a stored object has a resourceVersion")
        .parse()
        .expect("resourceVersions of the fake server are numbers")
}

pub fn data<'a>(cm: &'a ConfigMap, key: &str) -> Option<&'a str> {
    cm.data.as_ref()?.get(key).map(String::as_str)
}
