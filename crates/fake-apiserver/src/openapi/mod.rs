//! The OpenAPI documents kube-apiserver publishes, for the resource types this server serves:
//! `/openapi/v3` (a discovery document naming one OpenAPI 3.0 document per group-version, at a
//! URL whose `hash` is the document's `ETag`), `/openapi/v3/<api|apis/group>/<version>`, and
//! `/openapi/v2` (one Swagger 2.0 document for everything).
//!
//! `kubectl` reads them before it writes: whether a kind's PATCH operation takes the
//! `fieldValidation` parameter decides whether it validates on the client or lets the server
//! do it (it does here, as with kube-apiserver since v1.27), and the schemas'
//! `x-kubernetes-patch-strategy` and `x-kubernetes-patch-merge-key` shape the strategic merge
//! patch that client-side `kubectl apply` sends.
//!
//! # Where the schemas come from
//!
//! `schemas.json` holds the definitions of the built-in kinds and of the `meta/v1` types their
//! operations use, in kube-apiserver's v3 form (`allOf` around a `$ref`, `default`s, extensions).
//! Descriptions, types, formats and required fields were extracted from the `v1_33` schema
//! literals of the `k8s-openapi` crate (generated from Kubernetes v1.33's OpenAPI document);
//! the `x-kubernetes-*` extensions, which `k8s-openapi` does not carry, were added to match
//! kube-apiserver's published documents (`api/openapi-spec/v3` in kubernetes/kubernetes).
//! `extract_schemas.py` beside it regenerates the file from the `k8s-openapi` sources.
//! `parameters.json` holds the query parameters' descriptions from the same documents.
//! Paths and operations are generated below for each served resource, with kube-apiserver's
//! operation ids, tags, parameters, `x-kubernetes-action` and `x-kubernetes-group-version-kind`.
//!
//! Resources registered by tests (or served on first use) are described like a
//! `CustomResourceDefinition` whose schema keeps unknown fields
//! (`x-kubernetes-preserve-unknown-fields`), and their PATCH takes no strategic merge patch.
//!
//! # Not like kube-apiserver
//!
//! - Responses are declared as JSON only (`application/json`, and `;stream=watch` for lists),
//!   because that is all this server answers; the documents are served as JSON only, so a
//!   client that accepts nothing but protobuf (`kubectl`'s legacy `/openapi/v2` fallback) gets
//!   `406 Not Acceptable`.
//! - The deprecated `/watch/` paths are absent, as this server does not serve them (so
//!   `WatchEvent` is not among the definitions); so are the documents of `/api`, `/apis`,
//!   `/version` and of API groups.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::OnceLock;

use serde_json::{Map, Value, json};

use super::resources::{FAKE_KUBE_MINOR, Registry, ResourceType};

pub(crate) mod fields;

const REF_V3: &str = "#/components/schemas/";
const REF_V2: &str = "#/definitions/";
const META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.";

/// The content types of a PATCH request body, in the order kube-apiserver lists them.
const PATCH_TYPES: [&str; 4] = [
    "application/apply-patch+yaml",
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
];

fn embedded(
    text: &'static str,
    cell: &'static OnceLock<Map<String, Value>>,
) -> &'static Map<String, Value> {
    cell.get_or_init(|| {
        serde_json::from_str(text).expect("the embedded OpenAPI data is valid JSON")
    })
}

/// The built-in definitions, by name (`io.k8s.api.core.v1.ConfigMap`).
fn builtin_schemas() -> &'static Map<String, Value> {
    static CELL: OnceLock<Map<String, Value>> = OnceLock::new();
    embedded(include_str!("schemas.json"), &CELL)
}

/// The query and path parameters, by name: `{"type": ..., "description": ...}`.
fn parameter_table() -> &'static Map<String, Value> {
    static CELL: OnceLock<Map<String, Value>> = OnceLock::new();
    embedded(include_str!("parameters.json"), &CELL)
}

/// Whether `schema` declares `group/version/kind` in `x-kubernetes-group-version-kind`.
fn declares(schema: &Value, group: &str, version: &str, kind: &str) -> bool {
    schema["x-kubernetes-group-version-kind"]
        .as_array()
        .is_some_and(|gvks| {
            gvks.iter()
                .any(|g| g["group"] == group && g["version"] == version && g["kind"] == kind)
        })
}

/// The definition name of a kind: the built-in one, or a CRD-style name (`com.example.v1.Widget`
/// for group `example.com`) for resources this server only learned about at run time.
fn schema_name(rt: &ResourceType, kind: &str) -> String {
    let builtin = builtin_schemas()
        .iter()
        .find(|(_, s)| declares(s, &rt.group, &rt.version, kind));
    if let Some((name, _)) = builtin {
        return name.clone();
    }
    let reversed: Vec<&str> = rt.group.split('.').rev().collect();
    format!("{}.{}.{kind}", reversed.join("."), rt.version)
}

