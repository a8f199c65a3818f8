//! Label and field selectors, parsed and matched the way kube-apiserver does.

use serde_json::{Map, Value};

/// One requirement of a label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

impl Requirement {
    fn matches(&self, labels: Option<&Map<String, Value>>) -> bool {
        let get = |key: &str| labels.and_then(|l| l.get(key)).and_then(Value::as_str);
        match self {
            Self::Equals(k, v) => get(k) == Some(v.as_str()),
            // Like Kubernetes: `!=` and `notin` also match objects without the label.
            Self::NotEquals(k, v) => get(k) != Some(v.as_str()),
            Self::In(k, vs) => get(k).is_some_and(|have| vs.iter().any(|v| v == have)),
            Self::NotIn(k, vs) => get(k).is_none_or(|have| vs.iter().all(|v| v != have)),
            Self::Exists(k) => get(k).is_some(),
            Self::DoesNotExist(k) => get(k).is_none(),
        }
    }
}

/// A parsed `labelSelector`: every requirement must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct LabelSelector {
    requirements: Vec<Requirement>,
}

impl LabelSelector {
    /// Parses the selector grammar of `k8s.io/apimachinery/pkg/labels`: comma-separated
    /// `key`, `!key`, `key=value`, `key==value`, `key!=value`, `key in (a,b)`, `key notin (a,b)`.
    pub(crate) fn parse(input: &str) -> Result<Self, String> {
        let mut requirements = Vec::new();
        for part in split_top_level(input)? {
            let part = part.trim();
            if part.is_empty() {
                if input.trim().is_empty() {
                    continue;
                }
                return Err(format!(
                    "unable to parse requirement: found '', expected: identifier in {input:?}"
                ));
            }
            requirements.push(parse_requirement(part)?);
        }
        Ok(Self { requirements })
    }

    pub(crate) fn matches(&self, labels: Option<&Map<String, Value>>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }
}

/// Splits on commas that are not inside `( )`.
fn split_top_level(input: &str) -> Result<Vec<&str>, String> {
    let mut parts = Vec::new();
    let mut depth = 0_i32;
    let mut start = 0;
    for (i, c) in input.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth < 0 {
                    return Err(format!(
                        "unable to parse requirement: unexpected ')' in {input:?}"
                    ));
                }
            }
            ',' if depth == 0 => {
                parts.push(&input[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(format!(
            "unable to parse requirement: unclosed '(' in {input:?}"
        ));
    }
    parts.push(&input[start..]);
    Ok(parts)
}

fn parse_requirement(part: &str) -> Result<Requirement, String> {
    if let Some(key) = part.strip_prefix('!') {
        let key = valid_key(key.trim())?;
        return Ok(Requirement::DoesNotExist(key));
    }
    if let Some((key, value)) = part.split_once("!=") {
        return Ok(Requirement::NotEquals(
            valid_key(key.trim())?,
            valid_value(value.trim())?,
        ));
    }
    if let Some((key, value)) = part.split_once("==") {
        return Ok(Requirement::Equals(
            valid_key(key.trim())?,
            valid_value(value.trim())?,
        ));
    }
    if let Some((key, value)) = part.split_once('=') {
        return Ok(Requirement::Equals(
            valid_key(key.trim())?,
            valid_value(value.trim())?,
        ));
    }
    let mut words = part.splitn(2, char::is_whitespace);
    let key = words.next().unwrap_or_default();
    let rest = words.next().map(str::trim).unwrap_or_default();
    if rest.is_empty() {
        return Ok(Requirement::Exists(valid_key(key)?));
    }
    let key = valid_key(key)?;
    let (negate, list) = if let Some(list) = rest.strip_prefix("notin") {
        (true, list)
    } else if let Some(list) = rest.strip_prefix("in") {
        (false, list)
    } else {
        return Err(format!(
            "unable to parse requirement: found '{rest}', expected: in, notin, =, ==, !=, gt, lt"
        ));
    };
    let list = list.trim();
    let inner = list
        .strip_prefix('(')
        .and_then(|l| l.strip_suffix(')'))
        .ok_or_else(|| format!("unable to parse requirement: found '{list}', expected: '('"))?;
    let values = inner
        .split(',')
        .map(|v| valid_value(v.trim()))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(if negate {
        Requirement::NotIn(key, values)
    } else {
        Requirement::In(key, values)
    })
}

fn valid_key(key: &str) -> Result<String, String> {
    if super::validation::qualified_name_errors(key).is_empty() {
        Ok(key.to_owned())
    } else {
        Err(format!(
            "unable to parse requirement: invalid label key \"{key}\""
        ))
    }
}

fn valid_value(value: &str) -> Result<String, String> {
    if super::validation::label_value_errors(value).is_empty() {
        Ok(value.to_owned())
    } else {
        Err(format!(
            "unable to parse requirement: invalid label value: \"{value}\""
        ))
    }
}

/// A parsed `fieldSelector` over `metadata.name` and `metadata.namespace`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct FieldSelector {
    /// (field, value, equal?)
    terms: Vec<(Field, String, bool)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Name,
    Namespace,
}

