//! The commit log of a real cluster's test namespace, read from watches.
//!
//! A real kube-apiserver keeps no commit log a test can read, but every committed change of an
//! object reaches a watch of its collection, in resourceVersion order (etcd's revision order).
//! The recorder watches the namespace's ConfigMaps and Leases from the moment it starts and
//! turns each event into a [`Commit`]: its revision is the object's resourceVersion, its time
//! the recorder's clock when the event arrived, its author unknown.
//!
//! **When a commit was made.** An event arrives a little after its commit, or much later
//! when kube-apiserver was stopped or restarted in between. So the recorder also reads the
//! namespace consistently every [`PROBE_INTERVAL`] (a list of one item, which says which
//! revision the server had reached): a commit with a revision above what a read returned was
//! made after that read was sent. Each commit carries the latest such time as
//! [`Commit::earliest`]: it was made between `earliest` and `at`, whatever the faults.
//!
//! **Commits missed.** When a watch ends it resumes from the last revision seen. If that
//! revision is too old for the server (`410 Gone`: compacted, or a restarted kube-apiserver
//! whose watch cache starts later), the recorder lists the namespace and compares each
//! object's resourceVersion with the last it saw: an object unchanged lost nothing (any
//! commit would have given it a new one); for one that changed, it reads the object as it was
//! just before each revision (an exact list, which etcd serves until it compacts), back to the
//! last state it saw, and so recovers every commit it missed (stamped when recovered). What it
//! cannot recover (an object deleted meanwhile, history already compacted) counts as a gap
//! ([`Recorder::gaps`]). An object created and deleted within the interruption leaves no
//! trace at all.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{
    Api, ApiResource, DynamicObject, ListParams, VersionMatch, WatchEvent, WatchParams,
};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::{Clock, Commit, Operation};

/// How often the recorder reads which revision the server has reached.
const PROBE_INTERVAL: Duration = Duration::from_millis(100);

