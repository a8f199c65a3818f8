//! The commit log of a real cluster's test namespace, read from watches.
//!
//! A real kube-apiserver keeps no commit log a test can read, but every committed change of an
//! object reaches a watch of its collection, in resourceVersion order (etcd's revision order).
//! The recorder watches the namespace's ConfigMaps and Leases from the moment it starts and
//! turns each event into a [`Commit`]: its revision is the object's resourceVersion, its time
//! the recorder's clock when the event arrived (a little after the commit: see
//! [`TestCluster::record_commits`](super::TestCluster::record_commits)), its author unknown.
//! When a watch ends it resumes from the last revision seen; if that revision was compacted
//! away (`410 Gone`), commits were lost, and [`Recorder::gaps`] counts it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, WatchEvent, WatchParams};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::{Clock, Commit, Operation};

/// The resources a lock lives in.
fn resources() -> [(ApiResource, &'static str); 2] {
    [
        (ApiResource::erase::<ConfigMap>(&()), "configmaps"),
        (ApiResource::erase::<Lease>(&()), "leases"),
    ]
}

/// Commits seen so far, and the watches that see them.
#[derive(Debug)]
pub(super) struct Recorder {
    commits: Arc<Mutex<Vec<Commit>>>,
    gaps: Arc<AtomicU64>,
    stop: CancellationToken,
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Recorder {
    /// Lists each resource to learn where history starts, then watches it from there.
    pub(super) async fn start(
        client: &kube::Client,
        namespace: &str,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, kube::Error> {
        let recorder = Self {
            commits: Arc::default(),
            gaps: Arc::default(),
            stop: CancellationToken::new(),
        };
        for (resource, plural) in resources() {
            let api: Api<DynamicObject> =
                Api::namespaced_with(client.clone(), namespace, &resource);
            let listed = api.list_metadata(&ListParams::default()).await?;
            let from = listed.metadata.resource_version.unwrap_or_default();
            let watch = Watch {
                api,
                plural,
                clock: Arc::clone(&clock),
                commits: Arc::clone(&recorder.commits),
                gaps: Arc::clone(&recorder.gaps),
            };
            tokio::spawn(
                recorder
                    .stop
                    .clone()
                    .run_until_cancelled_owned(watch.run(from)),
            );
        }
        Ok(recorder)
    }

    /// Every commit seen so far, in revision order.
    pub(super) fn commits(&self) -> Vec<Commit> {
        let mut commits = self
            .commits
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        // Each watch delivers in order; the two resources interleave by revision.
        commits.sort_by_key(|c| c.revision);
        commits
    }

    /// How many times a watch could not resume where it stopped, losing commits.
    pub(super) fn gaps(&self) -> u64 {
        self.gaps.load(Ordering::SeqCst)
    }
}

/// One resource's watch.
struct Watch {
    api: Api<DynamicObject>,
    plural: &'static str,
    clock: Arc<dyn Clock>,
    commits: Arc<Mutex<Vec<Commit>>>,
    gaps: Arc<AtomicU64>,
}

impl Watch {
    async fn run(self, mut from: String) {
        loop {
            match self.watch_from(&from).await {
                Ok(last) => from = last,
                Err(Ended::Gone) => {
                    // Resume from now: what happened between is lost, and counted.
                    self.gaps.fetch_add(1, Ordering::SeqCst);
                    from = match self.api.list_metadata(&ListParams::default()).await {
                        Ok(list) => list.metadata.resource_version.unwrap_or_default(),
                        Err(_) => from,
                    };
                }
                Err(Ended::Failed) => {
                    // The server is down (a fault test killed it): try again shortly.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }

    /// Watches from revision `from` until the server ends the watch; returns the last revision
    /// seen.
    async fn watch_from(&self, from: &str) -> Result<String, Ended> {
        let params = WatchParams::default().timeout(290);
        let mut events = self
            .api
            .watch(&params, from)
            .await
            .map_err(|_| Ended::Failed)?
            .boxed();
        let mut last = from.to_owned();
        loop {
            let event = match events.try_next().await {
                Ok(Some(event)) => event,
                Ok(None) => return Ok(last),
                Err(_) => {
                    return if last == from {
                        Err(Ended::Failed)
                    } else {
                        Ok(last)
                    };
                }
            };
            let (operation, object) = match event {
                WatchEvent::Added(o) => (Operation::Create, o),
                WatchEvent::Modified(o) => (Operation::Update, o),
                WatchEvent::Deleted(o) => (Operation::Delete, o),
                WatchEvent::Bookmark(b) => {
                    last = b.metadata.resource_version;
                    continue;
                }
                WatchEvent::Error(status) if status.code == 410 => return Err(Ended::Gone),
                WatchEvent::Error(_) => return Err(Ended::Failed),
            };
            let version = object.metadata.resource_version.clone().unwrap_or_default();
            let revision = version.parse().unwrap_or_default();
            let Ok(object) = serde_json::to_value(&object) else {
                continue;
            };
            let object = with_kind(object, self.plural);
            let commit = Commit::new(revision, self.clock.now(), operation, self.plural, object);
            self.commits
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(commit);
            last = version;
        }
    }
}

/// How a watch ended, when it did not end normally.
enum Ended {
    /// `410 Gone`: its revision was compacted.
    Gone,
    /// The request failed (the server is unreachable, or refused it).
    Failed,
}

/// The object with its `apiVersion` and `kind`, which watch events of typed lists may omit.
fn with_kind(mut object: Value, plural: &str) -> Value {
    let (api_version, kind) = match plural {
        "leases" => ("coordination.k8s.io/v1", "Lease"),
        _ => ("v1", "ConfigMap"),
    };
    if let Some(map) = object.as_object_mut() {
        map.entry("apiVersion").or_insert(api_version.into());
        map.entry("kind").or_insert(kind.into());
    }
    object
}
