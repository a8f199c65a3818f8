//! Object storage with etcd's rules: one global, strictly increasing revision; every write is
//! checked against the resourceVersion it names; a bounded history of events for watches.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use serde_json::{Map, Value, json};
use tokio::sync::broadcast;

use super::commits::{Actor, Commit, CommitLog, Operation};
use super::managed::{self, Managed, Provided};
use super::microtime;
use super::paging::Continue;
use super::patch::{self, JsonPatchError};
use super::resources::{Registry, ResourceType};
use super::rng::Rng;
use super::selector::{FieldSelector, LabelSelector};
use super::status::{ApiError, Cause, Named, delete_success};
use super::validation;
use crate::clock::Clock;

/// Where an object lives. Cluster-scoped objects have an empty namespace.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct ObjectKey {
    pub(crate) group: String,
    pub(crate) plural: String,
    pub(crate) namespace: String,
    pub(crate) name: String,
}

impl ObjectKey {
    fn new(rt: &ResourceType, namespace: &str, name: &str) -> Self {
        Self {
            group: rt.group.clone(),
            plural: rt.plural.clone(),
            namespace: if rt.namespaced {
                namespace.to_owned()
            } else {
                String::new()
            },
            name: name.to_owned(),
        }
    }

    fn is_of(&self, rt: &ResourceType) -> bool {
        self.group == rt.group && self.plural == rt.plural
    }
}

/// What a write did to an object, as watch events name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EventType {
    Added,
    Modified,
    Deleted,
}

/// One committed change.
#[derive(Debug)]
pub(crate) struct Event {
    pub(crate) rv: u64,
    pub(crate) kind: EventType,
    pub(crate) key: ObjectKey,
    /// The object after the change; for `Deleted`, its last state stamped with the deletion's
    /// revision.
    pub(crate) object: Value,
    /// The object before the change (`Modified` and `Deleted`).
    pub(crate) previous: Option<Value>,
}

/// `labelSelector` and `fieldSelector` of a list, watch or deletecollection.
#[derive(Debug, Clone, Default)]
pub(crate) struct Selectors {
    pub(crate) label: LabelSelector,
    pub(crate) field: FieldSelector,
}

impl Selectors {
    pub(crate) fn matches(&self, object: &Value) -> bool {
        let meta = &object["metadata"];
        let name = meta["name"].as_str().unwrap_or_default();
        let namespace = meta["namespace"].as_str().unwrap_or_default();
        self.field.matches(name, namespace) && self.label.matches(meta["labels"].as_object())
    }
}

/// The body and options of a PATCH.
#[derive(Debug, Clone)]
pub(crate) enum PatchBody {
    Merge(Value),
    Strategic(Value),
    Json(Value),
    Apply {
        config: Value,
        manager: String,
        force: bool,
    },
}

/// `preconditions` of a DELETE.
#[derive(Debug, Clone, Default)]
pub(crate) struct Preconditions {
    pub(crate) uid: Option<String>,
    pub(crate) resource_version: Option<String>,
}

#[derive(Debug, Clone)]
struct Entry {
    /// The object as stored, `metadata.managedFields` included.
    object: Value,
}

/// How a write records field ownership.
#[derive(Debug)]
enum Tracking<'a> {
    /// A create, update or non-apply patch by this field manager.
    Update(&'a str),
    /// An apply, whose ownership is already worked out.
    Applied(Managed),
}

/// A paginated list in progress: the rest of a consistent snapshot.
#[derive(Debug)]
struct Snapshot {
    rv: u64,
    /// What was listed: the resource, namespace and selectors.
    identity: String,
    /// The items by key (relative to the list's prefix), in key order.
    items: Arc<Vec<(String, Value)>>,
}

/// What a list asks for besides its resource and selectors.
#[derive(Debug, Clone, Default)]
pub(crate) struct ListQuery<'a> {
    /// Items per page (`limit`; none, or not positive: all).
    pub(crate) limit: Option<i64>,
    /// The `continue` token.
    pub(crate) token: Option<&'a str>,
    /// `resourceVersion=0`: served from the watch cache, which does not paginate.
    pub(crate) any_version: bool,
    /// The selectors as sent, which a continued list must repeat.
    pub(crate) selectors: String,
    /// Whether there is a label or field selector (no `remainingItemCount` then).
    pub(crate) filtered: bool,
}

const MAX_SNAPSHOTS: usize = 32;

