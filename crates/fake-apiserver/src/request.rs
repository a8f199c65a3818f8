//! Turning an HTTP request line into what the API server should do.

use std::collections::BTreeMap;

use serde_json::json;

use super::log::Verb;
use super::status::ApiError;

/// kube-apiserver's limit on field manager names, in bytes (`FieldManagerMaxLength`).
const FIELD_MANAGER_MAX_LENGTH: usize = 128;

/// The parts of a request that access control, fault matching and the log look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RequestInfo {
    pub(crate) verb: Verb,
    pub(crate) group: String,
    pub(crate) resource: Option<String>,
    pub(crate) namespace: Option<String>,
    /// The object named in the path, or for list and watch the `metadata.name` that the field
    /// selector asks for (RBAC authorizes `resourceNames` that way).
    pub(crate) name: Option<String>,
    /// The bearer token the request carries.
    pub(crate) token: Option<String>,
}

/// A request for a resource or collection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ResourcePath {
    pub(crate) group: String,
    pub(crate) version: String,
    pub(crate) plural: String,
    pub(crate) namespace: Option<String>,
    pub(crate) name: Option<String>,
    pub(crate) subresource: Option<String>,
}

/// Where a request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route {
    Version,
    /// `/api`
    CoreVersions,
    /// `/apis`
    Groups,
    /// `/api/v1`, `/apis/<group>/<version>`
    Resources {
        group: String,
        version: String,
    },
    Resource(ResourcePath),
    /// `/openapi/v2`
    OpenApiV2,
    /// `/openapi/v3`
    OpenApiV3,
    /// `/openapi/v3/<api/v1 | apis/group/version>`
    OpenApiV3Document(String),
    /// Anything else: 404.
    Unknown,
}

impl Route {
    pub(crate) fn parse(path: &str) -> Self {
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let (group, version, rest) = match segments.as_slice() {
            ["version"] => return Self::Version,
            ["api"] => return Self::CoreVersions,
            ["apis"] => return Self::Groups,
            ["openapi", "v2"] => return Self::OpenApiV2,
            ["openapi", "v3"] => return Self::OpenApiV3,
            ["openapi", "v3", rest @ ..] => return Self::OpenApiV3Document(rest.join("/")),
            ["api", version, rest @ ..] => ("", *version, rest),
            ["apis", group, version, rest @ ..] => (*group, *version, rest),
            _ => return Self::Unknown,
        };
        let resource =
            |plural: &str, namespace: Option<&str>, name: Option<&str>, sub: Option<&str>| {
                Self::Resource(ResourcePath {
                    group: group.to_owned(),
                    version: version.to_owned(),
                    plural: plural.to_owned(),
                    namespace: namespace.map(str::to_owned),
                    name: name.map(str::to_owned),
                    subresource: sub.map(str::to_owned),
                })
            };
        match rest {
            [] => Self::Resources {
                group: group.to_owned(),
                version: version.to_owned(),
            },
            // Namespaces are cluster-scoped objects that also contain namespaced ones.
            ["namespaces", ns, sub @ ("status" | "finalize")] => {
                resource("namespaces", None, Some(ns), Some(sub))
            }
            ["namespaces", ns, plural] => resource(plural, Some(ns), None, None),
            ["namespaces", ns, plural, name] => resource(plural, Some(ns), Some(name), None),
            ["namespaces", ns, plural, name, sub] => {
                resource(plural, Some(ns), Some(name), Some(sub))
            }
            [plural] => resource(plural, None, None, None),
            [plural, name] => resource(plural, None, Some(name), None),
            [plural, name, sub] => resource(plural, None, Some(name), Some(sub)),
            _ => Self::Unknown,
        }
    }
}

/// Decodes a URL query into its parameters (the last value of a repeated key wins).
pub(crate) fn parse_query(query: &str) -> Result<BTreeMap<String, String>, ApiError> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            Ok((percent_decode(key)?, percent_decode(value)?))
        })
        .collect()
}

