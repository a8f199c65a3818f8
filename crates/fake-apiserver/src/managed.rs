//! Field ownership as kube-apiserver tracks it in `metadata.managedFields`.
//!
//! The rules are those of structured-merge-diff and the apiserver's field manager
//! (`k8s.io/apimachinery/pkg/util/managedfields`):
//!
//! - every write records who set what. An update (create, update, or a merge, JSON or
//!   strategic patch) gives its manager the fields it adds or changes, taking them from anyone
//!   who owned them before (operation `Update`, one entry per manager and apiVersion);
//! - a field that any write removes loses all its owners;
//! - an apply (operation `Apply`, one entry per manager) owns exactly the fields of its
//!   configuration. Changing a field that another manager owns is a conflict unless forced,
//!   which takes the field; applying the value a field already has shares it. A field the
//!   manager applied before and leaves out now is removed, unless someone else owns it;
//! - an object whose `managedFields` are empty is not tracked by updates (a client cleared
//!   them) until the next apply, which first gives the fields already there to
//!   `before-first-apply`; at most ten update entries are kept, the oldest are merged into
//!   `ancient-changes`.
//!
//! Without schemas, objects are maps of fields and lists are atomic, except the lists of
//! `metadata` that are merged by key: `finalizers` (a set) and `ownerReferences` (by `uid`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Deserialize;
use serde_json::{Map, Value, json};

/// One step of a field path, as structured-merge-diff names it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Element {
    /// `f:name`: a field of an object.
    Field(String),
    /// `k:{"uid":"…"}`: an item of a list merged by key: key names and their JSON values.
    Key(Vec<(String, String)>),
    /// `v:"…"`: an item of a list of unique scalars, by its JSON.
    Value(String),
    /// `i:0`: an item of a list by position.
    Index(usize),
}

/// A path from the object's root to one field or list item.
pub(crate) type Path = Vec<Element>;

/// A set of paths: what one manager owns.
pub(crate) type FieldSet = BTreeSet<Path>;

fn field(name: &str) -> Element {
    Element::Field(name.to_owned())
}

/// `.data.key`, `.metadata.ownerReferences[uid="…"]`: how conflicts name a field.
pub(crate) struct Display<'a>(pub(crate) &'a [Element]);

impl fmt::Display for Display<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for element in self.0 {
            match element {
                Element::Field(name) => write!(f, ".{name}")?,
                Element::Key(keys) => {
                    let keys: Vec<String> = keys.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    write!(f, "[{}]", keys.join(","))?;
                }
                Element::Value(value) => write!(f, "[={value}]")?,
                Element::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

/// How a list merges: whole, or item by item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ListType {
    Atomic,
    /// Unique scalars (`x-kubernetes-list-type: set`).
    Set,
    /// Objects identified by these fields (`x-kubernetes-list-type: map`).
    Map(&'static [&'static str]),
}

fn list_type(path: &[Element]) -> ListType {
    match path {
        [Element::Field(meta), Element::Field(list)] if meta == "metadata" => match list.as_str() {
            "finalizers" => ListType::Set,
            "ownerReferences" => ListType::Map(&["uid"]),
            _ => ListType::Atomic,
        },
        _ => ListType::Atomic,
    }
}

/// The path element of a list item (by position when it lacks its key).
fn item_element(list: ListType, index: usize, item: &Value) -> Element {
    match list {
        ListType::Set if !item.is_object() && !item.is_array() => Element::Value(item.to_string()),
        ListType::Map(keys) => {
            let fields: Option<Vec<(String, String)>> = keys
                .iter()
                .map(|k| Some(((*k).to_owned(), item.get(*k)?.to_string())))
                .collect();
            fields.map_or(Element::Index(index), Element::Key)
        }
        _ => Element::Index(index),
    }
}

/// The items of a granular list by path element, in order; repeated items count once.
fn items(list: ListType, values: &[Value]) -> Vec<(Element, &Value)> {
    let mut seen = BTreeSet::new();
    values
        .iter()
        .enumerate()
        .map(|(i, v)| (item_element(list, i, v), v))
        .filter(|(e, _)| seen.insert(e.clone()))
        .collect()
}

/// Fields no manager owns: the server sets them (`StripMetaManager`).
fn stripped(path: &[Element]) -> bool {
    let names: Vec<&str> = path
        .iter()
        .map(|e| match e {
            Element::Field(name) => name.as_str(),
            _ => "",
        })
        .collect();
    matches!(
        names.as_slice(),
        ["apiVersion" | "kind" | "metadata"]
            | [
                "metadata",
                "name"
                    | "namespace"
                    | "creationTimestamp"
                    | "selfLink"
                    | "uid"
                    | "clusterName"
                    | "generation"
                    | "managedFields"
                    | "resourceVersion"
            ]
    )
}

/// What a kind's strategy resets on writes to the main resource: a Namespace's status.
fn reset(kind: &str, path: &[Element]) -> bool {
    kind == "Namespace" && path.first() == Some(&field("status"))
}