/// Everything the server stores, behind one lock.
#[derive(Debug)]
pub(crate) struct Store {
    clock: Arc<dyn Clock>,
    rng: Rng,
    rv: u64,
    objects: BTreeMap<ObjectKey, Entry>,
    history: VecDeque<Arc<Event>>,
    history_limit: usize,
    /// Watches must start at or after this revision; older ones are answered 410.
    compacted: u64,
    events: broadcast::Sender<Arc<Event>>,
    snapshots: VecDeque<Snapshot>,
    pub(crate) registry: Registry,
    /// Every commit, when the server keeps a commit log.
    commits: Option<CommitLog>,
    /// Who makes the changes of the request being handled (set by the request handler while
    /// it holds the store).
    pub(crate) actor: Actor,
}

/// What a watch starts with.
#[derive(Debug)]
pub(crate) struct WatchStart {
    /// Events to send first: synthetic `ADDED`s, or the history after the requested version.
    pub(crate) replay: Vec<Arc<Event>>,
    /// Everything committed from now on.
    pub(crate) live: broadcast::Receiver<Arc<Event>>,
    /// The revision the watch starts at.
    pub(crate) rv: u64,
    /// Live events up to this revision are not sent (a watch from a revision still to come).
    pub(crate) after: u64,
}

fn meta_str<'a>(object: &'a Value, field: &str) -> Option<&'a str> {
    object["metadata"][field].as_str()
}

fn metadata_mut(object: &mut Value) -> &mut Map<String, Value> {
    if !object["metadata"].is_object() {
        object["metadata"] = json!({});
    }
    object["metadata"]
        .as_object_mut()
        .expect("metadata was made an object")
}