fn percent_decode(input: &str) -> Result<String, ApiError> {
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| {
                        ApiError::bad_request(format!("invalid URL escape in {input:?}"))
                    })?;
                out.push(hex);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| ApiError::bad_request(format!("invalid UTF-8 in {input:?}")))
}

/// Whether a boolean query parameter is set (`true`, `1`).
pub(crate) fn flag(query: &BTreeMap<String, String>, key: &str) -> bool {
    query.get(key).is_some_and(|v| v == "true" || v == "1")
}

/// One cause of a `422 Invalid` about list options: field, reason, message.
type Cause = (&'static str, &'static str, String);

/// The list options that `ValidateListOptions` looks at.
struct ListOptions<'a> {
    version: &'a str,
    matching: &'a str,
    token: &'a str,
    initial_events: bool,
}

impl ListOptions<'_> {
    /// The causes a watch with these options is refused for.
    fn watch_causes(&self) -> Vec<Cause> {
        let mut causes = Vec::new();
        let matching = self.matching;
        if self.initial_events && matching != "NotOlderThan" {
            causes.push(forbidden(
                "resourceVersionMatch",
                "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
            ));
        }
        if matching.is_empty() {
            return causes;
        }
        if !self.initial_events {
            causes.push(forbidden(
                "resourceVersionMatch",
                "resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided",
            ));
        }
        if matching != "NotOlderThan" {
            causes.push(unsupported_match(matching, &["NotOlderThan"]));
        }
        if !self.token.is_empty() {
            causes.push(forbidden(
                "resourceVersionMatch",
                "resourceVersionMatch is forbidden when continue is provided",
            ));
        }
        causes
    }

    /// The causes a list with these options is refused for.
    fn list_causes(&self) -> Vec<Cause> {
        let mut causes = Vec::new();
        let matching = self.matching;
        if !matching.is_empty() {
            if self.version.is_empty() {
                causes.push(forbidden(
                    "resourceVersionMatch",
                    "resourceVersionMatch is forbidden unless resourceVersion is provided",
                ));
            }
            if !self.token.is_empty() {
                causes.push(forbidden(
                    "resourceVersionMatch",
                    "resourceVersionMatch is forbidden when continue is provided",
                ));
            }
            if matching != "Exact" && matching != "NotOlderThan" {
                causes.push(unsupported_match(matching, &["Exact", "NotOlderThan", ""]));
            }
            if matching == "Exact" && self.version == "0" {
                causes.push(forbidden(
                    "resourceVersionMatch",
                    "resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\"",
                ));
            }
        }
        if self.initial_events {
            causes.push(forbidden(
                "sendInitialEvents",
                "sendInitialEvents is forbidden for list",
            ));
        }
        causes
    }
}

/// A `FieldValueForbidden` cause.
fn forbidden(field: &'static str, detail: &str) -> Cause {
    (field, "FieldValueForbidden", format!("Forbidden: {detail}"))
}

/// A `FieldValueNotSupported` cause about `resourceVersionMatch`.
fn unsupported_match(value: &str, supported: &[&str]) -> Cause {
    let supported: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
    (
        "resourceVersionMatch",
        "FieldValueNotSupported",
        format!(
            "Unsupported value: {value:?}: supported values: {}",
            supported.join(", ")
        ),
    )
}

/// The checks of `ValidateListOptions` (apimachinery's `internalversion/validation`) of a list
/// or watch, with its messages: `422 Invalid` naming `ListOptions.meta.k8s.io`.
pub(crate) fn list_options(query: &BTreeMap<String, String>, watch: bool) -> Result<(), ApiError> {
    let get = |key: &str| query.get(key).map(String::as_str).unwrap_or_default();
    let options = ListOptions {
        version: get("resourceVersion"),
        matching: get("resourceVersionMatch"),
        token: get("continue"),
        initial_events: query.contains_key("sendInitialEvents"),
    };
    let causes = if watch {
        options.watch_causes()
    } else {
        options.list_causes()
    };
    if causes.is_empty() {
        return Ok(());
    }
    Err(invalid_list_options(&causes))
}