fn has_builtin_schema(rt: &ResourceType) -> bool {
    builtin_schemas()
        .values()
        .any(|s| declares(s, &rt.group, &rt.version, &rt.kind))
}

fn gvk(group: &str, version: &str, kind: &str) -> Value {
    json!({ "group": group, "kind": kind, "version": version })
}

fn reference(name: &str) -> Value {
    json!({ "$ref": format!("{REF_V3}{name}") })
}

/// `apiVersion` and `kind` as every kind's schema declares them.
fn type_meta_properties() -> (Value, Value) {
    let config_map = &builtin_schemas()["io.k8s.api.core.v1.ConfigMap"]["properties"];
    (config_map["apiVersion"].clone(), config_map["kind"].clone())
}

/// The schemas of a resource whose fields this server does not know: kept as sent, like a
/// `CustomResourceDefinition` with `x-kubernetes-preserve-unknown-fields: true`.
fn custom_schemas(rt: &ResourceType) -> [(String, Value); 2] {
    let (api_version, kind) = type_meta_properties();
    let name = schema_name(rt, &rt.kind);
    let object = json!({
        "properties": {
            "apiVersion": api_version,
            "kind": kind,
            "metadata": {
                "allOf": [reference(&format!("{META}ObjectMeta"))],
                "description": "Standard object's metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata",
            },
        },
        "type": "object",
        "x-kubernetes-group-version-kind": [gvk(&rt.group, &rt.version, &rt.kind)],
        "x-kubernetes-preserve-unknown-fields": true,
    });
    let list_kind = format!("{}List", rt.kind);
    let list = json!({
        "description": format!("{list_kind} is a list of {}", rt.kind),
        "properties": {
            "apiVersion": api_version,
            "items": {
                "description": format!("List of {}. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md", rt.plural),
                "items": reference(&name),
                "type": "array",
            },
            "kind": kind,
            "metadata": {
                "allOf": [reference(&format!("{META}ListMeta"))],
                "description": "Standard list metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds",
            },
        },
        "required": ["items"],
        "type": "object",
        "x-kubernetes-group-version-kind": [gvk(&rt.group, &rt.version, &list_kind)],
    });
    [(name, object), (schema_name(rt, &list_kind), list)]
}

/// The resource types the server serves and advertises in discovery.
fn served(registry: &Registry) -> impl Iterator<Item = &ResourceType> {
    registry.types().filter(|rt| !rt.kind_guessed)
}

/// Every served group-version, as `(group, version)`.
fn group_versions(registry: &Registry) -> BTreeSet<(String, String)> {
    let mut gvs: BTreeSet<(String, String)> = served(registry)
        .map(|rt| (rt.group.clone(), rt.version.clone()))
        .collect();
    gvs.insert((String::new(), "v1".into()));
    gvs
}

/// `api/v1` or `apis/<group>/<version>`: the key of a group-version in `/openapi/v3`.
fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// `CoreV1`, `CoordinationV1`, `ExampleComV1`: the middle of kube-apiserver's operation ids.
fn operation_infix(group: &str, version: &str) -> String {
    let group = if group.is_empty() {
        "core"
    } else {
        group.strip_suffix(".k8s.io").unwrap_or(group)
    };
    let mut out = String::new();
    for part in group.split(['.', '-']).chain([version]) {
        let mut chars = part.chars();
        if let Some(first) = chars.next() {
            out.extend(first.to_uppercase());
            out.push_str(chars.as_str());
        }
    }
    out
}

/// `core_v1`, `coordination_v1`: kube-apiserver's tag of a group-version's operations.
fn tag(group: &str, version: &str) -> String {
    let mut infix = operation_infix(group, "");
    if let Some(first) = infix.get(..1) {
        infix.replace_range(..1, &first.to_lowercase());
    }
    format!("{infix}_{version}")
}

fn parameter(name: &str, location: &str) -> Value {
    let table = parameter_table();
    let key = name;
    let name = name.split('/').next().unwrap_or(name);
    let entry = &table[key];
    let mut param = json!({
        "description": entry["description"],
        "in": location,
        "name": name,
        "schema": { "type": entry["type"], "uniqueItems": true },
    });
    if location == "path" {
        param["required"] = json!(true);
    }
    param
}

fn query(names: &[&str]) -> Vec<Value> {
    names.iter().map(|n| parameter(n, "query")).collect()
}

fn name_parameter(kind: &str) -> Value {
    json!({
        "description": format!("name of the {kind}"),
        "in": "path",
        "name": "name",
        "required": true,
        "schema": { "type": "string", "uniqueItems": true },
    })
}

/// A response whose body has `schema` (a definition name) in the content types this server
/// answers with.
fn response(description: &str, schema: &str, watchable: bool) -> Value {
    let mut content = Map::new();
    content.insert(
        "application/json".into(),
        json!({ "schema": reference(schema) }),
    );
    if watchable {
        content.insert(
            "application/json;stream=watch".into(),
            json!({ "schema": reference(schema) }),
        );
    }
    json!({ "content": content, "description": description })
}