impl Store {
    pub(crate) fn new(clock: Arc<dyn Clock>, seed: u64, history_limit: usize) -> Self {
        let (events, _) = broadcast::channel(history_limit.max(1024));
        let mut store = Self {
            clock,
            rng: Rng::new(seed),
            rv: 0,
            objects: BTreeMap::new(),
            history: VecDeque::new(),
            history_limit: history_limit.max(1),
            compacted: 0,
            events,
            snapshots: VecDeque::new(),
            registry: Registry::default(),
            commits: None,
            actor: Actor::default(),
        };
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            store
                .ensure_namespace(ns)
                .expect("the built-in namespace names are valid");
        }
        store
    }

    pub(crate) fn resource_version(&self) -> u64 {
        self.rv
    }

    /// Keeps a log of every commit from now on: the newest `capacity` (all with `None`).
    pub(crate) fn keep_commits(&mut self, capacity: Option<usize>) {
        self.commits = Some(CommitLog::new(capacity));
    }

    /// The commit log, when one is kept.
    pub(crate) fn commits(&mut self) -> Option<&mut CommitLog> {
        self.commits.as_mut()
    }

    fn namespace_type(&mut self) -> ResourceType {
        self.registry.resolve("", "v1", "namespaces", None)
    }

    /// Creates namespace `name` unless it exists.
    pub(crate) fn ensure_namespace(&mut self, name: &str) -> Result<(), ApiError> {
        // The server itself creates it.
        self.actor = Actor::default();
        let rt = self.namespace_type();
        if self.objects.contains_key(&ObjectKey::new(&rt, "", name)) {
            return Ok(());
        }
        self.create(
            &rt,
            "",
            json!({ "metadata": { "name": name } }),
            "kube-apiserver",
            false,
        )
        .map(drop)
    }

    /// Drops the watch history: watches from any earlier revision now get 410 Expired, and
    /// so do continue tokens of lists started before.
    pub(crate) fn compact(&mut self) {
        self.history.clear();
        self.compacted = self.rv;
        self.snapshots.clear();
    }

    /// The object as a client sees it: `apiVersion` and `kind` of the version it asked for.
    pub(crate) fn present(rt: &ResourceType, object: &Value) -> Value {
        let mut out = object.clone();
        out["apiVersion"] = json!(rt.api_version());
        out["kind"] = json!(rt.kind);
        out
    }

    /// An item of a list: built-in types' items carry no `kind`/`apiVersion` (the list does).
    fn list_item(rt: &ResourceType, object: &Value) -> Value {
        let mut item = Self::present(rt, object);
        if rt.builtin
            && let Some(map) = item.as_object_mut()
        {
            map.remove("kind");
            map.remove("apiVersion");
        }
        item
    }

    fn require_namespace(&self, rt: &ResourceType, namespace: &str) -> Result<(), ApiError> {
        if !rt.namespaced {
            return Ok(());
        }
        let key = ObjectKey {
            group: String::new(),
            plural: "namespaces".into(),
            namespace: String::new(),
            name: namespace.to_owned(),
        };
        if self.objects.contains_key(&key) {
            Ok(())
        } else {
            Err(ApiError::not_found(Named::core("namespaces"), namespace))
        }
    }

    fn entry(&self, rt: &ResourceType, namespace: &str, name: &str) -> Result<&Entry, ApiError> {
        self.objects
            .get(&ObjectKey::new(rt, namespace, name))
            .ok_or_else(|| ApiError::not_found(rt.resource(), name))
    }

    pub(crate) fn get(
        &self,
        rt: &ResourceType,
        namespace: &str,
        name: &str,
    ) -> Result<Value, ApiError> {
        self.entry(rt, namespace, name)
            .map(|e| Self::present(rt, &e.object))
    }

    fn matching<'a>(
        &'a self,
        rt: &'a ResourceType,
        namespace: Option<&'a str>,
        selectors: &'a Selectors,
    ) -> impl Iterator<Item = (&'a ObjectKey, &'a Entry)> + 'a {
        self.objects.iter().filter(move |(key, entry)| {
            key.is_of(rt)
                && namespace.is_none_or(|ns| !rt.namespaced || key.namespace == ns)
                && selectors.matches(&entry.object)
        })
    }

    /// A list body; `limit` and the continue token paginate over one consistent snapshot, in
    /// the order of the objects' keys, as etcd holds them.
    pub(crate) fn list(
        &mut self,
        rt: &ResourceType,
        namespace: Option<&str>,
        selectors: &Selectors,
        query: &ListQuery<'_>,
    ) -> Result<Value, ApiError> {
        let identity = format!(
            "{}/{}/{}?{}",
            rt.group,
            rt.plural,
            namespace.unwrap_or_default(),
            query.selectors
        );
        let (rv, all, start) = if let Some(token) = query.token {
            let token = Continue::decode(token)
                .map_err(|e| ApiError::bad_request(format!("invalid continue token: {e}")))?;
            let found = u64::try_from(token.rv).ok().and_then(|rv| {
                self.snapshots
                    .iter()
                    .find(|s| s.rv == rv && s.identity == identity)
            });
            match found {
                Some(snapshot) => (snapshot.rv, Arc::clone(&snapshot.items), token.start),
                None if token.rv == -1 => {
                    let items = self.snapshot(rt, namespace, selectors, identity);
                    (self.rv, items, token.start)
                }
                None => return Err(continue_expired(&token.start)),
            }
        } else {
            let items = self.snapshot(rt, namespace, selectors, identity);
            (self.rv, items, String::new())
        };
        let rest: Vec<&(String, Value)> = all.iter().filter(|(key, _)| *key >= start).collect();
        let limit = query
            .limit
            .filter(|&l| l > 0 && !query.any_version)
            .and_then(|l| usize::try_from(l).ok())
            .unwrap_or(rest.len());
        let take = limit.min(rest.len());
        let items: Vec<Value> = rest[..take].iter().map(|(_, v)| v.clone()).collect();
        let mut metadata = json!({ "resourceVersion": rv.to_string() });
        if let Some((last, _)) = rest[..take].last().filter(|_| take < rest.len()) {
            let next = Continue {
                rv: i64::try_from(rv).unwrap_or(i64::MAX),
                start: format!("{last}\u{0}"),
            };
            metadata["continue"] = json!(next.encode());
            if !query.filtered {
                metadata["remainingItemCount"] = json!(rest.len() - take);
            }
        }
        Ok(json!({
            "kind": format!("{}List", rt.kind),
            "apiVersion": rt.api_version(),
            "metadata": metadata,
            "items": items,
        }))
    }

    /// The matching objects now, by key, kept for the pages that may follow.
    fn snapshot(
        &mut self,
        rt: &ResourceType,
        namespace: Option<&str>,
        selectors: &Selectors,
        identity: String,
    ) -> Arc<Vec<(String, Value)>> {
        let mut items: Vec<(String, Value)> = self
            .matching(rt, namespace, selectors)
            .map(|(key, e)| {
                let key = if rt.namespaced && namespace.is_none() {
                    format!("/{}/{}", key.namespace, key.name)
                } else {
                    format!("/{}", key.name)
                };
                (key, Self::list_item(rt, &e.object))
            })
            .collect();
        items.sort_by(|a, b| a.0.cmp(&b.0));
        let items = Arc::new(items);
        self.snapshots
            .retain(|s| !(s.rv == self.rv && s.identity == identity));
        self.snapshots.push_back(Snapshot {
            rv: self.rv,
            identity,
            items: Arc::clone(&items),
        });
        if self.snapshots.len() > MAX_SNAPSHOTS {
            self.snapshots.pop_front();
        }
        items
    }

    /// Stamps server-owned metadata, validates, and commits `object` at `key`, unless it equals
    /// what is stored (kube-apiserver skips such no-op writes: no new revision, no event).
    fn write(
        &mut self,
        rt: &ResourceType,
        key: ObjectKey,
        mut object: Value,
        tracking: Tracking<'_>,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        let previous = self.objects.get(&key).map(|e| e.object.clone());
        let provided = Provided::decode(object["metadata"].get("managedFields"))
            .map_err(ApiError::bad_request)?;
        object["apiVersion"] = json!(rt.api_version());
        object["kind"] = json!(rt.kind);
        {
            let meta = metadata_mut(&mut object);
            meta.remove("managedFields");
            meta.remove("selfLink");
            if rt.namespaced {
                meta.insert("namespace".into(), json!(key.namespace));
            } else {
                meta.remove("namespace");
            }
        }
        if let Some(old) = &previous {
            let meta = metadata_mut(&mut object);
            for field in ["uid", "creationTimestamp", "resourceVersion"] {
                match old["metadata"].get(field) {
                    Some(v) => meta.insert(field.into(), v.clone()),
                    None => meta.remove(field),
                };
            }
        } else {
            let uid = self.rng.uuid().to_string();
            let created = self.clock.now().format("%Y-%m-%dT%H:%M:%SZ").to_string();
            let meta = metadata_mut(&mut object);
            meta.insert("uid".into(), json!(uid));
            meta.insert("creationTimestamp".into(), json!(created));
            meta.remove("resourceVersion");
            if rt.kind == "Namespace" && object["status"]["phase"].is_null() {
                object["status"] = json!({ "phase": "Active" });
            }
        }
        normalize(&rt.kind, &mut object);
        let managed = match tracking {
            Tracking::Applied(managed) => managed,
            Tracking::Update(manager) => {
                self.track_update(rt, previous.as_ref(), &object, provided, manager)
            }
        };
        if !managed.is_empty() {
            metadata_mut(&mut object).insert("managedFields".into(), managed.encode());
        }
        let causes = validation::validate(&rt.kind, &object);
        if !causes.is_empty() {
            return Err(ApiError::invalid(rt.kind_named(), &key.name, &causes));
        }
        if dry_run {
            return Ok(Self::present(rt, &object));
        }
        if previous.as_ref() == Some(&object) {
            return Ok(Self::present(rt, &object));
        }
        self.rv += 1;
        metadata_mut(&mut object).insert("resourceVersion".into(), json!(self.rv.to_string()));
        let kind = if previous.is_some() {
            EventType::Modified
        } else {
            EventType::Added
        };
        self.objects.insert(
            key.clone(),
            Entry {
                object: object.clone(),
            },
        );
        self.publish(kind, key, object.clone(), previous);
        Ok(Self::present(rt, &object))
    }

    /// The `managedFields` after a create, update or non-apply patch by `manager`, as
    /// kube-apiserver's field manager works them out: from the entries the client sent, or
    /// else the stored ones; an object whose entries are empty (a client cleared them) stays
    /// untracked until the next apply.
    fn track_update(
        &self,
        rt: &ResourceType,
        previous: Option<&Value>,
        object: &Value,
        provided: Provided,
        manager: &str,
    ) -> Managed {
        let mut owners = match provided {
            Provided::Absent | Provided::Invalid => previous.map(Managed::of).unwrap_or_default(),
            Provided::Reset => Managed::default(),
            Provided::Entries(sent) => sent,
        };
        if owners.is_empty() && previous.is_some() {
            return owners;
        }
        let live = previous.map_or_else(|| managed::empty_object(&rt.kind), without_managed_fields);
        owners.update(
            &live,
            object,
            manager,
            &rt.api_version(),
            &rt.kind,
            self.clock.now(),
        );
        owners
    }

    fn publish(&mut self, kind: EventType, key: ObjectKey, object: Value, previous: Option<Value>) {
        if let Some(log) = self.commits.as_mut() {
            log.push(Commit {
                revision: self.rv,
                at: self.clock.now(),
                operation: match kind {
                    EventType::Added => Operation::Create,
                    EventType::Modified => Operation::Update,
                    EventType::Deleted => Operation::Delete,
                },
                resource: key.plural.clone(),
                namespace: key.namespace.clone(),
                name: key.name.clone(),
                object: object.clone(),
                token: self.actor.token.clone(),
                user: self.actor.user.clone(),
                earliest: None,
            });
        }
        let event = Arc::new(Event {
            rv: self.rv,
            kind,
            key,
            object,
            previous,
        });
        self.history.push_back(Arc::clone(&event));
        while self.history.len() > self.history_limit {
            if let Some(dropped) = self.history.pop_front() {
                self.compacted = dropped.rv;
            }
        }
        // No receivers is fine: nobody watches.
        let _ = self.events.send(event);
    }

    pub(crate) fn create(
        &mut self,
        rt: &ResourceType,
        namespace: &str,
        mut object: Value,
        manager: &str,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        if !object.is_object() {
            return Err(ApiError::bad_request(
                "the body of a create must be an object",
            ));
        }
        self.require_namespace(rt, namespace)?;
        check_namespace_matches(rt, namespace, &object)?;
        if meta_str(&object, "resourceVersion").is_some_and(|rv| !rv.is_empty()) {
            return Err(ApiError::bad_request(
                "resourceVersion should not be set on objects to be created",
            ));
        }
        let mut name = meta_str(&object, "name").unwrap_or_default().to_owned();
        if name.is_empty()
            && let Some(prefix) = meta_str(&object, "generateName").filter(|p| !p.is_empty())
        {
            name = format!("{prefix}{}", self.rng.name_suffix());
            metadata_mut(&mut object).insert("name".into(), json!(name));
        }
        let key = ObjectKey::new(rt, namespace, &name);
        if !name.is_empty() && self.objects.contains_key(&key) {
            return Err(ApiError::already_exists(rt.resource(), &name));
        }
        self.write(rt, key, object, Tracking::Update(manager), dry_run)
    }

    pub(crate) fn update(
        &mut self,
        rt: &ResourceType,
        namespace: &str,
        name: &str,
        object: Value,
        manager: &str,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        if !object.is_object() {
            return Err(ApiError::bad_request(
                "the body of an update must be an object",
            ));
        }
        check_namespace_matches(rt, namespace, &object)?;
        let body_name = meta_str(&object, "name").unwrap_or_default();
        if body_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        self.require_namespace(rt, namespace)?;
        let current = self.entry(rt, namespace, name)?.clone();
        check_preconditions(rt, name, &current.object, &object)?;
        let key = ObjectKey::new(rt, namespace, name);
        self.write(rt, key, object, Tracking::Update(manager), dry_run)
    }

    /// A patch; `manager` is the field manager of a non-apply patch (an apply names its own).
    pub(crate) fn patch(
        &mut self,
        rt: &ResourceType,
        namespace: &str,
        name: &str,
        body: &PatchBody,
        manager: &str,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        self.require_namespace(rt, namespace)?;
        let key = ObjectKey::new(rt, namespace, name);
        let current = self.objects.get(&key).cloned();
        if let PatchBody::Apply {
            config,
            manager,
            force,
        } = body
        {
            return self.apply(rt, key, current.as_ref(), config, manager, *force, dry_run);
        }
        let current = current.ok_or_else(|| ApiError::not_found(rt.resource(), name))?;
        let mut patched = current.object.clone();
        match body {
            PatchBody::Merge(p) => {
                require_object(p)?;
                patch::merge_patch(&mut patched, p);
            }
            PatchBody::Strategic(p) => {
                require_object(p)?;
                patch::strategic_merge_patch(&mut patched, p).map_err(ApiError::bad_request)?;
            }
            PatchBody::Json(ops) => {
                patched = patch::json_patch(&patched, ops).map_err(|e| match e {
                    JsonPatchError::Malformed(m) => ApiError::bad_request(m),
                    // The real server drops the library's reason and answers with this.
                    JsonPatchError::Failed(_) => {
                        let mut err = ApiError::new(
                            422,
                            "Invalid",
                            "the server rejected our request due to an error in our request",
                        );
                        err.details = Some(json!({}));
                        err
                    }
                })?;
            }
            PatchBody::Apply { .. } => unreachable!("handled above"),
        }
        if !patched.is_object() {
            return Err(ApiError::bad_request("the patched object is not an object"));
        }
        if let Err(e) = microtime::normalize(&rt.kind, &mut patched) {
            // The patched object does not decode: kube-apiserver quotes it whole (in Go's
            // field order, where this has its keys sorted).
            let quoted = serde_json::to_string(&patched).unwrap_or_default();
            let cause = Cause {
                reason: "FieldValueInvalid",
                message: format!("Invalid value: {}: {e}", microtime::quote(&quoted)),
                field: "patch".to_owned(),
            };
            return Err(ApiError::invalid(Named::core(""), "", &[cause]));
        }
        // A resourceVersion that the patch itself sets is a precondition, as for an update.
        check_preconditions(rt, name, &current.object, &patched)?;
        if meta_str(&patched, "name") != Some(name) {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({}) does not match the name on the URL ({name})",
                meta_str(&patched, "name").unwrap_or_default()
            )));
        }
        self.write(rt, key, patched, Tracking::Update(manager), dry_run)
    }

    /// Server-side apply of `config` by `manager` to the object at `key` (`current`, if any).
    #[allow(clippy::too_many_arguments)] // The one private step of patch() that apply needs.
    fn apply(
        &mut self,
        rt: &ResourceType,
        key: ObjectKey,
        current: Option<&Entry>,
        config: &Value,
        manager: &str,
        force: bool,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        let config = &apply_config(rt, &key, current, config)?;
        let live = current.map_or_else(
            || managed::empty_object(&rt.kind),
            |e| without_managed_fields(&e.object),
        );
        let mut owners = current.map(|e| Managed::of(&e.object)).unwrap_or_default();
        let mut applied = owners
            .apply(
                &live,
                current.is_some(),
                config,
                manager,
                &rt.api_version(),
                force,
                &rt.kind,
                self.clock.now(),
            )
            .map_err(|conflicts| apply_conflict(&conflicts))?;
        metadata_mut(&mut applied).insert("name".into(), json!(key.name));
        if current.is_none() {
            metadata_mut(&mut applied).remove("resourceVersion");
        }
        if manager == managed::LAST_APPLIED_UPGRADER
            && let Some(annotation) = applied["metadata"]["annotations"]
                .get_mut(managed::LAST_APPLIED_ANNOTATION)
                .filter(|a| a.as_str().is_some_and(|a| !a.is_empty()))
        {
            *annotation = json!(managed::last_applied(config));
        }
        self.write(rt, key, applied, Tracking::Applied(owners), dry_run)
    }

    pub(crate) fn delete(
        &mut self,
        rt: &ResourceType,
        namespace: &str,
        name: &str,
        preconditions: &Preconditions,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        let current = self.entry(rt, namespace, name)?;
        let uid = meta_str(&current.object, "uid")
            .unwrap_or_default()
            .to_owned();
        // kube-apiserver checks a delete's preconditions itself (rest.BeforeDelete), and names
        // the kind where a resource would be.
        let failed = |why: String| ApiError::conflict(rt.kind_named(), name, &why);
        if let Some(want) = &preconditions.uid
            && *want != uid
        {
            return Err(failed(format!(
                "the UID in the precondition ({want}) does not match the UID in record ({uid}). \
                 The object might have been deleted and then recreated"
            )));
        }
        let have = meta_str(&current.object, "resourceVersion").unwrap_or_default();
        if let Some(want) = &preconditions.resource_version
            && want != have
        {
            return Err(failed(format!(
                "the ResourceVersion in the precondition ({want}) does not match the \
                 ResourceVersion in record ({have}). The object might have been modified"
            )));
        }
        if !dry_run {
            let key = ObjectKey::new(rt, namespace, name);
            self.remove(&key);
            if rt.kind == "Namespace" {
                let inside: Vec<ObjectKey> = self
                    .objects
                    .keys()
                    .filter(|k| k.namespace == name)
                    .cloned()
                    .collect();
                for key in &inside {
                    self.remove(key);
                }
            }
        }
        Ok(delete_success(rt.resource(), name, &uid))
    }

    fn remove(&mut self, key: &ObjectKey) {
        if let Some(entry) = self.objects.remove(key) {
            self.rv += 1;
            let mut last = entry.object.clone();
            metadata_mut(&mut last).insert("resourceVersion".into(), json!(self.rv.to_string()));
            self.publish(EventType::Deleted, key.clone(), last, Some(entry.object));
        }
    }

    pub(crate) fn delete_collection(
        &mut self,
        rt: &ResourceType,
        namespace: Option<&str>,
        selectors: &Selectors,
        dry_run: bool,
    ) -> Value {
        let doomed: Vec<(ObjectKey, Value)> = self
            .matching(rt, namespace, selectors)
            .map(|(k, e)| (k.clone(), Self::list_item(rt, &e.object)))
            .collect();
        if !dry_run {
            for (key, _) in &doomed {
                self.remove(key);
            }
        }
        json!({
            "kind": format!("{}List", rt.kind),
            "apiVersion": rt.api_version(),
            "metadata": { "resourceVersion": self.rv.to_string() },
            "items": doomed.into_iter().map(|(_, v)| v).collect::<Vec<_>>(),
        })
    }

    /// Starts a watch: `resource_version` `None` or `"0"` replays the current objects as
    /// `ADDED`; a number replays the history after it, or fails with 410 Expired when that
    /// part of the history is gone.
    pub(crate) fn watch(
        &self,
        rt: &ResourceType,
        namespace: Option<&str>,
        resource_version: Option<&str>,
    ) -> Result<WatchStart, ApiError> {
        let live = self.events.subscribe();
        let replay = match resource_version.filter(|rv| !rv.is_empty() && *rv != "0") {
            None => self
                .matching(rt, namespace, &Selectors::default())
                .map(|(key, entry)| {
                    Arc::new(Event {
                        rv: self.rv,
                        kind: EventType::Added,
                        key: key.clone(),
                        object: entry.object.clone(),
                        previous: None,
                    })
                })
                .collect(),
            Some(rv) => {
                let from: u64 = rv.parse().map_err(|_| {
                    ApiError::bad_request(format!("invalid resource version {rv:?}"))
                })?;
                if from < self.compacted {
                    return Err(ApiError::expired(format!(
                        "too old resource version: {from} ({})",
                        self.compacted
                    )));
                }
                if from > self.rv {
                    // kube-apiserver (1.37) keeps such a watch open and sends what comes after
                    // that revision, once there is any.
                    return Ok(WatchStart {
                        replay: Vec::new(),
                        live,
                        rv: self.rv,
                        after: from,
                    });
                }
                self.history
                    .iter()
                    .filter(|e| e.rv > from)
                    .cloned()
                    .collect()
            }
        };
        Ok(WatchStart {
            replay,
            live,
            rv: self.rv,
            after: 0,
        })
    }
}