fn tracked(kind: &str, path: &[Element]) -> bool {
    !stripped(path) && !reset(kind, path)
}

/// The fields an apply configuration sets (structured-merge-diff's `ToFieldSet`): leaves,
/// empty objects, `null`s, atomic lists, and the items of granular lists.
fn field_set(value: &Value) -> FieldSet {
    fn walk(value: &Value, path: &mut Path, out: &mut FieldSet) {
        match value {
            Value::Object(map) => {
                for (key, child) in map {
                    path.push(field(key));
                    walk(child, path, out);
                    if child.is_null() || child.as_object().is_some_and(Map::is_empty) {
                        out.insert(path.clone());
                    }
                    path.pop();
                }
            }
            Value::Array(values) => match list_type(path) {
                ListType::Atomic => {
                    out.insert(path.clone());
                }
                list => {
                    for (element, item) in items(list, values) {
                        path.push(element);
                        walk(item, path, out);
                        out.insert(path.clone());
                        path.pop();
                    }
                }
            },
            Value::Null => {}
            _ => {
                if !path.is_empty() {
                    out.insert(path.clone());
                }
            }
        }
    }
    let mut out = FieldSet::new();
    walk(value, &mut Vec::new(), &mut out);
    out
}

/// What changed between two versions of an object (structured-merge-diff's `Compare`).
#[derive(Debug, Default, PartialEq, Eq)]
struct Comparison {
    added: FieldSet,
    modified: FieldSet,
    removed: FieldSet,
}

impl Comparison {
    fn of(live: &Value, new: &Value, kind: &str) -> Self {
        let mut comparison = Self::default();
        comparison.node(Some(live), Some(new), &mut Vec::new());
        for set in [
            &mut comparison.added,
            &mut comparison.modified,
            &mut comparison.removed,
        ] {
            set.retain(|p| !p.is_empty() && tracked(kind, p));
        }
        comparison
    }

    /// Added or modified: what a write sets.
    fn set(&self) -> FieldSet {
        self.added.union(&self.modified).cloned().collect()
    }

    fn leaf(&mut self, lhs: Option<&Value>, rhs: Option<&Value>, path: &Path) {
        match (lhs, rhs) {
            (None, Some(_)) => self.added.insert(path.clone()),
            (Some(_), None) => self.removed.insert(path.clone()),
            (Some(l), Some(r)) if l != r => self.modified.insert(path.clone()),
            _ => false,
        };
    }

    fn node(&mut self, lhs: Option<&Value>, rhs: Option<&Value>, path: &mut Path) {
        let shape = |v: Option<&Value>| match v {
            Some(Value::Object(_)) => Shape::Map,
            Some(Value::Array(_)) if list_type(path) != ListType::Atomic => Shape::List,
            Some(Value::Null) | None => Shape::Nothing,
            Some(_) => Shape::Leaf,
        };
        let (left, right) = (shape(lhs), shape(rhs));
        let container = match (left, right) {
            (Shape::Map | Shape::Nothing, Shape::Map | Shape::Nothing)
                if left == Shape::Map || right == Shape::Map =>
            {
                Some(Shape::Map)
            }
            (Shape::List | Shape::Nothing, Shape::List | Shape::Nothing)
                if left == Shape::List || right == Shape::List =>
            {
                Some(Shape::List)
            }
            _ => None,
        };
        let Some(shape) = container else {
            // Different shapes (a map replaced by a string): what the container held is gone
            // or new, and the field itself changed.
            if matches!(left, Shape::Map | Shape::List) {
                self.children(left, lhs, None, path);
            }
            if matches!(right, Shape::Map | Shape::List) {
                self.children(right, None, rhs, path);
            }
            self.leaf(lhs, rhs, path);
            return;
        };
        let empty = |v: Option<&Value>| match v {
            Some(Value::Object(m)) => m.is_empty(),
            Some(Value::Array(a)) => a.is_empty(),
            _ => true,
        };
        if empty(lhs) && empty(rhs) {
            // Both empty: a leaf, which keeps `{}` apart from absent.
            self.leaf(lhs, rhs, path);
            return;
        }
        self.children(shape, lhs, rhs, path);
        if lhs.is_none() {
            self.added.insert(path.clone());
        } else if rhs.is_none() {
            self.removed.insert(path.clone());
        }
    }