/// The `422 Invalid` about `ListOptions.meta.k8s.io` with these causes.
fn invalid_list_options(causes: &[Cause]) -> ApiError {
    let summary: Vec<String> = causes.iter().map(|(f, _, m)| format!("{f}: {m}")).collect();
    let summary = match summary.as_slice() {
        [one] => one.clone(),
        many => format!("[{}]", many.join(", ")),
    };
    let mut err = ApiError::new(
        422,
        "Invalid",
        format!("ListOptions.meta.k8s.io \"\" is invalid: {summary}"),
    );
    err.details = Some(json!({
        "group": "meta.k8s.io",
        "kind": "ListOptions",
        "causes": causes
            .iter()
            .map(|(field, reason, message)| json!({"reason": reason, "message": message, "field": field}))
            .collect::<Vec<_>>(),
    }));
    err
}

/// Go's `unicode.IsPrint`, near enough: no control characters, no spaces but ' '.
fn is_print(c: char) -> bool {
    !c.is_control() && (c == ' ' || !c.is_whitespace())
}

/// The field manager of a create, update or patch (empty for other verbs): the `fieldManager` parameter, or else, like
/// kube-apiserver's `managerOrUserAgent`, the User-Agent up to its first `/` without
/// unprintable characters (`kubectl/v1.33.0 (linux/amd64)` is `kubectl`; kube-rs sends none,
/// which makes the manager `unknown`).
///
/// # Errors
///
/// 422 for a `fieldManager` longer than 128 bytes or with unprintable characters.
pub(crate) fn field_manager(
    verb: Verb,
    query: &BTreeMap<String, String>,
    user_agent: &str,
) -> Result<String, ApiError> {
    let options = match verb {
        Verb::Create => "CreateOptions",
        Verb::Update => "UpdateOptions",
        Verb::Patch => "PatchOptions",
        // Reads and deletes have no field manager.
        _ => return Ok(String::new()),
    };
    let invalid = |reason: &str, message: String| {
        let mut err = ApiError::new(
            422,
            "Invalid",
            format!("{options}.meta.k8s.io \"\" is invalid: fieldManager: {message}"),
        );
        err.details = Some(json!({
            "group": "meta.k8s.io",
            "kind": options,
            "causes": [{ "reason": reason, "message": message, "field": "fieldManager" }],
        }));
        err
    };
    let Some(manager) = query.get("fieldManager").filter(|m| !m.is_empty()) else {
        let prefix = user_agent.split('/').next().unwrap_or_default();
        let mut out = String::new();
        for c in prefix.chars().filter(|c| is_print(*c)) {
            if out.len() + c.len_utf8() > FIELD_MANAGER_MAX_LENGTH {
                break;
            }
            out.push(c);
        }
        // The field manager names an entry of no one "unknown" (buildManagerInfo).
        if out.is_empty() {
            out.push_str("unknown");
        }
        return Ok(out);
    };
    if manager.len() > FIELD_MANAGER_MAX_LENGTH {
        return Err(invalid(
            "FieldValueTooLong",
            format!("Too long: may not be more than {FIELD_MANAGER_MAX_LENGTH} bytes"),
        ));
    }
    if let Some((at, c)) = manager.char_indices().find(|(_, c)| !is_print(*c)) {
        return Err(invalid(
            "FieldValueInvalid",
            format!(
                "Invalid value: {manager:?}: invalid character U+{:04X} (at position {at})",
                u32::from(c)
            ),
        ));
    }
    Ok(manager.clone())
}