/// The configuration of a server-side apply to the object at `key` (`current`, if any), its
/// `MicroTime`s normalized, once it passes kube-apiserver's checks: name, namespace, no
/// `managedFields`, the served apiVersion, and the preconditions it sets.
fn apply_config(
    rt: &ResourceType,
    key: &ObjectKey,
    current: Option<&Entry>,
    config: &Value,
) -> Result<Value, ApiError> {
    let config = normalized_apply_config(rt, key, config)?;
    if meta_str(&config, "name").is_some_and(|n| n != key.name) {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({}) does not match the name on the URL ({})",
            meta_str(&config, "name").unwrap_or_default(),
            key.name
        )));
    }
    check_namespace_matches(rt, &key.namespace, &config)?;
    if config["metadata"]
        .get("managedFields")
        .is_some_and(|m| !m.is_null())
    {
        return Err(ApiError::bad_request("metadata.managedFields must be nil"));
    }
    let version = config["apiVersion"].as_str().unwrap_or_default();
    if version != rt.api_version() {
        // The decoder knows no such version of the kind (this server serves one).
        let (group, version) = version.rsplit_once('/').unwrap_or(("", version));
        let kind = config["kind"].as_str().unwrap_or(&rt.kind);
        return Err(ApiError::bad_request(format!(
            "invalid object type: {group}/{version}, Kind={kind}"
        )));
    }
    if let Some(current) = current {
        check_preconditions(rt, &key.name, &current.object, &config)?;
    } else if meta_str(&config, "resourceVersion").is_some_and(|rv| !rv.is_empty()) {
        return Err(ApiError::not_found(rt.resource(), &key.name));
    }
    Ok(config)
}