    fn children(
        &mut self,
        shape: Shape,
        lhs: Option<&Value>,
        rhs: Option<&Value>,
        path: &mut Path,
    ) {
        match shape {
            Shape::Map => {
                let empty = Map::new();
                let l = lhs.and_then(Value::as_object).unwrap_or(&empty);
                let r = rhs.and_then(Value::as_object).unwrap_or(&empty);
                let keys: BTreeSet<&String> = l.keys().chain(r.keys()).collect();
                for key in keys {
                    path.push(field(key));
                    self.node(l.get(key), r.get(key), path);
                    path.pop();
                }
            }
            Shape::List => {
                let list = list_type(path);
                let l = items(
                    list,
                    lhs.and_then(Value::as_array).map_or(&[], Vec::as_slice),
                );
                let r = items(
                    list,
                    rhs.and_then(Value::as_array).map_or(&[], Vec::as_slice),
                );
                let mut elements: Vec<&Element> = l.iter().map(|(e, _)| e).collect();
                elements.extend(
                    r.iter()
                        .map(|(e, _)| e)
                        .filter(|e| !l.iter().any(|(x, _)| x == *e)),
                );
                for element in elements {
                    let (lv, rv) = (find_item(&l, element), find_item(&r, element));
                    path.push(element.clone());
                    self.node(lv, rv, path);
                    path.pop();
                }
            }
            Shape::Leaf | Shape::Nothing => {}
        }
    }
}

fn find_item<'a>(items: &[(Element, &'a Value)], element: &Element) -> Option<&'a Value> {
    items.iter().find(|(e, _)| e == element).map(|(_, v)| *v)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Map,
    List,
    Leaf,
    Nothing,
}

/// `live` with `config` merged in (structured-merge-diff's `Merge`): objects merge field by
/// field, granular lists item by item, anything else is replaced; `null` is a value here.
fn merge(live: &Value, config: &Value, path: &mut Path) -> Value {
    match (live, config) {
        (Value::Object(l), Value::Object(c)) => {
            let mut out = l.clone();
            for (key, value) in c {
                path.push(field(key));
                let merged = match l.get(key) {
                    Some(existing) => merge(existing, value, path),
                    None => value.clone(),
                };
                path.pop();
                out.insert(key.clone(), merged);
            }
            Value::Object(out)
        }
        (Value::Array(l), Value::Array(c)) if list_type(path) != ListType::Atomic => {
            let list = list_type(path);
            let theirs = items(list, c);
            let mut out = Vec::new();
            let mut used = BTreeSet::new();
            for (element, item) in items(list, l) {
                match theirs.iter().find(|(e, _)| *e == element) {
                    Some((_, applied)) => {
                        path.push(element.clone());
                        out.push(merge(item, applied, path));
                        path.pop();
                        used.insert(element);
                    }
                    None => out.push(item.clone()),
                }
            }
            out.extend(
                theirs
                    .iter()
                    .filter(|(e, _)| !used.contains(e))
                    .map(|(_, v)| (*v).clone()),
            );
            Value::Array(out)
        }
        (_, config) => config.clone(),
    }
}

/// Removes the field or list item at `path`, if it is there.
fn remove(value: &mut Value, path: &[Element]) {
    let Some((target, parents)) = path.split_last() else {
        return;
    };
    let mut current = value;
    for (depth, element) in parents.iter().enumerate() {
        let next = match (current, element) {
            (Value::Object(map), Element::Field(name)) => map.get_mut(name),
            (Value::Array(values), element) => {
                let shape = list_type(&path[..depth]);
                values
                    .iter_mut()
                    .enumerate()
                    .find(|(i, v)| item_element(shape, *i, v) == *element)
                    .map(|(_, v)| v)
            }
            _ => None,
        };
        match next {
            Some(next) => current = next,
            None => return,
        }
    }
    match (current, target) {
        (Value::Object(map), Element::Field(name)) => {
            map.remove(name);
        }
        (Value::Array(values), element) => {
            let shape = list_type(parents);
            let mut index = 0;
            values.retain(|v| {
                let keep = item_element(shape, index, v) != *element;
                index += 1;
                keep
            });
        }
        _ => {}
    }
}

/// Drops the fields that an apply configuration set to `null`: typed objects cannot hold them.
fn drop_nulls(object: &mut Value, config: &Value) {
    if let (Value::Object(target), Value::Object(config)) = (object, config) {
        for (key, value) in config {
            if value.is_null() {
                target.remove(key);
            } else if let Some(inner) = target.get_mut(key) {
                drop_nulls(inner, value);
            }
        }
    }
}

/// `Apply` or `Update`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Operation {
    Apply,
    Update,
}

impl Operation {
    fn as_str(self) -> &'static str {
        match self {
            Self::Apply => "Apply",
            Self::Update => "Update",
        }
    }
}

/// Who an entry belongs to: appliers by name, updaters by name and apiVersion.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct ManagerId {
    manager: String,
    operation: Operation,
    /// Empty for appliers.
    api_version: String,
}

impl ManagerId {
    fn apply(manager: &str) -> Self {
        Self {
            manager: manager.to_owned(),
            operation: Operation::Apply,
            api_version: String::new(),
        }
    }

    fn update(manager: &str, api_version: &str) -> Self {
        Self {
            manager: manager.to_owned(),
            operation: Operation::Update,
            api_version: api_version.to_owned(),
        }
    }