/// The verb of a request for `path`, by method (`None`: the method is not allowed there).
pub(crate) fn verb_of(method: &http::Method, path: &ResourcePath, watch: bool) -> Option<Verb> {
    let one = path.name.is_some();
    Some(match (method.as_str(), one) {
        ("GET", true) => Verb::Get,
        ("GET", false) if watch => Verb::Watch,
        ("GET", false) => Verb::List,
        ("POST", false) => Verb::Create,
        ("PUT", true) => Verb::Update,
        ("PATCH", true) => Verb::Patch,
        ("DELETE", true) => Verb::Delete,
        ("DELETE", false) => Verb::DeleteCollection,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rp(group: &str, plural: &str, ns: Option<&str>, name: Option<&str>) -> Route {
        Route::Resource(ResourcePath {
            group: group.into(),
            version: "v1".into(),
            plural: plural.into(),
            namespace: ns.map(Into::into),
            name: name.map(Into::into),
            subresource: None,
        })
    }

    #[test]
    fn routes() {
        assert_eq!(Route::parse("/version"), Route::Version);
        assert_eq!(Route::parse("/api"), Route::CoreVersions);
        assert_eq!(Route::parse("/apis/"), Route::Groups);
        assert_eq!(
            Route::parse("/apis/coordination.k8s.io/v1"),
            Route::Resources {
                group: "coordination.k8s.io".into(),
                version: "v1".into()
            }
        );
        assert_eq!(
            Route::parse("/api/v1/namespaces/d/configmaps"),
            rp("", "configmaps", Some("d"), None)
        );
        assert_eq!(
            Route::parse("/apis/coordination.k8s.io/v1/namespaces/d/leases/x"),
            rp("coordination.k8s.io", "leases", Some("d"), Some("x"))
        );
        assert_eq!(
            Route::parse("/api/v1/configmaps"),
            rp("", "configmaps", None, None)
        );
        assert_eq!(
            Route::parse("/api/v1/namespaces/d"),
            rp("", "namespaces", None, Some("d"))
        );
        assert_eq!(
            Route::parse("/api/v1/namespaces"),
            rp("", "namespaces", None, None)
        );
        assert_eq!(Route::parse("/openapi/v2"), Route::OpenApiV2);
        assert_eq!(Route::parse("/openapi/v3/"), Route::OpenApiV3);
        assert_eq!(
            Route::parse("/openapi/v3/apis/coordination.k8s.io/v1"),
            Route::OpenApiV3Document("apis/coordination.k8s.io/v1".into())
        );
        assert_eq!(Route::parse("/openapi/v1"), Route::Unknown);
    }

    #[test]
    fn queries() {
        let q = parse_query("labelSelector=a%3Db%2Cc+in+%28x%29&watch=1&empty").unwrap();
        assert_eq!(q["labelSelector"], "a=b,c in (x)");
        assert!(flag(&q, "watch"));
        assert_eq!(q["empty"], "");
        assert!(parse_query("bad=%zz").is_err());
    }

    #[test]
    fn field_managers() {
        let query = |m: &str| parse_query(&format!("fieldManager={m}")).unwrap();
        let none = BTreeMap::new();
        assert_eq!(
            field_manager(
                Verb::Update,
                &none,
                "kubectl/v1.33.0 (linux/amd64) kubernetes/abc"
            )
            .unwrap(),
            "kubectl"
        );
        assert_eq!(field_manager(Verb::Update, &none, "").unwrap(), "unknown");
        assert_eq!(
            field_manager(Verb::Patch, &query("mine"), "kubectl/v1").unwrap(),
            "mine"
        );
        let long = "x".repeat(129);
        let err = field_manager(Verb::Create, &query(&long), "").unwrap_err();
        assert_eq!(
            err.message,
            "CreateOptions.meta.k8s.io \"\" is invalid: fieldManager: Too long: may not be more than 128 bytes"
        );
        let err = field_manager(Verb::Patch, &query("a%09b"), "").unwrap_err();
        assert!(
            err.message
                .ends_with("invalid character U+0009 (at position 1)"),
            "{}",
            err.message
        );
    }
}
