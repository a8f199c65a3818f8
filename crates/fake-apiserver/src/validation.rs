//! Object validation with kube-apiserver's limits and messages (`422 Invalid`).

use serde_json::{Map, Value};

use super::status::Cause;
pub(crate) use crate::names::dns1123_subdomain_errors;
use crate::names::{
    DNS1123_SUBDOMAIN_MAX, dns1123_subdomain_errors_in_bytes, is_dns1123_label_shape,
};

/// Largest total of the `data` and `binaryData` values of a ConfigMap or Secret, in bytes.
pub(crate) const MAX_CONFIGMAP_BYTES: usize = 1024 * 1024;
/// Largest total of all annotation keys and values of one object, in bytes.
pub(crate) const MAX_ANNOTATIONS_BYTES: usize = 256 * 1024;
const DNS1123_LABEL_MAX: usize = 63;
const LABEL_VALUE_MAX: usize = 63;
const QUALIFIED_NAME_MAX: usize = 63;

const DNS1123_LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case \
alphanumeric characters or '-', and must start and end with an alphanumeric character \
(e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const LABEL_VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric \
characters, '-', '_' or '.', and must start and end with an alphanumeric character \
(e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is \
'(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";
const QUALIFIED_NAME_MSG: &str = "name part must consist of alphanumeric characters, '-', '_' or \
'.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or \
'123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
const CONFIG_KEY_MSG: &str = "a valid config key must consist of alphanumeric characters, '-', \
'_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is \
'[-._a-zA-Z0-9]+')";

/// Why `name` is not a DNS-1123 label (empty when it is one).
pub(crate) fn dns1123_label_errors(name: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if name.len() > DNS1123_LABEL_MAX {
        errors.push(format!(
            "must be no more than {DNS1123_LABEL_MAX} characters"
        ));
    }
    if !is_dns1123_label_shape(name) {
        errors.push(DNS1123_LABEL_MSG.to_owned());
    }
    errors
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`
fn is_name_part(s: &str) -> bool {
    !s.is_empty()
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Why `key` is not a qualified name (`[prefix/]name`, as label and annotation keys must be).
pub(crate) fn qualified_name_errors(key: &str) -> Vec<String> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    let mut errors = Vec::new();
    if let Some(prefix) = prefix {
        if prefix.is_empty() {
            errors.push("prefix part must be non-empty".to_owned());
        } else {
            errors.extend(
                dns1123_subdomain_errors_in_bytes(prefix)
                    .into_iter()
                    .map(|e| format!("prefix part {e}")),
            );
        }
    }
    if name.is_empty() {
        errors.push("name part must be non-empty".to_owned());
    } else {
        if name.len() > QUALIFIED_NAME_MAX {
            errors.push(format!(
                "name part must be no more than {QUALIFIED_NAME_MAX} bytes"
            ));
        }
        if !is_name_part(name) {
            errors.push(QUALIFIED_NAME_MSG.to_owned());
        }
    }
    errors
}

/// Why `value` is not a valid label value (empty when it is one).
pub(crate) fn label_value_errors(value: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if value.len() > LABEL_VALUE_MAX {
        errors.push(format!("must be no more than {LABEL_VALUE_MAX} bytes"));
    }
    if !value.is_empty() && !is_name_part(value) {
        errors.push(LABEL_VALUE_MSG.to_owned());
    }
    errors
}

fn invalid(field: String, value: &str, why: &str) -> Cause {
    Cause {
        reason: "FieldValueInvalid",
        message: format!("Invalid value: \"{value}\": {why}"),
        field,
    }
}

fn too_long(field: String, max: usize) -> Cause {
    Cause {
        reason: "FieldValueTooLong",
        message: format!("Too long: may not be more than {max} bytes"),
        field,
    }
}

/// Validates an object about to be stored. `kind` selects kind-specific rules; `cluster_scoped`
/// objects (namespaces) need DNS-1123 label names.
pub(crate) fn validate(kind: &str, object: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let meta = object.get("metadata").and_then(Value::as_object);
    let name = meta
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    let names = |name: &str| {
        if kind == "Namespace" {
            dns1123_label_errors(name)
        } else {
            dns1123_subdomain_errors(name)
        }
    };
    let prefix = meta
        .and_then(|m| m.get("generateName"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    if !prefix.is_empty() {
        // A prefix may end with a dash: it is checked as if that were a letter.
        let masked = match prefix.strip_suffix('-') {
            Some(rest) => format!("{rest}a"),
            None => prefix.to_owned(),
        };
        causes.extend(
            names(&masked)
                .iter()
                .map(|e| invalid("metadata.generateName".to_owned(), prefix, e)),
        );
    }
    if name.is_empty() {
        causes.push(Cause {
            reason: "FieldValueRequired",
            message: "Required value: name or generateName is required".to_owned(),
            field: "metadata.name".to_owned(),
        });
    } else {
        causes.extend(
            names(name)
                .iter()
                .map(|e| invalid("metadata.name".to_owned(), name, e)),
        );
    }
    if let Some(meta) = meta {
        validate_labels(meta.get("labels"), &mut causes);
        validate_annotations(meta.get("annotations"), &mut causes);
    }
    if kind == "ConfigMap" || kind == "Secret" {
        validate_config_data(object, &mut causes);
    }
    if kind == "Lease" {
        validate_lease_spec(&object["spec"], &mut causes);
    }
    causes
}

/// `ValidateLeaseSpec`: positive durations, transitions not negative, a preferred holder only
/// with a strategy.
fn validate_lease_spec(spec: &Value, causes: &mut Vec<Cause>) {
    if let Some(duration) = spec["leaseDurationSeconds"].as_i64()
        && duration <= 0
    {
        causes.push(Cause {
            reason: "FieldValueInvalid",
            message: format!("Invalid value: {duration}: must be greater than 0"),
            field: "spec.leaseDurationSeconds".to_owned(),
        });
    }
    if let Some(transitions) = spec["leaseTransitions"].as_i64()
        && transitions < 0
    {
        causes.push(Cause {
            reason: "FieldValueInvalid",
            message: format!("Invalid value: {transitions}: must be greater than or equal to 0"),
            field: "spec.leaseTransitions".to_owned(),
        });
    }
    let strategy = spec["strategy"].as_str();
    if let Some(strategy) = strategy {
        if strategy.contains('/') {
            for e in qualified_name_errors(strategy) {
                causes.push(invalid("spec.strategy".to_owned(), strategy, &e));
            }
        } else if strategy != "OldestEmulationVersion" {
            causes.push(Cause {
                reason: "FieldValueNotSupported",
                message: format!(
                    "Unsupported value: \"{strategy}\": supported values: \"OldestEmulationVersion\""
                ),
                field: "spec.strategy".to_owned(),
            });
        }
    }
    if spec["preferredHolder"]
        .as_str()
        .is_some_and(|h| !h.is_empty())
        && strategy.is_none_or(str::is_empty)
    {
        causes.push(Cause {
            reason: "FieldValueForbidden",
            message: "Forbidden: may only be specified if `strategy` is defined".to_owned(),
            field: "spec.preferredHolder".to_owned(),
        });
    }
}

fn string_map<'a>(
    value: Option<&'a Value>,
    field: &str,
    causes: &mut Vec<Cause>,
) -> Option<&'a Map<String, Value>> {
    match value {
        None | Some(Value::Null) => None,
        Some(Value::Object(map)) => {
            for (key, v) in map {
                if !v.is_string() {
                    causes.push(Cause {
                        reason: "FieldValueTypeInvalid",
                        message: format!("Invalid value: {v}: must be a string"),
                        field: format!("{field}[{key}]"),
                    });
                }
            }
            Some(map)
        }
        Some(other) => {
            causes.push(Cause {
                reason: "FieldValueTypeInvalid",
                message: format!("Invalid value: {other}: must be a map of strings"),
                field: field.to_owned(),
            });
            None
        }
    }
}

fn validate_labels(labels: Option<&Value>, causes: &mut Vec<Cause>) {
    let Some(labels) = string_map(labels, "metadata.labels", causes) else {
        return;
    };
    for (key, value) in labels {
        for e in qualified_name_errors(key) {
            causes.push(invalid("metadata.labels".to_owned(), key, &e));
        }
        let value = value.as_str().unwrap_or_default();
        for e in label_value_errors(value) {
            causes.push(invalid("metadata.labels".to_owned(), value, &e));
        }
    }
}

fn validate_annotations(annotations: Option<&Value>, causes: &mut Vec<Cause>) {
    let Some(annotations) = string_map(annotations, "metadata.annotations", causes) else {
        return;
    };
    let mut total = 0;
    for (key, value) in annotations {
        for e in qualified_name_errors(&key.to_lowercase()) {
            causes.push(invalid("metadata.annotations".to_owned(), key, &e));
        }
        total += key.len() + value.as_str().map_or(0, str::len);
    }
    if total > MAX_ANNOTATIONS_BYTES {
        causes.push(too_long(
            "metadata.annotations".to_owned(),
            MAX_ANNOTATIONS_BYTES,
        ));
    }
}

fn validate_config_data(object: &Value, causes: &mut Vec<Cause>) {
    let mut total = 0;
    for field in ["data", "binaryData", "stringData"] {
        let Some(map) = string_map(object.get(field), field, causes) else {
            continue;
        };
        for (key, value) in map {
            let key_ok = !key.is_empty()
                && key.len() <= DNS1123_SUBDOMAIN_MAX
                && key
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                && key != "."
                && key != ".."
                && !key.starts_with("..");
            if !key_ok {
                causes.push(invalid(format!("{field}[{key}]"), key, CONFIG_KEY_MSG));
            }
            if field == "data" && object["binaryData"].get(key).is_some() {
                causes.push(invalid(
                    format!("data[{key}]"),
                    key,
                    "duplicate of key present in binaryData",
                ));
            }
            // Like kube-apiserver, only values count towards the limit.
            total += value.as_str().map_or(0, str::len);
        }
    }
    if total > MAX_CONFIGMAP_BYTES {
        causes.push(too_long("[]".to_owned(), MAX_CONFIGMAP_BYTES));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn subdomains() {
        for ok in ["a", "lockheed-x", "a.b-c.d", "0abc", &"a".repeat(253)] {
            assert!(dns1123_subdomain_errors(ok).is_empty(), "{ok}");
        }
        for bad in ["", "A", "-a", "a-", "a..b", "a_b", "a/b", &"a".repeat(254)] {
            assert!(!dns1123_subdomain_errors(bad).is_empty(), "{bad}");
        }
    }

    #[test]
    fn qualified_names_and_label_values() {
        assert!(qualified_name_errors("lockheed/lock").is_empty());
        assert!(qualified_name_errors("app.kubernetes.io/name").is_empty());
        assert!(qualified_name_errors("Simple_Key.1").is_empty());
        assert!(!qualified_name_errors("/x").is_empty());
        assert!(!qualified_name_errors("x/").is_empty());
        assert!(!qualified_name_errors("UPPER.example/x").is_empty());
        assert!(!qualified_name_errors(&"k".repeat(64)).is_empty());
        assert!(label_value_errors("").is_empty());
        assert!(label_value_errors("My_Value-1.2").is_empty());
        assert!(!label_value_errors("-x").is_empty());
        assert!(!label_value_errors(&"v".repeat(64)).is_empty());
    }

    #[test]
    fn configmap_size_limit_counts_values() {
        let fits = "x".repeat(MAX_CONFIGMAP_BYTES);
        let cm = json!({"metadata": {"name": "a"}, "data": {"k": fits}});
        assert!(validate("ConfigMap", &cm).is_empty());
        let cm = json!({"metadata": {"name": "a"}, "data": {"k": fits, "j": "y"}});
        let causes = validate("ConfigMap", &cm);
        assert_eq!(causes.len(), 1);
        assert_eq!(causes[0].reason, "FieldValueTooLong");
    }

    #[test]
    fn annotation_limit_is_over_all_annotations() {
        let half = "x".repeat(MAX_ANNOTATIONS_BYTES / 2);
        let obj = json!({"metadata": {"name": "a", "annotations": {"a": half, "b": half}}});
        let causes = validate("Lease", &obj);
        assert_eq!(causes.len(), 1);
        assert_eq!(causes[0].field, "metadata.annotations");
    }

    #[test]
    fn bad_keys_and_names() {
        let obj = json!({"metadata": {"name": "Bad_Name", "labels": {"ok": "not ok"}},
                         "data": {"bad key": "v"}});
        let fields: Vec<_> = validate("ConfigMap", &obj)
            .into_iter()
            .map(|c| c.field)
            .collect();
        assert_eq!(
            fields,
            ["metadata.name", "metadata.labels", "data[bad key]"]
        );
        let ns = json!({"metadata": {"name": "a.b"}});
        assert_eq!(validate("Namespace", &ns).len(), 1);
    }

    #[test]
    fn generated_names_check_their_prefix() {
        let ok = json!({"metadata": {"name": "gen-x1y2z", "generateName": "gen-"}});
        assert!(validate("ConfigMap", &ok).is_empty());
        let bad = json!({"metadata": {"name": "Gen-x1y2z", "generateName": "Gen-"}});
        let fields: Vec<_> = validate("ConfigMap", &bad)
            .into_iter()
            .map(|c| c.field)
            .collect();
        assert_eq!(fields, ["metadata.generateName", "metadata.name"]);
    }

    #[test]
    fn lease_specs() {
        let lease = |spec| json!({"metadata": {"name": "l"}, "spec": spec});
        assert!(validate("Lease", &lease(json!({"leaseDurationSeconds": 1}))).is_empty());
        let causes = validate(
            "Lease",
            &lease(
                json!({"leaseDurationSeconds": 0, "leaseTransitions": -1, "preferredHolder": "x"}),
            ),
        );
        let messages: Vec<_> = causes.iter().map(|c| c.message.as_str()).collect();
        assert_eq!(
            messages,
            [
                "Invalid value: 0: must be greater than 0",
                "Invalid value: -1: must be greater than or equal to 0",
                "Forbidden: may only be specified if `strategy` is defined",
            ]
        );
    }
}