    /// `"alice"`, or `"kubectl-edit" using v1`: how conflicts name a manager.
    fn describe(&self) -> String {
        match self.operation {
            Operation::Apply => format!("{:?}", self.manager),
            Operation::Update => format!("{:?} using {}", self.manager, self.api_version),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    api_version: String,
    /// When the manager last changed the object; `None` for an applier that never did.
    time: Option<DateTime<Utc>>,
    fields: FieldSet,
}

/// A field another manager owns that an apply would change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Conflict {
    /// The manager, quoted as kube-apiserver prints it.
    pub(crate) manager: String,
    /// The field, `.data.key`.
    pub(crate) field: String,
}

/// A client's `metadata.managedFields`, decoded.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Provided {
    /// Not sent (or `null`): the stored entries stay.
    Absent,
    /// `[]` or `[{}]`: the client clears them.
    Reset,
    /// Entries that replace the stored ones.
    Entries(Managed),
    /// Entries kube-apiserver cannot decode: ignored, the stored ones stay.
    Invalid,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireEntry {
    manager: Option<String>,
    operation: Option<String>,
    api_version: Option<String>,
    time: Option<String>,
    fields_type: Option<String>,
    #[serde(rename = "fieldsV1")]
    fields_v1: Option<Value>,
    subresource: Option<String>,
}

impl WireEntry {
    fn is_empty(&self) -> bool {
        let blank = |s: &Option<String>| s.as_deref().is_none_or(str::is_empty);
        blank(&self.manager)
            && blank(&self.operation)
            && blank(&self.api_version)
            && blank(&self.time)
            && blank(&self.fields_type)
            && blank(&self.subresource)
            && self.fields_v1.is_none()
    }
}

impl Provided {
    /// Decodes what a write carries in `metadata.managedFields`.
    ///
    /// # Errors
    ///
    /// A list that is not a list of entries, as kube-apiserver's decoder refuses it (400).
    pub(crate) fn decode(value: Option<&Value>) -> Result<Self, String> {
        let list = match value {
            None | Some(Value::Null) => return Ok(Self::Absent),
            Some(list) => Vec::<WireEntry>::deserialize(list).map_err(|e| {
                format!("metadata.managedFields: cannot decode the managed fields: {e}")
            })?,
        };
        for entry in &list {
            if let Some(time) = &entry.time
                && DateTime::parse_from_rfc3339(time).is_err()
            {
                return Err(format!(
                    "metadata.managedFields: invalid time {time:?}: want RFC 3339"
                ));
            }
        }
        match list.as_slice() {
            [] => Ok(Self::Reset),
            [only] if only.is_empty() => Ok(Self::Reset),
            entries => Ok(Managed::from_wire(entries).map_or(Self::Invalid, Self::Entries)),
        }
    }
}

/// The `managedFields` of one object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Managed {
    entries: BTreeMap<ManagerId, Entry>,
}

/// kube-apiserver keeps at most this many update entries (`DefaultMaxUpdateManagers`).
const MAX_UPDATE_MANAGERS: usize = 10;

impl Managed {
    /// The entries of a stored object (which the server wrote, so they decode).
    pub(crate) fn of(object: &Value) -> Self {
        match Provided::decode(object["metadata"].get("managedFields")) {
            Ok(Provided::Entries(managed)) => managed,
            _ => Self::default(),
        }
    }