/// How long a read of the revision may take before it is given up (a stopped server).
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The resources a lock lives in.
fn resources() -> [(ApiResource, &'static str); 2] {
    [
        (ApiResource::erase::<ConfigMap>(&()), "configmaps"),
        (ApiResource::erase::<Lease>(&()), "leases"),
    ]
}

/// What the watches and the probe share.
#[derive(Debug, Default)]
struct Shared {
    commits: Mutex<Vec<Commit>>,
    gaps: AtomicU64,
    probes: Mutex<Probes>,
}

impl Shared {
    fn push(&self, commit: Commit) {
        self.commits
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(commit);
    }

    fn probed(&self, sent: DateTime<Utc>, revision: u64) {
        self.probes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(sent, revision);
    }

    fn gap(&self) {
        self.gaps.fetch_add(1, Ordering::SeqCst);
    }
}

/// Consistent reads of the namespace, in the order they were sent: when each was sent, and the
/// revision the server had reached when it answered.
#[derive(Debug, Default)]
struct Probes(Vec<(DateTime<Utc>, u64)>);

impl Probes {
    /// Records a read. Consistent reads never go back in revision; one that seems to (a clock
    /// or server oddity) is left out rather than trusted.
    fn push(&mut self, sent: DateTime<Utc>, revision: u64) {
        if self
            .0
            .last()
            .is_none_or(|(at, last)| revision >= *last && sent >= *at)
        {
            self.0.push((sent, revision));
        }
    }

    /// The latest time a commit at `revision` is known to have been made after: when the last
    /// read that had not reached it was sent.
    fn before(&self, revision: u64) -> Option<DateTime<Utc>> {
        let reached = self.0.partition_point(|(_, r)| *r < revision);
        reached.checked_sub(1).map(|i| self.0[i].0)
    }
}

/// Commits seen so far, and the watches that see them.
#[derive(Debug)]
pub(super) struct Recorder {
    shared: Arc<Shared>,
    stop: CancellationToken,
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn revision_of(version: Option<&str>) -> u64 {
    version.and_then(|v| v.parse().ok()).unwrap_or_default()
}

impl Recorder {
    /// Lists each resource to learn where history starts, then watches it from there, and
    /// reads the server's revision every [`PROBE_INTERVAL`].
    pub(super) async fn start(
        client: &kube::Client,
        namespace: &str,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, kube::Error> {
        let recorder = Self {
            shared: Arc::default(),
            stop: CancellationToken::new(),
        };
        for (resource, plural) in resources() {
            let api: Api<DynamicObject> =
                Api::namespaced_with(client.clone(), namespace, &resource);
            let sent = clock.now();
            let listed = api.list_metadata(&ListParams::default()).await?;
            let from = listed.metadata.resource_version.unwrap_or_default();
            recorder.shared.probed(sent, revision_of(Some(&from)));
            let known = listed
                .items
                .iter()
                .filter_map(|o| {
                    let version = o.metadata.resource_version.as_deref();
                    Some((o.metadata.name.clone()?, revision_of(version)))
                })
                .collect();
            let watch = Watch {
                api,
                plural,
                clock: Arc::clone(&clock),
                shared: Arc::clone(&recorder.shared),
                known,
            };
            tokio::spawn(
                recorder
                    .stop
                    .clone()
                    .run_until_cancelled_owned(watch.run(from)),
            );
        }
        let probed = Api::namespaced_with(
            client.clone(),
            namespace,
            &ApiResource::erase::<ConfigMap>(&()),
        );
        tokio::spawn(recorder.stop.clone().run_until_cancelled_owned(probe(
            probed,
            clock,
            Arc::clone(&recorder.shared),
        )));
        Ok(recorder)
    }

    /// Every commit seen so far, in revision order, each with the earliest time it can have
    /// been made.
    pub(super) fn commits(&self) -> Vec<Commit> {
        let mut commits = self
            .shared
            .commits
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        // Each watch delivers in order; the two resources interleave by revision.
        commits.sort_by_key(|c| c.revision);
        let probes = self
            .shared
            .probes
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        commits
            .into_iter()
            .map(|commit| match probes.before(commit.revision) {
                Some(earliest) => {
                    let earliest = earliest.min(commit.at);
                    commit.made_after(earliest)
                }
                None => commit,
            })
            .collect()
    }

    /// How many objects' commits were lost beyond recovery when a watch could not resume
    /// (see the module docs).
    pub(super) fn gaps(&self) -> u64 {
        self.shared.gaps.load(Ordering::SeqCst)
    }
}

/// Reads the revision the server has reached, every [`PROBE_INTERVAL`], until cancelled.
async fn probe(api: Api<DynamicObject>, clock: Arc<dyn Clock>, shared: Arc<Shared>) {
    let one = ListParams::default().limit(1);
    loop {
        tokio::time::sleep(PROBE_INTERVAL).await;
        let sent = clock.now();
        if let Ok(Ok(list)) = tokio::time::timeout(PROBE_TIMEOUT, api.list_metadata(&one)).await {
            shared.probed(sent, revision_of(list.metadata.resource_version.as_deref()));
        }
    }
}

/// One resource's watch.
struct Watch {
    api: Api<DynamicObject>,
    plural: &'static str,
    clock: Arc<dyn Clock>,
    shared: Arc<Shared>,
    /// The last revision seen of each object that exists.
    known: HashMap<String, u64>,
}

/// How a watch ended, when it did not end normally.
enum Ended {
    /// `410 Gone`: its revision is too old for the server.
    Gone,
    /// The request failed (the server is unreachable, or refused it).
    Failed,
}

impl Watch {
    async fn run(mut self, mut from: String) {
        loop {
            match self.watch_from(&from).await {
                Ok(last) => from = last,
                Err(Ended::Gone) => {
                    if let Some(now) = self.resume().await {
                        from = now;
                    } else {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
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
    async fn watch_from(&mut self, from: &str) -> Result<String, Ended> {
        let params = WatchParams::default().timeout(290);
        let mut events = match self.api.watch(&params, from).await {
            Ok(events) => events.boxed(),
            Err(kube::Error::Api(status)) if status.code == 410 => return Err(Ended::Gone),
            Err(_) => return Err(Ended::Failed),
        };
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
            self.seen(operation, &object);
            if let Some(commit) = self.commit(operation, &object) {
                self.shared.push(commit);
            }
            last = version;
        }
    }

    /// Keeps the last revision of each object.
    fn seen(&mut self, operation: Operation, object: &DynamicObject) {
        let Some(name) = object.metadata.name.clone() else {
            return;
        };
        if operation == Operation::Delete {
            self.known.remove(&name);
        } else {
            let revision = revision_of(object.metadata.resource_version.as_deref());
            self.known.insert(name, revision);
        }
    }

    /// The commit an object's event, or recovered state, stands for, seen now.
    fn commit(&self, operation: Operation, object: &DynamicObject) -> Option<Commit> {
        let revision = revision_of(object.metadata.resource_version.as_deref());
        let object = with_kind(serde_json::to_value(object).ok()?, self.plural);
        Some(Commit::new(
            revision,
            self.clock.now(),
            operation,
            self.plural,
            object,
        ))
    }

    /// After a `410 Gone`: recovers what changed since the last revision seen, and returns
    /// the revision to watch from (`None` when the server cannot be read yet).
    async fn resume(&mut self) -> Option<String> {
        let listed = self.api.list(&ListParams::default()).await.ok()?;
        let mut gone: Vec<String> = self.known.keys().cloned().collect();
        for object in &listed.items {
            let Some(name) = object.metadata.name.clone() else {
                continue;
            };
            gone.retain(|g| *g != name);
            let now = revision_of(object.metadata.resource_version.as_deref());
            let last = self.known.get(&name).copied();
            if last == Some(now) {
                continue;
            }
            match self.missed(object, last).await {
                Some(commits) => {
                    for commit in commits {
                        self.shared.push(commit);
                    }
                }
                None => self.shared.gap(),
            }
            self.known.insert(name, now);
        }
        // Deleted meanwhile, at a revision no list shows.
        for name in gone {
            self.known.remove(&name);
            self.shared.gap();
        }
        listed.metadata.resource_version
    }

    /// The commits of `object` after revision `last` (`None`: it did not exist then) up to its
    /// state now, newest first, read back one revision at a time; `None` when they cannot all
    /// be read.
    async fn missed(&self, object: &DynamicObject, last: Option<u64>) -> Option<Vec<Commit>> {
        let name = object.metadata.name.as_deref()?;
        let mut commits = Vec::new();
        let mut newer = object.clone();
        loop {
            let revision = revision_of(newer.metadata.resource_version.as_deref());
            // The object as it was just before `newer` was committed: etcd serves an exact
            // revision until it is compacted.
            let exactly = ListParams::default()
                .fields(&format!("metadata.name={name}"))
                .at(&revision.checked_sub(1)?.to_string())
                .matching(VersionMatch::Exact);
            let older = self.api.list(&exactly).await.ok()?.items.into_iter().next();
            let older_revision = older
                .as_ref()
                .map(|o| revision_of(o.metadata.resource_version.as_deref()));
            let operation = if older.is_some() {
                Operation::Update
            } else {
                Operation::Create
            };
            commits.push(self.commit(operation, &newer)?);
            match (older, older_revision, last) {
                // Back to the last state seen, or to before it existed: nothing else missed.
                (Some(_), Some(r), Some(last)) if r == last => return Some(commits),
                (None, _, None) => return Some(commits),
                // An older commit was missed too.
                (Some(older), Some(r), _) if last.is_none_or(|last| r > last) => newer = older,
                // Deleted and created again meanwhile: when it was deleted, no list shows.
                _ => return None,
            }
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ms: i64) -> DateTime<Utc> {
        DateTime::UNIX_EPOCH + chrono::Duration::milliseconds(ms)
    }

    #[test]
    fn a_commit_was_made_after_the_last_read_that_had_not_reached_it() {
        let mut probes = Probes::default();
        assert_eq!(probes.before(5), None);
        probes.push(t(0), 10);
        probes.push(t(100), 10);
        probes.push(t(200), 12);
        probes.push(t(300), 20);
        // Out of order (a lower revision, an earlier time): left out.
        probes.push(t(400), 15);
        probes.push(t(250), 30);
        assert_eq!(probes.before(10), None, "the first read had reached it");
        assert_eq!(probes.before(11), Some(t(100)));
        assert_eq!(probes.before(12), Some(t(100)));
        assert_eq!(probes.before(13), Some(t(200)));
        assert_eq!(probes.before(21), Some(t(300)));
        assert_eq!(probes.0.len(), 4);
    }
}