/// One operation of a path item.
struct Operation<'a> {
    rt: &'a ResourceType,
    action: &'static str,
    id: String,
    description: String,
    parameters: Vec<Value>,
    body: Option<(Vec<&'static str>, String)>,
    responses: Vec<(&'static str, Value)>,
}

impl Operation<'_> {
    fn to_json(&self) -> Value {
        let mut responses = Map::new();
        for (code, body) in &self.responses {
            responses.insert((*code).into(), body.clone());
        }
        responses.insert("401".into(), json!({ "description": "Unauthorized" }));
        let mut op = json!({
            "description": self.description,
            "operationId": self.id,
            "responses": responses,
            "tags": [tag(&self.rt.group, &self.rt.version)],
            "x-kubernetes-action": self.action,
            "x-kubernetes-group-version-kind": gvk(&self.rt.group, &self.rt.version, &self.rt.kind),
        });
        if !self.parameters.is_empty() {
            let mut parameters = self.parameters.clone();
            parameters.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
            op["parameters"] = json!(parameters);
        }
        if let Some((types, schema)) = &self.body {
            let content: Map<String, Value> = types
                .iter()
                .map(|t| ((*t).to_owned(), json!({ "schema": reference(schema) })))
                .collect();
            let mut body = json!({ "content": content });
            if self.action != "delete" && self.action != "deletecollection" {
                body["required"] = json!(true);
            }
            op["requestBody"] = body;
        }
        op
    }
}

const LIST_PARAMETERS: [&str; 10] = [
    "allowWatchBookmarks",
    "continue",
    "fieldSelector",
    "labelSelector",
    "limit",
    "resourceVersion",
    "resourceVersionMatch",
    "sendInitialEvents",
    "timeoutSeconds",
    "watch",
];

/// What the operations of one resource are named after.
struct Names<'a> {
    rt: &'a ResourceType,
    /// The definitions of the kind and of its list.
    object: String,
    list: String,
    /// `CoreV1`: the middle of operation ids.
    infix: String,
    /// `Namespaced` or nothing.
    scope: &'static str,
}

impl<'a> Names<'a> {
    fn new(rt: &'a ResourceType) -> Self {
        Self {
            rt,
            object: schema_name(rt, &rt.kind),
            list: schema_name(rt, &format!("{}List", rt.kind)),
            infix: operation_infix(&rt.group, &rt.version),
            scope: if rt.namespaced { "Namespaced" } else { "" },
        }
    }