    fn from_wire(list: &[WireEntry]) -> Option<Self> {
        let mut entries = BTreeMap::new();
        for wire in list {
            let operation = match wire.operation.as_deref() {
                Some("Apply") => Operation::Apply,
                Some("Update") => Operation::Update,
                _ => return None,
            };
            let api_version = wire.api_version.clone().filter(|v| !v.is_empty())?;
            if wire.fields_type.as_deref() != Some("FieldsV1") {
                return None;
            }
            let fields = match &wire.fields_v1 {
                None | Some(Value::Null) => FieldSet::new(),
                Some(encoded) => decode_fields(encoded)?,
            };
            let manager = wire.manager.clone().unwrap_or_default();
            let id = match operation {
                Operation::Apply => ManagerId::apply(&manager),
                Operation::Update => ManagerId::update(&manager, &api_version),
            };
            let time = wire
                .time
                .as_deref()
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&Utc));
            entries.insert(
                id,
                Entry {
                    api_version,
                    time,
                    fields,
                },
            );
        }
        Some(Self { entries })
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The list kube-apiserver shows, in its order: appliers first, then by time, manager and
    /// apiVersion.
    pub(crate) fn encode(&self) -> Value {
        let mut entries: Vec<(&ManagerId, &Entry)> = self.entries.iter().collect();
        entries.sort_by_key(|(id, entry)| {
            (
                id.operation,
                entry.time.map_or(0, |t| t.timestamp()),
                &id.manager,
                &entry.api_version,
            )
        });
        Value::Array(
            entries
                .into_iter()
                .map(|(id, entry)| {
                    let mut out = json!({
                        "operation": id.operation.as_str(),
                        "apiVersion": entry.api_version,
                        "fieldsType": "FieldsV1",
                        "fieldsV1": encode_fields(&entry.fields),
                    });
                    if !id.manager.is_empty() {
                        out["manager"] = json!(id.manager);
                    }
                    if let Some(time) = entry.time {
                        out["time"] = json!(time.to_rfc3339_opts(SecondsFormat::Secs, true));
                    }
                    out
                })
                .collect(),
        )
    }

    /// Takes `fields` away from every manager, and forgets managers left with nothing.
    fn disown(&mut self, fields: &FieldSet, except: Option<&ManagerId>) {
        for (id, entry) in &mut self.entries {
            if Some(id) != except {
                entry.fields.retain(|f| !fields.contains(f));
            }
        }
        self.entries.retain(|_, e| !e.fields.is_empty());
    }

    /// Records an update (create, update, or a non-apply patch) by `manager` from `live` to
    /// `new`: it owns what it added or changed, and what it removed has no owner any more.
    pub(crate) fn update(
        &mut self,
        live: &Value,
        new: &Value,
        manager: &str,
        api_version: &str,
        kind: &str,
        now: DateTime<Utc>,
    ) {
        let comparison = Comparison::of(live, new, kind);
        let set = comparison.set();
        self.disown(&set, None);
        self.disown(&comparison.removed, None);
        if !set.is_empty() {
            let entry = self
                .entries
                .entry(ManagerId::update(manager, api_version))
                .or_insert_with(|| Entry {
                    api_version: api_version.to_owned(),
                    time: None,
                    fields: FieldSet::new(),
                });
            entry.fields.extend(set);
            entry.time = Some(now);
        }
        self.cap_update_managers();
    }

    /// Server-side apply of `config` by `manager` onto `live` (the kind's empty object when
    /// creating); returns the object to store.
    ///
    /// # Errors
    ///
    /// The fields other managers own that the apply would change, unless `force`.
    #[allow(clippy::too_many_arguments)] // The inputs of one apply, as kube-apiserver has them.
    pub(crate) fn apply(
        &mut self,
        live: &Value,
        exists: bool,
        config: &Value,
        manager: &str,
        api_version: &str,
        force: bool,
        kind: &str,
        now: DateTime<Utc>,
    ) -> Result<Value, Vec<Conflict>> {
        let mut next = self.clone();
        if next.is_empty() && exists {
            // The first apply to an untracked object: what is there belongs to someone.
            let empty = empty_object(kind);
            next.update(&empty, live, "before-first-apply", api_version, kind, now);
        }
        let mut merged = merge(live, config, &mut Vec::new());
        let id = ManagerId::apply(manager);
        let last = next.entries.remove(&id);
        let mut set = field_set(config);
        set.retain(|p| tracked(kind, p));
        next.entries.insert(
            id.clone(),
            Entry {
                api_version: api_version.to_owned(),
                time: last.as_ref().and_then(|e| e.time),
                fields: set.clone(),
            },
        );
        if let Some(last) = &last {
            next.remove_dropped(&mut merged, &last.fields, &set);
        }
        let comparison = Comparison::of(live, &merged, kind);
        let changed = comparison.set();
        let conflicts = next.conflicts(&id, &changed, live, api_version, kind);
        if !conflicts.is_empty() && !force {
            return Err(conflicts);
        }
        next.disown(&changed, Some(&id));
        next.disown(&comparison.removed, Some(&id));
        if merged != *live
            && let Some(entry) = next.entries.get_mut(&id)
        {
            entry.time = Some(now);
        }
        next.entries.retain(|_, e| !e.fields.is_empty());
        drop_nulls(&mut merged, config);
        *self = next;
        Ok(merged)
    }

    /// Removes from `merged` the fields that an applier applied last time (`before`) and no
    /// longer does (`now`), unless some manager (it included) still owns them or what is in
    /// them.
    fn remove_dropped(&self, merged: &mut Value, before: &FieldSet, now: &FieldSet) {
        let owned: FieldSet = self
            .entries
            .values()
            .flat_map(|e| e.fields.iter().cloned())
            .collect();
        let dropped: Vec<&Path> = before.difference(now).collect();
        for path in dropped.into_iter().rev() {
            let kept = owned
                .range::<Path, _>(path..)
                .next()
                .is_some_and(|o| o.starts_with(path));
            if !kept {
                remove(merged, path);
            }
        }
    }

    /// The fields in `changed` that managers other than the applier `id` own. kubectl's
    /// server-side apply takes over what its client-side apply set (`lastAppliedManager`).
    fn conflicts(
        &self,
        id: &ManagerId,
        changed: &FieldSet,
        live: &Value,
        api_version: &str,
        kind: &str,
    ) -> Vec<Conflict> {
        let mut conflicts: Vec<(&Path, &ManagerId)> = self
            .entries
            .iter()
            .filter(|(other, _)| *other != id)
            .flat_map(|(other, entry)| entry.fields.intersection(changed).map(move |p| (p, other)))
            .collect();
        if id.manager == LAST_APPLIED_UPGRADER
            && !conflicts.is_empty()
            && let Some(allowed) = allowed_by_last_applied(live, api_version, kind)
        {
            conflicts.retain(|(path, _)| !allowed.contains(*path));
        }
        conflicts
            .into_iter()
            .map(|(path, other)| Conflict {
                manager: other.describe(),
                field: Display(path).to_string(),
            })
            .collect()
    }

    /// Merges the oldest update entries into `ancient-changes`, one per apiVersion, while there
    /// are more than ten (`capManagersManager`).
    fn cap_update_managers(&mut self) {
        let mut updaters: Vec<ManagerId> = self
            .entries
            .keys()
            .filter(|id| id.operation == Operation::Update)
            .cloned()
            .collect();
        if updaters.len() <= MAX_UPDATE_MANAGERS {
            return;
        }
        updaters.sort_by_key(|id| {
            (
                self.entries[id].time.map_or(0, |t| t.timestamp()),
                id.clone(),
            )
        });
        let mut first_of_version: BTreeMap<String, ManagerId> = BTreeMap::new();
        let mut length = updaters.len();
        for id in updaters {
            if length <= MAX_UPDATE_MANAGERS {
                break;
            }
            let Some(entry) = self.entries.get(&id).cloned() else {
                continue;
            };
            let version = entry.api_version.clone();
            let bucket = ManagerId::update("ancient-changes", &version);
            if let Some(first) = first_of_version.get(&version) {
                if !self.entries.contains_key(&bucket)
                    && let Some(moved) = self.entries.remove(first)
                {
                    self.entries.insert(bucket.clone(), moved);
                }
                self.entries.remove(&id);
                if let Some(target) = self.entries.get_mut(&bucket) {
                    target.fields.extend(entry.fields);
                    target.time = entry.time;
                }
                length -= 1;
            } else {
                first_of_version.insert(version, id);
            }
        }
    }
}

