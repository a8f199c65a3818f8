//! `metav1.Status` responses, shaped and worded like kube-apiserver's.
//!
//! Every failure the fake server returns is one of these, so that `kube::Error::Api` carries the
//! same `code`, `reason` and `message` a client would see from a real cluster.

use serde_json::{Value, json};

/// One cause of an `Invalid` (422) status: which field, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Cause {
    pub(crate) reason: &'static str,
    pub(crate) message: String,
    pub(crate) field: String,
}

/// A resource or a kind as a Status names it: with its group after a dot
/// (`leases.coordination.k8s.io`, `Lease.coordination.k8s.io`), or alone in the core group
/// (`configmaps`, `ConfigMap`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Named<'a> {
    pub(crate) group: &'a str,
    /// The plural (a resource) or the kind.
    pub(crate) name: &'a str,
}

impl Named<'_> {
    /// In the core group.
    pub(crate) fn core(name: &str) -> Named<'_> {
        Named { group: "", name }
    }

    fn qualified(self) -> String {
        if self.group.is_empty() {
            self.name.to_owned()
        } else {
            format!("{}.{}", self.name, self.group)
        }
    }
}

/// A failed request: the HTTP code plus the `metav1.Status` body that goes with it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ApiError {
    pub(crate) code: u16,
    pub(crate) reason: &'static str,
    pub(crate) message: String,
    /// `details` of the Status, when the error concerns one object.
    pub(crate) details: Option<Value>,
    /// Extra response headers (`Retry-After` on 429).
    pub(crate) retry_after: Option<u64>,
    /// `metadata` of the Status (the continue token of a `410 Gone` list).
    pub(crate) metadata: Option<Box<Value>>,
}

impl ApiError {
    pub(crate) fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            details: None,
            retry_after: None,
            metadata: None,
        }
    }

    fn with_details(mut self, name: &str, what: Named<'_>) -> Self {
        let mut details = json!({});
        if !what.name.is_empty() {
            details["kind"] = json!(what.name);
        }
        if !name.is_empty() {
            details["name"] = json!(name);
        }
        if !what.group.is_empty() {
            details["group"] = json!(what.group);
        }
        self.details = Some(details);
        self
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    pub(crate) fn not_found(resource: Named<'_>, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", resource.qualified()),
        )
        .with_details(name, resource)
    }

    /// 404 for a path the server does not serve at all.
    pub(crate) fn no_route() -> Self {
        let mut err = Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        );
        err.details = Some(json!({}));
        err
    }

    pub(crate) fn method_not_allowed(method: &str) -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            format!("the server does not allow this method on the requested resource: {method}"),
        )
    }

    pub(crate) fn already_exists(resource: Named<'_>, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", resource.qualified()),
        )
        .with_details(name, resource)
    }

    /// 409 for a write whose resourceVersion is not the stored one.
    pub(crate) fn conflict_modified(resource: Named<'_>, name: &str) -> Self {
        Self::conflict(
            resource,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    /// 409 `Conflict`; `what` is a resource, or for a delete's preconditions the kind (which
    /// kube-apiserver puts in the resource's place).
    pub(crate) fn conflict(what: Named<'_>, name: &str, why: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": {why}",
                what.qualified()
            ),
        )
        .with_details(name, what)
    }

    pub(crate) fn invalid(kind: Named<'_>, name: &str, causes: &[Cause]) -> Self {
        let summary = causes
            .iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect::<Vec<_>>();
        let summary = if summary.len() == 1 {
            summary[0].clone()
        } else {
            format!("[{}]", summary.join(", "))
        };
        let mut err = Self::new(
            422,
            "Invalid",
            format!("{} \"{name}\" is invalid: {summary}", kind.qualified()),
        )
        .with_details(name, kind);
        if let Some(details) = err.details.as_mut() {
            details["causes"] = causes
                .iter()
                .map(|c| json!({ "reason": c.reason, "message": c.message, "field": c.field }))
                .collect();
        }
        err
    }

    pub(crate) fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }

    pub(crate) fn expired(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    /// The status an injected fault answers with, worded like the real server's.
    pub(crate) fn injected(code: u16) -> Self {
        match code {
            409 => Self::new(
                409,
                "Conflict",
                "Operation cannot be fulfilled: conflict injected by the fake API server",
            ),
            429 => Self::new(
                429,
                "TooManyRequests",
                "Too many requests, please try again later.",
            ),
            500 => Self::new(
                500,
                "InternalError",
                "Internal error occurred: injected by the fake API server",
            ),
            503 => Self::new(
                503,
                "ServiceUnavailable",
                "the server is currently unable to handle the request",
            ),
            504 => Self::new(
                504,
                "Timeout",
                "the server was unable to return a response in the time allotted",
            ),
            other => Self::new(
                other,
                "",
                format!("error {other} injected by the fake API server"),
            ),
        }
    }

    /// The `metav1.Status` body of this error.
    pub(crate) fn to_status(&self) -> Value {
        let mut body = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "code": self.code,
        });
        if !self.reason.is_empty() {
            body["reason"] = json!(self.reason);
        }
        if let Some(metadata) = &self.metadata {
            body["metadata"] = (**metadata).clone();
        }
        if let Some(details) = &self.details {
            body["details"] = details.clone();
        }
        if let Some(secs) = self.retry_after {
            if body.get("details").is_none() {
                body["details"] = json!({});
            }
            body["details"]["retryAfterSeconds"] = json!(secs);
        }
        body
    }
}

/// The body of a successful DELETE of an object without finalizers.
pub(crate) fn delete_success(resource: Named<'_>, name: &str, uid: &str) -> Value {
    let mut details = json!({ "name": name, "kind": resource.name, "uid": uid });
    if !resource.group.is_empty() {
        details["group"] = json!(resource.group);
    }
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": details,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflict_wording_matches_kube_apiserver() {
        let err = ApiError::conflict_modified(Named::core("configmaps"), "a");
        assert_eq!(err.code, 409);
        assert_eq!(
            err.message,
            "Operation cannot be fulfilled on configmaps \"a\": the object has been modified; \
             please apply your changes to the latest version and try again"
        );
        let status = err.to_status();
        assert_eq!(status["reason"], "Conflict");
        assert_eq!(status["details"]["kind"], "configmaps");
    }

    #[test]
    fn invalid_lists_every_cause() {
        let causes = [
            Cause {
                reason: "FieldValueTooLong",
                message: "Too long: must have at most 1048576 bytes".into(),
                field: "data".into(),
            },
            Cause {
                reason: "FieldValueInvalid",
                message: "Invalid value: \"x\"".into(),
                field: "metadata.name".into(),
            },
        ];
        let status = ApiError::invalid(Named::core("ConfigMap"), "x", &causes).to_status();
        assert_eq!(status["code"], 422);
        assert!(
            status["message"]
                .as_str()
                .unwrap()
                .starts_with("ConfigMap \"x\" is invalid: [")
        );
        assert_eq!(status["details"]["causes"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn grouped_resources_and_kinds_are_qualified() {
        let leases = Named {
            group: "coordination.k8s.io",
            name: "leases",
        };
        let status = ApiError::not_found(leases, "x").to_status();
        assert_eq!(
            status["message"],
            "leases.coordination.k8s.io \"x\" not found"
        );
        assert_eq!(status["details"]["group"], "coordination.k8s.io");
        assert_eq!(status["details"]["kind"], "leases");
    }

    #[test]
    fn retry_after_is_in_details() {
        let mut err = ApiError::injected(429);
        err.retry_after = Some(3);
        assert_eq!(err.to_status()["details"]["retryAfterSeconds"], 3);
    }
}