    /// An operation whose id is `<verb><infix><scope><kind>` unless `id` says otherwise.
    fn op(&self, action: &'static str, verb: &str, description: String) -> Operation<'a> {
        let Self {
            infix, scope, rt, ..
        } = self;
        Operation {
            rt,
            action,
            id: format!("{verb}{infix}{scope}{}", rt.kind),
            description,
            parameters: Vec::new(),
            body: None,
            responses: Vec::new(),
        }
    }

    /// The path parameters of a collection or (with `name`) an object, and `pretty`.
    fn path_parameters(&self, name: bool) -> Value {
        let mut params = Vec::new();
        if name {
            params.push(name_parameter(&self.rt.kind));
        }
        if self.rt.namespaced {
            params.push(parameter("namespace", "path"));
        }
        params.push(parameter("pretty", "query"));
        json!(params)
    }
}

const WRITE_PARAMETERS: [&str; 3] = ["dryRun", "fieldManager", "fieldValidation"];

/// The path items of one resource: its collections and its objects, with the operations this
/// server serves (kube-apiserver's, less the deprecated `/watch/` paths).
fn path_items(rt: &ResourceType, paths: &mut Map<String, Value>) {
    let names = Names::new(rt);
    let kind = &rt.kind;
    let prefix = format!("/{}", gv_path(&rt.group, &rt.version));
    if rt.namespaced {
        let mut params = query(&LIST_PARAMETERS);
        params.push(parameter("pretty", "query"));
        params.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
        let mut list_all = names.op(
            "list",
            "list",
            format!("list or watch objects of kind {kind}"),
        );
        list_all.id = format!("list{}{kind}ForAllNamespaces", names.infix);
        list_all.responses = vec![("200", response("OK", &names.list, true))];
        paths.insert(
            format!("{prefix}/{}", rt.plural),
            json!({ "get": list_all.to_json(), "parameters": params }),
        );
    }
    let collection = if rt.namespaced {
        format!("{prefix}/namespaces/{{namespace}}/{}", rt.plural)
    } else {
        format!("{prefix}/{}", rt.plural)
    };
    paths.insert(format!("{collection}/{{name}}"), object_item(&names));
    paths.insert(collection, collection_item(&names));
}

fn collection_item(names: &Names<'_>) -> Value {
    let (rt, kind) = (names.rt, &names.rt.kind);
    let mut list = names.op(
        "list",
        "list",
        format!("list or watch objects of kind {kind}"),
    );
    list.parameters = query(&LIST_PARAMETERS);
    list.responses = vec![("200", response("OK", &names.list, true))];
    let mut create = names.op(
        "post",
        "create",
        format!("create a{} {kind}", article(kind)),
    );
    create.parameters = query(&WRITE_PARAMETERS);
    create.body = Some((vec!["*/*"], names.object.clone()));
    create.responses = vec![
        ("200", response("OK", &names.object, false)),
        ("201", response("Created", &names.object, false)),
        ("202", response("Accepted", &names.object, false)),
    ];
    let mut item = Map::new();
    if rt.namespaced {
        let mut delete_all = names.op(
            "deletecollection",
            "deleteCollection",
            format!("delete collection of {kind}"),
        );
        delete_all.id = format!("delete{}Collection{}{kind}", names.infix, names.scope);
        delete_all.parameters = query(&[
            "continue",
            "dryRun",
            "fieldSelector",
            "gracePeriodSeconds",
            "labelSelector",
            "limit",
            "orphanDependents",
            "propagationPolicy",
            "resourceVersion",
            "resourceVersionMatch",
            "sendInitialEvents",
            "timeoutSeconds",
        ]);
        delete_all.body = Some((vec!["*/*"], format!("{META}DeleteOptions")));
        delete_all.responses = vec![("200", response("OK", &format!("{META}Status"), false))];
        item.insert("delete".into(), delete_all.to_json());
    }
    item.insert("get".into(), list.to_json());
    item.insert("parameters".into(), names.path_parameters(false));
    item.insert("post".into(), create.to_json());
    Value::Object(item)
}

fn object_item(names: &Names<'_>) -> Value {
    let (rt, kind, object) = (names.rt, &names.rt.kind, &names.object);
    let status = format!("{META}Status");
    let mut delete = names.op(
        "delete",
        "delete",
        format!("delete a{} {kind}", article(kind)),
    );
    delete.parameters = query(&[
        "dryRun",
        "gracePeriodSeconds",
        "orphanDependents",
        "propagationPolicy",
    ]);
    delete.body = Some((vec!["*/*"], format!("{META}DeleteOptions")));
    delete.responses = vec![
        ("200", response("OK", &status, false)),
        ("202", response("Accepted", &status, false)),
    ];
    let mut read = names.op("get", "read", format!("read the specified {kind}"));
    read.responses = vec![("200", response("OK", object, false))];
    let mut patch = names.op(
        "patch",
        "patch",
        format!("partially update the specified {kind}"),
    );
    patch.parameters = query(&["dryRun", "fieldManager/apply", "fieldValidation", "force"]);
    let mut patch_types = PATCH_TYPES.to_vec();
    if !has_builtin_schema(rt) {
        // Like a custom resource: no strategic merge patch.
        patch_types.retain(|t| *t != "application/strategic-merge-patch+json");
    }
    patch.body = Some((patch_types, format!("{META}Patch")));
    patch.responses = vec![
        ("200", response("OK", object, false)),
        ("201", response("Created", object, false)),
    ];
    let mut replace = names.op("put", "replace", format!("replace the specified {kind}"));
    replace.parameters = query(&WRITE_PARAMETERS);
    replace.body = Some((vec!["*/*"], object.clone()));
    replace.responses = vec![
        ("200", response("OK", object, false)),
        ("201", response("Created", object, false)),
    ];
    json!({
        "delete": delete.to_json(),
        "get": read.to_json(),
        "parameters": names.path_parameters(true),
        "patch": patch.to_json(),
        "put": replace.to_json(),
    })
}

fn article(kind: &str) -> &'static str {
    if kind.starts_with(['A', 'E', 'I', 'O', 'U']) {
        "n"
    } else {
        ""
    }
}

/// Adds `name` and every definition it refers to, transitively, to `out`.
fn collect(name: &str, available: &BTreeMap<String, Value>, out: &mut BTreeMap<String, Value>) {
    if out.contains_key(name) {
        return;
    }
    let Some(schema) = available.get(name) else {
        return;
    };
    out.insert(name.to_owned(), schema.clone());
    let mut refs = Vec::new();
    find_refs(schema, &mut refs);
    for r in refs {
        collect(&r, available, out);
    }
}

fn find_refs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v.as_str()) {
                    ("$ref", Some(r)) => {
                        out.extend(r.strip_prefix(REF_V3).map(str::to_owned));
                    }
                    _ => find_refs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| find_refs(v, out)),
        _ => {}
    }
}