/// The field manager of `kubectl apply --server-side`, for which kube-apiserver lets the fields
/// of a client-side apply be taken over (`lastAppliedManager`) and keeps the client-side
/// annotation up to date (`lastAppliedUpdater`).
pub(crate) const LAST_APPLIED_UPGRADER: &str = "kubectl";

/// The annotation of `kubectl apply` (client-side).
pub(crate) const LAST_APPLIED_ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// The fields of the client-side apply annotation of `live` that still hold the values it
/// applied; `None` without a usable annotation.
fn allowed_by_last_applied(live: &Value, api_version: &str, kind: &str) -> Option<FieldSet> {
    let annotation = live["metadata"]["annotations"][LAST_APPLIED_ANNOTATION].as_str()?;
    let applied: Value = serde_json::from_str(annotation).ok()?;
    if applied["apiVersion"] != api_version {
        return None;
    }
    let mut set = field_set(&applied);
    set.retain(|p| tracked(kind, p));
    let comparison = Comparison::of(&applied, live, kind);
    set.retain(|p| {
        !comparison.modified.contains(p)
            && !comparison.added.contains(p)
            && !comparison.removed.contains(p)
    });
    Some(set)
}

/// The client-side apply annotation that an apply of `config` by
/// [`LAST_APPLIED_UPGRADER`] leaves (`buildLastApplied`): the configuration without that
/// annotation, as Go encodes it, with a newline.
pub(crate) fn last_applied(config: &Value) -> String {
    let mut config = config.clone();
    if let Some(annotations) = config["metadata"]
        .get_mut("annotations")
        .and_then(Value::as_object_mut)
    {
        annotations.remove(LAST_APPLIED_ANNOTATION);
    }
    let mut text = serde_json::to_string(&config).unwrap_or_default();
    text.push('\n');
    text
}

/// What a kind's empty Go struct holds (struct fields are never omitted): the object a create
/// is compared with.
pub(crate) fn empty_object(kind: &str) -> Value {
    match kind {
        "Lease" => json!({ "spec": {} }),
        "Namespace" => json!({ "spec": {}, "status": {} }),
        "Event" => json!({ "involvedObject": {}, "source": {} }),
        _ => json!({}),
    }
}

/// The `fieldsV1` tree of a set: `f:`, `k:`, `v:` and `i:` children, `"."` for a member that
/// also has children.
fn encode_fields(set: &FieldSet) -> Value {
    #[derive(Default)]
    struct Node {
        member: bool,
        children: BTreeMap<Element, Node>,
    }
    fn to_json(node: &Node) -> Value {
        let mut out = Map::new();
        if node.member && !node.children.is_empty() {
            out.insert(".".to_owned(), json!({}));
        }
        for (element, child) in &node.children {
            out.insert(encode_element(element), to_json(child));
        }
        Value::Object(out)
    }
    let mut root = Node::default();
    for path in set {
        let mut node = &mut root;
        for element in path {
            node = node.children.entry(element.clone()).or_default();
        }
        node.member = true;
    }
    to_json(&root)
}

fn encode_element(element: &Element) -> String {
    match element {
        Element::Field(name) => format!("f:{name}"),
        Element::Key(keys) => {
            let parts: Vec<String> = keys
                .iter()
                .map(|(k, v)| format!("{}:{v}", Value::String(k.clone())))
                .collect();
            format!("k:{{{}}}", parts.join(","))
        }
        Element::Value(value) => format!("v:{value}"),
        Element::Index(index) => format!("i:{index}"),
    }
}

