//! Server-side field validation (the `fieldValidation` parameter of create, update and patch),
//! against the schemas this server publishes.
//!
//! kube-apiserver decodes a request body into the kind's Go type: a field the type does not
//! have is dropped (`Ignore`), dropped with a `Warning` header (`Warn`, the default), or fails
//! the request with `400 BadRequest` (`Strict`, what `kubectl` sends by default). Server-side
//! apply rejects undeclared fields whatever the directive. Resources without a built-in schema
//! keep every field, like a `CustomResourceDefinition` with `x-kubernetes-preserve-unknown-fields`.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::{REF_V3, builtin_schemas, declares};
use crate::resources::ResourceType;
use crate::status::ApiError;

/// What to do with fields the kind does not declare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Directive {
    Ignore,
    Warn,
    Strict,
}

impl Directive {
    /// The directive of a create (`CreateOptions`), update (`UpdateOptions`) or patch
    /// (`PatchOptions`): `Warn` when absent, `422 Invalid` when unknown.
    pub(crate) fn from_query(
        query: &BTreeMap<String, String>,
        options_kind: &str,
    ) -> Result<Self, ApiError> {
        match query.get("fieldValidation").map(String::as_str) {
            None | Some("" | "Warn") => Ok(Self::Warn),
            Some("Ignore") => Ok(Self::Ignore),
            Some("Strict") => Ok(Self::Strict),
            Some(other) => {
                let message = format!(
                    "Unsupported value: \"{other}\": supported values: \"\", \"Ignore\", \"Strict\", \"Warn\""
                );
                let mut err = ApiError::new(
                    422,
                    "Invalid",
                    format!(
                        "{options_kind}.meta.k8s.io \"\" is invalid: fieldValidation: {message}"
                    ),
                );
                err.details = Some(json!({
                    "group": "meta.k8s.io",
                    "kind": options_kind,
                    "causes": [{
                        "reason": "FieldValueNotSupported",
                        "message": message,
                        "field": "fieldValidation",
                    }],
                }));
                Err(err)
            }
        }
    }
}

/// The schema of a built-in kind, if this server has one.
fn root(rt: &ResourceType) -> Option<&'static Value> {
    builtin_schemas()
        .values()
        .find(|s| declares(s, &rt.group, &rt.version, &rt.kind))
}

/// Follows `$ref` (bare or inside a one-element `allOf`) to the definition it names.
fn resolve(schema: &Value) -> &Value {
    let target = schema["$ref"]
        .as_str()
        .or_else(|| schema["allOf"][0]["$ref"].as_str())
        .and_then(|r| r.strip_prefix(REF_V3))
        .and_then(|name| builtin_schemas().get(name));
    target.unwrap_or(schema)
}

/// Records (and with `remove`, drops) every field of `value` that `schema` does not declare.
/// `directives`: keys starting with `$` are strategic merge patch directives, not fields.
fn walk(
    schema: &Value,
    value: &mut Value,
    path: &str,
    remove: bool,
    directives: bool,
    out: &mut Vec<String>,
) {
    let schema = resolve(schema);
    if schema["x-kubernetes-preserve-unknown-fields"] == true {
        return;
    }
    let child = |key: &str| {
        if path.is_empty() {
            key.to_owned()
        } else {
            format!("{path}.{key}")
        }
    };
    match value {
        Value::Object(map) => {
            if let Some(properties) = schema["properties"].as_object() {
                let mut unknown = Vec::new();
                for (key, v) in map.iter_mut() {
                    if directives && key.starts_with('$') {
                        continue;
                    }
                    if let Some(s) = properties.get(key) {
                        walk(s, v, &child(key), remove, directives, out);
                    } else {
                        out.push(child(key));
                        unknown.push(key.clone());
                    }
                }
                if remove {
                    for key in unknown {
                        map.remove(&key);
                    }
                }
            } else if let Some(values) =
                schema.get("additionalProperties").filter(|s| s.is_object())
            {
                for (key, v) in map.iter_mut() {
                    walk(values, v, &child(key), remove, directives, out);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item) = schema.get("items").filter(|s| s.is_object()) {
                for (i, v) in items.iter_mut().enumerate() {
                    walk(item, v, &format!("{path}[{i}]"), remove, directives, out);
                }
            }
        }
        _ => {}
    }
}

/// The fields of `object` that kind `rt` does not declare (`spec`, `metadata.labelz`,
/// `spec.items[0].x`), in the order of the object's keys.
pub(crate) fn unknown_fields(rt: &ResourceType, object: &Value) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(schema) = root(rt) {
        walk(schema, &mut object.clone(), "", false, false, &mut out);
    }
    out
}