/// Every definition this server can refer to: the built-in ones, with `DeleteOptions`
/// declared for each served group-version, and those of the resources it learned at run time.
fn all_schemas(registry: &Registry) -> BTreeMap<String, Value> {
    let mut all: BTreeMap<String, Value> = builtin_schemas()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let delete_options: Vec<Value> = group_versions(registry)
        .iter()
        .map(|(g, v)| gvk(g, v, "DeleteOptions"))
        .collect();
    if let Some(schema) = all.get_mut(&format!("{META}DeleteOptions")) {
        schema["x-kubernetes-group-version-kind"] = json!(delete_options);
    }
    for rt in served(registry).filter(|rt| !has_builtin_schema(rt)) {
        all.extend(custom_schemas(rt));
    }
    all
}

fn security_scheme() -> Value {
    json!({
        "description": "Bearer Token authentication",
        "in": "header",
        "name": "authorization",
        "type": "apiKey",
    })
}

/// The paths and the definitions they need, for the resources `filter` selects.
fn paths_and_schemas(
    registry: &Registry,
    filter: impl Fn(&ResourceType) -> bool,
) -> (Map<String, Value>, BTreeMap<String, Value>) {
    let all = all_schemas(registry);
    let mut paths = Map::new();
    let mut schemas = BTreeMap::new();
    let mut groups = BTreeSet::new();
    for rt in served(registry).filter(|rt| filter(rt)) {
        path_items(rt, &mut paths);
        collect(&schema_name(rt, &rt.kind), &all, &mut schemas);
        collect(
            &schema_name(rt, &format!("{}List", rt.kind)),
            &all,
            &mut schemas,
        );
        groups.insert((rt.group.clone(), rt.version.clone()));
    }
    for meta in ["APIResourceList", "DeleteOptions", "Patch", "Status"] {
        collect(&format!("{META}{meta}"), &all, &mut schemas);
    }
    for (group, version) in groups {
        let infix = operation_infix(&group, &version);
        paths.insert(
            format!("/{}/", gv_path(&group, &version)),
            json!({
                "get": {
                    "description": "get available resources",
                    "operationId": format!("get{infix}APIResources"),
                    "responses": {
                        "200": response("OK", &format!("{META}APIResourceList"), false),
                        "401": { "description": "Unauthorized" },
                    },
                    "tags": [tag(&group, &version)],
                },
            }),
        );
    }
    (paths, schemas)
}

/// The OpenAPI v3 document of one group-version (`api/v1`, `apis/coordination.k8s.io/v1`), or
/// `None` when the server serves nothing there.
pub(crate) fn v3_document(registry: &Registry, path: &str) -> Option<Value> {
    let (group, version) = group_versions(registry)
        .into_iter()
        .find(|(g, v)| gv_path(g, v) == path)?;
    let (mut paths, schemas) =
        paths_and_schemas(registry, |rt| rt.group == group && rt.version == version);
    if paths.is_empty() {
        // Core v1 with nothing in it still answers discovery.
        let infix = operation_infix(&group, &version);
        paths.insert(
            format!("/{path}/"),
            json!({ "get": { "operationId": format!("get{infix}APIResources") } }),
        );
    }
    Some(json!({
        "components": {
            "schemas": schemas,
            "securitySchemes": { "BearerToken": security_scheme() },
        },
        "info": { "title": "Kubernetes", "version": "unversioned" },
        "openapi": "3.0.0",
        "paths": paths,
    }))
}

/// `/openapi/v3`: each group-version's document, at a URL carrying its hash.
pub(crate) fn v3_discovery(registry: &Registry) -> Value {
    let mut paths = Map::new();
    for (group, version) in group_versions(registry) {
        let path = gv_path(&group, &version);
        if let Some(doc) = v3_document(registry, &path) {
            let hash = etag(&to_bytes(&doc));
            paths.insert(
                path.clone(),
                json!({ "serverRelativeURL": format!("/openapi/v3/{path}?hash={hash}") }),
            );
        }
    }
    json!({ "paths": paths })
}

/// `/openapi/v2`: one Swagger 2.0 document for every served group-version.
pub(crate) fn v2_document(registry: &Registry) -> Value {
    let (paths, schemas) = paths_and_schemas(registry, |_| true);
    let paths: Map<String, Value> = paths
        .into_iter()
        .map(|(path, item)| (path, v2_path_item(&item)))
        .collect();
    let definitions: Map<String, Value> = schemas
        .into_iter()
        .map(|(name, schema)| (name, v2_schema(schema)))
        .collect();
    json!({
        "definitions": definitions,
        "info": { "title": "Kubernetes", "version": format!("v1.{FAKE_KUBE_MINOR}.0") },
        "paths": paths,
        "security": [{ "BearerToken": [] }],
        "securityDefinitions": { "BearerToken": security_scheme() },
        "swagger": "2.0",
    })
}