fn decode_element(key: &str) -> Option<Element> {
    let (kind, rest) = key.split_at_checked(2)?;
    Some(match kind {
        "f:" => Element::Field(rest.to_owned()),
        "v:" => Element::Value(serde_json::from_str::<Value>(rest).ok()?.to_string()),
        "i:" => Element::Index(rest.parse().ok()?),
        "k:" => {
            let Value::Object(keys) = serde_json::from_str::<Value>(rest).ok()? else {
                return None;
            };
            Element::Key(
                keys.iter()
                    .map(|(k, v)| (k.clone(), v.to_string()))
                    .collect(),
            )
        }
        _ => return None,
    })
}

/// Parses a `fieldsV1` tree; `None` when it is not one.
fn decode_fields(encoded: &Value) -> Option<FieldSet> {
    fn walk(node: &Map<String, Value>, path: &mut Path, out: &mut FieldSet) -> Option<()> {
        if node.is_empty() && !path.is_empty() {
            out.insert(path.clone());
        }
        for (key, child) in node {
            if key == "." {
                out.insert(path.clone());
                continue;
            }
            path.push(decode_element(key)?);
            walk(child.as_object()?, path, out)?;
            path.pop();
        }
        Some(())
    }
    let mut out = FieldSet::new();
    walk(encoded.as_object()?, &mut Vec::new(), &mut out)?;
    out.retain(|p| !p.is_empty());
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-30T10:00:00.7Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn fields(owners: &Managed, name: &str) -> Value {
        owners
            .encode()
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["manager"] == name)
            .map_or(Value::Null, |e| e["fieldsV1"].clone())
    }

    #[test]
    fn updates_mark_maps_they_create_with_a_dot() {
        let mut m = Managed::default();
        let created = json!({"metadata": {"name": "x", "labels": {"a": "1"}}, "data": {"k": "v"}});
        m.update(
            &json!({}),
            &created,
            "kubectl-create",
            "v1",
            "ConfigMap",
            now(),
        );
        assert_eq!(
            fields(&m, "kubectl-create"),
            json!({"f:data": {".": {}, "f:k": {}}, "f:metadata": {"f:labels": {".": {}, "f:a": {}}}})
        );
        let entry = &m.encode()[0];
        assert_eq!(entry["operation"], "Update");
        assert_eq!(entry["apiVersion"], "v1");
        assert_eq!(entry["time"], "2026-11-30T10:00:00Z");
        assert_eq!(entry["fieldsType"], "FieldsV1");
        // A Lease's spec is there from the start: no dot for it.
        let mut lease = Managed::default();
        lease.update(
            &empty_object("Lease"),
            &json!({"spec": {"holderIdentity": "a"}}),
            "m",
            "coordination.k8s.io/v1",
            "Lease",
            now(),
        );
        assert_eq!(
            fields(&lease, "m"),
            json!({"f:spec": {"f:holderIdentity": {}}})
        );
    }

    #[test]
    fn updates_take_fields_and_removal_clears_owners() {
        let mut m = Managed::default();
        let a = json!({"data": {"x": "1", "y": "1"}});
        m.apply(
            &json!({}),
            false,
            &a,
            "alice",
            "v1",
            false,
            "ConfigMap",
            now(),
        )
        .unwrap();
        let b = json!({"data": {"x": "2", "y": "1"}});
        m.update(&a, &b, "bob", "v1", "ConfigMap", now());
        assert_eq!(fields(&m, "alice"), json!({"f:data": {"f:y": {}}}));
        assert_eq!(fields(&m, "bob"), json!({"f:data": {"f:x": {}}}));
        // Removing y leaves alice with nothing: her entry goes.
        m.update(
            &b,
            &json!({"data": {"x": "2"}}),
            "carol",
            "v1",
            "ConfigMap",
            now(),
        );
        assert_eq!(fields(&m, "alice"), Value::Null);
        assert_eq!(fields(&m, "carol"), Value::Null, "carol only removed");
    }

    #[test]
    fn apply_conflicts_shares_forces_and_prunes() {
        let mut m = Managed::default();
        let live = m
            .apply(
                &json!({}),
                false,
                &json!({"data": {"x": "1", "y": "1"}}),
                "a",
                "v1",
                false,
                "ConfigMap",
                now(),
            )
            .unwrap();
        let conflicts = m
            .clone()
            .apply(
                &live,
                true,
                &json!({"data": {"x": "2"}}),
                "b",
                "v1",
                false,
                "ConfigMap",
                now(),
            )
            .unwrap_err();
        assert_eq!(
            conflicts,
            [Conflict {
                manager: "\"a\"".into(),
                field: ".data.x".into()
            }]
        );
        // The same value is shared ownership.
        let live = m
            .apply(
                &live,
                true,
                &json!({"data": {"y": "1", "z": "b"}}),
                "b",
                "v1",
                false,
                "ConfigMap",
                now(),
            )
            .unwrap();
        // a stops applying y (b still owns it: kept) and x (only a owned it: removed).
        let live = m
            .apply(
                &live,
                true,
                &json!({"data": {"w": "a"}}),
                "a",
                "v1",
                false,
                "ConfigMap",
                now(),
            )
            .unwrap();
        assert_eq!(live, json!({"data": {"y": "1", "z": "b", "w": "a"}}));
        let live = m
            .apply(
                &live,
                true,
                &json!({"data": {"w": "b"}}),
                "b",
                "v1",
                true,
                "ConfigMap",
                now(),
            )
            .unwrap();
        assert_eq!(live["data"]["w"], "b");
        assert_eq!(fields(&m, "a"), Value::Null, "a lost its only field");
        assert_eq!(fields(&m, "b"), json!({"f:data": {"f:w": {}}}));
    }

    #[test]
    fn conflicts_name_updaters_with_their_version() {
        let mut m = Managed::default();
        m.update(
            &json!({}),
            &json!({"data": {"x": "1"}}),
            "kubectl-edit",
            "v1",
            "ConfigMap",
            now(),
        );
        let conflicts = m
            .apply(
                &json!({"data": {"x": "1"}}),
                true,
                &json!({"data": {"x": "2"}}),
                "a",
                "v1",
                false,
                "ConfigMap",
                now(),
            )
            .unwrap_err();
        assert_eq!(conflicts[0].manager, "\"kubectl-edit\" using v1");
    }

    #[test]
    fn first_apply_to_an_untracked_object() {
        let mut m = Managed::default();
        let live = json!({"data": {"x": "1", "y": "1"}});
        let apply = |m: &mut Managed, force| {
            m.apply(
                &live,
                true,
                &json!({"data": {"x": "2"}}),
                "a",
                "v1",
                force,
                "ConfigMap",
                now(),
            )
        };
        let err = apply(&mut m.clone(), false).unwrap_err();
        assert_eq!(err[0].manager, "\"before-first-apply\" using v1");
        apply(&mut m, true).unwrap();
        assert_eq!(
            fields(&m, "before-first-apply"),
            json!({"f:data": {".": {}, "f:y": {}}})
        );
        assert_eq!(fields(&m, "a"), json!({"f:data": {"f:x": {}}}));
    }

    #[test]
    fn keyed_lists_encode_items() {
        let object = json!({"metadata": {
            "finalizers": ["a/b"],
            "ownerReferences": [{"uid": "u1", "kind": "K", "name": "n"}],
        }});
        let mut m = Managed::default();
        m.update(&json!({}), &object, "m", "v1", "ConfigMap", now());
        let encoded = fields(&m, "m");
        assert_eq!(
            encoded,
            json!({"f:metadata": {
                "f:finalizers": {".": {}, "v:\"a/b\"": {}},
                "f:ownerReferences": {".": {}, "k:{\"uid\":\"u1\"}": {".": {}, "f:kind": {}, "f:name": {}, "f:uid": {}}},
            }})
        );
        assert_eq!(
            decode_fields(&encoded).unwrap(),
            m.entries.values().next().unwrap().fields
        );
        assert_eq!(
            Display(&[
                field("metadata"),
                field("ownerReferences"),
                Element::Key(vec![("uid".into(), "\"u1\"".into())])
            ])
            .to_string(),
            ".metadata.ownerReferences[uid=\"u1\"]"
        );
    }

    #[test]
    fn provided_lists() {
        assert_eq!(Provided::decode(None), Ok(Provided::Absent));
        assert_eq!(Provided::decode(Some(&json!([]))), Ok(Provided::Reset));
        assert_eq!(Provided::decode(Some(&json!([{}]))), Ok(Provided::Reset));
        assert_eq!(
            Provided::decode(Some(
                &json!([{"operation": "Bogus", "apiVersion": "v1", "fieldsType": "FieldsV1"}])
            )),
            Ok(Provided::Invalid)
        );
        assert!(Provided::decode(Some(&json!("nope"))).is_err());
        assert!(Provided::decode(Some(&json!([{"time": "yesterday"}]))).is_err());
    }

    #[test]
    fn at_most_ten_update_managers() {
        let mut m = Managed::default();
        let mut live = json!({});
        for i in 0..12 {
            let mut new = live.clone();
            new["data"][format!("k{i}")] = json!("v");
            let t = now() + chrono::Duration::seconds(i);
            m.update(&live, &new, &format!("m{i:02}"), "v1", "ConfigMap", t);
            live = new;
        }
        let encoded = m.encode();
        let managers: Vec<&str> = encoded
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["manager"].as_str().unwrap())
            .collect();
        assert_eq!(managers.len(), 10);
        assert_eq!(managers[0], "ancient-changes");
        assert_eq!(
            fields(&m, "ancient-changes"),
            json!({"f:data": {".": {}, "f:k0": {}, "f:k1": {}, "f:k2": {}}})
        );
    }
}
