//! The patch types kube-apiserver accepts besides apply (see `managed`): JSON merge patch
//! (RFC 7386), strategic merge patch (with map semantics, which is all ConfigMaps and Leases
//! need) and JSON patch (RFC 6902).

use serde_json::{Map, Value};

/// RFC 7386: objects merge recursively, `null` deletes, anything else replaces.
pub(crate) fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(target) = target else {
        unreachable!("made an object above")
    };
    for (key, value) in patch {
        if value.is_null() {
            target.remove(key);
        } else {
            merge_patch(target.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
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

/// RFC 6902: `add`, `remove`, `replace`, `move`, `copy` and `test`, applied in order to a copy;
/// the target is only changed when every operation succeeds.
pub(crate) fn json_patch(target: &Value, ops: &Value) -> Result<Value, JsonPatchError> {
    let ops = ops.as_array().ok_or_else(|| {
        JsonPatchError::Malformed("a JSON patch must be a list of operations".into())
    })?;
    let mut doc = target.clone();
    for (i, op) in ops.iter().enumerate() {
        let field = |name: &str| {
            op.get(name).and_then(Value::as_str).ok_or_else(|| {
                JsonPatchError::Malformed(format!("operation {i} has no string \"{name}\""))
            })
        };
        let value = || {
            op.get("value")
                .cloned()
                .ok_or_else(|| JsonPatchError::Malformed(format!("operation {i} has no \"value\"")))
        };
        let kind = field("op")?;
        let path = parse_pointer(field("path")?)?;
        match kind {
            "add" => add(&mut doc, &path, value()?)?,
            "remove" => {
                remove(&mut doc, &path)?;
            }
            "replace" => {
                remove(&mut doc, &path)?;
                add(&mut doc, &path, value()?)?;
            }
            "move" => {
                let from = parse_pointer(field("from")?)?;
                let moved = remove(&mut doc, &from)?;
                add(&mut doc, &path, moved)?;
            }
            "copy" => {
                let from = parse_pointer(field("from")?)?;
                let copied = get(&doc, &from).cloned().ok_or_else(|| missing(&from))?;
                add(&mut doc, &path, copied)?;
            }
            "test" => {
                let expected = value()?;
                let actual = get(&doc, &path).ok_or_else(|| missing(&path))?;
                if *actual != expected {
                    return Err(JsonPatchError::Failed(format!(
                        "testing value /{} failed",
                        path.join("/")
                    )));
                }
            }
            other => {
                return Err(JsonPatchError::Malformed(format!(
                    "unexpected kind of operation: {other}"
                )));
            }
        }
    }
    Ok(doc)
}

fn missing(path: &[String]) -> JsonPatchError {
    JsonPatchError::Failed(format!(
        "doc is missing path: \"/{}\": missing value",
        path.join("/")
    ))
}

fn parse_pointer(pointer: &str) -> Result<Vec<String>, JsonPatchError> {
    if pointer.is_empty() {
        return Ok(Vec::new());
    }
    let rest = pointer.strip_prefix('/').ok_or_else(|| {
        JsonPatchError::Malformed(format!("a JSON pointer must start with '/': {pointer:?}"))
    })?;
    Ok(rest
        .split('/')
        .map(|t| t.replace("~1", "/").replace("~0", "~"))
        .collect())
}

fn get<'a>(doc: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(doc, |v, token| match v {
        Value::Object(m) => m.get(token),
        Value::Array(a) => token.parse::<usize>().ok().and_then(|i| a.get(i)),
        _ => None,
    })
}

fn parent<'a>(doc: &'a mut Value, path: &[String]) -> Result<&'a mut Value, JsonPatchError> {
    let parent_path = &path[..path.len() - 1];
    let mut current = doc;
    for token in parent_path {
        current = match current {
            Value::Object(m) => m.get_mut(token),
            Value::Array(a) => token.parse::<usize>().ok().and_then(|i| a.get_mut(i)),
            _ => None,
        }
        .ok_or_else(|| missing(parent_path))?;
    }
    Ok(current)
}

fn add(doc: &mut Value, path: &[String], value: Value) -> Result<(), JsonPatchError> {
    let Some(last) = path.last() else {
        *doc = value;
        return Ok(());
    };
    match parent(doc, path)? {
        Value::Object(m) => {
            m.insert(last.clone(), value);
            Ok(())
        }
        Value::Array(a) => {
            let index = if last == "-" {
                a.len()
            } else {
                last.parse::<usize>()
                    .ok()
                    .filter(|&i| i <= a.len())
                    .ok_or_else(|| JsonPatchError::Failed(format!("index out of bounds: {last}")))?
            };
            a.insert(index, value);
            Ok(())
        }
        _ => Err(missing(path)),
    }
}

fn remove(doc: &mut Value, path: &[String]) -> Result<Value, JsonPatchError> {
    let Some(last) = path.last() else {
        return Ok(std::mem::take(doc));
    };
    match parent(doc, path)? {
        Value::Object(m) => m.remove(last).ok_or_else(|| missing(path)),
        Value::Array(a) => match last.parse::<usize>() {
            Ok(i) if i < a.len() => Ok(a.remove(i)),
            _ => Err(missing(path)),
        },
        _ => Err(missing(path)),
    }
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
    }
}