/// A v3 schema in v2 form: `$ref` in place of `allOf: [{$ref}]`, refs to `#/definitions/`.
fn v2_schema(value: Value) -> Value {
    match value {
        Value::Object(mut map) => {
            let single_ref = map
                .get("allOf")
                .and_then(Value::as_array)
                .filter(|all| all.len() == 1)
                .and_then(|all| all[0].get("$ref").cloned());
            if let Some(r) = single_ref {
                map.remove("allOf");
                map.insert("$ref".into(), r);
            }
            Value::Object(
                map.into_iter()
                    .map(|(k, v)| match (k.as_str(), v.as_str()) {
                        ("$ref", Some(r)) => {
                            let name = r.strip_prefix(REF_V3).unwrap_or(r);
                            (k, json!(format!("{REF_V2}{name}")))
                        }
                        _ => (k, v2_schema(v)),
                    })
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.into_iter().map(v2_schema).collect()),
        other => other,
    }
}

fn v2_parameter(param: &Value) -> Value {
    let mut out = json!({
        "description": param["description"],
        "in": param["in"],
        "name": param["name"],
        "type": param["schema"]["type"],
        "uniqueItems": true,
    });
    if param["required"] == true {
        out["required"] = json!(true);
    }
    out
}

fn v2_path_item(item: &Value) -> Value {
    let mut out = Map::new();
    for (key, value) in item.as_object().into_iter().flatten() {
        if key == "parameters" {
            let params: Vec<Value> = value
                .as_array()
                .into_iter()
                .flatten()
                .map(v2_parameter)
                .collect();
            out.insert(key.clone(), json!(params));
        } else {
            out.insert(key.clone(), v2_operation(value));
        }
    }
    Value::Object(out)
}

fn v2_operation(op: &Value) -> Value {
    let mut out = op.clone();
    let map = out.as_object_mut().expect("operations are objects");
    let mut params: Vec<Value> = op["parameters"]
        .as_array()
        .into_iter()
        .flatten()
        .map(v2_parameter)
        .collect();
    if let Some(content) = op["requestBody"]["content"].as_object() {
        map.remove("requestBody");
        map.insert("consumes".into(), json!(content.keys().collect::<Vec<_>>()));
        let schema = content.values().next().map(|c| c["schema"].clone());
        params.insert(
            0,
            json!({
                "in": "body",
                "name": "body",
                "required": true,
                "schema": v2_schema(schema.unwrap_or_default()),
            }),
        );
    }
    if !params.is_empty() {
        map.insert("parameters".into(), json!(params));
    }
    let mut produces = BTreeSet::new();
    let mut responses = Map::new();
    for (code, response) in op["responses"].as_object().into_iter().flatten() {
        let mut r = json!({ "description": response["description"] });
        if let Some(content) = response["content"].as_object() {
            produces.extend(content.keys().cloned());
            if let Some(c) = content.values().next() {
                r["schema"] = v2_schema(c["schema"].clone());
            }
        }
        responses.insert(code.clone(), r);
    }
    map.insert("responses".into(), Value::Object(responses));
    map.insert("produces".into(), json!(produces));
    map.insert("schemes".into(), json!(["https"]));
    out
}

/// Which OpenAPI document a request asks for.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Document<'a> {
    /// `/openapi/v2`
    V2,
    /// `/openapi/v3`
    V3Discovery,
    /// `/openapi/v3/<api/v1 | apis/group/version>`
    V3(&'a str),
}

/// The parts of a GET that decide how an OpenAPI document is answered.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Conditions<'a> {
    /// The `Accept` header (empty: anything).
    pub(crate) accept: &'a str,
    /// The `hash` query parameter of a v3 group-version URL.
    pub(crate) hash: Option<&'a str>,
    /// The `If-None-Match` header.
    pub(crate) if_none_match: Option<&'a str>,
}

/// An answer to a GET of an OpenAPI document, as kube-openapi's handlers give it.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(&'static str, String)>,
    pub(crate) body: Vec<u8>,
}

/// Whether an `Accept` header admits JSON (`application/json`, `application/*`, `*/*`).
fn accepts_json(accept: &str) -> bool {
    let accept = if accept.trim().is_empty() {
        "*/*"
    } else {
        accept
    };
    accept.split(',').any(|clause| {
        let mut params = clause.split(';');
        let range = params.next().unwrap_or_default().trim();
        let refused = params.any(|p| {
            p.trim()
                .strip_prefix("q=")
                .and_then(|q| q.trim().parse::<f32>().ok())
                .is_some_and(|q| q <= 0.0)
        });
        !refused && matches!(range, "application/json" | "application/*" | "*/*")
    })
}