/// Drops the fields kind `rt` does not declare from `object` (an object, a merge patch, or with
/// `strategic` a strategic merge patch whose `$` directives stay).
pub(crate) fn prune(rt: &ResourceType, object: &mut Value, strategic: bool) {
    if let Some(schema) = root(rt) {
        walk(schema, object, "", true, strategic, &mut Vec::new());
    }
}

/// The JSON merge patch (RFC 7386) that turns `from` into `to` (neither holding `null`s).
pub(crate) fn merge_diff(from: &Value, to: &Value) -> Value {
    match (from, to) {
        (Value::Object(old), Value::Object(new)) => {
            let mut patch = serde_json::Map::new();
            for key in old.keys().filter(|k| !new.contains_key(*k)) {
                patch.insert(key.clone(), Value::Null);
            }
            for (key, value) in new {
                match old.get(key) {
                    Some(before) if before == value => {}
                    Some(before) => {
                        patch.insert(key.clone(), merge_diff(before, value));
                    }
                    None => {
                        patch.insert(key.clone(), value.clone());
                    }
                }
            }
            Value::Object(patch)
        }
        _ => to.clone(),
    }
}

/// `unknown field "a", unknown field "b"`: the list in a strict decoding error.
fn strict_errors(unknown: &[String]) -> String {
    unknown
        .iter()
        .map(|f| format!("unknown field \"{f}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The `Warning` header values (`299 - "unknown field \"x\""`) for `unknown`.
pub(crate) fn warnings(unknown: &[String]) -> Vec<String> {
    unknown
        .iter()
        .map(|f| format!("299 - \"unknown field \\\"{f}\\\"\""))
        .collect()
}

/// Checks the body of a create or update: `Strict` fails on an unknown field; otherwise unknown
/// fields are dropped, and returned for `Warn` to warn about.
pub(crate) fn check_body(
    rt: &ResourceType,
    body: &mut Value,
    directive: Directive,
) -> Result<Vec<String>, ApiError> {
    let unknown = unknown_fields(rt, body);
    if unknown.is_empty() {
        return Ok(unknown);
    }
    if directive == Directive::Strict {
        let kind = &rt.kind;
        return Err(ApiError::bad_request(format!(
            "{kind} in version \"{}\" cannot be handled as a {kind}: strict decoding error: {}",
            rt.version,
            strict_errors(&unknown)
        )));
    }
    prune(rt, body, false);
    Ok(if directive == Directive::Warn {
        unknown
    } else {
        Vec::new()
    })
}

/// The error of a patch whose result has unknown fields under `Strict`.
pub(crate) fn strict_patch_error(unknown: &[String]) -> ApiError {
    ApiError::bad_request(format!("strict decoding error: {}", strict_errors(unknown)))
}

/// The error of a server-side apply whose configuration has a field the kind does not
/// declare: kube-apiserver's structured-merge conversion fails with a plain error, which it
/// answers as `500` without a reason.
pub(crate) fn apply_error(
    rt: &ResourceType,
    namespace: &str,
    name: &str,
    config: &Value,
) -> Option<ApiError> {
    let first = unknown_fields(rt, config).into_iter().next()?;
    let group = &rt.group;
    Some(ApiError::new(
        500,
        "",
        format!(
            "failed to create typed patch object ({namespace}/{name}; {group}/{}, Kind={}): \
             .{first}: field not declared in schema",
            rt.version, rt.kind
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_map() -> ResourceType {
        ResourceType::namespaced("", "v1", "configmaps", "ConfigMap")
    }

    #[test]
    fn finds_unknown_fields_at_any_depth() {
        let object = json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": "a",
                "labelz": {},
                "ownerReferences": [{ "uid": "u", "kind": "K", "name": "n", "apiVersion": "v1", "x": 1 }],
            },
            "data": { "anything": "goes" },
            "spec": {},
        });
        assert_eq!(
            unknown_fields(&config_map(), &object),
            ["metadata.labelz", "metadata.ownerReferences[0].x", "spec"]
        );
        let widget = ResourceType::namespaced("example.com", "v1", "widgets", "Widget");
        assert!(unknown_fields(&widget, &object).is_empty());
    }

    #[test]
    fn strict_fails_warn_and_ignore_drop() {
        let body = json!({ "metadata": { "name": "a" }, "spec": { "x": 1 } });
        let err = check_body(&config_map(), &mut body.clone(), Directive::Strict).unwrap_err();
        assert_eq!(err.code, 400);
        assert_eq!(
            err.message,
            "ConfigMap in version \"v1\" cannot be handled as a ConfigMap: strict decoding error: \
             unknown field \"spec\""
        );
        let mut warned = body.clone();
        let unknown = check_body(&config_map(), &mut warned, Directive::Warn).unwrap();
        assert_eq!(warnings(&unknown), ["299 - \"unknown field \\\"spec\\\"\""]);
        assert_eq!(warned, json!({ "metadata": { "name": "a" } }));
        let mut ignored = body;
        assert!(
            check_body(&config_map(), &mut ignored, Directive::Ignore)
                .unwrap()
                .is_empty()
        );
        assert!(ignored.get("spec").is_none());
    }

    #[test]
    fn merge_diffs_turn_one_object_into_the_other() {
        let from = json!({ "a": 1, "b": { "c": [1, 2], "d": "x" }, "gone": true });
        let to = json!({ "a": 1, "b": { "c": [2], "d": "x", "e": {} }, "new": "y" });
        let patch = merge_diff(&from, &to);
        assert_eq!(
            patch,
            json!({ "b": { "c": [2], "e": {} }, "gone": null, "new": "y" })
        );
        let mut applied = from;
        crate::patch::merge_patch(&mut applied, &patch);
        assert_eq!(applied, to);
    }

    #[test]
    fn strategic_directives_are_not_fields() {
        let mut patch = json!({ "$patch": "replace", "data": { "a": "b" }, "extra": 1 });
        prune(&config_map(), &mut patch, true);
        assert_eq!(patch, json!({ "$patch": "replace", "data": { "a": "b" } }));
    }

    #[test]
    fn directives_parse_like_kube_apiserver() {
        let q = |v: &str| BTreeMap::from([("fieldValidation".to_owned(), v.to_owned())]);
        assert_eq!(
            Directive::from_query(&BTreeMap::new(), "CreateOptions").unwrap(),
            Directive::Warn
        );
        assert_eq!(
            Directive::from_query(&q("Strict"), "CreateOptions").unwrap(),
            Directive::Strict
        );
        let err = Directive::from_query(&q("strict"), "PatchOptions").unwrap_err();
        assert_eq!(err.code, 422);
        assert!(
            err.message
                .starts_with("PatchOptions.meta.k8s.io \"\" is invalid")
        );
    }

    #[test]
    fn apply_names_the_first_undeclared_field() {
        let lease = ResourceType::namespaced("coordination.k8s.io", "v1", "leases", "Lease");
        let err = apply_error(&lease, "d", "l", &json!({ "spec": { "holder": "x" } })).unwrap();
        assert_eq!(err.code, 500);
        assert_eq!(
            err.message,
            "failed to create typed patch object (d/l; coordination.k8s.io/v1, Kind=Lease): \
             .spec.holder: field not declared in schema"
        );
        assert_eq!(err.to_status().get("reason"), None);
        assert!(apply_error(&lease, "d", "l", &json!({ "spec": {} })).is_none());
    }
}