/// An apply configuration (an object) with its `MicroTime`s as kube-apiserver stores them.
fn normalized_apply_config(
    rt: &ResourceType,
    key: &ObjectKey,
    config: &Value,
) -> Result<Value, ApiError> {
    require_object(config)?;
    let mut normalized = config.clone();
    if let Err(e) = microtime::normalize(&rt.kind, &mut normalized) {
        // kube-apiserver finds it only when it converts the merged object: a 500.
        let gvk = format!("{}, Kind={}", rt.api_version(), rt.kind);
        return Err(ApiError::new(
            500,
            "",
            format!(
                "failed to convert new object ({}/{}; {gvk}) to proper version: unable to \
                 convert unstructured object to {gvk}: {e}",
                meta_str(config, "namespace").unwrap_or_default(),
                meta_str(config, "name").unwrap_or(&key.name),
            ),
        ));
    }
    Ok(normalized)
}

/// The object without its `metadata.managedFields`.
fn without_managed_fields(object: &Value) -> Value {
    let mut object = object.clone();
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("managedFields");
    }
    object
}

/// Drops empty maps that the real server does not keep (`omitempty` fields and protobuf
/// storage): `data: {}` stores the same object as no `data`, so writing it is a no-op. A
/// Lease always has a `spec` (a Go struct, never omitted).
fn normalize(kind: &str, object: &mut Value) {
    fn drop_if_empty(map: &mut Map<String, Value>, key: &str) {
        if map
            .get(key)
            .is_some_and(|v| v.is_null() || v.as_object().is_some_and(Map::is_empty))
        {
            map.remove(key);
        }
    }
    if let Some(map) = object.as_object_mut() {
        drop_if_empty(map, "data");
        drop_if_empty(map, "binaryData");
    }
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        drop_if_empty(meta, "labels");
        drop_if_empty(meta, "annotations");
    }
    if kind == "Lease"
        && let Some(map) = object.as_object_mut()
        && map.get("spec").is_none_or(Value::is_null)
    {
        map.insert("spec".into(), json!({}));
    }
}