/// Answers a GET of `doc`: `None` when there is no such document.
///
/// Like kube-openapi: the `ETag` is the SHA-512 of the body; `If-None-Match` with it gets `304`;
/// a v3 group-version asked for with an outdated `hash` is redirected (`301`) to the current
/// one, and with the current hash it may be cached for a year (`Cache-Control: public,
/// immutable`). A client that accepts no JSON gets `406` (kube-apiserver would also offer
/// protobuf).
pub(crate) fn serve(
    registry: &Registry,
    doc: Document<'_>,
    conditions: &Conditions<'_>,
    now: chrono::DateTime<chrono::Utc>,
) -> Option<Answer> {
    let value = match doc {
        Document::V2 => v2_document(registry),
        Document::V3Discovery => v3_discovery(registry),
        Document::V3(path) => v3_document(registry, path)?,
    };
    let body = to_bytes(&value);
    let tag = etag(&body);
    let mut headers = vec![("etag", format!("\"{tag}\""))];
    if !matches!(doc, Document::V3Discovery) {
        headers.push(("vary", "Accept".into()));
        if !accepts_json(conditions.accept) {
            return Some(Answer {
                status: 406,
                headers,
                body: Vec::new(),
            });
        }
    }
    if let (Document::V3(path), Some(hash)) = (doc, conditions.hash.filter(|h| !h.is_empty())) {
        if hash != tag {
            headers.push(("location", format!("/openapi/v3/{path}?hash={tag}")));
            headers.push(("content-type", "text/html; charset=utf-8".into()));
            let link =
                format!("<a href=\"/openapi/v3/{path}?hash={tag}\">Moved Permanently</a>.\n\n");
            return Some(Answer {
                status: 301,
                headers,
                body: link.into_bytes(),
            });
        }
        headers.push(("cache-control", "public, immutable".into()));
        let expires = now + chrono::Duration::days(365);
        headers.push((
            "expires",
            expires.format("%a, %d %b %Y %H:%M:%S UTC").to_string(),
        ));
    }
    let matches = conditions.if_none_match.is_some_and(|candidates| {
        candidates.split(',').any(|c| {
            let c = c.trim();
            c == "*" || c.trim_start_matches("W/") == format!("\"{tag}\"")
        })
    });
    if matches {
        return Some(Answer {
            status: 304,
            headers,
            body: Vec::new(),
        });
    }
    headers.push(("content-type", "application/json".into()));
    Some(Answer {
        status: 200,
        headers,
        body,
    })
}

/// The bytes a document is served as.
pub(crate) fn to_bytes(doc: &Value) -> Vec<u8> {
    serde_json::to_vec(doc).expect("JSON values always serialize")
}