impl FieldSelector {
    pub(crate) fn parse(input: &str) -> Result<Self, String> {
        let mut terms = Vec::new();
        for part in input.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (field, value, equal) = if let Some((f, v)) = part.split_once("!=") {
                (f, v, false)
            } else if let Some((f, v)) = part.split_once("==") {
                (f, v, true)
            } else if let Some((f, v)) = part.split_once('=') {
                (f, v, true)
            } else {
                return Err(format!(
                    "invalid selector: '{input}'; can't understand '{part}'"
                ));
            };
            let field = match field.trim() {
                "metadata.name" => Field::Name,
                "metadata.namespace" => Field::Namespace,
                other => return Err(format!("field label not supported: {other}")),
            };
            terms.push((field, value.trim().to_owned(), equal));
        }
        Ok(Self { terms })
    }

    pub(crate) fn matches(&self, name: &str, namespace: &str) -> bool {
        self.terms.iter().all(|(field, value, equal)| {
            let have = match field {
                Field::Name => name,
                Field::Namespace => namespace,
            };
            (have == value) == *equal
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(v: &Value) -> Option<&Map<String, Value>> {
        v.as_object()
    }

    #[test]
    fn every_operator() {
        let l = json!({"app": "web", "tier": "front", "lockheed/lock": ""});
        let m = |s: &str| LabelSelector::parse(s).unwrap().matches(labels(&l));
        assert!(m(""));
        assert!(m("app=web"));
        assert!(m("app==web"));
        assert!(!m("app=db"));
        assert!(m("app!=db"));
        assert!(m("missing!=x"), "!= matches objects without the key");
        assert!(m("app in (web, db)"));
        assert!(!m("app in (db)"));
        assert!(m("app notin (db,cache)"));
        assert!(m("missing notin (db)"));
        assert!(!m("app notin (web)"));
        assert!(m("lockheed/lock"));
        assert!(!m("!lockheed/lock"));
        assert!(m("!missing"));
        assert!(m("app=web,tier in (front,back),!missing"));
        assert!(!m("app=web,tier=back"));
    }

    #[test]
    fn no_labels_at_all() {
        let s = LabelSelector::parse("!a,b!=c,d notin (e)").unwrap();
        assert!(s.matches(None));
        assert!(!LabelSelector::parse("a").unwrap().matches(None));
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "a b c", "a in b", "a in (b", "a=b,", "a=(b)", "-bad-=x", "a)",
        ] {
            assert!(LabelSelector::parse(bad).is_err(), "{bad} should not parse");
        }
    }

    #[test]
    fn field_selectors() {
        let s = FieldSelector::parse("metadata.name=a,metadata.namespace!=kube-system").unwrap();
        assert!(s.matches("a", "default"));
        assert!(!s.matches("a", "kube-system"));
        assert!(!s.matches("b", "default"));
        assert!(
            FieldSelector::parse("metadata.name==a")
                .unwrap()
                .matches("a", "x")
        );
        assert_eq!(
            FieldSelector::parse("spec.x=1").unwrap_err(),
            "field label not supported: spec.x"
        );
    }
}