fn require_object(value: &Value) -> Result<(), ApiError> {
    if value.is_object() {
        Ok(())
    } else {
        Err(ApiError::bad_request("the patch must be a JSON object"))
    }
}

fn check_namespace_matches(
    rt: &ResourceType,
    namespace: &str,
    object: &Value,
) -> Result<(), ApiError> {
    match meta_str(object, "namespace") {
        Some(ns) if rt.namespaced && !ns.is_empty() && ns != namespace => {
            Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ))
        }
        _ => Ok(()),
    }
}

/// The optimistic-concurrency check of an update: a resourceVersion (and uid) in the new
/// object must equal the stored one; none means an unconditional write.
fn check_preconditions(
    rt: &ResourceType,
    name: &str,
    current: &Value,
    new: &Value,
) -> Result<(), ApiError> {
    if let Some(want) = meta_str(new, "resourceVersion").filter(|rv| !rv.is_empty())
        && Some(want) != meta_str(current, "resourceVersion")
    {
        return Err(ApiError::conflict_modified(rt.resource(), name));
    }
    let have = meta_str(current, "uid").unwrap_or_default();
    if let Some(want) = meta_str(new, "uid").filter(|uid| !uid.is_empty())
        && want != have
    {
        return Err(ApiError::conflict(
            rt.resource(),
            name,
            &format!(
                "Precondition failed: UID in precondition: {want}, UID in object meta: {have}"
            ),
        ));
    }
    Ok(())
}