/// kube-openapi's `ETag`: the SHA-512 of the served bytes, in upper-case hex.
pub(crate) fn etag(bytes: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA512, bytes);
    let mut out = String::with_capacity(128);
    for byte in digest.as_ref() {
        let _ = write!(out, "{byte:02X}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry() -> Registry {
        Registry::default()
    }

    #[test]
    fn discovery_names_each_group_version_with_its_hash() {
        let r = registry();
        let discovery = v3_discovery(&r);
        let core = discovery["paths"]["api/v1"]["serverRelativeURL"]
            .as_str()
            .unwrap();
        let doc = v3_document(&r, "api/v1").unwrap();
        assert_eq!(
            core,
            format!("/openapi/v3/api/v1?hash={}", etag(&to_bytes(&doc)))
        );
        assert!(
            discovery["paths"]["apis/coordination.k8s.io/v1"]["serverRelativeURL"]
                .as_str()
                .unwrap()
                .starts_with("/openapi/v3/apis/coordination.k8s.io/v1?hash=")
        );
        assert!(v3_document(&r, "apis/nope.io/v1").is_none());
    }

    #[test]
    fn patch_operations_take_field_validation_and_four_patch_types() {
        let doc = v3_document(&registry(), "api/v1").unwrap();
        let patch = &doc["paths"]["/api/v1/namespaces/{namespace}/configmaps/{name}"]["patch"];
        assert_eq!(patch["operationId"], "patchCoreV1NamespacedConfigMap");
        assert_eq!(patch["x-kubernetes-action"], "patch");
        assert_eq!(
            patch["x-kubernetes-group-version-kind"],
            json!({ "group": "", "kind": "ConfigMap", "version": "v1" })
        );
        let names: Vec<&str> = patch["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            ["dryRun", "fieldManager", "fieldValidation", "force"]
        );
        let types: Vec<&String> = patch["requestBody"]["content"]
            .as_object()
            .unwrap()
            .keys()
            .collect();
        assert_eq!(types, PATCH_TYPES);
        let ns = &doc["paths"]["/api/v1/namespaces/{name}"]["get"];
        assert_eq!(ns["operationId"], "readCoreV1Namespace");
        assert!(doc["paths"]["/api/v1/configmaps"]["get"].is_object());
    }

    #[test]
    fn schemas_carry_kinds_and_patch_strategies() {
        let doc = v3_document(&registry(), "apis/coordination.k8s.io/v1").unwrap();
        let schemas = &doc["components"]["schemas"];
        assert!(declares(
            &schemas["io.k8s.api.coordination.v1.Lease"],
            "coordination.k8s.io",
            "v1",
            "Lease"
        ));
        let owners = &schemas[format!("{META}ObjectMeta")]["properties"]["ownerReferences"];
        assert_eq!(owners["x-kubernetes-patch-merge-key"], "uid");
        assert_eq!(owners["x-kubernetes-patch-strategy"], "merge");
        assert!(schemas[format!("{META}Status")].is_object());
        assert!(
            schemas["io.k8s.api.core.v1.ConfigMap"].is_null(),
            "only what the group-version refers to"
        );
        let mut refs = Vec::new();
        find_refs(&doc, &mut refs);
        for r in refs {
            assert!(schemas[&r].is_object(), "{r} is defined");
        }
    }

    #[test]
    fn resources_learned_at_run_time_keep_unknown_fields() {
        let mut r = registry();
        r.register(ResourceType::namespaced(
            "example.com",
            "v1",
            "widgets",
            "Widget",
        ));
        let doc = v3_document(&r, "apis/example.com/v1").unwrap();
        let widget = &doc["components"]["schemas"]["com.example.v1.Widget"];
        assert_eq!(widget["x-kubernetes-preserve-unknown-fields"], true);
        let patch =
            &doc["paths"]["/apis/example.com/v1/namespaces/{namespace}/widgets/{name}"]["patch"];
        assert_eq!(patch["operationId"], "patchExampleComV1NamespacedWidget");
        assert!(
            patch["requestBody"]["content"]["application/strategic-merge-patch+json"].is_null()
        );
    }

    #[test]
    fn v2_uses_definitions_and_body_parameters() {
        let doc = v2_document(&registry());
        assert_eq!(doc["swagger"], "2.0");
        let cm = &doc["definitions"]["io.k8s.api.core.v1.ConfigMap"];
        assert_eq!(
            cm["properties"]["metadata"]["$ref"],
            format!("{REF_V2}{META}ObjectMeta")
        );
        let patch = &doc["paths"]["/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{name}"]
            ["patch"];
        assert_eq!(patch["parameters"][0]["in"], "body");
        assert_eq!(patch["consumes"].as_array().unwrap().len(), 4);
        assert!(
            !serde_json::to_string(&doc)
                .unwrap()
                .contains("#/components/"),
            "no v3 references left"
        );
    }

    fn header<'a>(answer: &'a Answer, name: &str) -> Option<&'a str> {
        answer
            .headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn serving_negotiates_redirects_and_caches_like_kube_openapi() {
        let r = registry();
        let now = chrono::DateTime::UNIX_EPOCH;
        let doc = Document::V3("api/v1");
        let plain = serve(&r, doc, &Conditions::default(), now).unwrap();
        assert_eq!(plain.status, 200);
        let tag = etag(&plain.body);
        assert_eq!(header(&plain, "etag"), Some(format!("\"{tag}\"").as_str()));
        assert_eq!(header(&plain, "cache-control"), None, "no hash, no caching");

        let hashed = Conditions {
            hash: Some(&tag),
            ..Conditions::default()
        };
        let cached = serve(&r, doc, &hashed, now).unwrap();
        assert_eq!(header(&cached, "cache-control"), Some("public, immutable"));
        assert_eq!(
            header(&cached, "expires"),
            Some("Fri, 01 Jan 1971 00:00:00 UTC")
        );

        let stale = Conditions {
            hash: Some("0123"),
            ..Conditions::default()
        };
        let moved = serve(&r, doc, &stale, now).unwrap();
        assert_eq!(moved.status, 301);
        assert_eq!(
            header(&moved, "location"),
            Some(format!("/openapi/v3/api/v1?hash={tag}").as_str())
        );

        let quoted = format!("\"{tag}\"");
        let revalidate = Conditions {
            if_none_match: Some(&quoted),
            ..Conditions::default()
        };
        let not_modified = serve(&r, doc, &revalidate, now).unwrap();
        assert_eq!((not_modified.status, not_modified.body.len()), (304, 0));

        let protobuf = Conditions {
            accept: "application/com.github.proto-openapi.spec.v2@v1.0+protobuf",
            ..Conditions::default()
        };
        assert_eq!(serve(&r, Document::V2, &protobuf, now).unwrap().status, 406);
        let json_too = Conditions {
            accept: "application/com.github.proto-openapi.spec.v2@v1.0+protobuf, application/json;q=0.5",
            ..Conditions::default()
        };
        assert_eq!(serve(&r, Document::V2, &json_too, now).unwrap().status, 200);
        let refused = Conditions {
            accept: "application/json;q=0",
            ..Conditions::default()
        };
        assert_eq!(serve(&r, Document::V2, &refused, now).unwrap().status, 406);
        assert!(
            serve(
                &r,
                Document::V3("apis/nope/v1"),
                &Conditions::default(),
                now
            )
            .is_none()
        );
    }

    #[test]
    fn etags_are_sha512_in_upper_case_hex() {
        assert_eq!(
            etag(b"abc"),
            "DDAF35A193617ABACC417349AE20413112E6FA4E89A97EA20A9EEEE64B55D39A2192992A274FC1A836BA3C23A3FEEBBD454D4423643CE80E2A9AC94FA54CA49F"
        );
    }
}
