//! The patch types kube-apiserver accepts besides apply (see `managed`): JSON merge patch
//! (RFC 7386) and JSON patch (RFC 6902) from the `json-patch` crate, and strategic merge patch
//! (with map semantics, which is all ConfigMaps and Leases need), which is ours.

use serde::Deserialize;
use serde_json::{Map, Value};

/// RFC 7386: objects merge recursively, `null` deletes, anything else replaces.
pub(crate) fn merge_patch(target: &mut Value, patch: &Value) {
    json_patch::merge(target, patch);
}

/// Strategic merge patch with map semantics: like [`merge_patch`], plus the `$patch: replace`
/// and `$patch: delete` directives on maps; other `$` directives are dropped. Lists are
/// replaced whole (the real server merges some lists by key; no ConfigMap or Lease field is
/// such a list).
pub(crate) fn strategic_merge_patch(target: &mut Value, patch: &Value) -> Result<(), String> {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return Ok(());
    };
    match patch.get("$patch").and_then(Value::as_str) {
        None => {}
        Some("replace") => {
            let mut replacement = patch.clone();
            replacement.remove("$patch");
            *target = Value::Object(strip_directives(replacement));
            return Ok(());
        }
        Some("delete") => {
            *target = Value::Null;
            return Ok(());
        }
        Some(other) => return Err(format!("unknown patch type: {other}")),
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(map) = target else {
        unreachable!("made an object above")
    };
    for (key, value) in patch {
        if key.starts_with('$') {
            continue;
        }
        if value.is_null() {
            map.remove(key);
            continue;
        }
        let slot = map.entry(key.clone()).or_insert(Value::Null);
        strategic_merge_patch(slot, value)?;
        if slot.is_null() {
            map.remove(key);
        }
    }
    Ok(())
}

fn strip_directives(mut map: Map<String, Value>) -> Map<String, Value> {
    map.retain(|k, _| !k.starts_with('$'));
    for value in map.values_mut() {
        if let Value::Object(inner) = value {
            *inner = strip_directives(std::mem::take(inner));
        }
    }
    map
}

/// Why a JSON patch could not be applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum JsonPatchError {
    /// The body is not a list of operations.
    Malformed(String),
    /// An operation could not be applied (a missing path, a failed `test`).
    Failed(String),
}

/// RFC 6902 with the `json-patch` crate: the operations apply in order to a copy, and
/// `target` only changes when every one succeeds.
pub(crate) fn json_patch(target: &Value, ops: &Value) -> Result<Value, JsonPatchError> {
    let ops = json_patch::Patch::deserialize(ops)
        .map_err(|e| JsonPatchError::Malformed(format!("invalid JSON patch: {e}")))?;
    let mut doc = target.clone();
    // `patch_unsafe` on a copy: the crate's `patch` undoes a failed patch in place and panics
    // if it cannot, and a copy needs no undoing.
    json_patch::patch_unsafe(&mut doc, &ops.0)
        .map_err(|e| JsonPatchError::Failed(e.to_string()))?;
    Ok(doc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_rfc7386_examples() {
        let mut doc = json!({"a": "b", "c": {"d": "e", "f": "g"}});
        merge_patch(&mut doc, &json!({"a": "z", "c": {"f": null}}));
        assert_eq!(doc, json!({"a": "z", "c": {"d": "e"}}));
        let mut doc = json!({"a": [1, 2]});
        merge_patch(&mut doc, &json!({"a": [3], "b": {"c": null}}));
        assert_eq!(doc, json!({"a": [3], "b": {}}));
    }

    #[test]
    fn strategic_merge_directives() {
        let mut doc = json!({"data": {"a": "1", "b": "2"}, "metadata": {"labels": {"x": "y"}}});
        strategic_merge_patch(
            &mut doc,
            &json!({"data": {"$patch": "replace", "c": "3"}, "metadata": {"labels": {"$patch": "delete"}}}),
        )
        .unwrap();
        assert_eq!(doc, json!({"data": {"c": "3"}, "metadata": {}}));
        assert!(strategic_merge_patch(&mut doc, &json!({"$patch": "bogus"})).is_err());
    }

    #[test]
    fn json_patch_all_operations() {
        let doc = json!({"data": {"a": "1", "b/c": "2"}, "list": [1, 2]});
        let out = json_patch(
            &doc,
            &json!([
                {"op": "test", "path": "/data/a", "value": "1"},
                {"op": "add", "path": "/data/new", "value": "n"},
                {"op": "remove", "path": "/data/b~1c"},
                {"op": "replace", "path": "/list/0", "value": 9},
                {"op": "add", "path": "/list/-", "value": 3},
                {"op": "copy", "from": "/data/a", "path": "/data/copied"},
                {"op": "move", "from": "/data/new", "path": "/moved"},
            ]),
        )
        .unwrap();
        assert_eq!(
            out,
            json!({"data": {"a": "1", "copied": "1"}, "list": [9, 2, 3], "moved": "n"})
        );
    }

    #[test]
    fn json_patch_failures_leave_target_alone() {
        let doc = json!({"a": 1});
        let err = json_patch(&doc, &json!([{"op": "test", "path": "/a", "value": 2}]));
        assert!(matches!(err, Err(JsonPatchError::Failed(_))));
        let err = json_patch(&doc, &json!([{"op": "remove", "path": "/nope"}]));
        assert!(matches!(err, Err(JsonPatchError::Failed(_))));
        let err = json_patch(&doc, &json!({"op": "add"}));
        assert!(matches!(err, Err(JsonPatchError::Malformed(_))));
        let err = json_patch(&doc, &json!([{"op": "frobnicate", "path": "/a"}]));
        assert!(matches!(err, Err(JsonPatchError::Malformed(_))));
        let err = json_patch(&doc, &json!([{"op": "add", "path": "/a"}]));
        assert!(matches!(err, Err(JsonPatchError::Malformed(_))), "no value");
    }
}