fn apply_conflict(conflicts: &[managed::Conflict]) -> ApiError {
    let message = match conflicts {
        [one] => format!(
            "Apply failed with 1 conflict: conflict with {}: {}",
            one.manager, one.field
        ),
        many => {
            let mut by_manager: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
            for c in many {
                by_manager.entry(&c.manager).or_default().push(&c.field);
            }
            let parts: Vec<String> = by_manager
                .into_iter()
                .map(|(manager, fields)| {
                    format!("conflicts with {manager}:\n- {}", fields.join("\n- "))
                })
                .collect();
            format!(
                "Apply failed with {} conflicts: {}",
                many.len(),
                parts.join("\n")
            )
        }
    };
    let mut err = ApiError::new(409, "Conflict", message);
    err.details = Some(json!({
        "causes": conflicts.iter().map(|c| json!({
            "reason": "FieldManagerConflict",
            "message": format!("conflict with {}", c.manager),
            "field": c.field,
        })).collect::<Vec<_>>(),
    }));
    err
}

/// `410 Gone` for a continue token whose snapshot is gone, with a token that lists the rest as
/// it is now (kube-apiserver's `inconsistentContinue`).
fn continue_expired(start: &str) -> ApiError {
    let mut err = ApiError::expired(
        "The provided continue parameter is too old to display a consistent list result. You \
         can start a new list without the continue parameter, or use the continue token in this \
         response to retrieve the remainder of the results. Continuing with the provided token \
         results in an inconsistent list - objects that were created, modified, or deleted \
         between the time the first chunk was returned and now may show up in the list.",
    );
    let token = Continue {
        rv: -1,
        start: start.to_owned(),
    };
    err.metadata = Some(Box::new(json!({ "continue": token.encode() })));
    err
}
